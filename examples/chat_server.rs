//! Chapter 6.1: a chat server with rooms, speaking the JSON protocol of
//! chapter 5.1. The tutorial's main program.
//!
//! What it teaches: everything of the earlier chapters at once, under real
//! conditions. One writer task per connection, fed by a bounded queue, that
//! sends whatever is queued with `feed` and flushes once; rooms that deliver
//! through those queues (`websocket_tutorial::rooms`); a slow client evicted
//! with close code 1008 instead of slowing the room; a heartbeat that drops
//! half-open connections; every malformed command answered with an `Error`
//! event while the connection stays open; server-set timestamps and per-room
//! sequence numbers; Ctrl-C closes everyone with 1001.
//!
//! ```text
//! cargo run --example chat_server                       # terminal 1
//! cargo run --example chat_client -- ws://127.0.0.1:9001 alice   # terminal 2
//! cargo run --example chat_client -- ws://127.0.0.1:9001 bob     # terminal 3
//! ```
//!
//! Or open `web/chat.html` in a browser. Any WebSocket client works: send
//! `{"type":"Join","room":"general","username":"alice"}`, then
//! `{"type":"Message","room":"general","content":"hi"}`, and every member of
//! `general` receives
//! `{"type":"Message","room":"general","username":"alice","content":"hi","timestamp":"...","seq":1}`.
//!
//! Rules: a username is 1 to 32 characters and unique within a room, a room
//! name is 1 to 32 characters, content 1 byte to 4 KiB, at most 16 rooms per
//! connection. Invalid JSON, a binary frame, a message to a room you have
//! not joined, or a broken rule gets `{"type":"Error","message":"..."}` and
//! the connection stays open.
//!
//! Limits (`WebSocketConfig`): a frame or message over 64 KiB closes the
//! connection with 1009 (the default would accept 64 MiB); a 4 KiB read
//! buffer per connection (the default 128 KiB is allocated up front for every
//! connection: measured with 1,000 idle clients on a release build, the
//! server's resident memory is 146 MB with the default and 18 MB with 4 KiB);
//! a 16 KiB write buffer.
//!
//! Settings: `--ping-ms 5000` (heartbeat interval), `--pong-timeout-ms 10000`
//! (silence allowed after a ping), `--queue 256` (messages queued per client
//! before it counts as too slow), `--max-connections 10000`.
//!
//! Docs: docs/06-case-studies.md

use std::net::SocketAddr;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use chrono::{SecondsFormat, Utc};
use futures_util::stream::{SplitSink, SplitStream};
use futures_util::{SinkExt, StreamExt};
use tokio::sync::mpsc;
use tokio::time::{Instant, interval_at, timeout};
use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tokio_tungstenite::tungstenite::{self, Message};
use tokio_util::sync::CancellationToken;
use websocket_tutorial::cli::{self, Args};
use websocket_tutorial::close;
use websocket_tutorial::protocol::{ClientMessage, ServerEvent};
use websocket_tutorial::rooms::{ClientId, RoomManager};
use websocket_tutorial::server::{self, WsStream};

const USAGE: &str = "usage: chat_server [ADDR] [--ping-ms 5000] [--pong-timeout-ms 10000] \
                     [--queue 256] [--max-connections 10000]";

const MAX_NAME_CHARS: usize = 32;
const MAX_CONTENT_BYTES: usize = 4 * 1024;
const MAX_ROOMS_PER_CLIENT: usize = 16;
/// The most queued messages the writer sends before one flush.
const WRITE_BATCH: usize = 64;

/// What every connection shares.
struct Chat {
    rooms: RoomManager,
    ping_every: Duration,
    pong_timeout: Duration,
    queue: usize,
}

#[tokio::main]
async fn main() -> ExitCode {
    let args = Args::from_env(USAGE, &["ping-ms", "pong-timeout-ms", "queue", "max-connections"]);
    let addr = args.positional(0, server::DEFAULT_ADDR);
    let chat = Arc::new(Chat {
        rooms: RoomManager::new(),
        ping_every: args.period("ping-ms", 5_000),
        pong_timeout: args.millis("pong-timeout-ms", 10_000),
        queue: args.get("queue", 256_usize).max(1),
    });
    let max_connections = args.get("max-connections", 10_000);

    // ANCHOR: config
    let config = WebSocketConfig::default()
        .max_message_size(Some(64 * 1024))
        .max_frame_size(Some(64 * 1024))
        .read_buffer_size(4 * 1024)
        .write_buffer_size(16 * 1024);
    // ANCHOR_END: config

    let listener = match server::bind(&addr).await {
        Ok(listener) => listener,
        Err(e) => return cli::fail(format_args!("cannot listen on {addr}: {e}")),
    };
    let shutdown = server::shutdown_on_ctrl_c();
    server::serve(listener, config, max_connections, shutdown, move |ws, peer, shutdown| {
        connection(ws, peer, shutdown, chat.clone())
    })
    .await;
    ExitCode::SUCCESS
}

/// How a connection ended, and so what (if anything) we still owe the peer.
enum Ending {
    /// The peer closed (its close frame is already answered) or vanished.
    PeerDone,
    /// Writing failed: the peer is gone, and the writer task has ended.
    WriteFailed,
    /// We close, with this code and reason.
    Close(CloseCode, String),
}

// ANCHOR: connection
/// Runs one client from handshake to goodbye.
async fn connection(ws: WsStream, peer: SocketAddr, shutdown: CancellationToken, chat: Arc<Chat>) {
    let (sink, mut stream) = ws.split();
    let (queue, queued) = mpsc::channel(chat.queue);
    let me = chat.rooms.register(queue);
    println!("{peer}: connected as {}", me.id);

    // The writer owns the sink. `stop` asks it to hand the sink back so we
    // can send the close frame ourselves, even past a full queue.
    let stop = CancellationToken::new();
    let mut writer = tokio::spawn(write_loop(sink, queued, chat.ping_every, stop.clone()));

    // Wait for one of: the client is done, the server shuts down, the client
    // is too slow to keep up, or writing failed (the peer is gone).
    let ending = tokio::select! {
        ending = read_loop(&mut stream, me.id, &chat) => ending,
        _ = shutdown.cancelled() => Ending::Close(CloseCode::Away, "server shutting down".into()),
        _ = me.evicted.cancelled() => {
            Ending::Close(CloseCode::Policy, "too slow: send queue full".into())
        }
        _ = &mut writer => Ending::WriteFailed,
    };

    // Leave every room first, so nobody queues more for us while we close.
    // When the whole server is going away, announcing each departure to
    // everyone who is also leaving would cost members x members messages.
    let rooms_left = chat.rooms.remove(me.id);
    if !shutdown.is_cancelled() {
        for (room, username) in rooms_left {
            let left = ServerEvent::Left { room: room.clone(), username }.to_message();
            chat.rooms.broadcast(&room, &left);
        }
    }

    // Take the sink back from the writer (unless it has already ended), so
    // that no task outlives the connection and we can send our close frame.
    stop.cancel();
    let sink = match ending {
        Ending::WriteFailed => None,
        _ => writer.await.ok().map(|(sink, _)| sink),
    };
    if let (Ending::Close(code, reason), Some(mut sink)) = (ending, sink) {
        println!("{peer}: closing with {}: {reason}", u16::from(code));
        close::send(&mut sink, code, &reason).await;
        close::wait_for_reply(&mut stream).await;
    }
    println!("{peer}: disconnected");
}
// ANCHOR_END: connection

type Sink = SplitSink<WsStream, Message>;

// ANCHOR: write_loop
/// Drains the client's queue into the socket, and pings it every
/// `ping_every`. Returns the sink when stopped, so the caller can close.
///
/// Each round waits for at least one message, takes whatever else is already
/// queued (up to [`WRITE_BATCH`]), `feed`s them all and flushes once: under
/// load, one system call carries many messages.
async fn write_loop(
    mut sink: Sink,
    mut queued: mpsc::Receiver<Message>,
    ping_every: Duration,
    stop: CancellationToken,
) -> (Sink, Result<(), tungstenite::Error>) {
    let mut ping = interval_at(Instant::now() + ping_every, ping_every);
    let mut batch = Vec::with_capacity(WRITE_BATCH);
    let result = loop {
        tokio::select! {
            _ = stop.cancelled() => break Ok(()),
            received = queued.recv_many(&mut batch, WRITE_BATCH) => {
                if received == 0 {
                    break Ok(()); // the room manager dropped our queue
                }
            }
            _ = ping.tick() => batch.push(Message::Ping(Default::default())),
        }
        let write = async {
            for msg in batch.drain(..) {
                sink.feed(msg).await?;
            }
            sink.flush().await
        };
        // A client that stops reading makes `write` wait forever; `stop`
        // still gets through.
        tokio::select! {
            _ = stop.cancelled() => break Ok(()),
            written = write => if let Err(e) = written { break Err(e) },
        }
    };
    (sink, result)
}
// ANCHOR_END: write_loop

// ANCHOR: read_loop
/// Reads commands until the client is done or breaks a rule that ends the
/// connection.
///
/// The heartbeat's other half: the writer pings every `ping_every`, and any
/// frame (the pong included) proves the client alive. Silence for longer
/// than `ping_every + pong_timeout` means the connection is half-open (the
/// client's machine vanished without a FIN), so we drop it.
async fn read_loop(stream: &mut SplitStream<WsStream>, me: ClientId, chat: &Chat) -> Ending {
    let allowed_silence = chat.ping_every + chat.pong_timeout;
    loop {
        let msg = match timeout(allowed_silence, stream.next()).await {
            Err(_) => return Ending::Close(CloseCode::Error, "ping timeout".into()),
            Ok(None) => return Ending::PeerDone,
            Ok(Some(Err(e))) => {
                return match close::code_for(&e) {
                    // For example 1009 for a frame over 64 KiB.
                    Some(code) => Ending::Close(code, e.to_string()),
                    None => Ending::PeerDone,
                };
            }
            Ok(Some(Ok(msg))) => msg,
        };
        match msg {
            Message::Text(_) => {
                match ClientMessage::try_from(&msg) {
                    Ok(command) => handle(command, me, chat),
                    Err(e) => reply_error(chat, me, e),
                }
                // Fairness: a burst from this client is already in our read
                // buffer, so `next()` would return at once, again and again,
                // filling every member's queue before their writers run,
                // and they, not the sender, would be evicted. Yielding lets
                // the writers we just woke drain their queues first.
                tokio::task::yield_now().await;
            }
            Message::Binary(_) => {
                reply_error(chat, me, "binary frames are not supported: send JSON text")
            }
            // Pings are answered by tungstenite; pongs only prove life. After
            // the client's close frame the stream ends on the next read.
            Message::Ping(_) | Message::Pong(_) | Message::Close(_) | Message::Frame(_) => {}
        }
    }
}
// ANCHOR_END: read_loop

// ANCHOR: handle
/// Carries out one command. Every refusal is an `Error` event to the sender.
fn handle(command: ClientMessage, me: ClientId, chat: &Chat) {
    let rooms = &chat.rooms;
    match command {
        ClientMessage::Join { room, username } => {
            if let Err(e) = check_name("username", &username).and(check_name("room", &room)) {
                return reply_error(chat, me, e);
            }
            if rooms.rooms_of(me).len() >= MAX_ROOMS_PER_CLIENT {
                return reply_error(chat, me, format!("at most {MAX_ROOMS_PER_CLIENT} rooms"));
            }
            match rooms.join(me, &room, &username) {
                Ok(()) => {
                    rooms.broadcast(
                        &room,
                        &ServerEvent::Joined { room: room.clone(), username }.to_message(),
                    );
                }
                Err(e) => reply_error(chat, me, format!("cannot join {room:?}: {e}")),
            }
        }
        ClientMessage::Leave { room } => match rooms.leave(me, &room) {
            Ok(username) => {
                // The remaining members and the leaver itself hear of it.
                let left = ServerEvent::Left { room: room.clone(), username }.to_message();
                rooms.broadcast(&room, &left);
                rooms.send_to(me, left);
            }
            Err(e) => reply_error(chat, me, format!("cannot leave {room:?}: {e}")),
        },
        ClientMessage::Message { room, content } => {
            if content.is_empty() || content.len() > MAX_CONTENT_BYTES {
                return reply_error(
                    chat,
                    me,
                    format!("content must be 1 to {MAX_CONTENT_BYTES} bytes"),
                );
            }
            // The server stamps the time and the room's next `seq`; the
            // message is serialised once, inside `make`, for every member.
            let make = |username: &str, seq: u64| {
                ServerEvent::Message {
                    room: room.clone(),
                    username: username.to_string(),
                    content,
                    timestamp: Utc::now().to_rfc3339_opts(SecondsFormat::Millis, true),
                    seq,
                }
                .to_message()
            };
            if let Err(e) = rooms.say(me, &room, make) {
                reply_error(chat, me, format!("cannot send to {room:?}: {e}"));
            }
        }
        ClientMessage::Ping => {
            rooms.send_to(me, ServerEvent::Pong.to_message());
        }
        ClientMessage::Pong => {}
    }
}
// ANCHOR_END: handle

fn check_name(what: &str, name: &str) -> Result<(), String> {
    let chars = name.chars().count();
    if chars == 0 || chars > MAX_NAME_CHARS || name.trim().is_empty() {
        return Err(format!("{what} must be 1 to {MAX_NAME_CHARS} characters"));
    }
    if name.chars().any(char::is_control) {
        return Err(format!("{what} must not contain control characters"));
    }
    Ok(())
}

fn reply_error(chat: &Chat, me: ClientId, message: impl ToString) {
    chat.rooms.send_to(me, ServerEvent::Error { message: message.to_string() }.to_message());
}
