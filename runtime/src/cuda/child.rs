//! The launch step: runs `worker-runtime cuda-check --json` as a child process, logs its report,
//! and returns the verdict. A child, so the launcher (PID 1 for the container's whole life) never
//! maps libcuda nor holds a CUDA context (100+ MB); the WebUI gets a GPU nobody else holds.

use std::io::Read;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use tracing::{error, info, warn};

use super::report::{Level, Report, BANNER, RULE, VERDICT_FAILED};
use super::LaunchVerdict;
use crate::cli::CudaCheckMode;

/// A healthy check takes well under a second; a hung driver (a GPU that fell off the bus) can
/// block cuInit forever. Past this, the check is stopped and counts as a CUDA failure.
pub const TIMEOUT: Duration = Duration::from_secs(30);

/// How often the child's status is polled. The launcher has SIGCHLD blocked at this stage, so
/// there is no signal to wait for; 5 ms is invisible next to the check's own ~300 ms.
const POLL: Duration = Duration::from_millis(5);

/// Runs `exe cuda-check --json`, logs the report through tracing, returns the verdict.
pub fn run_in_child(exe: &Path, mode: CudaCheckMode, timeout: Duration) -> LaunchVerdict {
    let started = Instant::now();
    let outcome = spawn_and_wait(exe, timeout);
    let elapsed = started.elapsed().as_millis();
    let report = match outcome {
        Ok(report) => report,
        Err(why) => {
            // Nothing usable came back: the verdict is a CUDA failure, and xformers is not
            // confirmed, so --xformers is dropped.
            info!("{RULE}");
            info!("{BANNER}");
            info!("{RULE}");
            error!("❌ {why}");
            error!("❌ CUDA compatibility test FAILED");
            error!("❌ Check the logs above for details");
            finish(mode, VERDICT_FAILED);
            return LaunchVerdict {
                code: VERDICT_FAILED,
                xformers_usable: false,
            };
        }
    };
    for (level, line) in report.lines() {
        match level {
            Level::Info => info!("{line}"),
            Level::Warn => warn!("{line}"),
            Level::Error => error!("{line}"),
        }
    }
    info!(
        "CUDA check took {elapsed} ms in a child process (peak {} MiB there; the launcher holds no CUDA context)",
        report.peak_rss_kib.map(|k| k / 1024).unwrap_or(0)
    );
    finish(mode, report.verdict);
    LaunchVerdict {
        code: report.verdict,
        xformers_usable: report.xformers_usable,
    }
}

/// The seed's closing line for a failure in warn mode. In strict mode the launcher stops and says
/// so itself.
fn finish(mode: CudaCheckMode, code: u8) {
    if code >= VERDICT_FAILED && mode != CudaCheckMode::Strict {
        warn!("⚠ Attempting to continue anyway...");
    }
}

fn spawn_and_wait(exe: &Path, timeout: Duration) -> Result<Report, String> {
    let mut child = Command::new(exe)
        .args(["cuda-check", "--json"])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        // A crash message (or a driver's own complaint) lands in the container log.
        .stderr(Stdio::inherit())
        .spawn()
        .map_err(|e| format!("cannot start the CUDA check ({}): {e}", exe.display()))?;
    // Read on a thread so a large report can never fill the pipe and stall the child.
    let mut stdout = child.stdout.take();
    let reader = std::thread::spawn(move || {
        let mut text = String::new();
        if let Some(out) = stdout.as_mut() {
            let _ = out.read_to_string(&mut text);
        }
        text
    });
    let deadline = Instant::now() + timeout;
    let status = loop {
        match child.try_wait() {
            Ok(Some(status)) => break status,
            Ok(None) if Instant::now() >= deadline => {
                let _ = child.kill();
                let _ = child.wait();
                let _ = reader.join();
                return Err(format!(
                    "the CUDA check did not finish within {} s (a hung driver or GPU) and was stopped",
                    timeout.as_secs()
                ));
            }
            Ok(None) => std::thread::sleep(POLL),
            Err(e) => return Err(format!("cannot wait for the CUDA check: {e}")),
        }
    };
    let text = reader
        .join()
        .map_err(|_| "the CUDA check's output could not be read".to_string())?;
    match serde_json::from_str::<Report>(text.trim()) {
        Ok(report) => Ok(report),
        Err(e) => {
            use std::os::unix::process::ExitStatusExt;
            Err(match status.signal() {
                Some(sig) => format!("the CUDA check crashed (signal {sig})"),
                None => format!("the CUDA check gave no report ({status}; {e})"),
            })
        }
    }
}
