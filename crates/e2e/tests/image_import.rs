//! Issue 9, point 3: images from the master's side. Paths only from the
//! operator's import directory (never `/etc/shadow`, `/proc/self/environ`
//! or a symlink leading out); `https://` URLs fetched by the master, with
//! the test's own CA. Raw JSON for the refused requests: mistyped and
//! hostile fields are the point.

use cm_api::image::{CreateImage, FileSource, Image};
use cm_api::upload::{CreateUpload, UploadState};
use cm_api::ErrorCode;
use cm_client::api;
use serde_json::json;
use std::path::Path;
use std::process::Command;
use std::time::Duration;
use test_infra::https::HttpsServer;
use test_infra::proxy::{Proxy, ProxyOpts};
use test_infra::rest::{assert_error, assert_refused, image_names, post_json, sha256_of};
use test_infra::{image_dir, wait_until, Cloud, HostOpts, MasterOpts};

const BOOT: Duration = Duration::from_secs(180);

fn qcow2(path: &Path, size: &str) {
    let ok = Command::new("qemu-img")
        .args(["create", "-q", "-f", "qcow2"])
        .arg(path)
        .arg(size)
        .status()
        .unwrap();
    assert!(ok.success());
}

#[test]
fn master_side_paths_only_from_the_import_dir() {
    let tmp = tempfile::tempdir().unwrap();
    let import = tmp.path().join("import");
    std::fs::create_dir_all(import.join("sub")).unwrap();
    std::fs::copy(image_dir().join("vmlinuz"), import.join("vmlinuz")).unwrap();
    std::fs::copy(
        image_dir().join("initrd.img"),
        import.join("sub/initrd.img"),
    )
    .unwrap();
    qcow2(&import.join("disk.qcow2"), "32M");
    std::os::unix::fs::symlink("/etc/shadow", import.join("shadow")).unwrap();
    std::os::unix::fs::symlink("/proc/self/environ", import.join("environ")).unwrap();
    std::os::unix::fs::symlink("/etc", import.join("etc")).unwrap();
    let secret = tmp.path().join("outside.qcow2");
    qcow2(&secret, "1M");
    std::os::unix::fs::symlink(&secret, import.join("sub/outside.qcow2")).unwrap();
    let c = std::ffi::CString::new(import.join("fifo").to_string_lossy().as_bytes()).unwrap();
    // SAFETY: a valid C string.
    assert_eq!(unsafe { libc::mkfifo(c.as_ptr(), 0o600) }, 0);

    let cloud = Cloud::start_with(MasterOpts {
        extra: vec!["--image-import-dir".into(), import.to_string_lossy().into()],
        ..MasterOpts::default()
    })
    .unwrap();
    for (what, disk) in [
        ("/etc/shadow", json!("/etc/shadow")),
        ("/proc/self/environ", json!({"path": "/proc/self/environ"})),
        ("a symlink to /etc/shadow", json!({"path": "shadow"})),
        (
            "a symlink to /proc/self/environ",
            json!({"path": "environ"}),
        ),
        (
            "through a symlinked directory",
            json!({"path": "etc/passwd"}),
        ),
        (
            "a symlink to a file beside the dir",
            json!({"path": "sub/outside.qcow2"}),
        ),
        ("..", json!({"path": "sub/../../outside.qcow2"})),
        ("a FIFO", json!({"path": "fifo"})),
        ("a directory", json!({"path": "sub"})),
        ("a missing file", json!({"path": "nope.qcow2"})),
        ("/dev/zero", json!({"path": "/dev/zero"})),
    ] {
        let got = post_json(&cloud, "/v1/images", &json!({"name": "x", "disk": disk}));
        assert_error(what, got, 400, "invalid_input", Some("disk"));
    }
    let got = post_json(
        &cloud,
        "/v1/images",
        &json!({"name": "x", "kernel": {"path": "/etc/shadow"}, "initrd": {"path": "sub/initrd.img"}}),
    );
    assert_error(
        "kernel /etc/shadow",
        got,
        400,
        "invalid_input",
        Some("kernel"),
    );
    // cm says the same, exit code 1.
    let out = cloud.cm(&["image", "add", "x", "--disk", "/etc/shadow", "--on-master"]);
    assert_eq!(out.code, 1, "{}", out.stderr);
    assert!(
        out.stderr.contains("outside the import directory"),
        "{}",
        out.stderr
    );
    assert!(image_names(&cloud).is_empty());

    // Inside: relative to the directory, or absolute.
    cloud.cm_ok(&[
        "image",
        "add",
        "k",
        "--on-master",
        "--kernel",
        "vmlinuz",
        "--initrd",
        "sub/initrd.img",
    ]);
    let img: Image = cloud.cm_as(&["image", "show", "k"]);
    assert_eq!(img.files[0].sha256, sha256_of(&import.join("vmlinuz")));
    let abs = import.join("disk.qcow2");
    cloud.cm_ok(&[
        "image",
        "add",
        "d",
        "--on-master",
        "--disk",
        &abs.to_string_lossy(),
        "--sha256",
        &sha256_of(&abs),
    ]);
    let img: Image = cloud.cm_as(&["image", "show", "d"]);
    assert_eq!(img.files[0].format.as_deref(), Some("qcow2"));
    assert_eq!(image_names(&cloud), ["d", "k"]);
    // The master copied them: the originals may go.
    std::fs::remove_file(import.join("vmlinuz")).unwrap();
    let copy = cloud
        .master_dir()
        .join("images")
        .join(cloud.cm_as::<Image>(&["image", "show", "k"]).id.to_string())
        .join("kernel");
    assert!(copy.exists());
}

#[test]
fn an_https_url_is_fetched_by_the_master_with_the_tests_ca() {
    let tmp = tempfile::tempdir().unwrap();
    let www = tmp.path().join("www");
    std::fs::create_dir_all(&www).unwrap();
    std::fs::copy(image_dir().join("vmlinuz"), www.join("vmlinuz")).unwrap();
    std::fs::copy(image_dir().join("initrd.img"), www.join("initrd.img")).unwrap();
    qcow2(&www.join("blank.qcow2"), "16M");
    let server = HttpsServer::start(&www, &tmp.path().join("tls")).unwrap();

    // A master that does not trust the test's CA refuses the server.
    let untrusting = Cloud::start().unwrap();
    let out = untrusting.cm(&["image", "add", "b", "--disk", &server.url("blank.qcow2")]);
    assert_eq!(out.code, 1, "{}", out.stderr);
    assert!(out.stderr.contains("certificate"), "{}", out.stderr);
    assert!(image_names(&untrusting).is_empty());
    drop(untrusting);

    let mut cloud = Cloud::start_with(MasterOpts {
        extra: vec![
            "--image-import-ca".into(),
            server.ca.to_string_lossy().into(),
        ],
        ..MasterOpts::default()
    })
    .unwrap();
    cloud.add_host("h1", HostOpts::default()).unwrap();
    cloud.cm_ok(&[
        "image",
        "add",
        "web",
        "--kernel",
        &server.url("vmlinuz"),
        "--initrd",
        &server.url("initrd.img"),
        "--cmdline",
        "quiet",
    ]);
    let img: Image = cloud.cm_as(&["image", "show", "web"]);
    assert_eq!(img.files[0].sha256, sha256_of(&www.join("vmlinuz")));
    assert_eq!(img.files[1].sha256, sha256_of(&www.join("initrd.img")));

    // With the sha256 given: checked, and a wrong one refuses the image.
    let blank = www.join("blank.qcow2");
    cloud.cm_ok(&[
        "image",
        "add",
        "blank",
        "--disk",
        &server.url("blank.qcow2"),
        "--sha256",
        &sha256_of(&blank),
    ]);
    let out = cloud.cm(&[
        "image",
        "add",
        "wrong",
        "--disk",
        &server.url("blank.qcow2"),
        "--sha256",
        &"a".repeat(64),
    ]);
    assert_eq!(out.code, 1, "{}", out.stderr);
    assert!(out.stderr.contains("sha256"), "{}", out.stderr);
    // Plain http is refused before anything is fetched.
    let out = cloud.cm(&[
        "image",
        "add",
        "plain",
        "--disk",
        &format!("http://127.0.0.1:{}/blank.qcow2", server.port),
    ]);
    assert_eq!(out.code, 1, "{}", out.stderr);
    assert!(out.stderr.contains("https"), "{}", out.stderr);
    assert_eq!(image_names(&cloud), ["blank", "web"]);

    // The fetched kernel image boots.
    cloud.cm_ok(&[
        "instance", "create", "vm", "--image", "web", "--flavor", "m1.tiny",
    ]);
    cloud.console("vm").unwrap().wait_for_boot(BOOT).unwrap();

    // A master killed mid-fetch (the server slowed down by a proxy) marks
    // the import failed on its next start and keeps none of its bytes.
    let slow = Proxy::start(
        &format!("127.0.0.1:{}", server.port),
        ProxyOpts {
            cut_after: None,
            rate: Some(64 << 10),
        },
    )
    .unwrap();
    let up = cloud
        .api()
        .call(api::uploads::create(&CreateUpload {
            size: None,
            sha256: None,
            url: Some(format!("https://127.0.0.1:{}/vmlinuz", slow.port)),
        }))
        .unwrap();
    assert_eq!(up.state, UploadState::Fetching, "{up:?}");
    let id = up.id;
    let get = |cloud: &Cloud| cloud.api().call(api::uploads::show(id));
    wait_until("the fetch to start", Duration::from_secs(60), || {
        get(&cloud).ok().filter(|u| u.offset > 0).map(drop)
    })
    .unwrap();
    cloud.stop_master(libc::SIGKILL);
    cloud.start_master().unwrap();
    let up = get(&cloud).unwrap();
    assert_eq!(up.state, UploadState::Failed, "{up:?}");
    assert_eq!(
        up.error.as_ref().and_then(|e| e.field.as_deref()),
        Some("url"),
        "{up:?}"
    );
    assert!(!cloud
        .master_dir()
        .join("uploads")
        .join(id.to_string())
        .exists());
    assert_refused(
        "the same upload twice",
        cloud.api().call(api::catalog::create_image(&CreateImage {
            name: "half".into(),
            kernel: Some(FileSource::upload(id, None)),
            initrd: Some(FileSource::upload(id, None)),
            cmdline: None,
            disk: None,
        })),
        400,
        ErrorCode::InvalidInput,
        Some("initrd"),
    );
    assert_eq!(image_names(&cloud), ["blank", "web"]);
}
