//! Placement: which host gets a new instance.
//!
//! Filters (up, enabled, memory, ports, acceleration), then spreads: the host
//! with the most promised-free memory wins, then the one with fewer
//! instances, then by name, so the choice is deterministic.

use crate::store::{HostCapacity, HostId, Millis};
use cm_api::deploy::Spread;
use cm_api::instance::{Accel, PortForward};
use std::time::Duration;

/// Why no host takes an instance. The API answers `404 not_found` for the
/// first, `409 no_capacity` for the second (`app::error`).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Unplaced {
    /// The host the request named (`--host`) is not in the cloud.
    #[error("host '{0}' not found")]
    NoSuchHost(String),
    /// No host fits, or not the one named; `field` is the request's field
    /// that does not fit.
    #[error("{message}")]
    NoCapacity {
        message: String,
        field: &'static str,
    },
}

impl Unplaced {
    /// The same refusal, naming the instance that could not be placed.
    pub fn of_instance(self, name: &str) -> Unplaced {
        match self {
            Unplaced::NoCapacity { message, field } => Unplaced::NoCapacity {
                message: format!("cannot place {name}: {message}"),
                field,
            },
            Unplaced::NoSuchHost(host) => Unplaced::NoSuchHost(host),
        }
    }

    /// The request field at fault.
    pub fn field(&self) -> &'static str {
        match self {
            Unplaced::NoSuchHost(_) => "host",
            Unplaced::NoCapacity { field, .. } => field,
        }
    }
}

#[derive(Debug, Clone)]
pub struct Request {
    pub memory_mib: u64,
    pub ports: Vec<PortForward>,
    pub accel: Accel,
    pub host: Option<String>,
    pub now: Millis,
    pub down_after: Duration,
    /// Hosts to use only when no other fits (a replacement leaves the
    /// host its predecessor failed on).
    pub avoid: Vec<HostId>,
    /// Hosts holding the other instances of the same assembly, and how to
    /// spread over them (`none` for a user's instance).
    pub siblings: Vec<HostId>,
    pub spread: Spread,
}

/// A MiB count as a signed number (free memory can go below zero when a
/// host shrinks): saturating, never wrapping.
pub fn signed(mib: u64) -> i64 {
    i64::try_from(mib).unwrap_or(i64::MAX)
}

fn free(h: &HostCapacity) -> i64 {
    signed(h.memory_total_mib) - signed(h.reserved_mib) - signed(h.promised_mib)
}

fn up(h: &HostCapacity, req: &Request) -> bool {
    h.last_seen
        .map(|t| req.now - t <= cm_api::time::duration_millis(req.down_after))
        .unwrap_or(false)
}

/// Why this host cannot take the instance, if it cannot.
fn unfit(h: &HostCapacity, req: &Request) -> Option<(String, &'static str)> {
    if !up(h, req) {
        return Some((format!("host {} is down", h.name), "host"));
    }
    if !h.enabled {
        return Some((format!("host {} is disabled", h.name), "host"));
    }
    if req.accel == Accel::Kvm && !h.kvm_usable {
        return Some((format!("host {} has no working KVM", h.name), "accel"));
    }
    if free(h) < signed(req.memory_mib) {
        return Some((
            format!(
                "host {} has {} MiB promised-free, {} MiB asked",
                h.name,
                free(h).max(0),
                req.memory_mib
            ),
            "memory_mib",
        ));
    }
    if let Some(p) = req.ports.iter().find(|p| h.ports_in_use.contains(&p.host)) {
        return Some((
            format!("host {} already forwards port {}", h.name, p.host),
            "ports",
        ));
    }
    None
}

pub fn place(req: &Request, hosts: &[HostCapacity]) -> Result<HostId, Unplaced> {
    if let Some(name) = &req.host {
        let h = hosts
            .iter()
            .find(|h| &h.name == name)
            .ok_or_else(|| Unplaced::NoSuchHost(name.clone()))?;
        return match unfit(h, req) {
            None => Ok(h.id),
            Some((message, field)) => Err(Unplaced::NoCapacity { message, field }),
        };
    }
    let mut fit: Vec<&HostCapacity> = hosts.iter().filter(|h| unfit(h, req).is_none()).collect();
    let siblings = |h: &HostCapacity| req.siblings.iter().filter(|s| **s == h.id).count();
    if req.spread == Spread::Require && !req.siblings.is_empty() {
        let before = fit.len();
        fit.retain(|h| siblings(h) == 0);
        if fit.is_empty() && before > 0 {
            return Err(Unplaced::NoCapacity {
                message:
                    "spread: require, and every host that fits holds one of its assembly already"
                        .into(),
                field: "spread",
            });
        }
    }
    let spread = |h: &HostCapacity| match req.spread {
        Spread::None => 0,
        Spread::Prefer | Spread::Require => siblings(h),
    };
    fit.sort_by(|a, b| {
        req.avoid
            .contains(&a.id)
            .cmp(&req.avoid.contains(&b.id))
            .then(spread(a).cmp(&spread(b)))
            .then(free(b).cmp(&free(a)))
            .then(a.instance_count.cmp(&b.instance_count))
            .then(a.name.cmp(&b.name))
    });
    if let Some(h) = fit.first() {
        return Ok(h.id);
    }
    Err(explain(req, hosts))
}

/// The clearest reason no host fits: the first filter that left none.
fn explain(req: &Request, hosts: &[HostCapacity]) -> Unplaced {
    let e = |message: String, field: &'static str| Unplaced::NoCapacity { message, field };
    let usable: Vec<&HostCapacity> = hosts.iter().filter(|h| up(h, req) && h.enabled).collect();
    if usable.is_empty() {
        return e(
            if hosts.is_empty() {
                "no hosts have registered (start cloudhostd)".to_string()
            } else {
                "no host is ready (every host is down or disabled)".to_string()
            },
            "host",
        );
    }
    let usable: Vec<&HostCapacity> = if req.accel == Accel::Kvm {
        let k: Vec<_> = usable.into_iter().filter(|h| h.kvm_usable).collect();
        if k.is_empty() {
            return e(
                "no ready host has working KVM (use --accel tcg or auto)".into(),
                "accel",
            );
        }
        k
    } else {
        usable
    };
    let roomy: Vec<&HostCapacity> = usable
        .iter()
        .copied()
        .filter(|h| free(h) >= signed(req.memory_mib))
        .collect();
    if roomy.is_empty() {
        let best = usable.iter().max_by_key(|h| free(h));
        let detail = best
            .map(|h| format!("; the most is {} MiB on {}", free(h).max(0), h.name))
            .unwrap_or_default();
        return e(
            format!("no host has {} MiB of memory free{detail}", req.memory_mib),
            "memory_mib",
        );
    }
    e(
        "every host with room already forwards one of the requested host ports".into(),
        "ports",
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn host(name: &str, total: u64, promised: u64, n: u32) -> HostCapacity {
        HostCapacity {
            id: HostId::new_v4(),
            name: name.into(),
            enabled: true,
            last_seen: Some(1_000),
            memory_total_mib: total,
            reserved_mib: 0,
            promised_mib: promised,
            instance_count: n,
            kvm_usable: false,
            ports_in_use: vec![],
        }
    }

    fn req(mem: u64) -> Request {
        Request {
            memory_mib: mem,
            ports: vec![],
            accel: Accel::Auto,
            host: None,
            now: 2_000,
            down_after: Duration::from_secs(15),
            avoid: vec![],
            siblings: vec![],
            spread: Spread::None,
        }
    }

    #[test]
    fn a_replacement_avoids_its_old_host_and_slots_spread() {
        let hs = vec![host("a", 8192, 0, 0), host("b", 4096, 0, 0)];
        let mut r = req(512);
        assert_eq!(place(&r, &hs).unwrap(), hs[0].id);
        r.avoid = vec![hs[0].id];
        assert_eq!(place(&r, &hs).unwrap(), hs[1].id);
        // Avoided, but the only host that fits: still used.
        r.memory_mib = 6000;
        assert_eq!(place(&r, &hs).unwrap(), hs[0].id);
        // Spread: prefer the host without a sibling, or require it.
        let mut r = req(512);
        r.siblings = vec![hs[0].id];
        r.spread = Spread::Prefer;
        assert_eq!(place(&r, &hs).unwrap(), hs[1].id);
        r.siblings = vec![hs[0].id, hs[1].id];
        assert_eq!(place(&r, &hs).unwrap(), hs[0].id);
        r.spread = Spread::Require;
        assert_eq!(place(&r, &hs).unwrap_err().field(), "spread");
    }

    #[test]
    fn spreads_to_the_host_with_most_free_memory() {
        let hs = vec![host("a", 4096, 3000, 3), host("b", 4096, 1000, 1)];
        assert_eq!(place(&req(512), &hs).unwrap(), hs[1].id);
    }

    #[test]
    fn explains_when_no_host_has_room() {
        let hs = vec![host("a", 4096, 3000, 3), host("b", 2048, 0, 0)];
        let e = place(&req(8192), &hs).unwrap_err();
        assert_eq!(e.field(), "memory_mib");
        assert!(
            matches!(&e, Unplaced::NoCapacity { message, .. } if message.contains("2048 MiB on b")),
            "{e}"
        );
    }

    #[test]
    fn skips_down_disabled_and_port_clashing_hosts() {
        let mut a = host("a", 8192, 0, 0);
        a.enabled = false;
        let mut b = host("b", 8192, 0, 0);
        b.last_seen = Some(-100_000);
        let mut c = host("c", 8192, 0, 0);
        c.ports_in_use = vec![8080];
        let d = host("d", 1024, 0, 0);
        let hs = vec![a, b, c, d.clone()];
        let mut r = req(512);
        r.ports = vec![PortForward {
            guest: 80,
            host: 8080,
        }];
        assert_eq!(place(&r, &hs).unwrap(), d.id);
        // c has room but forwards the port already: the port is the reason.
        r.memory_mib = 2048;
        assert_eq!(place(&r, &hs).unwrap_err().field(), "ports");
        r.memory_mib = 16384;
        assert_eq!(place(&r, &hs).unwrap_err().field(), "memory_mib");
    }

    #[test]
    fn a_named_host_must_fit() {
        let hs = vec![host("a", 1024, 0, 0)];
        let mut r = req(512);
        r.host = Some("a".into());
        assert_eq!(place(&r, &hs).unwrap(), hs[0].id);
        r.host = Some("zz".into());
        assert_eq!(
            place(&r, &hs).unwrap_err(),
            Unplaced::NoSuchHost("zz".into())
        );
        r.host = Some("a".into());
        r.accel = Accel::Kvm;
        assert_eq!(place(&r, &hs).unwrap_err().field(), "accel");
    }
}
