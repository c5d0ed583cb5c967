//! Chapter 5.2: binary messages. A tour of the library's binary format
//! (`src/codec.rs`: one type byte, then the payload), run in-process: no
//! server, no network.
//!
//! What it teaches: encoding a frame into one buffer; decoding it *without
//! copying the payload* (the payload is a `Bytes` slice of the received
//! message, sharing its reference-counted buffer); and a typed `CodecError`
//! for each way a peer's bytes can be wrong, so bad input is a value to
//! answer with, never a panic. The format needs no length field: a WebSocket
//! message already knows its length.
//!
//! Run it:
//!
//! ```text
//! cargo run --example binary_messages
//! ```
//!
//! You will see four sections: each `FrameType` encoded (as hex bytes),
//! frames decoded back, a check that decoding did not copy the payload, and
//! what four kinds of malformed input produce (an empty message, an unknown
//! type byte, invalid UTF-8 in a text frame, a text message where a binary
//! one was expected). The output is the same on every run.
//!
//! Limits: none; nothing here reads from a socket. A server that decodes
//! these frames sets `max_message_size` on its `WebSocketConfig` (see
//! `examples/echo_server.rs`), which bounds the payload too.
//!
//! Docs: docs/05-message-formats.md

use std::io::{self, Write};

use clap::Parser;
use tokio_tungstenite::tungstenite::{Bytes, Message};
use websocket_tutorial::CodecError;
use websocket_tutorial::codec::{self, Frame, FrameType};
use websocket_tutorial::output;

/// A tour of the binary format, in-process: no network, no options.
#[derive(Parser)]
struct Args {}

fn main() {
    Args::parse(); // --help, or an error for any argument (exit 2)
    let _log = output::init_logging();
    // Each section writes to `out` and stops at the first failed write:
    // `println!` would panic when stdout is gone (`binary_messages | head -1`),
    // and there is nobody left to show the rest to.
    let mut out = io::stdout().lock();
    let _ = tour(&mut out);
}

fn tour(out: &mut impl Write) -> io::Result<()> {
    encode_each_frame_type(out)?;
    decode_frames(out)?;
    decoding_does_not_copy(out)?;
    malformed_input(out)
}

/// Section 1: every `FrameType` and the bytes it becomes.
fn encode_each_frame_type(out: &mut impl Write) -> io::Result<()> {
    writeln!(out, "# 1. Encoding: one type byte, then the payload")?;
    // ANCHOR: encode
    let frames: [(FrameType, &[u8]); 4] = [
        (FrameType::Text, "héllo".as_bytes()),
        (FrameType::Data, &[0x00, 0xff, 0x07]),
        (FrameType::Ping, b"42"),
        (FrameType::Pong, b""),
    ];
    for (kind, payload) in frames {
        let bytes: Bytes = codec::encode(kind, payload);
        writeln!(out, "{kind:?} (0x{:02x}) with {} payload bytes", kind as u8, payload.len())?;
        writeln!(out, "  bytes: {}", hex(&bytes))?;
    }
    // ANCHOR_END: encode
    writeln!(out)?;
    Ok(())
}

/// Section 2: frames sent as binary WebSocket messages and decoded back.
fn decode_frames(out: &mut impl Write) -> io::Result<()> {
    writeln!(out, "# 2. Decoding: binary messages back into frames")?;
    // ANCHOR: decode
    let frames = [Frame::text("héllo"), Frame { kind: FrameType::Ping, payload: Bytes::new() }];
    for frame in frames {
        // What travels: a binary WebSocket message holding the encoded bytes.
        let msg: Message = frame.to_message();
        writeln!(out, "{}", describe(&msg))?;
        match Frame::try_from(msg) {
            Ok(back) => {
                writeln!(out, "  kind: {:?}, payload: {}", back.kind, hex(&back.payload))?;
                if let Some(text) = back.as_text() {
                    writeln!(out, "  as text: {text}")?;
                }
                writeln!(out, "  same as the frame sent: {}", back == frame)?;
            }
            Err(e) => writeln!(out, "  error: {e}")?,
        }
    }
    // ANCHOR_END: decode
    writeln!(out)?;
    Ok(())
}

/// Section 3: the decoded payload points into the received buffer.
fn decoding_does_not_copy(out: &mut impl Write) -> io::Result<()> {
    writeln!(out, "# 3. Decoding does not copy the payload")?;
    // ANCHOR: no_copy
    let received: Bytes = codec::encode(FrameType::Data, &[1, 2, 3, 4]);
    writeln!(out, "received: {}", hex(&received))?;
    // Where the payload starts in the received buffer: after the type byte.
    let payload_start = received.as_ptr().wrapping_add(1);
    match codec::decode(received) {
        Ok(frame) => {
            writeln!(out, "  payload: {}", hex(&frame.payload))?;
            // `Bytes::slice` shares the reference-counted buffer: the payload
            // is the received bytes from offset 1 on, not a copy of them.
            writeln!(
                out,
                "  points into the received buffer: {}",
                frame.payload.as_ptr() == payload_start
            )?;
        }
        Err(e) => writeln!(out, "  error: {e}")?,
    }
    // ANCHOR_END: no_copy
    writeln!(out)?;
    Ok(())
}

/// Section 4: what each kind of malformed input produces.
fn malformed_input(out: &mut impl Write) -> io::Result<()> {
    writeln!(out, "# 4. Malformed input: a typed CodecError, never a panic")?;
    let cases = [
        ("empty message", Message::binary(Bytes::new())),
        ("unknown type byte", Message::binary(vec![0x09, 0x01])),
        ("invalid UTF-8 in a text frame", Message::binary(vec![0x01, 0xff, 0xfe])),
        ("text message where binary was expected", Message::text("hello")),
    ];
    for (what, msg) in cases {
        writeln!(out, "{what}")?;
        writeln!(out, "  input: {}", describe(&msg))?;
        // ANCHOR: errors
        match Frame::try_from(msg) {
            Ok(frame) => writeln!(out, "  ok: {frame:?}")?,
            Err(e) => {
                writeln!(out, "  error: {}", error_kind(&e))?;
                writeln!(out, "  says: {e}")?;
            }
        }
        // ANCHOR_END: errors
    }
    Ok(())
}

/// The variant of a `CodecError`, written as Rust code would name it.
fn error_kind(err: &CodecError) -> String {
    match err {
        CodecError::NotBinary => "CodecError::NotBinary".into(),
        CodecError::Empty => "CodecError::Empty".into(),
        CodecError::UnknownType(byte) => format!("CodecError::UnknownType(0x{byte:02x})"),
        CodecError::InvalidUtf8 => "CodecError::InvalidUtf8".into(),
        // CodecError is #[non_exhaustive]: the library may add variants.
        other => format!("{other:?}"),
    }
}

/// A WebSocket message as this demo prints it.
fn describe(msg: &Message) -> String {
    match msg {
        Message::Binary(bytes) => format!("binary message: {}", hex(bytes)),
        Message::Text(text) => format!("text message: {text}"),
        other => format!("{other:?}"),
    }
}

/// Bytes as lowercase hex pairs, `(none)` for no bytes.
fn hex(bytes: &[u8]) -> String {
    if bytes.is_empty() {
        return "(none)".into();
    }
    let pairs: Vec<String> = bytes.iter().map(|b| format!("{b:02x}")).collect();
    pairs.join(" ")
}
