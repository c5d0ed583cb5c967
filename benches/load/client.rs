//! The load generator's building blocks: connecting many clients (over
//! TLS too, with certificates made for the run), the timestamped content
//! publishers send, parsing what arrives without a JSON parser, and the few
//! synchronisation pieces the scenarios share.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use futures_util::{Stream, StreamExt};
use tokio::net::{TcpSocket, TcpStream};
use tokio::sync::Notify;
use tokio::time::timeout;
use tokio_rustls::TlsConnector;
use tokio_rustls::rustls::pki_types::ServerName;
use tokio_rustls::rustls::{ClientConfig, RootCertStore, crypto};
use tokio_tungstenite::WebSocketStream;
use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;
use tokio_tungstenite::tungstenite::{self, Message};
use tokio_util::either::Either;
use tokio_util::sync::CancellationToken;

/// What a generator client runs on: plain TCP (`ws://`), or TLS over TCP
/// (`wss://`, idle-tls).
///
/// The TLS side is boxed, as in the servers' `tls::Stream` (src/tls.rs):
/// an `Either` is as large as its larger side, and rustls's client stream
/// is 1,104 bytes, which every plain client would otherwise carry (11 MB
/// more in the generator for 10,000 idle clients, on the machine the server
/// shares). Boxed, a plain client's WebSocket is 320 bytes, as it was on a
/// bare `TcpStream`. (tokio-tungstenite's own `MaybeTlsStream` does not
/// box.)
pub type ClientStream = Either<TcpStream, Box<tokio_rustls::client::TlsStream<TcpStream>>>;

/// A client connection of the generator.
pub type Ws = WebSocketStream<ClientStream>;

/// TCP connect plus WebSocket handshake (and TLS handshake, over wss://), per
/// client.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

// ---------------------------------------------------------------------------
// Time

static EPOCH: OnceLock<Instant> = OnceLock::new();

/// Nanoseconds since the generator's shared epoch. Publishers put this in
/// what they send, receivers subtract it from their own reading: one clock,
/// one process, so no clock skew.
pub fn now_ns() -> u64 {
    EPOCH.get_or_init(Instant::now).elapsed().as_nanos() as u64
}

/// Microseconds since `sent_ns`, saturating (a latency of 71 minutes is as
/// wrong as one of 72).
pub fn micros_since(sent_ns: u64) -> u32 {
    u32::try_from(now_ns().saturating_sub(sent_ns) / 1_000).unwrap_or(u32::MAX)
}

// ---------------------------------------------------------------------------
// Connecting

/// Where a server's WebSocket is: its address, and the path to ask for in
/// the handshake (`/`; `/ws` for a web application that also serves pages,
/// as axum_chat does).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Endpoint {
    pub addr: SocketAddr,
    pub path: &'static str,
}

/// Connects one client to `ws://addr/path`, or to `wss://addr/path` through
/// `tls`.
///
/// `small_buffers` makes a client that stops reading back up into the server
/// within seconds: a 4 KiB receive buffer and a 536-byte maximum segment
/// size, both announced in the TCP handshake, so set before connecting. (On
/// loopback the server's kernel would otherwise buffer megabytes for it; see
/// `connect_with_small_buffers` in `tests/common/mod.rs`.)
pub async fn connect(
    endpoint: Endpoint,
    small_buffers: bool,
    tls: Option<&TlsConnector>,
) -> Result<Ws, String> {
    let Endpoint { addr, path } = endpoint;
    let attempt = async {
        let socket = TcpSocket::new_v4().map_err(|e| format!("socket: {e}"))?;
        if small_buffers {
            socket.set_recv_buffer_size(4096).map_err(|e| format!("SO_RCVBUF: {e}"))?;
            socket2::SockRef::from(&socket)
                .set_tcp_mss(536)
                .map_err(|e| format!("TCP_MAXSEG: {e}"))?;
        }
        let stream = socket.connect(addr).await.map_err(|e| format!("connect {addr}: {e}"))?;
        // Small messages must not wait for a delayed ACK (Nagle).
        stream.set_nodelay(true).map_err(|e| format!("TCP_NODELAY: {e}"))?;
        // tungstenite allocates its read buffer up front, 128 KiB by
        // default: 1.3 GB for 10,000 clients. 8 KiB is plenty for frames of
        // a few hundred bytes.
        let config = WebSocketConfig::default().read_buffer_size(8 * 1024);
        let (url, stream) = match tls {
            None => (format!("ws://{addr}{path}"), Either::Left(stream)),
            Some(tls) => {
                // The name rustls checks the certificate against: an IP
                // address, as the URL has one (see `Certificates`).
                let name = ServerName::IpAddress(addr.ip().into());
                let stream = tls
                    .connect(name, stream)
                    .await
                    .map_err(|e| format!("TLS handshake with {addr}: {e}"))?;
                (format!("wss://{addr}{path}"), Either::Right(Box::new(stream)))
            }
        };
        tokio_tungstenite::client_async_with_config(url, stream, Some(config))
            .await
            .map(|(ws, _response)| ws)
            .map_err(|e| format!("handshake with {addr}: {e}"))
    };
    timeout(CONNECT_TIMEOUT, attempt)
        .await
        .unwrap_or_else(|_| Err(format!("connecting to {addr} took over {CONNECT_TIMEOUT:?}")))
}

/// Connects `n` clients, at most `in_flight` handshakes at a time: a burst of
/// thousands of SYNs overflows the listen backlog, and the kernel then waits
/// a second before retrying each one. Client `i` connects to
/// `endpoints[i % endpoints.len()]` (a cluster's nodes take turns), over TLS if
/// `tls` is given. Returned in order, so index `i` is client `i`.
pub async fn connect_many(
    endpoints: &[Endpoint],
    n: usize,
    in_flight: usize,
    small_buffers: bool,
    tls: Option<&TlsConnector>,
) -> Result<Vec<Ws>, String> {
    if endpoints.is_empty() {
        return Err("no address to connect to".into());
    }
    let results: Vec<Result<Ws, String>> = futures_util::stream::iter(0..n)
        .map(|i| connect(endpoints[i % endpoints.len()], small_buffers, tls))
        .buffered(in_flight.max(1))
        .collect()
        .await;
    let failed = results.iter().filter(|r| r.is_err()).count();
    if let Some(Err(first)) = results.iter().find(|r| r.is_err()) {
        return Err(format!("{failed} of {n} connections failed; the first: {first}"));
    }
    Ok(results.into_iter().flatten().collect())
}

// ---------------------------------------------------------------------------
// TLS

/// A CA made for this run and a certificate it signed for 127.0.0.1 and
/// localhost, as the TLS tests make theirs (`Certificates` in
/// `tests/common/mod.rs`): the server reads the certificate and its key from
/// PEM files (`--tls-cert`, `--tls-key`), and the generator trusts that CA
/// and nothing else, so a client connects only if the server really serves
/// this certificate. The files are in a directory of their own under the
/// system's temporary directory, removed when this is dropped.
pub struct Certificates {
    dir: PathBuf,
    /// The server's certificate, PEM.
    pub cert: PathBuf,
    /// Its private key, PEM.
    pub key: PathBuf,
    connector: TlsConnector,
}

impl Certificates {
    pub fn new() -> Result<Certificates, String> {
        use rcgen::{BasicConstraints, CertificateParams, CertifiedIssuer, DnType, IsCa, KeyPair};
        let failed = |what: &str, e: rcgen::Error| format!("cannot make {what}: {e}");
        let mut ca_params =
            CertificateParams::new(Vec::<String>::new()).map_err(|e| failed("a CA", e))?;
        ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        ca_params.distinguished_name.push(DnType::CommonName, "websocket-tutorial load CA");
        let ca_key = KeyPair::generate().map_err(|e| failed("a CA key", e))?;
        let ca = CertifiedIssuer::self_signed(ca_params, ca_key).map_err(|e| failed("a CA", e))?;
        // rcgen makes "127.0.0.1" an IP address entry, which is what a
        // client connecting to wss://127.0.0.1:PORT checks.
        let names = vec!["127.0.0.1".to_string(), "localhost".to_string()];
        let key = KeyPair::generate().map_err(|e| failed("a server key", e))?;
        let params = CertificateParams::new(names).map_err(|e| failed("a certificate", e))?;
        let cert = params.signed_by(&key, &ca).map_err(|e| failed("a certificate", e))?;

        // The CA goes to the client in memory; only the server needs files.
        let mut roots = RootCertStore::empty();
        roots.add(ca.der().clone()).map_err(|e| format!("cannot trust the run's CA: {e}"))?;
        // ring, chosen explicitly, as the servers do (src/tls.rs).
        let config =
            ClientConfig::builder_with_provider(Arc::new(crypto::ring::default_provider()))
                .with_safe_default_protocol_versions()
                .map_err(|e| format!("TLS versions: {e}"))?
                .with_root_certificates(roots)
                .with_no_client_auth();

        static NEXT: AtomicUsize = AtomicUsize::new(0);
        let n = NEXT.fetch_add(1, Ordering::Relaxed);
        let dir = std::env::temp_dir().join(format!("load-bench-tls-{}-{n}", std::process::id()));
        let certificates = Certificates {
            cert: dir.join("cert.pem"),
            key: dir.join("key.pem"),
            dir,
            connector: TlsConnector::from(Arc::new(config)),
        };
        // From here on, a failure drops `certificates`, which removes the
        // directory again.
        let write = |path: &PathBuf, pem: String| {
            std::fs::write(path, pem).map_err(|e| format!("write {}: {e}", path.display()))
        };
        std::fs::create_dir_all(&certificates.dir)
            .map_err(|e| format!("create {}: {e}", certificates.dir.display()))?;
        write(&certificates.cert, cert.pem())?;
        write(&certificates.key, key.serialize_pem())?;
        Ok(certificates)
    }

    /// A TLS connector that trusts only this run's CA.
    pub fn connector(&self) -> &TlsConnector {
        &self.connector
    }
}

impl Drop for Certificates {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

// ---------------------------------------------------------------------------
// What publishers send

/// Bytes of content in every published message.
pub const CONTENT_BYTES: usize = 64;

/// A timestamped message: `t<ns> p<publisher> n<number> ` in fixed widths,
/// padded with dots to [`CONTENT_BYTES`]. Fixed widths make parsing a few
/// byte comparisons, so that receivers (which share the cores with the
/// server) stay cheap.
pub fn stamp(publisher: usize, n: u64) -> String {
    let mut text = format!("t{:020} p{publisher:05} n{n:09} ", now_ns());
    text.extend(std::iter::repeat_n('.', CONTENT_BYTES - text.len()));
    text
}

/// What [`stamp`] put in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Stamp {
    pub sent_ns: u64,
    pub publisher: usize,
    pub n: u64,
}

/// Reads a [`stamp`] back from the start of `text` (anything may follow).
pub fn parse_stamp(text: &str) -> Option<Stamp> {
    let b = text.as_bytes();
    if b.len() < 40 || b[0] != b't' || &b[21..23] != b" p" || &b[28..30] != b" n" {
        return None;
    }
    Some(Stamp {
        sent_ns: digits(&b[1..21])?,
        publisher: usize::try_from(digits(&b[23..28])?).ok()?,
        n: digits(&b[30..39])?,
    })
}

fn digits(bytes: &[u8]) -> Option<u64> {
    bytes.iter().try_fold(0u64, |acc, &d| {
        if !d.is_ascii_digit() {
            return None;
        }
        acc.checked_mul(10)?.checked_add(u64::from(d - b'0'))
    })
}

// ---------------------------------------------------------------------------
// Reading the chat protocol without a JSON parser

/// The string value of key `name` in a flat JSON object, such as the chat
/// server's events. The receivers handle 200,000 events a second between
/// them, on cores they share with the server, so this scans instead of
/// parsing (serde_json would allocate the whole event each time); it is
/// enough for the values we read (type, username, content), which contain no
/// escapes. Whitespace around the colon is allowed, as other servers'
/// serialisers may put it there.
pub fn json_str<'a>(json: &'a str, name: &str) -> Option<&'a str> {
    let value = json_value(json, name)?.strip_prefix('"')?;
    value.split_once('"').map(|(value, _)| value)
}

/// The unsigned integer value of key `name` in a flat JSON object.
pub fn json_u64(json: &str, name: &str) -> Option<u64> {
    let value = json_value(json, name)?;
    let end = value.find(|c: char| !c.is_ascii_digit()).unwrap_or(value.len());
    value[..end].parse().ok()
}

/// The text after `"name":`, or `None`. A string value can never be followed
/// by a colon, so a match followed by one is the key.
fn json_value<'a>(json: &'a str, name: &str) -> Option<&'a str> {
    let mut from = 0;
    while let Some(found) = json[from..].find(name) {
        let start = from + found;
        let end = start + name.len();
        let quoted = json[..start].ends_with('"') && json[end..].starts_with('"');
        if quoted && let Some(rest) = json[end + 1..].trim_start().strip_prefix(':') {
            return Some(rest.trim_start());
        }
        from = end;
    }
    None
}

// ---------------------------------------------------------------------------
// What each client reports

/// What one client saw, returned by its task when its connection ends.
#[derive(Debug, Default)]
pub struct ClientStats {
    /// Send-to-receipt latency of every timed message, in microseconds.
    pub latencies_us: Vec<u32>,
    /// Timed messages received (echoes, broadcasts, chat messages).
    pub messages: u64,
    /// Timed messages this client sent (echo, chat publishers).
    pub sent: u64,
    /// Joined and Left events received.
    pub presence: u64,
    /// The sum of `[server] you missed N messages` notices (broadcast).
    pub missed: u64,
    /// Messages that arrived out of order: a publisher's number or the
    /// room's `seq` not above the previous one.
    pub out_of_order: u64,
    /// The highest room `seq` seen (chat).
    pub max_seq: u64,
    /// When this client received its own Joined (ns since the epoch).
    pub joined_at_ns: Option<u64>,
    /// Microseconds from sending its Join to receiving its own Joined.
    pub join_us: Option<u32>,
    /// The close code the server sent, if it sent a close frame.
    pub close_code: Option<u16>,
    /// How the connection failed, if it ended without a close frame.
    pub dropped: Option<String>,
    /// Frames that should not have come (Error events, unknown text); the
    /// first few are kept.
    pub unexpected: Vec<String>,
    pub unexpected_count: u64,
    /// A client that stops reading on purpose (chat-stalled).
    pub stalled: bool,
    /// A stalled client's state after the run.
    pub probe: Option<Probe>,
}

impl ClientStats {
    /// Evicted: closed by the server with 1008 (policy violation), which
    /// our servers and the compare servers send to a client that is too slow.
    pub fn evicted(&self) -> bool {
        self.close_code == Some(1008)
    }

    pub fn unexpected(&mut self, text: &str) {
        self.unexpected_count += 1;
        if self.unexpected.len() < 3 {
            let mut cut = text.len().min(160);
            while !text.is_char_boundary(cut) {
                cut -= 1;
            }
            self.unexpected.push(text[..cut].to_string());
        }
    }

    /// Records a frame that ends or may end the connection. Returns true
    /// when the connection is over. After the server's close frame we keep
    /// reading: tungstenite sends our answer during that read, and the
    /// stream ends once the server closes the TCP connection.
    pub fn on_end(&mut self, frame: Option<Result<Message, tungstenite::Error>>) -> bool {
        match frame {
            None => true,
            Some(Err(e)) => {
                if self.close_code.is_none() {
                    self.dropped = Some(e.to_string());
                }
                true
            }
            Some(Ok(Message::Close(frame))) => {
                self.close_code = Some(frame.map_or(1005, |f| u16::from(f.code)));
                false
            }
            Some(Ok(_)) => false,
        }
    }
}

/// Reads until the connection ends (the server closes it at the end of a
/// scenario), recording how. Anything still arriving is ignored.
pub async fn read_until_closed<S>(stream: &mut S, stats: &mut ClientStats)
where
    S: Stream<Item = Result<Message, tungstenite::Error>> + Unpin,
{
    loop {
        let frame = stream.next().await;
        if stats.on_end(frame) {
            return;
        }
    }
}

/// Where a client that stopped reading stands at the end (chat-stalled).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Probe {
    /// It answered our ping: still connected, never evicted.
    Connected,
    /// The server closed it with this code (1008: evicted as too slow).
    Closed(u16),
    /// The connection ended without a close frame.
    Dropped(String),
    /// Neither within the deadline.
    NoAnswer,
}

/// Finds out whether a client that stopped reading is still connected: sends
/// a ping and reads (everything that piled up, first) until the pong or the
/// end of the connection.
pub async fn probe(ws: &mut Ws, deadline: Duration) -> Probe {
    use futures_util::SinkExt;
    if let Err(e) = ws.send(Message::Ping("probe".into())).await {
        return Probe::Dropped(e.to_string());
    }
    let answer = async {
        loop {
            match ws.next().await {
                Some(Ok(Message::Pong(payload))) if payload.as_ref() == b"probe" => {
                    return Probe::Connected;
                }
                Some(Ok(Message::Close(frame))) => {
                    return Probe::Closed(frame.map_or(1005, |f| u16::from(f.code)));
                }
                Some(Ok(_)) => {}
                Some(Err(e)) => return Probe::Dropped(e.to_string()),
                None => return Probe::Dropped("ended without a close frame".into()),
            }
        }
    };
    timeout(deadline, answer).await.unwrap_or(Probe::NoAnswer)
}

// ---------------------------------------------------------------------------
// Synchronisation

/// A count of outstanding events, and one task (the scenario) waiting for
/// it to reach zero. No polling and no sleeping: the event that brings it
/// to zero wakes the waiter.
#[derive(Debug)]
pub struct Countdown {
    left: AtomicUsize,
    zero: Notify,
}

impl Countdown {
    pub fn new(n: usize) -> Arc<Countdown> {
        Arc::new(Countdown { left: AtomicUsize::new(n), zero: Notify::new() })
    }

    /// One event happened (never below zero).
    pub fn tick(&self) {
        let previous =
            self.left.fetch_update(Ordering::AcqRel, Ordering::Acquire, |l| l.checked_sub(1));
        if previous == Ok(1) {
            // notify_one keeps a permit if the waiter is not waiting yet.
            self.zero.notify_one();
        }
    }

    pub fn left(&self) -> usize {
        self.left.load(Ordering::Acquire)
    }

    /// Waits for zero until `deadline`, and returns how many events were
    /// still outstanding then (0: all happened). Read it now: clients that
    /// end later still count, so [`Countdown::left`] soon says 0 anyway.
    pub async fn wait(&self, deadline: tokio::time::Instant) -> usize {
        while self.left() > 0 {
            if tokio::time::timeout_at(deadline, self.zero.notified()).await.is_err() {
                break;
            }
        }
        self.left()
    }
}

/// One client's single contribution to a [`Countdown`]: counted when fired,
/// or when dropped, so that a client whose connection ended early does not
/// keep the scenario waiting for its deadline.
pub struct CountOnce(Option<Arc<Countdown>>);

impl CountOnce {
    pub fn new(countdown: &Arc<Countdown>) -> CountOnce {
        CountOnce(Some(countdown.clone()))
    }

    pub fn fire(&mut self) {
        if let Some(countdown) = self.0.take() {
            countdown.tick();
        }
    }

    pub fn is_pending(&self) -> bool {
        self.0.is_some()
    }
}

impl Drop for CountOnce {
    fn drop(&mut self) {
        self.fire();
    }
}

/// A starting gate: closed until the scenario opens it, then open for good.
/// Every client waits at it, so that "all at once" means all at once.
#[derive(Debug, Clone, Default)]
pub struct Gate(CancellationToken);

impl Gate {
    pub fn open(&self) {
        self.0.cancel();
    }

    pub async fn opened(&self) {
        self.0.cancelled().await;
    }
}
