//! Chapter 6.2: real-time data push. The server produces a sample every
//! `--interval-ms` (default 1000) and pushes it to every connected client:
//!
//! ```json
//! {"seq":42,"timestamp":"2025-01-01T12:00:41.000Z","value":-3.1415}
//! ```
//!
//! `timestamp` is RFC 3339 in UTC, `value` a random walk (a stand-in for a
//! sensor or a price), `seq` counts samples from 1, so a client can see that
//! it skipped some.
//!
//! What it teaches: one producer for all clients. A single task owns the
//! timer, builds each sample and serialises it *once*; a `broadcast` channel
//! hands the same reference-counted `Message` to every connection. Each
//! connection forwards samples at its client's pace, in one `select!` loop
//! (the client has nothing to say, so no reader/writer split), so a slow
//! client delays nobody but itself, and one that falls behind skips stale
//! samples: for live data the latest value is what matters. A client that
//! joins late starts with the next sample. What clients send is read (so
//! pings and the close handshake work) and otherwise ignored.
//!
//! The same loop keeps the connection honest in both directions:
//! - a heartbeat: it pings every `--ping-ms`, counts any frame from the
//!   client as a sign of life, and closes with 1011 (`ping timeout`) after
//!   `--ping-ms` + `--pong-timeout-ms` of silence, so a client whose machine
//!   vanished without a FIN does not keep its slot for the many minutes TCP
//!   would take to notice;
//! - a send deadline: while a send waits for a client that has stopped
//!   reading, the loop reads nothing (not even pongs or a close frame), so a
//!   send that cannot finish within `--send-timeout-ms` closes the client
//!   with 1008 (`too slow`): skipping samples was not enough.
//!
//! Run it (terminal 1), then watch (terminal 2):
//!
//! ```text
//! cargo run --example data_pusher                  # or: -- 127.0.0.1:0 --interval-ms 200
//! cargo run --example full_client -- ws://127.0.0.1:9001
//! ```
//!
//! The server prints `listening on ws://127.0.0.1:9001`, then logs (on
//! stderr, with the client's address) each connect and disconnect, and a
//! `closing code=CODE reason=REASON` line before it drops a client; the
//! client prints a sample every second, as `< {"seq":1,...}`.
//!
//! Settings: `--interval-ms 1000` (time between samples), `--ping-ms 5000`
//! (heartbeat interval), `--pong-timeout-ms 10000` (silence allowed after a
//! ping), `--send-timeout-ms 5000` (the longest one send may wait),
//! `--max-connections 1024` (connections served at once; more wait in the
//! kernel's backlog), `--allow-origin ORIGIN` (repeatable; the web pages allowed to connect,
//! `scheme://host[:port]` or `null`, any other origin's handshake gets HTTP
//! 403; without it every origin is accepted), `--max-per-ip 100` (open
//! connections from one IP address; one more gets HTTP 429; chapter 10),
//! `--tls-cert PEM --tls-key PEM` (serve `wss://`, TLS with rustls, and say
//! `listening on wss://IP:PORT`; chapter 10.6).
//!
//! Limits: clients have nothing to say here, so their messages are limited to
//! 4 KiB (a bigger one closes the connection with 1009), and the read buffer
//! to 4 KiB instead of the default 128 KiB, which is allocated up front for
//! every connection. Every close has a
//! deadline (`close::CLOSE_TIMEOUT` for our close frame and again for the
//! answer), so no client, however stuck, holds its slot for much longer than
//! the timeouts above.
//!
//! Docs: docs/06-case-studies.md

use std::pin::pin;
use std::process::ExitCode;
use std::time::Duration;

use clap::Parser;
use futures_util::{SinkExt, StreamExt};
use serde::Serialize;
use tokio::sync::broadcast::error::{RecvError, TryRecvError};
use tokio::sync::broadcast::{self, Receiver, Sender};
use tokio::time::{Instant, MissedTickBehavior, sleep_until, timeout};
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tokio_util::sync::CancellationToken;
use tracing::{error, info};
use websocket_tutorial::heartbeat::Due;
use websocket_tutorial::protocol::timestamp_now;
use websocket_tutorial::server::{self, Deadlines, Ending, ServerArgs, WsStream};
use websocket_tutorial::{args, output};

/// How many samples may wait for a client before it starts skipping stale
/// ones: enough to ride out a short hiccup without losing any.
const BACKLOG: usize = 16;

// ANCHOR: sample
/// One data point, as clients receive it.
#[derive(Debug, Serialize)]
struct Sample {
    seq: u64,
    /// RFC 3339, UTC, milliseconds: `2025-01-01T12:00:41.000Z`.
    timestamp: String,
    value: f64,
}
// ANCHOR_END: sample

/// Pushes a live sample to every connected client.
#[derive(Parser)]
#[command(allow_negative_numbers = true)] // `--ping-ms -1`: a bad value, not a flag
struct Args {
    #[command(flatten)]
    server: ServerArgs,
    /// Time between two samples, in milliseconds.
    #[arg(long = "interval-ms", value_name = "MS", default_value = "1000")]
    #[arg(value_parser = args::period)]
    every: Duration,
    #[command(flatten)]
    deadlines: Deadlines,
}

#[tokio::main]
async fn main() -> ExitCode {
    let _log = output::init_logging();
    // --help or a mistake: clap exits 0 or 2
    let Args { server, every, deadlines } = Args::parse();

    // ANCHOR: config
    let config = WebSocketConfig::default()
        .read_buffer_size(4 * 1024)
        .max_message_size(Some(4 * 1024))
        .max_frame_size(Some(4 * 1024));
    // ANCHOR_END: config

    // ANCHOR: channel
    // One producer publishes; each connection subscribes as it is accepted.
    let (samples, _) = broadcast::channel::<Message>(BACKLOG);
    // It runs until `main` returns, and the runtime drops it with every task.
    tokio::spawn(produce(samples.clone(), every));
    let handler = move |ws, shutdown| client(ws, shutdown, samples.subscribe(), deadlines);
    server::run(server, config, handler).await
    // ANCHOR_END: channel
}

// ANCHOR: produce
/// Publishes a sample every `every`, for as long as the server runs. The
/// only place samples are made: each is serialised once, whatever the
/// number of clients.
async fn produce(samples: Sender<Message>, every: Duration) {
    let mut ticks = tokio::time::interval(every);
    // If this task is held up (an overloaded host, a suspended laptop), the
    // default, `Burst`, would fire every missed tick at once: a burst of
    // samples with nearly equal timestamps. `Delay` waits a full interval
    // after a late tick, so samples are never closer than `every`.
    ticks.set_missed_tick_behavior(MissedTickBehavior::Delay);
    let mut value = 0.0_f64;
    for seq in 1_u64.. {
        ticks.tick().await;
        value += rand::random_range(-1.0..=1.0);
        let timestamp = timestamp_now();
        let sample = Sample { seq, timestamp, value };
        match serde_json::to_string(&sample) {
            // Fails only when nobody is connected: nobody needs this sample.
            Ok(json) => _ = samples.send(Message::text(json)),
            Err(e) => error!(error = %e, ?sample, "cannot serialise a sample"),
        }
    }
}
// ANCHOR_END: produce

// ANCHOR: push
/// Serves one client with a single loop: no split, no second task. The
/// client has nothing to say, so one `select!` over shutdown, the socket,
/// the heartbeat and the samples is all it takes. (The broadcast server of
/// chapter 4.1 needs a reader and a writer; here one loop is enough.)
async fn client(
    mut ws: WsStream,
    shutdown: CancellationToken,
    mut samples: Receiver<Message>,
    deadlines: Deadlines,
) {
    // `samples` was subscribed before this line, so a client that waits for
    // it will get the next sample produced.
    info!("connected");
    // The heartbeat: a ping every `--ping-ms`, and any frame from the client
    // (its pong included) proves it alive. Silence for longer than a ping
    // interval plus `--pong-timeout-ms` means the connection is half-open:
    // the client's machine vanished without a FIN, and TCP alone would keep
    // the slot for many minutes. `Heartbeat` keeps the times; one timer
    // fires at the next ping or at the end of the allowed silence.
    let mut heartbeat = deadlines.heartbeat.start();
    let mut heartbeat_timer = pin!(sleep_until(heartbeat.next_wake()));
    let ending = loop {
        // Wait for one of: shutdown, the client, the heartbeat (time to ping,
        // or too much silence), or the next sample. `biased`: in this order.
        // The client comes before the heartbeat, so a pong that arrived
        // while we were sending still counts; the client and the heartbeat
        // come before the samples, so a client that is behind (a sample
        // always ready) is still pinged and heard.
        let outgoing = tokio::select! {
            biased;
            _ = shutdown.cancelled() => break Ending::Close(CloseCode::Away, "server shutting down"),
            // What the client sends is ignored, but reading it is what lets
            // tungstenite answer pings and the client's close frame.
            msg = ws.next() => match msg {
                Some(Ok(_)) => {
                    heartbeat.heard(Instant::now());
                    continue;
                }
                None => break Ending::Done,
                // For example 1009 for a message over 4 KiB.
                Some(Err(e)) => break Ending::ReadFailed(e),
            },
            due = heartbeat.due(heartbeat_timer.as_mut()) => match due {
                Due::Ping => Message::Ping(Default::default()),
                Due::Dead => break Ending::Close(CloseCode::Error, "ping timeout"),
            },
            sample = next_sample(&mut samples) => match sample {
                Some(sample) => sample,
                None => break Ending::Done, // the producer stopped
            },
        };
        // A client that stopped reading makes this send wait once its socket
        // buffers are full, and while it waits this loop reads nothing: not
        // the client's pongs, not its close frame. So the wait is bounded: a
        // client that cannot take one message within `send_timeout`, even
        // after skipping stale samples, cannot keep up, and is let go. The
        // send also races shutdown, so that Ctrl-C still gets through (the
        // next turn of the loop closes).
        let sent = tokio::select! {
            sent = timeout(deadlines.send_timeout, ws.send(outgoing)) => sent,
            _ = shutdown.cancelled() => continue,
        };
        match sent {
            Ok(Ok(())) => {}
            Ok(Err(e)) => break Ending::SendFailed(e),
            Err(_) => break Ending::Close(CloseCode::Policy, "too slow: a send timed out"),
        }
    };
    // Says why we drop the client, in our log and in the close frame. Each
    // step of the close handshake has a deadline, so a client that is stuck
    // or gone costs us seconds, not a slot forever.
    ending.close(&mut ws).await;
    info!("disconnected");
}
// ANCHOR_END: push

// ANCHOR: skip
/// The next sample for this client; `None` when the producer has stopped.
///
/// A client more than [`BACKLOG`] samples behind skips to the newest one:
/// old samples would only delay the current value. (Had clients wanted
/// *only* the current value, never the series, `tokio::sync::watch` would
/// do; a broadcast lets a client that keeps up see every sample.)
async fn next_sample(samples: &mut Receiver<Message>) -> Option<Message> {
    loop {
        match samples.recv().await {
            Ok(sample) => return Some(sample),
            Err(RecvError::Lagged(_)) => {
                if let Some(newest) = newest_queued(samples) {
                    return Some(newest);
                }
            }
            Err(RecvError::Closed) => return None,
        }
    }
}

/// Empties the receiver's queue and returns the last sample in it.
fn newest_queued(samples: &mut Receiver<Message>) -> Option<Message> {
    let mut newest = None;
    loop {
        match samples.try_recv() {
            Ok(sample) => newest = Some(sample),
            Err(TryRecvError::Lagged(_)) => continue, // overtaken again: keep going
            Err(TryRecvError::Empty | TryRecvError::Closed) => return newest,
        }
    }
}
// ANCHOR_END: skip
