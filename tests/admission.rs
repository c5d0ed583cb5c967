//! Who may connect (chapter 10): the origin allow-list (`--allow-origin`,
//! HTTP 403) and the limit of open connections per IP address
//! (`--max-per-ip`, HTTP 429), which every server gets from `server::serve`.
//! Real servers, real sockets: a refused client reads the HTTP status.

mod common;

use common::*;
use futures_util::SinkExt;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::time::timeout;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::http::StatusCode;

const SERVERS: [&str; 4] = ["echo_server", "broadcast_server", "chat_server", "data_pusher"];
const ALLOWED: &str = "https://chat.example.com";

/// With `--allow-origin` (twice), every server accepts the listed origins,
/// however the flag spelled them, and a client without `Origin` (not a
/// browser); any other origin, `null` included, gets 403 and no WebSocket.
#[tokio::test]
async fn a_listed_origin_is_accepted_and_any_other_gets_403() {
    for name in SERVERS {
        let args = [
            "--allow-origin",
            "HTTPS://Chat.Example.com/",
            "--allow-origin",
            "http://localhost:8080",
        ];
        let server = Server::start(name, &args).await;
        for origin in [Some(ALLOWED), Some("http://localhost:8080"), None] {
            let admitted = handshake(&server.url, origin).await;
            assert!(admitted.is_ok(), "{name}: {origin:?} refused: {:?}", admitted.err());
        }
        for origin in [
            "https://evil.example",
            "https://chat.example.com:8443",
            "http://chat.example.com",
            "null",
        ] {
            let refused = handshake(&server.url, Some(origin)).await.err();
            assert_eq!(refused, Some(StatusCode::FORBIDDEN), "{name}: {origin}");
        }
        server.stop().await;
    }
}

/// A refused page gets no WebSocket, and the server logs why; the listed
/// page's connection works.
#[tokio::test]
async fn a_refused_origin_is_logged_and_a_listed_one_is_served() {
    let mut server = Server::start("echo_server", &["--allow-origin", ALLOWED]).await;
    assert_eq!(
        handshake(&server.url, Some("https://evil.example")).await.err(),
        Some(StatusCode::FORBIDDEN)
    );
    let refused = |l: &str| log_message(l).starts_with("refused, 403: origin not allowed");
    let (line, _) = server.program.wait_for_log(refused).await;
    assert!(line.contains("origin=https://evil.example"), "{line}");

    let mut ws = handshake(&server.url, Some(ALLOWED)).await.expect("a listed origin");
    ws.send(Message::text("hello")).await.expect("send");
    assert_eq!(recv_text(&mut ws).await, "hello");
    close_cleanly(&mut ws).await;
    server.stop().await;
}

/// `null` is what a page opened from a file sends: refused unless listed,
/// and then only it.
#[tokio::test]
async fn null_is_accepted_only_when_listed() {
    let server = Server::start("echo_server", &["--allow-origin", "null"]).await;
    assert!(handshake(&server.url, Some("null")).await.is_ok());
    assert_eq!(handshake(&server.url, Some(ALLOWED)).await.err(), Some(StatusCode::FORBIDDEN));
    server.stop().await;
}

/// Without `--allow-origin` any origin is accepted, and the server says so
/// once, at start.
#[tokio::test]
async fn without_the_flag_any_origin_is_accepted_and_the_server_says_so() {
    let mut server = Server::start("echo_server", &[]).await;
    let any = |l: &str| log_message(l).starts_with("no --allow-origin: accepting");
    server.program.wait_for_log(any).await;
    for origin in [Some("https://evil.example"), Some("null"), None] {
        assert!(handshake(&server.url, origin).await.is_ok(), "{origin:?}");
    }
    server.stop().await;
}

/// `--max-per-ip 3`: three connections from one address are served, a
/// fourth gets 429 (and so does a fifth: a refusal takes no slot), and once
/// one closes, the address may connect again, up to three.
#[tokio::test]
async fn past_max_per_ip_open_connections_a_handshake_gets_429() {
    for name in SERVERS {
        let server = Server::start(name, &["--max-per-ip", "3"]).await;
        let mut open = Vec::new();
        for _ in 0..3 {
            open.push(handshake(&server.url, None).await.expect("within the limit"));
        }
        for _ in 0..2 {
            let refused = handshake(&server.url, None).await.err();
            assert_eq!(refused, Some(StatusCode::TOO_MANY_REQUESTS), "{name}");
        }
        let mut first = open.remove(0);
        close_cleanly(&mut first).await;
        open.push(
            handshake_once_there_is_room(&server.url, None, StatusCode::TOO_MANY_REQUESTS)
                .await
                .expect("admitted again"),
        );
        let refused = handshake(&server.url, None).await.err();
        assert_eq!(refused, Some(StatusCode::TOO_MANY_REQUESTS), "{name}: three open again");
        server.stop().await;
    }
}

/// A handshake that fails (garbage instead of HTTP) or is refused (403)
/// gives its address's slot back: with `--max-per-ip 1`, after five of
/// each, the address still gets its one connection.
#[tokio::test]
async fn failed_and_refused_handshakes_give_their_slot_back() {
    let args = ["--max-per-ip", "1", "--allow-origin", ALLOWED];
    let server = Server::start("echo_server", &args).await;
    for _ in 0..5 {
        let mut tcp = TcpStream::connect(&server.addr).await.expect("connect");
        tcp.write_all(b"HELLO?\r\n\r\n").await.expect("write");
        // The server answers (400) and closes: read to the end.
        let mut answer = Vec::new();
        timeout(WAIT, tcp.read_to_end(&mut answer)).await.expect("closed").expect("read");
        let refused = handshake_once_there_is_room(
            &server.url,
            Some("https://evil.example"),
            StatusCode::TOO_MANY_REQUESTS,
        )
        .await;
        assert_eq!(refused.err(), Some(StatusCode::FORBIDDEN));
    }
    let _only = handshake_once_there_is_room(&server.url, None, StatusCode::TOO_MANY_REQUESTS)
        .await
        .expect("its one connection");
    assert_eq!(handshake(&server.url, None).await.err(), Some(StatusCode::TOO_MANY_REQUESTS));
    server.stop().await;
}
