//! The runtime's own exit statuses. Everything else it exits with is the handler's status
//! (0-255, or 128+n when signal n killed it), so these sit in a range handlers do not use by habit.

/// A setting is invalid (port, paths, unknown WebUI flag, ...): nothing was started.
pub const BAD_CONFIG: u8 = 78;
/// The WebUI process exited before its API answered.
pub const WEBUI_EXITED_BEFORE_READY: u8 = 81;
/// The WebUI API did not answer 200 within WEBUI_READY_TIMEOUT.
pub const READY_TIMEOUT: u8 = 82;
/// The WebUI process died while the handler was serving.
pub const WEBUI_DIED: u8 = 83;
/// CUDA_CHECK=strict and the CUDA verdict was a failure (2 or more).
pub const CUDA_CHECK_FAILED: u8 = 84;
/// The runtime could not start a process it needs (fork/exec failure after validation).
pub const SPAWN_FAILED: u8 = 85;
/// WEBUI_READY=model|warmup and the WebUI could not load its checkpoint (A1111's reason is logged).
pub const MODEL_LOAD_FAILED: u8 = 86;
/// WEBUI_READY=warmup, the model loaded, but the warm-up generation failed (reason logged).
pub const WARMUP_FAILED: u8 = 87;

/// Every status above, with the words `worker-runtime --help`, run-local's messages and the
/// README's exit-code table (checked by `cargo xtask tidy`) take from here.
pub const MEANINGS: &[(u8, &str)] = &[
    (BAD_CONFIG, "bad configuration"),
    (
        WEBUI_EXITED_BEFORE_READY,
        "the WebUI exited before its API was ready",
    ),
    (READY_TIMEOUT, "the WebUI API did not become ready in time"),
    (WEBUI_DIED, "the WebUI died while the handler was serving"),
    (
        CUDA_CHECK_FAILED,
        "the CUDA check failed (CUDA_CHECK=strict)",
    ),
    (
        SPAWN_FAILED,
        "a process or the signal handling could not be set up",
    ),
    (MODEL_LOAD_FAILED, "the model did not load"),
    (WARMUP_FAILED, "the warm-up generation failed"),
];

/// What one of the runtime's own statuses means; `None` for a status that is the handler's.
pub fn meaning(code: u8) -> Option<&'static str> {
    MEANINGS
        .iter()
        .find(|(known, _)| *known == code)
        .map(|(_, words)| *words)
}

/// The `--help` text on exit statuses.
pub fn help() -> String {
    let codes: Vec<String> = MEANINGS
        .iter()
        .map(|(code, words)| format!("{code} {words}"))
        .collect();
    format!(
        "Exit codes: the handler's own status (128+n if signal n killed it), or {}. \
         An empty variable counts as unset.",
        codes.join(", ")
    )
}

/// The conventional status of a process killed by `signal`.
pub fn from_signal(signal: i32) -> u8 {
    (128 + signal).clamp(0, 255) as u8
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_status_has_one_meaning() {
        let mut codes: Vec<u8> = MEANINGS.iter().map(|(code, _)| *code).collect();
        codes.sort_unstable();
        codes.dedup();
        assert_eq!(codes.len(), MEANINGS.len(), "a status listed twice");
        assert_eq!(
            meaning(WEBUI_DIED),
            Some("the WebUI died while the handler was serving")
        );
        assert_eq!(meaning(1), None);
        assert!(help().contains("78 bad configuration, 81 the WebUI exited"));
    }
}
