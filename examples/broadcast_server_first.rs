//! Chapter 4.1, the first version: the smallest broadcast server that is
//! correct. Every text or binary message any client sends is relayed to
//! every connected client, the sender included.
//!
//! What it teaches: fan-out with `tokio::sync::broadcast`, one channel for
//! the whole server and a receiver per client; a client that falls behind
//! (`RecvError::Lagged`) is told how many messages it missed and carries on;
//! each connection reads and writes at the same time, and when one side
//! ends, so does the other. No panic on anything a client sends: a message
//! over 64 KiB closes its sender's connection with 1009, and nobody else's;
//! Ctrl-C closes every connection with 1001 (going away). Chapter 4.1 then
//! grows it, step by step, into `broadcast_server`.
//!
//! ```text
//! cargo run --example broadcast_server_first                # terminal 1
//! cargo run --example full_client -- ws://127.0.0.1:9001    # terminals 2 and 3
//! ```
//!
//! Docs: docs/04-server-development.md

use futures_util::{SinkExt, StreamExt};
use tokio::net::TcpStream;
use tokio::sync::broadcast::{self, Sender, error::RecvError};
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::protocol::{WebSocketConfig, frame::coding::CloseCode};
use tokio_util::{sync::CancellationToken, task::TaskTracker};
use tracing::{Instrument, info, info_span, warn};
use websocket_tutorial::{output, server, server::Ending};

// ANCHOR: all
/// Relays every text and binary message any client sends to every client.
#[derive(clap::Parser)]
struct Args {
    /// The address to listen on, IP:PORT; port 0 picks a free port.
    #[arg(default_value = server::DEFAULT_ADDR, value_parser = server::parse_addr)]
    addr: std::net::SocketAddr,
    /// Messages kept for a client that falls behind.
    #[arg(long, default_value_t = 128, value_parser = clap::value_parser!(u16).range(1..))]
    capacity: u16,
}

#[tokio::main]
async fn main() -> std::process::ExitCode {
    let _log = output::init_logging();
    let Args { addr, capacity } = clap::Parser::parse();
    // One channel for the whole server; every connection subscribes to it.
    let (hub, _) = broadcast::channel(capacity.into());
    let shutdown = server::shutdown_on_signal();
    let listener = match server::listen(addr).await {
        Ok(listener) => listener,
        Err(e) => return output::fail(format_args!("cannot listen on {addr}: {e}")),
    };
    let connections = TaskTracker::new();
    while let Some(accepted) = shutdown.run_until_cancelled(listener.accept()).await {
        if let Ok((stream, peer)) = accepted.inspect_err(|e| warn!(error = %e, "accept failed")) {
            // Its log lines name the client: `connection{peer=IP:PORT}`.
            let span = info_span!("connection", %peer);
            connections.spawn(client(stream, hub.clone(), shutdown.clone()).instrument(span));
        }
    }
    connections.close();
    let _ = tokio::time::timeout(server::SHUTDOWN_GRACE, connections.wait()).await;
    std::process::ExitCode::SUCCESS
}

/// Serves one client until it leaves, breaks a rule, or Ctrl-C: what it
/// sends goes to everyone, what anyone sends goes to it.
async fn client(stream: TcpStream, hub: Sender<Message>, shutdown: CancellationToken) {
    // Each message is multiplied by the number of clients: keep them small.
    let limit = Some(64 * 1024);
    let config = WebSocketConfig::default().max_message_size(limit).max_frame_size(limit);
    let handshake = tokio_tungstenite::accept_async_with_config(stream, Some(config));
    let ws = match shutdown.run_until_cancelled(handshake).await {
        Some(Ok(ws)) => ws,
        Some(Err(e)) => return warn!(error = %e, "handshake failed"),
        None => return, // Ctrl-C came first
    };
    // Subscribed before the line: whoever waits for it (a test) knows that
    // this client gets every message published from then on.
    let mut rx = hub.subscribe();
    info!("connected");
    let (mut sink, mut stream) = ws.split();
    // Reading and writing at once, so that a client slow to read is still
    // heard; whichever ends first ends the other (`select!` drops it).
    let reading = async {
        while let Some(msg) = stream.next().await {
            match msg {
                // Never waits: a client that reads slowly falls behind alone.
                Ok(msg) if msg.is_text() || msg.is_binary() => _ = hub.send(msg),
                Ok(_) => continue, // tungstenite answers pings and close frames
                Err(e) => return Ending::ReadFailed(e), // 1009 for a big one
            }
            // Let the writers just woken take it before we publish more: a
            // burst would overrun the channel.
            tokio::task::yield_now().await;
        }
        Ending::Done
    };
    let writing = async {
        loop {
            let msg = match rx.recv().await {
                Ok(msg) => msg,
                // It fell behind: tell it how far, and carry on.
                Err(RecvError::Lagged(n)) => format!("[server] you missed {n} messages").into(),
                Err(RecvError::Closed) => return Ending::Done,
            };
            if let Err(e) = sink.send(msg).await {
                return Ending::SendFailed(e);
            }
        }
    };
    let ending = tokio::select! {
        _ = shutdown.cancelled() => Ending::Close(CloseCode::Away, "server shutting down"),
        ending = reading => ending,
        ending = writing => ending,
    };
    // Both halves again, for the close code the client is owed, if any.
    let Ok(mut ws) = stream.reunite(sink) else { return }; // (they are one stream's)
    ending.close(&mut ws).await;
    info!("disconnected");
}
// ANCHOR_END: all
