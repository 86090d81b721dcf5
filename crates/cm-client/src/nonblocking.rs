//! The async transport (cloudhostd): one attempt per call; the caller's loop
//! decides when to try again.

use crate::error::chain;
use crate::request::{error_of, Auth, Endpoint, Request};
use crate::retry::MAX_ANSWER;
use crate::{build, Error};
use reqwest::{Method, RequestBuilder, Response};

pub struct Client {
    base: String,
    token: String,
    http: reqwest::Client,
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

impl Client {
    /// A client of the master at `base` with a bearer `token` (empty for
    /// calls that carry their own proof).
    pub fn new(base: &str, token: String) -> Result<Client, Error> {
        Ok(Client {
            base: base.trim_end_matches('/').to_string(),
            token,
            http: build::async_http()?,
        })
    }

    pub fn base(&self) -> &str {
        &self.base
    }

    fn request(&self, r: &Request) -> RequestBuilder {
        let mut req = self
            .http
            .request(r.method.clone(), format!("{}{}", self.base, r.path));
        req = match &r.auth {
            Auth::Bearer => req.bearer_auth(&self.token),
            Auth::Basic { user, secret } => req.basic_auth(user, Some(secret)),
            Auth::None => req,
        };
        if let Some(b) = &r.body {
            req = req
                .header(reqwest::header::CONTENT_TYPE, "application/json")
                .body(b.clone());
        }
        if let Some(t) = r.timeout {
            req = req.timeout(t);
        }
        req
    }

    async fn send(&self, r: &Request) -> Result<Response, Error> {
        r.check()?;
        self.request(r).send().await.map_err(|e| {
            let why = chain(&e);
            let base = self.base.clone();
            if r.changes() && !e.is_connect() && !e.is_builder() {
                Error::MaybeApplied { base, why }
            } else {
                Error::Unreachable { base, why }
            }
        })
    }

    /// One call: its typed answer, or the master's typed error.
    pub async fn call<T>(&self, e: Endpoint<T>) -> Result<T, Error> {
        let resp = self.send(&e.request).await?;
        let status = resp.status();
        let body = read_bounded(resp).await?;
        e.decode(status, &body)
    }

    /// A call whose answer is streamed to the caller (an image file); an
    /// error answer is read and typed as for any call.
    pub async fn download(&self, r: Request) -> Result<Response, Error> {
        let resp = self.send(&r).await?;
        let status = resp.status();
        if status.is_success() {
            return Ok(resp);
        }
        Err(error_of(status, &read_bounded(resp).await?))
    }

    /// Send a transfer's file (`PUT path`, docs/storage.md "Transfers")
    /// with its sha256 in `x-cm-sha256`; the master's answer, typed.
    pub async fn put_file(&self, path: &str, sha256: &str, body: Vec<u8>) -> Result<(), Error> {
        let r = Request::new(Method::PUT, path.to_string());
        let len = body.len();
        let resp = self
            .request(&r)
            .header(reqwest::header::CONTENT_TYPE, "application/octet-stream")
            .header(reqwest::header::CONTENT_LENGTH, len)
            .header("x-cm-sha256", sha256)
            .body(body)
            .send()
            .await
            .map_err(|e| Error::MaybeApplied {
                base: self.base.clone(),
                why: chain(&e),
            })?;
        let status = resp.status();
        let answer = read_bounded(resp).await?;
        if status.is_success() {
            return Ok(());
        }
        Err(error_of(status, &answer))
    }

    /// A guest's request passed through the host's boot proxy: the same
    /// path and query on the master, without this client's token. None when
    /// URL parsing would change the path (dot segments and the like).
    pub fn forward(&self, method: Method, path_and_query: &str) -> Option<RequestBuilder> {
        let base = reqwest::Url::parse(&self.base).ok()?;
        let url = reqwest::Url::parse(&format!("{}{path_and_query}", self.base)).ok()?;
        let path = path_and_query.split('?').next().unwrap_or_default();
        let expected = format!("{}{path}", base.path().trim_end_matches('/'));
        (url.path() == expected).then(|| self.http.request(method, url))
    }
}

/// The whole answer, at most [`MAX_ANSWER`] bytes.
async fn read_bounded(mut resp: Response) -> Result<Vec<u8>, Error> {
    let mut body = Vec::new();
    while let Some(chunk) = resp.chunk().await.map_err(|e| Error::Read(chain(&e)))? {
        let len = u64::try_from(body.len() + chunk.len()).unwrap_or(u64::MAX);
        if len > MAX_ANSWER {
            return Err(Error::Read(format!("longer than {MAX_ANSWER} bytes")));
        }
        body.extend_from_slice(&chunk);
    }
    Ok(body)
}
