//! `cargo xtask ci`: the one command CI and developers run.

#[derive(clap::Args)]
pub struct CiArgs {}

pub fn run(_args: CiArgs) -> anyhow::Result<()> {
    anyhow::bail!("cargo xtask ci is not written yet")
}
