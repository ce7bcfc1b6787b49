//! Command line and environment: every setting is a flag and an env var with the same meaning.

use std::path::PathBuf;
use std::time::Duration;

use clap::{CommandFactory, Parser, Subcommand, ValueEnum};

pub use crate::readiness::ReadyMode;
pub use crate::warmup::WarmupSize;

#[derive(Debug, Parser)]
#[command(
    name = "worker-runtime",
    version,
    about = "PID 1 of the Stable Diffusion WebUI RunPod worker: checks the GPU, starts the WebUI API, \
             waits until it answers, runs the RunPod handler, and tears everything down.",
    after_help = crate::exit_code::help()
)]
pub struct Cli {
    #[command(flatten)]
    pub config: Config,
    #[command(subcommand)]
    pub command: Option<Command>,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Print the exact WebUI command line the launcher would run, and exit.
    WebuiArgs,
    /// Check the NVIDIA driver and GPU natively (no Python, no torch).
    CudaCheck(crate::cuda::CudaCheckArgs),
    /// Record the image's facts (Python, torch, CUDA, xformers, WebUI versions) as JSON.
    Facts(crate::cuda::FactsArgs),
}

#[derive(Debug, Clone, clap::Args)]
pub struct Config {
    /// A1111 checkout (or the demo WebUI) holding webui.py.
    #[arg(
        long,
        env = "WEBUI_DIR",
        default_value = "/stable-diffusion-webui",
        global = true
    )]
    pub webui_dir: PathBuf,

    /// Python that runs the WebUI [default: python, else python3, from PATH].
    #[arg(long, env = "WEBUI_PYTHON", global = true)]
    pub webui_python: Option<String>,

    /// Port of the WebUI API, bound to 127.0.0.1 only.
    #[arg(long, env = "WEBUI_PORT", default_value_t = 3000, value_parser = parse_port, global = true)]
    pub webui_port: u16,

    /// More WebUI flags, split as Python's shlex splits (as A1111 splits COMMANDLINE_ARGS) and
    /// checked against A1111's flag catalog and the flags of the extensions in WEBUI_DIR.
    #[arg(
        long,
        env = "WEBUI_EXTRA_ARGS",
        default_value = "",
        allow_hyphen_values = true,
        global = true
    )]
    pub webui_extra_args: String,

    /// Any non-empty value: pass WebUI flags that neither A1111's catalog nor an extension's
    /// preload.py in WEBUI_DIR defines (they are still refused if they would rebind the API).
    #[arg(long, env = "WEBUI_ALLOW_UNKNOWN_FLAGS", value_name = "ANY", num_args = 0..=1,
          default_missing_value = "1", global = true)]
    pub webui_allow_unknown_flags: Option<String>,

    /// Seconds from the WebUI's start until ready (every WEBUI_READY stage) before giving up.
    #[arg(long, env = "WEBUI_READY_TIMEOUT", default_value = "600", value_parser = parse_seconds, global = true)]
    pub webui_ready_timeout: Duration,

    /// What "ready" means: api (the API answers), model (the checkpoint is loaded), warmup (the
    /// model is loaded and a 1-step generation at WEBUI_WARMUP_SIZE returned an image).
    #[arg(long, env = "WEBUI_READY", value_enum, default_value_t = ReadyMode::Warmup, global = true)]
    pub webui_ready: ReadyMode,

    /// WIDTHxHEIGHT of the warm-up generation; the jobs' usual size spares the first job the
    /// first use of its shapes [default: 512x512, or 64x64 with WEBUI_DEVICE=cpu].
    #[arg(long, env = "WEBUI_WARMUP_SIZE", value_parser = WarmupSize::parse, global = true)]
    pub webui_warmup_size: Option<WarmupSize>,

    /// Serve GET /ping on 0.0.0.0:PORT_HEALTH (204 starting, 200 ready, 503 stopping) [default: no endpoint].
    #[arg(long, env = "PORT_HEALTH", value_parser = parse_port, global = true)]
    pub port_health: Option<u16>,

    /// The RunPod handler script, run in the foreground.
    #[arg(
        long,
        env = "HANDLER_PATH",
        default_value = "/handler.py",
        global = true
    )]
    pub handler_path: PathBuf,

    /// Python that runs the handler [default: python, else python3, from PATH].
    #[arg(long, env = "HANDLER_PYTHON", global = true)]
    pub handler_python: Option<String>,

    /// Arguments for the handler, split like shell words (e.g. "--rp_serve_api").
    #[arg(
        long,
        env = "HANDLER_ARGS",
        default_value = "",
        allow_hyphen_values = true,
        global = true
    )]
    pub handler_args: String,

    /// When the handler starts: at once, waiting at the readiness gate (WORKER_READY_FD),
    /// or only once the API answers.
    #[arg(long, env = "HANDLER_START", value_enum, default_value_t = HandlerStart::Gate, global = true)]
    pub handler_start: HandlerStart,

    /// Seconds the job in flight may still run after a stop signal; then the runtime asks the
    /// WebUI to interrupt it (its partial result is returned) and stops the rest. 0: at once.
    #[arg(long, env = "DRAIN_TIMEOUT", default_value = "4", value_parser = parse_seconds_or_zero, global = true)]
    pub drain_timeout: Duration,

    /// Seconds between SIGTERM and SIGKILL: one deadline shared by every process still running.
    #[arg(long, env = "SHUTDOWN_GRACE", default_value = "5", value_parser = parse_seconds, global = true)]
    pub shutdown_grace: Duration,

    /// Any non-empty value: do not preload tcmalloc.
    #[arg(long, env = "NO_TCMALLOC", value_name = "ANY", num_args = 0..=1,
          default_missing_value = "1", global = true)]
    pub no_tcmalloc: Option<String>,

    /// GPU check before the WebUI starts: warn (report and continue), strict (stop on failure), off.
    #[arg(long, env = "CUDA_CHECK", value_enum, default_value_t = CudaCheckMode::Warn, global = true)]
    pub cuda_check: CudaCheckMode,

    /// Where A1111 computes: gpu, or cpu (adds --use-cpu all --no-half --precision full, drops
    /// --xformers, skips the GPU check) for a machine without a GPU.
    #[arg(long, env = "WEBUI_DEVICE", value_enum, default_value_t = WebuiDevice::Gpu, global = true)]
    pub webui_device: WebuiDevice,

    /// Seconds the GPU check may take before it is stopped and counted as failed (a hung driver).
    #[arg(long, env = "CUDA_CHECK_TIMEOUT", default_value = "30", value_parser = parse_seconds, global = true)]
    pub cuda_check_timeout: Duration,

    /// Checkpoint baked into the image, loaded at start (--ckpt).
    #[arg(
        long,
        env = "MODEL_PATH",
        default_value = "/model.safetensors",
        global = true
    )]
    pub model_path: PathBuf,

    /// Checkpoints on the network volume (--ckpt-dir).
    #[arg(
        long,
        env = "CKPT_DIR",
        default_value = "/runpod-volume/models/checkpoints",
        global = true
    )]
    pub ckpt_dir: PathBuf,

    /// LoRAs on the network volume (--lora-dir).
    #[arg(
        long,
        env = "LORA_DIR",
        default_value = "/runpod-volume/models/loras",
        global = true
    )]
    pub lora_dir: PathBuf,

    /// Textual-inversion embeddings on the network volume (--embeddings-dir).
    #[arg(
        long,
        env = "EMBEDDINGS_DIR",
        default_value = "/runpod-volume/models/embeddings",
        global = true
    )]
    pub embeddings_dir: PathBuf,
}

/// Parses the command line and environment. Help and version print as usual; any other error
/// becomes one line naming the setting and what to fix, with the bad-configuration status.
///
/// Must run before any thread exists: it removes the runtime's own variables that are set but
/// empty, so `SHUTDOWN_GRACE=` (a common container-template leftover) means the default.
pub fn parse() -> Result<Cli, std::process::ExitCode> {
    use clap::error::ErrorKind;
    for name in setting_variables(&Cli::command()) {
        if std::env::var_os(&name).is_some_and(|v| v.is_empty()) {
            std::env::remove_var(&name);
        }
    }
    match Cli::try_parse() {
        Ok(cli) => Ok(cli),
        Err(e) if matches!(e.kind(), ErrorKind::DisplayHelp | ErrorKind::DisplayVersion) => {
            let _ = e.print();
            Err(std::process::ExitCode::SUCCESS)
        }
        Err(e) => {
            let rendered = e.render().to_string();
            let line = rendered.lines().next().unwrap_or("invalid arguments");
            // clap puts the choices on a later line; the one line must say what to write.
            let choices = match e.get(clap::error::ContextKind::ValidValue) {
                Some(clap::error::ContextValue::Strings(values)) => {
                    format!(": use one of {}", values.join(", "))
                }
                _ => String::new(),
            };
            crate::logging::print_stderr(&format!(
                "worker-runtime: {}{choices}",
                line.trim_start_matches("error: ")
            ));
            Err(std::process::ExitCode::from(crate::exit_code::BAD_CONFIG))
        }
    }
}

/// Every environment variable a setting reads, subcommands included (also the README check's
/// list of settings).
pub fn setting_variables(command: &clap::Command) -> Vec<std::ffi::OsString> {
    let mut names: Vec<_> = command
        .get_arguments()
        .filter_map(|a| a.get_env().map(|e| e.to_os_string()))
        .collect();
    for sub in command.get_subcommands() {
        names.extend(setting_variables(sub));
    }
    names
}

impl Config {
    /// `WEBUI_WARMUP_SIZE`, or the default for the device.
    pub fn warmup_size(&self) -> WarmupSize {
        self.webui_warmup_size.unwrap_or(match self.webui_device {
            WebuiDevice::Gpu => WarmupSize::GPU_DEFAULT,
            WebuiDevice::Cpu => WarmupSize::SMALLEST,
        })
    }

    pub fn tcmalloc_disabled(&self) -> bool {
        self.no_tcmalloc.as_deref().is_some_and(|v| !v.is_empty())
    }

    pub fn unknown_flags_allowed(&self) -> bool {
        self.webui_allow_unknown_flags
            .as_deref()
            .is_some_and(|v| !v.is_empty())
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum HandlerStart {
    Gate,
    AfterReady,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum WebuiDevice {
    Gpu,
    Cpu,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum CudaCheckMode {
    Warn,
    Strict,
    Off,
}

fn parse_port(s: &str) -> Result<u16, String> {
    match s.trim().parse::<u16>() {
        Ok(p) if p > 0 => Ok(p),
        _ => Err("not a port number: use an integer from 1 to 65535".into()),
    }
}

fn parse_seconds(s: &str) -> Result<Duration, String> {
    match s.trim().parse::<f64>() {
        Ok(v) if v.is_finite() && v > 0.0 && v < 1e9 => Ok(Duration::from_secs_f64(v)),
        _ => Err("not a duration: use a positive number of seconds, e.g. 30 or 0.5".into()),
    }
}

fn parse_seconds_or_zero(s: &str) -> Result<Duration, String> {
    match s.trim().parse::<f64>() {
        Ok(0.0) => Ok(Duration::ZERO),
        _ => parse_seconds(s)
            .map_err(|_| "not a duration: use 0 or a positive number of seconds, e.g. 4".into()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ports_and_seconds_reject_what_a_user_would_mistype() {
        assert_eq!(parse_port("3000"), Ok(3000));
        assert!(parse_port("0").is_err());
        assert!(parse_port("70000").is_err());
        assert!(parse_port("abc").is_err());
        assert_eq!(parse_seconds("0.5"), Ok(Duration::from_millis(500)));
        assert!(parse_seconds("-1").is_err());
        assert!(parse_seconds("ten").is_err());
        assert!(parse_seconds("0").is_err());
    }

    #[test]
    fn no_tcmalloc_means_any_non_empty_value() {
        let parse = |args: &[&str]| Cli::try_parse_from(args).map(|c| c.config.tcmalloc_disabled());
        assert_eq!(parse(&["worker-runtime"]).ok(), Some(false));
        assert_eq!(parse(&["worker-runtime", "--no-tcmalloc"]).ok(), Some(true));
        assert_eq!(
            parse(&["worker-runtime", "--no-tcmalloc", "0"]).ok(),
            Some(true)
        );
        assert_eq!(
            parse(&["worker-runtime", "--no-tcmalloc", ""]).ok(),
            Some(false)
        );
    }

    #[test]
    fn the_warmup_size_defaults_to_the_devices_and_a_set_one_wins() {
        let size = |args: &[&str]| {
            Cli::try_parse_from(args)
                .map(|c| c.config.warmup_size().to_string())
                .ok()
        };
        assert_eq!(size(&["worker-runtime"]).as_deref(), Some("512x512"));
        let cpu = ["worker-runtime", "--webui-device", "cpu"];
        assert_eq!(size(&cpu).as_deref(), Some("64x64"));
        let set = [
            "worker-runtime",
            "--webui-device",
            "cpu",
            "--webui-warmup-size",
            "768x512",
        ];
        assert_eq!(size(&set).as_deref(), Some("768x512"));
    }
}
