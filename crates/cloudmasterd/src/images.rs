//! Image files on the master: installed from a complete upload (a hard
//! link: the upload's bytes were hashed as they came in) or copied from the
//! operator's import directory (hashed while copying), with size and
//! sha256, and served to hosts from here. The master's own copy makes the
//! recorded sha256 stay true whatever happens to the original file.

use cm_api::image::{CreateImage, FileRole, FileSource, ImageFile, ImageKind};
use sha2::{Digest, Sha256};
use std::fs::File;
use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::process::Command;
use uuid::Uuid;

/// Why an image was not imported. The API answers `400 invalid_input`,
/// `413 body_too_large` and `500 internal` (`app::error`).
#[derive(Debug, thiserror::Error)]
pub enum ImportError {
    /// The request, or a file it names, is not acceptable; `field` is the
    /// request's field at fault.
    #[error("{message}")]
    Invalid { field: String, message: String },
    /// A file larger than the master's limit.
    #[error("{message}")]
    TooLarge { field: String, message: String },
    /// The master's own disk or tools failed.
    #[error("{0}")]
    Io(String),
}

/// Where an image's file lives on the master.
pub fn file_path(images_dir: &Path, id: Uuid, role: FileRole) -> PathBuf {
    images_dir.join(id.to_string()).join(role.as_str())
}

fn bad(field: &str, msg: impl Into<String>) -> ImportError {
    ImportError::Invalid {
        field: field.to_string(),
        message: msg.into(),
    }
}

/// Which files the request names, and the kind that makes.
pub fn plan(req: &CreateImage) -> Result<(ImageKind, Vec<(FileRole, FileSource)>), ImportError> {
    let files = match (&req.kernel, &req.initrd, &req.disk) {
        (Some(k), Some(i), None) => (
            ImageKind::Kernel,
            vec![(FileRole::Kernel, k.clone()), (FileRole::Initrd, i.clone())],
        ),
        (None, None, Some(d)) => {
            if req.cmdline.is_some() {
                return Err(bad("cmdline", "cmdline is for kernel images only"));
            }
            (ImageKind::Disk, vec![(FileRole::Disk, d.clone())])
        }
        (Some(_), None, None) => return Err(bad("initrd", "a kernel image needs an initrd too")),
        (None, Some(_), None) => return Err(bad("kernel", "a kernel image needs a kernel too")),
        (None, None, None) => return Err(bad("disk", "give either kernel and initrd, or a disk")),
        _ => {
            return Err(bad(
                "disk",
                "give either kernel and initrd, or a disk, not both",
            ))
        }
    };
    for (role, src) in &files.1 {
        let field = role.as_str();
        match (&src.upload, &src.path) {
            (Some(_), None) | (None, Some(_)) => {}
            _ => {
                return Err(bad(
                    field,
                    format!(
                        r#"{field} needs exactly one of "upload" (an upload's id) or "path" (a file in the master's import directory)"#
                    ),
                ))
            }
        }
        if let Some(h) = &src.sha256 {
            let field = format!("{field}.sha256");
            if let Some(why) = cm_api::upload::sha256_problem(&field, h) {
                return Err(bad(&field, why));
            }
        }
    }
    if let [(_, a), (_, b)] = files.1.as_slice() {
        if a.upload.is_some() && a.upload == b.upload {
            return Err(bad("initrd", "kernel and initrd name the same upload"));
        }
    }
    Ok(files)
}

/// One file of a new image, ready to be installed.
pub enum Staged {
    /// A complete upload: its file, size and verified sha256.
    Upload {
        path: PathBuf,
        size: u64,
        sha256: String,
    },
    /// A file of the import directory, opened (import_dir checked it).
    Opened {
        file: File,
        shown: String,
        expect: Option<String>,
    },
}

/// `qemu-img info` of a disk: its format and virtual size. Only standalone
/// qcow2 and raw disks are accepted: no backing file and no external data
/// file (either would make QEMU open another file of the host).
fn disk_info(path: &Path) -> Result<(String, u64), ImportError> {
    let out = Command::new("qemu-img")
        .args(["info", "--output=json", "-U"])
        .arg(path)
        .output()
        .map_err(|e| ImportError::Io(format!("cannot run qemu-img: {e}")))?;
    if !out.status.success() {
        let why = String::from_utf8_lossy(&out.stderr)
            .replace(&path.to_string_lossy().into_owned(), "the disk");
        return Err(bad(
            "disk",
            format!("qemu-img cannot read the disk: {}", why.trim()),
        ));
    }
    let v: serde_json::Value = serde_json::from_slice(&out.stdout)
        .map_err(|e| ImportError::Io(format!("qemu-img info output: {e}")))?;
    let format = v["format"].as_str().unwrap_or("").to_string();
    if format != "qcow2" && format != "raw" {
        return Err(bad(
            "disk",
            format!("the disk's format must be qcow2 or raw, not {format}"),
        ));
    }
    if v.get("backing-filename").is_some() {
        return Err(bad(
            "disk",
            "the disk has a backing file; flatten it first (qemu-img convert)",
        ));
    }
    if v["format-specific"]["data"].get("data-file").is_some() {
        return Err(bad(
            "disk",
            "the disk keeps its data in an external file; convert it to a standalone qcow2 first",
        ));
    }
    Ok((format, v["virtual-size"].as_u64().unwrap_or(0)))
}

/// Copy `input` to `dst` (via a temporary name, synced), at most
/// `max_bytes`, returning size and sha256.
fn copy_hashed(
    mut input: File,
    shown: &str,
    dst: &Path,
    field: &str,
    max_bytes: u64,
) -> Result<(u64, String), ImportError> {
    let tmp = dst.with_extension("part");
    let mut out =
        File::create(&tmp).map_err(|e| ImportError::Io(format!("{}: {e}", tmp.display())))?;
    let mut hasher = Sha256::new();
    let mut buf = vec![0u8; 1 << 20];
    let mut size = 0u64;
    loop {
        let n = input
            .read(&mut buf)
            .map_err(|e| bad(field, format!("reading {shown}: {e}")))?;
        if n == 0 {
            break;
        }
        size += n as u64;
        if size > max_bytes {
            return Err(ImportError::TooLarge {
                field: field.to_string(),
                message: format!("{shown} is larger than this master's limit of {max_bytes} bytes"),
            });
        }
        hasher.update(&buf[..n]);
        out.write_all(&buf[..n])
            .map_err(|e| ImportError::Io(format!("writing {}: {e}", tmp.display())))?;
    }
    drop(out);
    durable_fs::persist(&tmp, dst)
        .map_err(|e| ImportError::Io(format!("persist {}: {e}", dst.display())))?;
    Ok((size, hex::encode(hasher.finalize())))
}

/// Put the files of a new image into `images_dir/ID/`: uploads by hard
/// link, import-dir files by a hashed copy; disks are checked with
/// `qemu-img info` there, on the master's own copy. On any error the
/// directory is removed again, so nothing half-installed stays behind.
pub fn install(
    images_dir: &Path,
    id: Uuid,
    files: Vec<(FileRole, Staged)>,
    max_bytes: u64,
) -> Result<Vec<ImageFile>, ImportError> {
    let dir = images_dir.join(id.to_string());
    std::fs::create_dir_all(&dir)
        .map_err(|e| ImportError::Io(format!("{}: {e}", dir.display())))?;
    let result = (|| {
        let mut out = Vec::new();
        for (role, staged) in files {
            let field = role.as_str();
            let dst = file_path(images_dir, id, role);
            let (size, sha256) = match staged {
                Staged::Upload { path, size, sha256 } => {
                    let have = std::fs::metadata(&path).map(|m| m.len()).unwrap_or(0);
                    if have != size {
                        return Err(ImportError::Io(format!(
                            "upload {} holds {have} bytes, its record says {size}",
                            path.display()
                        )));
                    }
                    std::fs::hard_link(&path, &dst)
                        .map_err(|e| ImportError::Io(format!("linking {}: {e}", path.display())))?;
                    (size, sha256)
                }
                Staged::Opened {
                    file,
                    shown,
                    expect,
                } => {
                    let (size, sha256) = copy_hashed(file, &shown, &dst, field, max_bytes)?;
                    if let Some(want) = expect {
                        if !want.eq_ignore_ascii_case(&sha256) {
                            return Err(bad(
                                &format!("{field}.sha256"),
                                format!("{shown} has sha256 {sha256}, not {want}"),
                            ));
                        }
                    }
                    (size, sha256)
                }
            };
            let (format, virtual_size) = if role == FileRole::Disk {
                let (f, v) = disk_info(&dst)?;
                (Some(f), Some(v))
            } else {
                (None, None)
            };
            out.push(ImageFile {
                role,
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

    const ABC: &str = "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad";

    fn opened(p: &Path, expect: Option<&str>) -> Staged {
        Staged::Opened {
            file: File::open(p).unwrap(),
            shown: "k".into(),
            expect: expect.map(str::to_string),
        }
    }

    #[test]
    fn install_copies_or_links_and_cleans_up_on_error() {
        let dir = tempfile::tempdir().unwrap();
        let src = dir.path().join("k");
        std::fs::write(&src, b"abc").unwrap();
        let upload = dir.path().join("upload");
        std::fs::write(&upload, b"initrd").unwrap();
        let images = dir.path().join("images");
        let id = Uuid::new_v4();
        let files = install(
            &images,
            id,
            vec![
                (FileRole::Kernel, opened(&src, Some(ABC))),
                (
                    FileRole::Initrd,
                    Staged::Upload {
                        path: upload.clone(),
                        size: 6,
                        sha256: "x".into(),
                    },
                ),
            ],
            1 << 20,
        )
        .unwrap();
        assert_eq!((files[0].size, files[0].sha256.as_str()), (3, ABC));
        assert_eq!(files[1].size, 6);
        assert_eq!(
            std::fs::read(file_path(&images, id, FileRole::Kernel)).unwrap(),
            b"abc"
        );
        assert_eq!(
            std::fs::read(file_path(&images, id, FileRole::Initrd)).unwrap(),
            b"initrd"
        );

        // A wrong sha256, a file over the limit: refused, nothing left.
        for (staged, max, too_large) in [
            (opened(&src, Some(&ABC.replace('b', "c"))), 1 << 20, false),
            (opened(&src, None), 2, true),
        ] {
            let id2 = Uuid::new_v4();
            let err = install(&images, id2, vec![(FileRole::Kernel, staged)], max).unwrap_err();
            let field = match (&err, too_large) {
                (ImportError::Invalid { field, .. }, false)
                | (ImportError::TooLarge { field, .. }, true) => field.as_str(),
                _ => panic!("{err:?}"),
            };
            assert!(field.starts_with("kernel"), "{err:?}");
            assert!(!images.join(id2.to_string()).exists());
        }
    }

    #[test]
    fn disks_are_checked_by_qemu_img() {
        let dir = tempfile::tempdir().unwrap();
        let images = dir.path().join("images");
        let base = dir.path().join("base.qcow2");
        let overlay = dir.path().join("overlay.qcow2");
        let mk = |args: &[&str]| {
            let ok = Command::new("qemu-img").args(args).status().unwrap();
            assert!(ok.success());
        };
        mk(&["create", "-q", "-f", "qcow2", &base.to_string_lossy(), "1M"]);
        mk(&[
            "create",
            "-q",
            "-f",
            "qcow2",
            "-F",
            "qcow2",
            "-b",
            &base.to_string_lossy(),
            &overlay.to_string_lossy(),
        ]);
        let id = Uuid::new_v4();
        let files = install(
            &images,
            id,
            vec![(FileRole::Disk, opened(&base, None))],
            1 << 30,
        )
        .unwrap();
        assert_eq!(files[0].format.as_deref(), Some("qcow2"));
        assert_eq!(files[0].virtual_size, Some(1 << 20));
        let id = Uuid::new_v4();
        let err = install(
            &images,
            id,
            vec![(FileRole::Disk, opened(&overlay, None))],
            1 << 30,
        )
        .unwrap_err();
        assert!(err.to_string().contains("backing file"), "{err}");
        assert!(!images.join(id.to_string()).exists());
    }

    fn field_of(e: ImportError) -> String {
        match e {
            ImportError::Invalid { field, .. } => field,
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn a_request_names_kernel_and_initrd_or_a_disk() {
        let mut req = CreateImage {
            name: "x".into(),
            kernel: Some(FileSource::path("k")),
            initrd: None,
            cmdline: None,
            disk: None,
        };
        assert_eq!(field_of(plan(&req).unwrap_err()), "initrd");
        req.initrd = Some(FileSource::path("i"));
        assert_eq!(plan(&req).unwrap().0, ImageKind::Kernel);
        let up = Uuid::new_v4();
        req.kernel = Some(FileSource::upload(up, None));
        req.initrd = Some(FileSource::upload(up, None));
        assert_eq!(field_of(plan(&req).unwrap_err()), "initrd");
        req.initrd = Some(FileSource {
            upload: Some(Uuid::new_v4()),
            path: Some("i".into()),
            sha256: None,
        });
        assert_eq!(field_of(plan(&req).unwrap_err()), "initrd");
        req.initrd = Some(FileSource {
            upload: Some(Uuid::new_v4()),
            path: None,
            sha256: Some("nothex".into()),
        });
        assert_eq!(field_of(plan(&req).unwrap_err()), "initrd.sha256");
        req.disk = Some(FileSource::path("d"));
        plan(&req).unwrap_err();
    }
}
