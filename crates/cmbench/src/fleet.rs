//! Fleet fan-out benchmark (issue 4): filled in with the fleet commands.

#[derive(Debug, Default, clap::Args)]
pub struct Args {}

pub fn run(_args: &Args) -> anyhow::Result<()> {
    println!("fleet benchmark: not built yet");
    Ok(())
}
