//! Errors as the API sends them, and a JSON body extractor whose rejections
//! are errors of the same shape (never axum's plain-text ones).

use crate::app;
use crate::store::StoreError;
use axum::extract::rejection::BytesRejection;
use axum::extract::{FromRequest, Request};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use cm_api::{ApiError, ErrorCode};
use serde::de::DeserializeOwned;

/// An error on its way to the client.
#[derive(Debug)]
pub struct ApiErr(pub ApiError);

pub type ApiResult<T> = Result<T, ApiErr>;

impl ApiErr {
    pub fn new(code: ErrorCode, message: impl Into<String>) -> ApiErr {
        ApiErr(ApiError::new(code, message))
    }
    pub fn field(mut self, f: &str) -> ApiErr {
        self.0.error.field = Some(f.to_string());
        self
    }
    pub fn invalid(field: &str, message: impl Into<String>) -> ApiErr {
        ApiErr(ApiError::invalid(field, message))
    }
    pub fn internal(message: impl Into<String>) -> ApiErr {
        ApiErr::new(ErrorCode::Internal, message)
    }
}

impl From<ApiError> for ApiErr {
    fn from(e: ApiError) -> ApiErr {
        ApiErr(e)
    }
}

impl From<StoreError> for ApiErr {
    fn from(e: StoreError) -> ApiErr {
        ApiErr::from(app::Error::from(e))
    }
}

/// The app layer's answer in the wire's words: each kind keeps its code,
/// message and field.
impl From<app::Error> for ApiErr {
    fn from(e: app::Error) -> ApiErr {
        ApiErr(e.to_wire())
    }
}

impl IntoResponse for ApiErr {
    fn into_response(self) -> Response {
        let status = StatusCode::from_u16(self.0.code().http_status())
            .unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
        (status, axum::Json(self.0)).into_response()
    }
}

/// The last layer of the router: any error answer that is not already the
/// JSON error document (a rejection by an extractor or layer that a route
/// forgot to wrap, tower-http's body limit, ...) is rewritten into one, with
/// the same status and headers (`Allow`, `Retry-After`).
pub async fn json_errors(resp: Response) -> Response {
    let status = resp.status();
    if !(status.is_client_error() || status.is_server_error()) {
        return resp;
    }
    let is_json = resp
        .headers()
        .get(axum::http::header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .map(|v| v.starts_with("application/json"))
        .unwrap_or(false);
    if is_json {
        return resp;
    }
    let (mut parts, body) = resp.into_parts();
    let text = axum::body::to_bytes(body, 4096)
        .await
        .map(|b| String::from_utf8_lossy(&b).trim().to_string())
        .unwrap_or_default();
    let message = if text.is_empty() {
        status.canonical_reason().unwrap_or("error").to_string()
    } else {
        cm_api::validate::printable(&text)
    };
    let doc = ApiError::new(code_for(status), message);
    let bytes = serde_json::to_vec(&doc).unwrap_or_default();
    parts.headers.remove(axum::http::header::CONTENT_LENGTH);
    parts.headers.insert(
        axum::http::header::CONTENT_TYPE,
        axum::http::HeaderValue::from_static("application/json"),
    );
    Response::from_parts(parts, axum::body::Body::from(bytes))
}

/// The error code of a bare status.
fn code_for(status: StatusCode) -> ErrorCode {
    match status.as_u16() {
        401 => ErrorCode::Unauthorized,
        403 => ErrorCode::Forbidden,
        404 | 410 => ErrorCode::NotFound,
        405 => ErrorCode::MethodNotAllowed,
        409 => ErrorCode::Conflict,
        411 | 415 => ErrorCode::MalformedBody,
        413 => ErrorCode::BodyTooLarge,
        429 => ErrorCode::RateLimited,
        400..=499 => ErrorCode::InvalidInput,
        _ => ErrorCode::Internal,
    }
}

/// `Json<T>` with our errors: the field at fault is named where serde knows it.
pub struct Body<T>(pub T);

impl<S, T> FromRequest<S> for Body<T>
where
    T: DeserializeOwned,
    S: Send + Sync,
{
    type Rejection = ApiErr;

    async fn from_request(req: Request, state: &S) -> Result<Self, Self::Rejection> {
        let is_json = req
            .headers()
            .get(axum::http::header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .map(|v| {
                v.split(';')
                    .next()
                    .unwrap_or("")
                    .trim()
                    .eq_ignore_ascii_case("application/json")
            })
            .unwrap_or(false);
        let bytes =
            axum::body::Bytes::from_request(req, state)
                .await
                .map_err(|e: BytesRejection| {
                    if e.status() == StatusCode::PAYLOAD_TOO_LARGE {
                        ApiErr::new(
                            ErrorCode::BodyTooLarge,
                            format!("request body too large: {}", e.body_text()),
                        )
                    } else {
                        ApiErr::new(
                            ErrorCode::MalformedBody,
                            format!("cannot read the body: {}", e.body_text()),
                        )
                    }
                })?;
        if !is_json {
            return Err(ApiErr::new(
                ErrorCode::MalformedBody,
                "expected Content-Type: application/json",
            ));
        }
        parse(&bytes).map(Body)
    }
}

/// Decode JSON, naming the field at fault.
pub fn parse<T: DeserializeOwned>(bytes: &[u8]) -> ApiResult<T> {
    let de = &mut serde_json::Deserializer::from_slice(bytes);
    serde_path_to_error::deserialize(de).map_err(|e| {
        let path = e.path().to_string();
        let inner = e.into_inner();
        let code = if inner.is_syntax() || inner.is_eof() {
            ErrorCode::MalformedBody
        } else {
            ErrorCode::InvalidInput
        };
        let mut err = ApiErr::new(code, format!("invalid JSON body: {inner}"));
        if code == ErrorCode::InvalidInput {
            let field = if path == "." {
                unknown_field(&inner.to_string())
            } else {
                Some(path)
            };
            if let Some(f) = field {
                err = err.field(&f);
            }
        }
        err
    })
}

/// serde names an unknown or missing field only in its message.
fn unknown_field(msg: &str) -> Option<String> {
    for prefix in ["unknown field `", "missing field `"] {
        if let Some(rest) = msg.split(prefix).nth(1) {
            return rest.split('`').next().map(str::to_string);
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, serde::Deserialize)]
    #[serde(deny_unknown_fields)]
    #[allow(dead_code)]
    struct T {
        name: String,
        size: u32,
    }

    #[test]
    fn errors_name_the_field() {
        let e = parse::<T>(br#"{"name": "a", "size": "big"}"#)
            .unwrap_err()
            .0;
        assert_eq!(e.error.code, ErrorCode::InvalidInput);
        assert_eq!(e.error.field.as_deref(), Some("size"));
        let e = parse::<T>(br#"{"name": "a"}"#).unwrap_err().0;
        assert_eq!(e.error.field.as_deref(), Some("size"));
        let e = parse::<T>(br#"{"name": "a", "size": 1, "color": 2}"#)
            .unwrap_err()
            .0;
        assert_eq!(e.error.field.as_deref(), Some("color"));
        let e = parse::<T>(br#"{"name": "a", "#).unwrap_err().0;
        assert_eq!(e.error.code, ErrorCode::MalformedBody);
    }
}
