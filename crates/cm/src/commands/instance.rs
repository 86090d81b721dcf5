use crate::cli::{InstanceCmd, WaitArgs};
use crate::client::{api, CliError, Client};
use crate::output::{fields, json as print_json, opt, Tabular};
use crate::wait;
use cm_api::human_time;
use cm_api::instance::{
    ConsoleLog, CreateInstance, HeartbeatPolicy, Instance, InstanceAccepted, StopInstance,
};
use cm_api::operation::Operation;
use std::io::Write;
use std::time::Duration;

pub fn run(client: &Client, cmd: InstanceCmd, json: bool) -> Result<(), CliError> {
    match cmd {
        InstanceCmd::Create {
            name,
            image,
            flavor,
            memory,
            vcpus,
            place,
            ports,
            restart_policy,
            accel,
            stop_timeout,
            config,
            dynamic_domain,
            heartbeat,
            wait: w,
        } => {
            let config_bytes = match &config {
                Some(path) => Some(std::fs::read(path).map_err(|e| {
                    CliError::Local(format!("cannot read {}: {e}", path.display()))
                })?),
                None => None,
            };
            let (config, config_base64) = match config_bytes {
                Some(b) => match String::from_utf8(b) {
                    Ok(text) => (Some(text), None),
                    Err(e) => {
                        use base64::Engine;
                        (
                            None,
                            Some(base64::engine::general_purpose::STANDARD.encode(e.as_bytes())),
                        )
                    }
                },
                None => (None, None),
            };
            let body = CreateInstance {
                config,
                config_base64,
                dynamic_domain,
                name,
                image: image.unwrap_or_default(),
                flavor,
                memory_mib: memory,
                vcpus,
                host: place.host,
                ports,
                restart_policy,
                accel,
                stop_timeout_secs: stop_timeout,
                heartbeat: heartbeat
                    .heartbeat_interval
                    .zip(heartbeat.heartbeat_timeout)
                    .map(|(interval, timeout)| HeartbeatPolicy {
                        interval,
                        timeout,
                        boot_grace: heartbeat.boot_grace,
                    }),
                volumes: place.volumes,
                persistent: place.persistent,
                root_volume: place.root_volume,
            };
            let acc: InstanceAccepted = client.call(api::instances::create(&body))?;
            if !json {
                let where_ = acc.instance.host.as_deref().unwrap_or("?");
                let placed = format!("instance {} placed on {where_}", acc.instance.name);
                // With --no-wait this is the answer; otherwise progress.
                if w.no_wait {
                    println!("{placed}");
                } else {
                    eprintln!("{placed}");
                }
            }
            let op = finish(client, acc.operation, &w, json)?;
            if w.no_wait {
                return Ok(());
            }
            let inst: Instance = client.call(api::instances::show(&op.target_id.to_string()))?;
            if json {
                return print_json(&inst);
            }
            println!(
                "instance {} is {} on {}",
                inst.name,
                inst.state,
                opt(&inst.host)
            );
            Ok(())
        }
        InstanceCmd::List => {
            let list: Vec<Instance> = client.call(api::instances::list())?;
            if json {
                return print_json(&list);
            }
            let mut t = Tabular::new(&[
                "name", "state", "host", "image", "memory", "vcpus", "ports", "reason",
            ])
            .numeric(&[4, 5]);
            for i in &list {
                t.row(vec![
                    i.name.clone(),
                    i.state.to_string(),
                    opt(&i.host),
                    i.image.clone(),
                    format!("{} MiB", i.memory_mib),
                    i.vcpus.to_string(),
                    ports(i),
                    opt(&i.reason),
                ]);
            }
            t.print();
            Ok(())
        }
        InstanceCmd::Show { name } => {
            let i: Instance = client.call(api::instances::show(&name))?;
            if json {
                return print_json(&i);
            }
            show(&i);
            Ok(())
        }
        InstanceCmd::Start { name, wait: w } => {
            let op: Operation = client.call(api::instances::start(&name))?;
            after(client, op, &w, json, "running")
        }
        InstanceCmd::Stop {
            name,
            force,
            timeout,
            wait: w,
        } => {
            let body = StopInstance {
                force,
                timeout_secs: timeout,
            };
            let op: Operation = client.call(api::instances::stop(&name, &body))?;
            after(client, op, &w, json, "stopped")
        }
        InstanceCmd::Reboot { name, wait: w } => {
            let op: Operation = client.call(api::instances::reboot(&name))?;
            after(client, op, &w, json, "rebooted")
        }
        InstanceCmd::Delete { name, wait: w } => {
            let op: Operation = client.call(api::instances::delete_instance(&name))?;
            after(client, op, &w, json, "deleted")
        }
        InstanceCmd::Console { name, bytes } => {
            let log: ConsoleLog = client.call(api::instances::console(&name, bytes))?;
            if json {
                return print_json(&log);
            }
            let mut out = std::io::stdout().lock();
            out.write_all(log.text.as_bytes())
                .and_then(|_| out.flush())
                .map_err(|e| CliError::Local(format!("stdout: {e}")))
        }
    }
}

/// Wait (unless --no-wait), print the outcome, fail on a failed operation.
pub(crate) fn finish(
    client: &Client,
    op: Operation,
    w: &WaitArgs,
    json: bool,
) -> Result<Operation, CliError> {
    if w.no_wait {
        if json {
            print_json(&op)?;
        } else {
            println!("operation {} {}", op.id, op.status.as_str());
        }
        return Ok(op);
    }
    let op = wait::wait(client, op, Duration::from_secs(w.wait_timeout))?;
    wait::check(&op)?;
    Ok(op)
}

fn after(
    client: &Client,
    op: Operation,
    w: &WaitArgs,
    json: bool,
    word: &str,
) -> Result<(), CliError> {
    let op = finish(client, op, w, json)?;
    if w.no_wait {
        return Ok(());
    }
    if json {
        return print_json(&op);
    }
    println!("instance {} {word}", op.target);
    Ok(())
}

fn ports(i: &Instance) -> String {
    if i.ports.is_empty() {
        return "-".into();
    }
    i.ports
        .iter()
        .map(|p| format!("{}→{}", p.host, p.guest))
        .collect::<Vec<_>>()
        .join(",")
}

/// How `cm instance show` states the root disk (docs/storage.md,
/// "Persistent roots").
pub fn root_line(i: &Instance) -> String {
    match &i.root_volume {
        Some(v) => format!("persistent, volume {v}"),
        None => format!(
            "ephemeral (overlay on {}, deleted with the instance)",
            i.image
        ),
    }
}

fn show(i: &Instance) {
    let mut rows = vec![
        ("name", i.name.clone()),
        ("id", i.id.to_string()),
        ("state", i.state.to_string()),
        ("reason", opt(&i.reason)),
        ("host", opt(&i.host)),
        ("image", i.image.clone()),
        ("root", root_line(i)),
        ("flavor", opt(&i.flavor)),
        ("memory", format!("{} MiB", i.memory_mib)),
        ("vcpus", i.vcpus.to_string()),
        ("ports", ports(i)),
        (
            "volumes",
            if i.volumes.is_empty() {
                "-".into()
            } else {
                i.volumes.join(", ")
            },
        ),
        (
            "accel",
            format!("{} (using {})", i.accel.as_str(), opt(&i.accel_used)),
        ),
        ("restart policy", i.restart_policy.as_str().to_string()),
        ("restarts", i.restart_count.to_string()),
        ("stop timeout", format!("{}s", i.stop_timeout_secs)),
        ("pid", opt(&i.pid)),
        ("created", human_time(&i.created_at)),
        ("updated", human_time(&i.updated_at)),
    ];
    if let Some(t) = &i.next_restart_at {
        rows.push(("next restart", human_time(t)));
    }
    if let Some(d) = &i.dynamic_domain {
        rows.push(("dynamic domain", d.clone()));
    }
    if let Some(c) = &i.config_status {
        let why = i
            .config_reason
            .as_ref()
            .map(|r| format!(": {r}"))
            .unwrap_or_default();
        rows.push(("config", format!("{c}{why}")));
    }
    let seq = i
        .guest
        .seq
        .map(|s| format!(" (heartbeat #{s})"))
        .unwrap_or_default();
    rows.push(("guest", format!("{}{seq}", i.guest.state)));
    if let Some(h) = &i.heartbeat {
        let judged = i
            .guest
            .liveness
            .map(|l| format!(", host says {l}"))
            .unwrap_or_default();
        rows.push((
            "heartbeat",
            format!("every {}, timeout {}{judged}", h.interval, h.timeout),
        ));
    }
    for svc in &i.guest.services {
        let detail = svc
            .detail
            .as_ref()
            .map(|d| format!(" ({d})"))
            .unwrap_or_default();
        rows.push(("service", format!("{}: {}{detail}", svc.name, svc.state)));
    }
    fields(&rows);
}
