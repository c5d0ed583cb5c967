//! wss:// (chapter 10.6): a server started with `--tls-cert` and `--tls-key`
//! speaks TLS (rustls) before the WebSocket handshake. The certificates are
//! made here, at run time, with rcgen: a CA of our own, and a certificate
//! it signs for 127.0.0.1 and localhost, which the client trusts through
//! that CA only. Real servers, real sockets.

mod common;

use common::*;
use futures_util::{SinkExt, StreamExt};
use tokio::net::TcpStream;
use tokio::time::timeout;
use tokio_rustls::rustls::pki_types::ServerName;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use websocket_tutorial::client::{self, WsClient};

/// Echoes one message over wss to the server at `addr`, checking its
/// certificate against the test CA.
async fn echo_over_tls(certificates: &Certificates, addr: &str) {
    let tcp = TcpStream::connect(addr).await.expect("TCP connect");
    let name = ServerName::try_from("127.0.0.1").expect("a server name");
    let tls = certificates.connector().connect(name, tcp).await.expect("TLS handshake");
    let url = format!("wss://{addr}");
    let (mut ws, _) = tokio_tungstenite::client_async(url, tls).await.expect("WebSocket handshake");
    ws.send(Message::text("over TLS")).await.expect("send");
    let reply = timeout(WAIT, ws.next()).await.expect("a reply in time");
    assert_eq!(reply.expect("a message").expect("no error"), Message::text("over TLS"));
    ws.close(None).await.expect("close");
}

/// Connects to `url` (`wss://`) the way the project's clients do with
/// `--ca-cert`: `client::connect_with`, trusting the test CA.
async fn connect_wss(certificates: &Certificates, url: &str) -> WsClient {
    assert!(url.starts_with("wss://"), "{url}");
    let trust = client::trust(&certificates.ca.path).expect("the test CA");
    let connecting = client::connect_with(url, WebSocketConfig::default(), None, Some(&trust));
    connecting.await.unwrap_or_else(|e| panic!("connect to {url}: {e}"))
}

#[tokio::test]
async fn a_server_with_a_certificate_serves_wss_and_a_plain_text_client_fails_alone() {
    let certificates = Certificates::new();
    let mut server = Server::start("echo_server", &certificates.args()).await;
    assert!(server.url.starts_with("wss://"), "{}", server.url);

    // A client that skips TLS: its HTTP request is no TLS record, so the
    // server's TLS handshake fails, and that one connection ends.
    let plain = format!("ws://{}", server.addr);
    let refused = client::connect(&plain, WebSocketConfig::default()).await;
    // It fails at once, not at a deadline: the client's, or the server's.
    let error = refused.expect_err("a plain-text handshake on a TLS port fails").to_string();
    assert!(!error.contains("timed out"), "{error}");
    let (failed, _) = server.program.wait_for_log(|line| line.contains("handshake failed")).await;
    assert!(!failed.contains("timed out"), "{failed}");

    // The server is still up, and serves a client that speaks TLS.
    echo_over_tls(&certificates, &server.addr).await;
    server.stop().await;
}

#[tokio::test]
async fn chat_server_says_wss_in_its_first_line_and_chats_over_tls() {
    let certificates = Certificates::new();
    let server = Server::start("chat_server", &certificates.args()).await;
    assert!(server.url.starts_with("wss://"), "{}", server.url);
    // A TLS client, checking the name `localhost` this time, completes the
    // TLS and WebSocket handshakes and joins a room.
    let tcp = TcpStream::connect(&server.addr).await.expect("TCP connect");
    let name = ServerName::try_from("localhost").expect("a server name");
    let tls = certificates.connector().connect(name, tcp).await.expect("TLS handshake");
    let (mut ws, _) =
        tokio_tungstenite::client_async(&server.url, tls).await.expect("WebSocket handshake");
    let join = r#"{"type":"Join","room":"general","username":"alice"}"#;
    ws.send(Message::text(join)).await.expect("send");
    let first = timeout(WAIT, ws.next()).await.expect("an event in time");
    let text = first.expect("a message").expect("no error").into_text().expect("text");
    assert!(text.contains(r#""type":"Joined""#), "{text}");
    ws.close(None).await.expect("close");
    server.stop().await;
}

#[tokio::test]
async fn unreadable_empty_or_missing_certificate_files_are_one_line_naming_the_file() {
    let certificates = Certificates::new();
    let empty = TempFile::new("");
    let missing = "/nonexistent/cert.pem";
    for (cert, key, says) in [
        (missing, certificates.key.arg(), "cannot read the certificate file"),
        (empty.arg(), certificates.key.arg(), "holds no PEM certificate"),
        (certificates.cert.arg(), empty.arg(), "holds no PEM private key"),
        (certificates.cert.arg(), certificates.ca.arg(), "holds no PEM private key"),
    ] {
        let args = ["127.0.0.1:0", "--tls-cert", cert, "--tls-key", key];
        let mut server = Program::start("chat_server", &args);
        assert_eq!(server.exit_code().await, 1, "{args:?}");
        let stderr = server.stderr_text().await;
        let error = stderr.lines().last().unwrap_or_default();
        let named = if says.contains("certificate") { cert } else { key };
        assert!(error.starts_with("error: ") && error.contains(says), "{args:?}: {stderr}");
        assert!(error.contains(named), "names {named}: {error}");
    }
    // One flag without the other is a usage error: clap's exit code 2.
    let mut server = Program::start("chat_server", &["127.0.0.1:0", "--tls-cert", missing]);
    assert_eq!(server.exit_code().await, 2);
    // Every server reads the files the same way, before it listens.
    for name in ["echo_server", "broadcast_server", "data_pusher"] {
        let args = ["127.0.0.1:0", "--tls-cert", missing, "--tls-key", certificates.key.arg()];
        let mut server = Program::start(name, &args);
        assert_eq!(server.remaining_lines().await, Vec::<String>::new(), "{name}: no stdout");
        assert_eq!(server.exit_code().await, 1, "{name}");
        let stderr = server.stderr_text().await;
        assert!(stderr.contains("cannot read the certificate file") && stderr.contains(missing));
    }
}

#[tokio::test]
async fn the_clients_talk_over_wss_trusting_the_ca_they_are_given() {
    let certificates = Certificates::new();
    let echo = Server::start("echo_server", &certificates.args()).await;
    let ca = ["--ca-cert", certificates.ca.arg()];
    let mut client = Program::start("full_client", &[&echo.url, ca[0], ca[1]]);
    client.write_stdin("one\ntwo\n").await;
    client.close_stdin();
    let lines = client.remaining_lines().await;
    assert_eq!(lines, ["< one", "< two", "closed: 1000 (end of input)"]);
    assert_eq!(client.exit_code().await, 0);

    // Without --ca-cert only the system's authorities count, and none of
    // them signed the test's certificate: no connection, exit 1.
    let mut untrusting = Program::start("full_client", &[&echo.url]);
    assert_eq!(untrusting.exit_code().await, 1);
    let stderr = untrusting.stderr_text().await;
    assert!(stderr.contains("cannot connect") && stderr.contains("certificate"), "{stderr}");
    echo.stop().await;

    let chat = Server::start("chat_server", &certificates.args()).await;
    let mut alice = Program::start("chat_client", &[&chat.url, "alice", ca[0], ca[1]]);
    alice.wait_for(|l| l.ends_with("#general * alice joined")).await;
    alice.write_stdin("hello over TLS\n").await;
    alice.wait_for(|l| l.ends_with("#general <alice> hello over TLS")).await;
    alice.close_stdin();
    assert_eq!(alice.exit_code().await, 0);
    chat.stop().await;
}

#[tokio::test]
async fn a_ca_file_that_cannot_be_read_or_holds_no_certificate_is_named() {
    let empty = TempFile::new("");
    let clients = ["full_client", "chat_client", "echo_client", "reconnect_client"];
    for (file, says) in [("/nonexistent/ca.pem", "cannot read"), (empty.arg(), "no PEM")] {
        for name in clients {
            // Read before any connection: nothing listens at this URL, and
            // reconnect_client does not retry a file it cannot use.
            let args = ["wss://127.0.0.1:9443", "--ca-cert", file];
            let mut client = Program::start(name, &args);
            assert_eq!(client.exit_code().await, 1, "{name} {args:?}");
            let stderr = client.stderr_text().await;
            assert!(stderr.contains(says) && stderr.contains(file), "{name} {args:?}: {stderr}");
        }
    }
}

/// broadcast_server and data_pusher take the same flags: each says wss in
/// its first line, and a client that trusts the test CA gets what it
/// serves, the sender's own message back from one, samples from the other.
#[tokio::test]
async fn broadcast_server_and_data_pusher_serve_wss() {
    let certificates = Certificates::new();
    let mut broadcast = Server::start("broadcast_server", &certificates.args()).await;
    assert!(broadcast.url.starts_with("wss://"), "{}", broadcast.url);
    let mut a = connect_wss(&certificates, &broadcast.url).await;
    let mut b = connect_wss(&certificates, &broadcast.url).await;
    // Both subscribed (the server logs a client once it is): both get it.
    for _ in 0..2 {
        broadcast.program.wait_for_log(|line| line.ends_with(": connected")).await;
    }
    a.send(Message::text("to everyone, over TLS")).await.expect("send");
    assert_eq!(recv_text(&mut a).await, "to everyone, over TLS");
    assert_eq!(recv_text(&mut b).await, "to everyone, over TLS");
    close_cleanly(&mut a).await;
    close_cleanly(&mut b).await;
    broadcast.stop().await;

    let mut args = vec!["--interval-ms", "50"];
    args.extend(certificates.args());
    let pusher = Server::start("data_pusher", &args).await;
    assert!(pusher.url.starts_with("wss://"), "{}", pusher.url);
    let mut watcher = connect_wss(&certificates, &pusher.url).await;
    for _ in 0..2 {
        let sample = recv_text(&mut watcher).await;
        assert!(sample.starts_with(r#"{"seq":"#), "a sample: {sample}");
    }
    close_cleanly(&mut watcher).await;
    pusher.stop().await;
}

/// echo_client and reconnect_client take --ca-cert too. echo_client gets
/// its echo over wss, and without the flag refuses the test's certificate;
/// reconnect_client trusts the CA on every connection, the one after the
/// server's restart included.
#[tokio::test]
async fn echo_client_and_reconnect_client_talk_over_wss_with_the_ca_they_are_given() {
    let certificates = Certificates::new();
    let ca = ["--ca-cert", certificates.ca.arg()];
    let echo = Server::start("echo_server", &certificates.args()).await;
    let mut client = Program::start("echo_client", &[&echo.url, "over TLS", ca[0], ca[1]]);
    assert_eq!(client.remaining_lines().await, ["over TLS"]);
    assert_eq!(client.exit_code().await, 0);
    let mut untrusting = Program::start("echo_client", &[&echo.url, "over TLS"]);
    assert_eq!(untrusting.exit_code().await, 1);
    let stderr = untrusting.stderr_text().await;
    assert!(stderr.contains("cannot connect") && stderr.contains("certificate"), "{stderr}");

    let mut client = Program::start(
        "reconnect_client",
        &[&echo.url, "--base-ms", "20", "--cap-ms", "200", "--max-attempts", "0", ca[0], ca[1]],
    );
    client.wait_for(|l| l == "< hello (connection 1)").await;
    // The same address, a new process: a new TLS handshake to trust.
    let addr = echo.addr.clone();
    echo.stop().await;
    client.wait_for_log(|l| log_message(l).starts_with("connection lost")).await;
    let echo = Server::start_on("echo_server", &addr, &certificates.args()).await;
    client.wait_for(|l| l == "< hello (connection 2)").await;
    client.interrupt();
    assert_eq!(client.exit_code().await, 0);
    echo.stop().await;
}

/// A clean close after a broken rule holds over TLS too: a message over
/// chat_server's 64 KiB limit gets the 1009 close frame, and then the end
/// of the stream, TLS's close_notify and the FIN, not a reset and not a TLS
/// stream cut short. (The server ends the TLS session and reads away the
/// rest of the message, as on plain TCP; closing on the unread rest, the
/// client's next read fails instead.)
#[tokio::test]
async fn over_tls_a_message_over_the_limit_gets_1009_and_then_a_clean_end() {
    let certificates = Certificates::new();
    let server = Server::start("chat_server", &certificates.args()).await;
    let mut ws = connect_wss(&certificates, &server.url).await;
    // 1 MiB: far over the limit, so most of it is still unread when the
    // server refuses it, and within what the server reads away (4 MiB).
    let _ = ws.send(Message::text("x".repeat(1 << 20))).await;
    assert_eq!(expect_close(&mut ws).await, CloseCode::Size);
    expect_clean_end(&mut ws).await;
    drop(ws);

    // The server is unharmed: the next client joins a room.
    let mut next = connect_wss(&certificates, &server.url).await;
    next.send(Message::text(r#"{"type":"Join","room":"general","username":"bob"}"#))
        .await
        .expect("send");
    let joined = recv_text(&mut next).await;
    assert!(joined.contains(r#""type":"Joined""#), "{joined}");
    close_cleanly(&mut next).await;
    server.stop().await;
}

/// Chapter 10.6's steps, as a reader follows them: `make_cert DIR` writes
/// a CA, a certificate for 127.0.0.1 and its key (the key readable by its
/// owner only); chat_server serves wss:// with them, and chat_client,
/// trusting that CA, joins and chats. A second run refuses to overwrite.
#[tokio::test]
async fn make_cert_makes_what_a_wss_server_and_its_clients_need() {
    let dir = std::env::temp_dir().join(format!("make-cert-test-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let dir_arg = dir.to_str().expect("a UTF-8 temporary directory");
    let mut made = Program::start("make_cert", &[dir_arg]);
    let files = made.remaining_lines().await;
    assert_eq!(made.exit_code().await, 0, "{}", made.stderr_text().await);
    let [ca, cert, key] = ["ca.pem", "cert.pem", "key.pem"].map(|f| dir.join(f));
    let expected: Vec<String> =
        [&ca, &cert, &key].iter().map(|p| p.display().to_string()).collect();
    assert_eq!(files, expected, "it prints the paths it wrote");
    let mode =
        std::os::unix::fs::PermissionsExt::mode(&std::fs::metadata(&key).unwrap().permissions());
    assert_eq!(mode & 0o077, 0, "the key is readable by its owner only: {mode:o}");

    let (cert, key, ca) =
        (cert.display().to_string(), key.display().to_string(), ca.display().to_string());
    let server = Server::start("chat_server", &["--tls-cert", &cert, "--tls-key", &key]).await;
    assert!(server.url.starts_with("wss://"), "{}", server.url);
    let mut alice = Program::start("chat_client", &[&server.url, "alice", "--ca-cert", &ca]);
    alice.wait_for(|l| l.ends_with("#general * alice joined")).await;
    alice.write_stdin("over TLS\n").await;
    alice.wait_for(|l| l.ends_with("#general <alice> over TLS")).await;
    alice.write_stdin("/quit\n").await;
    assert_eq!(alice.exit_code().await, 0);
    server.stop().await;

    let mut again = Program::start("make_cert", &[dir_arg]);
    assert_eq!(again.exit_code().await, 1);
    let stderr = again.stderr_text().await;
    assert!(stderr.contains("exists already") && stderr.contains("ca.pem"), "{stderr}");
    std::fs::remove_dir_all(&dir).expect("remove the test's directory");
}
