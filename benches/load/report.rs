//! Results: one [`Row`] per (scenario, server), printed as a Markdown table,
//! saved as `results.json`, and drawn as `chart.svg` (hand-written SVG: a
//! few rectangles and labels need no plotting crate).

use std::fmt::Write as _;

use serde_json::{Value, json};

use crate::proc::Machine;
use crate::scenarios::NAMES;
use crate::server::Impl;

/// What one scenario measured on one server.
#[derive(Debug, Clone, Default)]
pub struct Row {
    pub scenario: String,
    pub server: &'static str,
    /// Ours (the tutorial's example, axum_chat too), as opposed to a compare
    /// server.
    pub ours: bool,
    pub rate: Option<f64>,
    pub rate_unit: &'static str,
    pub p50_ms: Option<f64>,
    pub p99_ms: Option<f64>,
    pub cpu_us_per_delivery: Option<f64>,
    /// idle and idle-tls only: server CPU per connection set up (handshakes
    /// and join).
    pub cpu_us_per_connection: Option<f64>,
    pub kib_per_connection: Option<f64>,
    pub lost: Option<u64>,
    pub evicted: Option<u64>,
    pub connections: usize,
    /// Text frames received by clients during the measured phase.
    pub deliveries: u64,
    pub measured_seconds: f64,
    pub server_cpu_seconds: f64,
    /// Command-line settings the server ran with.
    pub settings: Vec<String>,
    pub notes: Vec<String>,
    /// Failed correctness checks.
    pub problems: Vec<String>,
    /// Why the row was not run.
    pub skipped: Option<String>,
}

impl Row {
    pub fn new(scenario: &str, implementation: Impl) -> Row {
        Row {
            scenario: scenario.to_string(),
            server: implementation.label(),
            ours: implementation.ours(),
            ..Row::default()
        }
    }

    pub fn skipped(scenario: &str, implementation: Impl, why: &str) -> Row {
        Row { skipped: Some(why.to_string()), ..Row::new(scenario, implementation) }
    }

    pub fn problem(&mut self, problem: String) {
        self.problems.push(problem);
    }

    pub fn set_rate(&mut self, rate: f64, unit: &'static str) {
        if rate.is_finite() {
            self.rate = Some(rate);
            self.rate_unit = unit;
        }
    }

    /// Sets p50 and p99 from latencies in microseconds.
    pub fn set_latencies(&mut self, mut latencies_us: Vec<u32>) {
        latencies_us.sort_unstable();
        self.p50_ms = quantile_ms(&latencies_us, 0.50);
        self.p99_ms = quantile_ms(&latencies_us, 0.99);
    }

    fn check(&self) -> &'static str {
        match (&self.skipped, self.problems.is_empty()) {
            (Some(_), _) => "skipped",
            (None, true) => "ok",
            (None, false) => "FAIL",
        }
    }
}

/// The `q` quantile (nearest rank) of sorted microseconds, in milliseconds.
pub fn quantile_ms(sorted_us: &[u32], q: f64) -> Option<f64> {
    if sorted_us.is_empty() {
        return None;
    }
    let rank = (q * sorted_us.len() as f64).ceil() as usize;
    Some(f64::from(sorted_us[rank.clamp(1, sorted_us.len()) - 1]) / 1000.0)
}

// ---------------------------------------------------------------------------
// The table

/// The results as a Markdown table (it reads well in a terminal and pastes
/// into the docs), then each row's notes and problems.
pub fn table(rows: &[Row]) -> String {
    let header = [
        "scenario",
        "server",
        "rate",
        "p50 ms",
        "p99 ms",
        "CPU µs/delivery",
        "KiB/conn",
        "lost",
        "evicted",
        "check",
    ];
    let cells: Vec<Vec<String>> = rows
        .iter()
        .map(|r| {
            let rate = match (&r.skipped, r.rate) {
                (Some(_), _) => "skipped".to_string(),
                (None, Some(rate)) => format!("{} {}", thousands(rate), r.rate_unit),
                (None, None) => "-".to_string(),
            };
            vec![
                r.scenario.clone(),
                r.server.to_string(),
                rate,
                opt(r.p50_ms, ms),
                opt(r.p99_ms, ms),
                opt(r.cpu_us_per_delivery, |v| format!("{v:.2}")),
                opt(r.kib_per_connection, |v| format!("{v:.1}")),
                opt(r.lost, |v| v.to_string()),
                opt(r.evicted, |v| v.to_string()),
                r.check().to_string(),
            ]
        })
        .collect();
    let widths: Vec<usize> = (0..header.len())
        .map(|i| {
            let widest_cell = cells.iter().map(|c| c[i].chars().count()).max().unwrap_or(0);
            widest_cell.max(header[i].chars().count())
        })
        .collect();
    // Text left-aligned, numbers right-aligned.
    let right = |i: usize| (2..9).contains(&i);
    let line = |cells: &[String]| {
        let padded: Vec<String> = cells
            .iter()
            .enumerate()
            .map(|(i, c)| {
                let pad = " ".repeat(widths[i] - c.chars().count());
                if right(i) { format!("{pad}{c}") } else { format!("{c}{pad}") }
            })
            .collect();
        format!("| {} |\n", padded.join(" | "))
    };
    let mut out = line(&header.map(String::from));
    // Markdown's alignment row: `---:` right-aligns a column.
    let rule: Vec<String> = widths
        .iter()
        .enumerate()
        .map(|(i, w)| if right(i) { format!("{}:", "-".repeat(w + 1)) } else { "-".repeat(w + 2) })
        .collect();
    let _ = writeln!(out, "|{}|", rule.join("|"));
    for c in &cells {
        out.push_str(&line(c));
    }
    out.push('\n');
    for r in rows {
        let name = format!("{} / {}", r.scenario, r.server);
        if let Some(why) = &r.skipped {
            let _ = writeln!(out, "- {name}: skipped: {why}");
            continue;
        }
        if !r.settings.is_empty() {
            let _ = writeln!(out, "- {name}: server settings {}", r.settings.join(" "));
        }
        for note in &r.notes {
            let _ = writeln!(out, "- {name}: {note}");
        }
        for problem in &r.problems {
            let _ = writeln!(out, "- {name}: PROBLEM: {problem}");
        }
    }
    out
}

fn opt<T: Copy>(value: Option<T>, format: impl Fn(T) -> String) -> String {
    value.map_or_else(|| "-".to_string(), format)
}

fn ms(v: f64) -> String {
    if v < 10.0 { format!("{v:.2}") } else { format!("{v:.0}") }
}

/// 1234567.8 -> "1,234,568".
fn thousands(v: f64) -> String {
    let digits = format!("{:.0}", v.max(0.0));
    let mut out = String::new();
    for (i, d) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i) % 3 == 0 {
            out.push(',');
        }
        out.push(d);
    }
    out
}

// ---------------------------------------------------------------------------
// results.json

/// Everything, for tools and for the docs: the machine, how the run was
/// made, and every row with all its numbers.
pub fn json(rows: &[Row], machine: &Machine, mode: &str) -> Value {
    // Three decimals are more than a single run can claim, and they keep
    // the committed docs/bench/results.json readable in a diff.
    let round = |v: f64| (v * 1000.0).round() / 1000.0;
    let opt = |v: Option<f64>| v.map(round);
    let rows: Vec<Value> = rows
        .iter()
        .map(|r| {
            json!({
                "scenario": r.scenario,
                "server": r.server,
                "rate": opt(r.rate),
                "rate_unit": r.rate_unit,
                "p50_ms": opt(r.p50_ms),
                "p99_ms": opt(r.p99_ms),
                "cpu_us_per_delivery": opt(r.cpu_us_per_delivery),
                "cpu_us_per_connection": opt(r.cpu_us_per_connection),
                "kib_per_connection": opt(r.kib_per_connection),
                "lost": r.lost,
                "evicted": r.evicted,
                "connections": r.connections,
                "deliveries": r.deliveries,
                "measured_seconds": round(r.measured_seconds),
                "server_cpu_seconds": round(r.server_cpu_seconds),
                "settings": r.settings,
                "notes": r.notes,
                "problems": r.problems,
                "skipped": r.skipped,
            })
        })
        .collect();
    json!({
        "machine": {
            "nproc": machine.nproc,
            "cpu_model": machine.cpu_model,
            "kernel": machine.kernel,
            "date": machine.date,
            "git_commit": machine.git_commit,
        },
        "mode": mode,
        "rows": rows,
    })
}

// ---------------------------------------------------------------------------
// chart.svg

const WIDTH: f64 = 960.0;
const LEFT: f64 = 80.0;
const RIGHT: f64 = 30.0;
const PANEL_TOP: f64 = 100.0;
const PANEL_STEP: f64 = 270.0;
const PLOT_HEIGHT: f64 = 180.0;
const SERVERS: [(&str, &str); 5] = [
    ("rust", "#b7410e"),
    ("axum", "#e8a33d"),
    ("node", "#3c873a"),
    ("python", "#3776ab"),
    ("go", "#00add8"),
];

/// Grouped bars: server CPU per delivery and server memory per connection,
/// per scenario, one colour per server. A white background so that it
/// reads on GitHub's dark theme too.
pub fn svg(rows: &[Row], machine: &Machine, mode: &str) -> String {
    let height = PANEL_TOP + 2.0 * PANEL_STEP;
    let mut svg = String::new();
    let _ = writeln!(
        svg,
        r#"<svg xmlns="http://www.w3.org/2000/svg" width="{WIDTH}" height="{height}" viewBox="0 0 {WIDTH} {height}" font-family="Helvetica, Arial, sans-serif">"#
    );
    let _ = writeln!(svg, r#"<rect width="100%" height="100%" fill="white"/>"#);
    let _ = writeln!(
        svg,
        r#"<text x="{}" y="28" font-size="18" font-weight="bold" text-anchor="middle">WebSocket servers under load: server cost (lower is better)</text>"#,
        WIDTH / 2.0
    );
    let _ = writeln!(
        svg,
        r##"<text x="{}" y="48" font-size="11" fill="#555" text-anchor="middle">{}</text>"##,
        WIDTH / 2.0,
        escape(&format!(
            "{}{} · {} cores shared by server and load generator · {} · commit {}",
            if mode == "tiny" {
                "TINY RUN, correctness only: these numbers mean nothing · "
            } else {
                ""
            },
            machine.cpu_model,
            machine.nproc,
            machine.date,
            machine.git_commit
        ))
    );

    // The legend: only the servers that have rows.
    let servers: Vec<(&str, &str)> = SERVERS
        .iter()
        .copied()
        .filter(|(name, _)| rows.iter().any(|r| r.server == *name && r.skipped.is_none()))
        .collect();
    // Each entry: a swatch, its label (about 7 px a character at 12 px), a gap.
    let entry_width = |name: &str| 16.0 + 7.0 * legend_name(name).len() as f64 + 24.0;
    let total: f64 = servers.iter().map(|(name, _)| entry_width(name)).sum();
    let mut x = (WIDTH - total) / 2.0;
    for (name, colour) in &servers {
        let _ = writeln!(
            svg,
            r#"<rect x="{x:.1}" y="62" width="12" height="12" fill="{colour}"/><text x="{:.1}" y="72" font-size="12">{}</text>"#,
            x + 16.0,
            legend_name(name)
        );
        x += entry_width(name);
    }

    let panels: [(&str, &str, Metric); 2] = [
        (
            "Server CPU per delivery (one message arriving at one client)",
            "µs of server CPU",
            |r| r.cpu_us_per_delivery,
        ),
        (
            "Server memory per connection (resident memory growth / connections)",
            "KiB of server RSS",
            |r| r.kib_per_connection,
        ),
    ];
    for (i, (title, unit, value)) in panels.iter().enumerate() {
        let top = PANEL_TOP + i as f64 * PANEL_STEP;
        panel(&mut svg, rows, &servers, top, title, unit, *value);
    }
    svg.push_str("</svg>\n");
    svg
}

/// Which number of a row a panel draws.
type Metric = fn(&Row) -> Option<f64>;

fn legend_name(server: &str) -> &'static str {
    match server {
        "rust" => "Rust: tokio-tungstenite (ours)",
        "axum" => "Rust: axum (ours)",
        "node" => "Node: ws",
        "go" => "Go: gorilla/websocket",
        _ => "Python: websockets",
    }
}

fn panel(
    svg: &mut String,
    rows: &[Row],
    servers: &[(&str, &str)],
    top: f64,
    title: &str,
    unit: &str,
    value: Metric,
) {
    let plot_top = top + 20.0;
    let plot_bottom = plot_top + PLOT_HEIGHT;
    let plot_width = WIDTH - LEFT - RIGHT;
    let _ = writeln!(
        svg,
        r#"<text x="{LEFT}" y="{top}" font-size="14" font-weight="bold">{}</text>"#,
        escape(title)
    );
    // The y-axis label, turned to run along the axis.
    let mid = (plot_top + plot_bottom) / 2.0;
    let _ = writeln!(
        svg,
        r#"<text x="20" y="{mid}" font-size="12" text-anchor="middle" transform="rotate(-90 20 {mid})">{}</text>"#,
        escape(unit)
    );

    let value_of = |scenario: &str, server: &str| {
        rows.iter()
            .find(|r| r.scenario == scenario && r.server == server && r.skipped.is_none())
            .and_then(value)
            .filter(|v| v.is_finite() && *v >= 0.0)
    };
    let scenarios: Vec<&str> = NAMES
        .iter()
        .copied()
        .filter(|s| servers.iter().any(|(server, _)| value_of(s, server).is_some()))
        .collect();
    if scenarios.is_empty() {
        let _ = writeln!(
            svg,
            r##"<text x="{}" y="{mid}" font-size="12" text-anchor="middle" fill="#777">no data</text>"##,
            LEFT + plot_width / 2.0
        );
        return;
    }
    let max = scenarios
        .iter()
        .flat_map(|s| servers.iter().filter_map(move |(server, _)| value_of(s, server)))
        .fold(0.0, f64::max);
    // Four grid steps of a round size (1, 2 or 5 times a power of ten).
    let step = nice_ceiling(max * 1.1 / 4.0);
    let axis_max = 4.0 * step;
    let y = |v: f64| plot_bottom - v / axis_max * PLOT_HEIGHT;

    // Grid lines and their labels, then the x axis.
    for k in 0..=4 {
        let v = step * f64::from(k);
        let _ = writeln!(
            svg,
            r##"<line x1="{LEFT}" x2="{}" y1="{y:.1}" y2="{y:.1}" stroke="#ddd"/><text x="{}" y="{:.1}" font-size="10" text-anchor="end" fill="#444">{}</text>"##,
            WIDTH - RIGHT,
            LEFT - 6.0,
            y(v) + 3.5,
            tick_label(v, step),
            y = y(v)
        );
    }
    let _ = writeln!(
        svg,
        r##"<line x1="{LEFT}" x2="{}" y1="{plot_bottom}" y2="{plot_bottom}" stroke="#333"/>"##,
        WIDTH - RIGHT
    );
    let _ = writeln!(
        svg,
        r#"<text x="{}" y="{}" font-size="12" text-anchor="middle">scenario</text>"#,
        LEFT + plot_width / 2.0,
        plot_bottom + 36.0
    );

    let group = plot_width / scenarios.len() as f64;
    let bar = (group * 0.8 / servers.len() as f64).min(40.0);
    for (g, scenario) in scenarios.iter().enumerate() {
        let centre = LEFT + group * (g as f64 + 0.5);
        let _ = writeln!(
            svg,
            r#"<text x="{centre:.1}" y="{}" font-size="11" text-anchor="middle">{}</text>"#,
            plot_bottom + 16.0,
            escape(scenario)
        );
        let first = centre - bar * servers.len() as f64 / 2.0;
        for (k, (server, colour)) in servers.iter().enumerate() {
            let Some(v) = value_of(scenario, server) else { continue };
            let x = first + bar * k as f64;
            let _ = writeln!(
                svg,
                r#"<rect x="{x:.1}" y="{:.1}" width="{:.1}" height="{:.1}" fill="{colour}"><title>{} / {}: {} {}</title></rect>"#,
                y(v),
                bar - 2.0,
                plot_bottom - y(v),
                escape(scenario),
                server,
                short(v),
                escape(unit)
            );
            let _ = writeln!(
                svg,
                r##"<text x="{:.1}" y="{:.1}" font-size="9" text-anchor="middle" fill="#222">{}</text>"##,
                x + (bar - 2.0) / 2.0,
                y(v) - 3.0,
                short(v)
            );
        }
    }
}

/// The smallest 1, 2 or 5 times a power of ten at or above `v`.
fn nice_ceiling(v: f64) -> f64 {
    if v <= 0.0 {
        return 1.0;
    }
    let power = 10f64.powf(v.log10().floor());
    [1.0, 2.0, 5.0, 10.0].iter().map(|m| m * power).find(|c| *c >= v).unwrap_or(10.0 * power)
}

/// A grid label with as many decimals as the step needs.
fn tick_label(v: f64, step: f64) -> String {
    let decimals = if step >= 1.0 { 0 } else { (-step.log10().floor()) as usize };
    format!("{v:.decimals$}")
}

/// A number short enough for a bar label.
fn short(v: f64) -> String {
    match v {
        0.0 => "0".into(),
        v if v < 1.0 => format!("{v:.2}"),
        v if v < 10.0 => format!("{v:.1}"),
        v => format!("{v:.0}"),
    }
}

fn escape(text: &str) -> String {
    text.replace('&', "&amp;").replace('<', "&lt;").replace('>', "&gt;").replace('"', "&quot;")
}
