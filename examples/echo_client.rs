//! Chapter 2.1: a basic WebSocket client. Connects, sends one text message,
//! prints the reply, and closes the connection properly.
//!
//! What it teaches: `connect_async`, sending and receiving `Message`s (text
//! payloads are `Utf8Bytes`, binary ones `Bytes`), the close handshake, and
//! turning a failure into one clear line and exit code 1 instead of a panic.
//!
//! Start the echo server (terminal 1), then run the client (terminal 2):
//!
//! ```text
//! cargo run --example echo_server
//! cargo run --example echo_client -- ws://127.0.0.1:9001 "hello"
//! ```
//!
//! You will see `hello`, echoed by the server. Without a server you get
//! `error: cannot connect to ws://127.0.0.1:9001: ...Connection refused...`
//! and exit code 1.
//!
//! Limits: replies up to 16 MiB (`max_message_size`), matching the echo
//! server, instead of the 64 MiB default.
//!
//! `wss://` URLs work too (chapter 10.6): the server's certificate is
//! checked against the system's authorities, and `--ca-cert PEM` adds one.
//!
//! Docs: docs/02-tokio-tungstenite.md (2.3, docs/02-inside-the-full-programs.md,
//! walks through this program)

use std::process::ExitCode;

use clap::Parser;
use futures_util::{SinkExt, StreamExt};
use tokio::time::timeout;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use websocket_tutorial::client::{self, ConnectArgs, DEFAULT_URL};
use websocket_tutorial::close;
use websocket_tutorial::output;

const REPLY_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(5);

// ANCHOR: args
/// Sends one text message to a WebSocket server and prints the reply.
#[derive(Parser)]
struct Args {
    /// The server's URL.
    #[arg(default_value = DEFAULT_URL, value_parser = client::parse_url)]
    url: String,
    /// The text to send.
    #[arg(default_value = "hello")]
    text: String,
    #[command(flatten)]
    options: ConnectArgs,
}
// ANCHOR_END: args

// ANCHOR: main
#[tokio::main]
async fn main() -> ExitCode {
    let _log = output::init_logging();
    // `--help`, or a mistake in the arguments, ends the program here:
    // clap prints the usage or the error and exits with 0 or 2.
    let Args { url, text, options } = Args::parse();

    let config = WebSocketConfig::default().max_message_size(Some(16 << 20));
    // The options every client shares; a file they name that cannot be
    // read is one line, before any connection.
    let dialer = match options.dialer(config) {
        Ok(dialer) => dialer,
        Err(e) => return output::fail(e),
    };
    let mut ws = match dialer.connect(&url).await {
        Ok(ws) => ws,
        Err(e) => return output::fail(format_args!("cannot connect to {url}: {e}")),
    };

    if let Err(e) = ws.send(Message::text(text)).await {
        return output::fail(format_args!("send failed: {e}"));
    }

    // Wait for the echo, skipping control frames; never wait forever.
    let reply = timeout(REPLY_TIMEOUT, async {
        loop {
            match ws.next().await {
                Some(Ok(Message::Text(text))) => return Ok(text.to_string()),
                Some(Ok(Message::Binary(data))) => return Ok(format!("[{} bytes]", data.len())),
                Some(Ok(Message::Close(frame))) => return Err(format!("server closed: {frame:?}")),
                Some(Ok(_)) => continue, // ping or pong
                Some(Err(e)) => return Err(e.to_string()),
                None => return Err("connection ended".to_string()),
            }
        }
    })
    .await;

    match reply {
        // A closed stdout (`| true`) is no reason to fail or panic: the
        // echo came, and the close below is still owed to the server.
        Ok(Ok(text)) => {
            let _ = output::line(text);
        }
        Ok(Err(e)) => {
            close::answer(&mut ws).await; // if the server closed, it is owed an answer
            return output::fail(format_args!("no echo: {e}"));
        }
        Err(_) => return output::fail(format_args!("no echo within {REPLY_TIMEOUT:?}")),
    }

    // Close properly: send 1000 (normal) and wait for the server's answer.
    close::handshake(&mut ws, CloseCode::Normal, "done").await;
    ExitCode::SUCCESS
}
// ANCHOR_END: main
