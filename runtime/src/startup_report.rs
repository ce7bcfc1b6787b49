//! The start-up report: when the worker is ready, one log line that is a JSON object, e.g. from
//! the real A1111 on a CPU:
//!
//! ```json
//! {"event":"startup","ready":"warmup","total":46.992,"phases":{"gpu_check":null,
//!  "tcmalloc":0.006,"webui_api":28.504,"model_load":10.985,"warmup":7.493,
//!  "handler_imports":2.271,"gate":44.706},"webui":{"startup_time":28.0,"model_loaded_in":16.6}}
//! ```
//!
//! Phases in seconds (null where a phase did not happen): `gpu_check` the CUDA check child;
//! `tcmalloc` the re-exec with tcmalloc preloaded; `webui_api` WebUI spawn to the API answering;
//! `model_load` API answering to the model loaded; `warmup` the warm-up generation;
//! `handler_imports` handler spawn to the handler at the gate (when it says so); `gate` how long
//! the handler then waited at the gate for the WebUI. `total` runs from the process's start
//! (before the re-exec) to ready. `webui` holds A1111's own "Startup time" and "Model loaded in".

use std::io::Write;
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use serde::Serialize;
use serde_json::Value;

use crate::readiness::{Milestones, ReadyMode};
use crate::webui_log::Facts;

/// The CLOCK_MONOTONIC reading of the first image, handed across the tcmalloc re-exec.
pub const START_CLOCK_ENV: &str = "WORKER_RUNTIME_STARTED_NS";

/// (the process's start, the re-exec's cost if there was one)
static START: OnceLock<(Instant, Option<Duration>)> = OnceLock::new();

/// Call first in `main`, before any thread exists (it edits the environment).
pub fn note_process_start() {
    let now = Instant::now();
    let earlier = std::env::var(START_CLOCK_ENV)
        .ok()
        .and_then(|v| v.parse::<u64>().ok());
    std::env::remove_var(START_CLOCK_ENV);
    let start = match (earlier, monotonic_ns()) {
        (Some(then), Some(mono)) if then <= mono => {
            let reexec = Duration::from_nanos(mono - then);
            (now.checked_sub(reexec).unwrap_or(now), Some(reexec))
        }
        _ => (now, None),
    };
    let _ = START.set(start);
}

/// The value the tcmalloc re-exec passes in `START_CLOCK_ENV`.
pub fn clock_for_reexec() -> Option<String> {
    monotonic_ns().map(|ns| ns.to_string())
}

fn monotonic_ns() -> Option<u64> {
    let t = nix::time::clock_gettime(nix::time::ClockId::CLOCK_MONOTONIC).ok()?;
    u64::try_from(t.tv_sec())
        .ok()?
        .checked_mul(1_000_000_000)?
        .checked_add(u64::try_from(t.tv_nsec()).ok()?)
}

/// What the launch sequence measured.
pub struct Report {
    pub mode: ReadyMode,
    pub gpu_check: Option<Duration>,
    pub webui_spawned: Instant,
    pub milestones: Milestones,
    pub handler_spawned: Option<Instant>,
    pub handler_at_gate: Option<Instant>,
    pub ready: Instant,
    pub webui: Facts,
}

/// The line's shape; fields in this order.
#[derive(Serialize)]
struct Line {
    event: &'static str,
    ready: &'static str,
    total: Option<f64>,
    phases: Phases,
    webui: WebuiFigures,
}

#[derive(Serialize)]
struct Phases {
    gpu_check: Option<f64>,
    tcmalloc: Option<f64>,
    webui_api: Option<f64>,
    model_load: Option<f64>,
    warmup: Option<f64>,
    handler_imports: Option<f64>,
    gate: Option<f64>,
}

#[derive(Serialize)]
struct WebuiFigures {
    startup_time: Option<f64>,
    model_loaded_in: Option<f64>,
}

impl Report {
    pub fn to_json(&self) -> Value {
        serde_json::to_value(self.line()).unwrap_or(Value::Null)
    }

    fn line(&self) -> Line {
        let (process_start, reexec) = START.get().copied().unwrap_or((self.webui_spawned, None));
        let m = &self.milestones;
        let gate = self
            .handler_at_gate
            .map(|at| self.ready.saturating_duration_since(at));
        Line {
            event: "startup",
            ready: self.mode.name(),
            total: secs(Some(self.ready.saturating_duration_since(process_start))),
            phases: Phases {
                gpu_check: secs(self.gpu_check),
                tcmalloc: secs(reexec),
                webui_api: secs(between(Some(self.webui_spawned), m.api)),
                model_load: secs(between(m.api, m.model)),
                warmup: secs(between(m.model, m.warmup)),
                handler_imports: secs(between(self.handler_spawned, self.handler_at_gate)),
                gate: secs(gate),
            },
            webui: WebuiFigures {
                startup_time: self.webui.startup_time,
                model_loaded_in: self.webui.model_loaded_in,
            },
        }
    }

    /// The one log line, on stderr like every log line, without a log prefix: a log collector
    /// can parse it as it is.
    pub fn log(&self) {
        match serde_json::to_string(&self.line()) {
            // Not eprintln: a closed stderr must not end the worker.
            Ok(line) => {
                let _ = writeln!(std::io::stderr().lock(), "{line}");
            }
            Err(e) => tracing::warn!("cannot write the start-up report: {e}"),
        }
    }
}

fn between(from: Option<Instant>, to: Option<Instant>) -> Option<Duration> {
    Some(to?.saturating_duration_since(from?))
}

/// Seconds, rounded to milliseconds.
fn secs(d: Option<Duration>) -> Option<f64> {
    d.map(|d| (d.as_secs_f64() * 1000.0).round() / 1000.0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn phases_are_seconds_between_milestones_and_null_where_skipped() {
        let t0 = Instant::now();
        let at = |ms: u64| t0 + Duration::from_millis(ms);
        let report = Report {
            mode: ReadyMode::Model,
            gpu_check: Some(Duration::from_millis(387)),
            webui_spawned: at(0),
            milestones: Milestones {
                api: Some(at(16_000)),
                model: Some(at(19_250)),
                warmup: None,
            },
            handler_spawned: Some(at(5)),
            handler_at_gate: Some(at(1_705)),
            ready: at(19_250),
            webui: Facts {
                startup_time: Some(15.4),
                model_loaded_in: Some(4.3),
                load_failure: None,
            },
        };
        let v = report.to_json();
        assert_eq!(v["event"], "startup");
        assert_eq!(v["ready"], "model");
        assert_eq!(v["phases"]["gpu_check"], 0.387);
        assert_eq!(v["phases"]["webui_api"], 16.0);
        assert_eq!(v["phases"]["model_load"], 3.25);
        assert!(v["phases"]["warmup"].is_null());
        assert_eq!(v["phases"]["handler_imports"], 1.7);
        assert_eq!(v["phases"]["gate"], 17.545);
        assert_eq!(v["webui"]["startup_time"], 15.4);
        assert_eq!(v["webui"]["model_loaded_in"], 4.3);
        let line = serde_json::to_string(&report.line()).expect("serialises");
        assert!(
            line.starts_with(r#"{"event":"startup","ready":"model","total":"#),
            "{line}"
        );
        assert!(!line.contains('\n'));
    }
}
