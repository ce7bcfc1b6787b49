//! `worker-runtime`: the container's PID 1. See ARCHITECTURE.md for the launch sequence.

use std::process::ExitCode;

use runtime::{cli, cuda, launch, logging, startup_report, tcmalloc};

fn main() -> ExitCode {
    startup_report::note_process_start();
    let cli = match cli::parse() {
        Ok(cli) => cli,
        Err(code) => return code,
    };
    match cli.command {
        None => {
            // First, before any thread or output exists: the re-executed image starts clean.
            let tcmalloc = tcmalloc::preload_and_reexec(&cli.config);
            logging::init();
            launch::run(&cli.config, tcmalloc)
        }
        Some(cli::Command::WebuiArgs) => {
            logging::init();
            launch::print_webui_command(&cli.config)
        }
        Some(cli::Command::CudaCheck(args)) => cuda::cuda_check_main(&args),
        Some(cli::Command::Facts(args)) => cuda::facts_main(&args),
    }
}
