//! What `--accel auto` means on this host, proven by a probe boot.
//!
//! `/dev/kvm` can exist and still not work: under nested virtualisation on
//! some clouds a KVM guest hangs before printing anything. So `auto` boots a
//! real Linux kernel under KVM with no root filesystem: a working KVM gets to
//! the kernel's "VFS: Unable to mount root fs" panic within a second or two
//! and QEMU exits (`panic=-1`, `-no-reboot`). No such line before the
//! timeout means KVM does not work here: TCG it is. Without any kernel to
//! boot, a boot sector that exits through `isa-debug-exit` is timed instead.
//! The result is kept per machine boot (`/proc/sys/kernel/random/boot_id`).

use cm_api::words::ResolvedAccel;
use serde::{Deserialize, Serialize};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HostAccel {
    Auto,
    Kvm,
    Tcg,
}

impl std::str::FromStr for HostAccel {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "auto" => Ok(HostAccel::Auto),
            "kvm" => Ok(HostAccel::Kvm),
            "tcg" => Ok(HostAccel::Tcg),
            _ => Err(format!("accel must be auto, kvm or tcg, got '{s}'")),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Resolved {
    pub accel: ResolvedAccel,
    pub note: String,
}

#[derive(Serialize, Deserialize)]
struct Cached {
    boot_id: String,
    qemu: String,
    resolved: Resolved,
}

/// Kernels worth trying for the probe, best first.
pub fn candidate_kernels(configured: Option<&Path>, image_cache: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    if let Some(k) = configured {
        out.push(k.to_path_buf());
    }
    let release = std::fs::read_to_string("/proc/sys/kernel/osrelease").unwrap_or_default();
    out.push(PathBuf::from(format!("/boot/vmlinuz-{}", release.trim())));
    out.push(PathBuf::from("/vmlinuz"));
    out.push(PathBuf::from("/boot/vmlinuz"));
    if let Ok(entries) = std::fs::read_dir(image_cache) {
        for e in entries.flatten() {
            out.push(e.path().join("kernel"));
        }
    }
    out.into_iter().filter(|p| p.is_file()).collect()
}

pub fn resolve(
    mode: HostAccel,
    qemu: &Path,
    kernels: &[PathBuf],
    timeout: Duration,
    cache: &Path,
) -> Resolved {
    match mode {
        HostAccel::Tcg => Resolved {
            accel: ResolvedAccel::Tcg,
            note: "set by --accel tcg".into(),
        },
        HostAccel::Kvm => Resolved {
            accel: ResolvedAccel::Kvm,
            note: "set by --accel kvm (not probed)".into(),
        },
        HostAccel::Auto => {
            if std::fs::OpenOptions::new()
                .read(true)
                .write(true)
                .open("/dev/kvm")
                .is_err()
            {
                return Resolved {
                    accel: ResolvedAccel::Tcg,
                    note: "no usable /dev/kvm".into(),
                };
            }
            let boot_id =
                std::fs::read_to_string("/proc/sys/kernel/random/boot_id").unwrap_or_default();
            let qv = super::vm::qemu::version(qemu);
            if let Some(c) = std::fs::read_to_string(cache)
                .ok()
                .and_then(|t| serde_json::from_str::<Cached>(&t).ok())
            {
                if c.boot_id == boot_id && c.qemu == qv {
                    return c.resolved;
                }
            }
            let resolved = match kernels.first() {
                Some(k) => probe_kernel(qemu, k, timeout),
                None => probe_boot_sector(qemu),
            };
            let cached = Cached {
                boot_id,
                qemu: qv,
                resolved: resolved.clone(),
            };
            if let Ok(text) = serde_json::to_string(&cached) {
                let _ = durable_fs::write_atomic(cache, text.as_bytes(), 0o644);
            }
            resolved
        }
    }
}

fn wait_or_kill(
    child: &mut std::process::Child,
    timeout: Duration,
) -> Option<std::process::ExitStatus> {
    let start = Instant::now();
    loop {
        if let Ok(Some(st)) = child.try_wait() {
            return Some(st);
        }
        if start.elapsed() >= timeout {
            let _ = child.kill();
            let _ = child.wait();
            return None;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn probe_kernel(qemu: &Path, kernel: &Path, timeout: Duration) -> Resolved {
    let dir = match tempfile::tempdir() {
        Ok(d) => d,
        Err(e) => {
            return Resolved {
                accel: ResolvedAccel::Tcg,
                note: format!("probe could not run: {e}"),
            }
        }
    };
    let log = dir.path().join("serial.log");
    let err = dir.path().join("stderr.log");
    let stderr = match std::fs::File::create(&err) {
        Ok(f) => Stdio::from(f),
        Err(_) => Stdio::null(),
    };
    let start = Instant::now();
    // The same CPU model instances get under KVM (`-cpu host`).
    let child = Command::new(qemu)
        .args([
            "-accel",
            "kvm",
            "-cpu",
            "host",
            "-m",
            "256",
            "-display",
            "none",
            "-nodefaults",
            "-no-reboot",
        ])
        .arg("-kernel")
        .arg(kernel)
        .args(["-append", "console=ttyS0 panic=-1 root=/dev/cm-probe-none"])
        .arg("-serial")
        .arg(format!("file:{}", log.display()))
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(stderr)
        .spawn();
    let mut child = match child {
        Ok(c) => c,
        Err(e) => {
            return Resolved {
                accel: ResolvedAccel::Tcg,
                note: format!("probe could not start QEMU: {e}"),
            }
        }
    };
    let exited = wait_or_kill(&mut child, timeout);
    let text = std::fs::read_to_string(&log).unwrap_or_default();
    let booted =
        text.contains("Linux version") && (text.contains("VFS:") || text.contains("Kernel panic"));
    if exited.is_some() && booted {
        return Resolved {
            accel: ResolvedAccel::Kvm,
            note: format!(
                "KVM probe booted a kernel in {:.1}s",
                start.elapsed().as_secs_f64()
            ),
        };
    }
    let qemu_said = std::fs::read_to_string(&err)
        .unwrap_or_default()
        .lines()
        .find(|l| l.contains("error"))
        .map(|l| l.trim().to_string());
    let why = match (exited, qemu_said) {
        (Some(st), Some(msg)) => format!("QEMU stopped ({st}) before the kernel booted: {msg}"),
        (Some(st), None) => format!("QEMU stopped ({st}) before the kernel booted"),
        (None, _) if text.is_empty() => format!("no kernel output in {}s", timeout.as_secs()),
        (None, _) => format!(
            "the kernel did not finish booting in {}s",
            timeout.as_secs()
        ),
    };
    Resolved {
        accel: ResolvedAccel::Tcg,
        note: format!("KVM probe failed: {why}; using TCG"),
    }
}

/// Real-mode code: `mov al, 0x31; out 0xf4, al; hlt; jmp $-1`, as a boot
/// sector. QEMU exits with status (0x31 << 1) | 1 = 99 through isa-debug-exit.
fn boot_sector() -> Vec<u8> {
    let mut s = vec![0xB0, 0x31, 0xE6, 0xF4, 0xF4, 0xEB, 0xFD];
    s.resize(510, 0);
    s.extend([0x55, 0xAA]);
    s
}

fn probe_boot_sector(qemu: &Path) -> Resolved {
    const LIMIT: Duration = Duration::from_secs(2);
    let fail = |note: String| Resolved {
        accel: ResolvedAccel::Tcg,
        note,
    };
    let mut img = match tempfile::NamedTempFile::new() {
        Ok(f) => f,
        Err(e) => return fail(format!("probe could not run: {e}")),
    };
    if img.write_all(&boot_sector()).is_err() {
        return fail("probe could not write its boot sector".into());
    }
    let start = Instant::now();
    let child = Command::new(qemu)
        .args([
            "-accel",
            "kvm",
            "-m",
            "16",
            "-display",
            "none",
            "-nodefaults",
            "-no-reboot",
        ])
        .args([
            "-device",
            "isa-debug-exit,iobase=0xf4,iosize=4",
            "-boot",
            "a",
        ])
        .arg("-drive")
        .arg(format!(
            "file={},format=raw,if=floppy",
            img.path().display()
        ))
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn();
    let mut child = match child {
        Ok(c) => c,
        Err(e) => return fail(format!("probe could not start QEMU: {e}")),
    };
    match wait_or_kill(&mut child, LIMIT * 5) {
        Some(st) if st.code() == Some(99) && start.elapsed() <= LIMIT => Resolved {
            accel: ResolvedAccel::Kvm,
            note: format!(
                "KVM boot-sector probe ran in {:.2}s (no kernel to probe with)",
                start.elapsed().as_secs_f64()
            ),
        },
        Some(st) if st.code() == Some(99) => fail(format!(
            "KVM boot-sector probe took {:.1}s (over {}s): KVM is not usable; using TCG",
            start.elapsed().as_secs_f64(),
            LIMIT.as_secs()
        )),
        _ => fail("KVM boot-sector probe did not finish; using TCG".into()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_boot_sector_is_bootable() {
        let s = boot_sector();
        assert_eq!(s.len(), 512);
        assert_eq!(&s[510..], &[0x55, 0xAA]);
    }

    #[test]
    fn forced_modes_skip_the_probe() {
        let dir = tempfile::tempdir().unwrap();
        let r = resolve(
            HostAccel::Tcg,
            Path::new("/nonexistent"),
            &[],
            Duration::from_secs(1),
            &dir.path().join("c"),
        );
        assert_eq!(r.accel, ResolvedAccel::Tcg);
        let r = resolve(
            HostAccel::Kvm,
            Path::new("/nonexistent"),
            &[],
            Duration::from_secs(1),
            &dir.path().join("c"),
        );
        assert_eq!(r.accel, ResolvedAccel::Kvm);
    }
}
