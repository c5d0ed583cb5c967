//! Chapter 2.2: a basic WebSocket server that echoes every message back.
//!
//! What it teaches: the accept loop, upgrading a TCP connection to a
//! WebSocket, echoing text and binary frames, the close handshake, and a
//! server that no single client can crash or hold forever: no `expect` on
//! anything a peer sends, a deadline on the handshake and on every echo, a
//! heartbeat that drops half-open connections, Ctrl-C closes every
//! connection with code 1001 (going away). One `select!` per connection,
//! over shutdown, the socket and the heartbeat's timer.
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
//! every connection.
//!
//! Settings:
//! - `--max-connections 1024`: connections served at once; more wait in the
//!   kernel's backlog for a free slot;
//! - `--ping-ms 5000` and `--pong-timeout-ms 10000`: a ping every 5 s, and a
//!   client silent for longer than both together (any frame counts, a pong
//!   included) is closed with 1011 `ping timeout`. Its machine has most
//!   likely vanished without a FIN, and its connection would otherwise hold
//!   a slot forever;
//! - `--send-timeout-ms 5000`: the longest an echo may wait for the client
//!   to take it. A client that sends without reading fills its socket
//!   buffers and is closed with 1008 `too slow: a write timed out`;
//! - `--allow-origin ORIGIN` (repeatable): the web pages allowed to connect,
//!   `scheme://host[:port]`, or `null` for a page opened from a file; a
//!   browser's handshake from any other origin gets HTTP 403. Without it,
//!   every origin is accepted, and the server says so once at start;
//! - `--max-per-ip 100`: open connections allowed from one IP address; one
//!   more gets HTTP 429 (chapter 10, docs/10-security.md);
//! - `--tls-cert PEM --tls-key PEM`: serve `wss://` (TLS with rustls), and
//!   say `listening on wss://IP:PORT` (chapter 10.6).
//!
//! Docs: docs/02-tokio-tungstenite.md (2.3, docs/02-inside-the-full-programs.md,
//! walks through this program)

use std::pin::pin;
use std::process::ExitCode;

use clap::Parser;
use futures_util::{SinkExt, StreamExt};
use tokio::time::{Instant, sleep_until, timeout};
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tokio_util::sync::CancellationToken;
use tracing::info;
use websocket_tutorial::heartbeat::Due;
use websocket_tutorial::output;
use websocket_tutorial::server::{self, Deadlines, Ending, ServerArgs, WsStream};

/// Echoes every WebSocket message back to its sender.
#[derive(Parser)]
#[command(allow_negative_numbers = true)] // `--ping-ms -1`: a bad value, not a flag
struct Args {
    #[command(flatten)]
    server: ServerArgs,
    #[command(flatten)]
    deadlines: Deadlines,
}

// ANCHOR: main
#[tokio::main]
async fn main() -> ExitCode {
    let _log = output::init_logging();
    // `--help` or a mistake ends the program here (clap exits 0 or 2).
    let Args { server, deadlines } = Args::parse();

    // ANCHOR: config
    let config = WebSocketConfig::default()
        .read_buffer_size(8 * 1024)
        .max_message_size(Some(16 << 20))
        .max_frame_size(Some(16 << 20));
    // ANCHOR_END: config

    // Binds, says `listening on ws://IP:PORT`, and runs `echo` for every
    // connection until Ctrl-C; then the exit code.
    server::run(server, config, move |ws, shutdown| echo(ws, shutdown, deadlines)).await
}
// ANCHOR_END: main

// ANCHOR: echo
/// Echoes one connection until the client closes it, it fails, it goes
/// silent, or the server shuts down. (Its log lines name the client: `serve`
/// runs it inside a span that carries the client's address.)
async fn echo(mut ws: WsStream, shutdown: CancellationToken, deadlines: Deadlines) {
    info!("connected");
    // A client whose machine vanished sends no FIN: without the heartbeat
    // its connection would hold one of the `--max-connections` slots
    // forever. `Heartbeat` says when to ping and when the silence has lasted
    // too long; the one timer is reset to whichever comes first.
    let mut heartbeat = deadlines.heartbeat.start();
    let mut heartbeat_timer = pin!(sleep_until(heartbeat.next_wake()));
    let mut shutting_down = pin!(shutdown.cancelled());
    let ending = loop {
        // Wait for one of: shutdown, the next message, or the heartbeat.
        // `biased`: in this order, so that a pong that arrived while we were
        // writing counts before the heartbeat judges the silence.
        let reply = tokio::select! {
            biased;
            _ = &mut shutting_down => break Ending::Close(CloseCode::Away, "server shutting down"),
            msg = ws.next() => {
                // Any frame, a pong included, proves the client alive.
                heartbeat.heard(Instant::now());
                match msg {
                    Some(Ok(msg @ (Message::Text(_) | Message::Binary(_)))) => msg,
                    // tungstenite answers pings (and the peer's close) by
                    // itself; it sends the reply on our next read or write.
                    // After the peer's close frame the stream ends on the
                    // next read.
                    Some(Ok(_)) => continue,
                    None => break Ending::Done,
                    // A vanished peer, or one that broke a rule (for example
                    // a message over the size limit: 1009).
                    Some(Err(e)) => break Ending::ReadFailed(e),
                }
            }
            due = heartbeat.due(heartbeat_timer.as_mut()) => match due {
                Due::Ping => Message::Ping(Default::default()),
                Due::Dead => break Ending::Close(CloseCode::Error, "ping timeout"),
            },
        };
        // A client that sends without reading fills its socket buffers, and
        // then this write waits for room that never comes, while we read
        // nothing. So it has a deadline, and it gives way to shutdown.
        // (Text and binary payloads are reference counted: echoing one does
        // not copy it.)
        let sent = tokio::select! {
            biased;
            _ = &mut shutting_down => break Ending::Close(CloseCode::Away, "server shutting down"),
            sent = timeout(deadlines.send_timeout, ws.send(reply)) => sent,
        };
        match sent {
            Ok(Ok(())) => {}
            Ok(Err(e)) => break Ending::SendFailed(e),
            Err(_) => break Ending::Close(CloseCode::Policy, "too slow: a write timed out"),
        }
    };
    // The close code that says why, if the client is owed one.
    ending.close(&mut ws).await;
    info!("disconnected");
}
// ANCHOR_END: echo
