//! Answers that show a secret once are never kept (docs/api.md).

/// Field names whose values are credentials.
fn is_secret_field(name: &str) -> bool {
    let n = name.to_ascii_lowercase();
    n == "secret"
        || n.ends_with("_secret")
        || n == "token"
        || n.ends_with("_token")
        || n == "password"
        || n.contains("private_key")
        || n == "boot_string"
}

/// Whether a JSON answer holds a credential anywhere (a record's secret, a
/// token): such an answer is shown once and never written to the store.
pub fn holds_secret(body: &[u8]) -> bool {
    fn walk(v: &serde_json::Value) -> bool {
        match v {
            serde_json::Value::Object(m) => m
                .iter()
                .any(|(k, v)| (is_secret_field(k) && !v.is_null()) || walk(v)),
            serde_json::Value::Array(a) => a.iter().any(walk),
            _ => false,
        }
    }
    serde_json::from_slice::<serde_json::Value>(body)
        .map(|v| walk(&v))
        .unwrap_or(false)
}
