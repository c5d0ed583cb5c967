//! Behind a reverse proxy (chapter 10.6): who the client really is.
//!
//! Every connection through nginx or Caddy comes from the proxy's address,
//! so `--max-per-ip` would count the proxy and the logs would name it. The
//! proxy says whose request it passes on in a header: `X-Forwarded-For`
//! (nginx's `$proxy_add_x_forwarded_for`, Caddy by default) or RFC 7239's
//! `Forwarded: for=...`. Anybody can send those headers, so they are read
//! only from a connection whose address is trusted (`--trust-proxy CIDR`,
//! repeatable), and only the one header that the proxy is said to set
//! (`--proxy-header`, `x-forwarded-for` by default): a proxy passes on the
//! headers it does not set, so reading the other one too would let any
//! client name itself.
//!
//! Each proxy on the way appends the address it got the request from, so
//! the header is a list of hops, the client's own first. The client is the
//! **rightmost untrusted hop**: walking from the connection's own peer
//! leftwards, past every trusted proxy, the first address that is not one.
//! What a client wrote itself is further left, and never reached. If every
//! hop is trusted, the leftmost is the client.
//!
//! A hop may be unnamed: `unknown`, or an obfuscated identifier such as
//! `_hidden` (RFC 7239, section 6), or a `Forwarded` element without
//! `for=`. A trusted proxy that says it does not know (or will not say) who
//! sent it the request is taken at its word: the client is then counted as
//! the address of that proxy, the last one known. A trusted proxy's header
//! that cannot be read is a refusal (HTTP 400), never a guess.
//!
//! ```
//! use websocket_tutorial::proxy::parse_cidr;
//!
//! let loopback = parse_cidr("127.0.0.0/8").unwrap();
//! assert!(loopback.contains([127, 0, 0, 1].into()));
//! assert!(!loopback.contains([10, 0, 0, 1].into()));
//! assert!(parse_cidr("127.0.0.1/33").is_err());
//! ```

use std::net::{IpAddr, Ipv6Addr};

use tokio_tungstenite::tungstenite::http::HeaderMap;

/// A block of IP addresses, `ADDR/PREFIX`: the addresses whose first
/// PREFIX bits are ADDR's.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Cidr {
    network: IpAddr,
    prefix: u8,
}

impl Cidr {
    /// Whether `ip` is in the block. An IPv4 address that reaches an IPv6
    /// socket as `::ffff:a.b.c.d` is compared as the IPv4 address it is.
    pub fn contains(&self, ip: IpAddr) -> bool {
        let bits = |ip: IpAddr| match ip {
            IpAddr::V4(ip) => (u128::from(ip.to_bits()), 32),
            IpAddr::V6(ip) => (ip.to_bits(), 128),
        };
        let ((network, width), (ip, ip_width)) = (bits(self.network), bits(ip.to_canonical()));
        // The bits below the prefix are shifted away; a shift by the whole
        // width (prefix 0) leaves nothing to compare.
        let shift = u32::from(width - self.prefix);
        width == ip_width && (network ^ ip).checked_shr(shift).unwrap_or(0) == 0
    }
}

/// Parses a `--trust-proxy` value: `ADDR/PREFIX` (`10.0.0.0/8`,
/// `fd00::/8`), or one address alone (`127.0.0.1`, a block of one). Bits
/// of ADDR past the prefix are ignored, as most tools do.
pub fn parse_cidr(text: &str) -> Result<Cidr, String> {
    let hint = "give an address block, ADDR/PREFIX (10.0.0.0/8, fd00::/8), or one address";
    let (addr, prefix) = match text.split_once('/') {
        Some((addr, prefix)) => (addr, Some(prefix)),
        None => (text, None),
    };
    let network: IpAddr = addr.parse().map_err(|_| format!("not an IP address; {hint}"))?;
    let width = if network.is_ipv4() { 32 } else { 128 };
    let prefix = match prefix {
        // (`u8::from_str` would take `+8`: only digits are a prefix.)
        Some(p) if !p.is_empty() && p.bytes().all(|b| b.is_ascii_digit()) => p.parse().ok(),
        Some(_) => None,
        None => Some(width),
    };
    match prefix {
        Some(prefix) if prefix <= width => Ok(canonical(Cidr { network, prefix })),
        _ => Err(format!("the prefix must be a number from 0 to {width}; {hint}")),
    }
}

/// `::ffff:10.0.0.0/104` is `10.0.0.0/8`: [`Cidr::contains`] compares
/// such addresses as IPv4.
fn canonical(cidr: Cidr) -> Cidr {
    match cidr.network {
        IpAddr::V6(v6) if cidr.prefix >= 96 && v6.to_ipv4_mapped().is_some() => {
            Cidr { network: cidr.network.to_canonical(), prefix: cidr.prefix - 96 }
        }
        _ => cidr,
    }
}

/// The header a trusted proxy names the client in.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, clap::ValueEnum)]
pub enum ProxyHeader {
    /// `X-Forwarded-For: client, proxy1, proxy2`.
    #[default]
    XForwardedFor,
    /// RFC 7239's `Forwarded: for=client, for=proxy1`.
    Forwarded,
}

impl ProxyHeader {
    /// The header's name, as in a request.
    pub fn name(self) -> &'static str {
        match self {
            ProxyHeader::XForwardedFor => "x-forwarded-for",
            ProxyHeader::Forwarded => "forwarded",
        }
    }
}

// ANCHOR: trusted_proxies
/// Which connections are from proxies whose word about the client is
/// taken, as every server takes it on its command line: `--trust-proxy
/// CIDR` (repeatable) and `--proxy-header`.
#[derive(Debug, Clone, Default, clap::Args)]
pub struct TrustedProxies {
    /// A proxy's address, or a block of them (10.0.0.0/8): a connection
    /// from it is counted, and logged, as the client its X-Forwarded-For
    /// names. Repeat for more; without it, no header is believed.
    #[arg(long = "trust-proxy", value_name = "CIDR", value_parser = parse_cidr)]
    pub trusted: Vec<Cidr>,
    /// The header the trusted proxies set; the other one is ignored.
    #[arg(long, value_name = "HEADER", default_value = "x-forwarded-for")]
    pub proxy_header: ProxyHeader,
}
// ANCHOR_END: trusted_proxies

/// A trusted proxy's header that cannot be read: the handshake gets 400.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MalformedHeader(pub ProxyHeader);

/// One hop that a header names.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Hop {
    Addr(IpAddr),
    /// `unknown`, an obfuscated `_identifier`, or no `for=` at all.
    Unnamed,
}

impl TrustedProxies {
    /// Whether `ip` is a trusted proxy's.
    pub fn trusts(&self, ip: IpAddr) -> bool {
        self.trusted.iter().any(|cidr| cidr.contains(ip))
    }

    /// The client's address, for a connection from `peer` whose request
    /// has `headers`: `peer` itself unless it is trusted; otherwise the
    /// rightmost untrusted hop of the proxy's header (see the module's
    /// documentation).
    pub fn client(&self, peer: IpAddr, headers: &HeaderMap) -> Result<IpAddr, MalformedHeader> {
        let peer = peer.to_canonical();
        if !self.trusts(peer) {
            return Ok(peer);
        }
        let malformed = MalformedHeader(self.proxy_header);
        let mut hops = Vec::new();
        for value in headers.get_all(self.proxy_header.name()) {
            let value = value.to_str().map_err(|_| malformed)?;
            let parsed = match self.proxy_header {
                ProxyHeader::XForwardedFor => x_forwarded_for(value, &mut hops),
                ProxyHeader::Forwarded => forwarded(value, &mut hops),
            };
            parsed.ok_or(malformed)?;
        }
        let mut client = peer;
        for hop in hops.iter().rev() {
            match *hop {
                Hop::Addr(ip) => client = ip.to_canonical(),
                // A trusted proxy that does not know: its own address.
                Hop::Unnamed => break,
            }
            if !self.trusts(client) {
                break;
            }
        }
        Ok(client)
    }
}

/// Appends the hops of one `X-Forwarded-For` value, `None` if it has one
/// that is not an address. Empty elements are skipped, as HTTP's list
/// syntax asks (`a, , b`).
fn x_forwarded_for(value: &str, hops: &mut Vec<Hop>) -> Option<()> {
    for element in value.split(',').map(str::trim).filter(|e| !e.is_empty()) {
        hops.push(node(element)?);
    }
    Some(())
}

/// Appends the hops of one `Forwarded` value (RFC 7239): elements split by
/// commas, each `name=value` pairs split by semicolons, values a token or a
/// quoted string. Only `for` is read; `None` for anything malformed.
fn forwarded(value: &str, hops: &mut Vec<Hop>) -> Option<()> {
    for element in split_unquoted(value, ',')?.into_iter().map(str::trim) {
        if element.is_empty() {
            continue;
        }
        let mut hop = None;
        for pair in split_unquoted(element, ';')?.into_iter().map(str::trim) {
            let (name, value) = pair.split_once('=')?;
            let value = unquote(value.trim())?;
            if !is_token(name.trim()) || value.is_empty() {
                return None;
            }
            // Each parameter at most once per element.
            if name.trim().eq_ignore_ascii_case("for") && hop.replace(node(&value)?).is_some() {
                return None;
            }
        }
        hops.push(hop.unwrap_or(Hop::Unnamed));
    }
    Some(())
}

/// `text` split at every `separator` outside a quoted string; `None` if a
/// quote is left open.
fn split_unquoted(text: &str, separator: char) -> Option<Vec<&str>> {
    let (mut parts, mut start) = (Vec::new(), 0);
    let (mut quoted, mut escaped) = (false, false);
    for (i, c) in text.char_indices() {
        if escaped {
            escaped = false;
        } else if quoted && c == '\\' {
            escaped = true;
        } else if c == '"' {
            quoted = !quoted;
        } else if c == separator && !quoted {
            parts.push(&text[start..i]);
            start = i + 1;
        }
    }
    parts.push(&text[start..]);
    (!quoted).then_some(parts)
}

/// A token as it is, a quoted string without its quotes and escapes.
fn unquote(value: &str) -> Option<String> {
    let Some(inner) = value.strip_prefix('"') else {
        return is_token(value).then(|| value.to_string());
    };
    let inner = inner.strip_suffix('"')?;
    let (mut text, mut chars) = (String::new(), inner.chars());
    while let Some(c) = chars.next() {
        match c {
            '\\' => text.push(chars.next()?),
            '"' => return None,
            c => text.push(c),
        }
    }
    Some(text)
}

/// HTTP's `token`: the characters a name or an unquoted value may have.
fn is_token(text: &str) -> bool {
    !text.is_empty()
        && text.chars().all(|c| c.is_ascii_alphanumeric() || "!#$%&'*+-.^_`|~".contains(c))
}

/// One hop: an IP address, with or without a port (`192.0.2.7`,
/// `192.0.2.7:4711`, `2001:db8::7`, `[2001:db8::7]`, `[2001:db8::7]:4711`),
/// or an unnamed one (`unknown`, `_hidden`). `None` for anything else.
fn node(text: &str) -> Option<Hop> {
    if text.eq_ignore_ascii_case("unknown") {
        return Some(Hop::Unnamed);
    }
    if let Some(name) = text.strip_prefix('_') {
        let obfuscated = name.chars().all(|c| c.is_ascii_alphanumeric() || "._-".contains(c));
        return (!name.is_empty() && obfuscated).then_some(Hop::Unnamed);
    }
    if let Ok(ip) = text.parse::<IpAddr>() {
        return Some(Hop::Addr(ip));
    }
    let (host, port) = match text.strip_prefix('[') {
        Some(rest) => {
            let (v6, after) = rest.split_once(']')?;
            let ip = v6.parse::<Ipv6Addr>().ok()?;
            match after {
                "" => return Some(Hop::Addr(ip.into())),
                after => (IpAddr::from(ip), after.strip_prefix(':')?),
            }
        }
        None => {
            let (v4, port) = text.split_once(':')?;
            (IpAddr::V4(v4.parse().ok()?), port)
        }
    };
    // A port is a number, or obfuscated too (`_port`, RFC 7239).
    let port_ok = port.parse::<u16>().is_ok()
        || port.strip_prefix('_').is_some_and(|p| !p.is_empty() && is_token(p));
    port_ok.then_some(Hop::Addr(host))
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio_tungstenite::tungstenite::http::{HeaderName, HeaderValue};

    fn ip(text: &str) -> IpAddr {
        text.parse().unwrap()
    }

    #[test]
    fn address_blocks_contain_what_their_prefix_covers() {
        let ten = parse_cidr("10.0.0.0/8").unwrap();
        assert!(ten.contains(ip("10.255.3.4")) && !ten.contains(ip("11.0.0.0")));
        assert!(ten.contains(ip("::ffff:10.1.2.3")), "IPv4 on an IPv6 socket");
        assert!(!ten.contains(ip("::a01:203")), "IPv6 is not IPv4");
        let one = parse_cidr("127.0.0.1").unwrap();
        assert!(one.contains(ip("127.0.0.1")) && !one.contains(ip("127.0.0.2")));
        let v6 = parse_cidr("fd00::/8").unwrap();
        assert!(v6.contains(ip("fd12::1")) && !v6.contains(ip("fe80::1")));
        assert!(!v6.contains(ip("10.0.0.1")));
        let everything = parse_cidr("0.0.0.0/0").unwrap();
        assert!(everything.contains(ip("203.0.113.9")) && !everything.contains(ip("::1")));
        assert!(parse_cidr("::/0").unwrap().contains(ip("2001:db8::1")));
        assert!(parse_cidr("::1/128").unwrap().contains(ip("::1")));
        assert!(parse_cidr("10.1.2.3/8").unwrap().contains(ip("10.9.9.9")), "host bits ignored");
        let mapped = parse_cidr("::ffff:10.0.0.0/104").unwrap();
        assert_eq!(mapped, ten);
    }

    #[test]
    fn what_is_not_an_address_block_is_refused() {
        for bad in [
            "",
            "10.0.0.0/",
            "10.0.0.0/33",
            "::/129",
            "10.0.0.0/+8",
            "10.0.0.0/-1",
            "10.0.0/8",
            "localhost",
            "10.0.0.0/8/8",
            "/8",
            "10.0.0.0 /8",
            "[::1]/128",
        ] {
            assert!(parse_cidr(bad).is_err(), "{bad:?}");
        }
        assert!(parse_cidr("10.0.0.0/33").unwrap_err().contains("0 to 32"));
    }

    fn headers(name: &str, values: &[&[u8]]) -> HeaderMap {
        let mut headers = HeaderMap::new();
        for value in values {
            let value = HeaderValue::from_bytes(value).unwrap();
            headers.append(HeaderName::from_bytes(name.as_bytes()).unwrap(), value);
        }
        headers
    }

    fn proxies(trusted: &[&str], proxy_header: ProxyHeader) -> TrustedProxies {
        let trusted = trusted.iter().map(|t| parse_cidr(t).unwrap()).collect();
        TrustedProxies { trusted, proxy_header }
    }

    const PROXY: &str = "127.0.0.1";

    /// The client a request from `PROXY` is taken for, with `header`'s
    /// values, trusting `trusted`.
    fn client(
        trusted: &[&str],
        header: ProxyHeader,
        values: &[&[u8]],
    ) -> Result<IpAddr, MalformedHeader> {
        proxies(trusted, header).client(ip(PROXY), &headers(header.name(), values))
    }

    #[test]
    fn the_client_is_the_rightmost_untrusted_hop() {
        use ProxyHeader::*;
        let local = &[PROXY][..];
        assert_eq!(client(local, XForwardedFor, &[b"203.0.113.7"]), Ok(ip("203.0.113.7")));
        // What the client wrote itself is left of what the proxy appended.
        let spoofed = client(local, XForwardedFor, &[b"1.2.3.4, 203.0.113.7"]);
        assert_eq!(spoofed, Ok(ip("203.0.113.7")));
        // Past every trusted proxy, and across repeated header lines.
        let chain = &[PROXY, "10.0.0.0/8"][..];
        let lines: &[&[u8]] = &[b"1.2.3.4, 198.51.100.1", b"10.0.0.5,10.0.0.6"];
        assert_eq!(client(chain, XForwardedFor, lines), Ok(ip("198.51.100.1")));
        // Every hop trusted: the leftmost is the client.
        assert_eq!(client(chain, XForwardedFor, &[b"10.1.1.1, 10.0.0.5"]), Ok(ip("10.1.1.1")));
        // No header, or only empty elements: the proxy itself.
        assert_eq!(client(local, XForwardedFor, &[]), Ok(ip(PROXY)));
        assert_eq!(client(local, XForwardedFor, &[b" , "]), Ok(ip(PROXY)));
        // Ports and brackets.
        assert_eq!(client(local, XForwardedFor, &[b"192.0.2.7:4711"]), Ok(ip("192.0.2.7")));
        assert_eq!(client(local, XForwardedFor, &[b"2001:db8::7"]), Ok(ip("2001:db8::7")));
        assert_eq!(client(local, XForwardedFor, &[b"[2001:db8::7]:1"]), Ok(ip("2001:db8::7")));
        assert_eq!(client(local, XForwardedFor, &[b"::ffff:192.0.2.7"]), Ok(ip("192.0.2.7")));
    }

    #[test]
    fn forwarded_is_read_as_rfc_7239_writes_it() {
        use ProxyHeader::Forwarded;
        let local = &[PROXY][..];
        let cases: &[(&[u8], &str)] = &[
            (b"for=192.0.2.43", "192.0.2.43"),
            (b"For=\"[2001:db8:cafe::17]:4711\"", "2001:db8:cafe::17"),
            (b"for=\"192.0.2.43:47011\";proto=https;by=203.0.113.43", "192.0.2.43"),
            (b"for=192.0.2.43, for=198.51.100.17", "198.51.100.17"),
            (b"proto=http;for=\"[2001:db8::1]\"", "2001:db8::1"),
            (b"for=\"192.0.2.43:_port\"", "192.0.2.43"),
            (b"for=192.0.2.1;ext=\"a\\\"b\"", "192.0.2.1"),
        ];
        for (value, expected) in cases {
            let got = client(local, Forwarded, &[value]);
            assert_eq!(got, Ok(ip(expected)), "{}", String::from_utf8_lossy(value));
        }
        // A quoted comma or semicolon does not split.
        let quoted = client(local, Forwarded, &[b"for=192.0.2.1;ext=\"a,b;c\""]);
        assert_eq!(quoted, Ok(ip("192.0.2.1")));
    }

    #[test]
    fn an_unnamed_hop_is_counted_as_the_proxy_that_named_it_so() {
        use ProxyHeader::*;
        let chain = &[PROXY, "10.0.0.0/8"][..];
        for (header, value) in [
            (Forwarded, &b"for=unknown"[..]),
            (Forwarded, b"for=_hidden"),
            (Forwarded, b"proto=https"),
            (XForwardedFor, b"unknown"),
            (XForwardedFor, b"UNKNOWN"),
        ] {
            assert_eq!(client(chain, header, &[value]), Ok(ip(PROXY)), "{value:?}");
        }
        // The hop right of the unnamed one is the proxy that said it.
        let via = client(chain, Forwarded, &[b"for=198.51.100.9, for=_x, for=10.0.0.7"]);
        assert_eq!(via, Ok(ip("10.0.0.7")));
        // Left of an untrusted hop, an unnamed one changes nothing.
        let past = client(chain, XForwardedFor, &[b"unknown, 198.51.100.9"]);
        assert_eq!(past, Ok(ip("198.51.100.9")));
    }

    #[test]
    fn a_trusted_proxys_malformed_header_is_an_error_and_nobody_elses_is_read() {
        use ProxyHeader::*;
        let local = &[PROXY][..];
        for value in [
            &b"not an address"[..],
            b"192.0.2.1, example.com",
            b"192.0.2.1:",
            b"192.0.2.1:99999",
            b"[2001:db8::1",
            b"[192.0.2.1]",
            b"_",
            b"\xff",
        ] {
            let got = client(local, XForwardedFor, &[value]);
            assert_eq!(got, Err(MalformedHeader(XForwardedFor)), "{value:?}");
        }
        for value in [
            &b"for"[..],
            b"for=",
            b"for=\"192.0.2.1",
            b"for=192.0.2.1;for=192.0.2.2",
            b"for=[2001:db8::1]", // brackets must be quoted: not a token
            b"for=\"_a b\"",
            b"=192.0.2.1",
            b"f r=1",
            b"for=\"192.0.2.1\"x",
        ] {
            let got = client(local, Forwarded, &[value]);
            assert_eq!(got, Err(MalformedHeader(Forwarded)), "{value:?}");
        }
        // From an untrusted peer, the same headers are not even read.
        let nobody = proxies(&["10.0.0.0/8"], XForwardedFor);
        let header = headers("x-forwarded-for", &[b"not an address"]);
        assert_eq!(nobody.client(ip(PROXY), &header), Ok(ip(PROXY)));
        let spoof = headers("x-forwarded-for", &[b"203.0.113.7"]);
        assert_eq!(nobody.client(ip(PROXY), &spoof), Ok(ip(PROXY)));
        // Only the chosen header is read: the other is the client's own.
        let xff = proxies(local, XForwardedFor);
        let other = headers("forwarded", &[b"for=203.0.113.7"]);
        assert_eq!(xff.client(ip(PROXY), &other), Ok(ip(PROXY)));
    }
}
