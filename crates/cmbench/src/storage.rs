//! Storage benchmark (issue 12): volumes on a real TCG guest of the test
//! image, each figure beside a baseline measured in the same run.
//!
//! - Attach: `cm volume attach` of a volume to a running guest → the guest
//!   sees the disk with the volume's serial (`/sys/block/vdX/serial`, read
//!   through its serial console), beside the same hot-plug done by hand on
//!   the same guest (QMP `blockdev-add` + `device_add` of a qcow2) → seen.
//!   The ratio is what the master, the long poll and the host agent add.
//! - Data path: a 1 GiB volume with 512 MiB written into its file
//!   (`qemu-io`): `cm snapshot create` (an internal snapshot: metadata) and
//!   `cm snapshot clone` (a copy into a new volume), beside `cp
//!   --sparse=always` and `qemu-img convert` of the same file, in MB/s of
//!   the data written; `cm backup create` of it (the first of its chain:
//!   full), then, after 10 MiB more written, again (incremental), the
//!   latter beside `cp` of a 10 MiB file.
//!
//! Figures, not a test: medians and maxima.

use anyhow::{ensure, Context};
use cm_api::volume::Volume;
use serde_json::json;
use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};
use test_infra::guest_disks::{wait_disk, wait_disk_gone};
use test_infra::{qmp, Cloud, HostOpts};

#[derive(Debug, clap::Args)]
pub struct Args {
    /// Attach rounds (cloudmaster's, then by hand), 1 to 10.
    #[arg(long, default_value_t = 3)]
    pub rounds: usize,
}

impl Default for Args {
    fn default() -> Self {
        Args { rounds: 3 }
    }
}

const LIMIT: Duration = Duration::from_secs(300);
const DATA: u64 = 512 << 20;

fn median(v: &[Duration]) -> Duration {
    let mut v = v.to_vec();
    v.sort();
    v.get(v.len() / 2).copied().unwrap_or_default()
}

fn max(v: &[Duration]) -> Duration {
    v.iter().copied().max().unwrap_or_default()
}

fn run_tool(cmd: &mut Command) -> anyhow::Result<Duration> {
    let start = Instant::now();
    let out = cmd.output().with_context(|| format!("{cmd:?}"))?;
    ensure!(
        out.status.success(),
        "{cmd:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    Ok(start.elapsed())
}

/// The same hot-plug cloudmaster does, by hand on the guest's monitor.
fn bare_attach(
    qmp_sock: &Path,
    con: &mut test_infra::console::Console,
    file: &Path,
    n: usize,
) -> anyhow::Result<Duration> {
    run_tool(
        Command::new("qemu-img")
            .args(["create", "-q", "-f", "qcow2"])
            .arg(file)
            .arg("16M"),
    )?;
    let (node, serial) = (format!("bench{n}"), format!("bench-serial-{n}"));
    let start = Instant::now();
    qmp::call_args(
        qmp_sock,
        "blockdev-add",
        Some(json!({"driver": "qcow2", "node-name": node,
            "file": {"driver": "file", "filename": file}})),
    )?;
    qmp::call_args(
        qmp_sock,
        "device_add",
        Some(json!({"driver": "virtio-blk-pci", "drive": node, "id": node, "serial": serial})),
    )?;
    let (_, seen) = wait_disk(con, &serial, start, LIMIT)?;
    qmp::call_args(qmp_sock, "device_del", Some(json!({"id": node})))?;
    wait_disk_gone(con, &serial, LIMIT)?;
    // The guest released it; QEMU drops the device, then the node can go.
    let deadline = Instant::now() + LIMIT;
    while qmp::call_args(qmp_sock, "blockdev-del", Some(json!({"node-name": node}))).is_err() {
        ensure!(Instant::now() < deadline, "blockdev-del {node}");
        std::thread::sleep(Duration::from_millis(100));
    }
    Ok(seen)
}

fn attach_rounds(cloud: &Cloud, rounds: usize) -> anyhow::Result<(Vec<Duration>, Vec<Duration>)> {
    cloud.cm_ok(&[
        "instance", "create", "g", "--image", "cm-test", "--flavor", "m1.tiny",
    ]);
    let mut con = cloud.console("g")?;
    con.wait_for_boot(LIMIT)?;
    let id = cloud.instance("g").context("instance g")?.id;
    let qmp_sock = cloud
        .host("h1")
        .instance_dir(&id.to_string())
        .join("qmp.sock");
    let (mut cm, mut bare) = (vec![], vec![]);
    for n in 0..rounds {
        let name = format!("bench-{n}");
        cloud.cm_ok(&["volume", "create", &name, "--size", "16M"]);
        let v: Volume = serde_json::from_value(cloud.cm_json(&["volume", "show", &name]))?;
        let start = Instant::now();
        cloud.cm_ok(&["volume", "attach", &name, "g", "--no-wait"]);
        let (_, seen) = wait_disk(&mut con, &v.serial, start, LIMIT)?;
        cm.push(seen);
        cloud.cm_ok(&["volume", "detach", &name]);
        wait_disk_gone(&mut con, &v.serial, LIMIT)?;
        let file = cloud.dir.path().join(format!("bare-{n}.qcow2"));
        bare.push(bare_attach(&qmp_sock, &mut con, &file, n)?);
        eprintln!("attach round {} of {rounds} done", n + 1);
    }
    Ok((cm, bare))
}

/// What one copy of the data took, each way.
struct DataPath {
    snapshot: Duration,
    clone: Duration,
    cp: Duration,
    convert: Duration,
    backup_full: Duration,
    backup_incr: Duration,
    cp_10m: Duration,
}

/// A 1 GiB volume with 512 MiB written into its file (`qemu-io`, while
/// nothing holds it): `cm snapshot create` and `cm snapshot clone` of it,
/// then `cp --sparse=always` and `qemu-img convert` of the same file.
fn data_path(cloud: &Cloud) -> anyhow::Result<DataPath> {
    cloud.cm_ok(&["volume", "create", "big", "--size", "1G"]);
    let v: Volume = serde_json::from_value(cloud.cm_json(&["volume", "show", "big"]))?;
    let vol = cloud
        .host(&v.host)
        .data_dir
        .join("volumes")
        .join(format!("{}.qcow2", v.id));
    run_tool(
        Command::new("qemu-io")
            .args(["-f", "qcow2", "-c", "write -P 0x5a 0 512M"])
            .arg(&vol),
    )?;
    run_tool(&mut Command::new("sync"))?;
    let start = Instant::now();
    cloud.cm_ok(&["snapshot", "create", "big-snap", "--volume", "big"]);
    let snapshot = start.elapsed();
    let start = Instant::now();
    cloud.cm_ok(&["snapshot", "clone", "big-snap", "--volume", "big-copy"]);
    let clone = start.elapsed();
    let dir = cloud.dir.path();
    let cp = run_tool(
        Command::new("cp")
            .arg("--sparse=always")
            .arg(&vol)
            .arg(dir.join("cp.qcow2")),
    )?;
    let convert = run_tool(
        Command::new("qemu-img")
            .args(["convert", "-O", "qcow2"])
            .arg(&vol)
            .arg(dir.join("convert.qcow2")),
    )?;
    // Backups: snapshots are not moved, so the volume's own snapshot goes
    // first; a backup's chain is apart from the volume's file.
    cloud.cm_ok(&["snapshot", "delete", "big-snap"]);
    let start = Instant::now();
    cloud.cm_ok(&["backup", "create", "--volume", "big", "--name", "big-b1"]);
    let backup_full = start.elapsed();
    run_tool(
        Command::new("qemu-io")
            .args(["-f", "qcow2", "-c", "write -P 0x6b 64M 10M"])
            .arg(&vol),
    )?;
    let start = Instant::now();
    cloud.cm_ok(&["backup", "create", "--volume", "big", "--name", "big-b2"]);
    let backup_incr = start.elapsed();
    let b2 = cloud.cm_json(&["backup", "show", "big-b2"]);
    ensure!(
        b2["kind"] == "incremental",
        "the second backup is not incremental: {b2}"
    );
    let ten = dir.join("ten");
    std::fs::write(&ten, vec![0x6bu8; 10 << 20])?;
    let cp_10m = run_tool(Command::new("cp").arg(&ten).arg(dir.join("ten.copy")))?;
    Ok(DataPath {
        snapshot,
        clone,
        cp,
        convert,
        backup_full,
        backup_incr,
        cp_10m,
    })
}

fn mb_per_s(d: Duration) -> f64 {
    (DATA as f64 / f64::from(1u32 << 20)) / d.as_secs_f64().max(1e-6)
}

pub fn run(args: &Args) -> anyhow::Result<()> {
    let rounds = args.rounds.clamp(1, 10);
    let mut cloud = Cloud::start()?;
    cloud.add_host("h1", HostOpts::default())?;
    cloud.add_test_image()?;
    let (cm, bare) = attach_rounds(&cloud, rounds)?;
    let d = data_path(&cloud)?;
    let base = median(&bare).as_secs_f64().max(0.001);
    println!("storage benchmark: {rounds} rounds; TCG guest of the cm-test image, 128 MiB, 1 vCPU");
    println!(
        "{:<52} {:>9} {:>9} {:>10}",
        "", "median", "max", "÷ by hand"
    );
    for (label, v) in [
        ("attach by hand (QMP) → disk seen in the guest", &bare),
        ("cm volume attach → disk seen in the guest", &cm),
    ] {
        let (m, x) = (median(v).as_secs_f64(), max(v).as_secs_f64());
        println!("{label:<52} {m:>8.2}s {x:>8.2}s {:>9.2}x", m / base);
    }
    println!("data path: a 1 GiB volume with 512 MiB written (MB/s of the data written)");
    let base = mb_per_s(d.cp);
    for (label, t) in [
        ("cp --sparse=always of its file (baseline)", d.cp),
        ("qemu-img convert -O qcow2 of its file", d.convert),
        ("cm snapshot create (internal, offline)", d.snapshot),
        ("cm snapshot clone → a new volume", d.clone),
        ("cm backup create (full, offline)", d.backup_full),
    ] {
        println!(
            "{label:<52} {:>8.2}s {:>7.0} MB/s {:>6.2}x",
            t.as_secs_f64(),
            mb_per_s(t),
            mb_per_s(t) / base
        );
    }
    println!("incremental backup after 10 MiB written (seconds, ÷ cp of a 10 MiB file)");
    for (label, t) in [
        ("cp of a 10 MiB file (baseline)", d.cp_10m),
        ("cm backup create (incremental)", d.backup_incr),
    ] {
        println!(
            "{label:<52} {:>8.2}s {:>16.2}x",
            t.as_secs_f64(),
            t.as_secs_f64() / d.cp_10m.as_secs_f64().max(1e-6)
        );
    }
    Ok(())
}
