//! What the client examples share: connecting with a deadline and without
//! Nagle's algorithm, the options every client takes besides its URL
//! ([`ConnectArgs`], made into a [`Dialer`]; their TLS and token are chapter
//! 10's), reading stdin without blocking the runtime, and the reconnect
//! backoff of chapter 3.2.

use std::io::BufRead;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use tokio::net::TcpStream;
use tokio::sync::mpsc;
use tokio::time::timeout;
use tokio_rustls::rustls::pki_types::CertificateDer;
use tokio_rustls::rustls::pki_types::pem::PemObject;
use tokio_rustls::rustls::{ClientConfig, RootCertStore, crypto};
use tokio_tungstenite::tungstenite;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::handshake::client::Response;
use tokio_tungstenite::tungstenite::http::{HeaderValue, Uri, header};
use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;
use tokio_tungstenite::{
    Connector, MaybeTlsStream, WebSocketStream, connect_async_tls_with_config,
    connect_async_with_config,
};

use crate::args;
use crate::error::{AddressError, Error};

/// The URL clients connect to when none is given.
pub const DEFAULT_URL: &str = "ws://127.0.0.1:9001";

/// A host that drops our SYN packets would otherwise keep `connect` waiting
/// for the operating system's own timeout (minutes).
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

/// A client-side WebSocket.
pub type WsClient = WebSocketStream<MaybeTlsStream<TcpStream>>;

// ANCHOR: parse_url
/// Checks a URL a client was given, before any connection is opened, and
/// returns it ready for the handshake: `ws://HOST[:PORT][/PATH][?QUERY]`,
/// with a `/` added before a query that follows the port directly
/// (`ws://host:9001?x=1` would otherwise ask the server for `GET ?x=1`).
///
/// `wss://` is the same over TLS (chapter 10.6). Refused with a hint:
/// another scheme (`http://`) and no scheme at all (`127.0.0.1:9001`).
pub fn parse_url(text: &str) -> Result<String, AddressError> {
    let default_hint = || AddressError::NotWsUrl { example: DEFAULT_URL.into() };
    let uri: Uri = text.parse().map_err(|_| default_hint())?;
    let host_and_port = uri.authority().map(|a| a.as_str()).filter(|a| !a.is_empty());
    match (uri.scheme_str(), host_and_port) {
        (Some("ws" | "wss"), Some(_)) => match uri.path_and_query() {
            // The authority holds no `?`, so the first one starts the query.
            Some(query) if query.as_str().starts_with('?') => Ok(text.replacen('?', "/?", 1)),
            _ => Ok(text.into()),
        },
        // The URL the user most likely meant: the same place, over ws://
        // (`alice` alone is more likely a misplaced name than a host).
        (scheme, Some(host_and_port)) if scheme.is_some() || uri.port().is_some() => {
            let rest = uri.path_and_query().map_or("", |p| p.as_str());
            Err(AddressError::NotWsUrl { example: format!("ws://{host_and_port}{rest}") })
        }
        _ => Err(default_hint()),
    }
}
// ANCHOR_END: parse_url

// ANCHOR: connect
/// Connects to `url` (checked by [`parse_url`] first, so a URL that is not
/// `ws://` opens no connection) and performs the WebSocket handshake, within
/// [`CONNECT_TIMEOUT`]. `TCP_NODELAY` is set (the `true` below): a short
/// interactive message must not wait for a delayed ACK.
pub async fn connect(url: &str, config: WebSocketConfig) -> Result<WsClient, Error> {
    let request = parse_url(url)?.into_client_request()?;
    within_deadline(connect_async_with_config(request, Some(config), true)).await
}

/// The handshake `connecting`, given [`CONNECT_TIMEOUT`] to finish.
async fn within_deadline(
    connecting: impl Future<Output = Result<(WsClient, Response), tungstenite::Error>>,
) -> Result<WsClient, Error> {
    match timeout(CONNECT_TIMEOUT, connecting).await {
        Ok(Ok((ws, _response))) => Ok(ws),
        Ok(Err(e)) => Err(Error::WebSocket(e)),
        Err(_) => Err(Error::Timeout("connecting")),
    }
}
// ANCHOR_END: connect

// ANCHOR: connect_with
/// [`connect`], with what chapter 10 adds: `Authorization: Bearer TOKEN` on
/// the handshake when a `token` is given (a server's `--auth-secret-file`,
/// 10.5; one that refuses it answers 401: `Error::WebSocket(Http(_))`), and,
/// for a `wss://` URL, trusting what `tls` trusts ([`trust`], from
/// `--ca-cert`, 10.6) instead of the system's certificate authorities alone.
pub async fn connect_with(
    url: &str,
    config: WebSocketConfig,
    token: Option<&str>,
    tls: Option<&Connector>,
) -> Result<WsClient, Error> {
    let mut request = parse_url(url)?.into_client_request()?;
    if let Some(token) = token {
        // A token that is no header value (`token::parse_token` refuses
        // those on the command line) is an `HttpFormat` error.
        let bearer = HeaderValue::from_str(&format!("Bearer {token}"))
            .map_err(|e| tungstenite::Error::HttpFormat(e.into()))?;
        request.headers_mut().insert(header::AUTHORIZATION, bearer);
    }
    within_deadline(connect_async_tls_with_config(request, Some(config), true, tls.cloned())).await
}
// ANCHOR_END: connect_with

/// [`connect_with`] with a `token` and the system's authorities.
pub async fn connect_with_token(
    url: &str,
    config: WebSocketConfig,
    token: Option<&str>,
) -> Result<WsClient, Error> {
    connect_with(url, config, token, None).await
}

/// A failed connection's error, and what to do about it when that is
/// clear (for chat_client, whose flags it names): a 401 means the server
/// takes tokens (`--token`); an answer that is not HTTP at all, to a `ws://`
/// URL, most likely means a server that speaks TLS (`wss://`), whose first
/// bytes are a TLS alert.
pub fn with_hint(url: &str, e: Error) -> String {
    use tungstenite::error::ProtocolError::HttparseError;
    let hint = match &e {
        Error::WebSocket(tungstenite::Error::Http(answer)) if answer.status() == 401 => {
            "; the server asks for a token: give one with --token (make_token prints one)".into()
        }
        Error::WebSocket(tungstenite::Error::Protocol(HttparseError(_))) => {
            match url.strip_prefix("ws://") {
                Some(rest) => {
                    format!("; not an HTTP answer: if the server serves TLS, use wss://{rest}")
                }
                None => String::new(),
            }
        }
        _ => String::new(),
    };
    format!("{e}{hint}")
}

// ANCHOR: connect_args
/// The options every client takes besides its URL, flattened into its
/// arguments (`#[command(flatten)] options: ConnectArgs`): `--ca-cert PEM`,
/// a certificate authority to trust for `wss://` besides the system's
/// (chapter 10.6).
#[derive(clap::Args, Debug, Clone, Default)]
pub struct ConnectArgs {
    /// For wss://: trust this CA certificate (PEM) too, besides the system's.
    #[arg(long, value_name = "PEM")]
    pub ca_cert: Option<PathBuf>,
}

impl ConnectArgs {
    /// A [`Dialer`] that connects with `config` and these options. The file
    /// `--ca-cert` names is read now, once, for every connection the dialer
    /// opens: one that cannot be read or holds no certificate is one line
    /// naming it.
    pub fn dialer(&self, config: WebSocketConfig) -> Result<Dialer, String> {
        let tls = self.ca_cert.as_deref().map(trust).transpose()?;
        Ok(Dialer { config, tls, token: None })
    }
}

/// How a client connects, the same way every time (its reconnects too):
/// its WebSocket settings, what it trusts for `wss://` (without `--ca-cert`,
/// the system's authorities: tokio-tungstenite's default), and a token to
/// send, if any.
#[derive(Clone)]
pub struct Dialer {
    config: WebSocketConfig,
    tls: Option<Connector>,
    token: Option<String>,
}

impl Dialer {
    /// The same dialer, sending `token` with every handshake (chat_client's
    /// `--token`).
    pub fn with_token(self, token: Option<String>) -> Dialer {
        Dialer { token, ..self }
    }

    /// Connects to `url`: [`connect_with`] with this dialer's settings.
    pub async fn connect(&self, url: &str) -> Result<WsClient, Error> {
        connect_with(url, self.config, self.token.as_deref(), self.tls.as_ref()).await
    }
}
// ANCHOR_END: connect_args

/// A TLS connector trusting the system's certificate authorities and the
/// ones in the PEM file `ca_cert`.
pub fn trust(ca_cert: &Path) -> Result<Connector, String> {
    let shown = ca_cert.display();
    let pem = std::fs::read(ca_cert)
        .map_err(|e| format!("cannot read the CA certificate file {shown}: {e}"))?;
    let cas = CertificateDer::pem_slice_iter(&pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| format!("the CA certificate file {shown}: {e}"))?;
    if cas.is_empty() {
        return Err(format!("the CA certificate file {shown} holds no PEM certificate"));
    }
    let mut roots = RootCertStore::empty();
    // The system's too: --ca-cert adds an authority, it replaces none. One
    // it cannot read is skipped, as tokio-tungstenite's default does.
    roots.add_parsable_certificates(rustls_native_certs::load_native_certs().certs);
    for ca in cas {
        roots.add(ca).map_err(|e| format!("the CA certificate file {shown}: {e}"))?;
    }
    let config = ClientConfig::builder_with_provider(Arc::new(crypto::ring::default_provider()))
        .with_safe_default_protocol_versions()
        .map_err(|e| e.to_string())?
        .with_root_certificates(roots)
        .with_no_client_auth();
    Ok(Connector::Rustls(Arc::new(config)))
}

// ANCHOR: stdin_lines
/// Reads stdin line by line on a plain thread and hands the lines over a
/// bounded channel; the channel closes at end of input.
///
/// Why a thread and not `tokio::io::stdin()`: tokio reads stdin on a blocking
/// thread that the runtime waits for when it shuts down, so a program that
/// wants to exit while a read is pending would hang until the user presses
/// Enter. A plain thread does not keep the process alive.
///
/// A line that is not UTF-8 is skipped with a warning that gives its
/// number, and reading goes on. (`stdin().lines()` would end the input
/// there, without a word.) Lines are handed over without their `\n` or
/// `\r\n`.
pub fn stdin_lines(capacity: usize) -> mpsc::Receiver<String> {
    let (tx, rx) = mpsc::channel(capacity);
    std::thread::spawn(move || {
        let mut stdin = std::io::stdin().lock();
        let mut bytes = Vec::new();
        for number in 1u64.. {
            bytes.clear();
            match stdin.read_until(b'\n', &mut bytes) {
                Ok(0) => break, // end of input
                Ok(_) => {}
                Err(e) => {
                    tracing::warn!("cannot read stdin: {e}");
                    break;
                }
            }
            let line = bytes.strip_suffix(b"\n").unwrap_or(&bytes);
            let line = line.strip_suffix(b"\r").unwrap_or(line);
            let Ok(line) = String::from_utf8(line.to_vec()) else {
                tracing::warn!("stdin line {number} is not UTF-8; skipped");
                continue;
            };
            // blocking_send waits while the channel is full: backpressure
            // all the way to the terminal or pipe.
            if tx.blocking_send(line).is_err() {
                break; // the program no longer wants input
            }
        }
    });
    rx
}
// ANCHOR_END: stdin_lines

// ANCHOR: backoff
/// Exponential backoff with a cap and random jitter.
///
/// The delay before retry `n` (1-based) is `base * 2^(n-1)`, capped at `cap`,
/// then drawn at random from its upper half. The cap keeps a client that has
/// been offline for an hour from waiting another hour; the jitter keeps a
/// thousand clients that lost the same server from all reconnecting in the
/// same millisecond when it comes back.
#[derive(Debug, Clone, Copy)]
pub struct Backoff {
    pub base: Duration,
    pub cap: Duration,
    /// Consecutive failed attempts before giving up (0: never give up).
    pub max_attempts: u32,
}

impl Backoff {
    /// The delay to wait after failed attempt `attempt` (1-based).
    pub fn delay(&self, attempt: u32) -> Duration {
        let exponent = attempt.saturating_sub(1).min(31);
        let ceiling = self.base.saturating_mul(1 << exponent).min(self.cap);
        let half = ceiling / 2;
        half + ceiling.saturating_sub(half).mul_f64(rand::random::<f64>())
    }

    /// Whether another attempt is allowed after `failed` consecutive failures.
    pub fn should_retry(&self, failed: u32) -> bool {
        self.max_attempts == 0 || failed < self.max_attempts
    }
}
// ANCHOR_END: backoff

/// The backoff's settings, as the reconnecting clients take them on their
/// command line (`#[command(flatten)] backoff: BackoffArgs`): `--base-ms`
/// (500), `--cap-ms` (30000) and `--max-attempts` (10).
#[derive(Debug, Clone, Copy, clap::Args)]
pub struct BackoffArgs {
    /// The delay before the first retry, in milliseconds; it doubles with
    /// each failure.
    #[arg(long = "base-ms", value_name = "MS", default_value = "500")]
    #[arg(value_parser = args::millis)]
    pub base: Duration,
    /// The longest delay between two attempts, in milliseconds.
    #[arg(long = "cap-ms", value_name = "MS", default_value = "30000")]
    #[arg(value_parser = args::millis)]
    pub cap: Duration,
    /// Failed attempts in a row before giving up; 0 retries forever.
    #[arg(long, value_name = "N", default_value_t = 10)]
    pub max_attempts: u32,
}

impl From<BackoffArgs> for Backoff {
    fn from(BackoffArgs { base, cap, max_attempts }: BackoffArgs) -> Backoff {
        Backoff { base, cap, max_attempts }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ws_urls_get_a_path_and_other_urls_a_hint() {
        let ok = |url: &str| parse_url(url).unwrap_or_else(|e| panic!("{url}: {e}"));
        assert_eq!(ok("ws://127.0.0.1:9001"), "ws://127.0.0.1:9001");
        assert_eq!(ok("ws://127.0.0.1:9001?x=1"), "ws://127.0.0.1:9001/?x=1");
        assert_eq!(ok("ws://localhost:9001/chat?x=1&y=2"), "ws://localhost:9001/chat?x=1&y=2");
        assert_eq!(ok("ws://[::1]:9001/"), "ws://[::1]:9001/");

        let hint = |example: &str| Err(AddressError::NotWsUrl { example: example.into() });
        assert_eq!(parse_url("http://127.0.0.1:9001/x"), hint("ws://127.0.0.1:9001/x"));
        assert_eq!(parse_url("127.0.0.1:9001"), hint("ws://127.0.0.1:9001"));
        assert_eq!(parse_url("alice"), hint(DEFAULT_URL));
        assert_eq!(parse_url("ws://"), hint(DEFAULT_URL));
        assert_eq!(ok("wss://127.0.0.1:9443?x=1"), "wss://127.0.0.1:9443/?x=1");
        let message = parse_url("http://127.0.0.1:9001").unwrap_err().to_string();
        assert!(message.contains("use ws://HOST:PORT"), "{message}");
    }

    #[tokio::test]
    async fn a_401_and_an_answer_that_is_not_http_get_a_hint() {
        let answer = |status: u16| {
            let response = tungstenite::http::Response::builder().status(status).body(None);
            Error::WebSocket(tungstenite::Error::Http(Box::new(response.expect("a response"))))
        };
        let url = "ws://127.0.0.1:9443";
        let unauthorized = with_hint(url, answer(401));
        assert!(unauthorized.starts_with("HTTP error: 401 Unauthorized; "), "{unauthorized}");
        assert!(unauthorized.contains("--token"), "{unauthorized}");
        assert_eq!(with_hint(url, answer(403)), "HTTP error: 403 Forbidden", "no hint");

        // A TLS server answers an HTTP request with a TLS alert.
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let url = format!("ws://{}", listener.local_addr().expect("address"));
        tokio::spawn(async move {
            use tokio::io::{AsyncReadExt, AsyncWriteExt};
            let (mut tls, _) = listener.accept().await.expect("accept");
            let _ = tls.read(&mut [0; 1024]).await;
            let _ = tls.write_all(&[0x15, 0x03, 0x03, 0x00, 0x02, 0x02, 0x46]).await;
        });
        let e = connect(&url, WebSocketConfig::default()).await.expect_err("not HTTP");
        let tls = with_hint(&url, e);
        let wss = url.replace("ws://", "wss://");
        assert!(tls.ends_with(&format!("if the server serves TLS, use {wss}")), "{tls}");
        assert_eq!(with_hint(&url, Error::Timeout("connecting")), "timed out: connecting");
    }

    #[test]
    fn delays_double_stay_within_jitter_bounds_and_stop_at_the_cap() {
        let backoff = Backoff {
            base: Duration::from_millis(100),
            cap: Duration::from_millis(1000),
            max_attempts: 5,
        };
        for _ in 0..200 {
            let expected_ceilings = [100, 200, 400, 800, 1000, 1000, 1000];
            for (i, ceiling) in expected_ceilings.iter().enumerate() {
                let delay = backoff.delay(i as u32 + 1);
                let ceiling = Duration::from_millis(*ceiling);
                assert!(delay <= ceiling && delay >= ceiling / 2, "attempt {}: {delay:?}", i + 1);
            }
        }
        // Huge attempt numbers must not overflow.
        assert!(backoff.delay(u32::MAX) <= backoff.cap);
    }

    #[test]
    fn jitter_spreads_the_delays() {
        let backoff =
            Backoff { base: Duration::from_secs(1), cap: Duration::from_secs(1), max_attempts: 0 };
        let distinct: std::collections::HashSet<_> = (0..20).map(|_| backoff.delay(1)).collect();
        assert!(distinct.len() > 10, "jitter should vary the delay: {distinct:?}");
    }

    #[test]
    fn attempt_limit() {
        let mut backoff = Backoff { base: Duration::ZERO, cap: Duration::ZERO, max_attempts: 3 };
        assert!(backoff.should_retry(2));
        assert!(!backoff.should_retry(3));
        backoff.max_attempts = 0;
        assert!(backoff.should_retry(1_000_000));
    }
}
