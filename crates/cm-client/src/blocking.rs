//! The blocking transport (cm, the tests, cmbench): a call that changes
//! something carries an `Idempotency-Key`, the same on every attempt, and is
//! tried again while the master cannot be reached, within a time budget
//! (`cm --retry-for`; crate::retry). When the budget is spent, a call that
//! may have reached the master says so ([`Error::MaybeApplied`]).

use crate::request::{error_of, Auth, Endpoint, Request};
use crate::retry::{self, Attempt, Backoff, MAX_ANSWER};
use crate::{build, Error, IDEMPOTENCY_KEY};
use build::Timeouts;
use cm_api::upload::Upload;
use reqwest::blocking::{Body, RequestBuilder, Response};
use std::io::Read;
use std::time::Duration;
use uuid::Uuid;

/// A retry note is given once retrying has taken this long.
const NOTICE_AFTER: Duration = Duration::from_secs(5);
/// How long a call may take unless its route says otherwise.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(120);

/// Told once when a call has been tried again for a while: the master's URL,
/// why the last attempt failed, and the whole budget.
pub type Notice = Box<dyn Fn(&str, &str, Duration) + Send + Sync>;

pub struct Client {
    base: String,
    token: String,
    http: reqwest::blocking::Client,
    retry_for: Duration,
    notice: Option<Notice>,
}

/// The token is never printed.
impl std::fmt::Debug for Client {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Client")
            .field("base", &self.base)
            .field("token", &"<redacted>")
            .finish_non_exhaustive()
    }
}

/// How a [`Client`] is made.
pub struct Builder {
    base: String,
    token: String,
    timeout: Duration,
    retry_for: Duration,
    notice: Option<Notice>,
}

/// The token is never printed.
impl std::fmt::Debug for Builder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Builder")
            .field("base", &self.base)
            .field("token", &"<redacted>")
            .finish_non_exhaustive()
    }
}

impl Builder {
    /// The longest one attempt may take ([`DEFAULT_TIMEOUT`]).
    pub fn timeout(mut self, t: Duration) -> Builder {
        self.timeout = t;
        self
    }

    /// How long a call the master does not answer is tried again (none by default).
    pub fn retry_for(mut self, d: Duration) -> Builder {
        self.retry_for = d;
        self
    }

    pub fn on_retry(mut self, notice: Notice) -> Builder {
        self.notice = Some(notice);
        self
    }

    pub fn build(self) -> Result<Client, Error> {
        Ok(Client {
            base: self.base.trim_end_matches('/').to_string(),
            token: self.token,
            http: build::blocking_http(Timeouts::call(self.timeout))?,
            retry_for: self.retry_for,
            notice: self.notice,
        })
    }
}

impl Client {
    pub fn builder(base: &str, token: &str) -> Builder {
        Builder {
            base: base.to_string(),
            token: token.to_string(),
            timeout: DEFAULT_TIMEOUT,
            retry_for: Duration::ZERO,
            notice: None,
        }
    }

    /// A client that makes one attempt per call.
    pub fn new(base: &str, token: &str) -> Result<Client, Error> {
        Client::builder(base, token).build()
    }

    pub fn base(&self) -> &str {
        &self.base
    }

    /// One logical call: tried again (with the same idempotency key) while
    /// the master cannot be reached, within the retry budget.
    pub fn call<T>(&self, e: Endpoint<T>) -> Result<T, Error> {
        let c = &e.request;
        c.check()?;
        let changes = c.changes();
        // A random key per logical request, the same on every attempt.
        let key = changes.then(|| Uuid::new_v4().to_string());
        // Guest calls reach routes that do not honour keys (docs/api.md):
        // those are tried again only when they certainly did not arrive.
        let keyed = matches!(c.auth, Auth::Bearer);
        let mut backoff = Backoff::new(self.retry_for);
        let mut maybe_applied = false;
        let mut told = false;
        loop {
            let why = match self.attempt(c, key.as_deref()) {
                Attempt::Answer { status, body } => return e.decode(status, &body),
                Attempt::Fatal(why) => {
                    return Err(Error::Unreachable {
                        base: self.base.clone(),
                        why,
                    })
                }
                Attempt::Again {
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
                                if let Some(n) = &self.notice {
                                    n(&self.base, &why, self.retry_for);
                                }
                                told = true;
                            }
                            std::thread::sleep(d);
                            continue;
                        }
                        None => why,
                    }
                }
            };
            let base = self.base.clone();
            return Err(if maybe_applied {
                Error::MaybeApplied { base, why }
            } else {
                Error::Unreachable { base, why }
            });
        }
    }

    fn attempt(&self, c: &Request, key: Option<&str>) -> Attempt {
        let resp = match self.request(&self.http, c, key).send() {
            Ok(r) => r,
            Err(e) => return retry::failed(&e),
        };
        let status = resp.status();
        let headers = resp.headers().clone();
        let mut body = Vec::new();
        if let Err(e) = resp.take(MAX_ANSWER).read_to_end(&mut body) {
            return retry::unread(e.to_string());
        }
        retry::answered(status, &headers, body)
    }

    /// One attempt's request.
    fn request(
        &self,
        http: &reqwest::blocking::Client,
        c: &Request,
        key: Option<&str>,
    ) -> RequestBuilder {
        let mut req = http.request(c.method.clone(), format!("{}{}", self.base, c.path));
        req = match &c.auth {
            Auth::Bearer => req.bearer_auth(&self.token),
            Auth::Basic { user, secret } => req.basic_auth(user, Some(secret)),
            Auth::None => req,
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

    /// A GET whose answer is a stream of server-sent events (see
    /// `endpoints::events::event_stream`): no overall timeout; an error answer
    /// is typed as for any other call. One attempt: the caller resumes.
    pub fn stream(&self, c: Request) -> Result<Response, Error> {
        c.check()?;
        let http = build::blocking_http(Timeouts::stream())?;
        let resp = self
            .request(&http, &c, None)
            .header(reqwest::header::ACCEPT, "text/event-stream")
            .send()
            .map_err(|e| Error::Unreachable {
                base: self.base.clone(),
                why: e.to_string(),
            })?;
        let status = resp.status();
        if status.is_success() {
            return Ok(resp);
        }
        let mut body = Vec::new();
        let _ = resp.take(MAX_ANSWER).read_to_end(&mut body);
        Err(error_of(status, &body))
    }

    /// `PATCH /v1/uploads/{id}`: `body` written at `offset`, streamed, with a
    /// timeout of its own. One attempt: an upload resumes from the master's
    /// offset, which makes a retry safe without a key.
    pub fn write_upload(
        &self,
        id: Uuid,
        offset: u64,
        body: Body,
        timeout: Duration,
    ) -> Result<Upload, Error> {
        let e = crate::endpoints::uploads::write(id);
        let resp = self
            .request(&self.http, &e.request, None)
            .header(reqwest::header::CONTENT_TYPE, cm_api::upload::CONTENT_TYPE)
            .header(cm_api::upload::OFFSET_HEADER, offset)
            .body(body)
            .timeout(timeout)
            .send()
            .map_err(|err| Error::Unreachable {
                base: self.base.clone(),
                why: err.to_string(),
            })?;
        let status = resp.status();
        let mut bytes = Vec::new();
        resp.take(MAX_ANSWER)
            .read_to_end(&mut bytes)
            .map_err(|err| Error::Read(err.to_string()))?;
        e.decode(status, &bytes)
    }
}
