//! Issue 9, point 1: the newcomer's path.
//!
//! `scripts/run-local.sh start` (what `make run` calls after building) starts
//! the cloud with a bare environment. Then every command of README.md's
//! "Using it" block runs exactly as written through `sh -c`, and after it every
//! `Example:` line of every `--help` that can run against that cloud, the way a
//! newcomer types them: a fresh empty HOME, no CM_URL, CM_TOKEN or CM_CONFIG,
//! PATH as the README's export line makes it, in a directory laid out as the
//! repository is. `cm` finds the master by itself. The one isolation is
//! CM_RUNTIME_DIR, where the master leaves its pointer file (/run/cloudmaster
//! for root otherwise), so that parallel tests and a developer's own `make run`
//! do not collide (docs/testing.md).

use std::path::PathBuf;
use std::process::Command;
use std::time::{Duration, Instant};
use test_infra::run::{processes_mentioning, run_bounded, run_until, Ran};
use test_infra::{bin, free_port, image_dir, workspace_root};

/// A user's PATH before the README's export line.
const SYSTEM_PATH: &str = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

/// What each README command must print (stdout and stderr together). A command
/// added to the README without a line here fails the test.
const README_CHECKS: &[(&str, &[&str])] = &[
    ("cm host list", &["local", "ready"]),
    (
        "cm image add cm-test --kernel var/images/cm-test/vmlinuz --initrd var/images/cm-test/initrd.img",
        &["image cm-test added"],
    ),
    (
        "cm instance create web-1 --image cm-test --flavor m1.tiny --port 80:8080",
        &["instance web-1 is running on local"],
    ),
    ("cm instance list", &["web-1", "running", "8080→80"]),
    (
        "cm volume create data --size 1G",
        &["volume data is available on local (1G)"],
    ),
    (
        "cm volume attach data web-1",
        &["volume data is attached on local (1G, attached to web-1)"],
    ),
    ("cm volume list", &["data", "attached", "web-1"]),
    (
        "cm backup create data",
        &["of volume data is ready on local: full", "the first backup of this chain"],
    ),
    ("cm backup list", &["data", "full", "ready"]),
    (
        "cm volume detach data && cm volume delete data",
        &["volume data is available", "volume data deleted"],
    ),
    ("cm instance console web-1", &["Linux version"]),
    ("cm instance stop web-1", &["instance web-1 stopped"]),
    (
        "cm instance start web-1 && cm instance reboot web-1",
        &["instance web-1 running", "instance web-1 rebooted"],
    ),
    ("cm instance delete web-1", &["instance web-1 deleted"]),
    (
        "cm event list --follow",
        &["instance.created web-1", "instance.deleted web-1"],
    ),
];

/// `--help` examples that cannot run against a local cloud, and why. An entry
/// skips every example that contains it; an entry that skips nothing fails
/// the test, so the list stays true.
const SKIPPED: &[(&str, &str)] = &[
    // Fleet commands act on an inventory's nodes over SSH, not on the cloud
    // (docs/fleet.md); fleet_*.rs run them against real sshd nodes.
    ("cm nodes ", "needs a fleet inventory"),
    ("cm do ", "needs a fleet inventory"),
    ("cm scp ", "needs a fleet inventory"),
    ("cm rsync ", "needs a fleet inventory"),
    ("cm status", "needs a fleet inventory"),
    ("cm stop ", "needs a fleet inventory and a balancer"),
    ("cm play ", "needs a fleet inventory and a balancer"),
    // A disk image of the user's own; cloud_init.rs registers the one
    // `make cloud-image` builds.
    (
        "--disk ./debian-12-genericcloud-amd64.qcow2",
        "a disk image the user has",
    ),
    // The internet is out of reach here; image_import.rs has the master
    // fetch from an https server on loopback with a CA the test makes.
    ("--disk https://", "needs the internet"),
    // A path on the master needs `cloudmasterd --image-import-dir`, which
    // make run does not set; image_import.rs starts a master with one.
    ("--on-master", "needs the master's import directory"),
    // A config the user writes (docs/guest.md); boot_cache.rs registers configs.
    ("--file web", "a config file the user writes"),
    // Placeholders for what cm printed before: a record's uuid or an
    // operation's id, and a domain's secret shown once.
    ("3f1c...", "stands for a uuid cm printed earlier"),
    ("--domain-secret S", "stands for a secret cm printed once"),
    // A dead host's commands: make run's cloud has one host, and it is up
    // (hosts_death.rs and hosts_identity.rs run them on a second host).
    // A volume move needs a second host (transfer_api.rs moves one
    // between two simulated hosts).
    ("cm volume move ", "needs a second host"),
    // An image from an instance needs a stopped instance of a disk image;
    // make run's cloud has a kernel image only (transfer_api.rs makes one).
    (
        "--from-instance web-1",
        "needs a stopped instance of a disk image",
    ),
    ("cm host remove ", "would forget make run's only host"),
    ("cm host evacuate ", "needs a host that is down"),
    // A spec the user writes; deploy_api.rs runs every `cm deploy` command.
    ("cm deploy ", "needs a deployable spec the user writes"),
    // A persistent root is a disk image's (make run's cm-test is a kernel
    // image, refused); persistent_api.rs runs both on a disk image.
    ("--persistent", "needs a disk image the user has"),
    (
        "--root-volume db-2-root",
        "needs the volume --persistent makes",
    ),
];

/// Commands whose output may be empty the first time: a guest prints its boot
/// log over some seconds, so a user looks again.
const LOOK_AGAIN: &[&str] = &["cm instance console"];

/// A test run's files: the working directory laid out as the repository is
/// (`target/debug`, `var/images/cm-test`), VAR inside it, HOME and the
/// runtime directory beside.
struct Newcomer {
    work: PathBuf,
    home: PathBuf,
    runtime: PathBuf,
    port: u16,
    forward_bind: String,
    /// PATH as the README's export line makes it.
    path: String,
    keep: Option<tempfile::TempDir>,
    started: bool,
}

impl Newcomer {
    fn new() -> Newcomer {
        let dir = tempfile::Builder::new()
            .prefix("cmnew")
            .tempdir_in("/tmp")
            .unwrap();
        let work = dir.path().join("repo");
        std::fs::create_dir_all(work.join("target")).unwrap();
        std::fs::create_dir_all(work.join("var/images")).unwrap();
        std::os::unix::fs::symlink(bin("cm").parent().unwrap(), work.join("target/debug")).unwrap();
        std::os::unix::fs::symlink(image_dir(), work.join("var/images/cm-test")).unwrap();
        let home = dir.path().join("home");
        std::fs::create_dir_all(&home).unwrap();
        // Forwards on an address of our own, so the README's port 8080 cannot
        // meet a developer's `make run` (127.0.0.0/8 is all loopback).
        let n = std::process::id() as u64 + test_infra::run::now_nanos();
        let forward_bind = format!(
            "127.{}.{}.{}",
            100 + n % 100,
            (n >> 8) % 250,
            1 + (n >> 16) % 250
        );
        Newcomer {
            runtime: dir.path().join("run"),
            work,
            home,
            port: free_port(),
            forward_bind,
            path: SYSTEM_PATH.to_string(),
            keep: Some(dir),
            started: false,
        }
    }

    fn var(&self) -> PathBuf {
        self.work.join("var")
    }

    /// `scripts/run-local.sh ARG` with what a user has: PATH and HOME, plus
    /// the test's VAR, port, forward address and runtime dir. A user's own CM_*
    /// settings for another cloud must not matter to it.
    fn run_local(&self, arg: &str) -> Ran {
        let mut cmd = Command::new(workspace_root().join("scripts/run-local.sh"));
        cmd.arg(arg)
            .env_clear()
            .env("PATH", SYSTEM_PATH)
            .env("HOME", &self.home)
            .env("VAR", self.var())
            .env("CM_PORT", self.port.to_string())
            .env("CM_FORWARD_BIND", &self.forward_bind)
            .env("CM_RUNTIME_DIR", &self.runtime)
            .env("CM_URL", "http://127.0.0.1:9")
            .env("CM_TOKEN", "cma_not_this_cloud")
            .env("CM_CONFIG", self.home.join("no-such-settings.toml"));
        let built = bin("cm").parent().unwrap().to_path_buf();
        if built != workspace_root().join("target/debug") {
            cmd.env("CM_BIN_DIR", built);
        }
        run_bounded(cmd, Duration::from_secs(300))
    }

    /// `sh -c LINE` as the newcomer types it.
    fn sh(&self, line: &str, bound: Duration) -> Ran {
        let mut cmd = Command::new("sh");
        cmd.arg("-c")
            .arg(line)
            .current_dir(&self.work)
            .env_clear()
            .env("PATH", &self.path)
            .env("HOME", &self.home)
            .env("CM_RUNTIME_DIR", &self.runtime);
        run_bounded(cmd, bound)
    }

    /// A command that runs until stopped (`--follow`): run it until its
    /// output shows every one of `want` (or a minute passed), then stop it.
    fn sh_follow(&self, line: &str, want: &[&str]) -> Ran {
        let mut cmd = Command::new("sh");
        cmd.arg("-c")
            .arg(line)
            .current_dir(&self.work)
            .env_clear()
            .env("PATH", &self.path)
            .env("HOME", &self.home)
            .env("CM_RUNTIME_DIR", &self.runtime);
        run_until(cmd, Duration::from_secs(60), want)
    }

    /// Run a command as typed; a command in LOOK_AGAIN is run again until
    /// its output shows `want`, as a user would.
    fn user_runs(&mut self, line: &str, want: &[&str]) -> Ran {
        let command = line.split(" #").next().unwrap_or(line).trim();
        if command.starts_with("export PATH=") {
            let out = self.sh(
                &format!("{line}\nprintf '%s' \"$PATH\""),
                Duration::from_secs(10),
            );
            assert_eq!(out.code, Some(0), "{line}: {}", out.output);
            self.path = out.output.clone();
            return out;
        }
        if command.contains("--follow") {
            return self.sh_follow(line, want);
        }
        let start = Instant::now();
        loop {
            let out = self.sh(line, Duration::from_secs(600));
            let shown = want.iter().all(|w| out.output.contains(w));
            let again = LOOK_AGAIN.iter().any(|p| command.starts_with(p));
            if out.code != Some(0) || shown || !again || start.elapsed() > Duration::from_secs(180)
            {
                return out;
            }
            std::thread::sleep(Duration::from_secs(2));
        }
    }
}

impl Drop for Newcomer {
    fn drop(&mut self) {
        if self.started {
            let out = self.run_local("stop");
            if out.code != Some(0) {
                eprintln!("run-local.sh stop: {}", out.output);
            }
        }
        if std::thread::panicking() || std::env::var_os("CM_KEEP_TEST_DIR").is_some() {
            if let Some(d) = self.keep.take() {
                eprintln!("kept {} (logs in repo/var/log)", d.path().display());
                let _ = d.keep();
            }
        }
    }
}

/// The lines of README.md's "Using it" code block.
fn readme_block() -> Vec<String> {
    let readme = std::fs::read_to_string(workspace_root().join("README.md")).unwrap();
    let section = readme
        .split("## Using it")
        .nth(1)
        .expect("README.md has a \"Using it\" section");
    let block = section
        .split("```sh\n")
        .nth(1)
        .and_then(|b| b.split("```").next())
        .expect("a ```sh block in \"Using it\"");
    block
        .lines()
        .filter(|l| !l.trim().is_empty())
        .map(str::to_string)
        .collect()
}

/// The subcommands a `--help` lists (without `help`).
fn subcommands(help: &str) -> Vec<String> {
    help.split("\nCommands:\n")
        .nth(1)
        .map(|s| {
            s.lines()
                .take_while(|l| l.starts_with("  "))
                .filter_map(|l| l.split_whitespace().next())
                .filter(|n| *n != "help")
                .map(str::to_string)
                .collect()
        })
        .unwrap_or_default()
}

/// The command lines under `Example:` or `Examples:` in a `--help`.
fn examples(help: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut inside = false;
    for l in help.lines() {
        if l == "Example:" || l == "Examples:" {
            inside = true;
        } else if inside && l.starts_with("  cm ") {
            out.push(l.trim().to_string());
        } else if inside {
            inside = false;
        }
    }
    out
}

impl Newcomer {
    fn help(&self, path: &[String]) -> String {
        let mut line = String::from("cm");
        for p in path {
            line.push(' ');
            line.push_str(p);
        }
        line.push_str(" --help");
        let out = self.sh(&line, Duration::from_secs(30));
        assert_eq!(out.code, Some(0), "{line}: {}", out.output);
        out.output
    }

    /// Every example of every subcommand under `path`, depth first in the
    /// order help lists them; the examples of `path` itself come last.
    fn all_examples(&self, path: &[String], out: &mut Vec<String>) {
        let help = self.help(path);
        for sub in subcommands(&help) {
            let mut p = path.to_vec();
            p.push(sub);
            self.all_examples(&p, out);
        }
        out.extend(examples(&help));
    }
}

fn has_all(out: &str, want: &[&str]) -> bool {
    want.iter().all(|w| out.contains(w))
}

#[test]
fn the_readme_and_every_help_example_work_as_typed_on_make_runs_cloud() {
    let mut n = Newcomer::new();

    // `make run`, after building: the script alone, with a bare environment.
    let out = n.run_local("start");
    n.started = true;
    assert_eq!(out.code, Some(0), "run-local.sh start: {}", out.output);
    let block = readme_block();
    let readme_commands: Vec<String> = block
        .iter()
        .map(|l| l.split(" #").next().unwrap_or(l).trim().to_string())
        .collect();
    // What it prints to try is the README's block.
    let tried: Vec<&str> = out
        .output
        .lines()
        .map(str::trim)
        .filter(|l| l.starts_with("cm "))
        .collect();
    assert!(tried.len() >= 5, "{}", out.output);
    for t in &tried {
        assert!(
            readme_commands.iter().any(|c| c == t),
            "run-local.sh suggests `{t}`, which README.md's block does not have"
        );
    }

    // README.md's "Using it", line by line, exactly as written.
    assert!(
        block[0].starts_with("export PATH="),
        "the block starts with the PATH line: {block:?}"
    );
    for line in &block {
        let command = line.split(" #").next().unwrap_or(line).trim();
        let want: &[&str] = if command.starts_with("export ") {
            &[]
        } else {
            README_CHECKS
                .iter()
                .find(|(c, _)| *c == command)
                .map(|(_, w)| *w)
                .unwrap_or_else(|| panic!("no check for README command `{command}`: add one"))
        };
        let out = n.user_runs(line, want);
        eprintln!("$ {line}\n{}", out.output);
        if command.contains("--follow") {
            assert_eq!(out.code, None, "`{line}` ended by itself: {}", out.output);
        } else {
            assert_eq!(out.code, Some(0), "`{line}` failed: {}", out.output);
        }
        assert!(
            has_all(&out.output, want),
            "`{line}` should print {want:?}: {}",
            out.output
        );
    }
    let first = format!("{}:", n.work.join("target/debug").display());
    assert!(n.path.starts_with(&first), "PATH is {}", n.path);

    // The issue's own command: an instance with a boot-time config the user
    // wrote. `--config` is the guest's config, never cm's settings.
    std::fs::write(
        n.work.join("web.toml"),
        "#cm-guest\n[[file]]\npath = \"/www/index.html\"\ncontent = \"hello\\n\"\n",
    )
    .unwrap();
    for (line, want) in [
        (
            "cm instance create web-2 --image cm-test --flavor m1.tiny --config web.toml --no-wait",
            "instance web-2 placed on local",
        ),
        ("cm config list", "web-2"),
        ("cm instance delete web-2", "instance web-2 deleted"),
    ] {
        let out = n.user_runs(line, &[want]);
        eprintln!("$ {line}\n{}", out.output);
        assert_eq!(out.code, Some(0), "`{line}` failed: {}", out.output);
        assert!(
            out.output.contains(want),
            "`{line}` should print {want}: {}",
            out.output
        );
    }

    // Every --help example that can run here, in the order help shows them.
    let mut all = Vec::new();
    n.all_examples(&[], &mut all);
    assert!(all.len() > 30, "only {} examples found: {all:?}", all.len());
    for (pattern, why) in SKIPPED {
        assert!(
            all.iter().any(|e| e.contains(pattern)),
            "SKIPPED has `{pattern}` ({why}) but no example matches it"
        );
    }
    let mut ran = 0;
    for example in &all {
        if let Some((_, why)) = SKIPPED.iter().find(|(p, _)| example.contains(p)) {
            eprintln!("skipped: {example} ({why})");
            continue;
        }
        let out = if example.contains("--follow") {
            n.sh_follow(example, &["instance.created"])
        } else {
            // Any line at all (a console is looked at again until it has one).
            n.user_runs(example, &["\n"])
        };
        eprintln!("$ {example}\n{}", out.output);
        if example.contains("--follow") {
            assert_eq!(
                out.code, None,
                "`{example}` ended by itself: {}",
                out.output
            );
            assert!(out.output.contains("instance.created"), "{}", out.output);
        } else {
            assert_eq!(out.code, Some(0), "`{example}` failed: {}", out.output);
            // `cm host join-token > join.token` prints into the file it names.
            let printed = match example.split_once(" > ") {
                Some((_, file)) => {
                    std::fs::read_to_string(n.work.join(file.trim())).unwrap_or_default()
                }
                None => out.output.clone(),
            };
            assert!(!printed.trim().is_empty(), "`{example}` printed nothing");
        }
        ran += 1;
    }
    assert!(ran >= 25, "only {ran} examples ran");

    // `make stop`: everything ends, nothing is left running under VAR.
    n.started = false;
    let out = n.run_local("stop");
    assert_eq!(out.code, Some(0), "run-local.sh stop: {}", out.output);
    assert!(out.output.contains("stopped"), "{}", out.output);
    assert!(!n.var().join("run/master.pid").exists());
    let var = n.var().display().to_string();
    let left = processes_mentioning(&var);
    assert!(left.is_empty(), "left running: {left:?}");
}
