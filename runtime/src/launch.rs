// tidy: long because the launch sequence is one state machine, read top to bottom in its order.
//! The launch sequence (ARCHITECTURE.md): validate everything, check the GPU, start the WebUI,
//! start the handler at the readiness gate, open the gate when the API answers, and tear down
//! when the handler ends, the WebUI dies, or a stop signal arrives.

use std::ffi::OsString;
use std::os::fd::{AsRawFd, OwnedFd};
use std::path::{Path, PathBuf};
use std::process::{Command, ExitCode, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use nix::fcntl::OFlag;
use tracing::{error, info, warn};

use crate::cli::{Config, CudaCheckMode, HandlerStart, WebuiDevice};
use crate::cuda;
use crate::exit_code;
use crate::gate::{self, Gate};
use crate::health::Health;
use crate::interrupt;
use crate::logging;
use crate::readiness::{self, Outcome, ReadyMode};
use crate::signals;
use crate::startup_report;
use crate::supervisor::{Event, Role, Supervisor, Waited};
use crate::tcmalloc::TcmallocStatus;
use crate::webui_flags::{self, Conditions};
use crate::webui_log::{self, Sink, WebuiLog};

const BANNER: &str = "==============================================";

/// How long the exit waits for the WebUI's last output to be written (a stalled log reader
/// must not hold the exit).
const RELAY_DRAIN_LIMIT: Duration = Duration::from_secs(1);

/// Names the inherited pipe of the readiness gate in the handler's environment.
pub const READY_FD_ENV: &str = "WORKER_READY_FD";
/// The WebUI's base URL in the handler's environment.
pub const API_URL_ENV: &str = "WEBUI_API_URL";

/// Everything resolved and checked before any process starts.
#[derive(Debug)]
pub struct Plan {
    webui_python: PathBuf,
    webui_dir: PathBuf,
    webui_script: PathBuf,
    extra_args: Vec<String>,
    handler_python: PathBuf,
    handler_path: PathBuf,
    handler_args: Vec<String>,
    api_url: String,
}

impl Plan {
    /// One line per problem, saying which setting to fix and how.
    pub fn from_config(config: &Config) -> Result<Plan, String> {
        // The WebUI runs with its checkout as working directory: a relative path would then
        // point somewhere else.
        let webui_dir =
            std::path::absolute(&config.webui_dir).unwrap_or_else(|_| config.webui_dir.clone());
        let webui_script = webui_dir.join("webui.py");
        if !webui_script.is_file() {
            return Err(format!(
                "WEBUI_DIR={}: no webui.py there; point WEBUI_DIR at an A1111 checkout \
                 (or docker/demo-webui)",
                config.webui_dir.display()
            ));
        }
        if !config.handler_path.is_file() {
            return Err(format!(
                "HANDLER_PATH={}: no such file; point HANDLER_PATH at the RunPod handler script",
                config.handler_path.display()
            ));
        }
        let flags = webui_flags::FlagCheck::for_webui(&webui_dir, config.unknown_flags_allowed());
        let extra_args = flags
            .check("WEBUI_EXTRA_ARGS", &config.webui_extra_args)
            .map_err(|e| e.to_string())?;
        // A1111 appends COMMANDLINE_ARGS itself (after the runtime's flags, so a --server-name
        // there would win): a bad flag there kills it just the same.
        if let Some(words) = std::env::var_os("COMMANDLINE_ARGS") {
            flags
                .check("COMMANDLINE_ARGS", &words.to_string_lossy())
                .map_err(|e| e.to_string())?;
        }
        let handler_args = shell_words::split(&config.handler_args).map_err(|e| {
            format!(
                "HANDLER_ARGS: cannot split {:?} into words ({e}); check the quotes",
                config.handler_args
            )
        })?;
        Ok(Plan {
            webui_python: find_python("WEBUI_PYTHON", config.webui_python.as_deref())?,
            webui_dir,
            webui_script,
            extra_args,
            handler_python: find_python("HANDLER_PYTHON", config.handler_python.as_deref())?,
            handler_path: config.handler_path.clone(),
            handler_args,
            api_url: format!("http://127.0.0.1:{}", config.webui_port),
        })
    }

    /// The WebUI's argv, program first.
    pub fn webui_argv(&self, config: &Config, conditions: Conditions) -> Vec<OsString> {
        let mut argv = vec![
            self.webui_python.clone().into_os_string(),
            self.webui_script.clone().into_os_string(),
        ];
        argv.extend(
            webui_flags::base_args(config, conditions)
                .into_iter()
                .map(OsString::from),
        );
        argv.extend(self.extra_args.iter().map(OsString::from));
        argv
    }

    fn handler_command(&self) -> Command {
        let mut command = Command::new(&self.handler_python);
        command
            .arg("-u")
            .arg(&self.handler_path)
            .args(&self.handler_args)
            .env(API_URL_ENV, &self.api_url)
            .env("PYTHONUNBUFFERED", "true")
            .env_remove(READY_FD_ENV);
        command
    }
}

/// Environment prefixes of what only the handler needs: RunPod's API key and job URLs, the
/// bucket credentials. The WebUI runs third-party extensions and must not be able to read them.
const HANDLER_ONLY_ENV_PREFIXES: [&str; 2] = ["RUNPOD_", "BUCKET_"];

fn remove_worker_secrets(command: &mut Command) {
    for (name, _) in std::env::vars_os() {
        let text = name.to_string_lossy();
        if HANDLER_ONLY_ENV_PREFIXES
            .iter()
            .any(|p| text.starts_with(p))
        {
            command.env_remove(&name);
        }
    }
}

/// `python`, else `python3`, unless the setting names one.
fn find_python(setting: &str, chosen: Option<&str>) -> Result<PathBuf, String> {
    match chosen.filter(|c| !c.is_empty()) {
        Some(chosen) => which::which(chosen).map_err(|_| {
            format!("{setting}={chosen}: not an executable on PATH; set {setting} to a Python interpreter")
        }),
        None => which::which("python").or_else(|_| which::which("python3")).map_err(|_| {
            format!("neither python nor python3 is on PATH; set {setting} to a Python interpreter")
        }),
    }
}

/// Another server on the port would answer the readiness probe in the WebUI's place.
fn port_is_free(config: &Config) -> Result<(), String> {
    let port = config.webui_port;
    std::net::TcpListener::bind(("127.0.0.1", port)).map(drop).map_err(|e| {
        format!(
            "WEBUI_PORT={port}: 127.0.0.1:{port} is not free ({e}); stop what uses it or choose another port"
        )
    })
}

/// `worker-runtime webui-args`.
pub fn print_webui_command(config: &Config) -> ExitCode {
    let plan = match Plan::from_config(config) {
        Ok(plan) => plan,
        Err(message) => {
            error!("{message}");
            return ExitCode::from(exit_code::BAD_CONFIG);
        }
    };
    let verdict = if runs_gpu_check(config) {
        cuda::launch_step(config.cuda_check, config.cuda_check_timeout)
    } else {
        None
    };
    let conditions = conditions(verdict.as_ref());
    let argv: Vec<String> = plan
        .webui_argv(config, conditions)
        .iter()
        .map(|a| a.to_string_lossy().into_owned())
        .collect();
    logging::print_stdout(&shell_words::join(argv));
    ExitCode::SUCCESS
}

/// `WEBUI_DEVICE=cpu` has no GPU to check.
fn runs_gpu_check(config: &Config) -> bool {
    if config.webui_device == WebuiDevice::Cpu {
        info!("WEBUI_DEVICE=cpu: no GPU check; A1111 computes on the CPU (--use-cpu all --no-half --precision full)");
        return false;
    }
    true
}

/// What the GPU check means for the flag set: xformers only when the check confirmed it.
fn conditions(verdict: Option<&cuda::LaunchVerdict>) -> Conditions {
    Conditions {
        xformers_confirmed: verdict.is_some_and(|v| v.xformers_usable),
    }
}

/// The whole worker lifecycle; returns the runtime's exit status.
pub fn run(config: &Config, tcmalloc: TcmallocStatus) -> ExitCode {
    info!("Worker Initiated");
    let mut supervisor = match Supervisor::new() {
        Ok(supervisor) => supervisor,
        Err(e) => {
            error!(
                "cannot set up signal handling (signalfd, child subreaper): {e}; check the \
                 container's open-files limit (ulimit -n) and that its seccomp profile allows \
                 signalfd4 and prctl"
            );
            return ExitCode::from(exit_code::SPAWN_FAILED);
        }
    };
    let plan = match Plan::from_config(config).and_then(|plan| port_is_free(config).map(|()| plan))
    {
        Ok(plan) => plan,
        Err(message) => {
            error!("{message}");
            return ExitCode::from(exit_code::BAD_CONFIG);
        }
    };
    if let (Some(size), false) = (
        config.webui_warmup_size,
        config.webui_ready == ReadyMode::Warmup,
    ) {
        warn!(
            "WEBUI_WARMUP_SIZE={size} has no effect: WEBUI_READY={} makes no warm-up image",
            config.webui_ready.name()
        );
    }
    let health = match start_health(config) {
        Ok(health) => health,
        Err(message) => {
            error!("{message}");
            return ExitCode::from(exit_code::BAD_CONFIG);
        }
    };
    let code = Lifecycle {
        config,
        plan,
        supervisor: &mut supervisor,
        health,
        log: Arc::new(WebuiLog::default()),
        timeline: Timeline::default(),
    }
    .run(tcmalloc);
    info!("worker-runtime exits with status {code}");
    ExitCode::from(code)
}

/// The health endpoint, when PORT_HEALTH asks for one.
fn start_health(config: &Config) -> Result<Option<Health>, String> {
    let Some(port) = config.port_health else {
        return Ok(None);
    };
    if port == config.webui_port {
        return Err(format!(
            "PORT_HEALTH={port} is also WEBUI_PORT: the health endpoint needs a port of its own"
        ));
    }
    let health = Health::serve(port).map_err(|e| {
        format!("PORT_HEALTH={port}: cannot listen on 0.0.0.0:{port} ({e}); choose a free port")
    })?;
    info!("health endpoint: GET /ping on 0.0.0.0:{port} (204 starting, 200 ready, 503 stopping)");
    Ok(Some(health))
}

/// Moments the start-up report needs, as the launch sequence passes them.
#[derive(Default)]
struct Timeline {
    gpu_check: Option<Duration>,
    webui_spawned: Option<Instant>,
    handler_spawned: Option<Instant>,
    /// The gate's watcher, which may still hold the start-up report at exit.
    gate_watch: Option<gate::Watch>,
}

/// torch >= 2.6 loads with weights_only by default, and with --disable-safe-unpickle A1111 calls
/// plain torch.load: older .ckpt files (numpy scalars, training callbacks in their metadata) would
/// no longer load. The flag already means "trust the checkpoints", so the WebUI gets torch's own
/// switch back to full unpickling, unless the user set it (0 keeps weights_only).
const TORCH_NO_WEIGHTS_ONLY: &str = "TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD";

fn torch_weights_only_env() -> Option<(&'static str, &'static str)> {
    std::env::var_os(TORCH_NO_WEIGHTS_ONLY)
        .is_none_or(|v| v.is_empty())
        .then_some((TORCH_NO_WEIGHTS_ONLY, "1"))
}

struct Lifecycle<'a> {
    config: &'a Config,
    plan: Plan,
    supervisor: &'a mut Supervisor,
    health: Option<Health>,
    log: Arc<WebuiLog>,
    timeline: Timeline,
}

impl Lifecycle<'_> {
    fn run(&mut self, tcmalloc: TcmallocStatus) -> u8 {
        let check_started = Instant::now();
        let verdict = if runs_gpu_check(self.config) {
            match cuda::launch_step_supervised(
                self.config.cuda_check,
                self.config.cuda_check_timeout,
                self.supervisor,
            ) {
                Ok(verdict) => verdict,
                // Nothing else runs yet.
                Err(signal) => return exit_code::from_signal(signal as i32),
            }
        } else {
            None
        };
        if verdict.is_some() {
            self.timeline.gpu_check = Some(check_started.elapsed());
        }
        let conditions = conditions(verdict.as_ref());
        if let Some(verdict) = verdict {
            if verdict.code >= 2 && self.config.cuda_check == CudaCheckMode::Strict {
                error!(
                    "CUDA_CHECK=strict: the CUDA check failed (verdict {}); not starting the WebUI",
                    verdict.code
                );
                return exit_code::CUDA_CHECK_FAILED;
            }
        }
        // A stop signal right after the check: nothing is running yet.
        if let Event::Stop(signal) | Event::Again(signal) =
            self.supervisor.next(Some(Instant::now()))
        {
            info!("received {signal} before the WebUI started");
            return exit_code::from_signal(signal as i32);
        }

        tcmalloc.log();
        info!("{BANNER}");
        info!("STARTING WEBUI API");
        info!("{BANNER}");
        self.log_model_locations();
        if !conditions.xformers_confirmed && self.config.webui_device == WebuiDevice::Gpu {
            info!("xformers not confirmed by the GPU check: --xformers dropped, --opt-sdp-attention kept");
        }
        warn!("--disable-safe-unpickle is in effect: load only checkpoints you trust");
        let weights_only_env = torch_weights_only_env();
        if weights_only_env.is_some() {
            warn!(
                "{TORCH_NO_WEIGHTS_ONLY}=1 for the WebUI: .ckpt files load with full unpickling, \
                 as before torch 2.6 (set {TORCH_NO_WEIGHTS_ONLY}=0 to keep torch's weights_only)"
            );
        }

        let started = Instant::now();
        let webui_argv = self.plan.webui_argv(self.config, conditions);
        let mut webui = Command::new(&webui_argv[0]);
        webui
            .args(&webui_argv[1..])
            .current_dir(&self.plan.webui_dir)
            .env("PYTHONUNBUFFERED", "true")
            .envs(weights_only_env);
        remove_worker_secrets(&mut webui);
        let relay = match self.relay_output(&mut webui) {
            Ok(relay) => relay,
            Err(e) => {
                error!("cannot set up the WebUI's output relay: {e}");
                return exit_code::SPAWN_FAILED;
            }
        };
        let spawned = self.supervisor.spawn(Role::Webui, &mut webui, None);
        // The command holds the pipes' write ends: only the WebUI may keep them open.
        drop(webui);
        let webui_pid = match spawned {
            Ok(pid) => {
                info!("WebUI API started with PID: {pid}");
                pid
            }
            Err(e) => {
                error!(
                    "cannot start the WebUI ({}): {e}",
                    self.plan.webui_python.display()
                );
                return exit_code::SPAWN_FAILED;
            }
        };
        self.timeline.webui_spawned = Some(started);
        if let Err(e) = webui_log::relay(relay.into(), Arc::clone(&self.log)) {
            warn!("cannot relay the WebUI's output ({e}); its output is lost");
        }

        // Dropping the probe when supervision ends stops its thread.
        let probe = match self.start_probe(started, webui_pid) {
            Ok(probe) => probe,
            Err(e) => {
                error!("cannot start the readiness probe: {e}");
                return self.shutdown(exit_code::SPAWN_FAILED);
            }
        };
        self.supervise(started, &probe)
    }

    /// Pipes for the WebUI's stdout and stderr; returns their read ends for the relay.
    fn relay_output(&self, webui: &mut Command) -> std::io::Result<[(OwnedFd, Sink); 2]> {
        let (out_read, out_write) = nix::unistd::pipe2(OFlag::O_CLOEXEC)?;
        let (err_read, err_write) = nix::unistd::pipe2(OFlag::O_CLOEXEC)?;
        webui
            .stdout(Stdio::from(out_write))
            .stderr(Stdio::from(err_write));
        Ok([(out_read, Sink::Stdout), (err_read, Sink::Stderr)])
    }

    fn start_probe(
        &mut self,
        started: Instant,
        webui: nix::unistd::Pid,
    ) -> std::io::Result<readiness::Probe> {
        let (read, write) = nix::unistd::pipe2(OFlag::O_CLOEXEC)?;
        self.supervisor.watch_ready(read);
        let target = readiness::Target {
            base_url: self.plan.api_url.clone(),
            mode: self.config.webui_ready,
            started,
            deadline: started + self.config.webui_ready_timeout,
            log: Arc::clone(&self.log),
            owner: readiness::Owner {
                port: self.config.webui_port,
                pid: webui,
            },
            warmup_size: self.config.warmup_size(),
        };
        readiness::spawn(target, write)
    }

    fn supervise(&mut self, started: Instant, probe: &readiness::Probe) -> u8 {
        let gate = match self.config.handler_start {
            HandlerStart::Gate => match self.start_handler(true) {
                Ok(gate) => gate,
                Err(code) => return self.shutdown(code),
            },
            HandlerStart::AfterReady => None,
        };
        let gate = match self.wait_for_ready(started, probe, gate) {
            Ok(gate) => gate,
            Err(code) => return code,
        };
        let ready = Instant::now();
        info!(
            "WebUI API ready in {:.2} s (WEBUI_READY={})",
            started.elapsed().as_secs_f64(),
            self.config.webui_ready.name()
        );
        if let Some(health) = &self.health {
            health.ready();
        }
        self.report(probe, ready, gate.as_ref());
        match gate {
            Some(gate) => open_gate(gate),
            None => {
                if let Err(code) = self.start_handler(false) {
                    return self.shutdown(code);
                }
            }
        }

        self.serve()
    }

    /// Starting: the WebUI boots, the handler (if started) waits at the gate. The gate back once
    /// the worker is ready; else everything is torn down and the exit status comes back.
    fn wait_for_ready(
        &mut self,
        started: Instant,
        probe: &readiness::Probe,
        gate: Option<Gate>,
    ) -> Result<Option<Gate>, u8> {
        let ready_deadline = started + self.config.webui_ready_timeout;
        let url = format!("{}{}", self.plan.api_url, readiness::READY_PATH);

        loop {
            match self.supervisor.next(Some(ready_deadline)) {
                Event::Ready => match probe.outcome() {
                    Outcome::Ready | Outcome::Pending => return Ok(gate),
                    Outcome::ModelFailed(reason) => {
                        error!("the WebUI could not load its checkpoint: {reason}; stopping before any job (WEBUI_READY={})", self.config.webui_ready.name());
                        return Err(self.fail_before_ready(
                            gate,
                            exit_code::MODEL_LOAD_FAILED,
                            true,
                        ));
                    }
                    Outcome::WarmupFailed(reason) => {
                        error!("the warm-up generation failed: {reason}; stopping before any job (WEBUI_READY=warmup)");
                        return Err(self.fail_before_ready(gate, exit_code::WARMUP_FAILED, true));
                    }
                },
                Event::Deadline => {
                    let waiting_for = match (self.config.webui_ready, probe.milestones()) {
                        (_, m) if m.api.is_none() => {
                            format!("the WebUI API did not answer 200 at {url}")
                        }
                        (ReadyMode::Warmup, m) if m.model.is_some() => {
                            "the warm-up generation did not finish".to_string()
                        }
                        _ => "the WebUI did not finish loading its checkpoint".to_string(),
                    };
                    error!(
                        "{waiting_for} within {:.0} s (WEBUI_READY_TIMEOUT); stopping",
                        self.config.webui_ready_timeout.as_secs_f64()
                    );
                    return Err(self.fail_before_ready(gate, exit_code::READY_TIMEOUT, true));
                }
                Event::Exited(Role::Webui, status) => {
                    // Its last lines first: the message below points at them.
                    self.log.wait_drained(RELAY_DRAIN_LIMIT);
                    error!(
                    "the WebUI exited before its API was ready ({status}, after {:.1} s); see its \
                     output above",
                    started.elapsed().as_secs_f64()
                );
                    return Err(self.fail_before_ready(
                        gate,
                        exit_code::WEBUI_EXITED_BEFORE_READY,
                        true,
                    ));
                }
                Event::Exited(Role::Handler, status) => {
                    warn!("the RunPod handler exited before the WebUI API was ready ({status})");
                    info!("RunPod handler exited, stopping WebUI API...");
                    return Err(self.shutdown(status.as_exit_code()));
                }
                Event::Stop(signal) | Event::Again(signal) => {
                    info!("received {signal} before the WebUI API was ready: stopping");
                    probe.stop();
                    let m = probe.milestones();
                    if self.config.webui_ready == ReadyMode::Warmup && m.model.is_some() {
                        // The warm-up may be generating: A1111's server finishes a generation
                        // before it exits, and the warm-up image is worth no wait.
                        self.interrupt_webui();
                    }
                    return Err(self.fail_before_ready(
                        gate,
                        exit_code::from_signal(signal as i32),
                        false,
                    ));
                }
                Event::Exited(Role::GpuCheck, _) => {}
            }
        }
    }

    /// Serving: the handler runs jobs until it exits or is told to stop.
    fn serve(&mut self) -> u8 {
        loop {
            match self.supervisor.next(None) {
                Event::Exited(Role::Handler, status) => {
                    info!("RunPod handler exited ({status})");
                    info!("RunPod handler exited, stopping WebUI API...");
                    return self.shutdown(status.as_exit_code());
                }
                Event::Exited(Role::Webui, status) => {
                    self.health_stopping();
                    error!("the WebUI API died while the handler was serving ({status}); stopping the handler");
                    return self.shutdown(exit_code::WEBUI_DIED);
                }
                Event::Stop(signal) | Event::Again(signal) => {
                    self.health_stopping();
                    return self.drain(signal);
                }
                Event::Exited(Role::GpuCheck, _) | Event::Ready | Event::Deadline => {}
            }
        }
    }

    /// The stop while serving (README: the stop's timeline). The handler gets the stop signal
    /// and finishes its job in flight while the WebUI keeps serving it, for up to DRAIN_TIMEOUT.
    /// Then the WebUI is asked to interrupt the job, so its partial result reaches the handler;
    /// once the handler exits (at DRAIN_TIMEOUT + SHUTDOWN_GRACE/2 at the latest) everything else
    /// gets SIGTERM; whatever is left at DRAIN_TIMEOUT + SHUTDOWN_GRACE gets SIGKILL. A
    /// deliberate second signal kills everything at once.
    fn drain(&mut self, signal: nix::sys::signal::Signal) -> u8 {
        let stopped = Instant::now();
        let forwarded = signals::forwarded(signal);
        let drain = self.config.drain_timeout;
        let grace = self.config.shutdown_grace;
        info!(
            "received {signal}: passing {forwarded} to the handler, which finishes its job in \
             flight within {:.1} s (DRAIN_TIMEOUT); a second signal from {:.0} s on kills at once",
            drain.as_secs_f64(),
            signals::BURST.as_secs_f64()
        );
        self.supervisor.signal_group(Role::Handler, forwarded);
        let drain_deadline = stopped + drain;
        let kill_deadline = drain_deadline + grace;
        if self.wait_for_handler(drain_deadline) {
            self.log_handler_exit();
            info!("RunPod handler exited, stopping WebUI API...");
            // A handler that died of the signal (runpod's local test mode does) leaves its
            // generation running in the WebUI, which would finish it before exiting. Idle, the
            // interrupt changes nothing.
            info!("asking the WebUI to interrupt any job the handler left running");
            self.interrupt_webui();
            let code = self.handler_code(signal);
            return self.shutdown(code);
        }
        if !self.supervisor.forced() {
            warn!(
                "the handler's job is still running {:.1} s after {signal} (DRAIN_TIMEOUT): \
                 asking the WebUI to interrupt it, so the handler returns its partial result; \
                 SIGKILL to whatever is left in {:.1} s (SHUTDOWN_GRACE)",
                drain.as_secs_f64(),
                grace.as_secs_f64()
            );
            self.interrupt_webui();
            // The partial result comes back at the job's next step. The WebUI keeps serving
            // while the handler returns it (a handler may still call the API), for up to half
            // the grace, which leaves the other half to the WebUI's own SIGTERM.
            if self.wait_for_handler(drain_deadline + grace / 2) {
                self.log_handler_exit();
                info!("RunPod handler exited, stopping WebUI API...");
                self.supervisor.terminate(kill_deadline, grace, None);
                self.finish_logs();
                info!("Shutdown complete.");
                return self.handler_code(signal);
            }
        }
        // The handler was told to stop already: it keeps its time to post the result.
        self.supervisor
            .terminate(kill_deadline, grace, Some(Role::Handler));
        self.log_handler_exit();
        self.finish_logs();
        info!("Shutdown complete.");
        self.handler_code(signal)
    }

    /// Waits for the handler to exit until `until`; whether it did. A deliberate second stop
    /// signal meanwhile forces (everything is killed at once next).
    fn wait_for_handler(&mut self, until: Instant) -> bool {
        loop {
            match self.supervisor.wait_exit(Role::Handler, until) {
                Waited::Exited => return true,
                Waited::Deadline => return false,
                Waited::Again(again) => {
                    warn!("received {again} again: killing at once");
                    self.supervisor.force();
                    return false;
                }
                // The first stop signal is the one being handled.
                Waited::Stop(_) => {}
            }
        }
    }

    fn interrupt_webui(&self) {
        if !self.supervisor.is_running(Role::Webui) {
            return;
        }
        match interrupt::send(&self.plan.api_url) {
            Ok(200) => info!("the WebUI accepted the interrupt"),
            Ok(status) => warn!("the WebUI answered the interrupt with HTTP {status}"),
            Err(e) => warn!("could not ask the WebUI to interrupt the job: {e}"),
        }
    }

    fn log_handler_exit(&self) {
        let status = self.supervisor.exit_status(Role::Handler);
        info!(
            "RunPod handler exited ({})",
            status.map_or_else(|| "status unknown".into(), |s| s.to_string())
        );
    }

    /// The handler's status, or 128+n for the stop signal when it has none.
    fn handler_code(&self, signal: nix::sys::signal::Signal) -> u8 {
        self.supervisor
            .exit_status(Role::Handler)
            .map_or(exit_code::from_signal(signal as i32), |s| s.as_exit_code())
    }

    /// Starts the handler; with `gated`, returns the runtime's end of the gate.
    fn start_handler(&mut self, gated: bool) -> Result<Option<Gate>, u8> {
        info!("{BANNER}");
        info!("STARTING RUNPOD HANDLER");
        info!("{BANNER}");
        let mut command = self.plan.handler_command();
        let mut gate_pipe: Option<(OwnedFd, Gate)> = None;
        if gated {
            let (gate, theirs) = gate::pair().map_err(|e| {
                error!("cannot create the readiness gate: {e}");
                exit_code::SPAWN_FAILED
            })?;
            command.env(READY_FD_ENV, theirs.as_raw_fd().to_string());
            self.timeline.gate_watch = Some(gate.watch());
            gate_pipe = Some((theirs, gate));
        }
        let inherit = gate_pipe.as_ref().map(|(theirs, _)| theirs.as_raw_fd());
        self.timeline.handler_spawned = Some(Instant::now());
        match self.supervisor.spawn(Role::Handler, &mut command, inherit) {
            Ok(pid) if gated => {
                info!("RunPod handler started with PID: {pid}, waiting at the readiness gate")
            }
            Ok(pid) => info!("RunPod handler started with PID: {pid}"),
            Err(e) => {
                error!(
                    "cannot start the handler ({}): {e}",
                    self.plan.handler_python.display()
                );
                return Err(exit_code::SPAWN_FAILED);
            }
        }
        // The handler's end now lives in the handler only, so closing ours means EOF there.
        Ok(gate_pipe.map(|(_, gate)| gate))
    }

    /// The start-up report line, once ready, or once the handler reaches the gate if it is
    /// still importing then (its imports are then what the worker waits for).
    fn report(&self, probe: &readiness::Probe, ready: Instant, gate: Option<&Gate>) {
        let t = &self.timeline;
        let mut report = startup_report::Report {
            mode: self.config.webui_ready,
            gpu_check: t.gpu_check,
            webui_spawned: t.webui_spawned.unwrap_or(ready),
            milestones: probe.milestones(),
            handler_spawned: t.handler_spawned,
            handler_at_gate: None,
            ready,
            webui: self.log.facts(),
        };
        match gate {
            Some(gate) => gate.when_arrived(move |at| {
                report.handler_at_gate = at;
                report.log();
            }),
            None => report.log(),
        }
    }

    /// The WebUI's last lines may still be on their way through the relay, and the start-up
    /// report may still wait for the handler's word from the gate.
    fn finish_logs(&self) {
        self.log.wait_drained(RELAY_DRAIN_LIMIT);
        if let Some(watch) = &self.timeline.gate_watch {
            watch.finish(RELAY_DRAIN_LIMIT);
        }
    }

    fn health_stopping(&self) {
        if let Some(health) = &self.health {
            health.stopping();
        }
    }

    /// Closing the gate unwritten tells a waiting handler to exit; on a failure it gets the
    /// whole grace to do so on its own (it may still be importing, and a SIGTERM would only
    /// cut its own report short), SIGKILL at the deadline. A stop signal does not wait: the
    /// user asked to stop now. Either way one deadline, SHUTDOWN_GRACE from now, ends
    /// everything.
    fn fail_before_ready(&mut self, gate: Option<Gate>, code: u8, wait_for_exit: bool) -> u8 {
        self.health_stopping();
        let gated = gate.is_some();
        drop(gate);
        let now = Instant::now();
        let grace = self.config.shutdown_grace;
        let spare = (gated && wait_for_exit).then_some(Role::Handler);
        self.supervisor.terminate(now + grace, grace, spare);
        info!("Shutdown complete.");
        code
    }

    /// Everything still running gets SIGTERM now and SIGKILL at SHUTDOWN_GRACE from now.
    fn shutdown(&mut self, code: u8) -> u8 {
        self.health_stopping();
        let grace = self.config.shutdown_grace;
        self.supervisor
            .terminate(Instant::now() + grace, grace, None);
        self.finish_logs();
        info!("Shutdown complete.");
        code
    }

    fn log_model_locations(&self) {
        let c = self.config;
        let locations: [(&str, &Path); 4] = [
            ("baked checkpoint (MODEL_PATH)", &c.model_path),
            ("checkpoints (CKPT_DIR)", &c.ckpt_dir),
            ("LoRAs (LORA_DIR)", &c.lora_dir),
            ("embeddings (EMBEDDINGS_DIR)", &c.embeddings_dir),
        ];
        for (what, path) in locations {
            if path.exists() {
                info!("model location {what}: {} (present)", path.display());
            } else {
                warn!("model location {what}: {} (missing)", path.display());
            }
        }
        if !c.model_path.exists() && !c.ckpt_dir.is_dir() {
            warn!(
                "no checkpoint: neither {} nor {} exists (is the network volume attached?); \
                 image requests will fail",
                c.model_path.display(),
                c.ckpt_dir.display()
            );
        }
    }
}

/// The handler reads this line right before it starts serving.
fn open_gate(gate: Gate) {
    // Said first: once `ready` is written, the handler's own lines race this one.
    info!("readiness gate opened: the handler starts serving");
    if let Err(e) = gate.open() {
        // The handler is gone; its exit is the next event.
        warn!("could not open the readiness gate ({e})");
    }
}
