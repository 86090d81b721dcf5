use crate::cli::HostCmd;
use crate::client::{api, CliError, Client};
use crate::output::{fields, json as print_json, Tabular};
use cm_api::host::{Host, HostRemoved, UpdateHost};
use cm_api::{age_secs, human_time};

pub fn run(client: &Client, cmd: HostCmd, json: bool) -> Result<(), CliError> {
    match cmd {
        HostCmd::List => {
            let hosts: Vec<Host> = client.call(api::hosts::list())?;
            if json {
                return print_json(&hosts);
            }
            let mut t = Tabular::new(&[
                "name",
                "state",
                "mem total",
                "promised free",
                "real free",
                "vcpus",
                "instances",
                "accel",
                "last seen",
            ])
            .numeric(&[2, 3, 4, 5, 6]);
            for h in &hosts {
                t.row(vec![
                    h.name.clone(),
                    h.state.as_str().into(),
                    format!("{} MiB", h.memory_total_mib),
                    format!("{} MiB", h.memory_promised_free_mib),
                    format!("{} MiB", h.memory_real_free_mib),
                    h.vcpus.to_string(),
                    h.instance_count.to_string(),
                    h.accel.to_string(),
                    seen(h),
                ]);
            }
            t.print();
            Ok(())
        }
        HostCmd::Show { name } => {
            let h: Host = client.call(api::hosts::show(&name))?;
            if json {
                return print_json(&h);
            }
            fields(&[
                ("name", h.name.clone()),
                ("id", h.id.to_string()),
                ("state", h.state.as_str().into()),
                ("enabled", h.enabled.to_string()),
                ("memory total", format!("{} MiB", h.memory_total_mib)),
                ("memory reserved", format!("{} MiB", h.memory_reserved_mib)),
                (
                    "promised free",
                    format!("{} MiB", h.memory_promised_free_mib),
                ),
                ("real free", format!("{} MiB", h.memory_real_free_mib)),
                ("vcpus", h.vcpus.to_string()),
                ("disk free", format!("{} MiB", h.disk_free_mib)),
                ("instances", h.instance_count.to_string()),
                ("accel", format!("{} ({})", h.accel, h.accel_note)),
                ("qemu", h.qemu_version.clone()),
                ("forward address", crate::output::opt(&h.forward_addr)),
                ("last seen", seen(&h)),
                ("registered", human_time(&h.registered_at)),
            ]);
            Ok(())
        }
        HostCmd::Disable { name } => set_enabled(client, &name, false, json),
        HostCmd::Enable { name } => set_enabled(client, &name, true, json),
        HostCmd::JoinToken { rotate } => {
            let v = client.call(if rotate {
                api::hosts::rotate_join_token()
            } else {
                api::hosts::join_token()
            })?;
            if json {
                return print_json(&v);
            }
            println!("{}", v.token);
            if rotate {
                eprintln!(
                    "the old join token no longer works; the new one is also in {} on the master",
                    v.file
                );
            }
            Ok(())
        }
        HostCmd::Remove { name, force } => {
            let r: HostRemoved = client.call(api::hosts::remove(&name, force))?;
            if json {
                return print_json(&r);
            }
            println!("host {} removed; its token no longer works", r.name);
            if !r.forgotten_instances.is_empty() {
                println!(
                    "instances forgotten with it: {}",
                    r.forgotten_instances.join(", ")
                );
            }
            Ok(())
        }
        HostCmd::Evacuate {
            name,
            yes,
            force,
            wait,
        } => super::evacuate::run(client, &name, yes, force, &wait, json),
        HostCmd::Orphans {
            name,
            purge,
            ids,
            wait,
        } => super::orphans::run(client, &name, purge, &ids, &wait, json),
    }
}

fn seen(h: &Host) -> String {
    match &h.last_seen {
        Some(t) => format!("{}s ago", age_secs(t)),
        None => "never".into(),
    }
}

fn set_enabled(client: &Client, name: &str, enabled: bool, json: bool) -> Result<(), CliError> {
    let body = UpdateHost {
        enabled: Some(enabled),
        ..Default::default()
    };
    let h: Host = client.call(api::hosts::update(name, &body))?;
    if json {
        return print_json(&h);
    }
    println!("host {} is {}", h.name, h.state.as_str());
    Ok(())
}
