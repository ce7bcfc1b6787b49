//! `cargo xtask bench --webuis`: the real A1111 (prepared by `cargo xtask a1111`) side by side with
//! the demo WebUI, both started by worker-runtime as a worker starts them: launch → API answers,
//! → model loaded, the first job, a warm 64x64 job, the WebUI's memory. Written into
//! docs/BENCHMARKS.md as its own section, with docs/startup-timeline-webuis.svg.

use std::fmt::Write as _;
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use xshell::Shell;

use runtime::webui_log::{figure_after, MODEL_LOADED_IN, STARTUP_TIME};

use super::procfs;
use super::stats::Summary;
use crate::a1111;

pub const HEADING: &str = "## The real WebUI against the demo";
const TIMELINE_SVG: &str = "startup-timeline-webuis.svg";
const JOB: &str = r#"{"prompt": "bench", "seed": 1, "steps": 1, "width": 64, "height": 64}"#;
const WARM_JOBS: usize = 3;

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Kind {
    Demo,
    A1111,
}

impl Kind {
    fn name(self) -> &'static str {
        match self {
            Kind::Demo => "demo WebUI",
            Kind::A1111 => "real A1111 v1.10.1",
        }
    }
}

/// One start of a worker, seconds since launch unless named otherwise.
#[derive(Debug, Clone)]
struct Run {
    kind: Kind,
    api: f64,
    gate: Option<f64>,
    model_loaded: Option<f64>,
    first_job_done: f64,
    /// The first job's own duration (sent the moment the API answered).
    first_job: f64,
    warm_job: f64,
    rss_mb: f64,
    hwm_mb: f64,
    /// A1111's own "Startup time" and "Model loaded in", read as worker-runtime reads them.
    a1111_startup: Option<f64>,
    a1111_model_loaded: Option<f64>,
}

pub fn run(sh: &Shell, runtime_bin: &Path, runs: usize, write: bool) -> Result<()> {
    let root = crate::project_root();
    let python = crate::python_env::ensure_venv(sh)?;
    let prepared = a1111::prepare(&a1111::A1111Args::default())?;
    let work = tempfile::Builder::new()
        .prefix("sd-worker-bench-webuis-")
        .tempdir()?;
    let setup = Setup {
        runtime_bin: runtime_bin.to_path_buf(),
        python,
        prepared,
        idle_handler: root.join("xtask/bench/idle_handler.py"),
        work: work.path().to_path_buf(),
    };

    let mut all = Vec::new();
    for round in 0..runs {
        // Alternate which goes first, so a burst of load does not fall on one side only.
        let order = if round % 2 == 0 {
            [Kind::A1111, Kind::Demo]
        } else {
            [Kind::Demo, Kind::A1111]
        };
        for kind in order {
            let run = setup.run(kind, round)?;
            println!(
                "bench webuis: round {} {}: API {:.2} s, model {}, first job done {:.2} s, warm job {:.0} ms, RSS {:.0} MB",
                round + 1,
                kind.name(),
                run.api,
                run.model_loaded.map_or("-".into(), |m| format!("{m:.2} s")),
                run.first_job_done,
                run.warm_job * 1000.0,
                run.rss_mb
            );
            all.push(run);
        }
    }
    let section = section(&all, runs, &super::today(sh));
    println!("\n{section}");
    if write {
        let page_path = root.join("docs/BENCHMARKS.md");
        let existing = std::fs::read_to_string(&page_path).unwrap_or_default();
        std::fs::write(&page_path, splice(&existing, &section))?;
        let typical = typical_a1111(&all).context("no A1111 run to draw")?;
        std::fs::write(root.join("docs").join(TIMELINE_SVG), timeline_svg(&typical))?;
        println!("bench webuis: wrote docs/BENCHMARKS.md and docs/{TIMELINE_SVG}");
    }
    Ok(())
}

struct Setup {
    runtime_bin: PathBuf,
    python: PathBuf,
    prepared: a1111::Prepared,
    idle_handler: PathBuf,
    work: PathBuf,
}

impl Setup {
    fn command(&self, kind: Kind, round: usize) -> Result<(Command, u16)> {
        let port = procfs::free_port()?;
        let dir = self.work.join(format!("{kind:?}-{round}"));
        std::fs::create_dir_all(dir.join("volume"))?;
        let mut command = Command::new(&self.runtime_bin);
        command
            .env_clear()
            .env("PATH", std::env::var_os("PATH").unwrap_or_default())
            .env("HOME", std::env::var_os("HOME").unwrap_or_default())
            .env("WEBUI_PORT", port.to_string())
            .env("HANDLER_PATH", &self.idle_handler)
            .env("HANDLER_PYTHON", &self.python)
            .env("CUDA_CHECK", "off")
            .env("WEBUI_DEVICE", "cpu")
            .env("WEBUI_READY", "warmup")
            .env("LORA_DIR", dir.join("volume"))
            .env("EMBEDDINGS_DIR", dir.join("volume"))
            .stdin(Stdio::null());
        match kind {
            Kind::Demo => {
                let model = dir.join("model.safetensors");
                std::fs::write(&model, "demo placeholder")?;
                command
                    .env("WEBUI_DIR", crate::project_root().join("docker/demo-webui"))
                    .env("WEBUI_PYTHON", &self.python)
                    .env("MODEL_PATH", model)
                    .env("CKPT_DIR", dir.join("volume"));
            }
            Kind::A1111 => {
                for (key, value) in self.prepared.settings() {
                    command.env(key, value);
                }
                let data = dir.join("webui-data");
                self.prepared.make_data_dir(&data)?;
                command.env("WEBUI_EXTRA_ARGS", format!("--data-dir {}", data.display()));
            }
        }
        Ok((command, port))
    }

    fn run(&self, kind: Kind, round: usize) -> Result<Run> {
        let (mut command, port) = self.command(kind, round)?;
        let (reader, writer) = std::io::pipe()?;
        command.stdout(writer.try_clone()?).stderr(writer);
        let launched = Instant::now();
        let mut child = command.spawn().context("starting worker-runtime")?;
        drop(command);
        let lines = read_lines(reader, launched);
        let result = measure(kind, port, launched, &lines);
        stop(&mut child);
        let log: Vec<(f64, String)> = lines.try_iter().collect();
        let mut run = match result {
            Ok(run) => run,
            Err(e) => {
                let tail: Vec<&str> = log.iter().rev().take(30).map(|(_, l)| l.as_str()).collect();
                bail!(
                    "{} run failed: {e}\n{}",
                    kind.name(),
                    tail.into_iter().rev().collect::<Vec<_>>().join("\n")
                );
            }
        };
        for (at, line) in &log {
            // Read from the lines, as the runtime reads them: the start-up report comes only
            // once the gate opens, which a run may end before.
            if let Some(seconds) = figure_after(line, MODEL_LOADED_IN) {
                if run.model_loaded.is_none() {
                    run.model_loaded = Some(*at);
                    run.a1111_model_loaded = Some(seconds);
                }
            }
            if run.a1111_startup.is_none() {
                run.a1111_startup = figure_after(line, STARTUP_TIME);
            }
            if line.contains("idle-handler: gate open") && run.gate.is_none() {
                run.gate = Some(*at);
            }
        }
        Ok(run)
    }
}

fn read_lines(reader: std::io::PipeReader, launched: Instant) -> mpsc::Receiver<(f64, String)> {
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(reader).lines() {
            let Ok(line) = line else { break };
            if tx.send((launched.elapsed().as_secs_f64(), line)).is_err() {
                break;
            }
        }
    });
    rx
}

fn measure(
    kind: Kind,
    port: u16,
    launched: Instant,
    lines: &mpsc::Receiver<(f64, String)>,
) -> Result<Run> {
    let agent: ureq::Agent = ureq::Agent::config_builder()
        .http_status_as_error(false)
        .proxy(None)
        .max_redirects(0)
        .timeout_global(Some(Duration::from_secs(300)))
        .build()
        .into();
    let base = format!("http://127.0.0.1:{port}");
    let deadline = launched + Duration::from_secs(300);
    let webui_pid = loop {
        if let Ok((_, line)) = lines.recv_timeout(Duration::from_millis(50)) {
            if let Some(pid) = line.split("WebUI API started with PID: ").nth(1) {
                break pid.trim().parse::<i32>().context("the WebUI's PID")?;
            }
        }
        if Instant::now() > deadline {
            bail!("worker-runtime never started the WebUI");
        }
    };
    let api = loop {
        let answered = agent
            .get(format!("{base}/sdapi/v1/sd-models"))
            .call()
            .is_ok_and(|r| r.status().as_u16() == 200);
        if answered {
            break launched.elapsed().as_secs_f64();
        }
        if Instant::now() > deadline {
            bail!("the API did not answer within 300 s");
        }
        std::thread::sleep(Duration::from_millis(10));
    };
    let job = |agent: &ureq::Agent| -> Result<f64> {
        let started = Instant::now();
        let mut answer = agent
            .post(format!("{base}/sdapi/v1/txt2img"))
            .header("Content-Type", "application/json")
            .send(JOB)
            .context("txt2img")?;
        let status = answer.status().as_u16();
        let body = answer.body_mut().read_to_string().unwrap_or_default();
        if status != 200 || !body.contains("\"images\"") {
            bail!(
                "txt2img answered {status}: {}",
                body.chars().take(300).collect::<String>()
            );
        }
        Ok(started.elapsed().as_secs_f64())
    };
    let first_job = job(&agent)?;
    let first_job_done = launched.elapsed().as_secs_f64();
    let mut warm = Vec::new();
    for _ in 0..WARM_JOBS {
        warm.push(job(&agent)?);
    }
    let warm_job = Summary::of(&warm).map_or(0.0, |s| s.median);
    let (mut rss, mut hwm) = (0u64, 0u64);
    for pid in std::iter::once(webui_pid).chain(procfs::descendants(webui_pid)) {
        if let Some((h, r)) = procfs::memory_kib(pid) {
            hwm += h;
            rss += r;
        }
    }
    Ok(Run {
        kind,
        api,
        gate: None,
        model_loaded: None,
        first_job_done,
        first_job,
        warm_job,
        rss_mb: rss as f64 / 1024.0,
        hwm_mb: hwm as f64 / 1024.0,
        a1111_startup: None,
        a1111_model_loaded: None,
    })
}

fn stop(child: &mut Child) {
    let pid = child.id() as i32;
    let _ = nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(pid),
        nix::sys::signal::Signal::SIGTERM,
    );
    let deadline = Instant::now() + Duration::from_secs(30);
    while Instant::now() < deadline {
        if let Ok(Some(_)) = child.try_wait() {
            return;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    procfs::kill_tree(pid);
    let _ = child.wait();
}

fn summary(runs: &[Run], kind: Kind, value: impl Fn(&Run) -> Option<f64>) -> Option<Summary> {
    let samples: Vec<f64> = runs
        .iter()
        .filter(|r| r.kind == kind)
        .filter_map(value)
        .collect();
    Summary::of(&samples)
}

fn cell(s: Option<Summary>, unit: &str, scale: f64, decimals: usize) -> String {
    match s {
        Some(s) => format!(
            "{:.*} {unit} ({:.*}–{:.*})",
            decimals,
            s.median * scale,
            decimals,
            s.min * scale,
            decimals,
            s.max * scale
        ),
        None => "–".into(),
    }
}

fn section(runs: &[Run], rounds: usize, date: &str) -> String {
    type Getter = fn(&Run) -> Option<f64>;
    let rows: [(&str, Getter, &str, f64, usize); 7] = [
        (
            "Launch → API answers 200 (`GET /sdapi/v1/sd-models`)",
            |r| Some(r.api),
            "s",
            1.0,
            2,
        ),
        (
            "Launch → readiness gate open (`WEBUI_READY=warmup`: model loaded, a 1-step image made)",
            |r| r.gate,
            "s",
            1.0,
            2,
        ),
        (
            "Launch → model loaded (the WebUI's `Model loaded in` line)",
            |r| r.model_loaded,
            "s",
            1.0,
            2,
        ),
        (
            "First 64x64 1-step job, sent the moment the API answered",
            |r| Some(r.first_job),
            "s",
            1.0,
            2,
        ),
        (
            "Launch → first job done",
            |r| Some(r.first_job_done),
            "s",
            1.0,
            2,
        ),
        (
            "A 64x64 1-step job once warm (median of 3)",
            |r| Some(r.warm_job),
            "ms",
            1000.0,
            0,
        ),
        (
            "WebUI resident memory after the jobs (VmRSS, its process tree)",
            |r| Some(r.rss_mb),
            "MB",
            1.0,
            0,
        ),
    ];
    let mut out = String::new();
    let _ = writeln!(out, "{HEADING}\n");
    let _ = writeln!(
        out,
        "<!-- Generated by `cargo xtask bench --webuis` (xtask/src/bench/webuis.rs); kept verbatim by the \
         launcher bench. -->\n"
    );
    let _ = writeln!(
        out,
        "worker-runtime (release build, `WEBUI_DEVICE=cpu`, a handler that only waits at the gate) \
         starting the demo WebUI and the real AUTOMATIC1111 v1.10.1 prepared by `cargo xtask a1111` \
         (torch 2.8.0 on the CPU, the 264 MB test checkpoint `test-a`), {rounds} alternating rounds, \
         on this 2-core build machine ({date}). The bench sends its jobs straight to the WebUI.\n",
    );
    let _ = writeln!(
        out,
        "| Figure | demo WebUI: median (min–max) | real A1111: median (min–max) |"
    );
    let _ = writeln!(out, "|---|---|---|");
    for (label, get, unit, scale, decimals) in rows {
        let _ = writeln!(
            out,
            "| {label} | {} | {} |",
            cell(summary(runs, Kind::Demo, get), unit, scale, decimals),
            cell(summary(runs, Kind::A1111, get), unit, scale, decimals)
        );
    }
    let peak = summary(runs, Kind::A1111, |r| Some(r.hwm_mb));
    let own: Vec<String> = runs
        .iter()
        .filter(|r| r.kind == Kind::A1111)
        .map(|r| {
            let figure = |f: Option<f64>| f.map_or("?".to_string(), |s| format!("{s:.1}s"));
            format!(
                "\"Startup time: {}\" / \"Model loaded in {}\"",
                figure(r.a1111_startup),
                figure(r.a1111_model_loaded)
            )
        })
        .collect();
    let _ = writeln!(
        out,
        "\nA1111's own figures, run by run: {}. Peak resident memory of A1111's process (VmHWM): {}.",
        own.join("; "),
        cell(peak, "MB", 1.0, 0)
    );
    let _ = writeln!(
        out,
        "\nThe real WebUI's API answers well before its model is loaded (A1111 loads it in a \
         background thread): a job sent at that moment waits for the load. The demo only \
         imitates the order of those events.\n"
    );
    let _ = writeln!(
        out,
        "![Start-up of the real A1111 under worker-runtime]({TIMELINE_SVG})\n\n\
         [docs/{TIMELINE_SVG}]({TIMELINE_SVG}): the A1111 run nearest the median API time.\n"
    );
    out
}

/// The page with this section in place of the old one, else before the GPU section, else at
/// the end.
pub fn splice(existing: &str, section: &str) -> String {
    if let Some(old) = super::report::kept_section(existing, HEADING) {
        return existing.replacen(&old, section, 1);
    }
    if let Some(gpu) = super::report::kept_section(existing, super::report::GPU_HEADING) {
        return existing.replacen(&gpu, &format!("{section}{gpu}"), 1);
    }
    format!("{existing}\n{section}")
}

fn typical_a1111(runs: &[Run]) -> Option<Run> {
    let median = summary(runs, Kind::A1111, |r| Some(r.api))?.median;
    runs.iter()
        .filter(|r| r.kind == Kind::A1111)
        .min_by(|a, b| (a.api - median).abs().total_cmp(&(b.api - median).abs()))
        .cloned()
}

/// Phases as bars on one time axis.
fn timeline_svg(run: &Run) -> String {
    let end = run.first_job_done.max(run.model_loaded.unwrap_or(0.0)) * 1.05;
    let (left, width, row) = (260.0, 600.0, 34.0);
    let x = |t: f64| left + t / end * width;
    let mut phases: Vec<(String, f64, f64, &str)> = vec![(
        "WebUI start-up: imports, API bound".into(),
        0.0,
        run.api,
        "#4e79a7",
    )];
    if let Some(m) = run.model_loaded {
        phases.push((
            "model load (background thread)".into(),
            run.api.min(m),
            m,
            "#f28e2b",
        ));
    }
    if let Some(g) = run.gate {
        phases.push((
            "gate open → handler serves".into(),
            g,
            g + end * 0.004,
            "#59a14f",
        ));
    }
    phases.push((
        "first 64x64 job (waits for the model)".into(),
        run.first_job_done - run.first_job,
        run.first_job_done,
        "#e15759",
    ));
    let height = 60.0 + row * phases.len() as f64 + 30.0;
    let mut svg = format!(
        "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"980\" height=\"{height}\" font-family=\"sans-serif\" font-size=\"13\">\n\
         <rect width=\"100%\" height=\"100%\" fill=\"white\"/>\n\
         <text x=\"10\" y=\"22\" font-size=\"15\" font-weight=\"bold\">Real A1111 v1.10.1 under worker-runtime (CPU): seconds since launch</text>\n"
    );
    for (i, (label, from, to, colour)) in phases.iter().enumerate() {
        let y = 45.0 + row * i as f64;
        let _ = writeln!(
            svg,
            "<text x=\"10\" y=\"{:.0}\">{label}</text><rect x=\"{:.1}\" y=\"{y:.0}\" width=\"{:.1}\" height=\"20\" fill=\"{colour}\"/><text x=\"{:.1}\" y=\"{:.0}\">{from:.2}–{to:.2} s</text>",
            y + 15.0,
            x(*from),
            (x(*to) - x(*from)).max(2.0),
            x(*to) + 5.0,
            y + 15.0
        );
    }
    let axis_y = 45.0 + row * phases.len() as f64 + 5.0;
    let _ = writeln!(
        svg,
        "<line x1=\"{left}\" y1=\"{axis_y}\" x2=\"{:.0}\" y2=\"{axis_y}\" stroke=\"black\"/>",
        left + width
    );
    let step = if end > 20.0 { 5.0 } else { 1.0 };
    let mut t = 0.0;
    while t <= end {
        let _ = writeln!(
            svg,
            "<line x1=\"{:.1}\" y1=\"{axis_y}\" x2=\"{:.1}\" y2=\"{:.0}\" stroke=\"black\"/><text x=\"{:.1}\" y=\"{:.0}\" text-anchor=\"middle\">{t:.0}</text>",
            x(t),
            x(t),
            axis_y + 5.0,
            x(t),
            axis_y + 20.0
        );
        t += step;
    }
    svg.push_str("</svg>\n");
    svg
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_section_replaces_its_old_self_and_otherwise_goes_before_the_gpu_section() {
        let gpu = format!("{}\n\nby hand\n", super::super::report::GPU_HEADING);
        let page = format!("# B\n\n## Results\n\nx\n\n{gpu}");
        let first = splice(&page, &format!("{HEADING}\n\nv1\n\n"));
        assert!(
            first.contains("v1") && first.find("v1") < first.find("by hand"),
            "{first}"
        );
        let second = splice(&first, &format!("{HEADING}\n\nv2\n\n"));
        assert!(second.contains("v2") && !second.contains("v1"), "{second}");
        assert!(second.ends_with(&gpu), "{second}");
    }
}
