//! The terminal chat client (chapter 6.1) driven through its stdin, against
//! the real chat server.

mod common;

use common::{Program, Server};

/// Starts a chat client for `username` and waits until it has joined
/// `general` (its own `joined` line).
async fn chat_client(server: &Server, username: &str) -> Program {
    let mut client = Program::start("chat_client", &[&server.url, username]);
    client.wait_for(|l| l.ends_with(&format!("#general * {username} joined"))).await;
    client
}

/// Two terminal clients chat in `general`: each sees the other join and
/// speak, with time, room and name; `/join` switches rooms, so `general` no
/// longer hears; `/leave` and `/quit` work, and the client exits 0.
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

/// Lines piped in all at once work: the first goes to `general` even though
/// it was read before the server confirmed the join, and a `/join` applies
/// to the very next line.
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
