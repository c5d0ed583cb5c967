//! Where the examples' output goes, and why none of it can hurt a server.
//!
//! Two streams, two purposes:
//! - **stdout** carries what a program is *for*: a server's first line,
//!   `listening on ws://IP:PORT`, and what a client shows of the messages it
//!   receives. [`line()`] writes there.
//! - **stderr** carries the log: `tracing` events, formatted by
//!   `tracing-subscriber` and filtered by `RUST_LOG` (default `info`), set up
//!   by [`init_logging`]. The library itself only emits events; it never
//!   prints.
//!
//! Either stream may be a pipe whose reader has gone (`| head -1`, a `| tee`
//! stopped by the same Ctrl-C) or a pipe nobody reads, which fills up and
//! then blocks every write. `println!` and `eprintln!` panic on the first
//! and block on the second; a panic in the Ctrl-C handler means no graceful
//! shutdown, and a blocked runtime worker stalls every connection it runs.
//! So: [`line()`] returns the error instead of panicking, and the log is
//! written by a thread of its own, from a bounded queue that drops lines
//! rather than make anyone wait.

use std::fmt;
use std::io::{self, IsTerminal, Write};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc::{self, Receiver, SyncSender};
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use tracing_subscriber::EnvFilter;
use tracing_subscriber::filter::LevelFilter;
use tracing_subscriber::fmt::MakeWriter;

/// Log lines that may wait for stderr. A stderr that stops taking them (a
/// full pipe) costs at most this many lines of memory; later lines are
/// dropped, and counted.
const LOG_QUEUE_LINES: usize = 4096;

/// The longest [`flush_log`] waits for queued log lines to reach stderr. It
/// waits at all only when stderr is slow; usually the queue is empty.
const FLUSH_AT_EXIT: Duration = Duration::from_millis(500);

/// The log writer's queue, once [`init_logging`] has set it up.
static LOG_QUEUE: OnceLock<SyncSender<ToStderr>> = OnceLock::new();

// ANCHOR: line
/// Writes `text` and a newline to stdout. Unlike `println!`, it does not
/// panic when stdout is gone (a closed pipe: `EPIPE`); it returns the error,
/// and a client can take that as its cue to stop.
///
/// A full pipe still blocks the caller, as any write to stdout does: use it
/// where waiting for the reader is the right thing (a client, which has
/// nothing better to do than show what it received), or once, before there
/// is anybody to keep waiting (a server's `listening on` line).
pub fn line(text: impl fmt::Display) -> io::Result<()> {
    writeln!(io::stdout().lock(), "{text}")
}
// ANCHOR_END: line

// ANCHOR: init_logging
/// Sends `tracing` events to stderr, one line each, filtered by `RUST_LOG`
/// (`info` when unset; for example `RUST_LOG=debug` or `RUST_LOG=warn`).
/// Call it first thing in `main`, and keep the guard until `main` returns:
/// dropping it gives the log lines still queued a moment to reach stderr
/// ([`flush_log`]).
///
/// The writer: `tracing-subscriber` formats each event on the thread that
/// emits it and hands the line to a `MakeWriter`. Writing it to stderr right
/// there would block a runtime worker whenever stderr is a full pipe, so the
/// line goes into a bounded queue instead, and a thread of ours writes the
/// queue out. When the queue is full the line is dropped (and a count of
/// the dropped lines is logged once stderr catches up): for a server, losing
/// log lines is better than stalling connections. A write that fails (stderr
/// closed) loses that line and nothing else. (`tracing-appender`'s
/// `non_blocking` does the same, but its guard reports a full queue with
/// `println!`, which panics on a closed stdout, the very case this is for.)
pub fn init_logging() -> LogGuard {
    let (queue, lines) = mpsc::sync_channel(LOG_QUEUE_LINES);
    let dropped = Arc::new(AtomicU64::new(0));
    let writer = StderrQueue { queue: queue.clone(), dropped: dropped.clone() };
    // A second call keeps the first queue, whose subscriber stays installed.
    let _ = LOG_QUEUE.set(queue);
    // If the thread cannot start, `lines` is dropped with the closure and
    // every log line counts as dropped: the program runs on without a log.
    let _ = std::thread::Builder::new()
        .name("log-writer".into())
        .spawn(move || write_to_stderr(lines, &dropped));

    let (filter, bad_filter) =
        match EnvFilter::builder().with_default_directive(LevelFilter::INFO.into()).from_env() {
            Ok(filter) => (filter, None),
            Err(e) => (EnvFilter::new("info"), Some(e)),
        };
    // Fails only if a subscriber is already installed; that one stays.
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(writer)
        // Colours for a terminal, plain text for a pipe or a file.
        .with_ansi(io::stderr().is_terminal())
        .with_target(false)
        // Never report a failed write on stderr itself (with `eprintln!`).
        .log_internal_errors(false)
        .try_init();
    if let Some(e) = bad_filter {
        tracing::warn!("RUST_LOG ignored, logging at info: {e}");
    }
    LogGuard(())
}
// ANCHOR_END: init_logging

/// Returned by [`init_logging`]: flushes the log when dropped.
#[must_use = "log lines still queued when the guard is dropped may be lost"]
pub struct LogGuard(());

impl Drop for LogGuard {
    fn drop(&mut self) {
        flush_log();
    }
}

/// Waits, at most half a second, until the log lines queued so far are
/// on stderr. Call it before writing to stderr directly (a last `error:`
/// line, say), so that the log lines that led up to it come out first. A
/// full queue means stderr is not being read: then it does not wait at all.
/// It blocks its thread while it waits: call it on the way out of `main`,
/// not from a connection's task.
pub fn flush_log() {
    let Some(queue) = LOG_QUEUE.get() else { return };
    let (done, flushed) = mpsc::channel();
    if queue.try_send(ToStderr::Flush(done)).is_ok() {
        let _ = flushed.recv_timeout(FLUSH_AT_EXIT);
    }
}

/// Ends a program that failed: writes `error: {message}` to stderr (after
/// the log lines queued before it), and returns the exit code for `main` to
/// return. One line a user can act on, instead of a `Debug` dump; a closed
/// stderr loses the line, without a panic.
pub fn fail(message: impl fmt::Display) -> std::process::ExitCode {
    flush_log();
    let _ = writeln!(io::stderr(), "error: {message}");
    std::process::ExitCode::FAILURE
}

/// What the log writer's queue carries.
enum ToStderr {
    /// One formatted event, newline included.
    Line(Vec<u8>),
    /// A request to answer on this channel once everything queued before it
    /// has been written.
    Flush(mpsc::Sender<()>),
}

/// The `MakeWriter` given to `tracing-subscriber`: each event's line goes
/// into the queue, or is counted as dropped when the queue is full.
struct StderrQueue {
    queue: SyncSender<ToStderr>,
    dropped: Arc<AtomicU64>,
}

impl<'a> MakeWriter<'a> for StderrQueue {
    type Writer = &'a StderrQueue;

    fn make_writer(&'a self) -> Self::Writer {
        self
    }
}

impl io::Write for &StderrQueue {
    /// `tracing-subscriber` writes each event with one `write_all` of the
    /// whole line, so one call here is one line.
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        if self.queue.try_send(ToStderr::Line(buf.to_vec())).is_err() {
            self.dropped.fetch_add(1, Ordering::Relaxed);
        }
        Ok(buf.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

/// The log writer thread: writes each queued line to stderr, until the
/// program exits. Write errors are ignored: a closed stderr loses the log,
/// and there is nowhere left to say so.
fn write_to_stderr(lines: Receiver<ToStderr>, dropped: &AtomicU64) {
    // Not `stderr().lock()` for the thread's whole life: a panic message or
    // an `eprintln!` elsewhere would wait for that lock forever.
    let mut stderr = io::stderr();
    for message in lines {
        let missed = dropped.swap(0, Ordering::Relaxed);
        if missed > 0 {
            let _ = writeln!(stderr, "({missed} log lines dropped: stderr was not keeping up)");
        }
        match message {
            ToStderr::Line(line) => {
                let _ = stderr.write_all(&line);
            }
            ToStderr::Flush(done) => {
                let _ = done.send(());
            }
        }
    }
}
