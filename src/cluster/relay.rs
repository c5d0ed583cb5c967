//! Chapter 9: a node's side of the cluster's rooms. Redis decides every
//! join and numbers every message for the whole chat; the node keeps what
//! it needs to hand the cluster's event stream on to its own members: which
//! of its clients the cluster has let into which room, the joins still
//! under way, and the last `seq` of each room it has handed on.
//!
//! It delivers through the node's [`RoomManager`], which keeps the
//! members' outboxes as on a single server (chapter 4.2) but announces
//! nothing itself: a node's room manager is quiet, and presence comes from
//! the cluster, like messages. One lock guards this state, taken before
//! the room manager's, so that handing an event on and completing a join
//! are one step, as a join and a message are on a single server.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex, MutexGuard};

use tokio::sync::mpsc;
use tokio_tungstenite::tungstenite::Message;

use crate::rooms::{ClientId, RoomError, RoomManager};

/// A member that left `room` on this node without a `Leave` (its
/// connection ended, or it was evicted): the cluster announces it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Departure {
    pub room: String,
    pub username: String,
}

// ANCHOR: joining
/// In a cluster, a join is confirmed twice, by two roads: the join's own
/// answer from Redis (the room's `seq` at that moment, and the history the
/// joiner missed) reaches the connection, and the join's `Joined` event
/// reaches this node's event stream, in the one order Redis published
/// everything in. Until both have come, the member is *joining*: what the
/// stream brings it is sorted by these two facts, so that each message
/// reaches it once (replayed or live, never both) and presence from before
/// its join is not shown as news.
#[derive(Debug)]
struct Joining {
    username: String,
    /// The room's last `seq` when Redis let it in: `Some` once the answer
    /// has reached [`Relay::entered`]. Every later message has a larger one.
    last: Option<u64>,
    /// Its own `Joined` has come through the stream: whatever the stream
    /// brings after it happened after the join.
    marked: bool,
    /// What the stream brought before the answer: sorted by `entered`.
    early: Vec<(Relayed, Message)>,
}

/// What kind of cluster event [`Relay::relay`] hands on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Relayed {
    /// Message number `seq` of the room.
    Said(u64),
    /// A `Joined` or a `Left`. `announce` is false when the room was past
    /// the presence limit: then only the member concerned hears it.
    /// `joiner` names the member of *this* node a `Joined` is about.
    Presence { announce: bool, joiner: Option<ClientId> },
}
// ANCHOR_END: joining

/// A node's rooms as the cluster sees them.
#[derive(Debug)]
pub(crate) struct Relay {
    rooms: Arc<RoomManager>,
    state: Mutex<State>,
}

#[derive(Debug)]
struct State {
    rooms: HashMap<String, Room>,
    /// The rooms each client holds here (a member, or joining), so that its
    /// departure can be handed on even after an eviction emptied its
    /// memberships in the room manager.
    clients: HashMap<ClientId, Vec<String>>,
    /// Where a member that departs without a `Leave` goes, for the cluster
    /// to announce.
    departures: mpsc::UnboundedSender<Departure>,
    /// Set when the server shuts down: the cluster learns of every member
    /// at once ([`crate::cluster::Cluster::leave_cluster`]).
    quiet: bool,
}

/// One room of this node. It goes when its last member or joiner does,
/// and with it its `seq`, as a single server's room does.
#[derive(Debug, Default)]
struct Room {
    /// The members the cluster has let in here, and their names.
    members: BTreeMap<ClientId, String>,
    /// The `seq` of the last message handed on here.
    seq: u64,
    /// The highest `seq` a join here was told the room had reached, which
    /// may be ahead of `seq` (a replay is not handed on).
    known: u64,
    /// Members whose join the cluster has not yet confirmed here.
    joining: BTreeMap<ClientId, Joining>,
    /// The room's epoch, as a join or a `Joined` here last said it: what a
    /// node makes the room's epoch again if Redis lost it, as it does its
    /// `seq` ([`Relay::last_seq`]).
    epoch: String,
}

impl Room {
    /// The names taken here: by members, and by joining members.
    fn names(&self) -> impl Iterator<Item = &str> {
        let joining = self.joining.values().map(|j| j.username.as_str());
        self.members.values().map(String::as_str).chain(joining)
    }
}

impl State {
    /// Forgets that client `id` holds `room` here (a member or joining),
    /// and the room if it is now empty. Returns the name it had there.
    fn forget(&mut self, id: ClientId, room: &str) -> Option<String> {
        if let Some(held) = self.clients.get_mut(&id) {
            held.retain(|r| r != room);
            if held.is_empty() {
                self.clients.remove(&id);
            }
        }
        let room_state = self.rooms.get_mut(room)?;
        let name = match room_state.members.remove(&id) {
            Some(name) => Some(name),
            None => room_state.joining.remove(&id).map(|j| j.username),
        };
        if room_state.members.is_empty() && room_state.joining.is_empty() {
            self.rooms.remove(room);
        }
        name
    }
}

impl Relay {
    /// The node's part of the cluster, delivering through `rooms` (a quiet
    /// room manager: [`RoomManager::quiet`]). Departures go to `departures`.
    pub(crate) fn new(
        rooms: Arc<RoomManager>,
        departures: mpsc::UnboundedSender<Departure>,
    ) -> Self {
        let state =
            State { rooms: HashMap::new(), clients: HashMap::new(), departures, quiet: false };
        Relay { rooms, state: Mutex::new(state) }
    }

    /// The room manager that holds this node's connections.
    pub(crate) fn rooms(&self) -> &Arc<RoomManager> {
        &self.rooms
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        // As in the room manager: the maps are consistent after any single
        // statement, so a panic elsewhere does not stop the node.
        self.state.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    // ANCHOR: enter
    /// The first step of a join: client `id` becomes a *joining* member of
    /// `room` here, before the cluster is asked, so that nothing the
    /// cluster says after its answer can pass it by. Checks what this node
    /// alone can check; announces nothing.
    pub(crate) fn enter(&self, id: ClientId, room: &str, username: &str) -> Result<(), RoomError> {
        let mut state = self.lock();
        self.rooms.reserve(id, room, username)?;
        if state.rooms.get(room).is_some_and(|r| r.names().any(|name| name == username)) {
            let _ = self.rooms.withdraw(id, room);
            return Err(RoomError::NameTaken);
        }
        let joining =
            Joining { username: username.to_string(), last: None, marked: false, early: vec![] };
        state.rooms.entry(room.to_string()).or_default().joining.insert(id, joining);
        state.clients.entry(id).or_default().push(room.to_string());
        Ok(())
    }

    /// The last step of a join: the cluster let client `id` in when the
    /// room's last message was `last`. Sends it `first` (its `Joined`, and
    /// any gap notice and replay), then what the event stream brought
    /// meanwhile that it has not seen: messages after `last`, and presence
    /// after its own `Joined`.
    pub(crate) fn entered(&self, id: ClientId, room: &str, last: u64, first: Vec<Message>) {
        let mut state = self.lock();
        let Some(room_state) = state.rooms.get_mut(room) else { return };
        let Some(mut joining) = room_state.joining.remove(&id) else { return };
        room_state.known = room_state.known.max(last);
        let mut out = first;
        for (event, msg) in std::mem::take(&mut joining.early) {
            let new = match event {
                Relayed::Said(seq) => seq > last,
                // `early` keeps no presence from before the marker.
                Relayed::Presence { .. } => joining.marked,
            };
            if new {
                out.push(msg);
            }
        }
        if joining.marked {
            room_state.members.insert(id, joining.username);
            self.rooms.admit(id, room);
        } else {
            joining.last = Some(last);
            room_state.joining.insert(id, joining);
        }
        for msg in out {
            if !self.rooms.send(id, msg) {
                return; // evicted or gone: nothing more for it
            }
        }
    }

    /// Takes client `id` out of `room` here, announcing nothing: the
    /// cluster refused the join, or is told of the leave by the caller.
    /// Returns the name it had there.
    pub(crate) fn withdraw(&self, id: ClientId, room: &str) -> Result<String, RoomError> {
        let mut state = self.lock();
        state.forget(id, room);
        self.rooms.withdraw(id, room)
    }
    // ANCHOR_END: enter

    /// The name client `id` has in `room`, once it has been let in: once
    /// [`Relay::entered`] has run, even if the event stream has not yet
    /// brought its `Joined`, and as long as it is not evicted.
    pub(crate) fn name_in(&self, id: ClientId, room: &str) -> Result<String, RoomError> {
        let state = self.lock();
        let room_state = state.rooms.get(room).ok_or(RoomError::NotJoined)?;
        let confirmed = room_state.joining.get(&id).filter(|j| j.last.is_some());
        let name = room_state.members.get(&id).or(confirmed.map(|j| &j.username));
        match name {
            Some(name) if self.rooms.is_active(id) => Ok(name.clone()),
            _ => Err(RoomError::NotJoined),
        }
    }

    /// Whether `username` is a member of `room` here (its join complete).
    pub(crate) fn has_member(&self, room: &str, username: &str) -> bool {
        let state = self.lock();
        state.rooms.get(room).is_some_and(|r| r.members.values().any(|name| name == username))
    }

    /// The `seq` of the last message of `room` handed on here, or known
    /// from a join (0 when it has none): the floor a node gives the
    /// cluster's counter.
    pub(crate) fn last_seq(&self, room: &str) -> u64 {
        self.lock().rooms.get(room).map_or(0, |r| r.seq.max(r.known))
    }

    /// The epoch of `room` as this node last heard it, if it has members
    /// here.
    pub(crate) fn epoch(&self, room: &str) -> Option<String> {
        let state = self.lock();
        state.rooms.get(room).map(|r| r.epoch.clone()).filter(|e| !e.is_empty())
    }

    /// Notes that `room`'s epoch is `epoch` (if it has members here).
    pub(crate) fn note_epoch(&self, room: &str, epoch: &str) {
        if let Some(room_state) = self.lock().rooms.get_mut(room)
            && !epoch.is_empty()
        {
            room_state.epoch = epoch.to_string();
        }
    }

    /// Client `id`'s connection has ended: it leaves every room it holds
    /// here, and the cluster is told of each (unless the server is shutting
    /// down), then the room manager forgets it.
    pub(crate) fn disconnect(&self, id: ClientId) {
        let mut state = self.lock();
        for room in state.clients.get(&id).cloned().unwrap_or_default() {
            if let Some(username) = state.forget(id, &room)
                && !state.quiet
            {
                let _ = state.departures.send(Departure { room, username });
            }
        }
        self.rooms.disconnect(id);
    }

    /// From now on, departures are not handed on: the whole node is going
    /// away, and leaves the cluster at once.
    pub(crate) fn shutting_down(&self) {
        self.lock().quiet = true;
        self.rooms.shutting_down();
    }

    // ANCHOR: relay
    /// Hands on one event of `room` from the cluster's event stream, which
    /// brings every node every event in the one order Redis published them.
    /// Members hear it by the rules of a single node (presence past the
    /// limit goes to nobody else); joining members sort it by their two
    /// facts (see [`Joining`]). A message whose `seq` this node has already
    /// handed on is dropped: catching up after a lost connection to Redis
    /// may bring it twice.
    pub(crate) fn relay(&self, room: &str, event: Relayed, msg: &Message) {
        let mut state = self.lock();
        let Some(room_state) = state.rooms.get_mut(room) else { return };
        if let Relayed::Said(seq) = event {
            if seq <= room_state.seq {
                return;
            }
            room_state.seq = seq;
        }
        let (for_all, joiner) = match event {
            Relayed::Said(_) => (true, None),
            Relayed::Presence { announce, joiner } => (announce, joiner),
        };
        let mut send = Vec::new();
        let mut complete = Vec::new();
        for (id, joining) in &mut room_state.joining {
            if joiner == Some(*id) {
                // Its own Joined: from here on, the stream is news to it.
                joining.marked = true;
                joining.early.retain(|(event, _)| matches!(event, Relayed::Said(_)));
                if joining.last.is_some() {
                    complete.push(*id);
                }
            } else if !for_all {
                // Not for it (past the presence limit).
            } else if let Some(last) = joining.last {
                // Answered, not yet marked: only a message it cannot have
                // had in its replay is news.
                if matches!(event, Relayed::Said(seq) if seq > last) {
                    send.push(*id);
                }
            } else {
                joining.early.push((event, msg.clone()));
            }
        }
        // Members first: the member completing its join here was sent its
        // own Joined by `entered`.
        if for_all {
            self.rooms.broadcast(room, msg);
        }
        for id in complete {
            if let Some(joining) = room_state.joining.remove(&id) {
                room_state.members.insert(id, joining.username);
                self.rooms.admit(id, room);
            }
        }
        for id in send {
            self.rooms.send(id, msg.clone());
        }
    }

    /// After the event stream was lost and is back: a joining member's own
    /// `Joined` may have been published meanwhile and will never come, so
    /// each stops waiting for it. (The messages it missed come by `seq`; a
    /// `Joined` or `Left` said meanwhile is not shown.)
    pub(crate) fn relay_resumed(&self) {
        let mut state = self.lock();
        for (room, room_state) in &mut state.rooms {
            let ids: Vec<ClientId> = room_state.joining.keys().copied().collect();
            for id in ids {
                let Some(joining) = room_state.joining.get_mut(&id) else { continue };
                joining.marked = true;
                joining.early.retain(|(event, _)| matches!(event, Relayed::Said(_)));
                if joining.last.is_some()
                    && let Some(joining) = room_state.joining.remove(&id)
                {
                    room_state.members.insert(id, joining.username);
                    self.rooms.admit(id, room);
                }
            }
        }
    }

    /// Each room this node has members in, with the last `seq` handed on
    /// here and the names of the members the cluster has let in.
    pub(crate) fn local_rooms(&self) -> Vec<(String, u64, String, Vec<String>)> {
        let state = self.lock();
        let rooms = state.rooms.iter().map(|(name, room)| {
            let confirmed = room.joining.values().filter(|j| j.last.is_some());
            let names = room.members.values().chain(confirmed.map(|j| &j.username));
            (name.clone(), room.seq, room.epoch.clone(), names.cloned().collect())
        });
        rooms.collect()
    }
    // ANCHOR_END: relay
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::outbox::{self, Outgoing};
    use crate::rooms::Config;

    fn relay() -> (Relay, mpsc::UnboundedReceiver<Departure>) {
        let config = Config {
            outbox_bytes: 1024,
            joined: |room, name, _, _| Message::text(format!("+{name}@{room}")),
            left: |room, name| Message::text(format!("-{name}@{room}")),
            ..Config::default()
        };
        let (departures, departed) = mpsc::unbounded_channel();
        (Relay::new(Arc::new(RoomManager::quiet(config)), departures), departed)
    }

    /// Everything queued for a client, as text, given back as written.
    fn drain(outgoing: &mut Outgoing) -> Vec<String> {
        let mut texts = Vec::new();
        while let Some(msg) = outgoing.try_recv() {
            outgoing.written(outbox::frame_len(&msg));
            texts.push(msg.into_text().unwrap().to_string());
        }
        texts
    }

    fn said(relay: &Relay, seq: u64) {
        relay.relay("r", Relayed::Said(seq), &Message::text(format!("m{seq}")));
    }

    fn presence(relay: &Relay, text: &str, joiner: Option<ClientId>) {
        relay.relay("r", Relayed::Presence { announce: true, joiner }, &Message::text(text));
    }

    #[test]
    fn a_cluster_join_gets_each_message_once_when_its_joined_comes_first() {
        let (relay, _departed) = relay();
        let (a, _, mut ra) = relay.rooms().connect();
        relay.enter(a, "r", "alice").unwrap();
        said(&relay, 1); // published before the join: in its replay
        presence(&relay, "+bob@r", None); // before the join: not news
        presence(&relay, "+alice@r", Some(a)); // the join's own Joined
        said(&relay, 3); // after the join
        presence(&relay, "+carol@r", None);
        assert!(drain(&mut ra).is_empty(), "nothing before the join's answer");
        let first = vec![Message::text("+alice@r"), Message::text("m1"), Message::text("m2")];
        relay.entered(a, "r", 2, first);
        assert_eq!(drain(&mut ra), ["+alice@r", "m1", "m2", "m3", "+carol@r"]);
        said(&relay, 4);
        assert_eq!(drain(&mut ra), ["m4"], "a member now");
        assert!(relay.has_member("r", "alice"));
    }

    #[test]
    fn a_cluster_join_gets_each_message_once_when_its_answer_comes_first() {
        let (relay, _departed) = relay();
        let (a, _, mut ra) = relay.rooms().connect();
        relay.enter(a, "r", "alice").unwrap();
        said(&relay, 1);
        let first = vec![Message::text("+alice@r"), Message::text("m1"), Message::text("m2")];
        relay.entered(a, "r", 2, first);
        assert!(!relay.has_member("r", "alice"), "its Joined has not come yet");
        assert_eq!(relay.name_in(a, "r"), Ok("alice".to_string()), "but it may speak");
        said(&relay, 2); // still in flight when Redis answered: replayed already
        presence(&relay, "+bob@r", None); // from before the join
        presence(&relay, "+alice@r", Some(a));
        said(&relay, 3);
        presence(&relay, "+carol@r", None);
        assert_eq!(drain(&mut ra), ["+alice@r", "m1", "m2", "m3", "+carol@r"]);
        assert_eq!(relay.name_in(a, "r"), Ok("alice".to_string()));
        assert_eq!(relay.last_seq("r"), 3);
    }

    #[test]
    fn a_name_is_taken_here_by_a_joiner_too_and_a_refused_join_leaves_nothing() {
        let (relay, _departed) = relay();
        let (a, _, _ra) = relay.rooms().connect();
        let (b, _, _rb) = relay.rooms().connect();
        relay.enter(a, "r", "sam").unwrap();
        assert_eq!(relay.enter(b, "r", "sam"), Err(RoomError::NameTaken));
        assert!(relay.rooms().rooms_of(b).is_empty(), "the refused join holds nothing");
        assert_eq!(relay.enter(a, "r", "al"), Err(RoomError::AlreadyJoined));
        assert_eq!(relay.name_in(a, "r"), Err(RoomError::NotJoined), "not yet let in");
        // The cluster refused it: the room goes, and with it its seq.
        relay.relay("r", Relayed::Said(7), &Message::text("m7"));
        assert_eq!(relay.withdraw(a, "r"), Ok("sam".to_string()));
        assert_eq!(relay.last_seq("r"), 0);
        assert!(relay.local_rooms().is_empty());
        relay.enter(b, "r", "sam").unwrap();
    }

    #[test]
    fn a_departure_is_handed_on_not_announced_here() {
        let (relay, mut departed) = relay();
        let (a, _, mut ra) = relay.rooms().connect();
        let (b, _, _rb) = relay.rooms().connect();
        for (id, name) in [(a, "alice"), (b, "bob")] {
            relay.enter(id, "r", name).unwrap();
            relay.entered(id, "r", 0, vec![]);
            presence(&relay, &format!("+{name}@r"), Some(id));
        }
        drain(&mut ra);
        let names = |relay: &Relay| relay.local_rooms().into_iter().next().map(|r| r.3);
        assert_eq!(names(&relay), Some(vec!["alice".to_string(), "bob".to_string()]));
        relay.disconnect(b);
        assert!(drain(&mut ra).is_empty(), "the cluster announces it, through relay");
        let bob = Departure { room: "r".into(), username: "bob".into() };
        assert_eq!(departed.try_recv(), Ok(bob));
        assert_eq!(names(&relay), Some(vec!["alice".to_string()]));
        assert_eq!(relay.withdraw(a, "r"), Ok("alice".to_string()));
        assert!(departed.try_recv().is_err(), "a leave is the caller's to announce");
        assert!(relay.rooms().room_names().is_empty());
        assert!(relay.local_rooms().is_empty());
    }

    #[test]
    fn an_evicted_member_may_not_speak_and_its_departure_is_handed_on_when_it_goes() {
        let (relay, mut departed) = relay();
        let (a, _, _ra) = relay.rooms().connect(); // never reads: 1 KiB of outbox
        let (b, _, mut rb) = relay.rooms().connect();
        for (id, name) in [(a, "alice"), (b, "bob")] {
            relay.enter(id, "r", name).unwrap();
            relay.entered(id, "r", 0, vec![]);
            presence(&relay, &format!("+{name}@r"), Some(id));
        }
        let big = Message::text("x".repeat(600));
        for seq in 1..=2 {
            relay.relay("r", Relayed::Said(seq), &big);
            drain(&mut rb);
        }
        assert!(!relay.rooms().is_active(a), "over its budget: evicted");
        assert_eq!(relay.name_in(a, "r"), Err(RoomError::NotJoined));
        assert!(departed.try_recv().is_err(), "not yet: its connection is closing");
        relay.disconnect(a);
        let alice = Departure { room: "r".into(), username: "alice".into() };
        assert_eq!(departed.try_recv(), Ok(alice));
    }

    #[test]
    fn when_the_stream_comes_back_a_joiner_stops_waiting_for_its_joined() {
        let (relay, _departed) = relay();
        let (a, _, mut ra) = relay.rooms().connect();
        relay.enter(a, "r", "alice").unwrap();
        relay.entered(a, "r", 0, vec![Message::text("+alice@r")]);
        relay.relay_resumed(); // its Joined was published while the stream was away
        said(&relay, 1);
        assert_eq!(drain(&mut ra), ["+alice@r", "m1"]);
        assert!(relay.has_member("r", "alice"));
    }

    #[test]
    fn at_shutdown_departures_are_not_handed_on() {
        let (relay, mut departed) = relay();
        let (a, _, _ra) = relay.rooms().connect();
        relay.enter(a, "r", "alice").unwrap();
        relay.shutting_down();
        relay.disconnect(a);
        assert!(departed.try_recv().is_err());
        assert!(relay.local_rooms().is_empty());
    }
}
