//! Requests to guest agents on their agent port (docs/storage.md,
//! "Snapshots"): the relay (vm/guest.rs) that reads a VM's port registers
//! a writer here while it is connected, and hands over the `GuestAnswer`
//! lines it reads. Only answers to a request in flight are kept, so a guest
//! cannot make the agent keep anything. Sync (a `Condvar`): the snapshot
//! code that freezes a guest runs in `spawn_blocking`.

use cm_api::boot::{GuestAnswer, HostRequest};
use std::collections::HashMap;
use std::sync::{Condvar, Mutex, MutexGuard};
use std::time::{Duration, Instant};
use tokio::sync::mpsc;
use uuid::Uuid;

#[derive(Default)]
struct Inner {
    /// The connected ports' writers, by VM.
    writers: HashMap<Uuid, mpsc::UnboundedSender<String>>,
    /// Requests in flight (VM, request id) and their answers once read.
    waiting: HashMap<(Uuid, Uuid), Vec<GuestAnswer>>,
}

#[derive(Default)]
pub struct Ports {
    inner: Mutex<Inner>,
    answered: Condvar,
}

fn answer_id(a: &GuestAnswer) -> Uuid {
    match a {
        GuestAnswer::Frozen { id, .. }
        | GuestAnswer::FreezeFailed { id, .. }
        | GuestAnswer::Thawed { id } => *id,
    }
}

impl Ports {
    fn inner(&self) -> MutexGuard<'_, Inner> {
        match self.inner.lock() {
            Ok(g) => g,
            Err(p) => p.into_inner(),
        }
    }

    /// A relay connected to VM `vm`'s port: lines to write come from here.
    pub fn connect(&self, vm: Uuid) -> mpsc::UnboundedReceiver<String> {
        let (tx, rx) = mpsc::unbounded_channel();
        self.inner().writers.insert(vm, tx);
        rx
    }

    pub fn disconnect(&self, vm: Uuid) {
        self.inner().writers.remove(&vm);
    }

    /// An answer read on VM `vm`'s port; dropped unless awaited.
    pub fn answer(&self, vm: Uuid, a: GuestAnswer) {
        let mut g = self.inner();
        if let Some(v) = g.waiting.get_mut(&(vm, answer_id(&a))) {
            if v.len() < 4 {
                v.push(a);
                self.answered.notify_all();
            }
        }
    }

    /// Send `req` to VM `vm`'s guest and wait up to `wait` for an answer
    /// `accept` takes. None: no port connected, or no such answer in time.
    pub fn ask(
        &self,
        vm: Uuid,
        req: &HostRequest,
        wait: Duration,
        accept: impl Fn(&GuestAnswer) -> bool,
    ) -> Option<GuestAnswer> {
        let id = match req {
            HostRequest::Freeze { id, .. } | HostRequest::Thaw { id } => *id,
        };
        let line = serde_json::to_string(req).ok()? + "\n";
        let mut g = self.inner();
        g.waiting.insert((vm, id), Vec::new());
        let sent = g.writers.get(&vm).is_some_and(|w| w.send(line).is_ok());
        let deadline = Instant::now() + wait;
        let mut found = None;
        while let (true, Some(v)) = (sent, g.waiting.get_mut(&(vm, id))) {
            if let Some(i) = v.iter().position(&accept) {
                found = Some(v.swap_remove(i));
                break;
            }
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                break;
            }
            g = match self.answered.wait_timeout(g, left) {
                Ok((g, _)) => g,
                Err(p) => p.into_inner().0,
            };
        }
        g.waiting.remove(&(vm, id));
        found
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;

    #[test]
    fn answers_reach_the_request_that_waits_for_them_and_nothing_else_is_kept() {
        let ports = Arc::new(Ports::default());
        let vm = Uuid::new_v4();
        let req = HostRequest::Freeze {
            id: Uuid::new_v4(),
            timeout_ms: 1000,
        };
        // No port: no answer, at once.
        let t = Instant::now();
        assert!(ports
            .ask(vm, &req, Duration::from_secs(5), |_| true)
            .is_none());
        assert!(t.elapsed() < Duration::from_secs(1));
        let mut rx = ports.connect(vm);
        // An answer nobody waits for is dropped.
        ports.answer(vm, GuestAnswer::Thawed { id: Uuid::new_v4() });
        assert!(ports.inner().waiting.is_empty());
        let p = ports.clone();
        let guest = std::thread::spawn(move || {
            let line = rx.blocking_recv().unwrap();
            let got: HostRequest = serde_json::from_str(line.trim()).unwrap();
            let HostRequest::Freeze { id, .. } = got else {
                panic!("{got:?}")
            };
            p.answer(vm, GuestAnswer::Thawed { id }); // not the one asked for
            p.answer(
                vm,
                GuestAnswer::Frozen {
                    id,
                    mounts: vec!["/mnt/v".into()],
                },
            );
            rx // the port stays connected
        });
        let a = ports.ask(vm, &req, Duration::from_secs(5), |a| {
            matches!(a, GuestAnswer::Frozen { .. })
        });
        let _rx = guest.join().unwrap();
        assert!(matches!(a, Some(GuestAnswer::Frozen { mounts, .. }) if mounts == ["/mnt/v"]));
        assert!(ports.inner().waiting.is_empty());
        // A guest that never answers: None after the wait.
        let t = Instant::now();
        assert!(ports
            .ask(vm, &req, Duration::from_millis(200), |_| true)
            .is_none());
        assert!(t.elapsed() >= Duration::from_millis(200));
    }
}
