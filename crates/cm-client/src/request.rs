//! What one call sends and how its answer is read, without any I/O: both
//! transports ([`crate::Client`], `blocking::Client`) send these.

use crate::Error;
use cm_api::ApiError;
use reqwest::{Method, StatusCode};
use serde::de::DeserializeOwned;
use serde::Serialize;
use std::time::Duration;

/// How a call proves who sends it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Auth {
    /// The client's bearer token (admin or host).
    Bearer,
    /// A guest's record and secret (`/boot/v1`), HTTP Basic.
    Basic { user: String, secret: String },
    /// No credentials: the proof is in the body (host registration).
    None,
}

/// One call as every attempt sends it.
#[derive(Debug, Clone)]
pub struct Request {
    pub method: Method,
    /// Path and query, segments escaped ([`seg`]).
    pub path: String,
    /// A JSON body.
    pub body: Option<Vec<u8>>,
    pub auth: Auth,
    /// This call's own timeout (a long-poll, a registration), instead of the
    /// client's.
    pub timeout: Option<Duration>,
    /// Why the body could not be encoded (reported when the call is made).
    encode_error: Option<String>,
}

impl Request {
    pub fn new(method: Method, path: String) -> Request {
        Request {
            method,
            path,
            body: None,
            auth: Auth::Bearer,
            timeout: None,
            encode_error: None,
        }
    }

    pub fn json<B: Serialize + ?Sized>(mut self, body: &B) -> Request {
        match serde_json::to_vec(body) {
            Ok(b) => self.body = Some(b),
            Err(e) => self.encode_error = Some(format!("encoding the request: {e}")),
        }
        self
    }

    pub fn basic(mut self, user: &str, secret: &str) -> Request {
        self.auth = Auth::Basic {
            user: user.to_string(),
            secret: secret.to_string(),
        };
        self
    }

    pub fn no_auth(mut self) -> Request {
        self.auth = Auth::None;
        self
    }

    pub fn timeout(mut self, t: Duration) -> Request {
        self.timeout = Some(t);
        self
    }

    /// Whether the call may change something (and so carries a key).
    pub fn changes(&self) -> bool {
        self.method != Method::GET && self.method != Method::HEAD
    }

    /// The body could not be encoded: the call is never sent.
    pub fn check(&self) -> Result<(), Error> {
        match &self.encode_error {
            Some(e) => Err(Error::Local(e.clone())),
            None => Ok(()),
        }
    }
}

/// A route: the request and, in its type, the answer it gives.
#[derive(Debug, Clone)]
pub struct Endpoint<T> {
    pub request: Request,
    read: fn(StatusCode, &[u8]) -> Result<T, Error>,
}

impl<T: DeserializeOwned> Endpoint<T> {
    /// A route that answers JSON.
    pub fn new(request: Request) -> Endpoint<T> {
        Endpoint {
            request,
            read: decode::<T>,
        }
    }
}

impl Endpoint<Vec<u8>> {
    /// A route that answers bytes (a config body).
    pub fn bytes(request: Request) -> Endpoint<Vec<u8>> {
        Endpoint {
            request,
            read: |status, body| {
                if status.is_success() {
                    Ok(body.to_vec())
                } else {
                    Err(error_of(status, body))
                }
            },
        }
    }
}

impl<T> Endpoint<T> {
    /// Read a complete answer: the value, or the error it carries.
    pub fn decode(&self, status: StatusCode, body: &[u8]) -> Result<T, Error> {
        (self.read)(status, body)
    }
}

pub(crate) fn get<T: DeserializeOwned>(path: String) -> Endpoint<T> {
    Endpoint::new(Request::new(Method::GET, path))
}

pub(crate) fn delete<T: DeserializeOwned>(path: String) -> Endpoint<T> {
    Endpoint::new(Request::new(Method::DELETE, path))
}

pub(crate) fn send<B: Serialize + ?Sized, T: DeserializeOwned>(
    method: Method,
    path: String,
    body: &B,
) -> Endpoint<T> {
    Endpoint::new(Request::new(method, path).json(body))
}

/// The error a non-2xx answer carries: the master's error document, or the
/// status and text when it is not one (a proxy's page).
pub fn error_of(status: StatusCode, body: &[u8]) -> Error {
    match serde_json::from_slice::<ApiError>(body) {
        Ok(error) => Error::Api { status, error },
        Err(_) => Error::Status {
            status,
            body: String::from_utf8_lossy(body).into_owned(),
        },
    }
}

/// A complete answer: the value, or the error document.
pub fn decode<T: DeserializeOwned>(status: StatusCode, body: &[u8]) -> Result<T, Error> {
    if !status.is_success() {
        return Err(error_of(status, body));
    }
    let body: &[u8] = if body.is_empty() { b"null" } else { body };
    serde_json::from_slice(body).map_err(|e| Error::Decode(e.to_string()))
}

/// Percent-encode one path segment (names are validated by the master, but a
/// user may type anything and must get the master's error, not a wrong URL).
pub fn seg(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~') {
            out.push(char::from(b));
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use cm_api::ErrorCode;

    #[test]
    fn segments_are_escaped() {
        assert_eq!(seg("web-1"), "web-1");
        assert_eq!(seg("a/b c"), "a%2Fb%20c");
        assert_eq!(seg(".."), "..");
    }

    #[test]
    fn error_documents_are_typed() {
        let body = br#"{"error":{"code":"invalid_input","message":"bad","field":"name"}}"#;
        match decode::<serde_json::Value>(StatusCode::BAD_REQUEST, body) {
            Err(Error::Api { status, error }) => {
                assert_eq!(status, StatusCode::BAD_REQUEST);
                assert_eq!(error.code(), ErrorCode::InvalidInput);
                assert_eq!(error.error.field.as_deref(), Some("name"));
                assert_eq!(error.error.message, "bad");
            }
            other => panic!("{other:?}"),
        }
        match decode::<serde_json::Value>(StatusCode::BAD_GATEWAY, b"<html>") {
            Err(Error::Status { status, body }) => {
                assert_eq!(status, StatusCode::BAD_GATEWAY);
                assert_eq!(body, "<html>");
            }
            other => panic!("{other:?}"),
        }
        match decode::<u32>(StatusCode::OK, b"\"x\"") {
            Err(Error::Decode(_)) => {}
            other => panic!("{other:?}"),
        }
        assert_eq!(decode::<Option<u32>>(StatusCode::OK, b"").ok(), Some(None));
    }
}
