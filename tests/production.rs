//! Running for real (chapter 11): the systemd unit in `deploy/` is one that
//! systemd accepts, and its command line is one chat_server starts with and
//! stops cleanly on the signal systemd sends.
//!
//! The first test needs `systemd-analyze` (Debian's `systemd` package).
//! Without it `cargo test` shows the test as `ignored`, with the reason,
//! except in CI, where it fails (see `common::trial_needing`).

mod common;

use std::process::ExitCode;

use common::{Component, Program, TempFile, example_path, run_trials, trial, trial_needing};

/// The unit as the repository has it.
const UNIT: &str = include_str!("../deploy/chat_server.service");

/// Where the unit expects the binary; the tests put the one cargo built there.
const INSTALLED_AT: &str = "/usr/local/bin/chat_server";

fn main() -> ExitCode {
    let systemd = Component {
        name: "systemd-analyze",
        install: "apt-get install systemd",
        missing: systemd_analyze_missing(),
    };
    let trials = vec![
        trial_needing(
            &systemd,
            "the_systemd_unit_passes_systemd_analyze_verify",
            the_systemd_unit_passes_systemd_analyze_verify,
        ),
        trial(
            "the_units_command_line_starts_chat_server_and_sigterm_stops_it_with_exit_0",
            the_units_command_line_starts_chat_server_and_sigterm_stops_it_with_exit_0,
        ),
    ];
    run_trials(include_str!("production.rs"), trials)
}

fn systemd_analyze_missing() -> Option<String> {
    match std::process::Command::new("systemd-analyze").arg("--version").output() {
        Ok(out) if out.status.success() => None,
        Ok(out) => Some(format!("`systemd-analyze --version` exited with {}", out.status)),
        Err(e) => Some(e.to_string()),
    }
}

/// The arguments after the program in the unit's `ExecStart=`.
fn exec_start_args() -> Vec<String> {
    let line = UNIT.lines().find_map(|l| l.strip_prefix("ExecStart="));
    let mut words = line.expect("the unit has an ExecStart= line").split_whitespace();
    assert_eq!(words.next(), Some(INSTALLED_AT), "ExecStart runs {INSTALLED_AT}");
    words.map(str::to_string).collect()
}

/// `systemd-analyze verify` reads the unit as systemd would: an unknown key,
/// a value it cannot parse or a missing executable is a warning on stderr
/// (with exit status 0 for most), so the test wants no output at all.
async fn the_systemd_unit_passes_systemd_analyze_verify() {
    let binary = example_path("chat_server");
    let unit = UNIT.replace(INSTALLED_AT, binary.to_str().expect("a UTF-8 path"));
    let file = TempFile::named("chat_server.service", &unit);
    let out = tokio::process::Command::new("systemd-analyze")
        .args(["verify", file.arg()])
        .output()
        .await
        .expect("run systemd-analyze");
    let said =
        format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    assert!(out.status.success(), "systemd-analyze verify failed: {said}");
    assert_eq!(said, "", "systemd-analyze verify warned");
}

/// The unit's own command line, on free ports instead of its fixed ones:
/// chat_server starts with it, and `systemctl stop`'s SIGTERM ends it with
/// exit 0, which `Restart=on-failure` takes as a clean stop.
async fn the_units_command_line_starts_chat_server_and_sigterm_stops_it_with_exit_0() {
    // Every IP:PORT (the chat address, the admin address) on port 0.
    let args: Vec<String> = exec_start_args()
        .into_iter()
        .map(|arg| match arg.parse::<std::net::SocketAddr>() {
            Ok(addr) => format!("{}:0", addr.ip()),
            Err(_) => arg,
        })
        .collect();
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let mut server = Program::start("chat_server", &args);
    let first = server.next_line().await.expect("chat_server printed nothing");
    assert!(first.starts_with("listening on ws://127.0.0.1:"), "first line: {first:?}");
    server.signal("TERM");
    assert_eq!(server.exit_code().await, 0, "SIGTERM is a clean stop");
}
