//! The readiness probe: a thread that asks the WebUI API for its model list until it answers 200.
//! `/sdapi/v1/sd-models` answers as soon as uvicorn serves the API (A1111 has no /internal/ping in
//! API-only mode), and a 200 means the API routes are mounted, which a bare open port does not.
//! The thread only reports: the supervisor decides what readiness and timeouts mean.
//!
//! Only the WebUI's own answer counts: redirects are not followed (a 302 to another server's 200
//! is not the WebUI answering), and a 200 counts only while the listening socket on the port
//! belongs to the WebUI's process tree (see `listener`).

use std::fs::File;
use std::io::Write;
use std::os::fd::OwnedFd;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread;
use std::time::{Duration, Instant};

use nix::unistd::Pid;

use crate::listener::{self, Holder};

/// Short enough that the handler starts within tens of milliseconds of readiness; a refused
/// connection costs microseconds, so polling this often is cheap.
const POLL_INTERVAL: Duration = Duration::from_millis(10);
const PROGRESS_EVERY: Duration = Duration::from_secs(10);
/// A slow answer must not stall the probe, but the API can be busy while it starts.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(3);

pub const READY_PATH: &str = "/sdapi/v1/sd-models";

/// A running probe; dropping it stops the thread at its next poll.
pub struct Probe {
    stop: Arc<AtomicBool>,
}

impl Drop for Probe {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
    }
}

/// The process whose tree must hold the port for an answer to count.
#[derive(Debug, Clone, Copy)]
pub struct Owner {
    pub port: u16,
    pub pid: Pid,
}

/// Starts probing `base_url`; writes one byte to `notify` once the API answers 200.
pub fn spawn(
    base_url: String,
    notify: OwnedFd,
    started: Instant,
    owner: Owner,
) -> std::io::Result<Probe> {
    let stop = Arc::new(AtomicBool::new(false));
    let stop_flag = Arc::clone(&stop);
    thread::Builder::new()
        .name("readiness-probe".into())
        .spawn(move || probe_loop(&base_url, File::from(notify), &stop_flag, started, owner))?;
    Ok(Probe { stop })
}

fn probe_loop(base_url: &str, mut notify: File, stop: &AtomicBool, started: Instant, owner: Owner) {
    let url = format!("{base_url}{READY_PATH}");
    let agent: ureq::Agent = ureq::Agent::config_builder()
        .timeout_global(Some(REQUEST_TIMEOUT))
        .http_status_as_error(false)
        .max_redirects(0)
        // The API is on loopback: an HTTP_PROXY in the container's environment must not apply.
        .proxy(None)
        // The probe sends a bare GET and reads only the status line: ureq's 128 KiB default
        // buffers per connection would be most of the launcher's memory.
        .input_buffer_size(16 * 1024)
        .max_response_header_size(16 * 1024)
        .output_buffer_size(4 * 1024)
        .build()
        .into();
    let mut next_progress = started + PROGRESS_EVERY;
    while !stop.load(Ordering::Relaxed) {
        let outcome = match agent.get(&url).call() {
            Ok(response) if response.status() == 200 => {
                match listener::holder(owner.port, owner.pid) {
                    // Unknown: /proc's socket tables are unreadable here; the answer is all
                    // there is to go on.
                    Holder::Tree | Holder::Unknown => {
                        let _ = notify.write_all(b"R");
                        return;
                    }
                    Holder::Other | Holder::Nobody => format!(
                        "HTTP 200 from a process outside the WebUI's process tree (pid {}) on \
                         port {}: not counted",
                        owner.pid, owner.port
                    ),
                }
            }
            Ok(response) => format!("HTTP {}", response.status().as_u16()),
            Err(ureq::Error::Io(e)) => e.kind().to_string(),
            Err(e) => e.to_string(),
        };
        let now = Instant::now();
        if now >= next_progress && !stop.load(Ordering::Relaxed) {
            tracing::info!(
                "waiting for the WebUI API at {url}: {:.0} s elapsed, last answer: {outcome}",
                now.duration_since(started).as_secs_f64()
            );
            next_progress += PROGRESS_EVERY;
        }
        thread::sleep(POLL_INTERVAL);
    }
}
