//! A guest's disks as the guest itself sees them, through its serial
//! console: which block device carries a volume's serial, its size, and a
//! file system on it (issue 12). Shared by the volume VM tests and
//! `cmbench storage`.

use crate::console::Console;
use anyhow::bail;
use std::time::{Duration, Instant};

/// How long one console command may take in a TCG guest.
const CMD: Duration = Duration::from_secs(30);

/// The block device (`vdb`) whose virtio serial is `serial`, if the guest
/// has one now.
pub fn disk_with_serial(con: &mut Console, serial: &str) -> anyhow::Result<Option<String>> {
    let out = con.run(
        "for d in /sys/block/vd*; do echo \"disk ${d##*/} $(cat $d/serial 2>/dev/null)\"; done",
        CMD,
    )?;
    Ok(out.lines().find_map(|l| {
        let mut w = l.split_whitespace();
        (w.next() == Some("disk"))
            .then(|| (w.next(), w.next()))
            .and_then(|(dev, ser)| (ser == Some(serial)).then(|| dev.map(str::to_string)))
            .flatten()
    }))
}

/// Wait until the guest sees the disk of `serial`; its device name and how
/// long it took (measured from `since`).
pub fn wait_disk(
    con: &mut Console,
    serial: &str,
    since: Instant,
    limit: Duration,
) -> anyhow::Result<(String, Duration)> {
    loop {
        if let Some(dev) = disk_with_serial(con, serial)? {
            return Ok((dev, since.elapsed()));
        }
        if since.elapsed() > limit {
            let all = con.run("ls /sys/block; dmesg | tail -20", CMD)?;
            bail!("the guest did not see the disk {serial} within {limit:?}:\n{all}");
        }
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// Wait until the guest no longer has the disk of `serial`.
pub fn wait_disk_gone(con: &mut Console, serial: &str, limit: Duration) -> anyhow::Result<()> {
    let start = Instant::now();
    while disk_with_serial(con, serial)?.is_some() {
        if start.elapsed() > limit {
            bail!("the guest still has the disk {serial} after {limit:?}");
        }
        std::thread::sleep(Duration::from_millis(200));
    }
    Ok(())
}

/// The size in bytes the guest sees for `dev`.
pub fn disk_bytes(con: &mut Console, dev: &str) -> anyhow::Result<u64> {
    let out = con.run(&format!("cat /sys/block/{dev}/size"), CMD)?;
    let sectors: u64 = out
        .lines()
        .last()
        .unwrap_or("")
        .trim()
        .parse()
        .map_err(|e| anyhow::anyhow!("size of {dev}: {e}: {out}"))?;
    Ok(sectors * 512)
}

/// Run `script` in the guest and fail unless it printed `ok-MARK` last: a
/// console command has no exit status of its own.
pub fn must(con: &mut Console, script: &str) -> anyhow::Result<String> {
    let out = con.run(&format!("( {script} ) && echo ok-MARK"), CMD)?;
    if !out.contains("ok-MARK") {
        bail!("in the guest, `{script}` failed:\n{out}");
    }
    Ok(out.replace("ok-MARK", "").trim().to_string())
}

/// Make an ext2 file system on `dev`, mount it at /mnt/v, write `text` to
/// /mnt/v/`file`, and unmount it (so a detach takes a clean disk).
pub fn write_file(con: &mut Console, dev: &str, file: &str, text: &str) -> anyhow::Result<()> {
    must(
        con,
        &format!(
            "mke2fs -q /dev/{dev} && mkdir -p /mnt/v && mount /dev/{dev} /mnt/v && \
             echo {text} > /mnt/v/{file} && sync && umount /mnt/v"
        ),
    )?;
    Ok(())
}

/// Mount `dev` at /mnt/v, read /mnt/v/`file`, and unmount it.
pub fn read_file(con: &mut Console, dev: &str, file: &str) -> anyhow::Result<String> {
    let out = must(
        con,
        &format!("mkdir -p /mnt/v && mount /dev/{dev} /mnt/v && cat /mnt/v/{file}; umount /mnt/v"),
    )?;
    Ok(out)
}
