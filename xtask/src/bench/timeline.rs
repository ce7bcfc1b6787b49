//! docs/startup-timeline.svg: one run of each launcher, phase by phase, written as SVG text.
//! The readiness overhead and the teardown are milliseconds on a timeline of seconds, so two
//! magnified strips follow the whole-run view, each aligned on the moment its figure starts from.

use std::fmt::Write as _;
use std::time::Duration;

use super::trial::{Launcher, Trial};

const WIDTH: f64 = 1000.0;
const PLOT_X0: f64 = 200.0;
const PLOT_X1: f64 = 975.0;
const LANE_H: f64 = 18.0;
const LANE_GAP: f64 = 6.0;

const C_LAUNCHER: &str = "#b8c0cc";
const C_WEBUI_START: &str = "#f2c078";
const C_WEBUI_UP: &str = "#59a14f";
const C_IMPORTS: &str = "#a0cbe8";
const C_WAITING: &str = "#e5d26b";
const C_SERVING: &str = "#4e79a7";
const C_EXITING: &str = "#9db4d3";
const C_TEARDOWN: &str = "#e15759";
const C_READY_LINE: &str = "#2f6b2a";

fn secs(d: Option<Duration>) -> Option<f64> {
    d.map(|d| d.as_secs_f64())
}

struct Scale {
    t0: f64,
    t1: f64,
}

impl Scale {
    fn x(&self, t: f64) -> f64 {
        let t = t.clamp(self.t0, self.t1);
        PLOT_X0 + (t - self.t0) / (self.t1 - self.t0) * (PLOT_X1 - PLOT_X0)
    }
}

fn esc(text: &str) -> String {
    text.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
}

struct Svg {
    body: String,
    y: f64,
}

impl Svg {
    fn text(&mut self, x: f64, y: f64, size: f64, extra: &str, text: &str) {
        let _ = writeln!(
            self.body,
            r##"<text x="{x:.1}" y="{y:.1}" font-size="{size}" {extra}>{}</text>"##,
            esc(text)
        );
    }

    /// A bar from `a` to `b` (seconds on `scale`) on the lane whose top is `y`; at least 1.5 px
    /// wide so that a phase of a millisecond still shows.
    fn bar(
        &mut self,
        scale: &Scale,
        y: f64,
        a: Option<f64>,
        b: Option<f64>,
        colour: &str,
        title: &str,
    ) {
        let (Some(a), Some(b)) = (a, b) else { return };
        if b < a {
            return;
        }
        let x0 = scale.x(a);
        let w = (scale.x(b) - x0).max(1.5);
        let _ = writeln!(
            self.body,
            r##"<rect x="{x0:.1}" y="{y:.1}" width="{w:.1}" height="{LANE_H}" fill="{colour}"><title>{}</title></rect>"##,
            esc(title)
        );
    }

    fn vline(&mut self, x: f64, y0: f64, y1: f64, colour: &str, dashed: bool) {
        let dash = if dashed {
            r##" stroke-dasharray="4 3""##
        } else {
            ""
        };
        let _ = writeln!(
            self.body,
            r##"<line x1="{x:.1}" y1="{y0:.1}" x2="{x:.1}" y2="{y1:.1}" stroke="{colour}" stroke-width="1.5"{dash}/>"##
        );
    }

    fn axis(&mut self, scale: &Scale, step: f64, unit_scale: f64, unit: &str) {
        let y = self.y;
        let _ = writeln!(
            self.body,
            r##"<line x1="{PLOT_X0}" y1="{y:.1}" x2="{PLOT_X1}" y2="{y:.1}" stroke="#555"/>"##
        );
        let first = (scale.t0 / step).ceil() as i64;
        let last = (scale.t1 / step).floor() as i64;
        for i in first..=last {
            let t = i as f64 * step;
            let x = scale.x(t);
            let _ = writeln!(
                self.body,
                r##"<line x1="{x:.1}" y1="{y:.1}" x2="{x:.1}" y2="{:.1}" stroke="#555"/>"##,
                y + 4.0
            );
            let value = t * unit_scale;
            let label = if (value - value.round()).abs() < 1e-6 {
                format!("{value:.0}")
            } else {
                format!("{value:.1}")
            };
            self.text(
                x,
                y + 16.0,
                11.0,
                r##"text-anchor="middle" fill="#333""##,
                &label,
            );
        }
        self.text(
            PLOT_X1,
            y + 30.0,
            11.0,
            r##"text-anchor="end" fill="#333""##,
            unit,
        );
        self.y += 40.0;
    }

    /// The title of a launcher's block or of a magnified strip, on the line at `self.y`.
    fn heading(&mut self, text: &str) {
        self.text(
            20.0,
            self.y + 14.0,
            14.0,
            r##"font-weight="bold" fill="#111""##,
            text,
        );
    }

    fn lane_label(&mut self, y: f64, text: &str) {
        self.text(
            PLOT_X0 - 8.0,
            y + 13.0,
            12.0,
            r##"text-anchor="end" fill="#222""##,
            text,
        );
    }
}

fn ms(a: Option<f64>, b: Option<f64>) -> Option<f64> {
    Some((b? - a?) * 1000.0)
}

fn show_ms(v: Option<f64>) -> String {
    v.map_or_else(|| "n/a".into(), |v| format!("{v:.0} ms"))
}

/// The SVG for one run of each launcher (normal scenario), with the demo's start-up delay.
pub fn svg(reference: &Trial, runtime: &Trial, webui_delay: Duration) -> String {
    let mut svg = Svg {
        body: String::new(),
        y: 0.0,
    };
    svg.text(
        20.0,
        28.0,
        17.0,
        r##"font-weight="bold" fill="#111""##,
        "Start-up and teardown: the bash start.sh vs worker-runtime (one run each)",
    );
    svg.text(
        20.0,
        48.0,
        12.0,
        r##"fill="#444""##,
        &format!(
            "Same demo WebUI ({:.1} s start-up), same handler (docker/handler.py, runpod local test mode, one job). \
             Time from each launcher's start.",
            webui_delay.as_secs_f64()
        ),
    );
    svg.y = 70.0;

    let end = [reference, runtime]
        .iter()
        .filter_map(|t| secs(t.marks.launcher_exit))
        .fold(0.5_f64, f64::max);
    let whole = Scale {
        t0: 0.0,
        t1: (end / 0.5).ceil() * 0.5,
    };
    for trial in [reference, runtime] {
        whole_run_block(&mut svg, &whole, trial);
    }
    svg.axis(
        &whole,
        if whole.t1 > 6.0 { 1.0 } else { 0.5 },
        1.0,
        "seconds since launch",
    );

    readiness_strip(&mut svg, reference, runtime);
    teardown_strip(&mut svg, reference, runtime);
    legend(&mut svg);

    let height = svg.y + 10.0;
    format!(
        r##"<svg xmlns="http://www.w3.org/2000/svg" width="{WIDTH}" height="{height:.0}" viewBox="0 0 {WIDTH} {height:.0}" font-family="DejaVu Sans, Helvetica, Arial, sans-serif">
<!-- Generated by `cargo xtask bench` (xtask/src/bench/timeline.rs) from one bench run. -->
<rect width="100%" height="100%" fill="#ffffff"/>
{}</svg>
"##,
        svg.body
    )
}

fn whole_run_block(svg: &mut Svg, scale: &Scale, trial: &Trial) {
    let m = &trial.marks;
    let y = svg.y;
    let title = match trial.launcher {
        Launcher::Reference => "start.sh (reference)",
        Launcher::Runtime => "worker-runtime",
    };
    svg.heading(title);
    let overhead = ms(secs(m.webui_ready), secs(m.serving));
    let teardown = ms(secs(m.handler_exit), secs(m.launcher_exit));
    svg.text(
        PLOT_X0,
        y + 14.0,
        12.0,
        r##"fill="#333""##,
        &format!(
            "WebUI ready → handler serving: {}   ·   handler exit → launcher exit: {}",
            show_ms(overhead),
            show_ms(teardown)
        ),
    );
    let top = y + 22.0;
    let lanes = [
        top,
        top + LANE_H + LANE_GAP,
        top + 2.0 * (LANE_H + LANE_GAP),
    ];

    svg.lane_label(lanes[0], "launcher");
    svg.bar(
        scale,
        lanes[0],
        Some(0.0),
        secs(m.launcher_exit),
        C_LAUNCHER,
        "launcher running",
    );
    svg.bar(
        scale,
        lanes[0],
        secs(m.handler_exit),
        secs(m.launcher_exit),
        C_TEARDOWN,
        "teardown",
    );

    svg.lane_label(lanes[1], "WebUI");
    svg.bar(
        scale,
        lanes[1],
        secs(m.webui_started),
        secs(m.webui_ready),
        C_WEBUI_START,
        "WebUI starting",
    );
    svg.bar(
        scale,
        lanes[1],
        secs(m.webui_ready),
        secs(m.webui_exit),
        C_WEBUI_UP,
        "WebUI API up",
    );

    svg.lane_label(lanes[2], "handler");
    let spawned = secs(m.handler_banner);
    svg.bar(
        scale,
        lanes[2],
        spawned,
        secs(m.imports_done),
        C_IMPORTS,
        "handler imports",
    );
    svg.bar(
        scale,
        lanes[2],
        secs(m.imports_done),
        secs(m.serving),
        C_WAITING,
        "handler waits for the WebUI",
    );
    svg.bar(
        scale,
        lanes[2],
        secs(m.serving),
        secs(m.job_done),
        C_SERVING,
        "handler serves the job",
    );
    svg.bar(
        scale,
        lanes[2],
        secs(m.job_done),
        secs(m.handler_exit),
        C_EXITING,
        "handler's Python exits",
    );

    if let Some(ready) = secs(m.webui_ready) {
        let x = scale.x(ready);
        svg.vline(x, top - 4.0, lanes[2] + LANE_H + 4.0, C_READY_LINE, true);
    }
    svg.y = lanes[2] + LANE_H + 20.0;
}

/// One rule scales both magnified strips, so that they read alike: from 20 ms before the moment
/// the strip is aligned on to the longer of the two launchers' gaps (in ms) with 30 ms to spare,
/// rounded up to 50 ms and never under 100 ms.
fn strip_scale(gaps_ms: [Option<f64>; 2]) -> Scale {
    let longest = gaps_ms.into_iter().flatten().fold(0.0_f64, f64::max);
    let span = ((longest + 30.0) / 50.0).ceil() * 50.0 / 1000.0;
    Scale {
        t0: -0.02,
        t1: span.max(0.1),
    }
}

/// Both launchers aligned on the WebUI's readiness: from there to the handler serving.
fn readiness_strip(svg: &mut Svg, reference: &Trial, runtime: &Trial) {
    let scale = strip_scale(
        [reference, runtime].map(|t| ms(secs(t.marks.webui_ready), secs(t.marks.serving))),
    );
    svg.heading("Magnified: WebUI ready → handler serving");
    svg.y += 24.0;
    let top = svg.y;
    for trial in [reference, runtime] {
        let m = &trial.marks;
        let Some(ready) = secs(m.webui_ready) else {
            continue;
        };
        let rel = |d: Option<Duration>| secs(d).map(|t| t - ready);
        let y = svg.y;
        svg.lane_label(y, trial.launcher.name());
        svg.bar(
            &scale,
            y,
            Some(0.0),
            rel(m.serving),
            C_WAITING,
            "handler still waiting",
        );
        svg.bar(
            &scale,
            y,
            rel(m.serving),
            Some(scale.t1),
            C_SERVING,
            "handler serving",
        );
        if let Some(seen) = rel(m.runtime_saw_ready) {
            let x = scale.x(seen);
            svg.vline(x, y - 2.0, y + LANE_H + 2.0, "#111", false);
        }
        if let Some(serving) = rel(m.serving) {
            let x = scale.x(serving);
            svg.text(
                x + 5.0,
                y + 13.0,
                12.0,
                r##"fill="#fff" font-weight="bold""##,
                &format!("serving at +{:.1} ms", serving * 1000.0),
            );
        }
        svg.y += LANE_H + LANE_GAP;
    }
    svg.vline(scale.x(0.0), top - 4.0, svg.y, C_READY_LINE, true);
    svg.y += 4.0;
    svg.axis(
        &scale,
        if scale.t1 > 0.3 { 0.05 } else { 0.02 },
        1000.0,
        "ms after the WebUI's first 200 (dashed line)",
    );
}

/// Both launchers aligned on the handler's exit: the WebUI's shutdown and the launcher's exit.
fn teardown_strip(svg: &mut Svg, reference: &Trial, runtime: &Trial) {
    let scale = strip_scale(
        [reference, runtime].map(|t| ms(secs(t.marks.handler_exit), secs(t.marks.launcher_exit))),
    );
    svg.heading("Magnified: handler exit → launcher exit (WebUI obeys SIGTERM)");
    svg.y += 24.0;
    let top = svg.y;
    for trial in [reference, runtime] {
        let m = &trial.marks;
        let Some(exit) = secs(m.handler_exit) else {
            continue;
        };
        let rel = |d: Option<Duration>| secs(d).map(|t| t - exit);
        let y = svg.y;
        svg.lane_label(y, &format!("{}: WebUI", trial.launcher.name()));
        svg.bar(
            &scale,
            y,
            Some(scale.t0),
            rel(m.webui_exit),
            C_WEBUI_UP,
            "WebUI shutting down",
        );
        if let Some(gone) = rel(m.webui_exit) {
            svg.text(
                scale.x(gone) + 5.0,
                y + 13.0,
                12.0,
                r##"fill="#222""##,
                &format!("WebUI exits at +{:.0} ms", gone * 1000.0),
            );
        }
        let y2 = y + LANE_H + 2.0;
        svg.lane_label(y2, "launcher");
        svg.bar(
            &scale,
            y2,
            Some(0.0),
            rel(m.launcher_exit),
            C_TEARDOWN,
            "teardown",
        );
        if let Some(done) = rel(m.launcher_exit) {
            svg.text(
                scale.x(done) + 5.0,
                y2 + 13.0,
                12.0,
                r##"fill="#222""##,
                &format!("launcher exits at +{:.0} ms", done * 1000.0),
            );
        }
        svg.y = y2 + LANE_H + LANE_GAP + 4.0;
    }
    svg.vline(scale.x(0.0), top - 4.0, svg.y, "#111", true);
    let step = if scale.t1 > 0.25 { 0.05 } else { 0.02 };
    svg.axis(
        &scale,
        step,
        1000.0,
        "ms after the handler's exit (dashed line)",
    );
}

fn legend(svg: &mut Svg) {
    let items = [
        (C_LAUNCHER, "launcher running"),
        (C_WEBUI_START, "WebUI starting"),
        (C_WEBUI_UP, "WebUI API up"),
        (C_IMPORTS, "handler imports"),
        (C_WAITING, "handler waits for the WebUI"),
        (C_SERVING, "handler serving"),
        (C_EXITING, "handler exiting"),
        (C_TEARDOWN, "teardown"),
    ];
    let mut x = 20.0;
    for (colour, label) in items {
        let width = 16.0 + label.chars().count() as f64 * 6.4 + 18.0;
        if x + width > WIDTH - 10.0 {
            x = 20.0;
            svg.y += 18.0;
        }
        let y = svg.y;
        let _ = writeln!(
            svg.body,
            r#"<rect x="{x:.1}" y="{y:.1}" width="12" height="12" fill="{colour}"/>"#
        );
        svg.text(x + 16.0, y + 10.5, 11.0, r##"fill="#222""##, label);
        x += width;
    }
    svg.y += 18.0;
    svg.text(
        20.0,
        svg.y + 10.0,
        11.0,
        r##"fill="#444""##,
        "Dashed green: the WebUI's first possible 200 (its bind line). Black tick: worker-runtime's probe got its 200.",
    );
    svg.y += 18.0;
}
