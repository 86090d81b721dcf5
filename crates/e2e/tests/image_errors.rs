//! Issue 9, point 3: bad upload and image requests get the JSON error
//! document (code, message, field) and change nothing. Raw HTTP and JSON
//! for the bad requests: malformed bodies and headers are the point; the
//! one good upload is made through cm_client.

use serde_json::{json, Value};
use test_infra::rest::{assert_error, image_names, post_json};
use test_infra::{Cloud, MasterOpts};

#[test]
fn bad_upload_requests_get_json_errors() {
    let cloud = Cloud::start_with(MasterOpts {
        extra: vec!["--image-max-mib".into(), "1".into()],
        ..MasterOpts::default()
    })
    .unwrap();
    let h = "b".repeat(64);
    for (what, body, status, code, field) in [
        ("nothing", json!({}), 400, "invalid_input", Some("size")),
        (
            "no sha256",
            json!({"size": 10}),
            400,
            "invalid_input",
            Some("sha256"),
        ),
        (
            "a bad sha256",
            json!({"size": 10, "sha256": "xyz"}),
            400,
            "invalid_input",
            Some("sha256"),
        ),
        (
            "empty",
            json!({"size": 0, "sha256": h}),
            400,
            "invalid_input",
            Some("size"),
        ),
        (
            "over the limit",
            json!({"size": 2 << 20, "sha256": h}),
            413,
            "body_too_large",
            Some("size"),
        ),
        (
            "size and url",
            json!({"size": 1, "url": "https://x/y"}),
            400,
            "invalid_input",
            Some("size"),
        ),
        (
            "plain http",
            json!({"url": "http://127.0.0.1/x"}),
            400,
            "invalid_input",
            Some("url"),
        ),
        (
            "a file URL",
            json!({"url": "file:///etc/shadow"}),
            400,
            "invalid_input",
            Some("url"),
        ),
        (
            "credentials",
            json!({"url": "https://u:p@example.org/x"}),
            400,
            "invalid_input",
            Some("url"),
        ),
        (
            "an unknown field",
            json!({"size": 1, "sha256": h, "path": "/x"}),
            400,
            "invalid_input",
            Some("path"),
        ),
        (
            "a negative size",
            json!({"size": -1, "sha256": h}),
            400,
            "invalid_input",
            Some("size"),
        ),
    ] {
        assert_error(
            what,
            post_json(&cloud, "/v1/uploads", &body),
            status,
            code,
            field,
        );
    }

    let up = cloud
        .api()
        .call(cm_client::api::uploads::create(
            &cm_api::upload::CreateUpload {
                size: Some(4),
                sha256: Some(h.clone()),
                ..Default::default()
            },
        ))
        .unwrap();
    let id = up.id.to_string();
    let url = format!("{}/v1/uploads/{id}", cloud.url);
    let client = reqwest::blocking::Client::new();
    let send = |ctype: Option<&str>, offset: Option<&str>, body: &'static [u8], url: &str| {
        let mut r = client.patch(url).bearer_auth(&cloud.token).body(body);
        if let Some(c) = ctype {
            r = r.header("content-type", c);
        }
        if let Some(o) = offset {
            r = r.header("upload-offset", o);
        }
        let resp = r.send().unwrap();
        (
            resp.status().as_u16(),
            resp.json::<Value>().unwrap_or(Value::Null),
        )
    };
    let oct = Some("application/offset+octet-stream");
    assert_error(
        "no offset",
        send(oct, None, b"ab", &url),
        400,
        "invalid_input",
        Some("Upload-Offset"),
    );
    assert_error(
        "a bad offset",
        send(oct, Some("x"), b"ab", &url),
        400,
        "invalid_input",
        Some("Upload-Offset"),
    );
    assert_error(
        "JSON",
        send(Some("application/json"), Some("0"), b"ab", &url),
        400,
        "malformed_body",
        None,
    );
    assert_error(
        "the wrong offset",
        send(oct, Some("2"), b"ab", &url),
        409,
        "conflict",
        Some("Upload-Offset"),
    );
    assert_error(
        "too long",
        send(oct, Some("0"), b"abcde", &url),
        413,
        "body_too_large",
        None,
    );
    let other = format!("{}/v1/uploads/{}", cloud.url, uuid::Uuid::new_v4());
    assert_error(
        "an unknown upload",
        send(oct, Some("0"), b"ab", &other),
        404,
        "not_found",
        None,
    );
    let bad = format!("{}/v1/uploads/not-an-id", cloud.url);
    assert_error(
        "a bad id",
        send(oct, Some("0"), b"ab", &bad),
        400,
        "invalid_input",
        Some("id"),
    );
    let (s, v) = send(oct, Some("0"), b"ab", &url);
    assert_eq!((s, v["offset"].as_u64()), (200, Some(2)), "{v}");

    for (what, body, status, code, field) in [
        (
            "an unfinished upload",
            json!({"name": "x", "disk": {"upload": id}}),
            409,
            "conflict",
            Some("disk"),
        ),
        (
            "upload and path",
            json!({"name": "x", "disk": {"upload": id, "path": "d"}}),
            400,
            "invalid_input",
            Some("disk"),
        ),
        (
            "neither",
            json!({"name": "x", "disk": {}}),
            400,
            "invalid_input",
            Some("disk"),
        ),
        (
            "a bad upload id",
            json!({"name": "x", "disk": {"upload": "nope"}}),
            400,
            "invalid_input",
            Some("disk.upload"),
        ),
        (
            "an unknown key",
            json!({"name": "x", "disk": {"file": "/etc/shadow"}}),
            400,
            "invalid_input",
            Some("disk.file"),
        ),
        (
            "a path, no import dir",
            json!({"name": "x", "disk": "/etc/shadow"}),
            400,
            "invalid_input",
            Some("disk"),
        ),
        (
            "a bad name",
            json!({"name": "X Y", "disk": {"upload": id}}),
            400,
            "invalid_input",
            Some("name"),
        ),
    ] {
        assert_error(
            what,
            post_json(&cloud, "/v1/images", &body),
            status,
            code,
            field,
        );
    }

    // cm refuses a local file over the master's limit, exit code 1.
    let big = cloud.dir.path().join("big.raw");
    std::fs::write(&big, vec![7u8; 2 << 20]).unwrap();
    let out = cloud.cm(&["image", "add", "big", "--disk", &big.to_string_lossy()]);
    assert_eq!(out.code, 1, "{}", out.stderr);
    assert!(out.stderr.contains("limit"), "{}", out.stderr);
    assert!(image_names(&cloud).is_empty());
    // A missing local file is cm's own error (exit code 5), nothing sent.
    let out = cloud.cm(&["image", "add", "gone", "--disk", "/nonexistent.qcow2"]);
    assert_eq!(out.code, 5, "{}", out.stderr);
}
