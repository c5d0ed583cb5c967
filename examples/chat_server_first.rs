//! Chapter 6.1, the first version: the smallest chat server with rooms that
//! is correct.
//!
//! What it teaches: a chat server is the room manager of chapter 4.2 behind
//! the JSON protocol of chapter 5.1. Each connection registers with the
//! rooms and gets an outbox, bounded in bytes, that the rooms queue its
//! events in; one `select!` loop per connection reads the client's commands
//! and writes what its outbox holds. Every command is checked and carried
//! out, and every refusal is an `Error` event with a code and the room it
//! was about, while the connection stays open. A client that stops reading
//! is evicted when its outbox passes the budget (1008), and nobody else
//! waits for it; Ctrl-C closes everyone with 1001. Chapter 6.1 then grows it,
//! step by step, into `chat_server`.
//!
//! ```text
//! cargo run --example chat_server_first                          # terminal 1
//! cargo run --example chat_client -- ws://127.0.0.1:9001 alice   # terminal 2
//! cargo run --example chat_client -- ws://127.0.0.1:9001 bob     # terminal 3
//! ```
//!
//! Docs: docs/06-case-studies.md

use std::sync::Arc;

use futures_util::{SinkExt, StreamExt};
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::{self, Message, protocol::frame::coding::CloseCode};
use tokio_util::{sync::CancellationToken, task::TaskTracker};
use websocket_tutorial::protocol::{ClientMessage, ErrorCode, MAX_ROOMS_PER_CLIENT, ServerEvent};
use websocket_tutorial::protocol::{check_content, check_name, timestamp_now};
use websocket_tutorial::rooms::{self, Member, RoomManager};
use websocket_tutorial::{close, output, server};

// ANCHOR: all
/// A chat server with rooms, speaking the JSON protocol of chapter 5.1.
#[derive(clap::Parser)]
struct Args {
    /// The address to listen on, IP:PORT; port 0 picks a free port.
    #[arg(default_value = server::DEFAULT_ADDR, value_parser = server::parse_addr)]
    addr: std::net::SocketAddr,
}

#[tokio::main]
async fn main() -> std::process::ExitCode {
    let _log = output::init_logging();
    let Args { addr } = clap::Parser::parse();
    let shutdown = server::shutdown_on_signal();
    // Prints `listening on ws://IP:PORT`, with the port it got.
    let listener = match server::listen(addr).await {
        Ok(listener) => listener,
        Err(e) => return output::fail(format_args!("cannot listen on {addr}: {e}")),
    };
    // The rooms every connection shares; each client's outbox may hold
    // 1 MiB not yet written (chapter 4.2).
    let rooms = Arc::new(RoomManager::new(rooms::Config::default()));
    let connections = TaskTracker::new();
    while let Some(accepted) = shutdown.run_until_cancelled(listener.accept()).await {
        match accepted {
            Ok((stream, peer)) => {
                let (rooms, shutdown) = (rooms.clone(), shutdown.clone());
                connections.spawn(async move {
                    if let Err(e) = chat(stream, &rooms, shutdown).await {
                        tracing::warn!(%peer, error = %e, "connection failed");
                    }
                });
            }
            Err(e) => tracing::warn!(error = %e, "accept failed"),
        }
    }
    // Everyone is leaving: nobody needs to hear who left (chapter 4.2).
    rooms.shutting_down();
    connections.close();
    let _ = tokio::time::timeout(server::SHUTDOWN_GRACE, connections.wait()).await;
    std::process::ExitCode::SUCCESS
}

/// Serves one client until it closes, is evicted, or Ctrl-C. Any error ends
/// this connection only; dropping `me` takes the client out of its rooms.
async fn chat(
    stream: TcpStream,
    rooms: &Arc<RoomManager>,
    shutdown: CancellationToken,
) -> Result<(), tungstenite::Error> {
    let handshake = shutdown.run_until_cancelled(tokio_tungstenite::accept_async(stream));
    let Some(mut ws) = handshake.await.transpose()? else { return Ok(()) };
    // This client's handle on the rooms, and the receiving end of its outbox.
    let (me, mut outgoing) = rooms.register();
    let (code, reason) = loop {
        // Wait for one of: Ctrl-C, eviction, events queued for this client,
        // a frame from it. `biased`: in this order, so what we owe the
        // client goes out before we read its next command.
        tokio::select! {
            biased;
            _ = shutdown.cancelled() => break (CloseCode::Away, "server shutting down"),
            _ = me.evicted() => break (CloseCode::Policy, "too slow: outbox over budget"),
            batch = outgoing.next_batch() => {
                let bytes = batch.frame_bytes();
                let write = async {
                    for msg in batch {
                        ws.feed(msg).await?;
                    }
                    ws.flush().await // one flush for the whole batch
                };
                // A client that does not read holds up this write; the next
                // turn of the loop handles Ctrl-C or its eviction.
                tokio::select! {
                    written = write => written?,
                    _ = shutdown.cancelled() => continue,
                    _ = me.evicted() => continue,
                }
                // The budget comes back once the batch is written.
                outgoing.written(bytes);
            }
            frame = ws.next() => match frame.transpose()? {
                Some(msg) if msg.is_text() || msg.is_binary() => handle(&msg, &me),
                // The client closed: nothing may follow its close frame but
                // the answer tungstenite queued, which the next read sends.
                Some(Message::Close(_)) | None => {
                    close::answer(&mut ws).await;
                    return Ok(());
                }
                Some(_) => {} // a ping (tungstenite answers it) or a pong
            },
        }
    };
    drop(me); // out of every room before the goodbye
    close::handshake(&mut ws, code, reason).await;
    Ok(())
}

/// Carries out one command. Every refusal is an `Error` event to the
/// sender, naming the room the command was about.
fn handle(frame: &Message, me: &Member) {
    let command = match ClientMessage::try_from(frame) {
        Ok(command) => command,
        Err(e) => return refuse(me, None, ErrorCode::Invalid, e),
    };
    match command {
        ClientMessage::Join { room, username, since, .. } => {
            if let Err(e) = check_name("username", &username).and(check_name("room", &room)) {
                return refuse(me, Some(&room), ErrorCode::BadName, e);
            }
            if me.rooms().len() >= MAX_ROOMS_PER_CLIENT {
                let refusal = format!("at most {MAX_ROOMS_PER_CLIENT} rooms");
                return refuse(me, Some(&room), ErrorCode::TooManyRooms, refusal);
            }
            // Announced to the room, with what a resuming client missed.
            if let Err(e) = me.join_since(&room, &username, since) {
                refuse(me, Some(&room), e.code(), format!("cannot join {room:?}: {e}"));
            }
        }
        ClientMessage::Leave { room } => {
            if let Err(e) = me.leave(&room) {
                refuse(me, Some(&room), e.code(), format!("cannot leave {room:?}: {e}"));
            }
        }
        ClientMessage::Message { room, content } => {
            if let Err(e) = check_content(&content) {
                return refuse(me, Some(&room), ErrorCode::BadContent, e);
            }
            // The server names the sender, stamps the time and numbers it;
            // built once, for every member.
            let timestamp = timestamp_now();
            let said = me.say(&room, |username, seq| {
                let (room, username) = (room.clone(), username.to_string());
                ServerEvent::Message { room, username, content, timestamp, seq }.to_message()
            });
            if let Err(e) = said {
                refuse(me, Some(&room), e.code(), format!("cannot send to {room:?}: {e}"));
            }
        }
        ClientMessage::Members { room } => match me.members(&room) {
            Ok(usernames) => _ = me.send(ServerEvent::Members { room, usernames }.to_message()),
            Err(e) => refuse(me, Some(&room), e.code(), format!("cannot list {room:?}: {e}")),
        },
        ClientMessage::Ping => _ = me.send(ServerEvent::Pong.to_message()),
        ClientMessage::Pong => {}
    }
}

/// An `Error` event: a code for a program, a message for a person.
fn refuse(me: &Member, room: Option<&str>, code: ErrorCode, message: impl ToString) {
    let room = room.map(str::to_string);
    me.send(ServerEvent::Error { room, code, message: message.to_string() }.to_message());
}
// ANCHOR_END: all
