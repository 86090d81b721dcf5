//! The agent's life: find the boot string, get a record (assign_dynamic
//! for a dynamic guest), then fetch → apply → update_cache, and wait for the
//! next version; heartbeats beside it all.

use crate::client::{Backoff, Client, ClientError, Fetched};
use crate::filesync::Syncer;
use crate::format::{detect, Kind};
use crate::heartbeat::{beat, wait_next, Interval, Sink};
use crate::services::Supervisor;
use crate::settings::Settings;
use crate::{apply, bootstring, handler, trust};
use cm_api::boot::{BootWho, UpdateCache};
use cm_api::words::{ConfigStatus, KnownConfigStatus};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use uuid::Uuid;

/// What the heartbeats say about the config.
#[derive(Debug, Clone, Default)]
struct ConfigState {
    status: Option<ConfigStatus>,
    version: u64,
}

pub struct Agent {
    root: PathBuf,
    settings: Settings,
    services: Arc<Supervisor>,
    /// `[[sync]]`s, reported beside the services.
    syncs: Arc<Syncer>,
    state: Arc<Mutex<ConfigState>>,
    /// The heartbeats' interval, which an applied config may change.
    heartbeat: Arc<Interval>,
}

/// The outcome of applying one version.
struct Outcome {
    status: KnownConfigStatus,
    reason: Option<String>,
    params: BTreeMap<String, String>,
}

fn say(line: &str) {
    println!("cm-guest: {line}");
}

impl Agent {
    pub fn new(root: PathBuf, settings: Settings) -> Agent {
        let every = Duration::from_secs(settings.heartbeat_secs.max(1));
        Agent {
            services: Arc::new(Supervisor::new(root.join("etc/init.d"))),
            syncs: Arc::new(Syncer::new(&root, Path::new("rsync"))),
            root,
            settings,
            state: Arc::new(Mutex::new(ConfigState::default())),
            heartbeat: Arc::new(Interval::new(every)),
        }
    }

    /// Heartbeats until the process ends.
    fn start_heartbeats(&self, http: Option<(Client, Uuid, String)>) {
        let mut sink = Sink::choose(&self.root, http);
        say(&format!(
            "heartbeats every {}s to {}",
            self.settings.heartbeat_secs,
            sink.describe()
        ));
        let (services, state) = (self.services.clone(), self.state.clone());
        let syncs = self.syncs.clone();
        let every = self.heartbeat.clone();
        std::thread::spawn(move || {
            let mut seq = 0u64;
            let mut failing = false;
            loop {
                let sent_at = std::time::Instant::now();
                seq += 1;
                let cs = state.lock().map(|s| s.clone()).unwrap_or_default();
                let mut all = services.states();
                all.extend(syncs.states());
                match sink.send(&beat(seq, all, cs.status, cs.version)) {
                    Ok(()) if failing => {
                        say("heartbeats get through again");
                        failing = false;
                    }
                    Ok(()) => {}
                    Err(e) if !failing => {
                        say(&format!("heartbeat not sent ({e}); still trying"));
                        failing = true;
                    }
                    Err(_) => {}
                }
                wait_next(sent_at, &every);
            }
        });
    }

    pub fn run(self) -> ! {
        let (boot, source, rekey) = match bootstring::find(&self.root) {
            Ok(f) => (f.boot, f.source, f.rekey),
            Err(e) => {
                say(&format!("{e}; nothing to configure"));
                self.start_heartbeats(None);
                loop {
                    std::thread::park();
                }
            }
        };
        say(&format!("boot string from the {}", source.describe()));
        let client = Client::new(&boot.host, boot.port);
        let (uuid, secret) = match &boot.who {
            BootWho::Record(u) => (*u, boot.secret.clone()),
            BootWho::Domain(d) => assign(&client, d, None, &boot.secret),
            BootWho::Instance { domain, instance } => {
                assign(&client, domain, Some(*instance), &boot.secret)
            }
        };
        self.start_heartbeats(Some((
            Client::new(&boot.host, boot.port),
            uuid,
            secret.clone(),
        )));
        let trust_key = match trust::key(&self.settings.state_dir) {
            Ok(k) => {
                if let Some(why) = &k.unkept {
                    say(&format!(
                        "trust key not kept ({why}); the next boot makes another"
                    ));
                }
                k.key
            }
            Err(e) => {
                // Without a key nothing can be reported: say so and wait.
                say(&format!("{e}; cannot report to the master"));
                loop {
                    std::thread::park();
                }
            }
        };
        let creds = Creds {
            secret,
            trust_key,
            rekey,
        };
        let mut version: Option<u64> = None;
        let mut backoff = Backoff::new(Duration::from_secs(5));
        loop {
            match client.fetch(uuid, &creds.secret, version, 25) {
                Ok(Fetched::NotModified) => backoff.reset(),
                Ok(Fetched::Config { version: v, body }) => {
                    backoff.reset();
                    say(&format!(
                        "fetched config version {v} ({} bytes)",
                        body.len()
                    ));
                    let out = self.apply(&body, v);
                    match &out.reason {
                        None => say(&format!("configured (version {v})")),
                        Some(r) => say(&format!("failed (version {v}): {r}")),
                    }
                    if let Ok(mut s) = self.state.lock() {
                        *s = ConfigState {
                            status: Some(out.status.into()),
                            version: v,
                        };
                    }
                    self.report(&client, uuid, &creds, v, out);
                    version = Some(v);
                }
                Err(e @ ClientError::Refused(_)) => {
                    say(&format!(
                        "the master refused the record's secret ({e}); trying again in 10s"
                    ));
                    std::thread::sleep(Duration::from_secs(10));
                }
                Err(e) => {
                    let wait = backoff.step();
                    say(&format!(
                        "fetch: {e}; retrying in {:.1}s",
                        wait.as_secs_f64()
                    ));
                    std::thread::sleep(wait);
                }
            }
        }
    }

    fn apply(&self, body: &[u8], version: u64) -> Outcome {
        let failed = |reason: String| Outcome {
            status: KnownConfigStatus::Failed,
            reason: Some(reason),
            params: BTreeMap::new(),
        };
        let ok = |params| Outcome {
            status: KnownConfigStatus::Configured,
            reason: None,
            params,
        };
        let via_handler = |what: &str| match &self.settings.handler {
            Some(h) => match handler::run(
                h,
                body,
                version,
                Duration::from_secs(self.settings.handler_timeout_secs.max(1)),
            ) {
                Ok(p) => ok(p),
                Err(e) => failed(e),
            },
            None => failed(format!(
                "{what}: no handler program is set in /etc/cm-guest.toml"
            )),
        };
        let mut out = match detect(body) {
            Err(e) => failed(e.to_string()),
            Ok(Kind::Empty) => {
                self.set_heartbeat(None);
                self.services.reconcile(&[]);
                self.syncs.reconcile(&[]);
                ok(BTreeMap::new())
            }
            Ok(Kind::Own(cfg)) => match apply::apply(&self.root, &cfg) {
                Ok(()) => {
                    self.set_heartbeat(cfg.agent.heartbeat_ms);
                    self.services.reconcile(&cfg.services);
                    self.syncs.reconcile(&cfg.syncs);
                    ok(cfg.parameters.clone())
                }
                Err(e) => failed(e),
            },
            Ok(Kind::CloudConfig) => {
                self.set_heartbeat(None);
                via_handler("#cloud-config is cloud-init's format (boot a cloud-init image)")
            }
            Ok(Kind::Other) => {
                self.set_heartbeat(None);
                via_handler("this config is not in cm-guest's format")
            }
        };
        out.params.extend(builtins(&self.root, version));
        out
    }

    /// Beat every `ms` from now on (`None`: the setting file's interval).
    fn set_heartbeat(&self, ms: Option<u64>) {
        let before = self.heartbeat.get();
        self.heartbeat.set(ms);
        let now = self.heartbeat.get();
        if now != before {
            say(&format!("heartbeats every {}ms now", now.as_millis()));
        }
    }

    /// update_cache, retried until the master takes it.
    fn report(&self, client: &Client, uuid: Uuid, creds: &Creds, version: u64, out: Outcome) {
        let upd = UpdateCache {
            my_conf_addr: client.my_address(),
            parameter_map: out.params,
            status: out.status.into(),
            reason: out.reason,
            config_version: version,
            trust_key: creds.trust_key.clone(),
            // Only a record of an instance needs it (to take this guest's
            // key); a record elsewhere ignores it.
            rekey: creds.rekey.clone(),
        };
        let mut backoff = Backoff::new(Duration::from_secs(5));
        for _ in 0..1000 {
            match client.update_cache(uuid, &creds.secret, &upd) {
                Ok(()) => return,
                Err(e) if e.retryable() => {
                    let wait = backoff.step();
                    say(&format!(
                        "update_cache: {e}; retrying in {:.1}s",
                        wait.as_secs_f64()
                    ));
                    std::thread::sleep(wait);
                }
                Err(e) => {
                    say(&format!("update_cache refused: {e}"));
                    return;
                }
            }
        }
    }
}

/// What the agent proves itself with.
struct Creds {
    /// The record's secret.
    secret: String,
    trust_key: String,
    /// The boot's re-key credential (fw_cfg), if it has one.
    rekey: Option<String>,
}

/// `assign_dynamic` until a record is handed out.
fn assign(client: &Client, domain: &str, instance: Option<Uuid>, secret: &str) -> (Uuid, String) {
    let mut backoff = Backoff::new(Duration::from_secs(10));
    loop {
        match client.assign(domain, instance, secret) {
            Ok(a) => {
                say(&format!(
                    "assign_dynamic: got {} from domain {domain}",
                    a.uuid
                ));
                return (a.uuid, a.secret);
            }
            Err(ClientError::NoneLeft(_)) => {
                let wait = backoff.step();
                say(&format!(
                    "assign_dynamic: none left in domain {domain}; retrying in {:.1}s",
                    wait.as_secs_f64()
                ));
                std::thread::sleep(wait);
            }
            Err(e) => {
                let wait = backoff.step();
                say(&format!(
                    "assign_dynamic: {e}; retrying in {:.1}s",
                    wait.as_secs_f64()
                ));
                std::thread::sleep(wait);
            }
        }
    }
}

fn builtins(root: &Path, version: u64) -> BTreeMap<String, String> {
    let read = |p: &str| {
        std::fs::read_to_string(root.join(p))
            .map(|s| s.trim().to_string())
            .unwrap_or_default()
    };
    let mut m = BTreeMap::new();
    m.insert("hostname".into(), read("proc/sys/kernel/hostname"));
    m.insert("kernel".into(), read("proc/sys/kernel/osrelease"));
    m.insert("config_version".into(), version.to_string());
    m
}
