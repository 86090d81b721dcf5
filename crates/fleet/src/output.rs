//! How fleet results are printed: whole lines prefixed with the node's name
//! as they arrive, `-b` gathering nodes with identical output (as clush -b),
//! or `--json`, one object per node per line. And the exit code they add up to.

use crate::code;
use crate::exec::{NodeResult, OnLine, Stream};
use crate::inventory::Node;
use std::io::Write;
use std::sync::Arc;

/// Print each line as `NODE: line` with one write, so lines of different
/// nodes never interleave mid-line.
pub fn live_printer() -> OnLine {
    Arc::new(|node: &str, stream: Stream, line: &str| {
        let text = format!("{node}: {line}\n");
        let _ = match stream {
            Stream::Stdout => std::io::stdout().lock().write_all(text.as_bytes()),
            Stream::Stderr => std::io::stderr().lock().write_all(text.as_bytes()),
        };
    })
}

/// The exit code a set of results adds up to: the highest that applies.
pub fn exit_code(results: &[NodeResult]) -> i32 {
    results
        .iter()
        .map(|r| {
            if r.timed_out {
                code::TIMEOUT
            } else if r.unreachable {
                code::UNREACHABLE
            } else if r.ok() {
                code::OK
            } else {
                code::FAILED
            }
        })
        .max()
        .unwrap_or(code::OK)
}

/// A short reason for a node that did not succeed.
fn reason(r: &NodeResult) -> Option<String> {
    let last = r
        .stderr
        .lines()
        .rev()
        .find(|l| !l.trim().is_empty())
        .unwrap_or("")
        .trim();
    if r.timed_out {
        Some(format!("timed out after {:.1}s", r.duration))
    } else if r.unreachable {
        Some(format!("unreachable: {last}"))
    } else if !r.ok() {
        let rc =
            r.rc.map(|c| c.to_string())
                .unwrap_or_else(|| "killed".into());
        Some(if last.is_empty() {
            format!("exit {rc}")
        } else {
            format!("exit {rc}: {last}")
        })
    } else {
        None
    }
}

fn json_lines(results: &[NodeResult]) {
    let mut out = std::io::stdout().lock();
    for r in results {
        if let Ok(s) = serde_json::to_string(r) {
            let _ = writeln!(out, "{s}");
        }
    }
}

/// Nodes with identical stdout, in first-seen order.
pub fn gather(results: &[NodeResult]) -> Vec<(Vec<String>, String)> {
    let mut groups: Vec<(Vec<String>, String)> = Vec::new();
    for r in results.iter().filter(|r| !r.unreachable && !r.timed_out) {
        match groups.iter_mut().find(|(_, out)| *out == r.stdout) {
            Some((names, _)) => names.push(r.node.clone()),
            None => groups.push((vec![r.node.clone()], r.stdout.clone())),
        }
    }
    groups
}

/// After `cm do`: gathered output or JSON, then what failed; the exit code.
pub fn commands(results: &[NodeResult], json: bool, gathered: bool) -> i32 {
    if json {
        json_lines(results);
        return exit_code(results);
    }
    if gathered {
        let mut out = std::io::stdout().lock();
        for (names, text) in gather(results) {
            let head = format!("{} ({})", names.join(","), names.len());
            let rule = "-".repeat(head.len().min(76));
            let _ = write!(out, "{rule}\n{head}\n{rule}\n{text}");
        }
        let mut err = std::io::stderr().lock();
        for r in results {
            for l in r.stderr.lines() {
                let _ = writeln!(err, "{}: {l}", r.node);
            }
        }
    }
    summary(results);
    exit_code(results)
}

fn summary(results: &[NodeResult]) {
    let mut err = std::io::stderr().lock();
    for r in results {
        if let Some(why) = reason(r) {
            let _ = writeln!(err, "cm: {}: {why}", r.node);
        }
    }
}

/// After `cm scp` / `cm rsync`: one line per node; the exit code.
pub fn copies(results: &[NodeResult], json: bool) -> i32 {
    if json {
        json_lines(results);
    } else {
        let mut out = std::io::stdout().lock();
        for r in results {
            let line = match reason(r) {
                None => format!("{}: ok ({:.2}s)", r.node, r.duration),
                Some(why) => format!("{}: FAILED {why}", r.node),
            };
            let _ = writeln!(out, "{line}");
        }
    }
    exit_code(results)
}

#[derive(serde::Serialize)]
struct NodeView<'a> {
    name: &'a str,
    host: &'a str,
    web_port: Option<u16>,
    ssh_user: Option<&'a str>,
    ssh_port: Option<u16>,
}

pub fn nodes(nodes: &[&Node], json: bool) {
    let mut out = std::io::stdout().lock();
    for n in nodes {
        let line = if json {
            let v = NodeView {
                name: &n.name,
                host: &n.host,
                web_port: n.web_port,
                ssh_user: n.ssh.user.as_deref(),
                ssh_port: n.ssh.port,
            };
            serde_json::to_string(&v).unwrap_or_default()
        } else {
            n.name.clone()
        };
        let _ = writeln!(out, "{line}");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn r(node: &str, rc: Option<i32>, out: &str) -> NodeResult {
        NodeResult {
            node: node.into(),
            rc,
            stdout: out.into(),
            ..Default::default()
        }
    }

    #[test]
    fn the_highest_exit_code_wins() {
        let mut v = vec![r("A", Some(0), "")];
        assert_eq!(exit_code(&v), 0);
        v.push(r("B", Some(7), ""));
        assert_eq!(exit_code(&v), code::FAILED);
        v.push(NodeResult {
            unreachable: true,
            ..r("C", Some(255), "")
        });
        assert_eq!(exit_code(&v), code::UNREACHABLE);
        v.push(NodeResult {
            timed_out: true,
            ..r("D", None, "")
        });
        assert_eq!(exit_code(&v), code::TIMEOUT);
    }

    #[test]
    fn identical_outputs_are_gathered_in_order() {
        let v = vec![
            r("A", Some(0), "x\n"),
            r("B", Some(0), "y\n"),
            r("C", Some(0), "x\n"),
        ];
        assert_eq!(
            gather(&v),
            vec![
                (vec!["A".to_string(), "C".to_string()], "x\n".to_string()),
                (vec!["B".to_string()], "y\n".to_string())
            ]
        );
    }
}
