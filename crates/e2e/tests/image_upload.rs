//! Issue 9, point 3: `cm image add` uploads local files over HTTP, the
//! master checks their sha256 end to end, and a refused upload leaves
//! nothing recorded. Resuming is in `image_resume.rs`, URL and import-dir
//! imports in `image_import.rs`, bad requests in `image_errors.rs`.

use cm_api::image::{CreateImage, FileRole, FileSource, Image};
use cm_api::upload::{CreateUpload, UploadState};
use cm_api::ErrorCode;
use cm_client::api;
use serde_json::json;
use std::path::{Path, PathBuf};
use std::time::Duration;
use test_infra::rest::{
    assert_error, assert_refused, image_names, post_json, sha256_of, upload_files, uploads,
    write_upload,
};
use test_infra::{image_dir, Cloud, HostOpts};

/// The tiny image boots to its init in a few seconds alone; generous for a
/// shared machine.
const BOOT: Duration = Duration::from_secs(180);

/// The test image's kernel and initrd copied into `dir`.
fn copy_test_image(dir: &Path) -> (PathBuf, PathBuf) {
    std::fs::create_dir_all(dir).unwrap();
    let (k, i) = (dir.join("vmlinuz"), dir.join("initrd.img"));
    std::fs::copy(image_dir().join("vmlinuz"), &k).unwrap();
    std::fs::copy(image_dir().join("initrd.img"), &i).unwrap();
    (k, i)
}

#[test]
fn an_image_uploaded_from_relative_paths_elsewhere_boots() {
    let mut cloud = Cloud::start().unwrap();
    cloud.add_host("h1", HostOpts::default()).unwrap();
    // The files sit in a directory of their own, named relative to cm's
    // working directory; this master has no import directory at all.
    let work = cloud.dir.path().join("laptop");
    let (k, i) = copy_test_image(&work);
    let out = cloud.cm_in(
        &work,
        &[
            "image",
            "add",
            "up",
            "--kernel",
            "./vmlinuz",
            "--initrd",
            "initrd.img",
            "--cmdline",
            "quiet",
        ],
    );
    assert_eq!(out.code, 0, "{}", out.stderr);
    // No progress bar when stderr is not a terminal.
    assert!(!out.stderr.contains("uploading"), "{}", out.stderr);

    let img: Image = cloud.cm_as(&["image", "show", "up"]);
    for (role, path) in [(FileRole::Kernel, &k), (FileRole::Initrd, &i)] {
        let f = img.file(role).unwrap();
        assert_eq!(f.size, std::fs::metadata(path).unwrap().len());
        assert_eq!(f.sha256, sha256_of(path));
        // The master's own copy.
        let copy = cloud
            .master_dir()
            .join("images")
            .join(img.id.to_string())
            .join(role.as_str());
        assert_eq!(sha256_of(&copy), sha256_of(path));
    }
    // The uploads were used up: no record, no file left.
    assert!(uploads(&cloud).is_empty());
    assert!(
        upload_files(&cloud).is_empty(),
        "{:?}",
        upload_files(&cloud)
    );

    // The same files named as master-side paths are refused, naming the field
    // (raw JSON: a request cm never sends).
    let (s, v) = post_json(
        &cloud,
        "/v1/images",
        &json!({"name": "by-path", "kernel": k, "initrd": {"path": i}}),
    );
    assert_error(
        "a path without --image-import-dir",
        (s, v.clone()),
        400,
        "invalid_input",
        Some("kernel"),
    );
    assert!(
        v["error"]["message"]
            .as_str()
            .unwrap()
            .contains("--image-import-dir"),
        "{v}"
    );

    // It boots.
    cloud.cm_ok(&[
        "instance", "create", "vm", "--image", "up", "--flavor", "m1.tiny",
    ]);
    let con = cloud.console("vm").unwrap();
    con.wait_for_boot(BOOT).unwrap();
    assert_eq!(image_names(&cloud), ["up"]);
}

#[test]
fn a_wrong_sha256_is_refused_and_nothing_is_recorded() {
    let cloud = Cloud::start().unwrap();
    let data = b"not the bytes you declared".to_vec();
    let wrong = "0".repeat(64);
    let api = cloud.api();
    let upload = |sha256: &str| {
        api.call(api::uploads::create(&CreateUpload {
            size: Some(data.len() as u64),
            sha256: Some(sha256.to_string()),
            url: None,
        }))
        .unwrap()
    };
    let image = |id, sha256: Option<&str>| {
        api.call(api::catalog::create_image(&CreateImage {
            name: "bad".into(),
            kernel: None,
            initrd: None,
            cmdline: None,
            disk: Some(FileSource::upload(id, sha256.map(str::to_string))),
        }))
    };
    let up = upload(&wrong);
    let id = up.id;
    assert_eq!(up.state, UploadState::Receiving);
    // The last byte in: the master hashes, refuses, removes.
    assert_refused(
        "sha256 mismatch",
        write_upload(&cloud, id, 0, &data),
        400,
        ErrorCode::InvalidInput,
        Some("sha256"),
    );
    assert_refused(
        "the removed upload",
        api.call(api::uploads::show(id)),
        404,
        ErrorCode::NotFound,
        None,
    );
    assert!(upload_files(&cloud).is_empty());
    assert_refused(
        "a removed upload",
        image(id, None),
        404,
        ErrorCode::NotFound,
        Some("disk"),
    );

    // Right bytes, but the image names another sha256: refused, and the
    // upload stays for a corrected request.
    let tmp = cloud.dir.path().join("k");
    std::fs::write(&tmp, &data).unwrap();
    let good = sha256_of(&tmp);
    let id = upload(&good).id;
    let v = write_upload(&cloud, id, 0, &data).unwrap();
    assert_eq!(v.state, UploadState::Complete, "{v:?}");
    assert_refused(
        "image sha256 mismatch",
        image(id, Some(&wrong)),
        400,
        ErrorCode::InvalidInput,
        Some("disk.sha256"),
    );
    assert_eq!(uploads(&cloud).len(), 1);

    // cm checks --sha256 of a local file before sending anything.
    let out = cloud.cm(&[
        "image",
        "add",
        "bad",
        "--disk",
        &tmp.to_string_lossy(),
        "--sha256",
        &wrong,
    ]);
    assert_ne!(out.code, 0);
    assert!(out.stderr.contains("sha256"), "{}", out.stderr);
    assert_eq!(uploads(&cloud).len(), 1);

    assert!(image_names(&cloud).is_empty());
    assert!(cloud.events(Some("image.added")).is_empty());
    assert!(std::fs::read_dir(cloud.master_dir().join("images"))
        .unwrap()
        .next()
        .is_none());
}
