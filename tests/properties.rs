//! Property tests (chapter 10, "Bad input cannot hurt") for everything that
//! parses what a peer sends: the binary codec of chapter 5.2, the JSON
//! protocol of chapter 5.1, and a proxy's `X-Forwarded-For` and
//! `Forwarded` headers (chapter 10.6).
//!
//! Two properties each, checked on generated input (`proptest`, 256 cases
//! a property, so a `cargo test` run stays well under a second here):
//! - **never a panic, always a typed answer**: arbitrary bytes, arbitrary
//!   strings and JSON-shaped text that looks almost like a command give
//!   either a value or the parser's own error, one the rules below predict;
//! - **round trip**: a value of any variant, with any strings and numbers in
//!   it, encodes to a frame that decodes to the same value.
//!
//! A failing case is shrunk to a small one, printed, and saved beside this
//! file (`properties.proptest-regressions`), so the next run tries it first.
//!
//! The chat server under the same attack, over real sockets, is
//! tests/bad_input.rs.

use std::net::IpAddr;

use proptest::prelude::*;
use proptest::test_runner::FileFailurePersistence;
use serde_json::{Map, Value};
use tokio_tungstenite::tungstenite::http::{HeaderMap, HeaderValue};
use tokio_tungstenite::tungstenite::{Bytes, Message};
use websocket_tutorial::codec::{self, Frame, FrameType};
use websocket_tutorial::error::{CodecError, ProtocolError};
use websocket_tutorial::protocol::{ClientMessage, ErrorCode, ServerEvent};
use websocket_tutorial::proxy::{self, ProxyHeader, TrustedProxies};

// ---- the binary codec (src/codec.rs) -------------------------------------

const KINDS: [FrameType; 4] = [FrameType::Text, FrameType::Data, FrameType::Ping, FrameType::Pong];

/// Bytes as a peer might send them: a known type byte followed by anything
/// half the time (so decoding gets past its first check), anything at all
/// otherwise.
fn frame_bytes() -> impl Strategy<Value = Vec<u8>> {
    let typed = (0u8..=5, prop::collection::vec(any::<u8>(), 0..64)).prop_map(|(kind, rest)| {
        let mut bytes = vec![kind];
        bytes.extend(rest);
        bytes
    });
    prop_oneof![typed, prop::collection::vec(any::<u8>(), 0..256)]
}

/// A frame of any kind; a text frame's payload is any string, as UTF-8.
fn frame() -> impl Strategy<Value = Frame> {
    (prop::sample::select(&KINDS[..]), prop::collection::vec(any::<u8>(), 0..256), any::<String>())
        .prop_map(|(kind, bytes, text)| {
            let payload = if kind == FrameType::Text { text.into_bytes() } else { bytes };
            Frame { kind, payload: Bytes::from(payload) }
        })
}

// ---- the JSON protocol (src/protocol.rs) ---------------------------------

/// Every `"type"` of either enum, and some that are neither.
const TYPES: [&str; 13] = [
    "Join", "Leave", "Message", "Members", "Ping", "Pong", "Joined", "Left", "Gap", "Error",
    "Shout", "join", "",
];

/// Every field name of either enum, and some that are neither.
const FIELDS: [&str; 13] = [
    "type",
    "room",
    "username",
    "since",
    "content",
    "timestamp",
    "seq",
    "first",
    "last",
    "usernames",
    "message",
    "Type",
    "extra",
];

/// JSON values shaped like the protocol's messages: objects whose keys are
/// mostly the protocol's own field names, and strings that are often a
/// `"type"`, with anything (of the wrong type, too) as the values. Random
/// text would almost never get past the JSON parser; this reaches the
/// checks behind it: unknown types, missing fields, wrong types, duplicates.
fn json_ish() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::from),
        any::<i64>().prop_map(Value::from),
        any::<u64>().prop_map(Value::from),
        any::<f64>().prop_map(Value::from),
        any::<String>().prop_map(Value::from),
        prop::sample::select(&TYPES[..]).prop_map(Value::from),
    ];
    let key = prop_oneof![
        3 => prop::sample::select(&FIELDS[..]).prop_map(String::from),
        1 => any::<String>(),
    ];
    leaf.prop_recursive(3, 24, 6, move |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..4).prop_map(Value::Array),
            prop::collection::vec((key.clone(), inner), 0..6)
                .prop_map(|fields| Value::Object(fields.into_iter().collect::<Map<_, _>>())),
        ]
    })
}

/// A real command's or event's JSON with one field dropped, one field's
/// value replaced by any value, one field added, or nothing changed: input
/// on the border between valid and not, where some parse and some do not.
fn near_miss() -> impl Strategy<Value = Value> {
    let valid = prop_oneof![
        client_message().prop_map(|command| serde_json::to_value(command).expect("JSON")),
        server_event().prop_map(|event| serde_json::to_value(event).expect("JSON")),
    ];
    let field = prop::sample::select(&FIELDS[..]);
    (valid, json_ish(), field, 0..4u8, any::<prop::sample::Index>()).prop_map(
        |(mut value, other, field, change, at)| {
            let Value::Object(fields) = &mut value else { return value };
            let existing = fields.keys().nth(at.index(fields.len().max(1))).cloned();
            match (change, existing) {
                (1, Some(key)) => drop(fields.remove(&key)),
                (2, Some(key)) => drop(fields.insert(key, other)),
                (3, _) => drop(fields.insert(field.to_string(), other)),
                _ => {}
            }
            value
        },
    )
}

/// Text a peer might send in a text frame: any string; JSON-shaped values;
/// real messages' JSON, slightly wrong; JSON cut short or with a character
/// put in; JSON nested thousands deep (which must be an error, not a stack
/// overflow).
fn text() -> impl Strategy<Value = String> {
    let broken = (json_ish(), any::<prop::sample::Index>(), any::<Option<char>>()).prop_map(
        |(value, at, insert)| {
            let mut json = value.to_string();
            let mut cut = at.index(json.len() + 1);
            while !json.is_char_boundary(cut) {
                cut -= 1;
            }
            match insert {
                Some(c) => json.insert(cut, c),
                None => json.truncate(cut),
            }
            json
        },
    );
    let deep = (1usize..5000, prop::sample::select(&["[", "{\"room\":", "[{\"a\":"][..]))
        .prop_map(|(depth, open)| open.repeat(depth));
    prop_oneof![
        any::<String>(),
        json_ish().prop_map(|value| value.to_string()),
        near_miss().prop_map(|value| value.to_string()),
        broken,
        deep,
    ]
}

/// Any string, often a short plain one, sometimes with quotes, escapes and
/// control characters that JSON must escape.
fn string() -> impl Strategy<Value = String> {
    prop_oneof![any::<String>(), "[a-z]{0,8}", Just("\"\\\n\u{0}\u{7f}\u{2028}é😀".to_string())]
}

fn error_code() -> impl Strategy<Value = ErrorCode> {
    prop::sample::select(vec![
        ErrorCode::Invalid,
        ErrorCode::BadName,
        ErrorCode::BadContent,
        ErrorCode::TooManyRooms,
        ErrorCode::NotYourName,
        ErrorCode::NameTaken,
        ErrorCode::AlreadyJoined,
        ErrorCode::SinceAhead,
        ErrorCode::NotMember,
        ErrorCode::RateLimited,
        ErrorCode::Unavailable,
        ErrorCode::Other,
    ])
}

fn client_message() -> impl Strategy<Value = ClientMessage> {
    prop_oneof![
        (string(), string(), any::<Option<u64>>(), proptest::option::of(string())).prop_map(
            |(room, username, since, epoch)| ClientMessage::Join { room, username, since, epoch }
        ),
        string().prop_map(|room| ClientMessage::Leave { room }),
        (string(), string()).prop_map(|(room, content)| ClientMessage::Message { room, content }),
        string().prop_map(|room| ClientMessage::Members { room }),
        Just(ClientMessage::Ping),
        Just(ClientMessage::Pong),
    ]
}

fn server_event() -> impl Strategy<Value = ServerEvent> {
    prop_oneof![
        (string(), string(), string(), any::<u64>(), string()).prop_map(
            |(room, username, timestamp, seq, epoch)| {
                ServerEvent::Joined { room, username, timestamp, seq, epoch }
            }
        ),
        string().prop_map(|room| ServerEvent::StartedOver { room }),
        (string(), string(), string()).prop_map(|(room, username, timestamp)| ServerEvent::Left {
            room,
            username,
            timestamp
        }),
        (string(), string(), string(), string(), any::<u64>()).prop_map(
            |(room, username, content, timestamp, seq)| ServerEvent::Message {
                room,
                username,
                content,
                timestamp,
                seq,
            }
        ),
        (string(), any::<u64>(), any::<u64>()).prop_map(|(room, first, last)| ServerEvent::Gap {
            room,
            first,
            last
        }),
        (string(), prop::collection::vec(string(), 0..5))
            .prop_map(|(room, usernames)| ServerEvent::Members { room, usernames }),
        Just(ServerEvent::Pong),
        (any::<Option<String>>(), error_code(), string())
            .prop_map(|(room, code, message)| ServerEvent::Error { room, code, message }),
    ]
}

/// A frame that is not text, which the JSON protocol refuses by its kind.
fn non_text_message() -> impl Strategy<Value = (Message, &'static str)> {
    prop::collection::vec(any::<u8>(), 0..256).prop_flat_map(|bytes| {
        let bytes = Bytes::from(bytes);
        let short = bytes.slice(..bytes.len().min(125)); // a control frame's limit
        prop_oneof![
            Just((Message::Binary(bytes), "binary")),
            Just((Message::Ping(short.clone()), "ping")),
            Just((Message::Pong(short), "pong")),
            Just((Message::Close(None), "close")),
        ]
    })
}

/// What parsing `text` as a `T` must give: a value that survives its own
/// round trip, or `InvalidJson`. Nothing else, and no panic.
fn parses_or_is_invalid_json<T>(text: &str) -> Result<(), TestCaseError>
where
    T: for<'a> TryFrom<&'a Message, Error = ProtocolError> + PartialEq + std::fmt::Debug,
    T: serde::Serialize,
{
    match T::try_from(&Message::text(text)) {
        Ok(value) => {
            let again = T::try_from(&websocket_tutorial::protocol::to_message(&value));
            prop_assert_eq!(again.ok(), Some(value), "what parsed re-encodes to itself");
        }
        Err(ProtocolError::InvalidJson(_)) => {}
        Err(other) => prop_assert!(false, "text gave {other:?}, not InvalidJson"),
    }
    Ok(())
}

// ---- a proxy's headers (src/proxy.rs) -----------------------------------

/// Header values as a proxy, or a client pretending, might write them: the
/// characters the two formats use, in any order, or any bytes at all.
fn forwarding_value() -> impl Strategy<Value = Vec<u8>> {
    let pieces = prop::sample::select(
        &[
            "for=",
            "For=",
            "\"",
            "[",
            "]",
            ":",
            ",",
            ";",
            " ",
            "_",
            "unknown",
            "10.0.0.1",
            "203.0.113.7",
            "2001:db8::1",
            "4711",
            "=",
            "proto=https",
            "\\",
            ".",
        ][..],
    );
    let shaped = prop::collection::vec(pieces, 0..12).prop_map(|p| p.concat().into_bytes());
    prop_oneof![shaped, prop::collection::vec(any::<u8>(), 0..64)]
}

/// Trusting 127.0.0.1 and 10.0.0.0/8, reading `header`.
fn trusting(header: ProxyHeader) -> TrustedProxies {
    let trusted = ["127.0.0.1", "10.0.0.0/8"].map(|t| proxy::parse_cidr(t).unwrap()).to_vec();
    TrustedProxies { trusted, proxy_header: header }
}

/// A request's headers with `value` as `header`'s, if it is a valid
/// header value at all (the HTTP parser refuses the rest before us).
fn with_header(header: ProxyHeader, value: &[u8]) -> Option<HeaderMap> {
    let value = HeaderValue::from_bytes(value).ok()?;
    let mut headers = HeaderMap::new();
    headers.insert(header.name(), value);
    Some(headers)
}

/// An address, trusted (10.x) or not (203.0.113.x).
fn hop() -> impl Strategy<Value = IpAddr> {
    (any::<bool>(), any::<u8>()).prop_map(|(trusted, n)| {
        if trusted { [10, 0, 0, n].into() } else { [203, 0, 113, n].into() }
    })
}

proptest! {
    #![proptest_config(ProptestConfig {
        cases: 256,
        // tests/properties.proptest-regressions; proptest's default looks
        // for a src/ beside the file, and warns when there is none.
        failure_persistence: Some(Box::new(FileFailurePersistence::WithSource(
            "proptest-regressions"
        ))),
        ..ProptestConfig::default()
    })]

    /// Any bytes decode to a frame that encodes back to exactly those bytes,
    /// or to the one error the format's rules predict.
    #[test]
    fn decoding_any_bytes_gives_a_frame_or_the_predicted_error(bytes in frame_bytes()) {
        let expected = match bytes.split_first() {
            None => Err(CodecError::Empty),
            Some((&t, _)) if !(1..=4).contains(&t) => Err(CodecError::UnknownType(t)),
            Some((1, text)) if std::str::from_utf8(text).is_err() => Err(CodecError::InvalidUtf8),
            Some(_) => Ok(()),
        };
        match codec::decode(Bytes::from(bytes.clone())) {
            Ok(frame) => {
                prop_assert_eq!(expected, Ok(()));
                prop_assert_eq!(codec::encode(frame.kind, &frame.payload), bytes);
            }
            Err(e) => prop_assert_eq!(expected, Err(e)),
        }
    }

    /// Whatever the message, a binary one is decoded; any other is refused as
    /// `NotBinary`.
    #[test]
    fn only_binary_messages_are_frames(text in any::<String>(), bytes in frame_bytes()) {
        prop_assert_eq!(Frame::try_from(Message::text(text)), Err(CodecError::NotBinary));
        let decoded = codec::decode(Bytes::from(bytes.clone()));
        prop_assert_eq!(Frame::try_from(Message::binary(bytes)), decoded);
    }

    /// Encode then decode gives the same frame, for every kind, directly
    /// and as a WebSocket message.
    #[test]
    fn every_frame_round_trips(frame in frame()) {
        let decoded = codec::decode(codec::encode(frame.kind, &frame.payload));
        prop_assert_eq!(decoded.as_ref(), Ok(&frame));
        prop_assert_eq!(Frame::try_from(frame.to_message()), Ok(frame));
    }

    /// Any text in a text frame is a command or `InvalidJson`; a command
    /// survives its own round trip.
    #[test]
    fn any_text_is_a_command_or_invalid_json(text in text()) {
        parses_or_is_invalid_json::<ClientMessage>(&text)?;
    }

    /// The same for the events a client parses: a client is peer input's
    /// other end.
    #[test]
    fn any_text_is_an_event_or_invalid_json(text in text()) {
        parses_or_is_invalid_json::<ServerEvent>(&text)?;
    }

    /// Binary, ping, pong and close frames are refused by their kind.
    #[test]
    fn frames_that_are_not_text_are_refused_by_kind((msg, kind) in non_text_message()) {
        let refused = |r: Result<(), ProtocolError>| matches!(r, Err(ProtocolError::NotText(k)) if k == kind);
        prop_assert!(refused(ClientMessage::try_from(&msg).map(drop)));
        prop_assert!(refused(ServerEvent::try_from(&msg).map(drop)));
    }

    /// Every command round-trips, whatever its strings and numbers.
    #[test]
    fn every_command_round_trips(command in client_message()) {
        prop_assert_eq!(ClientMessage::try_from(&command.to_message()).ok(), Some(command));
    }

    /// Every event round-trips, whatever its strings and numbers.
    #[test]
    fn every_event_round_trips(event in server_event()) {
        prop_assert_eq!(ServerEvent::try_from(&event.to_message()).ok(), Some(event));
    }

    /// Any header value gives a client or a refusal, never a panic; from a
    /// peer not trusted it is not even read.
    #[test]
    fn any_forwarding_header_gives_a_client_or_a_400(value in forwarding_value()) {
        for header in [ProxyHeader::XForwardedFor, ProxyHeader::Forwarded] {
            let Some(headers) = with_header(header, &value) else { continue };
            let proxies = trusting(header);
            let _ = proxies.client([127, 0, 0, 1].into(), &headers);
            let stranger: IpAddr = [198, 51, 100, 1].into();
            prop_assert_eq!(proxies.client(stranger, &headers), Ok(stranger));
        }
    }

    /// Whatever a client writes at the start of `X-Forwarded-For`, the
    /// client is the rightmost address the trusted proxies did not vouch
    /// for, or the leftmost of theirs if they vouched for every one.
    #[test]
    fn no_client_can_name_itself(
        spoofed in prop::collection::vec(hop(), 0..4),
        appended in prop::collection::vec(hop(), 1..5),
    ) {
        let list: Vec<String> = spoofed.iter().chain(&appended).map(|ip| ip.to_string()).collect();
        let headers = with_header(ProxyHeader::XForwardedFor, list.join(", ").as_bytes()).unwrap();
        let got = trusting(ProxyHeader::XForwardedFor).client([127, 0, 0, 1].into(), &headers);
        let untrusted = |ip: &&IpAddr| !matches!(ip, IpAddr::V4(v4) if v4.octets()[0] == 10);
        let expected = match appended.iter().rev().find(untrusted) {
            Some(client) => *client,
            // Every appended hop trusted: what is left of them is read on.
            None => *spoofed.iter().rev().find(untrusted).or(spoofed.first()).unwrap_or(&appended[0]),
        };
        prop_assert_eq!(got, Ok(expected));
    }
}
