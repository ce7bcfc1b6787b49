//! The launch step: runs `worker-runtime cuda-check --json` as a child process, logs its report,
//! and returns the verdict. A child, so the launcher (PID 1 for the container's whole life) never
//! maps libcuda nor holds a CUDA context (100+ MB); the WebUI gets a GPU nobody else holds.

use std::io::Read;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use nix::sys::signal::Signal;
use tracing::{error, info, warn};

use crate::supervisor::{Event, ExitStatus, Role, Supervisor};

use super::report::{Level, Report, BANNER, RULE, VERDICT_FAILED};
use super::LaunchVerdict;
use crate::cli::CudaCheckMode;

/// A healthy check takes well under a second; a hung driver (a GPU that fell off the bus) can
/// block cuInit forever. Past this (CUDA_CHECK_TIMEOUT's default), the check is stopped and counts
/// as a CUDA failure.
pub const TIMEOUT: Duration = Duration::from_secs(30);

/// How often an unsupervised check's status is polled; 5 ms is invisible next to the check's own
/// ~300 ms.
const POLL: Duration = Duration::from_millis(5);

/// Runs `exe cuda-check --json`, logs the report through tracing, returns the verdict. For
/// callers without a supervisor (`webui-args`, tests): the runtime's own launch uses
/// [`run_supervised`].
pub fn run_in_child(exe: &Path, mode: CudaCheckMode, timeout: Duration) -> LaunchVerdict {
    let started = Instant::now();
    let outcome = spawn_and_wait(exe, timeout);
    conclude(mode, outcome, started)
}

/// The launch step under the supervisor: the check is a child like the WebUI and the handler
/// (own process group, no blocked signal, SIGKILL if the runtime dies), and a stop signal during
/// it ends it at once: `Err(signal)`.
pub fn run_supervised(
    exe: &Path,
    mode: CudaCheckMode,
    timeout: Duration,
    supervisor: &mut Supervisor,
) -> Result<LaunchVerdict, Signal> {
    let started = Instant::now();
    let mut command = check_command(exe);
    let outcome = match supervisor.spawn_piped(Role::GpuCheck, &mut command) {
        Err(e) => Err(format!(
            "cannot start the CUDA check ({}): {e}",
            exe.display()
        )),
        Ok((_, stdout)) => {
            let reader = read_all(stdout);
            let deadline = started + timeout;
            loop {
                match supervisor.next(Some(deadline)) {
                    Event::Exited(Role::GpuCheck, status) => {
                        let signal = match status {
                            ExitStatus::Signaled(signal) => Some(signal as i32),
                            ExitStatus::Code(_) => None,
                        };
                        let text = reader.join().unwrap_or_default();
                        break parse_report(&text, signal, &status.to_string());
                    }
                    Event::Deadline => {
                        supervisor.kill_now(Role::GpuCheck);
                        let _ = reader.join();
                        break Err(timed_out(timeout));
                    }
                    Event::Stop(signal) | Event::Again(signal) => {
                        info!("received {signal} during the CUDA check: stopping it");
                        supervisor.kill_now(Role::GpuCheck);
                        let _ = reader.join();
                        return Err(signal);
                    }
                    Event::Exited(..) | Event::Ready => {}
                }
            }
        }
    };
    Ok(conclude(mode, outcome, started))
}

fn timed_out(timeout: Duration) -> String {
    format!(
        "the CUDA check did not finish within {} s (a hung driver or GPU; CUDA_CHECK_TIMEOUT) \
         and was stopped",
        timeout.as_secs_f64()
    )
}

/// Logs the report (or why there is none) and gives the verdict.
fn conclude(
    mode: CudaCheckMode,
    outcome: Result<Report, String>,
    started: Instant,
) -> LaunchVerdict {
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

/// The torch check's closing line for a failure in warn mode (docs/bench/torch_check.py). In strict mode the launcher stops and says
/// so itself.
fn finish(mode: CudaCheckMode, code: u8) {
    if code >= VERDICT_FAILED && mode != CudaCheckMode::Strict {
        warn!("⚠ Attempting to continue anyway...");
    }
}

fn check_command(exe: &Path) -> Command {
    let mut command = Command::new(exe);
    command
        .args(["cuda-check", "--json"])
        .stdout(Stdio::piped())
        // A crash message (or a driver's own complaint) lands in the container log.
        .stderr(Stdio::inherit());
    command
}

/// Reads on a thread so a large report can never fill the pipe and stall the child.
fn read_all(mut stdout: impl Read + Send + 'static) -> std::thread::JoinHandle<String> {
    std::thread::spawn(move || {
        let mut text = String::new();
        let _ = stdout.read_to_string(&mut text);
        text
    })
}

fn spawn_and_wait(exe: &Path, timeout: Duration) -> Result<Report, String> {
    let mut command = check_command(exe);
    crate::supervisor::prepare(&mut command, None);
    let mut child = command
        .spawn()
        .map_err(|e| format!("cannot start the CUDA check ({}): {e}", exe.display()))?;
    let reader = child.stdout.take().map(read_all);
    let deadline = Instant::now() + timeout;
    let status = loop {
        match child.try_wait() {
            Ok(Some(status)) => break status,
            Ok(None) if Instant::now() >= deadline => {
                let _ = child.kill();
                let _ = child.wait();
                let _ = reader.map(|r| r.join());
                return Err(timed_out(timeout));
            }
            Ok(None) => std::thread::sleep(POLL),
            Err(e) => return Err(format!("cannot wait for the CUDA check: {e}")),
        }
    };
    let text = match reader.map(|r| r.join()) {
        Some(Ok(text)) => text,
        _ => return Err("the CUDA check's output could not be read".to_string()),
    };
    use std::os::unix::process::ExitStatusExt;
    parse_report(&text, status.signal(), &status.to_string())
}

fn parse_report(text: &str, signal: Option<i32>, status: &str) -> Result<Report, String> {
    serde_json::from_str::<Report>(text.trim()).map_err(|e| match signal {
        Some(sig) => format!("the CUDA check crashed (signal {sig})"),
        None => format!("the CUDA check gave no report ({status}; {e})"),
    })
}
