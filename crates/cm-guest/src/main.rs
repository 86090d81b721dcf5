//! `cm-guest`: the guest agent (DESIGN.md §5, seed 003). A static binary
//! inside VMs: it finds its boot string, fetches its config from the master,
//! applies it, reports back with `update_cache`, keeps services running, and
//! heartbeats to its host. See docs/guest.md.

mod agent;
mod apply;
mod bootstring;
mod client;
mod filesync;
mod format;
mod freeze;
mod handler;
mod heartbeat;
mod lsb;
mod netinfo;
mod run;
mod safefs;
mod services;
mod settings;
mod trust;

use std::path::PathBuf;

const USAGE: &str = "usage: cm-guest [--root DIR]\n\
  Runs the guest agent. --root treats DIR as / (for a guest outside a VM, or tests).\n\
  Settings: ROOT/etc/cm-guest.toml (handler, handler_timeout_secs, heartbeat_secs, state_dir).";

fn main() {
    let mut root = PathBuf::from("/");
    let mut args = std::env::args().skip(1);
    while let Some(a) = args.next() {
        match a.as_str() {
            "--root" => match args.next() {
                Some(r) => root = PathBuf::from(r),
                None => {
                    eprintln!("{USAGE}");
                    std::process::exit(2);
                }
            },
            "--help" | "-h" => {
                println!("{USAGE}");
                return;
            }
            other => {
                eprintln!("cm-guest: unknown argument {other}\n{USAGE}");
                std::process::exit(2);
            }
        }
    }
    let settings = match settings::Settings::load(&root) {
        Ok(s) => s,
        Err(e) => {
            println!("cm-guest: {e}; using the defaults");
            settings::Settings::default()
        }
    };
    agent::Agent::new(root, settings).run()
}
