//! Uploads: image files on their way to the master (`/v1/uploads`).
//!
//! A client declares a file (size and sha256), sends its bytes with
//! `PATCH /v1/uploads/{id}` at an offset (resuming from `GET`'s offset after a
//! broken connection, as tus does), and names the complete upload in
//! `POST /v1/images`. An upload can also be filled by the master itself from
//! an `https://` URL. docs/api.md describes the protocol.

use crate::{ApiError, ErrorBody, Timestamp};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

/// The header that carries the offset of a `PATCH` (and answers it).
pub const OFFSET_HEADER: &str = "Upload-Offset";

/// The content type of a `PATCH` body (tus's), `application/octet-stream`
/// is accepted too.
pub const CONTENT_TYPE: &str = "application/offset+octet-stream";

#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum UploadState {
    /// Waiting for (more of) its bytes from the client.
    Receiving,
    /// The master is fetching it from its URL.
    Fetching,
    /// Every byte is in and the sha256 matched: ready for `POST /v1/images`.
    Complete,
    /// The fetch failed; `error` says why. Its data is gone.
    Failed,
}

impl UploadState {
    pub fn as_str(self) -> &'static str {
        match self {
            UploadState::Receiving => "receiving",
            UploadState::Fetching => "fetching",
            UploadState::Complete => "complete",
            UploadState::Failed => "failed",
        }
    }

    pub fn parse(s: &str) -> Option<UploadState> {
        match s {
            "receiving" => Some(UploadState::Receiving),
            "fetching" => Some(UploadState::Fetching),
            "complete" => Some(UploadState::Complete),
            "failed" => Some(UploadState::Failed),
            _ => None,
        }
    }
}

#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Upload {
    pub id: Uuid,
    pub state: UploadState,
    /// Declared by the client; for a URL, the length the server announced
    /// (None until known).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub size: Option<u64>,
    /// Bytes the master holds: where the next `PATCH` starts.
    pub offset: u64,
    /// Declared by the client (checked when the last byte is in), or
    /// computed by the master for a URL given without one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sha256: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub url: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<ErrorBody>,
    #[serde(with = "crate::ts")]
    #[cfg_attr(feature = "openapi", schema(value_type = String, format = DateTime))]
    pub created_at: Timestamp,
    /// When the master removes it if nothing happens to it before.
    #[serde(
        default,
        with = "crate::ts::option",
        skip_serializing_if = "Option::is_none"
    )]
    #[cfg_attr(feature = "openapi", schema(value_type = Option<String>, format = DateTime))]
    pub expires_at: Option<Timestamp>,
}

/// `POST /v1/uploads`: either `size` and `sha256` (the client sends the
/// bytes), or `url` (the master fetches them; `sha256` optional).
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CreateUpload {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub size: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sha256: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub url: Option<String>,
}

/// A sha256 as the API writes it: 64 lowercase hex digits.
pub fn check_sha256(field: &str, value: &str) -> Result<(), ApiError> {
    match sha256_problem(field, value) {
        None => Ok(()),
        Some(why) => Err(ApiError::invalid(field, why)),
    }
}

/// Why `value` is not a sha256 as the API writes it, if it is not.
pub fn sha256_problem(field: &str, value: &str) -> Option<String> {
    if value.len() == 64 && value.bytes().all(|b| b.is_ascii_hexdigit()) {
        return None;
    }
    Some(format!(
        "{field} must be 64 hex digits, not '{}'",
        crate::validate::printable(&value.chars().take(80).collect::<String>())
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sha256_is_64_hex_digits() {
        let good = "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad";
        check_sha256("sha256", good).unwrap();
        assert!(check_sha256("sha256", &good[1..]).is_err());
        let e = check_sha256("sha256", &good.replace('b', "g")).unwrap_err();
        assert_eq!(e.error.field.as_deref(), Some("sha256"));
    }

    #[test]
    fn states_round_trip() {
        for s in [
            UploadState::Receiving,
            UploadState::Fetching,
            UploadState::Complete,
            UploadState::Failed,
        ] {
            assert_eq!(UploadState::parse(s.as_str()), Some(s));
            assert_eq!(
                serde_json::to_string(&s).unwrap(),
                format!("\"{}\"", s.as_str())
            );
        }
    }
}
