//! `cargo xtask image` (issue 5).

#[derive(clap::Args)]
pub struct ImageArgs {}

pub fn run(_args: ImageArgs) -> anyhow::Result<()> {
    anyhow::bail!("cargo xtask image is not written yet")
}
