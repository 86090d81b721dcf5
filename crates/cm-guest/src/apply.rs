//! Applying cm-guest's own format: write files, run commands. Services are
//! the supervisor's (services.rs).

use crate::format::{Cmd, File, GuestConfig};
use base64::Engine;
use std::io::Write;
use std::os::unix::fs::PermissionsExt;
use std::os::unix::process::CommandExt;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// Write `f` under `root` (`/` in a guest), atomically (temp file + rename).
pub fn write_file(root: &Path, f: &File) -> Result<(), String> {
    let rel = f.path.trim_start_matches('/');
    let path = root.join(rel);
    let bytes = match (&f.content, &f.content_base64) {
        (Some(t), _) => t.clone().into_bytes(),
        (None, Some(b)) => base64::engine::general_purpose::STANDARD
            .decode(b.trim())
            .map_err(|e| format!("file {}: content_base64: {e}", f.path))?,
        (None, None) => return Err(format!("file {}: no content", f.path)),
    };
    let mode = f
        .mode
        .as_deref()
        .map(|m| u32::from_str_radix(m, 8).map_err(|_| format!("file {}: mode {m}", f.path)))
        .transpose()?
        .unwrap_or(0o644);
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).map_err(|e| format!("file {}: {e}", f.path))?;
    }
    let tmp = path.with_file_name(format!(
        ".{}.cm-guest",
        path.file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default()
    ));
    let res = (|| {
        let mut out = std::fs::File::create(&tmp)?;
        out.write_all(&bytes)?;
        out.sync_all()?;
        std::fs::set_permissions(&tmp, std::fs::Permissions::from_mode(mode))?;
        std::fs::rename(&tmp, &path)
    })();
    res.map_err(|e| {
        let _ = std::fs::remove_file(&tmp);
        format!("file {}: {e}", f.path)
    })
}

/// Run `c` with `/bin/sh -c`, killing it (and its children) at the timeout.
pub fn run_command(c: &Cmd) -> Result<(), String> {
    let mut child = Command::new("/bin/sh")
        .arg("-c")
        .arg(&c.run)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .process_group(0)
        .spawn()
        .map_err(|e| format!("command `{}`: {e}", c.run))?;
    let deadline = Instant::now() + Duration::from_secs(c.timeout_secs.max(1));
    loop {
        match child.try_wait() {
            Ok(Some(st)) if st.success() => return Ok(()),
            Ok(Some(st)) => {
                let mut err = String::new();
                if let Some(mut e) = child.stderr.take() {
                    let _ = std::io::Read::read_to_string(&mut e, &mut err);
                }
                let last = err.lines().last().unwrap_or("").trim().to_string();
                return Err(format!(
                    "command `{}` failed ({st}){}",
                    c.run,
                    if last.is_empty() {
                        String::new()
                    } else {
                        format!(": {last}")
                    }
                ));
            }
            Ok(None) if Instant::now() >= deadline => {
                // SAFETY: signalling the process group this function started.
                unsafe {
                    libc::kill(-(child.id() as i32), libc::SIGKILL);
                }
                let _ = child.wait();
                return Err(format!(
                    "command `{}` timed out after {}s",
                    c.run, c.timeout_secs
                ));
            }
            Ok(None) => std::thread::sleep(Duration::from_millis(20)),
            Err(e) => return Err(format!("command `{}`: {e}", c.run)),
        }
    }
}

/// Files, then commands, in order; the first failure stops and is the reason.
pub fn apply(root: &Path, cfg: &GuestConfig) -> Result<(), String> {
    for f in &cfg.files {
        write_file(root, f)?;
    }
    for c in &cfg.commands {
        run_command(c)?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn file(path: &str, content: &str, mode: Option<&str>) -> File {
        File {
            path: path.into(),
            content: Some(content.into()),
            content_base64: None,
            mode: mode.map(String::from),
        }
    }

    #[test]
    fn files_are_written_with_their_mode() {
        let root = tempfile::tempdir().unwrap();
        write_file(root.path(), &file("/etc/app/motd", "hello\n", None)).unwrap();
        write_file(
            root.path(),
            &file("/usr/bin/tool", "#!/bin/sh\n", Some("0755")),
        )
        .unwrap();
        let p = root.path().join("etc/app/motd");
        assert_eq!(std::fs::read_to_string(&p).unwrap(), "hello\n");
        assert_eq!(
            std::fs::metadata(&p).unwrap().permissions().mode() & 0o777,
            0o644
        );
        let t = root.path().join("usr/bin/tool");
        assert_eq!(
            std::fs::metadata(&t).unwrap().permissions().mode() & 0o777,
            0o755
        );
        let b = File {
            path: "/bin.dat".into(),
            content: None,
            content_base64: Some("AAEC/w==".into()),
            mode: None,
        };
        write_file(root.path(), &b).unwrap();
        assert_eq!(
            std::fs::read(root.path().join("bin.dat")).unwrap(),
            vec![0, 1, 2, 255]
        );
    }

    #[test]
    fn commands_fail_with_their_reason_and_time_out() {
        let root = tempfile::tempdir().unwrap();
        let marker = root.path().join("ran");
        run_command(&Cmd {
            run: format!("touch {}", marker.display()),
            timeout_secs: 10,
        })
        .unwrap();
        assert!(marker.exists());
        let e = run_command(&Cmd {
            run: "echo broken >&2; exit 3".into(),
            timeout_secs: 10,
        })
        .unwrap_err();
        assert!(e.contains("exit status: 3") && e.contains("broken"), "{e}");
        let t = Instant::now();
        let e = run_command(&Cmd {
            run: "sleep 30".into(),
            timeout_secs: 1,
        })
        .unwrap_err();
        assert!(e.contains("timed out"), "{e}");
        assert!(t.elapsed() < Duration::from_secs(10));
    }
}
