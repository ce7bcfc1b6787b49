//! The launch sequence (ARCHITECTURE.md): validate everything, check the GPU, start the WebUI,
//! start the handler at the readiness gate, open the gate when the API answers, and tear down
//! when the handler ends, the WebUI dies, or a stop signal arrives.

use std::ffi::OsString;
use std::fs::File;
use std::io::Write;
use std::os::fd::{AsRawFd, OwnedFd};
use std::path::{Path, PathBuf};
use std::process::{Command, ExitCode};
use std::time::Instant;

use nix::fcntl::OFlag;
use tracing::{error, info, warn};

use crate::cli::{Config, CudaCheckMode, HandlerStart, WebuiDevice};
use crate::cuda;
use crate::exit_code;
use crate::readiness;
use crate::supervisor::{Event, Role, Supervisor};
use crate::tcmalloc::TcmallocStatus;
use crate::webui_flags::{self, Conditions};

const BANNER: &str = "==============================================";

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
        let extra_args =
            webui_flags::parse_extra_args("WEBUI_EXTRA_ARGS", &config.webui_extra_args)
                .map_err(|e| e.to_string())?;
        // A1111 appends COMMANDLINE_ARGS itself: a bad flag there kills it just the same.
        if let Ok(words) = std::env::var("COMMANDLINE_ARGS") {
            webui_flags::parse_extra_args("COMMANDLINE_ARGS", &words).map_err(|e| e.to_string())?;
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
    let (_, conditions) = gpu_step(config);
    let argv: Vec<String> = plan
        .webui_argv(config, conditions)
        .iter()
        .map(|a| a.to_string_lossy().into_owned())
        .collect();
    println!("{}", shell_words::join(argv));
    ExitCode::SUCCESS
}

/// The GPU check (none for `WEBUI_DEVICE=cpu`) and what it means for the flag set: xformers only
/// when the check confirmed it.
fn gpu_step(config: &Config) -> (Option<cuda::LaunchVerdict>, Conditions) {
    if config.webui_device == WebuiDevice::Cpu {
        info!("WEBUI_DEVICE=cpu: no GPU check; A1111 computes on the CPU (--use-cpu all --no-half --precision full)");
        return (
            None,
            Conditions {
                xformers_confirmed: false,
            },
        );
    }
    let verdict = cuda::launch_step(config.cuda_check);
    let conditions = Conditions {
        xformers_confirmed: verdict.is_some_and(|v| v.xformers_usable),
    };
    (verdict, conditions)
}

/// The whole worker lifecycle; returns the runtime's exit status.
pub fn run(config: &Config, tcmalloc: TcmallocStatus) -> ExitCode {
    info!("Worker Initiated");
    let mut supervisor = match Supervisor::new() {
        Ok(supervisor) => supervisor,
        Err(e) => {
            error!("cannot set up signal handling: {e}");
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
    let code = Lifecycle {
        config,
        plan,
        supervisor: &mut supervisor,
    }
    .run(tcmalloc);
    info!("worker-runtime exits with status {code}");
    ExitCode::from(code)
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
}

impl Lifecycle<'_> {
    fn run(&mut self, tcmalloc: TcmallocStatus) -> u8 {
        let (verdict, conditions) = gpu_step(self.config);
        if let Some(verdict) = verdict {
            if verdict.code >= 2 && self.config.cuda_check == CudaCheckMode::Strict {
                error!(
                    "CUDA_CHECK=strict: the CUDA check failed (verdict {}); not starting the WebUI",
                    verdict.code
                );
                return exit_code::CUDA_CHECK_FAILED;
            }
        }
        // A stop signal during the check: nothing is running yet.
        if let Event::Stop(signal) = self.supervisor.next(Some(Instant::now())) {
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
        match self.supervisor.spawn(Role::Webui, &mut webui, None) {
            Ok(pid) => info!("WebUI API started with PID: {pid}"),
            Err(e) => {
                error!(
                    "cannot start the WebUI ({}): {e}",
                    self.plan.webui_python.display()
                );
                return exit_code::SPAWN_FAILED;
            }
        }

        // Dropping the probe when supervision ends stops its thread.
        let _probe = match self.start_probe(started) {
            Ok(probe) => probe,
            Err(e) => {
                error!("cannot start the readiness probe: {e}");
                return self.shutdown(exit_code::SPAWN_FAILED);
            }
        };
        self.supervise(started)
    }

    fn start_probe(&mut self, started: Instant) -> std::io::Result<readiness::Probe> {
        let (read, write) = nix::unistd::pipe2(OFlag::O_CLOEXEC)?;
        self.supervisor.watch_ready(read);
        readiness::spawn(self.plan.api_url.clone(), write, started)
    }

    fn supervise(&mut self, started: Instant) -> u8 {
        let mut gate = match self.config.handler_start {
            HandlerStart::Gate => match self.start_handler(true) {
                Ok(gate) => gate,
                Err(code) => return self.shutdown(code),
            },
            HandlerStart::AfterReady => None,
        };
        let ready_deadline = started + self.config.webui_ready_timeout;
        let url = format!("{}{}", self.plan.api_url, readiness::READY_PATH);

        // Starting: the WebUI boots; the handler (if started) waits at the gate.
        match self.supervisor.next(Some(ready_deadline)) {
            Event::Ready => {}
            Event::Deadline => {
                error!(
                    "the WebUI API did not answer 200 at {url} within {:.0} s (WEBUI_READY_TIMEOUT); \
                     stopping",
                    self.config.webui_ready_timeout.as_secs_f64()
                );
                return self.fail_before_ready(gate, exit_code::READY_TIMEOUT, true);
            }
            Event::Exited(Role::Webui, status) => {
                error!(
                    "the WebUI exited before its API was ready ({status}, after {:.1} s); see its \
                     output above",
                    started.elapsed().as_secs_f64()
                );
                return self.fail_before_ready(gate, exit_code::WEBUI_EXITED_BEFORE_READY, true);
            }
            Event::Exited(Role::Handler, status) => {
                warn!("the RunPod handler exited before the WebUI API was ready ({status})");
                info!("RunPod handler exited, stopping WebUI API...");
                return self.shutdown(status.as_exit_code());
            }
            Event::Stop(signal) => {
                info!("received {signal} before the WebUI API was ready: stopping");
                return self.fail_before_ready(gate, exit_code::from_signal(signal as i32), false);
            }
        }
        info!(
            "WebUI API ready in {:.2} s ({url} answered 200)",
            started.elapsed().as_secs_f64()
        );
        match gate.take() {
            Some(gate) => open_gate(gate),
            None => {
                if let Err(code) = self.start_handler(false) {
                    return self.shutdown(code);
                }
            }
        }

        // Serving: the handler runs jobs until it exits or is told to stop.
        loop {
            match self.supervisor.next(None) {
                Event::Exited(Role::Handler, status) => {
                    info!("RunPod handler exited ({status})");
                    info!("RunPod handler exited, stopping WebUI API...");
                    return self.shutdown(status.as_exit_code());
                }
                Event::Exited(Role::Webui, status) => {
                    error!("the WebUI API died while the handler was serving ({status}); stopping the handler");
                    self.supervisor
                        .stop(Role::Handler, self.config.shutdown_grace);
                    return self.shutdown(exit_code::WEBUI_DIED);
                }
                Event::Stop(signal) => {
                    info!("received {signal}: passing it to the handler, which finishes its job first");
                    self.supervisor.signal_group(Role::Handler, signal);
                    self.supervisor.wait_forced(Role::Handler);
                    let status = self.supervisor.exit_status(Role::Handler);
                    info!(
                        "RunPod handler exited ({})",
                        status.map_or_else(|| "status unknown".into(), |s| s.to_string())
                    );
                    info!("RunPod handler exited, stopping WebUI API...");
                    let code =
                        status.map_or(exit_code::from_signal(signal as i32), |s| s.as_exit_code());
                    return self.shutdown(code);
                }
                Event::Ready | Event::Deadline => {}
            }
        }
    }

    /// Starts the handler; with `gated`, returns the gate's write end.
    fn start_handler(&mut self, gated: bool) -> Result<Option<File>, u8> {
        info!("{BANNER}");
        info!("STARTING RUNPOD HANDLER");
        info!("{BANNER}");
        let mut command = self.plan.handler_command();
        let mut gate_pipe: Option<(OwnedFd, OwnedFd)> = None;
        if gated {
            let (read, write) = nix::unistd::pipe2(OFlag::O_CLOEXEC).map_err(|e| {
                error!("cannot create the readiness gate: {e}");
                exit_code::SPAWN_FAILED
            })?;
            command.env(READY_FD_ENV, read.as_raw_fd().to_string());
            gate_pipe = Some((read, write));
        }
        let inherit = gate_pipe.as_ref().map(|(read, _)| read.as_raw_fd());
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
        // The read end now lives in the handler only, so closing the write end means EOF there.
        Ok(gate_pipe.map(|(_, write)| File::from(write)))
    }

    /// Closing the gate unwritten tells a waiting handler to exit; it gets the grace period to
    /// do so on its own (it may still be importing), then SIGTERM. A stop signal skips the wait:
    /// the user asked to stop now.
    fn fail_before_ready(&mut self, gate: Option<File>, code: u8, wait_for_exit: bool) -> u8 {
        let gated = gate.is_some();
        drop(gate);
        if gated && wait_for_exit {
            let deadline = Instant::now() + self.config.shutdown_grace;
            self.supervisor.wait_until(Role::Handler, deadline);
        }
        self.supervisor
            .stop(Role::Handler, self.config.shutdown_grace);
        self.shutdown(code)
    }

    fn shutdown(&mut self, code: u8) -> u8 {
        self.supervisor.teardown(self.config.shutdown_grace);
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
fn open_gate(mut gate: File) {
    match gate.write_all(b"ready\n") {
        Ok(()) => info!("readiness gate opened: the handler starts serving"),
        // The handler is gone; its exit is the next event.
        Err(e) => warn!("could not open the readiness gate ({e})"),
    }
}
