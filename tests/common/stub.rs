//! A chat server of the test's own, which speaks the protocol only as far
//! as a test scripts it: for proving how a client reacts to what a real
//! server seldom says, or never says that way (a refusal worded in another
//! language, for example). Each connection is accepted when the test asks
//! for it, and every wait has a deadline.

use futures_util::{SinkExt, StreamExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::time::timeout;
use tokio_tungstenite::WebSocketStream;
use tokio_tungstenite::tungstenite::Message;
use websocket_tutorial::protocol::{ClientMessage, ErrorCode, ServerEvent};

use super::WAIT;

/// A listening socket on a free loopback port.
pub struct StubServer {
    listener: TcpListener,
    /// `ws://IP:PORT`.
    pub url: String,
}

/// One connection of a client, upgraded.
pub type StubConnection = WebSocketStream<TcpStream>;

impl StubServer {
    pub async fn start() -> StubServer {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let url = format!("ws://{}", listener.local_addr().expect("address"));
        StubServer { listener, url }
    }

    /// The client's next connection, upgraded, within [`WAIT`].
    pub async fn accept(&self) -> StubConnection {
        let upgraded = timeout(WAIT, async {
            let (tcp, _) = self.listener.accept().await.expect("accept");
            tokio_tungstenite::accept_async(tcp).await.expect("handshake")
        });
        upgraded.await.expect("the client connects within the deadline")
    }
}

/// The client's next frame, within [`WAIT`].
pub async fn next_frame(ws: &mut StubConnection) -> Message {
    match timeout(WAIT, ws.next()).await {
        Ok(Some(Ok(msg))) => msg,
        Ok(other) => panic!("the client's connection ended: {other:?}"),
        Err(_) => panic!("nothing from the client within {WAIT:?}"),
    }
}

/// The client's next command (pings of the protocol's own skipped).
pub async fn next_command(ws: &mut StubConnection) -> ClientMessage {
    loop {
        let msg = next_frame(ws).await;
        match ClientMessage::try_from(&msg) {
            Ok(ClientMessage::Ping | ClientMessage::Pong) => continue,
            Ok(command) => return command,
            Err(e) => panic!("not a command: {e}: {msg:?}"),
        }
    }
}

/// The client's next command, which must be a `Join` of `room` as
/// `username`; returns its `since`.
pub async fn expect_join(ws: &mut StubConnection, room: &str, username: &str) -> Option<u64> {
    match next_command(ws).await {
        ClientMessage::Join { room: r, username: u, since, .. } if r == room && u == username => {
            since
        }
        other => panic!("expected {username}'s Join of {room}, got {other:?}"),
    }
}

/// Sends `event` to the client.
pub async fn tell(ws: &mut StubConnection, event: ServerEvent) {
    ws.send(event.to_message()).await.expect("send to the client");
}

/// The epoch of every room of a stub server.
pub const EPOCH: &str = "stub-1";

/// Confirms `username`'s join of `room`, which has no message yet.
pub async fn confirm_join(ws: &mut StubConnection, room: &str, username: &str) {
    let (room, username) = (room.into(), username.into());
    let timestamp = websocket_tutorial::protocol::timestamp_now();
    tell(ws, ServerEvent::Joined { room, username, timestamp, seq: 0, epoch: EPOCH.into() }).await;
}

/// A refusal about `room`, with `code` and words of the test's choosing.
pub fn refusal(room: &str, code: ErrorCode, message: &str) -> ServerEvent {
    ServerEvent::Error { room: Some(room.into()), code, message: message.into() }
}

/// A chat message as a server stamps it.
pub fn message(room: &str, username: &str, content: &str, seq: u64) -> ServerEvent {
    ServerEvent::Message {
        room: room.into(),
        username: username.into(),
        content: content.into(),
        timestamp: "2026-12-06T18:00:00.000Z".into(),
        seq,
    }
}
