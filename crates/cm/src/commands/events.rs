use crate::cli::{EventCmd, OperationCmd};
use crate::client::{api, CliError, Client};
use crate::output::{json as print_json, Tabular};
use crate::wait;
use cm_api::event::{Event, Lagged, LAGGED};
use cm_api::operation::Operation;
use cm_api::{human_time, ErrorCode};
use cm_client::api::events::EventQuery;
use std::io::{BufRead, Read};
use std::time::Duration;

pub fn run_operation(client: &Client, cmd: OperationCmd, json: bool) -> Result<(), CliError> {
    match cmd {
        OperationCmd::List => {
            let ops: Vec<Operation> = client.call(api::events::operations())?;
            if json {
                return print_json(&ops);
            }
            let mut t = Tabular::new(&["id", "kind", "target", "status", "progress", "created"]);
            for o in &ops {
                t.row(vec![
                    o.id.to_string(),
                    o.kind.to_string(),
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
            let o: Operation = client.call(api::events::operation(&id))?;
            print_op(&o, json)
        }
        OperationCmd::Wait { id, wait_timeout } => {
            let o: Operation = client.call(api::events::operation(&id))?;
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
    let want = Want {
        kind,
        deployable: None,
        line: event_line,
    };
    if follow {
        return follow_events(client, since, &want, json);
    }
    let events: Vec<Event> = client.call(api::events::events(&query(since, &want, None)))?;
    if json {
        for e in &events {
            print_line(e, &want, true)?;
        }
        return Ok(());
    }
    let mut t = Tabular::new(&["seq", "time", "type", "target", "message"]).numeric(&[0]);
    for e in &events {
        t.row(vec![
            e.seq.to_string(),
            human_time(&e.time),
            e.kind.to_string(),
            e.target.clone(),
            e.message.clone(),
        ]);
    }
    t.print();
    Ok(())
}

fn query(since: i64, want: &Want, limit: Option<u32>) -> EventQuery {
    EventQuery {
        since,
        kind: want.kind.clone(),
        limit,
        deployable: want.deployable.clone(),
    }
}

/// Which events a follower prints, and how.
pub(super) struct Want {
    pub kind: Option<String>,
    pub deployable: Option<String>,
    /// A line for people (`--json` prints the event itself).
    pub line: fn(&Event) -> String,
}

fn event_line(e: &Event) -> String {
    format!(
        "{} {} {} {}: {}",
        e.seq,
        human_time(&e.time),
        e.kind,
        e.target,
        e.message
    )
}

pub(super) fn print_line(e: &Event, want: &Want, json: bool) -> Result<(), CliError> {
    if json {
        let line = serde_json::to_string(e).map_err(|e| CliError::Local(e.to_string()))?;
        println!("{line}");
    } else {
        println!("{}", (want.line)(e));
    }
    Ok(())
}

/// A line of the stream is at most this long (an event is a few KiB).
const MAX_SSE_LINE: u64 = 1 << 20;
/// Events re-read from the master at once after a lag.
const CATCH_UP_PAGE: u32 = 1000;

/// `--follow`: the master's event stream (server-sent events). When the
/// master says the stream lagged, the missed events are re-read with
/// `GET /v1/events?since=`; when retention removed some, the user is told.
pub(super) fn follow_events(
    client: &Client,
    since: i64,
    kind: &Want,
    json: bool,
) -> Result<(), CliError> {
    let mut last = since;
    loop {
        // A lag notice's gap, re-read when the next event shows that every
        // event before it is in the store.
        let mut gap: Option<i64> = None;
        let resp = match client.stream(api::events::event_stream(&query(last, kind, None))) {
            Ok(r) => r,
            Err(CliError::Api(e)) if e.code() == ErrorCode::EventsExpired => {
                eprintln!("cm: {}; following from the oldest kept", e.error.message);
                // Everything kept is newer than what we printed.
                last = 0;
                continue;
            }
            Err(e) => return Err(e),
        };
        let mut reader = std::io::BufReader::new(resp);
        let (mut name, mut data) = (String::new(), String::new());
        loop {
            let mut line = String::new();
            let n = (&mut reader)
                .take(MAX_SSE_LINE)
                .read_line(&mut line)
                .map_err(|e| CliError::Transport(format!("reading the event stream: {e}")))?;
            if n == 0 {
                break;
            }
            if !line.ends_with('\n') && n as u64 >= MAX_SSE_LINE {
                return Err(CliError::Transport(
                    "an event stream line is too long".into(),
                ));
            }
            let line = line.trim_end_matches(['\r', '\n']);
            if line.is_empty() {
                dispatch(client, kind, json, &name, &data, &mut last, &mut gap)?;
                name.clear();
                data.clear();
            } else if let Some(v) = line.strip_prefix("event:") {
                name = v.trim_start().to_string();
            } else if let Some(v) = line.strip_prefix("data:") {
                if !data.is_empty() {
                    data.push('\n');
                }
                data.push_str(v.strip_prefix(' ').unwrap_or(v));
            }
        }
        // The master closed the stream (a restart): take it up where we were.
        std::thread::sleep(Duration::from_secs(1));
    }
}

fn dispatch(
    client: &Client,
    kind: &Want,
    json: bool,
    name: &str,
    data: &str,
    last: &mut i64,
    gap: &mut Option<i64>,
) -> Result<(), CliError> {
    if data.is_empty() {
        return Ok(());
    }
    if name == LAGGED {
        let lag: Lagged = serde_json::from_str(data)
            .map_err(|e| CliError::Transport(format!("unexpected lag notice: {e}")))?;
        eprintln!(
            "cm: the stream lagged ({} events not sent); re-reading them from seq {}",
            lag.dropped, lag.resume_from
        );
        let from = lag.resume_from.min(*last);
        *gap = Some(gap.map_or(from, |g| g.min(from)));
        return Ok(());
    }
    let e: Event = serde_json::from_str(data)
        .map_err(|e| CliError::Transport(format!("unexpected event: {e}")))?;
    // The master sends an event once it is stored, and every earlier one
    // is stored by then: the gap can be read now.
    if let Some(from) = gap.take() {
        catch_up(client, kind, json, from, last)?;
    }
    if e.seq > *last {
        *last = e.seq;
        print_line(&e, kind, json)?;
    }
    Ok(())
}

/// Re-read the events after `from` from the master's store.
fn catch_up(
    client: &Client,
    kind: &Want,
    json: bool,
    from: i64,
    last: &mut i64,
) -> Result<(), CliError> {
    let mut since = from;
    loop {
        let page: Vec<Event> = match client.call(api::events::events(&query(
            since,
            kind,
            Some(CATCH_UP_PAGE),
        ))) {
            Ok(p) => p,
            Err(CliError::Api(e)) if e.code() == ErrorCode::EventsExpired => {
                eprintln!(
                    "cm: could not re-read the missed events: {}; going on",
                    e.error.message
                );
                return Ok(());
            }
            Err(e) => return Err(e),
        };
        for e in &page {
            if e.seq > *last {
                *last = e.seq;
                print_line(e, kind, json)?;
            }
        }
        match page.last() {
            Some(e) if page.len() == CATCH_UP_PAGE as usize => since = e.seq,
            _ => return Ok(()),
        }
    }
}
