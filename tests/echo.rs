//! Chapters 2 and 3: the echo server, the basic client, the full client and
//! the reconnecting client, run as a user would run them.

mod common;

use std::time::Duration;

use common::stub::{StubServer, next_frame};
use common::{
    Program, Server, WAIT, assert_silent_client_is_dropped, assert_waits_for_the_slot,
    close_cleanly, connect, connect_with_small_buffers, expect_close, free_port, local_addr,
    log_message, logged_for, recv,
};
use futures_util::SinkExt;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::time::timeout;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;

/// The echo servers of chapter 2.2: the first version, and what it grows
/// into. Each test below that names neither holds for both.
const ECHO_SERVERS: [&str; 2] = ["echo_server_first", "echo_server"];

/// The clients of chapter 2.1, the same way.
const ECHO_CLIENTS: [&str; 2] = ["echo_client_first", "echo_client"];

/// The clients of chapter 3.1, the same way.
const FULL_CLIENTS: [&str; 2] = ["full_client_first", "full_client"];

/// Text and binary messages come back unchanged, up to 1 MiB, and the
/// client's close is answered with the server's.
#[tokio::test]
async fn echo_server_returns_text_and_binary_unchanged() {
    for name in ECHO_SERVERS {
        let server = Server::start(name, &[]).await;
        let mut ws = connect(&server.url).await;
        for msg in [
            Message::text("hello"),
            Message::text("héllo wörld ✓"),
            Message::text(""),
            Message::binary(vec![0u8, 1, 2, 255]),
            Message::binary((0..1_048_576).map(|i| (i % 251) as u8).collect::<Vec<u8>>()),
            Message::text("x".repeat(1_048_576)),
        ] {
            ws.send(msg.clone()).await.expect("send");
            assert_eq!(recv(&mut ws).await, msg, "{name}");
        }
        close_cleanly(&mut ws).await;
        server.stop().await;
    }
}

/// The basic clients print the echo of their text and exit 0, against
/// either server.
#[tokio::test]
async fn echo_client_prints_the_echo() {
    for server_name in ECHO_SERVERS {
        let server = Server::start(server_name, &[]).await;
        for name in ECHO_CLIENTS {
            let mut client = Program::start(name, &[&server.url, "hi there"]);
            assert_eq!(client.next_line().await.as_deref(), Some("hi there"), "{name}");
            assert_eq!(client.exit_code().await, 0, "{name} against {server_name}");
        }
        server.stop().await;
    }
}

/// A server that closes instead of echoing gets the close handshake's
/// second half from either basic client, which then says there was no echo
/// and exits 1.
#[tokio::test]
async fn echo_client_answers_a_close_that_comes_instead_of_the_echo() {
    let stub = StubServer::start().await;
    for name in ECHO_CLIENTS {
        let mut client = Program::start(name, &[&stub.url, "hi"]);
        let mut ws = stub.accept().await;
        assert_eq!(next_frame(&mut ws).await, Message::text("hi"), "{name}");
        ws.send(websocket_tutorial::close::message(CloseCode::Away, "going")).await.expect("close");
        let answer = next_frame(&mut ws).await;
        assert!(answer.is_close(), "{name} answers the close frame: {answer:?}");
        drop(ws);
        assert_eq!(client.exit_code().await, 1, "{name}");
        let stderr = client.stderr_text().await;
        assert!(stderr.contains("no echo"), "{name}: {stderr}");
    }
}

/// A refused connection is one clear line on stderr and exit code 1.
#[tokio::test]
async fn echo_client_reports_a_refused_connection() {
    let nothing = common::refused_port();
    let url = format!("ws://127.0.0.1:{}", nothing.port);
    for name in ECHO_CLIENTS {
        let mut client = Program::start(name, &[&url, "hi"]);
        assert_eq!(client.exit_code().await, 1, "{name}");
        let stderr = client.stderr_text().await;
        assert_eq!(stderr.lines().count(), 1, "{name}: one line: {stderr:?}");
        assert!(stderr.starts_with(&format!("error: cannot connect to {url}")), "{stderr}");
        assert!(stderr.contains("refused"), "{name}: {stderr}");
    }
}

/// The full clients send each stdin line, print each echo, and at end of
/// input close with 1000 and wait for the server's close before exiting 0,
/// against either echo server.
#[tokio::test]
async fn full_client_sends_stdin_lines_and_closes_at_end_of_input() {
    for server_name in ECHO_SERVERS {
        let server = Server::start(server_name, &[]).await;
        for name in FULL_CLIENTS {
            let mut client = Program::start(name, &[&server.url]);
            client.write_stdin("one\ntwo\n\nthree\n").await;
            client.close_stdin();
            let lines = client.remaining_lines().await;
            let expected = ["< one", "< two", "< three", "closed: 1000 (end of input)"];
            assert_eq!(lines, expected, "{name} against {server_name}");
            assert_eq!(client.exit_code().await, 0, "{name} against {server_name}");
        }
        server.stop().await;
    }
}

/// When the server shuts down first, the full client reports the 1001
/// close and exits 0 even though its stdin is still open.
#[tokio::test]
async fn full_client_ends_when_the_server_goes_away() {
    for name in FULL_CLIENTS {
        let server = Server::start("echo_server", &[]).await;
        let mut client = Program::start(name, &[&server.url]);
        client.write_stdin("ping\n").await;
        client.wait_for(|l| l == "< ping").await;
        server.stop().await;
        client.wait_for(|l| l.starts_with("closed: 1001")).await;
        assert_eq!(client.exit_code().await, 0, "{name}");
    }
}

/// A line that is not UTF-8 is reported on stderr, with its number, and the
/// lines after it are still sent.
#[tokio::test]
async fn full_client_reports_a_line_that_is_not_utf8_and_goes_on() {
    let server = Server::start("echo_server", &[]).await;
    for name in FULL_CLIENTS {
        let mut client = Program::start(name, &[&server.url]);
        let stdin = client.stdin.as_mut().expect("stdin open");
        stdin.write_all(b"ok\n\xff\xfe\nafter\n").await.expect("write stdin");
        client.close_stdin();
        let lines = client.remaining_lines().await;
        assert_eq!(lines, ["< ok", "< after", "closed: 1000 (end of input)"], "{name}");
        assert_eq!(client.exit_code().await, 0, "{name}");
        let stderr = client.stderr_text().await;
        assert!(stderr.contains("line 2 is not UTF-8"), "{name}: {stderr}");
    }
    server.stop().await;
}

/// A refused connection is one clear line on stderr and exit code 1.
#[tokio::test]
async fn full_client_reports_a_refused_connection() {
    let nothing = common::refused_port();
    let url = format!("ws://127.0.0.1:{}", nothing.port);
    for name in FULL_CLIENTS {
        let mut client = Program::start(name, &[&url]);
        assert_eq!(client.exit_code().await, 1, "{name}");
        let stderr = client.stderr_text().await;
        assert_eq!(stderr.lines().count(), 1, "{name}: one line: {stderr:?}");
        assert!(stderr.starts_with(&format!("error: cannot connect to {url}")), "{stderr}");
    }
}

/// A server that breaks the protocol (a frame with a reserved opcode) ends
/// the connection with an error line and exit code 1, never a panic.
#[tokio::test]
async fn full_client_survives_a_server_that_breaks_the_protocol() {
    for name in FULL_CLIENTS {
        let stub = common::stub::StubServer::start().await;
        let mut client = Program::start(name, &[&stub.url]);
        let mut ws = stub.accept().await;
        // FIN and opcode 3, which RFC 6455 reserves; no payload.
        ws.get_mut().write_all(&[0x83, 0x00]).await.expect("write the bad frame");
        assert_eq!(client.exit_code().await, 1, "{name}");
        let stderr = client.stderr_text().await;
        let last = stderr.lines().last().unwrap_or_default();
        assert!(last.starts_with("error: connection"), "{name}: {stderr}");
        assert!(!stderr.contains("panicked"), "{name}: {stderr}");
    }
}

/// A line over the server's limit (16 MiB; this one is 17 MB) ends the
/// connection with one line, the server's close code and reason, and exit
/// code 1, the code for any ending but 1000 and 1001. No "connection lost"
/// besides: the writes that fail once the server has gone are part of the
/// same ending.
#[tokio::test]
async fn full_client_ends_an_oversized_line_with_the_close_code_only() {
    let server = Server::start("echo_server", &[]).await;
    let line = format!("{}\n", "x".repeat(17_000_000));
    for name in FULL_CLIENTS {
        let mut client = Program::start(name, &[&server.url]);
        client.write_stdin(&line).await;
        client.close_stdin();
        let lines = client.remaining_lines().await;
        assert_eq!(lines.len(), 1, "{name}: {lines:?}");
        assert!(lines[0].starts_with("closed: 1009 ("), "{name}: {lines:?}");
        assert_eq!(client.exit_code().await, 1, "{name}");
        let stderr = client.stderr_text().await;
        assert!(!stderr.contains("connection lost"), "{name}: {stderr}");
    }
    server.stop().await;
}

/// `--freeze-ms` makes the client read nothing for a while after it has
/// connected, as a frozen process would: the server's heartbeat closes it
/// with 1011, and the client, thawed while the server still waits for the
/// answer to its close frame, shows that close and exits 1.
#[tokio::test]
async fn full_client_frozen_is_closed_by_the_servers_heartbeat() {
    let server =
        Server::start("chat_server", &["--ping-ms", "100", "--pong-timeout-ms", "200"]).await;
    // After 300 ms of silence the server closes, and it waits 2 s for our
    // answer: thawing after 1 s falls in between, with room on both sides.
    let mut client = Program::start("full_client", &[&server.url, "--freeze-ms", "1000"]);
    let (line, skipped) = client.wait_for(|l| l.starts_with("closed:")).await;
    assert_eq!(line, "closed: 1011 (ping timeout)", "{skipped:?}");
    assert_eq!(client.exit_code().await, 1);
    server.stop().await;
}

/// The reconnecting client keeps trying (printing each attempt and delay)
/// until a late server starts, then reconnects after that server restarts.
#[tokio::test]
async fn reconnect_client_survives_a_late_start_and_a_restart() {
    let addr = format!("127.0.0.1:{}", free_port());
    let url = format!("ws://{addr}");
    let mut client = Program::start(
        "reconnect_client",
        &[&url, "--base-ms", "20", "--cap-ms", "200", "--max-attempts", "0", "--ping-ms", "1000"],
    );
    // No server yet: attempts fail, each with its delay (in the log).
    let (line, _) = client.wait_for_log(|l| log_message(l).starts_with("attempt 3 failed")).await;
    assert!(line.contains("retrying in") && line.ends_with(" ms"), "{line}");

    // What arrives is on stdout; the rest is the log, on stderr.
    let server = Server::start_on("echo_server", &addr, &[]).await;
    client.wait_for_log(|l| log_message(l) == "connected (connection 1)").await;
    client.wait_for(|l| l == "< hello (connection 1)").await;

    // The server restarts: the client notices and connects again.
    server.stop().await;
    client.wait_for_log(|l| log_message(l).starts_with("connection lost")).await;
    let server = Server::start_on("echo_server", &addr, &[]).await;
    client.wait_for(|l| l == "< hello (connection 2)").await;

    // Ctrl-C: a clean close, exit 0.
    client.interrupt();
    client.wait_for_log(|l| log_message(l) == "closed").await;
    assert_eq!(client.exit_code().await, 0);
    server.stop().await;
}

/// Delays double up to the cap, and after the attempt limit the client
/// gives up with exit code 1.
#[tokio::test]
async fn reconnect_client_backs_off_to_the_cap_and_gives_up() {
    let nothing = common::refused_port();
    let url = format!("ws://127.0.0.1:{}", nothing.port);
    let mut client = Program::start(
        "reconnect_client",
        &[&url, "--base-ms", "10", "--cap-ms", "40", "--max-attempts", "5"],
    );
    assert_eq!(client.exit_code().await, 1);
    let stderr = client.stderr_text().await;
    let lines: Vec<&str> = stderr.lines().map(log_message).collect();
    let delays: Vec<u64> = lines
        .iter()
        .filter_map(|l| l.split("retrying in ").nth(1))
        .map(|d| d.trim_end_matches(" ms").parse().expect("delay in ms"))
        .collect();
    assert_eq!(delays.len(), 4, "a delay after each of the first 4 failures: {lines:?}");
    // Ceilings 10, 20, 40, 40 ms (capped); jitter draws from the upper half.
    for (delay, ceiling) in delays.iter().zip([10, 20, 40, 40]) {
        assert!(*delay <= ceiling && *delay >= ceiling / 2 - 1, "{delay} vs {ceiling}: {lines:?}");
    }
    let attempts: Vec<_> = lines.iter().filter(|l| l.starts_with("attempt ")).collect();
    assert_eq!(attempts.len(), 10, "5 attempts, each tried and failed: {lines:?}");
    assert!(attempts[9].starts_with("attempt 5 failed"), "{lines:?}");
    assert!(stderr.contains("giving up after 5 failed attempts"), "{stderr}");
}

/// Garbage bytes, a half-finished handshake and a client that vanishes in
/// the middle of a frame leave the server serving the next client.
#[tokio::test]
async fn bad_peers_do_not_disturb_the_server() {
    for name in ECHO_SERVERS {
        bad_peers_do_not_disturb(name).await;
    }
}

async fn bad_peers_do_not_disturb(name: &str) {
    let server = Server::start(name, &[]).await;

    // Garbage instead of an HTTP request: the server answers and hangs up.
    let mut garbage = TcpStream::connect(&server.addr).await.expect("connect");
    garbage.write_all(b"\x00\xffnot http at all\r\n\r\n").await.expect("write");
    let mut buf = Vec::new();
    let read = timeout(WAIT, garbage.read_to_end(&mut buf)).await.expect("server hangs up");
    assert!(read.is_ok(), "{name}");

    // Half a handshake, left open: must not block anyone else.
    let mut half = TcpStream::connect(&server.addr).await.expect("connect");
    half.write_all(b"GET / HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\n").await.expect("write");

    // A client that starts a 1 KiB frame, sends 10 bytes of it and vanishes.
    let mut vanishing = connect(&server.url).await;
    let tcp = match vanishing.get_mut() {
        tokio_tungstenite::MaybeTlsStream::Plain(tcp) => tcp,
        _ => unreachable!("plain ws://"),
    };
    tcp.write_all(&[0x82, 0xFE, 0x04, 0x00, 1, 2, 3, 4, 9, 9]).await.expect("write partial frame");
    drop(vanishing);

    // The next client is served normally, while `half` is still open.
    let mut ws = connect(&server.url).await;
    ws.send(Message::text("still alive")).await.expect("send");
    assert_eq!(recv(&mut ws).await, Message::text("still alive"), "{name}");
    close_cleanly(&mut ws).await;

    // Shutdown does not wait for the half-finished handshake either.
    let started = std::time::Instant::now();
    server.stop().await;
    let took = started.elapsed();
    assert!(took < Duration::from_secs(4), "{name}: shutdown waited {took:?}");
    drop(half);
}

/// A message over the echo server's 16 MiB limit is refused with close code
/// 1009 (message too big).
#[tokio::test]
async fn echo_server_closes_with_1009_over_its_limit() {
    let server = Server::start("echo_server", &[]).await;
    let mut ws = connect(&server.url).await;
    let _ = ws.send(Message::binary(vec![0u8; 16 * 1024 * 1024 + 1])).await;
    assert_eq!(expect_close(&mut ws).await, CloseCode::Size);
    server.stop().await;
}

/// Ctrl-C closes every open connection with 1001 and the server exits 0,
/// promptly.
#[tokio::test]
async fn ctrl_c_closes_connections_with_1001_and_exits_0() {
    stopping_closes_connections_with_1001_and_exits_0("INT").await;
}

/// SIGTERM, what systemd, Docker and Kubernetes send to stop a service, does
/// exactly what Ctrl-C does.
#[tokio::test]
async fn sigterm_closes_connections_with_1001_and_exits_0() {
    stopping_closes_connections_with_1001_and_exits_0("TERM").await;
}

/// Both echo servers, stopped with `signal` while two clients are connected.
async fn stopping_closes_connections_with_1001_and_exits_0(signal: &str) {
    for name in ECHO_SERVERS {
        let server = Server::start(name, &[]).await;
        let mut a = connect(&server.url).await;
        let mut b = connect(&server.url).await;
        a.send(Message::text("x")).await.expect("send");
        recv(&mut a).await; // the server has surely accepted `a` now
        b.send(Message::text("y")).await.expect("send");
        recv(&mut b).await;
        server.program.signal(signal);
        assert_eq!(expect_close(&mut a).await, CloseCode::Away, "{name}");
        assert_eq!(expect_close(&mut b).await, CloseCode::Away, "{name}");
        let mut program = server.program;
        let started = std::time::Instant::now();
        assert_eq!(program.exit_code().await, 0, "{name}");
        assert!(started.elapsed() < Duration::from_secs(5), "{name} exits promptly");
    }
}

/// The reconnecting client's heartbeat notices a server that has gone
/// silent without closing anything (frozen with SIGSTOP), drops that
/// connection and reconnects once the server answers again.
#[tokio::test]
async fn reconnect_client_heartbeat_notices_a_silent_server() {
    let server = Server::start("echo_server", &[]).await;
    let mut client = Program::start(
        "reconnect_client",
        &[
            &server.url,
            "--base-ms",
            "20",
            "--cap-ms",
            "100",
            "--max-attempts",
            "0",
            "--ping-ms",
            "100",
        ],
    );
    client.wait_for(|l| l == "< hello (connection 1)").await;

    server.program.signal("STOP");
    let lost = |l: &str| log_message(l).starts_with("connection lost");
    let (line, _) = client.wait_for_log(lost).await;
    assert!(line.contains("no answer for"), "the heartbeat, not TCP, noticed: {line}");
    server.program.signal("CONT");
    client.wait_for(|l| l == "< hello (connection 2)").await;

    client.interrupt();
    assert_eq!(client.exit_code().await, 0);
    server.stop().await;
}

/// Ctrl-C the moment a server has said `listening on` still shuts it down
/// gracefully, with exit code 0, for every server: its handler is installed
/// before that line. (Installed later, such a Ctrl-C killed the process the
/// default way, about 3 times in 5.)
#[tokio::test]
async fn ctrl_c_right_after_the_listening_line_exits_0() {
    for name in ["echo_server", "broadcast_server", "chat_server", "data_pusher"] {
        for _ in 0..5 {
            Server::start(name, &[]).await.stop().await;
        }
    }
}

/// A client that stops reading (so it answers no ping, like a vanished
/// machine) is closed with 1011 after a ping interval plus the pong
/// timeout, not before; a client that reads stays.
#[tokio::test]
async fn echo_server_drops_a_silent_client_and_keeps_one_that_reads() {
    let mut server =
        Server::start("echo_server", &["--ping-ms", "100", "--pong-timeout-ms", "300"]).await;
    let mut reader = connect(&server.url).await;
    let mut silent = connect(&server.url).await;
    assert_silent_client_is_dropped(&mut server.program, &mut reader, &mut silent).await;

    // The reader answered every ping, and is still served.
    reader.send(Message::text("still here")).await.expect("send");
    assert_eq!(recv(&mut reader).await, Message::text("still here"));
    drop(silent);
    server.stop().await;
}

/// With `--max-connections 1`, a second client waits for the first to go.
#[tokio::test]
async fn echo_server_cap_makes_a_second_client_wait_for_the_slot() {
    let server = Server::start("echo_server", &["--max-connections", "1"]).await;
    let first = connect(&server.url).await;
    let mut second = assert_waits_for_the_slot(&server.url, first).await;
    second.send(Message::text("served")).await.expect("send");
    assert_eq!(recv(&mut second).await, Message::text("served"));
    server.stop().await;
}

/// Sends 64 KiB messages for ever, never reading their echoes: the server's
/// echo backs up (small socket buffers) and then its reads stop too. Never
/// returns; race it against what should happen.
async fn flood(ws: &mut websocket_tutorial::client::WsClient) {
    let chunk = Message::binary(vec![7u8; 64 * 1024]);
    while ws.send(chunk.clone()).await.is_ok() {}
    std::future::pending().await
}

/// A client that sends without reading is closed by the send deadline with
/// 1008, while another client is served as usual.
#[tokio::test]
async fn echo_server_closes_a_client_that_does_not_read_its_echoes() {
    let mut server = Server::start("echo_server", &["--send-timeout-ms", "200"]).await;
    let mut other = connect(&server.url).await;
    let mut flooder = connect_with_small_buffers(&server.url).await;
    let peer = local_addr(&flooder);

    let too_slow = |l: &str| logged_for(l, &peer, "closing code=1008");
    let line = tokio::select! {
        (line, _) = server.program.wait_for_log(too_slow) => line,
        _ = flood(&mut flooder) => unreachable!("flood never returns"),
    };
    assert!(line.ends_with(" reason=too slow: a write timed out"), "{line}");

    other.send(Message::text("unaffected")).await.expect("send");
    assert_eq!(recv(&mut other).await, Message::text("unaffected"));
    close_cleanly(&mut other).await;
    drop(flooder);
    server.stop().await;
}

/// Ctrl-C while an echo is stuck on a client that does not read: that
/// connection is closed with 1001 too (its write gives way to shutdown), the
/// other client gets 1001, and the server exits 0 without waiting out its
/// shutdown grace for a connection that never ended.
#[tokio::test]
async fn ctrl_c_while_an_echo_is_blocked_still_closes_everyone_and_exits_0() {
    // A write deadline far away: only shutdown can end the stuck echo.
    let server = Server::start("echo_server", &["--send-timeout-ms", "60000"]).await;
    let mut program = server.program;
    let mut other = connect(&server.url).await;
    let mut flooder = connect_with_small_buffers(&server.url).await;
    let peer = local_addr(&flooder);

    // Our sends stop completing once the server no longer reads us, which
    // it does only while its echo to us is stuck. (A second without
    // progress on a busy machine could also be a slow server: then the
    // test checks a shutdown that is not stuck, and still passes honestly.)
    let chunk = Message::binary(vec![7u8; 64 * 1024]);
    while let Ok(sent) = timeout(Duration::from_secs(1), flooder.send(chunk.clone())).await {
        sent.expect("send");
    }

    program.interrupt();
    assert_eq!(expect_close(&mut other).await, CloseCode::Away);
    let away = |l: &str| logged_for(l, &peer, "closing code=1001");
    program.wait_for_log(away).await;
    assert_eq!(program.exit_code().await, 0);
    let log = program.stderr_text().await;
    assert!(!log.contains("did not close within"), "{log}");
    drop(flooder);
}
