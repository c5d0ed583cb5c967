//! Chapter 2.1, the first version: the smallest WebSocket client that is
//! correct.
//!
//! What it teaches: `connect_async`, sending a text `Message`, reading the
//! reply (skipping the pings a server may send first), and closing with the
//! close handshake instead of dropping the connection. A failure is one
//! `error:` line and exit code 1, never a panic; no wait is without a
//! deadline. Chapter 2.1 then grows it, step by step, into `echo_client`.
//!
//! ```text
//! cargo run --example echo_server_first                                # terminal 1
//! cargo run --example echo_client_first -- ws://127.0.0.1:9001 hello   # terminal 2
//! ```
//!
//! You will see `hello`, echoed by the server.
//!
//! Docs: docs/02-tokio-tungstenite.md

use std::process::ExitCode;
use std::time::Duration;

use clap::Parser;
use futures_util::{SinkExt, StreamExt};
use tokio::time::timeout;
use tokio_tungstenite::tungstenite::{Message, protocol::frame::coding::CloseCode};
use websocket_tutorial::{client, close, output};

// ANCHOR: all
/// Sends one text message to a WebSocket server and prints the reply.
#[derive(Parser)]
struct Args {
    /// The server's URL.
    #[arg(default_value = client::DEFAULT_URL, value_parser = client::parse_url)]
    url: String,
    /// The text to send.
    #[arg(default_value = "hello")]
    text: String,
}

/// Connecting and the reply each get this long, no more.
const DEADLINE: Duration = Duration::from_secs(5);

#[tokio::main]
async fn main() -> ExitCode {
    let Args { url, text } = Args::parse();
    let connected = timeout(DEADLINE, tokio_tungstenite::connect_async(url.as_str())).await;
    let mut ws = match connected {
        Ok(Ok((ws, _response))) => ws,
        Ok(Err(e)) => return output::fail(format_args!("cannot connect to {url}: {e}")),
        Err(_) => return output::fail(format_args!("cannot connect to {url} within {DEADLINE:?}")),
    };
    if let Err(e) = ws.send(Message::text(text)).await {
        return output::fail(format_args!("send failed: {e}"));
    }
    // The first text or binary message is the echo; pings are skipped
    // (tungstenite answers them by itself).
    let reply = timeout(DEADLINE, async {
        while let Some(msg) = ws.next().await {
            match msg {
                Ok(msg) if msg.is_text() || msg.is_binary() => return Ok(msg),
                Ok(_) => continue,
                Err(e) => return Err(e.to_string()),
            }
        }
        Err("the server closed the connection".to_string())
    });
    match reply.await {
        Ok(Ok(Message::Text(text))) => {
            let _ = output::line(text);
        }
        Ok(Ok(other)) => {
            let _ = output::line(format_args!("[{} bytes]", other.len()));
        }
        Ok(Err(e)) => return output::fail(format_args!("no echo: {e}")),
        Err(_) => return output::fail(format_args!("no echo within {DEADLINE:?}")),
    }
    // Say goodbye (1000, normal closure) and wait for the server's answer.
    close::handshake(&mut ws, CloseCode::Normal, "done").await;
    ExitCode::SUCCESS
}
// ANCHOR_END: all
