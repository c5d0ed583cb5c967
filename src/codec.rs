//! The binary format of chapter 5.2: one type byte, then the payload.
//!
//! ```text
//! +------+---------------------+
//! | type | payload (0..n bytes) |
//! +------+---------------------+
//! ```
//!
//! The frame length is the WebSocket message's own length, so the format needs
//! no length field of its own. Decoding does not copy: the payload is a
//! [`Bytes`] slice of the received message.

use tokio_tungstenite::tungstenite::{Bytes, Message};

use crate::error::CodecError;

// ANCHOR: frame_type
/// The kinds of frame this codec knows. The byte values are the wire format:
/// never renumber them, only add.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub enum FrameType {
    /// UTF-8 text.
    Text = 0x01,
    /// Opaque bytes.
    Data = 0x02,
    /// Application-level ping (a peer would answer with a `Pong` frame).
    Ping = 0x03,
    /// Application-level pong.
    Pong = 0x04,
}
// ANCHOR_END: frame_type

impl TryFrom<u8> for FrameType {
    type Error = CodecError;
    fn try_from(byte: u8) -> Result<Self, CodecError> {
        match byte {
            0x01 => Ok(FrameType::Text),
            0x02 => Ok(FrameType::Data),
            0x03 => Ok(FrameType::Ping),
            0x04 => Ok(FrameType::Pong),
            other => Err(CodecError::UnknownType(other)),
        }
    }
}

/// A decoded frame.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Frame {
    pub kind: FrameType,
    pub payload: Bytes,
}

impl Frame {
    /// A text frame.
    pub fn text(text: &str) -> Frame {
        Frame { kind: FrameType::Text, payload: Bytes::copy_from_slice(text.as_bytes()) }
    }

    /// The payload as text, for a [`FrameType::Text`] frame.
    pub fn as_text(&self) -> Option<&str> {
        // decode() has already checked that text payloads are UTF-8.
        (self.kind == FrameType::Text).then(|| std::str::from_utf8(&self.payload).ok()).flatten()
    }

    /// This frame as a binary WebSocket message.
    pub fn to_message(&self) -> Message {
        Message::Binary(encode(self.kind, &self.payload))
    }
}

// ANCHOR: encode_decode
/// Encodes a frame: the type byte followed by the payload, in one allocation.
pub fn encode(kind: FrameType, payload: &[u8]) -> Bytes {
    let mut buf = Vec::with_capacity(1 + payload.len());
    buf.push(kind as u8);
    buf.extend_from_slice(payload);
    Bytes::from(buf)
}

/// Decodes a frame without copying its payload.
pub fn decode(bytes: Bytes) -> Result<Frame, CodecError> {
    let (&type_byte, _) = bytes.split_first().ok_or(CodecError::Empty)?;
    let kind = FrameType::try_from(type_byte)?;
    let payload = bytes.slice(1..);
    if kind == FrameType::Text && std::str::from_utf8(&payload).is_err() {
        return Err(CodecError::InvalidUtf8);
    }
    Ok(Frame { kind, payload })
}
// ANCHOR_END: encode_decode

impl TryFrom<Message> for Frame {
    type Error = CodecError;
    fn try_from(msg: Message) -> Result<Self, CodecError> {
        match msg {
            Message::Binary(bytes) => decode(bytes),
            _ => Err(CodecError::NotBinary),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_frame_type_round_trips() {
        for kind in [FrameType::Text, FrameType::Data, FrameType::Ping, FrameType::Pong] {
            let payload: &[u8] =
                if kind == FrameType::Text { "héllo".as_bytes() } else { &[0, 255, 7] };
            let bytes = encode(kind, payload);
            assert_eq!(bytes[0], kind as u8);
            let frame = decode(bytes).unwrap();
            assert_eq!(frame, Frame { kind, payload: Bytes::copy_from_slice(payload) });
        }
    }

    #[test]
    fn empty_payload_is_allowed() {
        let frame = decode(encode(FrameType::Ping, &[])).unwrap();
        assert_eq!(frame.kind, FrameType::Ping);
        assert!(frame.payload.is_empty());
    }

    #[test]
    fn decoding_does_not_copy_the_payload() {
        let bytes = encode(FrameType::Data, &[1, 2, 3, 4]);
        let start = bytes.as_ptr();
        let frame = decode(bytes).unwrap();
        assert_eq!(frame.payload.as_ptr(), start.wrapping_add(1));
    }

    #[test]
    fn each_malformed_frame_is_a_distinct_error() {
        assert_eq!(decode(Bytes::new()), Err(CodecError::Empty));
        assert_eq!(decode(Bytes::from_static(&[0x09, 1])), Err(CodecError::UnknownType(0x09)));
        assert_eq!(decode(Bytes::from_static(&[0x01, 0xff, 0xfe])), Err(CodecError::InvalidUtf8));
        assert_eq!(Frame::try_from(Message::text("x")), Err(CodecError::NotBinary));
    }

    #[test]
    fn frames_travel_as_binary_messages() {
        let frame = Frame::text("hi");
        let msg = frame.to_message();
        assert!(msg.is_binary());
        let back = Frame::try_from(msg).unwrap();
        assert_eq!(back.as_text(), Some("hi"));
    }
}
