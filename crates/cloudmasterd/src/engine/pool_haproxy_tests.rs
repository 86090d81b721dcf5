use super::*;
use std::io::{BufRead, BufReader, Write};
use std::os::unix::net::UnixListener;

/// A balancer socket that takes connections and reads requests but
/// never answers: HAProxy stopped (SIGSTOP) or hung.
fn silent_socket(dir: &std::path::Path) -> (PathBuf, std::thread::JoinHandle<()>) {
    let path = dir.join("hung.sock");
    let l = UnixListener::bind(&path).unwrap();
    let t = std::thread::spawn(move || {
        let mut held = vec![];
        // Bounded: at most 8 connections, kept open 8 s.
        l.set_nonblocking(true).unwrap();
        let until = Instant::now() + Duration::from_secs(8);
        while Instant::now() < until && held.len() < 8 {
            if let Ok((s, _)) = l.accept() {
                held.push(s);
            }
            std::thread::sleep(Duration::from_millis(10));
        }
    });
    (path, t)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_balancer_that_does_not_answer_times_out_then_fails_fast() {
    let dir = tempfile::tempdir().unwrap();
    let (path, _t) = silent_socket(dir.path());
    let h = Handle::new("edge", Arc::new(HaproxyBalancer::new("edge", &path)));
    let t0 = Instant::now();
    let e = call(&h, |b| b.servers("web")).await.unwrap_err();
    let took = t0.elapsed();
    assert!(e.unreachable, "{e:?}");
    assert_eq!(e.balancer, "edge");
    assert!(
        took >= Duration::from_millis(1900) && took < Duration::from_secs(5),
        "took {took:?}: {e}"
    );
    // Within the cool-down, the next call fails at once with the same error.
    let t1 = Instant::now();
    let again = call(&h, |b| b.servers("web")).await.unwrap_err();
    assert!(t1.elapsed() < Duration::from_millis(100));
    assert_eq!(again.message, e.message);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_missing_socket_is_unreachable_and_a_refusal_is_not() {
    let dir = tempfile::tempdir().unwrap();
    let gone = Handle::new(
        "edge",
        Arc::new(HaproxyBalancer::new("edge", &dir.path().join("none.sock"))),
    );
    let e = call(&gone, |b| b.drain("web", "s1")).await.unwrap_err();
    assert!(e.unreachable, "{e:?}");
    assert!(e.to_string().contains("none.sock"), "{e}");

    // A socket that refuses: HAProxy's answer to a server it does not have.
    let path = dir.path().join("admin.sock");
    let l = UnixListener::bind(&path).unwrap();
    let t = std::thread::spawn(move || {
        let (s, _) = l.accept().unwrap();
        let mut line = String::new();
        BufReader::new(&s).read_line(&mut line).unwrap();
        (&s).write_all(b"No such server.\n").unwrap();
        line
    });
    let h = Handle::new("edge", Arc::new(HaproxyBalancer::new("edge", &path)));
    let e = call(&h, |b| b.drain("web", "s1")).await.unwrap_err();
    assert!(!e.unreachable, "{e:?}");
    assert!(e.message.contains("No such server"), "{e}");
    assert_eq!(t.join().unwrap().trim(), "set server web/s1 state drain");
    // No cool-down after a refusal: the balancer answered.
    assert!(h.health().down.is_none());
}

/// A balancer whose every call blocks until told to go on.
struct Stuck(Arc<std::sync::Barrier>);

impl Balancer for Stuck {
    fn servers(&self, _: &str) -> Result<Vec<ServerView>, PoolError> {
        self.0.wait();
        Ok(vec![])
    }
    fn add(&self, _: &Member) -> Result<(), PoolError> {
        Ok(())
    }
    fn ready(&self, _: &str, _: &str) -> Result<(), PoolError> {
        Ok(())
    }
    fn drain(&self, _: &str, _: &str) -> Result<(), PoolError> {
        Ok(())
    }
    fn remove(&self, _: &str, _: &str) -> Result<(), PoolError> {
        Ok(())
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn threads_held_by_a_hung_balancer_are_bounded() {
    let gate = Arc::new(std::sync::Barrier::new(MAX_IN_FLIGHT + 1));
    let h = Handle::new("edge", Arc::new(Stuck(gate.clone())));
    for _ in 0..MAX_IN_FLIGHT {
        // Each times out; its thread stays blocked.
        let e = call(&h, |b| b.servers("web")).await.unwrap_err();
        assert!(e.message.contains("no answer within"), "{e}");
        h.health().down = None;
    }
    let e = call(&h, |b| b.servers("web")).await.unwrap_err();
    assert!(e.message.contains("have not returned yet"), "{e}");
    // Released, they return and the balancer is usable again.
    gate.wait();
    let t0 = Instant::now();
    while h.health().in_flight > 0 && t0.elapsed() < Duration::from_secs(10) {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert_eq!(h.health().in_flight, 0);
}

#[test]
fn a_balancer_is_made_once_and_only_when_configured() {
    let mut conf = BTreeMap::new();
    conf.insert("edge".to_string(), PathBuf::from("/run/haproxy/admin.sock"));
    let b = Balancers::default();
    let one = b.get("edge", &conf).unwrap();
    assert!(Arc::ptr_eq(&one, &b.get("edge", &conf).unwrap()));
    assert!(b.get("other", &conf).is_none());
    let d = DeployableId::new_v4();
    assert!(b.failed(d, "edge"));
    assert!(!b.failed(d, "edge"), "one event per outage");
    assert!(b.answered(d, "edge"));
    assert!(!b.answered(d, "edge"));
}
