//! Issue 12, point 6: backups through the real master, real host agents
//! (qemu-img and qemu-storage-daemon on real qcow2 files; no VM) and `cm`
//! as a user runs it on the master's machine (the master's pointer file
//! and a home of its own). A volume on h1 with 1 MiB written is backed up
//! (full, offline, the first of its chain); 10 MiB more are written with
//! `qemu-io` and it is backed up again (incremental, about 10 MiB); both
//! are listed and shown; each is restored `--as` a new volume on h2 and
//! compared with `qemu-img compare` to the disk as it was; the first is
//! deleted and the second still restores whole; a schedule is accepted,
//! listed and ended; refusals (a bad `--to` among them: the master's 400
//! on `to`) exit non-zero with the reason and change nothing; and once the volume is deleted its backups are still listed
//! and restore.

use cm_api::backup::{Backup, BackupKind, BackupSchedule, BackupState};
use cm_api::snapshot::Consistency;
use cm_api::volume::Volume;
use std::path::PathBuf;
use std::time::{Duration, Instant};
use test_infra::deploy::DeployUser;
use test_infra::qcow2::{assert_same, write_pattern};
use test_infra::{Cloud, HostOpts};

const MIB: u64 = 1 << 20;

struct Backups {
    cloud: Cloud,
    user: DeployUser,
    scratch: tempfile::TempDir,
    figures: Vec<(String, Duration)>,
}

impl Backups {
    fn file(&self, v: &Volume) -> PathBuf {
        self.cloud
            .host(&v.host)
            .data_dir
            .join("volumes")
            .join(format!("{}.qcow2", v.id))
    }

    fn volume(&self, name: &str) -> Volume {
        self.user.json(&["volume", "show", name])
    }

    fn backup(&self, name: &str) -> Backup {
        self.user.json(&["backup", "show", name])
    }

    /// `cm ARGS`, timed; its output (stdout and stderr).
    fn timed(&mut self, what: &str, args: &[&str]) -> String {
        let t = Instant::now();
        let out = self.user.cm(args);
        let took = t.elapsed();
        assert_eq!(
            out.code,
            0,
            "cm {}: {}{}",
            args.join(" "),
            out.stderr,
            out.stdout
        );
        eprintln!("$ cm {}\n{}{}", args.join(" "), out.stderr, out.stdout);
        self.figures.push((what.to_string(), took));
        format!("{}{}", out.stderr, out.stdout)
    }

    /// A refusal: `cm` exits non-zero and says `words`.
    fn refused(&self, args: &[&str], words: &str) {
        let out = self.user.cm(args);
        assert_ne!(out.code, 0, "cm {args:?} should fail: {}", out.stdout);
        assert!(
            out.stderr.contains(words),
            "cm {args:?}: {words:?} not in {}",
            out.stderr
        );
        eprintln!("refused as it should be: {}", out.stderr.trim());
    }

    /// A copy of a volume's file as it is now, to compare a restore with.
    fn keep_copy(&self, v: &Volume, name: &str) -> PathBuf {
        let dst = self.scratch.path().join(format!("{name}.qcow2"));
        test_infra::qcow2::copy(&self.file(v), &dst);
        dst
    }

    fn names(&self, args: &[&str]) -> Vec<String> {
        let list: Vec<Backup> = self.user.json(args);
        list.into_iter().map(|b| b.name).collect()
    }

    fn events(&self, kind: &str) -> usize {
        let out = self.user.ok(&["--json", "event", "list", "--type", kind]);
        out.lines().filter(|l| !l.trim().is_empty()).count()
    }
}

#[test]
fn backups_are_made_listed_restored_on_another_host_and_deleted_as_a_user_asks() {
    let mut cloud = Cloud::start().unwrap();
    cloud.add_host("h1", HostOpts::default()).unwrap();
    cloud.add_host("h2", HostOpts::default()).unwrap();
    let user = DeployUser::new(&cloud, "backups");
    let mut b = Backups {
        cloud,
        user,
        scratch: tempfile::tempdir().unwrap(),
        figures: Vec::new(),
    };
    b.user
        .ok(&["volume", "create", "data", "--size", "64M", "--host", "h1"]);
    let data = b.volume("data");
    write_pattern(&b.file(&data), 0x11, 0, MIB);

    // The first backup: full, offline, the first of its chain.
    let out = b.timed(
        "backup 1 (full, offline)",
        &["backup", "create", "data", "--name", "data-1"],
    );
    assert!(
        out.contains("backup data-1 of volume data is ready on h1"),
        "{out}"
    );
    assert!(out.contains("full: "), "{out}");
    assert!(out.contains("offline consistent"), "{out}");
    let first = b.backup("data-1");
    assert_eq!(first.state, BackupState::Ready);
    assert_eq!(first.kind, Some(BackupKind::Full));
    assert_eq!(first.consistency, Some(Consistency::Offline));
    assert_eq!((first.host.as_str(), first.target.as_str()), ("h1", "host"));
    assert_eq!(first.source, "data");
    assert_eq!(first.source_id, data.id);
    assert_eq!(first.size_bytes, Some(64 * MIB));
    assert!(first.full_reason.is_some(), "{first:?}");
    let copy1 = b.keep_copy(&data, "at-data-1");

    // 10 MiB more, then an increment holding about those 10 MiB.
    write_pattern(&b.file(&data), 0x22, 8 * MIB, 10 * MIB);
    let out = b.timed(
        "backup 2 (incremental, 10 MiB)",
        &["backup", "create", "--volume", "data", "--name", "data-2"],
    );
    assert!(out.contains("incremental"), "{out}");
    let second = b.backup("data-2");
    assert_eq!(second.kind, Some(BackupKind::Incremental), "{second:?}");
    assert_eq!(second.full_reason, None);
    let file = second.file_bytes.unwrap_or(0);
    assert!(
        (10 * MIB..16 * MIB).contains(&file),
        "an increment of 10 MiB written takes {file} bytes"
    );
    let copy2 = b.keep_copy(&data, "at-data-2");

    // Listed and shown.
    assert_eq!(
        b.names(&["backup", "list", "--volume", "data"]),
        ["data-1", "data-2"]
    );
    let table = b.user.ok(&["backup", "list"]);
    for w in [
        "data-1",
        "data-2",
        "volume data",
        "full",
        "incremental",
        "offline",
        "h1",
        "ready",
    ] {
        assert!(table.contains(w), "{w} not in {table}");
    }
    let shown = b.user.ok(&["backup", "show", "data-2"]);
    assert!(
        shown.contains("incremental") && shown.contains("h1"),
        "{shown}"
    );

    // Each restores on h2 as the disk was.
    let out = b.timed(
        "restore 2 on h2",
        &[
            "backup", "restore", "data-2", "--as", "back2", "--host", "h2",
        ],
    );
    assert!(
        out.contains("volume back2 is available on h2 (64M)"),
        "{out}"
    );
    assert!(out.contains("restored from backup data-2"), "{out}");
    let back2 = b.volume("back2");
    assert_eq!(back2.host, "h2");
    assert_same(&b.file(&back2), &copy2);
    b.timed(
        "restore 1 on h2",
        &[
            "backup", "restore", "data-1", "--as", "back1", "--host", "h2",
        ],
    );
    assert_same(&b.file(&b.volume("back1")), &copy1);

    // Refusals: nothing changes.
    b.refused(&["backup", "create"], "required");
    b.refused(
        &["backup", "create", "--volume", "data", "--instance", "web"],
        "cannot be used with",
    );
    b.refused(
        &["backup", "create", "nosuch"],
        "no volume or instance is named nosuch",
    );
    // A bad target: the master's 400 on `to`, with what is wrong.
    b.refused(
        &["backup", "create", "data", "--to", "ssh://x"],
        "field: to",
    );
    b.refused(
        &["backup", "create", "data", "--to", "ssh://x"],
        "an ssh target needs a path",
    );
    b.refused(
        &["backup", "create", "data", "--to", "ssh://nas/srv;reboot"],
        "not ';'",
    );
    b.refused(
        &["backup", "create", "data", "--to", "nas:/srv"],
        "ssh://[user@]host[:port]/path",
    );
    b.refused(
        &["backup", "create", "data", "--every", "10s"],
        "at least a minute",
    );
    b.refused(&["backup", "create", "data", "--keep", "2"], "--every");
    b.refused(
        &["backup", "create", "data", "--name", "data-2"],
        "field: name",
    );
    b.refused(
        &["backup", "restore", "data-2", "--as", "back2"],
        "field: as",
    );
    b.refused(&["backup", "show", "nosuch"], "not found");
    assert_eq!(
        b.names(&["backup", "list", "--volume", "data"]),
        ["data-1", "data-2"]
    );

    // The first deleted: the second (its increment) still restores whole.
    b.timed("delete 1", &["backup", "delete", "data-1"]);
    assert_eq!(b.names(&["backup", "list", "--volume", "data"]), ["data-2"]);
    b.timed(
        "restore 2 again, on h1",
        &["backup", "restore", "data-2", "--as", "back2b"],
    );
    let back2b = b.volume("back2b");
    assert_eq!(back2b.host, "h1", "the chain's host by default");
    assert_same(&b.file(&back2b), &copy2);

    // A schedule: accepted (and a first backup at once), listed, ended.
    let out = b.timed(
        "scheduled backup",
        &["backup", "create", "data", "--every", "1m", "--keep", "2"],
    );
    assert!(out.contains("schedule data-every-1m"), "{out}");
    let schedules: Vec<BackupSchedule> = b.user.json(&["backup", "schedules"]);
    let s = schedules
        .iter()
        .find(|s| s.name == "data-every-1m")
        .unwrap_or_else(|| panic!("no schedule data-every-1m in {schedules:?}"));
    assert_eq!((s.every_secs, s.keep, s.source.as_str()), (60, 2, "data"));
    let table = b.user.ok(&["backup", "schedules"]);
    assert!(
        table.contains("data-every-1m") && table.contains("1m"),
        "{table}"
    );
    let listed = b.names(&["backup", "list", "--volume", "data"]);
    assert_eq!(listed.len(), 2, "{listed:?}");
    b.user.ok(&["backup", "unschedule", "data-every-1m"]);
    let schedules: Vec<BackupSchedule> = b.user.json(&["backup", "schedules"]);
    assert!(schedules.iter().all(|s| s.name != "data-every-1m"));
    b.refused(&["backup", "unschedule", "data-every-1m"], "not found");

    // The volume deleted: its backups stay, listed (under the volume's
    // name) and restorable.
    b.user.ok(&["volume", "delete", "data"]);
    let all: Vec<Backup> = b.user.json(&["backup", "list"]);
    let kept = all
        .iter()
        .find(|x| x.name == "data-2")
        .unwrap_or_else(|| panic!("data-2 not listed once data is deleted: {all:?}"));
    assert_eq!((kept.source.as_str(), kept.source_id), ("data", data.id));
    let table = b.user.ok(&["backup", "list"]);
    assert!(table.contains("volume data"), "{table}");
    // Asked by the deleted volume's name: its backups, by the name they
    // were made under; a name nothing was ever made of is still 404.
    let by_name = b.names(&["backup", "list", "--volume", "data"]);
    let of_data: Vec<String> = all
        .iter()
        .filter(|x| x.source_id == data.id)
        .map(|x| x.name.clone())
        .collect();
    assert_eq!(by_name, of_data);
    assert!(by_name.contains(&"data-2".to_string()), "{by_name:?}");
    b.refused(&["backup", "list", "--volume", "never"], "not found");
    b.timed(
        "restore 2 after its volume was deleted",
        &[
            "backup", "restore", "data-2", "--as", "after", "--host", "h2",
        ],
    );
    assert_same(&b.file(&b.volume("after")), &copy2);

    // Each fact's event.
    assert!(b.events("backup.created") >= 3);
    assert_eq!(b.events("backup.restored"), 4);
    assert_eq!(b.events("backup.deleted"), 1);

    for (what, took) in &b.figures {
        eprintln!(
            "figure: {what}: {:.2} s (cm's whole run)",
            took.as_secs_f64()
        );
    }
}
