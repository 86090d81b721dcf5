//! `cm host evacuate`: rebuild a dead host's instances elsewhere, after
//! saying plainly that their disks are lost.

use crate::cli::WaitArgs;
use crate::client::{api, CliError, Client};
use crate::output::json as print_json;
use crate::wait;
use cm_api::host::{EvacuateHost, Evacuation, Host, HostState};
use cm_api::instance::Instance;
use std::io::{BufRead, IsTerminal, Read, Write};
use std::time::Duration;

pub fn run(
    client: &Client,
    name: &str,
    yes: bool,
    force: bool,
    w: &WaitArgs,
    json: bool,
) -> Result<(), CliError> {
    let host: Host = client.call(api::hosts::show(name))?;
    let all: Vec<Instance> = client.call(api::instances::list())?;
    let mine: Vec<String> = all
        .iter()
        .filter(|i| i.host.as_deref() == Some(host.name.as_str()))
        .filter(|i| i.state != cm_api::instance::InstanceState::Deleting)
        .map(|i| i.name.clone())
        .collect();
    // A host that is up is refused by the master unless forced: no question.
    if host.state == HostState::Down || force {
        let warning = format!(
            "Evacuating host {} rebuilds its {} instance(s) on other hosts from their images.\n\
             Their disks on {} are LOST to them: {}.\n\
             If {} comes back, its VMs are stopped and kept as orphans (cm host orphans {}).",
            host.name,
            mine.len(),
            host.name,
            if mine.is_empty() {
                "(none)".to_string()
            } else {
                mine.join(", ")
            },
            host.name,
            host.name
        );
        eprintln!("{warning}");
        if !yes && !confirm(&host.name)? {
            return Err(CliError::Local(format!(
                "not evacuated: confirm by typing the host's name, or pass --yes \
                 (the disks of {} on {} are lost)",
                if mine.is_empty() {
                    "its instances".to_string()
                } else {
                    mine.join(", ")
                },
                host.name
            )));
        }
    }
    let ev: Evacuation = client.call(api::hosts::evacuate(name, &EvacuateHost { force }))?;
    let mut failed = Vec::new();
    if !w.no_wait {
        for e in &ev.instances {
            if let Some(op) = &e.operation {
                let done = wait::wait(client, op.clone(), Duration::from_secs(w.wait_timeout))?;
                if let Err(err) = wait::check(&done) {
                    failed.push(err.to_string());
                }
            }
        }
    }
    if json {
        print_json(&ev)?;
    } else {
        for e in &ev.instances {
            println!("instance {} rebuilt on {}", e.instance, e.to_host);
        }
        println!(
            "host {} evacuated: {} instance(s) moved",
            ev.host,
            ev.instances.len()
        );
    }
    if failed.is_empty() {
        Ok(())
    } else {
        Err(CliError::Failed(failed.join("; ")))
    }
}

/// Ask on the terminal: the host's name must be typed back.
fn confirm(host: &str) -> Result<bool, CliError> {
    if !std::io::stdin().is_terminal() {
        return Ok(false);
    }
    eprint!("Type the host's name ({host}) to evacuate it: ");
    std::io::stderr()
        .flush()
        .map_err(|e| CliError::Local(format!("stderr: {e}")))?;
    let mut line = String::new();
    std::io::stdin()
        .lock()
        .take(256)
        .read_line(&mut line)
        .map_err(|e| CliError::Local(format!("stdin: {e}")))?;
    Ok(line.trim() == host)
}
