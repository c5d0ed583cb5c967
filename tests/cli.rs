//! The examples' command lines, run for real: `--help`, mistakes in the
//! arguments (clap's error and exit code 2, never a panic), and the
//! addresses and URLs a new user gets wrong.

mod common;

use std::time::Duration;

use common::{Program, Server, TempFile, example_path};
use tokio::net::TcpListener;
use tokio::process::Command;
use tokio::time::timeout;

/// Every example: each has a `--help`, and each refuses a flag it does not
/// know.
const EXAMPLES: [&str; 20] = [
    "echo_client_first",
    "echo_server_first",
    "echo_client",
    "echo_server",
    "full_client_first",
    "full_client",
    "reconnect_client",
    "broadcast_server_first",
    "broadcast_server",
    "rooms",
    "json_messages",
    "binary_messages",
    "chat_server_first",
    "chat_server",
    "chat_client_first",
    "chat_client",
    "data_pusher",
    "make_token",
    "make_cert",
    "autobahn_client",
];

/// Runs `program` to its end and returns its exit code and its stderr.
async fn run_to_end(mut program: Program) -> (i32, String) {
    let code = program.exit_code().await;
    (code, program.stderr_text().await)
}

/// Checks that `stderr` is clap's report of one mistake: it starts with the
/// one line `error: ...` that names `expected`, and no other line is an
/// error (what follows is clap's usage line and its `--help` tip).
fn assert_usage_error(stderr: &str, expected: &str) {
    let first = stderr.lines().next().unwrap_or_default();
    assert!(first.starts_with("error: ") && first.contains(expected), "{stderr}");
    let errors = stderr.lines().filter(|l| l.starts_with("error")).count();
    assert_eq!(errors, 1, "one error line: {stderr}");
    assert!(!stderr.contains("panicked"), "{stderr}");
}

/// `--help` prints the usage with the defaults, on stdout, and exits 0.
#[tokio::test]
async fn help_shows_the_usage_and_the_defaults() {
    for name in EXAMPLES {
        let mut program = Program::start(name, &["--help"]);
        let help = program.remaining_lines().await.join("\n");
        assert_eq!(program.exit_code().await, 0, "{name} --help");
        assert!(help.contains(&format!("Usage: {name}")), "{name}: {help}");
    }
    for (name, default) in [
        ("echo_client", "[default: ws://127.0.0.1:9001]"),
        ("echo_server", "[default: 127.0.0.1:9001]"),
        ("reconnect_client", "--max-attempts <N>"),
        ("broadcast_server_first", "[default: 128]"),
        ("broadcast_server", "[default: 128]"),
        ("chat_server", "[default: 1048576]"),
        ("data_pusher", "[default: 1000]"),
    ] {
        let mut program = Program::start(name, &["--help"]);
        let help = program.remaining_lines().await.join("\n");
        assert!(help.contains(default), "{name} --help shows {default}: {help}");
    }
}

/// A flag nobody declared is an error and exit code 2, in every example,
/// including those that take no arguments at all; so is an extra
/// positional argument.
#[tokio::test]
async fn an_unknown_flag_or_an_extra_argument_is_a_usage_error() {
    for name in EXAMPLES {
        let (code, stderr) = run_to_end(Program::start(name, &["--no-such-flag"])).await;
        assert_eq!(code, 2, "{name} --no-such-flag: {stderr}");
        assert_usage_error(&stderr, "--no-such-flag");
    }
    for (name, args) in [
        ("rooms", &["extra"][..]),
        ("echo_server", &["127.0.0.1:0", "extra"]),
        ("chat_client", &["ws://127.0.0.1:9", "alice", "extra"]),
    ] {
        let (code, stderr) = run_to_end(Program::start(name, args)).await;
        assert_eq!(code, 2, "{name} {args:?}: {stderr}");
        assert_usage_error(&stderr, "extra");
    }
}

/// The mistake a new user made: `--verbose` was once "needs a value"; it
/// is simply not a flag of the chat server.
#[tokio::test]
async fn chat_server_verbose_is_an_unknown_flag() {
    let (code, stderr) = run_to_end(Program::start("chat_server", &["--verbose"])).await;
    assert_eq!(code, 2, "{stderr}");
    assert_usage_error(&stderr, "unexpected argument '--verbose'");
}

/// Zero, negative and non-numeric values are refused where they make no
/// sense, naming the flag; so is a flag without its value.
#[tokio::test]
async fn bad_values_are_usage_errors() {
    for (name, flag, value) in [
        ("chat_server", "--outbox-bytes", Some("0")),
        ("chat_server", "--outbox-bytes", Some("-5")),
        ("chat_server", "--rate-limit", Some("fast")),
        ("chat_server", "--rate-limit", Some("0")),
        ("chat_server", "--rate-burst", Some("0")),
        ("chat_server", "--presence-limit", Some("0")),
        ("chat_server", "--history", Some("0")),
        ("chat_server", "--redis", Some("not-a-url")),
        ("chat_server", "--redis", Some("http://127.0.0.1:6379")),
        ("chat_server", "--presence-limit", Some("1.5")),
        ("chat_server", "--max-connections", Some("0")),
        ("chat_server", "--ping-ms", Some("-1")),
        ("chat_server", "--send-timeout-ms", None),
        ("data_pusher", "--interval-ms", Some("0")),
        ("data_pusher", "--pong-timeout-ms", Some("soon")),
        ("data_pusher", "--send-timeout-ms", Some("0")),
        ("reconnect_client", "--ping-ms", Some("0")),
        ("reconnect_client", "--max-attempts", Some("-3")),
        ("broadcast_server_first", "--capacity", Some("0")),
        ("broadcast_server_first", "--capacity", Some("100000")),
        ("broadcast_server", "--capacity", Some("0")),
        ("broadcast_server", "--capacity", Some("100000")),
        ("broadcast_server", "--max-connections", Some("0")),
        ("broadcast_server", "--ping-ms", Some("0")),
        ("echo_server", "--max-connections", Some("-1")),
        ("echo_server", "--send-timeout-ms", Some("0")),
        ("echo_server", "--pong-timeout-ms", Some("soon")),
        ("echo_server", "--max-per-ip", Some("0")),
        ("broadcast_server", "--max-per-ip", Some("many")),
        ("data_pusher", "--max-per-ip", Some("-1")),
        ("chat_server", "--trust-proxy", None),
        ("echo_server", "--proxy-header", Some("x-real-ip")),
        ("chat_server", "--allow-origin", None),
        ("chat_server", "--auth-secret-file", None),
        ("make_token", "--ttl", Some("0")),
        ("make_token", "--ttl", Some("-60")),
        ("make_token", "--secret-file", None),
        ("chat_client", "--token", Some("Bearer abc")),
        ("chat_client", "--token", None),
        ("broadcast_server", "--tls-cert", None),
        ("data_pusher", "--tls-key", None),
        ("echo_client", "--ca-cert", None),
        ("reconnect_client", "--ca-cert", None),
        ("autobahn_client", "--agent", Some("a&b")),
    ] {
        let mut args = vec![flag];
        args.extend(value);
        let (code, stderr) = run_to_end(Program::start(name, &args)).await;
        assert_eq!(code, 2, "{name} {args:?}: {stderr}");
        assert_usage_error(&stderr, flag);
    }
}

/// A `--trust-proxy` that is not an address block is a usage error, on
/// every server, that names the value and says what to give instead.
#[tokio::test]
async fn a_malformed_trusted_proxy_is_a_usage_error_naming_it() {
    for (name, cidr) in [
        ("chat_server", "10.0.0.0/33"),
        ("echo_server", "localhost"),
        ("broadcast_server", "10.0.0.0/"),
        ("data_pusher", "fd00::/129"),
    ] {
        let (code, stderr) = run_to_end(Program::start(name, &["--trust-proxy", cidr])).await;
        assert_eq!(code, 2, "{name} --trust-proxy {cidr}: {stderr}");
        assert_usage_error(&stderr, &format!("'{cidr}'"));
        assert!(stderr.contains("--trust-proxy") && stderr.contains("ADDR/PREFIX"), "{stderr}");
    }
}

/// An `--allow-origin` that is not `scheme://host[:port]` or `null` is a
/// usage error that names the value and says what to give instead.
#[tokio::test]
async fn a_malformed_origin_is_a_usage_error_naming_it() {
    for (name, origin) in [
        ("chat_server", "chat.example.com"),
        ("echo_server", "https://chat.example.com/rooms"),
        ("broadcast_server", "https://chat.example.com:99999"),
        ("data_pusher", "*"),
    ] {
        let (code, stderr) = run_to_end(Program::start(name, &["--allow-origin", origin])).await;
        assert_eq!(code, 2, "{name} --allow-origin {origin}: {stderr}");
        assert_usage_error(&stderr, &format!("'{origin}'"));
        assert!(
            stderr.contains("--allow-origin") && stderr.contains("scheme://host[:port]"),
            "{stderr}"
        );
    }
}

/// A token secret file that cannot be read, or holds only whitespace, is
/// one line naming the file and exit code 1, for the server (which then
/// never listens) and for make_token alike.
#[tokio::test]
async fn an_unreadable_or_empty_secret_file_is_one_line_naming_it_and_exit_1() {
    let empty = TempFile::new(" \n\t\n");
    let missing = empty.path.with_file_name("missing");
    let missing = missing.to_str().expect("a UTF-8 path");
    for (path, why) in [(empty.arg(), "is empty"), (missing, "cannot read")] {
        for (name, args) in [
            ("chat_server", vec!["127.0.0.1:0", "--auth-secret-file", path]),
            ("make_token", vec!["--secret-file", path, "alice"]),
        ] {
            let mut program = Program::start(name, &args);
            assert_eq!(program.remaining_lines().await, Vec::<String>::new(), "{name}: no stdout");
            let (code, stderr) = run_to_end(program).await;
            assert_eq!(code, 1, "{name} {path}: {stderr}");
            let lines: Vec<&str> = stderr.lines().collect();
            let [line] = lines[..] else { panic!("{name}: one line: {stderr}") };
            assert!(line.starts_with("error: ") && line.contains(why), "{line}");
            assert!(line.contains(path), "{name}: names the file: {line}");
        }
    }
}

/// An argument that is not UTF-8 is an error, not a panic.
#[cfg(unix)]
#[tokio::test]
async fn an_argument_that_is_not_utf8_is_a_usage_error_not_a_panic() {
    use std::ffi::OsStr;
    use std::os::unix::ffi::OsStrExt;

    let not_utf8 = OsStr::from_bytes(b"\xff");
    for (name, before) in [("echo_client", Some("ws://127.0.0.1:9")), ("chat_server", None)] {
        let mut command = Command::new(example_path(name));
        command.args(before).arg(not_utf8);
        let (code, stderr) = run_to_end(Program::spawn(command)).await;
        assert_eq!(code, 2, "{name}: {stderr}");
        assert_usage_error(&stderr, "UTF-8");
    }
}

/// `http://...` and a URL without a scheme get a hint to use
/// `ws://HOST:PORT`, and no TCP connection is opened: a listener of our
/// own on the very port named receives nothing.
#[tokio::test]
async fn a_url_that_is_not_ws_gets_a_hint_and_opens_no_connection() {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("local address");
    for (name, url) in [
        ("echo_client", format!("http://{addr}")),
        ("echo_client", addr.to_string()),
        ("full_client", format!("https://{addr}/")),
        ("reconnect_client", format!("http://{addr}")),
        ("chat_client", format!("http://{addr}")),
    ] {
        let mut args = vec![url.as_str()];
        if name == "chat_client" {
            args.push("alice");
        }
        let (code, stderr) = run_to_end(Program::start(name, &args)).await;
        assert_ne!(code, 0, "{name} {url}: {stderr}");
        assert_usage_error(&stderr, "use ws://HOST:PORT");
        assert!(stderr.contains(&format!("ws://{addr}")), "the URL meant: {stderr}");
    }
    // Every client has exited: a connection it had opened would be waiting
    // in the listener's backlog, and accept would return it at once.
    let accepted = timeout(Duration::from_millis(300), listener.accept()).await;
    assert!(accepted.is_err(), "a client connected: {accepted:?}");
}

/// chat_client refuses an empty name (or one of spaces only) before it
/// connects, as a usage error (exit 2) that says what a name must be: the
/// server would only refuse the join, and the client would sit in no room.
#[tokio::test]
async fn chat_client_refuses_an_empty_name_before_connecting() {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let url = format!("ws://{}", listener.local_addr().expect("local address"));
    for name in ["", "   "] {
        let (code, stderr) = run_to_end(Program::start("chat_client", &[&url, name])).await;
        assert_eq!(code, 2, "{name:?}: {stderr}");
        assert_usage_error(&stderr, "username must be 1 to 32 characters");
    }
    let accepted = timeout(Duration::from_millis(300), listener.accept()).await;
    assert!(accepted.is_err(), "chat_client connected: {accepted:?}");
}

/// A server given a bare port is told to give IP:PORT, with an example
/// built from that port.
#[tokio::test]
async fn a_server_given_a_bare_port_is_told_to_give_ip_and_port() {
    let servers =
        ["echo_server", "broadcast_server_first", "broadcast_server", "chat_server", "data_pusher"];
    for name in servers {
        let (code, stderr) = run_to_end(Program::start(name, &["9002"])).await;
        assert_eq!(code, 2, "{name} 9002: {stderr}");
        assert_usage_error(&stderr, "IP:PORT");
        assert!(stderr.contains("127.0.0.1:9002"), "{stderr}");
    }
}

/// A query right after the port (`ws://IP:PORT?x=1`, no `/`) works as
/// `ws://IP:PORT/?x=1` does.
#[tokio::test]
async fn a_query_without_a_path_reaches_the_server() {
    let server = Server::start("echo_server", &[]).await;
    let url = format!("{}?x=1", server.url);
    let mut client = Program::start("echo_client", &[&url, "with a query"]);
    assert_eq!(client.next_line().await.as_deref(), Some("with a query"));
    assert_eq!(client.exit_code().await, 0, "{}", client.stderr_text().await);
    server.stop().await;
}
