//! The JSON protocol of chapter 5.1 and the chat server's events (chapter 6.1).
//!
//! Both enums are tagged by a `"type"` field, the shape most JavaScript and
//! Python clients expect:
//!
//! ```json
//! {"type":"Join","room":"general","username":"alice"}
//! {"type":"Message","room":"general","username":"alice","content":"hi","timestamp":"2026-11-25T19:50:35.123Z","seq":1}
//! ```
//!
//! Converting from a WebSocket [`Message`] returns a [`ProtocolError`] for a
//! binary frame or malformed JSON: a value to answer with, never a panic.

use serde::{Deserialize, Serialize};
use tokio_tungstenite::tungstenite::Message;

use crate::error::ProtocolError;

// ANCHOR: client_message
/// What a client sends: the commands of chapter 5.1.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type")]
pub enum ClientMessage {
    /// Enter `room` under the name `username`; the room is created if needed.
    Join {
        room: String,
        username: String,
        /// Resume after a reconnect: the `seq` of the last message of `room`
        /// this client showed. After its `Joined`, the joiner receives every
        /// later message the room's history still holds (a [`ServerEvent::Gap`]
        /// first, if some are gone), then live ones. Absent: live ones only.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        since: Option<u64>,
        /// With `since`: the `epoch` of the room that `since` counts in,
        /// from this client's last `Joined` there. When the room has
        /// started over since (another `epoch`), the server replays its
        /// new life from the first message it holds, as for `since` 0.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        epoch: Option<String>,
    },
    /// Leave `room`.
    Leave { room: String },
    /// Say `content` in `room` (the sender must have joined it).
    Message { room: String, content: String },
    /// Who is in `room` (the sender must have joined it): answered with
    /// [`ServerEvent::Members`].
    Members { room: String },
    /// Application-level ping: the server answers [`ServerEvent::Pong`].
    Ping,
    /// Application-level pong; carries nothing.
    Pong,
}
// ANCHOR_END: client_message

// ANCHOR: server_event
/// What the chat server sends (chapter 6.1).
///
/// The server, not the client, sets `timestamp` and `seq`: a client cannot
/// lie about when it spoke, and `seq` lets a client notice a gap.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type")]
pub enum ServerEvent {
    /// `username` joined `room`: sent to every member, the newcomer
    /// included, in rooms of up to `--presence-limit` members (1,000 by
    /// default); in a bigger room, to the newcomer alone.
    Joined {
        room: String,
        username: String,
        /// When, by the server's clock: RFC 3339, UTC, as a message's.
        /// (Absent from an older server: `""`.)
        #[serde(default)]
        timestamp: String,
        /// The `seq` of the room's last message at the join (0: none yet).
        /// A replay after a join with `since` ends with this message.
        #[serde(default)]
        seq: u64,
        /// Which life of the room `seq` counts in: it changes when the room
        /// starts over (the server restarted, or the room emptied and was
        /// made again). Compare it, nothing more. (Absent from an older
        /// server: `""`.)
        #[serde(default)]
        epoch: String,
    },
    /// `username` left `room` (a leave, a disconnect or an eviction): sent to
    /// the members who remain, in rooms of up to `--presence-limit` members;
    /// after a leave, also to the leaver, whatever the room's size.
    Left {
        room: String,
        username: String,
        /// When, by the server's clock, as in `Joined`.
        #[serde(default)]
        timestamp: String,
    },
    /// A chat message, stamped by the server.
    Message {
        room: String,
        username: String,
        content: String,
        /// RFC 3339, UTC, set by the server.
        timestamp: String,
        /// Per-room counter starting at 1.
        seq: u64,
    },
    /// Sent to a member resuming with `since`, before the messages it
    /// missed: messages `first..=last` of `room` are no longer in its
    /// history, and will never arrive.
    Gap { room: String, first: u64, last: u64 },
    /// Sent to a member resuming with `since` and an `epoch` that is not
    /// the room's any more, right after its `Joined` (which names the new
    /// one): the room started over while it was away (the server
    /// restarted, or the room emptied and was made again), `since` counts
    /// in its old life, and what follows is the new life from its first
    /// message still held (a `Gap` first, if some are gone).
    StartedOver { room: String },
    /// The answer to [`ClientMessage::Members`]: the names in `room`, sorted.
    Members { room: String, usernames: Vec<String> },
    /// The answer to [`ClientMessage::Ping`].
    Pong,
    /// A command was refused; the connection stays open. `room` names the
    /// room the refused command was about, so a client can tell which one
    /// failed; it is absent (not `null`) when no room is concerned. `code`
    /// says why, for a program to act on; `message` says it for people, and
    /// its words may change.
    Error {
        #[serde(default, skip_serializing_if = "Option::is_none")]
        room: Option<String>,
        code: ErrorCode,
        message: String,
    },
}
// ANCHOR_END: server_event

// ANCHOR: error_code
/// Why the chat server refused a command: the `code` of an `Error` event,
/// `"name_taken"` on the wire. A code keeps its meaning; a newer server may
/// add codes, and a client reads one it does not know as `Other`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ErrorCode {
    /// Not a command: invalid JSON, an unknown `type`, a field missing or
    /// of the wrong type, or a binary frame.
    Invalid,
    /// A username or room name breaks the rules: 1 to [`MAX_NAME_CHARS`]
    /// characters, not only spaces, no control characters.
    BadName,
    /// Message content empty, or over [`MAX_CONTENT_BYTES`].
    BadContent,
    /// Already in [`MAX_ROOMS_PER_CLIENT`] rooms.
    TooManyRooms,
    /// With tokens: a join under another name than the token's.
    NotYourName,
    /// Another member of the room has that name. It may be this client's
    /// own earlier connection, not yet noticed gone: ask again later.
    NameTaken,
    /// Already a member of the room.
    AlreadyJoined,
    /// A join's `since` is ahead of the room's last message: the room
    /// started over (the server restarted, or the room emptied). Join
    /// again without `since`.
    SinceAhead,
    /// Not a member of the room.
    NotMember,
    /// Over the rate limit: the message says when to try again.
    RateLimited,
    /// The chat cannot decide just now (a cluster node without Redis):
    /// try again shortly.
    Unavailable,
    /// A code this program does not know, from a newer server.
    #[serde(other)]
    Other,
}
// ANCHOR_END: error_code

// The chat server's limits on what a client sends (chapter 6.1). A client
// may check them too, to refuse a line at once instead of sending it only to
// have it refused.

/// Usernames and room names: 1 to this many characters.
pub const MAX_NAME_CHARS: usize = 32;
/// Message content: 1 to this many bytes (of UTF-8).
pub const MAX_CONTENT_BYTES: usize = 4 * 1024;
/// How many rooms one connection may be in at once.
pub const MAX_ROOMS_PER_CLIENT: usize = 16;

// ANCHOR: checks
/// Checks a username or a room name (`what` says which, for the message):
/// 1 to [`MAX_NAME_CHARS`] characters, not only spaces, no control
/// characters (a newline in a name would forge a line in a log or a
/// terminal).
pub fn check_name(what: &str, name: &str) -> Result<(), String> {
    let chars = name.chars().count();
    if chars == 0 || chars > MAX_NAME_CHARS || name.trim().is_empty() {
        return Err(format!("{what} must be 1 to {MAX_NAME_CHARS} characters"));
    }
    if name.chars().any(char::is_control) {
        return Err(format!("{what} must not contain control characters"));
    }
    Ok(())
}

/// Checks a message's content: 1 to [`MAX_CONTENT_BYTES`] bytes.
pub fn check_content(content: &str) -> Result<(), String> {
    if content.is_empty() || content.len() > MAX_CONTENT_BYTES {
        return Err(format!("content must be 1 to {MAX_CONTENT_BYTES} bytes"));
    }
    Ok(())
}
// ANCHOR_END: checks

/// The time a server stamps on a `Message`, a `Joined` or a `Left` now: RFC 3339 in UTC with
/// milliseconds, `2026-11-25T19:50:35.123Z`.
pub fn timestamp_now() -> String {
    chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Millis, true)
}

// ANCHOR: from_message
/// Serialises `value` into a text [`Message`]. The result is cheap to clone
/// (its payload is reference counted), so serialise once and clone per
/// recipient.
pub fn to_message<T: Serialize>(value: &T) -> Message {
    // Serialising these enums cannot fail: every field is a string or an
    // integer, and none is a map with non-string keys.
    Message::text(serde_json::to_string(value).unwrap_or_default())
}

/// Parses a text [`Message`] as JSON of type `T`.
pub fn from_message<T: for<'de> Deserialize<'de>>(msg: &Message) -> Result<T, ProtocolError> {
    match msg {
        Message::Text(text) => serde_json::from_str(text).map_err(ProtocolError::InvalidJson),
        other => Err(ProtocolError::NotText(frame_kind(other))),
    }
}
// ANCHOR_END: from_message

/// A short name for the kind of frame, for error messages and logs.
pub fn frame_kind(msg: &Message) -> &'static str {
    match msg {
        Message::Text(_) => "text",
        Message::Binary(_) => "binary",
        Message::Ping(_) => "ping",
        Message::Pong(_) => "pong",
        Message::Close(_) => "close",
        Message::Frame(_) => "raw",
    }
}

impl ClientMessage {
    /// This message as a text frame.
    pub fn to_message(&self) -> Message {
        to_message(self)
    }
}

impl ServerEvent {
    /// This event as a text frame.
    pub fn to_message(&self) -> Message {
        to_message(self)
    }
}

impl TryFrom<&Message> for ClientMessage {
    type Error = ProtocolError;
    fn try_from(msg: &Message) -> Result<Self, ProtocolError> {
        from_message(msg)
    }
}

impl TryFrom<&Message> for ServerEvent {
    type Error = ProtocolError;
    fn try_from(msg: &Message) -> Result<Self, ProtocolError> {
        from_message(msg)
    }
}

/// `event` as a test expects it: a `Joined` or `Left` must carry the
/// server's time, now (RFC 3339, UTC, milliseconds), and a `Joined` an
/// epoch; both are then blanked so that the rest compares exactly.
#[cfg(test)]
pub(crate) fn unstamped(mut event: ServerEvent) -> ServerEvent {
    if let ServerEvent::Joined { timestamp, .. } | ServerEvent::Left { timestamp, .. } = &mut event
    {
        let stamped = chrono::DateTime::parse_from_rfc3339(timestamp).expect("RFC 3339");
        let age = chrono::Utc::now().signed_duration_since(stamped);
        assert!(age.num_seconds().abs() < 60, "the server's now: {timestamp}");
        assert!(timestamp.len() == 24 && timestamp.ends_with('Z'), "UTC, ms: {timestamp}");
        timestamp.clear();
    }
    if let ServerEvent::Joined { epoch, .. } = &mut event {
        assert!(!epoch.is_empty(), "a Joined names the room's epoch");
        epoch.clear();
    }
    event
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_timestamp_is_utc_to_the_millisecond() {
        let stamp = timestamp_now();
        assert!(chrono::DateTime::parse_from_rfc3339(&stamp).is_ok(), "{stamp}");
        assert!(stamp.len() == 24 && stamp.ends_with('Z') && stamp.as_bytes()[19] == b'.');
    }

    fn wire(msg: &ClientMessage) -> String {
        msg.to_message().into_text().unwrap().to_string()
    }

    #[test]
    fn client_messages_have_the_documented_wire_format() {
        let cases = [
            (
                ClientMessage::Join {
                    room: "general".into(),
                    username: "alice".into(),
                    since: None,
                    epoch: None,
                },
                r#"{"type":"Join","room":"general","username":"alice"}"#,
            ),
            (
                ClientMessage::Join {
                    room: "general".into(),
                    username: "alice".into(),
                    since: Some(41),
                    epoch: None,
                },
                r#"{"type":"Join","room":"general","username":"alice","since":41}"#,
            ),
            (
                ClientMessage::Join {
                    room: "general".into(),
                    username: "alice".into(),
                    since: Some(41),
                    epoch: Some("18e4a0c1f2-77-3".into()),
                },
                r#"{"type":"Join","room":"general","username":"alice","since":41,"epoch":"18e4a0c1f2-77-3"}"#,
            ),
            (
                ClientMessage::Members { room: "general".into() },
                r#"{"type":"Members","room":"general"}"#,
            ),
            (
                ClientMessage::Leave { room: "general".into() },
                r#"{"type":"Leave","room":"general"}"#,
            ),
            (
                ClientMessage::Message { room: "general".into(), content: "hi".into() },
                r#"{"type":"Message","room":"general","content":"hi"}"#,
            ),
            (ClientMessage::Ping, r#"{"type":"Ping"}"#),
            (ClientMessage::Pong, r#"{"type":"Pong"}"#),
        ];
        for (msg, expected) in cases {
            assert_eq!(wire(&msg), expected);
            let back = ClientMessage::try_from(&Message::text(expected)).unwrap();
            assert_eq!(back, msg, "round trip of {expected}");
        }
    }

    #[test]
    fn server_events_have_the_documented_wire_format() {
        let cases = [
            (
                ServerEvent::Joined {
                    room: "r".into(),
                    username: "bob".into(),
                    timestamp: "2026-11-25T12:00:00.000Z".into(),
                    seq: 6,
                    epoch: "18e4a0c1f2-77-3".into(),
                },
                r#"{"type":"Joined","room":"r","username":"bob","timestamp":"2026-11-25T12:00:00.000Z","seq":6,"epoch":"18e4a0c1f2-77-3"}"#,
            ),
            (
                ServerEvent::Left {
                    room: "r".into(),
                    username: "bob".into(),
                    timestamp: "2026-11-25T12:00:01.000Z".into(),
                },
                r#"{"type":"Left","room":"r","username":"bob","timestamp":"2026-11-25T12:00:01.000Z"}"#,
            ),
            (
                ServerEvent::Message {
                    room: "r".into(),
                    username: "bob".into(),
                    content: "yo".into(),
                    timestamp: "2026-11-25T12:00:00.000Z".into(),
                    seq: 7,
                },
                r#"{"type":"Message","room":"r","username":"bob","content":"yo","timestamp":"2026-11-25T12:00:00.000Z","seq":7}"#,
            ),
            (
                ServerEvent::Gap { room: "r".into(), first: 42, last: 57 },
                r#"{"type":"Gap","room":"r","first":42,"last":57}"#,
            ),
            (ServerEvent::StartedOver { room: "r".into() }, r#"{"type":"StartedOver","room":"r"}"#),
            (
                ServerEvent::Members {
                    room: "r".into(),
                    usernames: vec!["al".into(), "bob".into()],
                },
                r#"{"type":"Members","room":"r","usernames":["al","bob"]}"#,
            ),
            (ServerEvent::Pong, r#"{"type":"Pong"}"#),
            (
                ServerEvent::Error { room: None, code: ErrorCode::Invalid, message: "no".into() },
                r#"{"type":"Error","code":"invalid","message":"no"}"#,
            ),
            (
                ServerEvent::Error {
                    room: Some("r".into()),
                    code: ErrorCode::NameTaken,
                    message: "no".into(),
                },
                r#"{"type":"Error","room":"r","code":"name_taken","message":"no"}"#,
            ),
        ];
        for (event, expected) in cases {
            assert_eq!(event.to_message().to_text().unwrap(), expected);
            assert_eq!(ServerEvent::try_from(&Message::text(expected)).unwrap(), event);
        }
    }

    #[test]
    fn names_and_content_are_checked_by_the_rules_of_chapter_6_1() {
        assert_eq!(check_name("username", "alice"), Ok(()));
        assert_eq!(
            check_name("room", &"é".repeat(MAX_NAME_CHARS)),
            Ok(()),
            "characters, not bytes"
        );
        for bad in ["", "   ", "a\nb", "tab\there", &"x".repeat(MAX_NAME_CHARS + 1)] {
            let refused = check_name("username", bad).unwrap_err();
            assert!(refused.starts_with("username must"), "{bad:?}: {refused}");
        }
        assert_eq!(check_content("hi"), Ok(()));
        assert_eq!(check_content(&"x".repeat(MAX_CONTENT_BYTES)), Ok(()));
        assert!(check_content("").is_err());
        assert!(check_content(&"x".repeat(MAX_CONTENT_BYTES + 1)).is_err());
    }

    #[test]
    fn presence_from_an_older_server_has_no_time_seq_or_epoch() {
        let older = r#"{"type":"Joined","room":"r","username":"bob"}"#;
        let event = ServerEvent::try_from(&Message::text(older)).unwrap();
        let expected = ServerEvent::Joined {
            room: "r".into(),
            username: "bob".into(),
            timestamp: String::new(),
            seq: 0,
            epoch: String::new(),
        };
        assert_eq!(event, expected);
        let older = r#"{"type":"Left","room":"r","username":"bob"}"#;
        let event = ServerEvent::try_from(&Message::text(older)).unwrap();
        assert!(matches!(event, ServerEvent::Left { timestamp, .. } if timestamp.is_empty()));
    }

    #[test]
    fn an_error_code_a_client_does_not_know_is_other() {
        let newer = r#"{"type":"Error","code":"solar_flare","message":"try later"}"#;
        let event = ServerEvent::try_from(&Message::text(newer)).unwrap();
        assert!(matches!(event, ServerEvent::Error { code: ErrorCode::Other, .. }));
    }

    #[test]
    fn malformed_input_is_an_error_value() {
        let not_json = ClientMessage::try_from(&Message::text("hello"));
        assert!(matches!(not_json, Err(ProtocolError::InvalidJson(_))));

        let unknown_type = ClientMessage::try_from(&Message::text(r#"{"type":"Shout"}"#));
        assert!(matches!(unknown_type, Err(ProtocolError::InvalidJson(_))));

        let missing_field =
            ClientMessage::try_from(&Message::text(r#"{"type":"Join","room":"x"}"#));
        assert!(matches!(missing_field, Err(ProtocolError::InvalidJson(_))));

        for since in ["-1", "1.5", "\"41\"", "null"] {
            let text = format!(r#"{{"type":"Join","room":"r","username":"a","since":{since}}}"#);
            let parsed = ClientMessage::try_from(&Message::text(text));
            if since == "null" {
                assert!(matches!(parsed, Ok(ClientMessage::Join { since: None, .. })));
            } else {
                assert!(matches!(parsed, Err(ProtocolError::InvalidJson(_))), "since {since}");
            }
        }

        let binary = ClientMessage::try_from(&Message::binary(vec![1, 2, 3]));
        assert!(matches!(binary, Err(ProtocolError::NotText("binary"))));
    }
}
