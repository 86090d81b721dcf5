//! Issue 12, point 8: crash safety of volumes, snapshots, backups and moves
//! with real host agents (qemu-img on real qcow2 files; no VM needed for these disks). Each
//! step is asked for with `cm ... --no-wait`, then the host agent, the
//! master, or both are killed (-9) a moment later (at once, a few ms, a
//! fifth of a second: before, while and after the host acts) and started
//! again. After every step:
//! - its operation ends once, `succeeded`, and its event is logged once;
//! - the host's volumes directory holds exactly the files of the volumes the
//!   master records there, no `.part` left;
//! - each volume file holds exactly the snapshots the master records;
//! - what a restore put back stays put after a later restart (a revert is
//!   applied once), and a clone holds the snapshot's data.
//!
//! Data is written and read with `qemu-io` on files no VM holds.

use cm_api::operation::{Operation, OperationStatus};
use cm_api::snapshot::Snapshot;
use cm_api::volume::Volume;
use std::collections::BTreeSet;
use std::path::PathBuf;
use std::process::Command;
use std::time::{Duration, Instant};
use test_infra::deploy::DeployUser;
use test_infra::{Cloud, HostOpts};

/// The cloud's hosts; `h1` is the one killed.
const HOSTS: [&str; 2] = ["h1", "h2"];

#[derive(Debug, Clone, Copy)]
enum Kill {
    Agent,
    Master,
    Both,
}

struct Crashy {
    cloud: Cloud,
    user: DeployUser,
    kill: Kill,
    delay: Duration,
    /// Figures: how long each step took from the ask to its end.
    took: Vec<(String, Duration)>,
}

impl Crashy {
    fn dir(&self, host: &str) -> PathBuf {
        self.cloud.host(host).data_dir.join("volumes")
    }

    fn file(&self, v: &Volume) -> PathBuf {
        self.dir(&v.host).join(format!("{}.qcow2", v.id))
    }

    fn volume(&self, name: &str) -> Volume {
        self.user.json(&["volume", "show", name])
    }

    /// Ask with `--no-wait`, kill and restart, wait for the operation: it
    /// must succeed, and the invariants hold.
    fn step(&mut self, what: &str, args: &[&str], event: (&str, &str)) {
        let events_before = self.events(event.0, event.1);
        let t = Instant::now();
        let mut a = args.to_vec();
        a.push("--no-wait");
        let op: serde_json::Value = self.user.json(&a);
        let op_id = op["id"]
            .as_str()
            .or_else(|| op["operation"]["id"].as_str())
            .unwrap_or_else(|| panic!("{what}: no operation in {op}"))
            .to_string();
        std::thread::sleep(self.delay);
        let (agent, master) = match self.kill {
            Kill::Agent => (true, false),
            Kill::Master => (false, true),
            Kill::Both => (true, true),
        };
        if agent {
            self.cloud.stop_host("h1", libc::SIGKILL);
        }
        if master {
            self.cloud.stop_master(libc::SIGKILL);
        }
        if master {
            self.cloud.start_master().unwrap();
        }
        if agent {
            self.cloud.restart_host("h1").unwrap();
        }
        let wait = self.user.cm(&["operation", "wait", &op_id]);
        let op: Operation = self.user.json(&["operation", "show", &op_id]);
        assert_eq!(
            op.status,
            OperationStatus::Succeeded,
            "{what} ({:?} killed after {:?}): {op:?} {}",
            self.kill,
            self.delay,
            wait.stderr
        );
        self.took.push((what.to_string(), t.elapsed()));
        // The event is written just after the fact it tells, which can be
        // a moment after the operation ended.
        let logged = test_infra::wait_until("the event", Duration::from_secs(10), || {
            let n = self.events(event.0, event.1);
            (n > events_before).then_some(n)
        });
        assert_eq!(
            logged.ok(),
            Some(events_before + 1),
            "{what}: event {} for {} not logged once",
            event.0,
            event.1
        );
        self.invariants(what);
    }

    fn events(&self, kind: &str, name: &str) -> usize {
        // One event per line.
        let out = self.user.ok(&["--json", "event", "list", "--type", kind]);
        out.lines()
            .map(|l| serde_json::from_str::<cm_api::event::Event>(l).unwrap())
            .filter(|e| e.target == name)
            .count()
    }

    /// `host`'s volumes directory holds exactly the files of the volumes
    /// recorded there (a deleted or moved volume's old file is removed once
    /// the host sees it), and no `.part`.
    fn host_files_are_records(&self, what: &str, host: &str, volumes: &[Volume]) {
        let want: BTreeSet<String> = volumes
            .iter()
            .filter(|v| v.host == host)
            .map(|v| format!("{}.qcow2", v.id))
            .collect();
        // The host removes a deleted volume's file once it sees the deletion.
        let dir = self.dir(host);
        let have = test_infra::wait_until(
            &format!("{what}: {host}'s files match the records"),
            Duration::from_secs(30),
            || {
                let have: BTreeSet<String> = std::fs::read_dir(&dir)
                    .map(|d| {
                        d.flatten()
                            .map(|e| e.file_name().to_string_lossy().into_owned())
                            .filter(|n| n.ends_with(".qcow2") || n.contains(".part"))
                            .collect()
                    })
                    .unwrap_or_default();
                (have == want).then_some(have)
            },
        )
        .unwrap_or_else(|e| {
            panic!(
                "{e}: records {want:?}, files {:?}",
                std::fs::read_dir(&dir)
                    .map(|d| d.flatten().map(|e| e.file_name()).collect::<Vec<_>>())
            )
        });
        assert!(
            have.iter().all(|n| !n.contains(".part")),
            "{what}: {have:?}"
        );
    }

    /// The host's files are the master's records, and each file's
    /// snapshots are the master's.
    fn invariants(&self, what: &str) {
        let volumes: Vec<Volume> = self.user.json(&["volume", "list"]);
        let names: BTreeSet<&str> = volumes.iter().map(|v| v.name.as_str()).collect();
        assert_eq!(
            names.len(),
            volumes.len(),
            "{what}: a volume recorded twice"
        );
        for host in HOSTS {
            self.host_files_are_records(what, host, &volumes);
        }
        let snaps: Vec<Snapshot> = self.user.json(&["snapshot", "list"]);
        for v in &volumes {
            let recorded: BTreeSet<String> = snaps
                .iter()
                .filter(|s| s.source_id == v.id)
                .map(|s| cm_api::snapshot::snapshot_tag(s.id))
                .collect();
            assert_eq!(
                tags(&self.file(v)),
                recorded,
                "{what}: the snapshots in {}'s file",
                v.name
            );
        }
    }
}

/// The internal snapshots' tags of a qcow2 file (`qemu-img snapshot -l`).
fn tags(file: &std::path::Path) -> BTreeSet<String> {
    let out = Command::new("qemu-img")
        .args(["snapshot", "-l", "-U"])
        .arg(file)
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .skip(2)
        .filter_map(|l| l.split_whitespace().nth(1).map(str::to_string))
        .collect()
}

/// `qemu-io -c 'write -P BYTE 0 1M'` on a file no VM holds (retried while
/// the agent reads its snapshots with a lock of its own).
fn write_pattern(file: &std::path::Path, byte: u8) {
    test_infra::qcow2::write_pattern(file, byte, 0, 1 << 20);
}

/// Whether the first MiB of `file` is all `byte`.
fn has_pattern(file: &std::path::Path, byte: u8) -> bool {
    let out = Command::new("qemu-io")
        .args([
            "-f",
            "qcow2",
            "-r",
            "-U",
            "-c",
            &format!("read -P {byte} 0 1M"),
        ])
        .arg(file)
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    out.status.success() && !text.contains("Pattern verification failed")
}

fn round(kill: Kill, delay: Duration) -> Vec<(String, Duration)> {
    let mut cloud = Cloud::start().unwrap();
    for h in HOSTS {
        cloud.add_host(h, HostOpts::default()).unwrap();
    }
    let user = DeployUser::new(&cloud, "crashy");
    let mut c = Crashy {
        cloud,
        user,
        kill,
        delay,
        took: Vec::new(),
    };
    c.step(
        "volume create",
        &["volume", "create", "v", "--size", "64M", "--host", "h1"],
        ("volume.created", "v"),
    );
    c.step(
        "volume resize",
        &["volume", "resize", "v", "--size", "128M"],
        ("volume.resized", "v"),
    );
    let v = c.volume("v");
    assert_eq!(v.size_bytes, 128 << 20);
    let file = c.file(&v);
    write_pattern(&file, 0x11);
    c.step(
        "snapshot create",
        &["snapshot", "create", "s", "--volume", "v"],
        ("snapshot.created", "s"),
    );
    write_pattern(&file, 0x22);
    c.step(
        "snapshot restore",
        &["snapshot", "restore", "s"],
        ("snapshot.restored", "s"),
    );
    assert!(
        has_pattern(&file, 0x11),
        "the restore did not put back 0x11"
    );
    // Applied once: what is written after it survives another restart.
    write_pattern(&file, 0x33);
    c.cloud.stop_host("h1", libc::SIGKILL);
    c.cloud.restart_host("h1").unwrap();
    c.invariants("restart after restore");
    assert!(has_pattern(&file, 0x33), "a restore was applied twice");
    c.step(
        "snapshot clone",
        &["snapshot", "clone", "s", "--volume", "c"],
        ("volume.created", "c"),
    );
    let clone = c.volume("c");
    assert!(
        has_pattern(&c.file(&clone), 0x11),
        "the clone lacks the data"
    );
    c.step(
        "snapshot delete",
        &["snapshot", "delete", "s"],
        ("snapshot.deleted", "s"),
    );
    assert!(
        has_pattern(&file, 0x33),
        "a snapshot delete changed the data"
    );
    // Backups: made on h1 (killed), restored from h1's chain onto h2,
    // deleted from the chain.
    c.step(
        "backup create",
        &["backup", "create", "--volume", "v", "--name", "bk"],
        ("backup.created", "bk"),
    );
    c.step(
        "backup restore",
        &["backup", "restore", "bk", "--as", "r", "--host", "h2"],
        ("backup.restored", "bk"),
    );
    let r = c.volume("r");
    assert_eq!(r.host, "h2");
    assert!(has_pattern(&c.file(&r), 0x33), "the restore lost the data");
    c.step(
        "backup delete",
        &["backup", "delete", "bk"],
        ("backup.deleted", "bk"),
    );
    let chain = c
        .cloud
        .host("h1")
        .data_dir
        .join("backups")
        .join(cm_api::backup::chain_name(
            cm_api::snapshot::SnapshotOf::Volume,
            v.id,
        ));
    let left: Vec<_> = std::fs::read_dir(&chain)
        .map(|d| {
            d.flatten()
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .filter(|n| n.ends_with(".qcow2") || n.contains(".part"))
                .collect()
        })
        .unwrap_or_default();
    assert!(left.is_empty(), "the deleted backup's file stays: {left:?}");
    c.step(
        "volume delete",
        &["volume", "delete", "r"],
        ("volume.deleted", "r"),
    );
    // A move, its source host killed: the copy on h2 holds the data, h1's
    // file goes.
    c.step(
        "volume move",
        &["volume", "move", "v", "--host", "h2"],
        ("volume.moved", "v"),
    );
    let v = c.volume("v");
    assert_eq!(v.host, "h2");
    assert!(has_pattern(&c.file(&v), 0x33), "the move lost the data");
    c.step(
        "volume delete",
        &["volume", "delete", "c"],
        ("volume.deleted", "c"),
    );
    c.step(
        "volume delete",
        &["volume", "delete", "v"],
        ("volume.deleted", "v"),
    );
    c.took
}

#[test]
fn volumes_and_snapshots_survive_a_killed_agent_or_master_at_every_step() {
    let rounds = [
        (Kill::Agent, 0),
        (Kill::Agent, 30),
        (Kill::Agent, 200),
        (Kill::Master, 20),
        (Kill::Both, 60),
    ];
    for (kill, ms) in rounds {
        let took = round(kill, Duration::from_millis(ms));
        let line: Vec<String> = took
            .iter()
            .map(|(w, d)| format!("{w} {:.2} s", d.as_secs_f64()))
            .collect();
        println!("{kill:?} killed after {ms} ms: {}", line.join(", "));
    }
}
