//! Chapter 5.1: JSON messages. A tour of the library's JSON protocol
//! (`src/protocol.rs`), run in-process: no server, no network.
//!
//! What it teaches: a `#[serde(tag = "type")]` enum gives every message a
//! `"type"` field that JavaScript and Python clients can switch on; encoding
//! builds a *text* frame; decoding a frame returns `Result<_, ProtocolError>`,
//! so malformed input from a peer is a value to answer with, never a panic;
//! the chat server's events (`ServerEvent`) travel the same way.
//!
//! Run it:
//!
//! ```text
//! cargo run --example json_messages
//! ```
//!
//! You will see four sections: the exact wire form of each `ClientMessage`,
//! text parsed back into messages, what four kinds of malformed input produce
//! (not JSON, an unknown `"type"`, a missing field, a binary frame), and a
//! `ServerEvent` round trip. The output is the same on every run.
//!
//! Limits: none; nothing here reads from a socket. A server that reads these
//! messages sets `max_message_size` on its `WebSocketConfig` (see
//! `examples/echo_server.rs`), because `serde_json` parses whatever size it
//! is handed.
//!
//! Docs: docs/05-message-formats.md

use std::io::{self, Write};

use clap::Parser;
use tokio_tungstenite::tungstenite::Message;
use websocket_tutorial::ProtocolError;
use websocket_tutorial::output;
use websocket_tutorial::protocol::{ClientMessage, ErrorCode, ServerEvent, frame_kind};

/// A tour of the JSON protocol, in-process: no network, no options.
#[derive(Parser)]
struct Args {}

fn main() {
    Args::parse(); // --help, or an error for any argument (exit 2)
    let _log = output::init_logging();
    // Each section writes to `out` and stops at the first failed write:
    // `println!` would panic when stdout is gone (`json_messages | head -1`),
    // and there is nobody left to show the rest to.
    let mut out = io::stdout().lock();
    let _ = tour(&mut out);
}

fn tour(out: &mut impl Write) -> io::Result<()> {
    encode_each_client_message(out)?;
    decode_text_frames(out)?;
    malformed_input(out)?;
    server_event_round_trip(out)
}

/// Section 1: every `ClientMessage` variant and the text frame it becomes.
fn encode_each_client_message(out: &mut impl Write) -> io::Result<()> {
    writeln!(out, "# 1. Encoding: each ClientMessage as a text frame")?;
    // ANCHOR: encode
    let messages = [
        ClientMessage::Join {
            room: "general".into(),
            username: "alice".into(),
            since: None,
            epoch: None,
        },
        ClientMessage::Leave { room: "general".into() },
        ClientMessage::Message { room: "general".into(), content: "hi".into() },
        ClientMessage::Ping,
        ClientMessage::Pong,
    ];
    for msg in &messages {
        let frame: Message = msg.to_message();
        writeln!(out, "{msg:?}")?;
        writeln!(out, "  {} frame: {}", frame_kind(&frame), wire(&frame))?;
    }
    // ANCHOR_END: encode
    writeln!(out)?;
    Ok(())
}

/// Section 2: text frames parsed back into `ClientMessage`s.
fn decode_text_frames(out: &mut impl Write) -> io::Result<()> {
    writeln!(out, "# 2. Decoding: text frames back into ClientMessage")?;
    // ANCHOR: decode
    let inputs = [
        r#"{"type":"Join","room":"general","username":"alice"}"#,
        // The tag need not come first, and whitespace is free.
        r#"{ "username": "alice", "room": "general", "type": "Join" }"#,
        // Fields the enum does not know are ignored, so a newer client can
        // add one without breaking an older server.
        r#"{"type":"Ping","sent_at":1700000000}"#,
    ];
    for text in inputs {
        let parsed = ClientMessage::try_from(&Message::text(text));
        writeln!(out, "{text}")?;
        match parsed {
            Ok(msg) => writeln!(out, "  ok: {msg:?}")?,
            Err(e) => writeln!(out, "  error: {e}")?,
        }
    }
    // ANCHOR_END: decode
    writeln!(out)?;
    Ok(())
}

/// Section 3: what each kind of malformed input produces.
fn malformed_input(out: &mut impl Write) -> io::Result<()> {
    writeln!(out, "# 3. Malformed input: a typed ProtocolError, never a panic")?;
    let cases = [
        ("not JSON", Message::text("hello")),
        ("unknown \"type\"", Message::text(r#"{"type":"Shout","room":"general"}"#)),
        ("missing field", Message::text(r#"{"type":"Join","room":"general"}"#)),
        ("binary frame", Message::binary(vec![0x01, 0x02, 0x03])),
    ];
    for (what, frame) in cases {
        writeln!(out, "{what}")?;
        writeln!(out, "  input: {} frame: {}", frame_kind(&frame), wire(&frame))?;
        // ANCHOR: errors
        match ClientMessage::try_from(&frame) {
            Ok(msg) => writeln!(out, "  ok: {msg:?}")?,
            Err(e) => {
                writeln!(out, "  error: {}", error_kind(&e))?;
                writeln!(out, "  says: {e}")?;
            }
        }
        // ANCHOR_END: errors
    }
    writeln!(out)?;
    Ok(())
}

// ANCHOR: error_kind
/// The variant of a `ProtocolError`, and for bad JSON which of serde_json's
/// categories it falls in: `syntax` (not JSON at all), `data` (JSON, but not
/// one of our messages) or `eof` (cut short).
fn error_kind(err: &ProtocolError) -> String {
    match err {
        ProtocolError::NotText(kind) => format!("ProtocolError::NotText({kind:?})"),
        ProtocolError::InvalidJson(e) => {
            let category = match e.classify() {
                serde_json::error::Category::Io => "io",
                serde_json::error::Category::Syntax => "syntax",
                serde_json::error::Category::Data => "data",
                serde_json::error::Category::Eof => "eof",
            };
            format!("ProtocolError::InvalidJson ({category})")
        }
        // ProtocolError is #[non_exhaustive]: the library may add variants.
        other => format!("{other:?}"),
    }
}
// ANCHOR_END: error_kind

/// Section 4: the chat server's events go through the same machinery.
fn server_event_round_trip(out: &mut impl Write) -> io::Result<()> {
    writeln!(out, "# 4. A ServerEvent round trip (what the chat server sends)")?;
    // ANCHOR: server_event
    let events = [
        ServerEvent::Message {
            room: "general".into(),
            username: "alice".into(),
            content: "hi".into(),
            // The server sets these; fixed here so the output never changes.
            timestamp: "2026-11-25T19:50:35.123Z".into(),
            seq: 1,
        },
        // How a server answers a malformed command: the connection stays open.
        ServerEvent::Error {
            room: None,
            code: ErrorCode::Invalid,
            message: "invalid JSON message: missing field `username`".into(),
        },
    ];
    for event in &events {
        let frame = event.to_message();
        let back = ServerEvent::try_from(&frame);
        writeln!(out, "{event:?}")?;
        writeln!(out, "  {} frame: {}", frame_kind(&frame), wire(&frame))?;
        writeln!(out, "  decoded back equal: {}", back.is_ok_and(|back| back == *event))?;
    }
    // ANCHOR_END: server_event
    Ok(())
}

/// The text of a text frame, or a short description of any other frame.
fn wire(frame: &Message) -> String {
    match frame {
        Message::Text(text) => text.to_string(),
        other => format!("{} bytes", other.len()),
    }
}
