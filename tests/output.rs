//! Output that cannot hurt a program: a server whose stdout or stderr
//! reader has gone still closes every connection with 1001 on Ctrl-C and
//! exits 0; a program whose stdout reader has gone (`| head -1`) ends
//! quietly, without a panic.
//!
//! Real binaries and real pipes. The test holds a pipe's read end and drops
//! it, which is what `| head -1` leaves behind when `head` exits, and what
//! `2>&1 | tee log` leaves behind when the same Ctrl-C stops `tee`. A write
//! to such a pipe fails with `EPIPE` (Rust ignores `SIGPIPE`), and
//! `println!` or `eprintln!` would panic on it.

mod common;

use std::os::fd::OwnedFd;
use std::process::Stdio;

use common::{
    WAIT, close_cleanly, connect, example_path, expect_close, local_addr, logged_for, recv_text,
    signal,
};
use futures_util::SinkExt;
use tokio::io::{AsyncBufReadExt, AsyncReadExt, BufReader};
use tokio::net::unix::pipe;
use tokio::process::{Child, Command};
use tokio::task::{JoinHandle, JoinSet};
use tokio::time::timeout;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use websocket_tutorial::client::WsClient;

/// Each server with its arguments, what a client sends to be served (if
/// anything), and a piece of what it then receives. A client that got its
/// answer is being served: the server has logged its connection.
const SERVERS: [(&str, &[&str], Option<&str>, &str); 5] = [
    ("echo_server", &[], Some("ping"), "ping"),
    ("broadcast_server_first", &[], Some("ping"), "ping"),
    ("broadcast_server", &[], Some("ping"), "ping"),
    (
        "chat_server",
        &[],
        Some(r#"{"type":"Join","room":"general","username":"alice"}"#),
        r#"{"type":"Joined","room":"general","username":"alice","timestamp":"#,
    ),
    ("data_pusher", &["--interval-ms", "20"], None, r#""seq":"#),
];

/// The in-process demos, which print a few dozen lines and exit.
const DEMOS: [&str; 3] = ["json_messages", "binary_messages", "rooms"];

/// A pipe for a child's output: the write end, to hand to the child, and the
/// read end, which the test reads and then drops.
fn output_pipe() -> (OwnedFd, pipe::Receiver) {
    let (write, read) = pipe::pipe().expect("create a pipe");
    (write.into_blocking_fd().expect("the pipe's write end"), read)
}

/// Example `name` with `args`, its stdin open (so that a client does not see
/// end of input), the default log level, and killed if the test fails.
fn example(name: &str, args: &[&str]) -> Command {
    let mut command = Command::new(example_path(name));
    command.args(args).env_remove("RUST_LOG").stdin(Stdio::piped()).kill_on_drop(true);
    command
}

/// Reads the first line of `read` and returns it; then drops the read end,
/// as `head -1` does.
async fn first_line_then_close(read: pipe::Receiver) -> String {
    let mut line = String::new();
    let mut read = BufReader::new(read);
    timeout(WAIT, read.read_line(&mut line))
        .await
        .expect("a first line in time")
        .expect("read the first line");
    line.trim_end().to_string()
}

/// The URL in a server's first line, `listening on ws://IP:PORT`.
fn url_of(first_line: &str) -> String {
    first_line
        .strip_prefix("listening on ")
        .unwrap_or_else(|| panic!("first line should be `listening on ws://..`: {first_line:?}"))
        .to_string()
}

/// Connects to `url` and gets served as `SERVERS` says.
async fn connect_and_be_served(url: &str, send: Option<&str>, expect: &str) -> WsClient {
    let mut ws = connect(url).await;
    if let Some(text) = send {
        ws.send(Message::text(text)).await.expect("send");
    }
    let got = recv_text(&mut ws).await;
    assert!(got.contains(expect), "expected {expect:?} in {got:?}");
    ws
}

/// Reads all of `child`'s piped stderr in the background.
fn collect_stderr(child: &mut Child) -> JoinHandle<String> {
    let mut stderr = child.stderr.take().expect("piped stderr");
    tokio::spawn(async move {
        let mut text = String::new();
        let _ = stderr.read_to_string(&mut text).await;
        text
    })
}

/// Waits for `child` to exit, within [`WAIT`], and returns its exit code.
async fn exit_code(child: &mut Child) -> i32 {
    let status =
        timeout(WAIT, child.wait()).await.expect("exited in time").expect("wait for the program");
    status.code().expect("exited normally, not by a signal")
}

/// `server 2>&1 | tee log`, then Ctrl-C, which stops `tee` too: both stdout
/// and stderr go into one pipe whose reader has gone. The server still
/// closes its client with 1001 and exits 0. (Its Ctrl-C handler used to
/// panic on `eprintln!` before it cancelled anything, and the server went
/// on serving.)
#[tokio::test]
async fn a_server_whose_output_reader_is_gone_still_shuts_down_on_ctrl_c() {
    for (name, args, send, expect) in SERVERS {
        let (write, read) = output_pipe();
        let write_too = write.try_clone().expect("duplicate the pipe's write end");
        let mut server = example(name, &[&["127.0.0.1:0"], args].concat())
            .stdout(write)
            .stderr(write_too)
            .spawn()
            .expect("start the server");
        // Everything from here on, the connection's log lines and the
        // Ctrl-C line included, goes into a pipe nobody reads.
        let url = url_of(&first_line_then_close(read).await);

        let mut ws = connect_and_be_served(&url, send, expect).await;
        signal(&server, "INT");
        assert_eq!(expect_close(&mut ws).await, CloseCode::Away, "{name}: close code");
        assert_eq!(exit_code(&mut server).await, 0, "{name}: exit code after Ctrl-C");
    }
}

/// `server | tee log`, then Ctrl-C: only stdout's reader has gone, after
/// the `listening on` line. The server's log (stderr) carries on, Ctrl-C
/// closes the client with 1001, the server exits 0 and nothing panicked.
/// (Servers used to print their connection lines on stdout, and the
/// shutdown's "failed printing to stdout" panics left clients with a reset.)
#[tokio::test]
async fn a_server_whose_stdout_reader_is_gone_logs_and_shuts_down_on_ctrl_c() {
    for (name, args, send, expect) in SERVERS {
        let (write, read) = output_pipe();
        let mut server = example(name, &[&["127.0.0.1:0"], args].concat())
            .stdout(write)
            .stderr(Stdio::piped())
            .spawn()
            .expect("start the server");
        let stderr = collect_stderr(&mut server);
        let url = url_of(&first_line_then_close(read).await);

        let mut ws = connect_and_be_served(&url, send, expect).await;
        let peer = local_addr(&ws);
        signal(&server, "INT");
        assert_eq!(expect_close(&mut ws).await, CloseCode::Away, "{name}: close code");
        assert_eq!(exit_code(&mut server).await, 0, "{name}: exit code after Ctrl-C");

        let stderr = timeout(WAIT, stderr).await.expect("stderr closed").expect("stderr read");
        assert!(!stderr.contains("panicked"), "{name}: {stderr}");
        let logged = |event| stderr.lines().any(|line| logged_for(line, &peer, event));
        assert!(logged("connected") && logged("disconnected"), "{name}: {stderr}");
        assert!(stderr.contains("Ctrl-C: closing every connection"), "{name}: {stderr}");
    }
}

/// A server whose stderr nobody reads: the pipe fills up (64 KiB, some 400
/// connections' worth of log lines), and then the log writer's queue (4,096
/// lines). The server keeps serving all the while, because no connection
/// ever waits for stderr: lines wait in the queue, then are dropped, and the
/// log says how many once stderr is read again. (A writer that wrote from
/// the runtime's threads would block each of them in turn, and the server
/// would stop.)
#[tokio::test]
async fn a_server_whose_stderr_nobody_reads_keeps_serving() {
    const CONNECTIONS: usize = 3_000; // 6,000 log lines
    const AT_ONCE: usize = 50;
    let (stdout, read_stdout) = output_pipe();
    let (stderr, read_stderr) = output_pipe();
    let mut server = example("echo_server", &["127.0.0.1:0"])
        .stdout(stdout)
        .stderr(stderr)
        .spawn()
        .expect("start the server");
    let url = url_of(&first_line_then_close(read_stdout).await);

    for batch in 0..CONNECTIONS / AT_ONCE {
        let mut clients = JoinSet::new();
        for _ in 0..AT_ONCE {
            let url = url.clone();
            clients.spawn(async move {
                let mut ws = connect_and_be_served(&url, Some("ping"), "ping").await;
                close_cleanly(&mut ws).await;
            });
        }
        let served = timeout(WAIT, clients.join_all()).await;
        assert!(served.is_ok(), "batch {batch} of {AT_ONCE} clients not served in time");
    }

    let mut ws = connect_and_be_served(&url, Some("ping"), "ping").await;
    // Read stderr again, so that the server's log writer can catch up.
    let mut read_stderr = read_stderr;
    let log = tokio::spawn(async move {
        let mut text = String::new();
        let _ = read_stderr.read_to_string(&mut text).await;
        text
    });
    signal(&server, "INT");
    assert_eq!(expect_close(&mut ws).await, CloseCode::Away, "close code");
    assert_eq!(exit_code(&mut server).await, 0, "exit code after Ctrl-C");
    let log = timeout(WAIT, log).await.expect("stderr closed").expect("stderr read");
    assert!(log.contains("log lines dropped: stderr was not keeping up"), "{log}");
    assert!(!log.contains("panicked"), "{log}");
}

/// `demo | head -1`, with `head` gone before the demo writes: every write
/// to stdout fails. The demo stops at the first and exits 0, with nothing on
/// stderr (`println!` panicked there). The reader goes first so that the
/// test does not depend on timing: a reader that took one line and then
/// went would usually find the demo's few lines already in the pipe.
#[tokio::test]
async fn a_demo_whose_stdout_reader_is_gone_ends_quietly() {
    for name in DEMOS {
        let (write, read) = output_pipe();
        drop(read);
        let mut demo = example(name, &[]).stdout(write).stderr(Stdio::piped()).spawn().expect(name);
        let stderr = collect_stderr(&mut demo);
        assert_eq!(exit_code(&mut demo).await, 0, "{name}: exit code");
        let stderr = timeout(WAIT, stderr).await.expect("stderr closed").expect("stderr read");
        assert_eq!(stderr, "", "{name} writes nothing to stderr");
    }
}

/// `full_client URL | head -1` against a server that never stops sending:
/// once nobody reads its stdout, the client closes the connection properly
/// (the server logs a disconnect, not an error) and exits 0.
#[tokio::test]
async fn a_client_whose_stdout_reader_is_gone_closes_and_exits() {
    let (write, read) = output_pipe();
    let mut pusher = example("data_pusher", &["127.0.0.1:0", "--interval-ms", "20"])
        .stdout(write)
        .stderr(Stdio::piped())
        .spawn()
        .expect("start data_pusher");
    let pusher_log = collect_stderr(&mut pusher);
    let url = url_of(&first_line_then_close(read).await);

    let (write, read) = output_pipe();
    let mut client = example("full_client", &[&url])
        .stdout(write)
        .stderr(Stdio::piped())
        .spawn()
        .expect("start full_client");
    let client_log = collect_stderr(&mut client);
    let first = first_line_then_close(read).await;
    assert!(first.starts_with("< {\"seq\":"), "{first}");
    // Its stdin stays open: it is the closed stdout that ends the client.
    assert_eq!(exit_code(&mut client).await, 0, "full_client's exit code");
    let client_log = timeout(WAIT, client_log).await.expect("stderr closed").expect("read");
    assert!(!client_log.contains("panicked"), "{client_log}");

    signal(&pusher, "INT");
    assert_eq!(exit_code(&mut pusher).await, 0, "data_pusher's exit code");
    let pusher_log = timeout(WAIT, pusher_log).await.expect("stderr closed").expect("read");
    let disconnects = pusher_log.lines().filter(|l| l.ends_with(": disconnected")).count();
    assert_eq!(disconnects, 1, "{pusher_log}");
    let server_closed = pusher_log.contains("}: closing");
    assert!(!server_closed, "closed by the client, not the server: {pusher_log}");
}
