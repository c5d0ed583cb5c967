//! Running the examples: a built example as a child process whose
//! stdout, stderr and exit code a test reads, a server started on a free
//! port, signals, ports that refuse, and reading the servers' log lines.

use std::path::PathBuf;
use std::process::Stdio;
use std::sync::OnceLock;
use std::time::Duration;

use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::process::{Child, ChildStdin, Command};
use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tokio::time::timeout;

use super::*;

/// The path of a built example.
///
/// `cargo test` builds every example before it runs any test, but
/// `cargo test --test NAME` does not, and would run a stale binary after an
/// edit. So each test binary runs `cargo build --examples` once (a no-op
/// when nothing changed) before it starts its first example.
pub fn example_path(name: &str) -> PathBuf {
    static BUILT: OnceLock<()> = OnceLock::new();
    // target/<profile>/deps/<test binary> -> target/<profile>/examples/<name>
    let exe = std::env::current_exe().expect("test binary path");
    let profile_dir = exe.parent().and_then(|deps| deps.parent()).expect("target dir");
    BUILT.get_or_init(|| {
        let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
        let mut build = std::process::Command::new(cargo);
        build.args(["build", "--examples", "--quiet"]);
        // The features of this test run (`cargo test --all-features`): the
        // library built without them would be rebuilt, and every example
        // with it, and axum_chat (chapter 12) needs `axum`.
        if cfg!(feature = "axum") {
            build.args(["--features", "axum"]);
        }
        // Build the same profile as this test binary (`cargo test --release`).
        if profile_dir.ends_with("release") {
            build.arg("--release");
        }
        // Without the variables cargo set for this test run: ring's build
        // script reruns when CARGO_MANIFEST_DIR changes, so inheriting it
        // rebuilt ring, rustls and every example here, and the next `cargo
        // test` rebuilt them back (about 15 s of CPU per test binary).
        for (name, _) in std::env::vars_os() {
            let name = name.to_string_lossy();
            let set_by_cargo = ["CARGO_MANIFEST_", "CARGO_PKG_", "CARGO_BIN_EXE_"]
                .iter()
                .any(|prefix| name.starts_with(prefix))
                || ["CARGO_CRATE_NAME", "CARGO_PRIMARY_PACKAGE", "CARGO_TARGET_TMPDIR"]
                    .contains(&name.as_ref());
            if set_by_cargo {
                build.env_remove(name.as_ref());
            }
        }
        let status = build
            .current_dir(env!("CARGO_MANIFEST_DIR"))
            .status()
            .expect("run cargo build --examples");
        assert!(status.success(), "cargo build --examples failed");
    });
    let path = profile_dir.join("examples").join(name);
    assert!(path.exists(), "example binary {} is missing", path.display());
    path
}

/// A running program. It is killed when dropped, so a failing test leaves
/// nothing behind.
///
/// Its stdout and stderr are drained all the time by background tasks: a
/// busy server logs a line per connection, and a pipe nobody reads fills
/// up (64 KiB) and then drops or blocks the program's writes mid-test.
pub struct Program {
    pub child: Child,
    pub stdin: Option<ChildStdin>,
    stdout: mpsc::UnboundedReceiver<String>,
    /// stderr's lines, as they come: the log.
    log: mpsc::UnboundedReceiver<String>,
    /// All of stderr, once it closes.
    stderr: Option<JoinHandle<String>>,
}

impl Program {
    /// Starts example `name` with `args`.
    pub fn start(name: &str, args: &[&str]) -> Program {
        let mut command = Command::new(example_path(name));
        command.args(args);
        Program::spawn(command)
    }

    /// Starts `command` with stdin, stdout and stderr piped.
    pub fn spawn(command: Command) -> Program {
        let described = format!("{command:?}");
        Program::try_spawn(command).unwrap_or_else(|e| panic!("start {described}: {e}"))
    }

    /// Like [`Program::spawn`], returning the error (for example NotFound).
    pub fn try_spawn(mut command: Command) -> std::io::Result<Program> {
        let mut child = command
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(true)
            .spawn()?;
        let (lines_tx, stdout) = mpsc::unbounded_channel();
        let mut lines = BufReader::new(child.stdout.take().expect("piped stdout")).lines();
        tokio::spawn(async move {
            while let Ok(Some(line)) = lines.next_line().await {
                if lines_tx.send(line).is_err() {
                    break;
                }
            }
        });
        let (log_tx, log) = mpsc::unbounded_channel();
        let mut stderr_pipe = BufReader::new(child.stderr.take().expect("piped stderr"));
        let stderr = tokio::spawn(async move {
            let mut text = String::new();
            loop {
                let start = text.len();
                match stderr_pipe.read_line(&mut text).await {
                    Ok(0) | Err(_) => break,
                    Ok(_) => {
                        let _ = log_tx.send(text[start..].trim_end_matches('\n').to_string());
                    }
                }
            }
            text
        });
        Ok(Program { stdin: child.stdin.take(), child, stdout, log, stderr: Some(stderr) })
    }

    /// The next line on stdout, within [`WAIT`]; `None` at end of output.
    pub async fn next_line(&mut self) -> Option<String> {
        self.next_line_within(WAIT)
            .await
            .unwrap_or_else(|_| panic!("no output line within {WAIT:?}"))
    }

    /// The next line on stdout, `Ok(None)` at end of output, or `Err` when
    /// none came within `wait`: for a caller that has more to say about a
    /// silence than [`Program::next_line`] can.
    pub async fn next_line_within(
        &mut self,
        wait: Duration,
    ) -> Result<Option<String>, tokio::time::error::Elapsed> {
        timeout(wait, self.stdout.recv()).await
    }

    /// Reads stdout until a line satisfies `pred`, and returns that line
    /// and every line before it. Fails after [`WAIT`].
    pub async fn wait_for(&mut self, pred: impl Fn(&str) -> bool) -> (String, Vec<String>) {
        Self::wait_for_line(&mut self.stdout, pred).await
    }

    /// Like [`Program::wait_for`], on stderr: the program's log.
    pub async fn wait_for_log(&mut self, pred: impl Fn(&str) -> bool) -> (String, Vec<String>) {
        Self::wait_for_line(&mut self.log, pred).await
    }

    async fn wait_for_line(
        lines: &mut mpsc::UnboundedReceiver<String>,
        pred: impl Fn(&str) -> bool,
    ) -> (String, Vec<String>) {
        let mut seen = Vec::new();
        let found = timeout(WAIT, async {
            while let Some(line) = lines.recv().await {
                if pred(&line) {
                    return Some(line);
                }
                seen.push(line);
            }
            None
        })
        .await;
        match found {
            Ok(Some(line)) => (line, seen),
            Ok(None) => panic!("output ended without the expected line; saw {seen:#?}"),
            Err(_) => panic!("expected line not seen within {WAIT:?}; saw {seen:#?}"),
        }
    }

    /// Every remaining stdout line, until the program closes its stdout
    /// (within [`WAIT`]).
    pub async fn remaining_lines(&mut self) -> Vec<String> {
        let mut lines = Vec::new();
        timeout(WAIT, async {
            while let Some(line) = self.stdout.recv().await {
                lines.push(line);
            }
        })
        .await
        .unwrap_or_else(|_| panic!("stdout still open after {WAIT:?}; saw {lines:#?}"));
        lines
    }

    /// Writes `text` to the program's stdin.
    pub async fn write_stdin(&mut self, text: &str) {
        let stdin = self.stdin.as_mut().expect("stdin still open");
        stdin.write_all(text.as_bytes()).await.expect("write stdin");
        stdin.flush().await.expect("flush stdin");
    }

    /// Closes stdin: the program sees end of input.
    pub fn close_stdin(&mut self) {
        self.stdin = None;
    }

    /// Sends SIGINT, as Ctrl-C in a terminal does.
    pub fn interrupt(&self) {
        self.signal("INT");
    }

    /// Sends signal `name` (`INT`, `STOP`, `CONT`, ...) with `kill`. STOP
    /// freezes a server without closing its sockets: from outside it looks
    /// like a machine that vanished, the case heartbeats exist for.
    pub fn signal(&self, name: &str) {
        signal(&self.child, name);
    }

    /// Waits for the program to exit, within [`WAIT`], and returns its code.
    pub async fn exit_code(&mut self) -> i32 {
        let status = timeout(WAIT, self.child.wait())
            .await
            .unwrap_or_else(|_| panic!("program still running after {WAIT:?}"))
            .expect("wait for program");
        status.code().expect("exited normally, not by a signal")
    }

    /// Everything the program wrote to stderr (call after it has exited).
    pub async fn stderr_text(&mut self) -> String {
        let Some(stderr) = self.stderr.take() else { return String::new() };
        timeout(WAIT, stderr).await.expect("stderr closed in time").unwrap_or_default()
    }
}

/// Sends signal `name` to `child` with `kill`, as [`Program::signal`] does,
/// for a child started without the [`Program`] harness.
pub fn signal(child: &Child, name: &str) {
    let pid = child.id().expect("program still running");
    let status = std::process::Command::new("kill")
        .args([&format!("-{name}"), &pid.to_string()])
        .status()
        .expect("run kill");
    assert!(status.success(), "kill -{name} {pid} failed");
}

/// A server example running on a free port.
pub struct Server {
    pub program: Program,
    /// `IP:PORT` as the server printed it.
    pub addr: String,
    /// `ws://IP:PORT`, or `wss://IP:PORT` with `--tls-cert`; for a server
    /// that prints `listening on http://IP:PORT` (axum_chat, chapter 12),
    /// its WebSocket: `ws://IP:PORT/ws`.
    pub url: String,
}

impl Server {
    /// Starts server example `name` on `127.0.0.1:0` with extra `args`, and
    /// waits for its first line, which must be `listening on ws://IP:PORT`
    /// (or `wss://`, or `http://` for a web application).
    pub async fn start(name: &str, args: &[&str]) -> Server {
        Server::start_on(name, "127.0.0.1:0", args).await
    }

    /// Like [`Server::start`], on a given address.
    pub async fn start_on(name: &str, addr: &str, args: &[&str]) -> Server {
        let mut all_args = vec![addr];
        all_args.extend_from_slice(args);
        let mut program = Program::start(name, &all_args);
        let first = program.next_line().await.expect("server printed nothing");
        let url = first
            .strip_prefix("listening on ")
            .unwrap_or_else(|| panic!("first line should be `listening on ws://..`: {first:?}"));
        let addr = ["ws://", "wss://", "http://"].iter().find_map(|s| url.strip_prefix(s));
        let addr = addr.expect("a ws://, wss:// or http:// URL").to_string();
        assert!(!addr.ends_with(":0"), "the real port is printed, not 0: {url}");
        let url = match url.strip_prefix("http://") {
            Some(addr) => format!("ws://{addr}/ws"),
            None => url.to_string(),
        };
        Server { program, addr, url }
    }

    /// Ctrl-C: the server must exit 0.
    pub async fn stop(mut self) {
        self.program.interrupt();
        assert_eq!(self.program.exit_code().await, 0, "server exits 0 on Ctrl-C");
    }
}

/// A free port on 127.0.0.1 (bound, then released for the caller to use).
pub fn free_port() -> u16 {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind port 0");
    listener.local_addr().expect("local addr").port()
}

/// A loopback port where nothing listens, for as long as it lives: a
/// connection to it is refused. Unlike a [`free_port`], which is free only
/// until someone binds it (a server started next, by this test or one
/// running beside it, may be given the very same port), this one stays
/// taken: the socket is bound, but never listens.
pub struct RefusedPort {
    pub port: u16,
    _bound: socket2::Socket,
}

pub fn refused_port() -> RefusedPort {
    use socket2::{Domain, Socket, Type};
    let socket = Socket::new(Domain::IPV4, Type::STREAM, None).expect("a TCP socket");
    let any: std::net::SocketAddr = "127.0.0.1:0".parse().expect("an address");
    socket.bind(&any.into()).expect("bind port 0");
    let bound = socket.local_addr().expect("local addr").as_socket().expect("an IP address");
    RefusedPort { port: bound.port(), _bound: socket }
}

/// The message of a log line, without its time, level and span (if any):
/// `TIME  WARN attempt 3 failed: ...` gives `attempt 3 failed: ...`.
pub fn log_message(line: &str) -> &str {
    let mut rest = line.trim_start();
    for _ in 0..2 {
        // the time, then the level
        rest = rest.split_once(' ').map_or("", |(_, after)| after.trim_start());
    }
    let in_span = rest.split_once('{').is_some_and(|(name, _)| {
        !name.is_empty() && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_')
    });
    match rest.split_once("}: ") {
        Some((_, message)) if in_span => message,
        _ => rest,
    }
}

/// Whether `line`, from a server's log, is about the connection from `peer`
/// (`IP:PORT`, as [`local_addr`] gives it) and its message starts with
/// `event`. A server logs each connection's events inside a span:
/// `TIME  INFO connection{peer=IP:PORT id=client#1}: closing code=1008 ...`.
pub fn logged_for(line: &str, peer: &str, event: &str) -> bool {
    let Some((span, message)) = line.split_once("}: ") else { return false };
    let Some((_, fields)) = span.rsplit_once("connection{") else { return false };
    fields.split(' ').any(|field| field == format!("peer={peer}")) && message.starts_with(event)
}
