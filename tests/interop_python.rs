//! Interoperability: a WebSocket client nobody here wrote, Python's
//! `websockets` package, uses the servers exactly as their docs say, and our
//! full client talks to a `websockets` server. The Python side lives in
//! `tests/python/`. Over wss too (chapter 10.6): Python checks the servers'
//! run-time certificates against the test's CA, and refuses them without it.
//!
//! Needs `python3` with `websockets` >= 15 (`pip install websockets`).
//! Without it `cargo test` shows the tests as `ignored`, with the reason,
//! except in CI (the `CI` environment variable is set), where a missing
//! package is a failure: CI must run these tests (see
//! `common::trial_needing`).

mod common;

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Duration;

use common::{
    Certificates, Component, Program, Server, axum_chat_missing, run_trials, trial_needing,
};
use tokio::process::Command;

/// The exit status the Python scripts use for "websockets is not available".
const UNAVAILABLE: i32 = 77;

fn main() -> ExitCode {
    let python = Component {
        name: "python3 websockets",
        install: "pip install websockets",
        missing: python_websockets_missing(),
    };
    // axum_chat (chapter 12) is built only with `--features axum`.
    let python_and_axum = Component {
        name: "python3 websockets, and axum_chat",
        install: "pip install websockets; cargo test --features axum",
        missing: python.missing.clone().or_else(axum_chat_missing),
    };
    let trials = vec![
        trial_needing(
            &python,
            "python_client_gets_identical_echoes_and_a_clean_close",
            python_client_gets_identical_echoes_and_a_clean_close,
        ),
        trial_needing(
            &python,
            "ctrl_c_closes_a_python_client_with_1001",
            ctrl_c_closes_a_python_client_with_1001,
        ),
        trial_needing(&python, "python_clients_chat_in_a_room", python_clients_chat_in_a_room),
        trial_needing(
            &python_and_axum,
            "python_clients_chat_in_a_room_on_axum_chat",
            python_clients_chat_in_a_room_on_axum_chat,
        ),
        trial_needing(
            &python,
            "full_client_gets_every_echo_from_a_python_server",
            full_client_gets_every_echo_from_a_python_server,
        ),
        trial_needing(
            &python,
            "python_clients_chat_over_wss_trusting_only_the_test_ca",
            python_clients_chat_over_wss_trusting_only_the_test_ca,
        ),
        trial_needing(
            &python,
            "python_refuses_a_certificate_it_has_no_ca_for_and_the_server_carries_on",
            python_refuses_a_certificate_it_has_no_ca_for_and_the_server_carries_on,
        ),
    ];
    run_trials(include_str!("interop_python.rs"), trials)
}

fn scripts_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/python")
}

/// Why the scripts cannot run here, or `None` when they can. Importing
/// `echo_check` runs the scripts' own check (`websockets` >= 15, else exit
/// [`UNAVAILABLE`]), so this asks exactly what the scripts need.
fn python_websockets_missing() -> Option<String> {
    let probe = std::process::Command::new("python3")
        .args(["-c", "import echo_check"])
        .current_dir(scripts_dir())
        .output();
    match probe {
        Ok(out) if out.status.success() => None,
        Ok(out) if out.status.code() == Some(UNAVAILABLE) => {
            Some(String::from_utf8_lossy(&out.stderr).trim().to_string())
        }
        Ok(out) => panic!(
            "python3 -c 'import echo_check' failed ({}): {}",
            out.status,
            String::from_utf8_lossy(&out.stderr)
        ),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Some("python3 not found".into()),
        Err(e) => panic!("run python3: {e}"),
    }
}

/// Starts `python3 tests/python/<script> <args>`, stdout and stderr piped.
fn start_python(script: &str, args: &[&str]) -> Program {
    let mut command = Command::new("python3");
    command.arg(scripts_dir().join(script)).args(args);
    Program::spawn(command)
}

/// Runs a Python check to its end and returns its stdout lines. Fails the
/// test unless the script exits 0.
///
/// Every step of a script that waits on a server has a deadline of its own
/// (`DEADLINE` in echo_check.py, 10 s) and then fails saying which step, so
/// the test waits a little longer than that for each line: a failure names
/// its step. A script silent even then is interrupted, and its traceback
/// (stderr) shows where it was stuck.
async fn run_python(script: &str, args: &[&str]) -> Vec<String> {
    const PER_LINE: Duration = Duration::from_secs(15);
    let mut python = start_python(script, args);
    let mut lines = Vec::new();
    loop {
        match python.next_line_within(PER_LINE).await {
            Ok(Some(line)) => lines.push(line),
            Ok(None) => break,
            Err(_) => {
                python.interrupt();
                // (It dies of the SIGINT, so no exit code to check.)
                let _ = tokio::time::timeout(PER_LINE, python.child.wait()).await;
                let stderr = python.stderr_text().await;
                panic!("{script}: no line within {PER_LINE:?} after {lines:?}\nstderr:\n{stderr}");
            }
        }
    }
    let code = python.exit_code().await;
    let stderr = python.stderr_text().await;
    assert_eq!(code, 0, "{script} failed\nstdout:\n{}\nstderr:\n{stderr}", lines.join("\n"));
    lines
}

/// Python's client gets every text (ASCII, non-ASCII, empty) and binary
/// message (0 bytes to 1 MiB, across each frame-length encoding) back from
/// echo_server, and from its first version, byte for byte and as the same
/// frame type, its ping answered, and its close answered with 1000.
async fn python_client_gets_identical_echoes_and_a_clean_close() {
    for name in ["echo_server_first", "echo_server"] {
        let server = Server::start(name, &[]).await;
        let lines = run_python("echo_check.py", &[&server.url]).await;
        assert_eq!(lines, ECHO_CHECKS, "{name}");
        server.stop().await;
    }
}

/// What echo_check.py prints when every check passed: one line per check,
/// so a check the script skipped fails too.
const ECHO_CHECKS: [&str; 12] = [
    "text (5 bytes): identical",
    "text (27 bytes): identical",
    "text (0 bytes): identical",
    "binary (0 bytes): identical",
    "binary (1 bytes): identical",
    "binary (125 bytes): identical",
    "binary (126 bytes): identical",
    "binary (65535 bytes): identical",
    "binary (65536 bytes): identical",
    "binary (1048576 bytes): identical",
    "ping: pong received",
    "close code: 1000",
];

/// Ctrl-C on echo_server closes a Python client's connection with 1001
/// (going away), and the server exits 0.
async fn ctrl_c_closes_a_python_client_with_1001() {
    let mut server = Server::start("echo_server", &[]).await;
    let mut python = start_python("echo_check.py", &[&server.url, "--wait-for-close"]);
    match python.next_line().await {
        Some(line) => assert_eq!(line, "connected"),
        None => panic!("echo_check.py ended before connecting: {}", python.stderr_text().await),
    }
    server.program.wait_for_log(|line| line.ends_with(": connected")).await;

    server.program.interrupt();
    let (line, _) = python.wait_for(|line| line.starts_with("close code:")).await;
    assert_eq!(line, "close code: 1001");
    assert_eq!(python.exit_code().await, 0, "{}", python.stderr_text().await);
    assert_eq!(server.program.exit_code().await, 0, "server exits 0 on Ctrl-C");
}

/// Two Python clients join `general` on chat_server: a Message reaches both
/// with the sender's name, seq 1 and a server-set RFC 3339 timestamp; invalid
/// JSON gets an Error event and the connection stays open (the next message,
/// which claims another name and time, arrives as seq 2 under the sender's
/// real name and the server's time); both close with 1000.
async fn python_clients_chat_in_a_room() {
    let server = Server::start("chat_server", &[]).await;
    let lines = run_python("chat_check.py", &[&server.url]).await;
    assert_eq!(lines, CHAT_CHECKS);
    server.stop().await;
}

/// The same chat on axum_chat (chapter 12), at its `/ws`.
async fn python_clients_chat_in_a_room_on_axum_chat() {
    let server = Server::start("axum_chat", &[]).await;
    assert!(server.url.ends_with("/ws"), "{}", server.url);
    let lines = run_python("chat_check.py", &[&server.url]).await;
    assert_eq!(lines, CHAT_CHECKS);
    server.stop().await;
}

/// What chat_check.py prints when every check passed.
const CHAT_CHECKS: [&str; 5] = [
    "joined: alice and bob are in general",
    "message seq 1 from alice: received by alice and bob",
    "invalid JSON: answered with an Error event",
    "message seq 2 from bob: received by alice and bob",
    "close code: 1000 for both",
];

/// The chat of [`python_clients_chat_in_a_room`] over wss (chapter 10.6):
/// chat_server has a certificate made for this run, and Python's clients
/// check it against the run's CA and nothing else
/// (`ssl.create_default_context(cafile=...)`).
async fn python_clients_chat_over_wss_trusting_only_the_test_ca() {
    let certificates = Certificates::new();
    let server = Server::start("chat_server", &certificates.args()).await;
    assert!(server.url.starts_with("wss://"), "{}", server.url);
    let lines =
        run_python("chat_check.py", &[&server.url, "--cafile", certificates.ca.arg()]).await;
    assert_eq!(lines, CHAT_CHECKS);
    server.stop().await;
}

/// Python's client, trusting the system's authorities as `websockets` does
/// by default, refuses echo_server's certificate: none of them signed it.
/// The refusal is about the issuer, not the name (the certificate names
/// 127.0.0.1), and the server logs the failed TLS handshake. The failed
/// handshake ends that connection only: the next Python client, given the
/// CA, gets every echo over wss.
async fn python_refuses_a_certificate_it_has_no_ca_for_and_the_server_carries_on() {
    let certificates = Certificates::new();
    let mut server = Server::start("echo_server", &certificates.args()).await;
    let lines = run_python("echo_check.py", &[&server.url, "--expect-untrusted"]).await;
    assert_eq!(
        lines,
        ["certificate refused: CERTIFICATE_VERIFY_FAILED (unable to get local issuer certificate)"]
    );
    // The server saw that connection's TLS handshake end unfinished.
    // (Python's asyncio client hangs up without a TLS alert: `tls handshake
    // eof`; why it refused is the line above.)
    server.program.wait_for_log(|line| line.contains("handshake failed error=tls handshake")).await;

    let lines =
        run_python("echo_check.py", &[&server.url, "--cafile", certificates.ca.arg()]).await;
    assert_eq!(lines, ECHO_CHECKS);
    server.stop().await;
}

/// `printf 'a\nb\n' | full_client URL` against an echo server written with
/// Python's `websockets`, which sends nothing more once it has received a
/// close frame: at the end of its input, the client waits until the
/// connection has been quiet before it closes, so both echoes arrive, and
/// the close is a clean 1000.
async fn full_client_gets_every_echo_from_a_python_server() {
    let mut server = start_python("echo_server.py", &[]);
    let Some(first) = server.next_line().await else {
        panic!("echo_server.py ended before listening: {}", server.stderr_text().await)
    };
    let url = first.strip_prefix("listening on ").unwrap_or_else(|| panic!("{first:?}"));
    let mut client = Program::start("full_client", &[url]);
    client.write_stdin("a\nb\n").await;
    client.close_stdin();
    assert_eq!(client.remaining_lines().await, ["< a", "< b", "closed: 1000 (end of input)"]);
    assert_eq!(client.exit_code().await, 0);
}
