//! The readiness probe: a thread that finds out when the worker can serve a job, in up to three
//! stages (`WEBUI_READY`):
//!
//! 1. `api`: `GET /sdapi/v1/sd-models` answers 200. It answers as soon as uvicorn serves the API
//!    (A1111 has no /internal/ping in API-only mode), but A1111 loads the checkpoint in a
//!    background thread and sd-models keeps answering 200 when that load fails.
//! 2. `model`: `POST /sdapi/v1/reload-checkpoint` answers 200. Its handler is
//!    `send_model_to_device(shared.sd_model)` (modules/api/api.py); reading `shared.sd_model`
//!    goes through `SdModelData.get_sd_model` (modules/sd_models.py), which waits on the lock the
//!    background load holds and, while no load has succeeded, loads the checkpoint itself. So the
//!    answer comes once the model is loaded: 200 with the model on its device, or 500 when the
//!    load failed (A1111 then prints the load's exception to stderr, which the WebUI log relay
//!    reads: the 500 itself only says `'NoneType' object has no attribute 'lowvram'`). With the
//!    model already on its device the call changes nothing. `GET /sdapi/v1/options` is no
//!    signal: `sd_model_checkpoint` is set when the checkpoint list is built, before any load.
//! 3. `warmup`: a 1-step txt2img at `WEBUI_WARMUP_SIZE` that saves nothing returns an image: the
//!    whole generation path has run once (CUDA kernels chosen and loaded for that shape), so the
//!    first real job pays none of it.
//!    A failure answers 500 with A1111's exception in `error`/`errors`.
//!
//! The thread only reports: it writes one byte to the supervisor's pipe when it is done, either
//! way, and the outcome waits in `Probe::outcome`. The supervisor owns the deadline.
//!
//! Only the WebUI's own answer counts: redirects are not followed (a 302 to another server's 200
//! is not the WebUI answering), and a 200 counts only while the listening socket on the port
//! belongs to the WebUI's process tree (see `listener`).

use std::fs::File;
use std::io::Write;
use std::os::fd::OwnedFd;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc;
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant};

use nix::unistd::Pid;

use crate::listener::{self, Holder};
use crate::png;
use crate::warmup::{warmup_payload, WarmupSize, WARMUP_PATH};
use crate::webui_log::{one_line, WebuiLog};

/// Short enough that the handler starts within tens of milliseconds of readiness; a refused
/// connection costs microseconds, so polling this often is cheap.
const POLL_INTERVAL: Duration = Duration::from_millis(10);
const PROGRESS_EVERY: Duration = Duration::from_secs(10);
/// A slow answer must not stall the API poll, but the API can be busy while it starts.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(3);
/// A1111 prints a failed load's exception before it answers 500; the relay may lag behind.
const LOAD_REASON_WAIT: Duration = Duration::from_secs(2);

pub const READY_PATH: &str = "/sdapi/v1/sd-models";
pub const MODEL_PATH: &str = "/sdapi/v1/reload-checkpoint";

/// What "ready" means (`WEBUI_READY`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, clap::ValueEnum)]
pub enum ReadyMode {
    /// The API answers.
    Api,
    /// The checkpoint is loaded.
    Model,
    /// The checkpoint is loaded and one tiny generation returned an image.
    Warmup,
}

impl ReadyMode {
    pub fn name(self) -> &'static str {
        match self {
            ReadyMode::Api => "api",
            ReadyMode::Model => "model",
            ReadyMode::Warmup => "warmup",
        }
    }
}

/// When each stage finished.
#[derive(Debug, Clone, Copy, Default)]
pub struct Milestones {
    pub api: Option<Instant>,
    pub model: Option<Instant>,
    pub warmup: Option<Instant>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// Still probing.
    Pending,
    Ready,
    /// The checkpoint did not load: A1111's reason.
    ModelFailed(String),
    /// The model loaded but the warm-up generation failed: A1111's reason.
    WarmupFailed(String),
}

#[derive(Default)]
struct Shared {
    milestones: Mutex<Milestones>,
    outcome: Mutex<Option<Outcome>>,
}

/// A running probe; dropping it stops the thread at its next poll.
pub struct Probe {
    stop: Arc<AtomicBool>,
    shared: Arc<Shared>,
}

impl Drop for Probe {
    fn drop(&mut self) {
        self.stop();
    }
}

/// The process whose tree must hold the port for an answer to count.
#[derive(Debug, Clone, Copy)]
pub struct Owner {
    pub port: u16,
    pub pid: Pid,
}

impl Probe {
    /// No request starts from now on (a stop must not begin a warm-up); one in flight is left
    /// to the WebUI's own end.
    pub fn stop(&self) {
        self.stop.store(true, Ordering::Relaxed);
    }

    pub fn outcome(&self) -> Outcome {
        self.shared
            .outcome
            .lock()
            .ok()
            .and_then(|o| o.clone())
            .unwrap_or(Outcome::Pending)
    }

    pub fn milestones(&self) -> Milestones {
        self.shared
            .milestones
            .lock()
            .map(|m| *m)
            .unwrap_or_default()
    }
}

/// What the probe needs to know.
pub struct Target {
    pub base_url: String,
    pub mode: ReadyMode,
    /// The WebUI's start: progress is reported from here.
    pub started: Instant,
    /// Requests that wait for the model never outlive WEBUI_READY_TIMEOUT.
    pub deadline: Instant,
    pub log: Arc<WebuiLog>,
    /// The process whose tree must hold the port for an answer to count.
    pub owner: Owner,
    pub warmup_size: WarmupSize,
}

/// Starts probing; writes one byte to `notify` once the probe has an outcome.
pub fn spawn(target: Target, notify: OwnedFd) -> std::io::Result<Probe> {
    let stop = Arc::new(AtomicBool::new(false));
    let shared = Arc::new(Shared::default());
    let (stop_flag, state) = (Arc::clone(&stop), Arc::clone(&shared));
    thread::Builder::new()
        .name("readiness-probe".into())
        .spawn(move || {
            let outcome = probe(&target, &stop_flag, &state);
            if let Some(outcome) = outcome {
                if let Ok(mut slot) = state.outcome.lock() {
                    *slot = Some(outcome);
                }
                let _ = File::from(notify).write_all(b"R");
            }
        })?;
    Ok(Probe { stop, shared })
}

/// `None` when stopped before an outcome.
fn probe(target: &Target, stop: &AtomicBool, shared: &Shared) -> Option<Outcome> {
    let agent = agent(Some(REQUEST_TIMEOUT));
    wait_for_api(target, &agent, stop)?;
    record(shared, |m| m.api = Some(Instant::now()));
    if target.mode == ReadyMode::Api {
        return Some(Outcome::Ready);
    }
    tracing::info!(
        "WebUI API answers ({:.2} s); waiting for the model to load (WEBUI_READY={})",
        target.started.elapsed().as_secs_f64(),
        target.mode.name()
    );
    let stage_start = Instant::now();
    let answer = long_request(target, stop, MODEL_PATH, "{}".into(), "the model to load")?;
    if let Err(answer) = answer.success() {
        // The 500 names only a symptom; the WebUI printed the load's exception just before.
        let reason = target
            .log
            .wait_for_load_failure(LOAD_REASON_WAIT)
            .unwrap_or(answer);
        return Some(Outcome::ModelFailed(reason));
    }
    record(shared, |m| m.model = Some(Instant::now()));
    tracing::info!(
        "model loaded ({:.2} s after the API answered)",
        stage_start.elapsed().as_secs_f64()
    );
    if target.mode == ReadyMode::Model {
        return Some(Outcome::Ready);
    }
    let stage_start = Instant::now();
    let size = target.warmup_size;
    let warmup = |retry| {
        long_request(
            target,
            stop,
            WARMUP_PATH,
            warmup_payload(size, retry),
            "the warm-up image",
        )
        .map(|answer| answer.warmup_image())
    };
    let mut result = warmup(false)?;
    if result.as_ref().is_err_and(|r| r.contains("NansException")) {
        tracing::info!("warm-up generation gave NaNs; once more with another seed");
        result = warmup(true)?;
    }
    let made = match result {
        Ok(made) => made,
        Err(reason) if reason.contains("NansException") => {
            // A numeric accident of the seeds (or random test weights), not a broken worker:
            // the model loaded and the UNet ran; jobs still run, and A1111 names the same error
            // for a real job when it happens there.
            tracing::warn!("warm-up generation gave NaNs ({reason}); the model works: going on");
            None
        }
        Err(reason) => return Some(Outcome::WarmupFailed(reason)),
    };
    record(shared, |m| m.warmup = Some(Instant::now()));
    // The size of the image that came back, read from its PNG header: proof of the shape the
    // WebUI ran, not an echo of the setting.
    let made = made.map_or_else(|| format!("{size} asked"), |(w, h)| format!("{w}x{h}"));
    tracing::info!(
        "warm-up image generated in {:.2} s ({made}, 1 step)",
        stage_start.elapsed().as_secs_f64()
    );
    Some(Outcome::Ready)
}

fn record(shared: &Shared, apply: impl FnOnce(&mut Milestones)) {
    if let Ok(mut m) = shared.milestones.lock() {
        apply(&mut m);
    }
}

fn agent(timeout: Option<Duration>) -> ureq::Agent {
    ureq::Agent::config_builder()
        .timeout_global(timeout)
        .http_status_as_error(false)
        .max_redirects(0)
        // The API is on loopback: an HTTP_PROXY in the container's environment must not apply.
        .proxy(None)
        // The API poll sends a bare GET and reads only the status line: ureq's 128 KiB default
        // buffers per connection would be most of the launcher's memory.
        .input_buffer_size(16 * 1024)
        .max_response_header_size(16 * 1024)
        .output_buffer_size(4 * 1024)
        .build()
        .into()
}

/// Polls sd-models until 200; `None` when stopped.
fn wait_for_api(target: &Target, agent: &ureq::Agent, stop: &AtomicBool) -> Option<()> {
    let url = format!("{}{READY_PATH}", target.base_url);
    let mut next_progress = target.started + PROGRESS_EVERY;
    while !stop.load(Ordering::Relaxed) {
        let outcome = match agent.get(&url).call() {
            Ok(response) if response.status() == 200 => {
                let owner = target.owner;
                match listener::holder(owner.port, owner.pid) {
                    // Unknown: /proc's socket tables are unreadable here; the answer is all
                    // there is to go on.
                    Holder::Tree | Holder::Unknown => return Some(()),
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
                now.duration_since(target.started).as_secs_f64()
            );
            next_progress += PROGRESS_EVERY;
        }
        thread::sleep(POLL_INTERVAL);
    }
    None
}

/// An answer of the WebUI: its status and body.
struct Answer {
    status: u16,
    body: String,
}

impl Answer {
    /// `Err` with A1111's reason unless 200.
    fn success(&self) -> Result<(), String> {
        if self.status == 200 {
            return Ok(());
        }
        Err(self.reason())
    }

    /// A1111's error shape: `{"error": type, "detail": ..., "body": ..., "errors": str(e)}`.
    fn reason(&self) -> String {
        let fallback = || one_line(&format!("HTTP {}: {}", self.status, self.body));
        let Ok(value) = serde_json::from_str::<serde_json::Value>(&self.body) else {
            return fallback();
        };
        let text = |key: &str| {
            value
                .get(key)
                .and_then(|v| v.as_str())
                .filter(|s| !s.is_empty())
                .map(str::to_string)
        };
        let message = text("errors").or_else(|| text("detail"));
        match (text("error"), message) {
            (Some(kind), Some(message)) => one_line(&format!("{kind}: {message}")),
            (Some(kind), None) => one_line(&kind),
            (None, Some(message)) => one_line(&format!("HTTP {}: {message}", self.status)),
            (None, None) => fallback(),
        }
    }

    /// A warm-up succeeded when it answered 200 with at least one image; the image's width and
    /// height when it is a PNG (A1111's default format).
    fn warmup_image(&self) -> Result<Option<(u32, u32)>, String> {
        self.success()?;
        let images = serde_json::from_str::<serde_json::Value>(&self.body)
            .ok()
            .and_then(|v| v.get("images").and_then(|i| i.as_array()).cloned());
        match images.as_deref() {
            Some([first, ..]) if first.as_str().is_some_and(|s| !s.is_empty()) => {
                Ok(first.as_str().and_then(png::size_of_base64))
            }
            _ => Err("the warm-up txt2img answered 200 without an image".into()),
        }
    }
}

/// A POST that may wait for minutes (the model load), made on a helper thread so this one can
/// log progress; retried while the connection fails (the WebUI's own death is the supervisor's
/// to see). `None` when stopped.
fn long_request(
    target: &Target,
    stop: &AtomicBool,
    path: &str,
    body: String,
    waiting_for: &str,
) -> Option<Answer> {
    let url = format!("{}{path}", target.base_url);
    let mut next_progress = Instant::now() + PROGRESS_EVERY;
    loop {
        if stop.load(Ordering::Relaxed) {
            return None;
        }
        // One second past the deadline: the supervisor's own deadline event comes first.
        let timeout = target
            .deadline
            .saturating_duration_since(Instant::now())
            .saturating_add(Duration::from_secs(1));
        let (tx, rx) = mpsc::channel();
        let (request_url, request_body) = (url.clone(), body.clone());
        let spawned = thread::Builder::new()
            .name("readiness-request".into())
            .spawn(move || {
                let result = agent(Some(timeout))
                    .post(&request_url)
                    .header("Content-Type", "application/json")
                    .send(request_body)
                    .map_err(|e| e.to_string())
                    .and_then(|mut response| {
                        let status = response.status().as_u16();
                        let body = response
                            .body_mut()
                            .with_config()
                            .limit(64 * 1024 * 1024)
                            .read_to_string()
                            .map_err(|e| e.to_string())?;
                        Ok(Answer { status, body })
                    });
                let _ = tx.send(result);
            });
        if let Err(e) = spawned {
            tracing::error!("cannot start a readiness request: {e}");
            return None;
        }
        let result = loop {
            match rx.recv_timeout(POLL_INTERVAL * 10) {
                Ok(result) => break result,
                Err(mpsc::RecvTimeoutError::Disconnected) => break Err("no answer".into()),
                Err(mpsc::RecvTimeoutError::Timeout) => {}
            }
            if stop.load(Ordering::Relaxed) {
                return None;
            }
            let now = Instant::now();
            if now >= next_progress {
                tracing::info!(
                    "waiting for {waiting_for} (POST {path}): {:.0} s since the WebUI started",
                    now.duration_since(target.started).as_secs_f64()
                );
                next_progress += PROGRESS_EVERY;
            }
        };
        match result {
            Ok(answer) => return Some(answer),
            Err(e) => {
                if stop.load(Ordering::Relaxed) || Instant::now() >= target.deadline {
                    return None;
                }
                tracing::debug!("POST {path} failed ({e}); trying again");
                thread::sleep(POLL_INTERVAL * 10);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn answer(status: u16, body: &str) -> Answer {
        Answer {
            status,
            body: body.into(),
        }
    }

    #[test]
    fn a1111_error_answers_become_one_line_with_type_and_message() {
        let a = answer(
            500,
            r#"{"error": "SafetensorError", "detail": "", "body": "", "errors": "Error while deserializing header: HeaderTooLarge"}"#,
        );
        assert_eq!(
            a.success().unwrap_err(),
            "SafetensorError: Error while deserializing header: HeaderTooLarge"
        );
        assert_eq!(
            answer(404, r#"{"detail": "Not Found"}"#).reason(),
            "HTTP 404: Not Found"
        );
        assert_eq!(
            answer(502, "Bad\ngateway").reason(),
            "HTTP 502: Bad gateway"
        );
    }

    #[test]
    fn a_warmup_needs_an_image_and_reads_its_size() {
        use base64::Engine as _;
        let encoded =
            base64::engine::general_purpose::STANDARD.encode(crate::png::tests::header(512, 768));
        let body = format!(r#"{{"images": ["{encoded}"], "info": "{{}}"}}"#);
        assert_eq!(answer(200, &body).warmup_image(), Ok(Some((512, 768))));
        // A JPEG (A1111's samples_format) is still an image; its size is just not read.
        assert_eq!(
            answer(
                200,
                r#"{"images": ["/9j/4AAQSkZJRgABAQAAAQABAAD/2wBDAAgGBgcGBQ"], "info": "{}"}"#
            )
            .warmup_image(),
            Ok(None)
        );
        assert!(answer(200, r#"{"images": [], "info": "{}"}"#)
            .warmup_image()
            .is_err());
        assert!(
            answer(500, r#"{"error": "NansException", "errors": "NaN"}"#)
                .warmup_image()
                .unwrap_err()
                .starts_with("NansException")
        );
    }
}
