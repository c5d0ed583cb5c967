//! Who may open a WebSocket: the checks every server makes on a handshake
//! request before it upgrades (chapter 10).
//!
//! - **Origins** (`--allow-origin`, repeatable): a browser names the page
//!   that opened a WebSocket in the `Origin` header, and sends that site's
//!   cookies along whatever the page. With a list, a handshake from a page
//!   not on it gets HTTP 403; one without `Origin` (not a browser, so no
//!   victim's cookies) is accepted. Without a list, every origin is accepted.
//! - **Connections per address** (`--max-per-ip`, default
//!   [`DEFAULT_MAX_PER_IP`]): a handshake beyond that many open connections
//!   from one IP address gets HTTP 429.
//! - **Behind a proxy** (`--trust-proxy CIDR`, repeatable, and
//!   `--proxy-header`): a connection from a trusted proxy is counted as
//!   the client its header names ([`proxy`](crate::proxy)), and a header
//!   from it that cannot be read gets HTTP 400.
//! - **Tokens** (chat_server's `--auth-secret-file`, which fills in
//!   [`Admission::tokens`]): a handshake without a valid token
//!   ([`token`]) gets HTTP 401; a valid one's `sub` is the
//!   connection's username, which the server hands its handler.
//!
//! [`server::serve`](crate::server::serve) takes an [`Admission`] and answers
//! inside the WebSocket handshake, so a refused client gets an HTTP status it
//! can read, and never a WebSocket.
//!
//! ```
//! use websocket_tutorial::admission::parse_origin;
//!
//! assert_eq!(parse_origin("HTTPS://Chat.Example.com:443/"), Ok("https://chat.example.com".into()));
//! assert_eq!(parse_origin("http://localhost:8080"), Ok("http://localhost:8080".into()));
//! assert!(parse_origin("chat.example.com").is_err());
//! ```

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::{Arc, Mutex, PoisonError};

use tokio_tungstenite::tungstenite::handshake::server::{ErrorResponse, Request};
use tokio_tungstenite::tungstenite::http::{StatusCode, header};
use tracing::info;

use crate::args;
use crate::proxy::{MalformedHeader, TrustedProxies};
use crate::token::{self, Secret};

/// Open connections allowed from one IP address when `--max-per-ip` is not
/// given. One address is often many people (a household, an office, a
/// mobile carrier's NAT), and a person may have a few tabs open; 100 leaves
/// them room while one attacker's address can take less than a tenth of the
/// 1,024 connections that echo_server, broadcast_server and data_pusher
/// serve at once by default (`--max-connections`), and a hundredth of
/// chat_server's 10,000: it takes eleven addresses to fill the one, a
/// hundred and one the other, not one.
pub const DEFAULT_MAX_PER_IP: usize = 100;

// ANCHOR: admission
/// Who may open a WebSocket, as every server takes it on its command line
/// (`#[command(flatten)] admission: Admission`): `--allow-origin ORIGIN`
/// (repeatable), `--max-per-ip N`, and the proxies whose word about the
/// client is taken (`--trust-proxy CIDR`); and, filled in by a server that
/// takes tokens, the secret that checks them.
#[derive(Debug, Clone, clap::Args)]
pub struct Admission {
    /// A web page origin allowed to connect: scheme://host or
    /// scheme://host:port, or null for a page opened from a file. Repeat
    /// for more; without it, any origin may connect.
    #[arg(long = "allow-origin", value_name = "ORIGIN", value_parser = parse_origin)]
    pub allowed_origins: Vec<String>,
    /// Open connections allowed from one IP address; one more gets HTTP 429.
    #[arg(long, value_name = "N", default_value_t = DEFAULT_MAX_PER_IP)]
    #[arg(value_parser = args::positive::<usize>)]
    pub max_per_ip: usize,
    #[command(flatten)]
    pub proxies: TrustedProxies,
    /// With a secret, every handshake must carry a token it signed
    /// (chapter 10.5); without, nobody is asked who they are.
    #[arg(skip)]
    pub tokens: Option<Secret>,
}
// ANCHOR_END: admission

impl Admission {
    /// Any origin and [`DEFAULT_MAX_PER_IP`]: what a server gets with no flags.
    pub fn open() -> Admission {
        Admission {
            allowed_origins: Vec::new(),
            max_per_ip: DEFAULT_MAX_PER_IP,
            proxies: TrustedProxies::default(),
            tokens: None,
        }
    }

    /// The address a connection from `peer` is counted and logged as: the
    /// client a trusted proxy names ([`TrustedProxies::client`]), else
    /// `peer`. A trusted proxy's header that cannot be read is refused
    /// with 400.
    pub fn client(&self, peer: IpAddr, request: &Request) -> Result<IpAddr, Refusal> {
        self.proxies.client(peer, request.headers()).map_err(|MalformedHeader(header)| {
            info!(header = header.name(), "refused, 400: a trusted proxy's header is malformed");
            Refusal::MalformedForwarding
        })
    }

    // ANCHOR: origin_allowed
    /// Whether a handshake whose `Origin` header is `origin` (`None`: no
    /// header) may proceed.
    ///
    /// No header means no browser, so no page running in a victim's browser
    /// with the victim's cookies: such a client could send any `Origin` it
    /// likes anyway, so refusing it would protect nobody. A header that is
    /// not valid text or not an origin is compared like any other and, with
    /// a list, refused.
    pub fn origin_allowed(&self, origin: Option<&[u8]>) -> bool {
        let Some(origin) = origin else { return true };
        if self.allowed_origins.is_empty() {
            return true;
        }
        let normalised = std::str::from_utf8(origin).ok().and_then(normalise_origin);
        normalised.is_some_and(|origin| self.allowed_origins.contains(&origin))
    }
    // ANCHOR_END: origin_allowed

    // ANCHOR: check
    /// Answers a handshake `request`: `Ok` to upgrade, with the username
    /// the client's token proved (its `sub`) when this server takes tokens,
    /// or why it is refused. `slot` is
    /// the connection's place in its address's count ([`PerIp::try_take`]),
    /// `None` when the address has no room.
    pub fn check(
        &self,
        request: &Request,
        slot: Option<&IpSlot>,
    ) -> Result<Option<String>, Refusal> {
        if slot.is_none() {
            info!(
                max_per_ip = self.max_per_ip,
                "refused, 429: too many connections from one address"
            );
            return Err(Refusal::TooManyFromAddress);
        }
        let origin = request.headers().get(header::ORIGIN).map(|value| value.as_bytes());
        if !self.origin_allowed(origin) {
            let origin = String::from_utf8_lossy(origin.unwrap_or_default());
            info!(%origin, "refused, 403: origin not allowed");
            return Err(Refusal::Origin);
        }
        let Some(secret) = &self.tokens else { return Ok(None) };
        // The token itself is never logged: it is as good as a password
        // until it expires.
        let Some(token) = token::token_in(request) else {
            info!("refused, 401: no token");
            return Err(Refusal::Unauthenticated);
        };
        match secret.verify(token) {
            Ok(username) => Ok(Some(username)),
            Err(e) => {
                info!(reason = %e, "refused, 401: invalid token");
                Err(Refusal::Unauthenticated)
            }
        }
    }
    // ANCHOR_END: check
}

/// Why a handshake is refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    /// No token, or one that is forged, expired or not HS256: 401.
    Unauthenticated,
    /// The page's origin is not on the `--allow-origin` list: 403.
    Origin,
    /// The address has `--max-per-ip` connections open already: 429.
    TooManyFromAddress,
    /// A trusted proxy's `X-Forwarded-For` or `Forwarded` cannot be read: 400.
    MalformedForwarding,
}

impl Refusal {
    /// The HTTP response that refuses the upgrade, with a one-line reason
    /// as its body for a person who tries the address with curl.
    pub fn response(self) -> ErrorResponse {
        let (status, reason) = match self {
            Refusal::Unauthenticated => (StatusCode::UNAUTHORIZED, "a valid token is required"),
            Refusal::Origin => (StatusCode::FORBIDDEN, "origin not allowed"),
            Refusal::TooManyFromAddress => {
                (StatusCode::TOO_MANY_REQUESTS, "too many connections from your address")
            }
            Refusal::MalformedForwarding => {
                (StatusCode::BAD_REQUEST, "the proxy's forwarding header is malformed")
            }
        };
        crate::admin::metrics().refused(status);
        let mut response = ErrorResponse::new(Some(format!("{reason}\n")));
        *response.status_mut() = status;
        let text = header::HeaderValue::from_static("text/plain; charset=utf-8");
        response.headers_mut().insert(header::CONTENT_TYPE, text);
        if self == Refusal::Unauthenticated {
            // RFC 6750: a 401 names the scheme the client should use.
            let bearer = header::HeaderValue::from_static("Bearer");
            response.headers_mut().insert(header::WWW_AUTHENTICATE, bearer);
        }
        response
    }
}

/// Parses an `--allow-origin` value: `scheme://host[:port]`, or `null`.
/// Returns it normalised the way browsers write the `Origin` header: scheme
/// and host in lowercase, no trailing slash, no default port (`:443` for
/// https, `:80` for http), so that `--allow-origin https://Chat.example.com/`
/// matches what a browser sends.
pub fn parse_origin(text: &str) -> Result<String, String> {
    normalise_origin(text).ok_or_else(|| {
        "not an origin; give scheme://host[:port], for example https://chat.example.com, \
         or null"
            .into()
    })
}

fn normalise_origin(text: &str) -> Option<String> {
    if text == "null" {
        return Some(text.into());
    }
    let (scheme, rest) = text.split_once("://")?;
    let authority = rest.strip_suffix('/').unwrap_or(rest);
    let scheme_ok = scheme.starts_with(|c: char| c.is_ascii_alphabetic())
        && scheme.chars().all(|c| c.is_ascii_alphanumeric() || "+-.".contains(c));
    if !scheme_ok {
        return None;
    }
    let (host, port) = split_port(authority)?;
    let host_ok = if let Some(ip6) = host.strip_prefix('[').and_then(|h| h.strip_suffix(']')) {
        ip6.parse::<std::net::Ipv6Addr>().is_ok()
    } else {
        !host.is_empty() && host.chars().all(|c| c.is_ascii_alphanumeric() || "-.".contains(c))
    };
    if !host_ok {
        return None;
    }
    let scheme = scheme.to_ascii_lowercase();
    let host = host.to_ascii_lowercase();
    let default_port = match scheme.as_str() {
        "http" => Some(80),
        "https" => Some(443),
        _ => None,
    };
    Some(match port {
        Some(port) if Some(port) != default_port => format!("{scheme}://{host}:{port}"),
        _ => format!("{scheme}://{host}"),
    })
}

/// `host:port` into the host and the port, if there is one. (An IPv6 host
/// is in brackets, so the port is whatever follows the `]`.)
fn split_port(authority: &str) -> Option<(&str, Option<u16>)> {
    let colon = match authority.rfind(':') {
        Some(i) if !authority[i..].contains(']') => i,
        _ => return Some((authority, None)),
    };
    let port = authority[colon + 1..].parse().ok()?;
    Some((&authority[..colon], Some(port)))
}

// ANCHOR: per_ip
/// Counts each IP address's open connections, so that one address cannot
/// take every slot. Shared by all of a server's connections.
#[derive(Debug, Clone)]
pub struct PerIp {
    open: Arc<Mutex<HashMap<IpAddr, usize>>>,
    max: usize,
}

/// One connection's place in its address's count. The count goes down when
/// this is dropped, however the connection ends: a normal close, a failed
/// or refused handshake, shutdown, or a handler that panicked (its task
/// drops what it held while unwinding).
#[derive(Debug)]
pub struct IpSlot {
    open: Arc<Mutex<HashMap<IpAddr, usize>>>,
    ip: IpAddr,
}

impl PerIp {
    /// A count that allows `max` open connections per address.
    pub fn new(max: usize) -> PerIp {
        PerIp { open: Arc::default(), max }
    }

    /// A slot for one more connection from `ip`, or `None` when it already
    /// has `max` open.
    pub fn try_take(&self, ip: IpAddr) -> Option<IpSlot> {
        let mut open = lock(&self.open);
        let count = open.entry(ip).or_insert(0);
        if *count >= self.max {
            return None;
        }
        *count += 1;
        Some(IpSlot { open: self.open.clone(), ip })
    }

    /// How many connections `ip` has open.
    pub fn open(&self, ip: IpAddr) -> usize {
        lock(&self.open).get(&ip).copied().unwrap_or(0)
    }
}

impl Drop for IpSlot {
    fn drop(&mut self) {
        let mut open = lock(&self.open);
        if let Some(count) = open.get_mut(&self.ip) {
            *count -= 1;
            // An address with nothing open takes no memory: the map holds
            // only addresses that are connected now.
            if *count == 0 {
                open.remove(&self.ip);
            }
        }
    }
}
// ANCHOR_END: per_ip

/// The map is only ever changed by a line or two that cannot panic, so a
/// poisoned lock (a panic elsewhere while it was held) still holds true
/// counts: take them rather than panic in a `Drop`.
fn lock(open: &Mutex<HashMap<IpAddr, usize>>) -> std::sync::MutexGuard<'_, HashMap<IpAddr, usize>> {
    open.lock().unwrap_or_else(PoisonError::into_inner)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn origins_are_normalised_the_way_browsers_send_them() {
        for (given, normalised) in [
            ("https://chat.example.com", "https://chat.example.com"),
            ("HTTPS://Chat.Example.COM/", "https://chat.example.com"),
            ("https://chat.example.com:443", "https://chat.example.com"),
            ("http://chat.example.com:80", "http://chat.example.com"),
            ("http://127.0.0.1:8080", "http://127.0.0.1:8080"),
            ("https://chat.example.com:80", "https://chat.example.com:80"),
            ("http://[::1]:3000", "http://[::1]:3000"),
            ("http://[::1]", "http://[::1]"),
            ("null", "null"),
        ] {
            assert_eq!(parse_origin(given).as_deref(), Ok(normalised), "{given}");
        }
    }

    #[test]
    fn what_is_not_an_origin_is_refused() {
        for bad in [
            "",
            "chat.example.com",
            "https://",
            "https://chat.example.com/path",
            "https://chat.example.com?x=1",
            "https://user@chat.example.com",
            "https://chat.example.com:99999",
            "https://chat.example.com:",
            "https://[::1",
            "1http://x",
            "Null",
            "*",
        ] {
            assert!(parse_origin(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn a_listed_origin_passes_others_and_unlisted_null_do_not() {
        let admission = Admission {
            allowed_origins: vec!["https://chat.example.com".into()],
            ..Admission::open()
        };
        assert!(admission.origin_allowed(Some(b"https://chat.example.com")));
        assert!(admission.origin_allowed(Some(b"https://CHAT.example.com")));
        assert!(!admission.origin_allowed(Some(b"https://evil.example")));
        assert!(!admission.origin_allowed(Some(b"https://chat.example.com:8443")));
        assert!(!admission.origin_allowed(Some(b"null")));
        assert!(!admission.origin_allowed(Some(b"\xff")));
        assert!(admission.origin_allowed(None), "no Origin: not a browser");
        assert!(Admission::open().origin_allowed(Some(b"https://evil.example")));
        let with_null = Admission { allowed_origins: vec!["null".into()], ..Admission::open() };
        assert!(with_null.origin_allowed(Some(b"null")));
    }

    #[test]
    fn a_slot_is_counted_until_dropped_and_the_cap_holds() {
        let ip: IpAddr = [10, 0, 0, 1].into();
        let other: IpAddr = [10, 0, 0, 2].into();
        let per_ip = PerIp::new(2);
        let first = per_ip.try_take(ip).expect("first");
        let _second = per_ip.try_take(ip).expect("second");
        assert!(per_ip.try_take(ip).is_none(), "a third from one address");
        assert!(per_ip.try_take(other).is_some(), "another address has its own count");
        drop(first);
        assert_eq!(per_ip.open(ip), 1);
        assert!(per_ip.try_take(ip).is_some(), "a slot freed by a close is free again");
    }

    #[tokio::test]
    async fn a_panicking_connection_gives_its_slot_back() {
        let ip: IpAddr = [10, 0, 0, 1].into();
        let per_ip = PerIp::new(1);
        let slot = per_ip.try_take(ip).expect("a slot");
        let connection = tokio::spawn(async move {
            let _slot = slot;
            panic!("a handler's bug");
        });
        assert!(connection.await.expect_err("it panicked").is_panic());
        assert_eq!(per_ip.open(ip), 0);
        assert!(per_ip.try_take(ip).is_some());
    }
}
