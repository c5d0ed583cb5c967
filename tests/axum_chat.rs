//! axum_chat (chapter 12) where it differs from chat_server: one port that
//! serves the page at `/` and the WebSocket at `/ws`, axum's answers to
//! requests that are not a handshake, the Origin check that lets its own
//! page in, and `--max-connections` refusing with 503. The chat itself,
//! bad input included, is tests/chat_server.rs's, run against both servers
//! (`against!`); the page in a browser is tests/browser.rs's.
//!
//! axum_chat is built only with `--features axum`: without it, these tests
//! show as ignored (`cargo test --all-features` runs them, as `.ci/run` does).

mod common;

use common::*;
use futures_util::SinkExt;
use tokio_tungstenite::tungstenite::http::StatusCode;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use websocket_tutorial::protocol::{ClientMessage, ServerEvent};

/// `GET /` is chapter 6's browser client, the very file, as HTML; any other
/// path is 404; and the server is still there to say so.
#[tokio::test]
#[cfg_attr(not(feature = "axum"), ignore = "axum_chat needs `--features axum` (chapter 12)")]
async fn the_page_is_served_at_the_root_and_unknown_paths_are_404() {
    let server = Server::start("axum_chat", &[]).await;
    let page = http_get(&server.addr, "/").await;
    assert_eq!(page.status, 200, "{}", page.head);
    let content_type = page.header("content-type").unwrap_or_default();
    assert!(content_type.starts_with("text/html"), "{}", page.head);
    let file = include_str!("../web/chat.html");
    assert_eq!(page.body, file, "the page is web/chat.html, byte for byte");

    for path in ["/nothing-here", "/ws/", "/chat.html"] {
        assert_eq!(http_get(&server.addr, path).await.status, 404, "{path}");
    }
    assert_eq!(http_get(&server.addr, "/").await.status, 200, "still serving");
    server.stop().await;
}

/// A plain `GET /ws`, or one that asks for the upgrade without a key, is
/// not a WebSocket handshake: axum answers it with a 4xx, and the server
/// goes on serving WebSockets.
#[tokio::test]
#[cfg_attr(not(feature = "axum"), ignore = "axum_chat needs `--features axum` (chapter 12)")]
async fn a_request_to_ws_that_is_no_handshake_gets_a_4xx() {
    let server = Server::start("axum_chat", &[]).await;
    let plain = http_get(&server.addr, "/ws").await;
    assert!((400..500).contains(&plain.status), "{}", plain.head);
    let keyless = ["Connection: upgrade, close", "Upgrade: websocket", "Sec-WebSocket-Version: 13"];
    let keyless = http_get_with(&server.addr, "/ws", &keyless).await;
    assert!((400..500).contains(&keyless.status), "{}", keyless.head);

    let mut ws = connect(&server.url).await;
    ws.send(ClientMessage::Ping.to_message()).await.expect("send Ping");
    let pong = ServerEvent::try_from(&recv(&mut ws).await).expect("a server event");
    assert_eq!(pong, ServerEvent::Pong);
    server.stop().await;
}

/// The page this server serves may open a WebSocket without any flag, by
/// whatever name the browser reached the server (its `Origin` is the
/// `Host` it asked for), and so may a client that is not a browser (no
/// `Origin`); a page elsewhere gets 403 unless `--allow-origin` names it,
/// and a page opened from a file (`null`) too.
#[tokio::test]
#[cfg_attr(not(feature = "axum"), ignore = "axum_chat needs `--features axum` (chapter 12)")]
async fn its_own_page_may_connect_and_other_pages_only_when_allowed() {
    let elsewhere = "https://chat.example.com";
    let server = Server::start("axum_chat", &[]).await;
    let own = format!("http://{}", server.addr);
    assert!(handshake(&server.url, Some(&own)).await.is_ok(), "its own page");
    assert!(handshake(&server.url, None).await.is_ok(), "not a browser");
    for origin in [elsewhere, "null", "http://127.0.0.1:1", "not an origin"] {
        let refused = handshake(&server.url, Some(origin)).await.err();
        assert_eq!(refused, Some(StatusCode::FORBIDDEN), "{origin}");
    }
    // The same page reached as localhost: the browser sends that name in
    // both `Host` and `Origin`.
    let port = server.addr.rsplit_once(':').map(|(_, port)| port).expect("IP:PORT");
    let localhost = format!("ws://localhost:{port}/ws");
    let by_name = handshake(&localhost, Some(&format!("http://localhost:{port}"))).await;
    assert!(by_name.is_ok(), "its own page, by name");
    server.stop().await;

    let server = Server::start("axum_chat", &["--allow-origin", elsewhere]).await;
    assert!(handshake(&server.url, Some(elsewhere)).await.is_ok(), "listed");
    let own = format!("http://{}", server.addr);
    assert!(handshake(&server.url, Some(&own)).await.is_ok(), "its own page, still");
    assert_eq!(handshake(&server.url, Some("null")).await.err(), Some(StatusCode::FORBIDDEN));
    server.stop().await;
}

/// With `--max-connections 2`, a third WebSocket is refused with 503 and a
/// `Retry-After`, and the page is still served; once one closes, a new one
/// is accepted.
#[tokio::test]
#[cfg_attr(not(feature = "axum"), ignore = "axum_chat needs `--features axum` (chapter 12)")]
async fn past_max_connections_a_handshake_gets_503() {
    let server = Server::start("axum_chat", &["--max-connections", "2"]).await;
    let mut first = connect(&server.url).await;
    let _second = connect(&server.url).await;
    assert_eq!(handshake(&server.url, None).await.err(), Some(StatusCode::SERVICE_UNAVAILABLE));
    let key = "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==";
    let upgrade =
        ["Connection: upgrade, close", "Upgrade: websocket", "Sec-WebSocket-Version: 13", key];
    let refused = http_get_with(&server.addr, "/ws", &upgrade).await;
    assert_eq!(refused.status, 503);
    assert!(refused.header("retry-after").is_some(), "{}", refused.head);
    assert_eq!(http_get(&server.addr, "/").await.status, 200, "the page is not a WebSocket");

    close_cleanly(&mut first).await;
    // The slot comes back when the connection's task ends, a moment after
    // the client has seen its close handshake complete.
    let third =
        handshake_once_there_is_room(&server.url, None, StatusCode::SERVICE_UNAVAILABLE).await;
    assert!(third.is_ok(), "a slot freed");
    server.stop().await;
}

/// SIGTERM while an HTTP request is still arriving (a client sending its
/// headers slowly) and a WebSocket is open: the WebSocket gets 1001 at
/// once, and the server exits 0 within its grace period instead of
/// waiting for the request to finish.
#[tokio::test]
#[cfg_attr(not(feature = "axum"), ignore = "axum_chat needs `--features axum` (chapter 12)")]
async fn a_request_that_never_finishes_does_not_hold_up_the_exit() {
    use tokio::io::AsyncWriteExt;
    let server = Server::start("axum_chat", &[]).await;
    let mut slow = tokio::net::TcpStream::connect(&server.addr).await.expect("connect");
    slow.write_all(b"GET / HTTP/1.1\r\nHost: 127.0.0.1\r\n").await.expect("half a request");
    let mut ws = connect(&server.url).await;
    ws.send(ClientMessage::Ping.to_message()).await.expect("send Ping");
    // The Pong: the server is up and, most likely, has read the half request.
    recv(&mut ws).await;
    server.program.signal("TERM");
    assert_eq!(expect_close(&mut ws).await, CloseCode::Away);
    let mut program = server.program;
    assert_eq!(program.exit_code().await, 0, "exits, the slow request notwithstanding");
    drop(slow);
}

/// Its command line is chat_server's kind: `--help` exits 0, a mistake
/// is one `error:` line and exit 2 (a flag it does not have, a malformed
/// origin, a bare port, no connections at all), and an address already in
/// use is one line naming it and exit 1.
#[tokio::test]
#[cfg_attr(not(feature = "axum"), ignore = "axum_chat needs `--features axum` (chapter 12)")]
async fn its_command_line_mistakes_are_usage_errors() {
    let mut help = Program::start("axum_chat", &["--help"]);
    let text = help.remaining_lines().await.join("\n");
    assert_eq!(help.exit_code().await, 0);
    assert!(text.contains("Usage: axum_chat") && text.contains("--allow-origin"), "{text}");
    for args in [
        &["--no-such-flag"][..],
        &["--allow-origin", "chat.example.com"],
        &["9002"],
        &["127.0.0.1:0", "--max-connections", "0"],
        &["127.0.0.1:0", "--tls-cert", "cert.pem"],
    ] {
        let mut program = Program::start("axum_chat", args);
        assert_eq!(program.exit_code().await, 2, "{args:?}");
        let stderr = program.stderr_text().await;
        assert!(stderr.starts_with("error: "), "{args:?}: {stderr}");
        assert!(!stderr.contains("panicked"), "{args:?}: {stderr}");
    }
    let server = Server::start("axum_chat", &[]).await;
    let mut second = Program::start("axum_chat", &[&server.addr]);
    assert_eq!(second.exit_code().await, 1);
    let stderr = second.stderr_text().await;
    assert!(stderr.contains(&format!("cannot listen on {}", server.addr)), "{stderr}");
    assert_eq!(stderr.lines().count(), 1, "{stderr}");
    server.stop().await;
}
