//! Carrying out balancer membership each DPE pass (engine/pool.rs plans
//! it): level-triggered, from the snapshot, the deployable's
//! `pool_members` rows (the intent, written before the balancer is
//! asked) and what the balancer holds now. Every add, drain and removal is
//! a `pool.member` event; a balancer that does not answer is one too (once
//! per error), and the next pass tries again.

use super::act::Ctx;
use super::ladder::SlotView;
use super::pool::{self, Member, MemberState, Planned, PoolError, ServerView, Target};
use super::pool_haproxy::{call, Handle};
use crate::app::{self, owned};
use crate::store::pool::{MemberIntent, PoolMemberRow};
use crate::store::{now_ms, InstanceId, Millis};
use cm_api::words::{EngineAction, EventKind};
use std::collections::{BTreeMap, HashSet};
use std::sync::Arc;

/// How soon to look again while a drain is under way or a balancer failed.
const SOON: Millis = 250;

/// What a pass's membership work left.
#[derive(Debug, Default)]
pub struct Outcome {
    /// Instances whose members are still draining: not to be stopped yet.
    pub held: HashSet<InstanceId>,
    /// When to look again (a drain under way, a balancer to retry).
    pub wake: Option<Millis>,
}

impl Outcome {
    fn soon(&mut self, now: Millis) {
        self.wake = Some(now + SOON);
    }
}

/// One pass: every member the deployable wants or has, made what it
/// should be.
pub async fn sync(ctx: &Ctx<'_>, views: &[SlotView]) -> app::Result<Outcome> {
    let snap = ctx.snap;
    let id = snap.deployable.id;
    let rows = ctx.app.db(move |s| s.pool_members(id)).await?;
    let planned = pool::plan(snap, views, &rows, now_ms());
    match carry_out(ctx, planned, &rows).await {
        Ok(out) => Ok(out),
        Err(e) => {
            // The rest of the pass goes on; every member's instance is
            // kept until the next pass sorts them out.
            tracing::warn!("deployable {}: pool membership: {e}", snap.deployable.name);
            let mut out = Outcome {
                held: rows.iter().map(|r| r.instance_id).collect(),
                wake: None,
            };
            out.soon(now_ms());
            Ok(out)
        }
    }
}

/// A deleted deployable: every member out. True once none is left.
pub async fn clear(ctx: &Ctx<'_>) -> app::Result<bool> {
    let id = ctx.snap.deployable.id;
    let rows = ctx.app.db(move |s| s.pool_members(id)).await?;
    if rows.is_empty() {
        return Ok(true);
    }
    let planned = rows
        .iter()
        .map(|r| Planned {
            member: Member {
                balancer: r.balancer.clone(),
                backend: r.backend.clone(),
                server: r.server.clone(),
                addr: r.addr.clone(),
                instance: r.instance_id,
                slot: r.server.clone(),
            },
            target: Target::Remove,
            why: "its deployable is deleted".into(),
        })
        .collect();
    carry_out(ctx, planned, &rows).await?;
    let left = ctx.app.db(move |s| s.pool_members(id)).await?;
    Ok(left.is_empty())
}

async fn carry_out(
    ctx: &Ctx<'_>,
    planned: Vec<Planned>,
    rows: &[PoolMemberRow],
) -> app::Result<Outcome> {
    let mut out = Outcome::default();
    let mut groups: BTreeMap<(String, String), Vec<Planned>> = BTreeMap::new();
    for p in planned {
        let key = (p.member.balancer.clone(), p.member.backend.clone());
        groups.entry(key).or_default().push(p);
    }
    let dep = ctx.snap.deployable.id;
    for ((balancer, backend), items) in groups {
        let configured = &ctx.app.settings.balancers;
        let Some(h) = ctx.app.engines.balancers().get(&balancer, configured) else {
            // Not configured (any more): nothing can reach it. Its rows
            // are forgotten; wanted members wait for it.
            for p in &items {
                if let Some(r) = row_of(rows, &p.member) {
                    forget(ctx, r).await?;
                    let why = format!(
                        "{}: balancer '{balancer}' is not configured on this master",
                        p.member.server
                    );
                    event(
                        ctx,
                        &p.member,
                        r.state.as_str(),
                        "removed",
                        &why,
                        EngineAction::PoolRemove,
                    )
                    .await?;
                }
            }
            let e = PoolError {
                balancer: balancer.clone(),
                message: "not configured on this master (--balancer NAME=unix:PATH)".into(),
                unreachable: true,
            };
            failed(ctx, &e, &items, &mut out).await?;
            continue;
        };
        let be = backend.clone();
        let servers = match call(&h, move |b| b.servers(&be)).await {
            Ok(s) => s,
            Err(e) => {
                failed(ctx, &e, &items, &mut out).await?;
                continue;
            }
        };
        if ctx.app.engines.balancers().answered(dep, &balancer) {
            let msg = format!("balancer {balancer} answers again");
            error_event(ctx, &balancer, "error", "ok", &msg).await?;
        }
        for p in &items {
            let present = servers.iter().find(|s| s.name == p.member.server);
            let row = row_of(rows, &p.member);
            if let Err(e) = one(ctx, &h, p, row, present, &mut out).await? {
                failed(ctx, &e, std::slice::from_ref(p), &mut out).await?;
                break;
            }
        }
    }
    Ok(out)
}

fn row_of<'a>(rows: &'a [PoolMemberRow], m: &Member) -> Option<&'a PoolMemberRow> {
    rows.iter()
        .find(|r| r.balancer == m.balancer && r.backend == m.backend && r.server == m.server)
}

/// A balancer that did not answer or refused: one event per new error
/// and a retry soon. Planned stops are not held for it (a balancer that
/// does not answer its admin socket sends no traffic either; the member
/// is removed once it answers again).
pub(super) async fn failed(
    ctx: &Ctx<'_>,
    e: &PoolError,
    items: &[Planned],
    out: &mut Outcome,
) -> app::Result<()> {
    let dep = ctx.snap.deployable.id;
    if ctx.app.engines.balancers().failed(dep, &e.balancer) {
        let what = items
            .iter()
            .map(|p| p.member.server.as_str())
            .collect::<Vec<_>>()
            .join(", ");
        let msg = format!("{e}; will retry ({what})");
        error_event(ctx, &e.balancer, "ok", "error", &msg).await?;
    }
    out.soon(now_ms());
    Ok(())
}

/// Make one member what it should be. The outer error is the store's;
/// the inner one the balancer's.
pub(super) async fn one(
    ctx: &Ctx<'_>,
    h: &Arc<Handle>,
    p: &Planned,
    row: Option<&PoolMemberRow>,
    present: Option<&ServerView>,
    out: &mut Outcome,
) -> app::Result<Result<(), PoolError>> {
    let m = &p.member;
    let (be, sv) = (m.backend.clone(), m.server.clone());
    let at = format!("{} at {} in {}/{}", m.server, m.addr, m.balancer, m.backend);
    let now = now_ms();
    match p.target {
        Target::Ready => {
            let was = row.map(|r| r.state.as_str()).unwrap_or("absent");
            if row.is_none_or(|r| r.state != MemberIntent::Ready) {
                put(ctx, m, MemberIntent::Ready, now).await?;
            }
            let r = match present {
                None => {
                    let mm = m.clone();
                    call(h, move |b| b.add(&mm)).await
                }
                Some(s) if s.state != MemberState::Ready => {
                    call(h, move |b| b.ready(&be, &sv)).await
                }
                Some(_) if was == "ready" => return Ok(Ok(())),
                Some(_) => Ok(()),
            };
            if r.is_ok() {
                let why = format!("{at}: {}", p.why);
                event(ctx, m, was, "ready", &why, EngineAction::PoolAdd).await?;
            }
            Ok(r)
        }
        Target::Drain { then_remove } => {
            let since = match row {
                Some(r) if r.state == MemberIntent::Drain => r.updated_at,
                _ => {
                    put(ctx, m, MemberIntent::Drain, now).await?;
                    now
                }
            };
            if let Some(s) = present.filter(|s| s.state == MemberState::Ready) {
                let (be, sv) = (be.clone(), sv.clone());
                if let Err(e) = call(h, move |b| b.drain(&be, &sv)).await {
                    if then_remove && now - since < pool::DRAIN_DEADLINE {
                        out.held.insert(m.instance);
                    }
                    return Ok(Err(e));
                }
                let why = format!("{at}: {} ({} sessions)", p.why, s.conns);
                event(ctx, m, "ready", "drain", &why, EngineAction::PoolDrain).await?;
            }
            out.soon(now);
            if !then_remove {
                return Ok(Ok(()));
            }
            let conns = present.map(|s| s.conns);
            if !pool::drained(conns, since, now) {
                out.held.insert(m.instance);
                return Ok(Ok(()));
            }
            let r = match present {
                Some(_) => call(h, move |b| b.remove(&be, &sv)).await,
                None => Ok(()),
            };
            match r {
                Ok(()) => {
                    forget_member(ctx, m).await?;
                    let how = match conns {
                        Some(0) | None => "drained".to_string(),
                        Some(n) => format!(
                            "drain deadline {}s passed with {n} sessions",
                            pool::DRAIN_DEADLINE / 1000
                        ),
                    };
                    let why = format!("{at}: {}; {how}", p.why);
                    event(ctx, m, "drain", "removed", &why, EngineAction::PoolRemove).await?;
                    Ok(Ok(()))
                }
                Err(e) => {
                    if now - since < pool::DRAIN_DEADLINE {
                        out.held.insert(m.instance);
                    }
                    Ok(Err(e))
                }
            }
        }
        Target::Remove => {
            let r = match present {
                Some(_) => call(h, move |b| b.remove(&be, &sv)).await,
                None => Ok(()),
            };
            if r.is_ok() {
                forget_member(ctx, m).await?;
                let was = row.map(|r| r.state.as_str()).unwrap_or("absent");
                let why = format!("{at}: {}", p.why);
                event(ctx, m, was, "removed", &why, EngineAction::PoolRemove).await?;
            }
            Ok(r)
        }
    }
}

pub(super) async fn put(
    ctx: &Ctx<'_>,
    m: &Member,
    state: MemberIntent,
    now: Millis,
) -> app::Result<()> {
    let row = PoolMemberRow {
        deployable_id: ctx.snap.deployable.id,
        balancer: m.balancer.clone(),
        backend: m.backend.clone(),
        server: m.server.clone(),
        instance_id: m.instance,
        addr: m.addr.clone(),
        state,
        updated_at: now,
    };
    ctx.app.db(move |s| s.put_pool_member(&row)).await
}

async fn forget_member(ctx: &Ctx<'_>, m: &Member) -> app::Result<()> {
    let id = ctx.snap.deployable.id;
    let (b, be, sv) = (m.balancer.clone(), m.backend.clone(), m.server.clone());
    ctx.app
        .db(move |s| s.delete_pool_member(id, &b, &be, &sv))
        .await
        .map(|_| ())
}

async fn forget(ctx: &Ctx<'_>, r: &PoolMemberRow) -> app::Result<()> {
    let id = ctx.snap.deployable.id;
    let (b, be, sv) = (r.balancer.clone(), r.backend.clone(), r.server.clone());
    ctx.app
        .db(move |s| s.delete_pool_member(id, &b, &be, &sv))
        .await
        .map(|_| ())
}

/// A `pool.member` event about one member.
async fn event(
    ctx: &Ctx<'_>,
    m: &Member,
    from: &str,
    to: &str,
    why: &str,
    action: EngineAction,
) -> app::Result<()> {
    let mut ev = ctx.event(
        EventKind::PoolMember,
        Some(&m.slot),
        Some(from),
        to,
        why,
        Some(action),
    );
    ev.detail.counters.insert("server".into(), m.server.clone());
    append(ctx, ev).await
}

/// A `pool.member` event about a balancer as a whole.
async fn error_event(
    ctx: &Ctx<'_>,
    balancer: &str,
    from: &str,
    to: &str,
    why: &str,
) -> app::Result<()> {
    let object = format!("balancer {balancer}");
    let ev = ctx.event(
        EventKind::PoolMember,
        Some(&object),
        Some(from),
        to,
        why,
        None,
    );
    append(ctx, ev).await
}

async fn append(ctx: &Ctx<'_>, ev: crate::store::engine::NewEvent) -> app::Result<()> {
    let done = ctx
        .app
        .db(move |s| s.append_event_detail(ev.kind, &ev.target, &ev.message, &ev.detail, now_ms()))
        .await?;
    owned::publish(ctx.app, done);
    Ok(())
}
