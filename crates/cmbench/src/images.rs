//! Image upload benchmark (issue 9 point 3): `cm image add --disk FILE`
//! (cm hashes, streams it over HTTP on loopback, the master hashes it again,
//! writes and syncs its copy) beside the floor of the same work on one
//! machine: `sha256sum FILE` then `cp FILE COPY` and `sync COPY`. Also the peak
//! memory of the master and of cm, to show that neither holds the file.

use anyhow::{bail, Context};
use std::io::Write;
use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};
use test_infra::Cloud;

#[derive(Debug, clap::Args)]
pub struct Args {
    /// Size of the file, in MiB.
    #[arg(long, default_value_t = 512)]
    pub mib: u64,
    /// Runs of each kind (interleaved).
    #[arg(long, default_value_t = 3)]
    pub runs: usize,
}

impl Default for Args {
    fn default() -> Self {
        Args { mib: 512, runs: 3 }
    }
}

fn run_ok(cmd: &mut Command) -> anyhow::Result<()> {
    let out = cmd.output().with_context(|| format!("{cmd:?}"))?;
    if !out.status.success() {
        bail!("{cmd:?}: {}", String::from_utf8_lossy(&out.stderr));
    }
    Ok(())
}

fn baseline(file: &Path, dst: &Path) -> anyhow::Result<Duration> {
    let t = Instant::now();
    run_ok(Command::new("sha256sum").arg(file))?;
    run_ok(Command::new("cp").arg(file).arg(dst))?;
    run_ok(Command::new("sync").arg(dst))?;
    let d = t.elapsed();
    std::fs::remove_file(dst)?;
    Ok(d)
}

/// Peak resident memory of a process, from /proc (kB).
fn peak_rss_kb(pid: u32) -> Option<u64> {
    let s = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    s.lines()
        .find(|l| l.starts_with("VmHWM:"))?
        .split_whitespace()
        .nth(1)?
        .parse()
        .ok()
}

/// Run `cm` with this cloud's URL and token; its time and peak memory (kB).
fn cm_measured(cloud: &Cloud, args: &[&str]) -> anyhow::Result<(Duration, u64)> {
    let t = Instant::now();
    let child = Command::new(test_infra::bin("cm"))
        .args(args)
        .env("CM_URL", &cloud.url)
        .env("CM_TOKEN", &cloud.token)
        .stdout(std::process::Stdio::null())
        .spawn()?;
    let mut status = 0;
    // SAFETY: wait4 on our own child, with a zeroed rusage to fill; the
    // Child is not waited for again.
    let mut ru: libc::rusage = unsafe { std::mem::zeroed() };
    let pid = libc::pid_t::try_from(child.id())?;
    // SAFETY: as above: our own child, a rusage to fill.
    let pid = unsafe { libc::wait4(pid, &mut status, 0, &mut ru) };
    let d = t.elapsed();
    if pid < 0 || !libc::WIFEXITED(status) || libc::WEXITSTATUS(status) != 0 {
        bail!("cm {} failed", args.join(" "));
    }
    Ok((d, u64::try_from(ru.ru_maxrss).unwrap_or(0)))
}

fn median(mut v: Vec<Duration>) -> Duration {
    v.sort();
    v[v.len() / 2]
}

pub fn run(args: &Args) -> anyhow::Result<()> {
    let cloud = Cloud::start()?;
    let file = cloud.dir.path().join("disk.raw");
    {
        // Incompressible bytes, written once.
        let mut f = std::fs::File::create(&file)?;
        let mut block = vec![0u8; 1 << 20];
        let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
        for _ in 0..args.mib {
            for b in block.iter_mut() {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                *b = x.to_le_bytes()[0];
            }
            f.write_all(&block)?;
        }
        f.sync_all()?;
    }
    let mut cm_times = Vec::new();
    let mut base_times = Vec::new();
    let mut cm_peak = 0;
    for i in 0..args.runs {
        let name = format!("bench-{i}");
        let (d, peak) = cm_measured(
            &cloud,
            &["image", "add", &name, "--disk", &file.to_string_lossy()],
        )?;
        cm_peak = cm_peak.max(peak);
        cm_times.push(d);
        base_times.push(baseline(&file, &cloud.dir.path().join("copy.raw"))?);
        cloud.cm_ok(&["image", "delete", &name]);
    }
    let master_peak = cloud.master_pid().and_then(peak_rss_kb).unwrap_or(0);
    let (c, b) = (median(cm_times), median(base_times));
    let rate = |d: Duration| args.mib as f64 / d.as_secs_f64();
    println!(
        "image upload benchmark: a {} MiB disk, {} runs each, interleaved; median",
        args.mib, args.runs
    );
    println!(
        "  cm image add (hash, HTTP upload on loopback, master hash + copy + sync): {:>7.2} s  {:>6.0} MiB/s",
        c.as_secs_f64(),
        rate(c)
    );
    println!(
        "  baseline: sha256sum + cp + sync of the copy:                            {:>7.2} s  {:>6.0} MiB/s",
        b.as_secs_f64(),
        rate(b)
    );
    println!(
        "  ratio cm / baseline: {:.2}x",
        c.as_secs_f64() / b.as_secs_f64()
    );
    println!(
        "  peak memory: master {} MiB, cm {} MiB (for a {} MiB file)",
        master_peak / 1024,
        cm_peak / 1024,
        args.mib
    );
    Ok(())
}
