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
//! Not after `/quit`, end of input or Ctrl-C (Ctrl-C also ends the waiting),
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
//! connection like any other: at start, the client says so and exits 1;
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
//! Docs: docs/06-case-studies.md

use std::collections::HashMap;
use std::io;
use std::pin::Pin;
use std::process::ExitCode;
use std::time::Duration;

use chrono::{DateTime, Local};
use clap::{ArgAction, Parser};
use futures_util::{SinkExt, StreamExt};
use tokio::sync::mpsc;
use tokio::time::{Instant, Sleep, sleep};
use tokio_tungstenite::Connector;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tracing::{debug, info, warn};
use websocket_tutorial::Error;
use websocket_tutorial::client::{self, Backoff, BackoffArgs, DEFAULT_URL, TrustArgs, WsClient};
use websocket_tutorial::close::{self, CLOSE_TIMEOUT};
use websocket_tutorial::output;
use websocket_tutorial::protocol::{ClientMessage, ErrorCode, MAX_CONTENT_BYTES, ServerEvent};
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
    username: String,
    /// A token for a server started with --auth-secret-file (make_token
    /// prints one), sent as Authorization: Bearer on every connection.
    #[arg(long, value_parser = token::parse_token)]
    token: Option<String>,
    #[command(flatten)]
    trust: TrustArgs,
    #[command(flatten)]
    backoff: BackoffArgs,
}

#[tokio::main]
async fn main() -> ExitCode {
    let _log = output::init_logging();
    // --help or a mistake: clap exits 0 or 2.
    let Args { servers, username, token, trust, backoff } = Args::parse();
    let tls = match trust.connector() {
        Ok(tls) => tls,
        Err(e) => return output::fail(e),
    };
    let backoff = Backoff::from(backoff);
    let config = WebSocketConfig::default().max_message_size(Some(64 * 1024));
    let mut servers = Servers { urls: servers, next: 0, token, tls };

    let mut ws = match connect_first(&mut servers, config).await {
        Ok(ws) => ws,
        Err(e) => return output::fail(e),
    };
    info!("joining #{FIRST_ROOM} as {username}; type a line to say it, /help lists the commands");
    let mut rooms = Rooms::new(username);
    let mut lines = client::stdin_lines(QUEUE);
    // Boxed, so that every connection's loop can wait for it.
    let mut ctrl_c = Box::pin(tokio::signal::ctrl_c());

    // ANCHOR: reconnect
    loop {
        let why = match run(ws, &mut rooms, &mut lines, &mut ctrl_c, &backoff).await {
            Ended::Lost(why) => why,
            Ended::Exit(code) => return code,
        };
        warn!("{why}");
        // Reconnect, or give up; Ctrl-C interrupts the waiting too.
        let next = tokio::select! {
            ws = reconnect(&mut servers, config, &backoff) => ws,
            _ = &mut ctrl_c => return ExitCode::SUCCESS,
        };
        let Some(next) = next else {
            return output::fail(format_args!(
                "giving up after {} failed attempts",
                backoff.max_attempts
            ));
        };
        ws = next;
    }
    // ANCHOR_END: reconnect
}

/// The servers to use, in turn: when one is gone, the next (round robin).
struct Servers {
    urls: Vec<String>,
    next: usize,
    /// `--token`: every connection's handshake carries it, a reconnect's
    /// too (a server that takes tokens asks each handshake).
    token: Option<String>,
    /// `--ca-cert`: what a `wss://` server's certificate is checked against
    /// besides the system's authorities.
    tls: Option<Connector>,
}

impl Servers {
    /// The server to try next.
    fn next(&mut self) -> String {
        let url = self.urls[self.next % self.urls.len()].clone();
        self.next += 1;
        url
    }

    /// Connects to `url`, with the token if there is one.
    async fn connect(&self, url: &str, config: WebSocketConfig) -> Result<WsClient, Error> {
        client::connect_with(url, config, self.token.as_deref(), self.tls.as_ref()).await
    }
}

/// The first connection: each server once, in order. When none answers,
/// a wrong port or a server not started yet is likelier than a passing
/// failure, so the client says so at once rather than retry for minutes.
async fn connect_first(servers: &mut Servers, config: WebSocketConfig) -> Result<WsClient, String> {
    let count = servers.urls.len();
    let mut failure = String::from("no server given");
    for tried in 1..=count {
        let url = servers.next();
        match servers.connect(&url, config).await {
            Ok(ws) => return Ok(ws),
            Err(e) if tried < count => {
                warn!("cannot connect to {url}: {e}; trying the next server")
            }
            Err(e) => failure = format!("cannot connect to {url}: {e}"),
        }
    }
    Err(failure)
}

// ANCHOR: reconnect_with_backoff
/// After a drop: waits for the backoff's delay, then tries the next
/// server, and so on, until one answers or `backoff` says to stop. The
/// first attempt waits too: a server that restarts drops all of its
/// clients at once, and the jitter keeps them from all coming back in the
/// same millisecond.
async fn reconnect(
    servers: &mut Servers,
    config: WebSocketConfig,
    backoff: &Backoff,
) -> Option<WsClient> {
    let mut failed = 0;
    loop {
        let url = servers.next();
        let delay = backoff.delay(failed + 1);
        info!("reconnecting to {url} in {} ms", delay.as_millis());
        sleep(delay).await;
        match servers.connect(&url, config).await {
            Ok(ws) => {
                info!("connected to {url}");
                return Some(ws);
            }
            Err(e) => {
                warn!("cannot connect to {url}: {e}");
                failed += 1;
                if !backoff.should_retry(failed) {
                    return None;
                }
            }
        }
    }
}
// ANCHOR_END: reconnect_with_backoff

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
    lines: &mut mpsc::Receiver<String>,
    ctrl_c: &mut (impl Future<Output = io::Result<()>> + Unpin),
    backoff: &Backoff,
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
        if let ClientMessage::Join { room, since: Some(since), .. } = &join {
            info!("rejoining #{room} after message {since}");
        }
        let _ = tx.send(join.to_message()).await;
    }

    // Set once our close frame is sent: then the loop only waits for the
    // server's answer, until `close_deadline`.
    let mut closing = false;
    let close_deadline = sleep(CLOSE_TIMEOUT);
    tokio::pin!(close_deadline);
    let mut held = Held::new();

    // ANCHOR: loop
    let ended = loop {
        // Wait for one of: a line typed (unless a join is unanswered, or we
        // are closing), an event from the server, Ctrl-C, the end of the
        // wait for the answer to our close frame, or the time to ask again
        // for rooms that refused our rejoin for now.
        let close_now = tokio::select! {
            line = lines.recv(), if rooms.settled() && !closing => match line {
                None => true, // end of input
                Some(line) => match command(&line, &rooms.me, &rooms.joined) {
                    Input::Send(command) => {
                        if let ClientMessage::Join { room, .. } = &command {
                            rooms.joining = Some(room.clone());
                        }
                        if tx.send(command.to_message()).await.is_err() {
                            break Ended::Lost(format!("connection lost; not sent: {line}"));
                        }
                        false
                    }
                    Input::Switch(room) => {
                        info!("talking in #{room}");
                        rooms.joined.retain(|r| *r != room);
                        rooms.joined.push(room);
                        false
                    }
                    Input::Quit => true,
                    Input::Help => {
                        info!("{}", help(rooms.joined.last()));
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
                    // Nobody can see the chat any more (`show` fails: stdout
                    // closed): leave as on /quit.
                    Ok(event) => match rooms.follow(&event) {
                        Follow::Show => show(&event).is_err(),
                        Follow::Skip => false,
                        Follow::StartedOver(room) => {
                            let _ = tx.send(rooms.rejoin(&room).to_message()).await;
                            let text = "the room started over from message 1: what it \
                                        holds now follows";
                            notice(&room, text).is_err()
                        }
                        Follow::AskAgain { room, why } => match held.hold(&room, backoff) {
                            Some(wait) => {
                                info!("#{room}: {why}; asking again in {} ms", wait.as_millis());
                                false
                            }
                            None => {
                                warn!("#{room}: {why}; giving up on the room");
                                rooms.forget(&room);
                                show(&event).is_err()
                            }
                        },
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
            again = held.next_round(), if !closing => {
                for room in again {
                    let _ = tx.send(rooms.rejoin(&room).to_message()).await;
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

/// Rooms whose rejoin was refused for now (our name still held there, say),
/// and when to ask them again: after the backoff's delay for the round.
struct Held {
    rooms: Vec<String>,
    /// Rounds asked again so far, on this connection.
    rounds: u32,
    next: Pin<Box<Sleep>>,
}

impl Held {
    fn new() -> Held {
        Held { rooms: Vec::new(), rounds: 0, next: Box::pin(sleep(Duration::ZERO)) }
    }

    /// Holds `room` for the next round, and says how long until then;
    /// `None` when the backoff says to stop asking.
    fn hold(&mut self, room: &str, backoff: &Backoff) -> Option<Duration> {
        let failed = self.rounds + 1;
        if !backoff.should_retry(failed) {
            return None;
        }
        if self.rooms.is_empty() {
            self.next.as_mut().reset(Instant::now() + backoff.delay(failed));
        }
        self.rooms.push(room.into());
        Some(self.next.deadline().saturating_duration_since(Instant::now()))
    }

    /// The rooms to ask again, when it is time; never, while none is held.
    async fn next_round(&mut self) -> Vec<String> {
        if self.rooms.is_empty() {
            return std::future::pending().await;
        }
        self.next.as_mut().await;
        self.rounds += 1;
        std::mem::take(&mut self.rooms)
    }
}

// ANCHOR: reconnects
/// Whether a close from the server is a reason to come back: it went away
/// (1001, a server shutting down or restarting), failed (1011, chat_server's
/// `ping timeout` included), or asks to be tried again (1012 restarting,
/// 1013 try again later). Not a normal close (1000), and not a close that
/// refuses this client (1008: too slow, or over the rate limit; 1009: too
/// big; 1002, 1007: broken protocol): the server said stop, and coming back
/// would repeat the fault.
fn reconnects(code: CloseCode) -> bool {
    matches!(code, CloseCode::Away | CloseCode::Error | CloseCode::Restart | CloseCode::Again)
}
// ANCHOR_END: reconnects

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

// ANCHOR: state
/// What the client knows of its rooms. It outlives each connection: a new
/// one joins the same rooms again, each from the message after the last
/// one shown there.
struct Rooms {
    me: String,
    /// The rooms we are in, as the server confirmed them; the last is current.
    joined: Vec<String>,
    /// A join the user asked for that the server has not answered yet. The
    /// next line waits for the answer: typed (or piped) right after `/join
    /// rust`, it belongs in `rust` if the join succeeds, and in the current
    /// room if it is refused.
    joining: Option<String>,
    /// Rooms joined again on this connection and not confirmed yet: typed
    /// lines wait for them too.
    rejoining: Vec<String>,
    /// The `seq` of the last message shown in each room: where to resume.
    shown: HashMap<String, u64>,
}
// ANCHOR_END: state

impl Rooms {
    fn new(me: String) -> Rooms {
        Rooms {
            me,
            joined: Vec::new(),
            joining: Some(FIRST_ROOM.to_string()),
            rejoining: Vec::new(),
            shown: HashMap::new(),
        }
    }

    /// Whether every join sent has been answered: then typed lines are read.
    fn settled(&self) -> bool {
        self.joining.is_none() && self.rejoining.is_empty()
    }

    /// The joins a new connection starts with: every room we are in, and
    /// the user's unanswered join, if any (the first connection's is
    /// `general`).
    fn joins(&mut self) -> Vec<ClientMessage> {
        self.rejoining = self.joined.clone();
        let mut joins: Vec<_> = self.joined.iter().map(|room| self.rejoin(room)).collect();
        if let Some(room) = &self.joining {
            let username = self.me.clone();
            joins.push(ClientMessage::Join { room: room.clone(), username, since: None });
        }
        joins
    }

    // ANCHOR: rejoin
    /// Joins `room` again, resuming after the last message shown there.
    ///
    /// Nothing shown there yet: `since` 0, not no `since`. Without it the
    /// server sends live messages only, and what was said while we were
    /// away, never shown, would be lost; this way it is replayed. The price:
    /// when the room outlived the drop, its history from before we first
    /// joined (up to the server's `--history` messages) is shown too, each
    /// message once.
    fn rejoin(&self, room: &str) -> ClientMessage {
        let since = self.shown.get(room).copied().unwrap_or(0);
        ClientMessage::Join { room: room.into(), username: self.me.clone(), since: Some(since) }
    }
    // ANCHOR_END: rejoin

    /// Forgets `room`: we left it, or cannot get back in.
    fn forget(&mut self, room: &str) {
        self.joined.retain(|r| r != room);
        self.rejoining.retain(|r| r != room);
        self.shown.remove(room);
    }

    // ANCHOR: follow
    /// Keeps the rooms in step with the server's word on our own joins and
    /// leaves (a room becomes current when the server says we joined it, not
    /// when we ask), notes the last message shown in each room, and says
    /// what to do with `event`.
    fn follow(&mut self, event: &ServerEvent) -> Follow {
        match event {
            // Names are unique in a room, so a `Joined` with our name is ours.
            ServerEvent::Joined { room, username } if *username == self.me => {
                if self.rejoining.contains(room) {
                    // Back in a room we were in: it keeps its place.
                    self.rejoining.retain(|r| r != room);
                } else {
                    self.joined.retain(|r| r != room);
                    self.joined.push(room.clone());
                }
                if self.joining.as_ref() == Some(room) {
                    self.joining = None;
                }
                Follow::Show
            }
            ServerEvent::Left { room, username } if *username == self.me => {
                self.forget(room);
                Follow::Show
            }
            // Exactly once: a message numbered at or below the last one shown
            // in its room has been shown already.
            ServerEvent::Message { room, seq, .. } => {
                let last = self.shown.entry(room.clone()).or_default();
                if *seq <= *last {
                    debug!("#{room}: message {seq} shown already, skipped");
                    return Follow::Skip;
                }
                *last = *seq;
                Follow::Show
            }
            // What is gone will not come: the next resume starts after it.
            ServerEvent::Gap { room, last, .. } => {
                let shown = self.shown.entry(room.clone()).or_default();
                *shown = (*shown).max(*last);
                Follow::Show
            }
            ServerEvent::Error { room: Some(room), code, message }
                if self.rejoining.contains(room) =>
            {
                match refusal(*code) {
                    Refusal::StartedOver => {
                        self.shown.remove(room);
                        Follow::StartedOver(room.clone())
                    }
                    Refusal::NotYet => {
                        Follow::AskAgain { room: room.clone(), why: message.clone() }
                    }
                    Refusal::Final => {
                        self.forget(room);
                        Follow::Show
                    }
                }
            }
            // A refused join names its room: forget the join, keep the
            // current room.
            ServerEvent::Error { room: Some(room), .. } if self.joining.as_ref() == Some(room) => {
                self.joining = None;
                Follow::Show
            }
            _ => Follow::Show,
        }
    }
    // ANCHOR_END: follow
}

/// What to do with an event, once [`Rooms::follow`] has taken it in.
enum Follow {
    Show,
    /// A message shown already (the replay after a rejoin overlapping what
    /// came live): skip it.
    Skip,
    /// The room refused our rejoin because its numbering started over:
    /// join again from its first message, and say so.
    StartedOver(String),
    /// The room refused our rejoin for now, for the reason given: ask again
    /// after a delay.
    AskAgain {
        room: String,
        why: String,
    },
}

// ANCHOR: refusal
/// What a refused rejoin means for this client.
enum Refusal {
    /// Our `since` is ahead of the room's last message: the room started
    /// over from 1 (the server restarted, the client moved to a server of
    /// another chat, or the room emptied while we were away).
    StartedOver,
    /// Not yet: our name is still held in the room (by our old connection,
    /// until the server notices that it is gone; in a cluster, by a dead
    /// node, for up to 10 s), or a cluster cannot reach Redis just now.
    NotYet,
    /// Anything else: the room is given up, and the refusal shown.
    Final,
}

/// Decided by the refusal's `code` alone: its `message` is for the person
/// reading, and its words may change.
fn refusal(code: ErrorCode) -> Refusal {
    match code {
        ErrorCode::SinceAhead => Refusal::StartedOver,
        ErrorCode::NameTaken | ErrorCode::Unavailable => Refusal::NotYet,
        _ => Refusal::Final,
    }
}
// ANCHOR_END: refusal

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
        ServerEvent::Error { room: Some(room), message, .. } => format!("! #{room}: {message}"),
        ServerEvent::Error { room: None, message, .. } => format!("! error: {message}"),
    };
    output::line(text)
}

/// Prints a line of the client's own about `room`, like a presence event.
fn notice(room: &str, text: &str) -> io::Result<()> {
    let now = Local::now().format("%H:%M:%S");
    output::line(format_args!("[{now}] #{room} * {text}"))
}
