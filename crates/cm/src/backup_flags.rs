//! `cm backup`'s flags, refused by cm itself before it asks the master
//! (docs/cli.md, "Backups"): one source (SOURCE, `--volume` or
//! `--instance`), `--every` readable and at least a minute, `--keep` only
//! with `--every` and within 1..=1000, `restore` needs `--as`.

use crate::cli::{Cli, Command};
use crate::commands::backup::BackupCmd;
use clap::Parser;

fn parse(args: &[&str]) -> Result<BackupCmd, clap::Error> {
    let mut a = vec!["cm", "backup"];
    a.extend_from_slice(args);
    match Cli::try_parse_from(a)?.command {
        Command::Backup(c) => Ok(c),
        other => panic!("parsed as {other:?}"),
    }
}

fn refused(args: &[&str], words: &str) {
    let e = parse(args).expect_err("refused");
    assert!(e.to_string().contains(words), "{args:?}: {e}");
}

#[test]
fn a_backup_has_one_source() {
    match parse(&["create", "data"]).expect("parses") {
        BackupCmd::Create {
            source,
            volume,
            instance,
            every,
            keep,
            ..
        } => {
            assert_eq!(source.as_deref(), Some("data"));
            assert_eq!((volume, instance, every, keep), (None, None, None, None));
        }
        other => panic!("parsed as {other:?}"),
    }
    match parse(&["create", "--instance", "web", "--name", "w1"]).expect("parses") {
        BackupCmd::Create {
            source,
            instance,
            name,
            ..
        } => {
            assert_eq!(source, None);
            assert_eq!(instance.as_deref(), Some("web"));
            assert_eq!(name.as_deref(), Some("w1"));
        }
        other => panic!("parsed as {other:?}"),
    }
    refused(&["create"], "required");
    refused(
        &["create", "data", "--volume", "data"],
        "cannot be used with",
    );
    refused(
        &["create", "--volume", "a", "--instance", "b"],
        "cannot be used with",
    );
}

#[test]
fn a_schedule_is_readable_at_least_a_minute_and_keeps_a_sane_number() {
    match parse(&["create", "data", "--every", "1h", "--keep", "24"]).expect("parses") {
        BackupCmd::Create { every, keep, .. } => {
            assert_eq!((every.as_deref(), keep), (Some("1h"), Some(24)));
        }
        other => panic!("parsed as {other:?}"),
    }
    refused(&["create", "data", "--every", "10s"], "at least a minute");
    refused(&["create", "data", "--every", "1w"], "s, m, h or d");
    refused(&["create", "data", "--keep", "2"], "--every");
    refused(
        &["create", "data", "--every", "1m", "--keep", "0"],
        "1..=1000",
    );
    refused(
        &["create", "data", "--every", "1m", "--keep", "1001"],
        "1..=1000",
    );
}

#[test]
fn a_restore_names_its_new_volume() {
    match parse(&["restore", "data-1", "--as", "data2", "--host", "h2"]).expect("parses") {
        BackupCmd::Restore {
            name,
            as_name,
            host,
            ..
        } => {
            assert_eq!((name.as_str(), as_name.as_str()), ("data-1", "data2"));
            assert_eq!(host.as_deref(), Some("h2"));
        }
        other => panic!("parsed as {other:?}"),
    }
    refused(&["restore", "data-1"], "--as");
}
