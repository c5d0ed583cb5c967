//! The chat server (chapter 6.1) against real clients: rooms, events,
//! sequence numbers, every error rule, limits, heartbeats, slow consumers
//! and shutdown.

mod common;

use std::time::{Duration, Instant};

use common::{
    Server, WAIT, connect, connect_with_small_buffers, expect_clean_end, expect_close, local_addr,
    logged_for, recv_within, said, unstamped,
};
use futures_util::{SinkExt, StreamExt};
use tokio::io::AsyncWriteExt;
use tokio_tungstenite::MaybeTlsStream;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::protocol::frame::Frame;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tokio_tungstenite::tungstenite::protocol::frame::coding::{Data as OpData, OpCode};
use websocket_tutorial::client::WsClient;
use websocket_tutorial::protocol::{ClientMessage, ErrorCode, ServerEvent};

/// A test run against several chat servers, one test each, named after
/// the server: `TEST::chat_server_first` (chapter 6.1's first version),
/// `TEST::chat_server` (what it grows into), `TEST::axum_chat` (the same
/// chat on axum, chapter 12). axum_chat is built only with `--features
/// axum`, so without it its tests show as ignored.
///
/// ```text
/// against! { [chat_server, axum_chat]
/// #[tokio::test]
/// /// What the test checks.
/// async fn a_test(name) { let server = Server::start(name, &[]).await; ... }
/// }
/// ```
macro_rules! against {
    ([$($server:ident),+] #[$runtime:meta] $(#[$doc:meta])* async fn $test:ident($name:ident) $body:block) => {
        $(#[$doc])*
        mod $test {
            use super::*;

            async fn run($name: &'static str) $body

            $(against!(@one $server #[$runtime]);)+
        }
    };
    (@one axum_chat #[$runtime:meta]) => {
        #[$runtime]
        #[cfg_attr(not(feature = "axum"), ignore = "axum_chat needs `--features axum` (chapter 12)")]
        async fn axum_chat() {
            run("axum_chat").await
        }
    };
    (@one $server:ident #[$runtime:meta]) => {
        #[$runtime]
        async fn $server() {
            run(stringify!($server)).await
        }
    };
}

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
        self.send(ClientMessage::Join {
            room: room.into(),
            username: username.into(),
            since: None,
            epoch: None,
        })
        .await;
    }

    async fn join_since(&mut self, room: &str, username: &str, since: u64) {
        let (room, username) = (room.into(), username.into());
        self.send(ClientMessage::Join { room, username, since: Some(since), epoch: None }).await;
    }

    async fn say(&mut self, room: &str, content: &str) {
        self.send(ClientMessage::Message { room: room.into(), content: content.into() }).await;
    }

    /// The next event, within [`WAIT`].
    async fn event(&mut self) -> ServerEvent {
        let msg = recv_within(&mut self.ws, WAIT).await;
        unstamped(
            ServerEvent::try_from(&msg)
                .unwrap_or_else(|e| panic!("not a server event: {e}: {msg:?}")),
        )
    }

    /// The next event, which must be an `Error`; returns its text.
    async fn error(&mut self) -> String {
        self.refused().await.2
    }

    /// The next event, which must be an `Error`; returns its code.
    async fn code(&mut self) -> ErrorCode {
        self.refused().await.1
    }

    /// The next event, which must be an `Error`; returns its room and text.
    async fn error_about(&mut self) -> (Option<String>, String) {
        let (room, _, message) = self.refused().await;
        (room, message)
    }

    /// The next event, which must be an `Error`: its room, code and text.
    async fn refused(&mut self) -> (Option<String>, ErrorCode, String) {
        match self.event().await {
            ServerEvent::Error { room, code, message } => (room, code, message),
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

fn left(room: &str, username: &str) -> ServerEvent {
    ServerEvent::Left { room: room.into(), username: username.into(), timestamp: String::new() }
}

against! { [chat_server_first, chat_server, axum_chat]
#[tokio::test]
/// A client back from a dropped connection joins with the last `seq` it
/// saw and gets, after its `Joined`, exactly the messages it missed, with
/// their original `seq` and timestamp, then the live ones.
async fn a_join_with_since_replays_exactly_the_missed_messages_then_live_ones(name) {
    let server = Server::start(name, &[]).await;
    let mut alice = Chat::connect(&server).await;
    let mut bob = Chat::connect(&server).await;
    alice.join_ok("general", "alice").await;
    bob.join_ok("general", "bob").await;
    assert_eq!(alice.event().await, joined("general", "bob"));
    alice.say("general", "one").await;
    assert_eq!(said(alice.event().await).2, 1);
    assert_eq!(said(bob.event().await).2, 1);
    drop(bob); // the connection drops
    assert_eq!(alice.event().await, left("general", "bob"));

    let mut missed = Vec::new();
    for content in ["two", "three"] {
        alice.say("general", content).await;
        missed.push(alice.event().await);
    }
    let mut bob = Chat::connect(&server).await;
    bob.join_since("general", "bob", 1).await;
    assert_eq!(bob.event().await, joined_at("general", "bob", 3), "the replay ends at 3");
    for original in missed {
        assert_eq!(bob.event().await, original, "the very message, seq and timestamp");
    }
    alice.say("general", "four").await;
    assert_eq!(said(bob.event().await), ("alice".into(), "four".into(), 4));
    bob.expect_nothing_pending().await;
    server.stop().await;
}
}

against! { [chat_server, axum_chat]
#[tokio::test]
/// Messages said while a client joins with `since` are each either
/// replayed or delivered live: none twice, none skipped.
async fn messages_said_during_a_resume_arrive_once_each_in_order(name) {
    let server =
        Server::start(name, &["--rate-limit", "1000", "--rate-burst", "1000"]).await;
    let mut alice = Chat::connect(&server).await;
    let mut bob = Chat::connect(&server).await;
    alice.join_ok("general", "alice").await;
    const MESSAGES: u64 = 300;
    for i in 1..=MESSAGES {
        let say = ClientMessage::Message { room: "general".into(), content: i.to_string() };
        alice.ws.feed(say.to_message()).await.expect("feed");
    }
    alice.ws.flush().await.expect("flush");
    // The server is usually still working through alice's burst when bob's
    // join arrives; wherever it lands, bob gets every message once.
    bob.join_since("general", "bob", 0).await;
    // Its seq says where the join landed: the replay ends there.
    let event = bob.event().await;
    let landed = match &event {
        ServerEvent::Joined { seq, .. } => *seq,
        other => panic!("expected bob's Joined, got {other:?}"),
    };
    assert_eq!(event, joined_at("general", "bob", landed));
    assert!(landed <= MESSAGES, "the room's last seq at the join: {landed}");
    for seq in 1..=MESSAGES {
        assert_eq!(said(bob.event().await), ("alice".into(), seq.to_string(), seq));
    }
    bob.expect_nothing_pending().await;
    server.stop().await;
}
}

against! { [chat_server, axum_chat]
#[tokio::test]
/// When the history no longer reaches back to `since + 1`, a `Gap` naming
/// the lost numbers comes first, then what the history holds.
async fn a_resume_older_than_the_history_gets_a_gap_first(name) {
    let server = Server::start(name, &["--history", "2"]).await;
    let mut alice = Chat::connect(&server).await;
    alice.join_ok("general", "alice").await;
    for i in 1..=5 {
        alice.say("general", &format!("m{i}")).await;
        assert_eq!(said(alice.event().await).2, i);
    }
    let mut bob = Chat::connect(&server).await;
    bob.join_since("general", "bob", 1).await;
    assert_eq!(bob.event().await, joined_at("general", "bob", 5));
    let gap = ServerEvent::Gap { room: "general".into(), first: 2, last: 3 };
    assert_eq!(bob.event().await, gap);
    assert_eq!(said(bob.event().await), ("alice".into(), "m4".into(), 4));
    assert_eq!(said(bob.event().await), ("alice".into(), "m5".into(), 5));
    bob.expect_nothing_pending().await;
    server.stop().await;
}
}

against! { [chat_server, axum_chat]
#[tokio::test]
/// A `since` the room never reached, or one that is not a non-negative
/// integer, is an `Error` naming the room; the join does not happen and the
/// connection stays open.
async fn a_bad_since_is_an_error_with_the_room_and_the_join_does_not_happen(name) {
    let server = Server::start(name, &[]).await;
    let mut alice = Chat::connect(&server).await;
    alice.join_ok("general", "alice").await;
    alice.say("general", "hi").await;
    said(alice.event().await);

    let mut bob = Chat::connect(&server).await;
    bob.join_since("general", "bob", 2).await;
    let (room, code, error) = bob.refused().await;
    assert_eq!((room.as_deref(), code), (Some("general"), ErrorCode::SinceAhead));
    assert!(error.contains("ahead"), "{error}");
    for since in ["-1", "\"1\"", "1.5"] {
        let join =
            format!(r#"{{"type":"Join","room":"general","username":"bob","since":{since}}}"#);
        bob.send_raw(Message::text(join)).await;
        let (room, code, _) = bob.refused().await;
        assert_eq!((room.as_deref(), code), (Some("general"), ErrorCode::Invalid), "{since}");
    }
    alice.expect_nothing_pending().await; // no Joined was announced
    bob.join_since("general", "bob", 1).await; // still connected, and may join
    assert_eq!(bob.event().await, joined_at("general", "bob", 1));
    bob.expect_nothing_pending().await;
    server.stop().await;
}
}

against! { [chat_server_first, chat_server, axum_chat]
#[tokio::test]
/// `Members` lists a room's names, sorted, to a member, and is an `Error`
/// naming the room to anyone else.
async fn members_are_listed_to_members_and_refused_to_others(name) {
    let server = Server::start(name, &[]).await;
    let mut zoe = Chat::connect(&server).await;
    let mut adam = Chat::connect(&server).await;
    let mut carol = Chat::connect(&server).await;
    zoe.join_ok("general", "zoe").await;
    adam.join_ok("general", "adam").await;
    carol.join_ok("other", "carol").await;

    adam.send(ClientMessage::Members { room: "general".into() }).await;
    let usernames = vec!["adam".to_string(), "zoe".to_string()];
    assert_eq!(adam.event().await, ServerEvent::Members { room: "general".into(), usernames });
    carol.send(ClientMessage::Members { room: "general".into() }).await;
    let (room, code, error) = carol.refused().await;
    assert_eq!((room.as_deref(), code), (Some("general"), ErrorCode::NotMember));
    assert!(error.contains("not in that room"), "{error}");
    server.stop().await;
}
}

against! { [chat_server_first, chat_server, axum_chat]
#[tokio::test]
/// Members of a room see its joins, messages and leaves, with the sender's
/// name, and a client in another room sees none of it.
async fn rooms_are_separate_and_members_see_every_event(name) {
    let server = Server::start(name, &[]).await;
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
        assert_eq!(said(member.event().await), ("alice".into(), "hello".into(), 1));
    }
    carol.expect_nothing_pending().await;

    bob.send(ClientMessage::Leave { room: "general".into() }).await;
    assert_eq!(bob.event().await, left("general", "bob"), "the leaver sees its own Left");
    assert_eq!(alice.event().await, left("general", "bob"));
    alice.say("general", "anyone?").await;
    assert_eq!(said(alice.event().await).2, 2);
    bob.expect_nothing_pending().await;
    carol.expect_nothing_pending().await;

    // A disconnect is announced like a leave, to those who remain.
    let mut dave = Chat::connect(&server).await;
    dave.join("general", "dave").await;
    assert_eq!(alice.event().await, joined_at("general", "dave", 2));
    assert_eq!(
        dave.event().await,
        joined_at("general", "dave", 2),
        "one message, one event for all"
    );
    drop(alice);
    assert_eq!(dave.event().await, left("general", "alice"));
    dave.expect_nothing_pending().await;
    carol.expect_nothing_pending().await;
    server.stop().await;
}
}

against! { [chat_server_first, chat_server, axum_chat]
#[tokio::test]
/// `seq` starts at 1 and increases by exactly one per message in each room,
/// independently, and the sender receives its own messages.
async fn seq_counts_each_rooms_messages_and_the_sender_hears_itself(name) {
    let server = Server::start(name, &[]).await;
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
        assert_eq!(said(bob.event().await), ("alice".into(), format!("two-{}", s - 1), s));
    }
    server.stop().await;
}
}

against! { [chat_server_first, chat_server, axum_chat]
#[tokio::test]
/// Every malformed or refused command gets an `Error` event, and the
/// connection stays open and usable afterwards.
async fn every_rule_is_answered_with_an_error_event_and_the_connection_stays_open(name) {
    let server = Server::start(name, &[]).await;
    let mut c = Chat::connect(&server).await;

    // Each refusal has its code, for a program, and words, for a person.
    c.send_raw(Message::text("this is not json")).await;
    let (room, code, error) = c.refused().await;
    assert!(error.contains("invalid JSON"));
    assert_eq!((room, code), (None, ErrorCode::Invalid), "no room is concerned");
    c.send_raw(Message::text(r#"{"type":"Shout","room":"x"}"#)).await;
    assert_eq!(c.refused().await.1, ErrorCode::Invalid);
    c.send_raw(Message::binary(vec![1, 2, 3])).await;
    let (_, code, error) = c.refused().await;
    assert!(error.contains("binary") && code == ErrorCode::Invalid, "{code:?} {error}");

    c.say("general", "not a member yet").await;
    let (room, code, error) = c.refused().await;
    assert_eq!(room.as_deref(), Some("general"), "an Error names the room it is about");
    assert!(error.contains("not in that room"), "{error}");
    assert_eq!(code, ErrorCode::NotMember);
    c.join("general", "").await;
    assert!(c.error().await.contains("username"));
    c.join("general", &"x".repeat(33)).await;
    assert_eq!(c.code().await, ErrorCode::BadName);
    c.join("", "alice").await;
    let (_, code, error) = c.refused().await;
    assert!(error.contains("room") && code == ErrorCode::BadName, "{code:?} {error}");
    c.send(ClientMessage::Leave { room: "general".into() }).await;
    assert_eq!(c.code().await, ErrorCode::NotMember);

    // 32 characters (not bytes) is allowed.
    let name = "é".repeat(32);
    c.join_ok("general", &name).await;
    c.join("general", &name).await;
    assert_eq!(c.code().await, ErrorCode::AlreadyJoined);
    let mut twin = Chat::connect(&server).await;
    twin.join("general", &name).await;
    let (room, code, error) = twin.refused().await;
    assert!(error.contains("name is taken"), "names are unique in a room");
    assert_eq!((room.as_deref(), code), (Some("general"), ErrorCode::NameTaken));
    twin.join_ok("elsewhere", &name).await;

    c.say("general", "").await;
    assert_eq!(c.code().await, ErrorCode::BadContent);
    c.say("general", &"y".repeat(4097)).await;
    assert!(c.error().await.contains("content"));
    c.say("general", &"y".repeat(4096)).await;
    assert_eq!(said(c.event().await).2, 1, "4 KiB of content is allowed");

    c.expect_nothing_pending().await;
    server.stop().await;
}
}

against! { [chat_server, axum_chat]
#[tokio::test]
/// Past `--presence-limit` members, a join or a leave is announced only to
/// the member concerned; back within the limit, everyone hears again.
async fn past_the_presence_limit_only_the_member_concerned_hears(name) {
    let server = Server::start(name, &["--presence-limit", "2"]).await;
    let mut a = Chat::connect(&server).await;
    let mut b = Chat::connect(&server).await;
    let mut c = Chat::connect(&server).await;
    a.join_ok("r", "a").await;
    b.join_ok("r", "b").await; // 2 members: everyone hears
    assert_eq!(a.event().await, joined("r", "b"));
    c.join_ok("r", "c").await; // 3 members: only c
    c.send(ClientMessage::Leave { room: "r".into() }).await; // 3 before: only c
    assert_eq!(c.event().await, left("r", "c"));
    a.expect_nothing_pending().await;
    b.expect_nothing_pending().await;

    drop(b); // 2 members before: a hears
    assert_eq!(a.event().await, left("r", "b"));
    a.say("r", "still numbered for everyone").await;
    assert_eq!(said(a.event().await).2, 1);
    server.stop().await;
}
}

against! { [chat_server_first, chat_server, axum_chat]
#[tokio::test]
/// A client that sends its commands and its close frame in one go (a script
/// piping a file, say) still gets every answer before the server's close.
async fn answers_go_out_before_the_clients_close_is_read(name) {
    let server = Server::start(name, &[]).await;
    let mut c = Chat::connect(&server).await;
    let commands = [
        ClientMessage::Join {
            room: "general".into(),
            username: "alice".into(),
            since: None,
            epoch: None,
        },
        ClientMessage::Message { room: "general".into(), content: "hi".into() },
        ClientMessage::Ping,
        ClientMessage::Message { room: "rust".into(), content: "hi".into() },
        ClientMessage::Leave { room: "general".into() },
    ];
    for command in &commands {
        c.ws.feed(command.to_message()).await.expect("feed");
    }
    c.ws.feed(Message::Close(None)).await.expect("feed close");
    c.ws.flush().await.expect("flush");

    assert_eq!(c.event().await, joined("general", "alice"));
    assert_eq!(said(c.event().await), ("alice".into(), "hi".into(), 1));
    assert_eq!(c.event().await, ServerEvent::Pong);
    assert_eq!(c.error_about().await.0.as_deref(), Some("rust"));
    assert_eq!(c.event().await, left("general", "alice"));
    let rest = tokio::time::timeout(WAIT, c.ws.next()).await.expect("the close reply");
    assert!(matches!(rest, Some(Ok(Message::Close(_)))), "then the close reply: {rest:?}");
    server.stop().await;
}
}

against! { [chat_server_first, chat_server, axum_chat]
#[tokio::test]
/// A client's close frame that crosses messages on their way to it still
/// gets the server's close frame in answer, not a dropped connection: once
/// the client's close is read nothing more may be sent to it, and the
/// answer tungstenite queued must still go out. (Found when two chat_clients
/// quit at once, one of them reading a reset.) Each round, a speaker sends
/// a burst and a listener closes as the burst reaches it.
async fn a_close_that_crosses_messages_is_still_answered(name) {
    let server = Server::start(name, &[]).await;
    for round in 0..30 {
        let mut listener = Chat::connect(&server).await;
        // Names of their own: the last round's may not have left yet.
        let (listening, speaking) = (format!("listener{round}"), format!("speaker{round}"));
        // The last round's members may still be leaving: the room may
        // have messages (`seq`), and their `Left` may come first, here
        // and below.
        listener.join("r", &listening).await;
        while !is_joined(&listener.event().await, &listening) {}
        let mut speaker = Chat::connect(&server).await;
        speaker.join("r", &speaking).await;
        while !is_joined(&speaker.event().await, &speaking) {}
        while !is_joined(&listener.event().await, &speaking) {}
        for i in 0..15 {
            let say = ClientMessage::Message { room: "r".into(), content: format!("{i}") };
            speaker.ws.feed(say.to_message()).await.expect("feed");
        }
        speaker.ws.flush().await.expect("flush");
        while !matches!(listener.event().await, ServerEvent::Message { .. }) {}
        listener.send_raw(Message::Close(None)).await;
        let answer = tokio::time::timeout(WAIT, async {
            loop {
                match listener.ws.next().await {
                    Some(Ok(Message::Close(_))) => break Ok(()),
                    Some(Ok(_)) => {} // the rest of the burst, sent before
                    other => break Err(format!("{other:?}")),
                }
            }
        });
        let answer = answer.await.expect("an answer within WAIT");
        assert_eq!(answer, Ok(()), "{name}, round {round}: the close frame answered");
        speaker.ws.close(None).await.expect("the speaker closes");
        while speaker.ws.next().await.is_some() {}
    }
    server.stop().await;
}
}

/// Whether `event` says that `name` joined (any room, any `seq`).
fn is_joined(event: &ServerEvent, name: &str) -> bool {
    matches!(event, ServerEvent::Joined { username, .. } if username == name)
}

against! { [chat_server, axum_chat]
#[tokio::test]
/// A message over 64 KiB closes the connection with 1009 (message too big);
/// one of exactly 64 KiB is still read (and refused politely). From
/// chat_server, the end of the stream follows the close frame, not a
/// reset: it reads and drops the rest of the message instead of closing
/// its socket on it.
async fn a_message_over_64_kib_closes_with_1009(name) {
    let server = Server::start(name, &[]).await;
    let mut c = Chat::connect(&server).await;
    let just_fits =
        format!(r#"{{"type":"Message","room":"r","content":"{}"}}"#, "a".repeat(65_536 - 42));
    assert_eq!(just_fits.len(), 65_536);
    c.send_raw(Message::text(just_fits)).await;
    assert!(c.error().await.contains("content"), "64 KiB exactly is read, then refused");

    c.send_raw(Message::text("b".repeat(65_537))).await;
    assert_eq!(expect_close(&mut c.ws).await, CloseCode::Size);
    if name != "axum_chat" {
        // axum hands out no socket to shut and drain (chapter 12.3): its
        // client may read a reset here.
        expect_clean_end(&mut c.ws).await;
    }
    drop(c); // the server, still draining, sees our end too

    // The server is unharmed.
    let mut next = Chat::connect(&server).await;
    next.expect_nothing_pending().await;
    server.stop().await;
}
}

against! { [chat_server, axum_chat]
#[tokio::test]
/// Frames that break the WebSocket protocol close the connection with the
/// matching code: 1007 for text that is not UTF-8, 1002 for an unmasked
/// client frame.
async fn protocol_violations_close_with_1007_and_1002(name) {
    let server = Server::start(name, &[]).await;

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
}

against! { [chat_server, axum_chat]
#[tokio::test]
/// A client that stops answering pings is dropped after the timeout, and
/// its rooms hear that it left; a client that answers stays.
async fn a_client_that_stops_answering_pings_is_dropped(name) {
    let mut server =
        Server::start(name, &["--ping-ms", "100", "--pong-timeout-ms", "300"]).await;
    let mut watcher = Chat::connect(&server).await;
    watcher.join_ok("general", "watcher").await;

    // tungstenite answers pings only while the stream is read: this client
    // joins and then never reads again, like a vanished machine.
    let mut silent = Chat::connect(&server).await;
    // The clock starts before the client's last frame: the server reads that
    // frame later than this, so its silence starts later too. (Started when
    // the watcher hears the Joined, it could start 200 ms late on a busy
    // machine, and a correct server would fail the test.)
    let started = Instant::now();
    silent.join("general", "silent").await;
    assert_eq!(watcher.event().await, joined("general", "silent"));

    assert_eq!(watcher.event().await, left("general", "silent"));
    let took = started.elapsed();
    // Allowed silence: a ping interval plus the pong timeout.
    assert!(took >= Duration::from_millis(400), "not dropped before the timeout ({took:?})");
    // The server said why, with 1011 (its close frame to a silent peer is
    // a courtesy nobody reads; its log is what an operator sees).
    let (line, _) = server.program.wait_for_log(|l| l.contains(": closing code=1011")).await;
    assert!(line.ends_with(" reason=ping timeout"), "{line}");

    // The watcher kept reading (and so answering pings) all along: still here.
    watcher.expect_nothing_pending().await;
    drop(silent);
    server.stop().await;
}
}

/// Lets a test send as fast as it likes: the rate limit has its own test.
const NO_RATE_LIMIT: [&str; 4] = ["--rate-limit", "1000000", "--rate-burst", "1000000"];

/// The readers' side of [`say_paced`]: each reading member sends the `seq`
/// of every message it receives.
type Receipts = tokio::sync::mpsc::UnboundedReceiver<u64>;

/// Says `count` messages of `content` in `room`, never more than `window`
/// ahead of the slowest reader: message `n` goes out only once the sender
/// itself and each of `readers` reading members (who report through
/// `receipts`) have received message `n - window`. The sender must be the
/// only one speaking in `room`. Returns every event the sender read.
///
/// This is what "members that read" means on a busy two-core machine: the
/// test's own reader tasks may be scheduled late, and a sender that ran
/// ahead of them would make them, honestly, too slow. Paced, their outboxes
/// hold a few messages, and a room that waited for anyone (a stalled
/// member, say) would stop the sender, failing the test on a deadline.
async fn say_paced(
    sender: &mut Chat,
    room: &str,
    content: &str,
    (count, window): (u64, u64),
    receipts: &mut Receipts,
    readers: usize,
) -> Vec<ServerEvent> {
    let mut events = Vec::new();
    let mut own = 0; // the sender's own copies received
    let mut received = vec![0_usize; count as usize + 1]; // seq -> readers that have it
    let mut sent = 0;
    while own < count || received[count as usize] < readers {
        let caught_up = |seq: u64| seq == 0 || received[seq as usize] == readers;
        if sent < count && own + window > sent && caught_up((sent + 1).saturating_sub(window)) {
            sender.say(room, content).await;
            sent += 1;
            continue;
        }
        tokio::select! {
            event = sender.event(), if own < sent => {
                if matches!(event, ServerEvent::Message { .. }) {
                    own += 1;
                }
                events.push(event);
            }
            // `None` once every reader is done; the sender may still be
            // reading its own last copies.
            Some(seq) = receipts.recv() => received[seq as usize] += 1,
            else => panic!("the readers stopped before they had every message"),
        }
    }
    events
}

against! { [chat_server, axum_chat]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
/// A member that stops reading really backs up into the server (small
/// socket buffers, so the kernels hold at most some 200 KB) and is evicted once
/// its outbox is over its byte budget, with 1008 and a `Left` to the room,
/// while the sender and a member that reads receive every message, in order.
async fn a_member_that_stops_reading_is_evicted_by_the_byte_budget(name) {
    // 256 KiB of budget, and a write deadline long enough that only the
    // budget can be what evicts.
    let mut args = vec!["--outbox-bytes", "262144", "--send-timeout-ms", "60000"];
    args.extend(NO_RATE_LIMIT);
    let mut server = Server::start(name, &args).await;
    let mut sender = Chat::connect(&server).await;
    let mut fast = Chat::connect(&server).await;
    let mut slow = Chat { ws: connect_with_small_buffers(&server.url).await };
    sender.join_ok("general", "sender").await;
    fast.join_ok("general", "fast").await;
    slow.join("general", "slow").await;
    assert_eq!(sender.event().await, joined("general", "fast"));
    assert_eq!(sender.event().await, joined("general", "slow"));
    assert_eq!(fast.event().await, joined("general", "slow"));

    // The slow member never reads again. 1,000 messages of 2 KiB (2 MB) are
    // far more than its budget plus every buffer on the way can hold.
    const COUNT: u64 = 1_000;
    let slow_addr = local_addr(&slow.ws);
    let (receipt, mut receipts) = tokio::sync::mpsc::unbounded_channel();
    let fast_reads = tokio::spawn(async move {
        let mut seqs = Vec::new();
        let mut slow_left = false;
        while seqs.len() < COUNT as usize || !slow_left {
            match fast.event().await {
                ServerEvent::Message { seq, .. } => {
                    seqs.push(seq);
                    let _ = receipt.send(seq);
                }
                event if event == left("general", "slow") => slow_left = true,
                other => panic!("unexpected {other:?}"),
            }
        }
        (seqs, fast)
    });
    let content = "z".repeat(2048);
    let events = say_paced(&mut sender, "general", &content, (COUNT, 32), &mut receipts, 1).await;
    assert!(events.contains(&left("general", "slow")), "the sender heard the eviction");

    let (seqs, mut fast) = fast_reads.await.expect("the fast member read everything");
    assert_eq!(seqs, (1..=COUNT).collect::<Vec<_>>(), "every message, in order");
    let closing = |l: &str| logged_for(l, &slow_addr, "closing code=1008");
    let (line, _) = server.program.wait_for_log(closing).await;
    assert!(line.ends_with(" reason=too slow: outbox over budget"), "{line}");
    fast.expect_nothing_pending().await;

    // When the slow member reads at last, it finds what the kernel held and
    // then the end of the connection, not a connection that hangs.
    let ended = tokio::time::timeout(WAIT, async {
        while let Some(Ok(msg)) = slow.ws.next().await {
            if msg.is_close() {
                break;
            }
        }
    });
    ended.await.expect("the evicted member's connection ends");
    server.stop().await;
}
}

/// Hundreds of members joining one room at once, all reading, are not
/// evicted: every member sees its own `Joined` and every later one, and all
/// see them in one order.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_join_storm_evicts_nobody_who_reads() {
    const CLIENTS: usize = 500;
    // Every member connects from 127.0.0.1: lift the per-address limit.
    let server = Server::start("chat_server", &["--max-per-ip", "1000"]).await;
    // The first member sees every join that follows it.
    let mut first = Chat::connect(&server).await;
    first.join_ok("crowd", "first").await;

    // Connect everyone first, each with its own task that, once everyone
    // is connected, joins and then reads promptly until the closing message.
    let start = std::sync::Arc::new(tokio::sync::Barrier::new(CLIENTS + 1));
    let mut readers = Vec::new();
    for i in 0..CLIENTS {
        let mut c = Chat::connect(&server).await;
        let start = start.clone();
        readers.push(tokio::spawn(async move {
            start.wait().await;
            c.join("crowd", &format!("user{i}")).await;
            let mut joined_seen = Vec::new();
            loop {
                match c.event().await {
                    ServerEvent::Joined { username, .. } => joined_seen.push(username),
                    ServerEvent::Message { content, .. } if content == "all here" => break,
                    other => panic!("unexpected {other:?}"),
                }
            }
            (joined_seen, c)
        }));
    }
    start.wait().await; // all join at once

    let mut order = Vec::new();
    while order.len() < CLIENTS {
        match first.event().await {
            ServerEvent::Joined { username, .. } => order.push(username),
            other => panic!("the first member was told {other:?}"),
        }
    }
    first.say("crowd", "all here").await;
    let mut members = Vec::new();
    for reader in readers {
        let (seen, c) = reader.await.expect("a member read until the end, never evicted");
        let own = order.iter().position(|n| *n == seen[0]).expect("its own Joined first");
        assert_eq!(seen, order[own..], "a member sees every later join, in the one order");
        members.push(c);
    }
    server.stop().await;
}

against! { [chat_server, axum_chat]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
/// A client that floods is refused over its rate (an `Error` naming the
/// room, and nothing delivered), then closed with 1008, while the members
/// who read keep every message that was accepted, in order, and stay.
async fn a_flooder_is_rate_limited_and_readers_keep_every_message(name) {
    let server = Server::start(name, &["--rate-limit", "5", "--rate-burst", "10"]).await;
    let mut reader = Chat::connect(&server).await;
    let mut flooder = Chat::connect(&server).await;
    reader.join_ok("general", "reader").await;
    flooder.join("general", "flooder").await; // one token of ten
    assert_eq!(reader.event().await, joined("general", "flooder"));

    for i in 0..200 {
        flooder.say("general", &format!("flood {i}")).await;
    }
    // The flooder hears its accepted messages, then refusals, then 1008.
    let mut accepted = 0;
    let mut refusals = 0;
    let code = loop {
        match recv_or_close(&mut flooder.ws).await {
            Ok(msg) => match ServerEvent::try_from(&msg).expect("a server event") {
                ServerEvent::Joined { .. } => {}
                ServerEvent::Message { .. } => accepted += 1,
                ServerEvent::Error { room, code, message } => {
                    assert_eq!((room.as_deref(), code), (Some("general"), ErrorCode::RateLimited));
                    assert!(message.starts_with("rate limit"), "{message}");
                    refusals += 1;
                }
                other => panic!("unexpected {other:?}"),
            },
            Err(code) => break code,
        }
    };
    assert_eq!(code, Some(CloseCode::Policy));
    assert!((9..20).contains(&accepted), "about a burst accepted, not {accepted}");
    assert!(refusals >= 5, "refused before being cut off ({refusals})");

    // The reader got exactly the accepted messages, numbered 1.., and then
    // the flooder's departure.
    for seq in 1..=accepted {
        let (username, content, got) = said(reader.event().await);
        assert_eq!((username.as_str(), got), ("flooder", seq));
        assert_eq!(content, format!("flood {}", seq - 1));
    }
    assert_eq!(reader.event().await, left("general", "flooder"));
    reader.say("general", "still here").await;
    assert_eq!(said(reader.event().await).2, accepted + 1);
    server.stop().await;
}
}

/// The next text message, or the close code once the connection closes.
async fn recv_or_close(ws: &mut WsClient) -> Result<Message, Option<CloseCode>> {
    let next = tokio::time::timeout(WAIT, async {
        loop {
            match ws.next().await {
                Some(Ok(msg @ Message::Text(_))) => return Ok(msg),
                Some(Ok(Message::Close(frame))) => return Err(frame.map(|f| f.code)),
                Some(Ok(_)) => continue,
                other => panic!("expected a message or a close frame, got {other:?}"),
            }
        }
    });
    next.await.expect("a message or a close frame in time")
}

against! { [chat_server, axum_chat]
#[tokio::test]
/// A burst of 500 messages sent back to back reaches each of 100 connected
/// clients, every message, in order.
async fn a_burst_of_500_messages_reaches_all_100_clients(name) {
    let server = Server::start(name, &NO_RATE_LIMIT).await;
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
                        let (_, content, seq) = said(event);
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

against! { [chat_server_first, chat_server, axum_chat]
#[tokio::test]
/// Ctrl-C sends close code 1001 (going away) to every client, and the
/// server exits 0.
async fn ctrl_c_closes_every_client_with_1001(name) {
    stopping_closes_every_client_with_1001(name, "INT").await;
}
}

against! { [chat_server_first, chat_server, axum_chat]
#[tokio::test]
/// SIGTERM (systemd, Docker, Kubernetes) does exactly what Ctrl-C does.
async fn sigterm_closes_every_client_with_1001(name) {
    stopping_closes_every_client_with_1001(name, "TERM").await;
}
}

/// Chat server `name`, stopped with `signal` while two clients are in rooms.
async fn stopping_closes_every_client_with_1001(name: &str, signal: &str) {
    let server = Server::start(name, &[]).await;
    let mut a = Chat::connect(&server).await;
    let mut b = Chat::connect(&server).await;
    a.join_ok("general", "a").await;
    b.join_ok("other", "b").await;
    server.program.signal(signal);
    assert_eq!(expect_close(&mut a.ws).await, CloseCode::Away);
    assert_eq!(expect_close(&mut b.ws).await, CloseCode::Away);
    // The close handshake completes: the server closes the TCP connection.
    assert!(tokio::time::timeout(WAIT, a.ws.next()).await.expect("stream ends").is_none());
    let mut program = server.program;
    assert_eq!(program.exit_code().await, 0);
}

/// With 1,000 members in one room, every message reaches every member that
/// reads, in order, while five members that never read (small socket
/// buffers, so they really back up into the server) are evicted by the byte
/// budget, and everyone hears that they left. (Joining all at once is
/// `a_join_storm_evicts_nobody_who_reads`; here the budget is small, 64 KiB,
/// so that the stalled members overflow it quickly, and a storm of 1,000
/// `Joined` events, some 45 KB, would come close to it before anyone had
/// been scheduled to write.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_thousand_members_with_five_stalled() {
    const CLIENTS: usize = 1_000;
    const STALLED: usize = 5;
    const MESSAGES: u64 = 100;
    // A 64 KiB budget: 100 messages of 4,000 bytes (400 KB) overflow it,
    // plus the ~200 KB the kernels hold (measured with `ss`: a send buffer
    // of 189 KiB for a peer with 536-byte segments), for every stalled
    // member; a member that reads never has more than a few queued.
    // Heartbeats and write deadlines long enough that only the budget can
    // be what drops a stalled member (each has its own test).
    let mut args = vec!["--outbox-bytes", "65536", "--send-timeout-ms", "60000"];
    args.extend(["--ping-ms", "60000"]);
    args.extend(NO_RATE_LIMIT);
    // Every member connects from 127.0.0.1: lift the per-address limit.
    args.extend(["--max-per-ip", "1000"]);
    let server = Server::start("chat_server", &args).await;

    // The readers join 50 at a time, then each reads promptly in its own
    // task, collecting messages and departures. 1,000 members with the
    // speaker: up to the presence limit, so that everyone hears every
    // departure.
    let url = server.url.clone();
    let joined_readers: Vec<Chat> = futures_util::stream::iter(0..CLIENTS - STALLED - 1)
        .map(|i| {
            let url = url.clone();
            async move {
                let name = format!("user{i}");
                let mut c = Chat { ws: connect(&url).await };
                c.join("general", &name).await;
                while c.event().await != joined("general", &name) {}
                c
            }
        })
        .buffer_unordered(50)
        .collect()
        .await;
    let (receipt, mut receipts) = tokio::sync::mpsc::unbounded_channel();
    let readers: Vec<_> = joined_readers
        .into_iter()
        .map(|mut c| {
            let receipt = receipt.clone();
            tokio::spawn(async move {
                let (mut seqs, mut left) = (Vec::new(), Vec::new());
                while seqs.len() < MESSAGES as usize || left.len() < STALLED {
                    match c.event().await {
                        ServerEvent::Joined { .. } => {} // later joiners
                        ServerEvent::Message { seq, .. } => {
                            seqs.push(seq);
                            let _ = receipt.send(seq);
                        }
                        ServerEvent::Left { username, .. } => left.push(username),
                        other => panic!("unexpected {other:?}"),
                    }
                }
                (seqs, left, c) // keep the connection open until the server stops
            })
        })
        .collect();
    // The stalled members join last (so that their backlog is the messages
    // alone), and never read again.
    let mut stalled = Vec::new();
    let mut stalled_names = Vec::new();
    for i in 0..STALLED {
        let name = format!("stalled{i}");
        let mut c = Chat { ws: connect_with_small_buffers(&server.url).await };
        c.join("general", &name).await;
        stalled.push(c);
        stalled_names.push(name);
    }
    assert_eq!(stalled.len(), STALLED);
    let mut speaker = Chat::connect(&server).await;
    speaker.join_ok("general", "speaker").await;
    // The speaker's first message comes back after the stalled members'
    // Joined, which were queued for every reader before it.

    let (content, pace) = ("m".repeat(4_000), (MESSAGES, 4));
    let count = readers.len();
    let events = say_paced(&mut speaker, "general", &content, pace, &mut receipts, count).await;
    let evicted = events.iter().filter(|e| matches!(e, ServerEvent::Left { .. })).count();
    assert!(evicted <= STALLED, "only stalled members are evicted");

    let all =
        tokio::time::timeout(Duration::from_secs(60), futures_util::future::join_all(readers))
            .await
            .expect("every reader got every message within 60 s");
    let expected: Vec<u64> = (1..=MESSAGES).collect();
    let mut members = Vec::new();
    for reader in all {
        let (seqs, mut left, c) = reader.expect("reader finished, never evicted");
        assert_eq!(seqs, expected);
        left.sort();
        stalled_names.sort();
        assert_eq!(left, stalled_names, "exactly the stalled members were evicted");
        members.push(c);
    }
    assert_eq!(members.len(), CLIENTS - STALLED - 1);
    server.stop().await;
    drop((members, stalled));
}
