//! The one error shape of the API: `{"error": {"code", "message", "field"}}`.

use serde::{Deserialize, Serialize};
use std::fmt;

/// Stable, machine-readable error codes. Scripts match on these, so a code
/// never changes meaning once released.
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ErrorCode {
    /// The request body or a parameter is malformed or out of range.
    InvalidInput,
    /// The body is not valid JSON or does not have the expected shape.
    MalformedBody,
    /// The body is larger than the API accepts.
    BodyTooLarge,
    /// No bearer token, or an unknown one.
    Unauthorized,
    /// The token is valid but may not do this.
    Forbidden,
    /// The named resource does not exist.
    NotFound,
    /// A resource with that name exists already.
    AlreadyExists,
    /// The request conflicts with the resource's current state.
    Conflict,
    /// No host can take the instance (memory, ports, acceleration).
    NoCapacity,
    /// `assign_dynamic`: every dynamic record of the domain is taken.
    NoneLeft,
    /// The host that must answer is down or did not answer in time.
    HostUnavailable,
    /// The method is not allowed on this path.
    MethodNotAllowed,
    /// A fault on the server side; never the client's mistake.
    Internal,
    /// Too many requests for one record or from one address: wait for the
    /// `Retry-After` seconds and try again.
    RateLimited,
    /// `GET /v1/events?since=SEQ`: events after SEQ were removed by retention.
    EventsExpired,
    /// An `Idempotency-Key` sent again with a different request (docs/api.md).
    IdempotencyKeyReused,
    /// The first request with this `Idempotency-Key` is still running; retry
    /// after `Retry-After`.
    InProgress,
    /// The master has no room for the data (an upload larger than its free disk).
    InsufficientStorage,
}

impl ErrorCode {
    /// The HTTP status this code is sent with.
    pub fn http_status(self) -> u16 {
        match self {
            ErrorCode::InvalidInput | ErrorCode::MalformedBody => 400,
            ErrorCode::Unauthorized => 401,
            ErrorCode::Forbidden => 403,
            ErrorCode::NotFound => 404,
            ErrorCode::MethodNotAllowed => 405,
            ErrorCode::AlreadyExists
            | ErrorCode::Conflict
            | ErrorCode::NoCapacity
            | ErrorCode::NoneLeft
            | ErrorCode::InProgress => 409,
            ErrorCode::BodyTooLarge => 413,
            ErrorCode::RateLimited => 429,
            ErrorCode::EventsExpired => 410,
            ErrorCode::IdempotencyKeyReused => 422,
            ErrorCode::HostUnavailable => 503,
            ErrorCode::Internal => 500,
            ErrorCode::InsufficientStorage => 507,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            ErrorCode::InvalidInput => "invalid_input",
            ErrorCode::MalformedBody => "malformed_body",
            ErrorCode::BodyTooLarge => "body_too_large",
            ErrorCode::Unauthorized => "unauthorized",
            ErrorCode::Forbidden => "forbidden",
            ErrorCode::NotFound => "not_found",
            ErrorCode::AlreadyExists => "already_exists",
            ErrorCode::Conflict => "conflict",
            ErrorCode::NoCapacity => "no_capacity",
            ErrorCode::NoneLeft => "none_left",
            ErrorCode::HostUnavailable => "host_unavailable",
            ErrorCode::MethodNotAllowed => "method_not_allowed",
            ErrorCode::Internal => "internal",
            ErrorCode::RateLimited => "rate_limited",
            ErrorCode::EventsExpired => "events_expired",
            ErrorCode::IdempotencyKeyReused => "idempotency_key_reused",
            ErrorCode::InProgress => "in_progress",
            ErrorCode::InsufficientStorage => "insufficient_storage",
        }
    }
}

impl fmt::Display for ErrorCode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ErrorBody {
    pub code: ErrorCode,
    pub message: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub field: Option<String>,
}

/// The error document every non-2xx response carries.
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ApiError {
    pub error: ErrorBody,
}

impl ApiError {
    pub fn new(code: ErrorCode, message: impl Into<String>) -> Self {
        ApiError {
            error: ErrorBody {
                code,
                message: message.into(),
                field: None,
            },
        }
    }

    pub fn with_field(mut self, field: impl Into<String>) -> Self {
        self.error.field = Some(field.into());
        self
    }

    pub fn invalid(field: &str, message: impl Into<String>) -> Self {
        ApiError::new(ErrorCode::InvalidInput, message).with_field(field)
    }

    pub fn not_found(what: &str, name: &str) -> Self {
        ApiError::new(ErrorCode::NotFound, format!("{what} '{name}' not found"))
    }

    pub fn code(&self) -> ErrorCode {
        self.error.code
    }
}

impl fmt::Display for ApiError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.error.message)?;
        if let Some(field) = &self.error.field {
            write!(f, " (field: {field})")?;
        }
        write!(f, " [{}]", self.error.code)
    }
}

impl std::error::Error for ApiError {}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn error_document_shape_is_stable() {
        let e = ApiError::invalid("name", "bad name");
        let v = serde_json::to_value(&e).unwrap();
        assert_eq!(
            v,
            serde_json::json!({"error": {"code": "invalid_input", "message": "bad name", "field": "name"}})
        );
        assert_eq!(e.code().http_status(), 400);
    }

    #[test]
    fn codes_serialize_as_their_string() {
        for code in [
            ErrorCode::InvalidInput,
            ErrorCode::NoCapacity,
            ErrorCode::HostUnavailable,
            ErrorCode::BodyTooLarge,
            ErrorCode::IdempotencyKeyReused,
            ErrorCode::InProgress,
            ErrorCode::InsufficientStorage,
        ] {
            let s = serde_json::to_string(&code).unwrap();
            assert_eq!(s, format!("\"{}\"", code.as_str()));
        }
    }
}
