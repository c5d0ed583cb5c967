//! Talking to a server as a WebSocket client: connecting, reading with a
//! deadline, closing, and the checks several suites share (a slot that
//! waits, a silent client dropped, a chat `Message` with the server's time).

use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use tokio::time::{Instant, timeout};
use tokio_tungstenite::tungstenite;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::http::StatusCode;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use websocket_tutorial::client::{self, WsClient};

use super::*;

/// (username, content, seq) of a chat `Message` event, whose timestamp must
/// be the server's now, in UTC; panics on any other event.
pub fn said(event: websocket_tutorial::protocol::ServerEvent) -> (String, String, u64) {
    match event {
        websocket_tutorial::protocol::ServerEvent::Message {
            username,
            content,
            seq,
            timestamp,
            ..
        } => {
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

/// `event` as a test expects it: a `Joined` or `Left` must carry the
/// server's now, in UTC, as a message does, and a `Joined` the room's
/// epoch; both are then blanked, so that the rest compares exactly
/// (`timestamp: String::new()`, `epoch: String::new()`).
pub fn unstamped(
    mut event: websocket_tutorial::protocol::ServerEvent,
) -> websocket_tutorial::protocol::ServerEvent {
    use websocket_tutorial::protocol::ServerEvent;
    if let ServerEvent::Joined { timestamp, .. } | ServerEvent::Left { timestamp, .. } = &mut event
    {
        let stamped = chrono::DateTime::parse_from_rfc3339(timestamp)
            .unwrap_or_else(|e| panic!("timestamp {timestamp:?} is not RFC 3339: {e}"));
        let age = chrono::Utc::now().signed_duration_since(stamped);
        assert!(age.num_seconds().abs() < 60, "timestamp is the server's now: {timestamp}");
        assert!(timestamp.len() == 24 && timestamp.ends_with('Z'), "UTC, ms: {timestamp}");
        timestamp.clear();
    }
    if let ServerEvent::Joined { epoch, .. } = &mut event {
        assert!(!epoch.is_empty(), "a Joined names the room's epoch");
        epoch.clear();
    }
    event
}

/// Connects a WebSocket client, within [`WAIT`].
pub async fn connect(url: &str) -> WsClient {
    let config = tokio_tungstenite::tungstenite::protocol::WebSocketConfig::default();
    client::connect(url, config).await.unwrap_or_else(|e| panic!("connect to {url}: {e}"))
}

/// The next text or binary message (control frames skipped), within
/// `deadline`. Panics on close, error or timeout.
pub async fn recv_within(ws: &mut WsClient, deadline: Duration) -> Message {
    let next = timeout(deadline, async {
        loop {
            match ws.next().await {
                Some(Ok(msg @ (Message::Text(_) | Message::Binary(_)))) => return Ok(msg),
                Some(Ok(Message::Close(frame))) => return Err(format!("closed: {frame:?}")),
                Some(Ok(_)) => continue,
                Some(Err(e)) => return Err(format!("error: {e}")),
                None => return Err("stream ended".to_string()),
            }
        }
    })
    .await;
    match next {
        Ok(Ok(msg)) => msg,
        Ok(Err(e)) => panic!("expected a message, got {e}"),
        Err(_) => panic!("no message within {deadline:?}"),
    }
}

/// The next text or binary message, within [`WAIT`].
pub async fn recv(ws: &mut WsClient) -> Message {
    recv_within(ws, WAIT).await
}

/// The next message as text, within [`WAIT`].
pub async fn recv_text(ws: &mut WsClient) -> String {
    match recv(ws).await {
        Message::Text(text) => text.to_string(),
        other => panic!("expected text, got {other:?}"),
    }
}

/// Reads until the server's close frame arrives, within [`WAIT`], and
/// returns its code. Text and binary messages before it are skipped.
pub async fn expect_close(ws: &mut WsClient) -> CloseCode {
    let code = timeout(WAIT, async {
        while let Some(msg) = ws.next().await {
            match msg {
                Ok(Message::Close(Some(frame))) => return Some(frame.code),
                Ok(Message::Close(None)) => return None,
                Ok(_) => continue,
                Err(e) => panic!("expected a close frame, got error {e}"),
            }
        }
        panic!("stream ended without a close frame")
    })
    .await
    .unwrap_or_else(|_| panic!("no close frame within {WAIT:?}"));
    code.expect("close frame carries a code")
}

/// After the server's close frame for a broken rule, the end of the stream,
/// not a reset: the server shut its side and drained what we still sent
/// (chapter 10.4).
pub async fn expect_clean_end(ws: &mut WsClient) {
    let end = timeout(WAIT, ws.next()).await.expect("the end of the stream in time");
    assert!(end.is_none(), "the end of the stream after the close frame, not {end:?}");
}

/// Closes from the client side with 1000 and expects the server's answer.
pub async fn close_cleanly(ws: &mut WsClient) {
    ws.send(Message::Close(None)).await.expect("send close");
    let rest = timeout(WAIT, async {
        let mut saw_close = false;
        while let Some(msg) = ws.next().await {
            if let Ok(Message::Close(_)) = msg {
                saw_close = true;
            }
        }
        saw_close
    })
    .await
    .expect("server answered the close within the deadline");
    assert!(rest, "server answered our close frame with its own");
}

/// Connects a client with small socket buffers, so that when it stops
/// reading, the server's sends back up after at most some 200 KB instead
/// of the megabytes the kernels would otherwise buffer.
///
/// Two settings, both before connecting, because both are announced in the
/// TCP handshake: a 4 KiB receive buffer (our window), and a 536-byte
/// maximum segment size. The server's kernel sizes its send buffer from the
/// segment size we announce: on loopback (64 KiB segments) it grows to the
/// `tcp_wmem` maximum, 4 MiB by default; with 536-byte segments it stays
/// under 200 KiB (`ss -tm` showed buffers of 70 to 189 KiB, holding up to
/// 130 KB, depending on how the connection's first moments went).
pub async fn connect_with_small_buffers(url: &str) -> WsClient {
    let host = url.strip_prefix("ws://").and_then(|rest| rest.split('/').next());
    let addr: std::net::SocketAddr =
        host.and_then(|a| a.parse().ok()).expect("ws://IP:PORT URL, perhaps with a path");
    let socket = tokio::net::TcpSocket::new_v4().expect("socket");
    socket.set_recv_buffer_size(4096).expect("set SO_RCVBUF");
    socket2::SockRef::from(&socket).set_tcp_mss(536).expect("set TCP_MAXSEG");
    let stream =
        timeout(WAIT, socket.connect(addr)).await.expect("connect in time").expect("connect");
    let (ws, _) = timeout(
        WAIT,
        tokio_tungstenite::client_async(url, tokio_tungstenite::MaybeTlsStream::Plain(stream)),
    )
    .await
    .expect("handshake in time")
    .expect("handshake");
    ws
}

/// For a server started with `--max-connections 1` whose one slot `holder`
/// holds: another client waits (its TCP connection sits in the kernel's
/// backlog, its handshake unanswered) until `holder` goes, and is then
/// served. Returns that client.
pub async fn assert_waits_for_the_slot(url: &str, holder: WsClient) -> WsClient {
    let url = url.to_string();
    let mut next = tokio::spawn(async move { connect(&url).await });
    // The one place where waiting for nothing is the point: the cap holds.
    let early = timeout(Duration::from_millis(500), &mut next).await;
    assert!(early.is_err(), "a connection was served past the cap");
    drop(holder);
    timeout(WAIT, next).await.expect("served once a slot freed").expect("connected")
}

/// Waits for a log line of `server` that `pred` accepts, while reading `ws`
/// all along, as a live client does (tungstenite answers the server's pings
/// only while the stream is read). Messages are skipped; a close, an error
/// or the end of `ws` fails the test.
pub async fn wait_for_log_reading(
    server: &mut Program,
    ws: &mut WsClient,
    pred: impl Fn(&str) -> bool,
) -> String {
    let logged = server.wait_for_log(pred);
    tokio::pin!(logged);
    loop {
        tokio::select! {
            (line, _) = &mut logged => return line,
            msg = ws.next() => match msg {
                Some(Ok(Message::Close(frame))) => panic!("the reading client was closed: {frame:?}"),
                Some(Ok(_)) => {}
                Some(Err(e)) => panic!("the reading client failed: {e}"),
                None => panic!("the reading client's connection ended"),
            },
        }
    }
}

/// The heartbeat's promise, for a server started with `--ping-ms 100
/// --pong-timeout-ms 300`: `silent` sends one last frame and then reads
/// nothing (so it answers no ping, like a vanished machine), and the server
/// closes it with 1011 `ping timeout`, not before 400 ms (a ping interval
/// plus the pong timeout), while `reader` reads all along and is not closed.
///
/// The clock starts before the silent client's last frame: the server reads
/// that frame later than this, so its silence starts later too, and the
/// lower bound holds however busy the machine is.
pub async fn assert_silent_client_is_dropped(
    server: &mut Program,
    reader: &mut WsClient,
    silent: &mut WsClient,
) {
    let peer = local_addr(silent);
    let started = std::time::Instant::now();
    silent.send(Message::text("last words")).await.expect("send");

    let dropped = |l: &str| logged_for(l, &peer, "closing code=1011");
    let line = wait_for_log_reading(server, reader, dropped).await;
    let took = started.elapsed();
    assert!(took >= Duration::from_millis(400), "not dropped before the timeout ({took:?})");
    assert!(line.ends_with(" reason=ping timeout"), "{line}");
}

/// The `IP:PORT` the server sees for this client, as its log lines name it.
pub fn local_addr(ws: &WsClient) -> String {
    match ws.get_ref() {
        tokio_tungstenite::MaybeTlsStream::Plain(tcp) => {
            tcp.local_addr().expect("local address").to_string()
        }
        other => panic!("expected plain TCP, got {other:?}"),
    }
}

/// A handshake with `origin` in its `Origin` header (no header if `None`):
/// the WebSocket, or the HTTP status that refused it.
pub async fn handshake(url: &str, origin: Option<&str>) -> Result<WsClient, StatusCode> {
    let mut request = url.into_client_request().expect("a request");
    if let Some(origin) = origin {
        request.headers_mut().insert("origin", origin.parse().expect("a header value"));
    }
    let answered = timeout(WAIT, tokio_tungstenite::connect_async(request)).await;
    match answered.expect("the server answers the handshake") {
        Ok((ws, _)) => Ok(ws),
        Err(tungstenite::Error::Http(response)) => Err(response.status()),
        Err(e) => panic!("handshake with {url}: {e}"),
    }
}

/// Like [`handshake`], repeated while it gets `busy` (429 for a full
/// address, 503 for a full server), for up to [`WAIT`]: a server gives a
/// closed connection's slot back when the connection's task ends, a moment
/// after the client has seen its socket close.
pub async fn handshake_once_there_is_room(
    url: &str,
    origin: Option<&str>,
    busy: StatusCode,
) -> Result<WsClient, StatusCode> {
    let deadline = Instant::now() + WAIT;
    loop {
        match handshake(url, origin).await {
            Err(status) if status == busy && Instant::now() < deadline => {
                // Polling pace, not synchronisation: the deadline decides.
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
            answer => return answer,
        }
    }
}
