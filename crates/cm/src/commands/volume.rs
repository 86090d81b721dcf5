//! `cm volume`: disks on one host that outlive their instances
//! (docs/storage.md). Each change waits for its operation by default, as
//! `cm instance` does, and shows the volume after.

use super::instance::finish;
use crate::cli::WaitArgs;
use crate::client::{api, CliError, Client};
use crate::output::{fields, json as print_json, opt, Tabular};
use clap::Subcommand;
use cm_api::human_time;
use cm_api::volume::{
    human_size, AttachVolume, CreateVolume, DetachVolume, MoveVolume, ResizeVolume, Volume,
    VolumeAccepted,
};

#[derive(Debug, Subcommand)]
pub enum VolumeCmd {
    /// Make a volume on a host with room (or the one named).
    #[command(
        after_help = "Examples:\n  cm volume create data --size 10G\n  cm volume create scratch --size 512M --host local"
    )]
    Create {
        name: String,
        /// Its size: 512M, 10G, 1T (whole MiB).
        #[arg(long, value_parser = crate::units::parse_bytes)]
        size: u64,
        /// Make it on this host.
        #[arg(long)]
        host: Option<String>,
        #[command(flatten)]
        wait: WaitArgs,
    },
    /// List volumes.
    #[command(after_help = "Example:\n  cm volume list")]
    List,
    /// Show one volume.
    #[command(after_help = "Example:\n  cm volume show data")]
    Show { name: String },
    /// Grow a volume (a volume never shrinks); a running guest sees the
    /// new size at once.
    #[command(after_help = "Example:\n  cm volume resize data --size 20G")]
    Resize {
        name: String,
        /// The new size: 512M, 10G, 1T.
        #[arg(long, value_parser = crate::units::parse_bytes)]
        size: u64,
        #[command(flatten)]
        wait: WaitArgs,
    },
    /// Attach a volume to an instance on its host (hot-plugged when it runs).
    #[command(after_help = "Example:\n  cm volume attach data db-1")]
    Attach {
        name: String,
        instance: String,
        #[command(flatten)]
        wait: WaitArgs,
    },
    /// Detach a volume: the guest must release it within 30 s, or the
    /// detach fails and the volume stays attached; with --force the VM is
    /// restarted without it instead (a hung or paused guest never lets go).
    #[command(after_help = "Example:\n  cm volume detach data")]
    Detach {
        name: String,
        /// If the guest does not release it, restart the VM without it.
        #[arg(long)]
        force: bool,
        #[command(flatten)]
        wait: WaitArgs,
    },
    /// Copy a volume, offline, to another host, and say how long it took.
    /// It must be attached to nothing and hold no snapshots; it keeps its
    /// id, name and serial (docs/storage.md, "Moving a volume").
    #[command(after_help = "Example:\n  cm volume move data --host h2")]
    Move {
        name: String,
        /// The host to copy it to (up, with room).
        #[arg(long)]
        host: String,
        #[command(flatten)]
        wait: WaitArgs,
    },
    /// Delete a volume and its file (refused while attached).
    #[command(after_help = "Example:\n  cm volume delete data")]
    Delete {
        name: String,
        #[command(flatten)]
        wait: WaitArgs,
    },
}

pub fn run(client: &Client, cmd: VolumeCmd, json: bool) -> Result<(), CliError> {
    match cmd {
        VolumeCmd::Create {
            name,
            size,
            host,
            wait,
        } => {
            let body = CreateVolume {
                name,
                size_bytes: size,
                host,
            };
            let acc = client.call(api::volumes::create(&body))?;
            let v = &acc.volume;
            let placed = format!("volume {} placed on {}", v.name, v.host);
            outcome(client, acc, &wait, json, &placed)
        }
        VolumeCmd::List => {
            let list: Vec<Volume> = client.call(api::volumes::list())?;
            if json {
                return print_json(&list);
            }
            let mut t = Tabular::new(&[
                "name",
                "state",
                "host",
                "size",
                "attached to",
                "image",
                "error",
            ])
            .numeric(&[3]);
            for v in &list {
                t.row(vec![
                    v.name.clone(),
                    v.state.as_str().to_string(),
                    v.host.clone(),
                    human_size(v.size_bytes),
                    match (&v.root_of, &v.attached_to) {
                        (Some(r), _) => format!("{r} (root)"),
                        (None, a) => opt(a),
                    },
                    opt(&v.image),
                    opt(&v.error),
                ]);
            }
            t.print();
            Ok(())
        }
        VolumeCmd::Show { name } => {
            let v: Volume = client.call(api::volumes::show(&name))?;
            if json {
                return print_json(&v);
            }
            show(&v);
            Ok(())
        }
        VolumeCmd::Resize { name, size, wait } => {
            let body = ResizeVolume { size_bytes: size };
            let acc = client.call(api::volumes::resize(&name, &body))?;
            let msg = format!("volume {name}: growing to {}", human_size(size));
            outcome(client, acc, &wait, json, &msg)
        }
        VolumeCmd::Attach {
            name,
            instance,
            wait,
        } => {
            let body = AttachVolume {
                instance: instance.clone(),
            };
            let acc = client.call(api::volumes::attach(&name, &body))?;
            let msg = format!("volume {name}: attaching to {instance}");
            outcome(client, acc, &wait, json, &msg)
        }
        VolumeCmd::Detach { name, force, wait } => {
            let body = DetachVolume { force };
            let acc = client.call(api::volumes::detach(&name, &body))?;
            let msg = format!("volume {name}: detaching");
            outcome(client, acc, &wait, json, &msg)
        }
        VolumeCmd::Move { name, host, wait } => {
            let body = MoveVolume { host: host.clone() };
            let acc = client.call(api::volumes::move_volume(&name, &body))?;
            let msg = format!("volume {name}: moving from {} to {host}", acc.volume.host);
            if let Some(op) = finish_progress(client, acc, &wait, json, &msg)? {
                if json {
                    return print_json(&op);
                }
                let done = op.progress.trim_start_matches("moved ");
                println!("moved {name} {done}");
            }
            Ok(())
        }
        VolumeCmd::Delete { name, wait } => {
            let acc = client.call(api::volumes::delete_volume(&name))?;
            let msg = format!("volume {name}: deleting");
            let id = acc.volume.id;
            let op = finish_progress(client, acc, &wait, json, &msg)?;
            if let Some(op) = op {
                if json {
                    return print_json(&op);
                }
                println!("volume {name} deleted ({id})");
            }
            Ok(())
        }
    }
}

/// Print what was asked, wait for it unless --no-wait; the operation when
/// it was waited for.
fn finish_progress(
    client: &Client,
    acc: VolumeAccepted,
    w: &WaitArgs,
    json: bool,
    asked: &str,
) -> Result<Option<cm_api::operation::Operation>, CliError> {
    if !json {
        // With --no-wait this is the answer; otherwise progress.
        if w.no_wait {
            println!("{asked}");
        } else {
            eprintln!("{asked}");
        }
    }
    let op = finish(client, acc.operation, w, json)?;
    Ok((!w.no_wait).then_some(op))
}

/// Wait, then show the volume as it is now.
fn outcome(
    client: &Client,
    acc: VolumeAccepted,
    w: &WaitArgs,
    json: bool,
    asked: &str,
) -> Result<(), CliError> {
    let id = acc.volume.id.to_string();
    if finish_progress(client, acc, w, json, asked)?.is_none() {
        return Ok(());
    }
    let v: Volume = client.call(api::volumes::show(&id))?;
    if json {
        return print_json(&v);
    }
    let on = match &v.attached_to {
        Some(i) => format!(", attached to {i}"),
        None => String::new(),
    };
    println!(
        "volume {} is {} on {} ({}{on})",
        v.name,
        v.state.as_str(),
        v.host,
        human_size(v.size_bytes)
    );
    Ok(())
}

fn show(v: &Volume) {
    let mut rows = vec![
        ("name", v.name.clone()),
        ("id", v.id.to_string()),
        ("state", v.state.as_str().to_string()),
        ("host", v.host.clone()),
        ("size", human_size(v.size_bytes)),
        (
            "allocated",
            v.allocated_bytes
                .map_or_else(|| "-".into(), |b| format!("{b} bytes")),
        ),
        ("attached to", opt(&v.attached_to)),
        ("root of", opt(&v.root_of)),
        ("image", opt(&v.image)),
        ("moving to", opt(&v.moving_to)),
        ("serial", v.serial.clone()),
        ("created", human_time(&v.created_at)),
        ("updated", human_time(&v.updated_at)),
    ];
    if let Some(e) = &v.error {
        rows.push(("error", e.clone()));
    }
    fields(&rows);
}
