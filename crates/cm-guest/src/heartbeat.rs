//! Heartbeats: a JSON line every few seconds on the virtio-serial port
//! `org.cloudmaster.agent.0` (read by cloudhostd), or over HTTP to the
//! master for a guest outside our hosts (the seed's federated case).

use crate::client::Client;
use cm_api::boot::{Heartbeat, ServiceState, AGENT_PORT};
use cm_api::words::ConfigStatus;
use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};
use uuid::Uuid;

/// The time between beats: /etc/cm-guest.toml's `heartbeat_secs`, unless
/// the config applied now says `[agent] heartbeat_ms` (a deployable's
/// heartbeat policy). Shared by the agent, which sets it on every config it
/// applies, and the heartbeat thread, which reads it before every wait.
#[derive(Debug)]
pub struct Interval {
    ms: AtomicU64,
    default_ms: u64,
}

impl Interval {
    pub fn new(default: Duration) -> Interval {
        let ms = u64::try_from(default.as_millis())
            .unwrap_or(u64::MAX)
            .max(1);
        Interval {
            ms: AtomicU64::new(ms),
            default_ms: ms,
        }
    }

    /// The applied config's interval, or the default for `None`.
    pub fn set(&self, ms: Option<u64>) {
        self.ms
            .store(ms.unwrap_or(self.default_ms).max(1), Ordering::SeqCst);
    }

    pub fn get(&self) -> Duration {
        Duration::from_millis(self.ms.load(Ordering::SeqCst))
    }
}

/// Wait until one interval after `since`, following a change of the
/// interval within 100 ms (a shorter interval ends a long wait at once).
pub fn wait_next(since: Instant, every: &Interval) {
    loop {
        let left = every.get().saturating_sub(since.elapsed());
        if left.is_zero() {
            return;
        }
        std::thread::sleep(left.min(Duration::from_millis(100)));
    }
}

/// The device of the port named `name`, found through sysfs (there may be
/// no udev to make /dev/virtio-ports/NAME).
pub fn find_port(root: &Path, name: &str) -> Option<PathBuf> {
    let dir = root.join("sys/class/virtio-ports");
    for e in std::fs::read_dir(dir).ok()?.flatten() {
        let port_name = std::fs::read_to_string(e.path().join("name")).unwrap_or_default();
        if port_name.trim() == name {
            return Some(root.join("dev").join(e.file_name()));
        }
    }
    None
}

/// Where heartbeats go.
pub enum Sink {
    Port {
        path: PathBuf,
        file: Option<std::fs::File>,
        /// The thread serving the host's requests on the open port
        /// (freeze.rs) runs while this is true.
        serving: Option<Arc<AtomicBool>>,
    },
    Http {
        client: Client,
        uuid: Uuid,
        secret: String,
    },
    Nowhere,
}

impl Sink {
    pub fn choose(root: &Path, http: Option<(Client, Uuid, String)>) -> Sink {
        match (find_port(root, AGENT_PORT), http) {
            (Some(path), _) => Sink::Port {
                path,
                file: None,
                serving: None,
            },
            (None, Some((client, uuid, secret))) => Sink::Http {
                client,
                uuid,
                secret,
            },
            (None, None) => Sink::Nowhere,
        }
    }

    pub fn describe(&self) -> String {
        match self {
            Sink::Port { path, .. } => format!("virtio-serial {}", path.display()),
            Sink::Http { .. } => "HTTP to the master".into(),
            Sink::Nowhere => "nowhere (no port, no record)".into(),
        }
    }

    /// Send one beat; errors are for the caller to note, never fatal.
    pub fn send(&mut self, hb: &Heartbeat) -> Result<(), String> {
        match self {
            Sink::Port {
                path,
                file,
                serving,
            } => {
                if file.is_none() {
                    // Non-blocking: a port nobody listens to must not stall
                    // the agent. Read-write: the host's requests come on it
                    // (a port is opened once: the reader gets a copy).
                    let f = std::fs::OpenOptions::new()
                        .read(true)
                        .write(true)
                        .custom_flags(libc::O_NONBLOCK)
                        .open(&*path)
                        .map_err(|e| format!("{}: {e}", path.display()))?;
                    if let Ok(copy) = f.try_clone() {
                        let open = Arc::new(AtomicBool::new(true));
                        let freeze = crate::freeze::Freeze::new(
                            crate::freeze::FsFreeze,
                            Box::new(|| {
                                std::fs::read_to_string("/proc/mounts").unwrap_or_default()
                            }),
                        );
                        let o = open.clone();
                        std::thread::spawn(move || crate::freeze::serve(copy, o, freeze));
                        *serving = Some(open);
                    }
                    *file = Some(f);
                }
                let mut line = serde_json::to_vec(hb).map_err(|e| e.to_string())?;
                line.push(b'\n');
                let res = file.as_mut().map(|f| f.write_all(&line)).unwrap_or(Ok(()));
                if let Err(e) = res {
                    // Reopen next time (the host end may come back).
                    *file = None;
                    if let Some(open) = serving.take() {
                        open.store(false, Ordering::SeqCst);
                    }
                    return Err(format!("{}: {e}", path.display()));
                }
                Ok(())
            }
            Sink::Http {
                client,
                uuid,
                secret,
            } => client
                .heartbeat(*uuid, secret, hb)
                .map_err(|e| e.to_string()),
            Sink::Nowhere => Ok(()),
        }
    }
}

pub fn beat(
    seq: u64,
    services: Vec<ServiceState>,
    config_status: Option<ConfigStatus>,
    config_version: u64,
) -> Heartbeat {
    let time = cm_api::time::now_secs_f64();
    Heartbeat {
        seq,
        time,
        services,
        config_status,
        config_version,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use cm_api::words::KnownConfigStatus;

    #[test]
    fn the_port_is_found_by_its_name_and_beats_are_lines() {
        let root = tempfile::tempdir().unwrap();
        for (dev, name) in [
            ("vport0p1", "org.qemu.guest_agent.0"),
            ("vport1p1", AGENT_PORT),
        ] {
            let d = root.path().join("sys/class/virtio-ports").join(dev);
            std::fs::create_dir_all(&d).unwrap();
            std::fs::write(d.join("name"), format!("{name}\n")).unwrap();
        }
        let port = find_port(root.path(), AGENT_PORT).unwrap();
        assert_eq!(port, root.path().join("dev/vport1p1"));
        std::fs::create_dir_all(root.path().join("dev")).unwrap();
        std::fs::write(&port, "").unwrap();
        let mut sink = Sink::choose(root.path(), None);
        sink.send(&beat(
            1,
            vec![],
            Some(KnownConfigStatus::Configured.into()),
            2,
        ))
        .unwrap();
        sink.send(&beat(
            2,
            vec![ServiceState {
                name: "web".into(),
                state: cm_api::words::KnownServiceStatus::Running.into(),
                detail: None,
            }],
            None,
            2,
        ))
        .unwrap();
        let text = std::fs::read_to_string(&port).unwrap();
        let beats: Vec<Heartbeat> = text
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect();
        assert_eq!(beats.len(), 2);
        assert_eq!((beats[0].seq, beats[1].seq), (1, 2));
        assert_eq!(beats[1].services[0].name, "web");
        assert!(beats[0].time > 1.0e9);
    }

    #[test]
    fn a_new_interval_takes_effect_during_a_wait() {
        let every = std::sync::Arc::new(Interval::new(Duration::from_secs(30)));
        let start = Instant::now();
        let waiter = {
            let every = every.clone();
            std::thread::spawn(move || wait_next(start, &every))
        };
        std::thread::sleep(Duration::from_millis(200));
        every.set(Some(300));
        waiter.join().unwrap();
        let took = start.elapsed();
        assert!(took < Duration::from_secs(2), "{took:?}");
        assert_eq!(every.get(), Duration::from_millis(300));
        // A config without [agent] goes back to the setting file's value.
        every.set(None);
        assert_eq!(every.get(), Duration::from_secs(30));
    }

    #[test]
    fn no_port_and_no_record_is_nowhere() {
        let root = tempfile::tempdir().unwrap();
        assert!(find_port(root.path(), AGENT_PORT).is_none());
        assert!(matches!(Sink::choose(root.path(), None), Sink::Nowhere));
    }
}
