//! Issue 2, point 10: README.md starts with the two commands, and the local
//! cloud of `make run` (scripts/run-local.sh) starts, works and stops.

use std::process::Command;
use std::time::Duration;
use test_infra::{bin, free_port, wait_until, workspace_root};

#[test]
fn the_readme_starts_with_make_run_and_make_test() {
    let readme = std::fs::read_to_string(workspace_root().join("README.md")).unwrap();
    let commands: Vec<&str> = readme
        .lines()
        .filter(|l| l.starts_with("make "))
        .take(2)
        .map(|l| l.split('#').next().unwrap_or("").trim())
        .collect();
    assert_eq!(commands, ["make run", "make test"]);
    // They come first: nothing but the title before the block that holds them.
    let before: Vec<&str> = readme
        .lines()
        .take_while(|l| !l.starts_with("make run"))
        .filter(|l| !l.trim().is_empty())
        .collect();
    assert_eq!(before, ["# cloudmaster", "```sh"], "{before:?}");
    let ci = std::fs::read_to_string(workspace_root().join(".ci/run")).unwrap();
    assert!(ci.contains("make test"), "{ci}");
}

#[test]
fn make_run_starts_a_local_cloud_that_works_and_make_stop_stops_it() {
    let var = tempfile::Builder::new()
        .prefix("cmrun")
        .tempdir_in("/tmp")
        .unwrap();
    let images = var.path().join("images");
    std::fs::create_dir_all(&images).unwrap();
    std::os::unix::fs::symlink(test_infra::image_dir(), images.join("cm-test")).unwrap();
    let port = free_port().to_string();
    let script = workspace_root().join("scripts/run-local.sh");
    let bin_dir = bin("cm").parent().unwrap().to_path_buf();
    let run = |arg: &str| {
        Command::new(&script)
            .arg(arg)
            .env("VAR", var.path())
            .env("CM_PORT", &port)
            .env("CM_BIN_DIR", &bin_dir)
            .env("CM_RUNTIME_DIR", var.path().join("cmrun"))
            .output()
            .unwrap()
    };
    let out = run("start");
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    let guard = Stopper(&run);
    assert!(
        out.status.success(),
        "{stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        stdout.contains("cm instance create web-1 --image cm-test"),
        "{stdout}"
    );

    // cm finds this master through its pointer file, with no URL or token.
    let cm = |args: &[&str]| {
        let o = Command::new(bin("cm"))
            .args(args)
            .env_remove("CM_URL")
            .env_remove("CM_TOKEN")
            .env("CM_RUNTIME_DIR", var.path().join("cmrun"))
            .env("HOME", var.path())
            .output()
            .unwrap();
        assert!(
            o.status.success(),
            "cm {args:?}: {}",
            String::from_utf8_lossy(&o.stderr)
        );
        String::from_utf8_lossy(&o.stdout).into_owned()
    };
    assert!(cm(&["host", "list"]).contains("local"));
    // Registering the image is the user's first step (README.md, readme.rs).
    let kernel = images.join("cm-test/vmlinuz").display().to_string();
    let initrd = images.join("cm-test/initrd.img").display().to_string();
    cm(&[
        "image", "add", "cm-test", "--kernel", &kernel, "--initrd", &initrd,
    ]);
    assert!(cm(&["image", "list"]).contains("cm-test"));
    cm(&[
        "instance", "create", "web-1", "--image", "cm-test", "--flavor", "m1.tiny",
    ]);
    assert!(cm(&["instance", "list"]).contains("running"));

    drop(guard);
    let pidfile = var.path().join("run/master.pid");
    assert!(!pidfile.exists(), "the master's pidfile is left");
    let url = format!("http://127.0.0.1:{port}/v1/hosts");
    wait_until("the master to be gone", Duration::from_secs(10), || {
        (test_infra::http("GET", &url, None, None).0 == 0).then_some(())
    })
    .unwrap();
    // The VM was stopped through the cloud, so nothing is left running.
    let left = Command::new("pgrep")
        .args(["-f", &var.path().join("host").display().to_string()])
        .output()
        .unwrap();
    assert!(
        left.stdout.is_empty(),
        "processes left: {}",
        String::from_utf8_lossy(&left.stdout)
    );
}

/// Runs `stop` when dropped, so a failed test leaves nothing running.
struct Stopper<'a, F: Fn(&str) -> std::process::Output>(&'a F);

impl<F: Fn(&str) -> std::process::Output> Drop for Stopper<'_, F> {
    fn drop(&mut self) {
        let out = (self.0)("stop");
        if !out.status.success() {
            eprintln!("stop: {}", String::from_utf8_lossy(&out.stderr));
        }
    }
}
