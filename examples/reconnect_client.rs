//! Chapter 3.2: a client that stays connected. It connects with exponential
//! backoff (capped, with random jitter, up to a maximum number of attempts),
//! and when an established connection drops it starts over.
//!
//! What it teaches: a backoff that cannot grow without bound, jitter so that
//! many clients do not all come back at once, a heartbeat (a WebSocket ping
//! every few seconds) so that a silently dead connection is noticed, and
//! reconnecting on *every* drop, not only the first connect.
//!
//! ```text
//! cargo run --example reconnect_client -- ws://127.0.0.1:9001   # terminal 1: retries
//! cargo run --example echo_server                                # terminal 2: it connects
//! ```
//!
//! Stop and restart the server: the client prints the lost connection, its
//! attempts and their delays, and reconnects. On each connection it sends
//! `hello (connection N)` and prints what comes back. Ctrl-C closes with 1000
//! and exits 0; after `--max-attempts` failures in a row it exits 1.
//!
//! Settings: `--base-ms 500 --cap-ms 30000 --max-attempts 10 --ping-ms 5000`
//! (tests use milliseconds). Limits: messages up to 16 MiB (default 64 MiB).
//!
//! Docs: docs/03-client-development.md

use std::process::ExitCode;
use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use tokio::time::{Instant, interval_at};
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use websocket_tutorial::cli::{self, Args};
use websocket_tutorial::client::{self, Backoff, DEFAULT_URL, WsClient};
use websocket_tutorial::close;

const USAGE: &str = "usage: reconnect_client [URL] [--base-ms 500] [--cap-ms 30000] \
                     [--max-attempts 10 (0 = forever)] [--ping-ms 5000]";

#[tokio::main]
async fn main() -> ExitCode {
    let args = Args::from_env(USAGE, &["base-ms", "cap-ms", "max-attempts", "ping-ms"]);
    let url = args.positional(0, DEFAULT_URL);
    let backoff = Backoff {
        base: args.millis("base-ms", 500),
        cap: args.millis("cap-ms", 30_000),
        max_attempts: args.get("max-attempts", 10),
    };
    let ping_every = args.period("ping-ms", 5_000);
    let config = WebSocketConfig::default().max_message_size(Some(16 << 20));

    let ctrl_c = tokio::signal::ctrl_c();
    tokio::pin!(ctrl_c);

    // ANCHOR: reconnect
    let mut connection = 0;
    loop {
        // Connect, or give up; Ctrl-C interrupts the waiting too.
        let ws = tokio::select! {
            ws = connect_with_backoff(&url, config, &backoff) => ws,
            _ = &mut ctrl_c => return ExitCode::SUCCESS,
        };
        let Some(mut ws) = ws else {
            return cli::fail(format_args!(
                "giving up after {} failed attempts",
                backoff.max_attempts
            ));
        };
        connection += 1;
        println!("connected (connection {connection})");

        let ended = tokio::select! {
            ended = run(&mut ws, connection, ping_every) => ended,
            _ = &mut ctrl_c => {
                close::handshake(&mut ws, CloseCode::Normal, "client shutting down").await;
                println!("closed");
                return ExitCode::SUCCESS;
            }
        };
        println!("connection lost: {ended}; reconnecting");
    }
    // ANCHOR_END: reconnect
}

// ANCHOR: connect_with_backoff
/// Tries to connect until it succeeds or `backoff` says to stop, printing
/// every attempt and every delay.
async fn connect_with_backoff(
    url: &str,
    config: WebSocketConfig,
    backoff: &Backoff,
) -> Option<WsClient> {
    let mut failed = 0;
    loop {
        let attempt = failed + 1;
        println!("attempt {attempt}: connecting to {url}");
        match client::connect(url, config).await {
            Ok(ws) => return Some(ws),
            Err(e) => {
                failed += 1;
                if !backoff.should_retry(failed) {
                    println!("attempt {attempt} failed: {e}");
                    return None;
                }
                let delay = backoff.delay(failed);
                println!("attempt {attempt} failed: {e}; retrying in {} ms", delay.as_millis());
                tokio::time::sleep(delay).await;
            }
        }
    }
}
// ANCHOR_END: connect_with_backoff

// ANCHOR: run
/// Uses one connection until it ends, and says why it ended.
///
/// The heartbeat: a ping every `ping_every`. Anything the server sends (the
/// pong included) proves it alive; after two intervals of silence the
/// connection is declared dead, even though TCP itself may not notice for
/// many minutes.
async fn run(ws: &mut WsClient, connection: u32, ping_every: Duration) -> String {
    let hello = format!("hello (connection {connection})");
    if let Err(e) = ws.send(Message::text(hello)).await {
        return e.to_string();
    }
    let mut heartbeat = interval_at(Instant::now() + ping_every, ping_every);
    let mut last_heard = Instant::now();
    loop {
        // Wait for one of: a message, or time to check on the server.
        tokio::select! {
            msg = ws.next() => {
                last_heard = Instant::now();
                match msg {
                    Some(Ok(Message::Text(text))) => println!("< {text}"),
                    Some(Ok(Message::Binary(data))) => println!("< [{} bytes]", data.len()),
                    Some(Ok(Message::Close(frame))) => {
                        // Our reply is queued; the stream ends next.
                        if let Some(frame) = frame {
                            println!("server closed: {} ({})", u16::from(frame.code), frame.reason);
                        }
                    }
                    Some(Ok(_)) => {} // pings are answered by tungstenite, pongs just prove life
                    Some(Err(e)) => return e.to_string(),
                    None => return "closed by the server".to_string(),
                }
            }
            _ = heartbeat.tick() => {
                if last_heard.elapsed() > ping_every * 2 {
                    return format!("no answer for {} ms", last_heard.elapsed().as_millis());
                }
                if let Err(e) = ws.send(Message::Ping(Default::default())).await {
                    return e.to_string();
                }
            }
        }
    }
}
// ANCHOR_END: run
