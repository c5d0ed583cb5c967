//! What a chat client keeps across connections, so that a dropped one loses
//! no message: which rooms it is in, the last message it showed in each,
//! and what each of the server's events changes (chapters 6.1 and 9).
//!
//! [`Rooms`] is pure logic, no socket and no clock: the terminal client
//! (`examples/chat_client.rs`) feeds it the user's `/join`s and the
//! server's events, sends the joins it returns, and does what [`Follow`]
//! says. Its rules:
//!
//! - A room becomes current when the server confirms our join, not when we
//!   ask; a refused join leaves the current room as it was.
//! - A new connection joins every room again with `since`, the `seq` of the
//!   last message shown there (0 when none was): the server replays what
//!   was said meanwhile. The rooms keep their order, so the current room
//!   stays current.
//! - A message at or below the last `seq` shown in its room is skipped: each
//!   is shown once. A `Gap` counts as shown: what it announces will not come.
//! - Lines read in time order. On a resume, the server sends our `Joined`
//!   (stamped now) before the replay of older messages; its line is held
//!   until the replay has reached the `seq` it names, and shown after it.
//!   A `Gap` notice, which has no time of its own, is held until the next
//!   line of its room, and shown just before it, with its time
//!   ([`crate::terminal::lines`]).
//! - A refused rejoin is decided by its [`ErrorCode`] alone ([`refusal`]),
//!   never by its words: the room started over (join again from its first
//!   message), or not yet (ask again after the backoff's delay, [`Held`],
//!   up to `--max-attempts` times on one connection), or never (give the
//!   room up).

use std::collections::HashMap;
use std::time::Duration;

use tokio::time::{Instant, sleep_until};
use tracing::{debug, info, warn};

use crate::client::Backoff;
use crate::protocol::{ClientMessage, ErrorCode, ServerEvent};

// ANCHOR: state
/// What the client knows of its rooms. It outlives each connection: a new
/// one joins the same rooms again, each from the message after the last
/// one shown there.
#[derive(Debug)]
pub struct Rooms {
    me: String,
    /// The rooms we are in, as the server confirmed them; the last is current.
    joined: Vec<String>,
    /// A join the user asked for that the server has not answered yet. The
    /// next line waits for the answer: typed (or piped) right after `/join
    /// rust`, it belongs in `rust` if the join succeeds, and in the current
    /// room if it is refused.
    joining: Option<String>,
    /// Rooms joined again on this connection and not confirmed yet: typed
    /// lines wait for them too.
    rejoining: Vec<String>,
    /// The `seq` of the last message shown in each room: where to resume.
    shown: HashMap<String, u64>,
    /// Rooms that refused our rejoin for now, to ask again later.
    held: Held,
    /// Rooms whose replay is under way: the lines held back until it ends.
    replaying: HashMap<String, Replaying>,
    /// The epoch of each room, from our last `Joined` there: the life of
    /// the room its `shown` counts in.
    epochs: HashMap<String, String>,
}

/// A resume's lines held back until its replay has been shown.
#[derive(Debug)]
struct Replaying {
    /// The `seq` the replay ends with: the room's last at our join.
    until: u64,
    /// Our own `Joined`, shown after the replay.
    joined: ServerEvent,
    /// Notices (`StartedOver`, `Gap`), shown before the next line of the
    /// room.
    notes: Vec<ServerEvent>,
}
// ANCHOR_END: state

/// What typed lines wait for ([`Rooms::waiting`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Waiting {
    /// Nothing: every join sent has been answered.
    Nothing,
    /// The answer to a join the user asked for: it decides where the next
    /// line goes (the new room, or the current one if the join is refused).
    Join,
    /// Rooms we were in, not back yet after a reconnect (some perhaps held
    /// for a later round).
    Rejoins,
}

/// What to do with an event, once [`Rooms::follow`] has taken it in.
#[derive(Debug, PartialEq, Eq)]
pub enum Follow {
    Show,
    /// Show these events, in this order: the event with the lines held back
    /// that it releases (a resume's `Gap` before it, our `Joined` after).
    Lines(Vec<ServerEvent>),
    /// Nothing to show now: a message shown already (the replay after a
    /// rejoin overlapping what came live), a line held back until a replay
    /// has been shown, or a refusal for now, which [`Rooms::next_round`]
    /// will ask again.
    Skip,
    /// The room refused our rejoin because its numbering started over:
    /// join again from its first message ([`Rooms::rejoin`]), and say so.
    StartedOver(String),
}

impl Rooms {
    /// A client named `me` whose first connection joins `first`, and which
    /// asks again for a room that refuses it for now with `backoff`.
    pub fn new(me: &str, first: &str, backoff: Backoff) -> Rooms {
        Rooms {
            me: me.into(),
            joined: Vec::new(),
            joining: Some(first.into()),
            rejoining: Vec::new(),
            shown: HashMap::new(),
            held: Held::new(backoff),
            replaying: HashMap::new(),
            epochs: HashMap::new(),
        }
    }

    /// The current room: the last one the server confirmed.
    pub fn current(&self) -> Option<&str> {
        self.joined.last().map(String::as_str)
    }

    /// The rooms we are in, the current one last.
    pub fn joined(&self) -> &[String] {
        &self.joined
    }

    /// What typed lines wait for before they are read, if anything.
    pub fn waiting(&self) -> Waiting {
        match (&self.joining, self.rejoining.is_empty()) {
            (_, false) => Waiting::Rejoins,
            (Some(_), true) => Waiting::Join,
            (None, true) => Waiting::Nothing,
        }
    }

    /// The user's `/join room`. A room we are in becomes current at once,
    /// and nothing is sent (`None`); any other is asked for, with no `since`
    /// (a newcomer sees a room from now on), and becomes current when the
    /// server confirms it.
    pub fn join(&mut self, room: &str) -> Option<ClientMessage> {
        if self.joined.iter().any(|r| r == room) {
            self.joined.retain(|r| r != room);
            self.joined.push(room.into());
            info!("talking in #{room}");
            return None;
        }
        self.joining = Some(room.into());
        Some(ClientMessage::Join {
            room: room.into(),
            username: self.me.clone(),
            since: None,
            epoch: None,
        })
    }

    // ANCHOR: joins
    /// The joins a new connection starts with: every room we are in, in
    /// order, each with its `since`, and the user's unanswered join, if any
    /// (the first connection's is the first room).
    pub fn joins(&mut self) -> Vec<ClientMessage> {
        self.rejoining = self.joined.clone();
        self.held = Held::new(self.held.backoff);
        // A replay cut short by the lost connection starts again.
        self.replaying.clear();
        for room in &self.joined {
            let since = self.shown.get(room).unwrap_or(&0);
            info!("rejoining #{room} after message {since}");
        }
        let mut joins: Vec<_> = self.joined.iter().map(|room| self.rejoin(room)).collect();
        if let Some(room) = &self.joining {
            let username = self.me.clone();
            joins.push(ClientMessage::Join {
                room: room.clone(),
                username,
                since: None,
                epoch: None,
            });
        }
        joins
    }
    // ANCHOR_END: joins

    // ANCHOR: rejoin
    /// Joins `room` again, resuming after the last message shown there.
    ///
    /// Nothing shown there yet: `since` 0, not no `since`. Without it the
    /// server sends live messages only, and what was said while we were
    /// away, never shown, would be lost; this way it is replayed. The price:
    /// when the room outlived the drop, its history from before we first
    /// joined (up to the server's `--history` messages) is shown too, each
    /// message once.
    pub fn rejoin(&self, room: &str) -> ClientMessage {
        let since = self.shown.get(room).copied().unwrap_or(0);
        // The life of the room `since` counts in, if the server said.
        let epoch = self.epochs.get(room).filter(|e| !e.is_empty()).cloned();
        ClientMessage::Join {
            room: room.into(),
            username: self.me.clone(),
            since: Some(since),
            epoch,
        }
    }
    // ANCHOR_END: rejoin

    /// Forgets `room`: we left it, or cannot get back in.
    pub fn forget(&mut self, room: &str) {
        self.joined.retain(|r| r != room);
        self.rejoining.retain(|r| r != room);
        self.shown.remove(room);
        self.replaying.remove(room);
        self.epochs.remove(room);
    }

    // ANCHOR: follow
    /// Keeps the rooms in step with the server's word on our own joins and
    /// leaves (a room becomes current when the server says we joined it, not
    /// when we ask), notes the last message shown in each room, and says
    /// what to do with `event`.
    pub fn follow(&mut self, event: &ServerEvent) -> Follow {
        match event {
            // Names are unique in a room, so a `Joined` with our name is ours.
            ServerEvent::Joined { room, username, seq, epoch, .. } if *username == self.me => {
                if self.joining.as_ref() == Some(room) {
                    self.joining = None;
                }
                let life = self.epochs.insert(room.clone(), epoch.clone());
                if !self.rejoining.contains(room) {
                    self.joined.retain(|r| r != room);
                    self.joined.push(room.clone());
                    return Follow::Show;
                }
                // Back in a room we were in: it keeps its place. Its replay
                // of what we missed, older than this line, comes next.
                self.rejoining.retain(|r| r != room);
                // Another life of the room: it counts from 1 again, and its
                // `StartedOver` notice comes next, then all it holds.
                let new_life = life.is_some_and(|old| !old.is_empty() && old != *epoch);
                if new_life {
                    self.shown.insert(room.clone(), 0);
                } else if *seq <= self.shown.get(room).copied().unwrap_or(0) {
                    return Follow::Show; // nothing to replay
                }
                let held = Replaying { until: *seq, joined: event.clone(), notes: vec![] };
                self.replaying.insert(room.clone(), held);
                Follow::Skip
            }
            ServerEvent::Left { room, username, .. } if *username == self.me => {
                self.forget(room);
                Follow::Show
            }
            // Exactly once: a message numbered at or below the last one shown
            // in its room has been shown already.
            ServerEvent::Message { room, seq, .. } => {
                let last = self.shown.entry(room.clone()).or_default();
                if *seq <= *last {
                    debug!("#{room}: message {seq} shown already, skipped");
                    return Follow::Skip;
                }
                *last = *seq;
                self.release(room, *seq, event)
            }
            // What is gone will not come: the next resume starts after it.
            ServerEvent::Gap { room, last, .. } => {
                let shown = self.shown.entry(room.clone()).or_default();
                *shown = (*shown).max(*last);
                self.note(room, *last, event)
            }
            // Before the new life's messages (`shown` is 0 already).
            ServerEvent::StartedOver { room } => self.note(room, 0, event),
            ServerEvent::Error { room: Some(room), code, message }
                if self.rejoining.contains(room) =>
            {
                match refusal(*code) {
                    Refusal::StartedOver => {
                        self.shown.remove(room);
                        Follow::StartedOver(room.clone())
                    }
                    Refusal::NotYet => match self.held.hold(room) {
                        Some(wait) => {
                            info!("#{room}: {message}; asking again in {} ms", wait.as_millis());
                            Follow::Skip
                        }
                        None => {
                            warn!("#{room}: {message}; giving up on the room");
                            self.forget(room);
                            Follow::Show
                        }
                    },
                    Refusal::Final => {
                        self.forget(room);
                        Follow::Show
                    }
                }
            }
            // A refused join names its room: forget the join, keep the
            // current room.
            ServerEvent::Error { room: Some(room), .. } if self.joining.as_ref() == Some(room) => {
                self.joining = None;
                Follow::Show
            }
            _ => Follow::Show,
        }
    }
    // ANCHOR_END: follow

    /// A notice about `room` (`Gap`, `StartedOver`) that reaches `seq`:
    /// held during a replay until the next line, shown with it.
    fn note(&mut self, room: &str, seq: u64, event: &ServerEvent) -> Follow {
        match self.replaying.get_mut(room) {
            Some(replay) if seq < replay.until => {
                replay.notes.push(event.clone());
                Follow::Skip
            }
            _ => self.release(room, seq, event),
        }
    }

    /// `event`, the line of `room` that reaches `seq`, with the lines of a
    /// replay under way there that it releases: a held `Gap` before it, and
    /// our `Joined` after it once the replay is complete.
    fn release(&mut self, room: &str, seq: u64, event: &ServerEvent) -> Follow {
        let Some(replay) = self.replaying.get_mut(room) else { return Follow::Show };
        let mut lines = std::mem::take(&mut replay.notes);
        lines.push(event.clone());
        if seq >= replay.until {
            lines.extend(self.replaying.remove(room).map(|replay| replay.joined));
        }
        Follow::Lines(lines)
    }

    /// The rejoins to send for the rooms that refused us for now, when it
    /// is time to ask again; never, while none did.
    pub async fn next_round(&mut self) -> Vec<ClientMessage> {
        let rooms = self.held.next_round().await;
        // (A room given up meanwhile is not asked for.)
        let rooms = rooms.iter().filter(|room| self.rejoining.contains(room));
        rooms.map(|room| self.rejoin(room)).collect()
    }
}

// ANCHOR: refusal
/// What a refused rejoin means for this client.
#[derive(Debug, PartialEq, Eq)]
pub enum Refusal {
    /// Our `since` is ahead of the room's last message: the room started
    /// over from 1 (the server restarted, the client moved to a server of
    /// another chat, or the room emptied while we were away).
    StartedOver,
    /// Not yet: our name is still held in the room (by our old connection,
    /// until the server notices that it is gone; in a cluster, by a dead
    /// node, for up to 10 s), or a cluster cannot reach Redis just now.
    NotYet,
    /// Anything else: the room is given up, and the refusal shown.
    Final,
}

/// Decided by the refusal's `code` alone: its `message` is for the person
/// reading, and its words may change.
pub fn refusal(code: ErrorCode) -> Refusal {
    match code {
        ErrorCode::SinceAhead => Refusal::StartedOver,
        ErrorCode::NameTaken | ErrorCode::Unavailable => Refusal::NotYet,
        _ => Refusal::Final,
    }
}
// ANCHOR_END: refusal

// ANCHOR: held
/// Rooms whose rejoin was refused for now (our name still held there, say),
/// and when to ask them again: rounds, each after the backoff's delay for
/// its number, as many as `--max-attempts` allows, on one connection.
#[derive(Debug)]
pub struct Held {
    backoff: Backoff,
    /// The rooms to ask again in the next round.
    rooms: Vec<String>,
    /// Rounds asked again so far.
    rounds: u32,
    /// When the next round is due, while a room is held.
    due: Option<Instant>,
}

impl Held {
    pub fn new(backoff: Backoff) -> Held {
        Held { backoff, rooms: Vec::new(), rounds: 0, due: None }
    }

    /// Holds `room` for the next round, and says how long until then;
    /// `None` when the backoff says to stop asking.
    pub fn hold(&mut self, room: &str) -> Option<Duration> {
        self.hold_at(room, Instant::now())
    }

    fn hold_at(&mut self, room: &str, now: Instant) -> Option<Duration> {
        let refused = self.rounds + 1;
        if !self.backoff.should_retry(refused) {
            return None;
        }
        let due = *self.due.get_or_insert_with(|| now + self.backoff.delay(refused));
        self.rooms.push(room.into());
        Some(due.saturating_duration_since(now))
    }

    /// The rooms to ask again, when it is time; never, while none is held.
    /// (Cancel-safe: nothing changes before the wait is over.)
    pub async fn next_round(&mut self) -> Vec<String> {
        match self.due {
            Some(due) => sleep_until(due).await,
            None => std::future::pending().await,
        }
        self.take_round()
    }

    fn take_round(&mut self) -> Vec<String> {
        self.due = None;
        self.rounds += 1;
        std::mem::take(&mut self.rooms)
    }
}
// ANCHOR_END: held

#[cfg(test)]
mod tests {
    use super::*;

    fn joined(room: &str, who: &str) -> ServerEvent {
        joined_at(room, who, 0)
    }

    /// `who` joined `room`, whose last message was then `seq`.
    fn joined_at(room: &str, who: &str, seq: u64) -> ServerEvent {
        joined_in(room, who, seq, EPOCH)
    }

    /// The epoch of the rooms of these tests, unless one says otherwise.
    const EPOCH: &str = "e1";

    /// `who` joined `room` in its life `epoch`, its last message then `seq`.
    fn joined_in(room: &str, who: &str, seq: u64, epoch: &str) -> ServerEvent {
        let (room, username, epoch) = (room.into(), who.into(), epoch.into());
        let timestamp = "2026-12-06T18:00:09.000Z".into();
        ServerEvent::Joined { room, username, timestamp, seq, epoch }
    }

    fn message(room: &str, seq: u64) -> ServerEvent {
        ServerEvent::Message {
            room: room.into(),
            username: "bob".into(),
            content: format!("m{seq}"),
            timestamp: "2026-12-06T18:00:00.000Z".into(),
            seq,
        }
    }

    fn refused(room: &str, code: ErrorCode) -> ServerEvent {
        // Words that say something else: only the code may count.
        let message = "since 9 is ahead of the room's last message, seq 0".into();
        ServerEvent::Error { room: Some(room.into()), code, message }
    }

    /// alice's join of `room`: a rejoin (`since`) names the room's epoch.
    fn join(room: &str, since: Option<u64>) -> ClientMessage {
        let epoch = since.map(|_| EPOCH.to_string());
        ClientMessage::Join { room: room.into(), username: "alice".into(), since, epoch }
    }

    /// A backoff of 100 ms doubling up to 1 s, that stops after
    /// `max_attempts` failures (0: never).
    fn backoff(max_attempts: u32) -> Backoff {
        let (base, cap) = (Duration::from_millis(100), Duration::from_millis(1000));
        Backoff { base, cap, max_attempts }
    }

    /// alice, in `general` (confirmed), on her first connection.
    fn in_general() -> Rooms {
        let mut rooms = Rooms::new("alice", "general", backoff(10));
        assert_eq!(rooms.joins(), [join("general", None)], "a first join: live only");
        assert_eq!(rooms.waiting(), Waiting::Join);
        assert_eq!(rooms.follow(&joined("general", "alice")), Follow::Show);
        assert_eq!(rooms.waiting(), Waiting::Nothing);
        rooms
    }

    #[test]
    fn a_room_becomes_current_when_the_server_confirms_it() {
        let mut rooms = in_general();
        assert_eq!(rooms.join("rust"), Some(join("rust", None)));
        assert_eq!(rooms.current(), Some("general"), "not yet");
        assert_eq!(rooms.waiting(), Waiting::Join, "the next line waits for the answer");
        rooms.follow(&joined("rust", "bob"));
        assert_eq!(rooms.current(), Some("general"), "someone else's join");
        rooms.follow(&joined("rust", "alice"));
        assert_eq!(rooms.current(), Some("rust"));
        assert_eq!(rooms.waiting(), Waiting::Nothing);
        // `/join` of a room we are in switches to it, and sends nothing.
        assert_eq!(rooms.join("general"), None);
        assert_eq!(rooms.joined(), ["rust", "general"]);
        assert_eq!(rooms.waiting(), Waiting::Nothing);
    }

    #[test]
    fn a_refused_first_join_does_not_change_the_current_room() {
        let mut rooms = in_general();
        rooms.join("side");
        let taken = ServerEvent::Error {
            room: Some("side".into()),
            code: ErrorCode::NameTaken,
            message: "that name is taken".into(),
        };
        assert_eq!(rooms.follow(&taken), Follow::Show, "shown, not asked again");
        assert_eq!(rooms.current(), Some("general"));
        assert_eq!(rooms.joined(), ["general"]);
        assert_eq!(rooms.waiting(), Waiting::Nothing);

        // Refused on the very first connection: in no room, waiting for
        // nothing.
        let mut rooms = Rooms::new("alice", "general", backoff(10));
        rooms.joins();
        rooms.follow(&refused("general", ErrorCode::BadName));
        assert_eq!(rooms.current(), None);
        assert_eq!(rooms.waiting(), Waiting::Nothing);
    }

    #[test]
    fn a_duplicate_seq_is_skipped() {
        let mut rooms = in_general();
        assert_eq!(rooms.follow(&message("general", 1)), Follow::Show);
        assert_eq!(rooms.follow(&message("general", 2)), Follow::Show);
        assert_eq!(rooms.follow(&message("general", 2)), Follow::Skip);
        assert_eq!(rooms.follow(&message("general", 1)), Follow::Skip, "older: shown already");
        assert_eq!(rooms.follow(&message("general", 3)), Follow::Show);
        // Each room counts on its own.
        rooms.join("rust");
        rooms.follow(&joined("rust", "alice"));
        assert_eq!(rooms.follow(&message("rust", 1)), Follow::Show);
    }

    #[test]
    fn rejoins_resume_after_the_last_message_shown_and_a_gap_counts_as_shown() {
        let mut rooms = in_general();
        rooms.follow(&message("general", 4));
        rooms.join("rust");
        rooms.follow(&joined("rust", "alice"));
        rooms.join("empty");
        rooms.follow(&joined("empty", "alice"));
        let gap = ServerEvent::Gap { room: "rust".into(), first: 1, last: 7 };
        assert_eq!(rooms.follow(&gap), Follow::Show);
        assert_eq!(rooms.follow(&message("rust", 7)), Follow::Skip, "inside the gap");
        assert_eq!(rooms.follow(&message("rust", 8)), Follow::Show);

        // A new connection: every room again, in order, each from where it
        // was; one where nothing was shown from 0, not live only.
        let expected = [join("general", Some(4)), join("rust", Some(8)), join("empty", Some(0))];
        assert_eq!(rooms.joins(), expected);
        assert_eq!(rooms.waiting(), Waiting::Rejoins);
    }

    #[test]
    fn the_rooms_rejoined_after_a_reconnect_keep_their_order() {
        let mut rooms = in_general();
        for room in ["rust", "side"] {
            rooms.join(room);
            rooms.follow(&joined(room, "alice"));
        }
        assert_eq!(rooms.current(), Some("side"));
        rooms.joins();
        // Confirmed in another order than they were sent.
        for room in ["side", "general", "rust"] {
            rooms.follow(&joined(room, "alice"));
        }
        assert_eq!(rooms.joined(), ["general", "rust", "side"]);
        assert_eq!(rooms.current(), Some("side"), "the current room stays current");
        assert_eq!(rooms.waiting(), Waiting::Nothing);
    }

    #[test]
    fn an_unanswered_join_is_sent_again_on_the_next_connection() {
        let mut rooms = in_general();
        rooms.join("rust");
        assert_eq!(rooms.joins(), [join("general", Some(0)), join("rust", None)]);
        rooms.follow(&joined("general", "alice"));
        assert_eq!(rooms.waiting(), Waiting::Join, "rust still unanswered");
        rooms.follow(&joined("rust", "alice"));
        assert_eq!(rooms.current(), Some("rust"));
    }

    #[test]
    fn since_ahead_rejoins_with_since_0() {
        let mut rooms = in_general();
        rooms.follow(&message("general", 5));
        rooms.joins();
        let started_over = rooms.follow(&refused("general", ErrorCode::SinceAhead));
        assert_eq!(started_over, Follow::StartedOver("general".into()));
        assert_eq!(rooms.rejoin("general"), join("general", Some(0)));
        assert_eq!(rooms.waiting(), Waiting::Rejoins, "still waiting for the room");
        rooms.follow(&joined("general", "alice"));
        assert_eq!(rooms.follow(&message("general", 1)), Follow::Show, "the new room's first");
    }

    #[tokio::test]
    async fn name_taken_and_unavailable_are_asked_again_until_max_attempts() {
        for code in [ErrorCode::NameTaken, ErrorCode::Unavailable] {
            let mut rooms = Rooms::new("alice", "general", Backoff { max_attempts: 3, ..quick() });
            rooms.joins();
            rooms.follow(&joined("general", "alice"));
            rooms.follow(&message("general", 2));
            rooms.joins();
            // Asked again after each of the first two refusals; given up
            // (and the refusal shown) at the third.
            for round in 1..=2 {
                let refusal = rooms.follow(&refused("general", code));
                assert_eq!(refusal, Follow::Skip, "{code:?}, round {round}: nothing shown yet");
                assert_eq!(rooms.joined(), ["general"], "{code:?}: kept");
                assert_eq!(rooms.waiting(), Waiting::Rejoins, "{code:?}: lines still wait");
                assert_eq!(rooms.next_round().await, [join("general", Some(2))], "{code:?}");
            }
            assert_eq!(rooms.follow(&refused("general", code)), Follow::Show, "{code:?}");
            assert!(rooms.joined().is_empty(), "{code:?}: given up");
            assert_eq!(rooms.waiting(), Waiting::Nothing, "{code:?}");

            // A new connection starts a new count.
            let mut rooms = Rooms::new("alice", "general", Backoff { max_attempts: 2, ..quick() });
            rooms.joins();
            rooms.follow(&joined("general", "alice"));
            for _ in 0..3 {
                rooms.joins();
                assert_eq!(rooms.follow(&refused("general", code)), Follow::Skip, "{code:?}");
            }
        }
    }

    #[test]
    fn other_refusals_of_a_rejoin_are_final() {
        for code in [ErrorCode::BadName, ErrorCode::TooManyRooms, ErrorCode::Other] {
            let mut rooms = in_general();
            rooms.follow(&message("general", 3));
            rooms.joins();
            assert_eq!(rooms.follow(&refused("general", code)), Follow::Show, "{code:?}");
            assert!(rooms.joined().is_empty(), "{code:?}: given up");
            assert_eq!(rooms.waiting(), Waiting::Nothing, "{code:?}");
            let forgotten = ClientMessage::Join {
                room: "general".into(),
                username: "alice".into(),
                since: Some(0),
                epoch: None,
            };
            assert_eq!(rooms.rejoin("general"), forgotten, "forgotten, epoch and all");
        }
        assert_eq!(refusal(ErrorCode::SinceAhead), Refusal::StartedOver);
    }

    fn left(room: &str, who: &str) -> ServerEvent {
        let timestamp = "2026-12-06T18:00:09.000Z".into();
        ServerEvent::Left { room: room.into(), username: who.into(), timestamp }
    }

    fn gap(room: &str, first: u64, last: u64) -> ServerEvent {
        ServerEvent::Gap { room: room.into(), first, last }
    }

    #[test]
    fn a_resume_shows_the_replay_before_our_joined_line() {
        let mut rooms = in_general();
        rooms.follow(&message("general", 2));
        assert_eq!(rooms.joins(), [join("general", Some(2))]);
        // Messages 3 and 4 were said while we were away: our Joined, stamped
        // after them, comes first, and is held until they are shown.
        let ours = joined_at("general", "alice", 4);
        assert_eq!(rooms.follow(&ours), Follow::Skip, "held");
        assert_eq!(rooms.current(), Some("general"));
        assert_eq!(rooms.waiting(), Waiting::Nothing, "back in the room: lines may go");
        assert_eq!(
            rooms.follow(&message("general", 3)),
            Follow::Lines(vec![message("general", 3)])
        );
        let last = Follow::Lines(vec![message("general", 4), ours]);
        assert_eq!(rooms.follow(&message("general", 4)), last, "the replay's last, then ours");
        assert_eq!(rooms.follow(&message("general", 5)), Follow::Show, "live: as before");

        // Nothing said meanwhile: our Joined at once.
        rooms.joins();
        assert_eq!(rooms.follow(&joined_at("general", "alice", 5)), Follow::Show);
        // Someone else's Joined is never held.
        assert_eq!(rooms.follow(&joined_at("general", "bob", 5)), Follow::Show);
    }

    #[test]
    fn a_gap_before_a_replay_is_shown_with_the_line_after_it() {
        let mut rooms = in_general();
        rooms.follow(&message("general", 2));
        rooms.joins();
        let ours = joined_at("general", "alice", 9);
        assert_eq!(rooms.follow(&ours), Follow::Skip);
        assert_eq!(rooms.follow(&gap("general", 3, 7)), Follow::Skip, "held");
        let first = Follow::Lines(vec![gap("general", 3, 7), message("general", 8)]);
        assert_eq!(rooms.follow(&message("general", 8)), first);
        let last = Follow::Lines(vec![message("general", 9), ours]);
        assert_eq!(rooms.follow(&message("general", 9)), last);

        // All of it gone: the gap ends the replay, and our line follows it.
        rooms.joins();
        let ours = joined_at("general", "alice", 30);
        assert_eq!(rooms.follow(&ours), Follow::Skip);
        let all_gone = Follow::Lines(vec![gap("general", 10, 30), ours]);
        assert_eq!(rooms.follow(&gap("general", 10, 30)), all_gone);
        assert_eq!(rooms.joins(), [join("general", Some(30))]);
    }

    #[test]
    fn a_room_that_started_over_shows_its_new_life_under_a_notice() {
        let mut rooms = in_general(); // in the room's life EPOCH
        rooms.follow(&message("general", 5));
        assert_eq!(rooms.joins(), [join("general", Some(5))], "since 5, in EPOCH");
        // The server restarted: another epoch, and two messages so far.
        let ours = joined_in("general", "alice", 2, "e2");
        assert_eq!(rooms.follow(&ours), Follow::Skip, "held until its replay is shown");
        let over = ServerEvent::StartedOver { room: "general".into() };
        assert_eq!(rooms.follow(&over), Follow::Skip, "shown with the next line");
        let first = Follow::Lines(vec![over.clone(), message("general", 1)]);
        assert_eq!(rooms.follow(&message("general", 1)), first, "counted from 1 again");
        let last = Follow::Lines(vec![message("general", 2), ours]);
        assert_eq!(rooms.follow(&message("general", 2)), last);
        assert_eq!(rooms.follow(&message("general", 3)), Follow::Show, "live");
        // The next resume counts in the new life.
        let expected = ClientMessage::Join {
            room: "general".into(),
            username: "alice".into(),
            since: Some(3),
            epoch: Some("e2".into()),
        };
        assert_eq!(rooms.joins(), [expected]);

        // A new life with nothing in it yet: the notice, then our line.
        let ours = joined_in("general", "alice", 0, "e3");
        assert_eq!(rooms.follow(&ours), Follow::Skip);
        assert_eq!(rooms.follow(&over), Follow::Lines(vec![over.clone(), ours]));
        assert_eq!(rooms.follow(&message("general", 1)), Follow::Show);
    }

    #[test]
    fn a_replay_cut_short_is_forgotten_with_its_connection() {
        let mut rooms = in_general();
        rooms.joins();
        assert_eq!(rooms.follow(&joined_at("general", "alice", 3)), Follow::Skip);
        rooms.follow(&message("general", 1));
        // The connection drops mid-replay: the next one resumes after 1,
        // and its own Joined is held in its turn.
        assert_eq!(rooms.joins(), [join("general", Some(1))]);
        let ours = joined_at("general", "alice", 4);
        assert_eq!(rooms.follow(&ours), Follow::Skip);
        rooms.follow(&message("general", 2));
        rooms.follow(&message("general", 3));
        assert_eq!(
            rooms.follow(&message("general", 4)),
            Follow::Lines(vec![message("general", 4), ours])
        );
        // A server older than seq in Joined says 0: shown at once.
        rooms.joins();
        assert_eq!(rooms.follow(&joined("general", "alice")), Follow::Show);
    }

    #[test]
    fn leaving_forgets_the_room() {
        let mut rooms = in_general();
        rooms.follow(&message("general", 2));
        rooms.follow(&left("general", "bob"));
        assert_eq!(rooms.joined(), ["general"], "someone else left");
        rooms.follow(&left("general", "alice"));
        assert!(rooms.joined().is_empty());
        assert!(rooms.joins().is_empty(), "nothing to rejoin");
    }

    /// No waiting between rounds.
    fn quick() -> Backoff {
        Backoff { base: Duration::ZERO, cap: Duration::ZERO, max_attempts: 0 }
    }

    #[test]
    fn held_rooms_are_asked_again_after_the_backoff_until_max_attempts() {
        let mut held = Held::new(backoff(3));
        let now = Instant::now();
        let first = held.hold_at("general", now).expect("asked again");
        assert!(first >= Duration::from_millis(50) && first <= Duration::from_millis(100));
        // A second room refused in the same round waits for the same round.
        let later = now + Duration::from_millis(10);
        assert_eq!(held.hold_at("rust", later), Some(first - Duration::from_millis(10)));
        assert_eq!(held.take_round(), ["general", "rust"]);

        // Round 2 waits the backoff's second delay; a third refusal is the
        // last one --max-attempts 3 allows.
        let second = held.hold_at("general", now).expect("asked again");
        assert!(second >= Duration::from_millis(100) && second <= Duration::from_millis(200));
        assert_eq!(held.take_round(), ["general"]);
        assert_eq!(held.hold_at("general", now), None, "given up");

        let mut forever = Held::new(backoff(0));
        for _ in 0..100 {
            assert!(forever.hold_at("general", now).is_some());
            forever.take_round();
        }
    }

    #[tokio::test]
    async fn the_next_round_comes_when_it_is_due_and_never_while_none_is_held() {
        let mut held = Held::new(backoff(0));
        let nothing = tokio::time::timeout(Duration::from_millis(20), held.next_round());
        assert!(nothing.await.is_err(), "no round without a held room");
        let wait = held.hold("general").expect("asked again");
        let started = Instant::now();
        assert_eq!(held.next_round().await, ["general"]);
        assert!(started.elapsed() >= wait.saturating_sub(Duration::from_millis(5)));
    }
}
