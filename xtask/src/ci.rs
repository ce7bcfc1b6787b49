//! `cargo xtask ci`: the one command CI and developers run (README's test command).

use anyhow::Context;
use xshell::{cmd, Shell};

use crate::{a1111, python_env};

pub use crate::flags::CiArgs;

pub fn run(sh: &Shell, args: CiArgs) -> anyhow::Result<()> {
    let cargo = crate::cargo();
    if args.setup {
        step("setup: apt packages and the Docker engine");
        cmd!(sh, "bash .ci/setup.sh")
            .run()
            .context("setting up the machine (.ci/setup.sh)")?;
    }
    step("rustfmt");
    cmd!(sh, "{cargo} fmt --all -- --check")
        .run()
        .context("run `cargo fmt --all`")?;
    step("clippy");
    cmd!(
        sh,
        "{cargo} clippy --workspace --all-targets --quiet -- -D warnings"
    )
    .run()?;
    step("tidy: references, README tables and promises, file lengths");
    crate::tidy::run(sh, crate::tidy::TidyArgs {})?;
    step("python environment");
    let python = python_env::ensure_venv(sh)?;
    step("Rust tests: unit, codegen freshness, launcher end to end, CUDA check, containers");
    cmd!(sh, "{cargo} test --workspace").run()?;
    step("Python tests: handler and demo WebUI on the real runpod SDK");
    let runtime_bin = crate::target_dir().join("debug/worker-runtime");
    cmd!(sh, "{python} -m pytest -q -n auto docker/tests")
        .env("WORKER_RUNTIME", &runtime_bin)
        .env_remove("A1111_SETTINGS")
        .run()?;
    step("the real A1111: prepare it (cached), then the worker on it end to end");
    let prepared = a1111::prepare(&a1111::A1111Args::default())?;
    let settings = crate::target_dir().join("a1111.env");
    let lines: String = prepared
        .settings()
        .into_iter()
        .map(|(key, value)| format!("{key}={value}\n"))
        .collect();
    std::fs::write(&settings, lines).with_context(|| format!("writing {}", settings.display()))?;
    // One test at a time: each starts a real WebUI, and the 2-core machine is the limit.
    cmd!(
        sh,
        "{python} -m pytest -q -p no:xdist docker/tests/test_a1111_jobs.py docker/tests/test_a1111_handler.py docker/tests/test_a1111_lifecycle.py"
    )
    .env("A1111_SETTINGS", &settings)
    .env("WORKER_RUNTIME", &runtime_bin)
    .run()?;
    step("benchmark smoke run (numbers not checked; keeps the bench from rotting)");
    cmd!(sh, "{cargo} xtask bench --quick --no-write").run()?;
    println!("\nci: all checks passed");
    Ok(())
}

fn step(name: &str) {
    println!("\n=== ci: {name} ===");
}
