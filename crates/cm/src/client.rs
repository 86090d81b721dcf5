//! Talking to the master: where it is, the token, and typed requests.

use crate::cli::Global;
use crate::retry;
use cm_api::local::{runtime_dir, MasterPointer, POINTER_FILE};
use cm_api::{ApiError, ErrorCode};
use reqwest::Method;
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

pub struct Client {
    base: String,
    token: String,
    http: reqwest::blocking::Client,
    /// How long a call the master does not answer is tried again.
    retry_for: Duration,
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
        let http = reqwest::blocking::Client::builder()
            .timeout(Duration::from_secs(120))
            // Below the master's idle close (its header-read timeout).
            .pool_idle_timeout(Duration::from_secs(5))
            .build()
            .map_err(|e| CliError::Local(format!("http client: {e}")))?;
        Ok(Client {
            base: url.trim_end_matches('/').to_string(),
            token,
            http,
            retry_for: Duration::from_secs(global.retry_for),
        })
    }

    /// One logical call: tried again (with the same idempotency key) while
    /// the master cannot be reached, within `--retry-for` (crate::retry).
    fn call<T: DeserializeOwned>(&self, c: Call<'_>) -> Result<T, CliError> {
        let changes = c.method != Method::GET && c.method != Method::HEAD;
        // A random key per logical request, the same on every attempt.
        let key = changes.then(|| uuid::Uuid::new_v4().to_string());
        // Guest calls reach routes that do not honour keys (docs/api.md):
        // those are tried again only when they certainly did not arrive.
        let keyed = matches!(c.auth, Auth::Bearer);
        let mut backoff = retry::Backoff::new(self.retry_for);
        let mut maybe_applied = false;
        let mut told = false;
        loop {
            let why = match retry::attempt(self.request(&c, key.as_deref()).send()) {
                retry::Attempt::Answer { status, body } => return decode(status, &body),
                retry::Attempt::Fatal(why) => {
                    return Err(CliError::Transport(format!(
                        "cannot reach the master at {}: {why}",
                        self.base
                    )))
                }
                retry::Attempt::Again {
                    why,
                    maybe_applied: maybe,
                    after,
                } => {
                    maybe_applied |= changes && maybe;
                    let delay = if maybe && changes && !keyed {
                        None
                    } else {
                        backoff.delay(after)
                    };
                    match delay {
                        Some(d) => {
                            if !told && backoff.elapsed() + d > NOTICE_AFTER {
                                eprintln!(
                                    "cm: the master at {} does not answer ({why}); trying again for up to {}s",
                                    self.base,
                                    self.retry_for.as_secs()
                                );
                                told = true;
                            }
                            std::thread::sleep(d);
                            continue;
                        }
                        None => why,
                    }
                }
            };
            if maybe_applied {
                let hint = retry::check_hint(&c.method, c.path, c.body.as_deref());
                return Err(CliError::MaybeApplied(format!(
                    "no answer from the master at {} ({why}); the request may have been applied; check with `{hint}`",
                    self.base
                )));
            }
            return Err(CliError::Transport(format!(
                "cannot reach the master at {}: {why}",
                self.base
            )));
        }
    }

    /// One attempt's request.
    fn request(&self, c: &Call<'_>, key: Option<&str>) -> reqwest::blocking::RequestBuilder {
        let mut req = self.http.request(c.method.clone(), self.url(c.path));
        req = match c.auth {
            Auth::Bearer => req.bearer_auth(&self.token),
            Auth::Basic { user, secret } => req.basic_auth(user, Some(secret)),
        };
        if let Some(k) = key {
            req = req.header(IDEMPOTENCY_KEY, k);
        }
        if let Some(b) = &c.body {
            req = req
                .header(reqwest::header::CONTENT_TYPE, "application/json")
                .body(b.clone());
        }
        if let Some(t) = c.timeout {
            req = req.timeout(t);
        }
        req
    }

    fn url(&self, path: &str) -> String {
        format!("{}{}", self.base, path)
    }

    fn bearer<'a>(method: Method, path: &'a str, body: Option<Vec<u8>>) -> Call<'a> {
        Call {
            method,
            path,
            body,
            auth: Auth::Bearer,
            timeout: None,
        }
    }

    pub fn get<T: DeserializeOwned>(&self, path: &str) -> Result<T, CliError> {
        self.call(Self::bearer(Method::GET, path, None))
    }

    /// A GET that may legitimately take long (a server-side wait).
    pub fn get_slow<T: DeserializeOwned>(&self, path: &str, secs: u64) -> Result<T, CliError> {
        let mut c = Self::bearer(Method::GET, path, None);
        c.timeout = Some(Duration::from_secs(secs + 30));
        self.call(c)
    }

    /// A GET whose answer is a stream (server-sent events): no overall
    /// timeout (the master sends a keep-alive comment every 15 s); an error
    /// answer is the error document as for any other call.
    pub fn get_stream(&self, path: &str) -> Result<reqwest::blocking::Response, CliError> {
        let http = reqwest::blocking::Client::builder()
            .timeout(None)
            .connect_timeout(Duration::from_secs(10))
            .tcp_keepalive(Duration::from_secs(30))
            .build()
            .map_err(|e| CliError::Local(format!("http client: {e}")))?;
        let resp = http
            .get(self.url(path))
            .bearer_auth(&self.token)
            .header(reqwest::header::ACCEPT, "text/event-stream")
            .send()
            .map_err(|e| {
                CliError::Transport(format!("cannot reach the master at {}: {e}", self.base))
            })?;
        if resp.status().is_success() {
            return Ok(resp);
        }
        let status = resp.status();
        let bytes = resp.bytes().unwrap_or_default();
        Err(match serde_json::from_slice::<ApiError>(&bytes) {
            Ok(e) => CliError::Api(e),
            Err(_) => CliError::Api(ApiError::new(
                ErrorCode::Internal,
                format!("HTTP {status}: {}", String::from_utf8_lossy(&bytes)),
            )),
        })
    }

    pub fn post<B: Serialize, T: DeserializeOwned>(
        &self,
        path: &str,
        body: &B,
    ) -> Result<T, CliError> {
        self.call(Self::bearer(Method::POST, path, Some(to_json(body)?)))
    }

    pub fn patch<B: Serialize, T: DeserializeOwned>(
        &self,
        path: &str,
        body: &B,
    ) -> Result<T, CliError> {
        self.call(Self::bearer(Method::PATCH, path, Some(to_json(body)?)))
    }

    pub fn put<B: Serialize, T: DeserializeOwned>(
        &self,
        path: &str,
        body: &B,
    ) -> Result<T, CliError> {
        self.call(Self::bearer(Method::PUT, path, Some(to_json(body)?)))
    }

    /// A guest-side call (`/boot/v1`), with HTTP Basic credentials instead of the token.
    pub fn as_guest<B: Serialize, T: DeserializeOwned>(
        &self,
        method: Method,
        path: &str,
        user: &str,
        secret: &str,
        body: &B,
    ) -> Result<T, CliError> {
        self.call(Call {
            method,
            path,
            body: Some(to_json(body)?),
            auth: Auth::Basic { user, secret },
            timeout: None,
        })
    }

    pub fn delete<T: DeserializeOwned>(&self, path: &str) -> Result<T, CliError> {
        self.call(Self::bearer(Method::DELETE, path, None))
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
        // One attempt: the upload itself resumes from the master's offset
        // (commands/image), which makes a retry safe without a key.
        let resp = self
            .http
            .patch(self.url(path))
            .bearer_auth(&self.token)
            .header(reqwest::header::CONTENT_TYPE, cm_api::upload::CONTENT_TYPE)
            .header(cm_api::upload::OFFSET_HEADER, offset)
            .body(body)
            .timeout(timeout)
            .send()
            .map_err(|e| {
                CliError::Transport(format!("cannot reach the master at {}: {e}", self.base))
            })?;
        let status = resp.status();
        let bytes = resp
            .bytes()
            .map_err(|e| CliError::Transport(format!("reading the answer: {e}")))?;
        decode(status, &bytes)
    }
}

/// The header every call that changes something carries (docs/api.md).
pub const IDEMPOTENCY_KEY: &str = "Idempotency-Key";

/// A retry note is printed once retrying has taken this long.
const NOTICE_AFTER: Duration = Duration::from_secs(5);

enum Auth<'a> {
    Bearer,
    Basic { user: &'a str, secret: &'a str },
}

/// One logical call, as every attempt sends it.
struct Call<'a> {
    method: Method,
    path: &'a str,
    body: Option<Vec<u8>>,
    auth: Auth<'a>,
    timeout: Option<Duration>,
}

fn to_json<B: Serialize>(body: &B) -> Result<Vec<u8>, CliError> {
    serde_json::to_vec(body).map_err(|e| CliError::Local(format!("encoding the request: {e}")))
}

/// The master's answer: the value, or its error document.
fn decode<T: DeserializeOwned>(status: reqwest::StatusCode, bytes: &[u8]) -> Result<T, CliError> {
    if !status.is_success() {
        return Err(match serde_json::from_slice::<ApiError>(bytes) {
            Ok(e) => CliError::Api(e),
            Err(_) => CliError::Api(ApiError::new(
                ErrorCode::Internal,
                format!("HTTP {status}: {}", String::from_utf8_lossy(bytes)),
            )),
        });
    }
    let body: &[u8] = if bytes.is_empty() { b"null" } else { bytes };
    serde_json::from_slice(body)
        .map_err(|e| CliError::Transport(format!("unexpected answer from the master: {e}")))
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
