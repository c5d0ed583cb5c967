//! The crate's typed errors.
//!
//! Parsing network input is where things go wrong, so each parser has a small
//! enum that says exactly what was wrong ([`ProtocolError`] for JSON,
//! [`CodecError`] for the binary format), and [`Error`] gathers them with the
//! transport's own errors for code that does both. No `Box<dyn Error>` in the
//! library: a caller can `match` on what happened.

use std::fmt;
use std::io;

use tokio_tungstenite::tungstenite;

// ANCHOR: protocol_error
/// Why a WebSocket message is not a valid JSON protocol message (chapter 5.1).
#[derive(Debug)]
#[non_exhaustive]
pub enum ProtocolError {
    /// The frame was not a text frame; the JSON protocol is text only.
    /// Holds the kind of frame that came instead ("binary", "ping", ...).
    NotText(&'static str),
    /// The text was not JSON, or not one of the protocol's messages.
    InvalidJson(serde_json::Error),
}
// ANCHOR_END: protocol_error

// ANCHOR: codec_error
/// Why a binary frame could not be decoded (chapter 5.2).
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum CodecError {
    /// The WebSocket message was not a binary frame.
    NotBinary,
    /// The frame had no bytes at all, so not even a type byte.
    Empty,
    /// The type byte is not one this codec knows.
    UnknownType(u8),
    /// A frame typed as text whose payload is not UTF-8.
    InvalidUtf8,
}
// ANCHOR_END: codec_error

/// Any error the library returns.
#[derive(Debug)]
#[non_exhaustive]
pub enum Error {
    /// A JSON protocol message was malformed.
    Protocol(ProtocolError),
    /// A binary frame was malformed.
    Codec(CodecError),
    /// The WebSocket layer failed (handshake, framing, limits, closed connection).
    WebSocket(tungstenite::Error),
    /// The socket itself failed.
    Io(io::Error),
    /// Something did not happen in time (for example a handshake).
    Timeout(&'static str),
}

impl fmt::Display for ProtocolError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ProtocolError::NotText(kind) => {
                write!(f, "expected a JSON text frame, got a {kind} frame")
            }
            ProtocolError::InvalidJson(e) => write!(f, "invalid JSON message: {e}"),
        }
    }
}

impl fmt::Display for CodecError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            CodecError::NotBinary => f.write_str("expected a binary frame"),
            CodecError::Empty => f.write_str("empty frame: no type byte"),
            CodecError::UnknownType(t) => write!(f, "unknown frame type 0x{t:02x}"),
            CodecError::InvalidUtf8 => f.write_str("text frame payload is not valid UTF-8"),
        }
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Error::Protocol(e) => e.fmt(f),
            Error::Codec(e) => e.fmt(f),
            Error::WebSocket(e) => e.fmt(f),
            Error::Io(e) => e.fmt(f),
            Error::Timeout(what) => write!(f, "timed out: {what}"),
        }
    }
}

impl std::error::Error for ProtocolError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            ProtocolError::InvalidJson(e) => Some(e),
            ProtocolError::NotText(_) => None,
        }
    }
}

impl std::error::Error for CodecError {}

impl std::error::Error for Error {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            Error::Protocol(e) => Some(e),
            Error::Codec(e) => Some(e),
            Error::WebSocket(e) => Some(e),
            Error::Io(e) => Some(e),
            Error::Timeout(_) => None,
        }
    }
}

impl From<ProtocolError> for Error {
    fn from(e: ProtocolError) -> Self {
        Error::Protocol(e)
    }
}

impl From<CodecError> for Error {
    fn from(e: CodecError) -> Self {
        Error::Codec(e)
    }
}

impl From<tungstenite::Error> for Error {
    fn from(e: tungstenite::Error) -> Self {
        Error::WebSocket(e)
    }
}

impl From<io::Error> for Error {
    fn from(e: io::Error) -> Self {
        Error::Io(e)
    }
}

/// True when `err` only means "the peer went away": a closed connection, a
/// reset, a TCP close without a close frame, a send that raced the peer's
/// close frame. Servers see these all day; they
/// end one connection and deserve a quiet log line, not an alarm.
///
/// This is the one place the examples decide what is benign.
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn disconnects_are_benign_and_protocol_violations_are_not() {
        assert!(is_disconnect(&tungstenite::Error::ConnectionClosed));
        let reset = io::Error::from(io::ErrorKind::ConnectionReset);
        assert!(is_disconnect(&tungstenite::Error::Io(reset)));
        let bad = tungstenite::error::ProtocolError::UnmaskedFrameFromClient;
        assert!(!is_disconnect(&tungstenite::Error::Protocol(bad)));
    }

    #[test]
    fn errors_say_what_was_wrong() {
        assert_eq!(CodecError::UnknownType(0x7f).to_string(), "unknown frame type 0x7f");
        let e: Error = ProtocolError::NotText("binary").into();
        assert_eq!(e.to_string(), "expected a JSON text frame, got a binary frame");
    }
}
