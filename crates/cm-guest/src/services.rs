//! Services of a cm-guest config: long-running commands (or LSB init
//! scripts, lsb.rs) kept running, with health checks (a command, or an HTTP
//! GET), reported in every heartbeat.

use crate::format::{Check, Service};
use cm_api::boot::ServiceState;
use cm_api::words::KnownServiceStatus as S;
use std::collections::BTreeMap;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// A service that ran this long before exiting restarts without back-off.
const STABLE: Duration = Duration::from_secs(30);
const MAX_BACKOFF: Duration = Duration::from_secs(10);

#[derive(Debug, Clone, PartialEq, Eq)]
struct Status {
    state: S,
    detail: Option<String>,
}

struct Running {
    spec: Service,
    status: Arc<Mutex<Status>>,
    stop: Arc<AtomicBool>,
    threads: Vec<std::thread::JoinHandle<()>>,
}

pub struct Supervisor {
    services: Mutex<BTreeMap<String, Running>>,
    /// Where `lsb` services' scripts are (`/etc/init.d`).
    init_d: PathBuf,
}

impl Default for Supervisor {
    fn default() -> Supervisor {
        Supervisor::new(PathBuf::from("/etc/init.d"))
    }
}

fn set(status: &Mutex<Status>, state: S, detail: Option<String>) {
    if let Ok(mut s) = status.lock() {
        *s = Status { state, detail };
    }
}

pub fn kill_group(child: &mut Child) {
    // SAFETY: signalling the process group of a child this module started.
    unsafe {
        // A pid is at most PID_MAX_LIMIT (2^22): cast_signed never wraps.
        libc::kill(-child.id().cast_signed(), libc::SIGKILL);
    }
    let _ = child.wait();
}

/// Sleep `d` unless `stop` comes first; false when it came.
fn sleep_unless(stop: &AtomicBool, d: Duration) -> bool {
    let until = Instant::now() + d;
    while Instant::now() < until {
        if stop.load(Ordering::SeqCst) {
            return false;
        }
        std::thread::sleep((until - Instant::now()).min(Duration::from_millis(100)));
    }
    !stop.load(Ordering::SeqCst)
}

/// Keep an `lsb` service running until `stop`: `start`, then `status`
/// every second; a failing `status` means it is down: started again with
/// back-off. `stop` at the end.
fn supervise_lsb(
    spec: Service,
    script: PathBuf,
    status: Arc<Mutex<Status>>,
    stop: Arc<AtomicBool>,
    alive: Arc<AtomicBool>,
) {
    let mut backoff = Duration::from_secs(1);
    while !stop.load(Ordering::SeqCst) {
        let started = Instant::now();
        let down = match crate::lsb::run(&script, "start", &spec.env, crate::lsb::START_STOP_LIMIT)
        {
            Err(e) => e,
            Ok(()) => {
                alive.store(true, Ordering::SeqCst);
                let up = if spec.check.is_some() {
                    S::Starting
                } else {
                    S::Running
                };
                set(&status, up, None);
                loop {
                    if !sleep_unless(&stop, crate::lsb::STATUS_EVERY) {
                        alive.store(false, Ordering::SeqCst);
                        let r = crate::lsb::run(
                            &script,
                            "stop",
                            &spec.env,
                            crate::lsb::START_STOP_LIMIT,
                        );
                        set(&status, S::Stopped, r.err());
                        return;
                    }
                    if let Err(e) =
                        crate::lsb::run(&script, "status", &spec.env, crate::lsb::STATUS_LIMIT)
                    {
                        break e;
                    }
                }
            }
        };
        alive.store(false, Ordering::SeqCst);
        if started.elapsed() >= STABLE {
            backoff = Duration::from_secs(1);
        }
        set(
            &status,
            S::Failed,
            Some(format!("{down}; starting again in {}s", backoff.as_secs())),
        );
        sleep_unless(&stop, backoff);
        backoff = (backoff * 2).min(MAX_BACKOFF);
    }
}

/// Keep `spec.run` running until `stop`; restarts with back-off.
fn supervise(
    spec: Service,
    run: String,
    status: Arc<Mutex<Status>>,
    stop: Arc<AtomicBool>,
    alive: Arc<AtomicBool>,
) {
    let mut backoff = Duration::from_secs(1);
    while !stop.load(Ordering::SeqCst) {
        let spawned = Command::new("/bin/sh")
            .arg("-c")
            .arg(&run)
            .envs(&spec.env)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .process_group(0)
            .spawn();
        let mut child = match spawned {
            Ok(c) => c,
            Err(e) => {
                set(&status, S::Failed, Some(format!("cannot start: {e}")));
                std::thread::sleep(backoff);
                backoff = (backoff * 2).min(MAX_BACKOFF);
                continue;
            }
        };
        alive.store(true, Ordering::SeqCst);
        set(
            &status,
            if spec.check.is_some() {
                S::Starting
            } else {
                S::Running
            },
            None,
        );
        let started = Instant::now();
        let exit = loop {
            if stop.load(Ordering::SeqCst) {
                kill_group(&mut child);
                alive.store(false, Ordering::SeqCst);
                set(&status, S::Stopped, None);
                return;
            }
            match child.try_wait() {
                Ok(Some(st)) => break st.to_string(),
                Ok(None) => std::thread::sleep(Duration::from_millis(100)),
                Err(e) => break e.to_string(),
            }
        };
        alive.store(false, Ordering::SeqCst);
        // Its children (a forked daemon) go with it.
        kill_group(&mut child);
        if started.elapsed() >= STABLE {
            backoff = Duration::from_secs(1);
        }
        set(
            &status,
            S::Failed,
            Some(format!(
                "exited ({exit}); restarting in {}s",
                backoff.as_secs()
            )),
        );
        let until = Instant::now() + backoff;
        while Instant::now() < until && !stop.load(Ordering::SeqCst) {
            std::thread::sleep(Duration::from_millis(100));
        }
        backoff = (backoff * 2).min(MAX_BACKOFF);
    }
}

/// Whether `check` passes now.
pub fn check_once(check: &Check) -> Result<(), String> {
    let limit = Duration::from_secs(check.interval_secs.clamp(1, 10));
    if let Some(cmd) = &check.exec {
        let mut child = Command::new("/bin/sh")
            .arg("-c")
            .arg(cmd)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .process_group(0)
            .spawn()
            .map_err(|e| format!("check: {e}"))?;
        let deadline = Instant::now() + limit;
        loop {
            match child.try_wait() {
                Ok(Some(st)) if st.success() => return Ok(()),
                Ok(Some(st)) => return Err(format!("check `{cmd}` failed ({st})")),
                Ok(None) if Instant::now() >= deadline => {
                    kill_group(&mut child);
                    return Err(format!("check `{cmd}` timed out"));
                }
                Ok(None) => std::thread::sleep(Duration::from_millis(20)),
                Err(e) => return Err(format!("check: {e}")),
            }
        }
    }
    if let Some(url) = &check.http {
        let agent: ureq::Agent = ureq::Agent::config_builder()
            .timeout_global(Some(limit))
            .http_status_as_error(false)
            .build()
            .into();
        return match agent.get(url).call() {
            Ok(r) if r.status().is_success() => Ok(()),
            Ok(r) => Err(format!("GET {url}: HTTP {}", r.status().as_u16())),
            Err(e) => Err(format!("GET {url}: {e}")),
        };
    }
    Ok(())
}

fn health(check: Check, status: Arc<Mutex<Status>>, stop: Arc<AtomicBool>, alive: Arc<AtomicBool>) {
    let interval = Duration::from_secs(check.interval_secs.max(1));
    while !stop.load(Ordering::SeqCst) {
        if alive.load(Ordering::SeqCst) {
            let result = check_once(&check);
            // The process may have died while the check ran: its state wins.
            if alive.load(Ordering::SeqCst) && !stop.load(Ordering::SeqCst) {
                match result {
                    Ok(()) => set(&status, S::Running, None),
                    Err(e) => set(&status, S::Unhealthy, Some(e)),
                }
            }
        }
        let until = Instant::now() + interval;
        while Instant::now() < until && !stop.load(Ordering::SeqCst) {
            std::thread::sleep(Duration::from_millis(100));
        }
    }
}

impl Supervisor {
    /// A supervisor whose `lsb` services' scripts are in `init_d`.
    pub fn new(init_d: PathBuf) -> Supervisor {
        Supervisor {
            services: Mutex::new(BTreeMap::new()),
            init_d,
        }
    }

    fn script(&self, name: &str) -> PathBuf {
        self.init_d.join(Path::new(name))
    }

    fn map(&self) -> std::sync::MutexGuard<'_, BTreeMap<String, Running>> {
        match self.services.lock() {
            Ok(m) => m,
            Err(p) => p.into_inner(),
        }
    }

    /// Run exactly `wanted`: stop services that are gone or changed, start new ones.
    pub fn reconcile(&self, wanted: &[Service]) {
        let mut map = self.map();
        let keep: Vec<String> = wanted
            .iter()
            .filter(|w| map.get(&w.name).map(|r| r.spec == **w).unwrap_or(false))
            .map(|w| w.name.clone())
            .collect();
        let stale: Vec<String> = map.keys().filter(|k| !keep.contains(k)).cloned().collect();
        for name in stale {
            if let Some(r) = map.remove(&name) {
                stop(r);
            }
        }
        for spec in wanted.iter().filter(|w| !keep.contains(&w.name)) {
            let status = Arc::new(Mutex::new(Status {
                state: S::Starting,
                detail: None,
            }));
            let stop_flag = Arc::new(AtomicBool::new(false));
            let alive = Arc::new(AtomicBool::new(false));
            let mut threads = Vec::new();
            {
                let (s, st, sp, al) = (
                    spec.clone(),
                    status.clone(),
                    stop_flag.clone(),
                    alive.clone(),
                );
                match (&spec.run, &spec.lsb) {
                    (Some(run), _) => {
                        let run = run.clone();
                        threads.push(std::thread::spawn(move || supervise(s, run, st, sp, al)));
                    }
                    (None, Some(lsb)) => {
                        let script = self.script(lsb);
                        threads.push(std::thread::spawn(move || {
                            supervise_lsb(s, script, st, sp, al)
                        }));
                    }
                    // format.rs refuses a service with neither.
                    (None, None) => set(&status, S::Failed, Some("no run, no lsb".into())),
                }
            }
            if let Some(check) = spec.check.clone() {
                let (st, sp, al) = (status.clone(), stop_flag.clone(), alive.clone());
                threads.push(std::thread::spawn(move || health(check, st, sp, al)));
            }
            map.insert(
                spec.name.clone(),
                Running {
                    spec: spec.clone(),
                    status,
                    stop: stop_flag,
                    threads,
                },
            );
        }
    }

    pub fn states(&self) -> Vec<ServiceState> {
        self.map()
            .iter()
            .map(|(name, r)| {
                let s = r.status.lock().map(|s| s.clone()).unwrap_or(Status {
                    state: S::Unknown,
                    detail: None,
                });
                ServiceState {
                    name: name.clone(),
                    state: s.state.into(),
                    detail: s.detail,
                }
            })
            .collect()
    }
}

fn stop(r: Running) {
    r.stop.store(true, Ordering::SeqCst);
    for t in r.threads {
        let _ = t.join();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn wait_for(sup: &Supervisor, name: &str, state: S) -> ServiceState {
        let start = Instant::now();
        loop {
            if let Some(s) = sup
                .states()
                .into_iter()
                .find(|s| s.name == name && s.state == state)
            {
                return s;
            }
            assert!(
                start.elapsed() < Duration::from_secs(20),
                "{name} never {state}: {:?}",
                sup.states()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    fn svc(name: &str, run: &str, check: Option<Check>) -> Service {
        Service {
            name: name.into(),
            run: Some(run.into()),
            lsb: None,
            check,
            env: BTreeMap::new(),
            restart_gen: 0,
        }
    }

    fn lines(path: &Path) -> usize {
        std::fs::read_to_string(path)
            .unwrap_or_default()
            .lines()
            .count()
    }

    fn wait_lines(path: &Path, n: usize) {
        let start = Instant::now();
        while lines(path) < n {
            assert!(
                start.elapsed() < Duration::from_secs(20),
                "{}: {} lines, not {n}",
                path.display(),
                lines(path)
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    #[test]
    fn env_reaches_the_command_and_a_new_restart_gen_restarts_it() {
        let d = tempfile::tempdir().unwrap();
        let log = d.path().join("log");
        let mut s = svc(
            "app",
            &format!("echo \"$DB\" >> {}; sleep 60", log.display()),
            None,
        );
        s.env.insert("DB".into(), "10.0.0.5:5432".into());
        let sup = Supervisor::default();
        sup.reconcile(std::slice::from_ref(&s));
        wait_lines(&log, 1);
        // The same spec again: nothing restarts.
        sup.reconcile(std::slice::from_ref(&s));
        std::thread::sleep(Duration::from_millis(300));
        assert_eq!(lines(&log), 1);
        s.restart_gen = 1;
        sup.reconcile(std::slice::from_ref(&s));
        wait_lines(&log, 2);
        let text = std::fs::read_to_string(&log).unwrap();
        assert_eq!(text, "10.0.0.5:5432\n10.0.0.5:5432\n");
        sup.reconcile(&[]);
    }

    #[test]
    fn an_lsb_service_is_started_watched_by_status_and_stopped() {
        use std::os::unix::fs::PermissionsExt;
        let d = tempfile::tempdir().unwrap();
        let (log, up) = (d.path().join("log"), d.path().join("up"));
        // `status` answers from a file the test removes to "kill" it.
        let script = format!(
            "#!/bin/sh\necho \"$1 $ROLE\" >> {log}\ncase \"$1\" in\n  start) touch {up} ;;\n  stop) rm -f {up} ;;\n  status) [ -e {up} ] || exit 3 ;;\nesac\n",
            log = log.display(),
            up = up.display()
        );
        std::fs::write(d.path().join("appd"), script).unwrap();
        std::fs::set_permissions(
            d.path().join("appd"),
            std::fs::Permissions::from_mode(0o755),
        )
        .unwrap();
        let sup = Supervisor::new(d.path().to_path_buf());
        let mut s = svc("app", "unused", None);
        s.run = None;
        s.lsb = Some("appd".into());
        s.env.insert("ROLE".into(), "db".into());
        sup.reconcile(std::slice::from_ref(&s));
        wait_for(&sup, "app", S::Running);
        wait_lines(&log, 2); // start, status
                             // Down: status fails, the service is failed, then started again.
        std::fs::remove_file(&up).unwrap();
        let f = wait_for(&sup, "app", S::Failed);
        assert!(f.detail.unwrap().contains("exit status: 3"));
        wait_for(&sup, "app", S::Running);
        assert!(up.exists());
        sup.reconcile(&[]);
        assert!(!up.exists(), "stop was not run");
        let text = std::fs::read_to_string(&log).unwrap();
        assert!(text.starts_with("start db\nstatus db\n"), "{text}");
        assert_eq!(text.matches("start db").count(), 2, "{text}");
        assert!(text.ends_with("stop db\n"), "{text}");
    }

    #[test]
    fn services_run_restart_and_stop() {
        let d = tempfile::tempdir().unwrap();
        let count = d.path().join("count");
        let sup = Supervisor::default();
        // Exits at once: restarted, with its exit reported.
        sup.reconcile(&[svc(
            "flaky",
            &format!("echo x >> {}; exit 1", count.display()),
            None,
        )]);
        let s = wait_for(&sup, "flaky", S::Failed);
        assert!(s.detail.unwrap().contains("exit status: 1"));
        let start = Instant::now();
        while std::fs::read_to_string(&count)
            .unwrap_or_default()
            .lines()
            .count()
            < 2
        {
            assert!(start.elapsed() < Duration::from_secs(10), "not restarted");
            std::thread::sleep(Duration::from_millis(50));
        }
        // Replaced by a long-running one; the old one is gone.
        sup.reconcile(&[svc("steady", "sleep 60", None)]);
        wait_for(&sup, "steady", S::Running);
        assert_eq!(sup.states().len(), 1);
        sup.reconcile(&[]);
        assert!(sup.states().is_empty());
    }

    #[test]
    fn checks_tell_running_from_unhealthy() {
        let d = tempfile::tempdir().unwrap();
        let flag = d.path().join("healthy");
        let sup = Supervisor::default();
        let check = Check {
            exec: Some(format!("test -e {}", flag.display())),
            http: None,
            interval_secs: 1,
        };
        sup.reconcile(&[svc("app", "sleep 60", Some(check))]);
        let s = wait_for(&sup, "app", S::Unhealthy);
        assert!(s.detail.unwrap().contains("failed"));
        std::fs::write(&flag, "").unwrap();
        wait_for(&sup, "app", S::Running);
        // HTTP: a local server that answers 200.
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        std::thread::spawn(move || {
            for s in listener.incoming().flatten() {
                let mut s = s;
                let mut buf = [0u8; 1024];
                let _ = std::io::Read::read(&mut s, &mut buf);
                let _ = std::io::Write::write_all(
                    &mut s,
                    b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok",
                );
            }
        });
        let ok = Check {
            exec: None,
            http: Some(format!("http://127.0.0.1:{port}/")),
            interval_secs: 1,
        };
        assert_eq!(check_once(&ok), Ok(()));
        let closed = Check {
            exec: None,
            http: Some("http://127.0.0.1:1/".into()),
            interval_secs: 1,
        };
        assert!(check_once(&closed).is_err());
        sup.reconcile(&[]);
    }
}
