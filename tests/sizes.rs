//! What every connection holds for its whole life stays what chapter 8.4
//! measured. Each server says at start, with `RUST_LOG=debug`, how many
//! bytes its connection handler's future takes (`server::serve` logs
//! `size_of` of it): that state exists once per connection from its first
//! moment to its last, before any message, so ten thousand idle chat members
//! pay it ten thousand times. Sizes, not times: the same build gives the
//! same numbers on any machine, however busy.
//!
//! The budgets are today's sizes in the debug build that `cargo test` runs
//! (a release build's are up to 16 bytes smaller; chapter 8.4 quotes those).
//! A change that grows one must raise it here and say why in its commit;
//! one that shrinks it should lower it, so that the guard stays tight. A
//! newer compiler may lay futures out differently: if only the compiler
//! changed, re-measure and say so.
//!
//! The stream under every connection has a guard of its own, in
//! `src/tls.rs`: a plain connection carries no TLS state.

mod common;

use common::{Program, example_path};
use tokio::process::Command;

/// Each server, the most bytes its handler's future may take, and what they
/// are.
const BUDGETS: [(&str, usize, &str); 4] = [
    (
        "chat_server",
        1216,
        "the WebSocket (320 bytes), the member, the select loop's state: the heartbeat's \
         timer and the waits for shutdown, eviction and the outbox; its arguments kept once \
         (a plain fn returning an async block: as an async fn, 1,608)",
    ),
    (
        "echo_server",
        1456,
        "an async fn, so its WebSocket is in it twice; the heartbeat's timer, the shutdown \
         wait, a send under way",
    ),
    (
        "broadcast_server",
        1592,
        "an async fn: the WebSocket before the split, the reader's loop with its heartbeat \
         timer, the writer's handle",
    ),
    (
        "data_pusher",
        1408,
        "an async fn, so its WebSocket is in it twice; the heartbeat's timer, the sample \
         subscription, a send under way",
    ),
];

/// The `bytes=N` a server logs at start, as a number.
async fn handler_future_bytes(server: &str) -> usize {
    let mut command = Command::new(example_path(server));
    command.arg("127.0.0.1:0").env("RUST_LOG", "websocket_tutorial::server=debug");
    let mut program = Program::spawn(command);
    let (line, _) = program.wait_for_log(|line| line.contains("handler's future")).await;
    program.interrupt();
    assert_eq!(program.exit_code().await, 0, "{server} exits 0 on Ctrl-C");
    let bytes = line.rsplit_once("bytes=").map(|(_, n)| n.trim().parse());
    match bytes {
        Some(Ok(bytes)) => bytes,
        _ => panic!("{server}: no bytes=N in {line:?}"),
    }
}

#[tokio::test]
async fn no_server_keeps_more_per_connection_than_its_budget() {
    let mut grown = Vec::new();
    for (server, budget, what) in BUDGETS {
        let bytes = handler_future_bytes(server).await;
        if bytes > budget {
            grown.push(format!(
                "{server}: {bytes} bytes per connection, budget {budget} ({what}). Every \
                 connection pays this for its whole life: find what grew (chapter 8.4 shows \
                 how), or raise the budget in tests/sizes.rs and say why"
            ));
        }
    }
    assert!(grown.is_empty(), "{}", grown.join("\n"));
}
