//! # The load benchmark
//!
//! What the tutorial's servers cost under load. It builds the release
//! examples, starts each server as a child process on a free loopback port,
//! drives it with a load generator in this process (tokio-tungstenite
//! clients, one task each), and prints a table. It is a measurement tool, not
//! a speed test: nothing here asserts a time.
//!
//! ```text
//! cargo bench --bench load                        # every scenario, our servers (a few minutes)
//! cargo bench --bench load -- --only chat,idle    # some scenarios
//! cargo bench --bench load -- --compare           # also Node's `ws`, Python's `websockets`
//!                                                 #  and Go's gorilla/websocket
//! cargo bench --features axum --bench load        # also our chat inside axum
//! cargo bench --bench load -- --docs              # also write docs/bench/results.json
//!                                                 #  and docs/images/benchmark.svg
//! cargo test --bench load                         # the tiny run `cargo test` also does
//! ```
//!
//! Results go to `target/bench/` (`--out DIR`): `results.json` (every number,
//! plus the machine: cores, CPU model, kernel, date, git commit) and
//! `chart.svg`. The tiny run writes to `target/bench/tiny/`.
//!
//! ## Scenarios
//!
//! | scenario | server | load |
//! |---|---|---|
//! | `echo` | echo_server | 50 connections, each sends a 64-byte message and waits for its echo, for 10 s |
//! | `broadcast` | broadcast_server | 1,000 subscribers; one publisher sends 200 msg/s of 64 bytes for 10 s; everyone (the publisher too) receives everything |
//! | `chat` | chat_server | 1,000 members join room `bench` at once; then 20 of them publish 10 msg/s each (200 msg/s) for 10 s; every member receives every message |
//! | `chat-admin` | chat_server with `--admin-addr` | `chat`, with `/metrics` scraped every second through the measured phase |
//! | `chat-cluster` | two chat_server nodes with `--redis`, one redis-server | `chat` across the cluster: members take turns between the nodes (500 each), so do publishers (10 each), and every member receives every message, from both nodes, in `seq` order |
//! | `chat-stalled` | chat_server | `chat` with 5 of the 1,000 members stalled: they join, then never read again (with small socket buffers, so they back up fast) |
//! | `idle` | chat_server | 10,000 connections, each joins one of 100 rooms, then all sit idle |
//! | `idle-tls` | chat_server with `--tls-cert`, `--tls-key` | `idle` over `wss://` (rustls on both sides), with a CA and a certificate for 127.0.0.1 made at run time (rcgen), which the clients trust |
//! | `join-storm-1k`, `join-storm-10k` | chat_server | 1,000 or 10,000 connected clients all send Join for one room at the same moment |
//!
//! With `--compare`, the scenarios except `chat-admin`, `chat-stalled`,
//! `chat-cluster` and `idle-tls` (those servers have no admin port, no Redis
//! and no TLS) also run against `benches/compare/node/server.js`,
//! `benches/compare/python/server.py` and `benches/compare/go/server`, which
//! speak the same protocols (`bash benches/compare/setup.sh NAME` installs
//! each one's packages or builds it first; if it fails, that server's rows
//! say why and are skipped).
//!
//! Built with the `axum` feature (`cargo bench --features axum --bench
//! load`), `chat` and `idle` also run against examples/axum_chat.rs, the
//! same chat inside axum (chapter 12), with the same settings, in rows
//! labelled `axum`: what the framework costs per delivery and per
//! connection. Without the feature, one line says these rows were skipped
//! and why. The tiny run covers them under `cargo test --all-features`.
//!
//! `chat-cluster` starts a redis-server of its own (Debian's, on a free
//! loopback port, persistence off), as the cluster tests do. Without
//! `redis-server` its row is skipped with the reason; with `CI` set it fails
//! instead (`.ci/run` installs it).
//!
//! ## Columns
//!
//! - **rate**: what the server achieved in the measured phase. echo:
//!   messages echoed per second; broadcast and chat: deliveries per second (a
//!   delivery is one message arriving at one client) from the first message
//!   sent to the last one received; idle, idle-tls: connections set up
//!   (connected, over TLS in idle-tls, and joined) per second; join storms:
//!   joins confirmed per second. broadcast and the chat scenarios offer a
//!   fixed load, 200 msg/s to about 1,000 clients: a server that keeps up
//!   shows about 200,000 deliv/s, and less means it fell behind and took
//!   longer to deliver everything (its latencies show by how much).
//! - **p50 ms, p99 ms**: latency from send to receipt, from a timestamp the
//!   sender puts in the content (nanoseconds since one `Instant` in this
//!   process, so there is no clock skew). echo: the round trip. idle,
//!   idle-tls and join storms: from sending Join to receiving one's own
//!   Joined.
//! - **CPU µs/delivery**: the server's user + system CPU time
//!   (`/proc/PID/stat`) during the measured phase, divided by the deliveries
//!   in that phase; in chat-cluster, both nodes' and redis-server's together.
//!   In the chat scenarios the phase starts before the join storm, so its
//!   CPU is included, and so are the Joined events it delivers.
//! - **KiB/conn**: growth of the server's resident memory (`VmRSS` in
//!   `/proc/PID/status`; chat-cluster: the nodes' and redis-server's, which
//!   holds the room's history) divided by the connections: after connecting
//!   minus before (echo, broadcast), after every Joined announcement has
//!   arrived (idle, idle-tls: the numbers to quote), or at the end of the
//!   measured phase (chat scenarios, storms: it includes whatever is queued
//!   then).
//! - **lost**: deliveries that should have happened and did not. broadcast
//!   counts what the server says a receiver missed (`[server] you missed N
//!   messages`); join storms count joiners that got neither their own Joined
//!   nor an eviction; idle and idle-tls count missing Joined announcements.
//! - **evicted**: clients the server closed with 1008 (too slow).
//! - **check**: `FAIL` when a correctness check failed (something lost,
//!   out of order, a client that reads continuously evicted, an unexpected
//!   frame or close code, a server that did not start or did not exit 0 on
//!   SIGINT); the problems are listed under the table.
//!
//! The process exits 1 when a check failed for one of our servers (compare
//! servers' problems are reported, not fatal), 2 for a bad option.
//!
//! ## What it does not measure
//!
//! - The server alone. The generator runs on the same machine and shares
//!   its cores (two, on the reference machine): latencies include the
//!   generator's scheduling, and rates are what server and generator manage
//!   together. Compare servers' numbers are affected in the same way.
//! - A network: loopback only, no packet loss, no real round trips, and no
//!   TLS except in idle-tls (whose CPU per connection includes the TLS
//!   handshake).
//! - Variance: each number comes from one run. Between our runs, CPU per
//!   delivery moved by up to 20 %, p99 latency and connection rates by up to
//!   a factor of 5 (the generator's scheduling): run it more than once before
//!   trusting a difference.
//! - Fine CPU time: the kernel counts CPU time in clock ticks of 10 ms, so a
//!   phase that lasts under a second (the join storms, on our server) has
//!   CPU figures good to a few percent only.
//! - Peak memory: KiB/conn is read at one moment, not continuously.
//!
//! ## The tiny run
//!
//! Without `--bench` (that is, under `cargo test`), every scenario runs at a
//! toy scale (20 chat members, 50 messages, 200 idle connections, plain
//! and over TLS, storms of 50 and 200) against the examples built in the
//! test profile, in a few seconds once they are built, and exits non-zero if a correctness check
//! failed. Its last line counts the rows of our servers: `load: 10 passed,
//! 0 failed, 0 skipped` (with `--all-features`, axum_chat's two rows
//! included; a skipped row, chat-cluster without redis-server, is not a
//! pass). Its numbers mean nothing.

// A crate root looks for its modules beside itself, in benches/; these live
// in benches/load/.
#[path = "load/client.rs"]
mod client;
#[path = "load/proc.rs"]
mod proc;
#[path = "load/report.rs"]
mod report;
#[path = "load/scenarios.rs"]
mod scenarios;
#[path = "load/server.rs"]
mod server;

use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::process::{Command, ExitCode};
use std::time::{Duration, Instant};

use report::Row;
use scenarios::{Ctx, NAMES, Scale};
use server::{Impl, Paths};

/// Whether this benchmark was built with the `axum` feature, and so runs
/// axum_chat's rows (and builds the examples with the feature).
const AXUM: bool = cfg!(feature = "axum");

const USAGE: &str = "\
usage: cargo bench [--features axum] --bench load -- [--only NAME[,NAME]] [--compare] [--out DIR]
                   [--docs]
  --features axum  (cargo's) also run chat and idle against examples/axum_chat.rs
  --only NAMES  run only these scenarios: echo, broadcast, chat, chat-admin, chat-cluster,
                chat-stalled, idle, idle-tls, join-storm-1k, join-storm-10k
  --compare     also run the Node (ws), Python (websockets) and Go (gorilla/websocket) servers
  --out DIR     where results.json and chart.svg go (default target/bench;
                target/bench/tiny for the tiny run)
  --docs        also write docs/bench/results.json and docs/images/benchmark.svg
                (full runs only)
Without --bench (as under `cargo test`), a tiny run that only checks correctness.";

/// How long `benches/compare/setup.sh` may take for one server (npm and pip
/// download, go builds).
const SETUP_TIMEOUT: Duration = Duration::from_secs(600);

/// The command line.
#[derive(Debug)]
struct Options {
    /// `--bench`, which `cargo bench` passes: the full run.
    full: bool,
    only: Option<Vec<String>>,
    compare: bool,
    out: Option<PathBuf>,
    docs: bool,
    /// Positional arguments are test-name filters, as `cargo test NAME`
    /// passes them to every test binary: run only if one matches "load".
    filters: Vec<String>,
    /// `cargo test -- --ignored` runs only ignored tests, and this is not one.
    ignored_only: bool,
}

/// What the command line asks for.
enum Parsed {
    Run(Options),
    /// `--help`, or `--list` from `cargo test -- --list`: print and exit 0.
    Print(String),
}

impl Options {
    fn parse(args: impl IntoIterator<Item = String>) -> Result<Parsed, String> {
        let mut options = Options {
            full: false,
            only: None,
            compare: false,
            out: None,
            docs: false,
            filters: Vec::new(),
            ignored_only: false,
        };
        let mut args = args.into_iter();
        while let Some(arg) = args.next() {
            let (flag, inline) = match arg.split_once('=') {
                Some((flag, value)) if flag.starts_with("--") => (flag.to_string(), Some(value)),
                _ => (arg.clone(), None),
            };
            let mut value = |name: &str| match inline {
                Some(v) => Ok(v.to_string()),
                None => args.next().ok_or_else(|| format!("{name} needs a value")),
            };
            match flag.as_str() {
                "--bench" => options.full = true,
                "--compare" => options.compare = true,
                "--docs" => options.docs = true,
                "--only" => {
                    let names: Vec<String> =
                        value("--only")?.split(',').map(|n| n.trim().to_string()).collect();
                    if let Some(bad) = names.iter().find(|n| !NAMES.contains(&n.as_str())) {
                        return Err(format!("no scenario {bad:?}; there are {}", NAMES.join(", ")));
                    }
                    options.only = Some(names);
                }
                "--out" => options.out = Some(PathBuf::from(value("--out")?)),
                "-h" | "--help" => return Ok(Parsed::Print(USAGE.to_string())),
                // `cargo test -- --list` asks every test binary for its tests.
                "--list" => return Ok(Parsed::Print("load: test".to_string())),
                // Options `cargo test -- ...` passes to every test binary,
                // meant for libtest: harmless here, so accepted and ignored.
                "--nocapture" | "--show-output" | "--quiet" | "-q" | "--exact"
                | "--include-ignored" => {}
                "--test-threads" | "--color" | "--format" => {
                    value(&flag)?;
                }
                "--ignored" => options.ignored_only = true,
                other if other.starts_with('-') => return Err(format!("unknown option {other}")),
                _ => options.filters.push(arg),
            }
        }
        if options.docs && !options.full {
            return Err("--docs needs a full run: cargo bench --bench load -- --docs".into());
        }
        Ok(Parsed::Run(options))
    }
}

#[tokio::main]
async fn main() -> ExitCode {
    let options = match Options::parse(std::env::args().skip(1)) {
        Ok(Parsed::Run(options)) => options,
        Ok(Parsed::Print(text)) => {
            println!("{text}");
            return ExitCode::SUCCESS;
        }
        Err(mistake) => {
            eprintln!("error: {mistake} (see --help)");
            return ExitCode::from(2);
        }
    };
    let filtered_out =
        !options.filters.is_empty() && !options.filters.iter().any(|f| "load".contains(f.as_str()));
    if filtered_out || options.ignored_only {
        println!("load: filtered out");
        return ExitCode::SUCCESS;
    }
    client::now_ns(); // starts the shared clock

    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    let open_files = match proc::raise_open_file_limit() {
        Ok(limit) => limit,
        Err(e) => {
            eprintln!("warning: cannot raise the open-file limit: {e}");
            1024
        }
    };
    let examples = match build_examples(&root, options.full) {
        Ok(dir) => dir,
        Err(e) => {
            eprintln!("error: {e}");
            return ExitCode::FAILURE;
        }
    };
    let ctx = Ctx {
        scale: if options.full { Scale::full() } else { Scale::tiny() },
        paths: Paths { root: root.clone(), examples },
        open_files,
        clock_ticks: proc::clock_ticks_per_second(),
    };
    // Each compare server with whether it can run (`Err`: why not).
    let mut compare = Vec::new();
    if options.compare {
        for implementation in Impl::COMPARED {
            compare.push((implementation, setup_compare(&root, implementation).await));
        }
    }

    let selected = |scenario: &str| {
        options.only.as_ref().is_none_or(|only| only.iter().any(|n| n == scenario))
    };
    let started = Instant::now();
    let mut rows = Vec::new();
    for scenario in NAMES {
        if !selected(scenario) {
            continue;
        }
        let mut servers = vec![Impl::Rust];
        if AXUM && scenarios::on_axum(scenario) {
            servers.push(Impl::Axum);
        }
        if scenarios::compared(scenario) {
            servers.extend(compare.iter().map(|(implementation, _)| *implementation));
        }
        for implementation in servers {
            let row = match compare.iter().find(|(i, _)| *i == implementation) {
                Some((_, Err(why))) => Row::skipped(scenario, implementation, why),
                _ => run_one(scenario, implementation, &ctx).await,
            };
            rows.push(row);
        }
    }

    let machine = proc::Machine::describe(&root);
    let table = report::table(&rows);
    println!("\n{table}");
    println!(
        "{} mode, {} cores ({}), {:.0} s in all",
        if options.full { "full" } else { "tiny" },
        machine.nproc,
        machine.cpu_model,
        started.elapsed().as_secs_f64()
    );
    if !AXUM && NAMES.into_iter().any(|s| selected(s) && scenarios::on_axum(s)) {
        let command = if options.full {
            "cargo bench --features axum --bench load"
        } else {
            "cargo test --features axum --bench load"
        };
        println!(
            "axum rows skipped: this benchmark was built without the `axum` feature, which \
             examples/axum_chat.rs needs; for them: {command}"
        );
    }

    let mode = if options.full { "full" } else { "tiny" };
    let json = report::json(&rows, &machine, mode);
    let svg = report::svg(&rows, &machine, mode);
    let out = options.out.clone().unwrap_or_else(|| {
        root.join(if options.full { "target/bench" } else { "target/bench/tiny" })
    });
    let mut outputs = vec![(out.join("results.json"), out.join("chart.svg"))];
    if options.docs {
        outputs
            .push((root.join("docs/bench/results.json"), root.join("docs/images/benchmark.svg")));
    }
    for (json_path, svg_path) in outputs {
        let text = serde_json::to_string_pretty(&json).unwrap_or_default() + "\n";
        if let Err(e) = write(&json_path, &text).and_then(|()| write(&svg_path, &svg)) {
            eprintln!("error: {e}");
            return ExitCode::FAILURE;
        }
        println!("wrote {} and {}", json_path.display(), svg_path.display());
    }

    let failed: Vec<&Row> = rows.iter().filter(|r| r.ours && !r.problems.is_empty()).collect();
    // A closing line in the form test runners use, so that `cargo test`,
    // which runs this tiny, ends on a count of the checks it made. A skipped
    // row checked nothing, so it is not a pass.
    let ours = rows.iter().filter(|r| r.ours).count();
    let skipped = rows.iter().filter(|r| r.ours && r.skipped.is_some()).count();
    println!(
        "load: {} passed, {} failed, {skipped} skipped",
        ours - failed.len() - skipped,
        failed.len()
    );
    if failed.is_empty() {
        ExitCode::SUCCESS
    } else {
        let names: Vec<String> = failed.iter().map(|r| r.scenario.clone()).collect();
        eprintln!("correctness checks failed for our servers in: {}", names.join(", "));
        ExitCode::FAILURE
    }
}

/// Runs one row, saying on stderr what is going on (a full run takes
/// minutes).
async fn run_one(scenario: &str, implementation: Impl, ctx: &Ctx) -> Row {
    eprint!("{scenario} / {} ... ", implementation.label());
    let _ = std::io::stderr().flush();
    let started = Instant::now();
    let row = scenarios::run(scenario, implementation, ctx).await;
    let verdict = if row.problems.is_empty() { "ok" } else { "PROBLEMS" };
    eprintln!("{verdict} ({:.1} s)", started.elapsed().as_secs_f64());
    row
}

/// Builds the examples and returns the folder they are in.
///
/// The full run builds them in release mode. The tiny run builds them in the
/// profile of this very binary (target/<profile>/deps/load-HASH), as the
/// test harness does (tests/common/mod.rs), so that `cargo test` checks the
/// same code it just compiled, without a release build.
fn build_examples(root: &Path, full: bool) -> Result<PathBuf, String> {
    let exe = std::env::current_exe().map_err(|e| format!("own path: {e}"))?;
    let profile_dir = exe
        .parent()
        .and_then(Path::parent)
        .ok_or_else(|| format!("{} is not in target/<profile>/deps", exe.display()))?;
    let release = full || profile_dir.ends_with("release");
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let mut build = Command::new(cargo);
    build.args(["build", "--examples"]).current_dir(root);
    // The features of this very binary (`--features axum`, `--all-features`):
    // axum_chat needs it, and the library built without it would be another
    // build than the one just compiled.
    if AXUM {
        build.args(["--features", "axum"]);
    }
    if release {
        build.arg("--release");
    }
    if !full {
        build.arg("--quiet");
    }
    let status = build.status().map_err(|e| format!("cannot run cargo build: {e}"))?;
    if !status.success() {
        return Err(format!("cargo build --examples failed ({status})"));
    }
    let target = profile_dir.parent().ok_or("no target folder")?;
    Ok(target.join(if release { "release" } else { "debug" }).join("examples"))
}

/// Runs `benches/compare/setup.sh NAME` for one compare server (it installs
/// `ws` or `websockets` into a local folder, or builds the Go server). `Err`
/// says why that server cannot run.
async fn setup_compare(root: &Path, implementation: Impl) -> Result<(), String> {
    let script = root.join("benches/compare/setup.sh");
    if !script.exists() {
        return Err(format!("{} is missing", script.display()));
    }
    let name = implementation.label();
    eprintln!("setting up the {name} compare server: bash {} {name}", script.display());
    let child = tokio::process::Command::new("bash")
        .arg(&script)
        .arg(name)
        .current_dir(root)
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .map_err(|e| format!("cannot run bash: {e}"))?;
    // npm, pip and go may be slow, never this slow.
    let output = match tokio::time::timeout(SETUP_TIMEOUT, child.wait_with_output()).await {
        Ok(Ok(output)) => output,
        Ok(Err(e)) => return Err(format!("setup.sh: {e}")),
        Err(_) => return Err(format!("setup.sh did not finish within {SETUP_TIMEOUT:?}")),
    };
    if output.status.success() {
        eprintln!("{}", String::from_utf8_lossy(&output.stdout).trim());
        return Ok(());
    }
    let stderr = String::from_utf8_lossy(&output.stderr);
    let why = stderr.lines().rev().find(|l| !l.trim().is_empty()).unwrap_or("no message");
    eprintln!("{name} compare server skipped: setup.sh failed: {why}");
    Err(format!("setup.sh failed: {why}"))
}

fn write(path: &Path, text: &str) -> Result<(), String> {
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).map_err(|e| format!("create {}: {e}", dir.display()))?;
    }
    std::fs::write(path, text).map_err(|e| format!("write {}: {e}", path.display()))
}
