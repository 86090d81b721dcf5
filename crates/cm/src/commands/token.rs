//! `cm token rotate`: a new admin token; the old one stops working at once.

use crate::cli::TokenCmd;
use crate::client::{api, CliError, Client};
use crate::output::json as print_json;

pub fn run(client: &Client, cmd: TokenCmd, json: bool) -> Result<(), CliError> {
    match cmd {
        TokenCmd::Rotate => {
            let v = client.call(api::hosts::rotate_admin_token())?;
            if json {
                return print_json(&v);
            }
            println!("{}", v.token);
            eprintln!(
                "the old admin token no longer works; the new one is also in {} on the master",
                v.file
            );
            Ok(())
        }
    }
}
