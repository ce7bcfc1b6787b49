//! `cargo xtask bench`: cold start, teardown and memory of worker-runtime against the
//! bash start.sh it replaces (xtask/bench/start.sh), side by side in one run, written to docs/BENCHMARKS.md and
//! docs/startup-timeline.svg.
//!
//! Each round runs every scenario once per launcher, alternating which launcher goes first, so
//! that a burst of load on the shared machine does not fall on one side only.

mod procfs;
mod report;
mod stats;
mod timeline;
mod trial;
mod webuis;

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use xshell::{cmd, Shell};

use report::Context as RunContext;
use trial::{Launcher, Outcome, Scenario, Setup, Trial};

pub use crate::flags::BenchArgs;

/// How long the demo's model load takes in the warm-up scenario (A1111's background load, which
/// runs after its API is up; 3-4 s on an H200).
const MODEL_LOAD: Duration = Duration::from_secs(1);

/// The settings of one bench, defaults filled in.
struct Params {
    runs: usize,
    webui_delay: Duration,
    grace: Duration,
    cap: Duration,
}

impl Params {
    fn from(args: &BenchArgs) -> Result<Params> {
        let pick = |given: Option<f64>, full: f64, quick: f64| -> f64 {
            given.unwrap_or(if args.quick { quick } else { full })
        };
        let seconds = |name: &str, value: f64| -> Result<Duration> {
            Duration::try_from_secs_f64(value)
                .ok()
                .filter(|d| !d.is_zero())
                .with_context(|| format!("--{name}: {value} is not a positive number of seconds"))
        };
        let params = Params {
            runs: args.runs.unwrap_or(if args.quick { 2 } else { 10 }),
            webui_delay: seconds("webui-delay", pick(args.webui_delay, 3.0, 1.5))?,
            grace: seconds("grace", pick(args.grace, 2.0, 0.5))?,
            cap: seconds("cap", pick(args.cap, 10.0, 1.5))?,
        };
        if params.runs == 0 {
            bail!("--runs: at least 1 run is needed");
        }
        if params.cap <= params.grace + Duration::from_millis(500) {
            bail!(
                "--cap ({:.1} s) must exceed --grace ({:.1} s) by more than 0.5 s: worker-runtime's \
                 teardown of a WebUI that ignores SIGTERM takes the grace, and must not be capped",
                params.cap.as_secs_f64(),
                params.grace.as_secs_f64()
            );
        }
        Ok(params)
    }
}

const SCENARIOS: [Scenario; 5] = [
    Scenario::Normal,
    Scenario::IgnoresSigterm,
    Scenario::CrashAtStart,
    Scenario::NoTcmalloc,
    Scenario::Warmup,
];

/// Which launchers run a scenario: the NO_TCMALLOC diagnostic is worker-runtime's alone (bash
/// never loads tcmalloc into itself, only into its children), and so is the warm-up (start.sh
/// has no notion of a model).
fn runs_scenario(launcher: Launcher, scenario: Scenario) -> bool {
    !matches!(scenario, Scenario::NoTcmalloc | Scenario::Warmup) || launcher == Launcher::Runtime
}

pub fn run(sh: &Shell, args: BenchArgs) -> Result<()> {
    if args.webuis {
        let runtime_bin = release_runtime(sh, args.runtime_bin.as_deref())?;
        return webuis::run(sh, &runtime_bin, args.runs.unwrap_or(3), !args.no_write);
    }
    let params = Params::from(&args)?;
    // `_work` holds the runs' temporary directory until the end.
    let (setup, _work) = prepare(sh, &args, &params)?;

    // Read with the build, so the page names the code that was measured even if the tree moves on
    // during the runs.
    let commit = commit(sh);
    let load_before = load_average();
    let started = Instant::now();
    println!(
        "bench: {} runs per launcher and scenario; WebUI start-up {:.1} s, SHUTDOWN_GRACE {:.1} s, \
         cap {:.0} s",
        params.runs,
        params.webui_delay.as_secs_f64(),
        params.grace.as_secs_f64(),
        params.cap.as_secs_f64()
    );
    // Untimed: the first run of a Python program pays for the page cache and bytecode. Skipped by
    // the smoke run, whose numbers nobody reads.
    let warm_up = !args.quick;
    let trials = run_rounds(&setup, &params, warm_up, args.verbose)?;
    let load_after = load_average();
    warn_if_handler_was_late(&trials);

    let ctx = RunContext {
        date: today(sh),
        command: exact_command(),
        cpus: std::thread::available_parallelism().map_or(0, |n| n.get()),
        cpu_model: cpu_model(),
        kernel: std::fs::read_to_string("/proc/sys/kernel/osrelease")
            .map(|s| s.trim().to_string())
            .unwrap_or_else(|_| "unknown".into()),
        load_before,
        load_after,
        commit,
        python: python_says(
            sh,
            &setup.python,
            "import platform; print(platform.python_version())",
        ),
        runpod: python_says(
            sh,
            &setup.python,
            "import runpod; print(runpod.__version__)",
        ),
        tcmalloc: tcmalloc_choice(&trials),
        runs: params.runs,
        webui_delay: params.webui_delay,
        grace: params.grace,
        cap: params.cap,
        model_load: MODEL_LOAD,
        warm_up,
    };
    let rows = report::rows(&trials, &ctx);
    println!("\n{}", report::console(&rows));
    let startup = report::startup_table(&trials);
    println!("{startup}");
    println!(
        "bench: {} runs in {:.0} s",
        trials.len() + if warm_up { 2 } else { 0 },
        started.elapsed().as_secs_f64()
    );
    if args.no_write {
        return Ok(());
    }
    write_pages(&trials, &ctx, &rows, &startup, params.webui_delay)
}

/// The worker-runtime the bench measures: `given` (--runtime-bin), else a release build of this
/// tree.
fn release_runtime(sh: &Shell, given: Option<&Path>) -> Result<PathBuf> {
    let runtime_bin = match given {
        Some(path) => path.to_path_buf(),
        None => {
            let cargo = crate::cargo();
            cmd!(sh, "{cargo} build --release --quiet -p runtime")
                .run()
                .context("building worker-runtime for the bench")?;
            crate::target_dir().join("release/worker-runtime")
        }
    };
    if !runtime_bin.is_file() {
        bail!("{}: no such worker-runtime binary", runtime_bin.display());
    }
    Ok(runtime_bin)
}

/// The binary, interpreter, WebUI and scripts both launchers run, checked before any run, and
/// the temporary directory the runs work in.
fn prepare(sh: &Shell, args: &BenchArgs, params: &Params) -> Result<(Setup, tempfile::TempDir)> {
    let root = crate::project_root();
    let runtime_bin = release_runtime(sh, args.runtime_bin.as_deref())?;
    // One interpreter for the WebUI and the handler: the project's .venv, which has the runpod
    // SDK (docker/requirements.txt); created or updated here when needed.
    let python = crate::python_env::ensure_venv(sh)?;
    let webui_dir = args
        .webui_dir
        .clone()
        .unwrap_or_else(|| root.join("docker/demo-webui"));
    check_demo_knobs(&webui_dir)?;

    let work = tempfile::Builder::new()
        .prefix("sd-worker-bench-")
        .tempdir()
        .context("cannot create the bench's temporary directory")?;
    prepare_work_dir(work.path())?;
    let setup = Setup {
        runtime_bin,
        reference_script: root.join("xtask/bench/start.sh"),
        reference_handler: root.join("xtask/bench/reference_handler.py"),
        handler: root.join("docker/handler.py"),
        webui_dir,
        python,
        work_dir: work.path().to_path_buf(),
        webui_delay: params.webui_delay,
        model_load: MODEL_LOAD,
        grace: params.grace,
        cap: params.cap,
    };
    for path in [
        &setup.reference_script,
        &setup.reference_handler,
        &setup.handler,
    ] {
        if !path.is_file() {
            bail!("{}: missing; the bench needs it", path.display());
        }
    }
    Ok((setup, work))
}

/// The untimed warm-up runs, then every round: both launchers on each scenario, in an order that
/// alternates from round to round.
fn run_rounds(setup: &Setup, params: &Params, warm_up: bool, verbose: bool) -> Result<Vec<Trial>> {
    for launcher in [Launcher::Reference, Launcher::Runtime]
        .into_iter()
        .filter(|_| warm_up)
    {
        let warm = trial::run(setup, launcher, Scenario::Normal)?;
        check(&warm, setup)?;
    }
    let mut trials: Vec<Trial> = Vec::new();
    let total = params.runs
        * SCENARIOS
            .iter()
            .flat_map(|s| [Launcher::Reference, Launcher::Runtime].map(|l| runs_scenario(l, *s)))
            .filter(|runs| *runs)
            .count();
    for round in 0..params.runs {
        let order = if round % 2 == 0 {
            [Launcher::Reference, Launcher::Runtime]
        } else {
            [Launcher::Runtime, Launcher::Reference]
        };
        for scenario in SCENARIOS {
            for launcher in order {
                if !runs_scenario(launcher, scenario) {
                    continue;
                }
                let trial = trial::run(setup, launcher, scenario)?;
                check(&trial, setup)?;
                println!(
                    "[{:>3}/{total}] round {:>2}  {:<15} {:<23} {}",
                    trials.len() + 1,
                    round + 1,
                    launcher.name(),
                    scenario.name(),
                    one_line(&trial)
                );
                if verbose {
                    println!("{}\n  marks: {:?}", trial.log_tail(usize::MAX), trial.marks);
                }
                trials.push(trial);
            }
        }
    }
    Ok(trials)
}

/// One line a Python snippet prints, or "unknown".
fn python_says(sh: &Shell, python: &Path, code: &str) -> String {
    cmd!(sh, "{python} -c {code}")
        .quiet()
        .read()
        .unwrap_or_else(|_| "unknown".into())
}

/// docs/BENCHMARKS.md (its hand-written GPU section kept) and docs/startup-timeline.svg.
fn write_pages(
    trials: &[Trial],
    ctx: &RunContext,
    rows: &[report::Row],
    startup: &str,
    webui_delay: Duration,
) -> Result<()> {
    let docs = crate::project_root().join("docs");
    std::fs::create_dir_all(&docs).context("cannot create docs/")?;
    let page_path = docs.join("BENCHMARKS.md");
    let existing = std::fs::read_to_string(&page_path).ok();
    let page = report::page(
        rows,
        ctx,
        &report::findings(trials, ctx),
        &report::crash_note(trials),
        startup,
        existing.as_deref(),
    );
    std::fs::write(&page_path, page)
        .with_context(|| format!("cannot write {}", page_path.display()))?;
    let (reference, runtime) = timeline_pair(trials)
        .context("no round has a complete normal run of both launchers to draw")?;
    let svg_path = docs.join("startup-timeline.svg");
    std::fs::write(&svg_path, timeline::svg(reference, runtime, webui_delay))
        .with_context(|| format!("cannot write {}", svg_path.display()))?;
    println!(
        "bench: wrote {} and {}",
        page_path.display(),
        svg_path.display()
    );
    Ok(())
}

/// The scenarios need two knobs of the demo WebUI; an older demo would silently run them as
/// normal runs.
fn check_demo_knobs(webui_dir: &Path) -> Result<()> {
    let script = webui_dir.join("webui.py");
    let text = std::fs::read_to_string(&script)
        .with_context(|| format!("cannot read {}", script.display()))?;
    for knob in ["DEMO_WEBUI_IGNORE_SIGTERM", "DEMO_WEBUI_EXIT_AT_START"] {
        if !text.contains(knob) {
            bail!(
                "{} does not know {knob}, which the bench's scenarios need",
                script.display()
            );
        }
    }
    Ok(())
}

/// The job, and the model folders the launchers pass to the WebUI (empty: the demo needs none).
fn prepare_work_dir(dir: &Path) -> Result<()> {
    for sub in ["models/checkpoints", "models/loras", "models/embeddings"] {
        std::fs::create_dir_all(dir.join(sub))
            .with_context(|| format!("cannot create {}", dir.join(sub).display()))?;
    }
    // The smallest job that goes through the handler to the WebUI and back.
    let job = r#"{"input": {"api": {"method": "GET", "endpoint": "/sdapi/v1/sd-models"}}}"#;
    std::fs::write(dir.join("test_input.json"), job).context("cannot write test_input.json")?;
    Ok(())
}

/// The UTC date a page's figures were measured on.
fn today(sh: &Shell) -> String {
    cmd!(sh, "date -u +%Y-%m-%d")
        .quiet()
        .read()
        .unwrap_or_else(|_| "unknown".into())
}

/// A run that went wrong invalidates the figures: stop and show why.
fn check(trial: &Trial, setup: &Setup) -> Result<()> {
    let m = &trial.marks;
    let problem = match (trial.scenario, trial.launcher, &trial.outcome) {
        (Scenario::Normal | Scenario::NoTcmalloc, _, Outcome::Exited(0)) => {
            if m.webui_ready.is_none() || m.serving.is_none() || m.job_done.is_none() {
                Some("the WebUI's ready line, the handler's serving line or the job's end is missing")
            } else if m.handler_exit.is_none() || m.webui_exit.is_none() {
                Some("the exit of the handler or of the WebUI was not seen")
            } else {
                None
            }
        }
        (Scenario::Normal | Scenario::NoTcmalloc, _, _) => {
            Some("the launcher did not exit with status 0")
        }
        (Scenario::Warmup, _, Outcome::Exited(0)) => {
            let phases = m.startup_report.as_ref().map(|r| &r["phases"]);
            if phases.is_none_or(|p| p["model_load"].is_null() || p["warmup"].is_null()) {
                Some("the start-up report, with its model and warm-up phases, is missing")
            } else {
                None
            }
        }
        (Scenario::Warmup, _, _) => Some("worker-runtime did not exit with status 0"),
        (Scenario::IgnoresSigterm, Launcher::Runtime, Outcome::Exited(0)) => {
            let took = m
                .launcher_exit
                .zip(m.handler_exit)
                .map(|(l, h)| l.saturating_sub(h));
            if took.is_some_and(|t| t < setup.grace) {
                Some("worker-runtime ended before the grace: the WebUI did not ignore SIGTERM")
            } else {
                None
            }
        }
        (Scenario::IgnoresSigterm, Launcher::Runtime, _) => {
            Some("worker-runtime did not pass the handler's status 0 through")
        }
        (Scenario::CrashAtStart, Launcher::Runtime, Outcome::Exited(code)) => {
            if m.noticed_crash.is_none() || *code == 0 {
                Some("worker-runtime did not report the WebUI's exit before ready")
            } else {
                None
            }
        }
        (Scenario::CrashAtStart, Launcher::Runtime, Outcome::Capped) => {
            Some("worker-runtime never ended")
        }
        // The reference is expected to be capped in both; ending by itself would be news, and
        // its figures are then measured like worker-runtime's.
        (_, Launcher::Reference, _) => None,
    };
    if let Some(problem) = problem {
        bail!(
            "{} ({}): {problem}; outcome {:?}. Its last lines:\n{}",
            trial.launcher.name(),
            trial.scenario.name(),
            trial.outcome,
            trial.log_tail(30)
        );
    }
    Ok(())
}

fn one_line(trial: &Trial) -> String {
    let m = &trial.marks;
    let ms = |a: Option<Duration>, b: Option<Duration>| -> String {
        match (a, b) {
            (Some(a), Some(b)) => format!("{:.1} ms", (b.as_secs_f64() - a.as_secs_f64()) * 1e3),
            _ => "n/a".into(),
        }
    };
    let rss = trial.peak_rss_kib.map_or_else(
        || "n/a".into(),
        |k| format!("{:.1} MB", k as f64 * 1024.0 / 1e6),
    );
    match (trial.scenario, &trial.outcome) {
        (Scenario::CrashAtStart, Outcome::Capped) => "never noticed the crash (capped)".into(),
        (Scenario::CrashAtStart, _) => format!(
            "crash reported {} after it, exit {:?}",
            ms(m.webui_exit, m.noticed_crash),
            trial.outcome
        ),
        (_, Outcome::Capped) => format!(
            "ready→serving {}, never exited after the handler (capped)",
            ms(m.webui_ready, m.serving)
        ),
        _ => format!(
            "ready→serving {}, teardown {}, RSS {rss}",
            ms(m.webui_ready, m.serving),
            ms(m.handler_exit, m.launcher_exit)
        ),
    }
}

/// The handler is meant to be done importing before the WebUI is up (as with A1111's 30-60 s
/// start); otherwise the readiness overhead includes its imports, for both launchers.
fn warn_if_handler_was_late(trials: &[Trial]) {
    let late = trials
        .iter()
        .filter(|t| t.scenario == Scenario::Normal)
        .filter(|t| {
            t.marks
                .imports_done
                .zip(t.marks.webui_ready)
                .is_some_and(|(i, r)| i > r)
        })
        .count();
    if late > 0 {
        println!(
            "bench: warning: in {late} run(s) the handler was still importing when the WebUI was \
             ready; raise --webui-delay for a clean readiness figure"
        );
    }
}

/// The round that best stands for all of them: both launchers' readiness overheads nearest their
/// medians (distances relative to each median, summed), so the picture shows typical runs.
fn timeline_pair(trials: &[Trial]) -> Option<(&Trial, &Trial)> {
    let normal = |launcher: Launcher| -> Vec<&Trial> {
        trials
            .iter()
            .filter(|t| t.launcher == launcher && t.scenario == Scenario::Normal)
            .collect()
    };
    let references = normal(Launcher::Reference);
    let runtimes = normal(Launcher::Runtime);
    let overhead = |t: &Trial| -> Option<f64> {
        Some(t.marks.serving?.as_secs_f64() - t.marks.webui_ready?.as_secs_f64())
    };
    let median = |runs: &[&Trial]| -> Option<f64> {
        let values: Vec<f64> = runs.iter().filter_map(|t| overhead(t)).collect();
        stats::Summary::of(&values).map(|s| s.median)
    };
    let (rt_median, rf_median) = (median(&runtimes)?, median(&references)?);
    let distance = |i: usize| -> Option<f64> {
        let rt = overhead(runtimes[i])?;
        let rf = overhead(references[i])?;
        Some(
            (rt - rt_median).abs() / rt_median.abs().max(1e-3)
                + (rf - rf_median).abs() / rf_median.abs().max(1e-3),
        )
    };
    let round = (0..runtimes.len().min(references.len()))
        .filter_map(|i| distance(i).map(|d| (i, d)))
        .min_by(|a, b| a.1.total_cmp(&b.1))?
        .0;
    Some((references[round], runtimes[round]))
}

fn exact_command() -> String {
    let args: Vec<String> = std::env::args().skip(1).collect();
    format!("cargo xtask {}", args.join(" "))
}

fn cpu_model() -> String {
    std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|info| {
            info.lines()
                .find(|l| l.starts_with("model name"))
                .and_then(|l| l.split(':').nth(1))
                .map(|m| m.trim().to_string())
        })
        .unwrap_or_else(|| "unknown CPU".into())
}

fn load_average() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .ok()
        .and_then(|l| l.split_whitespace().next().map(str::to_string))
        .unwrap_or_else(|| "?".into())
}

fn commit(sh: &Shell) -> String {
    let head = cmd!(sh, "git rev-parse --short HEAD")
        .quiet()
        .read()
        .unwrap_or_else(|_| "unknown".into());
    // Only what is measured counts: the generated docs themselves, or someone else's work in
    // progress elsewhere in the tree, do not change the figures.
    let measured = [
        "runtime",
        "docker/handler.py",
        "docker/sdhandler",
        "docker/demo-webui",
        "docker/requirements.txt",
        "xtask/bench",
        "xtask/src/bench.rs",
        "xtask/src/bench",
    ];
    let dirty = cmd!(
        sh,
        "git status --porcelain --untracked-files=no -- {measured...}"
    )
    .quiet()
    .read()
    .map(|s| !s.trim().is_empty())
    .unwrap_or(false);
    if dirty {
        format!("commit {head} (with uncommitted changes to what is measured)")
    } else {
        format!("commit {head}")
    }
}

/// What each launcher preloaded, from their own words.
fn tcmalloc_choice(trials: &[Trial]) -> String {
    let runtime = trials
        .iter()
        .filter(|t| t.launcher == Launcher::Runtime)
        .flat_map(|t| t.log.iter())
        .find_map(|(_, line)| line.split("tcmalloc: ").nth(1).map(str::to_string))
        .unwrap_or_else(|| "worker-runtime: not reported".into());
    format!("start.sh: LD_PRELOAD=libtcmalloc.so.N from ldconfig; worker-runtime: {runtime}")
}
