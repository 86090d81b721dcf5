//! `cmbench`: benchmarks that print figures, each beside a baseline measured
//! in the same run (DESIGN.md §12). Never a pass/fail on speed.
//!
//! `cargo run -p cmbench -- all`, or one of the subcommands.

mod api;
mod boot;
mod configs;
mod fleet;
mod heal;
mod images;
mod scale;
mod storage;
mod wrk;

use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(
    name = "cmbench",
    about = "cloudmaster benchmarks (figures, not tests)"
)]
struct Cli {
    #[command(subcommand)]
    bench: Bench,
}

#[derive(Subcommand)]
enum Bench {
    /// Every benchmark in turn.
    All,
    /// Read-path requests per second (instances list at 0/1,000/20,000, hosts, config fetches) beside GET /v1/info.
    Api(api::Args),
    /// `cm instance create` to running and to guest init, beside a bare QEMU boot.
    Boot(boot::Args),
    /// Config fetches per second (with the secret check) beside a plain authenticated GET.
    Configs(configs::Args),
    /// `cm do all -- uptime` on 10 and 50 local sshd nodes against pdsh and clush.
    Fleet(fleet::Args),
    /// A deployable's guest killed (SIGKILL of QEMU) or frozen (QMP stop):
    /// detected, replacement running, serving again, beside a bare boot.
    Heal(heal::Args),
    /// `cm image add` of a large disk beside sha256sum + cp, and peak memory.
    Image(images::Args),
    /// A master with N simulated hosts and M instances: placements/s, API
    /// p50/p99 under load, report rate, time to declare a host down, RSS, CPU.
    Scale(scale::Args),
    /// Volumes on a TCG guest: `cm volume attach` → disk seen in the guest,
    /// beside the same hot-plug by hand (QMP); snapshot and clone of a 1 GiB
    /// volume with 512 MiB written, beside `cp --sparse=always` and
    /// `qemu-img convert` of its file.
    Storage(storage::Args),
}

fn main() -> anyhow::Result<()> {
    match Cli::parse().bench {
        Bench::All => {
            api::run(&api::Args::default())?;
            boot::run(&boot::Args::default())?;
            configs::run(&configs::Args::default())?;
            fleet::run(&fleet::Args::default())?;
            heal::run(&heal::Args::default())?;
            images::run(&images::Args::default())?;
            storage::run(&storage::Args::default())?;
        }
        Bench::Api(a) => api::run(&a)?,
        Bench::Boot(a) => boot::run(&a)?,
        Bench::Configs(a) => configs::run(&a)?,
        Bench::Fleet(a) => fleet::run(&a)?,
        Bench::Heal(a) => heal::run(&a)?,
        Bench::Image(a) => images::run(&a)?,
        Bench::Scale(a) => scale::run(&a)?,
        Bench::Storage(a) => storage::run(&a)?,
    }
    Ok(())
}
