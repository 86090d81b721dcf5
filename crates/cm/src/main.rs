//! `cm`: the cloudmaster command line.
//!
//! Also answers to the old cloudManager names (`cmscp`, `cmrsync`, `cmdo`,
//! `cmstatus`, `cmstop`, `cmplay`) when installed as links to this binary.

#[cfg(test)]
mod backup_flags;
mod cli;
mod client;
mod commands;
#[cfg(test)]
mod flag_names;
mod output;
mod retry;
#[cfg(test)]
mod root_flags;
mod units;
mod upload;
mod wait;

use clap::Parser;
use std::ffi::OsString;
use std::process::ExitCode;

fn main() -> ExitCode {
    let argv: Vec<OsString> = std::env::args_os().collect();
    let program = argv
        .first()
        .and_then(|a| std::path::Path::new(a).file_name())
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    if let Some(code) = cm_fleet::legacy_main(&program, argv.iter().skip(1).cloned().collect()) {
        return exit_code(code);
    }
    let cli = cli::Cli::parse_from(argv);
    exit_code(commands::run(cli))
}

fn exit_code(code: i32) -> ExitCode {
    ExitCode::from(u8::try_from(code).unwrap_or(1))
}
