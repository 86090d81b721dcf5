//! The OpenAPI document of the API, generated from the handlers'
//! `#[utoipa::path]` and the `cm-api` types: served at `GET /v1/openapi.json`,
//! checked in as `openapi/cloudmaster.json` (docs/api.md says how to
//! regenerate it).

use axum::http::header;
use axum::response::IntoResponse;
use cm_api::ApiError;
use utoipa::openapi::path::{ParameterBuilder, ParameterIn};
use utoipa::openapi::security::{Http, HttpAuthScheme, SecurityScheme};
use utoipa::openapi::{ObjectBuilder, OpenApi, Required, Type};
use utoipa::Modify;

/// Every refusal and failure: the JSON error document (docs/api.md).
#[derive(utoipa::IntoResponses)]
#[allow(dead_code)] // never built: it only describes the answers
pub enum Errors {
    /// The request was refused; `error.code` says why (docs/api.md).
    #[response(status = "4XX")]
    Refused(ApiError),
    /// A fault on the master's side.
    #[response(status = "5XX")]
    Failed(ApiError),
}

/// `Upload-Offset` of `PATCH /v1/uploads/{id}`: where these bytes start.
#[derive(utoipa::IntoParams)]
#[into_params(parameter_in = Header)]
pub struct UploadOffset {
    /// Bytes already received (the answer of the last write or `GET`).
    #[param(rename = "Upload-Offset")]
    #[allow(dead_code)]
    upload_offset: u64,
}

/// The document's header, security schemes and idempotency keys.
#[derive(utoipa::OpenApi)]
#[openapi(
    info(
        title = "cloudmaster",
        description = "The REST API of cloudmasterd (docs/api.md). /v1 takes the admin token \
                       or a host's token as a bearer token; /boot/v1 and /nocloud take a config \
                       record's credentials as HTTP Basic (docs/boot-protocol.md).",
        license(name = "Apache-2.0", identifier = "Apache-2.0"),
    ),
    components(schemas(ApiError)),
    modifiers(&Schemes),
)]
pub struct Head;

struct Schemes;

impl Modify for Schemes {
    fn modify(&self, doc: &mut OpenApi) {
        let c = doc.components.get_or_insert_with(Default::default);
        c.add_security_scheme(
            "bearer",
            SecurityScheme::Http(Http::new(HttpAuthScheme::Bearer)),
        );
        // user = the record's uuid (or @DOMAIN), password = its secret or
        // the launch's NoCloud credential (docs/boot-protocol.md).
        c.add_security_scheme(
            "basic",
            SecurityScheme::Http(Http::new(HttpAuthScheme::Basic)),
        );
    }
}

/// Every change under /v1 may carry an `Idempotency-Key` (docs/api.md).
fn idempotency_keys(doc: &mut OpenApi) {
    for (path, item) in doc.paths.paths.iter_mut() {
        if !path.starts_with("/v1/") || path == "/v1/agent/register" {
            continue;
        }
        let changes = [
            item.post.as_mut(),
            item.put.as_mut(),
            item.patch.as_mut(),
            item.delete.as_mut(),
        ];
        for op in changes.into_iter().flatten() {
            let key = ParameterBuilder::new()
                .name("Idempotency-Key")
                .parameter_in(ParameterIn::Header)
                .required(Required::False)
                .description(Some(
                    "1-255 visible ASCII characters; a retry with the same key gets the \
                     first answer (docs/api.md)",
                ))
                .schema(Some(
                    ObjectBuilder::new()
                        .schema_type(Type::String)
                        .min_length(Some(1))
                        .max_length(Some(255)),
                ))
                .build();
            op.parameters.get_or_insert_with(Vec::new).push(key.into());
        }
    }
}

/// The whole document: `routes` is the router's own description of itself.
pub fn document(routes: OpenApi) -> OpenApi {
    let mut doc = <Head as utoipa::OpenApi>::openapi();
    doc.merge(routes);
    idempotency_keys(&mut doc);
    doc
}

/// The document as the checked-in file holds it (pretty, ending in a newline).
pub fn document_text(doc: &OpenApi) -> String {
    let mut s = doc.to_pretty_json().unwrap_or_default();
    s.push('\n');
    s
}

/// The document of this build, made once.
static TEXT: std::sync::LazyLock<String> =
    std::sync::LazyLock::new(|| document_text(&super::openapi_document()));

/// `GET /v1/openapi.json`, without a token: the document of this master.
#[utoipa::path(
    get,
    path = "/v1/openapi.json",
    tag = "meta",
    responses(
        (status = 200, description = "this document (OpenAPI 3.1)", body = Object),
        Errors,
    ),
)]
pub async fn serve() -> impl IntoResponse {
    ([(header::CONTENT_TYPE, "application/json")], TEXT.as_str())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The checked-in document is the one the code makes (as Omicron checks
    /// its `openapi/*.json`). `CM_OPENAPI=overwrite` rewrites the file.
    #[test]
    fn the_checked_in_document_is_the_code_s() {
        let path =
            std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../openapi/cloudmaster.json");
        let made = document_text(&crate::api::openapi_document());
        if std::env::var("CM_OPENAPI").as_deref() == Ok("overwrite") {
            std::fs::write(&path, &made).unwrap();
            return;
        }
        let kept = std::fs::read_to_string(&path).unwrap_or_default();
        assert!(
            kept == made,
            "{} differs from the document the code makes (a route, a handler's \
             annotation or a cm-api type changed). Regenerate it and commit it:\n    \
             cargo run -q -p cloudmasterd -- --print-openapi > openapi/cloudmaster.json\n\
             or: CM_OPENAPI=overwrite cargo nextest run -p cloudmasterd openapi",
            path.display()
        );
    }

    /// Every operation says how it is authenticated: bearer under /v1 (but
    /// registration and this document), Basic under /boot/v1 and /nocloud.
    #[test]
    fn every_route_names_its_credential() {
        let doc = crate::api::openapi_document();
        for (path, item) in &doc.paths.paths {
            let ops = [&item.get, &item.post, &item.put, &item.patch, &item.delete];
            for op in ops.into_iter().flatten() {
                let names: Vec<String> = op
                    .security
                    .iter()
                    .flatten()
                    .filter_map(|s| serde_json::to_value(s).ok())
                    .filter_map(|v| v.as_object().and_then(|o| o.keys().next().cloned()))
                    .collect();
                let want: &[&str] = if path == "/v1/agent/register" || path == "/v1/openapi.json" {
                    &[]
                } else if path.starts_with("/v1/") {
                    &["bearer"]
                } else {
                    &["basic"]
                };
                assert_eq!(names, want, "{path}");
                let errors = op.responses.responses.contains_key("4XX");
                assert!(errors, "{path}: no JSON error document");
            }
        }
    }
}
