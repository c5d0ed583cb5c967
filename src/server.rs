//! What every server example shares: its command line ([`ServerArgs`],
//! [`Deadlines`]), its start-up ([`run`]: TLS files, signals, bind, serve),
//! the accept loop with a connection cap, graceful shutdown, and closing a
//! connection properly.
//!
//! The pattern is *detect, tell, wait* (the one tokio's graceful-shutdown
//! example teaches):
//! - **detect**: [`shutdown_on_signal`] turns Ctrl-C or SIGTERM into a
//!   cancelled [`CancellationToken`];
//! - **tell**: every connection handler gets a clone of that token and races
//!   its loop against it, sending close code 1001 (going away) when it fires;
//! - **wait**: [`serve`] stops accepting and waits, with a deadline, for the
//!   handlers it spawned to finish their close handshakes.

use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use futures_util::FutureExt;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::{TcpListener, TcpStream, ToSocketAddrs};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio::time::timeout;
use tokio_rustls::TlsAcceptor;
use tokio_tungstenite::tungstenite;
use tokio_tungstenite::tungstenite::handshake::server::{Callback, Request, Response};
use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tokio_tungstenite::{WebSocketStream, accept_hdr_async_with_config};
use tokio_util::either::Either;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::{Instrument, Span, debug, error, field, info, info_span, warn};

use crate::admission::{Admission, PerIp, Refusal};
use crate::error::{self, AddressError, Error};
use crate::heartbeat::HeartbeatArgs;
use crate::tls::{Stream, TlsArgs};
use crate::{args, close, limits, output};

/// The address servers listen on when none is given.
pub const DEFAULT_ADDR: &str = "127.0.0.1:9001";

// ANCHOR: parse_addr
/// Parses the address a server listens on, `IP:PORT`, before anything is
/// bound. A bare port (`9002`), a host name or a URL is refused with an
/// example built from the port the user gave: `127.0.0.1:9002`.
pub fn parse_addr(text: &str) -> Result<SocketAddr, AddressError> {
    text.parse().map_err(|_| {
        let port = text.rsplit(':').next().and_then(|p| p.parse::<u16>().ok()).unwrap_or(9001);
        AddressError::NotIpPort { example: format!("127.0.0.1:{port}") }
    })
}
// ANCHOR_END: parse_addr

/// A client that opens a TCP connection and then sends nothing must not hold a
/// task and a file descriptor forever.
pub const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// Parses a server's `--max-connections`: at least 1, and at most what
/// [`serve`] can count (tokio's semaphore panics past its `MAX_PERMITS`).
pub fn parse_max_connections(text: &str) -> Result<usize, String> {
    let max = crate::args::positive::<usize>(text)?;
    if max > Semaphore::MAX_PERMITS {
        return Err(format!("must be at most {}", Semaphore::MAX_PERMITS));
    }
    Ok(max)
}

/// How long shutdown waits for all connections to finish closing.
pub const SHUTDOWN_GRACE: Duration = Duration::from_secs(5);

/// Connections a server serves at once when `--max-connections` is not
/// given.
pub const DEFAULT_MAX_CONNECTIONS: usize = 1024;

// ANCHOR: server_args
/// What every server takes on its command line besides its own settings
/// (`#[command(flatten)] server: ServerArgs`), and what [`run`] needs: the
/// address, `--max-connections`, and chapter 10's `--allow-origin`,
/// `--max-per-ip` ([`Admission`]) and `--tls-cert`/`--tls-key`
/// ([`TlsArgs`]).
#[derive(clap::Args, Debug, Clone)]
pub struct ServerArgs {
    /// The address to listen on, IP:PORT; port 0 picks a free port.
    #[arg(default_value = DEFAULT_ADDR, value_parser = parse_addr)]
    pub addr: SocketAddr,
    /// Connections served at once; more wait for a free slot.
    #[arg(long, value_name = "N", default_value_t = DEFAULT_MAX_CONNECTIONS)]
    #[arg(value_parser = parse_max_connections)]
    pub max_connections: usize,
    #[command(flatten)]
    pub admission: Admission,
    #[command(flatten)]
    pub tls: TlsArgs,
}
// ANCHOR_END: server_args

// ANCHOR: deadlines
/// How long a connection waits for its client, in each direction, as a
/// server that writes with a deadline takes it on its command line
/// (`#[command(flatten)] deadlines: Deadlines`): the heartbeat's `--ping-ms`
/// and `--pong-timeout-ms`, and `--send-timeout-ms`. Milliseconds on the
/// command line; a `Copy` for every connection.
#[derive(Debug, Clone, Copy, clap::Args)]
pub struct Deadlines {
    /// When to ping the client, and how long its silence may last.
    #[command(flatten)]
    pub heartbeat: HeartbeatArgs,
    /// The longest one send may wait for the client to take it, in
    /// milliseconds.
    #[arg(long = "send-timeout-ms", value_name = "MS", default_value = "5000")]
    #[arg(value_parser = args::period)]
    pub send_timeout: Duration,
}
// ANCHOR_END: deadlines

/// A server-side WebSocket, over plain TCP or over TLS ([`Stream`]).
pub type WsStream = WebSocketStream<Stream>;

/// A bound socket, and the TLS that its connections start with, if any.
pub struct Listener {
    tcp: TcpListener,
    tls: Option<TlsAcceptor>,
}

/// Binds `addr` and prints `listening on ws://IP:PORT` with the real port, so
/// `127.0.0.1:0` works and a script can read the port from the first line.
pub async fn bind(addr: SocketAddr) -> io::Result<Listener> {
    bind_with(addr, None).await
}

/// Like [`bind`], serving `wss://` when given a TLS acceptor
/// ([`crate::tls::TlsArgs::acceptor`]): the line is then
/// `listening on wss://IP:PORT`.
pub async fn bind_with(addr: SocketAddr, tls: Option<TlsAcceptor>) -> io::Result<Listener> {
    let scheme = if tls.is_some() { "wss" } else { "ws" };
    let tcp = listen_as(addr, scheme).await?;
    Ok(Listener { tcp, tls })
}

// ANCHOR: listen
/// Binds `addr` (`IP:PORT`, or a name to look up) and prints
/// `listening on ws://IP:PORT` with the real port, so that port 0 works and
/// a script (or a test) can read the port from the first line: the plain
/// TCP listener of a first version, whose accept loop is its own.
pub async fn listen(addr: impl ToSocketAddrs) -> io::Result<TcpListener> {
    listen_as(addr, "ws").await
}

/// Binds `addr` and prints `listening on http://IP:PORT`: for a server
/// whose WebSocket is one route of a web application (chapter 12), which
/// serves its page on the same port.
pub async fn listen_http(addr: impl ToSocketAddrs) -> io::Result<TcpListener> {
    listen_as(addr, "http").await
}

async fn listen_as(addr: impl ToSocketAddrs, scheme: &str) -> io::Result<TcpListener> {
    let tcp = TcpListener::bind(addr).await?;
    // The line is out before we accept anyone. It is the only thing a
    // server writes to stdout, and if stdout is gone (its reader quit) the
    // server is still worth running: the error is ignored, not a panic.
    let _ = output::line(format_args!("listening on {scheme}://{}", tcp.local_addr()?));
    Ok(tcp)
}
// ANCHOR_END: listen

/// A token that is cancelled when the process is asked to stop: Ctrl-C
/// (SIGINT) in a terminal, or SIGTERM, which is how systemd, Docker and
/// Kubernetes stop a service (and what `kill` sends by default). Both mean
/// the same thing to a server: close every connection with 1001 and exit 0.
///
/// Call it before [`bind`]: the handlers are installed before this function
/// returns, so a signal that comes the moment the `listening on` line is out
/// still shuts down gracefully. (`tokio::signal::ctrl_c()` would install one
/// only when the spawned task first runs; a Ctrl-C before that kills the
/// process the default way, without closing anyone's connection.)
pub fn shutdown_on_signal() -> CancellationToken {
    let token = CancellationToken::new();
    let on_signal = token.clone();
    #[cfg(unix)]
    let signals = {
        use tokio::signal::unix::{SignalKind, signal};
        signal(SignalKind::interrupt()).and_then(|int| Ok((int, signal(SignalKind::terminate())?)))
    };
    #[cfg(windows)]
    let signals = tokio::signal::windows::ctrl_c();
    tokio::spawn(async move {
        match signals {
            #[cfg(unix)]
            Ok((mut interrupt, mut terminate)) => {
                let name = tokio::select! {
                    _ = interrupt.recv() => "Ctrl-C",
                    _ = terminate.recv() => "SIGTERM",
                };
                // Cancel first: nothing, not even logging, may stand
                // between the signal and a graceful shutdown.
                on_signal.cancel();
                info!("{name}: closing every connection with 1001 (going away)");
            }
            #[cfg(windows)]
            Ok(mut ctrl_c) => {
                ctrl_c.recv().await;
                on_signal.cancel();
                info!("Ctrl-C: closing every connection with 1001 (going away)");
            }
            // Without a signal handler we cannot shut down gracefully, but
            // that is no reason to stop serving.
            Err(e) => error!(error = %e, "cannot listen for Ctrl-C and SIGTERM"),
        }
    });
    token
}

// ANCHOR: run
/// Runs a server from its command line to its exit code, the same way for
/// every server: reads the TLS files of `--tls-cert`/`--tls-key` (a server
/// that cannot encrypt should not start), installs the Ctrl-C and SIGTERM
/// handler ([`shutdown_on_signal`]), binds and prints `listening on
/// ws://IP:PORT` (`wss://` with TLS), then [`serve`]s every connection with
/// `handler` until one of those signals. Returns 0 after a graceful shutdown; 1, with one `error:`
/// line, when a TLS file or the address cannot be used.
///
/// A handler is not told who its client is: no server run here takes
/// tokens. One that does (chat_server) calls [`serve`] itself.
pub async fn run<H, F>(args: ServerArgs, config: WebSocketConfig, handler: H) -> ExitCode
where
    H: Fn(WsStream, CancellationToken) -> F + Send + Sync + 'static,
    F: Future<Output = ()> + Send + 'static,
{
    let ServerArgs { addr, max_connections, admission, tls } = args;
    let tls = match tls.acceptor() {
        Ok(tls) => tls,
        Err(e) => return output::fail(e),
    };
    let shutdown = shutdown_on_signal();
    let listener = match bind_with(addr, tls).await {
        Ok(listener) => listener,
        Err(e) => return output::fail(format_args!("cannot listen on {addr}: {e}")),
    };
    let handler = move |ws, shutdown, _user| handler(ws, shutdown);
    serve(listener, config, max_connections, admission, shutdown, handler).await;
    ExitCode::SUCCESS
}
// ANCHOR_END: run

// ANCHOR: accept
/// Upgrades an accepted TCP connection to a WebSocket.
///
/// `TCP_NODELAY` goes on first: WebSocket messages are small and interactive,
/// and Nagle's algorithm would hold one back waiting for a delayed ACK
/// (about 40 ms on Linux). The handshake has a deadline, so a client that
/// connects and says nothing cannot hold a task forever. With `tls`, the
/// TLS handshake comes first, under the same deadline: a client that speaks
/// plain text to a `wss://` port fails there, and only its connection ends.
///
/// `check` sees the request's headers before the upgrade and may refuse it
/// with an HTTP error response instead (what [`Admission::check`] does);
/// then the result is `Error::WebSocket(tungstenite::Error::Http(_))`.
pub async fn accept<C>(
    stream: TcpStream,
    tls: Option<&TlsAcceptor>,
    config: WebSocketConfig,
    check: C,
) -> Result<WsStream, Error>
where
    C: Callback + Unpin,
{
    stream.set_nodelay(true)?;
    let handshakes = async {
        let stream = match tls {
            // Boxed: rustls's state is some 1,200 bytes, and unboxed it would
            // size every connection's stream, TLS or not (`tls::Stream`).
            Some(tls) => Either::Right(Box::new(tls.accept(stream).await?)),
            None => Either::Left(stream),
        };
        Ok::<_, Error>(accept_hdr_async_with_config(stream, check, Some(config)).await?)
    };
    match timeout(HANDSHAKE_TIMEOUT, handshakes).await {
        Ok(result) => result,
        Err(_) => Err(Error::Timeout("WebSocket handshake")),
    }
}
// ANCHOR_END: accept

// ANCHOR: serve
/// Accepts connections until `shutdown` is cancelled, runs `handler` for each
/// one in its own task (with a clone of `shutdown`, which the handler races
/// its loop against), then waits (at most [`SHUTDOWN_GRACE`]) for the
/// handlers to finish.
///
/// At most `max_connections` connections are served at once: a permit is
/// taken *before* `accept()` and moved into the connection's task, so a
/// flood of clients waits in the kernel's backlog instead of costing memory.
/// A failed handshake is logged and ends that one connection, nothing else.
///
/// `admission` says who may connect: the handshake of a client it refuses
/// (an origin not allowed, too many connections from one address) is
/// answered with HTTP 401, 403 or 429 instead of an upgrade; the username
/// its token proved (with [`Admission::tokens`]) is the handler's third
/// argument, `None` without tokens. A connection's
/// place in its address's count is taken as soon as it is accepted (from
/// a trusted proxy, once its request has named the client: see
/// [`crate::proxy`]), and given back when its task ends, however it ends.
///
/// Everything a connection logs, from its handshake to its last line, is
/// inside a `connection` span that names the peer (`peer=IP:PORT`), the
/// client a trusted proxy speaks for (`client=IP`, only then), and an
/// `id` field that a handler may fill in once it knows who the client is
/// (`Span::current().record("id", ...)`). So the handler is not
/// handed the peer's address; one that needs it for more than logging has
/// it in the `TcpStream` under `ws.get_ref()`.
pub async fn serve<H, F>(
    listener: Listener,
    config: WebSocketConfig,
    max_connections: usize,
    admission: Admission,
    shutdown: CancellationToken,
    handler: H,
) where
    H: Fn(WsStream, CancellationToken, Option<String>) -> F + Send + Sync + 'static,
    F: Future<Output = ()> + Send + 'static,
{
    // Room for every connection's socket: a soft limit of 1,024 would stop
    // `accept()` long before `max_connections` (chapter 11.3).
    limits::raise_open_files(max_connections);
    if admission.allowed_origins.is_empty() {
        // Said once and loudly: fine on 127.0.0.1, and the one setting to
        // change before a browser's page, with its cookies, can reach us.
        warn!("no --allow-origin: accepting WebSocket handshakes from any web page's origin");
    }
    let per_ip = PerIp::new(admission.max_per_ip);
    let admission = Arc::new(admission);
    let handler = Arc::new(handler);
    let limit = Arc::new(Semaphore::new(max_connections));
    let Listener { tcp: listener, tls } = listener;
    let tracker = TaskTracker::new();
    // What every connection keeps from its first moment to its last, before
    // any message: its handler's state (chapter 8.4). `RUST_LOG=debug`
    // shows it, and tests/sizes.rs keeps it from growing unnoticed.
    debug!(bytes = size_of::<F>(), "every connection holds its handler's future");

    while let Some((permit, stream, peer)) = next_connection(&listener, &limit, &shutdown).await {
        let (handler, shutdown, connections) = (handler.clone(), shutdown.clone(), tracker.clone());
        // Taken now, so that handshakes under way count too; `None` when the
        // address has no room, and the handshake is answered with 429. From
        // a trusted proxy (`--trust-proxy`), the client is named in the
        // request, and its place is taken when the request is read.
        let behind_proxy = admission.proxies.trusts(peer.ip());
        let mut slot = if behind_proxy { None } else { per_ip.try_take(peer.ip()) };
        let (admission, tls, per_ip) = (admission.clone(), tls.clone(), per_ip.clone());
        // The span goes with both tasks below: the handshake's, and the
        // connection's (`Span::current()` there is this span). `client` is
        // the address a trusted proxy says it passes the connection on for.
        let span = info_span!("connection", %peer, client = field::Empty, id = field::Empty);
        let handshake = async move {
            // Admitted or refused from the request's headers, inside the
            // handshake. (The large `Err` is the type tungstenite's
            // `Callback` asks for, built at most once per connection.)
            let mut user = None;
            #[allow(clippy::result_large_err)]
            let check = |request: &Request, response: Response| {
                if behind_proxy {
                    let client = admission.client(peer.ip(), request).map_err(Refusal::response)?;
                    Span::current().record("client", field::display(client));
                    slot = per_ip.try_take(client);
                }
                let verdict = admission.check(request, slot.as_ref());
                verdict
                    .map(|admitted| user = admitted)
                    .map(|()| response)
                    .map_err(Refusal::response)
            };
            // A handshake still under way at shutdown is simply dropped:
            // there is no WebSocket yet to send a close frame on. `biased`:
            // a client that reconnects the moment it reads our 1001 may get
            // its request in before this task runs, and must not be handed
            // a WebSocket only to be closed with 1001 again.
            let upgraded = tokio::select! {
                biased;
                _ = shutdown.cancelled() => return,
                upgraded = accept(stream, tls.as_ref(), config, check) => upgraded,
            };
            match upgraded {
                // The connection gets a task of its own, holding only the
                // handler's future, the permit and the address's slot
                // (released when it ends, or when it unwinds from a panic).
                // Awaited here instead, it would share a task with the
                // handshake's state and captures, some 500 bytes kept for
                // the connection's whole life.
                Ok(ws) => {
                    let connection =
                        handler(ws, shutdown, user).map(move |()| drop((permit, slot)));
                    connections.spawn(connection.instrument(Span::current()));
                }
                // Refused by `Admission::check`, which said why.
                Err(Error::WebSocket(tungstenite::Error::Http(_))) => {}
                Err(e) => warn!(error = %e, "handshake failed"),
            }
        };
        tracker.spawn(handshake.instrument(span));
    }

    drop(listener); // refuse new connections while the others close
    tracker.close();
    if timeout(SHUTDOWN_GRACE, tracker.wait()).await.is_err() {
        warn!("some connections did not close within {SHUTDOWN_GRACE:?}");
    }
}
// ANCHOR_END: serve

// ANCHOR: next_connection
/// Waits for a free slot, then for a new connection; `None` once `shutdown`
/// is cancelled. The slot, a permit of the `limit` semaphore, is taken
/// *before* `accept()`: with every slot in use, nobody is accepted, and new
/// clients wait in the kernel's listen backlog instead of costing memory.
/// The permit goes with the connection, and back when it ends.
async fn next_connection(
    listener: &TcpListener,
    limit: &Arc<Semaphore>,
    shutdown: &CancellationToken,
) -> Option<(OwnedSemaphorePermit, TcpStream, SocketAddr)> {
    loop {
        // (`Err` only from a closed semaphore, and this one never closes.)
        let permit = shutdown.run_until_cancelled(limit.clone().acquire_owned()).await?.ok()?;
        match shutdown.run_until_cancelled(listener.accept()).await? {
            Ok((stream, peer)) => return Some((permit, stream, peer)),
            // Typically EMFILE (out of file descriptors): back off briefly
            // rather than spin, and keep serving the connections we have.
            Err(e) => {
                error!(error = %e, "accept failed");
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
    }
}
// ANCHOR_END: next_connection

// ANCHOR: ending
/// How a connection ended, and so what its client is still owed.
#[derive(Debug)]
pub enum Ending {
    /// Nothing is owed: the client closed (tungstenite has answered its
    /// close frame) or vanished, or the close handshake is over.
    Done,
    /// We end it: a close frame with this code and reason, then the close
    /// handshake (1001 at shutdown, 1008 too slow, 1011 ping timeout).
    Close(CloseCode, &'static str),
    /// A read failed: a client that broke a rule is told which, one that is
    /// simply gone is let go ([`close_after_error`]).
    ReadFailed(tungstenite::Error),
    /// A send failed: there is no telling a client we cannot write to,
    /// but one whose close frame came first is owed its answer.
    SendFailed(tungstenite::Error),
}

impl Ending {
    /// Gives the client what it is owed, and says so in the log (inside
    /// the connection's span, so the line names the client). Any
    /// server-side WebSocket: a [`WsStream`], or a first version's over a
    /// plain `TcpStream`.
    pub async fn close<S>(self, ws: &mut WebSocketStream<S>)
    where
        S: AsyncRead + AsyncWrite + Unpin,
    {
        match self {
            Ending::Done => {}
            Ending::Close(code, reason) => {
                info!(code = u16::from(code), %reason, "closing");
                close::handshake(ws, code, reason).await;
            }
            Ending::ReadFailed(e) => close_after_error(ws, &e).await,
            Ending::SendFailed(e) => {
                log_send_failure(&e);
                // A send refused because the client's close frame was read
                // first: the answer tungstenite queued goes out on a read.
                close::answer(ws).await;
            }
        }
    }
}
// ANCHOR_END: ending

// ANCHOR: close_after_error
/// Ends a connection whose read failed: a peer that broke a rule is told why
/// with the matching close code, and reads it and then the end of the
/// stream ([`close::after_broken_rule`]); one that is simply gone is let go
/// quietly. (The log line names the peer: this runs inside its
/// connection's span.)
pub async fn close_after_error<S>(ws: &mut WebSocketStream<S>, err: &tungstenite::Error)
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    if let Some(code) = error::close_code(err) {
        info!(code = u16::from(code), reason = %err, "closing");
        close::after_broken_rule(ws, code, &err.to_string()).await;
    }
}
// ANCHOR_END: close_after_error

/// Logs a failed send as a warning, unless it only means that the client
/// went away ([`error::is_disconnect`]): a server sees those all day.
pub fn log_send_failure(err: &tungstenite::Error) {
    if !error::is_disconnect(err) {
        warn!(error = %err, "send failed");
    }
}

#[cfg(test)]
mod tests {
    use futures_util::{SinkExt, StreamExt};
    use tokio_tungstenite::tungstenite::Message;

    use super::*;

    #[test]
    fn an_address_is_ip_and_port_and_a_bare_port_gets_a_hint() {
        assert_eq!(parse_addr("127.0.0.1:0"), Ok(SocketAddr::from(([127, 0, 0, 1], 0))));
        assert_eq!(parse_addr("[::1]:9001").map(|a| a.port()), Ok(9001));
        for (given, example) in [
            ("9002", "127.0.0.1:9002"),
            ("localhost:9002", "127.0.0.1:9002"),
            ("ws://127.0.0.1:9002", "127.0.0.1:9002"),
            ("", "127.0.0.1:9001"),
        ] {
            let refused = AddressError::NotIpPort { example: example.into() };
            assert_eq!(parse_addr(given), Err(refused), "{given}");
        }
        let message = parse_addr("9002").unwrap_err().to_string();
        assert!(message.contains("IP:PORT") && message.contains("127.0.0.1:9002"), "{message}");
    }

    #[tokio::test]
    async fn a_plain_handshake_carries_no_tls_state() {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let _client = TcpStream::connect(listener.local_addr().unwrap()).await.unwrap();
        let (stream, _) = listener.accept().await.unwrap();
        // (The large `Err` is tungstenite's, as in `serve`.)
        #[allow(clippy::result_large_err)]
        let check = |_: &Request, response: Response| Ok(response);
        // Made, never polled: a future is its whole state from the start.
        let handshake = accept(stream, None, WebSocketConfig::default(), check);
        // 1,712 bytes (debug build), most of it tungstenite's handshake.
        // With rustls's state inline in the stream, 8,768: tungstenite holds
        // the stream in several places while it shakes hands (chapter 8.4).
        // A change that grows it must raise this number and say why.
        let size = size_of_val(&handshake);
        assert!(size <= 1712, "a plain handshake's state grew to {size} bytes");
    }

    #[test]
    fn a_connection_cap_is_at_least_one_and_at_most_what_a_semaphore_counts() {
        assert_eq!(parse_max_connections("1024"), Ok(1024));
        assert_eq!(parse_max_connections("0"), Err("must be at least 1".into()));
        let past = (Semaphore::MAX_PERMITS as u128 + 1).to_string();
        assert!(parse_max_connections(&past).unwrap_err().starts_with("must be at most"));
        assert!(parse_max_connections("-1").is_err());
    }

    /// `ServerArgs` and `Deadlines` as a server's `Args` flattens them.
    #[derive(clap::Parser)]
    struct Flags {
        #[command(flatten)]
        server: ServerArgs,
        #[command(flatten)]
        deadlines: Deadlines,
    }

    fn flags(given: &[&str]) -> Result<Flags, clap::Error> {
        clap::Parser::try_parse_from(std::iter::once("server").chain(given.iter().copied()))
    }

    #[test]
    fn without_flags_a_server_listens_on_the_default_address_in_plain_text_for_anyone() {
        let Flags { server, deadlines } = flags(&[]).unwrap();
        assert_eq!(server.addr, parse_addr(DEFAULT_ADDR).unwrap());
        assert_eq!(server.max_connections, DEFAULT_MAX_CONNECTIONS);
        assert!(server.admission.allowed_origins.is_empty());
        assert_eq!(server.admission.max_per_ip, crate::admission::DEFAULT_MAX_PER_IP);
        assert!(server.admission.tokens.is_none());
        assert!(server.tls.tls_cert.is_none() && server.tls.tls_key.is_none());
        assert_eq!(deadlines.heartbeat.ping_every, Duration::from_millis(5000));
        assert_eq!(deadlines.heartbeat.pong_timeout, Duration::from_millis(10_000));
        assert_eq!(deadlines.send_timeout, Duration::from_millis(5000));
    }

    #[test]
    fn every_shared_flag_is_taken_and_checked() {
        let Flags { server, deadlines } = flags(&[
            "127.0.0.1:0",
            "--max-connections",
            "7",
            "--allow-origin",
            "https://Chat.example.com/",
            "--max-per-ip",
            "3",
            "--tls-cert",
            "c.pem",
            "--tls-key",
            "k.pem",
            "--ping-ms",
            "50",
            "--pong-timeout-ms",
            "0",
            "--send-timeout-ms",
            "20",
        ])
        .unwrap();
        assert_eq!(server.addr.port(), 0);
        assert_eq!(server.max_connections, 7);
        assert_eq!(server.admission.allowed_origins, ["https://chat.example.com"]);
        assert_eq!(server.admission.max_per_ip, 3);
        assert_eq!(server.tls.tls_key.as_deref(), Some(std::path::Path::new("k.pem")));
        assert_eq!(deadlines.heartbeat.ping_every, Duration::from_millis(50));
        assert_eq!(deadlines.heartbeat.pong_timeout, Duration::ZERO);
        assert_eq!(deadlines.send_timeout, Duration::from_millis(20));
        for bad in [
            &["9002"][..],
            &["--max-connections", "0"],
            &["--tls-cert", "c.pem"],
            &["--send-timeout-ms", "0"],
            &["--ping-ms", "0"],
        ] {
            assert!(flags(bad).is_err(), "{bad:?}");
        }
    }

    #[tokio::test]
    async fn run_with_a_certificate_it_cannot_read_fails_before_it_binds() {
        let missing = std::env::temp_dir().join(format!("no-such-cert-{}", std::process::id()));
        let mut server = flags(&["127.0.0.1:0"]).unwrap().server;
        server.tls = TlsArgs { tls_cert: Some(missing.clone()), tls_key: Some(missing) };
        // Past the certificate, it would serve until Ctrl-C: the deadline
        // would pass, and the test fail.
        let running = run(server, WebSocketConfig::default(), |_ws, _shutdown| async {});
        let code = timeout(Duration::from_secs(10), running).await;
        assert_eq!(code.ok(), Some(ExitCode::FAILURE));
    }

    /// A TCP connection to `listener`, from a client's socket that is kept
    /// open.
    async fn connect(listener: &TcpListener) -> TcpStream {
        TcpStream::connect(listener.local_addr().unwrap()).await.unwrap()
    }

    #[tokio::test]
    async fn a_connection_waits_for_a_free_slot_and_shutdown_ends_the_wait() {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let limit = Arc::new(Semaphore::new(1));
        let shutdown = CancellationToken::new();
        let _first_client = connect(&listener).await;
        let (first, _, _) = next_connection(&listener, &limit, &shutdown).await.unwrap();

        // The second client is in the backlog, but the one slot is taken:
        // it is not accepted, however often we ask.
        let second_client = connect(&listener).await;
        let mut next = std::pin::pin!(next_connection(&listener, &limit, &shutdown));
        assert!(futures_util::poll!(next.as_mut()).is_pending());
        assert!(futures_util::poll!(next.as_mut()).is_pending());
        // The first connection ends: its slot is the second one's.
        drop(first);
        let (_second, _, peer) = next.await.unwrap();
        assert_eq!(peer, second_client.local_addr().unwrap());

        // Shutdown ends a wait for a slot and a wait for a connection alike.
        let free = Arc::new(Semaphore::new(1));
        let mut waiting_for_a_client = std::pin::pin!(next_connection(&listener, &free, &shutdown));
        let mut waiting_for_a_slot = std::pin::pin!(next_connection(&listener, &limit, &shutdown));
        assert!(futures_util::poll!(waiting_for_a_client.as_mut()).is_pending());
        assert!(futures_util::poll!(waiting_for_a_slot.as_mut()).is_pending());
        shutdown.cancel();
        assert!(waiting_for_a_client.await.is_none());
        assert!(waiting_for_a_slot.await.is_none());
    }

    /// A WebSocket served as `serve` would (`accept`), and its client.
    async fn connected_pair(config: WebSocketConfig) -> (WsStream, WebSocketStream<TcpStream>) {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("ws://{}/", listener.local_addr().unwrap());
        let (client, server) = tokio::join!(
            async { tokio_tungstenite::client_async(url, connect(&listener).await).await },
            async {
                let (stream, _) = listener.accept().await.unwrap();
                #[allow(clippy::result_large_err)]
                let check = |_: &Request, response: Response| Ok(response);
                accept(stream, None, config, check).await
            },
        );
        (server.unwrap(), client.unwrap().0)
    }

    /// What the client reads next, skipping pings: the close frame's code
    /// and reason, or `None` when the stream ends without one. Then the
    /// client is gone, so that nobody waits for it.
    async fn close_frame_read(mut client: WebSocketStream<TcpStream>) -> Option<(u16, String)> {
        while let Some(Ok(msg)) = client.next().await {
            match msg {
                Message::Close(Some(frame)) => {
                    return Some((frame.code.into(), frame.reason.to_string()));
                }
                Message::Ping(_) => continue,
                _ => return None,
            }
        }
        None
    }

    #[tokio::test]
    async fn an_ending_gives_the_client_the_close_frame_it_is_owed() {
        let (mut ws, client) = connected_pair(WebSocketConfig::default()).await;
        let closing = Ending::Close(CloseCode::Policy, "too slow: a write timed out");
        let (_, frame) = tokio::join!(closing.close(&mut ws), close_frame_read(client));
        assert_eq!(frame, Some((1008, "too slow: a write timed out".into())));

        // A message over the limit: the read fails, and the client is told.
        let config = WebSocketConfig::default().max_message_size(Some(16));
        let (mut ws, mut client) = connected_pair(config).await;
        client.send(Message::text("more than sixteen bytes")).await.unwrap();
        let failed = ws.next().await.unwrap().unwrap_err();
        let ending = Ending::ReadFailed(failed);
        let (_, frame) = tokio::join!(ending.close(&mut ws), close_frame_read(client));
        assert_eq!(frame.map(|(code, _)| code), Some(1009));

        // Nothing owed: no close frame, whatever else.
        for ending in [Ending::Done, Ending::SendFailed(tungstenite::Error::ConnectionClosed)] {
            let (mut ws, client) = connected_pair(WebSocketConfig::default()).await;
            ending.close(&mut ws).await;
            drop(ws);
            assert_eq!(close_frame_read(client).await, None);
        }
    }
}
