//! Waiting on an operation, with a spinner on a terminal.

use crate::client::{api, CliError, Client};
use cm_api::operation::{Operation, OperationStatus};
use indicatif::{ProgressBar, ProgressStyle};
use std::time::{Duration, Instant};

/// Poll `GET /v1/operations/{id}?wait=N` until the operation is done or
/// `timeout` passes. The spinner draws only on a terminal.
pub fn wait(client: &Client, op: Operation, timeout: Duration) -> Result<Operation, CliError> {
    if op.status.is_done() {
        return Ok(op);
    }
    let bar = ProgressBar::new_spinner();
    bar.set_style(
        ProgressStyle::with_template("{spinner} {msg} [{elapsed}]")
            .unwrap_or_else(|_| ProgressStyle::default_spinner()),
    );
    bar.enable_steady_tick(Duration::from_millis(120));
    let start = Instant::now();
    let mut current = op;
    loop {
        bar.set_message(format!(
            "{} {}: {}",
            current.kind, current.target, current.progress
        ));
        if current.status.is_done() {
            break;
        }
        let left = timeout.saturating_sub(start.elapsed());
        if left.is_zero() {
            bar.finish_and_clear();
            return Err(CliError::Local(format!(
                "gave up waiting after {}s; the operation goes on: cm operation wait {}",
                timeout.as_secs(),
                current.id
            )));
        }
        let secs = left.as_secs().clamp(1, 10);
        current = client.call(api::events::wait_operation(&current.id.to_string(), secs))?;
    }
    bar.finish_and_clear();
    Ok(current)
}

/// Exit code 6 for a failed operation, with its error.
pub fn check(op: &Operation) -> Result<(), CliError> {
    match op.status {
        OperationStatus::Failed => {
            let msg = op
                .error
                .as_ref()
                .map(|e| e.message.clone())
                .unwrap_or_else(|| "failed".into());
            Err(CliError::Failed(format!(
                "{} {} failed: {msg}",
                op.kind, op.target
            )))
        }
        _ => Ok(()),
    }
}
