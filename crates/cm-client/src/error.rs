//! What a call to the master can come to besides its answer.

use cm_api::ApiError;
use reqwest::StatusCode;

// The crate's one error, named as reqwest's and io's are: `cm_client::Error`.
#[allow(clippy::error_impl_error)]
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The master refused: its error document, typed (code, message, field).
    #[error("{error}")]
    Api { status: StatusCode, error: ApiError },
    /// A non-2xx answer that is not an error document (a proxy's page).
    #[error("HTTP {status}: {body}")]
    Status { status: StatusCode, body: String },
    /// The master could not be reached, or a call that changes nothing got
    /// no answer: nothing was applied.
    #[error("cannot reach the master at {base}: {why}")]
    Unreachable { base: String, why: String },
    /// A call that changes something got no answer although it may have
    /// reached the master: it may have been applied.
    #[error("no answer from the master at {base} ({why}); the request may have been applied")]
    MaybeApplied { base: String, why: String },
    /// The answer began but could not be read whole.
    #[error("reading the answer: {0}")]
    Read(String),
    /// A 2xx answer that is not the type the route gives.
    #[error("unexpected answer from the master: {0}")]
    Decode(String),
    /// Never sent: the body could not be encoded, or no HTTP client could be made.
    #[error("{0}")]
    Local(String),
}

impl Error {
    /// The master's error document, when it answered with one.
    pub fn api(&self) -> Option<&ApiError> {
        match self {
            Error::Api { error, .. } => Some(error),
            _ => None,
        }
    }

    /// The HTTP status, when the master (or a proxy) answered.
    pub fn status(&self) -> Option<StatusCode> {
        match self {
            Error::Api { status, .. } | Error::Status { status, .. } => Some(*status),
            _ => None,
        }
    }
}

/// The error and its causes ("error sending request: connection refused").
pub(crate) fn chain(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut cur = e.source();
    while let Some(c) = cur {
        let c_s = c.to_string();
        if !s.contains(&c_s) {
            s.push_str(": ");
            s.push_str(&c_s);
        }
        cur = c.source();
    }
    s
}
