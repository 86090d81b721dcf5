//! The host's client of the master's agent API (`/v1/agent/*`): the typed
//! client (crate cm_client) with the host's token, its errors sorted the way
//! the agent's loops act on them.

use cm_api::agent::{AgentReply, DesiredState, HostReport, RegisterHost, Registered};
use cm_api::image::FileRole;
use cm_api::ApiError;
use cm_client::api::agent;
use cm_client::reqwest;
use uuid::Uuid;

#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    /// The master does not know our token (the host was deleted, or the
    /// master's store was replaced): register again.
    #[error("the master refused our token")]
    Unauthorized,
    #[error("{0}")]
    Api(ApiError),
    #[error("{0}")]
    Transport(String),
}

impl From<cm_client::Error> for ClientError {
    fn from(e: cm_client::Error) -> ClientError {
        match e {
            cm_client::Error::Api { status, .. } | cm_client::Error::Status { status, .. }
                if status == reqwest::StatusCode::UNAUTHORIZED =>
            {
                ClientError::Unauthorized
            }
            cm_client::Error::Api { error, .. } => ClientError::Api(error),
            other => ClientError::Transport(other.to_string()),
        }
    }
}

pub struct Master {
    api: cm_client::Client,
    /// For the transfers, whose bodies are streamed (never printed).
    token: String,
}

/// How long a transfer of `size` bytes may take as a whole: 5 minutes, plus
/// the time at 1 MiB/s (a slow link; connecting is bounded by the client's
/// connect timeout). A stalled PUT is thus given up and tried again.
pub fn transfer_timeout(size: u64) -> std::time::Duration {
    std::time::Duration::from_secs(300 + size / (1 << 20))
}

impl Master {
    pub fn new(base: &str, token: String) -> Result<Master, ClientError> {
        Ok(Master {
            api: cm_client::Client::new(base, token.clone())?,
            token,
        })
    }

    fn transfer(
        &self,
        method: reqwest::Method,
        id: Uuid,
        size: u64,
    ) -> Result<reqwest::RequestBuilder, ClientError> {
        self.api
            .forward(method, &format!("/v1/agent/transfers/{id}"))
            .map(|r| r.bearer_auth(&self.token).timeout(transfer_timeout(size)))
            .ok_or_else(|| ClientError::Transport(format!("bad master URL {}", self.base())))
    }

    /// Send a flattened disk (docs/storage.md, "Transfers"): `PUT
    /// /v1/agent/transfers/{id}` streaming `file` (`size` bytes) with its
    /// sha256. Ok once the master answered 200 (also for a repeat).
    pub async fn put_transfer(
        &self,
        id: Uuid,
        file: tokio::fs::File,
        size: u64,
        sha256: &str,
    ) -> Result<(), ClientError> {
        let body =
            reqwest::Body::wrap_stream(tokio_util::io::ReaderStream::with_capacity(file, 1 << 20));
        let resp = self
            .transfer(reqwest::Method::PUT, id, size)?
            .header("x-cm-sha256", sha256)
            .header(reqwest::header::CONTENT_LENGTH, size)
            .header(reqwest::header::CONTENT_TYPE, "application/octet-stream")
            .body(body)
            .send()
            .await
            .map_err(|e| ClientError::Transport(format!("sending transfer {id}: {e}")))?;
        answer(resp).await.map(|_| ())
    }

    /// Start reading a transfer of `size` bytes this host is to import; the
    /// caller streams the body (bounded by that size).
    pub async fn get_transfer(
        &self,
        id: Uuid,
        size: u64,
    ) -> Result<reqwest::Response, ClientError> {
        let resp = self
            .transfer(reqwest::Method::GET, id, size)?
            .send()
            .await
            .map_err(|e| ClientError::Transport(format!("fetching transfer {id}: {e}")))?;
        answer(resp).await
    }

    pub fn base(&self) -> &str {
        self.api.base()
    }

    /// A request a guest makes through the boot proxy (vm/bootproxy.rs):
    /// `path_and_query` on the master, without this host's token. None
    /// when URL parsing would change the path (dot segments and the like).
    pub fn guest_request(
        &self,
        method: reqwest::Method,
        path_and_query: &str,
    ) -> Option<reqwest::RequestBuilder> {
        self.api.forward(method, path_and_query)
    }

    pub async fn register(&self, req: &RegisterHost) -> Result<Registered, ClientError> {
        match self
            .api
            .call(agent::register(req))
            .await
            .map_err(ClientError::from)
        {
            // Wrong or rotated: asking again with it cannot help.
            Err(ClientError::Unauthorized) => Err(ClientError::Api(ApiError::new(
                cm_api::ErrorCode::Unauthorized,
                "the master refused the join token (wrong, or rotated since: \
                 cm host join-token on the master prints the current one)",
            ))),
            other => other,
        }
    }

    /// Long-poll the desired state past `after`, for up to `wait` seconds.
    pub async fn desired(&self, after: u64, wait: u64) -> Result<DesiredState, ClientError> {
        Ok(self.api.call(agent::desired(after, wait)).await?)
    }

    pub async fn report(&self, rep: &HostReport) -> Result<(), ClientError> {
        self.api.call(agent::report(rep)).await?;
        Ok(())
    }

    pub async fn reply(&self, id: Uuid, reply: &AgentReply) -> Result<(), ClientError> {
        self.api.call(agent::reply(id, reply)).await?;
        Ok(())
    }

    /// Start downloading an image file; the caller streams the body.
    pub async fn image_file(
        &self,
        id: Uuid,
        role: FileRole,
    ) -> Result<reqwest::Response, ClientError> {
        Ok(self.api.download(agent::image_file(id, role)).await?)
    }
}

/// The most of an error answer read.
const MAX_ERROR_BODY: usize = 64 << 10;

/// A success as it is; an error answer read (bounded) and typed as for the
/// other calls.
async fn answer(mut resp: reqwest::Response) -> Result<reqwest::Response, ClientError> {
    let status = resp.status();
    if status.is_success() {
        return Ok(resp);
    }
    let mut body = Vec::new();
    while let Ok(Some(chunk)) = resp.chunk().await {
        body.extend_from_slice(&chunk);
        if body.len() > MAX_ERROR_BODY {
            body.truncate(MAX_ERROR_BODY);
            break;
        }
    }
    Err(cm_client::request::error_of(status, &body).into())
}
