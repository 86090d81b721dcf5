//! Issue 9, point 3: an upload broken mid-way (the connection cut, `cm`
//! killed, the master killed) is resumed from what the master holds and
//! ends in one good image; one nobody finishes expires with its data.

use cm_api::image::{CreateImage, FileSource, Image};
use cm_api::upload::{CreateUpload, UploadState};
use cm_client::api;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;
use test_infra::proxy::{Proxy, ProxyOpts};
use test_infra::rest::{image_names, sha256_of, upload_files, uploads, write_upload};
use test_infra::{image_dir, wait_until, Cloud, MasterOpts};

/// The test image's kernel and initrd copied into `dir`.
fn copy_test_image(dir: &Path) -> (PathBuf, PathBuf) {
    std::fs::create_dir_all(dir).unwrap();
    let (k, i) = (dir.join("vmlinuz"), dir.join("initrd.img"));
    std::fs::copy(image_dir().join("vmlinuz"), &k).unwrap();
    std::fs::copy(image_dir().join("initrd.img"), &i).unwrap();
    (k, i)
}

#[test]
fn a_cut_upload_is_resumed_into_one_good_image() {
    let cloud = Cloud::start().unwrap();
    let work = cloud.dir.path().join("laptop");
    let (k, i) = copy_test_image(&work);
    let master = format!("127.0.0.1:{}", cloud.port);

    // 1. The connection breaks 5 MB into the kernel: cm asks how much the
    //    master holds and goes on from there.
    let proxy = Proxy::start(
        &master,
        ProxyOpts {
            cut_after: Some(5 << 20),
            rate: None,
        },
    )
    .unwrap();
    let out = cloud.cm_env(
        &[
            "image",
            "add",
            "cut",
            "--kernel",
            &k.to_string_lossy(),
            "--initrd",
            &i.to_string_lossy(),
        ],
        &[("CM_URL", &proxy.url())],
    );
    assert_eq!(out.code, 0, "{}", out.stderr);
    assert_eq!(proxy.cuts.load(std::sync::atomic::Ordering::SeqCst), 1);
    assert!(out.stderr.contains("resuming"), "{}", out.stderr);
    let kernel_len = std::fs::metadata(&k).unwrap().len();
    let initrd_len = std::fs::metadata(&i).unwrap().len();
    // The kernel was not sent again from the start.
    let carried = proxy.carried.load(std::sync::atomic::Ordering::SeqCst);
    assert!(
        carried < kernel_len + initrd_len + (2 << 20),
        "{carried} bytes carried for {} bytes of files",
        kernel_len + initrd_len
    );
    let img: Image = cloud.cm_as(&["image", "show", "cut"]);
    assert_eq!(img.files[0].sha256, sha256_of(&k));
    assert_eq!(img.files[1].sha256, sha256_of(&i));
    assert!(uploads(&cloud).is_empty());
    assert!(upload_files(&cloud).is_empty());

    // 2. cm itself is killed mid-kernel (sent slowly through the proxy);
    //    the same command run again resumes the master's partial upload.
    let slow = Proxy::start(
        &master,
        ProxyOpts {
            cut_after: None,
            rate: Some(2 << 20),
        },
    )
    .unwrap();
    let mut cm = Command::new(test_infra::bin("cm"))
        .args([
            "image",
            "add",
            "killed",
            "--kernel",
            "vmlinuz",
            "--initrd",
            "initrd.img",
        ])
        .current_dir(&work)
        .env("CM_URL", slow.url())
        .env("CM_TOKEN", &cloud.token)
        .env("HOME", cloud.dir.path())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let partial = wait_until(
        "part of the kernel to reach the master",
        Duration::from_secs(60),
        || uploads(&cloud).into_iter().find(|u| u.offset > (2 << 20)),
    )
    .unwrap();
    cm.kill().unwrap();
    cm.wait().unwrap();
    let id = partial.id;
    let held = wait_until(
        "the cut request to end on the master",
        Duration::from_secs(30),
        || {
            let u = uploads(&cloud).into_iter().find(|u| u.id == id)?;
            write_upload(&cloud, id, u.offset, b"").ok().map(|_| u)
        },
    )
    .unwrap();
    assert_eq!(held.state, UploadState::Receiving);
    let offset = held.offset;
    assert!(offset > 0 && offset < kernel_len, "{held:?}");
    assert!(image_names(&cloud).iter().all(|n| n != "killed"));

    let out = cloud.cm_in(
        &work,
        &[
            "image",
            "add",
            "killed",
            "--kernel",
            "vmlinuz",
            "--initrd",
            "initrd.img",
        ],
    );
    assert_eq!(out.code, 0, "{}", out.stderr);
    assert!(
        out.stderr.contains(&format!("resuming upload {id}")),
        "{}",
        out.stderr
    );
    let img: Image = cloud.cm_as(&["image", "show", "killed"]);
    assert_eq!(img.files[0].sha256, sha256_of(&k));
    assert_eq!(image_names(&cloud), ["cut", "killed"]);
    assert!(uploads(&cloud).is_empty());
    assert!(upload_files(&cloud).is_empty());
}

#[test]
fn a_master_restart_keeps_partial_uploads_and_removes_orphans() {
    let mut cloud = Cloud::start().unwrap();
    let data: Vec<u8> = (0..200_000u32).map(|n| (n % 251) as u8).collect();
    let file = cloud.dir.path().join("blob");
    std::fs::write(&file, &data).unwrap();
    let api = cloud.api();
    let up = api
        .call(api::uploads::create(&CreateUpload {
            size: Some(data.len() as u64),
            sha256: Some(sha256_of(&file)),
            url: None,
        }))
        .unwrap();
    let id = up.id;
    let v = write_upload(&cloud, id, 0, &data[..70_000]).unwrap();
    assert_eq!(v.offset, 70_000, "{v:?}");

    // SIGKILL, and leave what a crash between steps would: a half-made
    // image directory, upload bytes whose record is gone.
    cloud.stop_master(libc::SIGKILL);
    let stray_image = cloud
        .master_dir()
        .join("images")
        .join(uuid::Uuid::new_v4().to_string());
    std::fs::create_dir_all(&stray_image).unwrap();
    std::fs::write(stray_image.join("kernel"), b"half").unwrap();
    let stray_upload = cloud
        .master_dir()
        .join("uploads")
        .join(uuid::Uuid::new_v4().to_string());
    std::fs::write(&stray_upload, b"orphan").unwrap();
    cloud.start_master().unwrap();

    assert!(!stray_image.exists());
    assert!(!stray_upload.exists());
    let v = cloud.api().call(api::uploads::show(id)).unwrap();
    assert_eq!(v.offset, 70_000, "{v:?}");
    // The master lost its running hash with the restart: it re-reads what
    // it holds and the end-to-end check still holds.
    let v = write_upload(&cloud, id, 70_000, &data[70_000..]).unwrap();
    assert_eq!(v.state, UploadState::Complete, "{v:?}");
    let image = cloud
        .api()
        .call(api::catalog::create_image(&CreateImage {
            name: "raw".into(),
            kernel: None,
            initrd: None,
            cmdline: None,
            disk: Some(FileSource::upload(id, Some(sha256_of(&file)))),
        }))
        .unwrap();
    assert_eq!(image.files[0].format.as_deref(), Some("raw"));
    assert!(uploads(&cloud).is_empty());
    assert!(upload_files(&cloud).is_empty());
}

#[test]
fn an_unfinished_upload_expires_with_its_data() {
    let cloud = Cloud::start_with(MasterOpts {
        extra: vec!["--upload-expire-after".into(), "2".into()],
        ..MasterOpts::default()
    })
    .unwrap();
    let up = cloud
        .api()
        .call(api::uploads::create(&CreateUpload {
            size: Some(10),
            sha256: Some("1".repeat(64)),
            url: None,
        }))
        .unwrap();
    let id = up.id;
    write_upload(&cloud, id, 0, b"12345").unwrap();
    assert_eq!(upload_files(&cloud), vec![id.to_string()]);
    wait_until("the upload to expire", Duration::from_secs(60), || {
        (uploads(&cloud).is_empty() && upload_files(&cloud).is_empty()).then_some(())
    })
    .unwrap();
    let ev = cloud.events(Some("upload.expired"));
    assert!(ev.iter().any(|e| e.target == id.to_string()), "{ev:?}");
}
