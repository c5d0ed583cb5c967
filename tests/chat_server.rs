//! The chat server (chapter 6.1) against real clients: rooms, events,
//! sequence numbers, every error rule, limits, heartbeats, slow consumers
//! and shutdown.

mod common;

use std::time::{Duration, Instant};

use common::{Server, WAIT, connect, connect_with_small_buffers, expect_close, recv_within};
use futures_util::{SinkExt, StreamExt};
use tokio::io::AsyncWriteExt;
use tokio_tungstenite::MaybeTlsStream;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::protocol::frame::Frame;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tokio_tungstenite::tungstenite::protocol::frame::coding::{Data as OpData, OpCode};
use websocket_tutorial::client::WsClient;
use websocket_tutorial::protocol::{ClientMessage, ServerEvent};

/// A chat client speaking the JSON protocol.
struct Chat {
    ws: WsClient,
}

impl Chat {
    async fn connect(server: &Server) -> Chat {
        Chat { ws: connect(&server.url).await }
    }

    async fn send(&mut self, command: ClientMessage) {
        self.ws.send(command.to_message()).await.expect("send command");
    }

    async fn send_raw(&mut self, msg: Message) {
        self.ws.send(msg).await.expect("send frame");
    }

    async fn join(&mut self, room: &str, username: &str) {
        self.send(ClientMessage::Join { room: room.into(), username: username.into() }).await;
    }

    async fn say(&mut self, room: &str, content: &str) {
        self.send(ClientMessage::Message { room: room.into(), content: content.into() }).await;
    }

    /// The next event, within [`WAIT`].
    async fn event(&mut self) -> ServerEvent {
        let msg = recv_within(&mut self.ws, WAIT).await;
        ServerEvent::try_from(&msg).unwrap_or_else(|e| panic!("not a server event: {e}: {msg:?}"))
    }

    /// The next event, which must be an `Error`; returns its text.
    async fn error(&mut self) -> String {
        match self.event().await {
            ServerEvent::Error { message } => message,
            other => panic!("expected an Error event, got {other:?}"),
        }
    }

    /// Proves that nothing else was queued for us: a `Ping` is answered
    /// with a `Pong`, in order, after anything the server had already sent.
    async fn expect_nothing_pending(&mut self) {
        self.send(ClientMessage::Ping).await;
        assert_eq!(self.event().await, ServerEvent::Pong, "nothing should arrive before the Pong");
    }

    /// Joins and consumes the own `Joined` event.
    async fn join_ok(&mut self, room: &str, username: &str) {
        self.join(room, username).await;
        assert_eq!(self.event().await, joined(room, username));
    }
}

fn joined(room: &str, username: &str) -> ServerEvent {
    ServerEvent::Joined { room: room.into(), username: username.into() }
}

fn left(room: &str, username: &str) -> ServerEvent {
    ServerEvent::Left { room: room.into(), username: username.into() }
}

/// (username, content, seq) of a `Message` event; panics on anything else.
fn message(event: ServerEvent) -> (String, String, u64) {
    match event {
        ServerEvent::Message { username, content, seq, timestamp, .. } => {
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

/// Members of a room see its joins, messages and leaves, with the sender's
/// name, and a client in another room sees none of it.
#[tokio::test]
async fn rooms_are_separate_and_members_see_every_event() {
    let server = Server::start("chat_server", &[]).await;
    let mut alice = Chat::connect(&server).await;
    let mut bob = Chat::connect(&server).await;
    let mut carol = Chat::connect(&server).await;

    alice.join_ok("general", "alice").await;
    bob.join("general", "bob").await;
    assert_eq!(alice.event().await, joined("general", "bob"));
    assert_eq!(bob.event().await, joined("general", "bob"));
    carol.join_ok("other", "carol").await;

    alice.say("general", "hello").await;
    for member in [&mut alice, &mut bob] {
        assert_eq!(message(member.event().await), ("alice".into(), "hello".into(), 1));
    }
    carol.expect_nothing_pending().await;

    bob.send(ClientMessage::Leave { room: "general".into() }).await;
    assert_eq!(bob.event().await, left("general", "bob"), "the leaver sees its own Left");
    assert_eq!(alice.event().await, left("general", "bob"));
    alice.say("general", "anyone?").await;
    assert_eq!(message(alice.event().await).2, 2);
    bob.expect_nothing_pending().await;
    carol.expect_nothing_pending().await;

    // A disconnect is announced like a leave.
    drop(alice);
    let mut dave = Chat::connect(&server).await;
    dave.join_ok("general", "dave").await;
    carol.expect_nothing_pending().await;
    server.stop().await;
}

/// `seq` starts at 1 and increases by exactly one per message in each room,
/// independently, and the sender receives its own messages.
#[tokio::test]
async fn seq_counts_each_rooms_messages_and_the_sender_hears_itself() {
    let server = Server::start("chat_server", &[]).await;
    let mut alice = Chat::connect(&server).await;
    let mut bob = Chat::connect(&server).await;
    alice.join_ok("one", "alice").await;
    alice.join_ok("two", "alice").await;
    bob.join_ok("two", "bob").await;
    assert_eq!(alice.event().await, joined("two", "bob"));

    for i in 0..5 {
        alice.say("one", &format!("one-{i}")).await;
        alice.say("two", &format!("two-{i}")).await;
    }
    let mut seen_one = Vec::new();
    let mut seen_two = Vec::new();
    for _ in 0..10 {
        match alice.event().await {
            ServerEvent::Message { room, content, seq, username, .. } => {
                assert_eq!(username, "alice");
                if room == "one" { &mut seen_one } else { &mut seen_two }.push((seq, content));
            }
            other => panic!("unexpected {other:?}"),
        }
    }
    let expected =
        |room: &str| (1..=5).map(|s| (s, format!("{room}-{}", s - 1))).collect::<Vec<_>>();
    assert_eq!(seen_one, expected("one"));
    assert_eq!(seen_two, expected("two"));
    for s in 1..=5 {
        assert_eq!(message(bob.event().await), ("alice".into(), format!("two-{}", s - 1), s));
    }
    server.stop().await;
}

/// Every malformed or refused command gets an `Error` event, and the
/// connection stays open and usable afterwards.
#[tokio::test]
async fn every_rule_is_answered_with_an_error_event_and_the_connection_stays_open() {
    let server = Server::start("chat_server", &[]).await;
    let mut c = Chat::connect(&server).await;

    c.send_raw(Message::text("this is not json")).await;
    assert!(c.error().await.contains("invalid JSON"));
    c.send_raw(Message::text(r#"{"type":"Shout","room":"x"}"#)).await;
    assert!(c.error().await.contains("invalid JSON"));
    c.send_raw(Message::binary(vec![1, 2, 3])).await;
    assert!(c.error().await.contains("binary"));

    c.say("general", "not a member yet").await;
    assert!(c.error().await.contains("general"));
    c.join("general", "").await;
    assert!(c.error().await.contains("username"));
    c.join("general", &"x".repeat(33)).await;
    assert!(c.error().await.contains("username"));
    c.join("", "alice").await;
    assert!(c.error().await.contains("room"));
    c.send(ClientMessage::Leave { room: "general".into() }).await;
    assert!(c.error().await.contains("not in that room"));

    // 32 characters (not bytes) is allowed.
    let name = "é".repeat(32);
    c.join_ok("general", &name).await;
    c.join("general", &name).await;
    assert!(c.error().await.contains("already"));
    let mut twin = Chat::connect(&server).await;
    twin.join("general", &name).await;
    assert!(twin.error().await.contains("name is taken"), "names are unique in a room");
    twin.join_ok("elsewhere", &name).await;

    c.say("general", "").await;
    assert!(c.error().await.contains("content"));
    c.say("general", &"y".repeat(4097)).await;
    assert!(c.error().await.contains("content"));
    c.say("general", &"y".repeat(4096)).await;
    assert_eq!(message(c.event().await).2, 1, "4 KiB of content is allowed");

    c.expect_nothing_pending().await;
    server.stop().await;
}

/// A message over 64 KiB closes the connection with 1009 (message too big);
/// one of exactly 64 KiB is still read (and refused politely).
#[tokio::test]
async fn a_message_over_64_kib_closes_with_1009() {
    let server = Server::start("chat_server", &[]).await;
    let mut c = Chat::connect(&server).await;
    let just_fits =
        format!(r#"{{"type":"Message","room":"r","content":"{}"}}"#, "a".repeat(65_536 - 42));
    assert_eq!(just_fits.len(), 65_536);
    c.send_raw(Message::text(just_fits)).await;
    assert!(c.error().await.contains("content"), "64 KiB exactly is read, then refused");

    c.send_raw(Message::text("b".repeat(65_537))).await;
    assert_eq!(expect_close(&mut c.ws).await, CloseCode::Size);

    // The server is unharmed.
    let mut next = Chat::connect(&server).await;
    next.expect_nothing_pending().await;
    server.stop().await;
}

/// Frames that break the WebSocket protocol close the connection with the
/// matching code: 1007 for text that is not UTF-8, 1002 for an unmasked
/// client frame.
#[tokio::test]
async fn protocol_violations_close_with_1007_and_1002() {
    let server = Server::start("chat_server", &[]).await;

    let mut bad_text = Chat::connect(&server).await;
    let not_utf8 = Frame::message(vec![0xff, 0xfe, 0xfd], OpCode::Data(OpData::Text), true);
    bad_text.send_raw(Message::Frame(not_utf8)).await;
    assert_eq!(expect_close(&mut bad_text.ws).await, CloseCode::Invalid);

    // Clients must mask every frame (RFC 6455 5.1); this one is written by
    // hand, unmasked: FIN + text, length 2, "hi".
    let mut unmasked = Chat::connect(&server).await;
    let MaybeTlsStream::Plain(tcp) = unmasked.ws.get_mut() else { unreachable!("ws://") };
    tcp.write_all(&[0x81, 0x02, b'h', b'i']).await.expect("write raw frame");
    assert_eq!(expect_close(&mut unmasked.ws).await, CloseCode::Protocol);

    let mut next = Chat::connect(&server).await;
    next.expect_nothing_pending().await;
    server.stop().await;
}

/// A client that stops answering pings is dropped after the timeout, and
/// its rooms hear that it left; a client that answers stays.
#[tokio::test]
async fn a_client_that_stops_answering_pings_is_dropped() {
    let mut server =
        Server::start("chat_server", &["--ping-ms", "100", "--pong-timeout-ms", "300"]).await;
    let mut watcher = Chat::connect(&server).await;
    watcher.join_ok("general", "watcher").await;

    // tungstenite answers pings only while the stream is read: this client
    // joins and then never reads again, like a vanished machine.
    let mut silent = Chat::connect(&server).await;
    silent.join("general", "silent").await;
    assert_eq!(watcher.event().await, joined("general", "silent"));

    let started = Instant::now();
    assert_eq!(watcher.event().await, left("general", "silent"));
    let took = started.elapsed();
    assert!(took >= Duration::from_millis(300), "not dropped before the timeout ({took:?})");
    // The server said why, with 1011 (its close frame to a silent peer is
    // a courtesy nobody reads; its log is what an operator sees).
    let (line, _) = server.program.wait_for(|l| l.contains("closing with 1011")).await;
    assert!(line.ends_with("ping timeout"), "{line}");

    // The watcher kept reading (and so answering pings) all along: still here.
    watcher.expect_nothing_pending().await;
    drop(silent);
    server.stop().await;
}

/// A client that stops reading is evicted with 1008 once its queue is full,
/// while the others keep receiving every message promptly.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_that_stops_reading_does_not_hold_up_the_others() {
    let server = Server::start("chat_server", &["--queue", "64"]).await;
    let mut sender = Chat::connect(&server).await;
    let mut fast = Chat::connect(&server).await;
    let mut slow = Chat { ws: connect_with_small_buffers(&server.url).await };
    sender.join_ok("general", "sender").await;
    fast.join_ok("general", "fast").await;
    slow.join("general", "slow").await;
    assert_eq!(sender.event().await, joined("general", "fast"));
    assert_eq!(sender.event().await, joined("general", "slow"));
    assert_eq!(fast.event().await, joined("general", "slow"));

    // The slow client now stops reading. 4,000 messages of 2 KiB (8 MB) are
    // more than its queue of 64 and the socket buffers on both ends (the
    // server's send buffer can grow to 4 MiB here) can hold.
    const COUNT: u64 = 4_000;
    let (mut sender_sink, mut sender_stream) = sender.ws.split();
    let sending = tokio::spawn(async move {
        let content = "z".repeat(2048);
        for _ in 0..COUNT {
            let say = ClientMessage::Message { room: "general".into(), content: content.clone() };
            sender_sink.send(say.to_message()).await.expect("send");
        }
    });
    // The sender reads its own copies as it goes, like any good client.
    let sender_reads = tokio::spawn(async move {
        let mut received = 0;
        while received < COUNT {
            match sender_stream.next().await {
                Some(Ok(Message::Text(text))) if text.contains(r#""type":"Message""#) => {
                    received += 1
                }
                Some(Ok(_)) => {}
                other => panic!("the sender lost its connection: {other:?}"),
            }
        }
    });
    // The fast client sees every message, in order, never waiting more than
    // a second for the next one.
    let mut expected_seq = 1;
    let mut slow_left = false;
    while expected_seq <= COUNT {
        let event = tokio::time::timeout(Duration::from_secs(1), fast.event())
            .await
            .unwrap_or_else(|_| panic!("fast client waited over 1 s for seq {expected_seq}"));
        match event {
            ServerEvent::Message { seq, .. } => {
                assert_eq!(seq, expected_seq);
                expected_seq += 1;
            }
            ServerEvent::Left { username, .. } if username == "slow" => slow_left = true,
            other => panic!("unexpected {other:?}"),
        }
    }
    assert!(slow_left, "the slow client was evicted during the burst");
    sending.await.expect("sender finished");
    sender_reads.await.expect("the sender received all its messages");

    // Now the slow client reads: what was buffered, then the eviction.
    assert_eq!(expect_close(&mut slow.ws).await, CloseCode::Policy);
    server.stop().await;
}

/// A burst of 500 messages sent back to back reaches each of 100 connected
/// clients, every message, in order.
#[tokio::test]
async fn a_burst_of_500_messages_reaches_all_100_clients() {
    let server = Server::start("chat_server", &[]).await;
    let mut clients = Vec::new();
    for i in 0..100 {
        let mut c = Chat::connect(&server).await;
        c.join_ok("general", &format!("user{i}")).await;
        clients.push(c);
    }
    let mut sender = clients.remove(0);
    for i in 0..500 {
        sender.say("general", &format!("burst {i}")).await;
    }
    clients.push(sender);
    let readers = clients.into_iter().map(|mut c| {
        tokio::spawn(async move {
            let mut next_seq = 1;
            while next_seq <= 500 {
                match c.event().await {
                    ServerEvent::Joined { .. } => {} // later joiners
                    event => {
                        let (_, content, seq) = message(event);
                        assert_eq!((seq, content), (next_seq, format!("burst {}", next_seq - 1)));
                        next_seq += 1;
                    }
                }
            }
        })
    });
    for reader in futures_util::future::join_all(readers).await {
        reader.expect("every client received all 500 in order");
    }
    server.stop().await;
}

/// With `--max-connections 2`, a third client waits (its TCP connection sits
/// in the kernel's backlog, its handshake unanswered) until a slot is free.
#[tokio::test]
async fn the_connection_cap_makes_extra_clients_wait_for_a_slot() {
    let server = Server::start("chat_server", &["--max-connections", "2"]).await;
    let first = Chat::connect(&server).await;
    let mut second = Chat::connect(&server).await;
    second.expect_nothing_pending().await;

    let url = server.url.clone();
    let mut third = tokio::spawn(async move { connect(&url).await });
    // The one place where waiting for nothing is the point: the cap holds.
    let early = tokio::time::timeout(Duration::from_millis(500), &mut third).await;
    assert!(early.is_err(), "a third connection was served while two were open");

    drop(first);
    let third = tokio::time::timeout(WAIT, third).await.expect("served once a slot freed");
    let mut third = Chat { ws: third.expect("connected") };
    third.expect_nothing_pending().await;
    server.stop().await;
}

/// Ctrl-C sends close code 1001 (going away) to every client, and the
/// server exits 0.
#[tokio::test]
async fn ctrl_c_closes_every_client_with_1001() {
    let server = Server::start("chat_server", &[]).await;
    let mut a = Chat::connect(&server).await;
    let mut b = Chat::connect(&server).await;
    a.join_ok("general", "a").await;
    b.join_ok("other", "b").await;
    server.program.interrupt();
    assert_eq!(expect_close(&mut a.ws).await, CloseCode::Away);
    assert_eq!(expect_close(&mut b.ws).await, CloseCode::Away);
    // The close handshake completes: the server closes the TCP connection.
    assert!(tokio::time::timeout(WAIT, a.ws.next()).await.expect("stream ends").is_none());
    let mut program = server.program;
    assert_eq!(program.exit_code().await, 0);
}

/// With 1,000 clients in one room, every message reaches every reading
/// client, in order, and five clients that never read change nothing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_thousand_clients_in_one_room_with_five_stalled() {
    const CLIENTS: usize = 1_000;
    const STALLED: usize = 5;
    const MESSAGES: u64 = 20;
    let server = Server::start("chat_server", &[]).await;

    let mut readers = Vec::new();
    let mut stalled = Vec::new();
    for i in 0..CLIENTS {
        let mut c = Chat::connect(&server).await;
        c.join("general", &format!("user{i}")).await;
        if i % (CLIENTS / STALLED) == 1 {
            stalled.push(c); // joins, then never reads again
            continue;
        }
        // Each reader skips the Joined events and collects the messages.
        readers.push(tokio::spawn(async move {
            let mut seqs = Vec::new();
            while seqs.len() < MESSAGES as usize {
                match c.event().await {
                    ServerEvent::Joined { .. } => {}
                    ServerEvent::Message { seq, username, .. } => {
                        assert_eq!(username, "speaker");
                        seqs.push(seq);
                    }
                    other => panic!("unexpected {other:?}"),
                }
            }
            (seqs, c) // keep the connection open until the server stops
        }));
    }
    assert_eq!(stalled.len(), STALLED);

    let mut speaker = Chat::connect(&server).await;
    speaker.join_ok("general", "speaker").await;
    for i in 0..MESSAGES {
        speaker.say("general", &format!("message {i}")).await;
    }

    let expected: Vec<u64> = (1..=MESSAGES).collect();
    let all =
        tokio::time::timeout(Duration::from_secs(60), futures_util::future::join_all(readers))
            .await
            .expect("all messages delivered within 60 s");
    assert_eq!(all.len(), CLIENTS - STALLED);
    let mut clients = Vec::new();
    for reader in all {
        let (seqs, client) = reader.expect("reader finished");
        assert_eq!(seqs, expected);
        clients.push(client);
    }
    server.stop().await;
    drop((clients, stalled));
}
