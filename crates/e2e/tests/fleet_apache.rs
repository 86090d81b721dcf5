//! Issue 4, point 7 (Apache): the seed's referee. A real apache2 with
//! mod_proxy_balancer runs on an sshd node (R) that cm reaches over SSH;
//! cm writes the seed's balancer block into the file it owns there, marks
//! stopped members, checks the config, reloads gracefully, and keeps what
//! it did not write.

use std::path::PathBuf;
use std::process::Command;
use std::time::Duration;
use test_infra::haproxy::{get, Backend};
use test_infra::sshd::{cm_as, Run, SshFleet, NODE_DIR};
use test_infra::wait::{free_port_on, wait_until};

const MODULES: [&str; 7] = [
    "mpm_event",
    "authz_core",
    "proxy",
    "proxy_http",
    "proxy_balancer",
    "slotmem_shm",
    "lbmethod_byrequests",
];

/// Hand-written content of the included file, around which cm writes.
const FOREIGN: &str = "# Written by hand: cm must keep this.\nTimeout 45\n";

struct Site {
    fleet: SshFleet,
    backends: Vec<Backend>,
    /// R's apache, as `ip:port`.
    apache: String,
    ini: String,
    /// The file cm owns a block of, as seen from this machine.
    file: PathBuf,
}

fn ssh_r(f: &SshFleet, script: &str) -> std::process::Output {
    Command::new("ssh")
        .arg("-F")
        .arg(&f.ssh_config)
        .args(["-o", "BatchMode=yes", &f.node("R").addr, "--", script])
        .output()
        .expect("ssh")
}

fn site() -> Site {
    let fleet = SshFleet::start(&["A", "B", "C", "R"]).expect("sshd fleet");
    let backends: Vec<Backend> = ["A", "B", "C"]
        .iter()
        .map(|n| {
            let addr = format!("{}:0", fleet.node(n).addr);
            Backend::start(n, &addr).expect("backend")
        })
        .collect();
    let r = fleet.node("R");
    let apache = format!("{}:{}", r.addr, free_port_on(&r.addr));
    let conf_dir = r.root.join("apache");
    std::fs::create_dir_all(conf_dir.join("run")).unwrap();
    let mut conf = String::new();
    for m in MODULES {
        conf.push_str(&format!(
            "LoadModule {m}_module /usr/lib/apache2/modules/mod_{m}.so\n"
        ));
    }
    conf.push_str(&format!(
        "ServerName referee\nListen {apache}\nUser www-data\nGroup www-data\n\
         PidFile {NODE_DIR}/apache/httpd.pid\nErrorLog {NODE_DIR}/apache/error.log\n\
         DefaultRuntimeDir {NODE_DIR}/apache/run\nMutex posixsem\n\
         Include {NODE_DIR}/proxybalancer\n"
    ));
    std::fs::write(conf_dir.join("httpd.conf"), conf).unwrap();
    let file = r.root.join("proxybalancer");
    std::fs::write(&file, FOREIGN).unwrap();
    // Started over SSH, so it lives in R's namespaces (its own /srv/cm-node).
    let out = ssh_r(
        &fleet,
        &format!("apache2 -f {NODE_DIR}/apache/httpd.conf -k start"),
    );
    assert!(
        out.status.success(),
        "apache2: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    wait_until("apache listening", Duration::from_secs(20), || {
        std::net::TcpStream::connect(&apache).ok().map(|_| ())
    })
    .unwrap();
    let mut ini = String::from("[nodes]\n");
    for b in &backends {
        ini.push_str(&format!("{}={}\n", b.name, b.addr));
    }
    ini.push_str(&format!(
        "\n[ssh]\nport={port}\nuser=root\nidentity={key}\n\
         options=UserKnownHostsFile={kh},GlobalKnownHostsFile=/dev/null\n\n\
         [referee]\nip={rip}\nconfig={NODE_DIR}/proxybalancer\nclusterID=meuCluster\nclusterFolder=cs\n\
         check=apache2 -t -f {NODE_DIR}/apache/httpd.conf\n\
         reload=apache2 -k graceful -f {NODE_DIR}/apache/httpd.conf\n",
        port = fleet.port,
        key = fleet.key.display(),
        kh = fleet.known_hosts.display(),
        rip = r.addr,
    ));
    let path = fleet.dir.path().join("cloudManager.ini");
    std::fs::write(&path, ini).unwrap();
    Site {
        backends,
        apache,
        ini: path.display().to_string(),
        file,
        fleet,
    }
}

impl Site {
    fn cm(&self, program: &str, args: &[&str]) -> Run {
        cm_as(program, args, &[("CM_INVENTORY", &self.ini)], None)
    }

    fn hits(&self, name: &str) -> usize {
        self.backends
            .iter()
            .find(|b| b.name == name)
            .unwrap()
            .hits()
            .len()
    }

    /// `n` requests to /cs/ through apache; each must succeed.
    fn requests(&self, n: usize) {
        for i in 0..n {
            get(&self.apache, "/cs/")
                .unwrap_or_else(|e| panic!("request {i} through apache failed: {e}"));
        }
    }

    /// After a graceful reload, wait until the new generation serves (every
    /// answer from an old child has been given).
    fn settle(&self) {
        std::thread::sleep(Duration::from_millis(1500));
    }

    fn text(&self) -> String {
        std::fs::read_to_string(&self.file).unwrap()
    }
}

impl Drop for Site {
    fn drop(&mut self) {
        let _ = ssh_r(
            &self.fleet,
            &format!("apache2 -f {NODE_DIR}/apache/httpd.conf -k stop"),
        );
    }
}

#[test]
fn cm_writes_the_seeds_balancer_block_and_keeps_the_rest() {
    let s = site();
    let r = s.cm("cmplay", &["*"]);
    assert_eq!(r.code, 0, "{r:?}");
    let text = s.text();
    assert!(text.starts_with(FOREIGN), "{text}");
    for b in &s.backends {
        assert!(
            text.contains(&format!("    BalancerMember http://{}\n", b.addr)),
            "{text}"
        );
    }
    assert!(text.contains("<Proxy balancer://meuCluster>\n"), "{text}");
    assert!(
        text.contains("ProxyPass /cs balancer://meuCluster\n"),
        "{text}"
    );
    s.settle();
    s.requests(30);
    for n in ["A", "B", "C"] {
        assert!(s.hits(n) > 0, "{n} got nothing");
    }

    // Stop B (old name, old order): marked, not dropped; no more requests.
    let r = s.cm("cmstop", &["B"]);
    assert_eq!(r.code, 0, "{r:?}");
    let text = s.text();
    let b_addr = &s.backends[1].addr;
    assert!(
        text.contains(&format!("BalancerMember http://{b_addr} status=+S\n")),
        "{text}"
    );
    assert!(text.starts_with(FOREIGN));
    s.settle();
    let before = s.hits("B");
    s.requests(30);
    assert_eq!(s.hits("B"), before, "B got requests while stopped");
    let r = s.cm("cm", &["--json", "status"]);
    assert_eq!(r.code, 0, "{r:?}");
    assert!(
        r.stdout
            .lines()
            .any(|l| l.contains("\"node\":\"B\"") && l.contains("\"state\":\"stopped\"")),
        "{}",
        r.stdout
    );

    // Back in.
    let r = s.cm("cm", &["play", "B"]);
    assert_eq!(r.code, 0, "{r:?}");
    assert!(!s.text().contains("status=+S"));
    s.settle();
    let before = s.hits("B");
    s.requests(30);
    assert!(s.hits("B") > before, "B got nothing after play");
    // The pool is never emptied without --force.
    let r = s.cm("cm", &["stop", "A,B,C"]);
    assert_eq!(r.code, 2, "{r:?}");
    assert!(!s.text().contains("status=+S"));
}

#[test]
fn a_failed_check_puts_the_old_file_back_and_changes_nothing() {
    let s = site();
    assert_eq!(s.cm("cm", &["play", "all"]).code, 0);
    let good = s.text();
    // The same inventory with a check that fails.
    let bad = std::fs::read_to_string(&s.ini).unwrap().replace(
        &format!("check=apache2 -t -f {NODE_DIR}/apache/httpd.conf"),
        "check=echo 'Syntax error on line 3' >&2; exit 1",
    );
    let bad_ini = s.fleet.dir.path().join("bad.ini");
    std::fs::write(&bad_ini, bad).unwrap();
    let r = cm_as(
        "cm",
        &["stop", "C", "--inventory", bad_ini.to_str().unwrap()],
        &[],
        None,
    );
    assert_ne!(r.code, 0, "{r:?}");
    assert!(r.stderr.contains("Syntax error on line 3"), "{}", r.stderr);
    assert_eq!(s.text(), good, "the file was not put back");
    s.settle();
    s.requests(15);
    assert!(s.hits("C") > 0);
}

#[test]
fn a_balancer_written_by_hand_is_never_overwritten() {
    let s = site();
    // The seed's own output, unmarked, in the file.
    let seed = format!(
        "{FOREIGN}<Proxy balancer://meuCluster>\n    BalancerMember http://{}\n</Proxy>\nProxyPass /cs balancer://meuCluster\n",
        s.backends[0].addr
    );
    std::fs::write(&s.file, &seed).unwrap();
    let r = s.cm("cm", &["stop", "B"]);
    assert_ne!(r.code, 0, "{r:?}");
    assert!(
        r.stderr.contains(&format!("{NODE_DIR}/proxybalancer:3:"))
            && r.stderr.contains("outside cm's block"),
        "{}",
        r.stderr
    );
    assert_eq!(s.text(), seed);
}

/// Issue 9, point 18: two `cm stop` at once on the Apache referee (reached
/// over SSH; the lock is taken on R) both end up in the file: neither
/// writes back a file read before the other's edit.
#[test]
fn two_stops_at_once_both_end_up_in_the_file() {
    let s = site();
    let spawn = |node: &str| {
        Command::new(test_infra::paths::bin("cm"))
            .args(["stop", node, "--inventory", &s.ini])
            .env_remove("CM_INVENTORY")
            .stdin(std::process::Stdio::null())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .expect("cm stop")
    };
    for round in 0..3 {
        assert_eq!(s.cm("cm", &["play", "all"]).code, 0, "round {round}");
        assert!(!s.text().contains("status=+S"));
        let (a, b) = (spawn("A"), spawn("B"));
        let (a, b) = (a.wait_with_output().unwrap(), b.wait_with_output().unwrap());
        for o in [&a, &b] {
            assert!(
                o.status.success(),
                "round {round}: {}",
                String::from_utf8_lossy(&o.stderr)
            );
        }
        let text = s.text();
        for b in &s.backends[..2] {
            assert!(
                text.contains(&format!("BalancerMember http://{} status=+S\n", b.addr)),
                "round {round}: an edit was lost:\n{text}"
            );
        }
        assert!(text.starts_with(FOREIGN), "{text}");
        assert!(
            !text.contains(&format!("http://{} status", s.backends[2].addr)),
            "{text}"
        );
    }
}
