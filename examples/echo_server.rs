//! Chapter 2.2: a basic WebSocket server that echoes every message back.
//!
//! What it teaches: the accept loop, upgrading a TCP connection to a
//! WebSocket, echoing text and binary frames, the close handshake, and a
//! server that no single client can crash: no `expect` on anything a peer
//! sends, a deadline on the handshake, Ctrl-C closes every connection with
//! code 1001 (going away).
//!
//! Run it (terminal 1), then talk to it (terminal 2):
//!
//! ```text
//! cargo run --example echo_server                  # or: -- 127.0.0.1:0 for any free port
//! cargo run --example echo_client -- ws://127.0.0.1:9001 "hello"
//! ```
//!
//! You will see `listening on ws://127.0.0.1:9001` on stdout, then on stderr
//! a log line when a client connects and one when it leaves, each naming the
//! client's address (`RUST_LOG=warn` hides them); the client prints `hello`
//! and exits.
//!
//! Limits: messages up to 16 MiB (`max_message_size`; the default 64 MiB lets
//! one client make us hold 64 MiB), frames likewise; an 8 KiB read buffer per
//! connection instead of the default 128 KiB, which is eagerly allocated for
//! every connection. At most 1,024 connections at once.
//!
//! Docs: docs/02-tokio-tungstenite.md

use std::net::SocketAddr;
use std::process::ExitCode;

use clap::Parser;
use futures_util::{SinkExt, StreamExt};
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};
use websocket_tutorial::close;
use websocket_tutorial::error::is_disconnect;
use websocket_tutorial::output;
use websocket_tutorial::server::{self, WsStream};

const MAX_CONNECTIONS: usize = 1024;

/// Echoes every WebSocket message back to its sender.
#[derive(Parser)]
struct Args {
    /// The address to listen on, IP:PORT; port 0 picks a free port.
    #[arg(default_value = server::DEFAULT_ADDR, value_parser = server::parse_addr)]
    addr: SocketAddr,
}

// ANCHOR: main
#[tokio::main]
async fn main() -> ExitCode {
    let _log = output::init_logging();
    // `--help` or a mistake ends the program here (clap exits 0 or 2).
    let Args { addr } = Args::parse();

    // ANCHOR: config
    let config = WebSocketConfig::default()
        .read_buffer_size(8 * 1024)
        .max_message_size(Some(16 << 20))
        .max_frame_size(Some(16 << 20));
    // ANCHOR_END: config

    let shutdown = server::shutdown_on_ctrl_c();
    let listener = match server::bind(addr).await {
        Ok(listener) => listener,
        Err(e) => return output::fail(format_args!("cannot listen on {addr}: {e}")),
    };
    server::serve(listener, config, MAX_CONNECTIONS, shutdown, echo).await;
    ExitCode::SUCCESS
}
// ANCHOR_END: main

// ANCHOR: echo
/// Echoes one connection until the client closes it, it fails, or the server
/// shuts down. (Its log lines name the client: `serve` runs it inside a span
/// that carries the client's address.)
async fn echo(mut ws: WsStream, shutdown: CancellationToken) {
    info!("connected");
    loop {
        // Wait for one of: the next message, or shutdown.
        let msg = tokio::select! {
            msg = ws.next() => msg,
            _ = shutdown.cancelled() => {
                close::handshake(&mut ws, CloseCode::Away, "server shutting down").await;
                break;
            }
        };
        let reply = match msg {
            Some(Ok(msg @ (Message::Text(_) | Message::Binary(_)))) => msg,
            // tungstenite answers pings (and the peer's close) by itself;
            // it sends the reply on our next read or write.
            Some(Ok(Message::Ping(_) | Message::Pong(_) | Message::Frame(_))) => continue,
            // The peer's close frame: our reply is already queued, and the
            // stream ends on the next read.
            Some(Ok(Message::Close(_))) => continue,
            None => break,
            Some(Err(e)) => {
                // A vanished peer, or one that broke a rule (for example a
                // message over the size limit: close code 1009).
                server::close_after_error(&mut ws, &e).await;
                break;
            }
        };
        // Text and binary payloads are reference counted: echoing one does
        // not copy it.
        if let Err(e) = ws.send(reply).await {
            if !is_disconnect(&e) {
                warn!(error = %e, "send failed");
            }
            break;
        }
    }
    info!("disconnected");
}
// ANCHOR_END: echo
