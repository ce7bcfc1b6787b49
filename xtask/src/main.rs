//! `cargo xtask <task>`: the project's automation, in Rust (matklad's cargo-xtask convention).

mod a1111;
mod bench;
mod ci;
mod codegen;
mod flags;
mod image;
mod python_env;
mod run_local;
mod tidy;

use std::ffi::OsString;
use std::path::PathBuf;

use clap::{Parser, Subcommand};
use xshell::Shell;

#[derive(Parser)]
#[command(
    name = "cargo xtask",
    about = "Build, test, run and benchmark the SD WebUI RunPod worker"
)]
struct Xtask {
    #[command(subcommand)]
    task: Task,
}

#[derive(Subcommand)]
enum Task {
    /// Everything CI checks: fmt, clippy -D warnings, tidy, codegen freshness, Rust and Python tests.
    Ci(flags::CiArgs),
    /// Prepare a real AUTOMATIC1111 (source, Python environment, offline files, test checkpoints).
    A1111(flags::A1111Args),
    /// Run the whole worker locally: demo WebUI (or --webui-dir), docker/handler.py, a test job.
    RunLocal(flags::RunLocalArgs),
    /// Build the worker's Docker image.
    Image(flags::ImageArgs),
    /// Regenerate files derived from the code (docs/webui-flags.md, the demo WebUI's flag catalog).
    Codegen(flags::CodegenArgs),
    /// Check the tree: no reference outside it, README tables and promises in step with the code.
    Tidy(flags::TidyArgs),
    /// Measure cold start, teardown and memory against the bash start.sh it replaces.
    Bench(flags::BenchArgs),
}

fn main() -> anyhow::Result<()> {
    let task = Xtask::parse().task;
    // One shell for every task, at the workspace root: commands run from there whatever
    // directory cargo was started from (the process's own directory is left alone, so run-local
    // still resolves relative paths from where the user typed them).
    let sh = Shell::new()?;
    sh.change_dir(project_root());
    match task {
        Task::Ci(args) => ci::run(&sh, args),
        Task::A1111(args) => a1111::run(args),
        Task::RunLocal(args) => run_local::run(&sh, args),
        Task::Image(args) => image::run(&sh, args),
        Task::Codegen(args) => codegen::run(args),
        Task::Bench(args) => bench::run(&sh, args),
        Task::Tidy(args) => tidy::run(&sh, args),
    }
}

/// The cargo that runs xtask ($CARGO), so toolchain overrides carry over to the builds it starts.
pub fn cargo() -> OsString {
    std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into())
}

/// The workspace root, whatever directory cargo was started from.
pub fn project_root() -> PathBuf {
    let manifest_dir = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    manifest_dir
        .parent()
        .map(PathBuf::from)
        .unwrap_or(manifest_dir)
}

/// Cargo's target directory: $CARGO_TARGET_DIR (relative to the workspace root), else target/.
pub fn target_dir() -> PathBuf {
    let root = project_root();
    match std::env::var_os("CARGO_TARGET_DIR") {
        Some(dir) if !dir.is_empty() => root.join(dir),
        _ => root.join("target"),
    }
}
