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
//! - [`Outgoing`] is what the connection drains into its socket. It takes
//!   everything queued at once with [`Outgoing::next_batch`] and, once the
//!   batch is *written* (flushed, not merely taken from the queue), gives the
//!   bytes back with [`Outgoing::written`]: a client that stops reading stops
//!   giving bytes back, whether its messages wait here or in the WebSocket's
//!   write buffer.
//!
//! A queued message takes 32 bytes, not the 56 of a `Message` (see `Queued`
//! below): in a storm of joins the outboxes hold hundreds of thousands of
//! small events at once, and at 56 bytes a slot they were some 40 % of the
//! server's memory at that moment (chapter 8.4).
//!
//! Why not a `tokio::sync::mpsc` channel, the usual queue between tasks: an
//! empty channel already holds a block of 32 slots, about 2.4 KiB, for as
//! long as the connection lives, and a chat server is mostly idle
//! connections. A `VecDeque` behind a mutex allocates only while messages
//! wait, and a `Notify` wakes the connection. Measured with 10,000 idle
//! connections (chapter 8): the channel was a sixth of the server's memory
//! per connection.

// ANCHOR: outbox
use std::collections::VecDeque;
use std::sync::{Arc, Mutex, MutexGuard};

use tokio::sync::Notify;
use tokio_tungstenite::tungstenite::{Message, Utf8Bytes};

/// The sending half: pushes messages for one client, within its budget.
#[derive(Debug, Clone)]
pub struct Outbox {
    shared: Arc<Shared>,
    budget: usize,
}

/// The receiving half, owned by the client's connection. Dropping it closes
/// the outbox.
#[derive(Debug)]
pub struct Outgoing {
    shared: Arc<Shared>,
}

#[derive(Debug, Default)]
struct Shared {
    queue: Mutex<Queue>,
    /// Wakes the connection when its queue goes from empty to not empty.
    ready: Notify,
}

#[derive(Debug, Default)]
struct Queue {
    messages: VecDeque<Queued>,
    /// Bytes of frames queued or taken but not yet written.
    bytes: usize,
    closed: bool,
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
    let shared = Arc::new(Shared::default());
    (Outbox { shared: shared.clone(), budget }, Outgoing { shared })
}

impl Outbox {
    /// Queues `msg` without waiting.
    pub fn push(&self, msg: Message) -> Result<(), PushError> {
        let size = frame_len(&msg);
        let mut queue = self.shared.lock();
        if queue.closed {
            return Err(PushError::Closed);
        }
        if queue.bytes > 0 && queue.bytes + size > self.budget {
            return Err(PushError::Full);
        }
        queue.bytes += size;
        queue.messages.push_back(msg.into());
        let was_empty = queue.messages.len() == 1;
        drop(queue);
        if was_empty {
            // One wake-up per batch, not per message: a connection that has
            // not taken the first message yet will take this one with it.
            self.shared.ready.notify_one();
        }
        Ok(())
    }
}

impl Outgoing {
    /// Waits until something is queued, then takes *everything* queued, in
    /// order. Cancel safe, so it can be one branch of a `select!`.
    ///
    /// The batch is handed over whole and the outbox starts again from an
    /// empty `VecDeque`, which allocates nothing until the next push: an
    /// idle connection holds no queue memory at all.
    pub async fn next_batch(&mut self) -> Batch {
        loop {
            // Register interest before looking, so a push between the look
            // and the wait cannot be missed (`notify_one` also stores a
            // permit when nobody waits).
            let ready = self.shared.ready.notified();
            let batch = std::mem::take(&mut self.shared.lock().messages);
            if !batch.is_empty() {
                return Batch(batch);
            }
            ready.await;
        }
    }

    /// Takes one queued message without waiting, if there is one: for demos
    /// and tests, which drain an outbox by hand. (Call [`Outgoing::written`]
    /// for it, as a connection does once a message is written.)
    pub fn try_recv(&mut self) -> Option<Message> {
        self.shared.lock().messages.pop_front().map(Message::from)
    }

    /// Gives back the budget of messages that have now been written:
    /// `bytes` is the sum of their [`frame_len`]s.
    pub fn written(&self, bytes: usize) {
        let mut queue = self.shared.lock();
        queue.bytes = queue.bytes.saturating_sub(bytes);
    }
}

impl Drop for Outgoing {
    fn drop(&mut self) {
        let mut queue = self.shared.lock();
        queue.closed = true;
        queue.messages = VecDeque::new(); // nobody will write these
    }
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, Queue> {
        // Every critical section here is a few field updates, complete
        // after each statement, so a poisoned lock still holds a valid queue.
        self.queue.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

/// The size of `msg` as a frame from a server: the payload plus a 2, 4 or
/// 10 byte header (server frames are not masked).
pub fn frame_len(msg: &Message) -> usize {
    frame_len_of(msg.len())
}

fn frame_len_of(payload: usize) -> usize {
    let header = match payload {
        0..=125 => 2,
        126..=65_535 => 4,
        _ => 10,
    };
    payload + header
}
// ANCHOR_END: outbox

// What the queue holds, and what `next_batch` hands over: a message in 32
// bytes instead of 56, which a storm of joins pays for hundreds of thousands
// of times at once (chapter 8.4).

/// One message in the queue, in 32 bytes. A `Message` is 56, sized by its
/// largest variant (a raw frame), and a slot is paid for every member a
/// message is queued for: when 10,000 chat members join 100 rooms at once,
/// up to 390,000 `Joined` events wait at the same moment (chapter 8.4).
/// Text, which every event of the chat protocol is, is kept as it is (its
/// payload is shared, not copied); anything else is boxed.
#[derive(Debug)]
enum Queued {
    Text(Utf8Bytes),
    Other(Box<Message>),
}

impl From<Message> for Queued {
    fn from(msg: Message) -> Queued {
        match msg {
            Message::Text(text) => Queued::Text(text),
            other => Queued::Other(Box::new(other)),
        }
    }
}

impl From<Queued> for Message {
    fn from(queued: Queued) -> Message {
        match queued {
            Queued::Text(text) => Message::Text(text),
            Queued::Other(msg) => *msg,
        }
    }
}

impl Queued {
    fn frame_len(&self) -> usize {
        match self {
            Queued::Text(text) => frame_len_of(text.len()),
            Queued::Other(msg) => frame_len(msg),
        }
    }
}

impl Outbox {
    /// Bytes of frames queued or taken and not yet written.
    pub fn queued_bytes(&self) -> usize {
        self.shared.lock().bytes
    }
}

/// Everything that was queued for a client, in order: what
/// [`Outgoing::next_batch`] hands over. It yields each `Message` in turn.
#[derive(Debug, Default)]
pub struct Batch(VecDeque<Queued>);

impl Batch {
    /// The bytes of its frames: what to give back with [`Outgoing::written`]
    /// once the batch is written.
    pub fn frame_bytes(&self) -> usize {
        self.0.iter().map(Queued::frame_len).sum()
    }

    /// How many messages it holds.
    pub fn len(&self) -> usize {
        self.0.len()
    }

    /// Whether it holds none.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

impl Iterator for Batch {
    type Item = Message;

    fn next(&mut self) -> Option<Message> {
        let queued = self.0.pop_front()?;
        crate::admin::metrics().deliveries.increment(1);
        Some(queued.into())
    }
}

// The connection's side, in chapter 6.1's chat server: writing what the
// outbox hands over, with a deadline, and what is left at the end.

use std::time::Duration;

use futures_util::{Sink, SinkExt};
use tokio::time::timeout;
use tokio_tungstenite::tungstenite;
use tracing::warn;

use crate::error::is_disconnect;

/// Why [`write()`] did not finish.
#[derive(Debug)]
pub enum WriteError {
    /// The connection failed (the peer is gone); logged unless it merely
    /// disconnected.
    Failed,
    /// The peer did not take the messages within the deadline.
    TimedOut,
}

/// Writes `msgs` to `ws` and flushes once: under load, one system call
/// carries many messages (tungstenite writes to the socket when its write
/// buffer passes `write_buffer_size`, and at the flush). Waits at most
/// `deadline` for a peer that does not read.
pub async fn write<S>(
    ws: &mut S,
    msgs: impl IntoIterator<Item = Message>,
    deadline: Duration,
) -> Result<(), WriteError>
where
    S: Sink<Message, Error = tungstenite::Error> + Unpin,
{
    let write = async {
        for msg in msgs {
            ws.feed(msg).await?;
        }
        ws.flush().await
    };
    match timeout(deadline, write).await {
        Ok(Ok(())) => Ok(()),
        Ok(Err(e)) => {
            if !is_disconnect(&e) {
                warn!(error = %e, "write failed");
            }
            Err(WriteError::Failed)
        }
        Err(_) => Err(WriteError::TimedOut),
    }
}

impl Outgoing {
    /// Feeds everything still queued to `ws` without flushing, at the end of
    /// a connection: the close frame that follows flushes it all.
    pub async fn feed_rest<S>(&mut self, ws: &mut S) -> Result<(), S::Error>
    where
        S: Sink<Message> + Unpin,
    {
        while let Some(msg) = self.try_recv() {
            ws.feed(msg).await?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_write_flushes_once_and_gives_up_on_a_peer_that_does_not_read() {
        use tokio_tungstenite::WebSocketStream;
        use tokio_tungstenite::tungstenite::protocol::Role;
        let (near, far) = tokio::io::duplex(64 * 1024);
        let mut ws = WebSocketStream::from_raw_socket(near, Role::Server, None).await;
        let mut peer = WebSocketStream::from_raw_socket(far, Role::Client, None).await;
        let msgs = [Message::text("a"), Message::text("b")];
        write(&mut ws, msgs, Duration::from_secs(5)).await.unwrap();
        use futures_util::StreamExt;
        assert_eq!(peer.next().await.unwrap().unwrap(), Message::text("a"));
        assert_eq!(peer.next().await.unwrap().unwrap(), Message::text("b"));
        // The peer stops reading: 64 KiB of pipe fill, and the write waits
        // for the deadline, no longer.
        let big = (0..4).map(|_| Message::text("x".repeat(32 * 1024)));
        let started = tokio::time::Instant::now();
        let written = write(&mut ws, big, Duration::from_millis(100)).await;
        assert!(matches!(written, Err(WriteError::TimedOut)), "{written:?}");
        assert!(started.elapsed() < Duration::from_secs(2));
        drop(peer);
        let written = write(&mut ws, [Message::text("c")], Duration::from_secs(5)).await;
        assert!(matches!(written, Err(WriteError::Failed)), "{written:?}");
    }

    #[tokio::test]
    async fn what_is_left_is_fed_in_order_without_waiting() {
        let (outbox, mut outgoing) = outbox(1024);
        outbox.push(Message::text("one")).unwrap();
        outbox.push(Message::text("two")).unwrap();
        let mut sink: Vec<Message> = Vec::new();
        outgoing.feed_rest(&mut sink).await.unwrap();
        assert_eq!(sink, [Message::text("one"), Message::text("two")]);
        assert!(outgoing.try_recv().is_none());
    }

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

        let batch = outgoing.next_batch().await;
        assert_eq!(batch.len(), 4, "everything queued, in one batch");
        assert_eq!(batch.frame_bytes(), 100);
        assert_eq!(outbox.push(Message::text("y")), Err(PushError::Full), "taken, not written");
        outgoing.written(batch.take(2).map(|msg| frame_len(&msg)).sum());
        assert_eq!(outbox.push(Message::text("y")), Ok(()), "written: 50 bytes free again");
    }

    #[tokio::test]
    async fn an_empty_outbox_takes_one_message_of_any_size() {
        let (outbox, _outgoing) = outbox(10);
        assert_eq!(outbox.push(Message::text("z".repeat(1000))), Ok(()));
        assert_eq!(outbox.push(Message::text("z")), Err(PushError::Full));
    }

    #[test]
    fn a_slot_is_32_bytes_and_every_kind_of_message_comes_out_as_it_went_in() {
        // 56 for a `Message`: chapter 8.4 measured what the difference is
        // worth in a join storm. A change that grows it must say why.
        assert!(size_of::<Queued>() <= 32, "a queued message takes {}", size_of::<Queued>());
        let (outbox, mut outgoing) = outbox(1 << 20);
        let sent = [
            Message::text("{\"type\":\"Pong\"}"),
            Message::binary(vec![0, 159, 146, 150]),
            Message::Ping(vec![1, 2].into()),
            Message::Close(None),
        ];
        for msg in sent.clone() {
            outbox.push(msg).unwrap();
        }
        let mut got = Vec::new();
        while let Some(msg) = outgoing.try_recv() {
            got.push(msg);
        }
        assert_eq!(got, sent);
    }

    #[test]
    fn a_push_after_the_connection_ended_says_closed() {
        let (outbox, outgoing) = outbox(100);
        drop(outgoing);
        assert_eq!(outbox.push(Message::text("late")), Err(PushError::Closed));
    }
}
