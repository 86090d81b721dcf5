//! `cm host orphans`: VMs a host keeps that are no instance of that host,
//! and `--purge` to delete their files.

use crate::cli::WaitArgs;
use crate::client::{api, CliError, Client};
use crate::output::{json as print_json, opt, Tabular};
use cm_api::host::{Orphan, PurgeOrphans};
use cm_api::human_time;
use std::time::{Duration, Instant};
use uuid::Uuid;

pub fn run(
    client: &Client,
    name: &str,
    purge: bool,
    ids: &[String],
    w: &WaitArgs,
    json: bool,
) -> Result<(), CliError> {
    if !purge {
        let list: Vec<Orphan> = client.call(api::hosts::orphans(name))?;
        if json {
            return print_json(&list);
        }
        table(&list);
        return Ok(());
    }
    let ids = ids
        .iter()
        .map(|s| Uuid::parse_str(s).map_err(|e| CliError::Local(format!("--id {s}: {e}"))))
        .collect::<Result<Vec<_>, _>>()?;
    let marked: Vec<Orphan> =
        client.call(api::hosts::purge_orphans(name, &PurgeOrphans { ids }))?;
    if !w.no_wait && !marked.is_empty() {
        // The host removes them when it applies its desired state.
        let start = Instant::now();
        loop {
            let left: Vec<Orphan> = client.call(api::hosts::orphans(name))?;
            if !left.iter().any(|o| marked.iter().any(|m| m.id == o.id)) {
                break;
            }
            if start.elapsed() >= Duration::from_secs(w.wait_timeout) {
                return Err(CliError::Local(format!(
                    "gave up waiting after {}s: host {name} removes them when it next \
                     hears from the master",
                    w.wait_timeout
                )));
            }
            std::thread::sleep(Duration::from_millis(500));
        }
    }
    if json {
        return print_json(&marked);
    }
    let names: Vec<String> = marked
        .iter()
        .map(|o| format!("{} ({})", o.name, o.id))
        .collect();
    let verb = if w.no_wait { "purging" } else { "purged" };
    println!(
        "{verb} {} orphan(s) of host {name}{}{}",
        marked.len(),
        if names.is_empty() { "" } else { ": " },
        names.join(", ")
    );
    Ok(())
}

fn table(list: &[Orphan]) {
    let mut t = Tabular::new(&[
        "id",
        "name",
        "state",
        "disk",
        "now on",
        "purge",
        "first seen",
    ])
    .numeric(&[3]);
    for o in list {
        t.row(vec![
            o.id.to_string(),
            o.name.clone(),
            o.state.as_str().into(),
            format!("{} MiB", o.disk_bytes.div_ceil(1 << 20)),
            opt(&o.now_on_host),
            if o.purge_requested { "requested" } else { "-" }.into(),
            human_time(&o.first_seen),
        ]);
    }
    t.print();
}
