//! Chapter 6.2: the real-time data pusher (`examples/data_pusher.rs`), run
//! as a real process and watched by real WebSocket clients.

mod common;

use std::time::Duration;

use chrono::{DateTime, FixedOffset};
use common::{
    Server, connect, connect_with_small_buffers, expect_close, local_addr, logged_for, recv_text,
};
use futures_util::SinkExt;
use tokio::time::{Instant, timeout};
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use websocket_tutorial::client::WsClient;

const NAME: &str = "data_pusher";
const INTERVAL_MS: i64 = 50;

/// One sample as a client sees it.
#[derive(Debug, PartialEq)]
struct Sample {
    seq: u64,
    timestamp: DateTime<FixedOffset>,
    value: f64,
}

/// Parses a pushed message, asserting its shape: `seq` a whole number,
/// `timestamp` RFC 3339 in UTC, `value` a number.
fn parse(text: &str) -> Sample {
    let json: serde_json::Value =
        serde_json::from_str(text).unwrap_or_else(|e| panic!("not JSON ({e}): {text}"));
    let seq = json["seq"].as_u64().unwrap_or_else(|| panic!("no seq: {text}"));
    let timestamp = json["timestamp"].as_str().unwrap_or_else(|| panic!("no timestamp: {text}"));
    let timestamp = DateTime::parse_from_rfc3339(timestamp)
        .unwrap_or_else(|e| panic!("timestamp is not RFC 3339 ({e}): {text}"));
    assert_eq!(timestamp.offset().local_minus_utc(), 0, "timestamp in UTC: {text}");
    let value = json["value"].as_f64().unwrap_or_else(|| panic!("value is not a number: {text}"));
    Sample { seq, timestamp, value }
}

async fn next_sample(ws: &mut WsClient) -> Sample {
    parse(&recv_text(ws).await)
}

/// Every sample that arrives within `window`.
async fn samples_for(ws: &mut WsClient, window: Duration) -> Vec<Sample> {
    let end = Instant::now() + window;
    let mut samples = Vec::new();
    // Cancelling a read at the deadline is safe: a partly read frame stays
    // buffered in the stream.
    while let Ok(sample) = tokio::time::timeout_at(end, next_sample(ws)).await {
        samples.push(sample);
    }
    samples
}

/// Samples are numbered in order, and never produced closer together than
/// half the interval (the server keeps them at least one interval apart;
/// half leaves room for a clock that is read a little late).
fn assert_paced(samples: &[Sample]) {
    for pair in samples.windows(2) {
        let (a, b) = (&pair[0], &pair[1]);
        assert!(b.seq > a.seq, "seq increases: {a:?} then {b:?}");
        let gap = (b.timestamp - a.timestamp).num_milliseconds();
        let at_least = (b.seq - a.seq) as i64 * INTERVAL_MS / 2;
        assert!(gap >= at_least, "{gap} ms between {a:?} and {b:?}, expected >= {at_least}");
    }
}

/// Reads samples until the caller stops polling; panics if the connection
/// closes. Reading is also what answers the server's pings.
async fn keep_reading(ws: &mut WsClient) {
    loop {
        next_sample(ws).await;
    }
}

/// Waits until the server has logged `n` more connections; each was
/// subscribed to the samples before it was logged.
async fn wait_connected(server: &mut Server, n: usize) {
    for _ in 0..n {
        server.program.wait_for_log(|line| line.ends_with(": connected")).await;
    }
}

/// Three clients all receive well-formed samples at the configured interval, and the same samples: one producer, not one per client.
#[tokio::test]
async fn every_client_receives_the_same_samples_at_the_interval() {
    let interval = INTERVAL_MS.to_string();
    let mut server = Server::start(NAME, &["--interval-ms", &interval]).await;
    let (mut a, mut b, mut c) =
        (connect(&server.url).await, connect(&server.url).await, connect(&server.url).await);
    wait_connected(&mut server, 3).await;

    // 2 s at 50 ms is 40 samples; at least 10 allows for a loaded machine,
    // yet fails a server that ignores --interval-ms (1 s: 2 or 3 samples).
    let window = Duration::from_secs(2);
    let (a, b, c) = tokio::join!(
        samples_for(&mut a, window),
        samples_for(&mut b, window),
        samples_for(&mut c, window)
    );
    for samples in [&a, &b, &c] {
        assert!(samples.len() >= 10, "{} samples in {window:?}", samples.len());
        assert_paced(samples);
    }
    // A sample with a given seq is the very same for everyone.
    for sample in &a {
        for other in [&b, &c] {
            if let Some(same) = other.iter().find(|s| s.seq == sample.seq) {
                assert_eq!(same, sample);
            }
        }
    }
    server.stop().await;
}

/// A client that joins late starts with the next sample produced (its seq is above what an earlier client had already seen) and keeps receiving.
#[tokio::test]
async fn a_late_joiner_receives_the_next_samples() {
    let interval = INTERVAL_MS.to_string();
    let mut server = Server::start(NAME, &["--interval-ms", &interval]).await;
    let mut early = connect(&server.url).await;
    wait_connected(&mut server, 1).await;
    let mut seen = 0;
    for _ in 0..3 {
        seen = next_sample(&mut early).await.seq;
    }

    let mut late = connect(&server.url).await;
    wait_connected(&mut server, 1).await;
    let mut samples = Vec::new();
    for _ in 0..3 {
        samples.push(next_sample(&mut late).await);
    }
    assert!(samples[0].seq > seen, "first sample {:?}, already seen {seen}", samples[0]);
    assert_paced(&samples);
    server.stop().await;
}

/// While one client stops reading, the others keep receiving at the interval; the stalled one, reading again, gets current samples.
#[tokio::test]
async fn a_stalled_client_does_not_delay_the_others() {
    let interval = INTERVAL_MS.to_string();
    let mut server = Server::start(NAME, &["--interval-ms", &interval]).await;
    let mut stalled = connect(&server.url).await;
    let (mut a, mut b) = (connect(&server.url).await, connect(&server.url).await);
    wait_connected(&mut server, 3).await;

    // `stalled` is not read at all during this window. 1.5 s at 50 ms is
    // 30 samples; at least 8 allows for a loaded machine.
    let window = Duration::from_millis(1500);
    let (a, b) = tokio::join!(samples_for(&mut a, window), samples_for(&mut b, window));
    for samples in [&a, &b] {
        assert!(samples.len() >= 8, "{} samples in {window:?}", samples.len());
        assert_paced(samples);
    }

    // Reading again, the stalled client reaches samples as new as the
    // others had, so it was never cut off.
    let newest = a.last().map_or(0, |s| s.seq);
    let caught_up = timeout(Duration::from_secs(10), async {
        let mut samples = vec![next_sample(&mut stalled).await];
        while samples.last().map_or(0, |s| s.seq) < newest {
            samples.push(next_sample(&mut stalled).await);
        }
        samples
    })
    .await
    .expect("the stalled client catches up within 10 s");
    assert_paced(&caught_up);
    server.stop().await;
}

/// Ctrl-C closes every connection with 1001 (going away), also for a client that never read, and the server exits 0.
#[tokio::test]
async fn ctrl_c_closes_every_client_with_1001() {
    stopping_closes_every_client_with_1001("INT").await;
}

/// SIGTERM (systemd, Docker, Kubernetes) does exactly what Ctrl-C does.
#[tokio::test]
async fn sigterm_closes_every_client_with_1001() {
    stopping_closes_every_client_with_1001("TERM").await;
}

/// The server stopped with `signal` while one client reads and one does not.
async fn stopping_closes_every_client_with_1001(signal: &str) {
    let interval = INTERVAL_MS.to_string();
    let mut server = Server::start(NAME, &["--interval-ms", &interval]).await;
    let mut reading = connect(&server.url).await;
    let mut idle = connect(&server.url).await;
    wait_connected(&mut server, 2).await;
    next_sample(&mut reading).await;

    server.program.signal(signal);
    for ws in [&mut reading, &mut idle] {
        // Samples queued before the close frame are skipped.
        assert_eq!(expect_close(ws).await, CloseCode::Away);
        let _ = ws.flush().await; // answer the close frame
    }
    assert_eq!(server.program.exit_code().await, 0, "exit code after SIG{signal}");
}

/// A client message over the 4 KiB limit closes that client's connection with 1009 (too big); samples keep flowing to the others.
#[tokio::test]
async fn an_oversized_message_closes_only_its_sender() {
    let interval = INTERVAL_MS.to_string();
    let mut server = Server::start(NAME, &["--interval-ms", &interval]).await;
    let mut offender = connect(&server.url).await;
    let mut other = connect(&server.url).await;
    wait_connected(&mut server, 2).await;

    offender.send(Message::text("x".repeat(5 * 1024))).await.expect("send");
    assert_eq!(expect_close(&mut offender).await, CloseCode::Size);
    let before = next_sample(&mut other).await;
    let after = next_sample(&mut other).await;
    assert!(after.seq > before.seq);
    server.stop().await;
}

/// A client that never reads (so never answers a ping) is closed with 1011 once ping + pong timeout of silence have passed, not before; a client that reads stays connected.
#[tokio::test]
async fn a_client_that_never_answers_pings_is_closed_with_1011() {
    let (ping_ms, pong_timeout_ms) = (100, 300);
    let (ping, pong_timeout) = (ping_ms.to_string(), pong_timeout_ms.to_string());
    let args = ["--interval-ms", "50", "--ping-ms", &ping, "--pong-timeout-ms", &pong_timeout];
    let mut server = Server::start(NAME, &args).await;
    let mut reader = connect(&server.url).await;
    wait_connected(&mut server, 1).await;

    // tungstenite answers pings only while the stream is read: this client
    // never reads, like a machine that vanished. Its silence starts after
    // `started`, so the server must not give up before the full timeout.
    let started = Instant::now();
    let mut silent = connect(&server.url).await;
    let silent_part = async {
        let allowed = Duration::from_millis(ping_ms + pong_timeout_ms);
        let log = "closing code=1011 reason=ping timeout";
        expect_dropped(&mut server, &mut silent, started, allowed, log, CloseCode::Error).await;
    };
    // Meanwhile the reader reads, and so answers every ping.
    tokio::select! {
        _ = silent_part => {}
        _ = keep_reading(&mut reader) => unreachable!("keep_reading returns only by panicking"),
    }
    // It was pinged several times over and is still connected.
    next_sample(&mut reader).await;
    server.stop().await;
}

/// A client that stops reading is closed with 1008 (too slow) once one send has waited --send-timeout-ms for it, not before; a client that reads keeps receiving.
#[tokio::test]
async fn a_client_that_cannot_keep_up_is_closed_with_1008() {
    let send_timeout_ms = 1000;
    let send_timeout = send_timeout_ms.to_string();
    let mut server =
        Server::start(NAME, &["--interval-ms", "1", "--send-timeout-ms", &send_timeout]).await;
    let mut reader = connect(&server.url).await;
    wait_connected(&mut server, 1).await;

    // This client never reads. With its small socket buffers (which also
    // keep the server's send buffer small), samples at one a millisecond
    // fill everything between us within about a second; then the server's
    // next send has to wait.
    let started = Instant::now();
    let mut slow = connect_with_small_buffers(&server.url).await;
    let slow_part = async {
        let allowed = Duration::from_millis(send_timeout_ms);
        let log = "closing code=1008 reason=too slow: a send timed out";
        expect_dropped(&mut server, &mut slow, started, allowed, log, CloseCode::Policy).await;
    };
    // Meanwhile the reader reads, at one sample a millisecond.
    tokio::select! {
        _ = slow_part => {}
        _ = keep_reading(&mut reader) => unreachable!("keep_reading returns only by panicking"),
    }
    next_sample(&mut reader).await;
    server.stop().await;
}

/// Waits for the server to log that it is closing `ws` with `log` (for
/// example `closing code=1011 reason=ping timeout`), no sooner than
/// `at_least` after `started`;
/// then reads the close frame, which must carry `code`, answers it, and
/// waits for the server's `disconnected` line.
///
/// The client reads while the server still waits for its answer: once the
/// server has dropped the socket, answering the pings it left unread would
/// fail (broken pipe) before the close frame is reached.
async fn expect_dropped(
    server: &mut Server,
    ws: &mut WsClient,
    started: Instant,
    at_least: Duration,
    log: &str,
    code: CloseCode,
) {
    let addr = local_addr(ws);
    let (line, _) = server.program.wait_for_log(|l| logged_for(l, &addr, "closing")).await;
    let took = started.elapsed();
    assert!(took >= at_least, "closed after {took:?}, sooner than {at_least:?}");
    assert!(line.ends_with(&format!(": {log}")), "{line}");
    assert_eq!(expect_close(ws).await, code);
    let _ = ws.flush().await; // answer the close frame
    let disconnected =
        |l: &str| logged_for(l, &addr, "disconnected") && l.ends_with("disconnected");
    server.program.wait_for_log(disconnected).await;
}
