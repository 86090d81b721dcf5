//! No flag name means two things anywhere in cm (issue 9, point 1).
//!
//! cm's own settings flag was once `--config`, global, and `cm instance create
//! --config FILE` (the guest's boot config) shared its name: clap handed FILE
//! to both, and cm read a cloud-config as its settings. These tests walk the
//! whole command tree (`Cli::command()`, every subcommand, the fleet ones
//! included) and fail when a name is used with two meanings:
//!
//! - a global flag shadowed by a local one in some subcommand (same long name,
//!   short name or id);
//! - one long name that differs between commands in its short name, in whether
//!   it takes a value, in the type of that value, in its value name (the unit:
//!   `SECS`, `FILE`) or in its environment variable;
//! - one short name that stands for different long names;
//! - one environment variable read by different flags.

use crate::cli::Cli;
use clap::{Arg, Command, CommandFactory};
use std::collections::BTreeMap;

/// What a flag is, wherever it appears.
#[derive(Debug, Clone, PartialEq)]
struct Shape {
    short: Option<char>,
    takes_value: bool,
    value_type: String,
    value_names: Vec<String>,
    env: Option<String>,
}

fn shape(a: &Arg) -> Shape {
    let takes_value = a.get_action().takes_values();
    Shape {
        short: a.get_short(),
        takes_value,
        value_type: format!("{:?}", a.get_value_parser().type_id()),
        value_names: if takes_value {
            a.get_value_names()
                .map(|v| v.iter().map(|n| n.to_string()).collect())
                .unwrap_or_default()
        } else {
            Vec::new()
        },
        env: a.get_env().map(|e| e.to_string_lossy().into_owned()),
    }
}

/// Every long name an argument answers to (its name and its aliases).
fn longs(a: &Arg) -> Vec<String> {
    let mut v: Vec<String> = a.get_long().map(str::to_string).into_iter().collect();
    v.extend(
        a.get_all_aliases()
            .unwrap_or_default()
            .into_iter()
            .map(str::to_string),
    );
    v
}

fn shorts(a: &Arg) -> Vec<char> {
    let mut v: Vec<char> = a.get_short().into_iter().collect();
    v.extend(a.get_all_short_aliases().unwrap_or_default());
    v
}

#[derive(Default)]
struct Walk {
    /// long name → (command path, shape) of every occurrence
    by_long: BTreeMap<String, Vec<(String, Shape)>>,
    /// short name → (command path, long name)
    by_short: BTreeMap<char, Vec<(String, String)>>,
    /// environment variable → (command path, long name)
    by_env: BTreeMap<String, Vec<(String, String)>>,
    problems: Vec<String>,
    commands: usize,
}

impl Walk {
    /// `inherited`: the global flags of every ancestor of `cmd`.
    fn visit(&mut self, cmd: &Command, path: &str, inherited: &[Arg]) {
        self.commands += 1;
        let mut globals = inherited.to_vec();
        for a in cmd.get_arguments().filter(|a| !a.is_positional()) {
            let name = a.get_long().unwrap_or("").to_string();
            if a.is_global_set() {
                globals.push(a.clone());
            } else {
                for g in inherited {
                    let same_long = longs(a).iter().any(|l| longs(g).contains(l));
                    let same_short = shorts(a).iter().any(|s| shorts(g).contains(s));
                    if same_long || same_short || a.get_id() == g.get_id() {
                        self.problems.push(format!(
                            "`{path} --{name}` shadows the global `--{}`",
                            g.get_long().unwrap_or("")
                        ));
                    }
                }
            }
            for l in longs(a) {
                self.by_long
                    .entry(l)
                    .or_default()
                    .push((path.to_string(), shape(a)));
            }
            for s in shorts(a) {
                self.by_short
                    .entry(s)
                    .or_default()
                    .push((path.to_string(), name.clone()));
            }
            if let Some(e) = a.get_env() {
                self.by_env
                    .entry(e.to_string_lossy().into_owned())
                    .or_default()
                    .push((path.to_string(), name.clone()));
            }
        }
        for sub in cmd.get_subcommands() {
            self.visit(sub, &format!("{path} {}", sub.get_name()), &globals);
        }
    }

    fn check(mut self) -> Vec<String> {
        for (long, seen) in &self.by_long {
            let (first_path, first) = &seen[0];
            for (path, s) in &seen[1..] {
                if s != first {
                    self.problems.push(format!(
                        "--{long} means two things: `{first_path}` {first:?}, `{path}` {s:?}"
                    ));
                }
            }
        }
        for (short, seen) in &self.by_short {
            let (first_path, first) = &seen[0];
            for (path, long) in &seen[1..] {
                if long != first {
                    self.problems.push(format!(
                        "-{short} is --{first} in `{first_path}` but --{long} in `{path}`"
                    ));
                }
            }
        }
        for (env, seen) in &self.by_env {
            let (first_path, first) = &seen[0];
            for (path, long) in &seen[1..] {
                if long != first {
                    self.problems.push(format!(
                        "{env} sets --{first} in `{first_path}` but --{long} in `{path}`"
                    ));
                }
            }
        }
        self.problems
    }
}

fn walk(cmd: &Command) -> Walk {
    let mut w = Walk::default();
    w.visit(cmd, cmd.get_name(), &[]);
    w
}

#[test]
fn clap_accepts_the_command_tree() {
    Cli::command().debug_assert();
}

#[test]
fn no_flag_name_has_two_meanings() {
    let w = walk(&Cli::command());
    // The walk saw the whole tree, fleet commands included.
    assert!(w.commands > 40, "only {} commands walked", w.commands);
    for fleet_flag in ["inventory", "fanout", "ssh-config"] {
        assert!(
            w.by_long.contains_key(fleet_flag),
            "--{fleet_flag} not seen"
        );
    }
    let problems = w.check();
    assert!(problems.is_empty(), "{}", problems.join("\n"));
}

/// The checker itself finds both kinds of clash.
#[test]
fn the_check_finds_a_shadowed_global_and_a_name_with_two_meanings() {
    let tree = Command::new("t")
        .arg(Arg::new("config").long("config").global(true))
        .subcommand(
            Command::new("create").arg(Arg::new("config").long("config").value_name("FILE")),
        )
        .subcommand(
            Command::new("stop").arg(
                Arg::new("timeout")
                    .long("timeout")
                    .value_parser(clap::value_parser!(u32)),
            ),
        )
        .subcommand(
            Command::new("do").arg(
                Arg::new("timeout")
                    .short('t')
                    .long("timeout")
                    .value_parser(clap::value_parser!(f64)),
            ),
        );
    let problems = walk(&tree).check();
    assert!(
        problems
            .iter()
            .any(|p| p.contains("`t create --config` shadows the global `--config`")),
        "{problems:?}"
    );
    assert!(
        problems
            .iter()
            .any(|p| p.contains("--timeout means two things")),
        "{problems:?}"
    );
}

/// The bug as a user met it: `--config` of `instance create` is the guest's
/// boot config and nothing else.
#[test]
fn instance_create_config_is_the_guests_not_cms() {
    use clap::Parser;
    let cli = Cli::try_parse_from([
        "cm",
        "instance",
        "create",
        "x",
        "--image",
        "cm-test",
        "--flavor",
        "m1.tiny",
        "--config",
        "boot.yaml",
    ])
    .expect("parses");
    assert_eq!(cli.global.cm_config, None);
    match cli.command {
        crate::cli::Command::Instance(crate::cli::InstanceCmd::Create { config, .. }) => {
            assert_eq!(config.as_deref(), Some(std::path::Path::new("boot.yaml")));
        }
        other => panic!("parsed as {other:?}"),
    }
    let cli =
        Cli::try_parse_from(["cm", "--cm-config", "cm.toml", "host", "list"]).expect("parses");
    assert_eq!(
        cli.global.cm_config.as_deref(),
        Some(std::path::Path::new("cm.toml"))
    );
}
