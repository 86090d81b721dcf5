//! Talking to the master: where it is, the token, and typed requests.

use crate::cli::Global;
use crate::retry;
use cm_api::local::{runtime_dir, MasterPointer, POINTER_FILE};
use cm_api::upload::Upload;
use cm_api::{ApiError, ErrorCode};
pub use cm_client::api;
use cm_client::blocking;
use cm_client::reqwest;
use cm_client::{Endpoint, Request};
use serde::Deserialize;
use std::path::{Path, PathBuf};
use std::time::Duration;

#[derive(Debug, thiserror::Error)]
pub enum CliError {
    /// The master answered with an error document.
    #[error("{0}")]
    Api(ApiError),
    /// The master could not be reached or answered garbage.
    #[error("{0}")]
    Transport(String),
    /// No usable URL/token, or a bad config file.
    #[error("{0}")]
    Config(String),
    /// A local problem (a file, the terminal).
    #[error("{0}")]
    Local(String),
    /// An operation ran and failed.
    #[error("{0}")]
    Failed(String),
    /// A call that changes something got no answer although it may have
    /// reached the master: it may have been applied.
    #[error("{0}")]
    MaybeApplied(String),
}

impl CliError {
    /// Exit codes (docs/cli.md): 1 the master refused, 3 it could not be
    /// reached (nothing was applied), 4 configuration, 5 local, 6 an
    /// operation failed, 7 no answer to a change that may have been applied.
    pub fn exit_code(&self) -> i32 {
        match self {
            CliError::Api(_) => 1,
            CliError::Transport(_) => 3,
            CliError::Config(_) => 4,
            CliError::Local(_) => 5,
            CliError::Failed(_) => 6,
            CliError::MaybeApplied(_) => 7,
        }
    }
}

/// `~/.config/cm/config.toml`.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct ConfigFile {
    url: Option<String>,
    token: Option<String>,
    token_file: Option<PathBuf>,
}

/// cm's client of the master: the typed client (crate cm_client) with cm's
/// settings, and its errors turned into cm's exit codes.
pub struct Client {
    api: blocking::Client,
}

fn read_token_file(path: &Path) -> Result<String, CliError> {
    let s = std::fs::read_to_string(path)
        .map_err(|e| CliError::Config(format!("cannot read token file {}: {e}", path.display())))?;
    Ok(s.trim().to_string())
}

fn config_path(global: &Global) -> Option<PathBuf> {
    if let Some(p) = &global.cm_config {
        return Some(p.clone());
    }
    let base = std::env::var_os("XDG_CONFIG_HOME")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".config")))?;
    let p = base.join("cm").join("config.toml");
    p.exists().then_some(p)
}

fn load_config(path: &Path) -> Result<ConfigFile, CliError> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| CliError::Config(format!("cannot read {}: {e}", path.display())))?;
    toml::from_str(&text).map_err(|e| CliError::Config(format!("{}: {e}", path.display())))
}

fn uid() -> u32 {
    // SAFETY: getuid has no preconditions and cannot fail.
    unsafe { libc::getuid() }
}

impl Client {
    /// Flags and environment first, then the config file, then a master on
    /// this machine (its pointer file), then the default URL.
    pub fn discover(global: &Global) -> Result<Client, CliError> {
        let mut url = global.url.clone();
        let mut token = global.token.clone();
        if url.is_none() || token.is_none() {
            if let Some(path) = config_path(global) {
                let cfg = load_config(&path)?;
                url = url.or(cfg.url);
                if token.is_none() {
                    token = match (cfg.token, cfg.token_file) {
                        (Some(t), _) => Some(t),
                        (None, Some(f)) => Some(read_token_file(&f)?),
                        (None, None) => None,
                    };
                }
            }
        }
        if url.is_none() || token.is_none() {
            let pointer = runtime_dir(uid()).join(POINTER_FILE);
            if let Ok(text) = std::fs::read_to_string(&pointer) {
                let p: MasterPointer = toml::from_str(&text)
                    .map_err(|e| CliError::Config(format!("{}: {e}", pointer.display())))?;
                if url.is_none() || url.as_deref() == Some(p.url.as_str()) {
                    url = Some(p.url.clone());
                    if token.is_none() {
                        token = Some(read_token_file(&p.token_file)?);
                    }
                }
            }
        }
        let url = url.unwrap_or_else(|| format!("http://127.0.0.1:{}", cm_api::DEFAULT_PORT));
        let token = token.ok_or_else(|| {
            CliError::Config(format!(
                "no token for {url}: set CM_TOKEN, --token, or token/token_file in ~/.config/cm/config.toml"
            ))
        })?;
        let api = blocking::Client::builder(&url, &token)
            .retry_for(Duration::from_secs(global.retry_for))
            .on_retry(Box::new(|base, why, budget| {
                eprintln!(
                    "cm: the master at {base} does not answer ({why}); trying again for up to {}s",
                    budget.as_secs()
                )
            }))
            .build()?;
        Ok(Client { api })
    }

    /// One call of the API (cm_client::api): tried again with the same
    /// idempotency key while the master cannot be reached, within
    /// `--retry-for` (docs/cli.md).
    pub fn call<T>(&self, e: Endpoint<T>) -> Result<T, CliError> {
        let r = &e.request;
        // What names the check to run when the call may have been applied.
        let sent = r
            .changes()
            .then(|| (r.method.clone(), r.path.clone(), r.body.clone()));
        self.api.call(e).map_err(|err| match (err, sent) {
            (cm_client::Error::MaybeApplied { base, why }, Some((method, path, body))) => {
                let hint = retry::check_hint(&method, &path, body.as_deref());
                CliError::MaybeApplied(format!(
                    "no answer from the master at {base} ({why}); the request may have been applied; check with `{hint}`"
                ))
            }
            (err, _) => err.into(),
        })
    }

    /// A stream of server-sent events (cm_client::api::events::event_stream).
    pub fn stream(&self, r: Request) -> Result<reqwest::blocking::Response, CliError> {
        Ok(self.api.stream(r)?)
    }

    /// Raw bytes written to an upload at `offset`, streamed from `body`.
    pub fn write_upload(
        &self,
        id: uuid::Uuid,
        offset: u64,
        body: reqwest::blocking::Body,
        timeout: Duration,
    ) -> Result<Upload, CliError> {
        Ok(self.api.write_upload(id, offset, body, timeout)?)
    }
}

impl From<cm_client::Error> for CliError {
    fn from(e: cm_client::Error) -> CliError {
        use cm_client::Error as E;
        match e {
            E::Api { error, .. } => CliError::Api(error),
            E::Status { status, body } => CliError::Api(ApiError::new(
                ErrorCode::Internal,
                format!("HTTP {status}: {body}"),
            )),
            E::Local(why) => CliError::Local(why),
            e @ (E::Unreachable { .. } | E::MaybeApplied { .. } | E::Read(_) | E::Decode(_)) => {
                CliError::Transport(e.to_string())
            }
        }
    }
}
