//! `cm status`: per node, whether SSH reaches it (and how long `true` took
//! there), and what the balancer says of it.

use crate::exec;
use crate::inventory::{Inventory, Node};
use crate::referee::{self, Member};
use crate::ssh::Transport;
use crate::{code, FleetError};
use std::io::Write;

#[derive(Debug, serde::Serialize)]
struct Row {
    node: String,
    host: String,
    reachable: bool,
    /// Round trip of `ssh NODE true`, in milliseconds.
    ssh_ms: Option<u64>,
    ssh_error: Option<String>,
    balancer: Option<Member>,
}

pub fn run(
    inv: &Inventory,
    transport: &Transport,
    nodes: &[&Node],
    json: bool,
) -> Result<i32, FleetError> {
    let jobs = nodes
        .iter()
        .map(|n| crate::ssh_job(transport, n, "true"))
        .collect();
    let limit = Some(transport.connect_limit());
    let rt = crate::runtime()?;
    let results = rt.block_on(exec::run_all(jobs, 32, limit, None));
    let (members, bal_err) = match (&inv.referee, referee::open(inv, transport)) {
        (None, _) => (Vec::new(), None),
        (Some(_), Ok(b)) => match b.members(inv) {
            Ok(m) => (m, None),
            Err(e) => (Vec::new(), Some(e.to_string())),
        },
        (Some(_), Err(e)) => (Vec::new(), Some(e.to_string())),
    };
    let rows: Vec<Row> = nodes
        .iter()
        .zip(&results)
        .map(|(n, r)| Row {
            node: n.name.clone(),
            host: n.host.clone(),
            reachable: r.ok(),
            // A run's seconds (non-negative, bounded by its timeout) in whole ms.
            ssh_ms: r.ok().then(|| {
                #[allow(clippy::cast_possible_truncation, clippy::cast_sign_loss)]
                let ms = (r.duration * 1000.0).round().max(0.0) as u64;
                ms
            }),
            ssh_error: (!r.ok()).then(|| {
                if r.timed_out {
                    "timed out".to_string()
                } else {
                    r.stderr
                        .lines()
                        .rev()
                        .find(|l| !l.trim().is_empty())
                        .unwrap_or("failed")
                        .trim()
                        .to_string()
                }
            }),
            balancer: members.iter().find(|m| m.node == n.name).cloned(),
        })
        .collect();
    let mut out = std::io::stdout().lock();
    if json {
        for r in &rows {
            let _ = writeln!(out, "{}", serde_json::to_string(r).unwrap_or_default());
        }
    } else {
        let _ = writeln!(
            out,
            "{:<12} {:<16} {:<14} {:<10} {:>6} {:>6}",
            "NODE", "ADDRESS", "SSH", "BALANCER", "WEIGHT", "CONNS"
        );
        for r in &rows {
            let ssh = match r.ssh_ms {
                Some(ms) => format!("up {ms}ms"),
                None => "unreachable".into(),
            };
            let (state, weight, conns) = match &r.balancer {
                Some(m) => (
                    m.state.clone(),
                    m.weight
                        .map(|w| w.to_string())
                        .unwrap_or_else(|| "-".into()),
                    m.conns.map(|c| c.to_string()).unwrap_or_else(|| "-".into()),
                ),
                None if inv.referee.is_some() && bal_err.is_none() => {
                    ("absent".into(), "-".into(), "-".into())
                }
                None => ("-".into(), "-".into(), "-".into()),
            };
            let _ = writeln!(
                out,
                "{:<12} {:<16} {:<14} {:<10} {:>6} {:>6}",
                r.node, r.host, ssh, state, weight, conns
            );
        }
        for r in rows.iter().filter(|r| !r.reachable) {
            eprintln!(
                "cm: {}: {}",
                r.node,
                r.ssh_error.as_deref().unwrap_or("unreachable")
            );
        }
    }
    if let Some(e) = &bal_err {
        eprintln!("cm: balancer: {e}");
    }
    Ok(if rows.iter().any(|r| !r.reachable) {
        code::UNREACHABLE
    } else if bal_err.is_some() {
        code::FAILED
    } else {
        code::OK
    })
}
