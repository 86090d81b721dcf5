//! Applying cm-guest's own format: write files, run commands. Services are
//! the supervisor's (services.rs), syncs the syncer's (filesync/).

use crate::format::{Cmd, File, GuestConfig};
use crate::run::{self, Job, Keep, RunError};
use crate::safefs;
use base64::Engine;
use std::path::Path;
use std::process::Command;
use std::time::Duration;

/// How much of a command's stdout and stderr is kept (the end of each).
const OUTPUT_TAIL: usize = 8 * 1024;

/// Write `f` under `root` (`/` in a guest): no symbolic link below `root`
/// is followed, and the file is replaced atomically (safefs.rs).
pub fn write_file(root: &Path, f: &File) -> Result<(), String> {
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
    safefs::write(root, &f.path, &bytes, mode).map_err(|e| format!("file {e}"))
}

/// Run `c` with `/bin/sh -c`, reading its output as it comes (so a command
/// that writes a lot never blocks), killing it (and its children) at the
/// timeout. A failure's reason is the last line it wrote to stderr (or,
/// without one, to stdout).
pub fn run_command(c: &Cmd) -> Result<(), String> {
    let mut cmd = Command::new("/bin/sh");
    cmd.arg("-c").arg(&c.run);
    let done = run::run(Job {
        cmd,
        stdin: None,
        stdout: Keep::Tail(OUTPUT_TAIL),
        stderr: Keep::Tail(OUTPUT_TAIL),
        timeout: Duration::from_secs(c.timeout_secs.max(1)),
        cancel: None,
    });
    match done {
        Ok(f) if f.status.success() => Ok(()),
        Ok(f) => {
            let mut last = f.stderr.last_line();
            if last.is_empty() {
                last = f.stdout.last_line();
            }
            Err(format!(
                "command `{}` failed ({}){}",
                c.run,
                f.status,
                if last.is_empty() {
                    String::new()
                } else {
                    format!(": {last}")
                }
            ))
        }
        Err(RunError::TimedOut(_)) => Err(format!(
            "command `{}` timed out after {}s",
            c.run, c.timeout_secs
        )),
        Err(e) => Err(format!("command `{}`: {e}", c.run)),
    }
}

/// Files, then commands, in order; the first failure stops and is the
/// reason. Then the syncs' sources must be there (a command may make them).
pub fn apply(root: &Path, cfg: &GuestConfig) -> Result<(), String> {
    for f in &cfg.files {
        write_file(root, f)?;
    }
    for c in &cfg.commands {
        run_command(c)?;
    }
    crate::filesync::spec::check_paths(root, &cfg.syncs)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;
    use std::time::Instant;

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

    #[test]
    fn a_command_writing_megabytes_ends_when_it_ends() {
        // Far more than a pipe holds, on both outputs: it must not hang
        // until its timeout, and its reason is the end of its stderr.
        let t = Instant::now();
        run_command(&Cmd {
            run: "head -c 2000000 /dev/zero; head -c 2000000 /dev/zero >&2".into(),
            timeout_secs: 120,
        })
        .unwrap();
        assert!(t.elapsed() < Duration::from_secs(60), "{:?}", t.elapsed());
        let e = run_command(&Cmd {
            run: "yes progress | head -c 300000; yes warn | head -c 300000 >&2; \
                  echo 'no space left' >&2; exit 4"
                .into(),
            timeout_secs: 120,
        })
        .unwrap_err();
        assert!(
            e.ends_with("(exit status: 4): no space left"),
            "{}",
            &e[..e.len().min(300)]
        );
        assert!(t.elapsed() < Duration::from_secs(60), "{:?}", t.elapsed());
    }

    #[test]
    fn a_config_cannot_write_through_a_users_link() {
        let root = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(root.path().join("etc")).unwrap();
        std::fs::write(root.path().join("etc/shadow"), "root:x\n").unwrap();
        std::fs::create_dir_all(root.path().join("home/u")).unwrap();
        // An absolute link, but into the test's own tree: a regression must
        // not write through to the real /etc of the machine running the test.
        std::os::unix::fs::symlink(root.path().join("etc"), root.path().join("home/u/site"))
            .unwrap();
        std::os::unix::fs::symlink(
            root.path().join("etc/shadow"),
            root.path().join("home/u/index.html"),
        )
        .unwrap();
        let e = write_file(root.path(), &file("/home/u/site/shadow", "x", None)).unwrap_err();
        assert!(e.contains("/home/u/site is a symbolic link"), "{e}");
        write_file(root.path(), &file("/home/u/index.html", "page", None)).unwrap();
        assert_eq!(
            std::fs::read_to_string(root.path().join("etc/shadow")).unwrap(),
            "root:x\n"
        );
    }
}
