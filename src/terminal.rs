//! A chat client's words with its user (chapter 6.1): what a typed line
//! asks for, and how each of the server's events reads on screen.
//!
//! The terminal client (`examples/chat_client.rs`) reads lines, turns each
//! into an [`Input`] with [`command`], and prints every event it shows as
//! [`line()`] words it. Pure functions of their arguments (and the clock, for
//! the time a line is shown), so the rules are unit-tested here:
//!
//! - `/join ROOM`, `/leave ROOM` (`ROOM` or `#ROOM`), `/quit`, `/help`;
//!   any other line is said in the current room.
//! - A line the server would refuse is not sent: `/join` without a room,
//!   an unknown `/command`, content over [`MAX_CONTENT_BYTES`].
//! - A chat message, a join and a leave show the server's time, in the
//!   reader's time zone ([`lines`]); a `Gap` notice takes the time of the
//!   line after it, so that a resume's lines read in time order.
//! - While the client is away (reconnecting, or its rooms not back yet),
//!   [`Keyboard`] keeps what is typed, to say it once the rooms are back,
//!   and `/quit` or the end of input ends the waiting at once.

use std::collections::VecDeque;

use chrono::{DateTime, Local};
use tokio::sync::mpsc;

use crate::protocol::{ClientMessage, MAX_CONTENT_BYTES, ServerEvent};

/// What a typed line asks for.
#[derive(Debug, PartialEq, Eq)]
pub enum Input {
    /// Send this command.
    Send(ClientMessage),
    /// Join a room, or make a room we are in the current one (which needs
    /// no server: [`crate::resume::Rooms::join`] decides).
    Join(String),
    Quit,
    Help,
    /// An empty line.
    Nothing,
    /// A line that is not sent, and why.
    Complain(String),
}

// ANCHOR: command
/// Turns a typed line into a protocol command, or refuses it before anything
/// is sent. `current` is the room a plain line is said in.
pub fn command(line: &str, current: Option<&str>) -> Input {
    let line = line.trim();
    let (word, rest) = line.split_once(' ').map_or((line, ""), |(w, r)| (w, r.trim()));
    match word {
        "" => Input::Nothing,
        "/quit" => Input::Quit,
        "/help" => Input::Help,
        "/join" | "/leave" if rest.is_empty() => Input::Complain(format!("usage: {word} ROOM")),
        // `#rust` is how a room is shown: the name is `rust`.
        "/join" => Input::Join(unhash(rest).into()),
        "/leave" => Input::Send(ClientMessage::Leave { room: unhash(rest).into() }),
        _ if word.starts_with('/') => {
            Input::Complain(format!("unknown command {word}; /help lists the commands"))
        }
        // The server would refuse it, and close the connection for a
        // message over 64 KiB: say so now, and send nothing.
        _ if line.len() > MAX_CONTENT_BYTES => Input::Complain(format!(
            "not sent: {} bytes; the server accepts at most {MAX_CONTENT_BYTES}",
            line.len()
        )),
        _ => match current {
            Some(room) => {
                Input::Send(ClientMessage::Message { room: room.into(), content: line.into() })
            }
            None => Input::Complain("join a room first: /join ROOM".into()),
        },
    }
}
// ANCHOR_END: command

/// A room's name as typed, without the `#` it is shown with.
fn unhash(room: &str) -> &str {
    room.strip_prefix('#').unwrap_or(room)
}

/// The answer to `/help`.
pub fn help(current: Option<&str>) -> String {
    let current = current.map_or("none yet".to_string(), |room| format!("#{room}"));
    format!(
        "commands:
  /join ROOM   join ROOM, or switch to it if you are in it; it becomes the current room
  /leave ROOM  leave ROOM
  /quit        close the connection (so do Ctrl-D and Ctrl-C)
  /help        this list
any other line is said in the current room ({current}), up to {MAX_CONTENT_BYTES} bytes"
    )
}

// ANCHOR: keyboard
/// The lines the user types, and those typed while the client was away,
/// kept to be said once its rooms are back.
pub struct Keyboard {
    typed: mpsc::Receiver<String>,
    kept: VecDeque<String>,
}

/// Lines kept while away; more wait in stdin's queue, as before.
const KEPT: usize = 64;

impl Keyboard {
    /// Reads `typed` (from [`crate::client::stdin_lines`]).
    pub fn new(typed: mpsc::Receiver<String>) -> Keyboard {
        Keyboard { typed, kept: VecDeque::new() }
    }

    /// The next line to use, a kept one first; `None` at the end of input.
    /// While `away`, nothing can be said: lines are kept instead, and it
    /// returns (`None`) only when the user wants to leave, with `/quit` or
    /// the end of input. Cancel-safe: a line read is kept before any other
    /// wait.
    pub async fn next(&mut self, away: bool) -> Option<String> {
        if !away {
            return match self.kept.pop_front() {
                Some(line) => Some(line),
                None => self.typed.recv().await,
            };
        }
        while self.kept.len() < KEPT {
            match self.typed.recv().await {
                Some(line) if command(&line, None) != Input::Quit => self.kept.push_back(line),
                _ => return None,
            }
        }
        std::future::pending().await
    }
}
// ANCHOR_END: keyboard

// ANCHOR: line
/// One server event, as the terminal shows it: `[19:50:41] #general <bob>
/// hi`, `[19:50:35] #general * bob joined`, `! #side: why it was refused`.
pub fn line(event: &ServerEvent) -> String {
    line_at(event, None)
}

/// Events shown together, one line each, in order. A `Gap` or a
/// `StartedOver` has no time of its own: it takes the time of the next
/// event that has one (the first
/// message after what it says is lost, or our `Joined` after a replay),
/// and the reader's clock when none follows.
pub fn lines(events: &[ServerEvent]) -> Vec<String> {
    let times: Vec<Option<&str>> = events.iter().map(server_time).collect();
    let mut next = None; // the time of the next event that has one
    let mut lines: Vec<String> = Vec::with_capacity(events.len());
    for (event, time) in events.iter().zip(&times).rev() {
        next = time.or(next);
        lines.push(line_at(event, next));
    }
    lines.reverse();
    lines
}

/// The server's time of `event`, when it carries one (an older server's
/// `Joined` and `Left` do not).
fn server_time(event: &ServerEvent) -> Option<&str> {
    match event {
        ServerEvent::Message { timestamp, .. }
        | ServerEvent::Joined { timestamp, .. }
        | ServerEvent::Left { timestamp, .. } => Some(timestamp).filter(|t| !t.is_empty()),
        _ => None,
    }
    .map(String::as_str)
}

/// [`line`], with `at` the server's time to show for an event that has
/// none of its own (a `Gap`).
fn line_at(event: &ServerEvent, at: Option<&str>) -> String {
    // The server's time, in the reader's time zone; the reader's clock when
    // the server gave none.
    let at = match server_time(event).or(at) {
        Some(stamp) => DateTime::parse_from_rfc3339(stamp)
            .map(|t| t.with_timezone(&Local).format("%H:%M:%S").to_string())
            .unwrap_or_else(|_| stamp.to_string()),
        None => Local::now().format("%H:%M:%S").to_string(),
    };
    match event {
        ServerEvent::Joined { room, username, .. } => format!("[{at}] #{room} * {username} joined"),
        ServerEvent::Left { room, username, .. } => format!("[{at}] #{room} * {username} left"),
        ServerEvent::Message { room, username, content, .. } => {
            format!("[{at}] #{room} <{username}> {content}")
        }
        ServerEvent::Gap { room, first, last } => {
            format!("[{at}] #{room} * messages {first} to {last} are lost")
        }
        ServerEvent::StartedOver { room } => {
            format!(
                "[{at}] #{room} * the room started over while you were away: its new messages follow"
            )
        }
        ServerEvent::Members { room, usernames } => {
            format!("[{at}] #{room} * members: {}", usernames.join(", "))
        }
        ServerEvent::Pong => "pong".to_string(),
        ServerEvent::Error { room: Some(room), message, .. } => format!("! #{room}: {message}"),
        ServerEvent::Error { room: None, message, .. } => format!("! error: {message}"),
    }
}
// ANCHOR_END: line

/// A line of the client's own about `room`, shown like a presence event.
pub fn notice(room: &str, text: &str) -> String {
    format!("[{}] #{room} * {text}", Local::now().format("%H:%M:%S"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::protocol::ErrorCode;

    fn say(room: &str, content: &str) -> Input {
        Input::Send(ClientMessage::Message { room: room.into(), content: content.into() })
    }

    #[test]
    fn commands_and_plain_lines() {
        let current = Some("general");
        assert_eq!(command("  hello  ", current), say("general", "hello"));
        assert_eq!(command("/join rust", current), Input::Join("rust".into()));
        let leave = Input::Send(ClientMessage::Leave { room: "rust".into() });
        assert_eq!(command("/leave  rust ", current), leave);
        // A room as it is shown, `#rust`, is `rust`.
        assert_eq!(command("/join #rust", current), Input::Join("rust".into()));
        let leave = Input::Send(ClientMessage::Leave { room: "rust".into() });
        assert_eq!(command("/leave #rust", current), leave);
        assert_eq!(command("/quit", current), Input::Quit);
        assert_eq!(command("/help", current), Input::Help);
        assert_eq!(command("   ", current), Input::Nothing);
    }

    #[test]
    fn lines_the_server_would_refuse_are_not_sent() {
        let current = Some("general");
        let usage = Input::Complain("usage: /join ROOM".into());
        assert_eq!(command("/join", current), usage);
        let unknown = command("/nick bob", current);
        assert_eq!(
            unknown,
            Input::Complain("unknown command /nick; /help lists the commands".into())
        );
        let longest = "x".repeat(MAX_CONTENT_BYTES);
        assert_eq!(command(&longest, current), say("general", &longest));
        let Input::Complain(why) = command(&format!("{longest}x"), current) else {
            panic!("a line over MAX_CONTENT_BYTES is sent");
        };
        assert!(why.starts_with(&format!("not sent: {} bytes", MAX_CONTENT_BYTES + 1)), "{why}");
        let nowhere = Input::Complain("join a room first: /join ROOM".into());
        assert_eq!(command("hello", None), nowhere);
    }

    fn keyboard(lines: &[&str], end: bool) -> Keyboard {
        let (tx, rx) = mpsc::channel(100);
        for line in lines {
            tx.try_send(line.to_string()).expect("room in the channel");
        }
        if !end {
            std::mem::forget(tx); // input stays open
        }
        Keyboard::new(rx)
    }

    #[tokio::test]
    async fn while_away_lines_are_kept_until_quit_or_the_end_of_input() {
        let mut keys = keyboard(&["one", "two", " /quit ", "three"], true);
        assert_eq!(keys.next(true).await, None, "/quit: leave");
        assert_eq!(keys.next(false).await.as_deref(), Some("one"), "kept, in order");
        assert_eq!(keys.next(false).await.as_deref(), Some("two"));
        assert_eq!(keys.next(false).await.as_deref(), Some("three"));
        assert_eq!(keys.next(false).await, None, "the end of input");

        let mut keys = keyboard(&["one"], true);
        assert_eq!(keys.next(true).await, None, "the end of input: leave");
        assert_eq!(keys.next(false).await.as_deref(), Some("one"), "still kept");

        // Nothing to leave for: it waits (and keeps at most KEPT lines).
        let many: Vec<String> = (0..KEPT + 1).map(|i| i.to_string()).collect();
        let many: Vec<&str> = many.iter().map(String::as_str).collect();
        let mut keys = keyboard(&many, false);
        let waiting = tokio::time::timeout(std::time::Duration::from_millis(20), keys.next(true));
        assert!(waiting.await.is_err(), "no /quit, no end: still away");
        assert_eq!(keys.kept.len(), KEPT);
    }

    /// `[HH:MM:SS]` of an RFC 3339 time, in the reader's time zone.
    fn shown(stamp: &str) -> String {
        let at = DateTime::parse_from_rfc3339(stamp).expect("a time");
        format!("[{}]", at.with_timezone(&Local).format("%H:%M:%S"))
    }

    #[test]
    fn a_gap_shows_the_time_of_the_line_after_it() {
        let message = |seq: u64, timestamp: &str| ServerEvent::Message {
            room: "r".into(),
            username: "bob".into(),
            content: format!("m{seq}"),
            timestamp: timestamp.into(),
            seq,
        };
        let gap = ServerEvent::Gap { room: "r".into(), first: 1, last: 7 };
        let (eight, nine) = ("2026-12-06T18:00:08.000Z", "2026-12-06T18:00:09.000Z");
        let shown_lines = lines(&[gap.clone(), message(8, eight), message(9, nine)]);
        let expected = [
            format!("{} #r * messages 1 to 7 are lost", shown(eight)),
            format!("{} #r <bob> m8", shown(eight)),
            format!("{} #r <bob> m9", shown(nine)),
        ];
        assert_eq!(shown_lines, expected);
        // Before our Joined, whose time it takes.
        let ours = ServerEvent::Joined {
            room: "r".into(),
            username: "al".into(),
            timestamp: nine.into(),
            seq: 7,
            epoch: "e1".into(),
        };
        let expected = [
            format!("{} #r * messages 1 to 7 are lost", shown(nine)),
            format!("{} #r * al joined", shown(nine)),
        ];
        assert_eq!(lines(&[gap.clone(), ours.clone()]), expected);
        // A room that started over: the notice, with the time of what follows.
        let over = ServerEvent::StartedOver { room: "r".into() };
        let expected = [
            format!(
                "{} #r * the room started over while you were away: its new messages follow",
                shown(eight)
            ),
            format!("{} #r * messages 1 to 7 are lost", shown(eight)),
            format!("{} #r <bob> m8", shown(eight)),
        ];
        assert_eq!(lines(&[over, gap, message(8, eight)]), expected);
        // An older server's Joined carries no time: the reader's clock.
        let older = ServerEvent::Joined {
            room: "r".into(),
            username: "al".into(),
            timestamp: String::new(),
            seq: 0,
            epoch: String::new(),
        };
        let [line] = &lines(&[older])[..] else { panic!("one line") };
        assert!(line.starts_with('[') && line.ends_with("] #r * al joined"), "{line}");
    }

    #[test]
    fn events_read_as_lines() {
        let message = ServerEvent::Message {
            room: "general".into(),
            username: "bob".into(),
            content: "hi".into(),
            timestamp: "2026-12-06T18:00:05.000Z".into(),
            seq: 1,
        };
        let at = DateTime::parse_from_rfc3339("2026-12-06T18:00:05Z").expect("a time");
        let at = at.with_timezone(&Local).format("%H:%M:%S");
        assert_eq!(line(&message), format!("[{at}] #general <bob> hi"), "the server's time");
        let joined = ServerEvent::Joined {
            room: "general".into(),
            username: "bob".into(),
            timestamp: "2026-12-06T18:00:05.000Z".into(),
            seq: 1,
            epoch: "e1".into(),
        };
        assert_eq!(line(&joined), format!("[{at}] #general * bob joined"), "the server's time");
        let left = ServerEvent::Left {
            room: "general".into(),
            username: "bob".into(),
            timestamp: "2026-12-06T18:00:05.000Z".into(),
        };
        assert_eq!(line(&left), format!("[{at}] #general * bob left"));
        let gap = ServerEvent::Gap { room: "general".into(), first: 3, last: 7 };
        assert!(line(&gap).ends_with("] #general * messages 3 to 7 are lost"));
        let refused = ServerEvent::Error {
            room: Some("side".into()),
            code: ErrorCode::NameTaken,
            message: "taken".into(),
        };
        assert_eq!(line(&refused), "! #side: taken");
        let invalid =
            ServerEvent::Error { room: None, code: ErrorCode::Invalid, message: "no".into() };
        assert_eq!(line(&invalid), "! error: no");
        assert!(help(Some("rust")).contains("current room (#rust)"));
        assert!(notice("general", "hello").ends_with("] #general * hello"));
    }
}
