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
//! The heartbeat keeps half-open connections from holding a slot forever:
//! the reader, which hears every frame, keeps the shared `Heartbeat` and its
//! timer, and asks the writer, the only task that writes, to send each ping;
//! a client silent for longer than `--ping-ms` plus `--pong-timeout-ms` is
//! closed with 1011 `ping timeout`.
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
//! mostly idle ones.
//!
//! Settings: `--capacity 128` (above); `--max-connections 1024`, connections
//! served at once, more wait in the kernel's backlog for a free slot;
//! `--ping-ms 5000` and `--pong-timeout-ms 10000`, the heartbeat: a client
//! whose machine vanished without a FIN would otherwise hold a slot forever;
//! `--allow-origin ORIGIN` (repeatable), the web pages allowed to connect
//! (`scheme://host[:port]`, or `null` for a page opened from a file), a
//! browser's handshake from any other origin gets HTTP 403, and without it
//! every origin is accepted; `--max-per-ip 100`, open connections allowed
//! from one IP address, one more gets HTTP 429 (docs/10-security.md);
//! `--tls-cert PEM --tls-key PEM`, serve `wss://` (TLS with rustls) and say
//! `listening on wss://IP:PORT` (chapter 10.6).
//!
//! Docs: docs/04-server-development.md

use std::pin::pin;
use std::process::ExitCode;
use std::sync::Arc;

use clap::Parser;
use clap::builder::RangedU64ValueParser;
use futures_util::stream::{SplitSink, SplitStream};
use futures_util::{SinkExt, StreamExt};
use tokio::sync::Notify;
use tokio::sync::broadcast::error::{RecvError, TryRecvError};
use tokio::sync::broadcast::{self, Receiver, Sender};
use tokio::time::{Instant, sleep_until};
use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tokio_tungstenite::tungstenite::{self, Message};
use tokio_util::sync::CancellationToken;
use tracing::{Instrument, Span, error, info};
use websocket_tutorial::heartbeat::{Due, HeartbeatArgs};
use websocket_tutorial::output;
use websocket_tutorial::server::{self, Ending, ServerArgs, WsStream};

/// The channel allocates `capacity` slots up front; keep a typo from
/// asking for gigabytes.
const MAX_CAPACITY: u64 = 1 << 16;
/// How many queued messages one write gathers before it flushes.
const BATCH: usize = 64;

/// Relays every message any client sends to every connected client.
#[derive(Parser)]
#[command(allow_negative_numbers = true)] // `--capacity -1`: a bad value, not a flag
struct Args {
    #[command(flatten)]
    server: ServerArgs,
    /// Messages kept for a client that falls behind (tokio rounds it up to
    /// a power of two).
    #[arg(long, value_name = "N", default_value_t = 128)]
    #[arg(value_parser = RangedU64ValueParser::<usize>::new().range(1..=MAX_CAPACITY))]
    capacity: usize,
    #[command(flatten)]
    heartbeat: HeartbeatArgs,
}

#[tokio::main]
async fn main() -> ExitCode {
    let _log = output::init_logging();
    // --help or a mistake: clap exits 0 or 2
    let Args { server, capacity, heartbeat } = Args::parse();

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

    // Until Ctrl-C, as every server (chapter 2.2).
    server::run(server, config, move |ws, shutdown| client(ws, shutdown, hub.clone(), heartbeat))
        .await
}

// ANCHOR: client
/// Serves one client: this task reads and publishes, a second task writes
/// what the channel delivers. Returns when both have ended.
async fn client(
    ws: WsStream,
    shutdown: CancellationToken,
    hub: Sender<Message>,
    heartbeat: HeartbeatArgs,
) {
    let (sink, mut stream) = ws.split();
    // Cancelled as soon as either half ends, so the other one stops too: a
    // dead writer must not leave a reader publishing for nobody, and a
    // vanished reader must not leave a writer waiting for messages forever.
    let done = CancellationToken::new();
    // The reader keeps the heartbeat, and pulls this when a ping is due.
    let ping = Arc::new(Notify::new());
    // The writer subscribes here, before we say "connected", so that anyone
    // who waits for that line knows this client will see every message
    // published from then on. It logs inside this connection's span too (a
    // spawned task does not inherit it by itself).
    let writer = write_loop(sink, hub.subscribe(), ping.clone(), done.clone());
    let writer = tokio::spawn(writer.instrument(Span::current()));
    info!("connected");

    // The reader's end cancels `done`, and so ends the writer.
    let ending = read_loop(&mut stream, &hub, &ping, heartbeat, &shutdown, &done).await;
    match writer.await {
        // A client that fell silent or broke a rule (a message over 64 KiB,
        // invalid UTF-8), and every client at shutdown, is told why with a
        // close code, as by every server; that needs both halves again.
        Ok(sink) => {
            if let Ok(mut ws) = stream.reunite(sink) {
                ending.close(&mut ws).await;
            }
        }
        Err(e) => error!(error = %e, "writer task failed"),
    }
    info!("disconnected");
}
// ANCHOR_END: client

// ANCHOR: read_loop
/// Publishes every text and binary message the client sends, and keeps
/// the heartbeat, until the client leaves or falls silent, the writer ends,
/// or the server shuts down. Returns what we owe the client.
async fn read_loop(
    stream: &mut SplitStream<WsStream>,
    hub: &Sender<Message>,
    ping: &Notify,
    timing: HeartbeatArgs,
    shutdown: &CancellationToken,
    done: &CancellationToken,
) -> Ending {
    let _done_on_exit = done.clone().drop_guard(); // even if this panics
    // Any frame from the client, a pong included, proves it alive; the one
    // timer fires at the next ping or at the end of the allowed silence.
    let mut heartbeat = timing.start();
    let mut heartbeat_timer = pin!(sleep_until(heartbeat.next_wake()));
    loop {
        // Wait for one of: shutdown, the writer ending, the next message, or
        // the heartbeat. `biased`: in this order. The client comes before
        // the heartbeat, so that a frame already here counts before the
        // silence is judged.
        tokio::select! {
            biased;
            // The close handshake (1001) needs both halves: `client` does it.
            _ = shutdown.cancelled() => return Ending::Close(CloseCode::Away, "server shutting down"),
            _ = done.cancelled() => return Ending::Done,
            msg = stream.next() => {
                heartbeat.heard(Instant::now());
                match msg {
                    Some(Ok(msg @ (Message::Text(_) | Message::Binary(_)))) => {
                        // Never blocks: a slow receiver falls behind on its
                        // own. Fails only when nobody is subscribed, which
                        // cannot be the case while this client's own writer
                        // is.
                        let _ = hub.send(msg);
                        // Fairness: a burst already in our read buffer would
                        // otherwise be published message after message,
                        // overrunning the channel before any writer runs, so
                        // that clients that read fine would be told they
                        // missed messages. Yielding lets the writers we just
                        // woke forward it first.
                        tokio::task::yield_now().await;
                    }
                    // tungstenite answers pings and the client's close frame
                    // by itself; after a close the stream ends on the next
                    // read.
                    Some(Ok(_)) => {}
                    None => return Ending::Done,
                    // For example a message over 64 KiB (1009), or a peer
                    // that is simply gone (nothing to say).
                    Some(Err(e)) => return Ending::ReadFailed(e),
                }
            }
            due = heartbeat.due(heartbeat_timer.as_mut()) => match due {
                // Only the writer writes: it sends the ping.
                Due::Ping => ping.notify_one(),
                Due::Dead => return Ending::Close(CloseCode::Error, "ping timeout"),
            },
        }
    }
}
// ANCHOR_END: read_loop

// ANCHOR: write_loop
/// The only task that writes to this client's socket. Forwards what the
/// channel delivers, and the pings the reader asks for, until the reader
/// ends or writing fails. Hands the sink back, so that the caller can still
/// close the connection with a code.
async fn write_loop(
    mut sink: SplitSink<WsStream, Message>,
    mut rx: Receiver<Message>,
    ping: Arc<Notify>,
    done: CancellationToken,
) -> SplitSink<WsStream, Message> {
    let _done_on_exit = done.clone().drop_guard(); // even if this panics
    loop {
        // Wait for one of: the reader ending, or a batch written. The write
        // is raced too: a client that stopped reading must not keep this
        // task from noticing.
        tokio::select! {
            biased;
            _ = done.cancelled() => break,
            written = write_batch(&mut sink, &mut rx, &ping) => match written {
                Ok(true) => {}
                Ok(false) => break, // the channel is gone: nothing more to send
                Err(e) => break server::log_send_failure(&e),
            },
        }
    }
    sink
}

/// Waits for the next message for this client (or a ping the reader asks
/// for), then writes it and whatever else is already queued (up to
/// [`BATCH`]), and flushes once. `Ok(false)` when the channel has closed.
async fn write_batch(
    sink: &mut SplitSink<WsStream, Message>,
    rx: &mut Receiver<Message>,
    ping: &Notify,
) -> Result<bool, tungstenite::Error> {
    // Both are cancel-safe: whichever loses keeps its message (or its
    // notification) for the next turn.
    let first = tokio::select! {
        _ = ping.notified() => Message::Ping(Default::default()),
        msg = rx.recv() => match msg {
            Ok(msg) => msg,
            Err(RecvError::Lagged(missed)) => missed_notice(missed),
            Err(RecvError::Closed) => return Ok(false),
        },
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
