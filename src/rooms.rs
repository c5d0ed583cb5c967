//! Chapter 4.2: the room manager.
//!
//! The original chapter's manager stored client ids in rooms and so could
//! deliver nothing. Here a room holds its members' *outboxes*:
//!
//! - every client has an [`Outbox`], bounded in bytes (see
//!   [`crate::outbox`]), that its connection drains into the socket;
//! - sending to a room serialises the message once; each member gets a clone
//!   of the same [`Message`], whose payload is reference counted, so a
//!   thousand members cost a thousand pointer copies, not a thousand strings;
//! - rooms are created on first join and removed when the last member leaves;
//! - ids come from an atomic counter (no lock for a counter).
//!
//! **Presence.** Joins and leaves are announced by the manager itself, in the
//! same step that changes the membership, so every member sees a room's
//! events in one order, and a name is never free before its `Left` has gone
//! out. Up to [`Config::presence_limit`] members, every member hears every
//! join and leave. A bigger room only tells the member concerned: announcing
//! each of 10,000 joins to everyone would be 50 million messages.
//!
//! **Slow consumers.** Delivery never waits. A member whose outbox is over
//! its budget is *evicted*: taken out of every room at once (its departure
//! announced like any other), so nobody else ever waits for it, and its
//! [`Member::evicted`] future completes, which tells its connection to close
//! with code 1008 (policy violation). A member whose connection has ended is
//! taken out the same way, and so is one whose [`Member`] is dropped for any
//! reason, a panic included: membership cannot outlive its connection.
//!
//! **History.** Each room keeps its last [`Config::history`] messages, the
//! very [`Message`]s its members were sent (serialised once, shared). A
//! client back from a dropped connection joins with the `seq` it saw last
//! ([`Member::join_since`]) and is sent, right after its own join event,
//! what it missed. That replay happens under the same lock as the join and
//! as [`Member::say`], so each message reaches it exactly once: replayed if
//! said before the join, delivered live if after. History lives as long as
//! the room: a room that empties is removed, and a new one counts from 1.
//!
//! One `std::sync::Mutex` guards the state. It is never held across an
//! `.await`, and what runs under it is short: map operations, non-blocking
//! pushes, and in [`Member::say`] the caller's `make` closure (one
//! serialisation, so that numbering and delivery stay in order). So a plain
//! mutex beats an async `RwLock` here; a server with very busy rooms would
//! shard the state by room.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};

use tokio_tungstenite::tungstenite::Message;
use tokio_util::sync::{CancellationToken, WaitForCancellationFuture};

use crate::outbox::{self, Outbox, Outgoing, PushError};
use crate::protocol::{ErrorCode, ServerEvent, timestamp_now};

/// Identifies one connected client.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ClientId(u64);

impl ClientId {
    /// The number behind the id, as a cluster passes it around.
    pub fn number(self) -> u64 {
        self.0
    }

    /// The id whose [`ClientId::number`] is `number`.
    pub fn from_number(number: u64) -> ClientId {
        ClientId(number)
    }
}

impl std::fmt::Display for ClientId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "client#{}", self.0)
    }
}

/// Why a room operation was refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RoomError {
    /// The client was evicted (or has gone).
    Gone,
    /// The client is already in that room.
    AlreadyJoined,
    /// The client is not in that room.
    NotJoined,
    /// Another member of that room already uses that name.
    NameTaken,
    /// A join asked for the messages after `since`, but the room's last
    /// message is `last` (0 when it has none): `since` cannot be from it.
    SinceAhead { since: u64, last: u64 },
    /// In a cluster: the shared state (Redis) cannot be reached just now.
    Unavailable,
}

impl std::fmt::Display for RoomError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            RoomError::Gone => "no longer connected",
            RoomError::AlreadyJoined => "already in that room",
            RoomError::NotJoined => "not in that room",
            RoomError::NameTaken => "that name is taken in that room",
            RoomError::SinceAhead { since, last } => {
                return write!(f, "since {since} is ahead of the room's last message, seq {last}");
            }
            RoomError::Unavailable => "the chat is temporarily unavailable, try again shortly",
        })
    }
}

impl std::error::Error for RoomError {}

impl RoomError {
    /// The code a client acts on when this refusal reaches it in an `Error`
    /// event.
    pub fn code(&self) -> ErrorCode {
        match self {
            // Said only to a client that has already gone (evicted): it is
            // in no room any more.
            RoomError::Gone | RoomError::NotJoined => ErrorCode::NotMember,
            RoomError::AlreadyJoined => ErrorCode::AlreadyJoined,
            RoomError::NameTaken => ErrorCode::NameTaken,
            RoomError::SinceAhead { .. } => ErrorCode::SinceAhead,
            RoomError::Unavailable => ErrorCode::Unavailable,
        }
    }
}

// ANCHOR: config
/// How a [`RoomManager`] bounds outboxes and announces presence.
#[derive(Debug, Clone)]
pub struct Config {
    /// The most bytes of frames queued for one client and not yet written
    /// before it counts as too slow and is evicted.
    pub outbox_bytes: usize,
    /// Rooms with more members than this announce a join or a leave only to
    /// the member concerned.
    pub presence_limit: usize,
    /// How many of its last messages each room keeps, for members who
    /// resume with `since`.
    pub history: usize,
    /// The announcement that `username` joined `room`, whose last message
    /// is then `seq`, in the room's life `epoch`.
    pub joined: fn(room: &str, username: &str, seq: u64, epoch: &str) -> Message,
    /// The announcement that `username` left `room`.
    pub left: fn(room: &str, username: &str) -> Message,
    /// The notice, before a replay, that messages `first..=last` of `room`
    /// are gone from its history.
    pub gap: fn(room: &str, first: u64, last: u64) -> Message,
    /// The notice, before a replay, that `room` started over since the
    /// joiner's `since` (another epoch).
    pub started_over: fn(room: &str) -> Message,
}

impl Default for Config {
    /// 1 MiB per outbox, presence announced up to 1,000 members, 1,000
    /// messages of history per room, with the chat protocol's `Joined`,
    /// `Left` and `Gap` events (presence stamped with the server's time).
    fn default() -> Config {
        Config {
            outbox_bytes: 1024 * 1024,
            presence_limit: 1_000,
            history: 1_000,
            joined: |room, username, seq, epoch| {
                let (room, username, timestamp) = (room.into(), username.into(), timestamp_now());
                ServerEvent::Joined { room, username, timestamp, seq, epoch: epoch.into() }
                    .to_message()
            },
            left: |room, username| {
                let (room, username, timestamp) = (room.into(), username.into(), timestamp_now());
                ServerEvent::Left { room, username, timestamp }.to_message()
            },
            gap: |room, first, last| {
                ServerEvent::Gap { room: room.into(), first, last }.to_message()
            },
            started_over: |room| ServerEvent::StartedOver { room: room.into() }.to_message(),
        }
    }
}
// ANCHOR_END: config

// ANCHOR: state
/// The rooms and their members. Share it with `Arc<RoomManager>`.
#[derive(Debug)]
pub struct RoomManager {
    next_id: AtomicU64,
    state: Mutex<State>,
}

#[derive(Debug)]
struct State {
    config: Config,
    rooms: HashMap<String, Room>,
    clients: HashMap<ClientId, Client>,
    /// Set when the server shuts down: departures are no longer announced.
    quiet: bool,
}

#[derive(Debug, Default)]
struct Room {
    /// Member id -> the name it joined under. Ordered, so delivery order
    /// (and test output) is deterministic.
    members: BTreeMap<ClientId, String>,
    /// The `seq` of the last numbered message; the next one gets `seq + 1`.
    seq: u64,
    /// The last messages said here, oldest first, the newest being `seq`:
    /// they are numbered without gaps, so their own numbers need no storing.
    history: VecDeque<Message>,
    /// This life of the room: a room that empties is removed, and one made
    /// again under its name counts from 1 in a new epoch.
    epoch: String,
}

#[derive(Debug)]
struct Client {
    outbox: Outbox,
    evicted: CancellationToken,
    /// (room, the name this client has there). A `Vec`, not a map: a
    /// client is in a few rooms (16 at most in the chat server), and an
    /// empty `Vec` costs nothing, where a map allocates a node for its
    /// first entry.
    rooms: Vec<(String, String)>,
}
// ANCHOR_END: state

// ANCHOR: member
/// A registered client: the handle its connection uses to join, leave and
/// speak. Dropping it (the connection ended, however it ended) takes the
/// client out of every room and announces its departure.
#[derive(Debug)]
pub struct Member {
    id: ClientId,
    evicted: CancellationToken,
    rooms: Arc<RoomManager>,
}

impl Drop for Member {
    fn drop(&mut self) {
        self.rooms.disconnect(self.id);
    }
}
// ANCHOR_END: member

impl RoomManager {
    /// An empty manager.
    pub fn new(config: Config) -> RoomManager {
        let state = State { config, rooms: HashMap::new(), clients: HashMap::new(), quiet: false };
        RoomManager { next_id: AtomicU64::new(0), state: Mutex::new(state) }
    }

    /// A manager that announces no departure: a cluster's node, whose
    /// cluster announces presence to every node (chapter 9).
    pub(crate) fn quiet(config: Config) -> RoomManager {
        let rooms = RoomManager::new(config);
        rooms.shutting_down();
        rooms
    }

    // ANCHOR: register
    /// Registers a new client. Returns its [`Member`] handle and the
    /// receiving end of its outbox, which the connection drains into the
    /// socket.
    pub fn register(self: &Arc<Self>) -> (Member, Outgoing) {
        let (id, evicted, outgoing) = self.connect();
        (Member { id, evicted, rooms: self.clone() }, outgoing)
    }

    /// A new client: its id, the token its eviction cancels, and the
    /// receiving end of its outbox.
    pub(crate) fn connect(&self) -> (ClientId, CancellationToken, Outgoing) {
        // Relaxed is enough: we need unique numbers, not ordering with
        // other memory.
        let id = ClientId(self.next_id.fetch_add(1, Ordering::Relaxed) + 1);
        let mut state = self.lock();
        let (outbox, outgoing) = outbox::outbox(state.config.outbox_bytes);
        let evicted = CancellationToken::new();
        let client = Client { outbox, evicted: evicted.clone(), rooms: Vec::new() };
        state.clients.insert(id, client);
        (id, evicted, outgoing)
    }
    // ANCHOR_END: register

    // ANCHOR: disconnect
    /// Takes client `id` out of every room, announcing its departure, and
    /// forgets it: its outbox goes, and its id is no one's any more.
    pub(crate) fn disconnect(&self, id: ClientId) {
        let mut state = self.lock();
        state.depart(id);
        state.clients.remove(&id);
    }
    // ANCHOR_END: disconnect

    /// From now on, departures are not announced: the whole server is going
    /// away, and telling each of N leaving members about the N-1 others would
    /// cost N² messages that nobody will read.
    pub fn shutting_down(&self) {
        self.lock().quiet = true;
    }

    /// How many clients are registered, and the bytes queued for them and
    /// not yet written (the admin port's gauges, chapter 10.7).
    pub fn outboxes(&self) -> (usize, usize) {
        let state = self.lock();
        let bytes = state.clients.values().map(|client| client.outbox.queued_bytes()).sum();
        (state.clients.len(), bytes)
    }

    /// The members of `room` and their names, in id order (empty when the
    /// room does not exist).
    pub fn members(&self, room: &str) -> Vec<(ClientId, String)> {
        let state = self.lock();
        let members = state.rooms.get(room).map(|r| r.members.clone()).unwrap_or_default();
        members.into_iter().collect()
    }

    /// The names of all existing rooms, sorted.
    pub fn room_names(&self) -> Vec<String> {
        let mut names: Vec<String> = self.lock().rooms.keys().cloned().collect();
        names.sort();
        names
    }

    // ANCHOR: broadcast
    /// Queues `msg` for every member of `room`; returns how many got it.
    /// Members over their budget are evicted instead of waited for.
    pub fn broadcast(&self, room: &str, msg: &Message) -> usize {
        self.lock().deliver(room, msg)
    }
    // ANCHOR_END: broadcast

    // ANCHOR: lock
    fn lock(&self) -> MutexGuard<'_, State> {
        // A panic while holding the lock would be a bug in this module; the
        // maps are still consistent after any single statement, so keep
        // serving rather than poisoning every connection.
        self.state.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }
    // ANCHOR_END: lock
}

impl Member {
    /// This client's id.
    pub fn id(&self) -> ClientId {
        self.id
    }

    /// Completes when this client has been evicted for being too slow.
    pub fn evicted(&self) -> WaitForCancellationFuture<'_> {
        self.evicted.cancelled()
    }

    /// Whether this client has been evicted.
    pub fn is_evicted(&self) -> bool {
        self.evicted.is_cancelled()
    }

    /// The rooms this client is in, sorted.
    pub fn rooms(&self) -> Vec<String> {
        self.rooms.rooms_of(self.id)
    }

    /// Joins `room` under `username`, creating the room if needed, and
    /// announces it in the same step. Names are unique within a room.
    /// (See [`Member::join_since`] for `since`.)
    pub fn join(&self, room: &str, username: &str) -> Result<(), RoomError> {
        self.rooms.join(self.id, room, username, None, None)
    }

    /// [`Member::join`], and with `since`, the room's messages after that
    /// `seq`, sent to this member alone right after its join event.
    pub fn join_since(
        &self,
        room: &str,
        username: &str,
        since: Option<u64>,
    ) -> Result<(), RoomError> {
        self.rooms.join(self.id, room, username, since, None)
    }

    /// Leaves `room`, deleting it if it is now empty, and announces it (to
    /// the leaver too). Returns the name the client had there.
    pub fn leave(&self, room: &str) -> Result<String, RoomError> {
        self.rooms.leave(self.id, room)
    }

    /// Sends a numbered message from this member to `room`: `make`
    /// receives the sender's name there and the room's next `seq`, and
    /// builds the message once, for every member.
    pub fn say(
        &self,
        room: &str,
        make: impl FnOnce(&str, u64) -> Message,
    ) -> Result<u64, RoomError> {
        self.rooms.say(self.id, room, make)
    }

    /// The names of the members of `room`, sorted; only a member may ask.
    pub fn members(&self, room: &str) -> Result<Vec<String>, RoomError> {
        self.rooms.names(self.id, room)
    }

    /// Queues `msg` for this client alone. Returns false when it could not
    /// be queued (the client is over its budget, and now evicted, or gone).
    pub fn send(&self, msg: Message) -> bool {
        self.rooms.send(self.id, msg)
    }
}

impl RoomManager {
    /// The rooms client `id` is in, sorted.
    pub(crate) fn rooms_of(&self, id: ClientId) -> Vec<String> {
        let state = self.lock();
        let client = state.clients.get(&id);
        let names = client.map(|c| c.room_names().map(str::to_string).collect());
        let mut rooms: Vec<String> = names.unwrap_or_default();
        rooms.sort();
        rooms
    }

    // ANCHOR: join
    /// Joins client `id` to `room` under `username`, creating the room if
    /// needed, and announces it in the same step. Names are unique within a
    /// room. With `since`, the room's messages after that `seq` follow, sent
    /// to this member alone right after its join event: a reconnecting
    /// client gets what it missed. Under the same lock as [`Self::say`], so
    /// no message is both replayed and delivered live, and none is neither.
    /// When the history no longer reaches back to `since + 1`, a
    /// [`Config::gap`] notice names what is gone first. A `since` ahead of
    /// the room's last `seq` is refused, and nothing changes. A `since`
    /// from another `epoch`, another life of the room, counts as 0.
    pub(crate) fn join(
        &self,
        id: ClientId,
        room: &str,
        username: &str,
        since: Option<u64>,
        epoch: Option<&str>,
    ) -> Result<(), RoomError> {
        let mut guard = self.lock();
        let state = &mut *guard;
        state.may_join(id, room)?;
        // Names are unique within a room, so that "bob said" means one bob,
        // and a client can recognise its own Joined and Left events by name.
        let members = state.rooms.get(room).map(|r| &r.members);
        if members.is_some_and(|m| m.values().any(|name| name == username)) {
            return Err(RoomError::NameTaken);
        }
        let (last, life) = state.rooms.get(room).map_or((0, None), |r| (r.seq, Some(&r.epoch)));
        // Counted in another life of the room (or in one that has ended):
        // everything this life holds is new to the joiner.
        let started_over = since.is_some() && epoch.is_some_and(|e| life.is_none_or(|l| l != e));
        let since = if started_over { Some(0) } else { since };
        if let Some(since) = since.filter(|&since| since > last) {
            return Err(RoomError::SinceAhead { since, last });
        }
        if let Some(client) = state.clients.get_mut(&id) {
            client.rooms.push((room.to_string(), username.to_string()));
        }
        let room_state = state
            .rooms
            .entry(room.to_string())
            .or_insert_with(|| Room { epoch: new_epoch(), ..Room::default() });
        room_state.members.insert(id, username.to_string());
        let everyone = room_state.members.len() <= state.config.presence_limit;
        let joined = (state.config.joined)(room, username, last, &room_state.epoch);
        if everyone {
            state.deliver(room, &joined);
        } else {
            state.send_to(id, joined);
        }
        if started_over {
            state.send_to(id, (state.config.started_over)(room));
        }
        if let Some(since) = since {
            state.replay_to(room, id, since);
        }
        Ok(())
    }
    // ANCHOR_END: join

    /// Leaves `room`, deleting it if it is now empty, and announces it (to
    /// the leaver too). Returns the name client `id` had there.
    pub(crate) fn leave(&self, id: ClientId, room: &str) -> Result<String, RoomError> {
        let mut state = self.lock();
        let client = state.clients.get_mut(&id).ok_or(RoomError::Gone)?;
        let index = client.room_names().position(|r| r == room).ok_or(RoomError::NotJoined)?;
        let (_, username) = client.rooms.swap_remove(index);
        let left = (state.config.left)(room, &username);
        state.remove_member(room, id, &left);
        state.send_to(id, left);
        Ok(username)
    }

    // ANCHOR: say
    /// Sends a numbered message from client `id` to `room`.
    ///
    /// `make` receives the sender's name in that room and the room's next
    /// `seq`, and builds the message once. Numbering and delivery happen
    /// under the same lock, so every member sees the messages in `seq` order
    /// with no gaps (unless it is evicted).
    pub(crate) fn say(
        &self,
        id: ClientId,
        room: &str,
        make: impl FnOnce(&str, u64) -> Message,
    ) -> Result<u64, RoomError> {
        let mut guard = self.lock();
        let state = &mut *guard;
        let room_state = state.rooms.get_mut(room).ok_or(RoomError::NotJoined)?;
        let username = room_state.members.get(&id).ok_or(RoomError::NotJoined)?;
        room_state.seq += 1;
        let seq = room_state.seq;
        let msg = make(username, seq);
        // History shares the delivered message: one serialisation, and one
        // more reference count, per message.
        if state.config.history > 0 {
            let history = &mut room_state.history;
            if history.len() == state.config.history {
                history.pop_front();
            }
            history.push_back(msg.clone());
        }
        state.deliver(room, &msg);
        Ok(seq)
    }
    // ANCHOR_END: say

    /// The names of the members of `room`, sorted; only a member may ask.
    pub(crate) fn names(&self, id: ClientId, room: &str) -> Result<Vec<String>, RoomError> {
        let state = self.lock();
        let room_state = state.rooms.get(room).ok_or(RoomError::NotJoined)?;
        if !room_state.members.contains_key(&id) {
            return Err(RoomError::NotJoined);
        }
        let mut names: Vec<String> = room_state.members.values().cloned().collect();
        names.sort();
        Ok(names)
    }

    /// Queues `msg` for client `id` alone. Returns false when it could not
    /// be queued (the client is over its budget, and now evicted, or gone).
    pub(crate) fn send(&self, id: ClientId, msg: Message) -> bool {
        self.lock().send_to(id, msg)
    }

    // The steps of a cluster's join and leave (chapter 9,
    // `crate::cluster::relay`), which decides them with the other nodes and
    // announces them itself.

    /// Holds `room` for client `id` under `username` while the cluster is
    /// asked: the room counts among the client's, and is not yet delivered
    /// to. Checks what the room manager alone can check.
    pub(crate) fn reserve(
        &self,
        id: ClientId,
        room: &str,
        username: &str,
    ) -> Result<(), RoomError> {
        let mut state = self.lock();
        state.may_join(id, room)?;
        let members = state.rooms.get(room).map(|r| &r.members);
        if members.is_some_and(|m| m.values().any(|name| name == username)) {
            return Err(RoomError::NameTaken);
        }
        if let Some(client) = state.clients.get_mut(&id) {
            client.rooms.push((room.to_string(), username.to_string()));
        }
        Ok(())
    }

    /// Makes client `id`, which holds `room` ([`Self::reserve`]), a member
    /// that the room's messages are delivered to, announcing nothing.
    /// Returns false when it no longer holds it (it was evicted, or left).
    pub(crate) fn admit(&self, id: ClientId, room: &str) -> bool {
        let mut state = self.lock();
        let held = state.clients.get(&id).and_then(|c| c.rooms.iter().find(|(r, _)| r == room));
        let Some((_, username)) = held.cloned() else { return false };
        state.rooms.entry(room.to_string()).or_default().members.insert(id, username);
        true
    }

    /// Takes client `id` out of `room`, announcing nothing: the cluster
    /// refused the join, or is told of the leave by the caller. Returns the
    /// name it had there.
    pub(crate) fn withdraw(&self, id: ClientId, room: &str) -> Result<String, RoomError> {
        let mut state = self.lock();
        let client = state.clients.get_mut(&id).ok_or(RoomError::Gone)?;
        let index = client.room_names().position(|r| r == room).ok_or(RoomError::NotJoined)?;
        let (_, username) = client.rooms.swap_remove(index);
        state.forget_member(room, id);
        Ok(username)
    }

    /// Whether client `id` is still served: registered, and not evicted.
    pub(crate) fn is_active(&self, id: ClientId) -> bool {
        let state = self.lock();
        state.clients.get(&id).is_some_and(|c| !c.evicted.is_cancelled())
    }
}

impl Client {
    fn room_names(&self) -> impl Iterator<Item = &str> {
        self.rooms.iter().map(|(room, _)| room.as_str())
    }
}

/// The epoch of a room made now: 64 random bits, so that no other life of
/// the room, in this process or in a restarted one, has the same.
pub(crate) fn new_epoch() -> String {
    format!("{:016x}", rand::random::<u64>())
}

impl State {
    /// Whether client `id` may join `room`: it is still here, and not in it.
    fn may_join(&self, id: ClientId, room: &str) -> Result<(), RoomError> {
        let client = self.clients.get(&id).ok_or(RoomError::Gone)?;
        if client.evicted.is_cancelled() {
            return Err(RoomError::Gone);
        }
        if client.room_names().any(|r| r == room) {
            return Err(RoomError::AlreadyJoined);
        }
        Ok(())
    }

    // ANCHOR: deliver
    /// Queues `msg` for every member of `room`; returns how many got it.
    fn deliver(&mut self, room: &str, msg: &Message) -> usize {
        let Some(room_state) = self.rooms.get(room) else { return 0 };
        let mut delivered = 0;
        let mut gone = Vec::new();
        for id in room_state.members.keys() {
            let Some(client) = self.clients.get(id) else { continue };
            // A clone of a Message is a reference-count increment.
            match client.outbox.push(msg.clone()) {
                Ok(()) => delivered += 1,
                Err(PushError::Full) => {
                    client.evicted.cancel();
                    gone.push(*id);
                }
                // Its connection has ended (its member is being dropped).
                Err(PushError::Closed) => gone.push(*id),
            }
        }
        for id in gone {
            self.depart(id);
        }
        delivered
    }

    /// [`State::deliver`] for one client.
    fn send_to(&mut self, id: ClientId, msg: Message) -> bool {
        let Some(client) = self.clients.get(&id) else { return false };
        if client.evicted.is_cancelled() {
            return false; // it is being closed; nothing more for it
        }
        match client.outbox.push(msg) {
            Ok(()) => return true,
            Err(PushError::Full) => client.evicted.cancel(),
            Err(PushError::Closed) => {}
        }
        self.depart(id);
        false
    }

    /// Takes a client out of every room it is in, announcing each departure.
    /// (An announcement may find another member over its budget, who departs
    /// the same way: `deliver` and `depart` call each other, and each call
    /// removes a membership, so it ends.)
    fn depart(&mut self, id: ClientId) {
        let Some(client) = self.clients.get_mut(&id) else { return };
        for (room, username) in std::mem::take(&mut client.rooms) {
            let left = (self.config.left)(&room, &username);
            self.remove_member(&room, id, &left);
        }
    }
    // ANCHOR_END: deliver

    // ANCHOR: remove_member
    /// Removes `id` from `room`, deleting the room if it is now empty, and
    /// tells the members who remain with `left` (unless the room is over the
    /// presence limit, or the server is shutting down).
    fn remove_member(&mut self, room: &str, id: ClientId, left: &Message) {
        let Some(room_state) = self.rooms.get(room) else { return };
        let announce = room_state.members.len() <= self.config.presence_limit && !self.quiet;
        if self.forget_member(room, id) && announce {
            self.deliver(room, left);
        }
    }

    /// Removes `id` from `room`, deleting the room if it is now empty.
    /// Returns whether the room remains.
    fn forget_member(&mut self, room: &str, id: ClientId) -> bool {
        let Some(room_state) = self.rooms.get_mut(room) else { return false };
        room_state.members.remove(&id);
        if room_state.members.is_empty() {
            self.rooms.remove(room);
            return false;
        }
        true
    }
    // ANCHOR_END: remove_member

    // ANCHOR: replay_to
    /// Sends `id` what it missed in `room` since `since` ([`replay`]). The
    /// caller holds the lock and has just made `id` a member, so the next
    /// message said in the room is delivered live.
    fn replay_to(&mut self, room: &str, id: ClientId, since: u64) {
        let Some(room_state) = self.rooms.get(room) else { return };
        let history = &room_state.history;
        // Numbered without gaps, the newest being `seq` (`since <= seq` was
        // checked by the caller).
        let oldest = room_state.seq + 1 - history.len() as u64;
        let held = history.iter().enumerate().map(|(i, msg)| (oldest + i as u64, msg));
        let budget = self.config.outbox_bytes / 2;
        for msg in replay(room, since, room_state.seq, held, budget, self.config.gap) {
            if !self.send_to(id, msg) {
                return; // evicted or gone after all: nothing more for it
            }
        }
    }
    // ANCHOR_END: replay_to
}

// ANCHOR: replay
/// What a member resuming after `since` is sent right after its join event,
/// when the room's last message is `last`: the messages after `since` that
/// `held` (`(seq, message)`, oldest first) still has, preceded by a `gap`
/// notice when they no longer reach back to `since + 1`.
///
/// A replay is bounded by `budget` bytes of frames, half the outbox budget,
/// newest messages kept: the joiner, whose outbox may already hold its join
/// event, is not evicted for what it asked (reconnecting, it would ask again
/// and again); older messages that would not fit are reported in the gap
/// too. (The cluster of chapter 9 replays its Redis history with it too.)
pub(crate) fn replay<'a>(
    room: &str,
    since: u64,
    last: u64,
    held: impl DoubleEndedIterator<Item = (u64, &'a Message)>,
    budget: usize,
    gap: fn(room: &str, first: u64, last: u64) -> Message,
) -> Vec<Message> {
    let mut bytes = 0;
    let mut first_sent = last + 1;
    let mut newest_first = Vec::new();
    for (seq, msg) in held.rev().take_while(|(seq, _)| *seq > since) {
        bytes += outbox::frame_len(msg);
        if bytes > budget {
            break;
        }
        newest_first.push(msg);
        first_sent = seq;
    }
    let gap = (since + 1 < first_sent).then(|| gap(room, since + 1, first_sent - 1));
    gap.into_iter().chain(newest_first.into_iter().rev().cloned()).collect()
}
// ANCHOR_END: replay

#[cfg(test)]
mod tests {
    use super::*;

    fn manager(outbox_bytes: usize, presence_limit: usize) -> Arc<RoomManager> {
        let config = Config {
            outbox_bytes,
            presence_limit,
            history: 5,
            joined: |room, name, _, _| Message::text(format!("+{name}@{room}")),
            left: |room, name| Message::text(format!("-{name}@{room}")),
            gap: |room, first, last| Message::text(format!("gap {first}..{last}@{room}")),
            started_over: |room| Message::text(format!("over@{room}")),
        };
        Arc::new(RoomManager::new(config))
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

    #[test]
    fn ids_are_unique() {
        let rooms = manager(1024, 10);
        let (a, _ra) = rooms.register();
        let (b, _rb) = rooms.register();
        assert_ne!(a.id(), b.id());
    }

    #[test]
    fn rooms_are_created_on_first_join_and_removed_when_empty() {
        let rooms = manager(1024, 10);
        let (a, _ra) = rooms.register();
        let (b, _rb) = rooms.register();
        a.join("general", "alice").unwrap();
        b.join("general", "bob").unwrap();
        assert_eq!(rooms.room_names(), ["general"]);
        assert_eq!(a.join("general", "alice"), Err(RoomError::AlreadyJoined));

        assert_eq!(a.leave("general"), Ok("alice".to_string()));
        assert_eq!(a.leave("general"), Err(RoomError::NotJoined));
        assert_eq!(rooms.members("general"), [(b.id(), "bob".to_string())]);
        b.leave("general").unwrap();
        assert!(rooms.room_names().is_empty(), "an empty room is removed");
    }

    #[test]
    fn names_are_unique_within_a_room_only() {
        let rooms = manager(1024, 10);
        let (a, _ra) = rooms.register();
        let (b, _rb) = rooms.register();
        a.join("general", "sam").unwrap();
        assert_eq!(b.join("general", "sam"), Err(RoomError::NameTaken));
        assert_eq!(b.join("other", "sam"), Ok(()), "another room is another namespace");
        a.leave("general").unwrap();
        assert_eq!(b.join("general", "sam"), Ok(()), "free again once its owner left");
    }

    #[test]
    fn joins_and_leaves_are_announced_in_one_order_to_every_member() {
        let rooms = manager(1024, 10);
        let (a, mut ra) = rooms.register();
        let (b, mut rb) = rooms.register();
        a.join("r", "alice").unwrap();
        b.join("r", "bob").unwrap();
        b.leave("r").unwrap();
        assert_eq!(drain(&mut ra), ["+alice@r", "+bob@r", "-bob@r"]);
        assert_eq!(drain(&mut rb), ["+bob@r", "-bob@r"], "the joiner and leaver hear it too");
    }

    #[test]
    fn past_the_presence_limit_only_the_member_concerned_hears() {
        let rooms = manager(1024, 2);
        let (a, mut ra) = rooms.register();
        let (b, mut rb) = rooms.register();
        let (c, mut rc) = rooms.register();
        a.join("r", "a").unwrap();
        b.join("r", "b").unwrap(); // 2 members: everyone hears
        c.join("r", "c").unwrap(); // 3 members: only c
        assert_eq!(drain(&mut ra), ["+a@r", "+b@r"]);
        assert_eq!(drain(&mut rb), ["+b@r"]);
        assert_eq!(drain(&mut rc), ["+c@r"]);
        c.leave("r").unwrap(); // 3 members before: only c
        assert_eq!((drain(&mut ra), drain(&mut rc)), (vec![], vec!["-c@r".to_string()]));
        drop(b); // 2 members before: a hears
        assert_eq!(drain(&mut ra), ["-b@r"]);
    }

    #[test]
    fn a_dropped_member_leaves_every_room_and_is_announced() {
        let rooms = manager(1024, 10);
        let (a, _ra) = rooms.register();
        let (b, mut rb) = rooms.register();
        a.join("one", "alice").unwrap();
        a.join("two", "al").unwrap();
        b.join("two", "bob").unwrap();
        assert_eq!(a.rooms(), ["one", "two"]);
        drain(&mut rb);

        drop(a);
        assert_eq!(rooms.room_names(), ["two"]);
        assert_eq!(rooms.members("two"), [(b.id(), "bob".to_string())]);
        assert_eq!(drain(&mut rb), ["-al@two"]);
    }

    #[tokio::test]
    async fn a_member_whose_task_panics_is_gone_from_its_rooms() {
        let rooms = manager(1024, 10);
        let (watcher, mut watching) = rooms.register();
        watcher.join("general", "watcher").unwrap();
        let (doomed, outgoing) = rooms.register();
        doomed.join("general", "doomed").unwrap();
        let task = tokio::spawn(async move {
            let _keep = (doomed, outgoing);
            panic!("a bug in a connection task");
        });
        assert!(task.await.unwrap_err().is_panic());
        assert_eq!(rooms.members("general"), [(watcher.id(), "watcher".to_string())]);
        assert_eq!(
            drain(&mut watching),
            ["+watcher@general", "+doomed@general", "-doomed@general"]
        );
        let (again, _) = rooms.register();
        assert_eq!(again.join("general", "doomed"), Ok(()), "its name is free again");
    }

    #[test]
    fn broadcast_reaches_members_only_and_shares_one_payload() {
        let rooms = manager(1024, 10);
        let (a, mut ra) = rooms.register();
        let (b, mut rb) = rooms.register();
        let (c, mut rc) = rooms.register();
        a.join("general", "alice").unwrap();
        b.join("general", "bob").unwrap();
        c.join("other", "carol").unwrap();
        drain(&mut ra);
        drain(&mut rb);
        drain(&mut rc);

        let msg = Message::text("hello");
        assert_eq!(rooms.broadcast("general", &msg), 2);
        let (Some(Message::Text(got_a)), Some(Message::Text(got_b))) =
            (ra.try_recv(), rb.try_recv())
        else {
            panic!("expected text")
        };
        assert_eq!(got_a.as_str(), "hello");
        // Both members hold the very same bytes: serialised once, not copied.
        assert_eq!(got_a.as_str().as_ptr(), got_b.as_str().as_ptr());
        assert!(drain(&mut rc).is_empty(), "another room hears nothing");
        assert_eq!(rooms.broadcast("nowhere", &msg), 0);
    }

    #[test]
    fn say_numbers_messages_per_room_and_requires_membership() {
        let rooms = manager(1024, 10);
        let (a, mut ra) = rooms.register();
        let (b, _rb) = rooms.register();
        a.join("one", "alice").unwrap();
        a.join("two", "alice").unwrap();
        drain(&mut ra);
        let make = |name: &str, seq: u64| Message::text(format!("{name}:{seq}"));
        assert_eq!(a.say("one", make), Ok(1));
        assert_eq!(a.say("one", make), Ok(2));
        assert_eq!(a.say("two", make), Ok(1), "each room counts on its own");
        assert_eq!(b.say("one", make), Err(RoomError::NotJoined));
        assert_eq!(a.say("nowhere", make), Err(RoomError::NotJoined));
        assert_eq!(drain(&mut ra), ["alice:1", "alice:2", "alice:1"]);
    }

    /// Says `n` messages in `room`, each its own `seq` as text.
    fn say_numbers(member: &Member, room: &str, n: u64) {
        for _ in 0..n {
            member.say(room, |_, seq| Message::text(seq.to_string())).unwrap();
        }
    }

    #[test]
    fn a_join_since_replays_what_was_missed_then_goes_live() {
        let rooms = manager(1024, 10);
        let (a, _ra) = rooms.register();
        let (b, mut rb) = rooms.register();
        a.join("r", "alice").unwrap();
        say_numbers(&a, "r", 3);
        b.join_since("r", "bob", Some(1)).unwrap();
        say_numbers(&a, "r", 1);
        assert_eq!(drain(&mut rb), ["+bob@r", "2", "3", "4"]);

        // Resuming at the last seq replays nothing; no since, nothing either.
        let (c, mut rc) = rooms.register();
        let (d, mut rd) = rooms.register();
        c.join_since("r", "carol", Some(4)).unwrap();
        d.join("r", "dave").unwrap();
        assert_eq!(drain(&mut rc), ["+carol@r", "+dave@r"]);
        assert_eq!(drain(&mut rd), ["+dave@r"]);
    }

    #[test]
    fn a_since_from_another_life_of_the_room_gets_all_this_one_holds() {
        let rooms = manager(1024, 10); // 5 messages of history
        let epoch_of = |room: &str| rooms.lock().rooms.get(room).map(|r| r.epoch.clone());
        let (a, _ra) = rooms.register();
        a.join("r", "alice").unwrap();
        let first = epoch_of("r").expect("a room");
        say_numbers(&a, "r", 3);
        drop(a); // the room empties, and goes
        let (a, _ra) = rooms.register();
        a.join("r", "alice").unwrap();
        let second = epoch_of("r").expect("a room");
        assert_ne!(first, second, "a new life, a new epoch");
        say_numbers(&a, "r", 7);

        // With the old epoch, since 3 counts in the old life: all the new
        // one holds follows (its first two are gone), under the notice.
        let (b, mut rb) = rooms.register();
        rooms.join(b.id(), "r", "bob", Some(3), Some(&first)).unwrap();
        assert_eq!(drain(&mut rb), ["+bob@r", "over@r", "gap 1..2@r", "3", "4", "5", "6", "7"]);
        // With this epoch, since means what it says.
        let (c, mut rc) = rooms.register();
        rooms.join(c.id(), "r", "carol", Some(5), Some(&second)).unwrap();
        assert_eq!(drain(&mut rc), ["+carol@r", "6", "7"]);
        // A room made by this very join is a new life too.
        let (d, mut rd) = rooms.register();
        rooms.join(d.id(), "new", "dave", Some(9), Some(&first)).unwrap();
        assert_eq!(drain(&mut rd), ["+dave@new", "over@new"]);
        // Without an epoch, as before: a since ahead is refused.
        let ahead = rooms.join(d.id(), "r", "dave", Some(9), None);
        assert_eq!(ahead, Err(RoomError::SinceAhead { since: 9, last: 7 }));
    }

    #[test]
    fn a_join_since_older_than_the_history_hears_of_the_gap_first() {
        let rooms = manager(1024, 10); // 5 messages of history
        let (a, _ra) = rooms.register();
        let (b, mut rb) = rooms.register();
        a.join("r", "alice").unwrap();
        say_numbers(&a, "r", 8);
        b.join_since("r", "bob", Some(1)).unwrap();
        assert_eq!(drain(&mut rb), ["+bob@r", "gap 2..3@r", "4", "5", "6", "7", "8"]);
    }

    #[test]
    fn a_replay_is_bounded_by_half_the_outbox_budget_the_rest_is_a_gap() {
        // 40 bytes: half is 20, two 9-byte messages (frames of 11 bytes) do
        // not fit, one does.
        let rooms = manager(40, 10);
        let (a, mut ra) = rooms.register();
        let (b, mut rb) = rooms.register();
        a.join("r", "alice").unwrap();
        for _ in 0..3 {
            a.say("r", |_, seq| Message::text(format!("{seq:>9}"))).unwrap();
            drain(&mut ra); // a reader that keeps up
        }
        b.join_since("r", "bob", Some(0)).unwrap();
        assert_eq!(drain(&mut rb), ["+bob@r", "gap 1..2@r", "        3"]);
        assert!(!b.is_evicted());
    }

    /// The one replay, as a cluster's node uses it too: its history comes
    /// from Redis and may hold less than the room's `seq` says.
    #[test]
    fn replay_sends_what_fits_after_since_and_names_the_rest_in_a_gap() {
        let gap = |room: &str, first, last| Message::text(format!("gap {first}..{last}@{room}"));
        let history: Vec<(u64, Message)> =
            (4..=6).map(|seq| (seq, Message::text(format!("{seq:>9}")))).collect();
        let held = || history.iter().map(|(seq, msg)| (*seq, msg));
        let texts = |msgs: Vec<Message>| -> Vec<String> {
            msgs.into_iter().map(|m| m.into_text().unwrap().to_string()).collect()
        };
        // All of it fits; nothing before 4 is held: 2 and 3 are a gap.
        let all = replay("r", 1, 6, held(), 1024, gap);
        assert_eq!(texts(all), ["gap 2..3@r", "        4", "        5", "        6"]);
        // 11-byte frames, 25 bytes: the newest two; 4 joins the gap.
        let some = replay("r", 1, 6, held(), 25, gap);
        assert_eq!(texts(some), ["gap 2..4@r", "        5", "        6"]);
        // Resuming at 5 replays 6 only, with no gap.
        assert_eq!(texts(replay("r", 5, 6, held(), 1024, gap)), ["        6"]);
        // A history that lost everything (a Redis restarted empty).
        assert_eq!(texts(replay("r", 2, 6, std::iter::empty(), 1024, gap)), ["gap 3..6@r"]);
        assert!(replay("r", 6, 6, std::iter::empty(), 1024, gap).is_empty());
    }

    #[test]
    fn a_since_ahead_of_the_room_is_refused_and_changes_nothing() {
        let rooms = manager(1024, 10);
        let (a, mut ra) = rooms.register();
        let (b, mut rb) = rooms.register();
        a.join("r", "alice").unwrap();
        say_numbers(&a, "r", 2);
        drain(&mut ra);
        assert_eq!(
            b.join_since("r", "bob", Some(3)),
            Err(RoomError::SinceAhead { since: 3, last: 2 })
        );
        assert_eq!(
            b.join_since("new", "bob", Some(1)),
            Err(RoomError::SinceAhead { since: 1, last: 0 }),
            "a room that does not exist has no messages"
        );
        assert!(b.rooms().is_empty());
        assert_eq!(rooms.room_names(), ["r"]);
        assert!(drain(&mut ra).is_empty() && drain(&mut rb).is_empty());
    }

    #[test]
    fn members_are_listed_sorted_to_members_only() {
        let rooms = manager(1024, 10);
        let (a, _ra) = rooms.register();
        let (b, _rb) = rooms.register();
        let (c, _rc) = rooms.register();
        b.join("r", "zoe").unwrap();
        a.join("r", "adam").unwrap();
        assert_eq!(a.members("r"), Ok(vec!["adam".to_string(), "zoe".to_string()]));
        assert_eq!(c.members("r"), Err(RoomError::NotJoined));
        assert_eq!(c.members("nowhere"), Err(RoomError::NotJoined));
    }

    #[test]
    fn a_quiet_manager_delivers_to_admitted_members_and_announces_nothing() {
        // A cluster's node (chapter 9): the cluster decides and announces.
        let rooms = Arc::new(RoomManager::quiet(manager(1024, 10).lock().config.clone()));
        let (a, mut ra) = rooms.register();
        let (b, _rb) = rooms.register();
        assert!(!rooms.admit(a.id(), "r"), "a room it does not hold");
        rooms.reserve(a.id(), "r", "alice").unwrap();
        rooms.reserve(b.id(), "r", "bob").unwrap();
        assert_eq!(rooms.reserve(b.id(), "r", "bob"), Err(RoomError::AlreadyJoined));
        assert_eq!(a.rooms(), ["r"], "held, so it counts among its rooms");
        assert!(rooms.room_names().is_empty(), "not delivered to before it is admitted");
        assert!(rooms.admit(a.id(), "r") && rooms.admit(b.id(), "r"));
        assert_eq!(rooms.broadcast("r", &Message::text("hi")), 2);
        drop(b);
        assert_eq!(drain(&mut ra), ["hi"], "no Left: the cluster announces it");
        assert_eq!(rooms.withdraw(a.id(), "r"), Ok("alice".to_string()));
        assert_eq!(drain(&mut ra), Vec::<String>::new());
        assert!(rooms.room_names().is_empty());
    }

    #[test]
    fn rejoining_with_since_while_others_speak_never_duplicates_or_skips() {
        let rooms = Arc::new(RoomManager::new(Config {
            outbox_bytes: 1 << 24,
            history: 100_000,
            ..manager(0, 10).lock().config.clone()
        }));
        const MESSAGES: u64 = 20_000;
        const BURSTS: u64 = 20;
        let (speaker, _rs) = rooms.register();
        speaker.join("r", "speaker").unwrap();
        // The rejoiner hands a token over after each of its rounds, and the
        // speaker takes one before each burst: however the two threads are
        // scheduled (a busy machine may run the speaker to its end in one
        // go), the rounds interleave with the bursts, and at least one
        // rejoin falls between any two of them.
        let (round_done, next_burst) = std::sync::mpsc::channel::<()>();
        let speaking = std::thread::spawn(move || {
            for _ in 0..BURSTS {
                next_burst.recv().unwrap();
                say_numbers(&speaker, "r", MESSAGES / BURSTS);
            }
            speaker // kept in the room until the end
        });

        // Join, read a little, leave, and come back with the last seq seen,
        // over and over while the speaker speaks, and once after.
        let (me, mut outgoing) = rooms.register();
        let mut seen: Vec<u64> = Vec::new();
        loop {
            let done = speaking.is_finished();
            me.join_since("r", "me", Some(seen.last().copied().unwrap_or(0))).unwrap();
            std::thread::yield_now();
            me.leave("r").unwrap();
            seen.extend(drain(&mut outgoing).iter().filter_map(|m| m.parse::<u64>().ok()));
            let _ = round_done.send(()); // no receiver once the speaker is done
            if done {
                break;
            }
        }
        speaking.join().unwrap();
        assert_eq!(seen, (1..=MESSAGES).collect::<Vec<_>>());
    }

    #[test]
    fn a_member_over_its_byte_budget_is_evicted_and_its_leaving_announced() {
        // 100 bytes: the announcements (6 to 8 bytes as frames) fit; ten
        // 20-byte messages do not.
        let rooms = manager(100, 10);
        let (slow, _never_read) = rooms.register();
        let (fast, mut fast_rx) = rooms.register();
        slow.join("general", "slow").unwrap();
        slow.join("other", "slow").unwrap();
        fast.join("general", "fast").unwrap();
        let mut got = drain(&mut fast_rx);

        for i in 0..10 {
            rooms.broadcast("general", &Message::text(format!("{i:>18}")));
            got.extend(drain(&mut fast_rx)); // a reader that keeps up
        }
        assert!(slow.is_evicted(), "the slow client is told to go");
        assert_eq!(rooms.members("general"), [(fast.id(), "fast".to_string())]);
        assert!(rooms.room_names().iter().all(|r| r != "other"), "evicted from every room");
        assert_eq!(got.iter().filter(|m| m.trim().parse::<u32>().is_ok()).count(), 10);
        assert!(got.contains(&"-slow@general".to_string()), "its Left reached the others");
        assert_eq!(slow.join("again", "slow"), Err(RoomError::Gone));
        assert!(!slow.send(Message::text("x")));
    }

    #[test]
    fn many_small_events_fit_a_budget_that_one_big_backlog_does_not() {
        let rooms = manager(32 * 1024, 10_000);
        let (first, mut first_rx) = rooms.register();
        first.join("crowd", "first").unwrap();
        // 1,000 joins announced to `first`, which has not read yet: about
        // 16 KB of events, well within 32 KiB.
        let others: Vec<_> = (0..1_000)
            .map(|i| {
                let (m, rx) = rooms.register();
                m.join("crowd", &format!("user{i}")).unwrap();
                (m, rx)
            })
            .collect();
        assert!(!first.is_evicted());
        assert_eq!(drain(&mut first_rx).len(), 1_001);
        drop(others);
    }

    #[test]
    fn a_member_whose_connection_ended_counts_as_gone() {
        let rooms = manager(1024, 10);
        let (a, mut ra) = rooms.register();
        let (b, rb) = rooms.register();
        a.join("r", "alice").unwrap();
        b.join("r", "bob").unwrap();
        drop(rb); // the connection ended; its Member is not dropped yet
        rooms.broadcast("r", &Message::text("hi"));
        assert_eq!(rooms.members("r"), [(a.id(), "alice".to_string())]);
        assert_eq!(drain(&mut ra), ["+alice@r", "+bob@r", "hi", "-bob@r"]);
        assert!(!b.is_evicted(), "gone, not evicted");
    }

    #[test]
    fn after_shutting_down_departures_are_not_announced() {
        let rooms = manager(1024, 10);
        let (a, mut ra) = rooms.register();
        let (b, _rb) = rooms.register();
        a.join("r", "alice").unwrap();
        b.join("r", "bob").unwrap();
        drain(&mut ra);
        rooms.shutting_down();
        drop(b);
        assert!(drain(&mut ra).is_empty());
    }

    /// A cluster's manager, with the receiving end of its departures.
    #[test]
    fn concurrent_joins_and_leaves_keep_the_rooms_consistent() {
        let rooms = manager(1 << 20, 1_000);
        let threads: Vec<_> = (0..8)
            .map(|t| {
                let rooms = rooms.clone();
                std::thread::spawn(move || {
                    let (me, mut outgoing) = rooms.register();
                    for i in 0..500 {
                        let room = format!("room{}", (i + t) % 5);
                        // Rooms kept from earlier rounds may come round again.
                        match me.join(&room, &format!("user{t}")) {
                            Ok(()) | Err(RoomError::AlreadyJoined) => {}
                            Err(e) => panic!("join failed: {e}"),
                        }
                        rooms.broadcast(&room, &Message::text("hi"));
                        drain(&mut outgoing); // a reader that keeps up
                        if i % 3 != 0 {
                            me.leave(&room).unwrap();
                        }
                    }
                    let mine = me.rooms();
                    (me, outgoing, mine)
                })
            })
            .collect();
        let results: Vec<_> = threads.into_iter().map(|t| t.join().unwrap()).collect();

        // Every client's view of its rooms matches the rooms' member lists,
        // and no empty room is left behind.
        let state = rooms.lock();
        for (me, _, my_rooms) in &results {
            assert!(!me.is_evicted());
            for room in my_rooms {
                assert!(state.rooms[room].members.contains_key(&me.id()), "missing from {room}");
            }
        }
        for (name, room) in &state.rooms {
            assert!(!room.members.is_empty(), "empty room {name} left behind");
            for id in room.members.keys() {
                let (_, _, mine) = results.iter().find(|(m, _, _)| m.id() == *id).unwrap();
                assert!(mine.contains(name));
            }
        }
        drop(state);
    }
}
