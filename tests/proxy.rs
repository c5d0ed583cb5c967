//! Behind a reverse proxy (chapter 10.6): `--trust-proxy CIDR` makes every
//! server count, and log, a connection from a trusted proxy as the client
//! its `X-Forwarded-For` (or, with `--proxy-header forwarded`, its
//! `Forwarded`) names; from any other address those headers change nothing,
//! and a trusted proxy's header that cannot be read gets HTTP 400. Real
//! servers, real sockets: the test plays the proxy, from 127.0.0.1.

mod common;

use common::*;
use tokio::time::timeout;
use tokio_tungstenite::tungstenite;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::http::StatusCode;
use websocket_tutorial::client::WsClient;

const SERVERS: [&str; 4] = ["echo_server", "broadcast_server", "chat_server", "data_pusher"];

/// A handshake carrying `header: value`: the WebSocket, or the HTTP status
/// that refused it.
async fn handshake(url: &str, header: &str, value: &str) -> Result<WsClient, StatusCode> {
    let mut request = url.into_client_request().expect("a request");
    let name = tungstenite::http::HeaderName::from_bytes(header.as_bytes()).expect("a name");
    request.headers_mut().insert(name, value.parse().expect("a header value"));
    let answered = timeout(WAIT, tokio_tungstenite::connect_async(request)).await;
    match answered.expect("the server answers the handshake") {
        Ok((ws, _)) => Ok(ws),
        Err(tungstenite::Error::Http(response)) => Err(response.status()),
        Err(e) => panic!("handshake with {url}: {e}"),
    }
}

/// With `--trust-proxy 127.0.0.1/32 --max-per-ip 1`, two connections from
/// 127.0.0.1 for two different clients are both served, and a third for
/// the first client again gets 429; the refusal's log line names that
/// client. On every server.
#[tokio::test]
async fn a_trusted_proxys_clients_are_counted_one_by_one() {
    for name in SERVERS {
        let args = ["--trust-proxy", "127.0.0.1/32", "--max-per-ip", "1"];
        let mut server = Server::start(name, &args).await;
        let xff = "x-forwarded-for";
        let first = handshake(&server.url, xff, "203.0.113.1").await;
        assert!(first.is_ok(), "{name}: first client: {:?}", first.err());
        let second = handshake(&server.url, xff, "198.51.100.7, 203.0.113.2").await;
        assert!(second.is_ok(), "{name}: second client: {:?}", second.err());
        let again = handshake(&server.url, xff, "203.0.113.1").await.err();
        assert_eq!(again, Some(StatusCode::TOO_MANY_REQUESTS), "{name}: the first client again");
        let refused = |l: &str| log_message(l).starts_with("refused, 429");
        let (line, _) = server.program.wait_for_log(refused).await;
        assert!(line.contains("client=203.0.113.1"), "{name}: {line}");
        drop((first, second));
        server.stop().await;
    }
}

/// With `--proxy-header forwarded`, RFC 7239's `Forwarded: for=` names the
/// client (an IPv6 one, in brackets with a port, here), and an
/// `X-Forwarded-For` is not read.
#[tokio::test]
async fn forwarded_names_the_client_when_the_proxy_sets_it() {
    let args = ["--trust-proxy", "127.0.0.1", "--proxy-header", "forwarded", "--max-per-ip", "1"];
    let server = Server::start("chat_server", &args).await;
    let first = handshake(&server.url, "forwarded", "for=\"[2001:db8::1]:4711\"").await;
    assert!(first.is_ok(), "{:?}", first.err());
    let other = handshake(&server.url, "Forwarded", "for=192.0.2.60;proto=https").await;
    assert!(other.is_ok(), "{:?}", other.err());
    let again = handshake(&server.url, "forwarded", "for=\"[2001:db8::1]\"").await.err();
    assert_eq!(again, Some(StatusCode::TOO_MANY_REQUESTS));
    // Not the header this proxy sets: the connection is the proxy's own,
    // and the proxy has its one.
    let proxy = handshake(&server.url, "x-forwarded-for", "203.0.113.9").await;
    assert!(proxy.is_ok(), "{:?}", proxy.err());
    let proxy_again = handshake(&server.url, "x-forwarded-for", "203.0.113.10").await.err();
    assert_eq!(proxy_again, Some(StatusCode::TOO_MANY_REQUESTS));
    drop((first, other, proxy));
    server.stop().await;
}

/// Without `--trust-proxy`, and from an address it does not cover, the
/// same headers change nothing: every connection is 127.0.0.1's, and the
/// second gets 429.
#[tokio::test]
async fn headers_from_an_untrusted_peer_change_nothing() {
    for trust in [&[][..], &["--trust-proxy", "10.0.0.0/8"]] {
        let mut args = vec!["--max-per-ip", "1"];
        args.extend(trust);
        let mut server = Server::start("echo_server", &args).await;
        let first = handshake(&server.url, "x-forwarded-for", "203.0.113.1").await;
        assert!(first.is_ok(), "{args:?}: {:?}", first.err());
        let spoofed = handshake(&server.url, "x-forwarded-for", "203.0.113.2").await.err();
        assert_eq!(spoofed, Some(StatusCode::TOO_MANY_REQUESTS), "{args:?}");
        // Not even a malformed header is looked at.
        drop(first);
        let malformed = |url| async move {
            let deadline = tokio::time::Instant::now() + WAIT;
            loop {
                // Until the closed connection's slot is back (polling pace,
                // not synchronisation: the deadline decides).
                match handshake(url, "x-forwarded-for", "not an address").await {
                    Err(StatusCode::TOO_MANY_REQUESTS)
                        if tokio::time::Instant::now() < deadline =>
                    {
                        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
                    }
                    answer => return answer,
                }
            }
        };
        assert!(malformed(&server.url).await.is_ok(), "{args:?}");
        let refused = |l: &str| log_message(l).starts_with("refused, 429");
        let (line, _) = server.program.wait_for_log(refused).await;
        assert!(!line.contains("client="), "{args:?}: {line}");
        server.stop().await;
    }
}

/// A trusted proxy's header that cannot be read gets 400 and no WebSocket,
/// and takes no place in any count: the next good request is served.
#[tokio::test]
async fn a_trusted_proxys_malformed_header_gets_400() {
    for name in SERVERS {
        let args = ["--trust-proxy", "127.0.0.0/8", "--max-per-ip", "1"];
        let mut server = Server::start(name, &args).await;
        for value in ["not an address", "203.0.113.1, example.com", "[2001:db8::1"] {
            let refused = handshake(&server.url, "x-forwarded-for", value).await.err();
            assert_eq!(refused, Some(StatusCode::BAD_REQUEST), "{name}: {value}");
        }
        let malformed = |l: &str| log_message(l).starts_with("refused, 400");
        let (line, _) = server.program.wait_for_log(malformed).await;
        assert!(line.contains("x-forwarded-for"), "{name}: {line}");
        let served = handshake(&server.url, "x-forwarded-for", "203.0.113.1").await;
        assert!(served.is_ok(), "{name}: {:?}", served.err());
        drop(served);
        server.stop().await;
    }
}
