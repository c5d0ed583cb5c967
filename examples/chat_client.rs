//! Chapter 6.1: a terminal client for the chat server.
//!
//! What it teaches: a client for a JSON protocol: typed commands out, typed
//! events in, shown readably; one `select!` loop over the keyboard, the
//! socket and Ctrl-C; a writer task fed by a bounded queue (as in chapter
//! 3.1); state that follows the server's word, not the user's wish; a clean
//! close on `/quit`, end of input or Ctrl-C that still shows what arrives
//! before the server's answer; and a connection that may drop without a
//! message being lost: the client reconnects by itself, with the backoff of
//! chapter 3.2, to the next of its servers, rejoins its rooms with `since`
//! (the last `seq` it showed in each), and shows every message once, in
//! order.
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
//! Stop the server with Ctrl-C and start it again: the client logs (on
//! stderr) `reconnecting to ws://127.0.0.1:9001 in 412 ms` and its attempts,
//! and once the server is back it joins its rooms again. Several servers,
//! separated by commas, are used in turn: when one is gone, the client moves
//! to the next.
//!
//! ```text
//! cargo run --example chat_server -- 127.0.0.1:9001               # terminal 1
//! cargo run --example chat_server -- 127.0.0.1:9002               # terminal 2
//! cargo run --example chat_client -- ws://127.0.0.1:9001,ws://127.0.0.1:9002 alice
//! ```
//!
//! Two servers started like this are two separate chats: a client that
//! moves finds its rooms started over, and says so. Started with the same
//! `--redis redis://127.0.0.1:6379`, they are one chat, and the move loses
//! nothing (chapter 9, docs/09-scaling-out.md).
//!
//! When it reconnects: after a connection lost without a close frame, or a
//! close that says the server went away or failed (1001, 1011, 1012, 1013).
//! Not after `/quit`, end of input or Ctrl-C (each also ends the waiting),
//! nor after a close that is the server's last word to this client (1000,
//! or 1008: too slow, over the rate limit): those end the client as before,
//! with exit code 0 or 1 by `close::exit_code`. The first connection is not
//! retried: when no server answers at start, the client says so and exits
//! 1 (a wrong port, or no server started yet, is more likely than a
//! passing failure). What you type while it reconnects waits, and is said
//! once its rooms are back.
//!
//! A chat_server started with `--auth-secret-file` asks every handshake for
//! a token: `--token TOKEN` (`make_token` prints one) sends it as
//! `Authorization: Bearer TOKEN` on every connection, reconnects included,
//! and the server lets this client join only under the token's name. A
//! handshake it refuses (401: no token, a wrong or expired one) is a failed
//! connection like any other (its message says to give `--token`): at
//! start, the client says so and exits 1;
//! later, it keeps trying with the backoff, each try refused until the
//! client is started again with a new token (chapter 10.5).
//!
//! `wss://` URLs work too: the server's certificate is checked against the
//! system's authorities, and `--ca-cert PEM` adds one (chapter 10.6).
//!
//! Settings: `--base-ms 500 --cap-ms 30000 --max-attempts 10`, the backoff
//! of chapter 3.2 (`--max-attempts 0` retries forever). Limits: messages up
//! to 64 KiB, like the server (default 64 MiB). A line longer than the
//! server accepts (4 KiB of content) is not sent: the client says so
//! instead.
//!
//! This file is the terminal loop. Its rules live in the library, with
//! unit tests: the rooms across connections in `src/resume.rs`, the servers
//! and the backoff in `src/failover.rs`, what a typed line asks for and how
//! an event reads in `src/terminal.rs`.
//!
//! Docs: docs/06-case-studies.md

use std::io;
use std::process::ExitCode;

use clap::{ArgAction, Parser};
use futures_util::{SinkExt, StreamExt};
use tokio::sync::mpsc;
use tokio::time::{Instant, sleep};
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tracing::{info, warn};
use websocket_tutorial::client::{self, Backoff, BackoffArgs, ConnectArgs, DEFAULT_URL, WsClient};
use websocket_tutorial::close::{self, CLOSE_TIMEOUT};
use websocket_tutorial::failover::{Failover, reconnects};
use websocket_tutorial::output;
use websocket_tutorial::protocol::{ServerEvent, check_name};
use websocket_tutorial::resume::{Follow, Rooms, Waiting};
use websocket_tutorial::terminal::{self, Input, Keyboard, command, help};
use websocket_tutorial::token;

const FIRST_ROOM: &str = "general";
const QUEUE: usize = 32;

/// A terminal client for the chat server: joins `general` as USERNAME.
#[derive(Parser)]
#[command(after_help = "Commands: /join ROOM, /leave ROOM, /quit, /help; \
                        other lines are said in the current room.")]
// The URL may be left out even though USERNAME follows it: one argument is
// the name, two are the URL and the name.
#[command(allow_missing_positional = true)]
#[command(allow_negative_numbers = true)] // `--cap-ms -1`: a bad value, not a flag
struct Args {
    /// The chat server's URL, or several separated by commas: when one is
    /// gone, the client moves to the next.
    // One argument, split at its commas, each part checked by `parse_url`.
    // (`Set`: not a list of arguments, which would swallow the name.)
    #[arg(value_name = "URL[,URL...]", default_value = DEFAULT_URL)]
    #[arg(action = ArgAction::Set, num_args = 1, value_delimiter = ',')]
    #[arg(value_parser = client::parse_url)]
    servers: Vec<String>,
    /// Your name in the rooms you join.
    // Checked before connecting, by the server's own rule: an empty name
    // would only be refused, leaving the client in no room.
    #[arg(value_parser = |name: &str| check_name("username", name).map(|()| name.to_string()))]
    username: String,
    /// A token for a server started with --auth-secret-file (make_token
    /// prints one), sent as Authorization: Bearer on every connection.
    #[arg(long, value_parser = token::parse_token)]
    token: Option<String>,
    #[command(flatten)]
    options: ConnectArgs,
    #[command(flatten)]
    backoff: BackoffArgs,
}

#[tokio::main]
async fn main() -> ExitCode {
    let _log = output::init_logging();
    // --help or a mistake: clap exits 0 or 2.
    let Args { servers, username, token, options, backoff } = Args::parse();
    let config = WebSocketConfig::default().max_message_size(Some(64 * 1024));
    // Every connection, a reconnect's too, carries the token (a server that
    // takes tokens asks each handshake) and trusts `--ca-cert`. A failure
    // the user can fix says how (`--token`, `wss://`).
    let dialer = match options.dialer(config) {
        Ok(dialer) => dialer.with_token(token),
        Err(e) => return output::fail(e),
    };
    let backoff = Backoff::from(backoff);
    let connect =
        async |url: &str| dialer.connect(url).await.map_err(|e| client::with_hint(url, e));
    let mut servers = Failover::new(servers, backoff);
    let mut ws = match servers.connect_first(&connect).await {
        Ok(ws) => ws,
        Err(e) => return output::fail(e),
    };
    info!("joining #{FIRST_ROOM} as {username}; type a line to say it, /help lists the commands");
    let mut rooms = Rooms::new(&username, FIRST_ROOM, backoff);
    let mut keys = Keyboard::new(client::stdin_lines(QUEUE));
    // Boxed, so that every connection's loop can wait for it.
    let mut ctrl_c = Box::pin(tokio::signal::ctrl_c());

    // ANCHOR: reconnect
    loop {
        let why = match run(ws, &mut rooms, &mut keys, &mut ctrl_c).await {
            Ended::Lost(why) => why,
            Ended::Exit(code) => return code,
        };
        warn!("{why}");
        // Reconnect, or give up; Ctrl-C, /quit and the end of input end
        // the waiting too (lines typed meanwhile are kept).
        ws = tokio::select! {
            ws = servers.reconnect(&connect) => match ws {
                Ok(ws) => ws,
                Err(why) => return output::fail(why),
            },
            _ = &mut ctrl_c => return ExitCode::SUCCESS,
            None = keys.next(true) => return ExitCode::SUCCESS,
        };
    }
    // ANCHOR_END: reconnect
}

/// Why [`run`] stopped using a connection.
enum Ended {
    /// The connection is gone, for the reason given: time to reconnect.
    Lost(String),
    /// The client is done, and exits with this code.
    Exit(ExitCode),
}

/// Uses one connection until it ends, and says why it ended: joins the
/// rooms (again, after a reconnect), then shows what arrives and sends what
/// is typed.
async fn run(
    ws: WsClient,
    rooms: &mut Rooms,
    keys: &mut Keyboard,
    ctrl_c: &mut (impl Future<Output = io::Result<()>> + Unpin),
) -> Ended {
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

    // A new connection is in no room. (At most 17 joins: they fit the queue.)
    for join in rooms.joins() {
        let _ = tx.send(join.to_message()).await;
    }

    // Set once our close frame is sent: then the loop only waits for the
    // server's answer, until `close_deadline`.
    let mut closing = false;
    let close_deadline = sleep(CLOSE_TIMEOUT);
    tokio::pin!(close_deadline);

    // ANCHOR: loop
    let ended = loop {
        // Wait for one of: a line typed (unless a join is unanswered, or we
        // are closing; while rejoins are, only /quit or the end of input),
        // an event from the server, Ctrl-C, the end of the wait for the
        // answer to our close frame, or the time to ask again for rooms
        // that refused our rejoin for now.
        let waiting = rooms.waiting();
        let close_now = tokio::select! {
            line = keys.next(waiting == Waiting::Rejoins), if waiting != Waiting::Join && !closing => match line {
                None => true, // end of input
                Some(line) => match command(&line, rooms.current()) {
                    Input::Send(command) => {
                        if tx.send(command.to_message()).await.is_err() {
                            break Ended::Lost(format!("connection lost; not sent: {line}"));
                        }
                        false
                    }
                    Input::Join(room) => match rooms.join(&room) {
                        Some(join) => tx.send(join.to_message()).await.is_err(),
                        None => false, // a room we are in: now the current one
                    },
                    Input::Quit => true,
                    // On stdout, where the user reads the chat.
                    Input::Help => output::line(help(rooms.current())).is_err(),
                    Input::Nothing => false,
                    Input::Complain(text) => {
                        warn!("{text}");
                        false
                    }
                },
            },
            msg = stream.next() => match msg {
                Some(Ok(msg @ Message::Text(_))) => match ServerEvent::try_from(&msg) {
                    // Nobody can see the chat any more (`show` fails: stdout
                    // closed): leave as on /quit.
                    Ok(event) => match rooms.follow(&event) {
                        Follow::Show => show(&[event]).is_err(),
                        Follow::Lines(events) => show(&events).is_err(),
                        Follow::Skip => false,
                        Follow::StartedOver(room) => {
                            let _ = tx.send(rooms.rejoin(&room).to_message()).await;
                            let text = "the room started over from message 1: what it \
                                        holds now follows";
                            output::line(terminal::notice(&room, text)).is_err()
                        }
                    },
                    Err(e) => {
                        warn!("unexpected message from the server: {e}");
                        false
                    }
                },
                Some(Ok(Message::Close(frame))) => {
                    // The answer to our close frame needs no words.
                    let code = frame.as_ref().map(|f| f.code);
                    if !closing {
                        let why = frame.map(|f| format!("{} ({})", u16::from(f.code), f.reason));
                        let _ = output::line(format_args!(
                            "server closed the connection: {}",
                            why.unwrap_or_default()
                        ));
                        close::answer(&mut stream).await; // the handshake's second half
                    }
                    match code {
                        Some(code) if !closing && reconnects(code) => {
                            let code = u16::from(code);
                            break Ended::Lost(format!("the server went away ({code})"));
                        }
                        // 0 for 1000, 1 for a close that says this client
                        // failed (1008, 1009, ...): the same rule as
                        // full_client.
                        code => break Ended::Exit(code.map_or(ExitCode::SUCCESS, close::exit_code)),
                    }
                }
                Some(Ok(_)) => false, // pings are answered by tungstenite
                Some(Err(e)) => break Ended::Lost(format!("connection lost: {e}")),
                None => break Ended::Lost("connection lost".into()),
            },
            _ = &mut *ctrl_c, if !closing => true,
            () = &mut close_deadline, if closing => {
                break Ended::Exit(output::fail("the server did not answer our close frame"));
            }
            again = rooms.next_round(), if !closing => {
                for join in again {
                    let _ = tx.send(join.to_message()).await;
                }
                false
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

    // What mattered was sent before the loop ended (our close frame was
    // answered, or the connection is gone); a writer stuck on a dead
    // connection would never end.
    writer.abort();
    match ended {
        // We were leaving anyway, but the server's answer never came.
        Ended::Lost(why) if closing => Ended::Exit(output::fail(why)),
        ended => ended,
    }
}

/// Prints server events readably, one line each. Fails only when stdout is
/// gone. (A full stdout pipe makes it wait, and the whole loop with it: fine
/// for a client with one connection, which has nothing else to do.)
fn show(events: &[ServerEvent]) -> io::Result<()> {
    terminal::lines(events).into_iter().try_for_each(output::line)
}
