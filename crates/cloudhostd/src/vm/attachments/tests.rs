//! The hot-plug steps against a scripted QEMU monitor (a mock: only unit
//! tests use it; vm/hotplug_vm_test.rs runs a real QEMU), for what a real
//! guest rarely does: a `device_add` QEMU refuses, an attach cut short by
//! an agent restart, a guest that never answers.

use super::*;
use crate::client::Master;
use crate::images::ImageCache;
use cm_api::agent::{DesiredAttachment, ImageRef, Power};
use cm_api::image::ImageKind;
use cm_api::instance::Accel;
use serde_json::{json, Value};
use std::collections::BTreeSet;
use std::io::{BufRead, BufReader, Write};
use std::os::unix::net::UnixListener;
use std::sync::{Arc, Mutex};

#[derive(Default)]
struct Monitor {
    devices: BTreeSet<String>,
    nodes: BTreeSet<String>,
    refuse_device_add: bool,
    /// Whether the guest answers an eject.
    releases: bool,
    log: Vec<String>,
}

/// Serve `mon` on `sock`, one client at a time, as QEMU does.
fn serve(sock: &Path, mon: Arc<Mutex<Monitor>>) {
    let listener = UnixListener::bind(sock).unwrap();
    std::thread::spawn(move || {
        for conn in listener.incoming() {
            let Ok(mut w) = conn else { return };
            let r = BufReader::new(w.try_clone().unwrap());
            w.write_all(b"{\"QMP\": {}}\n").unwrap();
            for line in r.lines() {
                let Ok(line) = line else { break };
                let v: Value = serde_json::from_str(&line).unwrap();
                let (answer, event) = answer(&mut mon.lock().unwrap(), &v);
                let _ = w.write_all(format!("{answer}\n").as_bytes());
                if let Some(e) = event {
                    let _ = w.write_all(format!("{e}\n").as_bytes());
                }
            }
        }
    });
}

fn answer(m: &mut Monitor, v: &Value) -> (Value, Option<Value>) {
    let cmd = v["execute"].as_str().unwrap_or("").to_string();
    let a = &v["arguments"];
    let err = |d: &str| json!({"error": {"class": "GenericError", "desc": d}});
    if cmd != "qmp_capabilities" {
        m.log.push(cmd.clone());
    }
    let ok = json!({"return": {}});
    match cmd.as_str() {
        "query-block" => {
            let b: Vec<Value> = m
                .devices
                .iter()
                .map(|d| {
                    json!({"device": "",
                "qdev": format!("/machine/peripheral/{d}/virtio-backend"),
                "inserted": {"node-name": d}})
                })
                .collect();
            (json!({ "return": b }), None)
        }
        "query-named-block-nodes" => {
            let n: Vec<Value> = m.nodes.iter().map(|n| json!({ "node-name": n })).collect();
            (json!({ "return": n }), None)
        }
        "blockdev-add" => {
            let n = a["node-name"].as_str().unwrap().to_string();
            if !m.nodes.insert(n) {
                return (err("duplicate node name"), None);
            }
            (ok, None)
        }
        "device_add" => {
            let d = a["id"].as_str().unwrap().to_string();
            if m.refuse_device_add || !m.nodes.contains(&d) || m.devices.contains(&d) {
                return (err("Bus 'pci.0' does not support hotplugging"), None);
            }
            m.devices.insert(d);
            (ok, None)
        }
        "device_del" => {
            let d = a["id"].as_str().unwrap().to_string();
            if m.releases && m.devices.remove(&d) {
                let e = json!({"event": "DEVICE_DELETED", "data": {"device": d}});
                return (ok, Some(e));
            }
            (ok, None)
        }
        "blockdev-del" => {
            let n = a["node-name"].as_str().unwrap().to_string();
            if m.devices.contains(&n) || !m.nodes.remove(&n) {
                return (err("node in use or missing"), None);
            }
            (ok, None)
        }
        "qmp_capabilities" => (ok, None),
        _ => (err("unknown command"), None),
    }
}

struct Setup {
    _tmp: tempfile::TempDir,
    ctx: Arc<VmContext>,
    qmp: PathBuf,
    mon: Arc<Mutex<Monitor>>,
}

fn setup(volumes: &[Uuid]) -> Setup {
    let tmp = tempfile::Builder::new()
        .prefix("cma")
        .tempdir_in("/tmp")
        .unwrap();
    let vols = tmp.path().join("volumes");
    std::fs::create_dir_all(&vols).unwrap();
    for v in volumes {
        // A real qcow2: a report measures every file it lists.
        crate::volumes::files::create(&vols, *v, 1 << 20).unwrap();
    }
    let master = Arc::new(Master::new("http://127.0.0.1:9", String::new()).unwrap());
    let ctx = VmContext::new(
        PathBuf::from("qemu-system-x86_64"),
        tmp.path().join("instances"),
        ImageCache::new(tmp.path().join("images")),
        master,
        cm_api::words::ResolvedAccel::Tcg,
        "127.0.0.1".into(),
        "10.0.2.2:8107".into(),
    );
    let qmp = tmp.path().join("qmp.sock");
    let mon = Arc::new(Mutex::new(Monitor {
        releases: true,
        ..Monitor::default()
    }));
    serve(&qmp, mon.clone());
    Setup {
        _tmp: tmp,
        ctx: Arc::new(ctx),
        qmp,
        mon,
    }
}

fn spec(volumes: &[Uuid], force: &[Uuid]) -> DesiredInstance {
    DesiredInstance {
        id: Uuid::nil(),
        name: "vm".into(),
        power: Power::Running,
        boot_gen: 1,
        reboot_gen: 0,
        stop_timeout_secs: 0,
        memory_mib: 128,
        vcpus: 1,
        accel: Accel::Tcg,
        image: ImageRef {
            id: Uuid::nil(),
            name: "i".into(),
            kind: ImageKind::Kernel,
            files: vec![],
            cmdline: None,
        },
        ports: vec![],
        disk_gib: 0,
        boot: None,
        health: None,
        volumes: volumes
            .iter()
            .map(|v| DesiredAttachment {
                volume: *v,
                name: "d".into(),
            })
            .collect(),
        force_detach: force.to_vec(),
        root_snapshots: Vec::new(),
        root_deleted_snapshots: Vec::new(),
        root_revert: None,
        root_volume: None,
    }
}

const T: Duration = Duration::from_secs(30);

#[tokio::test(flavor = "multi_thread")]
async fn a_refused_device_add_removes_its_node_and_is_the_volumes_error() {
    let v = Uuid::new_v4();
    let s = setup(&[v]);
    s.mon.lock().unwrap().refuse_device_add = true;
    let mut a = Attachments::default();
    let next = a.converge(&s.ctx, &s.qmp, &spec(&[v], &[]), T).await;
    assert_eq!(next, Next::Idle);
    assert!(a.observed.is_empty());
    {
        let m = s.mon.lock().unwrap();
        assert!(m.nodes.is_empty(), "the node is removed again");
        assert_eq!(
            m.log[2..],
            ["blockdev-add", "device_add", "blockdev-del"].map(String::from)
        );
    }
    let error = |s: &Setup| {
        s.ctx
            .volumes
            .report()
            .into_iter()
            .find(|o| o.id == v)
            .and_then(|o| o.error)
    };
    let e = error(&s).unwrap();
    assert!(
        e.contains("attaching to vm") && e.contains("hotplugging"),
        "{e}"
    );
    // Not tried again at once...
    let before = s.mon.lock().unwrap().log.len();
    a.converge(&s.ctx, &s.qmp, &spec(&[v], &[]), T).await;
    assert_eq!(
        s.mon.lock().unwrap().log.len(),
        before + 2,
        "only the query"
    );
    // ...but as soon as the desired list changes; no longer wanted, no error.
    a.converge(&s.ctx, &s.qmp, &spec(&[], &[]), T).await;
    assert_eq!(error(&s), None);
}

#[tokio::test(flavor = "multi_thread")]
async fn an_agent_restarted_half_way_finishes_from_what_qemu_holds() {
    let (kept, cut, gone) = (Uuid::new_v4(), Uuid::new_v4(), Uuid::new_v4());
    let s = setup(&[kept, cut, gone]);
    let node = cm_api::volume::qemu_node;
    {
        let mut m = s.mon.lock().unwrap();
        // Attached before the restart; an attach cut after blockdev-add; a
        // detach cut after DEVICE_DELETED, before blockdev-del.
        m.nodes.extend([node(kept), node(cut), node(gone)]);
        m.devices.insert(node(kept));
    }
    // Before any step, the successor reports what QEMU holds (a disk it
    // is not to have as detaching), asking QEMU only.
    let mut a = Attachments::default();
    a.adopt(&s.ctx, &spec(&[cut], &[]), true, &s.qmp).await;
    assert_eq!(a.observed.len(), 1);
    assert_eq!(
        (a.observed[0].volume, a.observed[0].state),
        (kept, AttachmentState::Detaching)
    );
    s.mon.lock().unwrap().log.clear();
    let next = a
        .converge(&s.ctx, &s.qmp, &spec(&[kept, cut], &[]), T)
        .await;
    assert_eq!(next, Next::Idle);
    let m = s.mon.lock().unwrap();
    assert_eq!(
        m.log[2..],
        ["blockdev-del", "device_add"].map(String::from),
        "nothing added twice"
    );
    assert_eq!(m.devices, BTreeSet::from([node(kept), node(cut)]));
    assert_eq!(m.nodes, m.devices);
    drop(m);
    let ids: Vec<Uuid> = a.observed.iter().map(|o| o.volume).collect();
    assert_eq!(ids, [kept, cut]);
    assert!(a
        .observed
        .iter()
        .all(|o| o.state == AttachmentState::Attached));
}

#[tokio::test(flavor = "multi_thread")]
async fn a_guest_that_never_releases_times_out_or_is_restarted_with_force() {
    let v = Uuid::new_v4();
    let s = setup(&[v]);
    let mut a = Attachments::default();
    a.converge(&s.ctx, &s.qmp, &spec(&[v], &[]), T).await;
    s.mon.lock().unwrap().releases = false;
    let short = Duration::from_millis(300);
    let t = std::time::Instant::now();
    assert_eq!(
        a.converge(&s.ctx, &s.qmp, &spec(&[], &[]), short).await,
        Next::Busy
    );
    assert!(t.elapsed() >= RELEASE_WAIT, "waited for DEVICE_DELETED");
    assert_eq!(a.observed[0].state, AttachmentState::Detaching);
    assert_eq!(a.observed[0].error, None);
    tokio::time::sleep(short).await;
    assert_eq!(
        a.converge(&s.ctx, &s.qmp, &spec(&[], &[]), short).await,
        Next::Idle
    );
    let err = a.observed[0].error.clone().unwrap();
    assert!(err.contains("did not release"), "{err}");
    // Given up: no device_del again until the desired list changes.
    a.converge(&s.ctx, &s.qmp, &spec(&[], &[]), short).await;
    let dels = |s: &Setup| {
        s.mon
            .lock()
            .unwrap()
            .log
            .iter()
            .filter(|c| *c == "device_del")
            .count()
    };
    assert_eq!(dels(&s), 1);
    // With force: asked again, and past the timeout, a restart.
    let forced = spec(&[], &[v]);
    assert_eq!(a.converge(&s.ctx, &s.qmp, &forced, short).await, Next::Busy);
    assert_eq!(dels(&s), 2);
    tokio::time::sleep(short).await;
    assert_eq!(
        a.converge(&s.ctx, &s.qmp, &forced, short).await,
        Next::Restart
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_disk_wanted_again_while_released_is_timed_afresh_when_unwanted() {
    let v = Uuid::new_v4();
    let s = setup(&[v]);
    let mut a = Attachments::default();
    a.converge(&s.ctx, &s.qmp, &spec(&[v], &[]), T).await;
    s.mon.lock().unwrap().releases = false;
    let short = Duration::from_millis(300);
    a.converge(&s.ctx, &s.qmp, &spec(&[], &[]), short).await;
    assert_eq!(a.observed[0].state, AttachmentState::Detaching);
    // Wanted again before the guest answered: attached, nothing added.
    a.converge(&s.ctx, &s.qmp, &spec(&[v], &[]), short).await;
    assert_eq!(a.observed[0].state, AttachmentState::Attached);
    tokio::time::sleep(short).await;
    // Unwanted again: a new request and a new timer, not an old timeout.
    let next = a.converge(&s.ctx, &s.qmp, &spec(&[], &[]), short).await;
    assert_eq!(next, Next::Busy);
    assert_eq!(a.observed[0].error, None);
    let log = s.mon.lock().unwrap().log.clone();
    assert_eq!(log.iter().filter(|c| *c == "device_del").count(), 2);
    assert_eq!(log.iter().filter(|c| *c == "device_add").count(), 1);
}
