//! Asks the WebUI to stop the generation in flight (`POST /sdapi/v1/interrupt`): A1111 ends the
//! job at its next sampling step and answers the job's request with the partial result, which the
//! handler then returns. The stop sequence uses it when DRAIN_TIMEOUT runs out.

use std::time::Duration;

pub const PATH: &str = "/sdapi/v1/interrupt";
/// The WebUI answers at once (it only sets a flag); a WebUI that does not is past helping.
const TIMEOUT: Duration = Duration::from_secs(1);

/// Sends the interrupt; the HTTP status, or why it could not be sent.
pub fn send(base_url: &str) -> Result<u16, String> {
    let agent: ureq::Agent = ureq::Agent::config_builder()
        .timeout_global(Some(TIMEOUT))
        .http_status_as_error(false)
        .max_redirects(0)
        // The API is on loopback: an HTTP_PROXY in the container's environment must not apply.
        .proxy(None)
        .build()
        .into();
    agent
        .post(format!("{base_url}{PATH}"))
        .send_empty()
        .map(|answer| answer.status().as_u16())
        .map_err(|e| e.to_string())
}
