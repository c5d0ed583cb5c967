//! Chapter 10, "Bad input cannot hurt": a real chat_server takes random
//! bytes from twenty connections at once, before and after the WebSocket
//! handshake, while three members chat, and nobody else notices.
//!
//! Random, but reproducible: the test prints its seed, and
//! `BAD_INPUT_SEED=N cargo test --test bad_input` runs the same attack
//! again. The parsers behind the server have property tests of their own
//! (tests/properties.rs).

mod common;

use std::future::Future;
use std::io::ErrorKind;
use std::sync::Arc;

use common::{Server, WAIT, connect, expect_close, recv_within, said, unstamped};
use futures_util::{SinkExt, StreamExt};
use rand::rngs::StdRng;
use rand::{RngExt, SeedableRng};
use serde_json::json;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::sync::Barrier;
use tokio::time::timeout;
use tokio_tungstenite::MaybeTlsStream;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::protocol::frame::Frame;
use tokio_tungstenite::tungstenite::protocol::frame::coding::{CloseCode, Data, OpCode};
use websocket_tutorial::client::WsClient;
use websocket_tutorial::protocol::{ClientMessage, ServerEvent};

const MEMBERS: [&str; 3] = ["alice", "bob", "carol"];
/// Messages each member says, half while the attack is being sent and half
/// while its connections are answered and closed.
const SAID_EACH: u64 = 10;
const ATTACKERS: usize = 20;

/// The kinds of bad input; attacker `i` sends kind `i % 10`, with bytes of
/// its own from a generator seeded with the test's seed plus `i`.
#[derive(Clone, Copy, Debug)]
enum Attack {
    // Before the handshake, on the raw TCP connection.
    /// Random bytes instead of an HTTP request.
    TcpGarbage,
    /// The start of a real upgrade request, cut at a random point, then a
    /// hang-up.
    HalfHandshake,
    /// A complete HTTP request that is not an upgrade, or one whose header
    /// never ends (tungstenite gives up past 64 KiB).
    NotAnUpgrade,
    // After the handshake.
    /// Text frames of random characters.
    RandomText,
    /// Text frames of JSON that is not a command the server carries out.
    JsonNotACommand,
    /// Binary frames of random bytes.
    RandomBinary,
    /// Pings and pongs with random payloads.
    ControlFrames,
    /// A text frame whose payload is not UTF-8.
    InvalidUtf8,
    /// A frame over the 64 KiB limit, text or binary.
    Oversize,
    /// Random bytes on the socket, where frames belong.
    FrameGarbage,
}

const ATTACKS: [Attack; 10] = [
    Attack::TcpGarbage,
    Attack::HalfHandshake,
    Attack::NotAnUpgrade,
    Attack::RandomText,
    Attack::JsonNotACommand,
    Attack::RandomBinary,
    Attack::ControlFrames,
    Attack::InvalidUtf8,
    Attack::Oversize,
    Attack::FrameGarbage,
];

/// Every await in this file has a deadline: `what` names the one missed.
async fn within<T>(what: &str, future: impl Future<Output = T>) -> T {
    timeout(WAIT, future).await.unwrap_or_else(|_| panic!("{what}: nothing within {WAIT:?}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn random_bytes_from_twenty_connections_cost_the_members_nothing() {
    let seed = match std::env::var("BAD_INPUT_SEED") {
        Ok(seed) => seed.parse().expect("BAD_INPUT_SEED is a number"),
        Err(_) => rand::random::<u64>(),
    };
    // Shown when the test fails (the harness prints a failed test's output).
    eprintln!("seed {seed}: rerun with BAD_INPUT_SEED={seed}");

    let mut server = Server::start("chat_server", &[]).await;
    let mut members = Vec::new();
    for name in MEMBERS {
        let mut ws = connect(&server.url).await;
        send(&mut ws, join("general", name)).await;
        members.push(ws);
        for member in &mut members {
            assert_eq!(event(member).await, joined("general", name));
        }
    }

    // Every attacker sends its bad input, then meets the others at the
    // barrier, then checks how the server answered it. The members say half
    // their messages while the input goes out and half once all of it has.
    let barrier = Arc::new(Barrier::new(ATTACKERS + 1));
    let attackers: Vec<_> = (0..ATTACKERS)
        .map(|i| {
            let kind = ATTACKS[i % ATTACKS.len()];
            let rng = StdRng::seed_from_u64(seed.wrapping_add(i as u64));
            tokio::spawn(attack(kind, server.addr.clone(), rng, barrier.clone()))
        })
        .collect();
    chat(&mut members, 0..SAID_EACH / 2).await;
    // An attacker that fails before the barrier fails this wait too.
    within("every attacker's bad input sent", barrier.wait()).await;
    chat(&mut members, SAID_EACH / 2..SAID_EACH).await;
    for (i, attacker) in attackers.into_iter().enumerate() {
        let kind = ATTACKS[i % ATTACKS.len()];
        let outcome = within("an attacker's end", attacker).await;
        outcome.unwrap_or_else(|e| panic!("attacker {i} ({kind:?}, seed {seed}) failed: {e}"));
    }

    // Every member has every message: seq 1.. in order, nothing missing,
    // each member's own messages in the order it said them, and nothing else.
    let total = SAID_EACH * MEMBERS.len() as u64;
    for (ws, name) in members.iter_mut().zip(MEMBERS) {
        let mut next_from = [0u64; MEMBERS.len()];
        for seq in 1..=total {
            let (username, content, got) = said(event(ws).await);
            assert_eq!(got, seq, "{name} gets seq {seq} next (seed {seed})");
            let sender = MEMBERS.iter().position(|m| *m == username).expect("a member");
            assert_eq!(content, format!("{username} {}", next_from[sender]), "(seed {seed})");
            next_from[sender] += 1;
        }
        send(ws, ClientMessage::Ping).await;
        assert_eq!(event(ws).await, ServerEvent::Pong, "{name}: nothing more (seed {seed})");
    }

    // The server is up: a newcomer joins and talks.
    let mut newcomer = connect(&server.url).await;
    send(&mut newcomer, join("general", "dave")).await;
    members.push(newcomer);
    for ws in &mut members {
        assert_eq!(event(ws).await, joined_at("general", "dave", total), "after every message");
    }
    let dave = members.last_mut().expect("dave");
    send(dave, say("general", "what storm?")).await;
    for ws in &mut members {
        assert_eq!(said(event(ws).await), ("dave".into(), "what storm?".into(), total + 1));
    }

    // And nothing panicked: Ctrl-C still closes everyone with 1001 and
    // ends it with 0, and its log says no task died.
    server.program.interrupt();
    for ws in &mut members {
        assert_eq!(expect_close(ws).await, CloseCode::Away);
        // Reading on sends tungstenite's answer, so the server need not wait
        // out its close timeout, and then sees the end.
        within("the end of the stream", async { while ws.next().await.is_some() {} }).await;
    }
    assert_eq!(server.program.exit_code().await, 0, "server exits 0 on Ctrl-C");
    let log = server.program.stderr_text().await;
    assert!(!log.contains("panicked"), "the server panicked (seed {seed}):\n{log}");
}

/// Messages `numbers` from each member in turn: `alice 0`, `bob 0`, ...
async fn chat(members: &mut [WsClient], numbers: std::ops::Range<u64>) {
    for n in numbers {
        for (ws, name) in members.iter_mut().zip(MEMBERS) {
            send(ws, say("general", &format!("{name} {n}"))).await;
        }
    }
}

/// One attacker: sends bad input of `kind`, waits at `barrier`, then checks
/// the server's answer. Panics (failing the test) on a wrong answer.
async fn attack(kind: Attack, addr: String, mut rng: StdRng, barrier: Arc<Barrier>) {
    let url = format!("ws://{addr}");
    match kind {
        Attack::TcpGarbage => {
            let mut tcp = tcp_connect(&addr).await;
            let garbage = random_bytes(&mut rng, 1..4096);
            write_raw(&mut tcp, &garbage).await;
            within("the barrier", barrier.wait()).await;
            assert_refused_without_upgrade(tcp).await;
        }
        Attack::HalfHandshake => {
            let request = upgrade_request(&addr);
            let cut = rng.random_range(1..request.len());
            let mut tcp = tcp_connect(&addr).await;
            write_raw(&mut tcp, &request.as_bytes()[..cut]).await;
            // Held open, half said, until every attacker has sent its input.
            within("the barrier", barrier.wait()).await;
            assert_refused_without_upgrade(tcp).await;
        }
        Attack::NotAnUpgrade => {
            let path = random_word(&mut rng, 0..40);
            let request = if rng.random_bool(0.5) {
                format!("GET /{path} HTTP/1.1\r\nHost: {addr}\r\n\r\n")
            } else {
                let endless = "x".repeat(70_000);
                format!("GET /{path} HTTP/1.1\r\nHost: {addr}\r\nX-Long: {endless}")
            };
            let mut tcp = tcp_connect(&addr).await;
            write_raw(&mut tcp, request.as_bytes()).await;
            within("the barrier", barrier.wait()).await;
            // No hang-up from us: the server ends it by itself.
            assert_ends_without_upgrade(tcp).await;
        }
        Attack::RandomText | Attack::JsonNotACommand | Attack::RandomBinary => {
            let mut ws = connect(&url).await;
            // Under the rate limit's burst (20), so each frame is answered.
            let frames: Vec<Message> = (0..rng.random_range(1..16))
                .map(|_| match kind {
                    Attack::RandomText => Message::text(random_text(&mut rng, 0..200)),
                    Attack::JsonNotACommand => Message::text(not_a_command(&mut rng)),
                    _ => Message::binary(random_bytes(&mut rng, 0..300)),
                })
                .collect();
            let sent = frames.len();
            for frame in frames {
                within("send a frame", ws.send(frame)).await.expect("send a frame");
            }
            within("the barrier", barrier.wait()).await;
            // Each frame got an Error, the connection is still open, and a
            // Ping is answered after them.
            send(&mut ws, ClientMessage::Ping).await;
            for n in 0..sent {
                match event(&mut ws).await {
                    ServerEvent::Error { .. } => {}
                    other => panic!("frame {n} of {sent} answered with {other:?}, not an Error"),
                }
            }
            assert_eq!(event(&mut ws).await, ServerEvent::Pong);
        }
        Attack::ControlFrames => {
            let mut ws = connect(&url).await;
            for _ in 0..rng.random_range(1..10) {
                let payload = random_bytes(&mut rng, 0..126); // a control frame's limit
                let frame = if rng.random_bool(0.5) {
                    Message::Ping(payload.into())
                } else {
                    Message::Pong(payload.into())
                };
                within("send a control frame", ws.send(frame)).await.expect("send");
            }
            within("the barrier", barrier.wait()).await;
            // Pings are answered by tungstenite, pongs prove life: no Error.
            send(&mut ws, ClientMessage::Ping).await;
            assert_eq!(event(&mut ws).await, ServerEvent::Pong);
        }
        Attack::InvalidUtf8 => {
            let mut ws = connect(&url).await;
            let mut bytes = random_bytes(&mut rng, 0..200);
            let at = rng.random_range(0..=bytes.len());
            bytes.insert(at, 0xff); // never in UTF-8
            let frame = Frame::message(bytes, OpCode::Data(Data::Text), true);
            within("send", ws.send(Message::Frame(frame))).await.expect("send");
            within("the barrier", barrier.wait()).await;
            assert_eq!(expect_close(&mut ws).await, CloseCode::Invalid);
        }
        Attack::Oversize => {
            let mut ws = connect(&url).await;
            let len = rng.random_range(65_537..100_000);
            let frame = if rng.random_bool(0.5) {
                Message::text(random_word(&mut rng, len..len + 1))
            } else {
                Message::binary(random_bytes(&mut rng, len..len + 1))
            };
            within("send", ws.send(frame)).await.expect("send");
            within("the barrier", barrier.wait()).await;
            assert_eq!(expect_close(&mut ws).await, CloseCode::Size);
        }
        Attack::FrameGarbage => {
            let mut ws = connect(&url).await;
            let MaybeTlsStream::Plain(tcp) = ws.get_mut() else { unreachable!("ws://") };
            write_raw(tcp, &random_bytes(&mut rng, 1..4096)).await;
            within("the barrier", barrier.wait()).await;
            // Whatever the bytes said (a frame broken one way or another,
            // or the start of a long one), the connection ends once we
            // hang up, and the server is not stuck on it.
            let _ = within("shut down", tcp.shutdown()).await;
            let mut rest = Vec::new();
            match within("the server's end", tcp.read_to_end(&mut rest)).await {
                Ok(_) => {}
                Err(e) if e.kind() == ErrorKind::ConnectionReset => {}
                Err(e) => panic!("reading the end: {e}"),
            }
        }
    }
}

async fn tcp_connect(addr: &str) -> TcpStream {
    within("connect", TcpStream::connect(addr)).await.expect("connect")
}

/// Writes bytes as they are. A server that has already refused them may
/// reset the connection under a long write: that is an answer too, which
/// the read that follows sees.
async fn write_raw(tcp: &mut TcpStream, bytes: &[u8]) {
    match within("write", tcp.write_all(bytes)).await {
        Ok(()) => {}
        Err(e) if matches!(e.kind(), ErrorKind::ConnectionReset | ErrorKind::BrokenPipe) => {}
        Err(e) => panic!("write: {e}"),
    }
}

/// We hang up; the server must end the connection without ever answering
/// `101 Switching Protocols`.
async fn assert_refused_without_upgrade(mut tcp: TcpStream) {
    let _ = within("shut down", tcp.shutdown()).await;
    assert_ends_without_upgrade(tcp).await;
}

/// The server ends the connection, within the deadline, and what it sent
/// before (nothing, or an HTTP error) is no upgrade.
async fn assert_ends_without_upgrade(mut tcp: TcpStream) {
    let mut answer = Vec::new();
    match within("the server's end", tcp.read_to_end(&mut answer)).await {
        Ok(_) => {}
        Err(e) if e.kind() == ErrorKind::ConnectionReset => {}
        Err(e) => panic!("reading the answer: {e}"),
    }
    let answer = String::from_utf8_lossy(&answer);
    assert!(!answer.starts_with("HTTP/1.1 101"), "bad input was upgraded: {answer}");
}

/// A valid upgrade request, as a browser would send it.
fn upgrade_request(addr: &str) -> String {
    format!(
        "GET / HTTP/1.1\r\nHost: {addr}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
         Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n"
    )
}

fn random_bytes(rng: &mut StdRng, len: std::ops::Range<usize>) -> Vec<u8> {
    let mut bytes = vec![0; rng.random_range(len)];
    rng.fill(&mut bytes[..]);
    bytes
}

/// Any characters, control characters and quotes included.
fn random_text(rng: &mut StdRng, len: std::ops::Range<usize>) -> String {
    (0..rng.random_range(len)).map(|_| rng.random::<char>()).collect()
}

/// Lowercase letters only.
fn random_word(rng: &mut StdRng, len: std::ops::Range<usize>) -> String {
    (0..rng.random_range(len)).map(|_| rng.random_range('a'..='z')).collect()
}

/// JSON a client could send that the server must refuse with an `Error`:
/// unknown types, missing or mistyped fields, broken rules, commands for a
/// room the sender is not in (it joins none), nesting past serde_json's
/// limit. Never a command that succeeds.
fn not_a_command(rng: &mut StdRng) -> String {
    let word = random_text(rng, 0..20);
    let value = match rng.random_range(0..10) {
        // No variant starts with X.
        0 => json!({ "type": format!("X{word}") }),
        1 => json!({ "type": "Join", "room": "general", "username": random_word(rng, 33..60) }),
        2 => json!({ "type": "Join", "room": "general", "username": format!("\u{7}{word}") }),
        3 => json!({ "type": "Join", "room": rng.random::<i64>(), "username": [word] }),
        4 => json!({ "type": "Join", "room": "general", "username": "x",
                     "since": -rng.random_range(1..i64::MAX) }),
        5 => json!({ "type": "Message", "room": word, "content": random_text(rng, 0..50) }),
        6 => json!({ "type": "Leave", "room": word }),
        7 => json!({ "type": "Members", "room": word }),
        8 => json!([rng.random::<f64>(), null, word, { "type": "Ping" }]),
        _ => return "[".repeat(rng.random_range(129..5000)),
    };
    value.to_string()
}

fn join(room: &str, username: &str) -> ClientMessage {
    ClientMessage::Join { room: room.into(), username: username.into(), since: None, epoch: None }
}

fn say(room: &str, content: &str) -> ClientMessage {
    ClientMessage::Message { room: room.into(), content: content.into() }
}

fn joined(room: &str, username: &str) -> ServerEvent {
    joined_at(room, username, 0)
}

/// `username` joined `room`, whose last message was then `seq`.
fn joined_at(room: &str, username: &str, seq: u64) -> ServerEvent {
    ServerEvent::Joined {
        room: room.into(),
        username: username.into(),
        timestamp: String::new(), // checked and blanked by `unstamped`
        seq,
        epoch: String::new(),
    }
}

async fn send(ws: &mut WsClient, command: ClientMessage) {
    within("send a command", ws.send(command.to_message())).await.expect("send a command");
}

/// The next event, within [`WAIT`].
async fn event(ws: &mut WsClient) -> ServerEvent {
    let msg = recv_within(ws, WAIT).await;
    unstamped(
        ServerEvent::try_from(&msg).unwrap_or_else(|e| panic!("not a server event: {e}: {msg:?}")),
    )
}
