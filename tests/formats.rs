//! Chapter 5: the message-format demos (`json_messages`, `binary_messages`)
//! run to completion and print exactly the wire formats and errors the docs
//! quote.

mod common;

use common::Program;

/// Runs example `name` to its end; it must exit 0 and write nothing to
/// stderr. Returns its stdout lines.
async fn run(name: &str) -> Vec<String> {
    let mut program = Program::start(name, &[]);
    let mut lines = Vec::new();
    while let Some(line) = program.next_line().await {
        lines.push(line);
    }
    assert_eq!(program.exit_code().await, 0, "{name} exits 0; printed {lines:#?}");
    assert_eq!(program.stderr_text().await, "", "{name} writes nothing to stderr");
    lines
}

/// Fails unless every line of `expected` appears in `lines`, whole and in
/// this order (other lines may come between them).
fn assert_in_order(lines: &[String], expected: &[&str]) {
    let mut rest = lines.iter();
    for want in expected {
        assert!(
            rest.any(|line| line == want),
            "line {want:?} missing or out of order in output:\n{}",
            lines.join("\n")
        );
    }
}

/// Each ClientMessage variant is printed with its exact JSON wire form, and
/// text parses back whatever the field order, ignoring unknown fields.
#[tokio::test]
async fn json_demo_prints_each_client_message_wire_format() {
    let lines = run("json_messages").await;
    assert_in_order(
        &lines,
        &[
            "# 1. Encoding: each ClientMessage as a text frame",
            r#"Join { room: "general", username: "alice", since: None, epoch: None }"#,
            r#"  text frame: {"type":"Join","room":"general","username":"alice"}"#,
            r#"Leave { room: "general" }"#,
            r#"  text frame: {"type":"Leave","room":"general"}"#,
            r#"Message { room: "general", content: "hi" }"#,
            r#"  text frame: {"type":"Message","room":"general","content":"hi"}"#,
            "Ping",
            r#"  text frame: {"type":"Ping"}"#,
            "Pong",
            r#"  text frame: {"type":"Pong"}"#,
            "# 2. Decoding: text frames back into ClientMessage",
            r#"{"type":"Join","room":"general","username":"alice"}"#,
            r#"  ok: Join { room: "general", username: "alice", since: None, epoch: None }"#,
            r#"{ "username": "alice", "room": "general", "type": "Join" }"#,
            r#"  ok: Join { room: "general", username: "alice", since: None, epoch: None }"#,
            r#"{"type":"Ping","sent_at":1700000000}"#,
            "  ok: Ping",
        ],
    );
}

/// Not JSON, an unknown "type", a missing field and a binary frame each give
/// the matching ProtocolError, printed with its message.
#[tokio::test]
async fn json_demo_prints_a_typed_error_for_each_malformed_input() {
    let lines = run("json_messages").await;
    assert_in_order(
        &lines,
        &[
            "# 3. Malformed input: a typed ProtocolError, never a panic",
            "not JSON",
            "  input: text frame: hello",
            "  error: ProtocolError::InvalidJson (syntax)",
            "  says: invalid JSON message: expected value at line 1 column 1",
            r#"unknown "type""#,
            r#"  input: text frame: {"type":"Shout","room":"general"}"#,
            "  error: ProtocolError::InvalidJson (data)",
            "missing field",
            r#"  input: text frame: {"type":"Join","room":"general"}"#,
            "  error: ProtocolError::InvalidJson (data)",
            "  says: invalid JSON message: missing field `username`",
            "binary frame",
            "  input: binary frame: 3 bytes",
            r#"  error: ProtocolError::NotText("binary")"#,
            "  says: expected a JSON text frame, got a binary frame",
        ],
    );
    // serde_json adds a position to this one; the substance is the variant list.
    let unknown = lines.iter().find(|l| l.contains("unknown variant")).map(String::as_str);
    assert!(
        unknown.is_some_and(|l| l.starts_with(
            "  says: invalid JSON message: unknown variant `Shout`, expected one of \
             `Join`, `Leave`, `Message`, `Members`, `Ping`, `Pong`"
        )),
        "unknown type error: {unknown:?}"
    );
}

/// A ServerEvent (the chat server's Message and Error events) encodes to the
/// documented JSON and decodes back to an equal value.
#[tokio::test]
async fn json_demo_round_trips_server_events() {
    let lines = run("json_messages").await;
    assert_in_order(
        &lines,
        &[
            "# 4. A ServerEvent round trip (what the chat server sends)",
            r#"  text frame: {"type":"Message","room":"general","username":"alice","content":"hi","timestamp":"2026-11-25T19:50:35.123Z","seq":1}"#,
            "  decoded back equal: true",
            r#"  text frame: {"type":"Error","code":"invalid","message":"invalid JSON message: missing field `username`"}"#,
            "  decoded back equal: true",
        ],
    );
    assert!(!lines.iter().any(|l| l.ends_with("equal: false")), "every event round trips");
}

/// Each FrameType encodes to its type byte followed by the payload, decodes
/// back to the same frame, and decoding shares the buffer instead of copying.
#[tokio::test]
async fn binary_demo_prints_each_frame_type_and_decodes_without_copying() {
    let lines = run("binary_messages").await;
    assert_in_order(
        &lines,
        &[
            "# 1. Encoding: one type byte, then the payload",
            "Text (0x01) with 6 payload bytes",
            "  bytes: 01 68 c3 a9 6c 6c 6f", // "héllo": é is two bytes in UTF-8
            "Data (0x02) with 3 payload bytes",
            "  bytes: 02 00 ff 07",
            "Ping (0x03) with 2 payload bytes",
            "  bytes: 03 34 32",
            "Pong (0x04) with 0 payload bytes",
            "  bytes: 04",
            "# 2. Decoding: binary messages back into frames",
            "binary message: 01 68 c3 a9 6c 6c 6f",
            "  kind: Text, payload: 68 c3 a9 6c 6c 6f",
            "  as text: héllo",
            "  same as the frame sent: true",
            "binary message: 03",
            "  kind: Ping, payload: (none)",
            "  same as the frame sent: true",
            "# 3. Decoding does not copy the payload",
            "received: 02 01 02 03 04",
            "  payload: 01 02 03 04",
            "  points into the received buffer: true",
        ],
    );
}

/// An empty message, an unknown type byte, invalid UTF-8 in a text frame and
/// a text message each give the matching CodecError.
#[tokio::test]
async fn binary_demo_prints_a_typed_error_for_each_malformed_input() {
    let lines = run("binary_messages").await;
    assert_in_order(
        &lines,
        &[
            "# 4. Malformed input: a typed CodecError, never a panic",
            "empty message",
            "  input: binary message: (none)",
            "  error: CodecError::Empty",
            "  says: empty frame: no type byte",
            "unknown type byte",
            "  input: binary message: 09 01",
            "  error: CodecError::UnknownType(0x09)",
            "  says: unknown frame type 0x09",
            "invalid UTF-8 in a text frame",
            "  input: binary message: 01 ff fe",
            "  error: CodecError::InvalidUtf8",
            "  says: text frame payload is not valid UTF-8",
            "text message where binary was expected",
            "  input: text message: hello",
            "  error: CodecError::NotBinary",
            "  says: expected a binary frame",
        ],
    );
}
