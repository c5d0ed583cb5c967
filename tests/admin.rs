//! The admin port (issue 18, chapter 10.7): chat_server with
//! `--admin-addr` answers `/healthz`, `/readyz` and `/metrics` over HTTP on a
//! second address, and its metrics count exactly what the clients did.
//!
//! The test learns the admin port from chat_server's second stdout line,
//! `admin on http://IP:PORT`, which follows `listening on ws://IP:PORT`.
//! Its HTTP client is `common::http_get`: a plain `GET ... Connection:
//! close` over a `TcpStream`, read to the end.
//!
//! The Redis test needs Debian's redis-server, and the format test
//! Prometheus's `promtool` (Debian's `prometheus` package): without them they
//! show as ignored; with `CI` set they fail (see `common::trial_needing`).
//! `.ci/run` installs both.

mod common;

use std::process::ExitCode;

use common::{
    Component, Program, RedisServer, Server, WAIT, connect, connect_with_small_buffers,
    expect_close, handshake, http_get, recv_within, redis_component, run_trials, trial,
    trial_needing,
};
use futures_util::SinkExt;
use tokio::io::AsyncWriteExt;
use tokio::time::timeout;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::http::StatusCode;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use websocket_tutorial::client::WsClient;
use websocket_tutorial::protocol::{ClientMessage, ErrorCode, ServerEvent};

fn main() -> ExitCode {
    let (redis, promtool) = (redis_component(), promtool_component());
    let trials = vec![
        trial(
            "healthz_and_readyz_answer_200_and_an_unknown_path_404",
            healthz_and_readyz_answer_200_and_an_unknown_path_404,
        ),
        trial("readyz_is_503_once_shutdown_begins", readyz_is_503_once_shutdown_begins),
        trial("metrics_count_what_the_clients_did", metrics_count_what_the_clients_did),
        trial(
            "a_member_evicted_for_its_outbox_is_counted_under_outbox",
            a_member_evicted_for_its_outbox_is_counted_under_outbox,
        ),
        trial("a_malformed_admin_addr_is_a_usage_error", a_malformed_admin_addr_is_a_usage_error),
        trial(
            "an_admin_port_taken_is_one_line_and_exit_1_before_listening",
            an_admin_port_taken_is_one_line_and_exit_1_before_listening,
        ),
        trial_needing(
            &promtool,
            "promtool_accepts_the_metrics_page",
            promtool_accepts_the_metrics_page,
        ),
        trial_needing(
            &promtool,
            "the_deploy_scrape_config_and_alerts_pass_promtool_on_real_metric_names",
            the_deploy_scrape_config_and_alerts_pass_promtool_on_real_metric_names,
        ),
        trial_needing(
            &redis,
            "with_redis_readyz_follows_redis_and_commands_are_timed",
            with_redis_readyz_follows_redis_and_commands_are_timed,
        ),
    ];
    run_trials(include_str!("admin.rs"), trials)
}

/// Prometheus's `promtool`, from Debian's `prometheus` package.
fn promtool_component() -> Component {
    let probe = std::process::Command::new("promtool").arg("--version").output();
    let missing = match probe {
        Ok(out) if out.status.success() => None,
        Ok(out) => Some(format!("`promtool --version` failed ({})", out.status)),
        Err(e) => Some(format!("cannot run `promtool`: {e}")),
    };
    Component { name: "promtool", install: "apt-get install prometheus", missing }
}

/// chat_server with an admin port, and that port's `IP:PORT`.
struct Admin {
    server: Server,
    admin: String,
}

impl Admin {
    /// Starts chat_server on free ports with `--admin-addr 127.0.0.1:0` and
    /// `args`, and reads the admin address from its second line.
    async fn start(args: &[&str]) -> Admin {
        let mut all_args = vec!["--admin-addr", "127.0.0.1:0"];
        all_args.extend_from_slice(args);
        let mut server = Server::start("chat_server", &all_args).await;
        let second = timeout(WAIT, server.program.next_line()).await.expect("a second line");
        let second = second.expect("chat_server printed its admin line");
        let admin = second.strip_prefix("admin on http://").unwrap_or_else(|| {
            panic!("the second line should be `admin on http://IP:PORT`: {second:?}")
        });
        assert!(!admin.ends_with(":0"), "the real port is printed, not 0: {second}");
        Admin { admin: admin.to_string(), server }
    }

    async fn get(&self, path: &str) -> (u16, String) {
        let answer = http_get(&self.admin, path).await;
        (answer.status, answer.body)
    }

    /// The value of `series` (a name, with its labels if any) on `/metrics`.
    async fn metric(&self, series: &str) -> f64 {
        let (status, page) = self.get("/metrics").await;
        assert_eq!(status, 200, "/metrics: {page}");
        value(&page, series).unwrap_or_else(|| panic!("no {series} in\n{page}"))
    }
}

fn value(page: &str, series: &str) -> Option<f64> {
    page.lines().find_map(|line| line.strip_prefix(series)?.strip_prefix(' ')?.parse().ok())
}

async fn healthz_and_readyz_answer_200_and_an_unknown_path_404() {
    let admin = Admin::start(&[]).await;
    assert_eq!(admin.get("/healthz").await, (200, "ok\n".into()));
    assert_eq!(admin.get("/readyz").await, (200, "ready\n".into()));
    assert_eq!(admin.get("/nothing-here").await.0, 404);
    assert_eq!(admin.get("/metrics/").await.0, 404);
    // The chat port does not serve them: they are the admin port's alone.
    assert_ne!(admin.server.addr, admin.admin);
    admin.server.stop().await;
}

/// From the moment shutdown begins, `/readyz` says 503 while `/healthz`
/// still says 200. The window is held open honestly: on Ctrl-C the server
/// cancels its shutdown token, then sends each client its 1001; a client
/// that has read that close frame knows shutdown has begun, and as long as
/// it does not answer, the server waits for it (up to its 2 s close
/// timeout) and keeps running.
async fn readyz_is_503_once_shutdown_begins() {
    let mut admin = Admin::start(&[]).await;
    let mut ws = connect(&admin.server.url).await;
    assert_eq!(admin.get("/readyz").await.0, 200);
    admin.server.program.interrupt();
    assert_eq!(expect_close(&mut ws).await, CloseCode::Away);
    assert_eq!(admin.get("/readyz").await, (503, "shutting down\n".into()));
    assert_eq!(admin.get("/healthz").await.0, 200, "still serving while it closes");
    drop(ws);
    assert_eq!(admin.server.program.exit_code().await, 0);
}

/// A chat client that counts every message it receives.
struct Client {
    ws: WsClient,
    received: usize,
}

impl Client {
    async fn connect(url: &str) -> Client {
        Client { ws: connect(url).await, received: 0 }
    }

    async fn send(&mut self, command: ClientMessage) {
        self.ws.send(command.to_message()).await.expect("send a command");
    }

    async fn event(&mut self) -> ServerEvent {
        let msg = recv_within(&mut self.ws, WAIT).await;
        self.received += 1;
        ServerEvent::try_from(&msg).unwrap_or_else(|e| panic!("not a server event: {e}: {msg:?}"))
    }

    async fn join(&mut self, room: &str, username: &str) {
        let (room, username) = (room.to_string(), username.to_string());
        self.send(ClientMessage::Join { room, username, since: None, epoch: None }).await;
    }
}

/// Two members, five messages, one refused origin, one address over its
/// limit, and a flooder closed for its rate: every count on `/metrics` is
/// what the clients saw.
async fn metrics_count_what_the_clients_did() {
    const SAID: usize = 5;
    let origin = "https://chat.example.com";
    let flags = ["--allow-origin", origin, "--max-per-ip", "3", "--rate-limit", "1"];
    let admin = Admin::start(&[&flags[..], &["--rate-burst", "10"]].concat()).await;
    let url = admin.server.url.clone();

    let mut alice = Client::connect(&url).await;
    alice.join("general", "alice").await;
    assert!(matches!(alice.event().await, ServerEvent::Joined { .. }));
    let mut bob = Client::connect(&url).await;
    bob.join("general", "bob").await;
    assert!(matches!(bob.event().await, ServerEvent::Joined { .. }));
    assert!(matches!(alice.event().await, ServerEvent::Joined { .. }), "bob's, to alice");
    for n in 0..SAID {
        let (room, content) = ("general".to_string(), format!("hello {n}"));
        alice.send(ClientMessage::Message { room, content }).await;
    }
    for _ in 0..SAID {
        assert!(matches!(alice.event().await, ServerEvent::Message { .. }));
        assert!(matches!(bob.event().await, ServerEvent::Message { .. }));
    }

    // A page from another origin: 403. A third connection from 127.0.0.1
    // fits (--max-per-ip 3), once the refused one has given its place back
    // (a moment after its client saw the 403: each 429 until then is
    // counted too); a fourth gets 429.
    assert_eq!(
        handshake(&url, Some("https://evil.example")).await.err(),
        Some(StatusCode::FORBIDDEN)
    );
    let mut too_many = 0;
    let mut flooder = loop {
        match handshake(&url, None).await {
            Ok(ws) => break Client { ws, received: 0 },
            Err(StatusCode::TOO_MANY_REQUESTS) => too_many += 1,
            Err(status) => panic!("expected 101 or 429, got {status}"),
        }
        assert!(too_many < 10_000, "the refused handshake's place never came back");
    };
    assert_eq!(handshake(&url, None).await.err(), Some(StatusCode::TOO_MANY_REQUESTS));
    too_many += 1;

    // The flooder's pings: 10 answered, then refused, until it is a whole
    // burst in debt and is closed (1008).
    let mut refused = 0;
    let code = loop {
        // Sent without waiting: the server reads them as fast as they come.
        if flooder.ws.send(ClientMessage::Ping.to_message()).await.is_err() {
            break expect_close(&mut flooder.ws).await;
        }
        match timeout(WAIT, futures_util::StreamExt::next(&mut flooder.ws)).await {
            Ok(Some(Ok(Message::Text(text)))) => {
                flooder.received += 1;
                let event = ServerEvent::try_from(&Message::Text(text)).expect("an event");
                if let ServerEvent::Error { code, .. } = event {
                    assert_eq!(code, ErrorCode::RateLimited);
                    refused += 1;
                }
            }
            Ok(Some(Ok(Message::Close(frame)))) => break frame.expect("a close code").code,
            other => panic!("expected an answer or the close frame, got {other:?}"),
        }
    };
    assert_eq!(code, CloseCode::Policy, "closed for its rate");
    assert!(refused > 0, "some pings were refused before the close");

    let received = alice.received + bob.received + flooder.received;
    assert_eq!(admin.metric("chat_connections").await, 2.0, "alice and bob");
    assert_eq!(admin.metric("chat_joins_total").await, 2.0);
    assert_eq!(admin.metric("chat_messages_total").await, SAID as f64);
    assert_eq!(admin.metric("chat_deliveries_total").await, received as f64);
    assert_eq!(admin.metric("chat_rate_limited_total").await, refused as f64);
    let refusals = |status| format!(r#"chat_handshakes_refused_total{{status="{status}"}}"#);
    assert_eq!(admin.metric(&refusals(403)).await, 1.0);
    assert_eq!(admin.metric(&refusals(429)).await, too_many as f64);
    assert_eq!(admin.metric(&refusals(401)).await, 0.0);
    let evictions = |reason| format!(r#"chat_evictions_total{{reason="{reason}"}}"#);
    assert_eq!(admin.metric(&evictions("rate_limit")).await, 1.0);
    assert_eq!(admin.metric(&evictions("outbox")).await, 0.0);
    // Both members read everything: nothing waits in an outbox.
    assert_eq!(admin.metric("chat_outbox_bytes").await, 0.0);
    admin.server.stop().await;
}

/// A member that stops reading is evicted when its outbox is over budget
/// (1008, chapter 6.1), and `/metrics` says why. The count is read once the
/// evicted member has its close frame, which goes out after it is counted.
async fn a_member_evicted_for_its_outbox_is_counted_under_outbox() {
    let flags = ["--outbox-bytes", "65536", "--send-timeout-ms", "60000"];
    let admin =
        Admin::start(&[&flags[..], &["--rate-limit", "100000", "--rate-burst", "100000"]].concat())
            .await;
    let mut sender = Client::connect(&admin.server.url).await;
    sender.join("general", "sender").await;
    assert!(matches!(sender.event().await, ServerEvent::Joined { .. }));
    let mut slow = Client { ws: connect_with_small_buffers(&admin.server.url).await, received: 0 };
    slow.join("general", "slow").await;
    assert!(matches!(sender.event().await, ServerEvent::Joined { .. }), "slow's, to the sender");

    // The slow member never reads again; the sender reads its own echoes,
    // one message at a time, until it hears that the slow one left.
    let content = "z".repeat(2048);
    let mut sent = 0;
    loop {
        let (room, content) = ("general".to_string(), content.clone());
        sender.send(ClientMessage::Message { room, content }).await;
        sent += 1;
        assert!(sent < 10_000, "the slow member was never evicted");
        match sender.event().await {
            ServerEvent::Message { .. } => {}
            ServerEvent::Left { .. } => break,
            other => panic!("unexpected {other:?}"),
        }
    }
    assert_eq!(expect_close(&mut slow.ws).await, CloseCode::Policy);
    let evictions = |reason| format!(r#"chat_evictions_total{{reason="{reason}"}}"#);
    assert_eq!(admin.metric(&evictions("outbox")).await, 1.0);
    assert_eq!(admin.metric(&evictions("write_timeout")).await, 0.0);
    assert_eq!(admin.metric("chat_connections").await, 1.0, "the sender");
    admin.server.stop().await;
}

async fn a_malformed_admin_addr_is_a_usage_error() {
    for bad in ["localhost", "127.0.0.1", "127.0.0.1:99999", ""] {
        let mut program = Program::start("chat_server", &["127.0.0.1:0", "--admin-addr", bad]);
        assert_eq!(program.exit_code().await, 2, "--admin-addr {bad:?} is a usage error");
        assert!(program.remaining_lines().await.is_empty(), "nothing listens: {bad:?}");
        let stderr = program.stderr_text().await;
        assert!(stderr.contains("--admin-addr"), "the error names the flag: {stderr}");
    }
}

async fn an_admin_port_taken_is_one_line_and_exit_1_before_listening() {
    let taken = std::net::TcpListener::bind("127.0.0.1:0").expect("bind a port");
    let addr = taken.local_addr().expect("its address").to_string();
    let mut program = Program::start("chat_server", &["127.0.0.1:0", "--admin-addr", &addr]);
    assert_eq!(program.exit_code().await, 1);
    assert_eq!(program.remaining_lines().await, Vec::<String>::new(), "no `listening on`");
    let stderr = program.stderr_text().await;
    let lines: Vec<&str> = stderr.lines().collect();
    assert_eq!(lines.len(), 1, "one line: {stderr}");
    assert!(lines[0].starts_with("error: ") && lines[0].contains(&addr), "{stderr}");
}

/// CI checks the page with Prometheus's own linter, during a chat.
async fn promtool_accepts_the_metrics_page() {
    let admin = Admin::start(&[]).await;
    let mut alice = Client::connect(&admin.server.url).await;
    alice.join("general", "alice").await;
    alice.event().await;
    let (status, page) = admin.get("/metrics").await;
    assert_eq!(status, 200);
    let mut promtool = tokio::process::Command::new("promtool")
        .args(["check", "metrics"])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("run promtool");
    let mut stdin = promtool.stdin.take().expect("piped stdin");
    stdin.write_all(page.as_bytes()).await.expect("feed promtool");
    drop(stdin);
    let out = timeout(WAIT, promtool.wait_with_output()).await.expect("promtool finishes");
    let out = out.expect("promtool's output");
    let said =
        format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    assert!(out.status.success() && said.trim().is_empty(), "promtool: {said}\n{page}");
    admin.server.stop().await;
}

/// Chapter 11.5's files in deploy/: Prometheus's scrape configuration and
/// alert rules are valid (`promtool check config`, which reads the rules
/// too), each alert fires when, and only where, `alerts_test.yml` says
/// (`promtool test rules`), and every metric the alerts use is one that
/// chat_server's `/metrics` has: an alert on a misspelt name never fires.
async fn the_deploy_scrape_config_and_alerts_pass_promtool_on_real_metric_names() {
    let deploy = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("deploy");
    for args in [["check", "config", "prometheus.yml"], ["test", "rules", "alerts_test.yml"]] {
        let run = tokio::process::Command::new("promtool").args(args).current_dir(&deploy).output();
        let out = timeout(WAIT, run).await.expect("promtool finishes").expect("run promtool");
        let said = String::from_utf8_lossy(&out.stdout) + String::from_utf8_lossy(&out.stderr);
        assert!(out.status.success(), "promtool {}: {said}", args.join(" "));
    }
    let admin = Admin::start(&[]).await;
    let (status, page) = admin.get("/metrics").await;
    assert_eq!(status, 200);
    let alerts = std::fs::read_to_string(deploy.join("alerts.yml")).expect("deploy/alerts.yml");
    let used: std::collections::BTreeSet<&str> = alerts
        .split(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
        .filter(|word| word.starts_with("chat_") && !word.starts_with("chat_server"))
        .collect();
    assert!(used.len() >= 4, "the alerts use chat_server's metrics: {used:?}");
    for name in used {
        let listed = page.lines().any(|line| line.split(['{', ' ']).next() == Some(name));
        assert!(listed, "alerts.yml uses {name}, which /metrics does not have:\n{page}");
    }
    admin.server.stop().await;
}

/// With `--redis`: ready while Redis answers, 503 once it is gone; every
/// command to Redis is in the round-trip histogram, a failed one is an
/// error, and a lost event stream is a reconnect.
async fn with_redis_readyz_follows_redis_and_commands_are_timed() {
    let mut redis = RedisServer::start().await;
    let url = redis.url();
    let mut admin = Admin::start(&["--redis", &url]).await;
    assert_eq!(admin.get("/readyz").await, (200, "ready\n".into()));
    let mut alice = Client::connect(&admin.server.url).await;
    alice.join("general", "alice").await;
    assert!(matches!(alice.event().await, ServerEvent::Joined { .. }));
    assert!(admin.metric("chat_redis_command_seconds_count").await >= 2.0, "start, join");
    assert_eq!(admin.metric("chat_redis_errors_total").await, 0.0);
    assert_eq!(admin.metric("chat_event_stream_reconnects_total").await, 0.0);

    redis.stop().await;
    assert_eq!(admin.get("/readyz").await, (503, "Redis does not answer\n".into()));
    assert!(admin.metric("chat_redis_errors_total").await >= 1.0, "the failed PING");
    assert_eq!(admin.get("/healthz").await.0, 200, "alive without Redis");
    // The node counts the lost stream before it subscribes again, and says
    // so once it is back.
    redis.restart().await;
    admin.server.program.wait_for_log(|line| line.contains("event stream back")).await;
    assert!(admin.metric("chat_event_stream_reconnects_total").await >= 1.0);
    assert_eq!(admin.get("/readyz").await, (200, "ready\n".into()), "Redis is back");
    admin.server.stop().await;
}
