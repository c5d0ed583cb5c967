//! Tokens (chapter 10.5): chat_server with `--auth-secret-file` lets in
//! only a handshake that carries a JSON Web Token its secret signed
//! (HS256, with `sub` and `exp`), in the `Authorization` header or in the
//! URL's `?token=`; anything else reads HTTP 401 and gets no WebSocket. The
//! token's `sub` is the only name its connection may join under. Real
//! server, real sockets; the tokens come from the library's `Secret`, the
//! one make_token uses, and from make_token itself.

mod common;

use std::time::Duration;

use common::*;
use futures_util::SinkExt;
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use tokio::time::timeout;
use tokio_tungstenite::tungstenite;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::http::{StatusCode, header};
use websocket_tutorial::client::WsClient;
use websocket_tutorial::protocol::{ClientMessage, ErrorCode, ServerEvent};
use websocket_tutorial::token::{Claims, Secret};

const SECRET: &str = "correct horse battery staple";

/// A chat_server that takes tokens signed with [`SECRET`] (written with
/// surrounding whitespace, which the server trims), and the file.
async fn server() -> (Server, TempFile) {
    let file = TempFile::new(&format!("  {SECRET}\n"));
    let server = Server::start("chat_server", &["--auth-secret-file", file.arg()]).await;
    (server, file)
}

fn token(username: &str) -> String {
    let secret = Secret::new(SECRET.as_bytes()).expect("a secret");
    secret.make(username, Duration::from_secs(60)).expect("a token")
}

/// How a client hands the server its token.
enum Via {
    Nothing,
    Header(String),
    Query(String),
}

/// A handshake with chat_server: the WebSocket, or the HTTP status (and
/// its `WWW-Authenticate`) that refused it.
async fn handshake(url: &str, via: Via) -> Result<WsClient, (StatusCode, Option<String>)> {
    let url = match &via {
        Via::Query(token) => format!("{url}/?token={token}"),
        _ => url.to_string(),
    };
    let mut request = url.as_str().into_client_request().expect("a request");
    if let Via::Header(token) = &via {
        let bearer = format!("Bearer {token}").parse().expect("a header value");
        request.headers_mut().insert(header::AUTHORIZATION, bearer);
    }
    let answered = timeout(WAIT, tokio_tungstenite::connect_async(request)).await;
    match answered.expect("the server answers the handshake") {
        Ok((ws, _)) => Ok(ws),
        Err(tungstenite::Error::Http(response)) => {
            let challenge = response.headers().get(header::WWW_AUTHENTICATE);
            let challenge = challenge.map(|v| v.to_str().expect("text").to_string());
            Err((response.status(), challenge))
        }
        Err(e) => panic!("handshake with {url}: {e}"),
    }
}

async fn join(ws: &mut WsClient, room: &str, username: &str) -> ServerEvent {
    let join = ClientMessage::Join {
        room: room.into(),
        username: username.into(),
        since: None,
        epoch: None,
    };
    ws.send(join.to_message()).await.expect("send Join");
    let msg = recv(ws).await;
    unstamped(
        ServerEvent::try_from(&msg).unwrap_or_else(|e| panic!("not a server event: {e}: {msg:?}")),
    )
}

fn signed(claims: &impl serde::Serialize, algorithm: Algorithm, secret: &str) -> String {
    let key = EncodingKey::from_secret(secret.as_bytes()).expect("a key");
    jsonwebtoken::encode(&Header::new(algorithm), claims, &key).expect("a token")
}

/// No token, a token signed with another secret, one that expired an hour
/// ago, one signed with HS384, one without `sub`, and one that is not a
/// token at all: each reads 401 (with `WWW-Authenticate: Bearer`), and the
/// server logs why; a valid token, in the header or in the query, opens
/// the WebSocket.
#[tokio::test]
async fn only_a_valid_token_in_the_header_or_the_query_opens_a_websocket() {
    let (mut server, _file) = server().await;
    let unauthorized = Some((StatusCode::UNAUTHORIZED, Some("Bearer".to_string())));

    let refused = handshake(&server.url, Via::Nothing).await;
    assert_eq!(refused.err(), unauthorized.clone(), "no token");
    server.program.wait_for_log(|l| log_message(l) == "refused, 401: no token").await;

    let now = jsonwebtoken::get_current_timestamp();
    let forged = Secret::new(b"a guess").expect("a secret").make("alice", Duration::from_secs(60));
    let expired =
        signed(&Claims { sub: "alice".into(), exp: now - 3600 }, Algorithm::HS256, SECRET);
    let hs384 = signed(&Claims { sub: "alice".into(), exp: now + 60 }, Algorithm::HS384, SECRET);
    let no_sub = signed(&serde_json::json!({ "exp": now + 60 }), Algorithm::HS256, SECRET);
    let bad = [
        ("another secret", forged.expect("a token")),
        ("expired", expired),
        ("HS384", hs384),
        ("no sub", no_sub),
        ("not a token", "hello".into()),
    ];
    for (what, token) in bad {
        let refused = handshake(&server.url, Via::Header(token.clone())).await;
        assert_eq!(refused.err(), unauthorized.clone(), "{what}, in the header");
        let refused = handshake(&server.url, Via::Query(token)).await;
        assert_eq!(refused.err(), unauthorized.clone(), "{what}, in the query");
        let invalid = |l: &str| log_message(l).starts_with("refused, 401: invalid token");
        server.program.wait_for_log(invalid).await;
    }

    for via in [Via::Header(token("alice")), Via::Query(token("alice"))] {
        let mut ws = handshake(&server.url, via).await.expect("a valid token");
        assert_eq!(join(&mut ws, "general", "alice").await, joined("general", "alice"));
        close_cleanly(&mut ws).await;
    }
    server.stop().await;
}

fn joined(room: &str, username: &str) -> ServerEvent {
    ServerEvent::Joined {
        room: room.into(),
        username: username.into(),
        timestamp: String::new(), // checked and blanked by `unstamped`
        seq: 0,
        epoch: String::new(),
    }
}

/// A token for alice lets its connection join as alice only: a Join as bob
/// gets an Error that names the room, and bob is not in it.
#[tokio::test]
async fn a_join_under_another_name_than_the_tokens_sub_gets_an_error_with_the_room() {
    let (server, _file) = server().await;
    let mut alice = handshake(&server.url, Via::Header(token("alice"))).await.expect("alice");
    match join(&mut alice, "general", "bob").await {
        ServerEvent::Error { room, code, message } => {
            assert_eq!((room.as_deref(), code), (Some("general"), ErrorCode::NotYourName));
            assert!(message.contains("alice"), "{message}");
        }
        other => panic!("expected an Error, got {other:?}"),
    }
    assert_eq!(join(&mut alice, "general", "alice").await, joined("general", "alice"));
    alice.send(ClientMessage::Members { room: "general".into() }.to_message()).await.expect("send");
    let members = ServerEvent::try_from(&recv(&mut alice).await).expect("an event");
    let usernames = vec!["alice".to_string()];
    assert_eq!(members, ServerEvent::Members { room: "general".into(), usernames });
    close_cleanly(&mut alice).await;
    server.stop().await;
}

/// make_token, given the same file, prints one line: a token the server
/// accepts, for the username it was given.
#[tokio::test]
async fn make_tokens_output_is_accepted_by_the_server() {
    let (server, file) = server().await;
    let mut make =
        Program::start("make_token", &["--secret-file", file.arg(), "carol", "--ttl", "60"]);
    let token = make.next_line().await.expect("a token");
    assert_eq!(make.exit_code().await, 0);
    assert_eq!(make.remaining_lines().await, Vec::<String>::new(), "one line");
    let mut ws = handshake(&server.url, Via::Query(token)).await.expect("make_token's token");
    assert_eq!(join(&mut ws, "general", "carol").await, joined("general", "carol"));
    close_cleanly(&mut ws).await;
    server.stop().await;
}
