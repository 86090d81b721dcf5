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
}

impl Master {
    pub fn new(base: &str, token: String) -> Result<Master, ClientError> {
        Ok(Master {
            api: cm_client::Client::new(base, token)?,
        })
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
