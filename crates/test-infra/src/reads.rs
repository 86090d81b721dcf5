//! What a test reads of the cloud, as the API's types (cm-api): through `cm
//! --json` as a user would, or through the typed client ([`Cloud::api`]).

use crate::cloud::Cloud;
use crate::wait::wait_until;
use cm_api::event::Event;
use cm_api::host::Host;
use cm_api::instance::{Instance, InstanceState};
use serde::de::DeserializeOwned;
use serde_json::Value;
use std::time::Duration;

impl Cloud {
    /// `cm --json ARGS`, read as the API's type `T` (the test fails when it
    /// is not one).
    pub fn cm_as<T: DeserializeOwned>(&self, args: &[&str]) -> T {
        serde_json::from_value(self.cm_json(args)).unwrap_or_else(|e| {
            panic!(
                "cm {}: not a {} ({e})",
                args.join(" "),
                std::any::type_name::<T>()
            )
        })
    }

    /// A host's state in `cm host list --json`.
    pub fn host_state(&self, name: &str) -> Option<String> {
        self.cm_as::<Vec<Host>>(&["host", "list"])
            .into_iter()
            .find(|h| h.name == name)
            .map(|h| h.state.as_str().to_string())
    }

    pub fn wait_host_state(
        &self,
        name: &str,
        state: &str,
        timeout: Duration,
    ) -> anyhow::Result<()> {
        wait_until(&format!("host {name} to be {state}"), timeout, || {
            (self.host_state(name).as_deref() == Some(state)).then_some(())
        })
    }

    /// `cm instance show NAME --json`, read as the API's type, or None when
    /// there is no such instance.
    pub fn instance(&self, name: &str) -> Option<Instance> {
        let out = self.cm(&["--json", "instance", "show", name]);
        if out.code != 0 {
            return None;
        }
        Some(
            serde_json::from_str(&out.stdout)
                .unwrap_or_else(|e| panic!("cm instance show {name}: not an Instance ({e})")),
        )
    }

    /// The same as raw JSON (tests not yet reading the API's types).
    pub fn instance_json(&self, name: &str) -> Option<Value> {
        let out = self.cm(&["--json", "instance", "show", name]);
        if out.code != 0 {
            return None;
        }
        serde_json::from_str(&out.stdout).ok()
    }

    pub fn wait_instance_state(
        &self,
        name: &str,
        state: InstanceState,
        timeout: Duration,
    ) -> anyhow::Result<Instance> {
        wait_until(&format!("instance {name} to be {state}"), timeout, || {
            self.instance(name).filter(|i| i.state == state)
        })
    }

    /// Events of `cm event list --json` (one JSON object per line), read as
    /// the API's type.
    pub fn events(&self, kind: Option<&str>) -> Vec<Event> {
        let mut args = vec!["--json", "event", "list"];
        if let Some(k) = kind {
            args.extend(["--type", k]);
        }
        let out = self.cm(&args);
        out.stdout
            .lines()
            .map(|l| {
                serde_json::from_str(l)
                    .unwrap_or_else(|e| panic!("cm event list: not an Event ({e}): {l}"))
            })
            .collect()
    }

    /// The typed client of the master's API (crate cm_client), with the
    /// admin token: for what a test reads from the API rather than from cm.
    pub fn api(&self) -> cm_client::blocking::Client {
        cm_client::blocking::Client::new(&self.url, &self.token)
            .unwrap_or_else(|e| panic!("a client of {}: {e}", self.url))
    }
}
