//! `Path` and `Query` with our errors: a refusal is the JSON error document
//! naming the parameter at fault, never axum's plain text (`Invalid URL:
//! Invalid UTF-8 in 'name'`, `Failed to deserialize query string`).
//! Handlers take these instead of axum's; `error::json_errors` catches any
//! refusal that still comes out as text.

use super::error::ApiErr;
use axum::extract::path::ErrorKind;
use axum::extract::rejection::PathRejection;
use axum::extract::{FromRequestParts, RawPathParams};
use axum::http::request::Parts;
use cm_api::validate::printable;
use cm_api::ErrorCode;
use serde::de::DeserializeOwned;

/// Path parameters (`/v1/instances/{name}`), decoded as `T`.
pub struct Path<T>(pub T);

impl<S, T> FromRequestParts<S> for Path<T>
where
    T: DeserializeOwned + Send,
    S: Send + Sync,
{
    type Rejection = ApiErr;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, ApiErr> {
        match axum::extract::Path::<T>::from_request_parts(parts, state).await {
            Ok(axum::extract::Path(v)) => Ok(Path(v)),
            Err(r) => {
                let keys: Vec<String> = RawPathParams::from_request_parts(parts, state)
                    .await
                    .map(|p| p.iter().map(|(k, _)| k.to_string()).collect())
                    .unwrap_or_default();
                Err(path_rejection(r, &keys))
            }
        }
    }
}

fn path_rejection(r: PathRejection, keys: &[String]) -> ApiErr {
    let PathRejection::FailedToDeserializePathParams(e) = r else {
        // Missing parameters: a route and its handler disagree (our bug).
        tracing::error!("path parameters: {}", r.body_text());
        return ApiErr::internal("internal error (the master logged it)");
    };
    let only = || keys.first().filter(|_| keys.len() == 1).cloned();
    let (field, message) = match e.into_kind() {
        ErrorKind::InvalidUtf8InPathParam { key } => {
            let m = format!("the path's {key} is not valid UTF-8");
            (Some(key), m)
        }
        ErrorKind::ParseErrorAtKey { key, value, .. }
        | ErrorKind::DeserializeError { key, value, .. } => {
            let m = format!("'{}' is not a valid {key}", printable(&value));
            (Some(key), m)
        }
        ErrorKind::ParseErrorAtIndex { index, value, .. } => {
            let key = keys.get(index).cloned();
            let m = format!(
                "'{}' is not a valid {}",
                printable(&value),
                key.as_deref().unwrap_or("path parameter")
            );
            (key, m)
        }
        ErrorKind::ParseError { value, .. } => {
            let key = only();
            let m = format!(
                "'{}' is not a valid {}",
                printable(&value),
                key.as_deref().unwrap_or("path parameter")
            );
            (key, m)
        }
        other => (
            only(),
            format!("invalid path: {}", printable(&other.to_string())),
        ),
    };
    let err = ApiErr::new(ErrorCode::InvalidInput, message);
    match field {
        Some(f) => err.field(&f),
        None => err,
    }
}

/// The query string, decoded as `T`; the parameter at fault is named.
pub struct Query<T>(pub T);

impl<S, T> FromRequestParts<S> for Query<T>
where
    T: DeserializeOwned,
    S: Send + Sync,
{
    type Rejection = ApiErr;

    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Self, ApiErr> {
        parse_query(parts.uri.query().unwrap_or("")).map(Query)
    }
}

pub fn parse_query<T: DeserializeOwned>(query: &str) -> Result<T, ApiErr> {
    let de = serde_urlencoded::Deserializer::new(form_urlencoded::parse(query.as_bytes()));
    serde_path_to_error::deserialize(de).map_err(|e| {
        let path = e.path().to_string();
        let inner = printable(&e.into_inner().to_string());
        let field = if path == "." {
            ["unknown field `", "missing field `"]
                .iter()
                .find_map(|p| inner.split(p).nth(1))
                .and_then(|r| r.split('`').next())
                .map(str::to_string)
        } else {
            Some(path)
        };
        let err = match &field {
            Some(f) => ApiErr::new(
                ErrorCode::InvalidInput,
                format!("invalid query parameter {f}: {inner}"),
            ),
            None => ApiErr::new(
                ErrorCode::InvalidInput,
                format!("invalid query string: {inner}"),
            ),
        };
        match field {
            Some(f) => err.field(&f),
            None => err,
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, serde::Deserialize)]
    #[allow(dead_code)]
    struct Q {
        wait: Option<u64>,
        since: Option<i64>,
    }

    #[test]
    fn query_errors_name_the_parameter() {
        let e = parse_query::<Q>("wait=abc").unwrap_err().0;
        assert_eq!(e.error.code, ErrorCode::InvalidInput);
        assert_eq!(e.error.field.as_deref(), Some("wait"));
        let e = parse_query::<Q>("since=1&wait=-1").unwrap_err().0;
        assert_eq!(e.error.field.as_deref(), Some("wait"));
        let q = parse_query::<Q>("since=5&other=x").unwrap();
        assert_eq!(q.since, Some(5));
    }
}
