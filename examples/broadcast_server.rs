//! Chapter 4.1: a broadcast server. Every text or binary message any client
//! sends is relayed to every connected client, the sender included.
//!
//! What it teaches: fan-out with `tokio::sync::broadcast`, and the three
//! things the original chapter's version gets wrong:
//! - a client that falls behind (`RecvError::Lagged`) is *told* how many
//!   messages it missed and keeps receiving, instead of silently going deaf;
//! - each connection has a reader and a writer, and when either ends, the
//!   other ends too: no task outlives its connection;
//! - the channel carries `Message`s, whose payload is reference counted, so a
//!   message relayed to 1,000 clients is stored once, not copied 1,000 times.
//!
//! The writer also *batches*: it waits for one message, takes whatever else
//! is already queued (up to 64), and flushes once, so a busy room costs one
//! system call per batch rather than one per message.
//!
//! Run it (terminal 1), then connect two or more clients (terminals 2, 3):
//!
//! ```text
//! cargo run --example broadcast_server            # or: -- 127.0.0.1:0 --capacity 16
//! cargo run --example full_client -- ws://127.0.0.1:9001
//! cargo run --example full_client -- ws://127.0.0.1:9001
//! ```
//!
//! Type a line in any client: every client, the sender too, prints it as
//! `< line`. The server prints `listening on ws://127.0.0.1:9001`, then logs
//! (on stderr) each connect and disconnect with the client's address. A client that falls more than
//! `--capacity` messages (default 128) behind receives
//! `[server] you missed N messages` and then carries on.
//!
//! Binary frames are relayed like text (their `Bytes` payload is reference
//! counted too); a client that cannot use them can ignore them.
//!
//! Limits: messages (and frames) up to 64 KiB. Every message is multiplied by
//! the number of clients, so a server that relays must keep them small; a
//! bigger one closes its sender's connection with 1009 (too big). A 4 KiB read
//! buffer per connection instead of the default 128 KiB: the read buffer is
//! allocated up front for every connection, and a broadcast server holds many
//! mostly idle ones. At most 1,024 connections at once.
//!
//! Docs: docs/04-server-development.md

use std::net::SocketAddr;
use std::process::ExitCode;

use clap::Parser;
use clap::builder::RangedU64ValueParser;
use futures_util::stream::{SplitSink, SplitStream};
use futures_util::{SinkExt, StreamExt};
use tokio::sync::broadcast::error::{RecvError, TryRecvError};
use tokio::sync::broadcast::{self, Receiver, Sender};
use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tokio_tungstenite::tungstenite::{self, Message};
use tokio_util::sync::CancellationToken;
use tracing::{Instrument, Span, error, info, warn};
use websocket_tutorial::close;
use websocket_tutorial::error::is_disconnect;
use websocket_tutorial::output;
use websocket_tutorial::server::{self, WsStream};

const MAX_CONNECTIONS: usize = 1024;
/// The channel allocates `capacity` slots up front; keep a typo from
/// asking for gigabytes.
const MAX_CAPACITY: u64 = 1 << 16;
/// How many queued messages one write gathers before it flushes.
const BATCH: usize = 64;

/// Relays every message any client sends to every connected client.
#[derive(Parser)]
#[command(allow_negative_numbers = true)] // `--capacity -1`: a bad value, not a flag
struct Args {
    /// The address to listen on, IP:PORT; port 0 picks a free port.
    #[arg(default_value = server::DEFAULT_ADDR, value_parser = server::parse_addr)]
    addr: SocketAddr,
    /// Messages kept for a client that falls behind (tokio rounds it up to
    /// a power of two).
    #[arg(
        long,
        value_name = "N",
        default_value_t = 128,
        value_parser = RangedU64ValueParser::<usize>::new().range(1..=MAX_CAPACITY)
    )]
    capacity: usize,
}

#[tokio::main]
async fn main() -> ExitCode {
    let _log = output::init_logging();
    let Args { addr, capacity } = Args::parse(); // --help or a mistake: clap exits 0 or 2

    // ANCHOR: config
    let config = WebSocketConfig::default()
        .read_buffer_size(4 * 1024)
        .max_message_size(Some(64 * 1024))
        .max_frame_size(Some(64 * 1024));
    // ANCHOR_END: config

    // ANCHOR: channel
    // One channel for the whole server. Each connection subscribes; the
    // channel keeps the last `capacity` messages for the slowest receiver.
    // The receiver the channel starts with is not needed: dropping it means
    // `send` fails while nobody is connected, which is fine to ignore.
    let (hub, _) = broadcast::channel::<Message>(capacity);
    // ANCHOR_END: channel

    let shutdown = server::shutdown_on_ctrl_c();
    let listener = match server::bind(addr).await {
        Ok(listener) => listener,
        Err(e) => return output::fail(format_args!("cannot listen on {addr}: {e}")),
    };
    server::serve(listener, config, MAX_CONNECTIONS, shutdown, move |ws, shutdown| {
        client(ws, shutdown, hub.clone())
    })
    .await;
    ExitCode::SUCCESS
}

// ANCHOR: client
/// Serves one client: this task reads and publishes, a second task writes
/// what the channel delivers. Returns when both have ended.
async fn client(ws: WsStream, shutdown: CancellationToken, hub: Sender<Message>) {
    // Subscribe before saying "connected", so that anyone who waits for that
    // line knows this client will see every message published from then on.
    let rx = hub.subscribe();
    info!("connected");

    let (sink, mut stream) = ws.split();
    // Cancelled as soon as either half ends, so the other one stops too: a
    // dead writer must not leave a reader publishing for nobody, and a
    // vanished reader must not leave a writer waiting for messages forever.
    let done = CancellationToken::new();
    // The writer logs inside this connection's span too (a spawned task
    // does not inherit it by itself).
    let writer = tokio::spawn(
        write_loop(sink, rx, shutdown.clone(), done.clone()).instrument(Span::current()),
    );

    let failure = read_loop(&mut stream, &hub, &shutdown, &done).await;
    done.cancel();
    match writer.await {
        // A client that broke a rule (a message over 64 KiB, invalid UTF-8)
        // is told why with a close code; that needs both halves again.
        Ok(sink) => {
            if let Some(err) = failure {
                if let Ok(mut ws) = stream.reunite(sink) {
                    server::close_after_error(&mut ws, &err).await;
                }
            }
        }
        Err(e) => error!(error = %e, "writer task failed"),
    }
    info!("disconnected");
}
// ANCHOR_END: client

// ANCHOR: read_loop
/// Publishes every text and binary message the client sends, until the
/// client leaves, the writer ends, or the server shuts down. Returns the
/// error that ended the connection, if one did.
async fn read_loop(
    stream: &mut SplitStream<WsStream>,
    hub: &Sender<Message>,
    shutdown: &CancellationToken,
    done: &CancellationToken,
) -> Option<tungstenite::Error> {
    let _done_on_exit = done.clone().drop_guard(); // even if this panics
    loop {
        // Wait for one of: shutdown, the writer ending, or the next message.
        // `biased`: at shutdown the writer sends our close frame and then
        // ends, so both tokens fire; shutdown must win, so that we read the
        // client's answer and the close handshake completes.
        let msg = tokio::select! {
            biased;
            _ = shutdown.cancelled() => {
                close::wait_for_reply(stream).await;
                return None;
            }
            _ = done.cancelled() => return None,
            msg = stream.next() => msg,
        };
        match msg {
            Some(Ok(msg @ (Message::Text(_) | Message::Binary(_)))) => {
                // Never blocks: a slow receiver falls behind on its own.
                // Fails only when nobody is subscribed, which cannot be the
                // case while this client's own writer is.
                let _ = hub.send(msg);
                // Fairness: a burst already in our read buffer would
                // otherwise be published message after message, overrunning
                // the channel before any writer runs, so that clients that
                // read fine would be told they missed messages. Yielding
                // lets the writers we just woke forward it first.
                tokio::task::yield_now().await;
            }
            // tungstenite answers pings and the client's close frame by
            // itself; after a close the stream ends on the next read.
            Some(Ok(Message::Ping(_) | Message::Pong(_) | Message::Frame(_))) => {}
            Some(Ok(Message::Close(_))) => {}
            None => return None,
            Some(Err(e)) => return Some(e),
        }
    }
}
// ANCHOR_END: read_loop

// ANCHOR: write_loop
/// The only task that writes to this client's socket. Forwards what the
/// channel delivers until the reader ends, writing fails, or the server
/// shuts down (then it sends close 1001). Hands the sink back, so that the
/// caller can still close the connection with a code.
async fn write_loop(
    mut sink: SplitSink<WsStream, Message>,
    mut rx: Receiver<Message>,
    shutdown: CancellationToken,
    done: CancellationToken,
) -> SplitSink<WsStream, Message> {
    let _done_on_exit = done.clone().drop_guard(); // even if this panics
    loop {
        // Wait for one of: the reader ending, shutdown, or a batch written.
        // The write is raced too: a client that stopped reading must not
        // keep this task from noticing either.
        let written = tokio::select! {
            biased;
            _ = done.cancelled() => break,
            _ = shutdown.cancelled() => {
                close::send(&mut sink, CloseCode::Away, "server shutting down").await;
                break;
            }
            written = write_batch(&mut sink, &mut rx) => written,
        };
        match written {
            Ok(true) => {}
            Ok(false) => break, // the channel is gone: nothing more to send
            Err(e) => {
                if !is_disconnect(&e) {
                    warn!(error = %e, "send failed");
                }
                break;
            }
        }
    }
    sink
}

/// Waits for the next message for this client, then writes it and whatever
/// else is already queued (up to [`BATCH`]), and flushes once. `Ok(false)`
/// when the channel has closed.
async fn write_batch(
    sink: &mut SplitSink<WsStream, Message>,
    rx: &mut Receiver<Message>,
) -> Result<bool, tungstenite::Error> {
    let first = match rx.recv().await {
        Ok(msg) => msg,
        Err(RecvError::Lagged(missed)) => missed_notice(missed),
        Err(RecvError::Closed) => return Ok(false),
    };
    // `feed` queues without flushing; the one `flush` below sends the batch.
    sink.feed(first).await?;
    for _ in 1..BATCH {
        let msg = match rx.try_recv() {
            Ok(msg) => msg,
            Err(TryRecvError::Lagged(missed)) => missed_notice(missed),
            Err(TryRecvError::Empty | TryRecvError::Closed) => break,
        };
        sink.feed(msg).await?;
    }
    sink.flush().await?;
    Ok(true)
}

/// What a client that fell behind receives in place of what it missed.
///
/// This is the "tell" policy: the client keeps its connection and learns
/// exactly how big its gap is. It fits a broadcast: every message stands on
/// its own, the server keeps no per-client state to get out of step, and
/// disconnecting the client would only make it miss more while it
/// reconnects. The chat server (chapter 6.1) uses the other policy and
/// disconnects a client that falls behind.
fn missed_notice(missed: u64) -> Message {
    Message::text(format!("[server] you missed {missed} messages"))
}
// ANCHOR_END: write_loop
