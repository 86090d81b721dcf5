//! Hosts as the admin sees them: list, show, enable/disable, remove (with
//! its token revoked), evacuation of a dead host, its orphan VMs, and the
//! join and admin tokens.

use super::{Error, Result};
use crate::auth;
use crate::scheduler;
use crate::state::App;
use crate::store::{now_ms, to_ts, OrphanRow};
use crate::view;
use cm_api::answer::TokenFile;
use cm_api::host::{
    EvacuateHost, Evacuated, Evacuation, Host, HostRemoved, HostState, Orphan, PurgeOrphans,
    UpdateHost,
};
use cm_api::words::EventKind;

pub async fn list(app: &App) -> Result<Vec<Host>> {
    let rows = app.db(|s| s.list_hosts()).await?;
    let now = now_ms();
    Ok(rows
        .iter()
        .map(|h| view::host(h, now, app.settings.host_down_after))
        .collect())
}

pub async fn show(app: &App, name: String) -> Result<Host> {
    let row = app.db(move |s| s.get_host(&name)).await?;
    Ok(view::host(&row, now_ms(), app.settings.host_down_after))
}

pub async fn update(app: &App, name: String, req: UpdateHost) -> Result<Host> {
    if req.enabled.is_none() && req.memory_reserved_mib.is_none() {
        return Err(Error::invalid(
            "enabled",
            "nothing to change: give enabled or memory_reserved_mib",
        ));
    }
    let row = app
        .db(move |s| s.update_host(&name, req.enabled, req.memory_reserved_mib))
        .await?;
    if let Some(e) = req.enabled {
        let what = if e {
            "enabled"
        } else {
            "disabled: no new instances"
        };
        app.event(EventKind::HostState, &row.name, what).await;
    }
    Ok(view::host(&row, now_ms(), app.settings.host_down_after))
}

/// Forget a host: its token stops working at once, so its agent cannot come
/// back on its own (docs/host.md). With `force`, its instances are forgotten.
pub async fn delete(app: &App, name: String, force: bool) -> Result<HostRemoved> {
    let (row, forgotten) = app
        .db(move |s| s.delete_host(&name, force, now_ms()))
        .await?;
    app.forget_host_tokens(row.id);
    // Its long-poll, if one waits, answers now: the host is refused at once.
    app.hub.notify(row.id);
    let names: Vec<String> = forgotten.iter().map(|i| i.name.clone()).collect();
    let what = if names.is_empty() {
        "removed from the cloud; its token is revoked".to_string()
    } else {
        format!(
            "removed from the cloud with --force; its token is revoked; instances forgotten: {}",
            names.join(", ")
        )
    };
    app.event(EventKind::HostDeleted, &row.name, &what).await;
    for i in &forgotten {
        app.event(
            EventKind::InstanceDeleted,
            &i.name,
            &format!("forgotten with host {}", row.name),
        )
        .await;
    }
    app.ops_changed();
    Ok(HostRemoved {
        name: row.name,
        id: row.id.uuid(),
        forgotten_instances: names,
    })
}

/// Where the master keeps a token, as the answer names it.
pub fn token_file(app: &App, name: &str) -> String {
    app.settings.data_dir.join(name).display().to_string()
}

/// The join token, from the master's `join.token` file: the store keeps
/// only its hash (docs/security.md).
pub async fn join_token(app: &App) -> Result<TokenFile> {
    let dir = app.settings.data_dir.clone();
    let t = app
        .db_with(move |s| auth::join_token_from_file(s, &dir))
        .await?;
    let t = t.ok_or_else(|| {
        Error::conflict(format!(
            "the master keeps only a hash of the join token, and {} no longer holds it: \
             make a new one with `cm host join-token --rotate`",
            app.settings.data_dir.join(auth::JOIN_TOKEN_FILE).display()
        ))
    })?;
    Ok(TokenFile {
        token: t,
        file: token_file(app, auth::JOIN_TOKEN_FILE),
    })
}

pub async fn rotate_join_token(app: &App) -> Result<TokenFile> {
    let dir = app.settings.data_dir.clone();
    let t = app
        .db_with(move |s| auth::rotate_join_token(s, &dir))
        .await?;
    app.event(
        EventKind::HostJoinToken,
        "cloud",
        "join token rotated: the old one no longer registers hosts",
    )
    .await;
    Ok(TokenFile {
        token: t,
        file: token_file(app, auth::JOIN_TOKEN_FILE),
    })
}

/// A new admin token; the old one stops working at once.
pub async fn rotate_admin(app: &App) -> Result<TokenFile> {
    let dir = app.settings.data_dir.clone();
    let token = app
        .db_with(move |s| auth::rotate_admin_token(s, &dir))
        .await?;
    // Take the change up now rather than at the next refresh.
    app.refresh_tokens().await?;
    app.event(
        EventKind::TokenRotated,
        "admin",
        "admin token rotated: the old one no longer works",
    )
    .await;
    Ok(TokenFile {
        token,
        file: token_file(app, auth::ADMIN_TOKEN_FILE),
    })
}

/// Rebuild a dead host's instances on other hosts from their images (their
/// disks on the dead host are lost to them; if the host returns, its VMs
/// are orphans: stopped and kept).
pub async fn evacuate(app: &App, name: String, req: EvacuateHost) -> Result<Evacuation> {
    let down_after = app.settings.host_down_after;
    let (host, moved) = app
        .db(move |s| {
            let now = now_ms();
            s.evacuate_host(
                &name,
                req.force,
                &|h| view::host_state(h, now, down_after) == HostState::Down,
                &|row, caps| {
                    let sched = scheduler::Request {
                        memory_mib: row.spec.memory_mib,
                        ports: row.spec.ports.clone(),
                        accel: row.spec.accel,
                        host: None,
                        now,
                        down_after,
                        avoid: vec![],
                        siblings: vec![],
                        spread: cm_api::deploy::Spread::None,
                    };
                    scheduler::place(&sched, caps)
                },
                now,
            )
        })
        .await?;
    let mut out = Vec::new();
    for m in &moved {
        app.hub.notify(m.row.host_id);
        if let Some(o) = &m.row.spec.owner {
            app.engines.wake(o.deployable);
        }
        app.event(
            EventKind::InstanceEvacuated,
            &m.row.name,
            &format!(
                "rebuilt on {} from image {} (its disk on {} is lost to it)",
                m.row.host_name, m.row.spec.image_name, host.name
            ),
        )
        .await;
        out.push(Evacuated {
            instance: m.row.name.clone(),
            id: m.row.id.uuid(),
            to_host: m.row.host_name.clone(),
            operation: m.op.clone(),
        });
    }
    app.hub.notify(host.id);
    app.event(
        EventKind::HostEvacuated,
        &host.name,
        &format!("{} instance(s) moved to other hosts", moved.len()),
    )
    .await;
    app.ops_changed();
    app.kick.notify_one();
    Ok(Evacuation {
        host: host.name,
        instances: out,
    })
}

fn orphan(o: &OrphanRow) -> Orphan {
    Orphan {
        id: o.vm_id,
        name: o.name.clone(),
        state: o.state,
        disk_bytes: o.disk_bytes,
        purge_requested: o.purge,
        now_on_host: o.now_on_host.clone(),
        first_seen: to_ts(o.first_seen),
        last_seen: to_ts(o.last_seen),
    }
}

/// VMs a host keeps that are no instance of that host (docs/host.md).
pub async fn orphans(app: &App, name: String) -> Result<Vec<Orphan>> {
    let rows = app
        .db(move |s| {
            let h = s.get_host(&name)?;
            s.list_orphans(h.id)
        })
        .await?;
    Ok(rows.iter().map(orphan).collect())
}

/// Record the decision; the host removes their files when it next applies
/// its desired state (they leave the list once it reports them gone).
pub async fn purge_orphans(app: &App, name: String, req: PurgeOrphans) -> Result<Vec<Orphan>> {
    let (host, rows) = app
        .db(move |s| {
            let h = s.get_host(&name)?;
            let rows = s.purge_orphans(h.id, &req.ids)?;
            Ok((h, rows))
        })
        .await?;
    app.hub.notify(host.id);
    for o in &rows {
        app.event(
            EventKind::HostOrphan,
            &host.name,
            &format!("VM {} ({}): purge requested", o.name, o.vm_id),
        )
        .await;
    }
    Ok(rows.iter().map(orphan).collect())
}
