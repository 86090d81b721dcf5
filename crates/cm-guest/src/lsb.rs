//! Services run by an LSB init script (`lsb = "NAME"`): `/etc/init.d/NAME
//! start`, then `status` every second (exit 0: running; anything else: the
//! service is down and is started again, with back-off), `stop` when the
//! config drops it. As Pacemaker's `lsb:` resources do.

use std::collections::BTreeMap;
use std::os::unix::process::CommandExt;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// How long `start` and `stop` may take.
pub const START_STOP_LIMIT: Duration = Duration::from_secs(60);
/// How long `status` may take.
pub const STATUS_LIMIT: Duration = Duration::from_secs(10);
/// How often `status` is asked.
pub const STATUS_EVERY: Duration = Duration::from_secs(1);

/// Run `script action` to its end, within `limit`; `Ok` for exit 0. Its
/// output goes nowhere: a daemon it starts may keep it open for ever. A
/// script that overruns is killed with its process group; a daemon it
/// started and that exits on time is left alone (it is the service).
pub fn run(
    script: &Path,
    action: &str,
    env: &BTreeMap<String, String>,
    limit: Duration,
) -> Result<(), String> {
    let what = format!("{} {action}", script.display());
    let mut child = Command::new(script)
        .arg(action)
        .envs(env)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .process_group(0)
        .spawn()
        .map_err(|e| format!("{what}: {e}"))?;
    let deadline = Instant::now() + limit;
    loop {
        match child.try_wait() {
            Ok(Some(st)) if st.success() => return Ok(()),
            Ok(Some(st)) => return Err(format!("{what}: {st}")),
            Ok(None) if Instant::now() >= deadline => {
                crate::services::kill_group(&mut child);
                return Err(format!("{what}: timed out after {}s", limit.as_secs()));
            }
            Ok(None) => std::thread::sleep(Duration::from_millis(20)),
            Err(e) => return Err(format!("{what}: {e}")),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    #[test]
    fn exit_codes_and_environment_reach_the_caller() {
        let d = tempfile::tempdir().unwrap();
        let script = d.path().join("svc");
        std::fs::write(
            &script,
            "#!/bin/sh\ncase \"$1\" in\n  start) [ \"$GREETING\" = hello ] ;;\n  status) exit 3 ;;\n  *) sleep 30 ;;\nesac\n",
        )
        .unwrap();
        std::fs::set_permissions(&script, std::fs::Permissions::from_mode(0o755)).unwrap();
        let env = BTreeMap::from([("GREETING".to_string(), "hello".to_string())]);
        assert_eq!(run(&script, "start", &env, STATUS_LIMIT), Ok(()));
        assert!(run(&script, "start", &BTreeMap::new(), STATUS_LIMIT).is_err());
        let e = run(&script, "status", &env, STATUS_LIMIT).unwrap_err();
        assert!(e.contains("exit status: 3"), "{e}");
        let e = run(&script, "stop", &env, Duration::from_millis(300)).unwrap_err();
        assert!(e.contains("timed out"), "{e}");
        let e = run(&d.path().join("none"), "start", &env, STATUS_LIMIT).unwrap_err();
        assert!(e.contains("No such file"), "{e}");
    }
}
