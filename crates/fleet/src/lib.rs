//! Fleet operations over OpenSSH and balancer membership (seed 004).
//!
//! `cm` flattens [`FleetCommand`] into its own subcommands and calls [`run`];
//! the old names (`cmscp`, `cmdo`, ...) come in through [`legacy_main`].
//! Placeholder: issue 4 fills this in.

use clap::Subcommand;

#[derive(Debug, Subcommand)]
pub enum FleetCommand {
    /// Print the nodes a target expression selects.
    Nodes {
        /// Target expression.
        targets: String,
    },
}

/// Run one fleet command; returns the process exit code.
pub fn run(cmd: FleetCommand) -> i32 {
    match cmd {
        FleetCommand::Nodes { targets } => {
            eprintln!("cm nodes {targets}: fleet operations are not built yet");
            2
        }
    }
}

/// When `cm` is invoked as `cmscp`, `cmrsync`, `cmdo`, `cmstatus`, `cmstop` or
/// `cmplay`, run that command with its old argument order and return the exit
/// code; `None` for any other program name.
pub fn legacy_main(_program: &str, _args: Vec<std::ffi::OsString>) -> Option<i32> {
    None
}
