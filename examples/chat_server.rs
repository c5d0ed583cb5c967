//! Chapter 6.1: a chat server with rooms, speaking the JSON protocol of
//! chapter 5.1. The tutorial's main program.
//!
//! What it teaches: everything of the earlier chapters at once, under real
//! conditions, and at the size of a real public room. One `select!` loop per
//! connection over shutdown, the socket, the heartbeat and the client's
//! outbox; rooms that deliver through those outboxes
//! (`websocket_tutorial::rooms`); an outbox bounded in *bytes*, so a join
//! storm of a thousand small events costs what it weighs and only a client
//! that does not read is evicted (close code 1008); a per-connection rate
//! limit, so one sender cannot fill everybody's outbox; a heartbeat that
//! drops half-open connections; every malformed command answered with an
//! `Error` event while the connection stays open; server-set timestamps and
//! per-room sequence numbers; Ctrl-C closes everyone with 1001.
//!
//! ```text
//! cargo run --example chat_server                       # terminal 1
//! cargo run --example chat_client -- ws://127.0.0.1:9001 alice   # terminal 2
//! cargo run --example chat_client -- ws://127.0.0.1:9001 bob     # terminal 3
//! ```
//!
//! Or open `web/chat.html` in a browser. Any WebSocket client works: send
//! `{"type":"Join","room":"general","username":"alice"}`, then
//! `{"type":"Message","room":"general","content":"hi"}`, and every member of
//! `general` receives
//! `{"type":"Message","room":"general","username":"alice","content":"hi","timestamp":"...","seq":1}`.
//!
//! Rules: a username is 1 to 32 characters and unique within a room, a room
//! name is 1 to 32 characters, content 1 byte to 4 KiB, at most 16 rooms per
//! connection. Invalid JSON, a binary frame, a message to a room you have
//! not joined, or a broken rule gets `{"type":"Error","code":"...","message":"..."}`
//! (with `"room"` when the command was about a room; the code says which
//! rule, for a program, the message says it for people) and the connection
//! stays open. So does a `since` ahead of the room's last `seq`, and that
//! join does not happen: a client that resumes from a number the room
//! never reached (the server restarted, or the room emptied and started
//! again from 1) learns it, and joins again without `since`.
//!
//! Limits (`WebSocketConfig`): a frame or message over 64 KiB closes the
//! connection with 1009 (the default would accept 64 MiB). The buffers are
//! sized for a server whose connections are mostly idle: a 256-byte read
//! buffer, because tungstenite allocates it up front for every connection
//! (the default is 128 KiB) and chat commands are small (a bigger one takes
//! a few more reads); a 1 KiB write buffer, because tungstenite writes to
//! the socket whenever it holds more, and keeps what it once held allocated.
//! Measured with 10,000 idle members in 100 rooms (release build, chapter
//! 8): 12.1 KiB of server memory per connection with a 4 KiB read buffer
//! and a 16 KiB write buffer, 8.4 with a 256-byte read buffer, 7.7 with
//! both; an earlier 128 KiB read buffer cost 146 KiB per connection.
//!
//! Settings:
//! - `--outbox-bytes 1048576`: bytes queued for a client and not yet written
//!   before it counts as too slow and is closed with 1008;
//! - `--rate-limit 10` and `--rate-burst 20`: commands per second per
//!   connection, and how many may come at once; a command over the limit
//!   gets an `Error`, and a client a whole burst over it is closed with 1008;
//! - `--presence-limit 1000`: rooms with more members announce a `Joined` or
//!   `Left` only to the member concerned;
//! - `--history 1000`: messages kept per room, in memory, so that a client
//!   back from a dropped connection can join with `"since":SEQ` (the last
//!   `seq` it showed) and get what it missed before the live messages;
//! - `--ping-ms 5000` (heartbeat interval), `--pong-timeout-ms 10000`
//!   (silence allowed after a ping), `--send-timeout-ms 5000` (the longest a
//!   write may wait for the client), `--max-connections 10000`;
//! - `--allow-origin ORIGIN` (repeatable): the web pages allowed to connect,
//!   `scheme://host[:port]`, or `null` for a page opened from a file; a
//!   browser's handshake from any other origin gets HTTP 403. Without it,
//!   every origin is accepted, and the server says so once at start;
//! - `--max-per-ip 100`: open connections allowed from one IP address; one
//!   more gets HTTP 429 (chapter 10, docs/10-security.md);
//! - `--auth-secret-file FILE`: ask every client for a JSON Web Token
//!   signed (HS256) with the file's content, surrounding whitespace
//!   trimmed, as `Authorization: Bearer TOKEN` or `?token=TOKEN` in the URL;
//!   a handshake without a valid, unexpired one gets HTTP 401, and a `Join`
//!   under another name than the token's `sub` gets an `Error` with that
//!   room. `cargo run --example make_token -- --secret-file FILE alice`
//!   signs one. A file that cannot be read, or is empty, is an error that
//!   names it, and exit code 1 (chapter 10.5);
//! - `--tls-cert PEM --tls-key PEM`: serve `wss://` (TLS with rustls); the
//!   first line is then `listening on wss://IP:PORT`. A file that cannot be
//!   read, holds no certificate or key, or a key that does not fit, is one
//!   line naming the file and exit code 1 (chapter 10.6);
//! - `--redis redis://127.0.0.1:6379`: be one node of a chat that every
//!   server started with the same Redis shares: rooms, names, `seq` and
//!   history live there (chapter 9, docs/09-scaling-out.md);
//! - `--admin-addr IP:PORT` (off by default): serve `/healthz`, `/readyz`
//!   and `/metrics` (Prometheus) over HTTP on this second address; its
//!   line, `admin on http://IP:PORT`, follows `listening on`. An address
//!   that cannot be bound is one line naming it and exit code 1, before the
//!   chat's address listens (chapter 10.7, docs/10-security.md).
//!
//! Docs: docs/06-case-studies.md

use std::net::SocketAddr;
use std::pin::pin;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use clap::Parser;
use futures_util::StreamExt;
use tokio::time::{Instant, sleep_until, timeout};
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tokio_util::sync::CancellationToken;
use tracing::{Span, field, info};
use websocket_tutorial::admin::AdminArgs;
use websocket_tutorial::admission::Admission;
use websocket_tutorial::engine::{Engine, EngineArgs, Member};
use websocket_tutorial::heartbeat::{Beat, HeartbeatArgs};
use websocket_tutorial::outbox::{self, Outgoing, WriteError};
use websocket_tutorial::rate::RateArgs;
use websocket_tutorial::server::{self, WsStream};
use websocket_tutorial::tls::TlsArgs;
use websocket_tutorial::token::TokenArgs;
use websocket_tutorial::{args, close, error, output};

// ANCHOR: args
/// A chat server with rooms, speaking the JSON protocol of chapter 5.1.
#[derive(Parser)]
#[command(allow_negative_numbers = true)] // `--rate-limit -1`: a bad value, not a flag
struct Args {
    /// The address to listen on, IP:PORT; port 0 picks a free port.
    #[arg(default_value = server::DEFAULT_ADDR, value_parser = server::parse_addr)]
    addr: SocketAddr,
    /// The rooms: --outbox-bytes, --presence-limit, --history, --redis.
    #[command(flatten)]
    engine: EngineArgs,
    /// The rate limit: --rate-limit, --rate-burst.
    #[command(flatten)]
    rate: RateArgs,
    #[command(flatten)]
    heartbeat: HeartbeatArgs,
    /// The longest a write may wait for the client, in milliseconds.
    #[arg(long = "send-timeout-ms", value_name = "MS", default_value = "5000")]
    #[arg(value_parser = args::period)]
    send_timeout: Duration,
    /// Connections served at once; more wait for a free slot.
    #[arg(long, value_name = "N", default_value_t = 10_000)]
    #[arg(value_parser = server::parse_max_connections)]
    max_connections: usize,
    #[command(flatten)]
    admission: Admission,
    /// --auth-secret-file (chapter 10.5).
    #[command(flatten)]
    auth: TokenArgs,
    #[command(flatten)]
    tls: TlsArgs,
    /// --admin-addr: /healthz, /readyz and /metrics (chapter 10.7).
    #[command(flatten)]
    admin: AdminArgs,
}
// ANCHOR_END: args

// ANCHOR: chat
/// What every connection shares.
struct Chat {
    /// The rooms, on this server alone or shared by a cluster (chapter 9).
    engine: Arc<Engine>,
    /// Commands per second per connection, and the burst allowed.
    rate: RateArgs,
    /// When to ping a client, and how long its silence may last.
    heartbeat: HeartbeatArgs,
    /// The longest one write may wait for a client to make room.
    send_timeout: Duration,
}
// ANCHOR_END: chat

#[tokio::main]
async fn main() -> ExitCode {
    let _log = output::init_logging();
    let mut args = Args::parse(); // --help or a mistake: clap exits 0 or 2
    // Read before anything is bound: a server that would refuse everyone
    // for want of its secret should not start.
    match args.auth.secret() {
        Ok(secret) => args.admission.tokens = secret,
        Err(e) => return output::fail(e),
    }
    // The same for the certificate and key: a server that cannot encrypt
    // should not start.
    let tls = match args.tls.acceptor() {
        Ok(tls) => tls,
        Err(e) => return output::fail(e),
    };
    // The admin port first: one that cannot be bound stops the server
    // before anything else happens, and it counts from the start.
    let admin = match args.admin.bind().await {
        Ok(admin) => admin,
        Err(e) => return output::fail(e),
    };
    let engine = match Engine::start(args.engine).await {
        Ok(engine) => engine,
        Err(e) => return output::fail(e),
    };
    let chat = Arc::new(Chat {
        engine: engine.clone(),
        rate: args.rate,
        heartbeat: args.heartbeat,
        send_timeout: args.send_timeout,
    });

    // ANCHOR: config
    let config = WebSocketConfig::default()
        .max_message_size(Some(64 * 1024))
        .max_frame_size(Some(64 * 1024))
        .read_buffer_size(256)
        .write_buffer_size(1024);
    // ANCHOR_END: config

    let shutdown = server::shutdown_on_signal();
    let listener = match server::bind_with(args.addr, tls).await {
        Ok(listener) => listener,
        Err(e) => return output::fail(format_args!("cannot listen on {}: {e}", args.addr)),
    };
    // Its line, `admin on http://IP:PORT`, comes second.
    admin.serve(engine.clone(), shutdown.clone());
    let handler = move |ws, shutdown, user| connection(ws, shutdown, user, chat.clone());
    server::serve(listener, config, args.max_connections, args.admission, shutdown, handler).await;
    // Every connection has closed without announcing its departure (see
    // `connection`); in a cluster, the other nodes hear of all of them at once.
    engine.stop().await;
    ExitCode::SUCCESS
}

/// How a connection ended, and so what (if anything) we still owe the peer.
enum Ending {
    /// The peer closed (its close frame is already answered) or vanished.
    PeerDone,
    /// We close, with this code and reason.
    Close(CloseCode, String),
    /// The peer broke a rule of the protocol (1002, 1007, 1009): we close
    /// with this code and reason, and its stream cannot be read any more.
    BrokeARule(CloseCode, String),
}

// ANCHOR: connection
/// Runs one client from handshake to goodbye. `user` is a name the
/// handshake already settled, on a server that asks for tokens (chapter
/// 10.5): the client may join only under it. `None` on any other server.
///
/// Not an `async fn`, on purpose: an `async fn` keeps its arguments twice in
/// its future (as given, and moved into the body), and `ws` alone is 312
/// bytes, for every connection's whole life. An `async move` block that uses
/// them where they are keeps them once (chapter 8.4).
#[allow(clippy::manual_async_fn)] // the reason above
fn connection(
    mut ws: WsStream,
    shutdown: CancellationToken,
    user: Option<String>,
    chat: Arc<Chat>,
) -> impl Future<Output = ()> {
    async move {
        let (me, mut outgoing) = chat.engine.register();
        // From here on, every log line of this connection names the client
        // id next to its address (`serve` made the span, with room for the id).
        Span::current().record("id", field::display(me.id()));
        info!("connected");

        let user = user.as_deref();
        let ending = serve_client(&mut ws, &me, user, &mut outgoing, &shutdown, &chat).await;

        // Leave every room before the close handshake, so that nobody queues
        // more for us and the others hear at once that we left. When the
        // whole server is going away, nobody is told: announcing each
        // departure to everyone who is also leaving would cost members²
        // messages. (Had this task panicked instead, dropping `me` would
        // still have done this.)
        if shutdown.is_cancelled() {
            chat.engine.shutting_down();
        }
        let evicted = me.is_evicted();
        drop(me);
        // Boxed, like a write: needed once, at the end, it should not size
        // every connection's future for its whole life.
        Box::pin(goodbye(&mut ws, &mut outgoing, evicted, &ending)).await;
        info!("disconnected");
    }
}

/// Our side of the close handshake. What is still queued (the refusals
/// before a rate-limit close, say) goes out ahead of our close frame, unless
/// the client was evicted for not reading it.
async fn goodbye(ws: &mut WsStream, outgoing: &mut Outgoing, evicted: bool, ending: &Ending) {
    let (code, reason) = match ending {
        Ending::Close(code, reason) | Ending::BrokeARule(code, reason) => (code, reason),
        // The client closed first: nothing may follow its close frame but
        // the answer tungstenite queued, which the next read sends. (A write
        // refused after its close, an event that crossed it, would
        // otherwise end the connection without one.) Or it is gone.
        Ending::PeerDone => return close::answer(ws).await,
    };
    info!(code = u16::from(*code), %reason, "closing");
    if !evicted {
        let _ = timeout(close::CLOSE_TIMEOUT, outgoing.feed_rest(ws)).await;
    }
    match ending {
        // No close frame to wait for on a stream we cannot read: the peer
        // gets ours, then the end of the stream, not a reset.
        Ending::BrokeARule(..) => close::after_broken_rule(ws, *code, reason).await,
        _ => close::handshake(ws, *code, reason).await,
    }
}

// ANCHOR_END: connection

// ANCHOR: serve_client
/// The connection's one loop: it reads the client's commands, writes what
/// the rooms queue for it, and keeps the heartbeat, until one side is done.
///
/// One task and no reader/writer split: while a write waits for a client
/// that has stopped reading, this loop reads nothing, so each write has a
/// deadline (`send_timeout`), and the client is let go if it cannot take a
/// batch in that time. A client that reads never waits that long: its
/// outbox holds at most the budget, and the kernel takes it as fast as the
/// client reads.
async fn serve_client(
    ws: &mut WsStream,
    me: &Member,
    user: Option<&str>,
    outgoing: &mut Outgoing,
    shutdown: &CancellationToken,
    chat: &Chat,
) -> Ending {
    // The heartbeat: a ping every `ping_every`, and any frame from the
    // client (its pong included) proves it alive. Silence for longer than
    // `ping_every + pong_timeout` means the connection is half-open: the
    // client's machine vanished without a FIN. `Heartbeat` keeps the times;
    // one timer, reset to its next wake, serves both the ping and the end
    // of the allowed silence.
    let mut heartbeat = chat.heartbeat.start();
    let mut heartbeat_timer = pin!(sleep_until(heartbeat.next_wake()));
    let mut rate = chat.rate.start();
    // Made once, outside the loop: a cancellation future registers with its
    // token when first polled, and one made anew on every turn would register
    // and unregister each time, on the token every connection shares.
    let mut shutting_down = pin!(shutdown.cancelled());
    let mut evicted = pin!(me.evicted());
    loop {
        // Wait for one of: shutdown, eviction, messages in our outbox, a
        // frame from the client, or the heartbeat (time to ping, or too much
        // silence). `biased`: in this order. What we owe the client goes out before we
        // read more from it: its answers are not stuck behind its own next
        // commands (or lost behind its close frame), and a client that sends
        // without reading meets the write deadline instead of piling up its
        // own echoes. The client comes before the heartbeat, so a pong that
        // arrived while we were writing still counts.
        tokio::select! {
            biased;
            _ = &mut shutting_down => {
                return Ending::Close(CloseCode::Away, "server shutting down".into());
            }
            _ = &mut evicted => {
                return Ending::Close(CloseCode::Policy, "too slow: outbox over budget".into());
            }
            batch = outgoing.next_batch() => {
                // The budget comes back only once the batch is written: a
                // client that stops reading stops making room.
                let bytes = batch.frame_bytes();
                // Boxed: a write's state (some 500 bytes) is needed only
                // while a write is under way, and inline it would be part of
                // every connection's memory for the connection's whole life.
                if let Err(ending) = Box::pin(write(ws, batch, me, shutdown, chat)).await {
                    return ending;
                }
                outgoing.written(bytes);
            }
            frame = ws.next() => {
                heartbeat.heard(Instant::now());
                match frame {
                    Some(Ok(msg)) => {
                        // The chat engine checks the command's rules and
                        // carries it out. Boxed, like a write: a command's
                        // state (with `--redis`, a round trip to Redis) is
                        // needed only while it runs.
                        if Box::pin(me.receive(msg, user, &mut rate)).await.is_err() {
                            return Ending::Close(CloseCode::Policy, "rate limit exceeded".into());
                        }
                        // Fairness: a burst from this client is already in
                        // our read buffer, so `next()` would return at once,
                        // again and again, before the connections we just
                        // queued messages for could run. Yield to them.
                        tokio::task::yield_now().await;
                    }
                    None => return Ending::PeerDone,
                    // For example 1009 for a frame over 64 KiB; nothing to
                    // say to a peer that is simply gone.
                    Some(Err(e)) => {
                        return match error::close_code(&e) {
                            Some(code) => Ending::BrokeARule(code, e.to_string()),
                            None => Ending::PeerDone,
                        };
                    }
                }
            }
            _ = &mut heartbeat_timer => {
                match heartbeat.on_wake(Instant::now()) {
                    Beat::Dead => return Ending::Close(CloseCode::Error, "ping timeout".into()),
                    Beat::Ping => {
                        let ping = [Message::Ping(Default::default())];
                        if let Err(ending) = Box::pin(write(ws, ping, me, shutdown, chat)).await {
                            return ending;
                        }
                    }
                    Beat::Wait => {}
                }
                heartbeat_timer.as_mut().reset(heartbeat.next_wake());
            }
        }
    }
}

/// Writes `msgs` and flushes once ([`outbox::write`]), within
/// `send_timeout`, and gives way to shutdown and eviction, which the next
/// turn of the loop then handles.
async fn write(
    ws: &mut WsStream,
    msgs: impl IntoIterator<Item = Message>,
    me: &Member,
    shutdown: &CancellationToken,
    chat: &Chat,
) -> Result<(), Ending> {
    tokio::select! {
        written = outbox::write(ws, msgs, chat.send_timeout) => match written {
            Ok(()) => Ok(()),
            Err(WriteError::Failed) => Err(Ending::PeerDone),
            Err(WriteError::TimedOut) => {
                Err(Ending::Close(CloseCode::Policy, "too slow: a write timed out".into()))
            }
        },
        _ = shutdown.cancelled() => Ok(()),
        _ = me.evicted() => Ok(()),
    }
}
// ANCHOR_END: serve_client
