//! Log output: tracing to stderr, filtered by RUST_LOG (default `info`).
//!
//! Logging must never end the runtime: as PID 1 it is the one that drains the job and tears the
//! worker down. A log reader that went away (a dead log shim, `worker-runtime 2>&1 | head -1`)
//! makes every write fail with EPIPE (SIGPIPE is ignored: Rust's runtime sets that up before
//! `main`), a dead terminal with EIO; the writer below drops those lines instead of failing, and
//! tracing is told not to report its own write errors, which it would do with a panicking
//! `eprintln!`.

use std::io::{self, IsTerminal, Write};

use tracing_subscriber::EnvFilter;

const DEFAULT_FILTER: &str = "info";

pub fn init() {
    let (filter, complaint) = filter_from(std::env::var("RUST_LOG").ok().as_deref());
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_target(false)
        // Container logs are files: colour codes there are noise for grep.
        .with_ansi(io::stderr().is_terminal())
        .with_writer(|| LossyStderr)
        .log_internal_errors(false)
        .init();
    if let Some(complaint) = complaint {
        tracing::warn!("{complaint}");
    }
}

/// One line to stderr that may be lost but never panics (unlike `eprintln!`).
pub fn print_stderr(line: &str) {
    let _ = writeln!(LossyStderr, "{line}");
}

/// One line to stdout that may be lost but never panics (unlike `println!`).
pub fn print_stdout(line: &str) {
    let mut out = io::stdout().lock();
    let _ = writeln!(out, "{line}").and_then(|()| out.flush());
}

/// Stderr whose write errors are swallowed: a lost log line is better than a lost worker.
struct LossyStderr;

impl Write for LossyStderr {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        match io::stderr().write(buf) {
            Ok(n) => Ok(n),
            Err(e) if e.kind() == io::ErrorKind::Interrupted => Err(e),
            Err(_) => Ok(buf.len()),
        }
    }

    fn flush(&mut self) -> io::Result<()> {
        let _ = io::stderr().flush();
        Ok(())
    }
}

/// The filter for a RUST_LOG value, and a warning when the value was not usable. A value that
/// does not parse, or that silences the runtime's own errors, falls back to the default: EnvFilter
/// reads a bare word (`RUST_LOG=verbose`) as a target name and turns everything else off, errors
/// included, which nobody means.
pub fn filter_from(value: Option<&str>) -> (EnvFilter, Option<String>) {
    let default = || EnvFilter::new(DEFAULT_FILTER);
    let Some(value) = value.filter(|v| !v.trim().is_empty()) else {
        return (default(), None);
    };
    match EnvFilter::builder().parse(value) {
        Err(e) => (
            default(),
            Some(format!(
                "RUST_LOG={value:?} does not parse ({e}); using the default filter \
                 {DEFAULT_FILTER:?}"
            )),
        ),
        // `off` is a deliberate choice; anything else that hides the runtime's errors is a slip.
        Ok(_) if !shows_runtime_errors(value) && !value.trim().eq_ignore_ascii_case("off") => (
            default(),
            Some(format!(
                "RUST_LOG={value:?} would hide every log line of worker-runtime, errors included \
                 (a word without '=' names a target, not a level: use e.g. RUST_LOG=debug); \
                 using the default filter {DEFAULT_FILTER:?}"
            )),
        ),
        Ok(filter) => (filter, None),
    }
}

const LEVELS: [&str; 5] = ["error", "warn", "info", "debug", "trace"];

/// Whether some directive lets the runtime's own errors through. EnvFilter matches targets by
/// prefix; the runtime logs under `runtime::<module>`.
fn shows_runtime_errors(value: &str) -> bool {
    value.split(',').map(str::trim).any(|directive| {
        let (target, level) = match directive.rsplit_once('=') {
            Some((target, level)) => (target, Some(level.trim())),
            None if LEVELS.contains(&directive.to_ascii_lowercase().as_str()) => {
                ("", Some(directive))
            }
            None => (directive, None),
        };
        // `target[span{field}]`: only the target part decides where it applies.
        let target = target.split('[').next().unwrap_or("").trim();
        let ours =
            target.is_empty() || "runtime::".starts_with(target) || target.starts_with("runtime");
        let level_on = level.is_none_or(|l| !l.eq_ignore_ascii_case("off") && l != "0");
        ours && level_on
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rust_log_values_that_silence_the_runtime_fall_back_to_the_default() {
        let warned = |v: &str| filter_from(Some(v)).1.is_some();
        for ok in [
            "info",
            "debug",
            "runtime=debug",
            "warn,ureq=debug",
            "runtime::supervisor=trace",
            "TRACE",
            "",
            "off",
        ] {
            assert!(!warned(ok), "{ok}");
        }
        for bad in ["verbose", "ureq=debug", "runtime=loud", "info,[{"] {
            assert!(warned(bad), "{bad}");
        }
    }
}
