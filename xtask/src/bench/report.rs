// tidy: long because most of it is the page's text (docs/BENCHMARKS.md), written as one template.
//! The figures from a set of runs, and docs/BENCHMARKS.md around them.

use std::fmt::Write as _;
use std::time::Duration;

use super::stats::{self, Summary};
use super::trial::{Launcher, Outcome, Scenario, Trial};

/// The heading of the section another engineer writes by hand (figures from a GPU machine); the
/// generator keeps it verbatim.
pub const GPU_HEADING: &str = "## GPU: cuda-check vs the Python/torch check";
/// Written by hand from `cargo xtask image` builds (sizes, build times), not by the bench.
pub const IMAGE_HEADING: &str = "## The WebUI image";

/// What a run was measured under, for the page and the console.
pub struct Context {
    pub date: String,
    pub command: String,
    pub cpus: usize,
    pub cpu_model: String,
    pub kernel: String,
    pub load_before: String,
    pub load_after: String,
    pub commit: String,
    pub python: String,
    pub runpod: String,
    pub tcmalloc: String,
    pub runs: usize,
    pub webui_delay: Duration,
    pub grace: Duration,
    pub cap: Duration,
    pub model_load: Duration,
    pub warm_up: bool,
}

/// One value of a table cell: measured, or the launcher never got there.
pub enum Cell {
    Measured(Summary),
    /// Every run was stopped at the cap: the launcher would have gone on for ever.
    Never(String),
    Missing,
}

pub struct Row {
    pub figure: &'static str,
    pub goal: String,
    pub unit: &'static str,
    pub fmt: fn(f64) -> String,
    pub runtime: Cell,
    pub reference: Cell,
    /// Some(met) when the row has a goal checked against worker-runtime's median.
    pub met: Option<bool>,
}

fn ms_between(a: Option<Duration>, b: Option<Duration>) -> Option<f64> {
    Some((b?.as_secs_f64() - a?.as_secs_f64()) * 1000.0)
}

/// Marks count from the launcher's spawn, so a mark alone is the time since launch.
fn ms_after_launch(mark: Option<Duration>) -> Option<f64> {
    mark.map(|d| d.as_secs_f64() * 1000.0)
}

fn samples(
    trials: &[Trial],
    launcher: Launcher,
    scenario: Scenario,
    value: impl Fn(&Trial) -> Option<f64>,
) -> Vec<f64> {
    trials
        .iter()
        .filter(|t| t.launcher == launcher && t.scenario == scenario)
        .filter(|t| t.outcome != Outcome::Capped)
        .filter_map(value)
        .collect()
}

fn capped_all(trials: &[Trial], launcher: Launcher, scenario: Scenario) -> bool {
    let mut runs = trials
        .iter()
        .filter(|t| t.launcher == launcher && t.scenario == scenario)
        .peekable();
    runs.peek().is_some() && runs.all(|t| t.outcome == Outcome::Capped)
}

fn cell(
    trials: &[Trial],
    launcher: Launcher,
    scenario: Scenario,
    never: &str,
    value: impl Fn(&Trial) -> Option<f64>,
) -> Cell {
    if capped_all(trials, launcher, scenario) {
        return Cell::Never(never.to_string());
    }
    match Summary::of(&samples(trials, launcher, scenario, value)) {
        Some(s) => Cell::Measured(s),
        None => Cell::Missing,
    }
}

/// The goals worker-runtime is held to, for the table's "met" column and the findings alike.
const READINESS_GOAL_MS: f64 = 30.0;
const TEARDOWN_GOAL_MS: f64 = 100.0;
const RSS_GOAL_MB: f64 = 10.0;

/// Every figure the bench reads from one run, defined once: the table's rows and the findings'
/// sentences both take them from here.
mod metric {
    use super::{ms_after_launch, ms_between, Trial};

    /// The WebUI's first possible 200 → the handler serving.
    pub fn readiness(t: &Trial) -> Option<f64> {
        ms_between(t.marks.webui_ready, t.marks.serving)
    }
    /// Handler exit → launcher exit.
    pub fn teardown(t: &Trial) -> Option<f64> {
        ms_between(t.marks.handler_exit, t.marks.launcher_exit)
    }
    /// Handler exit → WebUI exit: the WebUI's own shutdown.
    pub fn webui_shutdown(t: &Trial) -> Option<f64> {
        ms_between(t.marks.handler_exit, t.marks.webui_exit)
    }
    /// WebUI exit → launcher exit: the launcher's own part.
    pub fn after_webui_exit(t: &Trial) -> Option<f64> {
        ms_between(t.marks.webui_exit, t.marks.launcher_exit)
    }
    /// The launcher's own peak RSS (VmHWM), in MB.
    pub fn peak_rss_mb(t: &Trial) -> Option<f64> {
        t.peak_rss_kib.map(|k| k as f64 * 1024.0 / 1e6)
    }
    /// Launch → the launcher reports the WebUI's crash.
    pub fn crash_reported(t: &Trial) -> Option<f64> {
        ms_after_launch(t.marks.noticed_crash)
    }
    /// Launch → the WebUI's PID line.
    pub fn webui_started(t: &Trial) -> Option<f64> {
        ms_after_launch(t.marks.webui_started)
    }
    /// Launch → the handler serving.
    pub fn cold_start(t: &Trial) -> Option<f64> {
        ms_after_launch(t.marks.serving)
    }
}

pub fn rows(trials: &[Trial], ctx: &Context) -> Vec<Row> {
    use Launcher::{Reference, Runtime};
    use Scenario::{CrashAtStart, IgnoresSigterm, NoTcmalloc, Normal};
    let cap = ctx.cap.as_secs_f64();
    let grace = ctx.grace.as_secs_f64();
    let both = |scenario: Scenario, never: &str, value: fn(&Trial) -> Option<f64>| {
        (
            cell(trials, Runtime, scenario, never, value),
            cell(trials, Reference, scenario, never, value),
        )
    };
    let mut rows = Vec::new();

    rows.push(goal_row(
        "1. Readiness overhead: WebUI answers 200 → handler serving",
        &format!("< {READINESS_GOAL_MS} ms median"),
        READINESS_GOAL_MS,
        "ms",
        stats::ms,
        both(Normal, "", metric::readiness),
    ));

    rows.push(goal_row(
        "2a. Teardown, WebUI obeys SIGTERM: handler exit → launcher exit",
        &format!("< {TEARDOWN_GOAL_MS} ms"),
        TEARDOWN_GOAL_MS,
        "ms",
        stats::ms,
        both(Normal, "", metric::teardown),
    ));
    rows.push(context_row(
        "↳ of which the WebUI's own shutdown (handler exit → WebUI exit)",
        "ms",
        stats::ms,
        both(Normal, "", metric::webui_shutdown),
    ));
    rows.push(context_row(
        "↳ the launcher's own part (WebUI exit → launcher exit)",
        "ms",
        stats::ms,
        both(Normal, "", metric::after_webui_exit),
    ));
    let never_teardown =
        format!("never: `wait` hangs on the WebUI (stopped by the bench after {cap} s)");
    let (runtime, reference) = both(IgnoresSigterm, &never_teardown, metric::teardown);
    let met = match &runtime {
        Cell::Measured(s) => Some(s.max <= (grace + 0.5) * 1000.0),
        _ => None,
    };
    rows.push(Row {
        figure: "2b. Teardown, WebUI ignores SIGTERM: handler exit → launcher exit",
        goal: format!("bounded by SHUTDOWN_GRACE ({grace} s here)"),
        unit: "ms",
        fmt: stats::ms,
        runtime,
        reference,
        met,
    });

    let rss_goal = format!("< {RSS_GOAL_MB} MB");
    rows.push(goal_row(
        "3. Launcher's own peak RSS while the WebUI runs (VmHWM)",
        &rss_goal,
        RSS_GOAL_MB,
        "MB",
        stats::mb,
        both(Normal, "", metric::peak_rss_mb),
    ));
    rows.push(goal_row(
        "↳ worker-runtime with NO_TCMALLOC=1 (diagnostic: tcmalloc in its own process)",
        &rss_goal,
        RSS_GOAL_MB,
        "MB",
        stats::mb,
        (
            cell(trials, Runtime, NoTcmalloc, "", metric::peak_rss_mb),
            cell(trials, Reference, Normal, "", metric::peak_rss_mb),
        ),
    ));

    let never_crash = format!(
        "never: the handler's wait loop has no time limit (stopped by the bench {cap} s after the crash)"
    );
    rows.push(context_row(
        "4. WebUI crashes at start: launch → launcher reports it",
        "ms",
        stats::ms,
        both(CrashAtStart, &never_crash, metric::crash_reported),
    ));
    rows.push(context_row(
        "↳ WebUI exit → launcher exits (the container ends; RunPod can replace it)",
        "ms",
        stats::ms,
        both(CrashAtStart, &never_crash, metric::after_webui_exit),
    ));

    rows.push(context_row(
        "Launcher start: launch → WebUI started (its PID line)",
        "ms",
        stats::ms,
        both(Normal, "", metric::webui_started),
    ));
    rows.push(context_row(
        "Cold start: launch → handler serving (WebUI start-up included)",
        "ms",
        stats::ms,
        both(Normal, "", metric::cold_start),
    ));
    rows
}

fn goal_row(
    figure: &'static str,
    goal: &str,
    limit: f64,
    unit: &'static str,
    fmt: fn(f64) -> String,
    (runtime, reference): (Cell, Cell),
) -> Row {
    let met = match &runtime {
        Cell::Measured(s) => Some(s.median < limit),
        _ => None,
    };
    Row {
        figure,
        goal: goal.to_string(),
        unit,
        fmt,
        runtime,
        reference,
        met,
    }
}

fn context_row(
    figure: &'static str,
    unit: &'static str,
    fmt: fn(f64) -> String,
    (runtime, reference): (Cell, Cell),
) -> Row {
    Row {
        figure,
        goal: String::new(),
        unit,
        fmt,
        runtime,
        reference,
        met: None,
    }
}

fn show_cell(cell: &Cell, row: &Row) -> String {
    match cell {
        Cell::Measured(s) => s.show(row.unit, row.fmt),
        Cell::Never(text) => text.clone(),
        Cell::Missing => "not measured".into(),
    }
}

fn show_ratio(row: &Row) -> String {
    match (&row.runtime, &row.reference) {
        (Cell::Measured(a), Cell::Measured(b)) => stats::ratio(a.median, b.median),
        (Cell::Measured(_), Cell::Never(_)) => "finite vs never".into(),
        _ => "n/a".into(),
    }
}

fn show_met(row: &Row) -> &'static str {
    match row.met {
        Some(true) => "yes",
        Some(false) => "**no**",
        None => "",
    }
}

/// The results table, in Markdown (also what the console shows).
pub fn table(rows: &[Row]) -> String {
    let mut out = String::new();
    out.push_str(
        "| Figure | Goal | worker-runtime: median (min–max) | start.sh: median (min–max) \
         | worker-runtime ÷ start.sh | Goal met |\n",
    );
    out.push_str("|---|---|---|---|---|---|\n");
    for row in rows {
        let _ = writeln!(
            out,
            "| {} | {} | {} | {} | {} | {} |",
            row.figure,
            row.goal,
            show_cell(&row.runtime, row),
            show_cell(&row.reference, row),
            show_ratio(row),
            show_met(row)
        );
    }
    out
}

/// A plain-text version for the console.
pub fn console(rows: &[Row]) -> String {
    let mut out = String::new();
    for row in rows {
        let _ = writeln!(out, "{}", row.figure);
        let _ = writeln!(out, "    worker-runtime  {}", show_cell(&row.runtime, row));
        let _ = writeln!(
            out,
            "    start.sh        {}",
            show_cell(&row.reference, row)
        );
        let ratio = show_ratio(row);
        if ratio != "n/a" {
            let _ = write!(out, "    ratio           {ratio}");
            if !row.goal.is_empty() {
                let _ = write!(
                    out,
                    "   goal {}: {}",
                    row.goal,
                    show_met(row).replace('*', "")
                );
            }
            out.push('\n');
        }
    }
    out
}

/// The GPU section of an existing page: from its heading to the next level-2 heading or the end,
/// byte for byte.
pub fn gpu_section(existing: &str) -> Option<String> {
    kept_section(existing, GPU_HEADING)
}

/// A section of an existing page that another tool writes, from its heading (at the start of a
/// line) to the next level-2 heading or the end, byte for byte.
pub fn kept_section(existing: &str, heading: &str) -> Option<String> {
    let start = existing
        .match_indices(heading)
        .find(|(i, _)| *i == 0 || existing.as_bytes()[i - 1] == b'\n')?
        .0;
    let after_heading = start + heading.len();
    let end = existing[after_heading..]
        .match_indices("\n## ")
        .next()
        .map_or(existing.len(), |(i, _)| after_heading + i + 1);
    Some(existing[start..end].to_string())
}

const GPU_PLACEHOLDER: &str = "\
## GPU: cuda-check vs the Python/torch check

Not measured yet: this section is written by hand from runs on a GPU machine, not by
`cargo xtask bench`, which keeps it as it is.
";

fn median(
    trials: &[Trial],
    launcher: Launcher,
    scenario: Scenario,
    value: impl Fn(&Trial) -> Option<f64>,
) -> Option<f64> {
    Summary::of(&samples(trials, launcher, scenario, value)).map(|s| s.median)
}

/// worker-runtime's own start-up report (its JSON line), phase by phase: median (min–max) over
/// the normal runs (WEBUI_READY=api, as start.sh) and the warm-up runs (the default).
pub fn startup_table(trials: &[Trial]) -> String {
    let rows: [(&str, &str, &str); 10] = [
        ("total: launch → ready", "total", ""),
        ("GPU check (`CUDA_CHECK=off` here)", "phases", "gpu_check"),
        ("tcmalloc re-exec", "phases", "tcmalloc"),
        ("WebUI start → API answers", "phases", "webui_api"),
        ("API → model loaded", "phases", "model_load"),
        ("model → warm-up image", "phases", "warmup"),
        (
            "handler start → at the gate (its imports)",
            "phases",
            "handler_imports",
        ),
        ("handler waits at the gate", "phases", "gate"),
        ("the WebUI's own \"Startup time\"", "webui", "startup_time"),
        (
            "the WebUI's own \"Model loaded in\"",
            "webui",
            "model_loaded_in",
        ),
    ];
    let mut out = String::from(
        "| Phase (ms) | `WEBUI_READY=api` (normal runs) | `WEBUI_READY=warmup` |\n|---|---|---|\n",
    );
    for (label, group, key) in rows {
        let value = |t: &Trial| -> Option<f64> {
            let report = t.marks.startup_report.as_ref()?;
            let v = if key.is_empty() {
                &report[group]
            } else {
                &report[group][key]
            };
            v.as_f64().map(|s| s * 1000.0)
        };
        let show = |scenario: Scenario| {
            Summary::of(&samples(trials, Launcher::Runtime, scenario, value)).map_or_else(
                || "–".to_string(),
                |s| {
                    format!(
                        "{} ({}–{})",
                        stats::ms(s.median),
                        stats::ms(s.min),
                        stats::ms(s.max)
                    )
                },
            )
        };
        let _ = writeln!(
            out,
            "| {label} | {} | {} |",
            show(Scenario::Normal),
            show(Scenario::Warmup)
        );
    }
    out
}

/// What the figures say, in sentences built from them (so they stay true when regenerated).
pub fn findings(trials: &[Trial], ctx: &Context) -> Vec<String> {
    use Launcher::{Reference, Runtime};
    use Scenario::{CrashAtStart, IgnoresSigterm, NoTcmalloc, Normal};
    let mut out = Vec::new();
    if let (Some(rt), Some(rf)) = (
        median(trials, Runtime, Normal, metric::readiness),
        median(trials, Reference, Normal, metric::readiness),
    ) {
        out.push(format!(
            "**Readiness**: the handler serves {} ms after the WebUI's first possible 200 with \
             worker-runtime, {} ms with start.sh ({}); goal under {READINESS_GOAL_MS} ms {}.",
            stats::ms(rt),
            stats::ms(rf),
            stats::ratio(rt, rf),
            if rt < READINESS_GOAL_MS {
                "met"
            } else {
                "**missed**"
            }
        ));
    }
    if let (Some(rt), Some(rf), Some(rt_own), Some(rf_own)) = (
        median(trials, Runtime, Normal, metric::teardown),
        median(trials, Reference, Normal, metric::teardown),
        median(trials, Runtime, Normal, metric::after_webui_exit),
        median(trials, Reference, Normal, metric::after_webui_exit),
    ) {
        out.push(format!(
            "**Teardown** with a WebUI that obeys SIGTERM: {} ms against {} ms; goal under {TEARDOWN_GOAL_MS} ms \
             {}. Most of it is the demo's own shutdown; after the WebUI's exit worker-runtime \
             takes {} ms more to exit, bash {} ms.",
            stats::ms(rt),
            stats::ms(rf),
            if rt < TEARDOWN_GOAL_MS { "met" } else { "**missed**" },
            stats::ms(rt_own),
            stats::ms(rf_own)
        ));
    }
    if let Some(rt) = median(trials, Runtime, IgnoresSigterm, metric::teardown) {
        out.push(format!(
            "With a WebUI that **ignores SIGTERM**, worker-runtime exits {} ms after the handler \
             (SHUTDOWN_GRACE {} s, then SIGKILL); start.sh {}.",
            stats::ms(rt),
            ctx.grace.as_secs_f64(),
            if capped_all(trials, Reference, IgnoresSigterm) {
                "never does: its `wait` hangs until something kills the container"
            } else {
                "exited by itself in some runs (see the table)"
            }
        ));
    }
    if let (Some(rt), Some(rf)) = (
        median(trials, Runtime, Normal, metric::peak_rss_mb),
        median(trials, Reference, Normal, metric::peak_rss_mb),
    ) {
        let mut text =
            format!(
            "**Memory**: worker-runtime peaks at {} MB while the WebUI runs, bash at {} MB; goal \
             under {RSS_GOAL_MB} MB {}.",
            stats::mb(rt),
            stats::mb(rf),
            if rt < RSS_GOAL_MB { "met" } else { "**missed**" }
        );
        if let Some(plain) = median(trials, Runtime, NoTcmalloc, metric::peak_rss_mb) {
            let _ = write!(
                text,
                " With NO_TCMALLOC=1 it peaks at {} MB: ",
                stats::mb(plain)
            );
            if rt - plain > 1.0 {
                text.push_str(
                    "the difference is the tcmalloc (and the C++ runtime it links) that \
                     worker-runtime loads into its own process, since it re-execs itself with \
                     LD_PRELOAD so that its children inherit it; start.sh only exports \
                     LD_PRELOAD for its children, and bash itself never loads it.",
                );
            } else {
                text.push_str("tcmalloc makes no difference to the launcher itself.");
            }
        }
        out.push(text);
    }
    if let (Some(at), Some(exit)) = (
        median(trials, Runtime, CrashAtStart, metric::crash_reported),
        median(trials, Runtime, CrashAtStart, metric::after_webui_exit),
    ) {
        out.push(format!(
            "**Crash at start**: worker-runtime reports it {:.2} s after launch (the WebUI's \
             start-up delay is {} s) and exits {} ms after the crash; start.sh {}.",
            at / 1000.0,
            ctx.webui_delay.as_secs_f64(),
            stats::ms(exit),
            if capped_all(trials, Reference, CrashAtStart) {
                "never notices: its handler keeps polling and the container stays up, idle, \
                 until RunPod's own timeouts"
            } else {
                "ended by itself in some runs (see the table)"
            }
        ));
    }
    out
}

/// One sentence on how soon worker-runtime reports a crash once the WebUI has exited: too small
/// for a table row, since both moments come from different threads of the bench and are within
/// its timing resolution of each other.
pub fn crash_note(trials: &[Trial]) -> String {
    let gaps = samples(trials, Launcher::Runtime, Scenario::CrashAtStart, |t| {
        ms_between(t.marks.webui_exit, t.marks.noticed_crash)
    });
    match Summary::of(&gaps) {
        Some(s) => format!(
            "worker-runtime logs the crash {} after the WebUI's exit (median; the two moments are \
             read by different threads of the bench, so values within a few milliseconds of 0, \
             either sign, mean \"at once\"), then gives the handler, which waits at the gate, the \
             time to exit on its own and exits with status 81.",
            s.show("ms", stats::ms)
        ),
        None => String::from("No crash run of worker-runtime was measured."),
    }
}

/// docs/BENCHMARKS.md: the generated part, then the GPU section kept from `existing`.
pub fn page(
    rows: &[Row],
    ctx: &Context,
    findings: &[String],
    crash_note: &str,
    startup: &str,
    existing: Option<&str>,
) -> String {
    let mut out = String::new();
    let _ = write!(
        out,
        "# Benchmarks: worker-runtime against the bash start.sh it replaces

<!-- Generated by `cargo xtask bench` (xtask/src/bench/), except the GPU section at the end,
which is written by hand and kept verbatim when the page is regenerated. -->

What a serverless worker's launcher costs, measured side by side against the bash start.sh it
replaces. Both launch the same demo WebUI (docker/demo-webui, start-up delay
{delay:.1} s) and the same handler (docker/handler.py on the real runpod SDK, runpod's local test
mode with one tiny job), in one run, alternating, {runs} runs each per scenario.

- Date: {date}
- Machine: {cpus} CPUs ({cpu_model}), Linux {kernel}: **a shared 2-core VM**, where other builds
  may run at the same time (load average {load_before} before, {load_after} after); treat
  differences of a few milliseconds as noise.
- Command: `{command}`
- Code: {commit} (worker-runtime built from it); Python {python}, runpod {runpod}; tcmalloc on
  for both ({tcmalloc}).

## Results

{table}
Ratios are worker-runtime's median divided by start.sh's: below 1 is better. \"Never\" rows are
runs the reference does not end by itself; the bench stops them after the cap. Two moments read by
different threads of the bench can come out of order by a millisecond or so on this machine: a
value that close to 0, of either sign, means \"at once\".

## worker-runtime's start-up report

The JSON line worker-runtime writes when ready (README, \"Start-up report\"), phase by phase, in
the normal runs and in runs with its default readiness (`WEBUI_READY=warmup`: the demo's model
loads in the background for {model_load:.1} s after its API is up, as A1111's does, then one
1-step 512x512 image, the default on a GPU). The WebUI's own figures are the demo's imitation of A1111's lines.

{startup}
## Findings

{findings}

![Start-up timeline of both launchers](startup-timeline.svg)

[docs/startup-timeline.svg](startup-timeline.svg): one run of each launcher from the same round
(the round whose two readiness overheads are nearest their medians), phase by phase, with the
moments around readiness and teardown magnified.

## What is measured, and how

- **The reference** is xtask/bench/start.sh, written from the start.sh the worker shipped before: sequential, the WebUI in
  the background with `&` and `$!`, the handler in the foreground, `kill`/`wait` after it. Like the
  existing A1111 workers, its handler waits for the WebUI itself: xtask/bench/reference_handler.py
  imports docker/handler.py, then polls `GET /sdapi/v1/sd-models` every 0.2 s (any answer counts,
  no time limit), then serves. The loop sits in the handler rather than in start.sh so that the
  handler's imports overlap the WebUI's start-up, as in those workers; a loop in start.sh would add
  the imports (about 1 s here) to the reference's overhead.
- **worker-runtime** is `cargo build --release -p runtime`, default settings (handler started at
  once behind the readiness gate), `CUDA_CHECK=off` (no GPU here), `SHUTDOWN_GRACE={grace}`, and
  `WEBUI_READY=api`: start.sh waits for the API only, so both are held to the same readiness (the
  default, `warmup`, has its own scenario and table).
- **Same conditions**: the same interpreter (.venv's Python) for the WebUI and the handler, a fresh
  free loopback port per run, the same empty model folders in a temp dir, a clean environment,
  tcmalloc preloaded by both (start.sh always does; worker-runtime does unless `NO_TCMALLOC`). The
  handler reads its job from test_input.json in its working directory, so both start it with no
  arguments, as that start.sh's `python -u /handler.py`.{warm_up}
- **Timestamps**: every line the launcher and its children print is timestamped by the bench as it
  is read from their pipes. The WebUI is ready at its `Uvicorn running on` line: the demo binds its
  port only after its start-up delay and answers 200 from that moment. The handler serves at its
  `handler: serving` line, printed right before `runpod.serverless.start`. Process exits (WebUI,
  handler) are taken from a pidfd the moment the process ends; the launcher's exit when its wait
  returns.
- **1. Readiness overhead**: handler serving minus WebUI ready. start.sh's cost is its handler's
  0.2 s poll; worker-runtime's is its 10 ms probe plus the gate.
- **2. Teardown**: handler exit to launcher exit. With a WebUI that obeys SIGTERM, both wait for the
  demo's own graceful shutdown (it polls for the signal every 50 ms), shown on its own row. With one
  that ignores SIGTERM (`DEMO_WEBUI_IGNORE_SIGTERM=1`), worker-runtime sends SIGKILL after
  `SHUTDOWN_GRACE`; start.sh's `wait` never returns (the bench stops it after {cap} s).
- **3. Memory**: VmHWM of the launcher process itself (/proc/PID/status), sampled every 20 ms while
  the WebUI runs; children are separate processes and not counted. For start.sh that is the bash
  process; for worker-runtime, the process after its tcmalloc re-exec.
- **4. Crash at start**: the WebUI exits with status 1 at the end of its start-up delay, before
  binding (`DEMO_WEBUI_EXIT_AT_START=1`), as A1111 does when an import fails. worker-runtime
  reports it and exits with its documented status; start.sh never notices: its handler polls for
  ever (the bench stops it {cap} s after the crash). {crash_note}
- The cold start row adds the WebUI's start-up delay; it shows where the readiness overhead ends up.

",
        delay = ctx.webui_delay.as_secs_f64(),
        runs = ctx.runs,
        date = ctx.date,
        cpus = ctx.cpus,
        cpu_model = ctx.cpu_model,
        kernel = ctx.kernel,
        load_before = ctx.load_before,
        load_after = ctx.load_after,
        command = ctx.command,
        commit = ctx.commit,
        python = ctx.python,
        runpod = ctx.runpod,
        tcmalloc = ctx.tcmalloc,
        table = table(rows),
        findings = findings
            .iter()
            .map(|f| format!("- {f}"))
            .collect::<Vec<_>>()
            .join("\n"),
        grace = ctx.grace.as_secs_f64(),
        cap = ctx.cap.as_secs_f64(),
        crash_note = crash_note,
        startup = startup,
        model_load = ctx.model_load.as_secs_f64(),
        warm_up = if ctx.warm_up {
            " One untimed run of each launcher comes first (page cache, Python bytecode)."
        } else {
            ""
        },
    );
    // The real-WebUI section (`cargo xtask bench --webuis`), the image's figures and the GPU
    // section are not this bench's to write: kept as they are, in this order.
    for heading in [super::webuis::HEADING, IMAGE_HEADING] {
        if let Some(section) = existing.and_then(|e| kept_section(e, heading)) {
            out.push_str(&section);
        }
    }
    let gpu = existing
        .and_then(gpu_section)
        .unwrap_or_else(|| GPU_PLACEHOLDER.to_string());
    out.push_str(&gpu);
    if !out.ends_with('\n') {
        out.push('\n');
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keeps_the_gpu_section_verbatim() {
        let gpu = "## GPU: cuda-check vs the Python/torch check\n\nH200 figures.\n\n### Detail\n| a | b |\n";
        let existing = format!("# Old\n\n## Results\nold table\n\n{gpu}\n## Later section\nx\n");
        assert_eq!(
            gpu_section(&existing).as_deref(),
            Some(&*format!("{gpu}\n"))
        );
        // At the end of the file, with no newline after it.
        let existing = format!("# Old\n{}", gpu.trim_end());
        assert_eq!(gpu_section(&existing).as_deref(), Some(gpu.trim_end()));
        // The heading mentioned inside a line is not the section.
        assert!(gpu_section("see ## GPU: cuda-check vs the Python/torch check").is_none());
    }

    #[test]
    fn keeps_the_image_section_apart_from_its_neighbours() {
        let image = "## The WebUI image\n\n### Layers\n| a | b |\n\n";
        let existing = format!("## The real WebUI against the demo\nx\n\n{image}## GPU: y\n");
        assert_eq!(
            kept_section(&existing, IMAGE_HEADING).as_deref(),
            Some(image)
        );
    }
}
