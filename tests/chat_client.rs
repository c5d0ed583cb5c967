//! The terminal chat client (chapter 6.1) driven through its stdin, against
//! the real chat server.

mod common;

use common::{Program, Server};
use tokio::io::AsyncWriteExt;
use websocket_tutorial::protocol::MAX_CONTENT_BYTES;

/// Starts a chat client for `username` and waits until it has joined
/// `general` (its own `joined` line).
async fn chat_client(server: &Server, username: &str) -> Program {
    let mut client = Program::start("chat_client", &[&server.url, username]);
    client.wait_for(|l| l.ends_with(&format!("#general * {username} joined"))).await;
    client
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
#[tokio::test]
async fn server_errors_are_shown_and_the_client_continues() {
    let server = Server::start("chat_server", &[]).await;
    let mut alice = chat_client(&server, "alice").await;
    alice.write_stdin("/leave nowhere\n").await;
    alice.wait_for(|l| l.starts_with("! #nowhere: cannot leave")).await;
    alice.write_stdin("still works\n").await;
    alice.wait_for(|l| l.ends_with("#general <alice> still works")).await;
    server.stop().await;
    // The server's Ctrl-C reaches the client as a 1001 close; it exits 0.
    alice.wait_for(|l| l.starts_with("server closed the connection: 1001")).await;
    assert_eq!(alice.exit_code().await, 0);
}

/// Without a server the client says so in one line and exits 1.
#[tokio::test]
async fn no_server_is_a_clear_error() {
    let port = common::free_port();
    let mut client = Program::start("chat_client", &[&format!("ws://127.0.0.1:{port}"), "alice"]);
    assert_eq!(client.exit_code().await, 1);
    let stderr = client.stderr_text().await;
    assert!(stderr.starts_with("error: cannot connect to"), "{stderr}");
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
    let mut alice = Program::start("chat_client", &[&server.url, "alice"]);
    alice.write_stdin("hi\n").await;
    alice.close_stdin();
    assert_eq!(alice.exit_code().await, 0);
    let lines = alice.remaining_lines().await;
    assert_eq!(lines.len(), 2, "{lines:#?}");
    assert!(lines[0].ends_with("#general * alice joined"), "{lines:#?}");
    assert!(lines[1].ends_with("#general <alice> hi"), "{lines:#?}");
    server.stop().await;
}

/// A server close that says something failed ends the client with exit
/// code 1, the same rule as full_client's: here a flood of piped lines is
/// over the server's rate limit, and the server closes with 1008.
#[tokio::test]
async fn a_close_for_a_broken_rule_exits_1() {
    let server = Server::start("chat_server", &["--rate-limit", "1", "--rate-burst", "1"]).await;
    let mut alice = Program::start("chat_client", &[&server.url, "alice"]);
    alice.write_stdin(&"flood\n".repeat(50)).await;
    let (line, _) = alice.wait_for(|l| l.starts_with("server closed the connection: ")).await;
    assert!(line.starts_with("server closed the connection: 1008 ("), "{line}");
    assert_eq!(alice.exit_code().await, 1);
    server.stop().await;
}

/// A line that is not UTF-8 is reported on stderr, with its number, and the
/// lines after it are still said.
#[tokio::test]
async fn a_line_that_is_not_utf8_is_reported_and_skipped() {
    let server = Server::start("chat_server", &[]).await;
    let mut alice = chat_client(&server, "alice").await;
    let stdin = alice.stdin.as_mut().expect("stdin open");
    stdin.write_all(b"ok\n\xff\xfe\nafter\n").await.expect("write stdin");
    alice.close_stdin();
    assert_eq!(alice.exit_code().await, 0);
    let lines = alice.remaining_lines().await;
    let said: Vec<_> = lines.iter().filter(|l| l.contains("<alice>")).collect();
    assert_eq!(said.len(), 2, "{lines:#?}");
    assert!(said[0].ends_with("#general <alice> ok") && said[1].ends_with("<alice> after"));
    let stderr = alice.stderr_text().await;
    assert!(stderr.contains("line 2 is not UTF-8"), "{stderr}");
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

/// The client says how to use it at start, on stderr, answers `/help` there
/// too, and refuses a line longer than the server accepts instead of sending
/// it; the connection goes on.
#[tokio::test]
async fn help_and_a_line_refused_before_it_is_sent() {
    let server = Server::start("chat_server", &[]).await;
    let mut alice = chat_client(&server, "alice").await;
    alice.write_stdin("/help\n").await;
    alice.write_stdin(&format!("{}\n", "x".repeat(MAX_CONTENT_BYTES + 1))).await;
    alice.write_stdin(&format!("{}\n", "y".repeat(MAX_CONTENT_BYTES))).await;
    let (line, skipped) = alice.wait_for(|l| l.contains("<alice>")).await;
    assert!(line.ends_with(&format!("<alice> {}", "y".repeat(MAX_CONTENT_BYTES))), "{line}");
    assert!(skipped.is_empty(), "nothing else arrived: {skipped:#?}");
    alice.close_stdin();
    assert_eq!(alice.exit_code().await, 0);

    let stderr = alice.stderr_text().await;
    assert!(stderr.contains("/help lists the commands"), "a hint at start: {stderr}");
    for command in ["/join ROOM", "/leave ROOM", "/quit"] {
        assert!(stderr.contains(command), "/help names {command}: {stderr}");
    }
    let too_long = format!("not sent: {} bytes", MAX_CONTENT_BYTES + 1);
    assert!(stderr.contains(&too_long), "{stderr}");
    server.stop().await;
}
