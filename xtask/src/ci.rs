//! `cargo xtask ci`: the one command CI and developers run (README's test command).

use anyhow::Context;
use xshell::{cmd, Shell};

use crate::{project_root, python_env};

#[derive(clap::Args)]
pub struct CiArgs {
    /// First install and start what the tests need (apt packages, dockerd): .ci/setup.sh.
    #[arg(long)]
    pub setup: bool,
}

pub fn run(args: CiArgs) -> anyhow::Result<()> {
    let sh = Shell::new()?;
    sh.change_dir(project_root());
    if args.setup {
        step("setup: apt packages and the Docker engine");
        cmd!(sh, "bash .ci/setup.sh")
            .run()
            .context("setting up the machine (.ci/setup.sh)")?;
    }
    step("rustfmt");
    cmd!(sh, "cargo fmt --all -- --check")
        .run()
        .context("run `cargo fmt --all`")?;
    step("clippy");
    cmd!(
        sh,
        "cargo clippy --workspace --all-targets --quiet -- -D warnings"
    )
    .run()?;
    step("python environment");
    let python = python_env::ensure_venv(&sh)?;
    step("Rust tests: unit, codegen freshness, launcher end to end, CUDA check, containers");
    cmd!(sh, "cargo test --workspace").run()?;
    step("Python tests: handler and demo WebUI on the real runpod SDK");
    cmd!(sh, "{python} -m pytest -q -n auto docker/tests").run()?;
    step("benchmark smoke run (numbers not checked; keeps the bench from rotting)");
    cmd!(sh, "cargo xtask bench --quick --no-write").run()?;
    println!("\nci: all checks passed");
    Ok(())
}

fn step(name: &str) {
    println!("\n=== ci: {name} ===");
}
