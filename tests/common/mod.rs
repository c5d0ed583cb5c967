//! The test harness: runs the real example binaries (the very programs
//! `cargo run --example NAME` starts) and talks to them over real sockets.
//!
//! Nothing here sleeps to synchronise: a server is ready when it has printed
//! its `listening on` line, a message has arrived when it is read, and every
//! wait has a deadline that fails the test.

#![allow(dead_code)] // each test file uses a different part of the harness

pub mod stub;

use std::path::PathBuf;
use std::process::{ExitCode, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use libtest_mimic::{Arguments, Completion, Trial};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader, copy_bidirectional};
use tokio::net::{TcpListener, TcpStream};
use tokio::process::{Child, ChildStdin, Command};
use tokio::sync::{broadcast, mpsc};
use tokio::task::JoinHandle;
use tokio::time::timeout;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use websocket_tutorial::client::{self, WsClient};

/// The deadline for anything that should happen promptly.
pub const WAIT: Duration = Duration::from_secs(10);

/// (username, content, seq) of a chat `Message` event, whose timestamp must
/// be the server's now, in UTC; panics on any other event.
pub fn said(event: websocket_tutorial::protocol::ServerEvent) -> (String, String, u64) {
    match event {
        websocket_tutorial::protocol::ServerEvent::Message {
            username,
            content,
            seq,
            timestamp,
            ..
        } => {
            let stamped = chrono::DateTime::parse_from_rfc3339(&timestamp)
                .unwrap_or_else(|e| panic!("timestamp {timestamp:?} is not RFC 3339: {e}"));
            let age = chrono::Utc::now().signed_duration_since(stamped);
            assert!(age.num_seconds().abs() < 60, "timestamp is the server's now: {timestamp}");
            assert!(timestamp.ends_with('Z'), "timestamp is UTC: {timestamp}");
            (username, content, seq)
        }
        other => panic!("expected a Message event, got {other:?}"),
    }
}

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
    /// `ws://IP:PORT`, or `wss://IP:PORT` with `--tls-cert`.
    pub url: String,
}

impl Server {
    /// Starts server example `name` on `127.0.0.1:0` with extra `args`, and
    /// waits for its first line, which must be `listening on ws://IP:PORT`.
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
            .unwrap_or_else(|| panic!("first line should be `listening on ws://..`: {first:?}"))
            .to_string();
        let addr = url.strip_prefix("ws://").or_else(|| url.strip_prefix("wss://"));
        let addr = addr.expect("a ws:// or wss:// URL").to_string();
        assert!(!addr.ends_with(":0"), "the real port is printed, not 0: {url}");
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

/// Connects a WebSocket client, within [`WAIT`].
pub async fn connect(url: &str) -> WsClient {
    let config = tokio_tungstenite::tungstenite::protocol::WebSocketConfig::default();
    client::connect(url, config).await.unwrap_or_else(|e| panic!("connect to {url}: {e}"))
}

/// The next text or binary message (control frames skipped), within
/// `deadline`. Panics on close, error or timeout.
pub async fn recv_within(ws: &mut WsClient, deadline: Duration) -> Message {
    let next = timeout(deadline, async {
        loop {
            match ws.next().await {
                Some(Ok(msg @ (Message::Text(_) | Message::Binary(_)))) => return Ok(msg),
                Some(Ok(Message::Close(frame))) => return Err(format!("closed: {frame:?}")),
                Some(Ok(_)) => continue,
                Some(Err(e)) => return Err(format!("error: {e}")),
                None => return Err("stream ended".to_string()),
            }
        }
    })
    .await;
    match next {
        Ok(Ok(msg)) => msg,
        Ok(Err(e)) => panic!("expected a message, got {e}"),
        Err(_) => panic!("no message within {deadline:?}"),
    }
}

/// The next text or binary message, within [`WAIT`].
pub async fn recv(ws: &mut WsClient) -> Message {
    recv_within(ws, WAIT).await
}

/// The next message as text, within [`WAIT`].
pub async fn recv_text(ws: &mut WsClient) -> String {
    match recv(ws).await {
        Message::Text(text) => text.to_string(),
        other => panic!("expected text, got {other:?}"),
    }
}

/// Reads until the server's close frame arrives, within [`WAIT`], and
/// returns its code. Text and binary messages before it are skipped.
pub async fn expect_close(ws: &mut WsClient) -> CloseCode {
    let code = timeout(WAIT, async {
        while let Some(msg) = ws.next().await {
            match msg {
                Ok(Message::Close(Some(frame))) => return Some(frame.code),
                Ok(Message::Close(None)) => return None,
                Ok(_) => continue,
                Err(e) => panic!("expected a close frame, got error {e}"),
            }
        }
        panic!("stream ended without a close frame")
    })
    .await
    .unwrap_or_else(|_| panic!("no close frame within {WAIT:?}"));
    code.expect("close frame carries a code")
}

/// After the server's close frame for a broken rule, the end of the stream,
/// not a reset: the server shut its side and drained what we still sent
/// (chapter 10.4).
pub async fn expect_clean_end(ws: &mut WsClient) {
    let end = timeout(WAIT, ws.next()).await.expect("the end of the stream in time");
    assert!(end.is_none(), "the end of the stream after the close frame, not {end:?}");
}

/// Closes from the client side with 1000 and expects the server's answer.
pub async fn close_cleanly(ws: &mut WsClient) {
    ws.send(Message::Close(None)).await.expect("send close");
    let rest = timeout(WAIT, async {
        let mut saw_close = false;
        while let Some(msg) = ws.next().await {
            if let Ok(Message::Close(_)) = msg {
                saw_close = true;
            }
        }
        saw_close
    })
    .await
    .expect("server answered the close within the deadline");
    assert!(rest, "server answered our close frame with its own");
}

/// Connects a client with small socket buffers, so that when it stops
/// reading, the server's sends back up after at most some 200 KB instead
/// of the megabytes the kernels would otherwise buffer.
///
/// Two settings, both before connecting, because both are announced in the
/// TCP handshake: a 4 KiB receive buffer (our window), and a 536-byte
/// maximum segment size. The server's kernel sizes its send buffer from the
/// segment size we announce: on loopback (64 KiB segments) it grows to the
/// `tcp_wmem` maximum, 4 MiB by default; with 536-byte segments it stays
/// under 200 KiB (`ss -tm` showed buffers of 70 to 189 KiB, holding up to
/// 130 KB, depending on how the connection's first moments went).
pub async fn connect_with_small_buffers(url: &str) -> WsClient {
    let addr: std::net::SocketAddr =
        url.strip_prefix("ws://").and_then(|a| a.parse().ok()).expect("ws://IP:PORT URL");
    let socket = tokio::net::TcpSocket::new_v4().expect("socket");
    socket.set_recv_buffer_size(4096).expect("set SO_RCVBUF");
    socket2::SockRef::from(&socket).set_tcp_mss(536).expect("set TCP_MAXSEG");
    let stream =
        timeout(WAIT, socket.connect(addr)).await.expect("connect in time").expect("connect");
    let (ws, _) = timeout(
        WAIT,
        tokio_tungstenite::client_async(url, tokio_tungstenite::MaybeTlsStream::Plain(stream)),
    )
    .await
    .expect("handshake in time")
    .expect("handshake");
    ws
}

/// For a server started with `--max-connections 1` whose one slot `holder`
/// holds: another client waits (its TCP connection sits in the kernel's
/// backlog, its handshake unanswered) until `holder` goes, and is then
/// served. Returns that client.
pub async fn assert_waits_for_the_slot(url: &str, holder: WsClient) -> WsClient {
    let url = url.to_string();
    let mut next = tokio::spawn(async move { connect(&url).await });
    // The one place where waiting for nothing is the point: the cap holds.
    let early = timeout(Duration::from_millis(500), &mut next).await;
    assert!(early.is_err(), "a connection was served past the cap");
    drop(holder);
    timeout(WAIT, next).await.expect("served once a slot freed").expect("connected")
}

/// Waits for a log line of `server` that `pred` accepts, while reading `ws`
/// all along, as a live client does (tungstenite answers the server's pings
/// only while the stream is read). Messages are skipped; a close, an error
/// or the end of `ws` fails the test.
pub async fn wait_for_log_reading(
    server: &mut Program,
    ws: &mut WsClient,
    pred: impl Fn(&str) -> bool,
) -> String {
    let logged = server.wait_for_log(pred);
    tokio::pin!(logged);
    loop {
        tokio::select! {
            (line, _) = &mut logged => return line,
            msg = ws.next() => match msg {
                Some(Ok(Message::Close(frame))) => panic!("the reading client was closed: {frame:?}"),
                Some(Ok(_)) => {}
                Some(Err(e)) => panic!("the reading client failed: {e}"),
                None => panic!("the reading client's connection ended"),
            },
        }
    }
}

/// The heartbeat's promise, for a server started with `--ping-ms 100
/// --pong-timeout-ms 300`: `silent` sends one last frame and then reads
/// nothing (so it answers no ping, like a vanished machine), and the server
/// closes it with 1011 `ping timeout`, not before 400 ms (a ping interval
/// plus the pong timeout), while `reader` reads all along and is not closed.
///
/// The clock starts before the silent client's last frame: the server reads
/// that frame later than this, so its silence starts later too, and the
/// lower bound holds however busy the machine is.
pub async fn assert_silent_client_is_dropped(
    server: &mut Program,
    reader: &mut WsClient,
    silent: &mut WsClient,
) {
    let peer = local_addr(silent);
    let started = std::time::Instant::now();
    silent.send(Message::text("last words")).await.expect("send");

    let dropped = |l: &str| logged_for(l, &peer, "closing code=1011");
    let line = wait_for_log_reading(server, reader, dropped).await;
    let took = started.elapsed();
    assert!(took >= Duration::from_millis(400), "not dropped before the timeout ({took:?})");
    assert!(line.ends_with(" reason=ping timeout"), "{line}");
}

/// The `IP:PORT` the server sees for this client, as its log lines name it.
pub fn local_addr(ws: &WsClient) -> String {
    match ws.get_ref() {
        tokio_tungstenite::MaybeTlsStream::Plain(tcp) => {
            tcp.local_addr().expect("local address").to_string()
        }
        other => panic!("expected plain TCP, got {other:?}"),
    }
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

// ---- tests that drive software from outside the project ----------------

/// Software that some tests drive but this project does not build (Chromium,
/// Python's `websockets`), and whether it is usable on this machine.
#[derive(Clone, Debug)]
pub struct Component {
    /// What it is, as messages name it: `chromium`.
    pub name: &'static str,
    /// The command that installs it (`.ci/run` runs it).
    pub install: &'static str,
    /// Why it cannot be used here, or `None` when it can.
    pub missing: Option<String>,
}

/// An async test that needs `component`, as a trial for [`run_trials`]. It
/// runs on a current-thread runtime of its own, as `#[tokio::test]` would.
///
/// Without the component the test cannot check anything, so it does not
/// claim `ok`: `cargo test` shows it as `ignored (reason)` and counts it
/// among the ignored. With `CI` set it fails instead: CI must not pass by not
/// running it.
pub fn trial_needing<F, Fut>(component: &Component, name: &str, test: F) -> Trial
where
    F: FnOnce() -> Fut + Send + 'static,
    Fut: Future<Output = ()>,
{
    let component = component.clone();
    Trial::ignorable_test(name, move || {
        if let Some(why) = component.missing {
            let Component { name, install, .. } = component;
            let why = format!("{name} missing: {why}; install it with `{install}`");
            if std::env::var_os("CI").is_some() {
                return Err(format!("{why}. CI must run this test (.ci/run installs it)").into());
            }
            return Ok(Completion::ignored_with(why));
        }
        block_on_own_runtime(test());
        Ok(Completion::Completed)
    })
}

/// An async test that needs nothing from outside the project, as a trial
/// for [`run_trials`], run as [`trial_needing`] runs one.
pub fn trial<F, Fut>(name: &str, test: F) -> Trial
where
    F: FnOnce() -> Fut + Send + 'static,
    Fut: Future<Output = ()>,
{
    Trial::test(name, move || {
        block_on_own_runtime(test());
        Ok(())
    })
}

/// Runs `test` on a current-thread runtime of its own, as `#[tokio::test]`
/// would.
fn block_on_own_runtime(test: impl Future<Output = ()>) {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("build a tokio runtime")
        .block_on(test);
}

/// The `main` of a test file with `harness = false` in Cargo.toml: runs
/// `trials` with the arguments `cargo test` passes (name filters, `--list`,
/// `--test-threads`, ...). Unlike the built-in harness, libtest-mimic does not
/// capture output: a failing test's panic message is printed as it happens.
///
/// `source` is the file's own text. Without the built-in harness, a
/// `#[test]` or `#[tokio::test]` function would be compiled out and never
/// run, silently; such a function fails the run here instead.
pub fn run_trials(source: &str, trials: Vec<Trial>) -> ExitCode {
    let attributes = ["#[test]", "#[tokio::test"];
    if let Some(line) = source.lines().find(|l| attributes.iter().any(|a| l.trim().starts_with(a)))
    {
        eprintln!("`{}` does nothing in a harness = false test: add a Trial in main", line.trim());
        return ExitCode::FAILURE;
    }
    libtest_mimic::run(&Arguments::from_args(), trials).exit_code()
}

// ---- Redis, the cluster's engine (tests/cluster.rs) -------------------

/// Debian's `redis-server`, which the cluster tests start, one per test.
pub fn redis_component() -> Component {
    let probe = std::process::Command::new("redis-server").arg("--version").output();
    let missing = match probe {
        Ok(out) if out.status.success() => None,
        Ok(out) => Some(format!(
            "`redis-server --version` failed ({}): {}",
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        )),
        Err(e) => Some(format!("cannot run `redis-server`: {e}")),
    };
    Component { name: "redis-server", install: "apt-get install redis-server", missing }
}

/// A `redis-server` of the test's own on a free loopback port, with
/// persistence off: it starts empty and leaves no file behind. It is killed
/// when dropped.
pub struct RedisServer {
    port: u16,
    /// `None` while stopped.
    program: Option<Program>,
}

impl RedisServer {
    /// Starts it and waits until it accepts connections.
    pub async fn start() -> RedisServer {
        let port = free_port();
        RedisServer { port, program: Some(Self::launch(port).await) }
    }

    async fn launch(port: u16) -> Program {
        let mut command = Command::new("redis-server");
        let port = port.to_string();
        command.args(["--port", &port, "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"]);
        let mut program = Program::spawn(command);
        program.wait_for(|line| line.contains("Ready to accept connections")).await;
        program
    }

    /// `redis://127.0.0.1:PORT`, for `chat_server --redis`.
    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.port)
    }

    /// Shuts it down (SIGTERM, with nothing to save) and waits for it to
    /// exit: from now on its port refuses connections. The port is kept
    /// for [`RedisServer::restart`].
    pub async fn stop(&mut self) {
        let mut program = self.program.take().expect("redis-server is running");
        program.signal("TERM");
        assert_eq!(program.exit_code().await, 0, "redis-server exits 0 on SIGTERM");
    }

    /// Starts a new, empty redis-server on the same port, after
    /// [`RedisServer::stop`].
    pub async fn restart(&mut self) {
        assert!(self.program.is_none(), "restart follows stop");
        self.program = Some(Self::launch(self.port).await);
    }
}

// ---- a TCP proxy a test can cut (tests/chat_client.rs, tests/browser.rs) --

/// What [`Proxy::cut`] does to each connection it carries.
#[derive(Clone, Copy, Debug)]
pub enum Cut {
    /// Closes both sides: the server sees the client go at once.
    Both,
    /// Closes the client's side and keeps the server's open, unread: to the
    /// server the client is still there (its name still held in its rooms),
    /// until [`Proxy::release`].
    KeepServerSide,
}

/// A TCP proxy between a client and a server: the test drops the client's
/// connection as a network would while the server, and the rooms' history,
/// stay up (what a server restart cannot show), and can turn the client
/// away until the test is ready for it to come back.
pub struct Proxy {
    /// `ws://` URL of the proxy, for the client.
    pub url: String,
    refusing: Arc<AtomicBool>,
    cuts: broadcast::Sender<Cut>,
    /// Server sides kept open by [`Cut::KeepServerSide`].
    held: Arc<Mutex<Vec<TcpStream>>>,
    accept: JoinHandle<()>,
}

impl Proxy {
    /// Listens on a free loopback port and forwards every connection to
    /// `server_addr` (`IP:PORT`), connecting anew each time: a server
    /// restarted on that port is reached again.
    pub async fn start(server_addr: &str) -> Proxy {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind the proxy");
        let url = format!("ws://{}", listener.local_addr().expect("proxy address"));
        let refusing = Arc::new(AtomicBool::new(false));
        let (cuts, _) = broadcast::channel(4);
        let held = Arc::new(Mutex::new(Vec::new()));
        let accept = tokio::spawn({
            let (server_addr, refusing, cuts, held) =
                (server_addr.to_string(), refusing.clone(), cuts.clone(), held.clone());
            async move {
                loop {
                    let Ok((client, _)) = listener.accept().await else { continue };
                    if refusing.load(Ordering::SeqCst) {
                        continue; // dropped: closed before any handshake
                    }
                    let cut = cuts.subscribe();
                    tokio::spawn(forward(client, server_addr.clone(), cut, held.clone()));
                }
            }
        });
        Proxy { url, refusing, cuts, held, accept }
    }

    /// While `refusing`, new connections are closed at once (the client's
    /// handshake fails, as with a server that is down); the ones already
    /// open are not touched.
    pub fn refuse(&self, refusing: bool) {
        self.refusing.store(refusing, Ordering::SeqCst);
    }

    /// Ends every connection open now, the way `how` says.
    pub fn cut(&self, how: Cut) {
        // No receiver means no connection to cut.
        let _ = self.cuts.send(how);
    }

    /// Closes the server sides kept by [`Cut::KeepServerSide`].
    pub fn release(&self) {
        self.held.lock().expect("held sockets").clear();
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        self.accept.abort();
    }
}

/// One proxied connection: bytes both ways until either side closes or the
/// test cuts it.
async fn forward(
    mut client: TcpStream,
    server_addr: String,
    mut cut: broadcast::Receiver<Cut>,
    held: Arc<Mutex<Vec<TcpStream>>>,
) {
    let Ok(mut server) = TcpStream::connect(&server_addr).await else { return };
    let how = tokio::select! {
        _ = copy_bidirectional(&mut client, &mut server) => return,
        how = cut.recv() => how,
    };
    drop(client);
    if let Ok(Cut::KeepServerSide) = how {
        held.lock().expect("held sockets").push(server);
    }
}

/// A file that holds `content`, in a directory of its own under the system's
/// temporary directory, removed when this is dropped: a token secret for
/// chat_server's `--auth-secret-file` and make_token's `--secret-file`.
pub struct TempFile {
    dir: PathBuf,
    pub path: PathBuf,
}

impl TempFile {
    pub fn new(content: &str) -> TempFile {
        static NEXT: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
        let n = NEXT.fetch_add(1, Ordering::Relaxed);
        let dir = std::env::temp_dir().join(format!("ws-test-{}-{n}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("a temporary directory");
        let path = dir.join("secret");
        std::fs::write(&path, content).expect("write the temporary file");
        TempFile { dir, path }
    }

    /// The path, as a command-line argument.
    pub fn arg(&self) -> &str {
        self.path.to_str().expect("a UTF-8 temporary path")
    }
}

impl Drop for TempFile {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// A CA made for this test run, and a server certificate it signed.
pub struct Certificates {
    /// The CA's certificate, PEM: what a client trusts.
    pub ca: TempFile,
    /// The server's certificate (PEM), for 127.0.0.1 and localhost.
    pub cert: TempFile,
    /// Its private key, PEM.
    pub key: TempFile,
}

impl Certificates {
    pub fn new() -> Certificates {
        use rcgen::{BasicConstraints, CertificateParams, CertifiedIssuer, DnType, IsCa, KeyPair};
        let mut ca_params = CertificateParams::new(Vec::<String>::new()).expect("CA parameters");
        ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        ca_params.distinguished_name.push(DnType::CommonName, "websocket-tutorial test CA");
        let ca_key = KeyPair::generate().expect("a CA key");
        let ca = CertifiedIssuer::self_signed(ca_params, ca_key).expect("a CA");
        // rcgen makes "127.0.0.1" an IP address entry, which is what a
        // client connecting to wss://127.0.0.1:PORT checks.
        let names = vec!["127.0.0.1".to_string(), "localhost".to_string()];
        let key = KeyPair::generate().expect("a server key");
        let params = CertificateParams::new(names).expect("server parameters");
        let cert = params.signed_by(&key, &ca).expect("a server certificate");
        Certificates {
            ca: TempFile::new(&ca.pem()),
            cert: TempFile::new(&cert.pem()),
            key: TempFile::new(&key.serialize_pem()),
        }
    }

    /// The server's flags.
    pub fn args(&self) -> [&str; 4] {
        ["--tls-cert", self.cert.arg(), "--tls-key", self.key.arg()]
    }

    /// A TLS connector that trusts only this run's CA.
    pub fn connector(&self) -> tokio_rustls::TlsConnector {
        use tokio_rustls::rustls::pki_types::CertificateDer;
        use tokio_rustls::rustls::pki_types::pem::PemObject;
        let mut roots = tokio_rustls::rustls::RootCertStore::empty();
        roots.add(CertificateDer::from_pem_file(&self.ca.path).expect("the CA")).expect("a root");
        let config = tokio_rustls::rustls::ClientConfig::builder_with_provider(Arc::new(
            tokio_rustls::rustls::crypto::ring::default_provider(),
        ))
        .with_safe_default_protocol_versions()
        .expect("TLS versions")
        .with_root_certificates(roots)
        .with_no_client_auth();
        tokio_rustls::TlsConnector::from(Arc::new(config))
    }

    /// The SHA-256 of the server certificate's public key, as its DER
    /// SubjectPublicKeyInfo: what a key pin names, and what Chromium's
    /// `--ignore-certificate-errors-spki-list` takes (in base64).
    pub fn server_spki_sha256(&self) -> Vec<u8> {
        use rcgen::{KeyPair, PublicKeyData};
        let pem = std::fs::read_to_string(&self.key.path).expect("read the server key");
        let key = KeyPair::from_pem(&pem).expect("the server key");
        let spki = key.subject_public_key_info();
        ring::digest::digest(&ring::digest::SHA256, &spki).as_ref().to_vec()
    }
}
