//! Servers as child processes: ours (the release examples, axum_chat too
//! when the benchmark is built with the `axum` feature), with `--compare`
//! the Node, Python and Go ones under `benches/compare/`, and the
//! redis-server that chat-cluster's nodes share.
//!
//! Every server takes its address as its first argument (we pass
//! `127.0.0.1:0`, a free port) and prints `listening on ws://IP:PORT` as its
//! first line (`wss://` when our chat server serves TLS, with `--tls-cert`
//! and `--tls-key`; `http://` from axum_chat, whose WebSocket is at `/ws`);
//! SIGINT makes it close every connection with 1001 and exit 0.
//! Its stdout and stderr are drained all the time: our servers print a line
//! per connection, and a pipe nobody reads fills up and blocks the server.

use std::collections::VecDeque;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::Stdio;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::{Child, Command};
use tokio::time::timeout;

use crate::client::Endpoint;
use crate::proc;

/// How long a server may take to print its first line (a debug build or a
/// Python interpreter starting up on a busy machine is slow, never this slow).
const START_TIMEOUT: Duration = Duration::from_secs(30);
/// How long a server may take to exit after SIGINT. Ours wait at most 5 s
/// for their connections' close handshakes.
const STOP_TIMEOUT: Duration = Duration::from_secs(30);
/// The stderr lines kept to explain a failure.
const STDERR_LINES: usize = 20;

/// Which implementation serves a row.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Impl {
    /// Our example, built with tokio-tungstenite.
    Rust,
    /// Our chat inside axum: examples/axum_chat.rs (chapter 12), built with
    /// the `axum` feature. Chat only.
    Axum,
    /// `benches/compare/node/server.js`, on the `ws` package.
    Node,
    /// `benches/compare/python/server.py`, on the `websockets` package.
    Python,
    /// `benches/compare/go/server`, built from `server.go` on the
    /// gorilla/websocket package.
    Go,
}

impl Impl {
    /// The compare servers, in the order their rows come.
    pub const COMPARED: [Impl; 3] = [Impl::Node, Impl::Python, Impl::Go];

    pub fn label(self) -> &'static str {
        match self {
            Impl::Rust => "rust",
            Impl::Axum => "axum",
            Impl::Node => "node",
            Impl::Python => "python",
            Impl::Go => "go",
        }
    }

    /// The tutorial's own code, whose failed checks fail the run.
    pub fn ours(self) -> bool {
        matches!(self, Impl::Rust | Impl::Axum)
    }
}

/// What the server does; the compare servers take it as their first argument.
#[derive(Debug, Clone, Copy)]
pub enum Mode {
    Echo,
    Broadcast,
    Chat,
}

impl Mode {
    fn name(self) -> &'static str {
        match self {
            Mode::Echo => "echo",
            Mode::Broadcast => "broadcast",
            Mode::Chat => "chat",
        }
    }

    fn example(self) -> &'static str {
        match self {
            Mode::Echo => "echo_server",
            Mode::Broadcast => "broadcast_server",
            Mode::Chat => "chat_server",
        }
    }
}

/// Where the programs are.
#[derive(Debug, Clone)]
pub struct Paths {
    /// The package root (`CARGO_MANIFEST_DIR`).
    pub root: PathBuf,
    /// `target/<profile>/examples`.
    pub examples: PathBuf,
}

impl Paths {
    fn command(&self, implementation: Impl, mode: Mode) -> Command {
        let compare = self.root.join("benches/compare");
        let mut command = match implementation {
            Impl::Rust => {
                let mut c = Command::new(self.examples.join(mode.example()));
                // Every load client connects from 127.0.0.1: lift the
                // per-address limit (default 100) past any scenario's count.
                c.args(["--max-per-ip", "1000000"]);
                c
            }
            // Only a chat (Server::start refuses other modes), and with no
            // per-address limit to lift. Its address comes first, as for
            // every server, then its settings.
            Impl::Axum => Command::new(self.examples.join("axum_chat")),
            Impl::Node => {
                let mut c = Command::new("node");
                c.arg(compare.join("node/server.js")).arg(mode.name());
                c
            }
            Impl::Python => {
                // The venv setup.sh made, if there is one.
                let venv = compare.join("python/.venv/bin/python");
                let mut c = Command::new(if venv.exists() { venv } else { "python3".into() });
                c.arg(compare.join("python/server.py")).arg(mode.name());
                // The listening line must not sit in Python's stdout buffer.
                c.env("PYTHONUNBUFFERED", "1");
                c
            }
            Impl::Go => {
                // Built by setup.sh.
                let mut c = Command::new(compare.join("go/server"));
                c.arg(mode.name());
                c
            }
        };
        command.arg("127.0.0.1:0").current_dir(&self.root);
        command
    }
}

/// A running server.
pub struct Server {
    child: Child,
    pub pid: u32,
    pub addr: SocketAddr,
    /// It serves `wss://`: its first line said so.
    pub tls: bool,
    /// The path of its WebSocket: `/`, or `/ws` for a server whose first
    /// line said `http://` (axum_chat serves a page at `/`).
    pub path: &'static str,
    /// With `--admin-addr`, the admin port its second line names
    /// (`admin on http://IP:PORT`).
    pub admin: Option<SocketAddr>,
    /// Settings this server did not know, so that it ran without them.
    pub unknown_settings: Vec<String>,
    stderr_tail: Arc<Mutex<VecDeque<String>>>,
}

/// Why a start failed.
enum StartError {
    /// Exit 2 with `unknown setting --NAME`: the server predates that flag.
    UnknownSetting(String),
    Other(String),
}

impl Server {
    /// Starts `mode` in `implementation` on a free loopback port with
    /// `settings` (`--name value` pairs, for our chat server), and waits for
    /// its `listening on` line.
    ///
    /// A setting the server does not know yet (it exits 2 with `unknown
    /// setting --NAME`) is dropped and the server started again without it;
    /// the caller finds it in [`Server::unknown_settings`].
    pub async fn start(
        paths: &Paths,
        implementation: Impl,
        mode: Mode,
        settings: &[(&str, String)],
    ) -> Result<Server, String> {
        if implementation == Impl::Axum && !matches!(mode, Mode::Chat) {
            return Err(format!("axum_chat is a chat server, not a {} server", mode.name()));
        }
        let mut settings = settings.to_vec();
        let mut unknown = Vec::new();
        // Each retry drops one setting, so this ends.
        loop {
            let mut command = paths.command(implementation, mode);
            for (name, value) in &settings {
                command.arg(format!("--{name}")).arg(value);
            }
            match Server::start_once(command).await {
                Ok(mut server) => {
                    server.unknown_settings = unknown;
                    return Ok(server);
                }
                Err(StartError::UnknownSetting(name))
                    if settings.iter().any(|(known, _)| *known == name) =>
                {
                    settings.retain(|(known, _)| *known != name);
                    unknown.push(name);
                }
                Err(StartError::UnknownSetting(name)) => {
                    return Err(format!("server refused setting --{name}"));
                }
                Err(StartError::Other(why)) => return Err(why),
            }
        }
    }

    async fn start_once(mut command: Command) -> Result<Server, StartError> {
        let described = format!("{:?}", command.as_std());
        let mut child = command
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(true) // a failed scenario leaves nothing behind
            .spawn()
            .map_err(|e| StartError::Other(format!("cannot start {described}: {e}")))?;
        let pid = child.id().ok_or_else(|| StartError::Other("no pid".into()))?;

        // Keep the last lines of stderr, to explain a failure.
        let stderr_tail = Arc::new(Mutex::new(VecDeque::new()));
        let stderr = child.stderr.take().expect("piped stderr");
        let tail = stderr_tail.clone();
        let stderr_done = tokio::spawn(async move {
            let mut lines = BufReader::new(stderr).lines();
            while let Ok(Some(line)) = lines.next_line().await {
                let mut tail = tail.lock().unwrap_or_else(|p| p.into_inner());
                if tail.len() == STDERR_LINES {
                    tail.pop_front();
                }
                tail.push_back(line);
            }
        });

        let mut stdout = BufReader::new(child.stdout.take().expect("piped stdout"));
        let mut first = String::new();
        let read = timeout(START_TIMEOUT, stdout.read_line(&mut first)).await;
        // `listening on ws://IP:PORT`, `wss://` when it serves TLS, or
        // `http://` when it serves pages and its WebSocket at `/ws`.
        let listening = first.trim_end().strip_prefix("listening on ").and_then(|url| {
            let (scheme, addr) = url.split_once("://")?;
            let (tls, path) = match scheme {
                "ws" => (false, "/"),
                "wss" => (true, "/"),
                "http" => (false, "/ws"),
                _ => return None,
            };
            let addr = addr.parse::<SocketAddr>().ok().filter(|addr| addr.port() != 0)?;
            Some((addr, tls, path))
        });
        if let (Ok(Ok(_)), Some((addr, tls, path))) = (&read, listening) {
            let mut admin = None;
            if described.contains("--admin-addr") {
                let mut second = String::new();
                let _ = timeout(START_TIMEOUT, stdout.read_line(&mut second)).await;
                let url = second.trim_end().strip_prefix("admin on http://");
                admin = url.and_then(|addr| addr.parse().ok());
            }
            // From now on, stdout is read and thrown away.
            tokio::spawn(async move {
                let _ = tokio::io::copy_buf(&mut stdout, &mut tokio::io::sink()).await;
            });
            let unknown_settings = Vec::new();
            return Ok(Server {
                child,
                pid,
                addr,
                tls,
                path,
                admin,
                unknown_settings,
                stderr_tail,
            });
        }

        // No listening line: say why, with the exit status and stderr.
        let status = match timeout(Duration::from_secs(5), child.wait()).await {
            Ok(Ok(status)) => status.to_string(),
            _ => {
                let _ = child.kill().await;
                "still running, killed".to_string()
            }
        };
        let _ = timeout(Duration::from_secs(2), stderr_done).await;
        let stderr = stderr_text(&stderr_tail);
        if let Some(name) = stderr
            .split("unknown setting --")
            .nth(1)
            .and_then(|rest| rest.split_whitespace().next())
        {
            return Err(StartError::UnknownSetting(name.to_string()));
        }
        let first = match read {
            Err(_) => format!("nothing within {START_TIMEOUT:?}"),
            Ok(_) => format!("{:?}", first.trim_end()),
        };
        Err(StartError::Other(format!(
            "{described} did not print `listening on ws://IP:PORT`, `wss://` or `http://` \
             (first line: {first}; {status}; stderr: {stderr})"
        )))
    }

    /// Where its clients connect.
    pub fn endpoint(&self) -> Endpoint {
        Endpoint { addr: self.addr, path: self.path }
    }

    /// Server resident memory now, in KiB.
    pub fn rss_kib(&self) -> Result<u64, String> {
        proc::rss_kib(self.pid)
    }

    /// Ctrl-C: sends SIGINT and waits for the exit, which must be code 0.
    /// A server still running after [`STOP_TIMEOUT`] is killed, and that is
    /// an error too.
    pub async fn stop(mut self) -> Result<(), String> {
        // SAFETY: kill sends a signal to our own child, whose pid is still
        // ours: we have not waited for it yet, so it cannot have been reused.
        if unsafe { libc::kill(self.pid as libc::pid_t, libc::SIGINT) } != 0 {
            return Err(format!("kill -INT {}: {}", self.pid, std::io::Error::last_os_error()));
        }
        match timeout(STOP_TIMEOUT, self.child.wait()).await {
            Ok(Ok(status)) if status.success() => Ok(()),
            Ok(Ok(status)) => Err(format!(
                "server {status} after SIGINT (stderr: {})",
                stderr_text(&self.stderr_tail)
            )),
            Ok(Err(e)) => Err(format!("waiting for the server: {e}")),
            Err(_) => {
                let _ = self.child.kill().await;
                Err(format!("server still running {STOP_TIMEOUT:?} after SIGINT; killed"))
            }
        }
    }
}

/// A redis-server of the benchmark's own, for chat-cluster's nodes: Debian's
/// `redis-server` on a free loopback port, with persistence off (it starts
/// empty and writes no file), killed if dropped.
///
/// The cluster tests have the same in `tests/common/mod.rs`, but the
/// benchmark shares no code with them: their helpers panic on a failure,
/// where a scenario must turn it into a row's problem and go on.
pub struct Redis {
    child: Child,
    pub pid: u32,
    /// `redis://127.0.0.1:PORT`, for `chat_server --redis`.
    pub url: String,
}

impl Redis {
    /// Why `redis-server` cannot run here, or `None` when it can.
    pub fn missing() -> Option<String> {
        match std::process::Command::new("redis-server").arg("--version").output() {
            Ok(out) if out.status.success() => None,
            Ok(out) => Some(format!("`redis-server --version` failed ({})", out.status)),
            Err(e) => Some(format!("cannot run `redis-server`: {e}")),
        }
    }

    /// Starts it and waits until it says it accepts connections.
    pub async fn start() -> Result<Redis, String> {
        let port = free_port()?.to_string();
        let mut command = Command::new("redis-server");
        command.args(["--port", &port, "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"]);
        let described = format!("{:?}", command.as_std());
        let mut child = command
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .kill_on_drop(true)
            .spawn()
            .map_err(|e| format!("cannot start {described}: {e}"))?;
        let pid = child.id().ok_or("redis-server has no pid")?;
        // It logs to stdout: a banner, then this line.
        let mut stdout = BufReader::new(child.stdout.take().expect("piped stdout")).lines();
        let mut seen = VecDeque::new();
        let ready = timeout(START_TIMEOUT, async {
            while let Ok(Some(line)) = stdout.next_line().await {
                if line.contains("Ready to accept connections") {
                    return true;
                }
                if seen.len() == STDERR_LINES {
                    seen.pop_front();
                }
                seen.push_back(line);
            }
            false
        })
        .await;
        if ready != Ok(true) {
            let log: Vec<String> = seen.into();
            return Err(format!(
                "{described} was not ready within {START_TIMEOUT:?} (log: {})",
                log.join(" / ")
            ));
        }
        tokio::spawn(async move { while let Ok(Some(_)) = stdout.next_line().await {} });
        Ok(Redis { child, pid, url: format!("redis://127.0.0.1:{port}") })
    }

    /// Shuts it down (SIGTERM; there is nothing to save) and waits for its
    /// exit, which must be code 0.
    pub async fn stop(mut self) -> Result<(), String> {
        // SAFETY: as in Server::stop, our own child, not yet waited for.
        if unsafe { libc::kill(self.pid as libc::pid_t, libc::SIGTERM) } != 0 {
            return Err(format!("kill -TERM {}: {}", self.pid, std::io::Error::last_os_error()));
        }
        match timeout(STOP_TIMEOUT, self.child.wait()).await {
            Ok(Ok(status)) if status.success() => Ok(()),
            Ok(Ok(status)) => Err(format!("redis-server {status} after SIGTERM")),
            Ok(Err(e)) => Err(format!("waiting for redis-server: {e}")),
            Err(_) => {
                let _ = self.child.kill().await;
                Err(format!("redis-server still running {STOP_TIMEOUT:?} after SIGTERM; killed"))
            }
        }
    }
}

/// A free port on 127.0.0.1 (bound, then released for redis-server to use).
fn free_port() -> Result<u16, String> {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|listener| listener.local_addr())
        .map(|addr| addr.port())
        .map_err(|e| format!("no free port on 127.0.0.1: {e}"))
}

fn stderr_text(tail: &Mutex<VecDeque<String>>) -> String {
    let tail = tail.lock().unwrap_or_else(|p| p.into_inner());
    if tail.is_empty() {
        return "empty".into();
    }
    tail.iter().cloned().collect::<Vec<_>>().join(" / ")
}
