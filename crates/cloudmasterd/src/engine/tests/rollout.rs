//! Which change of a spec needs a new instance and which a new config.

use crate::engine::rollout::{diff_stand_in, Change};
use cm_api::deploy::DeployableSpec;

fn spec(image: &str, run: &str, memory: u64) -> DeployableSpec {
    serde_json::from_value(serde_json::json!({
        "name": "app",
        "assemblies": [
            {"name": "web", "image": image, "memory_mib": memory,
             "services": [{"name": "httpd", "run": run}]},
            {"name": "db", "image": "pg"}
        ]
    }))
    .unwrap()
}

#[test]
fn image_and_size_replace_services_reconfigure() {
    let a = spec("web1", "httpd", 64);
    assert_eq!(diff_stand_in(&a, &a), vec![]);
    assert_eq!(
        diff_stand_in(&a, &spec("web2", "httpd", 128)),
        vec![Change::Replace {
            assembly: "web".into(),
            why: "image, memory".into()
        }]
    );
    assert_eq!(
        diff_stand_in(&a, &spec("web1", "httpd -v", 64)),
        vec![Change::Reconfigure {
            assembly: "web".into(),
            why: "services".into()
        }]
    );
}
