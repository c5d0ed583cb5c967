//! Chapter 4.2: the room manager.
//!
//! The original chapter's manager stored client ids in rooms and so could
//! deliver nothing. Here a room holds its members' *queues*:
//!
//! - every client has a bounded queue (an `mpsc::Sender<Message>`) that its
//!   connection's writer task drains into the socket;
//! - sending to a room serialises the message once; each member gets a clone
//!   of the same [`Message`], whose payload is reference counted, so a
//!   thousand members cost a thousand pointer copies, not a thousand strings;
//! - rooms are created on first join and removed when the last member leaves;
//! - ids come from an atomic counter (no lock for a counter).
//!
//! **Slow consumers.** Delivery never waits: it uses `try_send`. A member
//! whose queue is full is *evicted*: it is taken out of every room at once,
//! so nobody else ever waits for it, and its [`Registration::evicted`] token
//! is cancelled, which tells its connection to close with code 1008 (policy
//! violation) and the reason `too slow`. The memory a stalled client can hold
//! is therefore bounded by its queue's capacity.
//!
//! One `std::sync::Mutex` guards the state. It is never held across an
//! `.await`, and what runs under it is short: map operations, non-blocking
//! `try_send`s, and in [`RoomManager::say`] the caller's `make` closure
//! (one serialisation, so that numbering and delivery stay in order). So a
//! plain mutex beats an async `RwLock` here; a server with very busy rooms
//! would shard the state by room.

use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Mutex, MutexGuard};

use tokio::sync::mpsc::{self, error::TrySendError};
use tokio_tungstenite::tungstenite::Message;
use tokio_util::sync::CancellationToken;

/// Identifies one connected client.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ClientId(u64);

impl std::fmt::Display for ClientId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "client#{}", self.0)
    }
}

/// What [`RoomManager::register`] hands back to a connection.
#[derive(Debug)]
pub struct Registration {
    pub id: ClientId,
    /// Cancelled when this client is evicted for being too slow.
    pub evicted: CancellationToken,
}

/// Why a room operation was refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RoomError {
    /// The client is not registered (or was removed).
    UnknownClient,
    /// The client is already in that room.
    AlreadyJoined,
    /// The client is not in that room.
    NotJoined,
    /// Another member of that room already uses that name.
    NameTaken,
}

impl std::fmt::Display for RoomError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            RoomError::UnknownClient => "unknown client",
            RoomError::AlreadyJoined => "already in that room",
            RoomError::NotJoined => "not in that room",
            RoomError::NameTaken => "that name is taken in that room",
        })
    }
}

impl std::error::Error for RoomError {}

// ANCHOR: state
/// The rooms and their members. Share it with `Arc<RoomManager>`.
#[derive(Debug, Default)]
pub struct RoomManager {
    next_id: AtomicU64,
    state: Mutex<State>,
}

#[derive(Debug, Default)]
struct State {
    rooms: HashMap<String, Room>,
    clients: HashMap<ClientId, Client>,
}

#[derive(Debug, Default)]
struct Room {
    /// Member id -> the name it joined under. Ordered, so delivery order
    /// (and test output) is deterministic.
    members: BTreeMap<ClientId, String>,
    /// The `seq` of the last numbered message; the next one gets `seq + 1`.
    seq: u64,
}

#[derive(Debug)]
struct Client {
    queue: mpsc::Sender<Message>,
    evicted: CancellationToken,
    /// Room -> name, kept even after eviction so that [`RoomManager::remove`]
    /// can still say which rooms the client has left.
    rooms: BTreeMap<String, String>,
}
// ANCHOR_END: state

impl RoomManager {
    /// An empty manager.
    pub fn new() -> RoomManager {
        RoomManager::default()
    }

    // ANCHOR: register
    /// Registers a connected client whose messages go into `queue`.
    pub fn register(&self, queue: mpsc::Sender<Message>) -> Registration {
        // Relaxed is enough: we need unique numbers, not ordering with
        // other memory.
        let id = ClientId(self.next_id.fetch_add(1, Ordering::Relaxed) + 1);
        let evicted = CancellationToken::new();
        let client = Client { queue, evicted: evicted.clone(), rooms: BTreeMap::new() };
        self.lock().clients.insert(id, client);
        Registration { id, evicted }
    }
    // ANCHOR_END: register

    // ANCHOR: join
    /// Adds `id` to `room` under `username`, creating the room if needed.
    /// Names are unique within a room ([`RoomError::NameTaken`]).
    pub fn join(&self, id: ClientId, room: &str, username: &str) -> Result<(), RoomError> {
        let mut state = self.lock();
        let client = state.clients.get(&id).ok_or(RoomError::UnknownClient)?;
        if client.evicted.is_cancelled() {
            return Err(RoomError::UnknownClient);
        }
        if client.rooms.contains_key(room) {
            return Err(RoomError::AlreadyJoined);
        }
        // Names are unique within a room, so that "bob said" means one bob,
        // and a client can recognise its own Joined and Left events by name.
        let members = state.rooms.get(room).map(|r| &r.members);
        if members.is_some_and(|m| m.values().any(|name| name == username)) {
            return Err(RoomError::NameTaken);
        }
        // Record the membership on both sides.
        if let Some(client) = state.clients.get_mut(&id) {
            client.rooms.insert(room.to_string(), username.to_string());
        }
        let room = state.rooms.entry(room.to_string()).or_default();
        room.members.insert(id, username.to_string());
        Ok(())
    }
    // ANCHOR_END: join

    /// Removes `id` from `room`, deleting the room if it is now empty.
    /// Returns the name the client had there.
    pub fn leave(&self, id: ClientId, room: &str) -> Result<String, RoomError> {
        let mut state = self.lock();
        let client = state.clients.get_mut(&id).ok_or(RoomError::UnknownClient)?;
        let username = client.rooms.remove(room).ok_or(RoomError::NotJoined)?;
        state.remove_member(room, id);
        Ok(username)
    }

    /// Removes a client entirely (it disconnected). Returns the rooms it was
    /// in, with the name it had in each, so the caller can announce it.
    pub fn remove(&self, id: ClientId) -> Vec<(String, String)> {
        let mut state = self.lock();
        let Some(client) = state.clients.remove(&id) else { return Vec::new() };
        for room in client.rooms.keys() {
            state.remove_member(room, id);
        }
        client.rooms.into_iter().collect()
    }

    /// The rooms `id` is in.
    pub fn rooms_of(&self, id: ClientId) -> Vec<String> {
        let state = self.lock();
        state.clients.get(&id).map(|c| c.rooms.keys().cloned().collect()).unwrap_or_default()
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

    /// Queues `msg` for one client. Returns false when it could not be
    /// queued (the client is gone, or was too slow and is now evicted).
    pub fn send_to(&self, id: ClientId, msg: Message) -> bool {
        let mut state = self.lock();
        let Some(client) = state.clients.get(&id) else { return false };
        match client.queue.try_send(msg) {
            Ok(()) => true,
            Err(TrySendError::Full(_)) => {
                state.evict(id);
                false
            }
            Err(TrySendError::Closed(_)) => false,
        }
    }

    // ANCHOR: broadcast
    /// Queues `msg` for every member of `room`; returns how many got it.
    /// Members whose queue is full are evicted instead of waited for.
    pub fn broadcast(&self, room: &str, msg: &Message) -> usize {
        let mut state = self.lock();
        state.deliver(room, msg)
    }

    /// Sends a numbered message from member `from` to `room`.
    ///
    /// `make` receives the sender's name in that room and the room's next
    /// `seq`, and builds the message once. Numbering and delivery happen
    /// under the same lock, so every member sees the messages in `seq` order
    /// with no gaps (unless it is evicted).
    pub fn say(
        &self,
        from: ClientId,
        room: &str,
        make: impl FnOnce(&str, u64) -> Message,
    ) -> Result<u64, RoomError> {
        let mut state = self.lock();
        let room_state = state.rooms.get_mut(room).ok_or(RoomError::NotJoined)?;
        let username = room_state.members.get(&from).ok_or(RoomError::NotJoined)?;
        room_state.seq += 1;
        let seq = room_state.seq;
        let msg = make(username, seq);
        state.deliver(room, &msg);
        Ok(seq)
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

impl State {
    // ANCHOR: deliver
    fn deliver(&mut self, room: &str, msg: &Message) -> usize {
        let Some(room_state) = self.rooms.get(room) else { return 0 };
        let mut delivered = 0;
        let mut too_slow = Vec::new();
        for id in room_state.members.keys() {
            let Some(client) = self.clients.get(id) else { continue };
            // A clone of a Message is a reference-count increment.
            match client.queue.try_send(msg.clone()) {
                Ok(()) => delivered += 1,
                Err(TrySendError::Full(_)) => too_slow.push(*id),
                // Its connection is ending and will remove it.
                Err(TrySendError::Closed(_)) => {}
            }
        }
        for id in too_slow {
            self.evict(id);
        }
        delivered
    }

    /// Takes a too-slow client out of every room and tells its connection.
    fn evict(&mut self, id: ClientId) {
        let Some(client) = self.clients.get(&id) else { return };
        client.evicted.cancel();
        let rooms: Vec<String> = client.rooms.keys().cloned().collect();
        for room in rooms {
            self.remove_member(&room, id);
        }
    }
    // ANCHOR_END: deliver

    // ANCHOR: remove_member
    fn remove_member(&mut self, room: &str, id: ClientId) {
        if let Some(room_state) = self.rooms.get_mut(room) {
            room_state.members.remove(&id);
            if room_state.members.is_empty() {
                self.rooms.remove(room);
            }
        }
    }
    // ANCHOR_END: remove_member
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;

    fn client(rooms: &RoomManager, capacity: usize) -> (Registration, mpsc::Receiver<Message>) {
        let (tx, rx) = mpsc::channel(capacity);
        (rooms.register(tx), rx)
    }

    fn text(rx: &mut mpsc::Receiver<Message>) -> Option<String> {
        rx.try_recv().ok().map(|m| m.into_text().unwrap().to_string())
    }

    #[test]
    fn ids_are_unique() {
        let rooms = RoomManager::new();
        let (a, _ra) = client(&rooms, 1);
        let (b, _rb) = client(&rooms, 1);
        assert_ne!(a.id, b.id);
    }

    #[test]
    fn rooms_are_created_on_first_join_and_removed_when_empty() {
        let rooms = RoomManager::new();
        let (a, _ra) = client(&rooms, 4);
        let (b, _rb) = client(&rooms, 4);
        rooms.join(a.id, "general", "alice").unwrap();
        rooms.join(b.id, "general", "bob").unwrap();
        assert_eq!(rooms.room_names(), ["general"]);
        assert_eq!(rooms.join(a.id, "general", "alice"), Err(RoomError::AlreadyJoined));

        assert_eq!(rooms.leave(a.id, "general"), Ok("alice".to_string()));
        assert_eq!(rooms.leave(a.id, "general"), Err(RoomError::NotJoined));
        assert_eq!(rooms.members("general"), [(b.id, "bob".to_string())]);
        rooms.leave(b.id, "general").unwrap();
        assert!(rooms.room_names().is_empty(), "an empty room is removed");
    }

    #[test]
    fn names_are_unique_within_a_room_only() {
        let rooms = RoomManager::new();
        let (a, _ra) = client(&rooms, 4);
        let (b, _rb) = client(&rooms, 4);
        rooms.join(a.id, "general", "sam").unwrap();
        assert_eq!(rooms.join(b.id, "general", "sam"), Err(RoomError::NameTaken));
        assert_eq!(rooms.join(b.id, "other", "sam"), Ok(()), "another room is another namespace");
        rooms.leave(a.id, "general").unwrap();
        assert_eq!(rooms.join(b.id, "general", "sam"), Ok(()), "free again once its owner left");
    }

    #[test]
    fn a_client_can_be_in_several_rooms_and_removal_leaves_them_all() {
        let rooms = RoomManager::new();
        let (a, _ra) = client(&rooms, 4);
        let (b, _rb) = client(&rooms, 4);
        rooms.join(a.id, "one", "alice").unwrap();
        rooms.join(a.id, "two", "al").unwrap();
        rooms.join(b.id, "two", "bob").unwrap();
        assert_eq!(rooms.rooms_of(a.id), ["one", "two"]);

        let left = rooms.remove(a.id);
        assert_eq!(left, [("one".into(), "alice".into()), ("two".into(), "al".into())]);
        assert_eq!(rooms.room_names(), ["two"]);
        assert_eq!(rooms.members("two"), [(b.id, "bob".to_string())]);
        assert_eq!(rooms.join(a.id, "one", "alice"), Err(RoomError::UnknownClient));
        assert!(rooms.remove(a.id).is_empty(), "removing twice is harmless");
    }

    #[test]
    fn broadcast_reaches_members_only_and_shares_one_payload() {
        let rooms = RoomManager::new();
        let (a, mut ra) = client(&rooms, 4);
        let (b, mut rb) = client(&rooms, 4);
        let (c, mut rc) = client(&rooms, 4);
        rooms.join(a.id, "general", "alice").unwrap();
        rooms.join(b.id, "general", "bob").unwrap();
        rooms.join(c.id, "other", "carol").unwrap();

        let msg = Message::text("hello");
        assert_eq!(rooms.broadcast("general", &msg), 2);
        let (Message::Text(got_a), Message::Text(got_b)) =
            (ra.try_recv().unwrap(), rb.try_recv().unwrap())
        else {
            panic!("expected text")
        };
        assert_eq!(got_a.as_str(), "hello");
        // Both members hold the very same bytes: serialised once, not copied.
        assert_eq!(got_a.as_str().as_ptr(), got_b.as_str().as_ptr());
        assert!(rc.try_recv().is_err(), "another room hears nothing");
        assert_eq!(rooms.broadcast("nowhere", &msg), 0);
    }

    #[test]
    fn say_numbers_messages_per_room_and_requires_membership() {
        let rooms = RoomManager::new();
        let (a, mut ra) = client(&rooms, 8);
        let (b, _rb) = client(&rooms, 8);
        rooms.join(a.id, "one", "alice").unwrap();
        rooms.join(a.id, "two", "alice").unwrap();
        let make = |name: &str, seq: u64| Message::text(format!("{name}:{seq}"));
        assert_eq!(rooms.say(a.id, "one", make), Ok(1));
        assert_eq!(rooms.say(a.id, "one", make), Ok(2));
        assert_eq!(rooms.say(a.id, "two", make), Ok(1), "each room counts on its own");
        assert_eq!(rooms.say(b.id, "one", make), Err(RoomError::NotJoined));
        assert_eq!(rooms.say(a.id, "nowhere", make), Err(RoomError::NotJoined));
        let got: Vec<_> = std::iter::from_fn(|| text(&mut ra)).collect();
        assert_eq!(got, ["alice:1", "alice:2", "alice:1"]);
    }

    #[test]
    fn a_full_queue_evicts_that_client_and_nobody_else() {
        let rooms = RoomManager::new();
        let (slow, _slow_rx) = client(&rooms, 2); // never drained
        let (fast, mut fast_rx) = client(&rooms, 100);
        rooms.join(slow.id, "general", "slow").unwrap();
        rooms.join(slow.id, "other", "slow").unwrap();
        rooms.join(fast.id, "general", "fast").unwrap();

        for i in 0..10 {
            rooms.broadcast("general", &Message::text(i.to_string()));
        }
        assert!(slow.evicted.is_cancelled(), "the slow client is told to go");
        assert_eq!(rooms.members("general"), [(fast.id, "fast".to_string())]);
        assert!(rooms.room_names().iter().all(|r| r != "other"), "evicted from every room");
        let got: Vec<_> = std::iter::from_fn(|| text(&mut fast_rx)).collect();
        assert_eq!(got.len(), 10, "the fast client missed nothing: {got:?}");
        assert!(!rooms.send_to(slow.id, Message::text("x")) || slow.evicted.is_cancelled());
        // Its connection still learns which rooms to announce it left.
        assert_eq!(rooms.remove(slow.id).len(), 2);
    }

    #[test]
    fn send_to_applies_the_same_policy() {
        let rooms = RoomManager::new();
        let (a, mut ra) = client(&rooms, 1);
        assert!(rooms.send_to(a.id, Message::text("one")));
        assert!(!rooms.send_to(a.id, Message::text("two")), "queue full");
        assert!(a.evicted.is_cancelled());
        assert_eq!(text(&mut ra).as_deref(), Some("one"));
    }

    #[test]
    fn concurrent_joins_and_leaves_keep_the_rooms_consistent() {
        let rooms = Arc::new(RoomManager::new());
        let threads: Vec<_> = (0..8)
            .map(|t| {
                let rooms = rooms.clone();
                std::thread::spawn(move || {
                    let (tx, mut rx) = mpsc::channel(1_000);
                    let me = rooms.register(tx);
                    for i in 0..500 {
                        let room = format!("room{}", (i + t) % 5);
                        // Rooms kept from earlier rounds may come round again.
                        match rooms.join(me.id, &room, &format!("user{t}")) {
                            Ok(()) | Err(RoomError::AlreadyJoined) => {}
                            Err(e) => panic!("join failed: {e}"),
                        }
                        rooms.broadcast(&room, &Message::text("hi"));
                        while rx.try_recv().is_ok() {} // a reader that keeps up
                        if i % 3 != 0 {
                            rooms.leave(me.id, &room).unwrap();
                        }
                    }
                    (me.id, rooms.rooms_of(me.id))
                })
            })
            .collect();
        let results: Vec<_> = threads.into_iter().map(|t| t.join().unwrap()).collect();

        // Every client's view of its rooms matches the rooms' member lists,
        // and no empty room is left behind.
        let state = rooms.lock();
        for (id, my_rooms) in &results {
            for room in my_rooms {
                assert!(state.rooms[room].members.contains_key(id), "{id} missing from {room}");
            }
        }
        for (name, room) in &state.rooms {
            assert!(!room.members.is_empty(), "empty room {name} left behind");
            for id in room.members.keys() {
                let (_, mine) = results.iter().find(|(c, _)| c == id).unwrap();
                assert!(mine.contains(name));
            }
        }
    }
}
