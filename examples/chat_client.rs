//! Chapter 6.1: a terminal client for the chat server.
//!
//! What it teaches: a client for a JSON protocol: typed commands out, typed
//! events in, shown readably; one `select!` loop over the keyboard, the
//! socket and Ctrl-C; a writer task fed by a bounded queue (as in chapter
//! 3.1); and a clean close on `/quit`, end of input or Ctrl-C.
//!
//! ```text
//! cargo run --example chat_server                                 # terminal 1
//! cargo run --example chat_client -- ws://127.0.0.1:9001 alice    # terminal 2
//! cargo run --example chat_client -- bob                          # terminal 3 (default URL)
//! ```
//!
//! It joins `general`. Each line you type is said in the current room (the
//! one you joined last); `/join ROOM` joins another and makes it current,
//! `/leave ROOM` leaves one, `/quit` closes. You will see lines like:
//!
//! ```text
//! [19:50:35] #general * bob joined
//! [19:50:41] #general <bob> hi alice
//! ```
//!
//! Limits: messages up to 64 KiB, like the server (default 64 MiB).
//!
//! Docs: docs/06-case-studies.md

use std::io;
use std::process::ExitCode;

use chrono::{DateTime, Local};
use clap::Parser;
use futures_util::{SinkExt, StreamExt};
use tokio::sync::mpsc;
use tokio::time::timeout;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tracing::warn;
use websocket_tutorial::client::{self, DEFAULT_URL};
use websocket_tutorial::close::{self, CLOSE_TIMEOUT};
use websocket_tutorial::output;
use websocket_tutorial::protocol::{ClientMessage, ServerEvent};

const FIRST_ROOM: &str = "general";
const QUEUE: usize = 32;

/// A terminal client for the chat server: joins `general` as USERNAME.
#[derive(Parser)]
#[command(after_help = "Commands: /join ROOM, /leave ROOM, /quit; \
                        other lines are said in the current room.")]
// The URL may be left out even though USERNAME follows it: one argument is
// the name, two are the URL and the name.
#[command(allow_missing_positional = true)]
struct Args {
    /// The chat server's URL.
    #[arg(default_value = DEFAULT_URL, value_parser = client::parse_url)]
    url: String,
    /// Your name in the rooms you join.
    username: String,
}

#[tokio::main]
async fn main() -> ExitCode {
    let _log = output::init_logging();
    let Args { url, username } = Args::parse(); // --help or a mistake: clap exits 0 or 2

    let config = WebSocketConfig::default().max_message_size(Some(64 * 1024));
    let ws = match client::connect(&url, config).await {
        Ok(ws) => ws,
        Err(e) => return output::fail(format_args!("cannot connect to {url}: {e}")),
    };
    let (mut sink, mut stream) = ws.split();

    // The writer task: the only one that writes to the socket.
    let (tx, mut rx) = mpsc::channel::<Message>(QUEUE);
    let writer = tokio::spawn(async move {
        while let Some(msg) = rx.recv().await {
            let closing = msg.is_close();
            if sink.send(msg).await.is_err() || closing {
                break;
            }
        }
    });

    let join = ClientMessage::Join { room: FIRST_ROOM.into(), username: username.clone() };
    let _ = tx.send(join.to_message()).await;
    // The rooms we are in; the last is current. A room counts from the
    // moment we ask to join it: the server handles our commands in order,
    // so a line typed (or piped) right after `/join` lands in that room,
    // and a refused join comes back as an Error event.
    let mut rooms: Vec<String> = vec![FIRST_ROOM.to_string()];
    let mut lines = client::stdin_lines(QUEUE);
    let ctrl_c = tokio::signal::ctrl_c();
    tokio::pin!(ctrl_c);

    // ANCHOR: loop
    let code = loop {
        // Wait for one of: a line typed, an event from the server, Ctrl-C.
        tokio::select! {
            line = lines.recv() => {
                let Some(line) = line else { break None }; // end of input
                match command(&line, &username, &rooms) {
                    Input::Send(command) => {
                        if let ClientMessage::Join { room, .. } = &command {
                            rooms.retain(|r| r != room); // it becomes the current room
                            rooms.push(room.clone());
                        }
                        if tx.send(command.to_message()).await.is_err() {
                            break Some(output::fail("connection lost"));
                        }
                    }
                    Input::Quit => break None,
                    Input::Nothing => {}
                    Input::Complain(text) => warn!("{text}"),
                }
            }
            msg = stream.next() => match msg {
                Some(Ok(msg @ Message::Text(_))) => match ServerEvent::try_from(&msg) {
                    // Nobody can see the chat any more (stdout closed): leave
                    // as on /quit.
                    Ok(event) => if show(&event, &username, &mut rooms).is_err() { break None },
                    Err(e) => warn!("unexpected message from the server: {e}"),
                },
                Some(Ok(Message::Close(frame))) => {
                    let why = frame.map(|f| format!("{} ({})", u16::from(f.code), f.reason));
                    let _ = output::line(format_args!(
                        "server closed the connection: {}",
                        why.unwrap_or_default()
                    ));
                    break Some(ExitCode::SUCCESS);
                }
                Some(Ok(_)) => {} // pings are answered by tungstenite
                Some(Err(e)) => break Some(output::fail(format_args!("connection lost: {e}"))),
                None => break Some(output::fail("connection lost")),
            },
            _ = &mut ctrl_c => break None,
        }
    };
    // ANCHOR_END: loop

    if let Some(code) = code {
        return code; // the server ended it
    }
    // We end it: close 1000 through the queue, after anything still queued,
    // then wait for the server's answer.
    let _ = tx.send(close::message(CloseCode::Normal, "bye")).await;
    let _ = timeout(CLOSE_TIMEOUT, close::wait_for_reply(&mut stream)).await;
    drop(tx);
    let _ = writer.await;
    ExitCode::SUCCESS
}

/// What a typed line asks for.
enum Input {
    Send(ClientMessage),
    Quit,
    Nothing,
    Complain(String),
}

// ANCHOR: command
/// Turns a typed line into a protocol command.
fn command(line: &str, username: &str, rooms: &[String]) -> Input {
    let line = line.trim();
    let (word, rest) = line.split_once(' ').map_or((line, ""), |(w, r)| (w, r.trim()));
    match word {
        "" => Input::Nothing,
        "/quit" => Input::Quit,
        "/join" | "/leave" if rest.is_empty() => Input::Complain(format!("usage: {word} ROOM")),
        "/join" => {
            Input::Send(ClientMessage::Join { room: rest.into(), username: username.into() })
        }
        "/leave" => Input::Send(ClientMessage::Leave { room: rest.into() }),
        _ if word.starts_with('/') => {
            Input::Complain(format!("unknown command {word}; try /join, /leave, /quit"))
        }
        _ => match rooms.last() {
            Some(room) => {
                Input::Send(ClientMessage::Message { room: room.clone(), content: line.into() })
            }
            None => Input::Complain("join a room first: /join ROOM".into()),
        },
    }
}
// ANCHOR_END: command

/// Prints one server event readably, and keeps `rooms` in step with the
/// server's word on our own joins and leaves. Fails only when stdout is
/// gone. (A full stdout pipe makes it wait, and the whole loop with it:
/// fine for a client with one connection, which has nothing else to do.)
fn show(event: &ServerEvent, me: &str, rooms: &mut Vec<String>) -> io::Result<()> {
    let now = Local::now().format("%H:%M:%S");
    let text = match event {
        ServerEvent::Joined { room, username } => {
            // Usually already there (we added it when asking); names are
            // unique in a room, so this event is ours.
            if username == me && !rooms.contains(room) {
                rooms.push(room.clone());
            }
            format!("[{now}] #{room} * {username} joined")
        }
        ServerEvent::Left { room, username } => {
            if username == me {
                rooms.retain(|r| r != room);
            }
            format!("[{now}] #{room} * {username} left")
        }
        ServerEvent::Message { room, username, content, timestamp, .. } => {
            // Show the server's time, in the reader's time zone.
            let at = DateTime::parse_from_rfc3339(timestamp)
                .map(|t| t.with_timezone(&Local).format("%H:%M:%S").to_string())
                .unwrap_or_else(|_| timestamp.clone());
            format!("[{at}] #{room} <{username}> {content}")
        }
        ServerEvent::Pong => "pong".to_string(),
        ServerEvent::Error { room: Some(room), message } => format!("! #{room}: {message}"),
        ServerEvent::Error { room: None, message } => format!("! error: {message}"),
    };
    output::line(text)
}
