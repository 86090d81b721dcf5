//! `cm snapshot`: a volume's or an instance's root disk's state at one
//! moment, kept inside its qcow2 file (docs/storage.md, "Snapshots").
//! Each change waits for its operation by default, as `cm volume` does.

use super::instance::finish;
use crate::cli::WaitArgs;
use crate::client::{api, CliError, Client};
use crate::output::{fields, json as print_json, opt, Tabular};
use clap::Subcommand;
use cm_api::human_time;
use cm_api::snapshot::{
    CloneSnapshot, Consistency, CreateSnapshot, Snapshot, SnapshotOf, SnapshotQuery, SnapshotState,
};
use cm_api::volume::human_size;

#[derive(Debug, Subcommand)]
pub enum SnapshotCmd {
    /// Snapshot a volume, or an instance's root disk (disk images only).
    /// On a running VM the guest's file systems are frozen around it when
    /// its agent answers (consistency `filesystem`), else it is `crash`
    /// consistent; on a stopped one it is `offline`. `--instance NAME`
    /// snapshots that instance's root disk instead.
    #[command(after_help = "Example:\n  cm snapshot create before-upgrade --volume scratch")]
    Create {
        name: String,
        /// The volume to snapshot.
        #[arg(long, value_name = "NAME", conflicts_with = "instance")]
        volume: Option<String>,
        /// The instance whose root disk to snapshot.
        #[arg(long, value_name = "NAME")]
        instance: Option<String>,
        #[command(flatten)]
        wait: WaitArgs,
    },
    /// List snapshots (of one volume or instance).
    #[command(after_help = "Examples:\n  cm snapshot list\n  cm snapshot list --volume scratch")]
    List {
        /// Only the snapshots of this volume.
        #[arg(long, value_name = "NAME")]
        volume: Option<String>,
        /// Only the snapshots of this instance's root disk.
        #[arg(long, value_name = "NAME")]
        instance: Option<String>,
    },
    /// Show one snapshot.
    #[command(after_help = "Example:\n  cm snapshot show before-upgrade")]
    Show { name: String },
    /// Revert its disk to it, in place. The volume's instance (or the
    /// instance) must be stopped.
    #[command(after_help = "Example:\n  cm snapshot restore before-upgrade")]
    Restore {
        name: String,
        #[command(flatten)]
        wait: WaitArgs,
    },
    /// Make a new volume from it, on its host.
    #[command(after_help = "Example:\n  cm snapshot clone before-upgrade --volume scratch-copy")]
    Clone {
        name: String,
        /// The new volume's name.
        #[arg(long, value_name = "NAME")]
        volume: String,
        #[command(flatten)]
        wait: WaitArgs,
    },
    /// Delete a snapshot (its disk keeps its current data).
    #[command(after_help = "Example:\n  cm snapshot delete before-upgrade")]
    Delete {
        name: String,
        #[command(flatten)]
        wait: WaitArgs,
    },
}

fn state_word(s: SnapshotState) -> &'static str {
    match s {
        SnapshotState::Creating => "creating",
        SnapshotState::Ready => "ready",
        SnapshotState::Restoring => "restoring",
        SnapshotState::Deleting => "deleting",
        SnapshotState::Error => "error",
    }
}

fn consistency_word(c: Option<Consistency>) -> String {
    match c {
        Some(Consistency::Offline) => "offline",
        Some(Consistency::Filesystem) => "filesystem",
        Some(Consistency::Crash) => "crash",
        None => "-",
    }
    .to_string()
}

fn of_word(s: &Snapshot) -> String {
    match s.of {
        SnapshotOf::Volume => format!("volume {}", s.source),
        SnapshotOf::InstanceRoot => format!("instance {} (root)", s.source),
    }
}

pub fn run(client: &Client, cmd: SnapshotCmd, json: bool) -> Result<(), CliError> {
    match cmd {
        SnapshotCmd::Create {
            name,
            volume,
            instance,
            wait,
        } => {
            let body = CreateSnapshot {
                name: name.clone(),
                volume,
                instance,
            };
            let acc = client.call(api::snapshots::create(&body))?;
            let asked = format!("snapshot {name} of {}: taking", of_word(&acc.snapshot));
            let id = acc.snapshot.id.to_string();
            if waited(client, acc.operation, &wait, json, &asked)?.is_some() {
                done(client, &id, json)?;
            }
            Ok(())
        }
        SnapshotCmd::List { volume, instance } => {
            let q = SnapshotQuery { volume, instance };
            let list: Vec<Snapshot> = client.call(api::snapshots::list(&q))?;
            if json {
                return print_json(&list);
            }
            let mut t = Tabular::new(&[
                "name",
                "state",
                "of",
                "host",
                "size",
                "consistency",
                "error",
            ])
            .numeric(&[4]);
            for s in &list {
                t.row(vec![
                    s.name.clone(),
                    state_word(s.state).to_string(),
                    of_word(s),
                    s.host.clone(),
                    s.size_bytes.map_or_else(|| "-".into(), human_size),
                    consistency_word(s.consistency),
                    opt(&s.error),
                ]);
            }
            t.print();
            Ok(())
        }
        SnapshotCmd::Show { name } => {
            let s: Snapshot = client.call(api::snapshots::show(&name))?;
            if json {
                return print_json(&s);
            }
            show(&s);
            Ok(())
        }
        SnapshotCmd::Restore { name, wait } => {
            let acc = client.call(api::snapshots::restore(&name))?;
            let asked = format!(
                "snapshot {name}: reverting {} to it",
                of_word(&acc.snapshot)
            );
            let id = acc.snapshot.id.to_string();
            if waited(client, acc.operation, &wait, json, &asked)?.is_some() {
                done(client, &id, json)?;
            }
            Ok(())
        }
        SnapshotCmd::Clone { name, volume, wait } => {
            let body = CloneSnapshot {
                volume: volume.clone(),
            };
            let acc = client.call(api::snapshots::clone(&name, &body))?;
            let asked = format!(
                "volume {volume}: cloning snapshot {name} on {}",
                acc.volume.host
            );
            let id = acc.volume.id.to_string();
            if waited(client, acc.operation, &wait, json, &asked)?.is_some() {
                let v = client.call(api::volumes::show(&id))?;
                if json {
                    return print_json(&v);
                }
                println!(
                    "volume {} is {} on {} ({})",
                    v.name,
                    v.state.as_str(),
                    v.host,
                    human_size(v.size_bytes)
                );
            }
            Ok(())
        }
        SnapshotCmd::Delete { name, wait } => {
            let acc = client.call(api::snapshots::delete_snapshot(&name))?;
            let asked = format!("snapshot {name}: deleting");
            if let Some(op) = waited(client, acc.operation, &wait, json, &asked)? {
                if json {
                    return print_json(&op);
                }
                println!("snapshot {name} deleted ({})", acc.snapshot.id);
            }
            Ok(())
        }
    }
}

/// Print what was asked, wait for it unless --no-wait; the operation
/// when it was waited for.
fn waited(
    client: &Client,
    op: cm_api::operation::Operation,
    w: &WaitArgs,
    json: bool,
    asked: &str,
) -> Result<Option<cm_api::operation::Operation>, CliError> {
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

/// The snapshot as it is now, in one line.
fn done(client: &Client, id: &str, json: bool) -> Result<(), CliError> {
    let s: Snapshot = client.call(api::snapshots::show(id))?;
    if json {
        return print_json(&s);
    }
    println!(
        "snapshot {} of {} is {} on {} (consistency {})",
        s.name,
        of_word(&s),
        state_word(s.state),
        s.host,
        consistency_word(s.consistency)
    );
    Ok(())
}

fn show(s: &Snapshot) {
    let mut rows = vec![
        ("name", s.name.clone()),
        ("id", s.id.to_string()),
        ("state", state_word(s.state).to_string()),
        ("of", of_word(s)),
        ("host", s.host.clone()),
        ("size", s.size_bytes.map_or_else(|| "-".into(), human_size)),
        ("consistency", consistency_word(s.consistency)),
        ("created", human_time(&s.created_at)),
    ];
    if let Some(e) = &s.error {
        rows.push(("error", e.clone()));
    }
    fields(&rows);
}
