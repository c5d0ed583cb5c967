//! Running for real (chapter 11): the systemd unit in `deploy/` is one that
//! systemd accepts, and its command line is one chat_server starts with and
//! stops cleanly on the signal systemd sends.
//!
//! A server also raises its own open-file limit (`src/limits.rs`, chapter
//! 11.3), which the last test checks under util-linux's `prlimit`.
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
        trial(
            "a_server_raises_its_open_file_limit_and_warns_when_even_the_hard_one_is_too_low",
            a_server_raises_its_open_file_limit_and_warns_when_even_the_hard_one_is_too_low,
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

/// Started as a shell would start it, with a soft open-file limit far below
/// its hard one (256 and 2,048 here, set by util-linux's `prlimit`), a
/// server raises the soft limit to the hard one, and its log says when even
/// that is below `--max-connections` (10,000 by default) plus a margin;
/// with `--max-connections 1000` it says nothing.
async fn a_server_raises_its_open_file_limit_and_warns_when_even_the_hard_one_is_too_low() {
    const WARNING: &str = "the open-file limit is below --max-connections";
    for (max_connections, warned) in [("10000", true), ("1000", false)] {
        let mut command = tokio::process::Command::new("prlimit");
        command.args(["--nofile=256:2048", "--"]).arg(example_path("chat_server"));
        command.args(["127.0.0.1:0", "--max-connections", max_connections]);
        let mut server = Program::spawn(command);
        let first = server.next_line().await.expect("chat_server printed nothing");
        assert!(first.starts_with("listening on ws://"), "first line: {first:?}");
        // A handshake answered proves `serve` started, and it raises the
        // limit before it accepts anything.
        let url = first.strip_prefix("listening on ").expect("a URL");
        let (ws, _) = tokio_tungstenite::connect_async(url).await.expect("a handshake");
        drop(ws);
        let pid = server.child.id().expect("running");
        let limits = std::fs::read_to_string(format!("/proc/{pid}/limits")).expect("its limits");
        let open_files = limits.lines().find(|l| l.starts_with("Max open files"));
        let numbers: Vec<&str> =
            open_files.expect("a Max open files line").split_whitespace().skip(3).take(2).collect();
        assert_eq!(numbers, ["2048", "2048"], "soft limit raised to the hard one:\n{limits}");
        server.signal("TERM");
        assert_eq!(server.exit_code().await, 0);
        let log = server.stderr_text().await;
        assert_eq!(log.contains(WARNING), warned, "--max-connections {max_connections}:\n{log}");
    }
}
