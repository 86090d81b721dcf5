//! Helpers shared by every end-to-end test and benchmark: where the built
//! binaries and the test image are, free ports, `wait_until`, and starters
//! for the real daemons (the master, hosts, sshd, HAProxy) that clean up
//! after themselves.

// Test code (the e2e tests and cmbench's harness): a panic here is the
// failure report, so unwrap and expect stay allowed (docs/architecture.md).
#![allow(clippy::unwrap_used, clippy::expect_used)]

use cm_client::reqwest;

pub mod balancer;
pub mod cli;
pub mod cloud;
pub mod console;
pub mod deploy;
pub mod guest_disks;
pub mod haproxy;
pub mod https;
pub mod paths;
pub mod procs;
pub mod proxy;
pub mod qcow2;
pub mod qmp;
pub mod reads;
pub mod rest;
pub mod run;
pub mod sim;
pub mod sshd;
pub mod wait;

pub use cloud::{Cloud, HostOpts, MasterOpts};
pub use paths::{bin, image_dir, workspace_root};
pub use wait::{free_port, wait_until};

/// An HTTP request straight at the master (for what `cm` never sends).
/// An HTTP client for requests the typed client never sends (bad input),
/// built where every client of the master is (cm_client::build).
pub fn raw_client() -> reqwest::blocking::Client {
    cm_client::build::blocking_http(cm_client::build::Timeouts::call(
        std::time::Duration::from_secs(30),
    ))
    .expect("http client")
}

pub fn http(
    method: &str,
    url: &str,
    token: Option<&str>,
    body: Option<(&str, Vec<u8>)>,
) -> (u16, serde_json::Value) {
    let client = raw_client();
    let m = reqwest::Method::from_bytes(method.as_bytes()).expect("method");
    let mut req = client.request(m, url);
    if let Some(t) = token {
        req = req.bearer_auth(t);
    }
    if let Some((ctype, bytes)) = body {
        req = req.header("content-type", ctype).body(bytes);
    }
    match req.send() {
        Ok(resp) => {
            let status = resp.status().as_u16();
            let bytes = resp.bytes().unwrap_or_default();
            let v = serde_json::from_slice(&bytes).unwrap_or_else(|_| {
                serde_json::Value::String(String::from_utf8_lossy(&bytes).into_owned())
            });
            (status, v)
        }
        Err(e) => (0, serde_json::Value::String(e.to_string())),
    }
}
