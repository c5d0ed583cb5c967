//! Chapter 2.2, the first version: the smallest echo server that is correct.
//!
//! What it teaches: the accept loop, the WebSocket handshake
//! (`accept_async`), and a loop that sends every text or binary message back
//! to its sender. One task per connection, so a slow or broken client holds
//! up only itself; a failure ends its own connection with a line in the log,
//! never a panic; Ctrl-C closes every connection with 1001 (going away) and
//! waits for the clients' answers. Chapter 2.2 then grows it, step by step,
//! into `echo_server`.
//!
//! ```text
//! cargo run --example echo_server_first                                # terminal 1
//! cargo run --example echo_client_first -- ws://127.0.0.1:9001 hello   # terminal 2
//! ```
//!
//! Docs: docs/02-tokio-tungstenite.md

use futures_util::{SinkExt, StreamExt};
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::{self, protocol::frame::coding::CloseCode};
use tokio_util::{sync::CancellationToken, task::TaskTracker};
use websocket_tutorial::{close, output, server};

// ANCHOR: all
/// Echoes every text and binary message back to its sender.
#[derive(clap::Parser)]
struct Args {
    /// The address to listen on, IP:PORT; port 0 picks a free port.
    #[arg(default_value = server::DEFAULT_ADDR, value_parser = server::parse_addr)]
    addr: std::net::SocketAddr,
}

#[tokio::main]
async fn main() -> std::process::ExitCode {
    let _log = output::init_logging();
    let Args { addr } = clap::Parser::parse();
    // Cancelled by Ctrl-C or SIGTERM; every connection watches it.
    let shutdown = server::shutdown_on_signal();
    // Prints `listening on ws://IP:PORT`, with the port it got.
    let listener = match server::listen(addr).await {
        Ok(listener) => listener,
        Err(e) => return output::fail(format_args!("cannot listen on {addr}: {e}")),
    };
    let connections = TaskTracker::new();
    // Accept connections until Ctrl-C, one task each.
    while let Some(accepted) = shutdown.run_until_cancelled(listener.accept()).await {
        match accepted {
            Ok((stream, peer)) => {
                let shutdown = shutdown.clone();
                connections.spawn(async move {
                    if let Err(e) = echo(stream, shutdown).await {
                        tracing::warn!(%peer, error = %e, "connection failed");
                    }
                });
            }
            Err(e) => tracing::warn!(error = %e, "accept failed"),
        }
    }
    // Wait until every connection has said goodbye, or 5 seconds have
    // passed (a client that stopped reading could hold one up forever).
    connections.close();
    let _ = tokio::time::timeout(server::SHUTDOWN_GRACE, connections.wait()).await;
    std::process::ExitCode::SUCCESS
}

/// Echoes one connection until the client closes it or Ctrl-C. Any error
/// (a broken frame, a vanished client) ends this connection only.
async fn echo(stream: TcpStream, shutdown: CancellationToken) -> Result<(), tungstenite::Error> {
    // The handshake gives way to Ctrl-C too: a client that never finishes it
    // must not hold up the shutdown. (`None`: Ctrl-C came first. `transpose`
    // turns an `Option` of a `Result` inside out, so that `?` takes the error.)
    let handshake = shutdown.run_until_cancelled(tokio_tungstenite::accept_async(stream));
    let Some(mut ws) = handshake.await.transpose()? else { return Ok(()) };
    // The client's messages, until Ctrl-C (`None`).
    while let Some(msg) = shutdown.run_until_cancelled(ws.next()).await {
        match msg.transpose()? {
            Some(msg) if msg.is_text() || msg.is_binary() => ws.send(msg).await?,
            Some(_) => {} // a ping (tungstenite answers it) or a pong
            // The client closed, and tungstenite has answered its close
            // frame: the close handshake is done.
            None => return Ok(()),
        }
    }
    close::handshake(&mut ws, CloseCode::Away, "server shutting down").await;
    Ok(())
}
// ANCHOR_END: all
