//! `cargo xtask run-local`: the whole worker on this machine, no GPU, model or A1111 checkout
//! needed. worker-runtime runs the demo WebUI (or `--webui-dir`) and docker/handler.py on one job
//! in runpod's local test mode, and the job's images land in target/run-local/images/.
//!
//! The handler writes each job's result to HANDLER_RESULT_DIR (runpod's local mode only prints
//! it, with the image data redacted); that file is where the images are decoded from.

use std::fs;
use std::net::{Ipv4Addr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Command, ExitStatus};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use nix::sys::signal::{signal, SigHandler, Signal};
use runtime::exit_code;
use serde_json::Value;
use xshell::{cmd, Shell};

use crate::a1111;
use crate::python_env::ensure_venv;

/// Above this, the job goes to runpod as ./test_input.json instead of `--test_input '<json>'`:
/// Linux caps one argument or environment string at 128 KiB, and an img2img job can be larger.
const MAX_INLINE_JOB: usize = 64 * 1024;
/// runpod's local test mode names the job this when the input has no "id".
const DEFAULT_JOB_ID: &str = "local_test";

pub use crate::flags::{RunLocalArgs, WebuiKind};

pub fn run(sh: &Shell, args: RunLocalArgs) -> Result<()> {
    let invoked_from = std::env::current_dir().context("reading the current directory")?;
    let absolute = |p: PathBuf| {
        if p.is_absolute() {
            p
        } else {
            invoked_from.join(p)
        }
    };
    let root = crate::project_root();
    let demo = args.webui_dir.is_none() && args.webui == WebuiKind::Demo;
    let a1111 = if args.webui == WebuiKind::A1111 {
        say("preparing the real A1111 (cargo xtask a1111; only the first run takes minutes)");
        Some(a1111::prepare(&a1111::A1111Args::default())?)
    } else {
        None
    };
    let webui_dir = match (&a1111, args.webui_dir) {
        (Some(prepared), _) => prepared.webui_dir.clone(),
        (None, Some(dir)) => absolute(dir),
        (None, None) => root.join("docker").join("demo-webui"),
    };
    if !webui_dir.join("webui.py").is_file() {
        bail!(
            "--webui-dir {}: no webui.py there; give the folder of an A1111 checkout",
            webui_dir.display()
        );
    }
    let out = args
        .out
        .map(absolute)
        .unwrap_or_else(|| crate::target_dir().join("run-local"));
    let input_path = args
        .input
        .map(absolute)
        .unwrap_or_else(|| root.join("docker").join("test_input.json"));
    let job = read_job(&input_path)?;

    say("preparing the Python environment (.venv)");
    let python = ensure_venv(sh)?;
    say("building worker-runtime");
    let cargo = crate::cargo();
    cmd!(sh, "{cargo} build --quiet -p runtime --bin worker-runtime")
        .run()
        .context("cargo build -p runtime failed")?;
    let runtime_bin = crate::target_dir().join("debug").join("worker-runtime");

    let layout = Layout::prepare(&out, demo)?;
    let webui_port = free_port()?;
    let mut command = worker_command(&Worker {
        runtime_bin: &runtime_bin,
        webui_dir: &webui_dir,
        webui_port,
        python: &python,
        layout: &layout,
        a1111: a1111.as_ref(),
        demo,
    })?;
    let webui_name = if demo {
        "the demo WebUI (docker/demo-webui)".to_string()
    } else if a1111.is_some() {
        format!("the real A1111 ({})", webui_dir.display())
    } else {
        webui_dir.display().to_string()
    };

    if args.serve {
        return serve(command, args.api_port, &input_path, &webui_name);
    }

    let inline = serde_json::to_string(&job.value)?;
    if inline.len() <= MAX_INLINE_JOB {
        command.env(
            "HANDLER_ARGS",
            format!("--test_input {}", shell_quote(&inline)),
        );
    } else {
        // runpod's local mode reads ./test_input.json; the handler inherits this directory.
        fs::write(layout.job_dir.join("test_input.json"), &inline)?;
        command.env("HANDLER_ARGS", "").current_dir(&layout.job_dir);
    }
    say(&format!(
        "running worker-runtime: {webui_name} on 127.0.0.1:{webui_port}, docker/handler.py, job {}",
        input_path.display()
    ));
    let started = Instant::now();
    let status = run_foreground(command)?;
    let elapsed = started.elapsed().as_secs_f64();
    let result_file = layout.results.join(format!("{}.json", job.file_stem()));
    let result = read_result(&result_file);

    let result = check_outcome(status, result)?;
    say(&format!(
        "job done in {elapsed:.1} s (worker-runtime exit status 0)"
    ));
    report(&result, &layout)
}

/// Files and folders under --out. The model folders stand in for /model.safetensors and the
/// network volume, so nothing outside the project is needed.
struct Layout {
    root: PathBuf,
    model: PathBuf,
    checkpoints: PathBuf,
    loras: PathBuf,
    embeddings: PathBuf,
    results: PathBuf,
    images: PathBuf,
    job_dir: PathBuf,
}

impl Layout {
    fn prepare(out: &Path, demo: bool) -> Result<Layout> {
        let models = out.join("models");
        let layout = Layout {
            root: out.to_path_buf(),
            model: models.join("model.safetensors"),
            checkpoints: models.join("checkpoints"),
            loras: models.join("loras"),
            embeddings: models.join("embeddings"),
            results: out.join("results"),
            images: out.join("images"),
            job_dir: out.join("job"),
        };
        // Results of an earlier run must not pass for this one's.
        for stale in [&layout.results, &layout.images, &layout.job_dir] {
            if stale.exists() {
                fs::remove_dir_all(stale)
                    .with_context(|| format!("removing {}", stale.display()))?;
            }
        }
        let _ = fs::remove_file(out.join("result.json"));
        for dir in [
            &layout.checkpoints,
            &layout.loras,
            &layout.embeddings,
            &layout.results,
            &layout.images,
            &layout.job_dir,
        ] {
            fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
        }
        // The demo lists and "loads" this file without reading it; a real WebUI would need a
        // real checkpoint, so none is faked for it.
        if demo && !layout.model.exists() {
            fs::write(
                &layout.model,
                "placeholder for the demo WebUI: not a model (cargo xtask run-local)\n",
            )?;
        }
        Ok(layout)
    }
}

struct Job {
    value: Value,
}

impl Job {
    /// The name of the handler's result file for this job (the handler makes ids file-safe).
    fn file_stem(&self) -> String {
        let id = match self.value.get("id") {
            Some(Value::String(s)) => s.clone(),
            Some(other) => other.to_string(),
            None => DEFAULT_JOB_ID.to_string(),
        };
        let safe: String = id
            .chars()
            .map(|c| {
                if c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-') {
                    c
                } else {
                    '_'
                }
            })
            .collect();
        if safe.is_empty() {
            "job".to_string()
        } else {
            safe
        }
    }
}

fn read_job(path: &Path) -> Result<Job> {
    let text = fs::read_to_string(path)
        .with_context(|| format!("--input {}: cannot read it", path.display()))?;
    let value: Value = serde_json::from_str(&text)
        .with_context(|| format!("--input {}: not valid JSON", path.display()))?;
    match value.get("input") {
        Some(input) if !input.is_null() => {}
        _ => bail!(
            "--input {}: a job is {{\"input\": {{...}}}}, as RunPod sends it; there is no \"input\"",
            path.display()
        ),
    }
    Ok(Job { value })
}

/// The handler's error message, when the result is one.
fn job_error(result: &Value) -> Option<String> {
    match result.get("error")? {
        Value::String(message) => Some(message.clone()),
        other => Some(other.to_string()),
    }
}

fn read_result(path: &Path) -> Result<Value> {
    let text = fs::read_to_string(path).with_context(|| {
        format!(
            "the handler wrote no result to {} (HANDLER_RESULT_DIR)",
            path.display()
        )
    })?;
    serde_json::from_str(&text).with_context(|| format!("{}: not valid JSON", path.display()))
}

/// Writes the images and result.json, and says where they are.
fn report(result: &Value, layout: &Layout) -> Result<()> {
    let mut summary = result.clone();
    let seeds: Vec<Option<u64>> = result
        .pointer("/info/all_seeds")
        .and_then(Value::as_array)
        .map(|seeds| seeds.iter().map(Value::as_u64).collect())
        .unwrap_or_default();
    if let Some(images) = summary.get_mut("images").and_then(Value::as_array_mut) {
        say(&format!(
            "{} image(s) in {}:",
            images.len(),
            layout.images.display()
        ));
        for (index, image) in images.iter_mut().enumerate() {
            let Some(encoded) = image.as_str() else {
                bail!("images[{index}] is not a string");
            };
            let bytes = decode_base64(encoded).with_context(|| format!("images[{index}]"))?;
            let name = match seeds.get(index).copied().flatten() {
                Some(seed) => format!("{index:02}-seed{seed}.png"),
                None => format!("{index:02}.png"),
            };
            let path = layout.images.join(&name);
            fs::write(&path, &bytes).with_context(|| format!("writing {}", path.display()))?;
            let size = runtime::png::size(&bytes)
                .map(|(w, h)| format!("{w}x{h} PNG"))
                .unwrap_or_else(|| "not a PNG".to_string());
            println!("  {}  {size}, {} bytes", path.display(), bytes.len());
            *image = Value::String(format!("images/{name}"));
        }
    }
    let summary_path = layout.root.join("result.json");
    fs::write(&summary_path, serde_json::to_string_pretty(&summary)?)
        .with_context(|| format!("writing {}", summary_path.display()))?;
    say(&format!(
        "result (images replaced by their file names): {}",
        summary_path.display()
    ));
    Ok(())
}

/// `--serve`: runpod's local HTTP API until Ctrl-C.
fn serve(mut command: Command, api_port: u16, input: &Path, webui_name: &str) -> Result<()> {
    if TcpListener::bind((Ipv4Addr::LOCALHOST, api_port)).is_err() {
        bail!("port {api_port} on 127.0.0.1 is taken; choose another with --api-port");
    }
    command.env(
        "HANDLER_ARGS",
        format!("--rp_serve_api --rp_api_port {api_port} --rp_api_host 127.0.0.1"),
    );
    let url = format!("http://127.0.0.1:{api_port}");
    let curl = format!(
        "curl -s -X POST {url}/runsync -H 'Content-Type: application/json' -d @{}",
        shell_quote(&input.display().to_string())
    );
    say(&format!(
        "running worker-runtime: {webui_name}, docker/handler.py serving runpod's local API at \
         {url} until Ctrl-C"
    ));
    // The runtime's log scrolls the hint away: repeat it once the API accepts connections.
    let stop = Arc::new(AtomicBool::new(false));
    let announcer = {
        let stop = Arc::clone(&stop);
        thread::spawn(move || {
            while !stop.load(Ordering::Relaxed) {
                if TcpStream::connect((Ipv4Addr::LOCALHOST, api_port)).is_ok() {
                    say(&format!(
                        "serving at {url} (API docs at {url}/); try:\n  {curl}"
                    ));
                    return;
                }
                thread::sleep(Duration::from_millis(200));
            }
        })
    };
    let status = run_foreground(command);
    stop.store(true, Ordering::Relaxed);
    let _ = announcer.join();
    let status = status?;
    match status.code() {
        // Ctrl-C: the handler and then the runtime stop cleanly (0), or report the signal.
        Some(0) | Some(130) | Some(143) => {
            say("stopped");
            Ok(())
        }
        Some(code) => bail!(
            "worker-runtime exited with status {code}: {}; its log is above",
            explain_exit(code)
        ),
        None => bail!("worker-runtime was killed by a signal ({status})"),
    }
}

/// What the worker is started with.
struct Worker<'a> {
    runtime_bin: &'a Path,
    webui_dir: &'a Path,
    webui_port: u16,
    python: &'a Path,
    layout: &'a Layout,
    a1111: Option<&'a a1111::Prepared>,
    demo: bool,
}

/// worker-runtime with the settings run-local chooses; what the user already set in the
/// environment wins, except the paths that keep the run inside its own folder.
fn worker_command(w: &Worker) -> Result<Command> {
    let mut command = Command::new(w.runtime_bin);
    command
        .env("WEBUI_DIR", w.webui_dir)
        .env("WEBUI_PORT", w.webui_port.to_string())
        .env(
            "HANDLER_PATH",
            crate::project_root().join("docker").join("handler.py"),
        )
        .env("HANDLER_PYTHON", w.python)
        .env("HANDLER_RESULT_DIR", &w.layout.results)
        .env_remove("WORKER_READY_FD")
        // A job source in the environment would turn runpod's local mode into the real worker.
        .env_remove("RUNPOD_WEBHOOK_GET_JOB");
    for (name, default) in [
        ("MODEL_PATH", w.layout.model.as_path()),
        ("CKPT_DIR", w.layout.checkpoints.as_path()),
        ("LORA_DIR", w.layout.loras.as_path()),
        ("EMBEDDINGS_DIR", w.layout.embeddings.as_path()),
    ] {
        if std::env::var_os(name).is_none() {
            command.env(name, default);
        }
    }
    if std::env::var_os("CUDA_CHECK").is_none() {
        command.env("CUDA_CHECK", "off");
    }
    if std::env::var_os("WEBUI_DEVICE").is_none() && !has_gpu() {
        say("no NVIDIA GPU here: WEBUI_DEVICE=cpu");
        command.env("WEBUI_DEVICE", "cpu");
    }
    if let Some(prepared) = w.a1111 {
        prepared.apply(&mut command);
        // A fresh data folder each run: no earlier run's config.json or overrides.
        let data_dir = w.layout.root.join("webui-data");
        if data_dir.exists() {
            fs::remove_dir_all(&data_dir)
                .with_context(|| format!("removing {}", data_dir.display()))?;
        }
        prepared.make_data_dir(&data_dir)?;
        let user_extra = std::env::var("WEBUI_EXTRA_ARGS").unwrap_or_default();
        command.env(
            "WEBUI_EXTRA_ARGS",
            format!(
                "{user_extra} --data-dir {}",
                shell_quote(&data_dir.display().to_string())
            ),
        );
    }
    if std::env::var_os("WEBUI_PYTHON").is_none() {
        // The demo is standard-library only; an A1111 checkout brings its own venv (webui.sh's).
        let checkout_python = w.webui_dir.join("venv").join("bin").join("python");
        if w.demo {
            command.env("WEBUI_PYTHON", "python3");
        } else if checkout_python.is_file() {
            command.env("WEBUI_PYTHON", checkout_python);
        }
    }
    Ok(command)
}

/// The job's result when worker-runtime and the job both succeeded, else what went wrong.
fn check_outcome(status: ExitStatus, result: Result<Value>) -> Result<Value> {
    match status.code() {
        Some(0) => {}
        Some(code) => {
            if let Some(error) = result.as_ref().ok().and_then(job_error) {
                bail!("the job failed: {error} (worker-runtime exit status {code})");
            }
            bail!(
                "worker-runtime exited with status {code}: {}; its log is above",
                explain_exit(code)
            );
        }
        None => bail!("worker-runtime was killed by a signal ({status}); its log is above"),
    }
    let result = result?;
    if let Some(error) = job_error(&result) {
        bail!("the job failed: {error}");
    }
    Ok(result)
}

/// Runs `command` with this terminal, and waits for it.
fn run_foreground(mut command: Command) -> Result<ExitStatus> {
    let mut child = command
        .spawn()
        .with_context(|| format!("starting {:?}", command.get_program()))?;
    // Ctrl-C reaches worker-runtime too (same process group) and it tears the worker down.
    // Ignoring it here lets xtask wait for that and report, instead of exiting first and leaving
    // the teardown's lines to trail after the shell prompt. The child was already exec'd with the
    // default disposition, so it is not affected.
    // SAFETY: SIG_IGN and the previous disposition install no Rust handler.
    let previous = unsafe { signal(Signal::SIGINT, SigHandler::SigIgn) };
    let status = child.wait();
    if let Ok(previous) = previous {
        // SAFETY: as above; restores what was there.
        let _ = unsafe { signal(Signal::SIGINT, previous) };
    }
    status.context("waiting for worker-runtime")
}

fn explain_exit(code: i32) -> &'static str {
    u8::try_from(code)
        .ok()
        .and_then(exit_code::meaning)
        .unwrap_or("the handler's own exit status")
}

/// Whether an NVIDIA GPU is visible (its driver's control device exists).
fn has_gpu() -> bool {
    Path::new("/dev/nvidiactl").exists()
}

fn say(message: &str) {
    println!("run-local: {message}");
}

/// A port on 127.0.0.1 that nothing listens on now.
fn free_port() -> Result<u16> {
    let listener = TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).context("finding a free port")?;
    Ok(listener.local_addr()?.port())
}

/// One POSIX shell word, as worker-runtime splits HANDLER_ARGS.
fn shell_quote(text: &str) -> String {
    shell_words::quote(text).into_owned()
}

/// Standard or URL-safe base64, padding optional, line breaks and a data: URL prefix allowed.
fn decode_base64(text: &str) -> Result<Vec<u8>> {
    use base64::engine::general_purpose::{GeneralPurpose, GeneralPurposeConfig};
    use base64::engine::{DecodePaddingMode, Engine};
    let any_padding =
        GeneralPurposeConfig::new().with_decode_padding_mode(DecodePaddingMode::Indifferent);
    let text = text.split_once("base64,").map_or(text, |(_, data)| data);
    let text: String = text.chars().filter(|c| !matches!(c, '\r' | '\n')).collect();
    let alphabet = if text.contains(['-', '_']) {
        &base64::alphabet::URL_SAFE
    } else {
        &base64::alphabet::STANDARD
    };
    GeneralPurpose::new(alphabet, any_padding)
        .decode(&text)
        .context("not base64")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn base64_decodes_standard_url_safe_and_data_urls() -> Result<()> {
        assert_eq!(decode_base64("aGVsbG8gd29ybGQ=")?, b"hello world");
        assert_eq!(decode_base64("aGVsbG8gd29ybGQ")?, b"hello world");
        assert_eq!(decode_base64("data:image/png;base64,+/8=")?, [0xfb, 0xff]);
        assert_eq!(decode_base64("-_8")?, [0xfb, 0xff]);
        assert_eq!(decode_base64("")?, b"");
        assert!(decode_base64("a b").is_err());
        Ok(())
    }

    #[test]
    fn shell_quote_survives_single_quotes() {
        let job = r#"{"prompt": "it's"}"#;
        let words = shell_words::split(&format!("--test_input {}", shell_quote(job)));
        assert_eq!(words.expect("splits"), ["--test_input", job]);
    }

    #[test]
    fn job_file_stem_matches_the_handlers_naming() -> Result<()> {
        let job = |v: &str| Job {
            value: serde_json::from_str(v).expect("test JSON"),
        };
        assert_eq!(job(r#"{"input": {}}"#).file_stem(), "local_test");
        assert_eq!(job(r#"{"id": "a/b c", "input": {}}"#).file_stem(), "a_b_c");
        assert_eq!(job(r#"{"id": 7, "input": {}}"#).file_stem(), "7");
        Ok(())
    }

    #[test]
    fn read_job_wants_an_input() -> Result<()> {
        let dir = tempfile::tempdir()?;
        let path = dir.path().join("job.json");
        fs::write(&path, r#"{"prompt": "no input wrapper"}"#)?;
        let error = read_job(&path)
            .err()
            .map(|e| e.to_string())
            .unwrap_or_default();
        assert!(error.contains("there is no \"input\""), "{error}");
        fs::write(&path, r#"{"input": {"steps": 1}}"#)?;
        assert!(read_job(&path).is_ok());
        Ok(())
    }

    #[test]
    fn explains_the_runtimes_exit_codes() {
        assert_eq!(
            explain_exit(81),
            "the WebUI exited before its API was ready"
        );
        assert_eq!(explain_exit(1), "the handler's own exit status");
    }
}
