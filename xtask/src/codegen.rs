//! `cargo xtask codegen`: files derived from the code, with a test that fails when they are stale.

#[derive(clap::Args)]
pub struct CodegenArgs {}

pub fn run(_args: CodegenArgs) -> anyhow::Result<()> {
    anyhow::bail!("cargo xtask codegen is not written yet")
}
