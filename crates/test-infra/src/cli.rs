//! `cm` as the API tests drive it: a user with the master's pointer file
//! and their own HOME (`deploy::DeployUser`), answers read as JSON values.

use crate::cloud::CmOut;
use crate::deploy::DeployUser;
use crate::Cloud;
use serde_json::Value;
use std::time::Duration;

/// `cm ARGS` as a user of `cloud`, failing the test when it fails.
pub fn ok(cloud: &Cloud, args: &[&str]) -> String {
    DeployUser::new(cloud, "").ok(args)
}

/// `cm --json ARGS`, as a JSON value.
pub fn json(cloud: &Cloud, args: &[&str]) -> Value {
    DeployUser::new(cloud, "").json(args)
}

/// A refusal: `cm` exits non-zero and says `words`.
pub fn refused(cloud: &Cloud, args: &[&str], words: &str) -> CmOut {
    let out = DeployUser::new(cloud, "").cm(args);
    assert_ne!(out.code, 0, "cm {args:?} should fail: {}", out.stdout);
    assert!(
        out.stderr.contains(words),
        "cm {args:?}: {words:?} not in {}",
        out.stderr
    );
    eprintln!("refused as it should be: {}", out.stderr.trim());
    out
}

/// `cm volume show NAME`.
pub fn volume(cloud: &Cloud, name: &str) -> Value {
    json(cloud, &["volume", "show", name])
}

/// Volume `name` once its state is `state` (within `limit`).
pub fn wait_volume(cloud: &Cloud, name: &str, state: &str, limit: Duration) -> Value {
    crate::wait_until(&format!("volume {name} to be {state}"), limit, || {
        let v = volume(cloud, name);
        (v["state"] == state).then_some(v)
    })
    .unwrap()
}
