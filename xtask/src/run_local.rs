//! `cargo xtask run-local` (issue 4).

#[derive(clap::Args)]
pub struct RunLocalArgs {}

pub fn run(_args: RunLocalArgs) -> anyhow::Result<()> {
    anyhow::bail!("cargo xtask run-local is not written yet")
}
