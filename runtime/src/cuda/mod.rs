//! Native CUDA verification (cudarc): `worker-runtime cuda-check`, `worker-runtime facts`, and the
//! launch step that runs the check in a child process so the launcher never holds a CUDA context.
//! (Being written: issue 3.)

use std::process::ExitCode;

use crate::cli::CudaCheckMode;

#[derive(Debug, Clone, clap::Args)]
pub struct CudaCheckArgs {
    /// Print the report as one JSON object.
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, Clone, clap::Args)]
pub struct FactsArgs {
    /// Python whose torch/xformers are recorded.
    #[arg(long, default_value = "python3")]
    pub python: String,
}

/// What the launcher takes from the check: the seed's verdict (0 passed, 1 xformers unusable,
/// 2+ CUDA problems) and whether `--xformers` can stay in the WebUI flags.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LaunchVerdict {
    pub code: u8,
    pub xformers_usable: bool,
}

pub fn cuda_check_main(_args: &CudaCheckArgs) -> ExitCode {
    eprintln!("cuda-check: not implemented yet");
    ExitCode::from(2)
}

pub fn facts_main(_args: &FactsArgs) -> ExitCode {
    eprintln!("facts: not implemented yet");
    ExitCode::from(2)
}

/// Runs the check for the launcher; `None` when CUDA_CHECK=off.
pub fn launch_step(mode: CudaCheckMode) -> Option<LaunchVerdict> {
    match mode {
        CudaCheckMode::Off => None,
        _ => None,
    }
}
