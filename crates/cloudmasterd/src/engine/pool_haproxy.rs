//! The balancers configured on the master (`--balancer NAME=unix:PATH`,
//! `[balancers]`): [`Balancer`] over HAProxy's runtime API (the fleet
//! crate's `HaproxyRuntime`), and the one way the DPE calls any balancer,
//! [`call`]: on a blocking thread, with a timeout, at most
//! [`MAX_IN_FLIGHT`] requests under way per balancer, and a balancer that
//! did not answer left alone for [`COOL_DOWN`] (calls fail at once), so
//! a hung HAProxy costs a DPE one timeout, never a stuck pass.

use super::pool::{Balancer, Member, MemberState, PoolError, ServerView};
use cm_api::ids::DeployableId;
use cm_fleet::referee::runtime::{CheckOpts, HaproxyRuntime, ServerState};
use cm_fleet::referee::RefereeError;
use cm_fleet::runner::{RunError, Runner};
use std::collections::{BTreeMap, HashMap, HashSet};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// The longest a DPE waits for one balancer request.
pub const CALL_TIMEOUT: Duration = Duration::from_secs(2);
/// After a balancer did not answer, calls fail at once for this long.
pub const COOL_DOWN: Duration = Duration::from_secs(3);
/// Requests under way at once to one balancer (each holds a thread while
/// it waits; a hung balancer holds at most this many).
pub const MAX_IN_FLIGHT: usize = 4;

/// HAProxy through its admin socket on this machine.
pub struct HaproxyBalancer {
    name: String,
    rt: HaproxyRuntime,
    check: CheckOpts,
}

/// HAProxy's own checks of a member: every second, down after three
/// failures. The engine removes a member whose guest fails at once (0.12 s
/// after a kill, `e2e/tests/deploy_vm_pool.rs`); these checks are HAProxy's
/// second line. Faster ones (the fleet's 100 ms, whose timeout is the same
/// 100 ms when the backend sets no `timeout check`) marked every member of
/// a pool of real TCG guests down while a rollout's new guest booted beside
/// them, and clients got a 503.
const MEMBER_CHECK: CheckOpts = CheckOpts {
    inter: Some(std::time::Duration::from_secs(1)),
    rise: 1,
    fall: 3,
};

impl HaproxyBalancer {
    pub fn new(name: &str, socket: &std::path::Path) -> HaproxyBalancer {
        HaproxyBalancer {
            name: name.to_string(),
            rt: HaproxyRuntime::new(Runner::Local, format!("unix:{}", socket.display())),
            check: MEMBER_CHECK,
        }
    }

    fn err(&self, e: RefereeError) -> PoolError {
        let unreachable = matches!(e, RefereeError::Run(RunError::Io(..)));
        PoolError {
            balancer: self.name.clone(),
            message: e.to_string(),
            unreachable,
        }
    }
}

impl Balancer for HaproxyBalancer {
    fn servers(&self, backend: &str) -> Result<Vec<ServerView>, PoolError> {
        let stats = self.rt.servers(backend).map_err(|e| self.err(e))?;
        Ok(stats
            .into_iter()
            .map(|s| ServerView {
                state: if s.status.starts_with("MAINT") {
                    MemberState::Maint
                } else if s.status.starts_with("DRAIN") || s.weight == Some(0) {
                    MemberState::Drain
                } else {
                    MemberState::Ready
                },
                conns: s.conns,
                name: s.name,
            })
            .collect())
    }

    fn add(&self, m: &Member) -> Result<(), PoolError> {
        let addr: SocketAddr = m.addr.parse().map_err(|_| PoolError {
            balancer: self.name.clone(),
            message: format!("'{}' is not an ip:port", m.addr),
            unreachable: false,
        })?;
        self.rt
            .add_server(&m.backend, &m.server, addr, &self.check)
            .map_err(|e| self.err(e))?;
        self.ready(&m.backend, &m.server)
    }

    fn ready(&self, backend: &str, server: &str) -> Result<(), PoolError> {
        self.rt
            .enable_health(backend, server)
            .and_then(|_| self.rt.set_state(backend, server, ServerState::Ready))
            .map_err(|e| self.err(e))
    }

    fn drain(&self, backend: &str, server: &str) -> Result<(), PoolError> {
        self.rt
            .set_state(backend, server, ServerState::Drain)
            .map_err(|e| self.err(e))
    }

    fn remove(&self, backend: &str, server: &str) -> Result<(), PoolError> {
        self.rt
            .set_state(backend, server, ServerState::Maint)
            .and_then(|_| self.rt.shutdown_sessions(backend, server))
            .and_then(|_| self.rt.del_server(backend, server))
            .map_err(|e| self.err(e))
    }
}

/// One balancer and how its calls are going.
pub struct Handle {
    pub name: String,
    b: Arc<dyn Balancer>,
    state: Mutex<Health>,
}

#[derive(Default)]
struct Health {
    in_flight: usize,
    /// Calls fail at once until then, with this error.
    down: Option<(Instant, PoolError)>,
}

impl Handle {
    pub fn new(name: &str, b: Arc<dyn Balancer>) -> Arc<Handle> {
        Arc::new(Handle {
            name: name.to_string(),
            b,
            state: Mutex::new(Health::default()),
        })
    }

    fn health(&self) -> std::sync::MutexGuard<'_, Health> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn error(&self, message: String) -> PoolError {
        PoolError {
            balancer: self.name.clone(),
            message,
            unreachable: true,
        }
    }
}

/// Run `f` on the balancer: on a blocking thread, within [`CALL_TIMEOUT`].
pub async fn call<T, F>(h: &Arc<Handle>, f: F) -> Result<T, PoolError>
where
    T: Send + 'static,
    F: FnOnce(&dyn Balancer) -> Result<T, PoolError> + Send + 'static,
{
    {
        let mut st = h.health();
        if let Some((until, e)) = &st.down {
            if Instant::now() < *until {
                return Err(e.clone());
            }
            st.down = None;
        }
        if st.in_flight >= MAX_IN_FLIGHT {
            return Err(h.error(format!(
                "{MAX_IN_FLIGHT} requests have not returned yet; not sending more"
            )));
        }
        st.in_flight += 1;
    }
    let h2 = h.clone();
    let job = tokio::task::spawn_blocking(move || {
        let r = f(h2.b.as_ref());
        h2.health().in_flight -= 1;
        r
    });
    let r = match tokio::time::timeout(CALL_TIMEOUT, job).await {
        Ok(Ok(r)) => r,
        Ok(Err(e)) => Err(h.error(format!("its request failed: {e}"))),
        Err(_) => Err(h.error(format!("no answer within {}s", CALL_TIMEOUT.as_secs_f64()))),
    };
    if let Err(e) = &r {
        if e.unreachable {
            h.health().down = Some((Instant::now() + COOL_DOWN, e.clone()));
        }
    }
    r
}

/// The master's balancers by name, made on first use.
#[derive(Default)]
pub struct Balancers {
    made: Mutex<HashMap<String, Arc<Handle>>>,
    /// (deployable, balancer) pairs whose failure was reported and not
    /// yet followed by an answer: one event per outage, not one a pass.
    failing: Mutex<HashSet<(DeployableId, String)>>,
}

impl Balancers {
    /// The balancer `name` of `configured` (None: not configured).
    pub fn get(&self, name: &str, configured: &BTreeMap<String, PathBuf>) -> Option<Arc<Handle>> {
        let mut made = self.made.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(h) = made.get(name) {
            return Some(h.clone());
        }
        let path = configured.get(name)?;
        let h = Handle::new(name, Arc::new(HaproxyBalancer::new(name, path)));
        made.insert(name.to_string(), h.clone());
        Some(h)
    }

    /// A deployable's call to `balancer` failed: true when this is news
    /// (the first failure since it last answered).
    pub fn failed(&self, dep: DeployableId, balancer: &str) -> bool {
        let mut f = self.failing.lock().unwrap_or_else(|p| p.into_inner());
        f.insert((dep, balancer.to_string()))
    }

    /// It answered: true when it had failed before.
    pub fn answered(&self, dep: DeployableId, balancer: &str) -> bool {
        let mut f = self.failing.lock().unwrap_or_else(|p| p.into_inner());
        f.remove(&(dep, balancer.to_string()))
    }
}

#[cfg(test)]
#[path = "pool_haproxy_tests.rs"]
mod tests;
