//! One module per resource; each turns a parsed command into requests and
//! prints the answer as a table or JSON.

pub(crate) mod backup;
mod backup_text;
mod config;
mod deploy;
mod evacuate;
mod events;
mod flavor;
mod host;
mod image;
mod instance;
mod orphans;
pub(crate) mod snapshot;
mod token;
pub(crate) mod volume;

use crate::cli::{Cli, Command};
use crate::client::{CliError, Client};

/// Run a parsed command line; returns the exit code.
pub fn run(cli: Cli) -> i32 {
    if let Command::Fleet(cmd) = cli.command {
        return cm_fleet::run(cmd, cli.global.json);
    }
    let result = Client::discover(&cli.global).and_then(|client| {
        let json = cli.global.json;
        match cli.command {
            Command::Host(c) => host::run(&client, c, json),
            Command::Image(c) => image::run(&client, c, json),
            Command::Flavor(c) => flavor::run(&client, c, json),
            Command::Instance(c) => instance::run(&client, c, json),
            Command::Volume(c) => volume::run(&client, c, json),
            Command::Snapshot(c) => snapshot::run(&client, c, json),
            Command::Backup(c) => backup::run(&client, c, json),
            Command::Operation(c) => events::run_operation(&client, c, json),
            Command::Event(c) => events::run_event(&client, c, json),
            Command::Config(c) => config::run(&client, c, json),
            Command::Deploy(c) => deploy::run(&client, c, json),
            Command::Token(c) => token::run(&client, c, json),
            Command::Fleet(_) => Ok(()),
        }
    });
    match result {
        Ok(()) => 0,
        Err(e) => {
            eprintln!("cm: {e}");
            e.exit_code()
        }
    }
}

/// Print a `{"name": ..., "deleted": true}`-style answer (`--json`) or `message`.
pub(crate) fn done<T: serde::Serialize>(
    json: bool,
    value: &T,
    message: &str,
) -> Result<(), CliError> {
    if json {
        crate::output::json(value)
    } else {
        println!("{message}");
        Ok(())
    }
}
