//! The guest's side of a freeze: parsing, the bounded line reader, what is
//! frozen in which order, the answers, and the thaw on its own.

use super::*;
use std::time::Instant;

/// Records what would be frozen and thawed (the real `fsfreeze` needs root
/// and a file system of its own: the VM test covers it).
#[derive(Default)]
struct Recorder {
    log: Mutex<Vec<String>>,
    fail_on: Option<String>,
}

impl Freezer for Arc<Recorder> {
    fn freeze(&self, m: &str) -> Result<(), String> {
        if self.fail_on.as_deref() == Some(m) {
            return Err(format!("{m}: busy"));
        }
        self.log.lock().unwrap().push(format!("freeze {m}"));
        Ok(())
    }
    fn thaw(&self, m: &str) -> Result<(), String> {
        self.log.lock().unwrap().push(format!("thaw {m}"));
        Ok(())
    }
}

const MOUNTS: &str = "rootfs / rootfs rw 0 0
/dev/vda / ext4 rw,relatime 0 0
proc /proc proc rw 0 0
sysfs /sys sysfs rw 0 0
devtmpfs /dev devtmpfs rw 0 0
devpts /dev/pts devpts rw 0 0
tmpfs /run tmpfs rw 0 0
/dev/vdb /mnt/v ext4 rw 0 0
/dev/vdc /mnt/v/inner\\040dir ext4 rw 0 0
/dev/sr0 /media iso9660 ro 0 0
";

fn line(v: &serde_json::Value) -> String {
    v.to_string()
}

#[test]
fn only_writable_block_file_systems_are_frozen_deepest_first() {
    assert_eq!(freezable(MOUNTS), vec!["/mnt/v/inner dir", "/mnt/v", "/"]);
    assert!(freezable("garbage\n\n").is_empty());
    assert!(freezable("rootfs / rootfs rw 0 0\ntmpfs /tmp tmpfs rw 0 0").is_empty());
}

#[test]
fn lines_are_bounded_and_an_over_long_one_is_skipped() {
    let mut l = Lines::default();
    assert!(l.push(b"{\"thaw\"").is_empty());
    assert_eq!(l.push(b":1}\nnext"), vec!["{\"thaw\":1}".to_string()]);
    // A flood without a newline never grows the buffer past the limit.
    for _ in 0..100 {
        assert!(l.push(&[b'x'; 1000]).is_empty());
        assert!(l.buf.len() <= MAX_LINE);
    }
    assert_eq!(l.push(b"\nok\n"), vec!["ok".to_string()]);
}

#[test]
fn a_freeze_is_answered_thawed_on_request_and_failures_undo_it() {
    let rec = Arc::new(Recorder::default());
    let f = Freeze::new(rec.clone(), Box::new(|| MOUNTS.to_string()));
    let id = Uuid::new_v4();
    assert!(f.handle("not json").is_none());
    assert!(f.handle(r#"{"reboot":{}}"#).is_none());
    let a = f.handle(&line(
        &serde_json::json!({"freeze": {"id": id, "timeout_ms": 60000}}),
    ));
    assert_eq!(
        a,
        Some(GuestAnswer::Frozen {
            id,
            mounts: vec!["/mnt/v/inner dir".into(), "/mnt/v".into(), "/".into()]
        })
    );
    // A thaw for another freeze does nothing; its own thaws in reverse.
    let other = Uuid::new_v4();
    assert_eq!(
        f.handle(&line(&serde_json::json!({"thaw": {"id": other}}))),
        Some(GuestAnswer::Thawed { id: other })
    );
    assert_eq!(rec.log.lock().unwrap().len(), 3);
    assert_eq!(
        f.handle(&line(&serde_json::json!({"thaw": {"id": id}}))),
        Some(GuestAnswer::Thawed { id })
    );
    assert_eq!(
        rec.log.lock().unwrap()[3..],
        ["thaw /", "thaw /mnt/v", "thaw /mnt/v/inner dir"]
    );
    assert!(!f.thaw(id), "thawed once");

    // One that cannot be frozen: what was frozen is thawed, the error said.
    let rec = Arc::new(Recorder {
        fail_on: Some("/mnt/v".into()),
        ..Recorder::default()
    });
    let f = Freeze::new(rec.clone(), Box::new(|| MOUNTS.to_string()));
    let a = f.handle(&line(
        &serde_json::json!({"freeze": {"id": id, "timeout_ms": 1000}}),
    ));
    assert!(matches!(a, Some(GuestAnswer::FreezeFailed { error, .. }) if error.contains("busy")));
    assert_eq!(
        *rec.log.lock().unwrap(),
        ["freeze /mnt/v/inner dir", "thaw /mnt/v/inner dir"]
    );
}

#[test]
fn a_guest_thaws_on_its_own_when_no_thaw_comes() {
    let rec = Arc::new(Recorder::default());
    let f = Freeze::new(rec.clone(), Box::new(|| MOUNTS.to_string()));
    let id = Uuid::new_v4();
    f.handle(&line(
        &serde_json::json!({"freeze": {"id": id, "timeout_ms": 200}}),
    ));
    let t = Instant::now();
    while rec.log.lock().unwrap().len() < 6 {
        assert!(t.elapsed() < Duration::from_secs(5), "never thawed");
        std::thread::sleep(Duration::from_millis(20));
    }
    assert!(t.elapsed() >= Duration::from_millis(100));
    assert!(!f.thaw(id));
    // A timeout above the bound is cut to MAX_FREEZE_MS (not waited here:
    // the clamp is the rule) and a zero one thaws at once.
    let id2 = Uuid::new_v4();
    f.handle(&line(
        &serde_json::json!({"freeze": {"id": id2, "timeout_ms": 0}}),
    ));
    let t = Instant::now();
    while rec.log.lock().unwrap().len() < 12 {
        assert!(t.elapsed() < Duration::from_secs(5), "never thawed");
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[test]
fn requests_are_served_on_the_port_and_answered_on_it() {
    // A socket pair stands for the port: the test is the host.
    let (host, guest) = std::os::unix::net::UnixStream::pair().unwrap();
    guest.set_nonblocking(true).unwrap();
    let port = std::fs::File::from(std::os::fd::OwnedFd::from(guest));
    let rec = Arc::new(Recorder::default());
    let f = Freeze::new(
        rec.clone(),
        Box::new(|| "/dev/vdb /mnt/v ext4 rw 0 0\n".into()),
    );
    let open = Arc::new(AtomicBool::new(true));
    let o = open.clone();
    let t = std::thread::spawn(move || serve(port, o, f));
    let id = Uuid::new_v4();
    let mut w = &host;
    w.write_all(&[b'z'; 10_000]).unwrap();
    w.write_all(b"\n").unwrap();
    w.write_all(
        format!(
            "{}\n",
            line(&serde_json::json!({"freeze": {"id": id, "timeout_ms": 60000}}))
        )
        .as_bytes(),
    )
    .unwrap();
    host.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    let mut r = std::io::BufReader::new(&host);
    let mut got = String::new();
    std::io::BufRead::read_line(&mut r, &mut got).unwrap();
    let a: GuestAnswer = serde_json::from_str(got.trim()).unwrap();
    assert_eq!(
        a,
        GuestAnswer::Frozen {
            id,
            mounts: vec!["/mnt/v".into()]
        }
    );
    w.write_all(format!("{}\n", line(&serde_json::json!({"thaw": {"id": id}}))).as_bytes())
        .unwrap();
    got.clear();
    std::io::BufRead::read_line(&mut r, &mut got).unwrap();
    assert_eq!(
        serde_json::from_str::<GuestAnswer>(got.trim()).unwrap(),
        GuestAnswer::Thawed { id }
    );
    open.store(false, Ordering::SeqCst);
    t.join().unwrap();
    assert_eq!(*rec.log.lock().unwrap(), ["freeze /mnt/v", "thaw /mnt/v"]);
}
