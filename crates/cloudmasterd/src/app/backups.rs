//! Backups (docs/storage.md, "Backups (point 6)"): create (of a volume or
//! of an instance's root disk, optionally on a schedule), list, show,
//! delete, and the schedules; each slow action recorded with its operation
//! in one transaction. The chain's host makes or removes the file and the
//! reconciler completes the operation from its reports.

use super::{Error, Result};
use crate::idempotency::Keyed;
use crate::state::App;
use crate::store::backup::{
    BackupKeyed, BackupRow, NewBackup, NewSchedule, ScheduleRow, ScheduleTick,
};
use crate::store::{new_operation, now_ms, to_ts, HostId, Millis};
use axum::http::StatusCode;
use cm_api::backup::{
    parse_every, Backup, BackupAccepted, BackupSchedule, BackupState, CreateBackup,
};
use cm_api::backup_target::Target;
use cm_api::image::ImageKind;
use cm_api::operation::Operation;
use cm_api::snapshot::SnapshotOf;
use cm_api::validate;
use cm_api::words::OperationKind;
use uuid::Uuid;

const DEFAULT_KEEP: u32 = 24;

pub fn state(b: &BackupRow) -> BackupState {
    if b.deleted {
        BackupState::Deleting
    } else if b.facts.kind.is_some() {
        BackupState::Ready
    } else if b.facts.error.is_some() {
        BackupState::Error
    } else {
        BackupState::Creating
    }
}

pub fn view(b: &BackupRow) -> Backup {
    let f = &b.facts;
    Backup {
        id: b.id,
        name: b.name.clone(),
        state: state(b),
        of: b.of,
        source: b.source_name.clone(),
        source_id: b.disk_id,
        host: b.host_name.clone(),
        target: b.target.clone(),
        schedule: b.schedule_name.clone(),
        kind: f.kind,
        full_reason: f.full_reason.clone(),
        consistency: f.consistency,
        size_bytes: f.size_bytes,
        file_bytes: f.file_bytes,
        took_ms: f.took_ms,
        error: f.error.clone(),
        created_at: to_ts(b.created_at),
        mirrored: f.mirrored,
        mirror_error: f.mirror_error.clone(),
    }
}

pub fn schedule_view(s: &ScheduleRow) -> BackupSchedule {
    BackupSchedule {
        id: s.id,
        name: s.name.clone(),
        of: s.of,
        source: s.source_name.clone(),
        source_id: s.disk_id,
        target: s.target.clone(),
        every_secs: s.every_secs,
        keep: s.keep,
        next_at: to_ts(s.next_at),
        created_at: to_ts(s.created_at),
    }
}

/// `SOURCE-YYYYMMDD-HHMMSS` (UTC), the source cut so the name fits.
pub fn default_name(source: &str, now: Millis) -> String {
    let t = to_ts(now);
    let stamp = format!(
        "{:04}{:02}{:02}-{:02}{:02}{:02}",
        t.year(),
        u8::from(t.month()),
        t.day(),
        t.hour(),
        t.minute(),
        t.second()
    );
    let cut: String = source.chars().take(63 - 1 - stamp.len()).collect();
    format!("{}-{stamp}", cut.trim_end_matches('-'))
}

/// The disk a `volume` or `instance` names, with the source's name.
async fn disk_of(
    app: &App,
    volume: Option<String>,
    instance: Option<String>,
    creating: bool,
) -> Result<Option<(SnapshotOf, Uuid, String)>> {
    match (volume, instance) {
        (Some(_), Some(_)) => Err(Error::invalid(
            "volume",
            "give a volume or an instance, not both",
        )),
        (None, None) => Ok(None),
        (Some(v), None) => {
            validate::name("volume", &v, false)?;
            let row = app
                .db(move |s| s.get_volume(&v))
                .await
                .map_err(|e| e.field("volume"))?;
            Ok(Some((SnapshotOf::Volume, row.id.uuid(), row.name)))
        }
        (None, Some(i)) => {
            validate::name("instance", &i, false)?;
            let row = app
                .db(move |s| s.get_instance(&i))
                .await
                .map_err(|e| e.field("instance"))?;
            // A persistent root is a volume: its chain is the volume's.
            if let Some(root) = row.root_volume {
                let v = app
                    .db(move |s| s.get_volume(&root))
                    .await
                    .map_err(|e| e.field("instance"))?;
                return Ok(Some((SnapshotOf::Volume, v.id.uuid(), row.name)));
            }
            if !creating {
                return Ok(Some((SnapshotOf::InstanceRoot, row.id.uuid(), row.name)));
            }
            let image = row.spec.image_id.to_string();
            let img = app.db(move |s| s.get_image(&image)).await?;
            if img.kind == ImageKind::Kernel {
                return Err(Error::conflict(format!(
                    "instance '{}' boots kernel image {}: it has no root disk to back up",
                    row.name, img.name
                ))
                .field("instance"));
            }
            Ok(Some((SnapshotOf::InstanceRoot, row.id.uuid(), row.name)))
        }
    }
}

pub async fn list(
    app: &App,
    volume: Option<String>,
    instance: Option<String>,
) -> Result<Vec<Backup>> {
    let named = match (&volume, &instance) {
        (Some(v), _) => Some((SnapshotOf::Volume, v.clone())),
        (None, Some(i)) => Some((SnapshotOf::InstanceRoot, i.clone())),
        (None, None) => None,
    };
    let disk = match disk_of(app, volume, instance, false).await {
        Ok(d) => d,
        // A source deleted since: its backups, by the name they were made
        // under (they outlive it); none at all is the 404 it was.
        Err(e) if e.code() == cm_api::ErrorCode::NotFound => {
            let Some((of, name)) = named else {
                return Err(e);
            };
            let rows = app.db(|s| s.list_backups()).await?;
            let found: Vec<Backup> = rows
                .iter()
                .filter(|b| b.source_name == name && b.of == of)
                .map(view)
                .collect();
            return if found.is_empty() { Err(e) } else { Ok(found) };
        }
        Err(e) => return Err(e),
    };
    let rows = app.db(|s| s.list_backups()).await?;
    Ok(rows
        .iter()
        .filter(|b| disk.as_ref().is_none_or(|(_, d, _)| b.disk_id == *d))
        .map(view)
        .collect())
}

pub async fn show(app: &App, name: String) -> Result<Backup> {
    Ok(view(&app.db(move |s| s.get_backup(&name)).await?))
}

fn keyed_answer(keyed: Option<Keyed>, op: &Operation) -> Option<BackupKeyed> {
    keyed.map(|k| {
        let op = op.clone();
        BackupKeyed {
            record: k
                .0
                .record(StatusCode::ACCEPTED.as_u16(), Vec::new(), now_ms()),
            render: Box::new(move |row, sched| {
                serde_json::to_vec(&BackupAccepted {
                    backup: view(row),
                    operation: op.clone(),
                    schedule: sched.map(schedule_view),
                })
            }),
        }
    })
}

pub(super) fn changed(app: &App, host: HostId) {
    app.hub.notify(host);
    app.ops_changed();
    app.kick.notify_one();
}

/// The schedule a request asks for (`every`, `keep`), checked.
fn schedule_of(req: &CreateBackup, source: &str) -> Result<Option<NewSchedule>> {
    let Some(every) = &req.every else {
        if req.keep.is_some() {
            return Err(Error::invalid(
                "keep",
                "keep is for a schedule: give every too",
            ));
        }
        return Ok(None);
    };
    let every_secs = match parse_every(every) {
        Some(s) if s >= 60 => s,
        _ => {
            return Err(Error::invalid(
                "every",
                format!(
                "invalid every '{}': a whole number and s, m, h or d, at least 1m (30m, 1h, 1d)",
                validate::printable(every)
            ),
            ))
        }
    };
    let keep = req.keep.unwrap_or(DEFAULT_KEEP);
    if !(1..=1000).contains(&keep) {
        return Err(Error::invalid(
            "keep",
            format!("keep must be between 1 and 1000, got {keep}"),
        ));
    }
    let word = every.trim();
    let cut: String = source.chars().take(63 - 7 - word.len()).collect();
    let name = format!("{}-every-{word}", cut.trim_end_matches('-'));
    validate::name("every", &name, false)?;
    Ok(Some(NewSchedule {
        id: Uuid::new_v4(),
        name,
        every_secs,
        keep,
    }))
}

pub async fn create(app: &App, keyed: Option<Keyed>, req: CreateBackup) -> Result<BackupAccepted> {
    if let Some(name) = &req.name {
        validate::name("name", name, false)?;
    }
    // Kept canonical; `None`: the chain's own target (resolved, with the
    // one-chain-one-place check, in the store's transaction).
    let target = match &req.to {
        None => None,
        Some(to) => Some(
            Target::parse(to)
                .map_err(|why| {
                    Error::invalid(
                        "to",
                        format!(
                            "invalid target '{}': {}",
                            validate::printable(to),
                            why.replace(char::is_control, "?")
                        ),
                    )
                })?
                .to_string(),
        ),
    };
    let Some((of, disk_id, source)) =
        disk_of(app, req.volume.clone(), req.instance.clone(), true).await?
    else {
        return Err(Error::invalid(
            "volume",
            "give the volume (volume) or the instance (instance) to back up",
        ));
    };
    let schedule = schedule_of(&req, &source)?;
    let new = NewBackup {
        id: Uuid::new_v4(),
        name: req
            .name
            .clone()
            .unwrap_or_else(|| default_name(&source, now_ms())),
        of,
        disk_id,
        target,
    };
    let op = new_operation(
        OperationKind::BackupCreate,
        &new.name,
        new.id,
        "recorded; waiting for the host to make it",
    );
    let answer = keyed_answer(keyed, &op);
    let o = op.clone();
    let (row, sched) = app
        .db(move |s| s.create_backup(&new, schedule.as_ref(), &o, answer.as_ref(), now_ms()))
        .await
        .map_err(|e| match e {
            Error::AlreadyExists(_) => e.field("name"),
            e => e,
        })?;
    changed(app, row.host_id);
    Ok(BackupAccepted {
        backup: view(&row),
        operation: op,
        schedule: sched.as_ref().map(schedule_view),
    })
}

pub async fn delete(app: &App, keyed: Option<Keyed>, name: String) -> Result<BackupAccepted> {
    let n = name.clone();
    let row = app.db(move |s| s.get_backup(&n)).await?;
    let op = new_operation(
        OperationKind::BackupDelete,
        &row.name,
        row.id,
        "waiting for the host to remove it",
    );
    let answer = keyed_answer(keyed, &op);
    let (o, id) = (op.clone(), row.id);
    let row = app
        .db(move |s| s.delete_backup(id, &o, answer.as_ref(), now_ms()))
        .await?;
    changed(app, row.host_id);
    Ok(BackupAccepted {
        backup: view(&row),
        operation: op,
        schedule: None,
    })
}

pub fn state_word(s: BackupState) -> &'static str {
    match s {
        BackupState::Creating => "still being made",
        BackupState::Ready => "ready",
        BackupState::Deleting => "being deleted",
        BackupState::Error => "failed",
    }
}

pub async fn schedules(app: &App) -> Result<Vec<BackupSchedule>> {
    let rows = app.db(|s| s.list_backup_schedules()).await?;
    Ok(rows.iter().map(schedule_view).collect())
}

pub async fn unschedule(app: &App, name: String) -> Result<BackupSchedule> {
    let row = app.db(move |s| s.delete_backup_schedule(&name)).await?;
    Ok(schedule_view(&row))
}

/// How often the schedules' retention and sources are looked at when no
/// schedule is due (a due one is served at the reconciler's next pass).
const RETENTION_EVERY_MS: Millis = 5_000;
static LAST_TICK: std::sync::atomic::AtomicI64 = std::sync::atomic::AtomicI64::new(0);

/// Make what the schedules owe now (the reconciler calls it each pass; it
/// writes only when there are schedules, and then when one is due or
/// every few seconds for retention).
pub async fn tick(app: &App) -> Result<ScheduleTick> {
    use std::sync::atomic::Ordering;
    let now = now_ms();
    let scheds = app.db(|s| s.list_backup_schedules()).await?;
    let due = scheds.iter().any(|s| s.next_at <= now);
    let last = LAST_TICK.load(Ordering::Relaxed);
    if scheds.is_empty() || (!due && now - last < RETENTION_EVERY_MS) {
        return Ok(ScheduleTick::default());
    }
    LAST_TICK.store(now, Ordering::Relaxed);
    let out = app
        .db(|s| {
            let now = now_ms();
            s.tick_backup_schedules(
                now,
                &|sch| default_name(&sch.source_name, now),
                &|id, name, kind| {
                    let words = match kind {
                        OperationKind::BackupDelete => {
                            "past its schedule's keep; waiting for the host to remove it"
                        }
                        _ => "made by its schedule; waiting for the host to make it",
                    };
                    new_operation(kind, name, id, words)
                },
                &super::backup_events::tick_events,
            )
        })
        .await?;
    let mut hosts: Vec<HostId> = out
        .made
        .iter()
        .chain(&out.expired)
        .map(|b| b.host_id)
        .collect();
    hosts.dedup();
    for h in hosts {
        changed(app, h);
    }
    for ev in out.events.clone() {
        super::owned::publish(app, ev);
    }
    Ok(out)
}
