//! Talking to the master: where it is, the token, and typed requests.

use crate::cli::Global;
use cm_api::local::{runtime_dir, MasterPointer, POINTER_FILE};
use cm_api::{ApiError, ErrorCode};
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
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
}

impl CliError {
    /// Exit codes: 1 the master refused, 3 it could not be reached,
    /// 4 configuration, 5 local, 6 an operation failed.
    pub fn exit_code(&self) -> i32 {
        match self {
            CliError::Api(_) => 1,
            CliError::Transport(_) => 3,
            CliError::Config(_) => 4,
            CliError::Local(_) => 5,
            CliError::Failed(_) => 6,
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

pub struct Client {
    base: String,
    token: String,
    http: reqwest::blocking::Client,
}

fn read_token_file(path: &Path) -> Result<String, CliError> {
    let s = std::fs::read_to_string(path)
        .map_err(|e| CliError::Config(format!("cannot read token file {}: {e}", path.display())))?;
    Ok(s.trim().to_string())
}

fn config_path(global: &Global) -> Option<PathBuf> {
    if let Some(p) = &global.config {
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
        let http = reqwest::blocking::Client::builder()
            .timeout(Duration::from_secs(120))
            .build()
            .map_err(|e| CliError::Local(format!("http client: {e}")))?;
        Ok(Client {
            base: url.trim_end_matches('/').to_string(),
            token,
            http,
        })
    }

    fn send<T: DeserializeOwned>(
        &self,
        req: reqwest::blocking::RequestBuilder,
    ) -> Result<T, CliError> {
        self.send_with(req, true)
    }

    fn send_with<T: DeserializeOwned>(
        &self,
        req: reqwest::blocking::RequestBuilder,
        bearer: bool,
    ) -> Result<T, CliError> {
        let req = if bearer {
            req.bearer_auth(&self.token)
        } else {
            req
        };
        let resp = req.send().map_err(|e| {
            CliError::Transport(format!("cannot reach the master at {}: {e}", self.base))
        })?;
        let status = resp.status();
        let bytes = resp
            .bytes()
            .map_err(|e| CliError::Transport(format!("reading the answer: {e}")))?;
        if !status.is_success() {
            return Err(match serde_json::from_slice::<ApiError>(&bytes) {
                Ok(e) => CliError::Api(e),
                Err(_) => CliError::Api(ApiError::new(
                    ErrorCode::Internal,
                    format!("HTTP {status}: {}", String::from_utf8_lossy(&bytes)),
                )),
            });
        }
        let body: &[u8] = if bytes.is_empty() { b"null" } else { &bytes };
        serde_json::from_slice(body)
            .map_err(|e| CliError::Transport(format!("unexpected answer from the master: {e}")))
    }

    fn url(&self, path: &str) -> String {
        format!("{}{}", self.base, path)
    }

    pub fn get<T: DeserializeOwned>(&self, path: &str) -> Result<T, CliError> {
        self.send(self.http.get(self.url(path)))
    }

    /// A GET that may legitimately take long (a server-side wait).
    pub fn get_slow<T: DeserializeOwned>(&self, path: &str, secs: u64) -> Result<T, CliError> {
        self.send(
            self.http
                .get(self.url(path))
                .timeout(Duration::from_secs(secs + 30)),
        )
    }

    pub fn post<B: Serialize, T: DeserializeOwned>(
        &self,
        path: &str,
        body: &B,
    ) -> Result<T, CliError> {
        self.send(self.http.post(self.url(path)).json(body))
    }

    pub fn patch<B: Serialize, T: DeserializeOwned>(
        &self,
        path: &str,
        body: &B,
    ) -> Result<T, CliError> {
        self.send(self.http.patch(self.url(path)).json(body))
    }

    pub fn put<B: Serialize, T: DeserializeOwned>(
        &self,
        path: &str,
        body: &B,
    ) -> Result<T, CliError> {
        self.send(self.http.put(self.url(path)).json(body))
    }

    /// A guest-side call (`/boot/v1`), with HTTP Basic credentials instead of the token.
    pub fn as_guest<B: Serialize, T: DeserializeOwned>(
        &self,
        method: reqwest::Method,
        path: &str,
        user: &str,
        secret: &str,
        body: &B,
    ) -> Result<T, CliError> {
        let req = self
            .http
            .request(method, self.url(path))
            .basic_auth(user, Some(secret))
            .json(body);
        self.send_with(req, false)
    }

    pub fn delete<T: DeserializeOwned>(&self, path: &str) -> Result<T, CliError> {
        self.send(self.http.delete(self.url(path)))
    }

    /// `PATCH` raw bytes to an upload at `offset` (`/v1/uploads/{id}`),
    /// streamed from `body`, with a timeout of its own.
    pub fn patch_upload<T: DeserializeOwned>(
        &self,
        path: &str,
        offset: u64,
        body: reqwest::blocking::Body,
        timeout: Duration,
    ) -> Result<T, CliError> {
        self.send(
            self.http
                .patch(self.url(path))
                .header(reqwest::header::CONTENT_TYPE, cm_api::upload::CONTENT_TYPE)
                .header(cm_api::upload::OFFSET_HEADER, offset)
                .body(body)
                .timeout(timeout),
        )
    }
}

/// Percent-encode one path segment (names are validated, but a user may type
/// anything and must get the server's error, not a wrong URL).
pub fn seg(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~') {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn segments_are_escaped() {
        assert_eq!(seg("web-1"), "web-1");
        assert_eq!(seg("a/b c"), "a%2Fb%20c");
    }
}
