//! Image files on the master: copied in from a path at `cm image add`,
//! with size and sha256, and served to hosts from here. The copy makes the
//! recorded sha256 stay true whatever happens to the original file.

use cm_api::image::{CreateImage, FileRole, ImageFile, ImageKind};
use cm_api::ApiError;
use sha2::{Digest, Sha256};
use std::fs::File;
use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::process::Command;
use uuid::Uuid;

#[derive(Debug, thiserror::Error)]
pub enum ImportError {
    #[error("{0}")]
    Input(ApiError),
    #[error("{0}")]
    Io(String),
}

/// Where an image's file lives on the master.
pub fn file_path(images_dir: &Path, id: Uuid, role: FileRole) -> PathBuf {
    images_dir.join(id.to_string()).join(role.as_str())
}

fn bad(field: &str, msg: String) -> ImportError {
    ImportError::Input(ApiError::invalid(field, msg))
}

/// Which files the request names, and the kind that makes.
pub fn plan(req: &CreateImage) -> Result<(ImageKind, Vec<(FileRole, PathBuf)>), ApiError> {
    match (&req.kernel, &req.initrd, &req.disk) {
        (Some(k), Some(i), None) => Ok((
            ImageKind::Kernel,
            vec![
                (FileRole::Kernel, PathBuf::from(k)),
                (FileRole::Initrd, PathBuf::from(i)),
            ],
        )),
        (None, None, Some(d)) => {
            if req.cmdline.is_some() {
                return Err(ApiError::invalid(
                    "cmdline",
                    "cmdline is for kernel images only",
                ));
            }
            Ok((ImageKind::Disk, vec![(FileRole::Disk, PathBuf::from(d))]))
        }
        (Some(_), None, None) => Err(ApiError::invalid(
            "initrd",
            "a kernel image needs an initrd too",
        )),
        (None, Some(_), None) => Err(ApiError::invalid(
            "kernel",
            "a kernel image needs a kernel too",
        )),
        (None, None, None) => Err(ApiError::invalid(
            "disk",
            "give either kernel and initrd, or a disk",
        )),
        _ => Err(ApiError::invalid(
            "disk",
            "give either kernel and initrd, or a disk, not both",
        )),
    }
}

/// `qemu-img info` of a disk: its format and virtual size. Only standalone
/// qcow2 and raw disks are accepted.
fn disk_info(path: &Path) -> Result<(String, u64), ImportError> {
    let out = Command::new("qemu-img")
        .args(["info", "--output=json", "-U"])
        .arg(path)
        .output()
        .map_err(|e| ImportError::Io(format!("cannot run qemu-img: {e}")))?;
    if !out.status.success() {
        return Err(bad(
            "disk",
            format!(
                "qemu-img cannot read {}: {}",
                path.display(),
                String::from_utf8_lossy(&out.stderr).trim()
            ),
        ));
    }
    let v: serde_json::Value = serde_json::from_slice(&out.stdout)
        .map_err(|e| ImportError::Io(format!("qemu-img info output: {e}")))?;
    let format = v["format"].as_str().unwrap_or("").to_string();
    if format != "qcow2" && format != "raw" {
        return Err(bad(
            "disk",
            format!(
                "disk format must be qcow2 or raw, {} is {format}",
                path.display()
            ),
        ));
    }
    if v.get("backing-filename").is_some() {
        return Err(bad(
            "disk",
            format!(
                "{} has a backing file; flatten it first (qemu-img convert)",
                path.display()
            ),
        ));
    }
    Ok((format, v["virtual-size"].as_u64().unwrap_or(0)))
}

/// Copy `src` to `dst` (via a temporary name, synced), returning size and sha256.
fn copy_hashed(src: &Path, dst: &Path) -> Result<(u64, String), ImportError> {
    let mut input =
        File::open(src).map_err(|e| bad("path", format!("cannot read {}: {e}", src.display())))?;
    let tmp = dst.with_extension("part");
    let mut out =
        File::create(&tmp).map_err(|e| ImportError::Io(format!("{}: {e}", tmp.display())))?;
    let mut hasher = Sha256::new();
    let mut buf = vec![0u8; 1 << 20];
    let mut size = 0u64;
    loop {
        let n = input
            .read(&mut buf)
            .map_err(|e| ImportError::Io(format!("reading {}: {e}", src.display())))?;
        if n == 0 {
            break;
        }
        hasher.update(&buf[..n]);
        out.write_all(&buf[..n])
            .map_err(|e| ImportError::Io(format!("writing {}: {e}", tmp.display())))?;
        size += n as u64;
    }
    out.sync_all()
        .map_err(|e| ImportError::Io(format!("sync {}: {e}", tmp.display())))?;
    std::fs::rename(&tmp, dst)
        .map_err(|e| ImportError::Io(format!("rename {}: {e}", dst.display())))?;
    Ok((size, hex::encode(hasher.finalize())))
}

/// Copy the files of a new image into `images_dir/ID/`. On any error the
/// directory is removed again, so nothing half-imported stays behind.
pub fn import(
    images_dir: &Path,
    id: Uuid,
    files: &[(FileRole, PathBuf)],
) -> Result<Vec<ImageFile>, ImportError> {
    for (role, path) in files {
        let field = role.as_str();
        if !path.is_absolute() {
            return Err(bad(
                field,
                format!("{} must be an absolute path on the master", path.display()),
            ));
        }
        let meta =
            std::fs::metadata(path).map_err(|e| bad(field, format!("{}: {e}", path.display())))?;
        if !meta.is_file() {
            return Err(bad(field, format!("{} is not a file", path.display())));
        }
    }
    let dir = images_dir.join(id.to_string());
    std::fs::create_dir_all(&dir)
        .map_err(|e| ImportError::Io(format!("{}: {e}", dir.display())))?;
    let result = (|| {
        let mut out = Vec::new();
        for (role, path) in files {
            let (format, virtual_size) = if *role == FileRole::Disk {
                let (f, v) = disk_info(path)?;
                (Some(f), Some(v))
            } else {
                (None, None)
            };
            let (size, sha256) = copy_hashed(path, &file_path(images_dir, id, *role))?;
            out.push(ImageFile {
                role: *role,
                size,
                sha256,
                format,
                virtual_size,
            });
        }
        Ok(out)
    })();
    if result.is_err() {
        let _ = std::fs::remove_dir_all(&dir);
    }
    result
}

/// Remove image directories the store does not know (left by a crash
/// between copying and recording).
pub fn remove_orphans(images_dir: &Path, known: &[Uuid]) {
    let Ok(entries) = std::fs::read_dir(images_dir) else {
        return;
    };
    for e in entries.flatten() {
        let name = e.file_name().to_string_lossy().into_owned();
        let keep = Uuid::parse_str(&name)
            .map(|id| known.contains(&id))
            .unwrap_or(true);
        if !keep {
            tracing::warn!("removing orphaned image directory {}", e.path().display());
            let _ = std::fs::remove_dir_all(e.path());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn import_copies_and_hashes_and_cleans_up_on_error() {
        let dir = tempfile::tempdir().unwrap();
        let src = dir.path().join("k");
        std::fs::write(&src, b"abc").unwrap();
        let images = dir.path().join("images");
        let id = Uuid::new_v4();
        let files = import(&images, id, &[(FileRole::Kernel, src.clone())]).unwrap();
        assert_eq!(files[0].size, 3);
        assert_eq!(
            files[0].sha256,
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
        assert_eq!(
            std::fs::read(file_path(&images, id, FileRole::Kernel)).unwrap(),
            b"abc"
        );

        let id2 = Uuid::new_v4();
        let missing = dir.path().join("nope");
        let err = import(
            &images,
            id2,
            &[(FileRole::Kernel, src), (FileRole::Initrd, missing)],
        )
        .unwrap_err();
        assert!(matches!(err, ImportError::Input(_)));
        assert!(!images.join(id2.to_string()).exists());
    }

    #[test]
    fn a_request_names_kernel_and_initrd_or_a_disk() {
        let mut req = CreateImage {
            name: "x".into(),
            kernel: Some("/k".into()),
            initrd: None,
            cmdline: None,
            disk: None,
        };
        assert_eq!(
            plan(&req).unwrap_err().error.field.as_deref(),
            Some("initrd")
        );
        req.initrd = Some("/i".into());
        assert_eq!(plan(&req).unwrap().0, ImageKind::Kernel);
        req.disk = Some("/d".into());
        assert!(plan(&req).is_err());
    }
}
