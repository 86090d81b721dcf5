//! Images and flavors.

use crate::Timestamp;
use serde::{Deserialize, Serialize};
use uuid::Uuid;

#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
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

#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
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

#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
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

#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
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
    #[cfg_attr(feature = "openapi", schema(value_type = String, format = DateTime))]
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

/// `POST /v1/images`: each file comes from a complete upload
/// (`/v1/uploads`) or, when the operator named an import directory
/// (`cloudmasterd --image-import-dir`), from a file in it. The master keeps
/// its own copy and records size and sha256.
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CreateImage {
    pub name: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub kernel: Option<FileSource>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub initrd: Option<FileSource>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cmdline: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub disk: Option<FileSource>,
}

/// `POST /v1/images/from-instance` (the seed's bundling): a disk image
/// made from a stopped instance's root disk, flattened (no backing file, no
/// snapshots), with its sha256; usable on every host once the operation
/// succeeds (docs/storage.md, "Images from instances").
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ImageFromInstance {
    pub name: String,
    /// The instance's name or id; it must be stopped.
    pub instance: String,
}

/// `202` answer to `POST /v1/images/from-instance`: the operation's
/// `target_id` is the new image's id; the image exists once it succeeds.
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ImageAccepted {
    pub operation: crate::operation::Operation,
}

/// Where one file of a new image comes from: `{"upload": ID}` or
/// `{"path": P}` (in the master's import directory), with an optional
/// `sha256` the file must have. A bare string is read as `{"path": ...}`,
/// the form of earlier versions.
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct FileSource {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub upload: Option<Uuid>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub path: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sha256: Option<String>,
}

impl FileSource {
    pub fn upload(id: Uuid, sha256: Option<String>) -> FileSource {
        FileSource {
            upload: Some(id),
            path: None,
            sha256,
        }
    }

    pub fn path(path: impl Into<String>) -> FileSource {
        FileSource {
            upload: None,
            path: Some(path.into()),
            sha256: None,
        }
    }
}

/// The object form of [`FileSource`], with serde's checks.
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct FileSourceFields {
    #[serde(default)]
    upload: Option<Uuid>,
    #[serde(default)]
    path: Option<String>,
    #[serde(default)]
    sha256: Option<String>,
}

impl<'de> Deserialize<'de> for FileSource {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<FileSource, D::Error> {
        struct V;
        impl<'de> serde::de::Visitor<'de> for V {
            type Value = FileSource;
            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str(r#"{"upload": ID} or {"path": "FILE"}, with an optional "sha256""#)
            }
            fn visit_str<E: serde::de::Error>(self, v: &str) -> Result<FileSource, E> {
                Ok(FileSource::path(v))
            }
            fn visit_map<A: serde::de::MapAccess<'de>>(
                self,
                map: A,
            ) -> Result<FileSource, A::Error> {
                let f = FileSourceFields::deserialize(
                    serde::de::value::MapAccessDeserializer::new(map),
                )?;
                Ok(FileSource {
                    upload: f.upload,
                    path: f.path,
                    sha256: f.sha256,
                })
            }
        }
        d.deserialize_any(V)
    }
}

#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
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

#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_file_source_is_an_upload_or_a_path() {
        let id = Uuid::new_v4();
        let req: CreateImage = serde_json::from_value(serde_json::json!({
            "name": "x",
            "kernel": {"upload": id, "sha256": "ab"},
            "initrd": "/srv/import/initrd.img",
        }))
        .unwrap();
        assert_eq!(req.kernel, Some(FileSource::upload(id, Some("ab".into()))));
        assert_eq!(req.initrd, Some(FileSource::path("/srv/import/initrd.img")));
        let back = serde_json::to_value(&req).unwrap();
        assert_eq!(
            back["initrd"],
            serde_json::json!({"path": "/srv/import/initrd.img"})
        );
        for bad in [
            serde_json::json!({"name": "x", "disk": {"file": "/x"}}),
            serde_json::json!({"name": "x", "disk": {"upload": "not-a-uuid"}}),
            serde_json::json!({"name": "x", "disk": 3}),
        ] {
            assert!(
                serde_json::from_value::<CreateImage>(bad.clone()).is_err(),
                "{bad}"
            );
        }
    }
}
