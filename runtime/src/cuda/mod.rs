//! Native CUDA verification (cudarc): `worker-runtime cuda-check`, `worker-runtime facts`, and the
//! launch step that runs the check in a child process so the launcher never holds a CUDA context.
//!
//! One module, one job:
//! - `driver`: libcuda, loaded through cudarc, with the entry points the check calls;
//! - `probe`: asks the driver (version, devices, memory) and runs `gpu_op` (a PTX kernel);
//! - `facts`: what the image's torch/xformers/WebUI were built with, recorded at build time;
//! - `arch`: which GPU code a build carries and where it runs;
//! - `checks`: the six checks, from probe + facts;
//! - `report`: verdict, wording, JSON;
//! - `child`: the launcher's step.

pub mod arch;
pub mod checks;
mod child;
pub mod driver;
pub mod facts;
pub mod gpu_op;
pub mod probe;
pub mod report;

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::{Duration, Instant};

use crate::cli::CudaCheckMode;

pub use child::TIMEOUT as LAUNCH_TIMEOUT;

#[derive(Debug, Clone, clap::Args)]
pub struct CudaCheckArgs {
    /// Print the report as one JSON object.
    #[arg(long)]
    pub json: bool,

    /// Image facts recorded by `worker-runtime facts`; checks that need them are skipped
    /// when the file is missing.
    #[arg(long, env = "IMAGE_FACTS", default_value = facts::DEFAULT_PATH)]
    pub facts: PathBuf,
}

#[derive(Debug, Clone, clap::Args)]
pub struct FactsArgs {
    /// Python whose torch/xformers are recorded (the one that runs the WebUI).
    #[arg(long, default_value = "python3")]
    pub python: String,

    /// A1111 checkout whose version is recorded (git describe, else CHANGELOG.md).
    #[arg(long, env = "WEBUI_DIR", default_value = "/stable-diffusion-webui")]
    pub webui_dir: PathBuf,

    /// Where to write the JSON ("-" for stdout); `cuda-check` reads it from here
    /// unless IMAGE_FACTS says otherwise.
    #[arg(long, default_value = facts::DEFAULT_PATH)]
    pub output: PathBuf,
}

/// What the launcher takes from the check: the torch check's verdict (0 passed, 1 xformers unusable,
/// 2+ CUDA problems) and whether `--xformers` can stay in the WebUI flags.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LaunchVerdict {
    pub code: u8,
    pub xformers_usable: bool,
}

/// `worker-runtime cuda-check`: exit status is the verdict (0, 1, 2).
pub fn cuda_check_main(args: &CudaCheckArgs) -> ExitCode {
    let report = run_check(&args.facts);
    if args.json {
        match serde_json::to_string(&report) {
            Ok(json) => println!("{json}"),
            Err(e) => {
                eprintln!("cuda-check: cannot encode the report: {e}");
                return ExitCode::from(report::VERDICT_FAILED);
            }
        }
    } else {
        print!("{}", report.render());
    }
    ExitCode::from(report.verdict)
}

/// Runs every check in this process and builds the report.
pub fn run_check(facts_path: &Path) -> report::Report {
    let started = Instant::now();
    let facts_state = facts::load(facts_path);
    let (probe, t) = probe::run();
    let facts_path_text = facts_path.display().to_string();
    let visible_devices = ["CUDA_VISIBLE_DEVICES", "NVIDIA_VISIBLE_DEVICES"]
        .iter()
        .find_map(|k| std::env::var(k).ok().map(|v| format!("{k}={v}")));
    let outcome = checks::evaluate(
        &probe,
        &checks::Context {
            facts: &facts_state,
            facts_path: &facts_path_text,
            visible_devices,
        },
    );

    let (driver, gpus) = match &probe {
        probe::Probe::NoLibrary => (None, Vec::new()),
        probe::Probe::MissingSymbol { library_path, .. } => (
            Some(report::DriverInfo {
                cuda_version: None,
                kernel_module: None,
                library: library_path.clone(),
            }),
            Vec::new(),
        ),
        probe::Probe::Loaded(l) => (
            Some(report::DriverInfo {
                cuda_version: l
                    .cuda_version
                    .as_ref()
                    .ok()
                    .map(|v| checks::cuda_version_string(*v)),
                kernel_module: l.kernel_module.clone(),
                library: l.library_path.clone(),
            }),
            l.devices
                .as_ref()
                .map(|ds| {
                    ds.iter()
                        .map(|d| report::Gpu {
                            index: d.index,
                            name: d.name.clone(),
                            compute_capability: d.capability.to_string(),
                            total_mib: d.total_bytes >> 20,
                            free_mib: d.free_bytes.map(|f| f >> 20),
                        })
                        .collect()
                })
                .unwrap_or_default(),
        ),
    };
    let gpu = gpus.first().map(|g| g.name.clone());
    let verdict = report::verdict(&outcome.checks);
    report::Report {
        verdict,
        summary: report::summary(verdict, gpu.as_deref()),
        xformers_usable: outcome.xformers_usable,
        gpu,
        gpus,
        driver,
        facts: facts_info(&facts_path_text, &facts_state),
        checks: outcome.checks,
        timings_ms: report::Timings {
            library_load_ms: round_ms(t.library_load_ms),
            cu_init_ms: round_ms(t.cu_init_ms),
            devices_ms: round_ms(t.devices_ms),
            gpu_op_ms: round_ms(t.gpu_op_ms),
            total_ms: round_ms(started.elapsed().as_secs_f64() * 1000.0),
        },
        peak_rss_kib: peak_rss_kib(),
    }
}

fn facts_info(path: &str, state: &facts::FactsState) -> report::FactsInfo {
    let mut info = report::FactsInfo {
        path: path.to_string(),
        status: String::new(),
        error: None,
        torch: None,
        xformers: None,
        webui: None,
    };
    match state {
        facts::FactsState::Loaded(f) => {
            info.status = "loaded".into();
            info.torch = f.torch.as_ref().map(|t| {
                format!(
                    "{} (CUDA {})",
                    t.version,
                    t.cuda.as_deref().unwrap_or("none")
                )
            });
            info.xformers = f.xformers.as_ref().and_then(|x| x.version.clone());
            info.webui = f.webui.as_ref().and_then(|w| w.version.clone());
        }
        facts::FactsState::Missing => info.status = "missing".into(),
        facts::FactsState::Unreadable(e) => {
            info.status = "unreadable".into();
            info.error = Some(e.clone());
        }
    }
    info
}

/// Microseconds are the resolution that means anything here; more digits are noise in the JSON.
fn round_ms(ms: f64) -> f64 {
    (ms * 1000.0).round() / 1000.0
}

/// Peak resident memory of this process (VmHWM), to show what a CUDA context costs.
fn peak_rss_kib() -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("VmHWM:"))?;
    line.split_whitespace().nth(1)?.parse().ok()
}

/// `worker-runtime facts`: see `facts::main`.
pub fn facts_main(args: &FactsArgs) -> ExitCode {
    facts::main(args)
}

/// Runs the check for the launcher; `None` when CUDA_CHECK=off.
///
/// The check runs in a child process (this same executable, `cuda-check --json`) bounded by
/// `timeout` (CUDA_CHECK_TIMEOUT, default `LAUNCH_TIMEOUT`); its report is logged here with the torch check's banner and verdict lines. In
/// strict mode the caller stops when `code >= 2`.
pub fn launch_step(mode: CudaCheckMode, timeout: Duration) -> Option<LaunchVerdict> {
    if mode == CudaCheckMode::Off {
        tracing::info!("CUDA check skipped (CUDA_CHECK=off)");
        return None;
    }
    let exe = std::env::current_exe().unwrap_or_else(|_| PathBuf::from("/proc/self/exe"));
    Some(launch_step_with(&exe, mode, timeout))
}

/// The runtime's own launch step, supervised: a stop signal during the check is `Err(signal)`.
pub fn launch_step_supervised(
    mode: CudaCheckMode,
    timeout: Duration,
    supervisor: &mut crate::supervisor::Supervisor,
) -> Result<Option<LaunchVerdict>, nix::sys::signal::Signal> {
    if mode == CudaCheckMode::Off {
        tracing::info!("CUDA check skipped (CUDA_CHECK=off)");
        return Ok(None);
    }
    let exe = std::env::current_exe().unwrap_or_else(|_| PathBuf::from("/proc/self/exe"));
    child::run_supervised(&exe, mode, timeout, supervisor).map(Some)
}

/// `launch_step` with an explicit executable (one that has the `cuda-check` subcommand) and
/// timeout: for tests, and for callers whose own executable is not worker-runtime.
pub fn launch_step_with(exe: &Path, mode: CudaCheckMode, timeout: Duration) -> LaunchVerdict {
    child::run_in_child(exe, mode, timeout)
}
