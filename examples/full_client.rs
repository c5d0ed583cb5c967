//! Chapter 3.1: a complete client. Every line typed on stdin is sent; every
//! message that arrives is printed; at end of input (Ctrl-D, or the end of a
//! pipe) it closes the connection and waits for the server's close.
//!
//! What it teaches: splitting a WebSocket into a sink and a stream, one
//! writer task fed by a *bounded* channel (a fast producer waits instead of
//! growing memory without limit), a reader task, and ending with a close
//! handshake instead of a sleep.
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
//! Limits: messages up to 16 MiB, like the echo server (default 64 MiB).
//!
//! Docs: docs/03-client-development.md

use std::process::ExitCode;

use clap::Parser;
use futures_util::{SinkExt, StreamExt};
use tokio::sync::mpsc;
use tokio::time::timeout;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tokio_util::sync::CancellationToken;
use tracing::info;
use websocket_tutorial::client::{self, DEFAULT_URL};
use websocket_tutorial::close::{self, CLOSE_TIMEOUT};
use websocket_tutorial::error::is_disconnect;
use websocket_tutorial::output;

// ANCHOR: queue
/// How many outgoing messages may wait for the writer. Small on purpose: the
/// queue smooths bursts; it is not a place to store a backlog.
const QUEUE: usize = 32;
// ANCHOR_END: queue

/// Sends each line typed on stdin to a WebSocket server and prints every
/// message that arrives; at end of input, closes the connection.
#[derive(Parser)]
struct Args {
    /// The server's URL.
    #[arg(default_value = DEFAULT_URL, value_parser = client::parse_url)]
    url: String,
}

#[tokio::main]
async fn main() -> ExitCode {
    let _log = output::init_logging();
    let Args { url } = Args::parse(); // --help or a mistake: clap exits 0 or 2

    let config = WebSocketConfig::default().max_message_size(Some(16 << 20));
    let ws = match client::connect(&url, config).await {
        Ok(ws) => ws,
        Err(e) => return output::fail(format_args!("cannot connect to {url}: {e}")),
    };
    info!("connected to {url}; type lines to send, Ctrl-D to close");

    // ANCHOR: tasks
    let (mut sink, mut stream) = ws.split();
    let (tx, mut rx) = mpsc::channel::<Message>(QUEUE);

    // The writer owns the sink: the only task that writes to the socket.
    // It stops after sending a close frame, or when every sender is gone.
    let writer = tokio::spawn(async move {
        while let Some(msg) = rx.recv().await {
            let closing = msg.is_close();
            sink.send(msg).await?;
            if closing {
                break;
            }
        }
        Ok::<_, tokio_tungstenite::tungstenite::Error>(())
    });

    // The reader prints until the stream ends: after the server's close frame
    // (the answer to ours, or its own), or on an error. A write to a full
    // stdout pipe waits, and so does the reader: fine for a client, whose
    // one connection has nothing better to do (the server decides how long
    // it waits for us). If stdout is gone (`full_client | head -1`), nobody
    // will see what arrives: the reader says so on `stdout_gone`, and the
    // client closes as at end of input.
    let stdout_gone = CancellationToken::new();
    let mut reader = tokio::spawn({
        let stdout_gone = stdout_gone.clone();
        async move {
            while let Some(msg) = stream.next().await {
                let shown = match msg {
                    Ok(Message::Text(text)) => output::line(format_args!("< {text}")),
                    Ok(Message::Binary(data)) => {
                        output::line(format_args!("< [{} bytes of binary]", data.len()))
                    }
                    Ok(Message::Close(Some(frame))) => output::line(format_args!(
                        "closed: {} ({})",
                        u16::from(frame.code),
                        frame.reason
                    )),
                    Ok(Message::Close(None)) => output::line("closed: no code"),
                    Ok(_) => Ok(()), // tungstenite answers pings by itself
                    Err(e) => return Err(e),
                };
                if shown.is_err() {
                    stdout_gone.cancel();
                }
            }
            Ok(())
        }
    });
    // ANCHOR_END: tasks

    // ANCHOR: input
    let mut lines = client::stdin_lines(QUEUE);
    let server_closed_first = loop {
        tokio::select! {
            line = lines.recv() => match line {
                Some(line) if line.is_empty() => continue,
                // `send` waits while the queue is full: backpressure. It
                // fails only when the writer has stopped on an error.
                Some(line) => if tx.send(Message::text(line)).await.is_err() { break None },
                None => break None, // end of input: our turn to close
            },
            // The server may close first (for example when it shuts down).
            read = &mut reader => break Some(read),
            _ = stdout_gone.cancelled() => break None,
        }
    };

    let read = match server_closed_first {
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

    let written = writer.await;
    match (read, written) {
        (Ok(Err(e)), _) | (_, Ok(Err(e))) if !is_disconnect(&e) => {
            output::fail(format_args!("connection failed: {e}"))
        }
        (Ok(Err(e)), _) => output::fail(format_args!("connection lost: {e}")),
        (Err(e), _) | (_, Err(e)) => output::fail(format_args!("task failed: {e}")),
        _ => ExitCode::SUCCESS,
    }
}
