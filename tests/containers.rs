// tidy: long because each container test is a scenario a reader follows whole; helpers are in containers/.
//! The worker image, tested as a container: worker-runtime as PID 1 under `docker run`,
//! `docker stop` and `docker kill`, with the demo WebUI and the real handler on the real runpod SDK.
//!
//! Needs a Docker engine (`bash .ci/ensure-docker.sh` installs and starts one, and debootstrap); a cold
//! run also needs Debian's mirror and PyPI. SKIP_CONTAINER_TESTS=1 skips the tests that need the
//! engine; a missing engine fails them. The full CUDA image cannot be built here (no CUDA base image,
//! PyTorch index or GitHub): it is checked through `cargo xtask image --dry-run` and the engine's
//! Dockerfile parser.

#[path = "containers/docker.rs"]
mod docker;
#[path = "containers/images.rs"]
mod images;
#[path = "containers/webui_image.rs"]
mod webui_image;

use std::time::{Duration, Instant};

use docker::{docker, docker_ok, image_id, image_size, report, Container};
use images::{build_worker, cargo, images, remove_image, root, run, target_dir};

/// What `docker stop` waits before SIGKILL; "well inside" it is under half.
const DOCKER_STOP_GRACE_S: u64 = 10;
const WORKER_LAYER_LIMIT: u64 = 15_000_000;
/// Serve runpod's local HTTP API, so the handler stays up like on RunPod; on loopback.
const SERVE_ARGS: &str = "--rp_serve_api --rp_api_host 127.0.0.1 --rp_api_port 8000";
const HANDLER_SERVING: &str = "Uvicorn running on http://127.0.0.1:8000";

/// The lines users grep container logs for, in the order the runtime logs them.
const LIFECYCLE: [&str; 6] = [
    "Worker Initiated",
    "STARTING WEBUI API",
    "WebUI API started with PID: ",
    "STARTING RUNPOD HANDLER",
    "RunPod handler exited, stopping WebUI API...",
    "Shutdown complete.",
];

#[test]
fn docker_run_runs_the_test_job_and_exits_0() {
    let Some(images) = images() else { return };
    // No settings: what `docker run IMAGE` does. runpod's local mode finds /test_input.json; the
    // handler also writes the job's result to HANDLER_RESULT_DIR, so its images can be checked.
    let c = Container::start(&images.worker, &[("HANDLER_RESULT_DIR", "/tmp/results")]);
    let code = c.wait_exit(Duration::from_secs(90));
    let logs = c.logs();
    assert_eq!(code, 0, "exit code; logs:\n{logs}");
    assert_in_order(&logs, &LIFECYCLE);
    let pid_line = line_with(&logs, "WebUI API started with PID: ");
    assert!(
        pid_line
            .rsplit(' ')
            .next()
            .is_some_and(|pid| pid.trim().parse::<u32>().is_ok()),
        "no PID in {pid_line:?}"
    );
    // CUDA_CHECK=warn (the default): no GPU here, so the check says so and the worker carries on.
    assert!(
        logs.contains("no NVIDIA driver"),
        "the CUDA check should say there is no driver; logs:\n{logs}"
    );
    assert!(
        logs.contains("Job local_test completed successfully"),
        "logs:\n{logs}"
    );

    let result = test_job_result(&c);
    let job: serde_json::Value = serde_json::from_slice(
        &std::fs::read(root().join("docker/test_input.json")).expect("docker/test_input.json"),
    )
    .expect("test_input.json is JSON");
    let images = result["images"].as_array().expect("images in the result");
    assert_eq!(images.len(), 1, "one image for batch_size 1: {result}");
    let (width, height) = png_size(images[0].as_str().unwrap_or_default());
    assert_eq!(
        (Some(width), Some(height)),
        (
            job["input"]["width"].as_u64(),
            job["input"]["height"].as_u64()
        ),
        "the PNG has the size the job asked for"
    );
}

#[test]
fn docker_stop_tears_down_well_inside_the_grace_period() {
    let Some(images) = images() else { return };
    let c = Container::start(&images.worker, &[("HANDLER_ARGS", SERVE_ARGS)]);
    c.wait_for_log(HANDLER_SERVING, Duration::from_secs(60));

    let started = Instant::now();
    docker_ok(&["stop", "-t", &DOCKER_STOP_GRACE_S.to_string(), &c.name]);
    let took = started.elapsed();
    let code = c.wait_exit(Duration::from_secs(5));
    let logs = c.logs();
    report(&format!(
        "docker stop of a serving worker took {:.2} s (exit {code})",
        took.as_secs_f64()
    ));

    assert!(
        took < Duration::from_secs(DOCKER_STOP_GRACE_S / 2),
        "docker stop took {took:?}; logs:\n{logs}"
    );
    assert_ne!(code, 137, "docker had to SIGKILL the worker; logs:\n{logs}");
    assert_eq!(
        code,
        handler_status(&logs),
        "the container exits with the handler's status; logs:\n{logs}"
    );
    assert_in_order(
        &logs,
        &[
            HANDLER_SERVING,
            "RunPod handler exited, stopping WebUI API...",
            "Shutdown complete.",
        ],
    );
}

#[test]
fn sigterm_during_webui_start_up_exits_143_at_once() {
    let Some(images) = images() else { return };
    // The demo WebUI waits this long before binding its port, like A1111 importing torch.
    let c = Container::start(&images.worker, &[("DEMO_WEBUI_STARTUP_DELAY", "120")]);
    c.wait_for_log("WebUI API started with PID: ", Duration::from_secs(60));

    docker_ok(&["kill", "--signal", "TERM", &c.name]);
    let code = c.wait_exit(Duration::from_secs(DOCKER_STOP_GRACE_S));
    let logs = c.logs();
    // 143, not docker's SIGKILL (137), and no ready line: stopped while the WebUI still started.
    assert_eq!(code, 143, "128 + SIGTERM; logs:\n{logs}");
    assert!(
        !logs.contains("WebUI API ready"),
        "the WebUI was meant to be still starting; logs:\n{logs}"
    );
    assert!(logs.contains("Shutdown complete."), "logs:\n{logs}");
}

#[test]
fn pid_1_is_the_runtime_and_reaps_orphans() {
    let Some(images) = images() else { return };
    // tests/fixtures/containers/orphan-webui: leaves 3 orphans that exit after 1 s, then runs the
    // demo WebUI.
    let c = Container::start(
        &images.worker,
        &[
            ("WEBUI_DIR", "/opt/orphan-webui"),
            ("HANDLER_ARGS", SERVE_ARGS),
        ],
    );
    let logs = c.wait_for_log(HANDLER_SERVING, Duration::from_secs(60));
    let orphans: Vec<u32> = line_with(&logs, "orphan-webui: left ")
        .rsplit(": ")
        .next()
        .unwrap_or_default()
        .split_whitespace()
        .filter_map(|pid| pid.parse().ok())
        .collect();
    assert_eq!(
        orphans.len(),
        3,
        "the fixture reports its orphans; logs:\n{logs}"
    );

    // Exec form, no shell or init wrapper: PID 1 is worker-runtime itself.
    assert_eq!(c.exec(&["cat", "/proc/1/comm"]), "worker-runtime");

    // The orphans exit 1 s after they start; then they must be reaped, not left as zombies. Read
    // from the container's /proc: `docker top` lists the cgroup's processes, and zombies are not
    // among them (seen with a python PID 1 that does not reap: /proc showed 3 Z, docker top none).
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let procs = processes(&c);
        let zombies: Vec<&(u32, char, String)> =
            procs.iter().filter(|(_, state, _)| *state == 'Z').collect();
        let left: Vec<&(u32, char, String)> = procs
            .iter()
            .filter(|(pid, _, _)| orphans.contains(pid))
            .collect();
        if zombies.is_empty() && left.is_empty() {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "zombies {zombies:?}, orphans still there {left:?}; processes: {procs:?}"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    docker_ok(&["stop", &c.name]);
    let code = c.wait_exit(Duration::from_secs(5));
    assert_eq!(code, handler_status(&c.logs()), "logs:\n{}", c.logs());
}

#[test]
fn webui_port_listens_on_loopback_only() {
    let Some(images) = images() else { return };
    let c = Container::start(&images.worker, &[("HANDLER_ARGS", SERVE_ARGS)]);
    let logs = c.wait_for_log("WebUI API ready", Duration::from_secs(60));
    let port = 3000u16;
    assert!(logs.contains(&format!("127.0.0.1:{port}")), "logs:\n{logs}");

    // The container's own view of its listening sockets; on RunPod the container has real
    // interfaces, and only a loopback bind keeps the unauthenticated API off them.
    let tables = c.exec(&[
        "sh",
        "-c",
        "cat /proc/net/tcp; cat /proc/net/tcp6 2>/dev/null || true",
    ]);
    let listeners: Vec<&str> = tables
        .lines()
        .filter_map(|line| {
            let fields: Vec<&str> = line.split_whitespace().collect();
            let local = *fields.get(1)?;
            let (address, hex_port) = local.rsplit_once(':')?;
            let listening = fields.get(3) == Some(&"0A");
            (listening && u16::from_str_radix(hex_port, 16).ok()? == port).then_some(address)
        })
        .collect();
    assert!(
        !listeners.is_empty(),
        "nothing listens on {port}:\n{tables}"
    );
    const LOOPBACK_V4: &str = "0100007F";
    const LOOPBACK_V6: &str = "00000000000000000000000001000000";
    assert!(
        listeners
            .iter()
            .all(|a| *a == LOOPBACK_V4 || *a == LOOPBACK_V6),
        "port {port} listens beyond loopback: {listeners:?}\n{tables}"
    );
}

#[test]
fn worker_layer_is_small_and_rebuilds_in_seconds() {
    let Some(images) = images() else { return };
    let layer = image_size(&images.worker).saturating_sub(image_size(&images.standin));
    report(&format!(
        "worker layer: {:.2} MB (goal: under {} MB)",
        layer as f64 / 1e6,
        WORKER_LAYER_LIMIT / 1_000_000
    ));
    assert!(layer < WORKER_LAYER_LIMIT, "worker layer is {layer} bytes");

    let config = docker_ok(&[
        "image",
        "inspect",
        "--format",
        "{{json .Config.Entrypoint}} {{json .Config.Cmd}}",
        &images.worker,
    ]);
    assert_eq!(
        config, r#"null ["worker-runtime"]"#,
        "exec form, no wrapper"
    );

    // A runtime change, as docker sees it: a worker-runtime whose bytes differ (trailing bytes do
    // not change what an ELF binary does). What is timed is xtask staging and docker rebuilding
    // the worker layer; cargo's own incremental build of the change comes on top.
    let dir = tempfile::tempdir().expect("temp dir");
    let changed = dir.path().join("worker-runtime");
    let mut bytes = std::fs::read(target_dir().join("release/worker-runtime"))
        .expect("<target>/release/worker-runtime (built by cargo xtask image)");
    bytes.extend_from_slice(format!("\0rebuild {:?}", Instant::now()).as_bytes());
    std::fs::write(&changed, bytes).expect("write the changed binary");
    let tag = "sd-worker-test:rebuild";
    let took = build_worker(&images.standin, tag, Some(&changed)).unwrap_or_else(|e| panic!("{e}"));
    let rebuilt_id = image_id(tag);
    let rebuilt_layer = image_size(tag).saturating_sub(image_size(&images.standin));
    remove_image(tag);
    report(&format!(
        "worker layer rebuild after a runtime change: {:.1} s (xtask + docker build; cargo's build not included)",
        took.as_secs_f64()
    ));
    assert_ne!(
        rebuilt_id,
        image_id(&images.worker),
        "the layer was rebuilt, not taken from cache"
    );
    assert!(rebuilt_layer < WORKER_LAYER_LIMIT);
    assert!(took < Duration::from_secs(120), "rebuild took {took:?}");
}

/// The full CUDA image, as far as it can be checked here: the commands `cargo xtask image` would
/// run, the pins it would pass, and how the two Dockerfiles are wired. Needs no engine.
#[test]
fn full_image_dry_run_wires_the_stages_and_pins() {
    let out = run(
        cargo().args(["xtask", "image", "--dry-run", "--tag", "sd-worker:check"]),
        "cargo xtask image --dry-run",
    )
    .unwrap_or_else(|e| panic!("{e}"));
    let pins = versions();
    let webui_dockerfile = read("docker/Dockerfile.webui");
    let worker_dockerfile = read("docker/Dockerfile.worker");

    let builds: Vec<&str> = out
        .lines()
        .filter(|l| l.starts_with("docker build "))
        .collect();
    assert_eq!(
        builds.len(),
        2,
        "the WebUI image, then the worker layer:\n{out}"
    );
    let (webui_build, worker_build) = (builds[0], builds[1]);
    assert!(
        out.lines()
            .any(|l| l.ends_with("build --release -p runtime")),
        "{out}"
    );
    for build in &builds {
        assert!(build.contains(" --network host "), "{build}");
    }
    for (key, value) in &pins {
        assert!(
            key == "BASE_IMAGE" || webui_build.contains(&format!(" --build-arg {key}={value} ")),
            "{key} is not passed to the WebUI build: {webui_build}"
        );
        assert!(
            has_arg(&webui_dockerfile, key),
            "Dockerfile.webui does not declare {key}"
        );
        assert!(
            webui_dockerfile.contains(&format!("sd-worker.pin.{key}=\"${{{key}}}\"")),
            "Dockerfile.webui does not record {key} as a label"
        );
    }
    assert!(
        webui_build.contains(" --tag sd-worker-webui:check "),
        "{webui_build}"
    );
    assert!(
        worker_build.contains(" --build-arg WEBUI_IMAGE=sd-worker-webui:check "),
        "the worker layer is built FROM the WebUI image just built: {worker_build}"
    );
    assert!(
        worker_build.contains(" --tag sd-worker:check "),
        "{worker_build}"
    );
    assert!(out.contains(&webui_dockerfile) && out.contains(&worker_dockerfile));
    assert!(
        !out.contains("(missing!)"),
        "a file of the build context is missing:\n{out}"
    );
    // Every module of the handler's package goes into the image beside handler.py.
    let package = root().join("docker/sdhandler");
    for entry in std::fs::read_dir(&package).expect("docker/sdhandler") {
        let name = entry
            .expect("entry")
            .file_name()
            .to_string_lossy()
            .into_owned();
        if name.ends_with(".py") {
            let staged = format!(
                "install -m 644 docker/sdhandler/{name} $WORKER_CONTEXT/rootfs/sdhandler/{name}"
            );
            assert!(out.contains(&staged), "{name} is not staged:\n{out}");
        }
    }

    // Stages: each FROM takes its base from the build argument xtask passes.
    assert_eq!(froms(&webui_dockerfile), vec!["${BASE_IMAGE}"]);
    assert_eq!(froms(&worker_dockerfile), vec!["${WEBUI_IMAGE}"]);
    assert!(worker_dockerfile.contains("CMD [\"worker-runtime\"]"));
    assert!(worker_dockerfile.contains("ENTRYPOINT []"));
    assert!(
        webui_dockerfile.contains("libgoogle-perftools4"),
        "Debian/Ubuntu's tcmalloc"
    );
    assert!(webui_dockerfile.contains("STABLE_DIFFUSION_REPO=${STABLE_DIFFUSION_REPO}"));
    assert!(
        webui_dockerfile.contains("HF_HUB_OFFLINE=1"),
        "offline cold start"
    );
    assert!(
        webui_dockerfile.contains("python -m compileall"),
        "bytecode at build time"
    );
    assert!(
        !webui_dockerfile.contains("git clone") && webui_dockerfile.contains("--no-index"),
        "nothing fetched inside the build but the served wheelhouse"
    );

    // Pins agree with each other: one CUDA flavour (12.8) everywhere, torch >= 2.7 (sm_120), the
    // torchvision that belongs to that torch, and the xformers built against it.
    let pin = |key: &str| {
        pins.iter()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v.as_str())
            .unwrap_or_else(|| panic!("docker/versions.env has no {key}"))
    };
    let torch = pin("TORCH_VERSION");
    let torchvision = pin("TORCHVISION_VERSION");
    // PyPI's own builds (no local version: no other index), the same as the real-WebUI lock.
    let lock = read("xtask/a1111/requirements.lock");
    for (package, key) in [
        ("torch", "TORCH_VERSION"),
        ("torchvision", "TORCHVISION_VERSION"),
        ("xformers", "XFORMERS_VERSION"),
    ] {
        assert!(
            lock.lines()
                .any(|l| l == format!("{package}=={}", pin(key))),
            "{key}={} is not the lock's {package}",
            pin(key)
        );
    }
    assert!(!pins.iter().any(|(k, _)| k == "TORCH_INDEX_URL"));
    assert!(
        webui_build.contains(" --build-arg BASE_IMAGE=sd-worker-base:bookworm"),
        "the debootstrap base is built locally and passed by its tag: {webui_build}"
    );
    assert!(webui_build.contains(" --build-arg WHEELHOUSE_URL=http://127.0.0.1:"));
    let (torch_major, torch_minor, torch_patch) = version3(torch);
    assert!(
        (torch_major, torch_minor) >= (2, 7),
        "RTX 5090 needs torch >= 2.7"
    );
    let (_, vision_minor, vision_patch) = version3(torchvision);
    assert_eq!(
        (vision_minor, vision_patch),
        (torch_minor + 15, torch_patch),
        "torchvision 0.(N+15).P pairs with torch 2.N.P"
    );
    // Read from PyPI's metadata (Requires-Dist: torch==...) of each xformers release.
    const XFORMERS_TORCH: [(&str, &str); 3] = [
        ("0.0.30", "2.7.0"),
        ("0.0.31.post1", "2.7.1"),
        ("0.0.32.post2", "2.8.0"),
    ];
    let xformers = pin("XFORMERS_VERSION");
    let needs = XFORMERS_TORCH
        .iter()
        .find(|(x, _)| *x == xformers)
        .map(|(_, t)| *t)
        .unwrap_or_else(|| panic!("add xformers {xformers}'s torch requirement to this table"));
    assert_eq!(
        torch.split('+').next(),
        Some(needs),
        "xformers {xformers} needs torch {needs}"
    );
    let commit = pin("A1111_COMMIT");
    assert!(commit.len() == 40 && commit.chars().all(|c| c.is_ascii_hexdigit()));
    assert!(
        !pin("STABLE_DIFFUSION_REPO").contains("Stability-AI"),
        "the original repository is gone"
    );
}

/// The engine's own Dockerfile parser reads all of Dockerfile.webui: built FROM scratch, it must
/// get past every instruction's syntax and fail only at the first RUN (no shell in scratch).
#[test]
fn full_image_dockerfile_parses_in_the_engine() {
    if images::skipped() {
        return;
    }
    images::require_engine().unwrap_or_else(|e| panic!("{e}"));
    let context = tempfile::tempdir().expect("temp dir");
    std::fs::write(
        context.path().join("Dockerfile"),
        read("docker/Dockerfile.webui"),
    )
    .expect("stage the Dockerfile");
    std::fs::write(
        context.path().join("requirements.txt"),
        read("docker/requirements.txt"),
    )
    .expect("stage requirements.txt");
    let mut args: Vec<String> = vec!["build".into(), "--network".into(), "none".into()];
    for (key, value) in versions() {
        let value = if key == "BASE_IMAGE" {
            "scratch".to_string()
        } else {
            value
        };
        args.push("--build-arg".into());
        args.push(format!("{key}={value}"));
    }
    args.push(context.path().display().to_string());
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let out = docker(&args);
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(!text.contains("parse error"), "{text}");
    assert!(
        text.contains("/bin/bash") && text.contains("no such file or directory"),
        "expected to fail only at the first RUN, for want of a shell:\n{text}"
    );
}

#[test]
fn xtask_image_without_an_engine_says_how_to_get_one() {
    let started = Instant::now();
    let out = cargo()
        .args(["xtask", "image", "--tag", "sd-worker:no-engine"])
        .env("DOCKER_HOST", "unix:///nonexistent/docker.sock")
        .output()
        .expect("cargo runs");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    let line = line_with(&stderr, "no Docker engine");
    assert!(line.contains(".ci/ensure-docker.sh"), "{stderr}");
    assert!(
        !stderr.contains("Compiling runtime"),
        "it checks for the engine before building anything: {stderr}"
    );
    assert!(started.elapsed() < Duration::from_secs(120));
}

/// `--webui-image` on an A1111 image that installed runpod into its system Python and has no venv
/// module (as common A1111 worker images do): the worker uses that Python. With runpod nowhere and
/// no venv module, the build says what to install.
#[test]
fn webui_image_with_runpod_in_its_system_python_is_used_as_it_is() {
    let Some(images) = images() else { return };
    let system = "sd-worker-test-sysrunpod:latest";
    images::derive(
        &images.standin,
        system,
        "RUN cp -a /opt/handler-venv/lib/python3.11/site-packages/. /usr/local/lib/python3.11/dist-packages/ \
         && rm -rf /opt/handler-venv /usr/lib/python3.11/ensurepip\nENV HANDLER_PYTHON=",
    )
    .unwrap_or_else(|e| panic!("{e}"));
    let tag = "sd-worker-test:sysrunpod";
    let out = run(
        cargo().args(["xtask", "image", "--webui-image", system, "--tag", tag]),
        "cargo xtask image --webui-image (runpod in the system Python)",
    )
    .unwrap_or_else(|e| panic!("{e}"));
    assert!(
        out.contains("handler environment: /usr/bin/python3, runpod 1.12.0"),
        "{out}"
    );
    let c = Container::start(tag, &[]);
    let code = c.wait_exit(Duration::from_secs(90));
    let logs = c.logs();
    assert_eq!(code, 0, "logs:\n{logs}");
    assert!(
        logs.contains("Job local_test completed successfully"),
        "logs:\n{logs}"
    );
    drop(c);
    remove_image(tag);

    let bare = "sd-worker-test-norunpod:latest";
    images::derive(
        system,
        bare,
        "RUN rm -rf /usr/local/lib/python3.11/dist-packages/runpod",
    )
    .unwrap_or_else(|e| panic!("{e}"));
    let err = run(
        cargo().args([
            "xtask",
            "image",
            "--webui-image",
            bare,
            "--tag",
            "sd-worker-test:norunpod",
        ]),
        "cargo xtask image --webui-image (no runpod, no venv module)",
    )
    .expect_err("no Python has runpod and none can be made");
    assert!(
        err.contains("cannot create the handler environment")
            && err
                .contains("Install runpod (docker/requirements.txt) into the WebUI image's Python")
            && err.contains("python3-venv"),
        "{err}"
    );
    remove_image(bare);
    remove_image(system);
}

/// The full WebUI image with no network at all: the baked checkpoint, the baked Hugging Face files
/// and the wheels' CUDA-less CPU path serve the test job, and the start compiles no Python: every
/// module the WebUI and the handler import has its bytecode in the image.
#[test]
fn full_image_serves_the_test_job_offline_and_compiles_nothing() {
    let Some(image) = webui_image::full_image() else {
        return;
    };
    let c = Container::start(
        image,
        &[
            ("WEBUI_DEVICE", "cpu"),
            ("HANDLER_RESULT_DIR", "/tmp/results"),
        ],
    );
    let code = c.wait_exit(Duration::from_secs(600));
    let logs = c.logs();
    assert_eq!(code, 0, "exit code; logs:\n{logs}");
    assert_in_order(&logs, &LIFECYCLE);
    assert!(
        logs.contains("Job local_test completed successfully"),
        "logs:\n{logs}"
    );
    assert!(
        !logs.contains("Can't load tokenizer"),
        "the Hugging Face files are baked in; logs:\n{logs}"
    );

    let result = test_job_result(&c);
    let images = result["images"].as_array().expect("images in the result");
    assert_eq!(images.len(), 1, "{result}");
    assert_eq!(png_size(images[0].as_str().unwrap_or_default()), (64, 64));

    // What the run wrote into the container's filesystem: no bytecode. The one exception is
    // torch's own: torch.distributed writes a module it generates at import time into a fresh
    // temporary directory and imports it (its source does not exist before the run).
    let diff = docker_ok(&["diff", &c.name]);
    let compiled: Vec<&str> = diff
        .lines()
        .filter(|l| l.contains(".pyc") && !l.starts_with("A /tmp/"))
        .collect();
    assert!(
        compiled.is_empty(),
        "the start compiled Python ({} files), e.g.:\n{}",
        compiled.len(),
        compiled[..compiled.len().min(20)].join("\n")
    );
}

/// `docker stop` while a generation runs: the user sees the container end by itself inside
/// docker stop's grace period (not SIGKILLed: 137), with the teardown complete.
#[test]
fn full_image_docker_stop_during_a_job_ends_inside_the_grace_period() {
    let Some(image) = webui_image::full_image() else {
        return;
    };
    // A job long enough to be running when the signal comes (tens of seconds on a CPU).
    let job = r#"{"input": {"prompt": "a lighthouse", "seed": 1, "steps": 150, "width": 256, "height": 256, "sampler_name": "Euler a"}}"#;
    let handler_args = format!("--test_input '{job}'");
    let c = Container::start(
        image,
        &[("WEBUI_DEVICE", "cpu"), ("HANDLER_ARGS", &handler_args)],
    );
    // A1111's progress bar: the generation is under way.
    c.wait_for_log("/150 [", Duration::from_secs(300));

    let started = Instant::now();
    docker_ok(&["stop", "-t", &DOCKER_STOP_GRACE_S.to_string(), &c.name]);
    let took = started.elapsed();
    let code = c.wait_exit(Duration::from_secs(5));
    let logs = c.logs();
    report(&format!(
        "docker stop during a job on the full image took {:.2} s (exit {code})",
        took.as_secs_f64()
    ));
    assert_ne!(code, 137, "docker had to SIGKILL the worker; logs:\n{logs}");
    assert!(
        took < Duration::from_secs(DOCKER_STOP_GRACE_S),
        "docker stop took {took:?}; logs:\n{logs}"
    );
    assert!(logs.contains("Shutdown complete."), "logs:\n{logs}");
}

/// torch >= 2.6 loads with weights_only by default, and A1111's `--disable-safe-unpickle` then
/// calls plain torch.load: a .ckpt that holds a numpy scalar (as many older checkpoints do, in
/// their training metadata) would fail. The runtime sets TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD=1 for the
/// WebUI, so it loads; a user who sets it to 0 keeps torch's safe default, and the load fails.
#[test]
fn full_image_loads_a_ckpt_holding_a_numpy_scalar() {
    let Some(image) = webui_image::full_image() else {
        return;
    };
    // The baked test checkpoint, saved again as a .ckpt with a numpy scalar beside its weights.
    let script = "set -e; /opt/webui-venv/bin/python -c \"\
import numpy, torch, safetensors.torch as st; \
sd = st.load_file('/model.safetensors'); \
torch.save({'state_dict': sd, 'global_step': numpy.int64(1000)}, '/tmp/numpy.ckpt')\"; \
cp /model.yaml /tmp/numpy.yaml; exec worker-runtime";
    let run = |force: Option<&str>| {
        let mut env = vec![("WEBUI_DEVICE", "cpu"), ("MODEL_PATH", "/tmp/numpy.ckpt")];
        if let Some(value) = force {
            env.push(("TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD", value));
        }
        let c = Container::start_with(image, &env, &["sh", "-c", script]);
        let code = c.wait_exit(Duration::from_secs(600));
        (code, c.logs())
    };

    let (code, logs) = run(None);
    assert_eq!(code, 0, "logs:\n{logs}");
    assert!(
        logs.contains("Job local_test completed successfully"),
        "logs:\n{logs}"
    );
    assert!(!logs.contains("Unsupported global"), "logs:\n{logs}");

    let (_, logs) = run(Some("0"));
    assert!(
        logs.contains("Unsupported global") && logs.contains("numpy"),
        "with weights_only kept, torch refuses the numpy scalar; logs:\n{logs}"
    );
}

// --- helpers ---

/// The result the handler wrote for the image's test job (HANDLER_RESULT_DIR=/tmp/results).
fn test_job_result(c: &Container) -> serde_json::Value {
    let dir = tempfile::tempdir().expect("temp dir");
    let result_path = dir.path().join("result.json");
    docker_ok(&[
        "cp",
        &format!("{}:/tmp/results/local_test.json", c.name),
        &result_path.display().to_string(),
    ]);
    serde_json::from_slice(&std::fs::read(&result_path).expect("result file")).expect("JSON")
}

fn read(path: &str) -> String {
    std::fs::read_to_string(root().join(path)).unwrap_or_else(|e| panic!("{path}: {e}"))
}

/// docker/versions.env's KEY=VALUE lines.
fn versions() -> Vec<(String, String)> {
    read("docker/versions.env")
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
        .filter_map(|l| l.split_once('='))
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

fn has_arg(dockerfile: &str, key: &str) -> bool {
    dockerfile.lines().any(|l| {
        let mut words = l.split_whitespace();
        words.next() == Some("ARG") && words.any(|w| w.split('=').next() == Some(key))
    })
}

fn froms(dockerfile: &str) -> Vec<&str> {
    dockerfile
        .lines()
        .filter_map(|l| l.strip_prefix("FROM "))
        .map(str::trim)
        .collect()
}

fn version3(version: &str) -> (u32, u32, u32) {
    let numbers: Vec<u32> = version
        .split('+')
        .next()
        .unwrap_or_default()
        .split('.')
        .map(|n| {
            n.parse()
                .unwrap_or_else(|_| panic!("odd version {version}"))
        })
        .collect();
    match numbers[..] {
        [a, b, c] => (a, b, c),
        _ => panic!("odd version {version}"),
    }
}

fn line_with<'a>(text: &'a str, needle: &str) -> &'a str {
    text.lines()
        .find(|l| l.contains(needle))
        .unwrap_or_else(|| panic!("no line with {needle:?} in:\n{text}"))
}

fn assert_in_order(logs: &str, needles: &[&str]) {
    let mut from = 0;
    for needle in needles {
        match logs[from..].find(needle) {
            Some(at) => from += at + needle.len(),
            None => panic!("{needle:?} missing, or out of order (after {from}); logs:\n{logs}"),
        }
    }
}

/// The status the runtime logged for the handler: its exit status, or 128 + the signal.
fn handler_status(logs: &str) -> i32 {
    let line = line_with(logs, "RunPod handler exited (");
    if let Some(rest) = line.split("exit status ").nth(1) {
        return rest
            .trim_end_matches(')')
            .trim()
            .parse()
            .unwrap_or_else(|_| panic!("odd status in {line:?}"));
    }
    const SIGNALS: [(&str, i32); 3] = [("SIGTERM", 15), ("SIGINT", 2), ("SIGKILL", 9)];
    SIGNALS
        .iter()
        .find(|(name, _)| line.contains(&format!("killed by {name}")))
        .map(|(_, n)| 128 + n)
        .unwrap_or_else(|| panic!("no status in {line:?}"))
}

/// (pid, state, comm) of every process in the container, from its /proc.
fn processes(c: &Container) -> Vec<(u32, char, String)> {
    c.exec(&["sh", "-c", "cat /proc/[0-9]*/stat 2>/dev/null || true"])
        .lines()
        .filter_map(|line| {
            let (pid, rest) = line.split_once(' ')?;
            let close = rest.rfind(')')?;
            let comm = rest.get(1..close)?.to_string();
            let state = rest.get(close + 2..)?.chars().next()?;
            Some((pid.parse().ok()?, state, comm))
        })
        .collect()
}

/// A PNG's width and height, from the first bytes of its base64 text.
fn png_size(text: &str) -> (u64, u64) {
    let (width, height) = runtime::png::size_of_base64(text)
        .unwrap_or_else(|| panic!("not a base64 PNG: {:?}", text.get(..40).unwrap_or(text)));
    (u64::from(width), u64::from(height))
}
