//! Issue 12, point 6, the second target: backups kept on a machine reached
//! over ssh. Real master, real host agents started as docs/host.md says
//! (`--backup-ssh-key`, `--backup-known-hosts`; h1 with `--backups-dir`), a real sshd on a loopback
//! address with its own key (test_infra::sshd: the "backup server"), real
//! rsync and qemu-img, no VM; `cm` as a user runs it.
//!
//! A volume's backup `--to ssh://...` is made on its host and copied there
//! (the copy's files are checked on the server's side); the next backup
//! without `--to` goes to the same place and is an increment; a bad target
//! is refused with the reason; a deletion is copied; with the server down a
//! backup is still made and says it is not copied, and is copied once the
//! server is back; the volume is deleted and h1 loses its backup directory
//! (a reinstall): h1 fetches the chain back, and the last backup restores
//! on h2 as the disk was.

use cm_api::backup::{Backup, BackupKind, BackupState};
use cm_api::volume::Volume;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};
use test_infra::deploy::DeployUser;
use test_infra::qcow2::{assert_same, copy, write_pattern};
use test_infra::sshd::{SshFleet, NODE_DIR};
use test_infra::{wait_until, Cloud, HostOpts};

const MIB: u64 = 1 << 20;

fn host_opts(fleet: &SshFleet) -> HostOpts {
    HostOpts {
        extra: vec![
            "--backup-ssh-key".into(),
            fleet.key.display().to_string(),
            "--backup-known-hosts".into(),
            fleet.known_hosts.display().to_string(),
        ],
        ..HostOpts::default()
    }
}

fn files_in(dir: &Path) -> Vec<String> {
    let mut v: Vec<String> = std::fs::read_dir(dir)
        .map(|d| {
            d.flatten()
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .collect()
        })
        .unwrap_or_default();
    v.sort();
    v
}

/// Wait until `cm backup show NAME` says the copy over ssh holds it.
fn wait_copied(user: &DeployUser, name: &str) -> Backup {
    let r = wait_until(
        &format!("backup {name} copied over ssh"),
        Duration::from_secs(90),
        || {
            let b: Backup = user.json(&["backup", "show", name]);
            (b.mirrored == Some(true)).then_some(b)
        },
    );
    match r {
        Ok(b) => b,
        Err(e) => {
            let b: Backup = user.json(&["backup", "show", name]);
            panic!("{e}: {b:?}")
        }
    }
}

#[test]
fn backups_are_copied_over_ssh_and_fetched_back_by_a_host_that_lost_them() {
    let mut fleet = SshFleet::start(&["nas"]).unwrap();
    let nas = fleet.node("nas");
    let target = format!(
        "ssh://root@{}:{}{NODE_DIR}/cm-backups",
        nas.addr, fleet.port
    );
    let server_dir = nas.root.join("cm-backups");
    let scratch = tempfile::tempdir().unwrap();
    // h1 keeps its chains where it is told (a disk of their own, say).
    let h1_backups = scratch.path().join("h1-backups");
    let mut h1 = host_opts(&fleet);
    h1.extra.push("--backups-dir".into());
    h1.extra.push(h1_backups.display().to_string());
    let mut cloud = Cloud::start().unwrap();
    cloud.add_host("h1", h1).unwrap();
    cloud.add_host("h2", host_opts(&fleet)).unwrap();
    let user = DeployUser::new(&cloud, "ssh-backups");
    user.ok(&["volume", "create", "data", "--size", "64M", "--host", "h1"]);
    let data: Volume = user.json(&["volume", "show", "data"]);
    let file: PathBuf = cloud
        .host("h1")
        .data_dir
        .join("volumes")
        .join(format!("{}.qcow2", data.id));
    write_pattern(&file, 0x11, 0, MIB);

    // The first backup, to the server: made on h1, copied there.
    let out = user.ok(&["backup", "create", "data", "--to", &target, "--name", "d1"]);
    assert!(
        out.contains("backup d1 of volume data is ready on h1"),
        "{out}"
    );
    let d1 = wait_copied(&user, "d1");
    assert_eq!(d1.target, target);
    assert_eq!(d1.kind, Some(BackupKind::Full));
    assert_eq!(d1.mirror_error, None);
    let chain = server_dir.join(format!("volume-{}", data.id));
    assert_eq!(
        files_in(&chain),
        vec![format!("0001-{}.qcow2", d1.id), format!("{}.json", d1.id)]
    );
    let shown = user.ok(&["backup", "show", "d1"]);
    assert!(shown.contains(&target), "{shown}");

    // The next one, without --to: kept at the same place, an increment.
    write_pattern(&file, 0x22, 8 * MIB, 4 * MIB);
    let t = Instant::now();
    user.ok(&["backup", "create", "data", "--name", "d2"]);
    let made = t.elapsed();
    let d2 = wait_copied(&user, "d2");
    let copied = t.elapsed();
    assert_eq!(d2.target, target);
    assert_eq!(d2.kind, Some(BackupKind::Incremental), "{d2:?}");
    let at_d2 = scratch.path().join("at-d2.qcow2");
    copy(&file, &at_d2);
    assert_same(&chain.join(format!("0002-{}.qcow2", d2.id)), &at_d2);
    // Beside it, the same chain copied by hand with rsync over the same ssh
    // to a new directory on the server (every file new, so more work than
    // the agent's copy of one new file).
    let local = h1_backups.join(format!("volume-{}", data.id));
    assert!(
        local.is_dir(),
        "no chain in --backups-dir: {}",
        local.display()
    );
    let t = Instant::now();
    let out = Command::new("rsync")
        .args(["-a", "--mkpath", "-e"])
        .arg(format!("ssh -F {}", fleet.ssh_config.display()))
        .arg(format!("{}/", local.display()))
        .arg(format!("{}:{NODE_DIR}/by-hand/", fleet.node("nas").addr))
        .output()
        .unwrap();
    let by_hand = t.elapsed();
    assert!(out.status.success(), "{out:?}");
    eprintln!(
        "figures: `cm backup create` of a 4 MiB increment {:.2} s; copied over ssh {:.2} s \
         after the command began (polled every 0.1 s); rsync of the whole chain by hand {:.2} s",
        made.as_secs_f64(),
        copied.as_secs_f64(),
        by_hand.as_secs_f64()
    );

    // Bad targets: refused with the reason, nothing made.
    for (bad, words) in [
        ("ssh://nas", "needs a path"),
        ("ssh://nas/srv/../etc", "'..'"),
        ("ssh://-oProxyCommand=x/srv", "may hold"),
        ("ftp://nas/srv", "'host'"),
    ] {
        let out = user.cm(&["backup", "create", "data", "--to", bad]);
        assert_ne!(out.code, 0, "--to {bad} was taken: {}", out.stdout);
        assert!(
            out.stderr.contains(words) && out.stderr.contains("to"),
            "--to {bad}: {words:?} not in {}",
            out.stderr
        );
    }
    let all: Vec<Backup> = user.json(&["backup", "list"]);
    assert_eq!(all.len(), 2, "{all:?}");

    // A deletion is copied: d1's file goes from the server, and d2 there
    // (rebased on nothing) still reads as the disk did.
    user.ok(&["backup", "delete", "d1"]);
    wait_until("d1 gone from the server", Duration::from_secs(60), || {
        (!files_in(&chain).contains(&format!("0001-{}.qcow2", d1.id))).then_some(())
    })
    .unwrap();
    assert_same(&chain.join(format!("0002-{}.qcow2", d2.id)), &at_d2);

    // The server down: a backup is still made (on h1), and says it is not
    // copied, and why; once the server is back it is copied.
    fleet.node_mut("nas").stop();
    write_pattern(&file, 0x33, 20 * MIB, 2 * MIB);
    user.ok(&["backup", "create", "data", "--name", "d3"]);
    let d3 = wait_until("d3 reported not copied", Duration::from_secs(60), || {
        let b: Backup = user.json(&["backup", "show", "d3"]);
        (b.mirrored == Some(false) && b.mirror_error.is_some()).then_some(b)
    })
    .unwrap();
    assert_eq!(d3.state, BackupState::Ready);
    let shown = user.ok(&["backup", "show", "d3"]);
    assert!(shown.contains("rsync"), "{shown}");
    let at_d3 = scratch.path().join("at-d3.qcow2");
    copy(&file, &at_d3);
    let port = fleet.port;
    fleet.node_mut("nas").restart(port).unwrap();
    let d3 = wait_copied(&user, "d3");
    assert_eq!(d3.mirror_error, None);

    // The volume deleted, then h1 loses its backups (a reinstall): it
    // fetches the chain back from the server, and d3 restores on h2.
    user.ok(&["volume", "delete", "data"]);
    cloud.stop_host("h1", libc::SIGKILL);
    assert!(local.is_dir(), "{} is not there", local.display());
    std::fs::remove_dir_all(&local).unwrap();
    cloud.restart_host("h1").unwrap();
    let out = user.ok(&["backup", "restore", "d3", "--as", "back", "--host", "h2"]);
    assert!(out.contains("volume back is available on h2"), "{out}");
    let back: Volume = user.json(&["volume", "show", "back"]);
    let back_file = cloud
        .host("h2")
        .data_dir
        .join("volumes")
        .join(format!("{}.qcow2", back.id));
    assert_same(&back_file, &at_d3);
    assert!(
        local.join(format!("0003-{}.qcow2", d3.id)).exists(),
        "h1 did not fetch its chain back: {:?}",
        files_in(&local)
    );
    // Both backups are still there and copied.
    for name in ["d2", "d3"] {
        let b: Backup = user.json(&["backup", "show", name]);
        assert_eq!(b.state, BackupState::Ready, "{b:?}");
    }
    wait_copied(&user, "d2");
}
