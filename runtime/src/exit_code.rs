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

/// The conventional status of a process killed by `signal`.
pub fn from_signal(signal: i32) -> u8 {
    (128 + signal).clamp(0, 255) as u8
}
