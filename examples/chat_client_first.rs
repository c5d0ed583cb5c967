//! Chapter 6.1, the first version of the terminal chat client.
//!
//! What it teaches: a client for a JSON protocol: it joins a room with a
//! typed command, says each line typed there, and shows the server's typed
//! events readably; one `select!` loop over the keyboard and the socket; a
//! writer task fed by a bounded queue (chapter 3.1); a clean close on
//! `/quit` or the end of input that still shows what arrives before the
//! server's answer. Chapter 6.1 then grows it, step by step, into
//! `chat_client`.
//!
//! ```text
//! cargo run --example chat_server                                           # terminal 1
//! cargo run --example chat_client_first -- ws://127.0.0.1:9001 alice        # terminal 2
//! cargo run --example chat_client_first -- ws://127.0.0.1:9001 bob          # terminal 3
//! ```
//!
//! Each joins `general`; each line typed is said there; `/quit`, the end
//! of input (Ctrl-D) and Ctrl-C close.
//! A close from the server ends it: exit code 0 for 1000 or 1001, 1 for a
//! close that says the client broke a rule (1008, ...).
//!
//! Docs: docs/06-case-studies.md

use std::process::ExitCode;

use chrono::{DateTime, Local};
use clap::Parser;
use futures_util::{SinkExt, StreamExt};
use tokio::{sync::mpsc, time::timeout};
use tokio_tungstenite::tungstenite::{Error, Message, protocol::frame::coding::CloseCode};
use tracing::warn;
use websocket_tutorial::protocol::{ClientMessage, ServerEvent};
use websocket_tutorial::{client, close, output};

// ANCHOR: all
/// Joins `general` on a chat server as USERNAME and says there each line
/// typed; `/quit` closes.
#[derive(Parser)]
struct Args {
    /// The chat server's URL.
    #[arg(value_parser = client::parse_url)]
    url: String,
    /// Your name in the room.
    username: String,
}

const ROOM: &str = "general";

#[tokio::main]
async fn main() -> ExitCode {
    let _log = output::init_logging();
    let Args { url, username } = Args::parse();
    let (mut sink, mut stream) = match client::connect(&url, Default::default()).await {
        Ok(ws) => ws.split(),
        Err(e) => return output::fail(format_args!("cannot connect to {url}: {e}")),
    };
    // The writer task, fed by a bounded queue: commands go out in order.
    let (tx, mut rx) = mpsc::channel::<Message>(32);
    tokio::spawn(async move {
        while let Some(msg) = rx.recv().await
            && sink.send(msg).await.is_ok()
        {}
    });
    let join = ClientMessage::Join { room: ROOM.into(), username, since: None, epoch: None };
    let _ = tx.send(join.to_message()).await;

    let mut lines = client::stdin_lines(32);
    let mut ctrl_c = std::pin::pin!(tokio::signal::ctrl_c());
    loop {
        tokio::select! {
            // In this order: Ctrl-C is first polled (and so caught) on the
            // loop's first turn, even when an event is already waiting.
            biased;
            _ = &mut ctrl_c => break,
            line = lines.recv() => match line.as_deref().map(str::trim) {
                None | Some("/quit") => break, // the end of input (Ctrl-D), or /quit
                Some("") => {}
                Some(text) => {
                    let say = ClientMessage::Message { room: ROOM.into(), content: text.into() };
                    let _ = tx.send(say.to_message()).await;
                }
            },
            msg = stream.next() => if let Some(code) = receive(msg, false) {
                close::answer(&mut stream).await; // the server closed: answer it
                return code;
            },
        }
    }
    // Close 1000 through the queue, after every line said, and show what
    // still arrives until the server's answer (its echo of our last line).
    let _ = tx.send(close::message(CloseCode::Normal, "bye")).await;
    let answer = timeout(close::CLOSE_TIMEOUT, async {
        loop {
            if let Some(code) = receive(stream.next().await, true) {
                return code;
            }
        }
    });
    answer.await.unwrap_or_else(|_| output::fail("the server did not answer our close frame"))
}

/// Shows one message from the server; once the connection has ended, the
/// exit code. A close we asked for (`closing`) needs no words.
fn receive(msg: Option<Result<Message, Error>>, closing: bool) -> Option<ExitCode> {
    match msg {
        Some(Ok(msg @ Message::Text(_))) => match ServerEvent::try_from(&msg) {
            Ok(event) => show(&event),
            Err(e) => warn!("unexpected message from the server: {e}"),
        },
        Some(Ok(Message::Close(frame))) => {
            let why = frame.as_ref().map(|f| format!("{} ({})", u16::from(f.code), f.reason));
            if !closing {
                let why = why.unwrap_or_default();
                let _ = output::line(format_args!("server closed the connection: {why}"));
            }
            return Some(frame.map_or(ExitCode::SUCCESS, |f| close::exit_code(f.code)));
        }
        Some(Ok(_)) => {} // pings: tungstenite answers them
        Some(Err(e)) => return Some(output::fail(format_args!("connection lost: {e}"))),
        None => return Some(output::fail("connection lost")),
    }
    None
}

/// Prints an event as `[19:50:41] #general <bob> hi`: a message with the
/// server's time, in the reader's time zone; presence with the client's.
fn show(event: &ServerEvent) {
    let now = Local::now().format("%H:%M:%S").to_string();
    let _ = output::line(match event {
        ServerEvent::Joined { room, username, .. } => {
            format!("[{now}] #{room} * {username} joined")
        }
        ServerEvent::Left { room, username, .. } => format!("[{now}] #{room} * {username} left"),
        ServerEvent::Message { room, username, content, timestamp, .. } => {
            let at = DateTime::parse_from_rfc3339(timestamp).map(|t| t.with_timezone(&Local));
            let at = at.map_or(now, |t| t.format("%H:%M:%S").to_string());
            format!("[{at}] #{room} <{username}> {content}")
        }
        ServerEvent::Error { room: Some(room), message, .. } => format!("! #{room}: {message}"),
        ServerEvent::Error { room: None, message, .. } => format!("! error: {message}"),
        other => format!("{other:?}"), // not asked for by this client
    });
}
// ANCHOR_END: all
