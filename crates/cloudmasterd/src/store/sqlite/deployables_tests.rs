//! Deployables in the store: apply in one transaction with its event,
//! generations, unchanged specs writing nothing, history and delete.

use super::*;
use cm_api::deploy::{self, DeployableSpec, SpecFormat};
use cm_api::event::EventDetail;
use cm_api::words::{DeployableState, EventKind};

const V1: &str = "name: shop\nassemblies:\n  - {name: web, image: img, count: 2}\n";
const V2: &str = "name: shop\nassemblies:\n  - {name: web, image: img, count: 3}\n";

fn spec(text: &str) -> DeployableSpec {
    deploy::load(SpecFormat::Yaml, text).unwrap()
}

fn apply(s: &SqliteStore, text: &str, now: Millis) -> (DeployableRow, Applied) {
    let d = EventDetail {
        reason: Some("count 2 → 3".into()),
        ..Default::default()
    };
    let (row, applied, _) = s
        .apply_deployable(&spec(text), SpecFormat::Yaml, text, &d, now)
        .unwrap();
    (row, applied)
}

#[test]
fn apply_creates_then_adds_generations_and_unchanged_writes_nothing() {
    let s = SqliteStore::in_memory().unwrap();
    let (row, a) = apply(&s, V1, 1000);
    assert_eq!(a, Applied::Created);
    assert_eq!(
        (row.generation, row.state),
        (1, DeployableState::Converging)
    );
    assert_eq!(row.rollout_from, None);
    let before = s.events_since(0, None, 100).unwrap().len();
    let commits = s.generation.load(std::sync::atomic::Ordering::SeqCst);
    // The same spec again (even written differently): nothing written.
    let (same, a) = apply(
        &s,
        "name: shop\nassemblies: [{name: web, count: 2, image: img}]",
        2000,
    );
    assert_eq!(a, Applied::Unchanged);
    assert_eq!(same, row);
    assert_eq!(s.events_since(0, None, 100).unwrap().len(), before);
    assert_eq!(
        s.generation.load(std::sync::atomic::Ordering::SeqCst),
        commits
    );
    let (row2, a) = apply(&s, V2, 3000);
    assert_eq!(a, Applied::Changed);
    assert_eq!(
        (row2.id, row2.generation, row2.rollout_from),
        (row.id, 2, Some(1))
    );
    assert_eq!(row2.updated_at, 3000);
    let hist = s.deployable_history(row.id).unwrap();
    assert_eq!(hist.len(), 2);
    assert_eq!((hist[0].generation, hist[0].source.as_str()), (1, V1));
    assert_eq!(hist[1].spec, spec(V2));
    assert_eq!(
        s.deployable_spec(row.id, 2).unwrap().format,
        SpecFormat::Yaml
    );
    assert!(matches!(
        s.deployable_spec(row.id, 7),
        Err(StoreError::NotFound { .. })
    ));
    // Each generation came with its event, by deployable.
    let f = EventFilter {
        kind: None,
        deployable: Some("shop".into()),
    };
    let evs = s.events_filtered(0, &f, 100).unwrap();
    assert_eq!(evs.len(), 2);
    assert_eq!(evs[1].kind.as_str(), EventKind::DeployableApplied.as_str());
    assert_eq!(evs[1].detail.generation, Some(2));
    assert_eq!(
        evs[1].message,
        "deployable shop at generation 2: count 2 → 3"
    );
}

#[test]
fn list_get_and_delete() {
    let s = SqliteStore::in_memory().unwrap();
    let (row, _) = apply(&s, V1, 1000);
    apply(&s, &V1.replace("shop", "blog"), 1000);
    let names: Vec<String> = s
        .list_deployables()
        .unwrap()
        .into_iter()
        .map(|d| d.name)
        .collect();
    assert_eq!(names, ["blog", "shop"]);
    assert_eq!(s.get_deployable(&row.id.to_string()).unwrap().name, "shop");
    assert!(matches!(
        s.get_deployable("nope"),
        Err(StoreError::NotFound { .. })
    ));
    assert!(s.list_slots(row.id).unwrap().is_empty());
    let (gone, ev) = s.delete_deployable("shop", 5000).unwrap();
    assert!(gone.deleted);
    assert_eq!(gone.state, DeployableState::Deleting);
    assert_eq!(
        ev.map(|e| e.kind.as_str().to_string()).as_deref(),
        Some("deployable.deleted")
    );
    // Deleting twice is harmless; the list leaves it out; apply waits.
    assert!(s.delete_deployable("shop", 6000).unwrap().1.is_none());
    assert_eq!(s.list_deployables().unwrap().len(), 1);
    let again = s.apply_deployable(
        &spec(V1),
        SpecFormat::Yaml,
        V1,
        &EventDetail::default(),
        7000,
    );
    assert!(matches!(again, Err(StoreError::Conflict(_))));
}

#[test]
fn slots_read_back_with_their_words() {
    let s = SqliteStore::in_memory().unwrap();
    let (row, _) = apply(&s, V1, 1000);
    s.tx(|c| {
        c.execute(
            "INSERT INTO deployable_slots (deployable_id, assembly, idx, incarnation, spec_generation,
                 state, state_since, action, windows, retiring, updated_at)
             VALUES (?1, 'web', 1, 2, 1, 'acting', 10, 'replace', '{\"replace\":[5]}', '[]', 10)",
            rusqlite::params![row.id.to_string()],
        )?;
        Ok(())
    })
    .unwrap();
    let slots = s.list_slots(row.id).unwrap();
    assert_eq!(slots.len(), 1);
    assert_eq!(slots[0].name(), "web-1");
    assert_eq!(slots[0].state, cm_api::words::SlotState::Acting);
    assert_eq!(slots[0].action, Some(cm_api::words::EngineAction::Replace));
    assert_eq!(slots[0].windows.get("replace"), Some(&vec![5]));
}
