//! Closing a WebSocket properly, for servers and clients alike.
//!
//! A WebSocket ends with a *close handshake*: one side sends a close frame
//! with a code (1000 normal, 1001 going away, 1009 too big, ...), the other
//! answers with its own, and only then is the TCP connection closed. Each
//! step here has a deadline, because the peer may be gone or may have stopped
//! reading. Which code answers which error is decided in [`crate::error`].

use std::process::ExitCode;
use std::time::Duration;

use futures_util::{Sink, SinkExt, Stream, StreamExt};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::time::timeout;
use tokio_tungstenite::WebSocketStream;
use tokio_tungstenite::tungstenite::protocol::CloseFrame;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tokio_tungstenite::tungstenite::{self, Message};

use crate::error::is_disconnect;

/// How long we wait for the peer's answer to our close frame, and for a
/// goodbye write to a peer that has stopped reading.
pub const CLOSE_TIMEOUT: Duration = Duration::from_secs(2);

/// The most bytes [`after_broken_rule`] reads and throws away, after its
/// close frame, from a peer that broke a rule: a message over the limit
/// still in flight (the socket buffers on both sides hold a few MiB), not
/// whatever a peer cares to keep sending.
pub const DRAIN_BYTES: usize = 4 << 20;

/// The most bytes a close reason may have: a control frame carries at most
/// 125 bytes, two of which are the code.
pub const MAX_REASON_BYTES: usize = 123;

/// A close frame with `code` and a human-readable `reason`, cut to
/// [`MAX_REASON_BYTES`] (at a character boundary) so that any text, an error
/// message say, makes a valid frame.
pub fn message(code: CloseCode, reason: &str) -> Message {
    let mut end = reason.len().min(MAX_REASON_BYTES);
    while !reason.is_char_boundary(end) {
        end -= 1;
    }
    Message::Close(Some(CloseFrame { code, reason: reason[..end].into() }))
}

/// How a client program ends when the server closed the connection with
/// `code`: 0 for a normal close (1000), a server going away (1001) or a
/// close frame without a code (1005); 1 for any other code, such as 1008
/// (too slow, or over the rate limit), 1009 (too big) or 1011 (ping
/// timeout), each of which says the client or the connection failed. One
/// rule for every client, so a script can rely on `$?`.
pub fn exit_code(code: CloseCode) -> ExitCode {
    match code {
        CloseCode::Normal | CloseCode::Away | CloseCode::Status => ExitCode::SUCCESS,
        _ => ExitCode::FAILURE,
    }
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
        Ok(Err(e)) => tracing::warn!(error = %e, "sending close frame failed"),
        Err(_) => tracing::info!("peer did not take our close frame within {CLOSE_TIMEOUT:?}"),
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

/// After the peer's close frame: reads on to the end of the stream, for at
/// most [`CLOSE_TIMEOUT`], so that our answer goes out. tungstenite queues
/// the answer when it reads the peer's frame and sends it the next time the
/// connection is read or written: a program that stops at the peer's frame
/// and drops the connection never answers, and its peer reads a reset
/// where the close handshake should end.
///
/// Any stream of messages will do, axum's too (chapter 12).
pub async fn answer<S, M, E>(stream: &mut S)
where
    S: Stream<Item = Result<M, E>> + Unpin,
{
    let _ = timeout(CLOSE_TIMEOUT, async { while let Some(Ok(_)) = stream.next().await {} }).await;
}

/// Sends a close frame and waits for the answer: the whole close handshake,
/// for a connection that has not been split.
pub async fn handshake<S>(ws: &mut S, code: CloseCode, reason: &str)
where
    S: Sink<Message, Error = tungstenite::Error>
        + Stream<Item = Result<Message, tungstenite::Error>>
        + Unpin,
{
    crate::admin::metrics().closing(reason);
    send(ws, code, reason).await;
    wait_for_reply(ws).await;
}

// ANCHOR: after_broken_rule
/// Closes a connection whose peer broke a rule (a message over the limit:
/// 1009; a broken frame: 1002; text that is not UTF-8: 1007), so that the
/// peer reads our close frame and then the end of the stream, not a reset.
///
/// The usual [`handshake`] cannot do it. After such an error the WebSocket
/// cannot be read any more (the rest of an oversized message would be taken
/// for frames), and a socket closed while the peer's bytes wait unread in
/// it makes the kernel answer with a reset (RST), not a FIN: the peer
/// reads our close frame, and then "Connection reset by peer" where the
/// end of the stream should be, or has its write of the rest of its
/// message fail with it. So after the close frame we end our side of the
/// TCP connection (FIN) and read, and throw away, what the peer still
/// sends, until it closes too, for at most [`CLOSE_TIMEOUT`] and
/// [`DRAIN_BYTES`]: a peer that sends more than that gets the reset.
pub async fn after_broken_rule<S>(ws: &mut WebSocketStream<S>, code: CloseCode, reason: &str)
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    send(ws, code, reason).await;
    let stream = ws.get_mut();
    let drain = async {
        stream.shutdown().await?;
        let mut buf = vec![0; 16 * 1024]; // for these few reads only
        let mut drained = 0;
        while drained < DRAIN_BYTES {
            match stream.read(&mut buf).await? {
                0 => break, // the peer closed too: nothing left unread
                n => drained += n,
            }
        }
        Ok::<_, std::io::Error>(())
    };
    // A peer that is gone (an error) or slow (the deadline) gets no more.
    let _ = timeout(CLOSE_TIMEOUT, drain).await;
}
// ANCHOR_END: after_broken_rule

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn long_reasons_are_cut_to_a_valid_control_frame() {
        let long = "é".repeat(100); // 200 bytes
        let Message::Close(Some(frame)) = message(CloseCode::Error, &long) else { panic!() };
        assert_eq!(frame.reason.len(), 122, "cut at a character boundary");
        let Message::Close(Some(frame)) = message(CloseCode::Away, "bye") else { panic!() };
        assert_eq!((frame.code, frame.reason.as_str()), (CloseCode::Away, "bye"));
    }

    /// Stopping at the peer's close frame leaves it unanswered; `answer`
    /// sends the reply and sees the stream end.
    #[tokio::test]
    async fn answer_sends_the_reply_to_a_close_frame() {
        use tokio_tungstenite::tungstenite::protocol::Role;
        for answered in [false, true] {
            let (a, b) = tokio::io::duplex(1024);
            let mut server = WebSocketStream::from_raw_socket(a, Role::Server, None).await;
            let mut client = WebSocketStream::from_raw_socket(b, Role::Client, None).await;
            server.send(message(CloseCode::Normal, "bye")).await.unwrap();
            assert!(client.next().await.unwrap().unwrap().is_close());
            // The server reads, and closes the connection once it has read.
            let reading = async move { server.next().await };
            let reply = if answered {
                tokio::join!(reading, answer(&mut client)).0
            } else {
                drop(client);
                reading.await
            };
            assert_eq!(
                matches!(reply, Some(Ok(Message::Close(Some(ref f)))) if f.code == CloseCode::Normal),
                answered,
                "answered: {answered}, the server read {reply:?}"
            );
        }
    }
}
