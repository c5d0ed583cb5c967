//! The terminal chat client (chapter 6.1) driven through its stdin, against
//! the real chat server.

mod common;

use std::time::Duration;

use common::stub::{StubServer, confirm_join, expect_join, message, next_frame, refusal, tell};
use common::{Cut, Program, Proxy, Server, TempFile, WAIT};
use futures_util::{SinkExt, StreamExt};
use tokio::io::AsyncWriteExt;
use tokio::time::timeout;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use websocket_tutorial::client::WsClient;
use websocket_tutorial::protocol::{ClientMessage, ErrorCode, MAX_CONTENT_BYTES, ServerEvent};

/// The terminal clients of chapter 6.1: the first version, and what it
/// grows into. Each test that loops over them holds for both.
const CHAT_CLIENTS: [&str; 2] = ["chat_client_first", "chat_client"];

/// Starts a chat client for `username` and waits until it has joined
/// `general` (its own `joined` line).
async fn chat_client(server: &Server, username: &str) -> Program {
    start_joined("chat_client", server, username).await
}

/// Starts the client `name` for `username`, and waits until it has joined
/// `general`.
async fn start_joined(name: &str, server: &Server, username: &str) -> Program {
    let mut client = Program::start(name, &[&server.url, username]);
    client.wait_for(|l| l.ends_with(&format!("#general * {username} joined"))).await;
    client
}

/// The first version (chapter 6.1 opens with it) in a chat with the full
/// client: each sees the other's lines, with time, room and name; `/quit`
/// closes it with 0 and the others see it leave; Ctrl-C closes it too; and
/// the server's Ctrl-C (1001) ends it with 0, without reconnecting.
#[tokio::test]
async fn the_first_version_chats_and_closes_cleanly() {
    let server = Server::start("chat_server", &[]).await;
    let mut alice = start_joined("chat_client_first", &server, "alice").await;
    let mut bob = chat_client(&server, "bob").await;
    alice.wait_for(|l| l.ends_with("#general * bob joined")).await;
    alice.write_stdin("hello bob\n").await;
    let (line, _) = bob.wait_for(|l| l.contains("<alice>")).await;
    assert!(line.ends_with("#general <alice> hello bob"), "{line}");
    bob.write_stdin("hi alice\n").await;
    let (line, _) = alice.wait_for(|l| l.contains("<bob>")).await;
    assert!(line.ends_with("#general <bob> hi alice"), "{line}");
    assert!(line.starts_with('[') && line.as_bytes()[9] == b']', "time shown: {line}");
    alice.write_stdin("/quit\n").await;
    assert_eq!(alice.exit_code().await, 0);
    bob.wait_for(|l| l.ends_with("#general * alice left")).await;

    let mut carol = start_joined("chat_client_first", &server, "carol").await;
    carol.interrupt();
    assert_eq!(carol.exit_code().await, 0, "Ctrl-C");
    bob.wait_for(|l| l.ends_with("#general * carol left")).await;

    let mut dave = start_joined("chat_client_first", &server, "dave").await;
    server.stop().await;
    dave.wait_for(|l| l == "server closed the connection: 1001 (server shutting down)").await;
    assert_eq!(dave.exit_code().await, 0);
    bob.interrupt();
    assert_eq!(bob.exit_code().await, 0);
}

/// Two terminal clients chat in `general`: each sees the other join and
/// speak, with time, room and name; `/join` switches rooms, so `general` no
/// longer hears, and `/join` of a room already joined switches back; `/leave`
/// and `/quit` work, and the client exits 0.
#[tokio::test]
async fn two_terminal_clients_chat_and_switch_rooms() {
    let server = Server::start("chat_server", &[]).await;
    let mut alice = chat_client(&server, "alice").await;
    let mut bob = chat_client(&server, "bob").await;
    alice.wait_for(|l| l.ends_with("#general * bob joined")).await;

    alice.write_stdin("hello bob\n").await;
    let (line, _) = bob.wait_for(|l| l.contains("<alice>")).await;
    assert!(line.ends_with("#general <alice> hello bob"), "{line}");
    // `[HH:MM:SS] ` in front.
    assert!(line.starts_with('[') && line.as_bytes()[9] == b']', "time shown: {line}");

    // Alice moves to another room: her next line goes there, not to bob.
    alice.write_stdin("/join side\n").await;
    alice.wait_for(|l| l.ends_with("#side * alice joined")).await;
    alice.write_stdin("only for side\n").await;
    alice.wait_for(|l| l.ends_with("#side <alice> only for side")).await;
    bob.write_stdin("still here?\n").await;
    let (line, skipped) = bob.wait_for(|l| l.contains("<bob>")).await;
    assert!(line.ends_with("#general <bob> still here?"));
    assert!(skipped.iter().all(|l| !l.contains("only for side")), "bob heard #side: {skipped:?}");

    // `/join` for a room she is in already switches back to it.
    alice.write_stdin("/join general\nback in general\n").await;
    let (line, _) = bob.wait_for(|l| l.contains("<alice>")).await;
    assert!(line.ends_with("#general <alice> back in general"), "{line}");

    alice.write_stdin("/leave general\n").await;
    bob.wait_for(|l| l.ends_with("#general * alice left")).await;
    alice.write_stdin("/quit\n").await;
    assert_eq!(alice.exit_code().await, 0);

    // End of input closes cleanly too.
    bob.close_stdin();
    assert_eq!(bob.exit_code().await, 0);
    server.stop().await;
}

/// Refused commands come back as readable errors, and the client goes on.
/// The server's Ctrl-C reaches the client as a 1001 close: it says so and
/// tries to reconnect, and Ctrl-C while it waits ends it with 0.
#[tokio::test]
async fn server_errors_are_shown_and_the_client_continues() {
    let server = Server::start("chat_server", &[]).await;
    let url = server.url.clone();
    let mut alice = chat_client(&server, "alice").await;
    alice.write_stdin("/leave nowhere\n").await;
    alice.wait_for(|l| l.starts_with("! #nowhere: cannot leave")).await;
    alice.write_stdin("still works\n").await;
    alice.wait_for(|l| l.ends_with("#general <alice> still works")).await;
    server.stop().await;
    alice.wait_for(|l| l.starts_with("server closed the connection: 1001")).await;
    let reconnecting = format!("reconnecting to {url} in ");
    alice.wait_for_log(|l| common::log_message(l).starts_with(&reconnecting)).await;
    alice.interrupt();
    assert_eq!(alice.exit_code().await, 0);
}

/// Without a server the client says so in one line and exits 1.
#[tokio::test]
async fn no_server_is_a_clear_error() {
    let nothing = common::refused_port();
    let url = format!("ws://127.0.0.1:{}", nothing.port);
    for name in CHAT_CLIENTS {
        let mut client = Program::start(name, &[&url, "alice"]);
        assert_eq!(client.exit_code().await, 1, "{name}");
        let stderr = client.stderr_text().await;
        assert!(stderr.starts_with("error: cannot connect to"), "{name}: {stderr}");
    }
}

/// Lines piped in all at once work: the client reads the next line only
/// once the server has answered a join, so the first line goes to `general`
/// and a `/join` applies to the very next line.
#[tokio::test]
async fn piped_input_is_said_in_the_right_rooms() {
    let server = Server::start("chat_server", &[]).await;
    let mut bob = chat_client(&server, "bob").await;
    let mut carol = chat_client(&server, "carol").await;
    carol.write_stdin("/join side\n").await;
    carol.wait_for(|l| l.ends_with("#side * carol joined")).await;

    let mut alice = Program::start("chat_client", &[&server.url, "alice"]);
    alice.write_stdin("first line\n/join side\nsecond line\n/quit\n").await;
    assert_eq!(alice.exit_code().await, 0);
    let lines = alice.remaining_lines().await;
    assert!(!lines.iter().any(|l| l.starts_with("! ")), "no complaint: {lines:#?}");

    let (line, _) = bob.wait_for(|l| l.contains("<alice>")).await;
    assert!(line.ends_with("#general <alice> first line"), "{line}");
    let (line, _) = carol.wait_for(|l| l.contains("<alice>")).await;
    assert!(line.ends_with("#general <alice> first line"), "{line}");
    let (line, _) = carol.wait_for(|l| l.contains("<alice>")).await;
    assert!(line.ends_with("#side <alice> second line"), "{line}");
    server.stop().await;
}

/// What arrives between the end of input and the close is shown:
/// `printf 'hi\n' | chat_client URL alice` prints alice's join and her own
/// message before it exits 0.
#[tokio::test]
async fn piped_input_shows_the_answers_before_closing() {
    let server = Server::start("chat_server", &[]).await;
    for name in CHAT_CLIENTS {
        let mut alice = Program::start(name, &[&server.url, "alice"]);
        alice.write_stdin("hi\n").await;
        alice.close_stdin();
        assert_eq!(alice.exit_code().await, 0, "{name}");
        let lines = alice.remaining_lines().await;
        assert_eq!(lines.len(), 2, "{name}: {lines:#?}");
        assert!(lines[0].ends_with("#general * alice joined"), "{name}: {lines:#?}");
        assert!(lines[1].ends_with("#general <alice> hi"), "{name}: {lines:#?}");
    }
    server.stop().await;
}

/// A server close that says something failed ends the client with exit
/// code 1, the same rule as full_client's, and without reconnecting: here a
/// flood of piped lines is over the server's rate limit, and the server
/// closes with 1008.
#[tokio::test]
async fn a_close_for_a_broken_rule_exits_1() {
    let server = Server::start("chat_server", &["--rate-limit", "1", "--rate-burst", "1"]).await;
    for name in CHAT_CLIENTS {
        let mut alice = Program::start(name, &[&server.url, "alice"]);
        alice.write_stdin(&"flood\n".repeat(50)).await;
        let (line, _) = alice.wait_for(|l| l.starts_with("server closed the connection: ")).await;
        assert!(line.starts_with("server closed the connection: 1008 ("), "{name}: {line}");
        assert_eq!(alice.exit_code().await, 1, "{name}");
        // The server said stop: the client does not come back.
        let stderr = alice.stderr_text().await;
        assert!(!stderr.contains("reconnecting"), "{name}: {stderr}");
    }
    server.stop().await;
}

/// A line that is not UTF-8 is reported on stderr, with its number, and the
/// lines after it are still said.
#[tokio::test]
async fn a_line_that_is_not_utf8_is_reported_and_skipped() {
    let server = Server::start("chat_server", &[]).await;
    for name in CHAT_CLIENTS {
        let mut alice = start_joined(name, &server, "alice").await;
        let stdin = alice.stdin.as_mut().expect("stdin open");
        stdin.write_all(b"ok\n\xff\xfe\nafter\n").await.expect("write stdin");
        alice.close_stdin();
        assert_eq!(alice.exit_code().await, 0, "{name}");
        let lines = alice.remaining_lines().await;
        let said: Vec<_> = lines.iter().filter(|l| l.contains("<alice>")).collect();
        assert_eq!(said.len(), 2, "{name}: {lines:#?}");
        assert!(said[0].ends_with("#general <alice> ok") && said[1].ends_with("<alice> after"));
        let stderr = alice.stderr_text().await;
        assert!(stderr.contains("line 2 is not UTF-8"), "{name}: {stderr}");
    }
    server.stop().await;
}

/// A refused `/join` leaves the current room as it was: the next line is
/// still said in `general`, not lost to the refused room.
#[tokio::test]
async fn a_refused_join_does_not_change_the_current_room() {
    let server = Server::start("chat_server", &[]).await;
    // Another "alice" holds that name in `side` (and leaves `general` for
    // ours), so our alice cannot join `side`.
    let mut other = chat_client(&server, "alice").await;
    other.write_stdin("/join side\n/leave general\n").await;
    other.wait_for(|l| l.ends_with("#general * alice left")).await;

    let mut alice = chat_client(&server, "alice").await;
    alice.write_stdin("/join side\n").await;
    alice.wait_for(|l| l == "! #side: cannot join \"side\": that name is taken in that room").await;
    alice.write_stdin("still in general\n").await;
    let (line, skipped) = alice.wait_for(|l| l.contains("<alice>")).await;
    assert!(line.ends_with("#general <alice> still in general"), "{line}");
    assert!(skipped.iter().all(|l| !l.starts_with('!')), "no error: {skipped:#?}");
    server.stop().await;
}

/// The client says how to use it at start, on stderr, answers `/help` on
/// stdout, and refuses a line longer than the server accepts instead of sending
/// it; the connection goes on.
#[tokio::test]
async fn help_and_a_line_refused_before_it_is_sent() {
    let server = Server::start("chat_server", &[]).await;
    let mut alice = chat_client(&server, "alice").await;
    alice.write_stdin("/help\n").await;
    alice.write_stdin(&format!("{}\n", "x".repeat(MAX_CONTENT_BYTES + 1))).await;
    alice.write_stdin(&format!("{}\n", "y".repeat(MAX_CONTENT_BYTES))).await;
    let (line, help) = alice.wait_for(|l| l.contains("<alice>")).await;
    assert!(line.ends_with(&format!("<alice> {}", "y".repeat(MAX_CONTENT_BYTES))), "{line}");
    // `/help` answers on stdout, where the user reads the chat (and a
    // `chat_client 2>/dev/null` still gets it); nothing else arrived.
    assert_eq!(help.first().map(String::as_str), Some("commands:"), "{help:#?}");
    for command in ["/join ROOM", "/leave ROOM", "/quit"] {
        assert!(help.iter().any(|l| l.trim_start().starts_with(command)), "{command}: {help:#?}");
    }
    assert!(help.iter().all(|l| !l.contains("<alice>")), "{help:#?}");
    alice.close_stdin();
    assert_eq!(alice.exit_code().await, 0);

    let stderr = alice.stderr_text().await;
    assert!(stderr.contains("/help lists the commands"), "a hint at start: {stderr}");
    assert!(!stderr.contains("/leave ROOM"), "/help's answer is not in the log: {stderr}");
    let too_long = format!("not sent: {} bytes", MAX_CONTENT_BYTES + 1);
    assert!(stderr.contains(&too_long), "{stderr}");
    server.stop().await;
}

/// A room may be named as the client shows it, with its `#`: `/join #side`
/// joins `side` (not a room called `#side`), and `/leave #side` leaves it.
#[tokio::test]
async fn a_room_may_be_named_with_its_hash() {
    let server = Server::start("chat_server", &[]).await;
    let mut alice = chat_client(&server, "alice").await;
    alice.write_stdin("/join #side\nin side\n").await;
    let (line, _) = alice.wait_for(|l| l.contains("<alice>")).await;
    assert!(line.contains("] #side <alice> in side"), "{line}");
    alice.write_stdin("/leave #side\n").await;
    let (line, _) = alice.wait_for(|l| l.contains("alice left")).await;
    assert!(line.contains("] #side * alice left"), "{line}");
    alice.write_stdin("/join #general\nback\n").await;
    let (line, _) = alice.wait_for(|l| l.contains("<alice>")).await;
    assert!(line.contains("] #general <alice> back"), "{line}");
    alice.write_stdin("/quit\n").await;
    assert_eq!(alice.exit_code().await, 0);
    server.stop().await;
}

/// Connections that fail for a reason the user can fix get a hint: a 401
/// (the server takes tokens: `--token`), and `ws://` to a server that
/// speaks TLS (use `wss://`).
#[tokio::test]
async fn a_401_and_ws_to_a_tls_port_get_a_hint() {
    let file = TempFile::new("s3cret\n");
    let server = Server::start("chat_server", &["--auth-secret-file", file.arg()]).await;
    let mut client = Program::start("chat_client", &[&server.url, "alice"]);
    assert_eq!(client.exit_code().await, 1);
    let stderr = client.stderr_text().await;
    assert!(stderr.contains("401") && stderr.contains("--token"), "{stderr}");
    server.stop().await;

    let certificates = common::Certificates::new();
    let server = Server::start("chat_server", &certificates.args()).await;
    let plain = server.url.replace("wss://", "ws://");
    let mut client = Program::start("chat_client", &[&plain, "alice"]);
    assert_eq!(client.exit_code().await, 1);
    let stderr = client.stderr_text().await;
    assert!(stderr.contains(&format!("cannot connect to {plain}")), "{stderr}");
    assert!(stderr.contains("wss://"), "{stderr}");
    server.stop().await;
}

// ---- reconnecting without losing a message ------------------------------

/// A quick backoff, so that a test does not wait half a second per attempt;
/// retrying forever, so that how long the test keeps the client out is not
/// a limit.
const QUICK: [&str; 6] = ["--base-ms", "20", "--cap-ms", "200", "--max-attempts", "0"];

/// Starts a chat client for `username` on `servers` (one URL, or several
/// separated by commas) with [`QUICK`] reconnects, and waits until it has
/// joined `general`.
async fn quick_chat_client(servers: &str, username: &str) -> Program {
    let mut args = QUICK.to_vec();
    args.extend([servers, username]);
    let mut client = Program::start("chat_client", &args);
    client.wait_for(|l| l.ends_with(&format!("#general * {username} joined"))).await;
    client
}

/// A member of `general` named `name`, speaking the protocol itself: the
/// other user of these tests. Returns once the server has confirmed the join.
async fn member(url: &str, name: &str) -> WsClient {
    let mut ws = common::connect(url).await;
    let join = ClientMessage::Join {
        room: "general".into(),
        username: name.into(),
        since: None,
        epoch: None,
    };
    ws.send(join.to_message()).await.expect("send Join");
    wait_for_event(
        &mut ws,
        |e| matches!(e, ServerEvent::Joined { username, .. } if username == name),
    )
    .await;
    ws
}

/// Says each of `texts` in `general`.
async fn say(ws: &mut WsClient, texts: &[&str]) {
    for text in texts {
        let msg = ClientMessage::Message { room: "general".into(), content: (*text).into() };
        ws.send(msg.to_message()).await.expect("send Message");
    }
}

/// Reads events until one that `pred` accepts, within [`WAIT`].
async fn wait_for_event(ws: &mut WsClient, pred: impl Fn(&ServerEvent) -> bool) -> ServerEvent {
    let found = timeout(WAIT, async {
        loop {
            let msg = common::recv(ws).await;
            let event = ServerEvent::try_from(&msg).expect("a server event");
            if pred(&event) {
                return event;
            }
        }
    });
    found.await.unwrap_or_else(|_| panic!("expected event not seen within {WAIT:?}"))
}

/// Whether `event` says that `name` joined (`Joined`) or left (`Left`).
fn presence(event: &ServerEvent, name: &str, joined: bool) -> bool {
    match event {
        ServerEvent::Joined { username, .. } => joined && username == name,
        ServerEvent::Left { username, .. } => !joined && username == name,
        _ => false,
    }
}

/// Reads `client`'s stdout up to a line that ends with `last`, adding each
/// line to `transcript`.
async fn read_until(client: &mut Program, transcript: &mut Vec<String>, last: &str) {
    let (line, before) = client.wait_for(|l| l.ends_with(last)).await;
    transcript.extend(before);
    transcript.push(line);
}

/// Ends `client` with `/quit` (exit 0), adding what it still shows to
/// `transcript`: a message shown twice, even after the last one the test
/// waited for, is then in the transcript.
async fn quit(mut client: Program, transcript: &mut Vec<String>) -> String {
    client.write_stdin("/quit\n").await;
    assert_eq!(client.exit_code().await, 0);
    transcript.extend(client.remaining_lines().await);
    client.stderr_text().await
}

/// What `name` said in `general`, in the order the transcript shows it.
fn said_by(transcript: &[String], name: &str) -> Vec<String> {
    let tag = format!("#general <{name}> ");
    transcript.iter().filter_map(|l| l.split_once(&tag)).map(|(_, said)| said.into()).collect()
}

/// While the client reconnects, `/quit` and the end of input (Ctrl-D) end
/// it at once, with 0, as `/help` says (Ctrl-C does too:
/// `server_errors_are_shown_and_the_client_continues`). It retries forever
/// here, so without them it would never end.
#[tokio::test]
async fn quit_and_end_of_input_end_the_client_while_it_reconnects() {
    for how in ["/quit", "end of input"] {
        let server = Server::start("chat_server", &[]).await;
        let mut alice = quick_chat_client(&server.url, "alice").await;
        server.stop().await;
        alice.wait_for_log(|l| common::log_message(l).starts_with("cannot connect to")).await;
        match how {
            "/quit" => alice.write_stdin("a line typed meanwhile\n/quit\n").await,
            _ => alice.close_stdin(),
        }
        assert_eq!(alice.exit_code().await, 0, "{how}");
    }
}

/// The same while a room refuses the rejoin for now (the name still held):
/// the client is back, but not yet in its room, and `/quit` closes.
#[tokio::test]
async fn quit_ends_the_client_while_a_rejoin_waits() {
    let stub = StubServer::start().await;
    let mut args = QUICK.to_vec();
    args.extend([stub.url.as_str(), "alice"]);
    let mut alice = Program::start("chat_client", &args);
    let mut ws = stub.accept().await;
    expect_join(&mut ws, "general", "alice").await;
    confirm_join(&mut ws, "general", "alice").await;
    alice.wait_for(|l| l.ends_with("#general * alice joined")).await;

    drop(ws);
    let mut ws = stub.accept().await;
    assert_eq!(expect_join(&mut ws, "general", "alice").await, Some(0));
    tell(&mut ws, refusal("general", ErrorCode::NameTaken, "taken")).await;
    assert_eq!(expect_join(&mut ws, "general", "alice").await, Some(0), "asks again");
    // No answer: the rejoin waits, and so would the client.
    alice.write_stdin("/quit\n").await;
    let next = next_frame(&mut ws).await;
    assert!(next.is_close(), "the close: {next:?}");
    ws.flush().await.expect("answer the client's close");
    assert_eq!(alice.exit_code().await, 0);
}

/// The server restarts at the same address (Ctrl-C, then started again):
/// the client reconnects by itself, finds that `general` started over (its
/// `since` 3 is ahead of the new room), says so, and shows the new room from
/// its first message, whether bob said it before or after the client was
/// back. Every message is shown once, in order.
///
/// The old client ended at the server's 1001 close, and showed nothing of
/// m4 to m8.
#[tokio::test]
async fn a_server_restart_loses_no_message_and_shows_none_twice() {
    let server = Server::start("chat_server", &[]).await;
    let (addr, url) = (server.addr.clone(), server.url.clone());
    let mut alice = quick_chat_client(&url, "alice").await;
    let mut transcript = Vec::new();
    let mut bob = member(&url, "bob").await;
    say(&mut bob, &["m1", "m2", "m3"]).await;
    read_until(&mut alice, &mut transcript, "<bob> m3").await;

    server.stop().await;
    let server = Server::start_on("chat_server", &addr, &[]).await;
    let mut bob = member(&url, "bob").await;
    // Fewer than alice's 3: her `since` is ahead of the new room, however
    // many of these are said before she is back.
    say(&mut bob, &["m4", "m5"]).await;
    read_until(&mut alice, &mut transcript, "<bob> m5").await;
    say(&mut bob, &["m6", "m7", "m8"]).await;
    read_until(&mut alice, &mut transcript, "<bob> m8").await;
    let log = quit(alice, &mut transcript).await;

    let expected: Vec<String> = (1..=8).map(|i| format!("m{i}")).collect();
    assert_eq!(said_by(&transcript, "bob"), expected, "{transcript:#?}");
    let started_over: Vec<_> =
        transcript.iter().filter(|l| l.contains("#general * the room started over")).collect();
    assert_eq!(started_over.len(), 1, "{transcript:#?}");
    assert!(log.contains(&format!("reconnecting to {url} in ")), "{log}");
    server.stop().await;
}

/// The server restarts while alice is away, and in its new life bob says
/// more messages (five) than she had seen in the old one (three) before
/// she is back (the proxy refuses her meanwhile). Her rejoin names the
/// room's old epoch: the server tells her that the room started over, and
/// replays the new life from its first message. She shows the notice, the
/// five messages, her joined line, then what comes live: nothing lost.
///
/// The client before epochs rejoined with `since` 3, which the new room
/// had passed: it was replayed n4 and n5 only, and never knew that n1 to
/// n3 were said.
#[tokio::test]
async fn a_restart_past_the_clients_old_seq_loses_none_of_the_new_life() {
    let server = Server::start("chat_server", &[]).await;
    let addr = server.addr.clone();
    let proxy = Proxy::start(&addr).await;
    let mut alice = quick_chat_client(&proxy.url, "alice").await;
    let mut transcript = Vec::new();
    let mut bob = member(&server.url, "bob").await;
    say(&mut bob, &["o1", "o2", "o3"]).await;
    read_until(&mut alice, &mut transcript, "<bob> o3").await;

    proxy.refuse(true);
    server.stop().await;
    alice.wait_for_log(|l| common::log_message(l).starts_with("cannot connect to")).await;
    let server = Server::start_on("chat_server", &addr, &[]).await;
    let mut bob = member(&server.url, "bob").await;
    say(&mut bob, &["n1", "n2", "n3", "n4", "n5"]).await;
    wait_for_event(&mut bob, |e| matches!(e, ServerEvent::Message { seq: 5, .. })).await;
    proxy.refuse(false);
    wait_for_event(&mut bob, |e| presence(e, "alice", true)).await;
    say(&mut bob, &["n6"]).await;
    read_until(&mut alice, &mut transcript, "<bob> n6").await;
    let log = quit(alice, &mut transcript).await;
    server.stop().await;

    let said: Vec<String> =
        ["o1", "o2", "o3", "n1", "n2", "n3", "n4", "n5", "n6"].map(String::from).into();
    assert_eq!(said_by(&transcript, "bob"), said, "{transcript:#?}");
    let position = |end: &str| transcript.iter().rposition(|l| l.ends_with(end));
    let notice =
        position("#general * the room started over while you were away: its new messages follow");
    let (n1, n5, n6) = (position("<bob> n1"), position("<bob> n5"), position("<bob> n6"));
    let back = position("#general * alice joined");
    assert!(
        notice.is_some() && notice.map(|n| n + 1) == n1,
        "the notice, then n1: {transcript:#?}"
    );
    assert!(n5 < back && back < n6, "the new life, joined, live: {transcript:#?}");
    assert_in_time_order(&transcript);
    assert!(log.contains("rejoining #general after message 3"), "{log}");
}

/// Alice's connection drops while the server stays up; bob says three
/// messages while she is away (the server has seen her leave, and the proxy
/// refuses her attempts). Back, she rejoins with `since` 2, and the server
/// replays what she missed before the live messages: each shown once, in
/// order. Her lines read in time order: her own `joined` line, stamped when
/// she is back (a second after m5, here), follows the replay. Returns her
/// transcript.
async fn resume_after_a_drop(history: &str) -> Vec<String> {
    let server = Server::start("chat_server", &["--history", history]).await;
    let proxy = Proxy::start(&server.addr).await;
    let mut alice = quick_chat_client(&proxy.url, "alice").await;
    let mut transcript = Vec::new();
    let mut bob = member(&server.url, "bob").await;
    say(&mut bob, &["m1", "m2"]).await;
    read_until(&mut alice, &mut transcript, "<bob> m2").await;

    proxy.refuse(true);
    proxy.cut(Cut::Both);
    wait_for_event(&mut bob, |e| presence(e, "alice", false)).await;
    say(&mut bob, &["m3", "m4", "m5"]).await;
    let m5 = wait_for_event(&mut bob, |e| matches!(e, ServerEvent::Message { seq: 5, .. })).await;
    alice.wait_for_log(|l| common::log_message(l).starts_with("cannot connect to")).await;
    // Lines show whole seconds: alice comes back in the second after m5's,
    // so that her joined line cannot read as old as the replay before it.
    let ServerEvent::Message { timestamp, .. } = m5 else { unreachable!() };
    let m5_at = chrono::DateTime::parse_from_rfc3339(&timestamp).expect("RFC 3339");
    let next_second = (m5_at.timestamp() + 1) * 1000 - chrono::Utc::now().timestamp_millis();
    tokio::time::sleep(Duration::from_millis(next_second.clamp(0, 1000) as u64)).await;
    proxy.refuse(false);
    wait_for_event(&mut bob, |e| presence(e, "alice", true)).await;
    say(&mut bob, &["m6"]).await;
    read_until(&mut alice, &mut transcript, "<bob> m6").await;
    let log = quit(alice, &mut transcript).await;
    assert!(log.contains("rejoining #general after message 2"), "{log}");
    server.stop().await;
    assert_in_time_order(&transcript);
    // Her second joined line: after the replay's last message, before m6.
    let back = transcript.iter().rposition(|l| l.ends_with("#general * alice joined"));
    let m5 = transcript.iter().position(|l| l.ends_with("<bob> m5"));
    let m6 = transcript.iter().position(|l| l.ends_with("<bob> m6"));
    assert!(m5 < back && back < m6, "replay, joined, live: {transcript:#?}");
    transcript
}

/// Fails unless the times of `transcript`'s lines (`[HH:MM:SS] ...`) never
/// go back. (A test running across midnight would fail it: once a day, for
/// a second.)
fn assert_in_time_order(transcript: &[String]) {
    let times: Vec<&str> = transcript
        .iter()
        .filter(|l| l.starts_with('['))
        .map(|l| l.get(1..9).expect("[HH:MM:SS]"))
        .collect();
    assert!(times.is_sorted(), "lines out of time order: {transcript:#?}");
}

/// The resume, with the whole history kept: m3 to m5, said while alice was
/// away, are replayed, and m6 comes live.
///
/// The old client ended at the drop (`error: connection lost`, exit 1).
#[tokio::test]
async fn a_dropped_connection_resumes_with_since_and_misses_nothing() {
    let transcript = resume_after_a_drop("1000").await;
    let expected: Vec<String> = (1..=6).map(|i| format!("m{i}")).collect();
    assert_eq!(said_by(&transcript, "bob"), expected, "{transcript:#?}");
    assert!(!transcript.iter().any(|l| l.contains("are lost")), "{transcript:#?}");
}

/// The resume, with a history of 2: m3 is gone by the time alice is back,
/// and she is told so before m4 and m5.
#[tokio::test]
async fn a_resume_older_than_the_history_shows_the_gap() {
    let transcript = resume_after_a_drop("2").await;
    assert_eq!(said_by(&transcript, "bob"), ["m1", "m2", "m4", "m5", "m6"], "{transcript:#?}");
    let gap = transcript.iter().position(|l| l.ends_with("#general * messages 3 to 3 are lost"));
    let m4 = transcript.iter().position(|l| l.ends_with("<bob> m4"));
    assert!(gap.is_some() && gap.map(|g| g + 1) == m4, "the gap, then m4: {transcript:#?}");
    // With m4's time: what it says is lost came before m4.
    let (gap, m4) = (&transcript[gap.unwrap()], &transcript[m4.unwrap()]);
    assert_eq!(gap[..10], m4[..10], "{transcript:#?}");
}

/// Alice's side of the connection goes, but the server still holds her
/// old connection, and her name in `general`: her rejoin is refused (`that
/// name is taken`), and she asks again with the backoff until the server
/// lets the old connection go. Then she is back, with what was said in
/// between.
///
/// The old client ended at the drop.
#[tokio::test]
async fn a_name_still_held_is_asked_for_again_until_it_is_free() {
    let server = Server::start("chat_server", &[]).await;
    let proxy = Proxy::start(&server.addr).await;
    let mut alice = quick_chat_client(&proxy.url, "alice").await;
    let mut transcript = Vec::new();
    let mut bob = member(&server.url, "bob").await;
    say(&mut bob, &["m1"]).await;
    read_until(&mut alice, &mut transcript, "<bob> m1").await;

    proxy.cut(Cut::KeepServerSide);
    let taken = "#general: cannot join \"general\": that name is taken in that room; asking again";
    alice.wait_for_log(|l| common::log_message(l).starts_with(taken)).await;
    // m2 is numbered while the old connection still holds the name: alice
    // can only get it from the replay.
    say(&mut bob, &["m2"]).await;
    wait_for_event(
        &mut bob,
        |e| matches!(e, ServerEvent::Message { content, .. } if content == "m2"),
    )
    .await;
    proxy.release();
    wait_for_event(&mut bob, |e| presence(e, "alice", false)).await;
    wait_for_event(&mut bob, |e| presence(e, "alice", true)).await;
    say(&mut bob, &["m3"]).await;
    read_until(&mut alice, &mut transcript, "<bob> m3").await;
    let log = quit(alice, &mut transcript).await;

    assert_eq!(said_by(&transcript, "bob"), ["m1", "m2", "m3"], "{transcript:#?}");
    assert!(!transcript.iter().any(|l| l.starts_with('!')), "no refusal shown: {transcript:#?}");
    assert!(log.contains("rejoining #general after message 1"), "{log}");
    server.stop().await;
}

/// Several servers: the first is not there at start, so the client uses the
/// second; when that one dies (SIGKILL: no close frame), it moves on to the
/// third, and joins `general` there. Nothing was shown in `general` yet, so
/// it rejoins with `since` 0: what bob said there before she arrived is
/// shown too, once.
///
/// The old client took one URL: it refused the list as a usage error.
#[tokio::test]
async fn the_client_moves_to_the_next_server_when_one_is_gone() {
    let nothing = common::refused_port();
    let first = format!("ws://127.0.0.1:{}", nothing.port);
    let second = Server::start("chat_server", &[]).await;
    let third = Server::start("chat_server", &[]).await;
    let servers = format!("{first},{},{}", second.url, third.url);
    let mut alice = quick_chat_client(&servers, "alice").await;
    let mut transcript = Vec::new();

    second.program.signal("KILL");
    let mut bob = member(&third.url, "bob").await;
    say(&mut bob, &["b1"]).await;
    read_until(&mut alice, &mut transcript, "<bob> b1").await;
    say(&mut bob, &["b2"]).await;
    read_until(&mut alice, &mut transcript, "<bob> b2").await;
    let log = quit(alice, &mut transcript).await;

    assert_eq!(said_by(&transcript, "bob"), ["b1", "b2"], "{transcript:#?}");
    assert!(log.contains(&format!("cannot connect to {first}: ")), "{log}");
    assert!(log.contains(&format!("reconnecting to {} in ", third.url)), "{log}");
    assert!(log.contains("rejoining #general after message 0"), "{log}");
    third.stop().await;
}

/// chat_client --token against a chat_server that takes tokens (chapter
/// 10.5): without a token the first handshake gets 401 and the client exits
/// 1 saying so; with a token for another name, its join is refused and
/// shown; with alice's, alice chats, and after the network drops her
/// connection, her reconnect carries the token too: she is back in
/// `general` and is heard there.
#[tokio::test]
async fn a_token_goes_with_every_connection_reconnects_included() {
    let file = TempFile::new("s3cret\n");
    let server = Server::start("chat_server", &["--auth-secret-file", file.arg()]).await;
    let secret = websocket_tutorial::token::Secret::new(b"s3cret").expect("a secret");
    let token = |name: &str| secret.make(name, std::time::Duration::from_secs(60)).expect("token");

    let mut refused = Program::start("chat_client", &[&server.url, "alice"]);
    assert_eq!(refused.exit_code().await, 1);
    let stderr = refused.stderr_text().await;
    assert!(stderr.contains("cannot connect") && stderr.contains("401"), "{stderr}");

    let bobs = token("bob");
    let mut mallory = Program::start("chat_client", &["--token", &bobs, &server.url, "alice"]);
    mallory.wait_for(|l| l.starts_with("! #general: your token is for \"bob\"")).await;
    mallory.write_stdin("/quit\n").await;
    assert_eq!(mallory.exit_code().await, 0);

    let proxy = Proxy::start(&server.addr).await;
    let alices = token("alice");
    let mut args = QUICK.to_vec();
    args.extend(["--token", &alices, &proxy.url, "alice"]);
    let mut alice = Program::start("chat_client", &args);
    alice.wait_for(|l| l.ends_with("#general * alice joined")).await;
    let config = Default::default();
    let bob = websocket_tutorial::client::connect_with_token(&server.url, config, Some(&bobs));
    let mut bob = bob.await.expect("bob's token");
    let join = ClientMessage::Join {
        room: "general".into(),
        username: "bob".into(),
        since: None,
        epoch: None,
    };
    bob.send(join.to_message()).await.expect("send Join");
    wait_for_event(&mut bob, |e| presence(e, "bob", true)).await;

    proxy.cut(Cut::Both);
    wait_for_event(&mut bob, |e| presence(e, "alice", false)).await;
    wait_for_event(&mut bob, |e| presence(e, "alice", true)).await;
    alice.write_stdin("back with my token\n").await;
    let said = |e: &ServerEvent| matches!(e, ServerEvent::Message { content, .. } if content == "back with my token");
    wait_for_event(&mut bob, said).await;
    alice.write_stdin("/quit\n").await;
    assert_eq!(alice.exit_code().await, 0);
    server.stop().await;
}

/// The client decides what a refused rejoin means by the refusal's code
/// alone, whatever its words: here a server words its refusals in German.
/// `since_ahead`: the client joins again from the room's start (`since` 0)
/// and says that the room started over. `name_taken`: it asks again after a
/// pause. And a refusal with another code, even in the very words the
/// server of this project uses for "since ahead", is final: the room is
/// given up and no Join follows.
#[tokio::test]
async fn a_refused_rejoin_is_decided_by_its_code_not_its_words() {
    let stub = StubServer::start().await;
    let mut args = QUICK.to_vec();
    args.extend([stub.url.as_str(), "alice"]);
    let mut alice = Program::start("chat_client", &args);

    let mut ws = stub.accept().await;
    assert_eq!(expect_join(&mut ws, "general", "alice").await, None, "a first join: live only");
    confirm_join(&mut ws, "general", "alice").await;
    tell(&mut ws, message("general", "bob", "m5", 5)).await;
    alice.wait_for(|l| l.ends_with("#general <bob> m5")).await;

    // The connection drops; the client comes back and asks for what it
    // missed after message 5. The room started over.
    drop(ws);
    let mut ws = stub.accept().await;
    assert_eq!(expect_join(&mut ws, "general", "alice").await, Some(5));
    tell(&mut ws, refusal("general", ErrorCode::SinceAhead, "Der Raum hat neu begonnen")).await;
    let again = expect_join(&mut ws, "general", "alice").await;
    assert_eq!(again, Some(0), "joins again from the start");
    confirm_join(&mut ws, "general", "alice").await;
    alice
        .wait_for(|l| {
            l.ends_with(
                "#general * the room started over from message 1: what it holds now follows",
            )
        })
        .await;

    // Dropped again; this time its name is still held: it asks again.
    drop(ws);
    let mut ws = stub.accept().await;
    assert_eq!(expect_join(&mut ws, "general", "alice").await, Some(0));
    tell(&mut ws, refusal("general", ErrorCode::NameTaken, "Dieser Name ist vergeben")).await;
    let again = expect_join(&mut ws, "general", "alice").await;
    assert_eq!(again, Some(0), "asks again after a pause");
    confirm_join(&mut ws, "general", "alice").await;
    alice.wait_for(|l| l.ends_with("#general * alice joined")).await;

    // Another code is final, whatever the words say.
    drop(ws);
    let mut ws = stub.accept().await;
    assert_eq!(expect_join(&mut ws, "general", "alice").await, Some(0));
    let words = "since 9 is ahead of the room's last message, seq 0";
    tell(&mut ws, refusal("general", ErrorCode::BadName, words)).await;
    alice.wait_for(|l| l.ends_with(&format!("! #general: {words}"))).await;
    alice.write_stdin("/quit\n").await;
    let next = next_frame(&mut ws).await;
    assert!(next.is_close(), "no Join after a final refusal, only the close: {next:?}");
    ws.flush().await.expect("answer the client's close"); // tungstenite queued the answer
    assert_eq!(alice.exit_code().await, 0);
}

/// A close the server starts is answered: both clients send their own close
/// frame back, the second half of the close handshake, before they exit,
/// with 0 for 1000. (tungstenite sends that answer only when the
/// connection is read or written again after the server's frame: a client
/// that stops there and drops it leaves the server without one.)
#[tokio::test]
async fn a_close_from_the_server_is_answered() {
    let stub = StubServer::start().await;
    for name in CHAT_CLIENTS {
        let mut alice = Program::start(name, &[&stub.url, "alice"]);
        let mut ws = stub.accept().await;
        expect_join(&mut ws, "general", "alice").await;
        confirm_join(&mut ws, "general", "alice").await;
        alice.wait_for(|l| l.ends_with("#general * alice joined")).await;
        let bye = websocket_tutorial::close::message(CloseCode::Normal, "that is all");
        ws.send(bye).await.expect("the server's close frame");
        match timeout(WAIT, ws.next()).await {
            Ok(Some(Ok(Message::Close(Some(frame))))) => {
                assert_eq!(frame.code, CloseCode::Normal, "{name} answers with the same code")
            }
            other => panic!("{name} did not answer the close frame: {other:?}"),
        }
        drop(ws); // the end of the handshake: the server closes the connection
        alice.wait_for(|l| l == "server closed the connection: 1000 (that is all)").await;
        assert_eq!(alice.exit_code().await, 0, "{name}");
    }
}
