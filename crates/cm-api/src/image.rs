//! Images and flavors.

use crate::Timestamp;
use serde::{Deserialize, Serialize};
use uuid::Uuid;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ImageKind {
    /// A kernel and an initrd booted directly (`-kernel`/`-initrd`); no disk.
    Kernel,
    /// A qcow2 (or raw) disk image; each instance gets a qcow2 overlay on it.
    Disk,
}

impl ImageKind {
    pub fn as_str(self) -> &'static str {
        match self {
            ImageKind::Kernel => "kernel",
            ImageKind::Disk => "disk",
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum FileRole {
    Kernel,
    Initrd,
    Disk,
}

impl FileRole {
    pub fn as_str(self) -> &'static str {
        match self {
            FileRole::Kernel => "kernel",
            FileRole::Initrd => "initrd",
            FileRole::Disk => "disk",
        }
    }

    pub fn parse(s: &str) -> Option<FileRole> {
        match s {
            "kernel" => Some(FileRole::Kernel),
            "initrd" => Some(FileRole::Initrd),
            "disk" => Some(FileRole::Disk),
            _ => None,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ImageFile {
    pub role: FileRole,
    pub size: u64,
    pub sha256: String,
    /// For disk images: the format qemu-img reported (`qcow2` or `raw`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub format: Option<String>,
    /// For disk images: the virtual size of the disk.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub virtual_size: Option<u64>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Image {
    pub id: Uuid,
    pub name: String,
    pub kind: ImageKind,
    pub files: Vec<ImageFile>,
    /// Kernel command line appended for kernel images.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cmdline: Option<String>,
    #[serde(with = "crate::ts")]
    pub created_at: Timestamp,
}

impl Image {
    pub fn file(&self, role: FileRole) -> Option<&ImageFile> {
        self.files.iter().find(|f| f.role == role)
    }

    pub fn total_size(&self) -> u64 {
        self.files.iter().map(|f| f.size).sum()
    }
}

/// `POST /v1/images`: files are paths on the master's filesystem; the master
/// copies them into its own store and records size and sha256.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CreateImage {
    pub name: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub kernel: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub initrd: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cmdline: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub disk: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Flavor {
    pub name: String,
    pub memory_mib: u64,
    pub vcpus: u32,
    /// Minimum root disk size for disk images, in GiB (0 = the image's size).
    pub disk_gib: u64,
    /// Built-in flavors cannot be deleted.
    pub builtin: bool,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CreateFlavor {
    pub name: String,
    pub memory_mib: u64,
    pub vcpus: u32,
    #[serde(default)]
    pub disk_gib: u64,
}

/// The flavors every cloud starts with. `m1.tiny` is sized for the tiny test
/// image (DESIGN.md §6), the rest double like OpenStack's.
pub fn builtin_flavors() -> Vec<Flavor> {
    [
        ("m1.tiny", 128, 1, 0),
        ("m1.small", 512, 1, 10),
        ("m1.medium", 1024, 2, 20),
        ("m1.large", 2048, 2, 40),
        ("m1.xlarge", 4096, 4, 80),
    ]
    .into_iter()
    .map(|(name, memory_mib, vcpus, disk_gib)| Flavor {
        name: name.to_string(),
        memory_mib,
        vcpus,
        disk_gib,
        builtin: true,
    })
    .collect()
}
