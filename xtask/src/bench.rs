//! `cargo xtask bench` (issue 6).

#[derive(clap::Args)]
pub struct BenchArgs {}

pub fn run(_args: BenchArgs) -> anyhow::Result<()> {
    anyhow::bail!("cargo xtask bench is not written yet")
}
