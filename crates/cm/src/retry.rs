//! What cm tells the user when it gives up on a call that may have been
//! applied (docs/cli.md): the command that shows whether it was. When a call
//! is tried again, and how, is the typed client's (cm_client::retry).

use cm_client::reqwest::Method;

/// The command that shows whether a call that may have been applied was,
/// from its method, path and body.
pub fn check_hint(method: &Method, path: &str, body: Option<&[u8]>) -> String {
    let path = path.split('?').next().unwrap_or(path);
    let segs: Vec<&str> = path.trim_start_matches('/').split('/').collect();
    let body_name = || {
        body.and_then(|b| serde_json::from_slice::<serde_json::Value>(b).ok())
            .and_then(|v| v.get("name")?.as_str().map(str::to_string))
    };
    let hint = match segs.as_slice() {
        ["v1", "instances"] => body_name().map(|n| format!("cm instance show {n}")),
        ["v1", "instances", name, ..] => Some(format!("cm instance show {name}")),
        ["v1", "images"] => body_name().map(|n| format!("cm image show {n}")),
        ["v1", "images", ..] => Some("cm image list".to_string()),
        ["v1", "backups"] => Some(body_name().map_or_else(
            || "cm backup list".to_string(),
            |n| format!("cm backup show {n}"),
        )),
        ["v1", "backups", name, ..] => Some(format!("cm backup show {name}")),
        ["v1", "backup-schedules", ..] => Some("cm backup schedules".to_string()),
        ["v1", "flavors", ..] => Some("cm flavor list".to_string()),
        ["v1", "hosts", "join-token"] => Some("cm host join-token".to_string()),
        ["v1", "hosts", name] => Some(format!("cm host show {name}")),
        ["v1", "configs", ..] | ["boot", ..] => Some("cm config list".to_string()),
        ["v1", "config-domains", ..] => Some("cm config domain list".to_string()),
        _ => None,
    };
    hint.unwrap_or_else(|| {
        if *method == Method::DELETE || *method == Method::POST {
            "cm event list".to_string()
        } else {
            "cm operation list".to_string()
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hints_name_what_to_check() {
        let body = br#"{"name": "web-1", "image": "cm-test"}"#;
        assert_eq!(
            check_hint(&Method::POST, "/v1/instances", Some(body)),
            "cm instance show web-1"
        );
        assert_eq!(
            check_hint(&Method::DELETE, "/v1/instances/db-2", None),
            "cm instance show db-2"
        );
        assert_eq!(
            check_hint(&Method::POST, "/v1/instances/db-2/stop?x=1", None),
            "cm instance show db-2"
        );
        assert_eq!(
            check_hint(&Method::POST, "/v1/hosts/join-token", None),
            "cm host join-token"
        );
        assert_eq!(
            check_hint(&Method::POST, "/v1/backups", Some(br#"{"volume": "data"}"#)),
            "cm backup list"
        );
        assert_eq!(
            check_hint(&Method::POST, "/v1/backups/data-1/restore", None),
            "cm backup show data-1"
        );
        assert_eq!(
            check_hint(&Method::POST, "/v1/other", None),
            "cm event list"
        );
    }
}
