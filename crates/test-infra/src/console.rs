//! A guest's serial console: type commands into its socket and read what
//! it prints there. What it printed before the session began is in the log
//! QEMU keeps (`console.log`, and `console.log.1` once the host agent has
//! rotated it: docs/host.md).

use anyhow::{bail, Context};
use std::io::{Read, Write};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

#[derive(Debug)]
pub struct Console {
    sock: Arc<Mutex<UnixStream>>,
    log: PathBuf,
    /// What the guest printed since this session began (the last
    /// `MAX_CAPTURE` bytes of it).
    seen: Arc<Mutex<Vec<u8>>>,
}

/// The most of a session's output kept in memory.
const MAX_CAPTURE: usize = 8 << 20;

/// The whole serial log an instance's host keeps: the older half, then
/// the live file.
pub fn read_log(log: &Path) -> Vec<u8> {
    let mut old = log.as_os_str().to_owned();
    old.push(".1");
    let mut all = std::fs::read(PathBuf::from(old)).unwrap_or_default();
    all.extend(std::fs::read(log).unwrap_or_default());
    all
}

/// What a terminal sends for "where is the cursor?" (`ESC [ 6 n`).
const CURSOR_QUERY: &[u8] = b"\x1b[6n";
const CURSOR_REPLY: &[u8] = b"\x1b[1;1R";

impl Console {
    pub fn connect(sock: &Path, log: &Path) -> anyhow::Result<Console> {
        let s = UnixStream::connect(sock).with_context(|| format!("console {}", sock.display()))?;
        let reader = s.try_clone()?;
        let sock = Arc::new(Mutex::new(s));
        let seen = Arc::new(Mutex::new(Vec::new()));
        // Act as a terminal: busybox's line editor asks where the cursor is
        // after each prompt and drops typed input until it hears back. This
        // also keeps the socket drained so the guest's output never stalls.
        let (writer, capture) = (sock.clone(), seen.clone());
        std::thread::spawn(move || answer_cursor_queries(reader, writer, capture));
        Ok(Console {
            sock,
            log: log.to_path_buf(),
            seen,
        })
    }

    /// What the guest printed since this session started.
    pub fn text(&self) -> String {
        match self.seen.lock() {
            Ok(b) => String::from_utf8_lossy(&b).into_owned(),
            Err(p) => String::from_utf8_lossy(&p.into_inner()).into_owned(),
        }
    }

    /// Type a line.
    pub fn send(&mut self, line: &str) -> anyhow::Result<()> {
        let mut s = self
            .sock
            .lock()
            .map_err(|_| anyhow::anyhow!("console lock"))?;
        s.write_all(line.as_bytes())?;
        s.write_all(b"\n")?;
        Ok(())
    }

    /// Wait until the guest's init has run (the test image prints
    /// `cm-init: ready`), whether before or after this session began.
    pub fn wait_for_boot(&self, timeout: Duration) -> anyhow::Result<()> {
        let start = Instant::now();
        loop {
            let all = read_log(&self.log);
            if String::from_utf8_lossy(&all).contains("cm-init: ready")
                || self.text().contains("cm-init: ready")
            {
                return Ok(());
            }
            if start.elapsed() > timeout {
                bail!(
                    "the guest did not boot within {timeout:?}:\n{}",
                    String::from_utf8_lossy(&all)
                );
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// Wait until the log (since this session started) contains `needle`.
    pub fn expect(&self, needle: &str, timeout: Duration) -> anyhow::Result<String> {
        let start = Instant::now();
        loop {
            let t = self.text();
            if t.contains(needle) {
                return Ok(t);
            }
            if start.elapsed() > timeout {
                bail!("console did not show {needle:?} within {timeout:?}; it shows:\n{t}");
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// Run a shell command in the guest and return its output (between
    /// unique markers, so the echo of the typed line is not mistaken for it).
    /// What is typed before the guest's shell opens the serial port is lost,
    /// so the line is typed again until its begin marker shows; once it
    /// has, the end is waited for until `timeout`. cm-guest's own console
    /// lines (`cm-guest: ...`) are left out of the output.
    pub fn run(&mut self, cmd: &str, timeout: Duration) -> anyhow::Result<String> {
        let start = Instant::now();
        let mut attempt = 0u32;
        loop {
            attempt += 1;
            let nanos = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)?
                .as_nanos();
            let tag = format!("{nanos:x}{attempt}");
            // The markers are built by the shell, so they never appear in the echo.
            self.send(&format!(
                "echo B-{tag}-$((1+1)); {cmd}; echo E-{tag}-$((2+2))"
            ))?;
            let begin = format!("B-{tag}-2");
            let end = format!("E-{tag}-4");
            let wait = Duration::from_secs(5).min(timeout.saturating_sub(start.elapsed()));
            let mut seen = self.expect(&end, wait);
            // Begun: the command runs (slowly, on a loaded machine). It is
            // never typed again: a second run of a command that is not
            // idempotent (mke2fs, then mount) would fail or lie.
            if seen.is_err() && self.text().contains(&begin) {
                seen = self.expect(&end, timeout.saturating_sub(start.elapsed()));
            }
            match seen {
                Ok(t) => {
                    let after = t.rsplit_once(&begin).map(|(_, a)| a).unwrap_or("");
                    let out = after.split(&end).next().unwrap_or("").replace('\r', "");
                    // cm-guest writes its own lines to the console whenever
                    // it has news: they are not the command's (tests that
                    // want them read the log with `expect`).
                    let own: Vec<&str> = out
                        .lines()
                        .filter(|l| !l.starts_with("cm-guest: "))
                        .collect();
                    return Ok(own.join("\n").trim().to_string());
                }
                Err(e) if start.elapsed() >= timeout => return Err(e),
                Err(_) => continue,
            }
        }
    }
}

impl Drop for Console {
    fn drop(&mut self) {
        if let Ok(s) = self.sock.lock() {
            let _ = s.shutdown(std::net::Shutdown::Both);
        }
    }
}

fn answer_cursor_queries(
    mut reader: UnixStream,
    writer: Arc<Mutex<UnixStream>>,
    seen: Arc<Mutex<Vec<u8>>>,
) {
    let mut buf = [0u8; 4096];
    let mut tail: Vec<u8> = Vec::new();
    loop {
        let n = match reader.read(&mut buf) {
            Ok(0) | Err(_) => return,
            Ok(n) => n,
        };
        if let Ok(mut s) = seen.lock() {
            s.extend_from_slice(&buf[..n]);
            if s.len() > MAX_CAPTURE {
                let cut = s.len() - MAX_CAPTURE / 2;
                s.drain(..cut);
            }
        }
        tail.extend_from_slice(&buf[..n]);
        let queries = tail
            .windows(CURSOR_QUERY.len())
            .filter(|w| *w == CURSOR_QUERY)
            .count();
        for _ in 0..queries {
            if let Ok(mut w) = writer.lock() {
                let _ = w.write_all(CURSOR_REPLY);
            }
        }
        // Keep the last bytes: a query may be split across two reads.
        let keep = if queries > 0 {
            0
        } else {
            CURSOR_QUERY.len() - 1
        };
        let cut = tail.len().saturating_sub(keep);
        tail.drain(..cut);
    }
}

/// The `n`th `cm-init: ready` line of an instance's serial log (the log
/// is kept across boots, so boot `n` is the `n`th line), once it is whole;
/// the end of the log in the error when it does not come within `limit`.
pub fn nth_ready(log: &Path, n: usize, limit: Duration) -> anyhow::Result<String> {
    const READY: &str = "cm-init: ready";
    let start = Instant::now();
    loop {
        let text = String::from_utf8_lossy(&read_log(log)).into_owned();
        if let Some(l) = text
            .split_inclusive('\n')
            .filter(|l| l.contains(READY) && l.ends_with('\n'))
            .nth(n - 1)
        {
            return Ok(l.trim().to_string());
        }
        if start.elapsed() > limit {
            let from = text.len().saturating_sub(4000);
            let cut = (from..text.len())
                .find(|i| text.is_char_boundary(*i))
                .unwrap_or(0);
            bail!(
                "boot {n}'s {READY} not within {limit:?}; the end of its serial log:\n{}",
                &text[cut..]
            );
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}
