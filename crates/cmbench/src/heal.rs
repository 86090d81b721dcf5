//! Heal benchmark (issue 11): how fast a deployable heals on a real TCG
//! guest, beside a bare boot of the same image in the same run. A
//! deployable of one web assembly (`test_infra::deploy::shop`: busybox
//! httpd, an http check, a forwarded port, 1 s beats, a 3 s timeout, a
//! restart budget of 0 so a failure replaces it) on one host. Each round:
//! - bare: `cm instance create` of the same image, config and heartbeat
//!   policy → the guest's first beat (`up`), → its port answers 200;
//! - its QEMU killed (SIGKILL) → the engine's first event about the slot
//!   (the event's own time), → the replacement `running`, → the
//!   replacement's forwarded port answers 200, → a request through the
//!   real HAProxy in front (the master's balancer `edge`, the web service's
//!   pool) answers 200 again (one web: only the replacement can answer);
//! - its guest frozen (QMP `stop`) → the engine's first event, → `silent`.
//!
//! Figures, not a test: medians and maxima, each as a ratio to the bare
//! boot, and the goals beside them.

use anyhow::Context;
use cm_api::event::Event;
use cm_api::instance::{Instance, InstanceState};
use cm_api::words::GuestLiveness;
use cm_client::api;
use std::time::{Duration, Instant, SystemTime};
use test_infra::deploy::{self, slot, DeployUser};
use test_infra::haproxy::Haproxy;
use test_infra::{free_port, qmp, Cloud, MasterOpts};

#[derive(Debug, clap::Args)]
pub struct Args {
    /// Rounds (a bare boot, a kill, a freeze each), 1 to 10.
    #[arg(long, default_value_t = 3)]
    pub rounds: usize,
}

impl Default for Args {
    fn default() -> Self {
        Args { rounds: 3 }
    }
}

/// No step may take longer, however loaded the machine.
const LIMIT: Duration = Duration::from_secs(300);
const POLL: Duration = Duration::from_millis(20);

/// The web assembly's guest config, for the bare instance (what the
/// engine renders for a slot, by hand).
const WEB_CONFIG: &str = "#cm-guest\n[agent]\nheartbeat_ms = 1000\n\
[[file]]\npath = \"/srv/index.html\"\ncontent = \"web\\n\"\n\
[[service]]\nname = \"httpd\"\nrun = \"httpd -f -p 8080 -h /srv\"\n\
[service.check]\nhttp = \"http://127.0.0.1:8080/\"\ninterval_secs = 1\n";

/// Poll `f` every 20 ms until it gives `Some`; fail after [`LIMIT`].
fn poll<T>(what: &str, mut f: impl FnMut() -> Option<T>) -> anyhow::Result<T> {
    let start = Instant::now();
    loop {
        if let Some(v) = f() {
            return Ok(v);
        }
        anyhow::ensure!(start.elapsed() < LIMIT, "{what}: not within {LIMIT:?}");
        std::thread::sleep(POLL);
    }
}

struct Bare {
    up: Duration,
    serving: Duration,
}

fn bare_boot(cloud: &Cloud, n: usize, config: &str) -> anyhow::Result<Bare> {
    let api = cloud.api();
    let name = format!("bare-{n}");
    let port = format!("8080:{}", free_port());
    let start = Instant::now();
    cloud.cm_ok(&[
        "instance",
        "create",
        &name,
        "--image",
        "cm-test",
        "--flavor",
        "m1.tiny",
        "--port",
        &port,
        "--config",
        config,
        "--heartbeat-interval",
        "1s",
        "--heartbeat-timeout",
        "3s",
    ]);
    let up = poll("the bare guest's first beat", || {
        api.call(api::instances::show(&name))
            .ok()
            .filter(|i| i.guest.liveness == Some(GuestLiveness::Up))
    })?;
    let up_at = start.elapsed();
    let url = url(cloud, &up)?;
    let serving = deploy::wait_serving(&url, start, LIMIT)?;
    cloud.cm_ok(&["instance", "delete", &name]);
    Ok(Bare { up: up_at, serving })
}

/// `http://FORWARD_ADDR:PORT/` of an instance's first forward.
fn url(cloud: &Cloud, i: &Instance) -> anyhow::Result<String> {
    let host = i.host.clone().context("no host")?;
    let h = cloud
        .api()
        .call(api::hosts::show(&host))
        .context("its host")?;
    let addr = h.forward_addr.unwrap_or_else(|| "127.0.0.1".into());
    let port = i.ports.first().context("no forward")?.host;
    Ok(format!("http://{addr}:{port}/"))
}

/// The first event about web-0 after `mark`.
fn first_event(user: &DeployUser, mark: i64, ok: impl Fn(&Event) -> bool) -> anyhow::Result<Event> {
    poll("an event about web-0", || {
        user.events()
            .into_iter()
            .find(|e| e.seq > mark && e.detail.object.as_deref() == Some("web-0") && ok(e))
    })
}

struct Kill {
    detected: Duration,
    running: Duration,
    serving: Duration,
    balanced: Duration,
}

/// `front` is HAProxy's URL, the web's pool in front of it.
fn kill_round(cloud: &Cloud, user: &DeployUser, front: &str) -> anyhow::Result<Kill> {
    let api = cloud.api();
    let d = user.wait_healthy("heal to be healthy", LIMIT);
    let old = slot(&d, "web-0")
        .instance
        .clone()
        .context("web-0's instance")?;
    let inst = api.call(api::instances::show(&old))?;
    let mark = user.last_seq();
    deploy::kill_qemu(&inst);
    let (start, wall) = (Instant::now(), SystemTime::now());
    let running = poll("the replacement to run", || {
        let d = api.call(api::deployables::show("heal")).ok()?;
        let now = slot(&d, "web-0").instance.clone().filter(|n| *n != old)?;
        api.call(api::instances::show(&now))
            .ok()
            .filter(|i| i.state == InstanceState::Running)
    })?;
    let running_at = start.elapsed();
    let serving = deploy::wait_serving(&url(cloud, &running)?, start, LIMIT)?;
    let balanced = deploy::wait_serving(front, start, LIMIT)?;
    let seen = first_event(user, mark, |_| true)?;
    Ok(Kill {
        detected: deploy::event_after(&seen, wall),
        running: running_at,
        serving,
        balanced,
    })
}

struct Freeze {
    detected: Duration,
    silent: Duration,
}

fn freeze_round(cloud: &Cloud, user: &DeployUser) -> anyhow::Result<Freeze> {
    let api = cloud.api();
    let d = user.wait_healthy("heal to be healthy", LIMIT);
    let name = slot(&d, "web-0")
        .instance
        .clone()
        .context("web-0's instance")?;
    let inst = api.call(api::instances::show(&name))?;
    let sock = cloud
        .host("h1")
        .instance_dir(&inst.id.to_string())
        .join("qmp.sock");
    let mark = user.last_seq();
    qmp::call(&sock, "stop")?;
    let wall = SystemTime::now();
    let seen = first_event(user, mark, |_| true)?;
    let silent = first_event(user, mark, |e| {
        e.detail.reason.as_deref().unwrap_or("").contains("silent")
    })?;
    Ok(Freeze {
        detected: deploy::event_after(&seen, wall),
        silent: deploy::event_after(&silent, wall),
    })
}

fn median(v: &[Duration]) -> Duration {
    let mut v = v.to_vec();
    v.sort();
    v.get(v.len() / 2).copied().unwrap_or_default()
}

fn max(v: &[Duration]) -> Duration {
    v.iter().copied().max().unwrap_or_default()
}

pub fn run(args: &Args) -> anyhow::Result<()> {
    let rounds = args.rounds.clamp(1, 10);
    let edge_dir = tempfile::tempdir()?;
    let edge = Haproxy::start_empty(edge_dir.path(), "web")?;
    let front = edge.url("/");
    let mut cloud = Cloud::start_with(MasterOpts {
        extra: edge.master_args("edge"),
        ..MasterOpts::default()
    })?;
    let opts = deploy::own_forwards(&cloud, 0);
    cloud.add_host("h1", opts)?;
    cloud.add_test_image()?;
    let config = cloud.dir.path().join("web.toml");
    std::fs::write(&config, WEB_CONFIG)?;
    let config = config.to_string_lossy().into_owned();
    let user = DeployUser::new(&cloud, "heal");
    // One web, and as many replacements as the rounds make (two each).
    let spec = deploy::shop("heal", 1).replace(
        "policy:\n",
        "policy:\n  escalation: {failures: unlimited, period: 10m}\n",
    );
    let spec = deploy::pooled(
        spec.split("  - name: db").next().unwrap_or_default(),
        "edge",
    );
    user.apply(&spec);
    user.wait_healthy("heal to be healthy", LIMIT);
    deploy::wait_serving(&front, Instant::now(), LIMIT)?;

    let (mut b_up, mut b_serve) = (vec![], vec![]);
    let (mut k_seen, mut k_run, mut k_serve, mut k_lb) = (vec![], vec![], vec![], vec![]);
    let (mut f_seen, mut f_silent) = (vec![], vec![]);
    for n in 0..rounds {
        let b = bare_boot(&cloud, n, &config)?;
        b_up.push(b.up);
        b_serve.push(b.serving);
        let k = kill_round(&cloud, &user, &front)?;
        k_seen.push(k.detected);
        k_run.push(k.running);
        k_serve.push(k.serving);
        k_lb.push(k.balanced);
        let f = freeze_round(&cloud, &user)?;
        f_seen.push(f.detected);
        f_silent.push(f.silent);
        eprintln!("round {} of {rounds} done", n + 1);
    }
    let base = median(&b_up).as_secs_f64().max(0.001);
    println!(
        "heal benchmark: {rounds} rounds; TCG, 128 MiB, 1 vCPU, the cm-test image; \
         1 s heartbeats, 3 s timeout, restart budget 0 (a failure replaces)"
    );
    println!(
        "{:<46} {:>9} {:>9} {:>12}  goal",
        "", "median", "max", "÷ bare up"
    );
    let row = |label: &str, v: &[Duration], goal: &str| {
        let (m, x) = (median(v).as_secs_f64(), max(v).as_secs_f64());
        println!(
            "{label:<46} {m:>8.2}s {x:>8.2}s {:>11.2}x  {goal}",
            m / base
        );
    };
    row("bare boot: create → guest up (baseline)", &b_up, "");
    row("bare boot: create → serving (200)", &b_serve, "");
    row("kill -9 QEMU → detected (event)", &k_seen, "≤ 1 s");
    row("kill -9 QEMU → replacement running", &k_run, "");
    row(
        "kill -9 QEMU → replacement serving (200)",
        &k_serve,
        "≤ 10 s",
    );
    row(
        "kill -9 QEMU → serving behind HAProxy (200)",
        &k_lb,
        "≤ 10 s",
    );
    row("QMP stop → detected (event)", &f_seen, "≤ 3 s");
    row("QMP stop → silent (event)", &f_silent, "");
    Ok(())
}
