//! The CPE's supervision: a DPE that panics is started again after a
//! growing back-off, and each death is an event in the store.

use crate::engine::cpe::{backoff, supervise, Spawn};
use crate::engine::dpe::Exit;
use crate::state::App;
use crate::store::sqlite::SqliteStore;
use crate::store::{EventFilter, Store};
use clap::Parser;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::time::Instant;

/// A master's App on an in-memory store holding one deployable.
pub(crate) fn app_with_deployable(dir: &std::path::Path) -> Arc<App> {
    app_with_args(dir, &[])
}

/// The same, started with `extra` flags and the admin token `cma_test`.
pub(crate) fn app_with_args(dir: &std::path::Path, extra: &[&str]) -> Arc<App> {
    let store = SqliteStore::in_memory().unwrap();
    store
        .replace_admin_token(&crate::auth::hash("cma_test"))
        .unwrap();
    store.insert_test_deployable(serde_json::json!({
        "name": "app",
        "assemblies": [{"name": "web", "image": "tiny"}]
    }));
    let d = dir.to_string_lossy().to_string();
    let mut argv = vec!["cloudmasterd", "--data-dir", &d];
    argv.extend_from_slice(extra);
    let args = crate::config::Args::parse_from(argv);
    let settings = crate::config::Config::load(&args).unwrap().settings;
    let keys = crate::bootcfg::Keyring::from_key([7; 32]);
    let uploads = crate::uploads::Uploads::new(&settings).unwrap();
    let store: Arc<dyn Store> = Arc::new(store);
    Arc::new(App::new(store, settings, uuid::Uuid::new_v4(), keys, uploads).unwrap())
}

#[test]
fn the_back_off_doubles_to_its_cap() {
    assert_eq!(backoff(0), Duration::from_millis(500));
    assert_eq!(backoff(1), Duration::from_secs(1));
    assert_eq!(backoff(3), Duration::from_secs(4));
    assert_eq!(backoff(10), Duration::from_secs(30));
    assert_eq!(backoff(u32::MAX), Duration::from_secs(30));
}

#[tokio::test(start_paused = true)]
async fn a_dpe_that_panics_twice_is_restarted_with_growing_back_off() {
    let dir = tempfile::tempdir().unwrap();
    let app = app_with_deployable(dir.path());
    let starts: Arc<Mutex<Vec<Instant>>> = Arc::default();
    let seen = starts.clone();
    let spawn: Spawn = Arc::new(move |_app, _id| {
        let n = {
            let mut s = seen.lock().unwrap();
            s.push(Instant::now());
            s.len()
        };
        Box::pin(async move {
            if n <= 2 {
                panic!("test: death {n}");
            }
            std::future::pending::<Exit>().await
        })
    });
    let cpe = tokio::spawn(supervise(app.clone(), spawn));
    // Bounded: at most 120 s of (paused, virtual) time.
    let deadline = Instant::now() + Duration::from_secs(120);
    while starts.lock().unwrap().len() < 3 && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let at = starts.lock().unwrap().clone();
    assert_eq!(at.len(), 3, "started {} times", at.len());
    let (first, second) = (at[1] - at[0], at[2] - at[1]);
    assert!(first >= Duration::from_millis(500), "{first:?}");
    assert!(second >= Duration::from_secs(1), "{second:?}");
    assert!(second > first, "{first:?} then {second:?}");
    // Still the third one: no more starts while it runs.
    tokio::time::sleep(Duration::from_secs(10)).await;
    assert_eq!(starts.lock().unwrap().len(), 3);
    // Both deaths are events with their detail.
    let filter = EventFilter {
        kind: Some("deployable.engine".into()),
        deployable: Some("app".into()),
    };
    let mut events = vec![];
    for _ in 0..100 {
        let f = filter.clone();
        events = app
            .db(move |s| s.events_filtered(0, &f, 100))
            .await
            .unwrap();
        if events.len() >= 2 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(events.len(), 2, "{events:?}");
    assert_eq!(
        events[0].detail.reason.as_deref(),
        Some("panicked: test: death 1")
    );
    assert_eq!(events[1].detail.counters["restarts"], "2");
    assert_eq!(events[1].detail.counters["backoff"], "1000ms");
    assert_eq!(events[0].detail.to.as_deref(), Some("restarting"));
    cpe.abort();
}
