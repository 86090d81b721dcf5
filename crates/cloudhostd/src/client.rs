//! The host's client of the master's agent API (`/v1/agent/*`).

use cm_api::agent::{AgentReply, DesiredState, HostReport, RegisterHost, Registered};
use cm_api::image::FileRole;
use cm_api::ApiError;
use std::time::Duration;
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

pub struct Master {
    base: String,
    token: String,
    http: reqwest::Client,
}

async fn check(resp: reqwest::Response) -> Result<reqwest::Response, ClientError> {
    let status = resp.status();
    if status.is_success() {
        return Ok(resp);
    }
    let bytes = resp.bytes().await.unwrap_or_default();
    if status == reqwest::StatusCode::UNAUTHORIZED {
        return Err(ClientError::Unauthorized);
    }
    Err(match serde_json::from_slice::<ApiError>(&bytes) {
        Ok(e) => ClientError::Api(e),
        Err(_) => ClientError::Transport(format!(
            "HTTP {status}: {}",
            String::from_utf8_lossy(&bytes)
        )),
    })
}

fn transport(e: reqwest::Error) -> ClientError {
    ClientError::Transport(e.to_string())
}

impl Master {
    pub fn new(base: &str, token: String) -> Result<Master, ClientError> {
        let http = reqwest::Client::builder()
            .connect_timeout(Duration::from_secs(5))
            // The master closes a connection idle for its header-read
            // timeout (10 s by default); drop ours well before, so a
            // request never goes out on a connection being closed.
            .pool_idle_timeout(Duration::from_secs(5))
            .build()
            .map_err(transport)?;
        Ok(Master {
            base: base.trim_end_matches('/').to_string(),
            token,
            http,
        })
    }

    fn token(&self) -> &str {
        &self.token
    }

    pub fn base(&self) -> &str {
        &self.base
    }

    /// A request a guest makes through the boot proxy (vm/bootproxy.rs):
    /// `path_and_query` on the master, without this host's token. None
    /// when URL parsing would change the path (dot segments and the like).
    pub fn guest_request(
        &self,
        method: reqwest::Method,
        path_and_query: &str,
    ) -> Option<reqwest::RequestBuilder> {
        let base = reqwest::Url::parse(&self.base).ok()?;
        let url = reqwest::Url::parse(&format!("{}{path_and_query}", self.base)).ok()?;
        let path = path_and_query.split('?').next().unwrap_or_default();
        let expected = format!("{}{path}", base.path().trim_end_matches('/'));
        (url.path() == expected).then(|| self.http.request(method, url))
    }

    pub async fn register(&self, req: &RegisterHost) -> Result<Registered, ClientError> {
        let resp = self
            .http
            .post(format!("{}/v1/agent/register", self.base))
            .timeout(Duration::from_secs(30))
            .json(req)
            .send()
            .await
            .map_err(transport)?;
        match check(resp).await {
            // Wrong or rotated: asking again with it cannot help.
            Err(ClientError::Unauthorized) => Err(ClientError::Api(ApiError::new(
                cm_api::ErrorCode::Unauthorized,
                "the master refused the join token (wrong, or rotated since: \
                 cm host join-token on the master prints the current one)",
            ))),
            other => other?.json().await.map_err(transport),
        }
    }

    /// Long-poll the desired state past `after`, for up to `wait` seconds.
    pub async fn desired(&self, after: u64, wait: u64) -> Result<DesiredState, ClientError> {
        let resp = self
            .http
            .get(format!(
                "{}/v1/agent/desired?after={after}&wait={wait}",
                self.base
            ))
            .bearer_auth(self.token())
            .timeout(Duration::from_secs(wait + 30))
            .send()
            .await
            .map_err(transport)?;
        check(resp).await?.json().await.map_err(transport)
    }

    pub async fn report(&self, rep: &HostReport) -> Result<(), ClientError> {
        let resp = self
            .http
            .post(format!("{}/v1/agent/report", self.base))
            .bearer_auth(self.token())
            .timeout(Duration::from_secs(30))
            .json(rep)
            .send()
            .await
            .map_err(transport)?;
        check(resp).await.map(drop)
    }

    pub async fn reply(&self, id: Uuid, reply: &AgentReply) -> Result<(), ClientError> {
        let resp = self
            .http
            .post(format!("{}/v1/agent/replies/{id}", self.base))
            .bearer_auth(self.token())
            .timeout(Duration::from_secs(30))
            .json(reply)
            .send()
            .await
            .map_err(transport)?;
        check(resp).await.map(drop)
    }

    /// Start downloading an image file; the caller streams the body.
    pub async fn image_file(
        &self,
        id: Uuid,
        role: FileRole,
    ) -> Result<reqwest::Response, ClientError> {
        let resp = self
            .http
            .get(format!(
                "{}/v1/agent/images/{id}/{}",
                self.base,
                role.as_str()
            ))
            .bearer_auth(self.token())
            .send()
            .await
            .map_err(transport)?;
        check(resp).await
    }
}
