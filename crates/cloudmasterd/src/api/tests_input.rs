//! Every route's bad input, as a table run in process (tower's `oneshot`,
//! an in-memory store with one host, one image and one instance): each
//! refusal is its status, its error code and the field at fault, and it
//! writes nothing (the store's generation does not move). The end-to-end
//! test `core_master::bad_input_gets_a_4xx_json_error_and_writes_nothing`
//! keeps what needs the real binaries: `cm`'s exit codes and messages,
//! bodies that only a socket can carry.

use super::router;
use super::tests::{app, seed_instances, TOKEN};
use axum::body::Body;
use axum::http::{header, Method, Request};
use serde_json::{json, Value};
use tower::ServiceExt;

const GHOST: &str = "5c6b5a1e-7f0e-4a43-9d5e-3f1f2f0c9a11";

struct Case {
    what: &'static str,
    method: Method,
    path: String,
    body: Option<Value>,
    status: u16,
    code: &'static str,
    field: Option<&'static str>,
}

fn case(
    what: &'static str,
    method: Method,
    path: &str,
    body: Option<Value>,
    (status, code, field): (u16, &'static str, Option<&'static str>),
) -> Case {
    Case {
        what,
        method,
        path: path.to_string(),
        body,
        status,
        code,
        field,
    }
}

/// `POST /v1/instances` with `good` changed by `f`.
fn create(
    what: &'static str,
    f: impl FnOnce(&mut Value),
    want: (u16, &'static str, Option<&'static str>),
) -> Case {
    let mut b = json!({"name": "good", "image": "tiny", "flavor": "m1.tiny"});
    f(&mut b);
    case(what, Method::POST, "/v1/instances", Some(b), want)
}

const BAD: u16 = 400;
const INVALID: &str = "invalid_input";

fn cases() -> Vec<Case> {
    use Method as M;
    let inv = |f| (BAD, INVALID, Some(f));
    let missing = |f| (404, "not_found", Some(f));
    let ghost = (404, "not_found", None);
    vec![
        create(
            "an invalid name",
            |b| b["name"] = json!("Bad_Name!"),
            inv("name"),
        ),
        create("a leading dash", |b| b["name"] = json!("-x"), inv("name")),
        create(
            "no name",
            |b| drop(b.as_object_mut().map(|o| o.remove("name"))),
            inv("name"),
        ),
        create(
            "a name taken",
            |b| b["name"] = json!("vm0"),
            (409, "already_exists", Some("name")),
        ),
        create(
            "an unknown image",
            |b| b["image"] = json!("nope"),
            missing("image"),
        ),
        create(
            "an unknown flavor",
            |b| b["flavor"] = json!("m9.huge"),
            missing("flavor"),
        ),
        create(
            "memory beyond every host",
            |b| b["memory_mib"] = json!(4 << 20),
            (409, "no_capacity", Some("memory_mib")),
        ),
        create(
            "memory of the wrong type",
            |b| b["memory_mib"] = json!("lots"),
            inv("memory_mib"),
        ),
        create("zero vcpus", |b| b["vcpus"] = json!(0), inv("vcpus")),
        create(
            "an unknown field",
            |b| b["colour"] = json!("blue"),
            inv("colour"),
        ),
        create(
            "a host port twice",
            |b| b["ports"] = json!([{"guest": 80, "host": 8080}, {"guest": 81, "host": 8080}]),
            inv("ports"),
        ),
        create(
            "an unknown host",
            |b| b["host"] = json!("nowhere"),
            missing("host"),
        ),
        create(
            "an unknown restart policy",
            |b| b["restart_policy"] = json!("sometimes"),
            inv("restart_policy"),
        ),
        create(
            "an unknown accel",
            |b| b["accel"] = json!("warp"),
            inv("accel"),
        ),
        create(
            "a stop timeout past an hour",
            |b| b["stop_timeout_secs"] = json!(100_000),
            inv("stop_timeout_secs"),
        ),
        create(
            "config not base64",
            |b| b["config_base64"] = json!("***"),
            inv("config_base64"),
        ),
        create(
            "a heartbeat interval under 200ms",
            |b| b["heartbeat"] = json!({"interval": "100ms", "timeout": "1s"}),
            inv("heartbeat.interval"),
        ),
        create(
            "a heartbeat timeout not past the interval",
            |b| b["heartbeat"] = json!({"interval": "1s", "timeout": "1s"}),
            inv("heartbeat.timeout"),
        ),
        create(
            "a heartbeat interval that is no duration",
            |b| b["heartbeat"] = json!({"interval": "soon", "timeout": "3s"}),
            inv("heartbeat.interval"),
        ),
        create(
            "a boot grace past an hour",
            |b| b["heartbeat"] = json!({"interval": "1s", "timeout": "3s", "boot_grace": "2h"}),
            inv("heartbeat.boot_grace"),
        ),
        create(
            "an unknown dynamic domain",
            |b| b["dynamic_domain"] = json!("nope"),
            missing("dynamic_domain"),
        ),
        case(
            "an unknown instance",
            M::GET,
            "/v1/instances/ghost",
            None,
            ghost,
        ),
        case(
            "start an unknown instance",
            M::POST,
            "/v1/instances/ghost/start",
            None,
            ghost,
        ),
        case(
            "stop with a timeout past an hour",
            M::POST,
            "/v1/instances/vm0/stop",
            Some(json!({"timeout_secs": 100_000})),
            inv("timeout_secs"),
        ),
        case(
            "console bytes not a number",
            M::GET,
            "/v1/instances/vm0/console?bytes=abc",
            None,
            inv("bytes"),
        ),
        case(
            "an invalid flavor name",
            M::POST,
            "/v1/flavors",
            Some(json!({"name": "Bad!", "memory_mib": 64, "vcpus": 1})),
            inv("name"),
        ),
        case(
            "a flavor of no memory",
            M::POST,
            "/v1/flavors",
            Some(json!({"name": "f0", "memory_mib": 0, "vcpus": 1})),
            inv("memory_mib"),
        ),
        case(
            "a flavor name taken",
            M::POST,
            "/v1/flavors",
            Some(json!({"name": "m1.tiny", "memory_mib": 64, "vcpus": 1})),
            (409, "already_exists", Some("name")),
        ),
        case(
            "an image of no file",
            M::POST,
            "/v1/images",
            Some(json!({"name": "empty"})),
            inv("disk"),
        ),
        case(
            "an image from an unknown upload",
            M::POST,
            "/v1/images",
            Some(json!({"name": "i", "disk": {"upload": GHOST}})),
            missing("disk"),
        ),
        case(
            "an image name taken",
            M::POST,
            "/v1/images",
            Some(json!({"name": "tiny", "disk": {"upload": GHOST}})),
            (409, "already_exists", Some("name")),
        ),
        case(
            "delete an image in use",
            M::DELETE,
            "/v1/images/tiny",
            None,
            (409, "conflict", None),
        ),
        case(
            "a host's reserve of the wrong type",
            M::PATCH,
            "/v1/hosts/h1",
            Some(json!({"memory_reserved_mib": "x"})),
            inv("memory_reserved_mib"),
        ),
        case(
            "an unknown host",
            M::PATCH,
            "/v1/hosts/ghost",
            Some(json!({"enabled": false})),
            ghost,
        ),
        case(
            "evacuate a host that is up",
            M::POST,
            "/v1/hosts/h1/evacuate",
            Some(json!({})),
            (409, "conflict", Some("force")),
        ),
        case(
            "forget a host with instances",
            M::DELETE,
            "/v1/hosts/h1",
            None,
            (409, "conflict", None),
        ),
        case(
            "a config uuid not a uuid",
            M::POST,
            "/v1/configs",
            Some(json!({"uuid": "not-a-uuid"})),
            inv("uuid"),
        ),
        case(
            "a config in an unknown domain",
            M::POST,
            "/v1/configs",
            Some(json!({"domain": "nope", "dynamic": true})),
            missing("domain"),
        ),
        case(
            "a config not base64",
            M::POST,
            "/v1/configs",
            Some(json!({"config_base64": "***"})),
            inv("config_base64"),
        ),
        case(
            "remove-stale with no timeout",
            M::POST,
            "/v1/configs/remove-stale",
            Some(json!({})),
            inv("timeout_secs"),
        ),
        case(
            "set the config of an unknown record",
            M::PUT,
            &format!("/v1/configs/{GHOST}/config"),
            Some(json!({"config": "x"})),
            ghost,
        ),
        case(
            "an invalid domain name",
            M::POST,
            "/v1/config-domains",
            Some(json!({"name": "Bad!"})),
            inv("name"),
        ),
        case(
            "forget an unknown domain",
            M::DELETE,
            "/v1/config-domains/ghost",
            None,
            ghost,
        ),
        case(
            "an upload of negative size",
            M::POST,
            "/v1/uploads",
            Some(json!({"size": -1})),
            inv("size"),
        ),
        case(
            "an upload with a bad sha256",
            M::POST,
            "/v1/uploads",
            Some(json!({"size": 1, "sha256": "zz"})),
            inv("sha256"),
        ),
        case(
            "an upload from a plain http url",
            M::POST,
            "/v1/uploads",
            Some(json!({"url": "http://127.0.0.1/x"})),
            inv("url"),
        ),
        case(
            "an operation id not a uuid",
            M::GET,
            "/v1/operations/x",
            None,
            inv("id"),
        ),
        case(
            "an unknown operation",
            M::GET,
            &format!("/v1/operations/{GHOST}"),
            None,
            ghost,
        ),
        case(
            "events since not a number",
            M::GET,
            "/v1/events?since=abc",
            None,
            inv("since"),
        ),
        case(
            "events limit not a number",
            M::GET,
            "/v1/events?limit=-1",
            None,
            inv("limit"),
        ),
    ]
    .into_iter()
    .chain(deployable_cases())
    .collect()
}

/// `PUT /v1/deployables/{name}` of a YAML spec.
fn spec(
    what: &'static str,
    name: &str,
    yaml: &str,
    want: (u16, &'static str, Option<&'static str>),
) -> Case {
    let body = json!({"format": "yaml", "source": yaml});
    case(
        what,
        Method::PUT,
        &format!("/v1/deployables/{name}"),
        Some(body),
        want,
    )
}

/// A spec the seeded store accepts (image `tiny`), and the deployable
/// `shop` seeded at generation 1.
pub(super) const GOOD_SPEC: &str =
    "name: shop\nassemblies:\n  - {name: web, image: tiny, count: 2}\n";

fn deployable_cases() -> Vec<Case> {
    use Method as M;
    let inv = |f| (BAD, INVALID, Some(f));
    let ghost = (404, "not_found", None);
    let good = GOOD_SPEC;
    vec![
        spec("a count of 0", "shop", &good.replace("count: 2", "count: 0"), inv("assemblies[0].count")),
        spec("a bad YAML type", "shop", &good.replace("count: 2", "count: [2]"), inv("assemblies[0].count")),
        spec("no assemblies", "shop", "name: shop\n", inv("assemblies")),
        spec("an image that does not exist", "shop", &good.replace("tiny", "web1"), inv("assemblies[0].image")),
        spec("a flavor that does not exist", "shop", &good.replace("count: 2", "flavor: huge"), inv("assemblies[0].flavor")),
        spec(
            "a pool with no balancer configured",
            "shop",
            "name: shop\nassemblies:\n  - name: web\n    image: tiny\n    ports: [{name: http, guest: 80}]\n    services:\n      - {name: h, run: h, pool: {balancer: edge, backend: web, port: http}}\n",
            inv("assemblies[0].services[0].pool.balancer"),
        ),
        spec("a name unlike the URL's", "other", good, inv("name")),
        spec("a cycle", "shop", "name: shop\nassemblies:\n  - name: web\n    image: tiny\n    services:\n      - {name: a, run: a, depends_on: [b]}\n      - {name: b, run: b, depends_on: [a]}\n", inv("assemblies[0].services[1].depends_on[0]")),
        case(
            "XML with another monitor",
            M::PUT,
            "/v1/deployables/shop",
            Some(json!({"format": "xml", "source": "<deployable name=\"shop\" monitor=\"ssh\"><assemblies/></deployable>"})),
            inv("monitor"),
        ),
        case(
            "TOML that does not parse",
            M::PUT,
            "/v1/deployables/shop",
            Some(json!({"format": "toml", "source": "name = ["})),
            inv("spec"),
        ),
        case(
            "an unknown format",
            M::PUT,
            "/v1/deployables/shop",
            Some(json!({"format": "ini", "source": "x"})),
            inv("format"),
        ),
        case(
            "a diff of a bad spec",
            M::POST,
            "/v1/deployables/shop/diff",
            Some(json!({"format": "json", "source": "{\"name\": \"shop\", \"assemblies\": [{\"name\": \"web\"}]}"})),
            inv("assemblies[0].image"),
        ),
        case("an unknown deployable", M::GET, "/v1/deployables/ghost", None, ghost),
        case("deleting an unknown deployable", M::DELETE, "/v1/deployables/ghost", None, ghost),
        case(
            "a generation that does not exist",
            M::GET,
            "/v1/deployables/shop/spec?generation=7",
            None,
            ghost,
        ),
        case(
            "rolling back an unknown deployable",
            M::POST,
            "/v1/deployables/ghost/rollback",
            Some(json!({})),
            ghost,
        ),
        case(
            "rolling back with one generation only",
            M::POST,
            "/v1/deployables/shop/rollback",
            Some(json!({})),
            (409, "conflict", Some("to_generation")),
        ),
        case(
            "rolling back to a generation not there",
            M::POST,
            "/v1/deployables/shop/rollback",
            Some(json!({"to_generation": 9})),
            inv("to_generation"),
        ),
        case(
            "applying the spec in force again",
            M::PUT,
            "/v1/deployables/shop",
            Some(json!({"format": "yaml", "source": good})),
            (200, "", None),
        ),
    ]
}

#[tokio::test]
async fn every_routes_bad_input_is_refused_with_its_code_and_field_and_writes_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let app = app(dir.path(), &[]);
    seed_instances(&app, 1);
    super::tests_deployables::seed_shop(&app);
    let r = router(app.clone());
    let mut wrong = Vec::new();
    for c in cases() {
        let before = app.store.generation();
        let mut req = Request::builder()
            .method(c.method.clone())
            .uri(&c.path)
            .header(header::AUTHORIZATION, format!("Bearer {TOKEN}"));
        let body = match &c.body {
            Some(b) => {
                req = req.header(header::CONTENT_TYPE, "application/json");
                Body::from(serde_json::to_vec(b).unwrap())
            }
            None => Body::empty(),
        };
        let resp = r.clone().oneshot(req.body(body).unwrap()).await.unwrap();
        let status = resp.status().as_u16();
        let body = axum::body::to_bytes(resp.into_body(), 1 << 20)
            .await
            .unwrap();
        let v: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
        let got = (
            status,
            v["error"]["code"].as_str().unwrap_or("").to_string(),
            v["error"]["field"].as_str().map(str::to_string),
        );
        let want = (c.status, c.code.to_string(), c.field.map(str::to_string));
        if got != want {
            wrong.push(format!(
                "{} ({} {}): got {got:?}, want {want:?}: {v}",
                c.what, c.method, c.path
            ));
        }
        if app.store.generation() != before {
            wrong.push(format!(
                "{} ({} {}): wrote to the store",
                c.what, c.method, c.path
            ));
        }
    }
    assert!(
        wrong.is_empty(),
        "{} of {} cases:\n{}",
        wrong.len(),
        cases().len(),
        wrong.join("\n")
    );
}
