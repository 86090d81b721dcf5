//! Issue 12, point 6, the ssh target as a user meets it: through the real
//! master, a real host agent (qemu-img on a real qcow2 file) and `cm` run
//! as a user runs it (the master's pointer file, a home of its own). A
//! backup `--to ssh://...` (a loopback port nothing listens on: no copy is
//! ever made) is made on the disk's host, shown with its canonical target
//! and `copy there: not yet (WHY)` once the host says its copy failed (the
//! list: `failing`); the next backup of the disk goes there by
//! default; another ssh target is refused with the one in use (`409`,
//! field `to`) and changes nothing; `--to host` is taken in the same chain.

use cm_api::backup::{Backup, BackupState};
use std::time::Duration;
use test_infra::deploy::DeployUser;
use test_infra::{wait_until, Cloud, HostOpts};

const NAS: &str = "ssh://backup@127.0.0.1:1/srv/cm-backups";

fn both(out: &test_infra::cloud::CmOut) -> String {
    format!("{}{}", out.stderr, out.stdout)
}

#[test]
fn a_chain_kept_over_ssh_is_said_so_and_kept_in_one_place() {
    let mut cloud = Cloud::start().unwrap();
    cloud.add_host("h1", HostOpts::default()).unwrap();
    let user = DeployUser::new(&cloud, "backup-targets");
    user.ok(&["volume", "create", "data", "--size", "16M", "--host", "h1"]);

    // Written loosely (a trailing /): kept canonical.
    let slash = format!("{NAS}/");
    let out = user.cm(&["backup", "create", "data", "--name", "d1", "--to", &slash]);
    assert_eq!(out.code, 0, "{}", both(&out));
    let said = both(&out);
    assert!(said.contains(&format!("to copy to {NAS}")), "{said}");
    assert!(
        said.contains("backup d1 of volume data is ready on h1"),
        "{said}"
    );
    assert!(said.contains(&format!("copy at {NAS}: not yet")), "{said}");
    let d1: Backup = user.json(&["backup", "show", "d1"]);
    assert_eq!((d1.state, d1.target.as_str()), (BackupState::Ready, NAS));
    assert_ne!(d1.mirrored, Some(true), "nothing listens there: {d1:?}");
    // The host tries, fails, and says why: shown, the backup still ready.
    let d1 = wait_until("d1's failed copy reported", Duration::from_secs(60), || {
        let b: Backup = user.json(&["backup", "show", "d1"]);
        b.mirror_error.is_some().then_some(b)
    })
    .unwrap();
    assert_eq!((d1.state, d1.mirrored), (BackupState::Ready, Some(false)));
    let shown = user.ok(&["backup", "show", "d1"]);
    eprintln!("$ cm backup show d1\n{shown}");
    assert!(shown.contains(&format!("target: {NAS}")), "{shown}");
    assert!(shown.contains("copy there: not yet ("), "{shown}");

    // The disk's next backup: the chain's target by default.
    user.ok(&["backup", "create", "data", "--name", "d2"]);
    let d2: Backup = user.json(&["backup", "show", "d2"]);
    assert_eq!(d2.target, NAS);

    // Another ssh target: refused with the one in use; nothing changes.
    let out = user.cm(&[
        "backup",
        "create",
        "data",
        "--name",
        "d3",
        "--to",
        "ssh://backup@127.0.0.1:2/srv/other",
    ]);
    assert_ne!(out.code, 0, "{}", both(&out));
    for words in ["field: to", NAS, "d1, d2", "delete those backups first"] {
        assert!(
            out.stderr.contains(words),
            "{words:?} not in {}",
            out.stderr
        );
    }
    eprintln!("refused as it should be: {}", out.stderr.trim());
    let list: Vec<Backup> = user.json(&["backup", "list"]);
    let names: Vec<&str> = list.iter().map(|b| b.name.as_str()).collect();
    assert_eq!(names, ["d1", "d2"]);

    // `host`: made in the same chain (copied with it).
    user.ok(&["backup", "create", "data", "--name", "d3", "--to", "host"]);
    let d3: Backup = user.json(&["backup", "show", "d3"]);
    assert_eq!((d3.state, d3.target.as_str()), (BackupState::Ready, "host"));
    let table = user.ok(&["backup", "list"]);
    let head = table.lines().next().unwrap_or("");
    assert!(head.contains("COPY"), "{table}");
    eprintln!("$ cm backup list\n{table}");
    let d1_row = table
        .lines()
        .find(|l| l.trim_start().starts_with("d1 "))
        .unwrap_or("");
    assert!(d1_row.contains("failing"), "{table}");
}
