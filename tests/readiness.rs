//! What "ready" means (WEBUI_READY), the health endpoint (PORT_HEALTH) and the start-up report,
//! end to end: the real `worker-runtime` with the demo WebUI (docker/demo-webui), whose knobs
//! reproduce A1111's start-up: a model loading in the background, its own "Startup time" and
//! "Model loaded in" lines, a checkpoint that cannot load, a generation that fails.

mod support;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::process::Stdio;
use std::thread;
use std::time::{Duration, Instant};

use nix::sys::signal::Signal;
use support::{has_line, position, workspace_root, Fixture, PATIENCE};

const HEADER_TOO_LARGE: &str =
    "safetensors_rust.SafetensorError: Error while deserializing header: HeaderTooLarge";
/// A1111 v1.10's words when the CLIP tokenizer files are missing and the hub is out of reach.
const NO_TOKENIZER: &str = "OSError: Can't load tokenizer for 'openai/clip-vit-large-patch14'. \
     If you were trying to load it from 'https://huggingface.co/models', make sure you don't have \
     a local directory with the same name.";

/// The demo WebUI in place of the fake one.
fn demo() -> Fixture {
    let demo_dir = workspace_root().join("docker").join("demo-webui");
    Fixture::new()
        .env("WEBUI_DIR", &demo_dir.display().to_string())
        .env("DEMO_WEBUI_ACCESS_LOG", "0")
        .without_env("WEBUI_READY")
}

/// The start-up report: the one line that is a JSON object with "event": "startup".
fn report(lines: &[String]) -> Option<serde_json::Value> {
    lines.iter().find_map(|l| {
        let v: serde_json::Value = serde_json::from_str(l).ok()?;
        (v["event"] == "startup").then_some(v)
    })
}

fn text(lines: &[String]) -> String {
    lines.join("\n")
}

#[test]
fn warmup_is_the_default_and_the_report_has_every_phase_and_a1111s_figures() {
    let fixture = demo()
        .env("DEMO_WEBUI_MODEL_LOAD_SECONDS", "0.5")
        .env("DEMO_WEBUI_STARTUP_TIME", "15.4")
        .env("DEMO_WEBUI_MODEL_LOADED_IN", "4.3");
    let (code, lines) = fixture.run();
    assert_eq!(code, 0, "{}", text(&lines));
    // The runtime's lines; the WebUI's own come through the relay, in no fixed order with them.
    assert!(has_line(&lines, "Model loaded in 4.3s"), "{}", text(&lines));
    let order = [
        "WebUI API answers",
        "model loaded (",
        "warm-up image generated",
        "WebUI API ready in",
        "readiness gate opened",
        "fake handler: serving",
    ];
    let positions: Vec<usize> = order.iter().map(|n| position(&lines, n)).collect();
    assert!(
        positions.windows(2).all(|w| w[0] < w[1]),
        "out of order: {order:?}\n{}",
        text(&lines)
    );
    let report = report(&lines).expect("a start-up report line");
    assert_eq!(report["ready"], "warmup");
    for phase in [
        "webui_api",
        "model_load",
        "warmup",
        "handler_imports",
        "gate",
    ] {
        assert!(
            report["phases"][phase].as_f64().is_some_and(|s| s >= 0.0),
            "phase {phase} missing: {report}"
        );
    }
    // CUDA_CHECK=off: no GPU check ran, and the report says so rather than inventing a figure.
    assert!(report["phases"]["gpu_check"].is_null(), "{report}");
    assert!(report["total"].as_f64().is_some(), "{report}");
    assert_eq!(report["webui"]["startup_time"], 15.4);
    assert_eq!(report["webui"]["model_loaded_in"], 4.3);
    assert_eq!(fixture.record("handler.gate").as_deref(), Some("ready"));
    // The size read back from the image the WebUI returned: SD 1.x's native size on a GPU.
    assert!(has_line(&lines, "(512x512, 1 step)"), "{}", text(&lines));
}

/// The runtime's warm-up line of a worker run that must succeed.
fn warmup_line(fixture: Fixture) -> String {
    let (code, lines) = fixture.run();
    assert_eq!(code, 0, "{}", text(&lines));
    lines[position(&lines, "warm-up image generated")].clone()
}

#[test]
fn on_a_cpu_the_warmup_is_the_smallest_image() {
    let line = warmup_line(demo().env("WEBUI_DEVICE", "cpu"));
    assert!(line.ends_with("(64x64, 1 step)"), "{line}");
}

#[test]
fn the_warmup_runs_at_the_size_set_for_it() {
    let line = warmup_line(demo().env("WEBUI_WARMUP_SIZE", "136x96"));
    assert!(line.ends_with("(136x96, 1 step)"), "{line}");
}

#[test]
fn a_stop_during_the_warmup_interrupts_it_instead_of_waiting_for_it() {
    // One step takes a minute, and the demo, as A1111, finishes a generation before it exits.
    let fixture = demo()
        .env("DEMO_WEBUI_SECONDS_PER_STEP", "60")
        .env("SHUTDOWN_GRACE", "30");
    let running = fixture.spawn();
    assert!(running.wait_for_line("model loaded ("));
    // Until the warm-up is generating: a request still on its way is not interrupted (A1111
    // clears the flag when a generation begins), and the stop is then bounded by the grace.
    let progress = "GET /sdapi/v1/progress HTTP/1.1\r\nHost: webui\r\nConnection: close\r\n\r\n";
    let generating = support::wait_for(|| {
        answer(fixture.port, progress).filter(|a| a.contains("scripts_txt2img"))
    });
    assert!(generating.is_some(), "{}", text(&running.lines()));
    running.signal(Signal::SIGTERM);
    let (code, lines) = running.wait();
    assert_eq!(code, 143, "{}", text(&lines));
    assert!(
        has_line(&lines, "the WebUI accepted the interrupt"),
        "{}",
        text(&lines)
    );
    // The WebUI ended by itself, not at the SIGKILL deadline.
    assert!(
        !has_line(&lines, "at the stop deadline"),
        "{}",
        text(&lines)
    );
    assert!(
        !has_line(&lines, "readiness gate opened"),
        "{}",
        text(&lines)
    );
    // The handler may read the closed gate ("eof") before the SIGTERM ends it; never "ready".
    assert_ne!(fixture.record("handler.gate").as_deref(), Some("ready"));
}

#[test]
fn model_mode_waits_for_the_checkpoint_and_makes_no_image() {
    let fixture = demo()
        .env("WEBUI_READY", "model")
        .env("DEMO_WEBUI_MODEL_LOAD_SECONDS", "0.5");
    let (code, lines) = fixture.run();
    assert_eq!(code, 0, "{}", text(&lines));
    // The WebUI's own lines come through the relay, in no fixed order with the runtime's.
    assert!(has_line(&lines, "Model loaded in"), "{}", text(&lines));
    assert!(position(&lines, "model loaded (") < position(&lines, "readiness gate opened"));
    assert!(!has_line(&lines, "warm-up"), "{}", text(&lines));
    let report = report(&lines).expect("a start-up report line");
    assert_eq!(report["ready"], "model");
    assert!(
        report["phases"]["model_load"].as_f64().is_some(),
        "{report}"
    );
    assert!(report["phases"]["warmup"].is_null(), "{report}");
}

#[test]
fn api_mode_opens_the_gate_while_the_model_still_loads() {
    let fixture = demo()
        .env("WEBUI_READY", "api")
        .env("WEBUI_WARMUP_SIZE", "1024x1024")
        .env("DEMO_WEBUI_MODEL_LOAD_SECONDS", "60");
    let (code, lines) = fixture.run();
    assert_eq!(code, 0, "{}", text(&lines));
    assert!(has_line(&lines, "readiness gate opened"));
    // A setting that cannot apply is said, not silently dropped.
    assert!(
        has_line(
            &lines,
            "WEBUI_WARMUP_SIZE=1024x1024 has no effect: WEBUI_READY=api makes no warm-up image"
        ),
        "{}",
        text(&lines)
    );
    assert!(!has_line(&lines, "Model loaded in"), "{}", text(&lines));
    let report = report(&lines).expect("a start-up report line");
    assert_eq!(report["ready"], "api");
    assert!(report["phases"]["model_load"].is_null(), "{report}");
}

#[test]
fn a_checkpoint_that_cannot_load_stops_the_worker_before_any_job_with_a1111s_reason() {
    for (mode, reason) in [
        ("model", HEADER_TOO_LARGE),
        ("warmup", HEADER_TOO_LARGE),
        ("warmup", NO_TOKENIZER),
    ] {
        let fixture = demo()
            .env("WEBUI_READY", mode)
            .env("DEMO_WEBUI_MODEL_LOAD_ERROR", reason);
        let (code, lines) = fixture.run();
        assert_eq!(code, 86, "WEBUI_READY={mode}\n{}", text(&lines));
        let failure = position(&lines, "could not load its checkpoint");
        assert!(
            lines[failure].contains(reason),
            "the reason is not on the failure line: {}",
            lines[failure]
        );
        assert!(failure < position(&lines, "Shutdown complete."));
        // The handler never served: the gate was closed unwritten.
        assert_eq!(fixture.record("handler.gate").as_deref(), Some("eof"));
        assert!(report(&lines).is_none(), "{}", text(&lines));
    }
}

#[test]
fn a_failing_warmup_stops_the_worker_with_its_own_status() {
    let fixture = demo().env(
        "DEMO_WEBUI_GENERATION_ERROR",
        "OutOfMemoryError: CUDA out of memory. Tried to allocate 20.00 MiB",
    );
    let (code, lines) = fixture.run();
    assert_eq!(code, 87, "{}", text(&lines));
    assert!(has_line(
        &lines,
        "the warm-up generation failed: OutOfMemoryError: CUDA out of memory. Tried to allocate 20.00 MiB"
    ));
    assert!(has_line(&lines, "model loaded ("), "{}", text(&lines));
    assert_eq!(fixture.record("handler.gate").as_deref(), Some("eof"));
}

#[test]
fn nans_at_warmup_are_tried_once_more_then_only_a_warning() {
    // A1111's NaN check is about the numbers of one seed, not a broken worker.
    let fixture = demo().env(
        "DEMO_WEBUI_GENERATION_ERROR",
        "NansException: A tensor with NaNs was produced in Unet.",
    );
    let (code, lines) = fixture.run();
    assert_eq!(code, 0, "{}", text(&lines));
    assert!(position(&lines, "once more with another seed") < position(&lines, "gave NaNs ("));
    assert_eq!(fixture.record("handler.gate").as_deref(), Some("ready"));
}

#[test]
fn a_model_load_longer_than_the_ready_timeout_logs_progress_then_ends_with_the_timeout_status() {
    let fixture = demo()
        .env("WEBUI_READY", "model")
        .env("WEBUI_READY_TIMEOUT", "20")
        .env("DEMO_WEBUI_MODEL_LOAD_SECONDS", "120");
    let (code, lines) = fixture.run();
    assert_eq!(code, 82, "{}", text(&lines));
    // Progress while the model loads (every 10 s).
    assert!(
        position(
            &lines,
            "waiting for the model to load (POST /sdapi/v1/reload-checkpoint)"
        ) < position(&lines, "did not finish loading its checkpoint"),
        "{}",
        text(&lines)
    );
    assert!(
        has_line(
            &lines,
            "the WebUI did not finish loading its checkpoint within 20 s (WEBUI_READY_TIMEOUT)"
        ),
        "{}",
        text(&lines)
    );
    assert_eq!(fixture.record("handler.gate").as_deref(), Some("eof"));
}

#[test]
fn bad_webui_ready_and_warmup_size_values_are_refused_before_anything_starts() {
    let fixture = demo().env("WEBUI_READY", "loaded");
    let (code, lines) = fixture.run();
    assert_eq!(code, 78, "{}", text(&lines));
    assert!(
        has_line(&lines, "invalid value 'loaded'"),
        "{}",
        text(&lines)
    );
    assert!(fixture.record("handler.pid").is_none());
    for size in ["512", "500x512", "4096x4096"] {
        let fixture = demo().env("WEBUI_WARMUP_SIZE", size);
        let (code, lines) = fixture.run();
        assert_eq!(code, 78, "{}", text(&lines));
        let line = &lines[position(&lines, "WEBUI_WARMUP_SIZE")];
        assert!(line.contains("e.g. 512x512"), "{line}");
        assert!(fixture.record("webui.pid").is_none());
    }
}

/// One request to the health port; the status code, or None when nothing answered.
fn get(port: u16, request: &str) -> Option<u16> {
    answer(port, request)?.split(' ').nth(1)?.parse().ok()
}

/// One raw HTTP request on loopback; the whole answer, or None when nothing answered.
fn answer(port: u16, request: &str) -> Option<String> {
    let mut stream = TcpStream::connect(("127.0.0.1", port)).ok()?;
    stream.set_read_timeout(Some(PATIENCE)).ok()?;
    stream.write_all(request.as_bytes()).ok()?;
    let mut answer = String::new();
    stream.read_to_string(&mut answer).ok()?;
    Some(answer)
}

fn ping(port: u16) -> Option<u16> {
    get(port, "GET /ping HTTP/1.1\r\nHost: worker\r\n\r\n")
}

/// Polls until the endpoint answers something other than `current`.
fn next_status(port: u16, current: Option<u16>) -> Option<u16> {
    let deadline = Instant::now() + PATIENCE;
    loop {
        let status = ping(port);
        if status != current || Instant::now() > deadline {
            return status;
        }
        thread::sleep(Duration::from_millis(10));
    }
}

#[test]
fn health_endpoint_answers_starting_ready_stopping_and_nothing_else() {
    let health = support::free_port();
    let fixture = Fixture::new();
    let go = fixture.dir.path().join("go");
    let drained = fixture.dir.path().join("drained");
    let fixture = fixture
        .env("PORT_HEALTH", &health.to_string())
        .env("FAKE_WAIT_FOR_FILE", &go.display().to_string())
        .env("FAKE_HANDLER_SERVE", "1")
        .env("FAKE_HANDLER_DRAIN_FILE", &drained.display().to_string());
    let running = fixture.spawn();

    // Starting: the fake WebUI does not bind its API until the test says so.
    assert_eq!(
        next_status(health, None),
        Some(204),
        "{}",
        text(&running.lines())
    );
    assert_eq!(get(health, "GET /ping?ready HTTP/1.1\r\n\r\n"), Some(503));
    assert_eq!(get(health, "POST /ping HTTP/1.1\r\n\r\n"), Some(405));
    assert_eq!(get(health, "HEAD /ping HTTP/1.1\r\n\r\n"), Some(405));
    // Not a way into the WebUI's API.
    assert_eq!(
        get(health, "GET /sdapi/v1/sd-models HTTP/1.1\r\n\r\n"),
        Some(404)
    );
    assert_eq!(get(health, "nonsense\r\n\r\n"), Some(400));
    let huge = format!("GET /ping HTTP/1.1\r\nX: {}\r\n\r\n", "a".repeat(10_000));
    assert_eq!(get(health, &huge), Some(431));
    // A client that connects and says nothing does not hold up the next probe.
    let _silent = TcpStream::connect(("127.0.0.1", health)).expect("connects");
    assert_eq!(ping(health), Some(204));

    std::fs::write(&go, "").expect("let the WebUI bind");
    assert!(running.wait_for_line("fake handler: serving"));
    assert_eq!(next_status(health, Some(204)), Some(200));
    assert_eq!(get(health, "GET /ping?ready HTTP/1.1\r\n\r\n"), Some(200));

    // Stopping: the handler drains its job until the test lets it finish.
    running.signal(Signal::SIGTERM);
    assert!(running.wait_for_line("draining after signal"));
    assert_eq!(next_status(health, Some(200)), Some(503));
    std::fs::write(&drained, "").expect("let the handler finish");
    let (code, lines) = running.wait();
    assert_eq!(code, 0, "{}", text(&lines));
}

#[test]
fn a_health_port_that_is_taken_is_a_configuration_error() {
    let taken = std::net::TcpListener::bind("0.0.0.0:0").expect("bind");
    let port = taken.local_addr().expect("addr").port();
    let fixture = Fixture::new().env("PORT_HEALTH", &port.to_string());
    let (code, lines) = fixture.run();
    assert_eq!(code, 78, "{}", text(&lines));
    assert!(has_line(
        &lines,
        &format!("PORT_HEALTH={port}: cannot listen")
    ));
    assert!(fixture.record("webui.pid").is_none());
}

#[test]
fn a_log_reader_that_stops_reading_does_not_stall_the_webui() {
    // 4 MB of WebUI output into a stdout nobody reads: the pipe (64 KiB) and the relay's queue
    // (about 1 MiB) fill, and the relay drops the rest instead of blocking the WebUI.
    let fixture = Fixture::new().env("FAKE_LOG_BYTES", "4000000");
    let mut command = fixture.command();
    let (mut stalled_reader, stalled_writer) = std::io::pipe().expect("pipe");
    let mut child = command
        .stdin(Stdio::null())
        .stdout(stalled_writer)
        .stderr(Stdio::piped())
        .spawn()
        .expect("worker-runtime starts");
    drop(command);
    let mut stderr = child.stderr.take().expect("stderr");
    let log = thread::spawn(move || {
        let mut log = String::new();
        let _ = stderr.read_to_string(&mut log);
        log
    });
    // The WebUI got through its output and the worker became ready while stdout stayed unread.
    let deadline = Instant::now() + PATIENCE;
    while fixture.record("handler.gate").is_none_or(|r| r.is_empty()) && Instant::now() < deadline {
        thread::sleep(Duration::from_millis(10));
    }
    assert_eq!(fixture.record("webui.logged").as_deref(), Some("yes"));
    assert_eq!(fixture.record("handler.gate").as_deref(), Some("ready"));
    // Now read it: the handler's own output (not relayed) waits for the reader too.
    let mut stdout = Vec::new();
    let reader = thread::spawn(move || {
        let _ = stalled_reader.read_to_end(&mut stdout);
        stdout
    });
    let status = child.wait().expect("exit");
    let log = log.join().expect("stderr");
    assert_eq!(status.code(), Some(0), "{log}");
    let _ = reader.join().expect("stdout");
    // Said on stderr, which was read all along.
    assert!(
        log.contains("bytes of WebUI output dropped: the log reader was too slow"),
        "{log}"
    );
}

#[test]
fn health_endpoint_says_503_as_soon_as_the_webui_dies_while_serving() {
    let health = support::free_port();
    let fixture = Fixture::new();
    let drained = fixture.dir.path().join("drained");
    let fixture = fixture
        .env("PORT_HEALTH", &health.to_string())
        .env("FAKE_DIE_AFTER", "1")
        .env("FAKE_HANDLER_SERVE", "1")
        .env("FAKE_HANDLER_DRAIN_FILE", &drained.display().to_string());
    let running = fixture.spawn();
    assert!(running.wait_for_line("fake handler: serving"));
    // The handler is being stopped and drains until the test lets it finish: already 503.
    assert!(running.wait_for_line("the WebUI API died while the handler was serving"));
    assert_eq!(ping(health), Some(503), "{}", text(&running.lines()));
    std::fs::write(&drained, "").expect("let the handler finish");
    let (code, lines) = running.wait();
    assert_eq!(code, 83, "{}", text(&lines));
}
