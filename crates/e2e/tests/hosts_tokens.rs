//! Issue 9, point 14: revoking the admin token takes effect on the running
//! master, without a restart: `cloudmasterd --reset-admin-token` (a second
//! process writing the store) and `cm token rotate` (REST).

use std::os::unix::fs::PermissionsExt;
use std::time::{Duration, Instant};
use test_infra::{bin, wait_until, Cloud};

/// What the running master answers to `token` on an admin endpoint (0: no answer).
fn status(cloud: &Cloud, token: &str) -> u16 {
    let client = cm_client::blocking::Client::new(&cloud.url, token).unwrap();
    match client.call(cm_client::api::hosts::list()) {
        Ok(_) => 200,
        Err(e) => e.status().map(|s| s.as_u16()).unwrap_or(0),
    }
}

fn token_file(cloud: &Cloud) -> String {
    let p = cloud.master_dir().join("admin.token");
    let mode = std::fs::metadata(&p).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o600, "admin.token is private");
    std::fs::read_to_string(&p).unwrap().trim().to_string()
}

/// Wait until `old` is refused; returns how long that took. The master
/// looks for changed tokens every 250 ms: it must take well under a second.
/// The bound asserted is generous (a busy machine must not fail the test);
/// the figure is printed.
fn revoked_within(cloud: &Cloud, old: &str, start: Instant, what: &str) -> Duration {
    wait_until(
        &format!("the old admin token to be refused after {what}"),
        Duration::from_secs(10),
        || (status(cloud, old) == 401).then(|| start.elapsed()),
    )
    .unwrap()
}

#[test]
fn a_revoked_admin_token_stops_working_on_the_running_master() {
    let mut cloud = Cloud::start().unwrap();
    let first = cloud.token.clone();
    assert_eq!(status(&cloud, &first), 200);
    let master_pid = cloud.master_pid().unwrap();

    // A second process writes the store while the master runs.
    let out = std::process::Command::new(bin("cloudmasterd"))
        .arg("--data-dir")
        .arg(cloud.master_dir())
        .arg("--reset-admin-token")
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let took = revoked_within(&cloud, &first, Instant::now(), "--reset-admin-token");
    eprintln!("--reset-admin-token: old token refused after {took:?}");
    assert!(took < Duration::from_secs(3), "took {took:?}");
    let second = token_file(&cloud);
    assert_ne!(second, first);
    assert_eq!(status(&cloud, &second), 200, "the new token works at once");
    assert_eq!(cloud.master_pid(), Some(master_pid), "no restart");

    // cm token rotate, with the token cm is given.
    cloud.token = second.clone();
    let start = Instant::now();
    let out = cloud.cm(&["token", "rotate"]);
    assert_eq!(out.code, 0, "{}", out.stderr);
    let third = out.stdout.trim().to_string();
    assert!(third.starts_with("cma_") && third != second, "{third}");
    assert!(out.stderr.contains("no longer works"), "{}", out.stderr);
    let took = revoked_within(&cloud, &second, start, "cm token rotate");
    eprintln!("cm token rotate: old token refused after {took:?}");
    assert!(took < Duration::from_secs(3), "took {took:?}");
    assert_eq!(token_file(&cloud), third, "written to admin.token");
    assert_eq!(status(&cloud, &third), 200);
    assert_eq!(status(&cloud, &first), 401);

    // The old token cannot rotate again.
    cloud.token = second;
    let out = cloud.cm(&["token", "rotate"]);
    assert_eq!(out.code, 1, "{}", out.stderr);
    assert_eq!(token_file(&cloud), third);
}
