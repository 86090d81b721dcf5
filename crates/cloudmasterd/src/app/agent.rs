//! What hosts ask of the master with their host token: registration (with
//! the join token), the desired-state long-poll, reports of what runs (and
//! the events they make), replies to requests, and image files.

use super::{Error, Result};
use crate::auth::{self, Principal};
use crate::images;
use crate::state::App;
use crate::store::snapshot::HostSnapshots;
use crate::store::{now_ms, HostId, InstanceId, InstanceRow, ReportOutcome, VolumeRow};
use crate::view;
use cm_api::agent::{
    BootInfo, DesiredAttachment, DesiredInstance, DesiredState, DesiredVolume, HostReport,
    ImageRef, RegisterHost, Registered,
};
use cm_api::image::{FileRole, Image, ImageFile};
use cm_api::validate;
use cm_api::words::EventKind;
use std::collections::HashMap;
use std::path::PathBuf;
use std::time::Duration;
use tokio::time::Instant;
use uuid::Uuid;

/// A host joins with the cloud's join token and gets its own token.
pub async fn register(app: &App, req: RegisterHost) -> Result<Registered> {
    let presented = req.join_token.clone();
    let ok = app
        .db(move |s| auth::join_token_matches(s, &presented))
        .await?;
    if !ok {
        return Err(Error::Unauthorized("wrong join token".into()).field("join_token"));
    }
    validate::name("name", &req.name, false)?;
    let token = auth::new_token("cmh");
    let hash = auth::hash(&token);
    let (name, facts, h) = (req.name.clone(), req.facts.clone(), hash.clone());
    let reserved = app.settings.host_reserved_mib;
    let host_id = app
        .db(move |s| s.register_host(&name, &h, &facts, reserved))
        .await
        .map_err(|e| match e {
            Error::Conflict(_) => e.field("name"),
            _ => e,
        })?;
    app.remember_token(hash, Principal::Host(host_id));
    app.hub.notify(host_id);
    app.event(
        EventKind::HostRegistered,
        &req.name,
        &format!(
            "{} MiB, {} vCPUs, accel {}",
            req.facts.memory_total_mib, req.facts.vcpus, req.facts.accel
        ),
    )
    .await;
    Ok(Registered {
        host_id: host_id.uuid(),
        host_token: token,
        cloud_id: app.cloud_id,
    })
}

/// What a host's VMs are to hold: per instance, its volumes in order and
/// the detaches that may restart it (docs/storage.md).
type Attachments = HashMap<InstanceId, (Vec<DesiredAttachment>, Vec<Uuid>)>;

/// The volume part of a host's desired state.
fn desired_volumes(
    rows: &[VolumeRow],
    snaps: &HostSnapshots,
) -> (Vec<DesiredVolume>, Vec<Uuid>, Attachments) {
    let mut sorted: Vec<&VolumeRow> = rows.iter().collect();
    sorted.sort_by_key(|v| v.attach_pos);
    let (mut volumes, mut deleted, mut attach) = (Vec::new(), Vec::new(), Attachments::new());
    for v in sorted {
        if v.deleted {
            deleted.push(v.id.uuid());
            continue;
        }
        let disk = snaps.disks.get(&v.id.uuid()).cloned().unwrap_or_default();
        volumes.push(DesiredVolume {
            id: v.id.uuid(),
            name: v.name.clone(),
            size_bytes: v.size_bytes,
            snapshots: disk.snapshots,
            deleted_snapshots: disk.deleted,
            revert: disk.revert,
            clone_from: snaps.clones.get(&v.id.uuid()).copied(),
            image: None,
            import: None,
        });
        if let Some(i) = v.desired_instance() {
            attach.entry(i).or_default().0.push(DesiredAttachment {
                volume: v.id.uuid(),
                name: v.name.clone(),
            });
        }
        if let Some((h, _)) = v.facts.holder.as_ref().filter(|_| v.force_detach) {
            if v.desired_instance() != Some(*h) {
                attach.entry(*h).or_default().1.push(v.id.uuid());
            }
        }
    }
    volumes.sort_by(|a, b| a.name.cmp(&b.name));
    (volumes, deleted, attach)
}

fn desired_instance(
    app: &App,
    row: &InstanceRow,
    images: &HashMap<Uuid, Image>,
    attach: &Attachments,
    snaps: &HostSnapshots,
) -> Option<DesiredInstance> {
    let root = snaps.disks.get(&row.id.uuid()).cloned().unwrap_or_default();
    let img = images.get(&row.spec.image_id.uuid())?;
    // Secrets are derived again for every answer; they are never stored.
    // The NoCloud, re-key and dynamic-instance credentials are those of the
    // launch `boot_gen`: a new start makes new ones (docs/security.md).
    let boot = if row.config.is_some() {
        Some(BootInfo {
            who: row.id.to_string(),
            secret: app.keys.record_secret(row.id.uuid(), 1),
            nocloud: Some(app.keys.nocloud_secret(row.id.uuid(), row.desired.boot_gen)),
            rekey: Some(app.keys.rekey_secret(row.id.uuid(), row.desired.boot_gen)),
        })
    } else {
        row.spec.dynamic_domain.as_ref().map(|d| BootInfo {
            who: format!("@{d}/{}", row.id),
            secret: app
                .keys
                .instance_secret(d, row.id.uuid(), row.desired.boot_gen),
            nocloud: None,
            rekey: Some(app.keys.rekey_secret(row.id.uuid(), row.desired.boot_gen)),
        })
    };
    Some(DesiredInstance {
        health: row.spec.health.clone(),
        id: row.id.uuid(),
        name: row.name.clone(),
        power: row.desired.power,
        boot_gen: row.desired.boot_gen,
        reboot_gen: row.desired.reboot_gen,
        stop_timeout_secs: row
            .desired
            .stop_timeout_now
            .unwrap_or(row.spec.stop_timeout_secs),
        memory_mib: row.spec.memory_mib,
        vcpus: row.spec.vcpus,
        accel: row.spec.accel,
        image: ImageRef {
            id: img.id,
            name: img.name.clone(),
            kind: img.kind,
            files: img.files.clone(),
            cmdline: img.cmdline.clone(),
        },
        ports: row.spec.ports.clone(),
        disk_gib: row.spec.disk_gib,
        boot,
        volumes: attach.get(&row.id).map(|a| a.0.clone()).unwrap_or_default(),
        force_detach: attach.get(&row.id).map(|a| a.1.clone()).unwrap_or_default(),
        root_snapshots: root.snapshots,
        root_deleted_snapshots: root.deleted,
        root_revert: root.revert,
        root_volume: None,
    })
}

/// The long-poll: answers at once when the host's generation is past
/// `after` or requests wait for it, else when either happens or `wait` ends.
pub async fn desired(
    app: &App,
    host: HostId,
    after: Option<u64>,
    wait: Duration,
) -> Result<DesiredState> {
    let after = after.unwrap_or(0);
    let deadline = Instant::now() + wait;
    let mut wake = app.hub.subscribe(host);
    loop {
        wake.borrow_and_update();
        let transfers = super::transfers::desired(app, host)
            .await
            .map_err(removed_while_waiting)?;
        let (generation, rows, imgs, deleted, (vols, snaps), chains) = app
            .db(move |s| {
                let (g, rows) = s.host_desired(host)?;
                let vols = (s.host_volumes(host)?, s.host_snapshots(host)?);
                let chains = s.host_chains(host)?;
                Ok((
                    g,
                    rows,
                    s.list_images()?,
                    s.host_deletions(host)?,
                    vols,
                    chains,
                ))
            })
            .await
            .map_err(removed_while_waiting)?;
        if generation > after || app.hub.has_requests(host) || Instant::now() >= deadline {
            let images: HashMap<Uuid, Image> = imgs.into_iter().map(|i| (i.id, i)).collect();
            let (mut volumes, mut deleted_volumes, attach) = desired_volumes(&vols, &snaps);
            add_transfers(&mut volumes, &mut deleted_volumes, &transfers);
            let mut instances: Vec<DesiredInstance> = rows
                .iter()
                .filter_map(|r| desired_instance(app, r, &images, &attach, &snaps))
                .collect();
            super::roots::desired_roots(&vols, &images, &mut volumes, &mut instances);
            return Ok(DesiredState {
                cloud_id: app.cloud_id,
                generation,
                instances,
                requests: app.hub.take_requests(host),
                report_interval_secs: u32::try_from(app.settings.report_interval.as_secs())
                    .unwrap_or(u32::MAX),
                deleted,
                volumes,
                deleted_volumes,
                exports: transfers.exports,
                chains,
            });
        }
        let _ = tokio::time::timeout_at(deadline, wake.changed()).await;
    }
}

/// A host's part of transfers: a volume moving here is made from its
/// transfer once the master holds it; a file of a volume living elsewhere
/// (moved away, or a failed move's copy) is removed.
fn add_transfers(
    volumes: &mut Vec<DesiredVolume>,
    deleted: &mut Vec<Uuid>,
    t: &crate::store::transfer::HostTransfers,
) {
    for m in &t.imports {
        let Some((size, sha256)) = m.transfer.received.clone() else {
            continue;
        };
        volumes.push(DesiredVolume {
            id: m.volume_id.uuid(),
            name: m.volume_name.clone(),
            size_bytes: m.size_bytes,
            snapshots: Vec::new(),
            deleted_snapshots: Vec::new(),
            revert: None,
            clone_from: None,
            image: None,
            import: Some(cm_api::agent::DiskImport {
                transfer: m.transfer.id,
                size,
                sha256,
            }),
        });
    }
    volumes.sort_by(|a, b| a.name.cmp(&b.name));
    for id in &t.leftovers {
        if !deleted.contains(id) && !volumes.iter().any(|v| v.id == *id) {
            deleted.push(*id);
        }
    }
}

/// A host removed while its long-poll waited: its token is gone too.
fn removed_while_waiting(e: Error) -> Error {
    match e {
        Error::NotFound(_) => Error::Unauthorized("this host was removed from the cloud".into()),
        e => e,
    }
}

/// Record a host's report: its facts, its instances' observed state, the
/// guests' heartbeats it relays and the VMs it keeps that are no instance.
pub async fn report(app: &App, host: HostId, rep: HostReport) -> Result<()> {
    let now = now_ms();
    let was = app
        .db(move |s| s.get_host(&host.to_string()))
        .await
        .map_err(removed_while_waiting)?;
    let was_down =
        view::host_state(&was, now, app.settings.host_down_after) == cm_api::host::HostState::Down;
    // The guests' heartbeats, relayed: seen `age_ms` ago by the host.
    let beats: Vec<_> = rep
        .instances
        .iter()
        .filter_map(|o| {
            o.guest.as_ref().map(|g| {
                (
                    o.id.into(),
                    g.beat.seq,
                    // At most a day old: the cap also makes the cast exact.
                    now - i64::try_from(g.age_ms.min(86_400_000)).unwrap_or(0),
                    g.beat.services.clone(),
                )
            })
        })
        .collect();
    let host_name = was.name.clone();
    let rep_transfers = (rep.exports.clone(), rep.volumes.clone());
    let (out, new_orphans, beat_owners, (vols, snaps, backups)) = app
        .db(move |s| {
            let out = s.record_report(host, &rep.facts, rep.generation, &rep.instances, now)?;
            let owners = s.record_guest_beats(host, &beats)?;
            let orphans = s.record_orphans(host, &rep.orphans, now)?;
            let vols = s.record_volume_report(
                host,
                &rep.volumes,
                &rep.instances,
                &super::volume_events::events,
                now,
            )?;
            let snaps = s.record_snapshot_report(
                host,
                &rep.volumes,
                &rep.instances,
                &super::snapshot_events::events,
                now,
            )?;
            let backups =
                s.record_backup_report(host, &rep.backups, &super::backup_events::events, now)?;
            Ok((out, orphans, owners, (vols, snaps, backups)))
        })
        .await?;
    super::volume_events::published(app, vols);
    if let Err(e) = super::transfers::report(app, host, rep_transfers).await {
        tracing::error!("transfers of a report: {e}");
    }
    super::snapshot_events::published(app, snaps);
    super::backup_events::published(app, backups);
    // The policy engine of each deployable whose instances changed (a
    // state, the guest's liveness or its services) looks at once.
    let changed_owners = out
        .changed
        .iter()
        .map(|c| &c.after)
        .chain(&out.purged)
        .filter_map(|row| row.spec.owner.as_ref().map(|o| o.deployable));
    for d in changed_owners.chain(beat_owners) {
        app.engines.wake(d);
    }
    report_events(app, &host_name, was_down, &out, &new_orphans).await;
    Ok(())
}

/// The events a report makes: new orphans, instance state changes, purges.
async fn report_events(
    app: &App,
    host_name: &str,
    was_down: bool,
    out: &ReportOutcome,
    new_orphans: &[crate::store::OrphanRow],
) {
    for o in new_orphans {
        app.event(
            EventKind::HostOrphan,
            host_name,
            &format!(
                "VM {} ({}) is in no desired state of this host: stopped and kept \
                 (cm host orphans {host_name})",
                o.name, o.vm_id
            ),
        )
        .await;
    }
    for ch in &out.changed {
        let (a, ra) = view::instance_state(&ch.before, !was_down);
        let (b, rb) = view::instance_state(&ch.after, true);
        if a != b || ra != rb {
            let msg = match rb {
                Some(r) => format!("{b} ({r})"),
                None => b.to_string(),
            };
            app.event(EventKind::InstanceState, &ch.after.name, &msg)
                .await;
        }
    }
    for gone in &out.purged {
        app.event(
            EventKind::InstanceDeleted,
            &gone.name,
            &format!("removed from {}", gone.host_name),
        )
        .await;
    }
    if !out.changed.is_empty() || !out.purged.is_empty() {
        app.ops_changed();
    }
    // The policy engine decides about owned instances (crate::engine).
    let owners = out.changed.iter().map(|c| &c.after).chain(&out.purged);
    for o in owners.filter_map(|r| r.spec.owner.as_ref()) {
        app.engines.wake(o.deployable);
    }
    app.kick.notify_one();
}

/// An image file a host fetches: where it is, and what it should be.
pub async fn image_file(app: &App, id: Uuid, role: &str) -> Result<(PathBuf, ImageFile)> {
    let role = FileRole::parse(role)
        .ok_or_else(|| Error::invalid("role", "role must be kernel, initrd or disk"))?;
    let image = app.db(move |s| s.get_image(&id.to_string())).await?;
    let file = image.file(role).cloned().ok_or_else(|| {
        Error::NotFound(format!("image {} has no {} file", image.name, role.as_str()).into())
    })?;
    Ok((
        images::file_path(&app.settings.images_dir(), id, role),
        file,
    ))
}
