//! (being written)
use crate::{cli::Config, tcmalloc::TcmallocStatus};
use std::process::ExitCode;
pub fn run(_c: &Config, _t: TcmallocStatus) -> ExitCode {
    tracing::info!("Worker Initiated");
    ExitCode::SUCCESS
}
pub fn print_webui_command(_c: &Config) -> ExitCode {
    ExitCode::SUCCESS
}
