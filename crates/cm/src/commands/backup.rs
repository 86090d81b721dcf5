//! `cm backup`: copies of a volume or an instance's root disk kept outside
//! it, in a chain of a full copy and increments, that outlive the disk and
//! restore as a new volume on any host (docs/storage.md, "Backups").
//! Each change waits for its operation by default, as `cm volume` does, and
//! says what was made and how long it took.

use super::backup_text::{kind_words, made_line, restored_line, schedule_table, show, table};
use super::instance::finish;
use crate::cli::WaitArgs;
use crate::client::{api, CliError, Client};
use crate::output::json as print_json;
use clap::{ArgGroup, Subcommand};
use cm_api::backup::{parse_every, Backup, BackupQuery, CreateBackup, RestoreBackup};
use cm_api::operation::Operation;
use cm_api::{ApiError, ErrorCode};
use std::time::Instant;

#[derive(Debug, Subcommand)]
pub enum BackupCmd {
    /// Back up a volume, or an instance's root disk, now.
    ///
    /// The first backup of a disk is a full copy, the next ones hold only what changed
    /// (cm says which, and why a full one is full). SOURCE is looked up
    /// among volumes and instances; when both have that name, say which
    /// with --volume or --instance. With --every, also keep backing it up
    /// on that schedule, keeping the newest --keep.
    ///
    /// A disk's chain is kept in one place. With --to ssh://[user@]host[:port]/path
    /// (for instance `cm backup create data --to ssh://backup@nas:22/srv/cm-backups`)
    /// the disk's host keeps the chain and copies it there over ssh after
    /// each change; later backups of the disk go there too unless --to says
    /// otherwise, and another ssh target is refused until the backups kept
    /// at the first are deleted. `cm backup show` says whether the copy
    /// there is current.
    #[command(
        group(ArgGroup::new("source").required(true).args(["name_of", "volume", "instance"])),
        after_help = "Examples:\n  cm backup create scratch --name scratch-first\n  cm backup create --volume scratch-copy --every 1h --keep 24"
    )]
    Create {
        /// The volume or instance to back up.
        #[arg(id = "name_of", value_name = "SOURCE")]
        source: Option<String>,
        /// The volume to back up.
        #[arg(long, value_name = "NAME")]
        volume: Option<String>,
        /// The instance whose root disk to back up.
        #[arg(long, value_name = "NAME")]
        instance: Option<String>,
        /// The backup's name (default SOURCE-YYYYMMDD-HHMMSS, UTC).
        #[arg(long, value_name = "NAME")]
        name: Option<String>,
        /// Where the chain is kept: `host` (the disk's own host) or
        /// ssh://[user@]host[:port]/path (kept on the disk's host and copied
        /// there). Default: where the disk's chain is kept already, else host.
        #[arg(long, value_name = "TARGET")]
        to: Option<String>,
        /// Also back it up every this long: 30m, 1h, 1d (at least 1m).
        #[arg(long, value_name = "EVERY", value_parser = every)]
        every: Option<String>,
        /// With --every: how many of the schedule's backups to keep
        /// (1..=1000, default 24).
        #[arg(long, requires = "every", value_parser = clap::value_parser!(u32).range(1..=1000))]
        keep: Option<u32>,
        #[command(flatten)]
        wait: WaitArgs,
    },
    /// List backups (of one volume or instance).
    #[command(after_help = "Examples:\n  cm backup list\n  cm backup list --volume scratch")]
    List {
        /// Only the backups of this volume.
        #[arg(long, value_name = "NAME", conflicts_with = "instance")]
        volume: Option<String>,
        /// Only the backups of this instance's root disk.
        #[arg(long, value_name = "NAME")]
        instance: Option<String>,
    },
    /// Show one backup: full or incremental and why, consistency, sizes.
    #[command(after_help = "Example:\n  cm backup show scratch-first")]
    Show { name: String },
    /// Make a new volume with the disk as it was at this backup.
    ///
    /// On the chain's host or the one named (--host); the volume keeps the disk's origin image, so
    /// a restored root boots with `cm instance create --root-volume`.
    #[command(
        after_help = "Example:\n  cm backup restore scratch-first --as scratch-back --host local"
    )]
    Restore {
        name: String,
        /// The new volume's name.
        #[arg(long = "as", value_name = "NAME")]
        as_name: String,
        /// Make it on this host (default: the chain's host).
        #[arg(long)]
        host: Option<String>,
        #[command(flatten)]
        wait: WaitArgs,
    },
    /// List backup schedules.
    #[command(after_help = "Example:\n  cm backup schedules")]
    Schedules,
    /// End a schedule; the backups it made stay.
    #[command(after_help = "Example:\n  cm backup unschedule scratch-copy-every-1h")]
    Unschedule { name: String },
    /// Delete a backup.
    ///
    /// A later increment based on it is made whole first, so every other
    /// backup still restores. A backup being made is not deleted.
    #[command(after_help = "Example:\n  cm backup delete scratch-first")]
    Delete {
        name: String,
        #[command(flatten)]
        wait: WaitArgs,
    },
}

/// `--every`: a whole number of s, m, h or d, at least a minute.
fn every(s: &str) -> Result<String, String> {
    match parse_every(s) {
        Some(n) if n >= 60 => Ok(s.trim().to_string()),
        Some(_) => Err("a schedule is at least a minute (1m)".into()),
        None => Err("write it as a whole number and s, m, h or d: 30m, 1h, 1d".into()),
    }
}

pub fn run(client: &Client, cmd: BackupCmd, json: bool) -> Result<(), CliError> {
    match cmd {
        BackupCmd::Create {
            source,
            volume,
            instance,
            name,
            to,
            every,
            keep,
            wait,
        } => {
            let (volume, instance) = match source {
                Some(s) => which(client, &s)?,
                None => (volume, instance),
            };
            let body = CreateBackup {
                volume,
                instance,
                name,
                to,
                every,
                keep,
            };
            let began = Instant::now();
            let acc = client.call(api::backups::create(&body))?;
            let b = &acc.backup;
            let mut asked = format!(
                "backup {} of {}: making it on {}",
                b.name,
                super::backup_text::of_words(b),
                b.host
            );
            if b.target != cm_api::backup_target::HOST {
                asked.push_str(&format!(", to copy to {}", b.target));
            }
            if let Some(s) = &acc.schedule {
                asked.push_str(&format!(
                    "; schedule {} every {}, keeping {}",
                    s.name,
                    super::backup_text::period(s.every_secs),
                    s.keep
                ));
            }
            let id = b.id.to_string();
            if waited(client, acc.operation, &wait, json, &asked)?.is_some() {
                let b: Backup = client.call(api::backups::show(&id))?;
                if json {
                    return print_json(&b);
                }
                println!("{}", made_line(&b, began.elapsed()));
            }
            Ok(())
        }
        BackupCmd::List { volume, instance } => {
            let q = BackupQuery { volume, instance };
            let list: Vec<Backup> = client.call(api::backups::list(&q))?;
            if json {
                return print_json(&list);
            }
            table(&list);
            Ok(())
        }
        BackupCmd::Show { name } => {
            let b: Backup = client.call(api::backups::show(&name))?;
            if json {
                return print_json(&b);
            }
            show(&b);
            Ok(())
        }
        BackupCmd::Restore {
            name,
            as_name,
            host,
            wait,
        } => {
            let b: Backup = client.call(api::backups::show(&name))?;
            let body = RestoreBackup {
                as_name: as_name.clone(),
                host,
            };
            let began = Instant::now();
            let acc = client.call(api::backups::restore(&name, &body))?;
            let asked = format!(
                "volume {as_name}: restoring backup {} ({}) from {} onto {}",
                b.name,
                kind_words(&b),
                b.host,
                acc.volume.host
            );
            let id = acc.volume.id.to_string();
            if waited(client, acc.operation, &wait, json, &asked)?.is_some() {
                let v = client.call(api::volumes::show(&id))?;
                if json {
                    return print_json(&v);
                }
                println!("{}", restored_line(&b, &v, began.elapsed()));
            }
            Ok(())
        }
        BackupCmd::Schedules => {
            let list = client.call(api::backups::schedules())?;
            if json {
                return print_json(&list);
            }
            schedule_table(&list);
            Ok(())
        }
        BackupCmd::Unschedule { name } => {
            let answer = client.call(api::backups::delete_schedule(&name))?;
            super::done(
                json,
                &answer,
                &format!("schedule {name} ended (its backups stay)"),
            )
        }
        BackupCmd::Delete { name, wait } => {
            let acc = client.call(api::backups::delete_backup(&name))?;
            let asked = format!("backup {name}: deleting");
            if let Some(op) = waited(client, acc.operation, &wait, json, &asked)? {
                if json {
                    return print_json(&op);
                }
                println!("backup {name} deleted");
            }
            Ok(())
        }
    }
}

/// Whether SOURCE is a volume or an instance, as the master knows them:
/// exactly one must have that name.
fn which(client: &Client, source: &str) -> Result<(Option<String>, Option<String>), CliError> {
    let volume = exists(client.call(api::volumes::show(source)))?;
    let instance = exists(client.call(api::instances::show(source)))?;
    match (volume, instance) {
        (true, false) => Ok((Some(source.to_string()), None)),
        (false, true) => Ok((None, Some(source.to_string()))),
        (true, true) => Err(CliError::Api(ApiError::invalid(
            "source",
            format!(
                "{source} is both a volume and an instance: say which with \
                     --volume {source} or --instance {source}"
            ),
        ))),
        (false, false) => Err(CliError::Api(ApiError::new(
            ErrorCode::NotFound,
            format!("no volume or instance is named {source}"),
        ))),
    }
}

/// Found (`true`), not found (`false`), or the error that stops us.
fn exists<T>(r: Result<T, CliError>) -> Result<bool, CliError> {
    match r {
        Ok(_) => Ok(true),
        Err(CliError::Api(e)) if e.code() == ErrorCode::NotFound => Ok(false),
        Err(e) => Err(e),
    }
}

/// Print what was asked, wait for it unless --no-wait; the operation
/// when it was waited for.
fn waited(
    client: &Client,
    op: Operation,
    w: &WaitArgs,
    json: bool,
    asked: &str,
) -> Result<Option<Operation>, CliError> {
    if !json {
        if w.no_wait {
            println!("{asked}");
        } else {
            eprintln!("{asked}");
        }
    }
    let op = finish(client, op, w, json)?;
    Ok((!w.no_wait).then_some(op))
}
