//! Boot benchmark (issue 2): `cm instance create` → `running` and → the
//! guest's init line, beside a bare `qemu-system-x86_64` boot of the same
//! image with the same arguments, interleaved in the same run.

use anyhow::Context;
use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};
use test_infra::{image_dir, Cloud, HostOpts};

#[derive(Debug, clap::Args)]
pub struct Args {
    /// Boots of each kind.
    #[arg(long, default_value_t = 5)]
    pub runs: usize,
}

impl Default for Args {
    fn default() -> Self {
        Args { runs: 5 }
    }
}

const INIT: &str = "cm-init: ready";
const LIMIT: Duration = Duration::from_secs(120);

/// Wait for `needle` in `log`; the time it showed.
fn wait_log(log: &Path, needle: &str, start: Instant) -> anyhow::Result<Duration> {
    loop {
        if std::fs::read(log)
            .map(|b| String::from_utf8_lossy(&b).contains(needle))
            .unwrap_or(false)
        {
            return Ok(start.elapsed());
        }
        if start.elapsed() > LIMIT {
            anyhow::bail!(
                "{needle:?} did not show in {} within {LIMIT:?}",
                log.display()
            );
        }
        std::thread::sleep(Duration::from_millis(5));
    }
}

struct Bare {
    launch: Duration,
    init: Duration,
}

/// The arguments cloudhostd gives QEMU for an m1.tiny kernel instance.
fn bare_boot(dir: &Path) -> anyhow::Result<Bare> {
    let img = image_dir();
    let _ = std::fs::remove_dir_all(dir);
    std::fs::create_dir_all(dir)?;
    let p = |n: &str| dir.join(n).display().to_string();
    let start = Instant::now();
    let out = Command::new("qemu-system-x86_64")
        .args([
            "-name",
            "cm-bench,process=cm-bench",
            "-machine",
            "pc",
            "-accel",
            "tcg",
            "-cpu",
            "max",
        ])
        .args([
            "-m",
            "128M",
            "-smp",
            "1",
            "-nodefaults",
            "-no-user-config",
            "-display",
            "none",
            "-no-shutdown",
        ])
        .arg("-chardev")
        .arg(format!(
            "socket,id=con0,path={},server=on,wait=off,logfile={},logappend=on",
            p("console.sock"),
            p("console.log")
        ))
        .args(["-serial", "chardev:con0", "-qmp"])
        .arg(format!("unix:{},server=on,wait=off", p("qmp.sock")))
        .args(["-device", "virtio-rng-pci", "-pidfile"])
        .arg(p("qemu.pid"))
        .args([
            "-daemonize",
            "-netdev",
            "user,id=net0",
            "-device",
            "virtio-net-pci,netdev=net0",
        ])
        .arg("-kernel")
        .arg(img.join("vmlinuz"))
        .arg("-initrd")
        .arg(img.join("initrd.img"))
        .args(["-append", "console=ttyS0 quiet"])
        .output()
        .context("running qemu-system-x86_64")?;
    anyhow::ensure!(
        out.status.success(),
        "bare QEMU failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let launch = start.elapsed();
    let init = wait_log(&dir.join("console.log"), INIT, start);
    if let Some(pid) = std::fs::read_to_string(dir.join("qemu.pid"))
        .ok()
        .and_then(|s| s.trim().parse::<i32>().ok())
    {
        // SAFETY: the QEMU this function just started.
        unsafe {
            libc::kill(pid, libc::SIGKILL);
        }
    }
    Ok(Bare {
        launch,
        init: init?,
    })
}

struct Managed {
    running: Duration,
    init: Duration,
    /// When the master's record said `configured` (with --config).
    configured: Option<Duration>,
}

/// The guest agent's config for the benchmark: a file and a parameter.
const CONFIG: &str =
    "#cm-guest\n[[file]]\npath = \"/run/bench\"\ncontent = \"x\"\n[parameters]\nbench = \"yes\"\n";

fn managed_boot(cloud: &Cloud, name: &str, config: Option<&Path>) -> anyhow::Result<Managed> {
    let mut args = vec![
        "instance", "create", name, "--image", "cm-test", "--flavor", "m1.tiny",
    ];
    let cfg = config.map(|c| c.to_string_lossy().into_owned());
    if let Some(c) = &cfg {
        args.extend(["--config", c.as_str()]);
    }
    let start = Instant::now();
    let out = cloud.cm(&args);
    anyhow::ensure!(out.code == 0, "cm instance create: {}", out.stderr);
    let running = start.elapsed();
    let i = cloud.instance(name).context("the new instance")?;
    let id = i.id.to_string();
    let dir = cloud.host("h1").instance_dir(&id);
    let init = wait_log(&dir.join("console.log"), INIT, start)?;
    let configured = match config {
        None => None,
        Some(_) => {
            // The master's view, polled every 10 ms through the REST API.
            let api = cloud.api();
            loop {
                let status = api.call(cm_client::api::configs::detail(&id)).ok();
                if status.is_some_and(|d| d.record.status.as_str() == "configured") {
                    break Some(start.elapsed());
                }
                anyhow::ensure!(
                    start.elapsed() < LIMIT,
                    "{name} was not configured within {LIMIT:?}"
                );
                std::thread::sleep(Duration::from_millis(10));
            }
        }
    };
    let out = cloud.cm(&["instance", "delete", name]);
    anyhow::ensure!(out.code == 0, "cm instance delete: {}", out.stderr);
    Ok(Managed {
        running,
        init,
        configured,
    })
}

fn median(mut v: Vec<Duration>) -> Duration {
    v.sort();
    v[v.len() / 2]
}

fn min(v: &[Duration]) -> Duration {
    v.iter().copied().min().unwrap_or_default()
}

fn ms(d: Duration) -> String {
    format!("{:>8.0} ms", d.as_secs_f64() * 1000.0)
}

pub fn run(args: &Args) -> anyhow::Result<()> {
    let runs = args.runs.clamp(1, 50);
    let mut cloud = Cloud::start()?;
    cloud.add_host("h1", HostOpts::default())?;
    cloud.add_test_image()?;
    // Warm up: the host fetches and caches the image once.
    managed_boot(&cloud, "warm", None)?;
    let cfg = cloud.dir.path().join("bench.toml");
    std::fs::write(&cfg, CONFIG)?;
    let bare_dir = cloud.dir.path().join("bare");
    let (mut b_launch, mut b_init, mut m_running, mut m_init) = (vec![], vec![], vec![], vec![]);
    let (mut c_init, mut c_conf) = (vec![], vec![]);
    for n in 0..runs {
        let b = bare_boot(&bare_dir)?;
        let m = managed_boot(&cloud, &format!("b{n}"), None)?;
        let c = managed_boot(&cloud, &format!("c{n}"), Some(&cfg))?;
        c_init.push(c.init);
        c_conf.push(c.configured.unwrap_or_default());
        b_launch.push(b.launch);
        b_init.push(b.init);
        m_running.push(m.running);
        m_init.push(m.init);
    }
    println!("boot benchmark: {runs} boots each, interleaved; TCG, 128 MiB, 1 vCPU, the cm-test kernel image");
    println!("{:<44} {:>11} {:>11}", "", "median", "min");
    let row = |label: &str, v: &Vec<Duration>| {
        println!("{label:<44} {} {}", ms(median(v.clone())), ms(min(v)))
    };
    row("bare qemu-system-x86_64: start → daemonized", &b_launch);
    row("cm instance create → running", &m_running);
    row("bare qemu-system-x86_64: start → guest init", &b_init);
    row("cm instance create → guest init", &m_init);
    row("cm instance create --config → guest init", &c_init);
    row(
        "cm instance create --config → master sees configured",
        &c_conf,
    );
    let cp = median(m_running.clone()).saturating_sub(median(b_launch.clone()));
    let extra = median(m_init.clone()).as_secs_f64() - median(b_init.clone()).as_secs_f64();
    println!(
        "control plane to running (create→running − bare launch): {:.0} ms",
        cp.as_secs_f64() * 1000.0
    );
    println!(
        "to guest init, cloudmaster vs bare: {:+.0} ms (ratio {:.3})",
        extra * 1000.0,
        median(m_init).as_secs_f64() / median(b_init.clone()).as_secs_f64()
    );
    let after_init = median(c_conf).as_secs_f64() - median(c_init).as_secs_f64();
    println!(
        "configured after guest init: {:+.0} ms (fetch, apply, update_cache)",
        after_init * 1000.0
    );
    Ok(())
}
