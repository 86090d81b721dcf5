//! Issue 9, point 2: the user's own ssh configuration decides host-key
//! checking for cm as it does for plain ssh (cm forces nothing that
//! ssh_config may set), and with no such configuration an unknown host key
//! is still refused.

use std::path::{Path, PathBuf};
use std::process::Command;
use test_infra::sshd::{cm_as, Run, SshFleet};

fn fleet() -> (SshFleet, String) {
    let f = SshFleet::start(&["A", "B"]).expect("sshd fleet");
    let ini = f.dir.path().join("cloudManager.ini");
    std::fs::write(&ini, f.ini(|_| 80, "")).unwrap();
    (f, ini.display().to_string())
}

/// How to log in to the fleet, without anything about host keys.
fn login(f: &SshFleet) -> String {
    format!(
        "  User root\n  IdentityFile {}\n  IdentitiesOnly yes\n  GlobalKnownHostsFile /dev/null\n  LogLevel ERROR\n",
        f.key.display()
    )
}

fn write(path: &Path, text: &str) -> String {
    std::fs::write(path, text).unwrap();
    path.display().to_string()
}

/// Plain `ssh` with `args` before the host: did `true` run on A?
fn plain_ssh(f: &SshFleet, pre: &[&str], args: &[&str]) -> bool {
    let port = f.port.to_string();
    let mut c = Command::new(pre.first().copied().unwrap_or("ssh"));
    c.args(pre.iter().skip(1))
        .args(if pre.is_empty() {
            &[][..]
        } else {
            &["ssh"][..]
        })
        .args(args)
        .args([
            "-o",
            "BatchMode=yes",
            "-p",
            &port,
            &f.node("A").addr,
            "true",
        ]);
    c.status().expect("ssh").success()
}

fn cm_do(ini: &str, extra: &[&str]) -> Run {
    let mut a = vec!["do", "all", "--inventory", ini];
    a.extend(extra);
    a.extend(["--", "true"]);
    cm_as("cm", &a, &[], None)
}

#[test]
fn an_ssh_config_that_turns_checking_off_works_as_for_plain_ssh() {
    let (f, ini) = fleet();
    let d = f.dir.path();
    // Nobody's key is known anywhere.
    let off = write(
        &d.join("off.cfg"),
        &format!(
            "Host *\n  StrictHostKeyChecking no\n  UserKnownHostsFile /dev/null\n{}",
            login(&f)
        ),
    );
    // The same in a Match block, as many users write it for lab networks.
    let matched = write(
        &d.join("match.cfg"),
        &format!(
            "Match host 127.77.0.*\n  StrictHostKeyChecking no\n  UserKnownHostsFile /dev/null\nHost *\n{}",
            login(&f)
        ),
    );
    for cfg in [&off, &matched] {
        assert!(plain_ssh(&f, &[], &["-F", cfg]), "plain ssh with {cfg}");
        for reuse in [&[][..], &["--no-reuse"][..]] {
            let mut extra = vec!["--ssh-config", cfg.as_str()];
            extra.extend(reuse);
            let r = cm_do(&ini, &extra);
            assert_eq!(r.code, 0, "{cfg} {reuse:?}: {r:?}");
        }
    }

    // The user's config does not turn checking off: an unknown key is
    // refused by plain ssh and by cm alike, and nothing is learned.
    let empty = d.join("kh-empty");
    std::fs::write(&empty, "").unwrap();
    let strict = write(
        &d.join("strict.cfg"),
        &format!(
            "Host *\n  UserKnownHostsFile {}\n{}",
            empty.display(),
            login(&f)
        ),
    );
    assert!(!plain_ssh(&f, &[], &["-F", &strict]));
    for reuse in [&[][..], &["--no-reuse"][..]] {
        let mut extra = vec!["--ssh-config", strict.as_str()];
        extra.extend(reuse);
        let r = cm_do(&ini, &extra);
        assert_eq!(r.code, 3, "{r:?}");
        assert!(
            r.stderr.contains("Host key verification failed"),
            "{}",
            r.stderr
        );
    }
    assert_eq!(std::fs::read_to_string(&empty).unwrap(), "");
}

/// A fresh home for root with `config` as its `~/.ssh/config`, mounted on
/// /root in a mount namespace of its own (ssh reads the home of the
/// password database, not $HOME): the commands run there see it as the
/// user's own ssh configuration, and nothing of this machine's.
struct Home {
    dir: tempfile::TempDir,
}

impl Home {
    fn new(config: &str) -> Home {
        let dir = tempfile::tempdir().unwrap();
        let ssh = dir.path().join(".ssh");
        std::fs::create_dir(&ssh).unwrap();
        std::fs::write(ssh.join("config"), config).unwrap();
        Home { dir }
    }

    /// `unshare ... sh -c 'mount --bind HOME /root && exec "$@"'` + program.
    fn wrap(&self) -> Vec<String> {
        vec![
            "unshare".into(),
            "--mount".into(),
            "--propagation".into(),
            "private".into(),
            "sh".into(),
            "-c".into(),
            "mount --bind \"$0\" /root && exec \"$@\"".into(),
            self.dir.path().display().to_string(),
        ]
    }

    fn cm(&self, args: &[&str]) -> Run {
        let script = self.dir.path().join("cm-in-home");
        let cm: PathBuf = test_infra::paths::bin("cm");
        let w = self.wrap();
        std::fs::write(
            &script,
            format!(
                "#!/bin/sh\nexec {} {} \"$@\"\n",
                w.iter()
                    .map(|a| format!("'{}'", a.replace('\'', "'\\''")))
                    .collect::<Vec<_>>()
                    .join(" "),
                cm.display()
            ),
        )
        .unwrap();
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&script, std::fs::Permissions::from_mode(0o755)).unwrap();
        cm_as(script.to_str().unwrap(), args, &[("HOME", "/root")], None)
    }
}

#[test]
fn the_users_own_ssh_config_in_a_fresh_home_decides_too() {
    let (f, ini) = fleet();
    let off = Home::new(&format!(
        "Host *\n  StrictHostKeyChecking no\n  UserKnownHostsFile /dev/null\n{}",
        login(&f)
    ));
    let w = off.wrap();
    let pre: Vec<&str> = w.iter().map(String::as_str).collect();
    assert!(plain_ssh(&f, &pre, &[]), "plain ssh in the fresh home");
    for reuse in [&[][..], &["--no-reuse"][..]] {
        let mut a = vec!["do", "all", "--inventory", ini.as_str()];
        a.extend(reuse);
        a.extend(["--", "true"]);
        let r = off.cm(&a);
        assert_eq!(r.code, 0, "{reuse:?}: {r:?}");
    }

    // Checking left as it is by default: refused, for plain ssh and for cm.
    let strict = Home::new(&format!(
        "Host *\n  UserKnownHostsFile ~/.ssh/known_hosts\n{}",
        login(&f)
    ));
    let w = strict.wrap();
    let pre: Vec<&str> = w.iter().map(String::as_str).collect();
    assert!(!plain_ssh(&f, &pre, &[]));
    let r = strict.cm(&["do", "all", "--inventory", &ini, "--", "true"]);
    assert_eq!(r.code, 3, "{r:?}");
    assert!(
        r.stderr.contains("Host key verification failed"),
        "{}",
        r.stderr
    );
    assert!(!strict.dir.path().join(".ssh/known_hosts").exists());
}
