//! Answers already rendered to JSON bytes (`app::instance_list`), sent as
//! they are or gzip-compressed when the client says it accepts gzip
//! (`Accept-Encoding`, RFC 9110 §12.5.3: a coding with `q=0` is refused).

use axum::body::Body;
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use bytes::Bytes;

/// Below this an answer is sent as it is: gzip's header and trailer would
/// make it bigger (nginx's `gzip_min_length` is 20 bytes; 1 KiB is common).
pub const GZIP_MIN: usize = 1024;

/// Should an answer of `len` bytes go gzipped?
pub fn worth_gzip(headers: &HeaderMap, len: usize) -> bool {
    len >= GZIP_MIN && accepts_gzip(headers)
}

/// Does `Accept-Encoding` accept gzip?
pub fn accepts_gzip(headers: &HeaderMap) -> bool {
    headers
        .get_all(header::ACCEPT_ENCODING)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .any(|coding| {
            let mut parts = coding.split(';').map(str::trim);
            let name = parts.next().unwrap_or("");
            let refused = parts.any(|p| {
                p.strip_prefix("q=")
                    .and_then(|q| q.trim().parse::<f32>().ok())
                    .is_some_and(|q| q <= 0.0)
            });
            (name.eq_ignore_ascii_case("gzip") || name == "*") && !refused
        })
}

/// A 200 with JSON bytes, `gzip` when given (already compressed).
pub fn json(body: Bytes, gzip: Option<Bytes>) -> Response {
    let (body, coding) = match gzip {
        Some(z) => (z, Some(HeaderValue::from_static("gzip"))),
        None => (body, None),
    };
    let mut r = (StatusCode::OK, Body::from(body)).into_response();
    let h = r.headers_mut();
    h.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    h.insert(header::VARY, HeaderValue::from_static("accept-encoding"));
    if let Some(c) = coding {
        h.insert(header::CONTENT_ENCODING, c);
    }
    r
}

#[cfg(test)]
mod tests {
    use super::*;

    fn with(v: &str) -> HeaderMap {
        let mut h = HeaderMap::new();
        h.insert(header::ACCEPT_ENCODING, HeaderValue::from_str(v).unwrap());
        h
    }

    #[test]
    fn gzip_is_sent_only_when_accepted() {
        assert!(accepts_gzip(&with("gzip")));
        assert!(accepts_gzip(&with("br, GZip;q=0.5")));
        assert!(accepts_gzip(&with("*")));
        assert!(!accepts_gzip(&with("gzip;q=0")));
        assert!(!accepts_gzip(&with("gzip; q=0.0, identity")));
        assert!(!accepts_gzip(&with("br, deflate")));
        assert!(!accepts_gzip(&HeaderMap::new()));
    }
}
