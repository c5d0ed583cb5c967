//! Chapter 3.1, the first version: a client that sends and receives at the
//! same time.
//!
//! What it teaches: splitting a WebSocket into a sink and a stream, a writer
//! task fed by a bounded channel (a fast producer waits instead of growing
//! memory), a reader task that prints what arrives, both behind a small
//! client type with a `send` method, and a clean close: at the end of input
//! the close frame goes through the same queue, after every line, and the
//! client waits for the server's answer. A failure is one `error:` line and
//! exit code 1, never a panic. Chapter 3.1 then grows it, step by step,
//! into `full_client`.
//!
//! ```text
//! cargo run --example echo_server_first                                 # terminal 1
//! printf 'one\ntwo\n' | cargo run --example full_client_first           # terminal 2
//! ```
//!
//! You will see `< one`, `< two` and `closed: 1000 (end of input)`. Exit
//! code 0 when the server's close frame says 1000 or 1001, 1 otherwise.
//!
//! Docs: docs/03-client-development.md

use std::process::ExitCode;

use clap::Parser;
use futures_util::{SinkExt, StreamExt, stream::SplitStream};
use tokio::{sync::mpsc, task::JoinHandle, time::timeout};
use tokio_tungstenite::tungstenite::{Message, protocol::frame::coding::CloseCode};
use websocket_tutorial::{Error, client, client::WsClient, close, output};

// ANCHOR: all
/// Sends each line typed on stdin to a WebSocket server and prints every
/// message that arrives; at end of input, closes the connection.
#[derive(Parser)]
struct Args {
    /// The server's URL.
    #[arg(default_value = client::DEFAULT_URL, value_parser = client::parse_url)]
    url: String,
}

/// A connection behind two tasks: `send` queues a message for the writer,
/// the only task that writes to the socket; the reader prints what arrives.
struct Client {
    /// Bounded: when the socket is slow, `send` waits (backpressure).
    queue: mpsc::Sender<Message>,
    /// Ends when the connection does, with the exit code.
    reader: JoinHandle<ExitCode>,
}

impl Client {
    async fn connect(url: &str) -> Result<Client, Error> {
        let (mut sink, stream) = client::connect(url, Default::default()).await?.split();
        let (queue, mut outgoing) = mpsc::channel(32);
        // Writes until the queue closes or a write fails (then the reader
        // says how the connection ended).
        tokio::spawn(async move {
            while let Some(msg) = outgoing.recv().await
                && sink.send(msg).await.is_ok()
            {}
        });
        Ok(Client { queue, reader: tokio::spawn(read(stream)) })
    }

    /// Sends `text`, after what is queued; `false` once the writer is gone.
    async fn send(&self, text: String) -> bool {
        self.queue.send(Message::text(text)).await.is_ok()
    }
}

/// The reader: prints what arrives until the connection ends, and returns
/// the exit code: 0 for a close that says 1000 or 1001, 1 for any other
/// ending.
async fn read(mut stream: SplitStream<WsClient>) -> ExitCode {
    while let Some(Ok(msg)) = stream.next().await {
        let _ = match msg {
            Message::Text(text) => output::line(format_args!("< {text}")),
            Message::Binary(data) => output::line(format_args!("< [{} bytes]", data.len())),
            Message::Close(frame) => {
                let (code, reason) =
                    frame.map_or((CloseCode::Status, "".into()), |f| (f.code, f.reason));
                let _ = output::line(format_args!("closed: {} ({reason})", u16::from(code)));
                // Read on to the end: tungstenite sends its answer as it
                // reads, and an error now adds nothing to the close.
                while let Some(Ok(_)) = stream.next().await {}
                return close::exit_code(code);
            }
            _ => Ok(()), // pings: tungstenite answers them
        };
    }
    output::fail("connection lost without a close frame")
}

#[tokio::main]
async fn main() -> ExitCode {
    let _log = output::init_logging(); // stdin's warnings go to the log
    let Args { url } = Args::parse();
    let mut client = match Client::connect(&url).await {
        Ok(client) => client,
        Err(e) => return output::fail(format_args!("cannot connect to {url}: {e}")),
    };
    // Each line is sent, until the input ends or the server closes first.
    let mut lines = client::stdin_lines(32);
    while let Some(line) = tokio::select! {
        line = lines.recv() => line,
        ended = &mut client.reader => return ended.unwrap_or(ExitCode::FAILURE),
    } {
        if !line.is_empty() && !client.send(line).await {
            break;
        }
    }
    // Our close frame goes through the queue, after every line; the reader
    // ends with the server's answer.
    let _ = client.queue.send(close::message(CloseCode::Normal, "end of input")).await;
    match timeout(close::CLOSE_TIMEOUT, client.reader).await {
        Ok(ended) => ended.unwrap_or(ExitCode::FAILURE),
        Err(_) => output::fail("the server did not answer our close frame"),
    }
}
// ANCHOR_END: all
