//! The check's result: six check lines, the torch check's verdict, and how it reads to a person
//! (`cuda-check`, the launcher's log) or a program (`cuda-check --json`).

use serde::{Deserialize, Serialize};

pub const RULE: &str = "==============================================";
pub const BANNER: &str = "RUNNING CUDA COMPATIBILITY TESTS";

/// Verdict codes, as the exit codes of the torch check it replaces (docs/bench/torch_check.py).
pub const VERDICT_PASSED: u8 = 0;
pub const VERDICT_WARNINGS: u8 = 1;
pub const VERDICT_FAILED: u8 = 2;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Status {
    Pass,
    Warn,
    Fail,
    /// Not run: what it needs is missing (a driver, a GPU, image facts); never guessed.
    Skip,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Check {
    /// Stable identifier: driver, devices, kernels, cuda-version, gpu-op, xformers.
    pub id: String,
    pub title: String,
    pub status: Status,
    pub reason: String,
    /// What to do about it, for anything but a pass.
    #[serde(default)]
    pub hint: Option<String>,
}

impl Check {
    pub fn new(id: &str, title: &str, status: Status, reason: impl Into<String>) -> Self {
        Check {
            id: id.into(),
            title: title.into(),
            status,
            reason: reason.into(),
            hint: None,
        }
    }

    pub fn hint(mut self, hint: impl Into<String>) -> Self {
        self.hint = Some(hint.into());
        self
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Gpu {
    pub index: u32,
    pub name: String,
    pub compute_capability: String,
    pub total_mib: u64,
    #[serde(default)]
    pub free_mib: Option<u64>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DriverInfo {
    /// The CUDA version the driver supports ("13.0").
    #[serde(default)]
    pub cuda_version: Option<String>,
    /// The kernel module's version ("580.159"), when /proc/driver/nvidia is visible.
    #[serde(default)]
    pub kernel_module: Option<String>,
    /// The libcuda file that was loaded.
    #[serde(default)]
    pub library: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct FactsInfo {
    pub path: String,
    /// loaded, missing or unreadable.
    pub status: String,
    #[serde(default)]
    pub error: Option<String>,
    #[serde(default)]
    pub torch: Option<String>,
    #[serde(default)]
    pub xformers: Option<String>,
    #[serde(default)]
    pub webui: Option<String>,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Timings {
    /// Finding and opening libcuda.
    pub library_load_ms: f64,
    /// cuInit.
    pub cu_init_ms: f64,
    /// Device queries and contexts (for free memory).
    pub devices_ms: f64,
    /// JIT, allocate, copy, launch, copy back, verify.
    pub gpu_op_ms: f64,
    /// The whole check, from start to report.
    pub total_ms: f64,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Report {
    /// 0 passed, 1 passed with warnings (reduced performance), 2 CUDA problems.
    pub verdict: u8,
    /// The verdict in the torch check's words.
    pub summary: String,
    /// Whether `--xformers` can stay in the WebUI flags: false only when it certainly cannot
    /// work (no GPU, a capability A1111 rules out, xformers missing or broken in the image).
    pub xformers_usable: bool,
    /// The GPU the WebUI uses (device 0).
    #[serde(default)]
    pub gpu: Option<String>,
    #[serde(default)]
    pub gpus: Vec<Gpu>,
    #[serde(default)]
    pub driver: Option<DriverInfo>,
    pub facts: FactsInfo,
    pub checks: Vec<Check>,
    #[serde(default)]
    pub timings_ms: Timings,
    /// Peak resident memory of the check process (VmHWM), KiB.
    #[serde(default)]
    pub peak_rss_kib: Option<u64>,
}

/// Log severity of a report line; the launcher maps it onto tracing levels.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Level {
    Info,
    Warn,
    Error,
}

/// The verdict from the checks: any failure is a CUDA problem (2), any warning is reduced
/// performance (1), skips do not count (they say what was not checked).
pub fn verdict(checks: &[Check]) -> u8 {
    if checks.iter().any(|c| c.status == Status::Fail) {
        VERDICT_FAILED
    } else if checks.iter().any(|c| c.status == Status::Warn) {
        VERDICT_WARNINGS
    } else {
        VERDICT_PASSED
    }
}

/// The torch check's verdict line, naming the GPU instead of "RTX 5090".
pub fn summary(verdict: u8, gpu: Option<&str>) -> String {
    match verdict {
        VERDICT_PASSED => format!(
            "🎉 CUDA compatibility test PASSED - {} ready!",
            gpu.unwrap_or("GPU")
        ),
        VERDICT_WARNINGS => {
            "⚠ CUDA test passed with warnings - continuing with reduced performance".into()
        }
        _ => "❌ CUDA compatibility test FAILED".into(),
    }
}

impl Report {
    /// The report as lines, in order: banner, one line per check (plus its hint), verdict.
    pub fn lines(&self) -> Vec<(Level, String)> {
        let mut out = vec![
            (Level::Info, RULE.to_string()),
            (Level::Info, BANNER.to_string()),
            (Level::Info, RULE.to_string()),
        ];
        // The same fix under several checks (the facts hint) is said once.
        let mut hints_said: Vec<&str> = Vec::new();
        for (n, c) in self.checks.iter().enumerate() {
            let (level, mark, word) = match c.status {
                Status::Pass => (Level::Info, "✓", "PASS"),
                Status::Warn => (Level::Warn, "⚠", "WARN"),
                Status::Fail => (Level::Error, "❌", "FAIL"),
                Status::Skip => (Level::Info, "–", "SKIP"),
            };
            out.push((
                level,
                format!(
                    "{mark} {word} {}/{} {}: {}",
                    n + 1,
                    self.checks.len(),
                    c.title,
                    c.reason
                ),
            ));
            if let Some(hint) = c.hint.as_deref().filter(|h| !hints_said.contains(h)) {
                out.push((level, format!("    → {hint}")));
                hints_said.push(hint);
            }
        }
        let skipped = self
            .checks
            .iter()
            .filter(|c| c.status == Status::Skip)
            .count();
        if skipped > 0 {
            out.push((
                Level::Info,
                format!(
                    "ℹ {skipped} of {} checks skipped (see above)",
                    self.checks.len()
                ),
            ));
        }
        match self.verdict {
            VERDICT_PASSED => out.push((Level::Info, self.summary.clone())),
            VERDICT_WARNINGS => out.push((Level::Warn, self.summary.clone())),
            _ => {
                out.push((Level::Error, self.summary.clone()));
                out.push((
                    Level::Error,
                    format!(
                        "❌ {} may not be properly supported",
                        self.gpu.as_deref().unwrap_or("This machine")
                    ),
                ));
                out.push((Level::Error, "❌ Check the logs above for details".into()));
            }
        }
        out
    }

    /// Plain text, as `cuda-check` prints it.
    pub fn render(&self) -> String {
        let mut s = String::new();
        for (_, line) in self.lines() {
            s.push_str(&line);
            s.push('\n');
        }
        s
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check(status: Status) -> Check {
        Check::new("x", "X", status, "because")
    }

    #[test]
    fn failures_outrank_warnings_and_skips_do_not_count() {
        use Status::*;
        assert_eq!(verdict(&[check(Pass), check(Skip)]), 0);
        assert_eq!(verdict(&[check(Pass), check(Warn), check(Skip)]), 1);
        assert_eq!(verdict(&[check(Warn), check(Fail)]), 2);
    }

    #[test]
    fn summary_keeps_the_seed_wording_and_names_the_gpu() {
        assert_eq!(
            summary(0, Some("NVIDIA H200")),
            "🎉 CUDA compatibility test PASSED - NVIDIA H200 ready!"
        );
        assert_eq!(
            summary(1, Some("NVIDIA H200")),
            "⚠ CUDA test passed with warnings - continuing with reduced performance"
        );
        assert_eq!(summary(2, None), "❌ CUDA compatibility test FAILED");
    }
}
