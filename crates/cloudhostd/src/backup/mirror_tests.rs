//! Chains copied to a real sshd on loopback (test_infra::sshd, its own
//! key and known_hosts) with the real rsync, qemu-img and qemu-io: each
//! change is copied, a deletion too; a target that cannot be reached is
//! reported and copied to once it can; a chain the host lost is fetched
//! back (by the chain's pass and before a restore) and restores the disk;
//! a fetched file that is not part of the chain is refused.

use super::tests::{by_id, pass};
use super::*;
use crate::backup::img;
use crate::backup::tests::{qemu_io, same};
use cm_api::backup::BackupKind;
use test_infra::sshd::{SshFleet, NODE_DIR};

const MIB: u64 = 1 << 20;

struct Fixture {
    fleet: SshFleet,
    tmp: tempfile::TempDir,
    target: String,
    vol: Uuid,
    disk: Disk,
}

impl Fixture {
    fn new() -> Fixture {
        let fleet = SshFleet::start(&["nas"]).unwrap();
        let tmp = tempfile::tempdir().unwrap();
        let target = format!(
            "ssh://root@{}:{}{NODE_DIR}/backups",
            fleet.node("nas").addr,
            fleet.port
        );
        let file = tmp.path().join("vol.qcow2");
        img::create(&file, 20 * MIB, None).unwrap();
        qemu_io(&file, "write -P 0x11 0 4M");
        Fixture {
            fleet,
            tmp,
            target,
            vol: Uuid::new_v4(),
            disk: Disk { file, holder: None },
        }
    }

    fn chains(&self) -> Chains {
        let c = Chains::new(self.tmp.path().join("backups"));
        c.scan().unwrap();
        c.set_ssh(SshSettings {
            key: Some(self.fleet.key.clone()),
            known_hosts: Some(self.fleet.known_hosts.clone()),
        });
        c
    }

    fn want(&self, backups: &[Uuid], deleted: &[Uuid], made: &[Uuid]) -> DesiredChain {
        DesiredChain {
            disk: DiskRef {
                of: SnapshotOf::Volume,
                disk: self.vol,
                backup: None,
            },
            backups: backups.to_vec(),
            deleted: deleted.to_vec(),
            made: made.to_vec(),
            mirror: Some(self.target.clone()),
        }
    }

    fn name(&self) -> String {
        chain_name(SnapshotOf::Volume, self.vol)
    }

    /// The chain's copy on the node, as the node's sshd sees it.
    fn remote(&self) -> std::path::PathBuf {
        self.fleet
            .node("nas")
            .root
            .join("backups")
            .join(self.name())
    }

    fn remote_files(&self) -> Vec<String> {
        let mut v: Vec<String> = std::fs::read_dir(self.remote())
            .map(|d| {
                d.flatten()
                    .map(|e| e.file_name().to_string_lossy().into_owned())
                    .collect()
            })
            .unwrap_or_default();
        v.sort();
        v
    }
}

fn file_of(seq: u32, id: Uuid) -> String {
    format!("{seq:04}-{id}.qcow2")
}

#[test]
fn each_change_is_copied_and_a_lost_chain_is_fetched_back() {
    let mut f = Fixture::new();
    let c = f.chains();
    let (b1, b2, b3) = (Uuid::new_v4(), Uuid::new_v4(), Uuid::new_v4());

    // A full backup, copied at once: its file and record, nothing else.
    pass(&c, f.want(&[b1], &[], &[]), &f.disk);
    let r1 = by_id(&c, b1);
    assert_eq!(r1.kind, Some(BackupKind::Full));
    assert_eq!(r1.mirrored, Some(true), "{r1:?}");
    assert_eq!(r1.mirror_error, None);
    assert_eq!(f.remote_files(), vec![file_of(1, b1), format!("{b1}.json")]);
    // Copied once: no work left.
    c.want(&[f.want(&[b1], &[], &[b1])]);
    assert!(c.take_work().is_empty());

    // An increment, copied; its copy is based on the first by name.
    qemu_io(&f.disk.file, "write -P 0x22 1M 1M");
    pass(&c, f.want(&[b1, b2], &[], &[b1]), &f.disk);
    assert_eq!(by_id(&c, b2).kind, Some(BackupKind::Incremental));
    assert_eq!(by_id(&c, b2).mirrored, Some(true));
    let remote2 = f.remote().join(file_of(2, b2));
    assert_eq!(
        img::info(&remote2, true).unwrap().backing.as_deref(),
        Some(file_of(1, b1).as_str())
    );
    assert!(same(&remote2, &f.disk.file));

    // The target down: the next backup is made and reported not copied,
    // with why; once it is back (and the retry is due) it is copied.
    f.fleet.node_mut("nas").stop();
    qemu_io(&f.disk.file, "write -P 0x33 8M 1M");
    pass(&c, f.want(&[b1, b2, b3], &[], &[b1, b2]), &f.disk);
    let r3 = by_id(&c, b3);
    assert_eq!(r3.kind, Some(BackupKind::Incremental));
    assert_eq!(r3.mirrored, Some(false), "{r3:?}");
    let why = r3.mirror_error.unwrap();
    assert!(why.contains("rsync to ssh://root@"), "{why}");
    // What was copied before still says so.
    assert_eq!(by_id(&c, b1).mirrored, Some(true));
    let port = f.fleet.port;
    f.fleet.node_mut("nas").restart(port).unwrap();
    std::thread::sleep(MIRROR_RETRY);
    pass(&c, f.want(&[b1, b2, b3], &[], &[b1, b2, b3]), &f.disk);
    let r3 = by_id(&c, b3);
    assert_eq!((r3.mirrored, r3.mirror_error), (Some(true), None));

    // The first deleted: the copy loses it too, and its next (rebased,
    // standalone) still reads as the disk did then.
    pass(&c, f.want(&[b2, b3], &[b1], &[b2, b3]), &f.disk);
    let mut expect = vec![
        file_of(2, b2),
        file_of(3, b3),
        format!("{b2}.json"),
        format!("{b3}.json"),
    ];
    expect.sort();
    assert_eq!(f.remote_files(), expect);
    assert!(img::info(&f.remote().join(file_of(2, b2)), true)
        .unwrap()
        .backing
        .is_none());
    assert!(same(&f.remote().join(file_of(3, b3)), &f.disk.file));

    // The host loses the chain (a new disk, a reinstall): an agent that
    // starts without it fetches it back; nothing is made again.
    std::fs::remove_dir_all(f.tmp.path().join("backups").join(f.name())).unwrap();
    let again = f.chains();
    assert!(again.report().is_empty());
    pass(&again, f.want(&[b2, b3], &[], &[b2, b3]), &f.disk);
    let ids: Vec<Uuid> = again.report().iter().map(|b| b.id).collect();
    assert_eq!(ids.len(), 2, "{:?}", again.report());
    assert!(ids.contains(&b2) && ids.contains(&b3));
    let local = f.tmp.path().join("backups").join(f.name());
    assert!(same(&local.join(file_of(3, b3)), &f.disk.file));
    // The disk's bitmap may not count from the fetched chain: the next
    // backup is full.
    let b4 = Uuid::new_v4();
    pass(&again, f.want(&[b2, b3, b4], &[], &[b2, b3]), &f.disk);
    assert_eq!(by_id(&again, b4).kind, Some(BackupKind::Full));
    assert_eq!(by_id(&again, b4).mirrored, Some(true));

    // A restore on a host that lost the chain fetches it first.
    std::fs::remove_dir_all(&local).unwrap();
    let third = f.chains();
    third.want(&[f.want(&[b2, b3, b4], &[], &[b2, b3, b4])]);
    let chain = Chain::open(third.root(), &f.name()).unwrap();
    third.fetch_for_restore(&chain, &f.name(), b3).unwrap();
    let flat = f.tmp.path().join("flat.qcow2");
    chain.flatten(b3, &flat).unwrap();
    qemu_io(&flat, "read -P 0x33 8M 1M");
    qemu_io(&flat, "read -P 0x22 1M 1M");
}

#[test]
fn a_fetched_file_that_is_not_of_the_chain_is_refused() {
    let f = Fixture::new();
    let c = f.chains();
    let b1 = Uuid::new_v4();
    pass(&c, f.want(&[b1], &[], &[]), &f.disk);
    assert_eq!(by_id(&c, b1).mirrored, Some(true));
    // The backup server offers a second file based on a file of this host
    // (a volume of another tenant, say), not on the chain's first.
    let b2 = Uuid::new_v4();
    let evil = f.remote().join(file_of(2, b2));
    img::create(&evil, 20 * MIB, Some(f.disk.file.to_str().unwrap())).unwrap();
    let local = f.tmp.path().join("backups").join(f.name());
    std::fs::remove_dir_all(&local).unwrap();
    let again = f.chains();
    again.want(&[f.want(&[b1, b2], &[], &[b1, b2])]);
    let chain = Chain::open(again.root(), &f.name()).unwrap();
    let e = again.fetch_for_restore(&chain, &f.name(), b2).unwrap_err();
    assert!(e.contains("not a backup of this chain"), "{e}");
    assert!(!local.join(file_of(2, b2)).exists());
    // The chain's own file came and still restores.
    let flat = f.tmp.path().join("flat.qcow2");
    chain.flatten(b1, &flat).unwrap();
    assert!(same(&flat, &f.disk.file));
    drop(chain);

    // Nor a standalone qcow2 whose clusters are in another file (its
    // `data_file` could name any file of this host).
    std::fs::remove_file(&evil).unwrap();
    let elsewhere = f.tmp.path().join("host-secret.raw");
    let out = std::process::Command::new("qemu-img")
        .args(["create", "-q", "-f", "qcow2", "-o"])
        .arg(format!("data_file={}", elsewhere.display()))
        .arg(&evil)
        .arg("20M")
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    std::fs::remove_dir_all(&local).unwrap();
    let third = f.chains();
    third.want(&[f.want(&[b1, b2], &[], &[b1, b2])]);
    let chain = Chain::open(third.root(), &f.name()).unwrap();
    let e = third.fetch_for_restore(&chain, &f.name(), b2).unwrap_err();
    assert!(e.contains("its data is in another file"), "{e}");
    assert!(!local.join(file_of(2, b2)).exists());
}

#[test]
fn ssh_is_told_where_keys_are_and_never_prompts() {
    let t = match cm_api::backup_target::Target::parse("ssh://b@nas:2222/srv").unwrap() {
        cm_api::backup_target::Target::Ssh(t) => t,
        _ => unreachable!(),
    };
    let pinned = SshSettings {
        key: Some("/etc/cm/id".into()),
        known_hosts: Some("/etc/cm/known".into()),
    };
    let rsh = pinned.rsh_for_test(&t).unwrap();
    assert!(rsh.contains("BatchMode=yes"), "{rsh}");
    assert!(rsh.contains("StrictHostKeyChecking=yes"), "{rsh}");
    assert!(rsh.contains("UserKnownHostsFile='/etc/cm/known'"), "{rsh}");
    assert!(rsh.contains("-i '/etc/cm/id'"), "{rsh}");
    assert!(rsh.ends_with("-p 2222"), "{rsh}");
    let own = SshSettings::default().rsh_for_test(&t).unwrap();
    assert!(own.contains("StrictHostKeyChecking=accept-new"), "{own}");
    assert!(!own.contains(" -i "), "{own}");
    // rsync's remote: the user, the host (an IPv6 one in brackets), the
    // chain under the path.
    assert_eq!(
        crate::backup::mirror::remote_for_test(&t, "volume-x"),
        "b@nas:/srv/volume-x/"
    );
    let v6 = match cm_api::backup_target::Target::parse("ssh://[::1]:22/b").unwrap() {
        cm_api::backup_target::Target::Ssh(t) => t,
        _ => unreachable!(),
    };
    assert_eq!(
        crate::backup::mirror::remote_for_test(&v6, "root-y"),
        "[::1]:/b/root-y/"
    );
    let quoted = SshSettings {
        key: Some("/etc/it's".into()),
        known_hosts: None,
    };
    quoted.rsh_for_test(&t).unwrap_err();
}
