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
//! Stop and restart the server: the client logs (on stderr) the lost
//! connection, its attempts and their delays, and reconnects. On each
//! connection it sends `hello (connection N)` and prints what comes back (on
//! stdout). Ctrl-C closes with 1000 and exits 0, and so does a closed stdout
//! (`| head -2`); after `--max-attempts` failures in a row it exits 1.
//!
//! Settings: `--base-ms 500 --cap-ms 30000 --max-attempts 10 --ping-ms 5000`
//! (tests use milliseconds). Limits: messages up to 16 MiB (default 64 MiB).
//!
//! `wss://` URLs work too (chapter 10.6): the server's certificate is
//! checked against the system's authorities, and `--ca-cert PEM` adds one,
//! for every connection, reconnects included.
//!
//! Docs: docs/03-client-development.md

use std::process::ExitCode;
use std::time::Duration;

use clap::Parser;
use futures_util::{SinkExt, StreamExt};
use tokio::time::{Instant, interval_at};
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tracing::{info, warn};
use websocket_tutorial::args;
use websocket_tutorial::client::WsClient;
use websocket_tutorial::client::{self, Backoff, BackoffArgs, ConnectArgs, DEFAULT_URL, Dialer};
use websocket_tutorial::close;
use websocket_tutorial::output;

/// Connects to a WebSocket server and stays connected: retries with
/// exponential backoff, and reconnects whenever the connection drops.
#[derive(Parser)]
#[command(allow_negative_numbers = true)] // `--cap-ms -1`: a bad value, not a flag
struct Args {
    /// The server's URL.
    #[arg(default_value = DEFAULT_URL, value_parser = client::parse_url)]
    url: String,
    #[command(flatten)]
    backoff: BackoffArgs,
    /// Time between two heartbeat pings, in milliseconds.
    #[arg(long = "ping-ms", value_name = "MS", default_value = "5000")]
    #[arg(value_parser = args::period)]
    ping_every: Duration,
    #[command(flatten)]
    options: ConnectArgs,
}

#[tokio::main]
async fn main() -> ExitCode {
    let _log = output::init_logging();
    let Args { url, backoff, ping_every, options } = Args::parse();
    let backoff = Backoff::from(backoff);
    let config = WebSocketConfig::default().max_message_size(Some(16 << 20));
    // Ready once, before the first attempt: a file the options name that
    // cannot be read is a mistake to report now, not a reason to retry.
    let dialer = match options.dialer(config) {
        Ok(dialer) => dialer,
        Err(e) => return output::fail(e),
    };

    let ctrl_c = tokio::signal::ctrl_c();
    tokio::pin!(ctrl_c);

    // ANCHOR: reconnect
    let mut connection = 0;
    loop {
        // Connect, or give up; Ctrl-C interrupts the waiting too.
        let ws = tokio::select! {
            ws = connect_with_backoff(&url, &dialer, &backoff) => ws,
            _ = &mut ctrl_c => return ExitCode::SUCCESS,
        };
        let Some(mut ws) = ws else {
            return output::fail(format_args!(
                "giving up after {} failed attempts",
                backoff.max_attempts
            ));
        };
        connection += 1;
        info!("connected (connection {connection})");

        let ended = tokio::select! {
            ended = run(&mut ws, connection, ping_every) => ended,
            _ = &mut ctrl_c => Ended::Quit,
        };
        match ended {
            Ended::Lost(why) => warn!("connection lost: {why}; reconnecting"),
            Ended::Quit => {
                close::handshake(&mut ws, CloseCode::Normal, "client shutting down").await;
                info!("closed");
                return ExitCode::SUCCESS;
            }
        }
    }
    // ANCHOR_END: reconnect
}

// ANCHOR: connect_with_backoff
/// Tries to connect until it succeeds or `backoff` says to stop, logging
/// every attempt and every delay. Every attempt connects the same way
/// (`dialer`: the settings and the options of the command line).
async fn connect_with_backoff(url: &str, dialer: &Dialer, backoff: &Backoff) -> Option<WsClient> {
    let mut failed = 0;
    loop {
        let attempt = failed + 1;
        info!("attempt {attempt}: connecting to {url}");
        match dialer.connect(url).await {
            Ok(ws) => return Some(ws),
            Err(e) => {
                failed += 1;
                if !backoff.should_retry(failed) {
                    warn!("attempt {attempt} failed: {e}");
                    return None;
                }
                let delay = backoff.delay(failed);
                warn!("attempt {attempt} failed: {e}; retrying in {} ms", delay.as_millis());
                tokio::time::sleep(delay).await;
            }
        }
    }
}
// ANCHOR_END: connect_with_backoff

// ANCHOR: run
/// Why [`run`] stopped using a connection.
enum Ended {
    /// The connection is gone, for the reason given: time to reconnect.
    Lost(String),
    /// We are done with it (Ctrl-C, or nobody left to show messages to).
    Quit,
}

/// Uses one connection until it ends, and says why it ended.
///
/// The heartbeat: a ping every `ping_every`. Anything the server sends (the
/// pong included) proves it alive; after two intervals of silence the
/// connection is declared dead, even though TCP itself may not notice for
/// many minutes.
///
/// What arrives is printed; a full stdout pipe makes this loop wait, pings
/// included, which is fine for a client with one connection (the server
/// decides how long to wait for us). A closed stdout ends the client.
async fn run(ws: &mut WsClient, connection: u32, ping_every: Duration) -> Ended {
    let hello = format!("hello (connection {connection})");
    if let Err(e) = ws.send(Message::text(hello)).await {
        return Ended::Lost(e.to_string());
    }
    let mut heartbeat = interval_at(Instant::now() + ping_every, ping_every);
    let mut last_heard = Instant::now();
    loop {
        // Wait for one of: a message, or time to check on the server.
        tokio::select! {
            msg = ws.next() => {
                last_heard = Instant::now();
                let shown = match msg {
                    Some(Ok(Message::Text(text))) => output::line(format_args!("< {text}")),
                    Some(Ok(Message::Binary(data))) => {
                        output::line(format_args!("< [{} bytes]", data.len()))
                    }
                    // Our reply is queued; the stream ends next.
                    Some(Ok(Message::Close(Some(frame)))) => output::line(format_args!(
                        "server closed: {} ({})",
                        u16::from(frame.code),
                        frame.reason
                    )),
                    // Pings are answered by tungstenite, pongs just prove life.
                    Some(Ok(_)) => Ok(()),
                    Some(Err(e)) => return Ended::Lost(e.to_string()),
                    None => return Ended::Lost("closed by the server".into()),
                };
                if shown.is_err() {
                    return Ended::Quit;
                }
            }
            _ = heartbeat.tick() => {
                if last_heard.elapsed() > ping_every * 2 {
                    let silence = last_heard.elapsed().as_millis();
                    return Ended::Lost(format!("no answer for {silence} ms"));
                }
                if let Err(e) = ws.send(Message::Ping(Default::default())).await {
                    return Ended::Lost(e.to_string());
                }
            }
        }
    }
}
// ANCHOR_END: run
