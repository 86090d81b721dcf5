//! Issue 12, points 6 and 9: backups of a volume a running guest holds, on
//! real QEMU guests (TCG, the test image) in a cloud of two hosts, driven
//! as a user (`cm` with the master's pointer file and its own HOME). The
//! volume is attached hot to a guest on h1, which writes a file on it and
//! keeps it mounted; the backup is made by the VM's QEMU (online, the
//! guest's file systems frozen by cm-guest: consistency `filesystem`); the
//! file is changed and a second backup holds only the change; the volume
//! is detached and deleted; the first backup is restored as a new volume
//! on h2, attached to a guest there, which reads the first content. A
//! name that is both a volume's and an instance's is refused until the
//! user says which.
//! Prints how long the backups and the restore took.

use cm_api::backup::{Backup, BackupKind, BackupState};
use cm_api::snapshot::Consistency;
use cm_api::volume::{Volume, VolumeState};
use std::time::{Duration, Instant};
use test_infra::console::Console;
use test_infra::deploy::DeployUser;
use test_infra::guest_disks::{must, read_file, wait_disk, wait_disk_gone};
use test_infra::{Cloud, HostOpts};

const BOOT: Duration = Duration::from_secs(120);
const SEE: Duration = Duration::from_secs(60);

fn boot(cloud: &Cloud, user: &DeployUser, name: &str, host: &str) -> Console {
    user.ok(&[
        "instance", "create", name, "--image", "cm-test", "--flavor", "m1.tiny", "--host", host,
    ]);
    let con = cloud.console(name).unwrap();
    con.wait_for_boot(BOOT).unwrap();
    con
}

fn volume(user: &DeployUser, name: &str) -> Volume {
    user.json(&["volume", "show", name])
}

fn backup(user: &DeployUser, name: &str) -> Backup {
    user.json(&["backup", "show", name])
}

/// `cm ARGS` timed: what it printed (stderr and stdout) and how long.
fn timed(user: &DeployUser, args: &[&str]) -> (String, Duration) {
    let t = Instant::now();
    let out = user.cm(args);
    let took = t.elapsed();
    assert_eq!(out.code, 0, "cm {args:?}: {}{}", out.stderr, out.stdout);
    eprintln!("$ cm {}\n{}{}", args.join(" "), out.stderr, out.stdout);
    (format!("{}{}", out.stderr, out.stdout), took)
}

#[test]
fn a_running_guests_volume_backed_up_online_restores_on_another_host() {
    let mut cloud = Cloud::start().unwrap();
    cloud.add_host("h1", HostOpts::default()).unwrap();
    cloud.add_host("h2", HostOpts::default()).unwrap();
    cloud.add_test_image().unwrap();
    let user = DeployUser::new(&cloud, "backups");
    let mut a = boot(&cloud, &user, "a", "h1");

    // A name both a volume's and an instance's: cm asks which; a kernel
    // image's instance has no root disk to back up.
    user.ok(&["volume", "create", "a", "--size", "16M", "--host", "h1"]);
    let out = user.cm(&["backup", "create", "a"]);
    assert_ne!(out.code, 0, "{out:?}");
    assert!(
        out.stderr.contains("--volume a or --instance a"),
        "{}",
        out.stderr
    );
    let out = user.cm(&["backup", "create", "--instance", "a"]);
    assert_ne!(out.code, 0, "{out:?}");
    assert!(out.stderr.contains("root disk"), "{}", out.stderr);
    let (said, _) = timed(&user, &["backup", "create", "--volume", "a"]);
    assert!(said.contains("of volume a is ready on h1"), "{said}");
    assert!(said.contains("offline consistent"), "{said}");

    // Attached hot, written from inside the guest, left mounted.
    user.ok(&["volume", "create", "data", "--size", "64M", "--host", "h1"]);
    let v = volume(&user, "data");
    let t = Instant::now();
    user.ok(&["volume", "attach", "data", "a"]);
    let (dev, _) = wait_disk(&mut a, &v.serial, t, SEE).unwrap();
    must(
        &mut a,
        &format!(
            "mke2fs -q /dev/{dev} && mkdir -p /mnt/v && mount /dev/{dev} /mnt/v && \
             echo first > /mnt/v/f && sync"
        ),
    )
    .unwrap();

    // Online, by the VM's QEMU, the file system frozen around its start.
    let (said, took_full) = timed(&user, &["backup", "create", "data", "--name", "data-1"]);
    let first = backup(&user, "data-1");
    assert_eq!(first.state, BackupState::Ready, "{first:?}");
    assert_eq!(first.kind, Some(BackupKind::Full), "{first:?}");
    println!("online backup consistency: {:?}", first.consistency);
    assert_eq!(
        first.consistency,
        Some(Consistency::Filesystem),
        "{first:?}"
    );
    assert!(said.contains("filesystem consistent"), "{said}");
    assert!(said.contains("full: "), "{said}");
    // The guest was thawed: it writes again.
    must(&mut a, "echo second > /mnt/v/f && sync").unwrap();

    let (said, took_incr) = timed(&user, &["backup", "create", "data", "--name", "data-2"]);
    let second = backup(&user, "data-2");
    assert_eq!(second.kind, Some(BackupKind::Incremental), "{second:?}");
    assert!(said.contains("incremental"), "{said}");
    let full_file = first.file_bytes.unwrap_or(0);
    let incr_file = second.file_bytes.unwrap_or(u64::MAX);
    assert!(
        incr_file < full_file,
        "the increment ({incr_file} bytes) is not smaller than the full ({full_file})"
    );

    // The volume goes; its backups stay.
    must(&mut a, "umount /mnt/v").unwrap();
    user.ok(&["volume", "detach", "data"]);
    wait_disk_gone(&mut a, &v.serial, SEE).unwrap();
    user.ok(&["volume", "delete", "data"]);
    let left: Vec<Backup> = user.json(&["backup", "list"]);
    let left: Vec<&str> = left
        .iter()
        .filter(|x| x.source_id == v.id)
        .map(|x| x.name.as_str())
        .collect();
    assert_eq!(left, ["data-1", "data-2"]);
    drop(a);

    // The first backup, restored on h2, read by a guest there.
    let mut b = boot(&cloud, &user, "b", "h2");
    let (said, took_restore) = timed(
        &user,
        &[
            "backup", "restore", "data-1", "--as", "back", "--host", "h2",
        ],
    );
    assert!(said.contains("volume back is available on h2"), "{said}");
    let back = volume(&user, "back");
    assert_eq!(
        (back.state, back.host.as_str()),
        (VolumeState::Available, "h2")
    );
    assert_eq!(back.size_bytes, 64 << 20);
    let t = Instant::now();
    user.ok(&["volume", "attach", "back", "b"]);
    let (dev_b, _) = wait_disk(&mut b, &back.serial, t, SEE).unwrap();
    assert_eq!(read_file(&mut b, &dev_b, "f").unwrap(), "first");

    println!(
        "figures: online full {:.2} s (host {:?} ms, file {full_file} B), online increment \
         {:.2} s (host {:?} ms, file {incr_file} B), restore across hosts {:.2} s \
         (cm's whole runs)",
        took_full.as_secs_f64(),
        first.took_ms,
        took_incr.as_secs_f64(),
        second.took_ms,
        took_restore.as_secs_f64()
    );
}
