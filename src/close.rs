//! Closing a WebSocket properly, for servers and clients alike.
//!
//! A WebSocket ends with a *close handshake*: one side sends a close frame
//! with a code (1000 normal, 1001 going away, 1009 too big, ...), the other
//! answers with its own, and only then is the TCP connection closed. Each
//! step here has a deadline, because the peer may be gone or may have stopped
//! reading.

use std::time::Duration;

use futures_util::{Sink, SinkExt, Stream, StreamExt};
use tokio::time::timeout;
use tokio_tungstenite::tungstenite::protocol::CloseFrame;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tokio_tungstenite::tungstenite::{self, Message};

use crate::error::is_disconnect;

/// How long we wait for the peer's answer to our close frame, and for a
/// goodbye write to a peer that has stopped reading.
pub const CLOSE_TIMEOUT: Duration = Duration::from_secs(2);

/// A close frame with `code` and a human-readable `reason`.
pub fn message(code: CloseCode, reason: &str) -> Message {
    Message::Close(Some(CloseFrame { code, reason: reason.into() }))
}

/// Sends a close frame, giving up after [`CLOSE_TIMEOUT`]: a peer that has
/// stopped reading must not keep us waiting on a full socket buffer.
pub async fn send<S>(sink: &mut S, code: CloseCode, reason: &str)
where
    S: Sink<Message, Error = tungstenite::Error> + Unpin,
{
    match timeout(CLOSE_TIMEOUT, sink.send(message(code, reason))).await {
        Ok(Ok(())) => {}
        Ok(Err(e)) if is_disconnect(&e) => {}
        Ok(Err(e)) => eprintln!("sending close frame: {e}"),
        Err(_) => eprintln!("peer did not take our close frame within {CLOSE_TIMEOUT:?}"),
    }
}

/// After sending our close frame, reads until the peer answers with its own
/// (the stream then ends) or [`CLOSE_TIMEOUT`] passes. Messages that arrive
/// in between are dropped: the connection is closing.
pub async fn wait_for_reply<S>(stream: &mut S)
where
    S: Stream<Item = Result<Message, tungstenite::Error>> + Unpin,
{
    let drain = async {
        while let Some(Ok(msg)) = stream.next().await {
            if msg.is_close() {
                break;
            }
        }
    };
    let _ = timeout(CLOSE_TIMEOUT, drain).await;
}

/// Sends a close frame and waits for the answer: the whole close handshake,
/// for a connection that has not been split.
pub async fn handshake<S>(ws: &mut S, code: CloseCode, reason: &str)
where
    S: Sink<Message, Error = tungstenite::Error>
        + Stream<Item = Result<Message, tungstenite::Error>>
        + Unpin,
{
    send(ws, code, reason).await;
    wait_for_reply(ws).await;
}

// ANCHOR: code_for
/// The close code that tells a peer why its input ended the connection, or
/// `None` when the error only means the peer is gone (nothing to tell).
///
/// 1009 for a message over the size limit, 1007 for text that is not UTF-8,
/// 1002 for any other protocol violation.
pub fn code_for(err: &tungstenite::Error) -> Option<CloseCode> {
    use tungstenite::Error as E;
    match err {
        _ if is_disconnect(err) => None,
        E::Capacity(_) => Some(CloseCode::Size),
        E::Utf8(_) => Some(CloseCode::Invalid),
        E::Protocol(_) => Some(CloseCode::Protocol),
        _ => None,
    }
}
// ANCHOR_END: code_for
