//! A client's outbox: the messages queued for it and not yet written to its
//! socket, bounded in *bytes*.
//!
//! Why bytes and not a number of messages: a thousand `Joined` events of 50
//! bytes weigh 50 KB, a thousand 4 KiB chat messages 4 MB. A queue of 256
//! *messages* fills in an instant during a join storm and evicts clients that
//! read perfectly well; a budget of 1 MiB holds 20,000 small events and still
//! caps what a client that stopped reading can pin.
//!
//! The two halves:
//! - [`Outbox`] (cheap to clone) is what the room manager pushes into. A
//!   push never waits: when the bytes queued and not yet written would pass
//!   the budget, it fails with [`PushError::Full`] and the caller evicts the
//!   client. An empty outbox always takes one message, so a budget smaller
//!   than a message cannot evict a client that reads.
//! - [`Outgoing`] is what the connection drains into its socket. It takes a
//!   batch with [`Outgoing::recv_many`] and, once the batch is *written*
//!   (flushed, not merely taken from the queue), gives the bytes back with
//!   [`Outgoing::written`]: a client that stops reading stops giving bytes
//!   back, whether its messages wait here or in the WebSocket's write buffer.

// ANCHOR: outbox
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use tokio::sync::mpsc;
use tokio_tungstenite::tungstenite::Message;

/// The sending half: pushes messages for one client, within its budget.
#[derive(Debug, Clone)]
pub struct Outbox {
    queue: mpsc::UnboundedSender<Message>,
    queued_bytes: Arc<AtomicUsize>,
    budget: usize,
}

/// The receiving half, owned by the client's connection.
#[derive(Debug)]
pub struct Outgoing {
    queue: mpsc::UnboundedReceiver<Message>,
    queued_bytes: Arc<AtomicUsize>,
}

/// Why a push failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PushError {
    /// The client is over its budget: it is not reading fast enough.
    Full,
    /// The connection has ended and dropped its [`Outgoing`].
    Closed,
}

/// A new outbox that holds at most `budget` bytes of frames not yet written
/// (but always at least one message).
pub fn outbox(budget: usize) -> (Outbox, Outgoing) {
    // Unbounded, because the budget in bytes is the bound.
    let (tx, rx) = mpsc::unbounded_channel();
    let queued_bytes = Arc::new(AtomicUsize::new(0));
    let outbox = Outbox { queue: tx, queued_bytes: queued_bytes.clone(), budget };
    (outbox, Outgoing { queue: rx, queued_bytes })
}

impl Outbox {
    /// Queues `msg` without waiting.
    pub fn push(&self, msg: Message) -> Result<(), PushError> {
        let size = frame_len(&msg);
        // Relaxed is enough: the counter orders nothing else, and every
        // push for one client happens under the room manager's lock.
        let before = self.queued_bytes.fetch_add(size, Ordering::Relaxed);
        if before > 0 && before + size > self.budget {
            self.queued_bytes.fetch_sub(size, Ordering::Relaxed);
            return Err(PushError::Full);
        }
        self.queue.send(msg).map_err(|_| {
            self.queued_bytes.fetch_sub(size, Ordering::Relaxed);
            PushError::Closed
        })
    }
}

impl Outgoing {
    /// Waits for at least one message, then moves up to `limit` queued
    /// messages into `batch`. Returns how many; 0 when every [`Outbox`] is
    /// gone. Cancel safe, so it can be one branch of a `select!`.
    pub async fn recv_many(&mut self, batch: &mut Vec<Message>, limit: usize) -> usize {
        self.queue.recv_many(batch, limit).await
    }

    /// Takes one queued message without waiting, if there is one: for demos
    /// and tests, which drain an outbox by hand. (Call [`Outgoing::written`]
    /// for it, as a connection does once a message is written.)
    pub fn try_recv(&mut self) -> Option<Message> {
        self.queue.try_recv().ok()
    }

    /// Gives back the budget of messages that have now been written:
    /// `bytes` is the sum of their [`frame_len`]s.
    pub fn written(&self, bytes: usize) {
        self.queued_bytes.fetch_sub(bytes, Ordering::Relaxed);
    }
}

/// The size of `msg` as a frame from a server: the payload plus a 2, 4 or
/// 10 byte header (server frames are not masked).
pub fn frame_len(msg: &Message) -> usize {
    let payload = msg.len();
    let header = match payload {
        0..=125 => 2,
        126..=65_535 => 4,
        _ => 10,
    };
    payload + header
}
// ANCHOR_END: outbox

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn frame_len_counts_the_header() {
        assert_eq!(frame_len(&Message::text("hi")), 4);
        assert_eq!(frame_len(&Message::text("x".repeat(126))), 130);
        assert_eq!(frame_len(&Message::text("x".repeat(65_536))), 65_546);
    }

    #[tokio::test]
    async fn the_budget_is_in_bytes_and_written_bytes_come_back() {
        let (outbox, mut outgoing) = outbox(100);
        for _ in 0..4 {
            outbox.push(Message::text("x".repeat(23))).unwrap(); // 25 bytes each
        }
        assert_eq!(outbox.push(Message::text("y")), Err(PushError::Full), "100 bytes queued");

        let mut batch = Vec::new();
        assert_eq!(outgoing.recv_many(&mut batch, 2).await, 2);
        assert_eq!(outbox.push(Message::text("y")), Err(PushError::Full), "taken, not written");
        outgoing.written(batch.iter().map(frame_len).sum());
        assert_eq!(outbox.push(Message::text("y")), Ok(()), "written: 50 bytes free again");
    }

    #[tokio::test]
    async fn an_empty_outbox_takes_one_message_of_any_size() {
        let (outbox, _outgoing) = outbox(10);
        assert_eq!(outbox.push(Message::text("z".repeat(1000))), Ok(()));
        assert_eq!(outbox.push(Message::text("z")), Err(PushError::Full));
    }

    #[test]
    fn a_push_after_the_connection_ended_says_closed() {
        let (outbox, outgoing) = outbox(100);
        drop(outgoing);
        assert_eq!(outbox.push(Message::text("late")), Err(PushError::Closed));
    }
}
