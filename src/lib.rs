//! # websocket-tutorial
//!
//! The shared library behind the tutorial's examples. Each chapter's program
//! lives in `examples/`; what several chapters use lives here, one concept per
//! module:
//!
//! | module | what it holds | chapter |
//! |---|---|---|
//! | [`protocol`] | the JSON client commands and the chat server's events | 5.1, 6.1 |
//! | [`codec`] | the binary format: one type byte, then the payload | 5.2 |
//! | [`rooms`] | the room manager: members' outboxes, serialise once, presence, evict slow members | 4.2, 6.1 |
//! | [`engine`] | the chat server's rooms, on one server or in a cluster: join, leave, say, members | 6.1, 9 |
//! | [`cluster`] | one chat across several servers: Redis numbers, stores and publishes, each node delivers | 9 |
//! | [`outbox`] | a client's outgoing queue, bounded in bytes not yet written | 4.2, 6.1 |
//! | [`rate`] | a per-connection rate limit (token bucket) | 6.1 |
//! | [`server`] | the flags every server shares, start-up to exit code ([`server::run`]), accept loop with a connection cap, graceful shutdown, how a connection ends | 2.2 onward |
//! | [`tls`] | `--tls-cert`/`--tls-key`: serving `wss://` with rustls | 10.6 |
//! | [`admin`] | `--admin-addr`: `/healthz`, `/readyz` and Prometheus's `/metrics` on a second port, and the metrics counted where their events happen | 10.7 |
//! | [`admission`] | who may connect: allowed origins (403), connections per IP address (429) | 10 |
//! | [`proxy`] | behind a reverse proxy: `--trust-proxy CIDR`, the client named in `X-Forwarded-For` or `Forwarded` (400 when malformed) | 10.6 |
//! | [`limits`] | the open-file limit a server with many connections raises at start, and warns about | 11 |
//! | [`heartbeat`] | when to ping a client, and when its silence means it is gone | 2.2, 4.1, 6.1 |
//! | [`close`] | the close handshake, with a deadline on every step | all |
//! | [`error`] | typed errors, and the one place that classifies a connection's errors: benign disconnect or not, which close code | all |
//! | [`client`] | checking `ws://` and `wss://` URLs, connecting with a deadline, the options every client shares (`--ca-cert`), stdin without blocking the runtime, reconnect backoff | 2.1, 3, 6.1, 10 |
//! | [`resume`] | a chat client's rooms across connections: rejoin with `since`, each message shown once, refused rejoins decided by their code, asking again later | 6.1, 9 |
//! | [`failover`] | several servers used in turn: the first connection, reconnecting with backoff, which closes are a reason to come back | 6.1, 9 |
//! | [`terminal`] | a chat client's words with its user: typed lines into commands, events into lines | 6.1 |
//! | [`output`] | logging with `tracing` to stderr, and stdout lines that cannot panic or stall a server | all |
//! | [`args`] | value parsers for the examples' `clap` arguments: milliseconds, counts of at least 1 | all |
//!
//! ## Tokio patterns shown here
//! - **Detect, tell, wait** shutdown: [`server::shutdown_on_signal`], [`server::serve`].
//! - **Connection cap** with a semaphore permit taken before `accept()`: [`server::serve`].
//! - **Deadlines on everything a peer controls**: handshake, close handshake,
//!   goodbye writes, a client's silence ([`server::HANDSHAKE_TIMEOUT`],
//!   [`close::CLOSE_TIMEOUT`], [`heartbeat`]).
//! - **Output that cannot hurt the server**: log lines queued for a thread of
//!   their own, stdout writes that return their error ([`output`]).
//!
//! The library never prints: it emits `tracing` events (each connection's
//! inside a span that names its peer), and the examples install the
//! subscriber with [`output::init_logging`]. The one exception is the
//! contract every server keeps: [`server::bind`] writes `listening on
//! ws://IP:PORT` to stdout (and chat_server's admin port, once bound,
//! `admin on http://IP:PORT` after it, [`admin::Admin::serve`]).

pub mod admin;
pub mod admission;
pub mod args;
pub mod client;
pub mod close;
pub mod cluster;
pub mod codec;
pub mod engine;
pub mod error;
pub mod failover;
pub mod heartbeat;
pub mod limits;
pub mod outbox;
pub mod output;
pub mod protocol;
pub mod proxy;
pub mod rate;
pub mod resume;
pub mod rooms;
pub mod server;
pub mod terminal;
pub mod tls;
pub mod token;

pub use error::{CodecError, Error, ProtocolError};
