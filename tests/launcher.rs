// tidy: long because it is a catalogue of launch scenarios, one short test each; helpers are in support/.
//! End-to-end tests of `worker-runtime`'s launch sequence: the real binary, real Python processes,
//! real signals. Each test asserts what a user sees: exit status, log lines, and which processes
//! remain afterwards.

mod support;

use std::time::{Duration, Instant};

use nix::sys::signal::Signal;
use support::{
    alive, children_running, has_line, pgid, position, status_field, wait_for, zombies_of, Fixture,
    Impostor,
};

/// The runtime's window for a burst of stop signals (one stop); a later one is deliberate.
const BURST_WINDOW: Duration = Duration::from_secs(1);

/// `webui.pid` and `handler.pid` come from the runtime's own log (the fake may be killed before
/// it writes anything); other names from the fakes' records.
fn assert_all_gone(fixture: &Fixture, lines: &[String], names: &[&str]) {
    for name in names {
        let pid = match *name {
            "webui.pid" => logged_pid(lines, "WebUI API started with PID: "),
            "handler.pid" => logged_pid(lines, "RunPod handler started with PID: "),
            _ => fixture.recorded_pid(name),
        };
        let pid = pid.unwrap_or_else(|| panic!("{name} was never started"));
        assert!(
            !alive(pid),
            "{name} (pid {pid}) is still running after worker-runtime exited"
        );
    }
}

fn logged_pid(lines: &[String], prefix: &str) -> Option<nix::unistd::Pid> {
    lines.iter().find_map(|l| {
        let rest = &l[l.find(prefix)? + prefix.len()..];
        let digits: String = rest.chars().take_while(char::is_ascii_digit).collect();
        digits.parse().ok().map(nix::unistd::Pid::from_raw)
    })
}

#[test]
fn happy_path_logs_the_lifecycle_in_order_and_exits_with_the_handlers_status() {
    let fixture = Fixture::new();
    let (code, lines) = fixture.run();
    assert_eq!(code, 0, "{}", lines.join("\n"));
    let order = [
        "Worker Initiated",
        "STARTING WEBUI API",
        "WebUI API started with PID: ",
        "STARTING RUNPOD HANDLER",
        "waiting at the readiness gate",
        "WebUI API ready in",
        "readiness gate opened",
        "fake handler: serving",
        "RunPod handler exited, stopping WebUI API...",
        "Shutdown complete.",
    ];
    let positions: Vec<usize> = order.iter().map(|n| position(&lines, n)).collect();
    assert!(
        positions.windows(2).all(|w| w[0] < w[1]),
        "out of order: {order:?}\n{}",
        lines.join("\n")
    );
    let webui_pid = fixture.recorded_pid("webui.pid").expect("webui ran");
    assert!(has_line(
        &lines,
        &format!("WebUI API started with PID: {webui_pid}")
    ));
    assert_eq!(fixture.record("handler.gate").as_deref(), Some("ready"));
    assert_eq!(
        fixture.record("handler.api_url"),
        Some(format!("http://127.0.0.1:{}", fixture.port))
    );
    assert_all_gone(&fixture, &lines, &["webui.pid", "handler.pid"]);
}

#[test]
fn webui_gets_the_worker_flag_set_with_port_and_loopback_and_checked_extra_flags() {
    let fixture = Fixture::new().env("WEBUI_EXTRA_ARGS", "--medvram --precision 'full'");
    let (code, lines) = fixture.run();
    assert_eq!(code, 0, "{}", lines.join("\n"));
    let args = fixture.record("webui.args").expect("webui args recorded");
    let args: Vec<&str> = args.lines().collect();
    for flag in ["--api", "--nowebui", "--no-half-vae", "--opt-sdp-attention"] {
        assert!(args.contains(&flag), "{flag} missing from {args:?}");
    }
    // CUDA_CHECK=off confirms nothing: with xformers installed but unusable, every generation
    // would fail in A1111's VAE.
    assert!(!args.contains(&"--xformers"), "{args:?}");
    assert!(has_line(
        &lines,
        "xformers not confirmed by the GPU check: --xformers dropped"
    ));
    let port = fixture.port.to_string();
    assert!(
        args.windows(2).any(|w| w == ["--port", port.as_str()]),
        "{args:?}"
    );
    assert!(
        args.windows(2).any(|w| w == ["--server-name", "127.0.0.1"]),
        "{args:?}"
    );
    assert_eq!(
        &args[args.len() - 3..],
        ["--medvram", "--precision", "full"]
    );
    assert!(has_line(&lines, "--disable-safe-unpickle is in effect"));
}

#[test]
fn runpod_and_bucket_secrets_reach_the_handler_but_not_the_webui() {
    let fixture = Fixture::new()
        .env("RUNPOD_AI_API_KEY", "rpa_test_key")
        .env("RUNPOD_WEBHOOK_GET_JOB", "http://127.0.0.1:9/job-take/$ID")
        .env("BUCKET_SECRET_ACCESS_KEY", "secret")
        .env("BUCKET_ACCESS_KEY_ID", "id");
    let (code, lines) = fixture.run();
    assert_eq!(code, 0, "{}", lines.join("\n"));
    assert_eq!(fixture.record("webui.worker_env").as_deref(), Some(""));
    let handler = fixture.record("handler.worker_env").expect("recorded");
    for name in [
        "BUCKET_ACCESS_KEY_ID",
        "BUCKET_SECRET_ACCESS_KEY",
        "RUNPOD_AI_API_KEY",
        "RUNPOD_WEBHOOK_GET_JOB",
    ] {
        assert!(handler.split(' ').any(|n| n == name), "{handler}");
    }
}

#[test]
fn handler_status_passes_through() {
    for status in [1, 7, 255] {
        let fixture = Fixture::new().env("FAKE_HANDLER_EXIT", &status.to_string());
        let (code, lines) = fixture.run();
        assert_eq!(code, status, "{}", lines.join("\n"));
        assert!(has_line(&lines, "Shutdown complete."));
    }
}

#[test]
fn handler_killed_by_a_signal_gives_128_plus_n() {
    let fixture = Fixture::new().env("FAKE_HANDLER_SIGNAL", "9");
    let (code, lines) = fixture.run();
    assert_eq!(code, 128 + 9, "{}", lines.join("\n"));
    assert!(has_line(&lines, "killed by SIGKILL"));
    assert_all_gone(&fixture, &lines, &["webui.pid"]);
}

#[test]
fn webui_crash_before_ready_closes_the_gate_and_names_the_status() {
    let fixture = Fixture::new()
        .env("FAKE_MODE", "crash")
        .env("FAKE_EXIT_CODE", "4");
    let (code, lines) = fixture.run();
    assert_eq!(code, 81, "{}", lines.join("\n"));
    assert!(has_line(
        &lines,
        "the WebUI exited before its API was ready (exit status 4"
    ));
    assert_eq!(fixture.record("handler.gate").as_deref(), Some("eof"));
    assert!(position(&lines, "exited before its API") < position(&lines, "Shutdown complete."));
    assert_all_gone(&fixture, &lines, &["handler.pid"]);
}

#[test]
fn webui_answering_503_is_not_ready_until_it_answers_200() {
    let fixture = Fixture::new().env("FAKE_503_FOR", "3");
    let running = fixture.spawn();
    assert!(running.wait_for_line("fake webui: listening"));
    // The port is open and answering 503: the gate must still be shut.
    std::thread::sleep(std::time::Duration::from_millis(500));
    assert!(
        !has_line(&running.lines(), "readiness gate opened"),
        "gate opened on a 503"
    );
    assert_eq!(fixture.record("handler.gate"), None, "gate opened on a 503");
    let (code, lines) = running.wait();
    assert_eq!(code, 0, "{}", lines.join("\n"));
    assert_eq!(fixture.record("handler.gate").as_deref(), Some("ready"));
}

#[test]
fn ready_timeout_stops_everything_with_its_own_status() {
    let fixture = Fixture::new()
        .env("FAKE_MODE", "never")
        .env("WEBUI_READY_TIMEOUT", "1");
    let (code, lines) = fixture.run();
    assert_eq!(code, 82, "{}", lines.join("\n"));
    assert!(has_line(&lines, "did not answer 200"));
    assert!(has_line(&lines, "WEBUI_READY_TIMEOUT"));
    assert_eq!(fixture.record("handler.gate").as_deref(), Some("eof"));
    assert_all_gone(&fixture, &lines, &["webui.pid", "handler.pid"]);
}

#[test]
fn webui_ignoring_sigterm_is_killed_after_the_grace() {
    let fixture = Fixture::new()
        .env("FAKE_IGNORE_TERM", "1")
        .env("SHUTDOWN_GRACE", "0.5");
    let (code, lines) = fixture.run();
    assert_eq!(code, 0, "{}", lines.join("\n"));
    assert!(has_line(&lines, "SIGKILL"), "{}", lines.join("\n"));
    assert!(has_line(&lines, "Shutdown complete."));
    assert_all_gone(&fixture, &lines, &["webui.pid"]);
}

#[test]
fn setsid_grandchildren_and_orphans_are_reaped_and_ended() {
    let fixture = Fixture::new()
        .env("FAKE_ORPHANS", "1")
        .env("FAKE_HANDLER_SERVE", "1");
    let running = fixture.spawn();
    assert!(running.wait_for_line("readiness gate opened"));
    // The double-forked orphan exits 0.3 s after it starts; as subreaper the runtime must reap it.
    let orphan = fixture.recorded_pid("orphan.pid").expect("orphan started");
    let deadline = std::time::Instant::now() + support::PATIENCE;
    while alive(orphan) && std::time::Instant::now() < deadline {
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    // Reaping follows SIGCHLD at once; the bound only absorbs a loaded machine. A runtime that
    // does not reap keeps the zombie for good.
    let reaped_by = std::time::Instant::now() + std::time::Duration::from_secs(5);
    while !zombies_of(running.pid()).is_empty() && std::time::Instant::now() < reaped_by {
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    assert_eq!(
        zombies_of(running.pid()),
        vec![],
        "unreaped children of the runtime"
    );
    let leaver = fixture
        .recorded_pid("leaver.pid")
        .expect("setsid grandchild started");
    assert!(alive(leaver));
    running.signal(Signal::SIGTERM);
    let (code, lines) = running.wait();
    assert_eq!(code, 0, "{}", lines.join("\n"));
    assert_all_gone(
        &fixture,
        &lines,
        &["leaver.pid", "webui.pid", "handler.pid"],
    );
}

#[test]
fn stop_signal_before_ready_stops_both_and_exits_128_plus_n() {
    for (signal, code) in [(Signal::SIGTERM, 143), (Signal::SIGINT, 130)] {
        let fixture = Fixture::new().env("FAKE_MODE", "never");
        let running = fixture.spawn();
        assert!(running.wait_for_line("waiting at the readiness gate"));
        assert!(fixture.wait_for_record("webui.pid"));
        running.signal(signal);
        let (actual, lines) = running.wait();
        assert_eq!(actual, code, "{signal}: {}", lines.join("\n"));
        assert!(has_line(
            &lines,
            &format!("received {signal} before the WebUI API was ready")
        ));
        assert!(has_line(&lines, "Shutdown complete."));
        assert_all_gone(&fixture, &lines, &["webui.pid", "handler.pid"]);
    }
}

#[test]
fn stop_signal_while_serving_lets_the_handler_drain_then_stops_the_webui() {
    for signal in [Signal::SIGTERM, Signal::SIGINT] {
        let fixture = Fixture::new()
            .env("FAKE_HANDLER_SERVE", "1")
            .env("FAKE_HANDLER_DRAIN_EXIT", "5");
        let running = fixture.spawn();
        assert!(running.wait_for_line("fake handler: serving"));
        running.signal(signal);
        let (code, lines) = running.wait();
        assert_eq!(
            code,
            5,
            "the handler's status after draining: {}",
            lines.join("\n")
        );
        let order = [
            &format!("received {signal}: passing {signal} to the handler") as &str,
            &format!("fake handler: draining after signal {}", signal as i32),
            "RunPod handler exited, stopping WebUI API...",
            "Shutdown complete.",
        ];
        let positions: Vec<usize> = order.iter().map(|n| position(&lines, n)).collect();
        assert!(
            positions.windows(2).all(|w| w[0] < w[1]),
            "{}",
            lines.join("\n")
        );
        assert_all_gone(&fixture, &lines, &["webui.pid", "handler.pid"]);
    }
}

#[test]
fn second_stop_signal_kills_at_once() {
    let fixture = Fixture::new()
        .env("FAKE_HANDLER_SERVE", "1")
        .env("FAKE_HANDLER_IGNORE_TERM", "1");
    let running = fixture.spawn();
    assert!(running.wait_for_line("fake handler: serving"));
    running.signal(Signal::SIGTERM);
    assert!(running.wait_for_line("passing SIGTERM to the handler"));
    // A deliberate second signal: later than a burst could be.
    std::thread::sleep(BURST_WINDOW + Duration::from_millis(500));
    running.signal(Signal::SIGTERM);
    let (code, lines) = running.wait();
    assert_eq!(code, 137, "{}", lines.join("\n"));
    assert!(has_line(&lines, "received SIGTERM again: killing at once"));
    assert_all_gone(&fixture, &lines, &["webui.pid", "handler.pid"]);
}

#[test]
fn webui_dying_during_service_stops_the_handler_and_says_why() {
    let fixture = Fixture::new()
        .env("FAKE_HANDLER_SERVE", "1")
        .env("FAKE_DIE_AFTER", "0.5");
    let (code, lines) = fixture.run();
    assert_eq!(code, 83, "{}", lines.join("\n"));
    assert!(has_line(
        &lines,
        "the WebUI API died while the handler was serving (exit status 1)"
    ));
    assert!(
        has_line(&lines, "fake handler: draining"),
        "handler got SIGTERM: {}",
        lines.join("\n")
    );
    assert_all_gone(&fixture, &lines, &["handler.pid"]);
}

#[test]
fn handler_failing_at_import_tears_down_the_webui() {
    let fixture = Fixture::new()
        .env("FAKE_MODE", "never")
        .env("FAKE_HANDLER_IMPORT_SECONDS", "0.5")
        .env("FAKE_HANDLER_CRASH_AT_IMPORT", "2");
    let (code, lines) = fixture.run();
    assert_eq!(code, 2, "{}", lines.join("\n"));
    assert!(has_line(
        &lines,
        "handler exited before the WebUI API was ready (exit status 2)"
    ));
    assert_all_gone(&fixture, &lines, &["webui.pid"]);
}

#[test]
fn after_ready_mode_starts_the_handler_only_once_the_api_answers() {
    let fixture = Fixture::new().env("HANDLER_START", "after-ready");
    let (code, lines) = fixture.run();
    assert_eq!(code, 0, "{}", lines.join("\n"));
    assert!(position(&lines, "WebUI API ready in") < position(&lines, "STARTING RUNPOD HANDLER"));
    assert_eq!(fixture.record("handler.gate").as_deref(), Some("none"));
}

fn tcmalloc_installed() -> bool {
    let listing = std::process::Command::new("/sbin/ldconfig")
        .arg("-p")
        .output()
        .expect("ldconfig -p");
    String::from_utf8_lossy(&listing.stdout).contains("libtcmalloc")
}

#[test]
fn tcmalloc_is_preloaded_into_the_webui_and_the_handler() {
    assert!(
        tcmalloc_installed(),
        "install libtcmalloc (Debian: libgoogle-perftools4) to run this test"
    );
    let fixture = Fixture::new();
    let (code, lines) = fixture.run();
    assert_eq!(code, 0, "{}", lines.join("\n"));
    assert!(
        has_line(&lines, "tcmalloc: LD_PRELOAD="),
        "{}",
        lines.join("\n")
    );
    assert_eq!(fixture.record("webui.tcmalloc").as_deref(), Some("yes"));
    assert_eq!(fixture.record("handler.tcmalloc").as_deref(), Some("yes"));
}

/// --disable-safe-unpickle under torch >= 2.6: the WebUI gets torch's switch back to full
/// unpickling (old .ckpt files load), with a warning; a user's own value is kept.
#[test]
fn webui_loads_ckpt_files_without_weights_only_unless_the_user_says_otherwise() {
    let fixture = Fixture::new();
    let (code, lines) = fixture.run();
    assert_eq!(code, 0, "{}", lines.join("\n"));
    assert_eq!(
        fixture.record("webui.torch_no_weights_only").as_deref(),
        Some("1")
    );
    assert!(has_line(
        &lines,
        "TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD=1 for the WebUI"
    ));

    let fixture = Fixture::new().env("TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD", "0");
    let (code, lines) = fixture.run();
    assert_eq!(code, 0, "{}", lines.join("\n"));
    assert_eq!(
        fixture.record("webui.torch_no_weights_only").as_deref(),
        Some("0")
    );
    assert!(!has_line(
        &lines,
        "TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD=1 for the WebUI"
    ));
}

#[test]
fn no_tcmalloc_keeps_it_out() {
    let fixture = Fixture::new().env("NO_TCMALLOC", "1");
    let (code, lines) = fixture.run();
    assert_eq!(code, 0, "{}", lines.join("\n"));
    assert!(has_line(&lines, "tcmalloc: disabled by NO_TCMALLOC"));
    assert_eq!(fixture.record("webui.tcmalloc").as_deref(), Some("no"));
}

#[test]
fn an_existing_ld_preload_is_kept_and_tcmalloc_appended_once() {
    assert!(
        tcmalloc_installed(),
        "install libtcmalloc (Debian: libgoogle-perftools4) to run this test"
    );
    let listing = std::process::Command::new("/sbin/ldconfig")
        .arg("-p")
        .output()
        .expect("ldconfig -p");
    let listing = String::from_utf8_lossy(&listing.stdout);
    let libz = listing
        .lines()
        .filter(|l| l.trim_start().starts_with("libz.so.1 ") && l.contains("x86-64"))
        .find_map(|l| l.split("=> ").nth(1))
        .expect("libz in the linker cache")
        .trim()
        .to_string();
    let fixture = Fixture::new().env("LD_PRELOAD", &libz);
    let (code, lines) = fixture.run();
    assert_eq!(code, 0, "{}", lines.join("\n"));
    let preload = fixture.record("webui.ld_preload").expect("recorded");
    let entries: Vec<&str> = preload.split(':').collect();
    assert_eq!(entries.len(), 2, "{preload}");
    assert_eq!(entries[0], libz);
    assert!(entries[1].contains("libtcmalloc"), "{preload}");
}

#[test]
fn bad_configuration_is_one_line_with_what_to_fix_and_starts_nothing() {
    let cases: [(&str, &str, &str); 6] = [
        ("WEBUI_PORT", "abc", "integer from 1 to 65535"),
        ("WEBUI_READY_TIMEOUT", "soon", "positive number of seconds"),
        ("HANDLER_START", "later", "later"),
        ("WEBUI_EXTRA_ARGS", "--xformer", "did you mean --xformers?"),
        ("WEBUI_EXTRA_ARGS", "--port 9", "set WEBUI_PORT instead"),
        (
            "HANDLER_PATH",
            "/nonexistent/handler.py",
            "point HANDLER_PATH at",
        ),
    ];
    for (key, value, fix) in cases {
        let fixture = Fixture::new().env(key, value);
        let (code, lines) = fixture.run();
        assert_eq!(code, 78, "{key}={value}: {}", lines.join("\n"));
        let errors: Vec<&String> = lines
            .iter()
            .filter(|l| l.contains("ERROR") || l.starts_with("worker-runtime:"))
            .collect();
        assert_eq!(errors.len(), 1, "{key}={value}: {}", lines.join("\n"));
        assert!(errors[0].contains(fix), "{key}={value}: {}", errors[0]);
        assert_eq!(
            fixture.record("webui.pid"),
            None,
            "{key}={value}: the WebUI was started"
        );
        assert_eq!(
            fixture.record("handler.pid"),
            None,
            "{key}={value}: the handler was started"
        );
    }
}

#[test]
fn missing_webui_py_and_unknown_commandline_args_are_rejected() {
    let fixture = Fixture::new().env("WEBUI_DIR", "/nonexistent-webui");
    let (code, lines) = fixture.run();
    assert_eq!(code, 78);
    assert!(has_line(
        &lines,
        "WEBUI_DIR=/nonexistent-webui: no webui.py there"
    ));

    let fixture = Fixture::new().env("COMMANDLINE_ARGS", "--no-such-flag");
    let (code, lines) = fixture.run();
    assert_eq!(code, 78);
    assert!(has_line(
        &lines,
        "COMMANDLINE_ARGS: unknown WebUI flag --no-such-flag"
    ));
    assert_eq!(fixture.record("webui.pid"), None);
}

#[test]
fn a_port_already_in_use_is_refused_before_the_probe_could_be_fooled() {
    let fixture = Fixture::new();
    let _squatter = std::net::TcpListener::bind(("127.0.0.1", fixture.port)).expect("bind");
    let (code, lines) = fixture.run();
    assert_eq!(code, 78, "{}", lines.join("\n"));
    assert!(has_line(
        &lines,
        &format!(
            "WEBUI_PORT={}: 127.0.0.1:{} is not free",
            fixture.port, fixture.port
        )
    ));
    assert_eq!(fixture.record("webui.pid"), None);
}

#[test]
fn a_relative_webui_dir_works_from_the_callers_directory() {
    let fixture = Fixture::new().env("WEBUI_DIR", "webui");
    let mut command = fixture.command();
    command.current_dir(fixture.dir.path());
    let output = command.output().expect("runs");
    let log = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(0), "{log}");
    assert!(log.contains("Shutdown complete."), "{log}");
}

#[test]
fn webui_args_prints_the_exact_command_line() {
    let fixture = Fixture::new().env("WEBUI_EXTRA_ARGS", "--styles-file 'my styles.csv'");
    let output = fixture.command().arg("webui-args").output().expect("runs");
    assert_eq!(output.status.code(), Some(0));
    let line = String::from_utf8_lossy(&output.stdout).trim().to_string();
    let words = shell_words::split(&line).expect("shell-quoted");
    assert!(words[0].ends_with("python3"), "{line}");
    assert!(words[1].ends_with("webui/webui.py"), "{line}");
    assert!(
        line.contains(&format!("--port {} --server-name 127.0.0.1", fixture.port)),
        "{line}"
    );
    assert_eq!(
        &words[words.len() - 2..],
        ["--styles-file", "my styles.csv"]
    );
}

// ---------------------------------------------------------------------------------------------
// PID 1 under faults

#[test]
fn a_log_reader_that_goes_away_never_kills_the_runtime() {
    let fixture = Fixture::new().env("FAKE_HANDLER_EXIT", "7");
    let release = fixture.release_file().display().to_string();
    let fixture = fixture.env("FAKE_HANDLER_WAIT_FILE", &release);
    let mut command = fixture.command();
    let (reader, writer) = std::io::pipe().expect("pipe");
    let stderr = writer.try_clone().expect("pipe clone");
    command
        .stdin(std::process::Stdio::null())
        .stdout(writer)
        .stderr(stderr);
    let mut child = command.spawn().expect("worker-runtime starts");
    drop(command);
    // The log shim reads one line and dies (`worker-runtime 2>&1 | head -1`).
    let mut first = String::new();
    std::io::BufRead::read_line(&mut std::io::BufReader::new(reader), &mut first).expect("a line");
    assert!(first.contains("Worker Initiated"), "{first}");
    assert!(fixture.wait_for_record("handler.gate"));
    // Every line from here on meets a closed pipe; the worker must still do its job.
    std::fs::write(fixture.release_file(), "").expect("release the handler");
    let status = wait_for(|| child.try_wait().expect("try_wait")).expect("runtime exits");
    assert_eq!(
        status.code(),
        Some(7),
        "the handler's status, not a panic: {status:?}"
    );
    for name in ["webui.pid", "handler.pid"] {
        let pid = fixture.recorded_pid(name).expect("started");
        assert!(!alive(pid), "{name} left running");
    }
}

/// The stop timeline with a job in flight, against the demo WebUI: the job runs on after the stop
/// signal for DRAIN_TIMEOUT, then the runtime asks the WebUI to interrupt it, the handler gets the
/// partial result, and everything is gone by DRAIN_TIMEOUT + SHUTDOWN_GRACE.
#[test]
fn a_job_still_running_at_drain_timeout_is_interrupted_and_returns_its_partial_result() {
    let fixture = Fixture::new()
        .env(
            "WEBUI_DIR",
            &support::demo_webui_dir().display().to_string(),
        )
        // 2000 steps of 50 ms: 100 s, far past every bound here, unless interrupted.
        .env("DEMO_WEBUI_SECONDS_PER_STEP", "0.05")
        .env("FAKE_HANDLER_JOB_STEPS", "2000")
        .env("FAKE_HANDLER_DRAIN_EXIT", "0")
        .env("DRAIN_TIMEOUT", "1")
        .env("SHUTDOWN_GRACE", "5");
    let running = fixture.spawn();
    assert!(running.wait_for_line("fake handler: job started"));
    let stopped = Instant::now();
    running.signal(Signal::SIGTERM);
    let (code, lines) = running.wait();
    let took = stopped.elapsed();
    eprintln!("stop with a job in flight, DRAIN_TIMEOUT=1 SHUTDOWN_GRACE=5: exit after {took:?}");
    assert_eq!(code, 0, "{}", lines.join("\n"));
    let order = [
        "received SIGTERM: passing SIGTERM to the handler",
        "still running 1.0 s after SIGTERM (DRAIN_TIMEOUT): asking the WebUI to interrupt",
        "fake handler: job returned 1 images",
        "RunPod handler exited (exit status 0)",
        "RunPod handler exited, stopping WebUI API...",
        "INFO:     Shutting down",
        "Shutdown complete.",
    ];
    let positions: Vec<usize> = order.iter().map(|n| position(&lines, n)).collect();
    assert!(
        positions.windows(2).all(|w| w[0] < w[1]),
        "{}",
        lines.join("\n")
    );
    assert_eq!(fixture.record("handler.job").as_deref(), Some("1 images"));
    assert!(has_line(
        &lines,
        "\"POST /sdapi/v1/interrupt HTTP/1.1\" 200"
    ));
    assert!(
        !has_line(&lines, "at the stop deadline"),
        "nothing needed SIGKILL: {}",
        lines.join("\n")
    );
    assert_all_gone(&fixture, &lines, &["webui.pid", "handler.pid"]);
}

/// runpod's local test mode dies of SIGTERM with its job in flight: the WebUI, which would
/// finish the orphaned generation before it exits, is told to interrupt it, so nothing needs the
/// SIGKILL at the deadline.
#[test]
fn a_handler_dying_of_the_stop_signal_leaves_no_generation_running() {
    let fixture = Fixture::new()
        .env(
            "WEBUI_DIR",
            &support::demo_webui_dir().display().to_string(),
        )
        .env("DEMO_WEBUI_SECONDS_PER_STEP", "0.05")
        .env("FAKE_HANDLER_JOB_STEPS", "2000")
        .env("FAKE_HANDLER_DIE_ON_TERM", "1")
        .env("SHUTDOWN_GRACE", "5");
    let running = fixture.spawn();
    assert!(running.wait_for_line("fake handler: job started"));
    // The WebUI has the request once it reports a job in progress.
    let progress = format!("http://127.0.0.1:{}/sdapi/v1/progress", fixture.port);
    assert!(wait_for(|| {
        let answer = std::process::Command::new("python3")
            .args(["-c", "import sys, urllib.request; print(urllib.request.urlopen(sys.argv[1]).read().decode())", &progress])
            .output()
            .ok()?;
        String::from_utf8_lossy(&answer.stdout)
            .contains("\"job\": \"scripts_txt2img\"")
            .then_some(())
    })
    .is_some());
    running.signal(Signal::SIGTERM);
    let (code, lines) = running.wait();
    assert_eq!(code, 143, "{}", lines.join("\n"));
    assert!(has_line(
        &lines,
        "RunPod handler exited (killed by SIGTERM)"
    ));
    assert!(has_line(
        &lines,
        "\"POST /sdapi/v1/interrupt HTTP/1.1\" 200"
    ));
    assert!(
        !has_line(&lines, "at the stop deadline"),
        "the WebUI finished the orphaned job: {}",
        lines.join("\n")
    );
    assert_all_gone(&fixture, &lines, &["webui.pid", "handler.pid"]);
}

#[test]
fn before_ready_everything_shares_one_stop_deadline() {
    // Both ignore SIGTERM: only the one SIGKILL at the shared deadline ends them.
    let fixture = Fixture::new()
        .env("FAKE_MODE", "never")
        .env("FAKE_IGNORE_TERM", "1")
        .env("FAKE_HANDLER_IGNORE_TERM_EARLY", "1")
        // Still importing: the closed gate does not end it either.
        .env("FAKE_HANDLER_IMPORT_SECONDS", "100")
        .env("SHUTDOWN_GRACE", "1");
    let running = fixture.spawn();
    assert!(running.wait_for_line("waiting at the readiness gate"));
    assert!(fixture.wait_for_record("webui.pid"));
    assert!(fixture.wait_for_record("handler.ignoring"));
    let stopped = Instant::now();
    running.signal(Signal::SIGTERM);
    let (code, lines) = running.wait();
    eprintln!(
        "stop before ready, both ignoring SIGTERM, SHUTDOWN_GRACE=1: exit after {:?}",
        stopped.elapsed()
    );
    assert_eq!(code, 143, "{}", lines.join("\n"));
    let kills: Vec<&String> = lines.iter().filter(|l| l.contains("SIGKILL")).collect();
    assert_eq!(kills.len(), 1, "one deadline for all: {}", lines.join("\n"));
    assert!(kills[0].contains("SHUTDOWN_GRACE"), "{}", kills[0]);
    assert_all_gone(&fixture, &lines, &["webui.pid", "handler.pid"]);
}

#[test]
fn sighup_and_sigquit_reach_the_handler_as_sigterm() {
    for signal in [Signal::SIGHUP, Signal::SIGQUIT] {
        let fixture = Fixture::new()
            .env("FAKE_HANDLER_SERVE", "1")
            .env("FAKE_HANDLER_DRAIN_EXIT", "5");
        let running = fixture.spawn();
        assert!(running.wait_for_line("fake handler: serving"));
        running.signal(signal);
        let (code, lines) = running.wait();
        assert_eq!(code, 5, "{signal}: {}", lines.join("\n"));
        assert!(has_line(
            &lines,
            &format!("received {signal}: passing SIGTERM to the handler")
        ));
        assert!(has_line(&lines, "fake handler: draining after signal 15"));
        assert_all_gone(&fixture, &lines, &["webui.pid", "handler.pid"]);
    }
}

#[test]
fn a_burst_of_stop_signals_is_one_stop_and_the_job_finishes() {
    // GNU timeout signals its child and then the child's group: the same stop, twice.
    let fixture = Fixture::new()
        .env("FAKE_HANDLER_SERVE", "1")
        .env("FAKE_HANDLER_DRAIN_EXIT", "5");
    let running = fixture.spawn();
    assert!(running.wait_for_line("fake handler: serving"));
    running.signal(Signal::SIGTERM);
    running.signal(Signal::SIGINT);
    let (code, lines) = running.wait();
    assert_eq!(code, 5, "the job was not killed: {}", lines.join("\n"));
    assert!(
        has_line(&lines, "received SIGINT") && has_line(&lines, "same stop"),
        "{}",
        lines.join("\n")
    );
    assert!(!has_line(&lines, "killing"), "{}", lines.join("\n"));
}

#[test]
fn every_other_catchable_signal_is_ignored_not_fatal() {
    let fixture = Fixture::new()
        .env("FAKE_HANDLER_SERVE", "1")
        .env("FAKE_HANDLER_DRAIN_EXIT", "5");
    let running = fixture.spawn();
    assert!(running.wait_for_line("fake handler: serving"));
    let others = [
        Signal::SIGUSR1,
        Signal::SIGUSR2,
        Signal::SIGALRM,
        Signal::SIGVTALRM,
        Signal::SIGPROF,
        Signal::SIGPWR,
        Signal::SIGXCPU,
        Signal::SIGXFSZ,
        Signal::SIGIO,
        Signal::SIGSTKFLT,
        Signal::SIGTSTP,
        Signal::SIGTTIN,
        Signal::SIGTTOU,
        Signal::SIGWINCH,
        Signal::SIGURG,
        Signal::SIGPIPE,
    ];
    for signal in others {
        running.signal(signal);
    }
    // A real-time signal: its default action ends a process too.
    let rt = nix::libc::SIGRTMIN() + 3;
    assert_eq!(unsafe { nix::libc::kill(running.pid().as_raw(), rt) }, 0);
    assert!(running.wait_for_line("received SIGRTMIN+3: ignored"));
    assert!(running.wait_for_line("received SIGUSR1: ignored"));
    running.signal(Signal::SIGTERM);
    let (code, lines) = running.wait();
    assert_eq!(code, 5, "{}", lines.join("\n"));
    assert!(has_line(&lines, "fake handler: draining after signal 15"));
    assert!(!has_line(&lines, "draining after signal 10"));
}

#[test]
fn a_first_signal_during_teardown_is_not_called_a_second_one() {
    // The WebUI ignores SIGTERM, so the teardown lasts the whole grace: time for the signal.
    let fixture = Fixture::new()
        .env("FAKE_IGNORE_TERM", "1")
        .env("SHUTDOWN_GRACE", "5");
    let running = fixture.spawn();
    assert!(running.wait_for_line("RunPod handler exited, stopping WebUI API..."));
    running.signal(Signal::SIGTERM);
    let (code, lines) = running.wait();
    assert_eq!(code, 0, "{}", lines.join("\n"));
    assert!(
        has_line(&lines, "received SIGTERM while shutting down"),
        "{}",
        lines.join("\n")
    );
    assert!(!has_line(&lines, "again"), "{}", lines.join("\n"));
    assert_all_gone(&fixture, &lines, &["webui.pid"]);
}

#[test]
fn children_start_with_no_blocked_signal_a_parent_death_signal_and_no_terminal() {
    let fixture = Fixture::new()
        .env("FAKE_HANDLER_SERVE", "1")
        .env("FAKE_HANDLER_DRAIN_EXIT", "0");
    let running = fixture.spawn();
    assert!(running.wait_for_line("fake handler: serving"));
    for role in ["webui", "handler"] {
        let pid = fixture.recorded_pid(&format!("{role}.pid")).expect("pid");
        assert_eq!(
            status_field(pid, "SigBlk").as_deref(),
            Some("0000000000000000"),
            "{role}"
        );
        assert_eq!(
            fixture.record(&format!("{role}.pdeathsig")).as_deref(),
            Some("9"),
            "{role}: SIGKILL when the runtime dies"
        );
        assert_eq!(
            fixture.record(&format!("{role}.stdin")).as_deref(),
            Some("/dev/null"),
            "{role}"
        );
        assert_eq!(pgid(pid), Some(pid), "{role} leads its own process group");
    }
    running.signal(Signal::SIGTERM);
    let (code, lines) = running.wait();
    assert_eq!(code, 0, "{}", lines.join("\n"));
}

#[test]
fn children_die_with_a_killed_runtime() {
    let fixture = Fixture::new().env("FAKE_HANDLER_SERVE", "1");
    let running = fixture.spawn();
    assert!(running.wait_for_line("fake handler: serving"));
    let webui = fixture.recorded_pid("webui.pid").expect("webui");
    let handler = fixture.recorded_pid("handler.pid").expect("handler");
    running.signal(Signal::SIGKILL);
    let (code, _) = running.wait();
    assert_eq!(code, 137);
    assert!(wait_for(|| (!alive(webui) && !alive(handler)).then_some(())).is_some());
}

#[test]
fn children_never_compete_for_the_terminal() {
    let fixture = Fixture::new().env("FAKE_READ_STDIN", "1");
    let (mut master, mut slave) = (0, 0);
    let opened = unsafe {
        nix::libc::openpty(
            &mut master,
            &mut slave,
            std::ptr::null_mut(),
            std::ptr::null(),
            std::ptr::null(),
        )
    };
    assert_eq!(opened, 0, "openpty");
    use std::os::fd::{FromRawFd, OwnedFd};
    let master = unsafe { OwnedFd::from_raw_fd(master) };
    let slave = unsafe { OwnedFd::from_raw_fd(slave) };
    let running = fixture.spawn_with(move |command| {
        use std::os::unix::process::CommandExt;
        command.stdin(slave);
        // The runtime runs in the foreground of a terminal, as `cargo xtask run-local` does.
        unsafe {
            command.pre_exec(|| {
                nix::unistd::setsid()?;
                if nix::libc::ioctl(0, nix::libc::TIOCSCTTY, 0) < 0 {
                    return Err(std::io::Error::last_os_error());
                }
                Ok(())
            });
        }
    });
    let (code, lines) = running.wait();
    drop(master);
    assert_eq!(code, 0, "{}", lines.join("\n"));
    assert_eq!(fixture.record("webui.stdin_read").as_deref(), Some("eof"));
    assert_eq!(fixture.record("handler.stdin_read").as_deref(), Some("eof"));
}

#[test]
fn a_stop_during_a_hung_gpu_check_stops_at_once_and_the_check_is_spawned_like_the_others() {
    let fixture = Fixture::new()
        .env("CUDA_CHECK", "warn")
        .env("CUDA_CHECK_TIMEOUT", "120")
        .env(
            "LD_LIBRARY_PATH",
            &support::fake_libcuda_dir().display().to_string(),
        )
        .env("FAKE_CUDA_INIT_SLEEP", "100");
    let running = fixture.spawn();
    let check = wait_for(|| children_running(running.pid(), "cuda-check").pop())
        .expect("the GPU check runs");
    assert_eq!(
        status_field(check, "SigBlk").as_deref(),
        Some("0000000000000000")
    );
    assert_eq!(pgid(check), Some(check), "own process group");
    assert_eq!(
        std::fs::read_link(format!("/proc/{check}/fd/0")).ok(),
        Some("/dev/null".into())
    );
    running.signal(Signal::SIGTERM);
    let (code, lines) = running.wait();
    assert_eq!(code, 143, "{}", lines.join("\n"));
    assert!(has_line(&lines, "received SIGTERM during the CUDA check"));
    assert!(!alive(check), "the hung check was left running");
    assert_eq!(fixture.record("webui.pid"), None);
}

#[test]
fn a_hung_gpu_check_dies_with_a_killed_runtime() {
    let fixture = Fixture::new()
        .env("CUDA_CHECK", "warn")
        .env(
            "LD_LIBRARY_PATH",
            &support::fake_libcuda_dir().display().to_string(),
        )
        .env("FAKE_CUDA_INIT_SLEEP", "100");
    let running = fixture.spawn();
    let check = wait_for(|| children_running(running.pid(), "cuda-check").pop())
        .expect("the GPU check runs");
    running.signal(Signal::SIGKILL);
    let _ = running.wait();
    assert!(wait_for(|| (!alive(check)).then_some(())).is_some());
}

#[test]
fn the_gpu_check_bound_is_a_setting() {
    let fixture = Fixture::new()
        .env("CUDA_CHECK", "warn")
        .env("CUDA_CHECK_TIMEOUT", "0.5")
        .env(
            "LD_LIBRARY_PATH",
            &support::fake_libcuda_dir().display().to_string(),
        )
        .env("FAKE_CUDA_INIT_SLEEP", "100");
    let (code, lines) = fixture.run();
    assert_eq!(code, 0, "warn mode goes on: {}", lines.join("\n"));
    assert!(has_line(&lines, "did not finish within 0.5 s"));
    assert!(has_line(&lines, "CUDA_CHECK_TIMEOUT"));
}

#[test]
fn strict_gpu_check_failure_exits_84_and_starts_nothing() {
    let fixture = Fixture::new()
        .env("CUDA_CHECK", "strict")
        .env(
            "LD_LIBRARY_PATH",
            &support::fake_libcuda_dir().display().to_string(),
        )
        .env("FAKE_CUDA_INIT_RESULT", "100");
    let (code, lines) = fixture.run();
    assert_eq!(code, 84, "{}", lines.join("\n"));
    assert!(has_line(&lines, "CUDA_CHECK=strict: the CUDA check failed"));
    assert_eq!(fixture.record("webui.pid"), None);
    assert_eq!(fixture.record("handler.pid"), None);
}

#[test]
fn a_process_that_cannot_be_started_exits_85() {
    let fixture = Fixture::new();
    // Executable, so it passes validation; its interpreter does not exist, so exec fails.
    let python = fixture.dir.path().join("broken-python");
    std::fs::write(&python, "#!/nonexistent/interpreter\n").expect("write");
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&python, std::fs::Permissions::from_mode(0o755)).expect("chmod");
    let fixture = fixture.env("WEBUI_PYTHON", &python.display().to_string());
    let (code, lines) = fixture.run();
    assert_eq!(code, 85, "{}", lines.join("\n"));
    assert!(has_line(&lines, "cannot start the WebUI"));
    assert_eq!(fixture.record("handler.pid"), None);
}

#[test]
fn signal_handling_that_cannot_be_set_up_exits_85_and_starts_nothing() {
    let preload = support::no_signalfd_preload().display().to_string();
    let fixture = Fixture::new().env("LD_PRELOAD", &preload);
    let (code, lines) = fixture.run();
    assert_eq!(code, 85, "{}", lines.join("\n"));
    assert!(has_line(&lines, "Worker Initiated"));
    let reason = lines
        .iter()
        .find(|l| l.contains("cannot set up signal handling"))
        .unwrap_or_else(|| panic!("no reason given:\n{}", lines.join("\n")));
    // The cause and where to look, on one line.
    assert!(reason.contains("Too many open files"), "{reason}");
    assert!(reason.contains("ulimit -n"), "{reason}");
    assert_eq!(fixture.record("webui.pid"), None);
    assert_eq!(fixture.record("handler.pid"), None);
}

#[test]
fn commandline_args_are_split_as_a1111_splits_them_and_cannot_rebind_the_webui() {
    for args in [
        "--ckpt-dir=/x\r--server-name\r127.0.0.2",
        "--medvram\n--listen",
        "--ckpt-dir /x --server-nam 0.0.0.0",
        "'--port' 9999",
    ] {
        let fixture = Fixture::new()
            .env("COMMANDLINE_ARGS", args)
            .env("WEBUI_ALLOW_UNKNOWN_FLAGS", "1");
        let (code, lines) = fixture.run();
        assert_eq!(code, 78, "{args:?}: {}", lines.join("\n"));
        assert!(has_line(&lines, "COMMANDLINE_ARGS"), "{}", lines.join("\n"));
        assert_eq!(fixture.record("webui.pid"), None, "{args:?}");
    }
    // Quotes and backslashes as Python's shlex reads them: one value with a space in it.
    let fixture = Fixture::new().env(
        "COMMANDLINE_ARGS",
        r#"--ckpt-dir "/my models\\x" --medvram"#,
    );
    let (code, lines) = fixture.run();
    assert_eq!(code, 0, "{}", lines.join("\n"));
}

#[test]
fn extension_flags_are_accepted_and_typos_still_refused() {
    let preload = r#"
def preload(parser):
    parser.add_argument("--controlnet-dir", type=str, help="Path to directory with ControlNet models", default=None)
    parser.add_argument(
        "--no-half-controlnet",
        action='store_true',
        help="do not switch the ControlNet models to 16-bit floats",
        default=None,
    )
    parser.add_argument("--controlnet-preprocessor-cache-size", type=int, help="Cache size", default=16)
    parser.add_argument("--controlnet-loglevel", default="INFO", choices=["DEBUG", "INFO", "WARNING"], help="level")
"#;
    let with_extension = || {
        let fixture = Fixture::new();
        fixture.webui_file("extensions/sd-webui-controlnet/preload.py", preload);
        fixture.webui_file(
            "extensions-builtin/Lora/preload.py",
            "def preload(parser):\n    parser.add_argument('--lyco-dir-backcompat', type=str, default=None)\n",
        );
        fixture
    };
    let fixture = with_extension()
        .env(
            "WEBUI_EXTRA_ARGS",
            "--controlnet-dir /cn --no-half-controlnet --controlnet-loglevel DEBUG",
        )
        .env(
            "COMMANDLINE_ARGS",
            "--controlnet-preprocessor-cache-size 8 --lyco-dir-backcompat /l",
        );
    let (code, lines) = fixture.run();
    assert_eq!(code, 0, "{}", lines.join("\n"));
    let args = fixture.record("webui.args").expect("args");
    assert!(args.contains("--controlnet-dir\n/cn"), "{args}");

    for (words, fix) in [
        ("--controlnet-dri /cn", "did you mean --controlnet-dir?"),
        ("--controlnet-preprocessor-cache-size big", "integer"),
        ("--controlnet-loglevel LOUD", "one of DEBUG, INFO, WARNING"),
        ("--sd-webui-unknown 1", "WEBUI_ALLOW_UNKNOWN_FLAGS=1"),
    ] {
        let fixture = with_extension().env("WEBUI_EXTRA_ARGS", words);
        let (code, lines) = fixture.run();
        assert_eq!(code, 78, "{words}: {}", lines.join("\n"));
        assert!(has_line(&lines, fix), "{words}: {}", lines.join("\n"));
    }
    // The escape hatch: flags the runtime cannot see (defined in code it cannot read).
    let fixture = with_extension()
        .env("WEBUI_EXTRA_ARGS", "--sd-webui-unknown 1")
        .env("WEBUI_ALLOW_UNKNOWN_FLAGS", "1");
    let (code, lines) = fixture.run();
    assert_eq!(code, 0, "{}", lines.join("\n"));
    assert!(has_line(&lines, "WEBUI_ALLOW_UNKNOWN_FLAGS"));
}

#[test]
fn values_a1111_would_reject_and_flags_the_worker_cannot_serve_are_refused_at_start() {
    for (words, fix) in [
        ("--ckpt-dir -f", "--ckpt-dir needs a value"),
        ("--ckpt-dir --medvram", "--ckpt-dir needs a value"),
        ("--use-cpu", "needs at least one value"),
        ("--api-auth user:secret", "--api-auth"),
        ("--tls-keyfile k.pem --tls-certfile c.pem", "--tls-keyfile"),
        ("--medvram --", "unexpected word"),
    ] {
        let fixture = Fixture::new().env("WEBUI_EXTRA_ARGS", words);
        let (code, lines) = fixture.run();
        assert_eq!(code, 78, "{words}: {}", lines.join("\n"));
        assert!(has_line(&lines, fix), "{words}: {}", lines.join("\n"));
        assert_eq!(fixture.record("webui.pid"), None, "{words}");
    }
    // What argparse takes as a value: a negative number, a word with a space.
    let fixture = Fixture::new().env(
        "WEBUI_EXTRA_ARGS",
        "--ckpt-dir '-my models' --max-batch-count -1",
    );
    let (code, lines) = fixture.run();
    assert_eq!(code, 0, "{}", lines.join("\n"));
}

#[test]
fn a_redirect_is_not_an_answer_from_the_webui() {
    let elsewhere = support::free_port();
    let impostor = Impostor::start(elsewhere);
    let fixture = Fixture::new().env(
        "FAKE_REDIRECT_TO",
        &format!("http://127.0.0.1:{elsewhere}/sdapi/v1/sd-models"),
    );
    let running = fixture.spawn();
    let redirected = || {
        fixture
            .record("webui.redirects")
            .and_then(|n| n.trim().parse::<u32>().ok())
            .is_some_and(|n| n >= 3)
    };
    assert!(wait_for(
        || (redirected() || has_line(&running.lines(), "readiness gate opened")).then_some(())
    )
    .is_some());
    running.signal(Signal::SIGTERM);
    let (code, lines) = running.wait();
    assert_eq!(code, 143, "{}", lines.join("\n"));
    assert!(!has_line(&lines, "readiness gate opened"));
    assert_eq!(impostor.count(), 0, "the probe followed the redirect");
}

#[test]
fn a_server_outside_the_webui_tree_is_not_ready() {
    // The WebUI never binds; another process takes the port after the runtime checked it.
    let fixture = Fixture::new().env("FAKE_MODE", "never");
    let running = fixture.spawn();
    assert!(running.wait_for_line("WebUI API started with PID"));
    let impostor = Impostor::start(fixture.port);
    assert!(wait_for(|| (impostor.count() >= 3
        || has_line(&running.lines(), "readiness gate opened"))
    .then_some(()))
    .is_some());
    running.signal(Signal::SIGTERM);
    let (code, lines) = running.wait();
    assert_eq!(code, 143, "{}", lines.join("\n"));
    assert!(!has_line(&lines, "readiness gate opened"));
}

#[test]
fn an_empty_setting_means_unset() {
    let fixture = Fixture::new()
        .env("SHUTDOWN_GRACE", "")
        .env("DRAIN_TIMEOUT", "")
        .env("CUDA_CHECK_TIMEOUT", "")
        .env("HANDLER_START", "")
        .env("WEBUI_READY_TIMEOUT", "");
    let (code, lines) = fixture.run();
    assert_eq!(code, 0, "{}", lines.join("\n"));
}

#[test]
fn a_rust_log_that_does_not_parse_warns_and_keeps_the_default_filter() {
    for value in ["verbose", "runtime=loud", "info,[{"] {
        let fixture = Fixture::new().env("RUST_LOG", value);
        let (code, lines) = fixture.run();
        assert_eq!(code, 0, "{value}: {}", lines.join("\n"));
        assert!(
            has_line(&lines, "WARN") && has_line(&lines, "RUST_LOG"),
            "{value}: {}",
            lines.join("\n")
        );
        assert!(has_line(&lines, "Worker Initiated"), "{value}");
        assert!(has_line(&lines, "Shutdown complete."), "{value}");
    }
}
