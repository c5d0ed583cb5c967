//! The crate's typed errors, and the one place that decides what an error
//! on a connection means.
//!
//! Parsing network input is where things go wrong, so each parser has a small
//! enum that says exactly what was wrong ([`ProtocolError`] for JSON,
//! [`CodecError`] for the binary format); [`AddressError`] says why an address
//! or URL given on the command line cannot be used, and [`Error`](enum@Error) is what
//! connecting and accepting return. No `Box<dyn Error>` in the library: a
//! caller can `match` on what happened. `thiserror` derives `Display` (the
//! `#[error]` text) and `source()`.
//!
//! A failed read or write is classified here and nowhere else:
//! [`is_disconnect`] says whether it only means the peer went away, and
//! [`close_code`] which close code tells a peer that broke a rule why.

use std::io;

use thiserror::Error;
use tokio_tungstenite::tungstenite;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;

// ANCHOR: protocol_error
/// Why a WebSocket message is not a valid JSON protocol message (chapter 5.1).
#[derive(Debug, Error)]
#[non_exhaustive]
pub enum ProtocolError {
    /// The frame was not a text frame; the JSON protocol is text only.
    /// Holds the kind of frame that came instead ("binary", "ping", ...).
    #[error("expected a JSON text frame, got a {0} frame")]
    NotText(&'static str),
    /// The text was not JSON, or not one of the protocol's messages.
    #[error("invalid JSON message: {0}")]
    InvalidJson(#[source] serde_json::Error),
}
// ANCHOR_END: protocol_error

// ANCHOR: codec_error
/// Why a binary frame could not be decoded (chapter 5.2).
#[derive(Debug, Clone, PartialEq, Eq, Error)]
#[non_exhaustive]
pub enum CodecError {
    /// The WebSocket message was not a binary frame.
    #[error("expected a binary frame")]
    NotBinary,
    /// The frame had no bytes at all, so not even a type byte.
    #[error("empty frame: no type byte")]
    Empty,
    /// The type byte is not one this codec knows.
    #[error("unknown frame type 0x{0:02x}")]
    UnknownType(u8),
    /// A frame typed as text whose payload is not UTF-8.
    #[error("text frame payload is not valid UTF-8")]
    InvalidUtf8,
}
// ANCHOR_END: codec_error

// ANCHOR: address_error
/// An address or URL that cannot be used, with a hint that says what to give
/// instead. Checked before anything touches the network.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
#[non_exhaustive]
pub enum AddressError {
    /// A server's address that is not `IP:PORT`: a bare port, a host name, a URL.
    #[error("not IP:PORT; give an IP address and a port, for example {example}")]
    NotIpPort { example: String },
    /// A client's URL that is not `ws://HOST:PORT[/PATH][?QUERY]`.
    #[error("not a WebSocket URL; use ws://HOST:PORT, for example {example}")]
    NotWsUrl { example: String },
}
// ANCHOR_END: address_error

/// Why connecting or accepting a WebSocket failed.
#[derive(Debug, Error)]
#[non_exhaustive]
pub enum Error {
    /// The URL cannot be used; nothing was sent.
    #[error(transparent)]
    Address(#[from] AddressError),
    /// The WebSocket layer failed (handshake, framing, limits, closed connection).
    #[error(transparent)]
    WebSocket(#[from] tungstenite::Error),
    /// The socket itself failed.
    #[error(transparent)]
    Io(#[from] io::Error),
    /// Something did not happen in time (for example a handshake).
    #[error("timed out: {0}")]
    Timeout(&'static str),
}

// ANCHOR: classify
/// True when `err` only means "the peer went away": a closed connection, a
/// reset, a TCP close without a close frame, a send that raced the peer's
/// close frame. Servers see these all day; they end one connection and
/// deserve a quiet log line, not an alarm.
pub fn is_disconnect(err: &tungstenite::Error) -> bool {
    use tungstenite::Error as E;
    use tungstenite::error::ProtocolError as P;
    match err {
        E::ConnectionClosed | E::AlreadyClosed => true,
        E::Protocol(P::ResetWithoutClosingHandshake) => true,
        // The peer's close frame arrived while we still had something to
        // send: it is leaving, and tungstenite refuses anything but the reply.
        E::Protocol(P::SendAfterClosing) => true,
        E::Io(e) => matches!(
            e.kind(),
            io::ErrorKind::ConnectionReset
                | io::ErrorKind::ConnectionAborted
                | io::ErrorKind::BrokenPipe
                | io::ErrorKind::UnexpectedEof
        ),
        _ => false,
    }
}

/// The close code that tells a peer why its input ended the connection, or
/// `None` when there is nobody to tell (the peer is gone) or nothing the
/// peer did wrong (our own socket failed).
///
/// 1009 for a message over the size limit, 1007 for text that is not UTF-8,
/// 1002 for any other protocol violation.
pub fn close_code(err: &tungstenite::Error) -> Option<CloseCode> {
    use tungstenite::Error as E;
    match err {
        _ if is_disconnect(err) => None,
        E::Capacity(_) => Some(CloseCode::Size),
        E::Utf8(_) => Some(CloseCode::Invalid),
        E::Protocol(_) => Some(CloseCode::Protocol),
        _ => None,
    }
}
// ANCHOR_END: classify

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn disconnects_are_benign_and_protocol_violations_get_a_close_code() {
        use tungstenite::error::ProtocolError as P;
        let closed = tungstenite::Error::ConnectionClosed;
        assert!(is_disconnect(&closed));
        assert_eq!(close_code(&closed), None);
        let reset = tungstenite::Error::Io(io::Error::from(io::ErrorKind::ConnectionReset));
        assert!(is_disconnect(&reset));
        // A reset is a protocol error to tungstenite, but only means "gone".
        let no_close = tungstenite::Error::Protocol(P::ResetWithoutClosingHandshake);
        assert_eq!(close_code(&no_close), None);
        let bad = tungstenite::Error::Protocol(P::UnmaskedFrameFromClient);
        assert!(!is_disconnect(&bad));
        assert_eq!(close_code(&bad), Some(CloseCode::Protocol));
        let too_big = tungstenite::error::CapacityError::MessageTooLong { size: 2, max_size: 1 };
        assert_eq!(close_code(&tungstenite::Error::Capacity(too_big)), Some(CloseCode::Size));
    }

    #[test]
    fn errors_say_what_was_wrong() {
        assert_eq!(CodecError::UnknownType(0x7f).to_string(), "unknown frame type 0x7f");
        let e = ProtocolError::NotText("binary");
        assert_eq!(e.to_string(), "expected a JSON text frame, got a binary frame");
        assert_eq!(Error::Timeout("connecting").to_string(), "timed out: connecting");
    }
}
