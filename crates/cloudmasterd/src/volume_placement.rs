//! Placement of a new volume (docs/storage.md): a ready host whose free
//! disk, less what its volumes may still grow into, holds the whole size.
//! qcow2 files are thin, but a cloud that promised the space must have it.
//! The host with the most room wins, then the one with fewer volumes, then
//! by name, so the choice is deterministic.

use crate::scheduler::Unplaced;
use crate::store::volume::VolumeSpace;
use crate::store::{HostId, Millis};
use std::time::Duration;

#[derive(Debug, Clone)]
pub struct Request {
    /// Whole MiB.
    pub size_mib: u64,
    /// The host asked for (`--host`).
    pub host: Option<String>,
    pub now: Millis,
    pub down_after: Duration,
}

fn unfit(h: &VolumeSpace, req: &Request) -> Option<String> {
    let up = h
        .last_seen
        .is_some_and(|t| req.now - t <= cm_api::time::duration_millis(req.down_after));
    if !up {
        return Some(format!("host {} is down", h.name));
    }
    if !h.enabled {
        return Some(format!("host {} is disabled", h.name));
    }
    if h.room_mib() < req.size_mib {
        return Some(format!(
            "host {} has room for {} MiB of volumes ({} MiB free disk, {} MiB of it promised \
             to its volumes), {} MiB asked",
            h.name,
            h.room_mib(),
            h.disk_free_mib,
            h.unallocated_mib,
            req.size_mib
        ));
    }
    None
}

pub fn place(req: &Request, hosts: &[VolumeSpace]) -> Result<HostId, Unplaced> {
    let no = |message: String| Unplaced::NoCapacity {
        message,
        field: "host",
    };
    if let Some(name) = &req.host {
        let h = hosts
            .iter()
            .find(|h| &h.name == name)
            .ok_or_else(|| Unplaced::NoSuchHost(name.clone()))?;
        return match unfit(h, req) {
            None => Ok(h.id),
            Some(why) => Err(no(why)),
        };
    }
    let best = hosts
        .iter()
        .filter(|h| unfit(h, req).is_none())
        .max_by(|a, b| {
            a.room_mib()
                .cmp(&b.room_mib())
                .then(b.volume_count.cmp(&a.volume_count))
                .then(b.name.cmp(&a.name))
        });
    if let Some(h) = best {
        return Ok(h.id);
    }
    let ready: Vec<&VolumeSpace> = hosts
        .iter()
        .filter(|h| {
            unfit(
                h,
                &Request {
                    size_mib: 0,
                    ..req.clone()
                },
            )
            .is_none()
        })
        .collect();
    Err(no(match ready.iter().max_by_key(|h| h.room_mib()) {
        None if hosts.is_empty() => "no hosts have registered (start cloudhostd)".into(),
        None => "no host is ready (every host is down or disabled)".into(),
        Some(h) => format!(
            "no host has room for a volume of {} MiB; the most is {} MiB on {}",
            req.size_mib,
            h.room_mib(),
            h.name
        ),
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn space(name: &str, free: u64, promised: u64, count: u32) -> VolumeSpace {
        VolumeSpace {
            id: HostId::new_v4(),
            name: name.into(),
            enabled: true,
            last_seen: Some(1000),
            disk_free_mib: free,
            unallocated_mib: promised,
            volume_count: count,
        }
    }

    fn req(size_mib: u64, host: Option<&str>) -> Request {
        Request {
            size_mib,
            host: host.map(str::to_string),
            now: 2000,
            down_after: Duration::from_secs(15),
        }
    }

    #[test]
    fn the_host_with_most_room_wins_and_promised_space_counts() {
        let a = space("a", 10_000, 9_000, 1);
        let b = space("b", 5_000, 0, 3);
        let hosts = [a.clone(), b.clone()];
        assert_eq!(place(&req(2_000, None), &hosts), Ok(b.id));
        // `a` has 1000 MiB of room: not enough when asked for by name.
        let e = place(&req(2_000, Some("a")), &hosts).unwrap_err();
        assert_eq!(e.field(), "host");
        assert!(e.to_string().contains("room for 1000 MiB"), "{e}");
        let e = place(&req(6_000, None), &hosts).unwrap_err();
        assert!(e.to_string().contains("the most is 5000 MiB on b"), "{e}");
        assert_eq!(
            place(&req(1, Some("zz")), &hosts),
            Err(Unplaced::NoSuchHost("zz".into()))
        );
    }

    #[test]
    fn down_and_disabled_hosts_take_nothing() {
        let mut a = space("a", 10_000, 0, 0);
        a.last_seen = Some(-100_000);
        let mut b = space("b", 10_000, 0, 0);
        b.enabled = false;
        let e = place(&req(1, None), &[a.clone(), b]).unwrap_err();
        assert!(e.to_string().contains("no host is ready"), "{e}");
        let e = place(&req(1, Some("a")), &[a]).unwrap_err();
        assert!(e.to_string().contains("is down"), "{e}");
    }
}
