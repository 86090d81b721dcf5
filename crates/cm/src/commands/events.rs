use crate::cli::{EventCmd, OperationCmd};
use crate::client::{seg, CliError, Client};
use crate::output::{json as print_json, Tabular};
use crate::wait;
use cm_api::event::Event;
use cm_api::human_time;
use cm_api::operation::Operation;
use std::time::Duration;

pub fn run_operation(client: &Client, cmd: OperationCmd, json: bool) -> Result<(), CliError> {
    match cmd {
        OperationCmd::List => {
            let ops: Vec<Operation> = client.get("/v1/operations")?;
            if json {
                return print_json(&ops);
            }
            let mut t = Tabular::new(&["id", "kind", "target", "status", "progress", "created"]);
            for o in &ops {
                t.row(vec![
                    o.id.to_string(),
                    o.kind.clone(),
                    o.target.clone(),
                    o.status.as_str().into(),
                    o.progress.clone(),
                    human_time(&o.created_at),
                ]);
            }
            t.print();
            Ok(())
        }
        OperationCmd::Show { id } => {
            let o: Operation = client.get(&format!("/v1/operations/{}", seg(&id)))?;
            print_op(&o, json)
        }
        OperationCmd::Wait { id, wait_timeout } => {
            let o: Operation = client.get(&format!("/v1/operations/{}", seg(&id)))?;
            let o = wait::wait(client, o, Duration::from_secs(wait_timeout))?;
            print_op(&o, json)?;
            wait::check(&o)
        }
    }
}

fn print_op(o: &Operation, json: bool) -> Result<(), CliError> {
    if json {
        return print_json(o);
    }
    let err = o
        .error
        .as_ref()
        .map(|e| format!(" error: {}", e.message))
        .unwrap_or_default();
    println!(
        "{} {} {} {} ({}){err}",
        o.id,
        o.kind,
        o.target,
        o.status.as_str(),
        o.progress
    );
    Ok(())
}

pub fn run_event(client: &Client, cmd: EventCmd, json: bool) -> Result<(), CliError> {
    let EventCmd::List {
        since,
        kind,
        follow,
    } = cmd;
    let mut since = since;
    loop {
        let mut path = format!("/v1/events?since={since}");
        if let Some(k) = &kind {
            path.push_str(&format!("&type={}", seg(k)));
        }
        if follow {
            path.push_str("&wait=25");
        }
        let events: Vec<Event> = client.get_slow(&path, 25)?;
        if let Some(last) = events.last() {
            since = last.seq;
        }
        if json {
            for e in &events {
                let line = serde_json::to_string(e).map_err(|e| CliError::Local(e.to_string()))?;
                println!("{line}");
            }
        } else if !follow {
            let mut t = Tabular::new(&["seq", "time", "type", "target", "message"]).numeric(&[0]);
            for e in &events {
                t.row(vec![
                    e.seq.to_string(),
                    human_time(&e.time),
                    e.kind.clone(),
                    e.target.clone(),
                    e.message.clone(),
                ]);
            }
            t.print();
        } else {
            for e in &events {
                println!(
                    "{} {} {} {}: {}",
                    e.seq,
                    human_time(&e.time),
                    e.kind,
                    e.target,
                    e.message
                );
            }
        }
        if !follow {
            return Ok(());
        }
    }
}
