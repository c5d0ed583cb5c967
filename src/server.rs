//! What every server example shares: binding, the accept loop with a
//! connection cap, graceful shutdown, and closing a connection properly.
//!
//! The pattern is *detect, tell, wait* (the one tokio's graceful-shutdown
//! example teaches):
//! - **detect**: [`shutdown_on_ctrl_c`] turns Ctrl-C into a cancelled
//!   [`CancellationToken`];
//! - **tell**: every connection handler gets a clone of that token and races
//!   its loop against it, sending close code 1001 (going away) when it fires;
//! - **wait**: [`serve`] stops accepting and waits, with a deadline, for the
//!   handlers it spawned to finish their close handshakes.

use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use futures_util::FutureExt;
use tokio::net::{TcpListener, TcpStream, ToSocketAddrs};
use tokio::sync::Semaphore;
use tokio::time::timeout;
use tokio_rustls::TlsAcceptor;
use tokio_tungstenite::tungstenite;
use tokio_tungstenite::tungstenite::handshake::server::{Callback, Request, Response};
use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;
use tokio_tungstenite::{WebSocketStream, accept_hdr_async_with_config};
use tokio_util::either::Either;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::{Instrument, Span, debug, error, info, info_span, warn};

use crate::admission::{Admission, Authenticated, PerIp, Refusal};
use crate::close;
use crate::error::{self, AddressError, Error};
use crate::output;
use crate::tls::Stream;

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

async fn listen_as(addr: impl ToSocketAddrs, scheme: &str) -> io::Result<TcpListener> {
    let tcp = TcpListener::bind(addr).await?;
    // The line is out before we accept anyone. It is the only thing a
    // server writes to stdout, and if stdout is gone (its reader quit) the
    // server is still worth running: the error is ignored, not a panic.
    let _ = output::line(format_args!("listening on {scheme}://{}", tcp.local_addr()?));
    Ok(tcp)
}
// ANCHOR_END: listen

/// A token that is cancelled when the process receives Ctrl-C (SIGINT).
///
/// Call it before [`bind`]: the handler is installed before this function
/// returns, so a Ctrl-C that comes the moment the `listening on` line is out
/// still shuts down gracefully. (`tokio::signal::ctrl_c()` would install it
/// only when the spawned task first runs; a Ctrl-C before that kills the
/// process the default way, without closing anyone's connection.)
pub fn shutdown_on_ctrl_c() -> CancellationToken {
    let token = CancellationToken::new();
    let on_signal = token.clone();
    #[cfg(unix)]
    let listener = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::interrupt());
    #[cfg(windows)]
    let listener = tokio::signal::windows::ctrl_c();
    tokio::spawn(async move {
        match listener {
            Ok(mut ctrl_c) => {
                ctrl_c.recv().await;
                // Cancel first: nothing, not even logging, may stand
                // between Ctrl-C and a graceful shutdown.
                on_signal.cancel();
                info!("Ctrl-C: closing every connection with 1001 (going away)");
            }
            // Without a signal handler we cannot shut down gracefully, but
            // that is no reason to stop serving.
            Err(e) => error!(error = %e, "cannot listen for Ctrl-C"),
        }
    });
    token
}

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
/// answered with HTTP 401, 403 or 429 instead of an upgrade; the user its
/// token proved (with [`Admission::tokens`]) is the handler's third
/// argument, `None` without tokens. A connection's
/// place in its address's count is taken as soon as it is accepted, and
/// given back when its task ends, however it ends.
///
/// Everything a connection logs, from its handshake to its last line, is
/// inside a `connection` span that names the peer (`peer=IP:PORT`), and an
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
    H: Fn(WsStream, CancellationToken, Option<Authenticated>) -> F + Send + Sync + 'static,
    F: Future<Output = ()> + Send + 'static,
{
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

    loop {
        // Wait for one of: a free slot and a new connection, or shutdown.
        let (permit, accepted) = tokio::select! {
            _ = shutdown.cancelled() => break,
            Ok(permit) = limit.clone().acquire_owned() => {
                tokio::select! {
                    _ = shutdown.cancelled() => break,
                    accepted = listener.accept() => (permit, accepted),
                }
            }
        };
        let (stream, peer) = match accepted {
            Ok(conn) => conn,
            // Typically EMFILE (out of file descriptors): back off briefly
            // rather than spin, and keep serving the connections we have.
            Err(e) => {
                error!(error = %e, "accept failed");
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
        let (handler, shutdown, connections) = (handler.clone(), shutdown.clone(), tracker.clone());
        // Taken now, so that handshakes under way count too; `None` when the
        // address has no room, and the handshake is answered with 429.
        let slot = per_ip.try_take(peer.ip());
        let (admission, tls) = (admission.clone(), tls.clone());
        // The span goes with both tasks below: the handshake's, and the
        // connection's (`Span::current()` there is this span).
        let span = info_span!("connection", %peer, id = tracing::field::Empty);
        let handshake = async move {
            // Admitted or refused from the request's headers, inside the
            // handshake. (The large `Err` is the type tungstenite's
            // `Callback` asks for, built at most once per connection.)
            let mut user = None;
            #[allow(clippy::result_large_err)]
            let check = |request: &Request, response: Response| {
                let verdict = admission.check(request, slot.as_ref());
                verdict
                    .map(|admitted| user = admitted)
                    .map(|()| response)
                    .map_err(Refusal::response)
            };
            // A handshake still under way at shutdown is simply dropped:
            // there is no WebSocket yet to send a close frame on.
            let upgraded = tokio::select! {
                upgraded = accept(stream, tls.as_ref(), config, check) => upgraded,
                _ = shutdown.cancelled() => return,
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

// ANCHOR: close_after_error
/// Ends a connection whose read failed: a peer that broke a rule is told why
/// with the matching close code, and reads it and then the end of the
/// stream ([`close::after_broken_rule`]); one that is simply gone is let go
/// quietly. (The log line names the peer: this runs inside its
/// connection's span.)
pub async fn close_after_error(ws: &mut WsStream, err: &tungstenite::Error) {
    if let Some(code) = error::close_code(err) {
        info!(code = u16::from(code), reason = %err, "closing");
        close::after_broken_rule(ws, code, &err.to_string()).await;
    }
}
// ANCHOR_END: close_after_error

#[cfg(test)]
mod tests {
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
}
