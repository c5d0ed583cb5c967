//! Chapter 6.1: a terminal client for the chat server.
//!
//! What it teaches: a client for a JSON protocol: typed commands out, typed
//! events in, shown readably; one `select!` loop over the keyboard, the
//! socket and Ctrl-C; a writer task fed by a bounded queue (as in chapter
//! 3.1); state that follows the server's word, not the user's wish; and a
//! clean close on `/quit`, end of input or Ctrl-C that still shows what
//! arrives before the server's answer.
//!
//! ```text
//! cargo run --example chat_server                                 # terminal 1
//! cargo run --example chat_client -- ws://127.0.0.1:9001 alice    # terminal 2
//! cargo run --example chat_client -- bob                          # terminal 3 (default URL)
//! ```
//!
//! It joins `general`. Each line you type is said in the current room (the
//! one you joined last); `/join ROOM` joins another, which becomes current
//! once the server has confirmed it, `/leave ROOM` leaves one, `/quit`
//! closes, `/help` lists the commands. You will see lines like:
//!
//! ```text
//! [19:50:35] #general * bob joined
//! [19:50:41] #general <bob> hi alice
//! ```
//!
//! Limits: messages up to 64 KiB, like the server (default 64 MiB). A line
//! longer than the server accepts (4 KiB of content) is not sent: the client
//! says so instead.
//!
//! Docs: docs/06-case-studies.md

use std::io;
use std::process::ExitCode;

use chrono::{DateTime, Local};
use clap::Parser;
use futures_util::{SinkExt, StreamExt};
use tokio::sync::mpsc;
use tokio::time::{Instant, sleep};
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tracing::{info, warn};
use websocket_tutorial::client::{self, DEFAULT_URL};
use websocket_tutorial::close::{self, CLOSE_TIMEOUT};
use websocket_tutorial::output;
use websocket_tutorial::protocol::{ClientMessage, MAX_CONTENT_BYTES, ServerEvent};

const FIRST_ROOM: &str = "general";
const QUEUE: usize = 32;

/// A terminal client for the chat server: joins `general` as USERNAME.
#[derive(Parser)]
#[command(after_help = "Commands: /join ROOM, /leave ROOM, /quit, /help; \
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

    let join =
        ClientMessage::Join { room: FIRST_ROOM.into(), username: username.clone(), since: None };
    let _ = tx.send(join.to_message()).await;
    info!("joining #{FIRST_ROOM} as {username}; type a line to say it, /help lists the commands");

    // ANCHOR: state
    // The rooms we are in, as the server confirmed them; the last is current.
    let mut rooms: Vec<String> = Vec::new();
    // A join the server has not answered yet. The next line waits for the
    // answer: typed (or piped) right after `/join rust`, it belongs in
    // `rust` if the join succeeds, and in the current room if it is refused.
    let mut joining = Some(FIRST_ROOM.to_string());
    // ANCHOR_END: state
    let mut lines = client::stdin_lines(QUEUE);
    let ctrl_c = tokio::signal::ctrl_c();
    tokio::pin!(ctrl_c);
    // Set once our close frame is sent: then the loop only waits for the
    // server's answer, until `close_deadline`.
    let mut closing = false;
    let close_deadline = sleep(CLOSE_TIMEOUT);
    tokio::pin!(close_deadline);

    // ANCHOR: loop
    let code = loop {
        // Wait for one of: a line typed (unless a join is unanswered, or we
        // are closing), an event from the server, Ctrl-C, or the end of the
        // wait for the answer to our close frame.
        let close_now = tokio::select! {
            line = lines.recv(), if joining.is_none() && !closing => match line {
                None => true, // end of input
                Some(line) => match command(&line, &username, &rooms) {
                    Input::Send(command) => {
                        if let ClientMessage::Join { room, .. } = &command {
                            joining = Some(room.clone());
                        }
                        if tx.send(command.to_message()).await.is_err() {
                            break output::fail("connection lost");
                        }
                        false
                    }
                    Input::Switch(room) => {
                        info!("talking in #{room}");
                        rooms.retain(|r| *r != room);
                        rooms.push(room);
                        false
                    }
                    Input::Quit => true,
                    Input::Help => {
                        info!("{}", help(rooms.last()));
                        false
                    }
                    Input::Nothing => false,
                    Input::Complain(text) => {
                        warn!("{text}");
                        false
                    }
                },
            },
            msg = stream.next() => match msg {
                Some(Ok(msg @ Message::Text(_))) => match ServerEvent::try_from(&msg) {
                    Ok(event) => {
                        follow(&event, &username, &mut rooms, &mut joining);
                        // Nobody can see the chat any more (stdout closed):
                        // leave as on /quit.
                        show(&event).is_err()
                    }
                    Err(e) => {
                        warn!("unexpected message from the server: {e}");
                        false
                    }
                },
                Some(Ok(Message::Close(frame))) => {
                    // The answer to our close frame needs no words.
                    if !closing {
                        let why = frame.as_ref().map(|f| format!("{} ({})", u16::from(f.code), f.reason));
                        let _ = output::line(format_args!(
                            "server closed the connection: {}",
                            why.unwrap_or_default()
                        ));
                    }
                    // 0 for 1000 or 1001, 1 for a close that says something
                    // failed (1008, 1011, ...): the same rule as full_client.
                    break frame.map_or(ExitCode::SUCCESS, |f| close::exit_code(f.code));
                }
                Some(Ok(_)) => false, // pings are answered by tungstenite
                Some(Err(e)) => break output::fail(format_args!("connection lost: {e}")),
                None => break output::fail("connection lost"),
            },
            _ = &mut ctrl_c, if !closing => true,
            () = &mut close_deadline, if closing => {
                break output::fail("the server did not answer our close frame");
            }
        };
        if close_now && !closing {
            // Close 1000 through the queue, after anything still queued.
            // The loop goes on without input: what arrives before the
            // server's answer (the echo of our last line, say) is shown.
            let _ = tx.send(close::message(CloseCode::Normal, "bye")).await;
            closing = true;
            close_deadline.as_mut().reset(Instant::now() + CLOSE_TIMEOUT);
        }
    };
    // ANCHOR_END: loop

    drop(tx); // lets the writer finish if it is still waiting for messages
    let _ = writer.await;
    code
}

/// What a typed line asks for.
enum Input {
    Send(ClientMessage),
    /// Make a room we are already in the current one.
    Switch(String),
    Quit,
    Help,
    Nothing,
    Complain(String),
}

// ANCHOR: command
/// Turns a typed line into a protocol command, or refuses it before anything
/// is sent.
fn command(line: &str, username: &str, rooms: &[String]) -> Input {
    let line = line.trim();
    let (word, rest) = line.split_once(' ').map_or((line, ""), |(w, r)| (w, r.trim()));
    match word {
        "" => Input::Nothing,
        "/quit" => Input::Quit,
        "/help" => Input::Help,
        "/join" | "/leave" if rest.is_empty() => Input::Complain(format!("usage: {word} ROOM")),
        // Already in it: no need to ask the server.
        "/join" if rooms.iter().any(|r| r == rest) => Input::Switch(rest.into()),
        "/join" => Input::Send(ClientMessage::Join {
            room: rest.into(),
            username: username.into(),
            since: None,
        }),
        "/leave" => Input::Send(ClientMessage::Leave { room: rest.into() }),
        _ if word.starts_with('/') => {
            Input::Complain(format!("unknown command {word}; /help lists the commands"))
        }
        // The server would refuse it, and close the connection for a
        // message over 64 KiB: say so now, and send nothing.
        _ if line.len() > MAX_CONTENT_BYTES => Input::Complain(format!(
            "not sent: {} bytes; the server accepts at most {MAX_CONTENT_BYTES}",
            line.len()
        )),
        _ => match rooms.last() {
            Some(room) => {
                Input::Send(ClientMessage::Message { room: room.clone(), content: line.into() })
            }
            None => Input::Complain("join a room first: /join ROOM".into()),
        },
    }
}
// ANCHOR_END: command

/// The answer to `/help`.
fn help(current: Option<&String>) -> String {
    let current = current.map_or("none yet".to_string(), |room| format!("#{room}"));
    format!(
        "commands:
  /join ROOM   join ROOM, or switch to it if you are in it; it becomes the current room
  /leave ROOM  leave ROOM
  /quit        close the connection (so do Ctrl-D and Ctrl-C)
  /help        this list
any other line is said in the current room ({current}), up to {MAX_CONTENT_BYTES} bytes"
    )
}

// ANCHOR: follow
/// Keeps `rooms` and `joining` in step with the server's word on our own
/// joins and leaves: a room becomes current when the server says we joined
/// it, not when we ask.
fn follow(event: &ServerEvent, me: &str, rooms: &mut Vec<String>, joining: &mut Option<String>) {
    match event {
        // Names are unique in a room, so a `Joined` with our name is ours.
        ServerEvent::Joined { room, username } if username == me => {
            rooms.retain(|r| r != room);
            rooms.push(room.clone());
            if joining.as_ref() == Some(room) {
                *joining = None;
            }
        }
        ServerEvent::Left { room, username } if username == me => rooms.retain(|r| r != room),
        // A refused join names its room: forget the join, keep the current
        // room.
        ServerEvent::Error { room: Some(room), .. } if joining.as_ref() == Some(room) => {
            *joining = None;
        }
        _ => {}
    }
}
// ANCHOR_END: follow

/// Prints one server event readably. Fails only when stdout is gone. (A
/// full stdout pipe makes it wait, and the whole loop with it: fine for a
/// client with one connection, which has nothing else to do.)
fn show(event: &ServerEvent) -> io::Result<()> {
    let now = Local::now().format("%H:%M:%S");
    let text = match event {
        ServerEvent::Joined { room, username } => format!("[{now}] #{room} * {username} joined"),
        ServerEvent::Left { room, username } => format!("[{now}] #{room} * {username} left"),
        ServerEvent::Message { room, username, content, timestamp, .. } => {
            // Show the server's time, in the reader's time zone.
            let at = DateTime::parse_from_rfc3339(timestamp)
                .map(|t| t.with_timezone(&Local).format("%H:%M:%S").to_string())
                .unwrap_or_else(|_| timestamp.clone());
            format!("[{at}] #{room} <{username}> {content}")
        }
        ServerEvent::Gap { room, first, last } => {
            format!("[{now}] #{room} * messages {first} to {last} are lost")
        }
        ServerEvent::Members { room, usernames } => {
            format!("[{now}] #{room} * members: {}", usernames.join(", "))
        }
        ServerEvent::Pong => "pong".to_string(),
        ServerEvent::Error { room: Some(room), message } => format!("! #{room}: {message}"),
        ServerEvent::Error { room: None, message } => format!("! error: {message}"),
    };
    output::line(text)
}
