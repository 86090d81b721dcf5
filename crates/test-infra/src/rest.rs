//! Requests straight at the master's REST API and checks of its answers,
//! for what `cm` never sends (bad input, uploads byte by byte).

use crate::cloud::Cloud;
use crate::http;
use cm_api::image::Image;
use cm_api::upload::Upload;
use cm_client::api;
use serde_json::Value;
use std::path::Path;

/// POST a JSON body to the master; the status and the answer.
pub fn post_json(cloud: &Cloud, path: &str, body: &Value) -> (u16, Value) {
    http(
        "POST",
        &format!("{}{path}", cloud.url),
        Some(&cloud.token),
        Some((
            "application/json",
            serde_json::to_vec(body).unwrap_or_default(),
        )),
    )
}

/// GET from the master with the admin token.
pub fn get_json(cloud: &Cloud, path: &str) -> (u16, Value) {
    http(
        "GET",
        &format!("{}{path}", cloud.url),
        Some(&cloud.token),
        None,
    )
}

/// `PATCH /v1/uploads/{id}` with `bytes` at `offset`.
pub fn patch_upload(cloud: &Cloud, id: &str, offset: u64, bytes: &[u8]) -> (u16, Value) {
    let resp = crate::raw_client()
        .patch(format!("{}/v1/uploads/{id}", cloud.url))
        .bearer_auth(&cloud.token)
        .header("content-type", "application/offset+octet-stream")
        .header("upload-offset", offset)
        .body(bytes.to_vec())
        .send();
    match resp {
        Ok(r) => {
            let status = r.status().as_u16();
            (status, r.json().unwrap_or(Value::Null))
        }
        Err(e) => (0, Value::String(e.to_string())),
    }
}

/// `PATCH /v1/uploads/{id}` with `bytes` at `offset`, through the typed client.
pub fn write_upload(
    cloud: &Cloud,
    id: uuid::Uuid,
    offset: u64,
    bytes: &[u8],
) -> Result<Upload, cm_client::Error> {
    cloud.api().write_upload(
        id,
        offset,
        bytes.to_vec().into(),
        std::time::Duration::from_secs(30),
    )
}

/// Assert an error document: status, code, a message, and the field.
pub fn assert_error(what: &str, got: (u16, Value), status: u16, code: &str, field: Option<&str>) {
    let (s, body) = got;
    assert_eq!(s, status, "{what}: {body}");
    assert_eq!(body["error"]["code"], code, "{what}: {body}");
    assert!(
        !body["error"]["message"].as_str().unwrap_or("").is_empty(),
        "{what}: no message"
    );
    if let Some(f) = field {
        assert_eq!(body["error"]["field"], f, "{what}: {body}");
    }
}

/// Assert a typed refusal from the typed client: status, code, a message,
/// and the field.
pub fn assert_refused<T: std::fmt::Debug>(
    what: &str,
    got: Result<T, cm_client::Error>,
    status: u16,
    code: cm_api::ErrorCode,
    field: Option<&str>,
) -> cm_api::ErrorBody {
    let e = match got {
        Ok(v) => panic!("{what}: accepted: {v:?}"),
        Err(e) => e,
    };
    assert_eq!(e.status().map(|s| s.as_u16()), Some(status), "{what}: {e}");
    let doc = e
        .api()
        .unwrap_or_else(|| panic!("{what}: no error document: {e}"))
        .error
        .clone();
    assert_eq!(doc.code, code, "{what}: {e}");
    assert!(!doc.message.is_empty(), "{what}: no message");
    if let Some(f) = field {
        assert_eq!(doc.field.as_deref(), Some(f), "{what}: {e}");
    }
    doc
}

/// `sha256sum FILE`.
pub fn sha256_of(p: &Path) -> String {
    let out = std::process::Command::new("sha256sum")
        .arg(p)
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).into_owned())
        .unwrap_or_default();
    out.split_whitespace()
        .next()
        .unwrap_or_default()
        .to_string()
}

/// `GET /v1/uploads`.
pub fn uploads(cloud: &Cloud) -> Vec<Upload> {
    cloud
        .api()
        .call(api::uploads::list(None))
        .unwrap_or_else(|e| panic!("GET /v1/uploads: {e}"))
}

/// Files in the master's upload area (none once every upload is used).
pub fn upload_files(cloud: &Cloud) -> Vec<String> {
    std::fs::read_dir(cloud.master_dir().join("uploads"))
        .map(|d| {
            d.flatten()
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .collect()
        })
        .unwrap_or_default()
}

/// The names of `cm image list`.
pub fn image_names(cloud: &Cloud) -> Vec<String> {
    let images: Vec<Image> = serde_json::from_value(cloud.cm_json(&["image", "list"]))
        .unwrap_or_else(|e| panic!("cm image list: not a list of Image ({e})"));
    images.into_iter().map(|i| i.name).collect()
}
