//! Every command's flags, in one place (rust-analyzer's xtask keeps them so): what a user can
//! type is read here, what each task does with it lives in the task's module.

use std::path::PathBuf;

use crate::image::parse_build_arg;

#[derive(clap::Args)]
pub struct CiArgs {
    /// First install and start what the tests need (apt packages, dockerd): .ci/setup.sh.
    #[arg(long)]
    pub setup: bool,
}

#[derive(clap::Args, Clone, Default)]
pub struct A1111Args {
    /// Source tarball: A1111 v1.10.1 with the repositories it pins and CLIP, checked against the
    /// project's SHA-256 [default: $A1111_SOURCE; without either, git at the pinned commits]
    #[arg(long, value_name = "TARBALL")]
    pub source: Option<PathBuf>,
    /// Where to prepare it [default: $XDG_CACHE_HOME/sd-worker/a1111, else ~/.cache/sd-worker/a1111]
    #[arg(long, value_name = "DIR")]
    pub dir: Option<PathBuf>,
    /// Python for the environment [default: $A1111_PYTHON, else 3.10 where found, else 3.11]
    #[arg(long, value_name = "PYTHON")]
    pub python: Option<PathBuf>,
}

#[derive(clap::Args)]
pub struct RunLocalArgs {
    /// The WebUI: the demo, or the real A1111 (prepared on first use; A1111_SOURCE names a
    /// source tarball when GitHub cannot be reached)
    #[arg(long, value_enum, default_value_t = WebuiKind::Demo, conflicts_with = "webui_dir")]
    pub webui: WebuiKind,
    /// The job, as RunPod sends it: {"input": {...}} [default: docker/test_input.json]
    #[arg(long, value_name = "FILE")]
    pub input: Option<PathBuf>,
    /// The WebUI to run: a folder holding webui.py, e.g. an A1111 checkout
    /// [default: docker/demo-webui, the stand-in that needs no GPU or model]
    #[arg(long, value_name = "DIR")]
    pub webui_dir: Option<PathBuf>,
    /// Serve runpod's local HTTP API on 127.0.0.1 until Ctrl-C instead of running one job
    #[arg(long)]
    pub serve: bool,
    /// Port of runpod's local HTTP API, with --serve
    #[arg(long, value_name = "PORT", default_value_t = 8000)]
    pub api_port: u16,
    /// Folder for the result, the images and the model folders [default: target/run-local]
    #[arg(long, value_name = "DIR")]
    pub out: Option<PathBuf>,
}

/// Which WebUI run-local starts.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum WebuiKind {
    /// docker/demo-webui: the A1111 API stand-in; starts in a second, needs no GPU or model.
    Demo,
    /// The real AUTOMATIC1111 v1.10.1, prepared by `cargo xtask a1111` on first use.
    A1111,
}

#[derive(clap::Args)]
pub struct ImageArgs {
    /// Tag of the worker image. The WebUI image is tagged <name>-webui:<tag>.
    #[arg(long, default_value = "sd-worker:latest")]
    pub tag: String,

    /// Add the worker layer to this image (it needs Python and a WebUI) instead of building
    /// docker/Dockerfile.webui.
    #[arg(long, value_name = "IMG")]
    pub webui_image: Option<String>,

    /// The WebUI image's base: any glibc image with Debian's packages (e.g. debian:bookworm-slim),
    /// or debootstrap:SUITE to build one locally with debootstrap [default: BASE_IMAGE in
    /// docker/versions.env]
    #[arg(long, value_name = "IMG")]
    pub base_image: Option<String>,

    /// A1111 v1.10.1's source tarball (with the repositories it pins and CLIP), checked against
    /// the project's SHA-256 [default: $A1111_SOURCE; without either, git at the pinned commits]
    #[arg(long, value_name = "TARBALL")]
    pub webui_src: Option<PathBuf>,

    /// A checkpoint (.safetensors or .ckpt) to bake into the WebUI image as its MODEL_PATH; a
    /// .yaml config beside it goes with it.
    #[arg(long, value_name = "FILE")]
    pub model: Option<PathBuf>,

    /// A build argument for the Dockerfile(s) that declare it, e.g. MODEL_URL=https://...;
    /// overrides docker/versions.env. Repeatable.
    #[arg(long = "build-arg", value_name = "K=V", value_parser = parse_build_arg)]
    pub build_args: Vec<(String, String)>,

    /// Put this worker-runtime binary in the image instead of building one
    /// (`cargo build --release -p runtime`).
    #[arg(long, value_name = "PATH")]
    pub runtime_bin: Option<PathBuf>,

    /// Print every command and the Dockerfiles it would use, and run nothing.
    #[arg(long)]
    pub dry_run: bool,
}

#[derive(clap::Args)]
pub struct CodegenArgs {
    /// Fail instead of writing when a generated file is stale.
    #[arg(long)]
    pub check: bool,
}

#[derive(clap::Args)]
pub struct BenchArgs {
    /// Runs per launcher and scenario [default: 10, or 2 with --quick].
    #[arg(long, value_name = "N")]
    pub runs: Option<usize>,

    /// A short smoke run that CI calls so the bench cannot rot (about 40 s): 2 runs, a shorter
    /// WebUI start-up, grace and cap, no warm-up. Its numbers are not for publishing.
    #[arg(long)]
    pub quick: bool,

    /// Print the results only; leave docs/BENCHMARKS.md and docs/startup-timeline.svg alone.
    #[arg(long)]
    pub no_write: bool,

    /// The demo WebUI's start-up delay in seconds (DEMO_WEBUI_STARTUP_DELAY) [default: 3, or 1.5
    /// with --quick]. Keep it above the handler's import time, so the handler waits for the WebUI
    /// as it does in a real worker.
    #[arg(long, value_name = "SECS")]
    pub webui_delay: Option<f64>,

    /// worker-runtime's SHUTDOWN_GRACE in seconds [default: 2, or 0.5 with --quick].
    #[arg(long, value_name = "SECS")]
    pub grace: Option<f64>,

    /// How long a reference run that never ends by itself goes on, after the crash or after the
    /// handler's exit, before the bench stops it [default: 10, or 1.5 with --quick].
    #[arg(long, value_name = "SECS")]
    pub cap: Option<f64>,

    /// Print every line of every run, timestamped from the launcher's start, and its marks.
    #[arg(long, short)]
    pub verbose: bool,

    /// Launch this WebUI directory instead of docker/demo-webui; its webui.py must know the
    /// demo's knobs (DEMO_WEBUI_STARTUP_DELAY, DEMO_WEBUI_IGNORE_SIGTERM, DEMO_WEBUI_EXIT_AT_START).
    #[arg(long, value_name = "DIR")]
    pub webui_dir: Option<PathBuf>,

    /// Measure the real A1111 (prepared by `cargo xtask a1111`) against the demo WebUI instead:
    /// start-up, model load, first and warm jobs, memory; writes its own section of
    /// docs/BENCHMARKS.md and docs/startup-timeline-webuis.svg [default runs: 3].
    #[arg(long)]
    pub webuis: bool,

    /// Measure this worker-runtime binary instead of building one with
    /// `cargo build --release -p runtime`.
    #[arg(long, value_name = "PATH")]
    pub runtime_bin: Option<PathBuf>,
}

#[derive(clap::Args)]
pub struct TidyArgs {}
