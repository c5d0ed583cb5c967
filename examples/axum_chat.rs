//! Chapter 12: the chat of chapter 6.1 inside axum, the web framework most
//! Rust services are written with. One port serves the browser client at
//! `/` and the chat's WebSocket at `/ws`.
//!
//! What it teaches: what changes when a framework owns the HTTP side (the
//! routes, the upgrade as an extractor, axum's own `Message` type, where
//! the handshake's checks go, shared state through `State`) and what does
//! not (the chat engine, the JSON protocol, the outbox bounded in bytes,
//! the heartbeat, the rate limit, the close handshakes). It also avoids
//! what axum's own chat example gets wrong: a lagging receiver there ends
//! the connection, nothing pings, and nothing closes on shutdown.
//!
//! ```text
//! cargo run --features axum --example axum_chat
//! ```
//!
//! Then open <http://127.0.0.1:9001/> in two browser tabs: the page comes
//! from this binary and connects to its `/ws` by itself. Any WebSocket
//! client works too, at `ws://127.0.0.1:9001/ws`, with chat_server's
//! protocol and rules (examples/chat_server.rs).
//!
//! Differences from chat_server, each explained in chapter 12:
//! - the first line is `listening on http://IP:PORT`;
//! - the page this server serves may always connect (its `Origin` is the
//!   address the browser asked for); another page only if `--allow-origin`
//!   names it, so a page elsewhere gets HTTP 403 even without that flag;
//! - `--max-connections 10000`: WebSockets open at once; one more is
//!   refused with HTTP 503, because axum's accept loop, not ours, takes
//!   the connections;
//! - after a frame or message over 64 KiB (1009), or a broken frame (1002,
//!   1007), the close frame is sent but the rest of the client's input is
//!   not read away: axum does not hand out the socket underneath;
//! - no TLS, tokens, `--max-per-ip` or admin port: put it behind the proxy
//!   of chapter 10.6 for TLS, and see chapter 12's exercises for the rest.
//!
//! Settings shared with chat_server: `--outbox-bytes`, `--presence-limit`,
//! `--history`, `--redis`, `--rate-limit`, `--rate-burst`, `--ping-ms`,
//! `--pong-timeout-ms`, `--send-timeout-ms`. Ctrl-C or SIGTERM closes
//! every WebSocket with 1001, and the server exits 0.
//!
//! Docs: docs/12-web-framework.md

use std::net::SocketAddr;
use std::pin::pin;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::extract::ws::{self, WebSocket, WebSocketUpgrade};
use axum::extract::{ConnectInfo, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{Html, IntoResponse, Response};
use axum::routing::get;
use clap::Parser;
use futures_util::{SinkExt, StreamExt};
use tokio::sync::Semaphore;
use tokio::time::{Instant, sleep_until, timeout};
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::{Instrument, Span, field, info, info_span, warn};
use websocket_tutorial::admission::parse_origin;
use websocket_tutorial::engine::{Engine, EngineArgs, Member};
use websocket_tutorial::heartbeat::{Beat, HeartbeatArgs};
use websocket_tutorial::outbox::Outgoing;
use websocket_tutorial::rate::RateArgs;
use websocket_tutorial::server::{self, Deadlines};
use websocket_tutorial::{close, limits, output};

/// The chat of chapter 6.1 on axum: the page at `/`, the WebSocket at `/ws`.
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
    /// --ping-ms, --pong-timeout-ms, --send-timeout-ms.
    #[command(flatten)]
    deadlines: Deadlines,
    /// WebSockets open at once; one more is refused with HTTP 503.
    #[arg(long, value_name = "N", default_value_t = 10_000)]
    #[arg(value_parser = server::parse_max_connections)]
    max_connections: usize,
    /// Another web page allowed to connect: scheme://host or
    /// scheme://host:port, or null for a page opened from a file. Repeat
    /// for more; the page this server serves may always connect.
    #[arg(long = "allow-origin", value_name = "ORIGIN", value_parser = parse_origin)]
    allowed_origins: Vec<String>,
}

// ANCHOR: app
/// What every handler and every WebSocket shares; axum hands it to a
/// handler that asks for `State<Arc<App>>`.
struct App {
    /// The rooms, on this server alone or shared by a cluster (chapter 9).
    engine: Arc<Engine>,
    rate: RateArgs,
    heartbeat: HeartbeatArgs,
    send_timeout: Duration,
    allowed_origins: Vec<String>,
    /// A permit per open WebSocket: `--max-connections` of them.
    slots: Arc<Semaphore>,
    shutdown: CancellationToken,
    /// The WebSockets. They outlive the requests that opened them, so
    /// axum's graceful shutdown does not wait for them: `main` does.
    connections: TaskTracker,
}
// ANCHOR_END: app

// ANCHOR: main
#[tokio::main]
async fn main() -> ExitCode {
    let _log = output::init_logging();
    let args = Args::parse(); // --help or a mistake: clap exits 0 or 2
    let engine = match Engine::start(args.engine).await {
        Ok(engine) => engine,
        Err(e) => return output::fail(e),
    };
    let shutdown = server::shutdown_on_signal();
    let app = Arc::new(App {
        engine: engine.clone(),
        rate: args.rate,
        heartbeat: args.deadlines.heartbeat,
        send_timeout: args.deadlines.send_timeout,
        allowed_origins: args.allowed_origins,
        slots: Arc::new(Semaphore::new(args.max_connections)),
        shutdown: shutdown.clone(),
        connections: TaskTracker::new(),
    });
    let router =
        Router::new().route("/", get(page)).route("/ws", get(upgrade)).with_state(app.clone());

    limits::raise_open_files(args.max_connections); // chapter 11.3
    let listener = match server::listen_http(args.addr).await {
        Ok(listener) => listener,
        Err(e) => return output::fail(format_args!("cannot listen on {}: {e}", args.addr)),
    };
    // `ConnectInfo`: handlers may ask for the peer's address, for the logs.
    let service = router.into_make_service_with_connect_info::<SocketAddr>();
    // On Ctrl-C or SIGTERM axum stops accepting and lets every request
    // under way finish; the WebSockets see the same token and close. Within
    // a deadline: a request that never finishes (headers sent a byte a
    // minute) must not hold up the exit.
    let stopping = shutdown.clone().cancelled_owned();
    let serving = async { axum::serve(listener, service).with_graceful_shutdown(stopping).await };
    let grace = async {
        shutdown.cancelled().await;
        tokio::time::sleep(server::SHUTDOWN_GRACE).await;
    };
    tokio::select! {
        served = serving => if let Err(e) = served {
            return output::fail(format_args!("serving failed: {e}"));
        },
        () = grace => warn!("some requests were still open after {:?}", server::SHUTDOWN_GRACE),
    }
    app.connections.close();
    if timeout(server::SHUTDOWN_GRACE, app.connections.wait()).await.is_err() {
        warn!("some connections did not close within {:?}", server::SHUTDOWN_GRACE);
    }
    engine.stop().await;
    ExitCode::SUCCESS
}
// ANCHOR_END: main

// ANCHOR: page
/// `GET /`: chapter 6's browser client, built into the binary. Served from
/// here, it connects to this server's `/ws` without being told where.
async fn page() -> Html<&'static str> {
    Html(include_str!("../web/chat.html"))
}
// ANCHOR_END: page

// ANCHOR: upgrade
/// `GET /ws`: the WebSocket handshake. `WebSocketUpgrade` is an extractor:
/// a request that is not a WebSocket handshake never gets here, axum
/// answers it with a 4xx. Everything chat_server checks inside its
/// handshake is checked here, before the upgrade is accepted.
async fn upgrade(
    upgrade: WebSocketUpgrade,
    headers: HeaderMap,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    State(app): State<Arc<App>>,
) -> Response {
    let span = info_span!("connection", %peer, id = field::Empty);
    // A client that reconnects the moment it reads our 1001 may get here
    // before axum stops accepting: no WebSocket, only to close it again.
    if app.shutdown.is_cancelled() {
        return (StatusCode::SERVICE_UNAVAILABLE, "shutting down\n").into_response();
    }
    if !origin_allowed(&headers, &app.allowed_origins) {
        let origin =
            headers.get(header::ORIGIN).map(|value| String::from_utf8_lossy(value.as_bytes()));
        info!(parent: &span, origin = origin.as_deref(), "refused, 403: origin not allowed");
        return (StatusCode::FORBIDDEN, "origin not allowed\n").into_response();
    }
    let Ok(slot) = app.slots.clone().try_acquire_owned() else {
        info!(parent: &span, "refused, 503: --max-connections are open");
        let retry = [(header::RETRY_AFTER, "5")];
        return (StatusCode::SERVICE_UNAVAILABLE, retry, "server full, try again later\n")
            .into_response();
    };
    // Counted from now, not from when the upgrade completes: a shutdown in
    // between still waits for this connection and its close frame.
    let tracked = app.connections.token();
    // The limits of chat_server's `WebSocketConfig` (chapter 6.1), here
    // through the extractor.
    let upgrade = upgrade
        .max_message_size(64 * 1024)
        .max_frame_size(64 * 1024)
        .read_buffer_size(256)
        .write_buffer_size(1024);
    upgrade.on_upgrade(move |ws| {
        let connection = async move {
            connection(ws, &app).await;
            drop((slot, tracked));
        };
        connection.instrument(span)
    })
}
// ANCHOR_END: upgrade

// ANCHOR: origin
/// Whether the page behind a handshake may open a WebSocket: no `Origin`
/// (not a browser, so no visitor's cookies to abuse), the page this server
/// serves (its origin is the `Host` the browser asked for, over http or,
/// behind a proxy that adds TLS, https), or a page on `--allow-origin`.
fn origin_allowed(headers: &HeaderMap, allowed: &[String]) -> bool {
    let Some(origin) = headers.get(header::ORIGIN) else { return true };
    let Some(origin) = origin.to_str().ok().and_then(|text| parse_origin(text).ok()) else {
        return false;
    };
    let host = headers.get(header::HOST).and_then(|host| host.to_str().ok());
    let own = |scheme| host.and_then(|host| parse_origin(&format!("{scheme}://{host}")).ok());
    own("http").as_ref() == Some(&origin)
        || own("https").as_ref() == Some(&origin)
        || allowed.contains(&origin)
}
// ANCHOR_END: origin

/// How a connection ended, and so what we still owe the client.
enum Ending {
    /// The client closed (tungstenite answers it when we read on) or vanished.
    PeerDone,
    /// We close, with this code and reason.
    Close(CloseCode, String),
}

// ANCHOR: connection
/// One client, from the upgrade to the end of the close handshake: chat_server's
/// `connection`, with axum's `WebSocket` in place of tokio-tungstenite's.
async fn connection(mut ws: WebSocket, app: &App) {
    let (me, mut outgoing) = app.engine.register();
    Span::current().record("id", field::display(me.id()));
    info!("connected");
    let ending = serve_client(&mut ws, &me, &mut outgoing, app).await;
    // As in chat_server: leave every room first, quietly when everyone is.
    if app.shutdown.is_cancelled() {
        app.engine.shutting_down();
    }
    let evicted = me.is_evicted();
    drop(me);
    goodbye(&mut ws, &mut outgoing, evicted, ending).await;
    info!("disconnected");
}

/// Our side of the close handshake: what is still queued, then our close
/// frame, then the client's answer; or, when the client closed first, the
/// answer tungstenite owes it, which goes out as we read on.
async fn goodbye(ws: &mut WebSocket, outgoing: &mut Outgoing, evicted: bool, ending: Ending) {
    let Ending::Close(code, reason) = ending else { return close::answer(ws).await };
    info!(code = u16::from(code), %reason, "closing");
    let frame = ws::CloseFrame { code: code.into(), reason: reason.as_str().into() };
    let send = async {
        while let Some(msg) = outgoing.try_recv().filter(|_| !evicted) {
            ws.feed(to_axum(msg)).await?;
        }
        ws.send(ws::Message::Close(Some(frame))).await
    };
    if let Ok(Ok(())) = timeout(close::CLOSE_TIMEOUT, send).await {
        let reply = async {
            while let Some(Ok(msg)) = ws.next().await {
                if let ws::Message::Close(_) = msg {
                    break;
                }
            }
        };
        let _ = timeout(close::CLOSE_TIMEOUT, reply).await;
    }
}
// ANCHOR_END: connection

// ANCHOR: serve_client
/// The connection's one loop, as in chat_server: shutdown, eviction, the
/// outbox, the client's frames and the heartbeat, in that order.
async fn serve_client(
    ws: &mut WebSocket,
    me: &Member,
    outgoing: &mut Outgoing,
    app: &App,
) -> Ending {
    let mut heartbeat = app.heartbeat.start();
    let mut heartbeat_timer = pin!(sleep_until(heartbeat.next_wake()));
    let mut rate = app.rate.start();
    let mut shutting_down = pin!(app.shutdown.cancelled());
    let mut evicted = pin!(me.evicted());
    loop {
        tokio::select! {
            biased;
            _ = &mut shutting_down => {
                return Ending::Close(CloseCode::Away, "server shutting down".into());
            }
            _ = &mut evicted => {
                return Ending::Close(CloseCode::Policy, "too slow: outbox over budget".into());
            }
            batch = outgoing.next_batch() => {
                let bytes = batch.frame_bytes();
                if let Err(ending) = Box::pin(write(ws, batch.map(to_axum), me, app)).await {
                    return ending;
                }
                outgoing.written(bytes);
            }
            frame = ws.next() => {
                heartbeat.heard(Instant::now());
                match frame {
                    Some(Ok(msg)) => {
                        let Some(command) = command(msg) else { continue };
                        if Box::pin(me.receive(command, None, &mut rate)).await.is_err() {
                            return Ending::Close(CloseCode::Policy, "rate limit exceeded".into());
                        }
                        tokio::task::yield_now().await; // chat_server says why
                    }
                    None => return Ending::PeerDone,
                    Some(Err(e)) => return match rule_broken(&e) {
                        Some(code) => Ending::Close(code, e.to_string()),
                        None => Ending::PeerDone,
                    },
                }
            }
            _ = &mut heartbeat_timer => {
                match heartbeat.on_wake(Instant::now()) {
                    Beat::Dead => return Ending::Close(CloseCode::Error, "ping timeout".into()),
                    Beat::Ping => {
                        let ping = [ws::Message::Ping(Default::default())];
                        if let Err(ending) = Box::pin(write(ws, ping, me, app)).await {
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

/// Writes `msgs` and flushes once, within `send_timeout`, and gives way to
/// shutdown and eviction, which the next turn of the loop then handles.
async fn write(
    ws: &mut WebSocket,
    msgs: impl IntoIterator<Item = ws::Message>,
    me: &Member,
    app: &App,
) -> Result<(), Ending> {
    let write = async {
        for msg in msgs {
            ws.feed(msg).await?;
        }
        ws.flush().await
    };
    tokio::select! {
        written = timeout(app.send_timeout, write) => match written {
            Ok(Ok(())) => Ok(()),
            Ok(Err(_)) => Err(Ending::PeerDone), // the client is gone
            Err(_) => Err(Ending::Close(CloseCode::Policy, "too slow: a write timed out".into())),
        },
        _ = app.shutdown.cancelled() => Ok(()),
        _ = me.evicted() => Ok(()),
    }
}
// ANCHOR_END: serve_client

// ANCHOR: convert
/// What the engine queues (tokio-tungstenite's `Message`), as axum's. The
/// engine queues only its JSON events, text, which is copied: axum 0.8
/// wraps tungstenite 0.29's text type and this project uses 0.30's.
fn to_axum(msg: Message) -> ws::Message {
    match msg {
        Message::Text(text) => ws::Message::Text(text.as_str().into()),
        other => ws::Message::Binary(other.into_data()),
    }
}

/// A client's frame as the engine takes it: text, or binary (which the
/// engine refuses with an `Error`). Pings are answered underneath, a pong
/// only proves life, and a close frame is followed by the end of the stream.
fn command(msg: ws::Message) -> Option<Message> {
    match msg {
        ws::Message::Text(text) => Some(Message::text(text.as_str())),
        ws::Message::Binary(data) => Some(Message::Binary(data)),
        _ => None,
    }
}

/// The close code for a client that broke a rule: chat_server's
/// `error::close_code`, but axum's error is opaque, so we look inside it
/// for tungstenite's. `None`: the client is simply gone.
fn rule_broken(e: &axum::Error) -> Option<CloseCode> {
    use std::error::Error as _;
    use tungstenite_for_axum::Error as E;
    use tungstenite_for_axum::error::ProtocolError as P;
    match e.source()?.downcast_ref::<E>()? {
        E::Capacity(_) => Some(CloseCode::Size),
        E::Utf8(_) => Some(CloseCode::Invalid),
        E::Protocol(P::ResetWithoutClosingHandshake | P::SendAfterClosing) => None,
        E::Protocol(_) => Some(CloseCode::Protocol),
        _ => None,
    }
}
// ANCHOR_END: convert
