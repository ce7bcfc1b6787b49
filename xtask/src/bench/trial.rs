//! One run of one launcher: start it, timestamp every line its processes print as it is read from
//! their pipes, note the exact exit moments of the WebUI, the handler and the launcher, sample the
//! launcher's memory, and stop it if it would run for ever.

use std::io::{BufRead, BufReader, Read};
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{self, Receiver, RecvTimeoutError, Sender};
use std::sync::Arc;
use std::thread;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};

use super::procfs;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Launcher {
    /// The reference start.sh (xtask/bench/start.sh) with the handler-side wait loop.
    Reference,
    /// target/release/worker-runtime.
    Runtime,
}

impl Launcher {
    pub fn name(self) -> &'static str {
        match self {
            Launcher::Reference => "start.sh",
            Launcher::Runtime => "worker-runtime",
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Scenario {
    /// The WebUI starts, obeys SIGTERM; the handler runs one job and exits.
    Normal,
    /// As Normal, but the WebUI ignores SIGTERM.
    IgnoresSigterm,
    /// The WebUI exits with an error at the end of its start-up delay, before binding its port.
    CrashAtStart,
    /// As Normal, with NO_TCMALLOC=1 (worker-runtime only): how much of worker-runtime's own
    /// memory is the tcmalloc it preloads into itself when it re-execs.
    NoTcmalloc,
    /// worker-runtime only, with its default readiness (WEBUI_READY=warmup) and the demo's model
    /// loading in the background after the API is up, as A1111 does: every phase of the start-up
    /// report.
    Warmup,
}

impl Scenario {
    pub fn name(self) -> &'static str {
        match self {
            Scenario::Normal => "normal",
            Scenario::IgnoresSigterm => "WebUI ignores SIGTERM",
            Scenario::CrashAtStart => "WebUI crashes at start",
            Scenario::NoTcmalloc => "NO_TCMALLOC=1",
            Scenario::Warmup => "WEBUI_READY=warmup",
        }
    }
}

/// What stays the same across runs.
pub struct Setup {
    pub runtime_bin: PathBuf,
    pub reference_script: PathBuf,
    pub reference_handler: PathBuf,
    pub handler: PathBuf,
    pub webui_dir: PathBuf,
    pub python: PathBuf,
    /// The runs' working directory: test_input.json (the job) and the model folders.
    pub work_dir: PathBuf,
    pub webui_delay: Duration,
    /// The demo's background model load in the warm-up scenario.
    pub model_load: Duration,
    pub grace: Duration,
    /// How long a run that never ends on its own is left going (after the crash, or after the
    /// handler's exit) before the bench stops it.
    pub cap: Duration,
}

/// Moments of one run, from the launcher's spawn.
#[derive(Debug, Default, Clone)]
pub struct Marks {
    /// `WebUI API started with PID: N` (both launchers print it).
    pub webui_started: Option<Duration>,
    /// The `STARTING RUNPOD HANDLER` banner.
    pub handler_banner: Option<Duration>,
    /// The handler's first `imports done` line.
    pub imports_done: Option<Duration>,
    /// The demo WebUI's `Uvicorn running on` line: printed once its socket listens, right before
    /// it serves; the first request answers 200 (it binds only after its start-up delay).
    pub webui_ready: Option<Duration>,
    /// worker-runtime's `WebUI API ready in` line (its probe got a 200).
    pub runtime_saw_ready: Option<Duration>,
    /// The handler's `handler: serving` line, printed right before runpod.serverless.start.
    pub serving: Option<Duration>,
    /// runpod's `Local testing complete` line (the job is done; the handler exits next).
    pub job_done: Option<Duration>,
    /// The handler process ended (pidfd).
    pub handler_exit: Option<Duration>,
    /// The WebUI process ended (pidfd).
    pub webui_exit: Option<Duration>,
    /// worker-runtime's line saying the WebUI exited before it was ready.
    pub noticed_crash: Option<Duration>,
    /// `Shutdown complete.`
    pub shutdown_logged: Option<Duration>,
    /// The launcher process ended (its wait returned).
    pub launcher_exit: Option<Duration>,
    /// worker-runtime's start-up report: the line that is a JSON object with "event": "startup".
    pub startup_report: Option<serde_json::Value>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// The launcher ended on its own with this status (128+n for signal n).
    Exited(i32),
    /// The launcher was still running at the cap; the bench killed it and everything under it.
    Capped,
}

#[derive(Debug, Clone)]
pub struct Trial {
    pub launcher: Launcher,
    pub scenario: Scenario,
    pub marks: Marks,
    pub outcome: Outcome,
    /// The launcher's own peak resident memory (VmHWM, KiB) while the WebUI ran.
    pub peak_rss_kib: Option<u64>,
    pub log: Vec<(Duration, String)>,
}

impl Trial {
    pub fn log_tail(&self, lines: usize) -> String {
        tail(&self.log, lines)
    }
}

fn tail(log: &[(Duration, String)], lines: usize) -> String {
    log[log.len().saturating_sub(lines)..]
        .iter()
        .map(|(at, line)| format!("  {:8.3} s  {line}", at.as_secs_f64()))
        .collect::<Vec<_>>()
        .join("\n")
}

enum Msg {
    Line(Instant, String),
    HandlerExit(Instant),
    WebuiExit(Instant),
    LauncherExit(Instant, i32),
}

/// How often the loop wakes to sample memory and look for the handler's process.
const TICK: Duration = Duration::from_millis(20);
/// Beyond the WebUI's start-up delay, how long a run that should end by itself may take.
const RUN_BUDGET: Duration = Duration::from_secs(60);

pub fn run(setup: &Setup, launcher: Launcher, scenario: Scenario) -> Result<Trial> {
    let port = procfs::free_port()?;
    let mut command = command(setup, launcher, scenario, port);
    // One pipe for stdout and stderr, as a container log: lines keep the order they were written
    // in, whoever wrote them (worker-runtime logs to stderr, the Python processes to stdout).
    let (reader, writer) = std::io::pipe().context("cannot create a pipe")?;
    command
        .stdout(writer.try_clone().context("cannot duplicate a pipe")?)
        .stderr(writer);
    let launched = Instant::now();
    let mut child = command
        .spawn()
        .with_context(|| format!("cannot start {}", launcher.name()))?;
    // Our copies of the write end went with `command`: the reader sees the end of the file once
    // the launcher and every process that inherited its output are gone.
    drop(command);
    let pid = child.id() as i32;
    let exited = Arc::new(AtomicBool::new(false));
    // Whatever happens from here on, nothing of this run outlives it.
    let _guard = KillUnlessExited {
        pid,
        exited: Arc::clone(&exited),
    };

    let (tx, rx) = mpsc::channel();
    read_lines(reader, tx.clone());
    {
        let tx = tx.clone();
        let exited = Arc::clone(&exited);
        thread::Builder::new()
            .name("launcher-wait".into())
            .spawn(move || {
                // Wait for the exit without reaping first: until `exited` is set the pid cannot be
                // reused, so killing it (cap, clean-up) never hits another process.
                let waited = nix::sys::wait::waitid(
                    nix::sys::wait::Id::Pid(nix::unistd::Pid::from_raw(pid)),
                    nix::sys::wait::WaitPidFlag::WEXITED | nix::sys::wait::WaitPidFlag::WNOWAIT,
                );
                let at = Instant::now();
                exited.store(true, Ordering::SeqCst);
                let status = child.wait();
                let code = match status {
                    Ok(status) if waited.is_ok() => {
                        use std::os::unix::process::ExitStatusExt;
                        status
                            .code()
                            .or_else(|| status.signal().map(|s| 128 + s))
                            .unwrap_or(-1)
                    }
                    _ => -1,
                };
                let _ = tx.send(Msg::LauncherExit(at, code));
            })
            .context("cannot start a thread")?;
    }
    Observer::new(setup, launcher, scenario, pid, exited, launched, tx).watch(&rx)
}

struct KillUnlessExited {
    pid: i32,
    exited: Arc<AtomicBool>,
}

impl Drop for KillUnlessExited {
    fn drop(&mut self) {
        if !self.exited.load(Ordering::SeqCst) {
            procfs::kill_tree(self.pid);
        }
    }
}

fn command(setup: &Setup, launcher: Launcher, scenario: Scenario, port: u16) -> Command {
    let mut command = match launcher {
        Launcher::Reference => {
            let mut c = Command::new("bash");
            c.arg(&setup.reference_script);
            c
        }
        Launcher::Runtime => Command::new(&setup.runtime_bin),
    };
    let models = setup.work_dir.join("models");
    // A clean environment: nothing from the caller's (LD_PRELOAD, NO_TCMALLOC, RUST_LOG,
    // COMMANDLINE_ARGS, ...) may favour one launcher. tcmalloc is on for both: it is installed
    // here, start.sh always preloads it, worker-runtime does unless NO_TCMALLOC is set.
    command
        .env_clear()
        .env("PATH", std::env::var_os("PATH").unwrap_or_default())
        .env("HOME", std::env::var_os("HOME").unwrap_or_default())
        .env("LANG", "C.UTF-8")
        .env("WEBUI_DIR", &setup.webui_dir)
        .env("WEBUI_PYTHON", &setup.python)
        .env("WEBUI_PORT", port.to_string())
        .env("HANDLER_PYTHON", &setup.python)
        .env("CUDA_CHECK", "off")
        .env("MODEL_PATH", models.join("model.safetensors"))
        .env("CKPT_DIR", models.join("checkpoints"))
        .env("LORA_DIR", models.join("loras"))
        .env("EMBEDDINGS_DIR", models.join("embeddings"))
        .env(
            "DEMO_WEBUI_STARTUP_DELAY",
            format!("{}", setup.webui_delay.as_secs_f64()),
        )
        // runpod's local test mode reads the job from ./test_input.json: both launchers start
        // the handler with no arguments, as the reference start.sh's `python -u /handler.py`.
        .current_dir(&setup.work_dir)
        .stdin(Stdio::null());
    match launcher {
        Launcher::Reference => {
            command
                .env("HANDLER_PATH", &setup.reference_handler)
                .env("BENCH_HANDLER", &setup.handler)
                // The reference's handler knew the URL (127.0.0.1:3000); worker-runtime passes it in.
                .env("WEBUI_API_URL", format!("http://127.0.0.1:{port}"))
                // A1111 appends COMMANDLINE_ARGS: loopback, as worker-runtime's --server-name.
                .env("COMMANDLINE_ARGS", "--server-name 127.0.0.1");
        }
        Launcher::Runtime => {
            command
                .env("HANDLER_PATH", &setup.handler)
                .env("HANDLER_ARGS", "")
                .env("SHUTDOWN_GRACE", format!("{}", setup.grace.as_secs_f64()))
                .env("RUST_LOG", "info")
                // start.sh waits for the API only: the comparison holds worker-runtime to the same.
                .env("WEBUI_READY", "api");
        }
    }
    match scenario {
        Scenario::Normal => {}
        Scenario::NoTcmalloc => {
            command.env("NO_TCMALLOC", "1");
        }
        Scenario::IgnoresSigterm => {
            command.env("DEMO_WEBUI_IGNORE_SIGTERM", "1");
        }
        Scenario::CrashAtStart => {
            command.env("DEMO_WEBUI_EXIT_AT_START", "1");
        }
        Scenario::Warmup => {
            command.env("WEBUI_READY", "warmup").env(
                "DEMO_WEBUI_MODEL_LOAD_SECONDS",
                format!("{}", setup.model_load.as_secs_f64()),
            );
        }
    }
    command
}

/// Timestamps each line as it is read: the moment the bench learns of it, within a fraction of a
/// millisecond of the write (the reader is blocked in read(2) on the pipe).
fn read_lines(pipe: impl Read + Send + 'static, tx: Sender<Msg>) {
    let _ = thread::Builder::new()
        .name("pipe-reader".into())
        .spawn(move || {
            let mut reader = BufReader::new(pipe);
            let mut raw = Vec::new();
            loop {
                raw.clear();
                match reader.read_until(b'\n', &mut raw) {
                    Ok(0) | Err(_) => return,
                    Ok(_) => {
                        let at = Instant::now();
                        let line = String::from_utf8_lossy(&raw).trim_end().to_string();
                        if tx.send(Msg::Line(at, line)).is_err() {
                            return;
                        }
                    }
                }
            }
        });
}

struct Observer<'a> {
    setup: &'a Setup,
    launcher: Launcher,
    scenario: Scenario,
    pid: i32,
    /// Set once the launcher has exited (before it is reaped).
    exited: Arc<AtomicBool>,
    launched: Instant,
    tx: Sender<Msg>,
    marks: Marks,
    log: Vec<(Duration, String)>,
    webui_pid: Option<i32>,
    handler_pid: Option<i32>,
    launcher_code: Option<i32>,
    capped: bool,
    peak_rss_kib: Option<u64>,
}

impl<'a> Observer<'a> {
    fn new(
        setup: &'a Setup,
        launcher: Launcher,
        scenario: Scenario,
        pid: i32,
        exited: Arc<AtomicBool>,
        launched: Instant,
        tx: Sender<Msg>,
    ) -> Self {
        Observer {
            setup,
            launcher,
            scenario,
            pid,
            exited,
            launched,
            tx,
            marks: Marks::default(),
            log: Vec::new(),
            webui_pid: None,
            handler_pid: None,
            launcher_code: None,
            capped: false,
            peak_rss_kib: None,
        }
    }

    fn since(&self, at: Instant) -> Duration {
        at.saturating_duration_since(self.launched)
    }

    fn watch(mut self, rx: &Receiver<Msg>) -> Result<Trial> {
        let safety = self.setup.webui_delay + self.setup.cap + RUN_BUDGET;
        let mut finished_at: Option<Instant> = None;
        loop {
            match rx.recv_timeout(TICK) {
                Ok(msg) => self.take(msg),
                Err(RecvTimeoutError::Timeout) => {}
                Err(RecvTimeoutError::Disconnected) => break,
            }
            let now = Instant::now();
            if !self.exited.load(Ordering::SeqCst) {
                self.sample_memory();
                self.find_handler();
                if self.past_cap(now) {
                    self.capped = true;
                    self.kill_launcher_tree();
                }
                if now.duration_since(self.launched) > safety {
                    self.kill_launcher_tree();
                    bail!(
                        "{} ({}) was still running after {:.0} s, which it should not be; its \
                         last lines:\n{}",
                        self.launcher.name(),
                        self.scenario.name(),
                        safety.as_secs_f64(),
                        tail(&self.log, 30)
                    );
                }
            } else if self.launcher_code.is_some() {
                // The launcher is gone; collect the exit moments and last lines still on their
                // way, briefly (a WebUI left running by a killed launcher is killed by now).
                let done = *finished_at.get_or_insert(now);
                let all_seen = (self.webui_pid.is_none() || self.marks.webui_exit.is_some())
                    && (self.handler_pid.is_none() || self.marks.handler_exit.is_some());
                if (all_seen && now.duration_since(done) > Duration::from_millis(50))
                    || now.duration_since(done) > Duration::from_secs(5)
                {
                    break;
                }
            }
        }
        let left = [
            ("WebUI", self.webui_pid, self.marks.webui_exit),
            ("handler", self.handler_pid, self.marks.handler_exit),
        ]
        .into_iter()
        .filter_map(|(what, pid, exit)| pid.filter(|_| exit.is_none()).map(|pid| (what, pid)))
        .collect::<Vec<_>>();
        if !left.is_empty() {
            for (_, pid) in &left {
                // Watched and not seen to exit: still ours (alive or a zombie), so the pid cannot
                // belong to anything else yet.
                let _ = nix::sys::signal::kill(
                    nix::unistd::Pid::from_raw(*pid),
                    nix::sys::signal::Signal::SIGKILL,
                );
            }
            bail!(
                "{} ({}) exited but left its {} running (the bench killed it); its last \
                 lines:\n{}",
                self.launcher.name(),
                self.scenario.name(),
                left.iter()
                    .map(|(what, _)| *what)
                    .collect::<Vec<_>>()
                    .join(" and "),
                tail(&self.log, 30)
            );
        }
        let outcome = if self.capped {
            Outcome::Capped
        } else {
            Outcome::Exited(self.launcher_code.unwrap_or(-1))
        };
        Ok(Trial {
            launcher: self.launcher,
            scenario: self.scenario,
            marks: self.marks,
            outcome,
            peak_rss_kib: self.peak_rss_kib,
            log: self.log,
        })
    }

    fn take(&mut self, msg: Msg) {
        match msg {
            Msg::Line(at, line) => self.line(self.since(at), line),
            Msg::HandlerExit(at) => self.marks.handler_exit = Some(self.since(at)),
            Msg::WebuiExit(at) => self.marks.webui_exit = Some(self.since(at)),
            Msg::LauncherExit(at, code) => {
                self.marks.launcher_exit = Some(self.since(at));
                self.launcher_code = Some(code);
            }
        }
    }

    fn line(&mut self, at: Duration, line: String) {
        let first = |mark: &mut Option<Duration>| {
            if mark.is_none() {
                *mark = Some(at);
            }
        };
        if let Some(rest) = line.split("WebUI API started with PID: ").nth(1) {
            first(&mut self.marks.webui_started);
            if let Ok(pid) = rest.trim().parse::<i32>() {
                if procfs::watch_exit(pid, self.tx.clone(), Msg::WebuiExit) {
                    self.webui_pid = Some(pid);
                }
            }
        } else if line.contains("STARTING RUNPOD HANDLER") {
            first(&mut self.marks.handler_banner);
        } else if line.contains("imports done") {
            first(&mut self.marks.imports_done);
        } else if line.contains("Uvicorn running on") {
            first(&mut self.marks.webui_ready);
        } else if line.contains("WebUI API ready in") {
            first(&mut self.marks.runtime_saw_ready);
        } else if line.contains("handler: serving") {
            first(&mut self.marks.serving);
        } else if line.contains("Local testing complete") {
            first(&mut self.marks.job_done);
        } else if line.contains("the WebUI exited before its API was ready") {
            first(&mut self.marks.noticed_crash);
        } else if line.contains("Shutdown complete.") {
            first(&mut self.marks.shutdown_logged);
        } else if self.marks.startup_report.is_none() {
            self.marks.startup_report = startup_report(&line);
        }
        self.log.push((at, line));
    }

    /// SIGKILL to the launcher and everything under it, unless it has already exited (then its
    /// pid may be reaped and reused at any moment).
    fn kill_launcher_tree(&self) {
        if !self.exited.load(Ordering::SeqCst) {
            procfs::kill_tree(self.pid);
        }
    }

    /// The launcher's own memory, while the WebUI runs: VmHWM only grows, so the last reading
    /// before the WebUI's exit is the peak of that period.
    fn sample_memory(&mut self) {
        if self.marks.webui_started.is_none() || self.marks.webui_exit.is_some() {
            return;
        }
        if let Some((hwm, _rss)) = procfs::memory_kib(self.pid) {
            self.peak_rss_kib = Some(self.peak_rss_kib.map_or(hwm, |p| p.max(hwm)));
        }
    }

    /// The handler is the launcher's child whose command line runs a handler script. Looked for
    /// from the banner on (the fork follows it), until found.
    fn find_handler(&mut self) {
        if self.handler_pid.is_some() || self.marks.handler_banner.is_none() {
            return;
        }
        let script = self
            .handler_script()
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        for pid in procfs::children(self.pid) {
            if Some(pid) == self.webui_pid {
                continue;
            }
            if procfs::cmdline(pid)
                .iter()
                .any(|arg| arg.ends_with(&script))
            {
                self.handler_pid = Some(pid);
                procfs::watch_exit(pid, self.tx.clone(), Msg::HandlerExit);
                return;
            }
        }
    }

    fn handler_script(&self) -> &PathBuf {
        match self.launcher {
            Launcher::Reference => &self.setup.reference_handler,
            Launcher::Runtime => &self.setup.handler,
        }
    }

    /// Runs that never end on their own are stopped `cap` after what should have ended them:
    /// the crash, or the handler's exit.
    fn past_cap(&self, now: Instant) -> bool {
        if self.capped {
            return false;
        }
        let from = match self.scenario {
            Scenario::Normal | Scenario::NoTcmalloc | Scenario::Warmup => return false,
            Scenario::IgnoresSigterm => self.marks.handler_exit,
            Scenario::CrashAtStart => self.marks.webui_exit,
        };
        from.is_some_and(|from| now.duration_since(self.launched) > from + self.setup.cap)
    }
}

/// worker-runtime's start-up report, when `line` is it: the JSON object with "event": "startup".
fn startup_report(line: &str) -> Option<serde_json::Value> {
    if !line.starts_with("{\"event\":\"startup\"") {
        return None;
    }
    serde_json::from_str(line).ok()
}
