//! Chapter 7: the client side of the Autobahn|Testsuite, the conformance
//! suite for RFC 6455 that tokio-tungstenite runs in its own CI.
//!
//! What it teaches: what a client must get right beyond its happy path.
//! The suite's `fuzzingserver` plays a server that sends every kind of
//! frame, valid and broken (fragmented messages with pings in between,
//! invalid UTF-8, reserved bits and opcodes, bad close codes, messages up to
//! 16 MiB), and judges how the client answers. This client does the least a
//! conforming one can: it echoes every text and binary message back, lets
//! tungstenite answer pings and close frames, and tells a server that broke
//! a rule why, with the close code for it (1002, 1007 or 1009), as the
//! servers here do.
//!
//! It asks the suite how many cases there are (`/getCaseCount`), opens one
//! connection per case (`/runCase?case=N&agent=AGENT`), and at the end asks
//! it to write its report (`/updateReports?agent=AGENT`). `scripts/autobahn.sh`
//! installs the suite, starts it and runs this against it; by hand:
//!
//! ```text
//! wstest -m fuzzingserver -s spec.json             # the suite, listening on ws://127.0.0.1:9001
//! cargo run --example autobahn_client -- ws://127.0.0.1:9001 --agent websocket-tutorial
//! ```
//!
//! It prints `ran N cases as websocket-tutorial` and exits 0; the verdicts
//! are in the suite's report, not here. Exit code 1 when the suite cannot
//! be reached, a case cannot be opened or does not end within 2 minutes, or
//! the report is not written.
//!
//! Limits: messages and frames up to 16 MiB, as the echo server: the
//! suite's largest (cases 9.*) are exactly that big.
//!
//! Docs: docs/07-summary.md

use std::process::ExitCode;
use std::time::Duration;

use clap::Parser;
use futures_util::{SinkExt, StreamExt};
use tokio::time::timeout;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tracing::{Instrument, info, info_span, warn};
use websocket_tutorial::client::{self, DEFAULT_URL, WsClient};
use websocket_tutorial::error::{Error, close_code, is_disconnect};
use websocket_tutorial::{close, output};

/// The longest one case may take. The slowest, a 16 MiB message echoed by
/// a debug build, takes a few seconds; a case that hangs must not hang CI.
const CASE_TIMEOUT: Duration = Duration::from_secs(120);

/// How long we wait for the suite's answer to `/getCaseCount`.
const REPLY_TIMEOUT: Duration = Duration::from_secs(5);

/// Runs every case of the Autobahn|Testsuite's fuzzingserver, echoing.
#[derive(Parser)]
struct Args {
    /// The suite's URL (its spec file's `url`).
    #[arg(default_value = DEFAULT_URL, value_parser = client::parse_url)]
    url: String,
    /// The name the suite files this client's results under.
    #[arg(long, default_value = "websocket-tutorial", value_parser = agent_name)]
    agent: String,
}

// ANCHOR: main
#[tokio::main]
async fn main() -> ExitCode {
    let _log = output::init_logging();
    let Args { url, agent } = Args::parse();
    let base = url.trim_end_matches('/');

    let count = match case_count(base).await {
        Ok(count) => count,
        Err(e) => return output::fail(format_args!("cannot get the case count from {base}: {e}")),
    };
    let mut broken = 0;
    for case in 1..=count {
        let url = format!("{base}/runCase?case={case}&agent={agent}");
        let run = async {
            let mut ws = client::connect(&url, config()).await?;
            echo_until_closed(&mut ws).await;
            Ok::<_, Error>(())
        };
        // The span puts the case's number on each of its log lines.
        let run = run.instrument(info_span!("case", case));
        match timeout(CASE_TIMEOUT, run).await {
            Ok(Ok(())) => {}
            Ok(Err(e)) => {
                warn!(case, error = %e, "cannot run the case");
                broken += 1;
            }
            Err(_) => {
                warn!(case, "the case did not end within {CASE_TIMEOUT:?}");
                broken += 1;
            }
        }
    }
    if let Err(e) = update_reports(base, &agent).await {
        return output::fail(format_args!("cannot ask {base} to write its report: {e}"));
    }
    if broken > 0 {
        return output::fail(format_args!("{broken} of {count} cases could not be run"));
    }
    let _ = output::line(format_args!("ran {count} cases as {agent}"));
    ExitCode::SUCCESS
}
// ANCHOR_END: main

/// Messages and frames up to 16 MiB, the size of the suite's largest.
fn config() -> WebSocketConfig {
    WebSocketConfig::default().max_message_size(Some(16 << 20)).max_frame_size(Some(16 << 20))
}

// ANCHOR: echo
/// Echoes every text and binary message back until the connection ends.
/// Pings and the server's close frame are answered by tungstenite itself
/// (on our next read or write); after the close frame the stream ends.
async fn echo_until_closed(ws: &mut WsClient) {
    while let Some(msg) = ws.next().await {
        let reply = match msg {
            Ok(msg @ (Message::Text(_) | Message::Binary(_))) => msg,
            Ok(_) => continue,
            Err(e) => {
                // The server broke a rule (the suite's point): tell it
                // which, with the close code for it. A server that is
                // simply gone gets nothing.
                if let Some(code) = close_code(&e) {
                    info!(code = u16::from(code), reason = %e, "closing");
                    close::after_broken_rule(ws, code, &e.to_string()).await;
                }
                return;
            }
        };
        if let Err(e) = ws.send(reply).await {
            if !is_disconnect(&e) {
                info!(error = %e, "echo failed");
            }
            return;
        }
    }
}
// ANCHOR_END: echo

/// Asks the suite how many cases it has: its one text message.
async fn case_count(base: &str) -> Result<u32, String> {
    let url = format!("{base}/getCaseCount");
    let mut ws = client::connect(&url, config()).await.map_err(|e| e.to_string())?;
    let reply = timeout(REPLY_TIMEOUT, async {
        loop {
            match ws.next().await {
                Some(Ok(Message::Text(text))) => return Ok(text),
                Some(Ok(_)) => continue,
                Some(Err(e)) => return Err(e.to_string()),
                None => return Err("the connection ended without it".to_string()),
            }
        }
    })
    .await
    .map_err(|_| format!("no answer within {REPLY_TIMEOUT:?}"))??;
    close::handshake(&mut ws, CloseCode::Normal, "").await;
    reply.trim().parse().map_err(|_| format!("not a number: {reply:?}"))
}

/// Asks the suite to write its report for `agent`: it does so when this
/// connection closes.
async fn update_reports(base: &str, agent: &str) -> Result<(), Error> {
    let url = format!("{base}/updateReports?agent={agent}");
    let mut ws = client::connect(&url, config()).await?;
    close::handshake(&mut ws, CloseCode::Normal, "").await;
    Ok(())
}

/// An agent name goes into the URL's query as it is, so it holds only
/// letters, digits, `-`, `_` and `.`: nothing that needs escaping.
fn agent_name(text: &str) -> Result<String, String> {
    let fits = |c: char| c.is_ascii_alphanumeric() || "-_.".contains(c);
    if !text.is_empty() && text.chars().all(fits) {
        Ok(text.to_string())
    } else {
        Err("use letters, digits, '-', '_' and '.' only".to_string())
    }
}
