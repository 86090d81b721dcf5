//! `cm token rotate`: a new admin token; the old one stops working at once.

use crate::cli::TokenCmd;
use crate::client::{CliError, Client};
use crate::output::json as print_json;

pub fn run(client: &Client, cmd: TokenCmd, json: bool) -> Result<(), CliError> {
    match cmd {
        TokenCmd::Rotate => {
            let v: serde_json::Value =
                client.post("/v1/tokens/admin/rotate", &serde_json::json!({}))?;
            if json {
                return print_json(&v);
            }
            println!("{}", v["token"].as_str().unwrap_or_default());
            eprintln!(
                "the old admin token no longer works; the new one is also in {} on the master",
                v["file"].as_str().unwrap_or("admin.token")
            );
            Ok(())
        }
    }
}
