//! Chapter 3.1: a complete client. Every line typed on stdin is sent; every
//! message that arrives is printed; at end of input (Ctrl-D, or the end of a
//! pipe) it waits for the replies still on their way, then closes the
//! connection and waits for the server's close.
//!
//! What it teaches: splitting a WebSocket into a sink and a stream, one
//! writer task fed by a *bounded* channel (a fast producer waits instead of
//! growing memory without limit), a reader task, and ending with a close
//! handshake instead of a sleep: the client closes once the connection has
//! been quiet for a moment (`--linger-ms`), and the close handshake ends it.
//!
//! ```text
//! cargo run --example echo_server                       # terminal 1
//! cargo run --example full_client -- ws://127.0.0.1:9001  # terminal 2, then type
//! printf 'one\ntwo\n' | cargo run --example full_client  # or pipe lines in
//! ```
//!
//! Each reply is printed as `< one`. At the end you see
//! `closed: 1000 (end of input)` and the client exits 0.
//!
//! Exit status: 0 when the connection ends with a close frame that says 1000
//! (normal closure), 1001 (going away) or no code; 1 when it ends with any
//! other close code (the server refused something: 1009 for a message over
//! its limit, 1011 for a client that stopped answering its pings, ...) or
//! without a close frame. The last line on stdout, `closed: CODE (REASON)`,
//! says which; an ending without a close frame is one `error:` line on
//! stderr.
//!
//! Limits: messages up to 16 MiB, like the echo server (default 64 MiB).
//!
//! `wss://` URLs work too (chapter 10.6): the server's certificate is
//! checked against the system's authorities, and `--ca-cert PEM` adds one
//! (a test's, or your own for a server with a self-made certificate).
//!
//! Docs: docs/03-client-development.md

use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use clap::Parser;
use futures_util::stream::SplitStream;
use futures_util::{SinkExt, StreamExt};
use tokio::sync::{Notify, mpsc};
use tokio::time::{sleep, timeout};
use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tokio_tungstenite::tungstenite::{self, Message};
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};
use websocket_tutorial::args;
use websocket_tutorial::client::{self, ConnectArgs, DEFAULT_URL, WsClient};
use websocket_tutorial::close::{self, CLOSE_TIMEOUT};
use websocket_tutorial::error::is_disconnect;
use websocket_tutorial::output;

// ANCHOR: queue
/// How many outgoing messages may wait for the writer. Small on purpose: the
/// queue smooths bursts; it is not a place to store a backlog.
const QUEUE: usize = 32;
// ANCHOR_END: queue

/// The longest the client waits, at end of input, for the connection to go
/// quiet: a server that never stops sending (a live feed) must not keep it
/// open forever.
const MAX_LINGER: Duration = Duration::from_secs(5);

/// Sends each line typed on stdin to a WebSocket server and prints every
/// message that arrives; at end of input, closes the connection.
///
/// Exit status: 0 when the server's close frame says 1000, 1001 or no code;
/// 1 for any other code, or a connection lost without a close frame.
#[derive(Parser)]
struct Args {
    /// The server's URL.
    #[arg(default_value = DEFAULT_URL, value_parser = client::parse_url)]
    url: String,
    /// At end of input, how long the connection must have been quiet
    /// (nothing sent, nothing received) before the client closes it, in
    /// milliseconds: replies still on their way arrive first. The wait ends
    /// after 5 s in any case.
    #[arg(long = "linger-ms", value_name = "MS", default_value = "500")]
    #[arg(value_parser = args::millis)]
    linger: Duration,
    /// Right after connecting, read nothing from the server for this many
    /// milliseconds, as a frozen process would: no message shown, no ping
    /// answered. For watching a server's heartbeat at work.
    #[arg(long = "freeze-ms", value_name = "MS", default_value = "0")]
    #[arg(value_parser = args::millis)]
    freeze: Duration,
    #[command(flatten)]
    options: ConnectArgs,
}

#[tokio::main]
async fn main() -> ExitCode {
    let _log = output::init_logging();
    let args = Args::parse(); // --help or a mistake: clap exits 0 or 2
    let url = &args.url;

    let config = WebSocketConfig::default().max_message_size(Some(16 << 20));
    let dialer = match args.options.dialer(config) {
        Ok(dialer) => dialer,
        Err(e) => return output::fail(e),
    };
    let ws = match dialer.connect(url).await {
        Ok(ws) => ws,
        Err(e) => return output::fail(format_args!("cannot connect to {url}: {e}")),
    };
    info!("connected to {url}; type lines to send, Ctrl-D to close");

    // ANCHOR: tasks
    let (mut sink, stream) = ws.split();
    let (tx, mut rx) = mpsc::channel::<Message>(QUEUE);
    // Told of every message written or received: the connection is not
    // quiet yet (see the end of input, below).
    let activity = Arc::new(Notify::new());

    // The writer owns the sink: the only task that writes to the socket.
    // It stops after sending a close frame, or when every sender is gone.
    let writer = tokio::spawn({
        let activity = activity.clone();
        async move {
            while let Some(msg) = rx.recv().await {
                let closing = msg.is_close();
                sink.send(msg).await?;
                activity.notify_one();
                if closing {
                    break;
                }
            }
            Ok::<_, tungstenite::Error>(())
        }
    });

    // The reader prints what arrives until the stream ends (see `receive`).
    // If stdout is gone (`full_client | head -1`), nobody will see what
    // arrives: the reader says so on `stdout_gone`, and the client closes as
    // at end of input.
    let stdout_gone = CancellationToken::new();
    let mut reader =
        tokio::spawn(receive(stream, activity.clone(), stdout_gone.clone(), args.freeze));
    // ANCHOR_END: tasks

    // ANCHOR: input
    let mut lines = client::stdin_lines(QUEUE);
    let mut server_closed = loop {
        tokio::select! {
            line = lines.recv() => match line {
                Some(line) if line.is_empty() => continue,
                // `send` waits while the queue is full: backpressure. It
                // fails only when the writer has stopped on an error; the
                // reader will tell why the connection ended.
                Some(line) => if tx.send(Message::text(line)).await.is_err() { break None },
                None => break None, // end of input: our turn to close
            },
            // The server may close first (for example when it shuts down).
            read = &mut reader => break Some(read),
            _ = stdout_gone.cancelled() => break None,
        }
    };

    if server_closed.is_none() {
        // Replies to our last lines may still be on their way, and some
        // servers send nothing more once they have our close frame (Python's
        // `websockets`, for one). So wait until the connection has been
        // quiet for `--linger-ms`, unless the server closes first, and
        // at most `MAX_LINGER`.
        server_closed = tokio::select! {
            read = &mut reader => Some(read),
            () = quiet(&activity, args.linger) => None,
            () = sleep(MAX_LINGER) => None,
        };
    }
    let read = match server_closed {
        Some(read) => read,
        None => {
            // Our close frame goes through the same queue, after every line
            // already sent; the reader then ends with the server's answer.
            let _ = tx.send(close::message(CloseCode::Normal, "end of input")).await;
            match timeout(CLOSE_TIMEOUT, &mut reader).await {
                Ok(read) => read,
                Err(_) => return output::fail("the server did not answer our close frame"),
            }
        }
    };
    drop(tx); // lets the writer finish if it is still waiting for messages
    // ANCHOR_END: input

    // ANCHOR: ending
    // One ending, one exit code. With the server's close frame, its code and
    // reason are already on stdout; a write that failed meanwhile (the
    // server closed while we were still sending) is part of that ending.
    let written = writer.await;
    match (read, written) {
        (Ok(Ok(Some(code))), _) => close::exit_code(code),
        (Err(e), _) | (_, Err(e)) => output::fail(format_args!("task failed: {e}")),
        (Ok(Err(e)), _) | (_, Ok(Err(e))) if !is_disconnect(&e) => {
            output::fail(format_args!("connection failed: {e}"))
        }
        (Ok(Err(e)), _) | (_, Ok(Err(e))) => output::fail(format_args!("connection lost: {e}")),
        (Ok(Ok(None)), Ok(Ok(()))) => output::fail("connection lost: closed without a close frame"),
    }
    // ANCHOR_END: ending
}

// ANCHOR: receive
/// The reader: prints each message that arrives until the stream ends, and
/// returns the code of the server's close frame (1005, `Status`, for a frame
/// without a code), or `None` if the connection ended without one. Tells
/// `activity` of each message, and `stdout_gone` when stdout is a closed
/// pipe.
///
/// A write to a full stdout pipe waits, and so does the reader: fine for a
/// client, whose one connection has nothing better to do (the server
/// decides how long it waits for us).
async fn receive(
    mut stream: SplitStream<WsClient>,
    activity: Arc<Notify>,
    stdout_gone: CancellationToken,
    freeze: Duration,
) -> Result<Option<CloseCode>, tungstenite::Error> {
    if !freeze.is_zero() {
        warn!("frozen for {} ms: not reading from the server", freeze.as_millis());
        sleep(freeze).await;
        info!("reading again");
    }
    let mut closed = None;
    while let Some(msg) = stream.next().await {
        activity.notify_one();
        let shown = match msg {
            Ok(Message::Text(text)) => output::line(format_args!("< {text}")),
            Ok(Message::Binary(data)) => {
                output::line(format_args!("< [{} bytes of binary]", data.len()))
            }
            Ok(Message::Close(Some(frame))) => {
                closed = Some(frame.code);
                output::line(format_args!("closed: {} ({})", u16::from(frame.code), frame.reason))
            }
            Ok(Message::Close(None)) => {
                closed = Some(CloseCode::Status);
                output::line("closed: no code")
            }
            Ok(_) => Ok(()), // tungstenite answers pings by itself
            // After the server's close frame, the connection is over, and
            // the frame said how. The server may drop the socket before it
            // has read everything we sent (a message over its limit), and
            // our system then reports a reset: nothing to add.
            Err(_) if closed.is_some() => break,
            Err(e) => return Err(e),
        };
        if shown.is_err() {
            stdout_gone.cancel();
        }
    }
    Ok(closed)
}
// ANCHOR_END: receive

// ANCHOR: quiet
/// Returns once nothing has been sent or received for `linger`.
async fn quiet(activity: &Notify, linger: Duration) {
    while timeout(linger, activity.notified()).await.is_ok() {}
}
// ANCHOR_END: quiet
