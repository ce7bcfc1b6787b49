//! End-to-end tests of `worker-runtime`'s launch sequence: the real binary, real Python processes,
//! real signals. Each test asserts what a user sees: exit status, log lines, and which processes
//! remain afterwards.

mod support;

use nix::sys::signal::Signal;
use support::{alive, has_line, position, zombies_of, Fixture};

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
fn webui_gets_the_seed_flag_set_with_port_and_loopback_and_checked_extra_flags() {
    let fixture = Fixture::new().env("WEBUI_EXTRA_ARGS", "--medvram --precision 'full'");
    let (code, lines) = fixture.run();
    assert_eq!(code, 0, "{}", lines.join("\n"));
    let args = fixture.record("webui.args").expect("webui args recorded");
    let args: Vec<&str> = args.lines().collect();
    for flag in [
        "--xformers",
        "--api",
        "--nowebui",
        "--no-half-vae",
        "--opt-sdp-attention",
    ] {
        assert!(args.contains(&flag), "{flag} missing from {args:?}");
    }
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
            &format!("received {signal}: passing it to the handler") as &str,
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
    assert!(running.wait_for_line("passing it to the handler"));
    running.signal(Signal::SIGTERM);
    let (code, lines) = running.wait();
    assert_eq!(code, 137, "{}", lines.join("\n"));
    assert!(has_line(&lines, "killing the handler at once"));
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
