//! Chapters 6.1 and 9: the chat engine, which the chat server's connections
//! ask to join, leave, speak and list a room's members.
//!
//! It hides where the rooms live. On its own, a server keeps them in the
//! room manager of chapter 4.2, which decides every join, numbers every
//! message and announces presence, each in one locked step. With `--redis`
//! the server is one node of a cluster (chapter 9): Redis decides and
//! numbers for every node, and this node delivers what the cluster says to
//! the members connected to it. Either way a connection holds one
//! [`Member`], gets the same answers (and the same `Error` codes) to the
//! same commands, and its client receives the same events.
//!
//! ```text
//! let engine = Engine::start(args).await?;      // the chat server's flags
//! let (me, outgoing) = engine.register();       // one per connection
//! me.receive(frame, None, &mut rate).await?;    // a frame from its client
//! me.join("general", "alice", None).await?;     // or each step: say, leave, members
//! ```
//!
//! [`Member::receive`] and [`Member::handle`] are the chat server's part of
//! chapter 6.1: a frame is taken under the connection's rate limit, its
//! command checked against the rules and carried out, and every refusal
//! answered with an `Error` event that names its room and carries the code
//! a program acts on (chapter 5.1).

use std::sync::Arc;

use tokio::time::Instant;
use tokio_tungstenite::tungstenite::Message;
use tokio_util::sync::{CancellationToken, WaitForCancellationFuture};

use crate::cluster::{self, Cluster};
use crate::outbox::Outgoing;
use crate::protocol::{
    ClientMessage, ErrorCode, MAX_ROOMS_PER_CLIENT, ServerEvent, check_content, check_name,
    timestamp_now,
};
use crate::rate::{RateLimit, Verdict};
use crate::rooms::{self, ClientId, RoomError, RoomManager};
use crate::{admin, args};

/// The chat server's settings for its rooms, as flags (chapters 4.2, 5.1
/// and 9).
#[derive(Debug, Clone, clap::Args)]
pub struct EngineArgs {
    /// Bytes queued for a client and not yet written before it counts as too
    /// slow and is closed with 1008.
    #[arg(long, value_name = "BYTES", default_value_t = 1 << 20)]
    #[arg(value_parser = args::positive::<usize>)]
    pub outbox_bytes: usize,
    /// Rooms with more members announce a Joined or Left only to the member
    /// concerned.
    #[arg(long, value_name = "N", default_value_t = 1000)]
    #[arg(value_parser = args::positive::<usize>)]
    pub presence_limit: usize,
    /// Messages kept per room, for clients that resume with `since`.
    #[arg(long, value_name = "N", default_value_t = 1000)]
    #[arg(value_parser = args::positive::<usize>)]
    pub history: usize,
    /// Be one node of a chat shared through this Redis (chapter 9), for
    /// example redis://127.0.0.1:6379. Without it, this server is the chat.
    #[arg(long, value_name = "URL", value_parser = cluster::parse_url)]
    pub redis: Option<redis::Client>,
}

/// The chat's rooms, on this server alone or shared by a cluster. Share it
/// with `Arc<Engine>`.
pub struct Engine {
    /// Every connection's outbox and eviction; on a single server, the
    /// rooms too.
    rooms: Arc<RoomManager>,
    /// With `--redis`: the cluster this server is a node of, which decides
    /// joins and numbers messages for every node.
    cluster: Option<Arc<Cluster>>,
}

/// A connection's handle on the chat, as [`rooms::Member`] is on the room
/// manager: dropping it (the connection ended, however it ended) takes the
/// client out of every room, and the other members hear it left.
pub struct Member {
    id: ClientId,
    evicted: CancellationToken,
    engine: Arc<Engine>,
}

impl Engine {
    /// The chat on this server alone, its rooms in a room manager.
    pub fn new(config: rooms::Config) -> Arc<Engine> {
        Arc::new(Engine { rooms: Arc::new(RoomManager::new(config)), cluster: None })
    }

    /// The chat with the chat server's settings: on this server alone, or
    /// with `--redis` as a node of the cluster that Redis holds. Fails, with
    /// a line that names Redis's address, if Redis cannot be reached now.
    pub async fn start(args: EngineArgs) -> Result<Arc<Engine>, String> {
        let config = rooms::Config {
            outbox_bytes: args.outbox_bytes,
            presence_limit: args.presence_limit,
            history: args.history,
            ..rooms::Config::default()
        };
        let Some(redis) = args.redis else { return Ok(Engine::new(config)) };
        let at = redis.get_connection_info().addr().to_string();
        match Cluster::start(redis, config).await {
            Ok(cluster) => {
                let rooms = cluster.rooms().clone();
                Ok(Arc::new(Engine { rooms, cluster: Some(cluster) }))
            }
            Err(e) => Err(format!("cannot reach Redis at {at}: {e}")),
        }
    }

    /// Registers a new connection. Returns its [`Member`] and the receiving
    /// end of its outbox, which the connection drains into its socket.
    pub fn register(self: &Arc<Self>) -> (Member, Outgoing) {
        let (id, evicted, outgoing) = self.rooms.connect();
        (Member { id, evicted, engine: self.clone() }, outgoing)
    }

    /// From now on, departures are not announced: the whole server is going
    /// away (see [`RoomManager::shutting_down`]).
    pub fn shutting_down(&self) {
        match &self.cluster {
            None => self.rooms.shutting_down(),
            Some(cluster) => cluster.shutting_down(),
        }
    }

    /// How many clients are connected, and the bytes queued for them and not
    /// yet written: the admin port's gauges (chapter 10.7).
    pub fn outboxes(&self) -> (usize, usize) {
        self.rooms.outboxes()
    }

    /// Whether the chat can serve: always on one server; in a cluster, when
    /// Redis answers a PING within `wait` (the admin port's `/readyz`).
    pub async fn redis_answers(&self, wait: std::time::Duration) -> bool {
        match &self.cluster {
            None => true,
            Some(cluster) => cluster.answers(wait).await,
        }
    }

    /// At the very end, once every connection has closed: in a cluster, this
    /// node's members leave it all at once, and the other nodes hear of it.
    pub async fn stop(&self) {
        if let Some(cluster) = &self.cluster {
            cluster.leave_cluster().await;
        }
    }
}

// ANCHOR: engine
// Each command is decided by this server alone, or with `--redis` by the
// cluster: the answers are the same.
impl Engine {
    /// Joins client `id` to `room` under `username`, resuming after `since`
    /// counted in the room's life `epoch`: the joiner's `Joined` goes to the
    /// room, then what it missed, to it alone (chapter 5.1).
    async fn join(
        &self,
        id: ClientId,
        room: &str,
        username: &str,
        since: Option<u64>,
        epoch: Option<&str>,
    ) -> Result<(), RoomError> {
        match &self.cluster {
            None => self.rooms.join(id, room, username, since, epoch),
            Some(cluster) => cluster.join(id, room, username, since, epoch).await,
        }
    }

    /// Takes client `id` out of `room`; the leaver hears its own `Left`.
    /// Returns the name it had there.
    async fn leave(&self, id: ClientId, room: &str) -> Result<String, RoomError> {
        match &self.cluster {
            None => self.rooms.leave(id, room),
            Some(cluster) => cluster.leave(id, room).await,
        }
    }

    /// Says `content` in `room` for client `id`; the server stamps the time
    /// and the room's next `seq`, and the sender receives its message like
    /// everyone else.
    async fn say(&self, id: ClientId, room: &str, content: String) -> Result<u64, RoomError> {
        let timestamp = timestamp_now();
        match &self.cluster {
            // Serialised once, inside `make`, for every member.
            None => self.rooms.say(id, room, |username, seq| {
                let (room, username) = (room.to_string(), username.to_string());
                ServerEvent::Message { room, username, content, timestamp, seq }.to_message()
            }),
            // Numbered and published by Redis; every node serialises it once.
            Some(cluster) => cluster.say(id, room, &content, &timestamp).await,
        }
    }

    /// The names of `room`'s members, sorted; only a member may ask.
    async fn members(&self, id: ClientId, room: &str) -> Result<Vec<String>, RoomError> {
        match &self.cluster {
            None => self.rooms.names(id, room),
            Some(cluster) => cluster.members(id, room).await,
        }
    }
}
// ANCHOR_END: engine

// A connection's commands, through the engine above; what succeeds is
// counted for the admin port's /metrics (chapter 10.7).
impl Member {
    /// Joins `room` under `username`, resuming after `since` ([`Engine`]).
    pub async fn join(
        &self,
        room: &str,
        username: &str,
        since: Option<u64>,
    ) -> Result<(), RoomError> {
        self.join_in(room, username, since, None).await
    }

    /// [`Member::join`], with `since` counted in the room's life `epoch`:
    /// from another life, the joiner gets all this one holds.
    pub async fn join_in(
        &self,
        room: &str,
        username: &str,
        since: Option<u64>,
        epoch: Option<&str>,
    ) -> Result<(), RoomError> {
        let joined = self.engine.join(self.id, room, username, since, epoch).await;
        joined.inspect(|()| admin::metrics().joins.increment(1))
    }

    /// Leaves `room`; the leaver hears its own `Left`. Returns the name it
    /// had there.
    pub async fn leave(&self, room: &str) -> Result<String, RoomError> {
        self.engine.leave(self.id, room).await
    }

    /// Says `content` in `room`; returns its `seq`.
    pub async fn say(&self, room: &str, content: String) -> Result<u64, RoomError> {
        let said = self.engine.say(self.id, room, content).await;
        said.inspect(|_| admin::metrics().messages.increment(1))
    }

    /// The names of `room`'s members, sorted; only a member may ask.
    pub async fn members(&self, room: &str) -> Result<Vec<String>, RoomError> {
        self.engine.members(self.id, room).await
    }
}

// ANCHOR: handle
impl Member {
    /// Carries out one command, a frame from this member's client. Every
    /// refusal is an `Error` event to the sender, naming the room the
    /// command was about. `user`, when the handshake proved who the client
    /// is (chapter 10.5), is the only name it may join under.
    pub async fn handle(&self, frame: &Message, user: Option<&str>) {
        let command = match ClientMessage::try_from(frame) {
            Ok(command) => command,
            Err(e) => return self.refuse(room_in(frame).as_deref(), ErrorCode::Invalid, e),
        };
        match command {
            ClientMessage::Join { room, username, since, epoch } => {
                if let Err(e) = check_name("username", &username).and(check_name("room", &room)) {
                    return self.refuse(Some(&room), ErrorCode::BadName, e);
                }
                if let Some(user) = user.filter(|user| *user != username) {
                    return self.refuse(Some(&room), ErrorCode::NotYourName, not_yours(user));
                }
                if self.rooms().len() >= MAX_ROOMS_PER_CLIENT {
                    let refusal = format!("at most {MAX_ROOMS_PER_CLIENT} rooms");
                    return self.refuse(Some(&room), ErrorCode::TooManyRooms, refusal);
                }
                // Joining announces it to the room, and replays what a
                // resuming client missed, in the same step.
                if let Err(e) = self.join_in(&room, &username, since, epoch.as_deref()).await {
                    self.refuse(Some(&room), e.code(), format!("cannot join {room:?}: {e}"));
                }
            }
            ClientMessage::Leave { room } => {
                // The remaining members and the leaver itself hear of it.
                if let Err(e) = self.leave(&room).await {
                    self.refuse(Some(&room), e.code(), format!("cannot leave {room:?}: {e}"));
                }
            }
            ClientMessage::Message { room, content } => {
                if let Err(e) = check_content(&content) {
                    return self.refuse(Some(&room), ErrorCode::BadContent, e);
                }
                if let Err(e) = self.say(&room, content).await {
                    self.refuse(Some(&room), e.code(), format!("cannot send to {room:?}: {e}"));
                }
            }
            ClientMessage::Members { room } => match self.members(&room).await {
                Ok(usernames) => {
                    self.send(ServerEvent::Members { room, usernames }.to_message());
                }
                Err(e) => {
                    self.refuse(Some(&room), e.code(), format!("cannot list {room:?}: {e}"));
                }
            },
            ClientMessage::Ping => {
                self.send(ServerEvent::Pong.to_message());
            }
            ClientMessage::Pong => {}
        }
    }

    /// Refuses a command: an `Error` event with the code a program acts on
    /// and the message a person reads.
    pub fn refuse(&self, room: Option<&str>, code: ErrorCode, message: impl ToString) {
        let room = room.map(str::to_string);
        self.send(ServerEvent::Error { room, code, message: message.to_string() }.to_message());
    }
}
// ANCHOR_END: handle

// ANCHOR: receive
/// A client a whole burst over its rate limit: its connection is closed
/// with 1008.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Flooding;

impl Member {
    /// Takes one frame from this member's client, under its rate limit
    /// (chapter 6.1): a command within the limit is carried out
    /// ([`Member::handle`]), one over it refused with an `Error`.
    ///
    /// `frame` is taken, not borrowed, so that a caller that boxes this
    /// future does not keep the frame in its own across the wait.
    pub async fn receive(
        &self,
        frame: Message,
        user: Option<&str>,
        rate: &mut RateLimit,
    ) -> Result<(), Flooding> {
        // Pings are answered by tungstenite; pongs only prove life. After
        // the client's close frame the stream ends on the next read.
        if !(frame.is_text() || frame.is_binary()) {
            return Ok(());
        }
        match rate.check(Instant::now()) {
            Verdict::Allowed => self.handle(&frame, user).await,
            Verdict::Refused => self.refuse_rate(&frame, rate),
            Verdict::Exceeded => return Err(Flooding),
        }
        Ok(())
    }
}
// ANCHOR_END: receive

impl Member {
    /// Refuses `frame`, a command over the rate limit: it may come again
    /// once `rate` has a token.
    fn refuse_rate(&self, frame: &Message, rate: &RateLimit) {
        let command = ClientMessage::try_from(frame).ok();
        let room = command.as_ref().and_then(room_of);
        let (per_second, wait) = (rate.per_second(), rate.retry_after().as_millis());
        crate::admin::metrics().rate_limited.increment(1);
        self.refuse(
            room,
            ErrorCode::RateLimited,
            format!(
                "rate limit: at most {per_second} commands per second; refused, try again in {wait} ms"
            ),
        );
    }

    /// This client's id, which its log lines carry.
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

    /// The rooms this client is in (or, in a cluster, joining), sorted.
    pub fn rooms(&self) -> Vec<String> {
        self.engine.rooms.rooms_of(self.id)
    }

    /// Queues `msg` for this client alone: an answer, or an `Error`.
    /// Returns false when it could not be queued (the client is over its
    /// budget, and now evicted, or gone).
    pub fn send(&self, msg: Message) -> bool {
        self.engine.rooms.send(self.id, msg)
    }
}

impl Drop for Member {
    fn drop(&mut self) {
        match &self.engine.cluster {
            None => self.engine.rooms.disconnect(self.id),
            // The cluster announces the departures, to every node.
            Some(cluster) => cluster.disconnect(self.id),
        }
    }
}

/// The refusal of a join under another name than the one the client's
/// token proved (chapter 10.5).
fn not_yours(user: &str) -> String {
    format!("your token is for {user:?}: join as {user:?}")
}

/// The room a command is about, if any.
fn room_of(command: &ClientMessage) -> Option<&str> {
    match command {
        ClientMessage::Join { room, .. }
        | ClientMessage::Leave { room }
        | ClientMessage::Message { room, .. }
        | ClientMessage::Members { room } => Some(room),
        ClientMessage::Ping | ClientMessage::Pong => None,
    }
}

/// The `"room"` of a command that did not parse (a `since` of -1, say),
/// when it has one: its `Error` can still name the room it was about.
fn room_in(frame: &Message) -> Option<String> {
    let value: serde_json::Value = serde_json::from_str(frame.to_text().ok()?).ok()?;
    value.get("room")?.as_str().map(str::to_string)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::outbox::frame_len;
    use crate::protocol::{ErrorCode, unstamped};

    fn engine() -> Arc<Engine> {
        Engine::new(rooms::Config { history: 2, ..rooms::Config::default() })
    }

    /// Everything queued for a client, as the events its client reads.
    fn events(outgoing: &mut Outgoing) -> Vec<ServerEvent> {
        let mut events = Vec::new();
        while let Some(msg) = outgoing.try_recv() {
            outgoing.written(frame_len(&msg));
            events.push(unstamped(serde_json::from_str(msg.to_text().unwrap()).unwrap()));
        }
        events
    }

    /// `username` joined `room`, whose last message was `seq` (its time
    /// checked and blanked by [`unstamped`]).
    fn joined(room: &str, username: &str, seq: u64) -> ServerEvent {
        let (room, username, timestamp) = (room.into(), username.into(), String::new());
        ServerEvent::Joined { room, username, timestamp, seq, epoch: String::new() }
    }

    fn left(room: &str, username: &str) -> ServerEvent {
        let (room, username, timestamp) = (room.into(), username.into(), String::new());
        ServerEvent::Left { room, username, timestamp }
    }

    #[tokio::test]
    async fn on_one_server_the_engine_answers_with_the_chat_protocols_events() {
        let engine = engine();
        let (alice, mut to_alice) = engine.register();
        let (bob, mut to_bob) = engine.register();
        alice.join("general", "alice", None).await.unwrap();
        bob.join("general", "bob", None).await.unwrap();
        assert_eq!(alice.say("general", "hi".into()).await, Ok(1));
        assert_eq!(bob.members("general").await, Ok(vec!["alice".into(), "bob".into()]));
        assert_eq!(bob.leave("general").await, Ok("bob".into()));

        let seen = events(&mut to_alice);
        assert_eq!(seen[..2], [joined("general", "alice", 0), joined("general", "bob", 0)]);
        let ServerEvent::Message { room, username, content, timestamp, seq } = &seen[2] else {
            panic!("expected the message, got {:?}", seen[2]);
        };
        assert_eq!(
            (room.as_str(), username.as_str(), content.as_str(), *seq),
            ("general", "alice", "hi", 1)
        );
        // Stamped by the server: RFC 3339, UTC, milliseconds.
        assert!(chrono::DateTime::parse_from_rfc3339(timestamp).is_ok(), "{timestamp}");
        assert!(timestamp.ends_with('Z') && timestamp.len() == 24, "{timestamp}");
        let left = left("general", "bob");
        assert_eq!(&seen[3..], std::slice::from_ref(&left));
        assert_eq!(events(&mut to_bob).last(), Some(&left), "the leaver hears it too");
        assert_eq!(alice.rooms(), ["general"]);
        assert!(bob.rooms().is_empty());
    }

    #[tokio::test]
    async fn refusals_carry_the_codes_a_client_acts_on() {
        let engine = engine();
        let (alice, _to_alice) = engine.register();
        let (bob, _to_bob) = engine.register();
        alice.join("general", "alice", None).await.unwrap();
        let refused = [
            alice.join("general", "al", None).await.unwrap_err(),
            bob.join("general", "alice", None).await.unwrap_err(),
            bob.join("general", "bob", Some(1)).await.unwrap_err(),
            bob.say("general", "hi".into()).await.unwrap_err(),
            bob.leave("general").await.unwrap_err(),
            bob.members("general").await.unwrap_err(),
        ];
        let codes: Vec<ErrorCode> = refused.iter().map(RoomError::code).collect();
        use ErrorCode::*;
        assert_eq!(codes, [AlreadyJoined, NameTaken, SinceAhead, NotMember, NotMember, NotMember]);
    }

    #[tokio::test]
    async fn a_resuming_member_gets_the_gap_then_what_it_missed() {
        let engine = engine(); // 2 messages of history
        let (alice, _to_alice) = engine.register();
        alice.join("r", "alice", None).await.unwrap();
        for n in 1..=3 {
            alice.say("r", format!("m{n}")).await.unwrap();
        }
        let (bob, mut to_bob) = engine.register();
        bob.join("r", "bob", Some(0)).await.unwrap();
        let seen = events(&mut to_bob);
        assert_eq!(
            seen[..2],
            [joined("r", "bob", 3), ServerEvent::Gap { room: "r".into(), first: 1, last: 1 }]
        );
        let replayed: Vec<u64> = seen[2..]
            .iter()
            .map(|event| match event {
                ServerEvent::Message { seq, .. } => *seq,
                other => panic!("expected a message, got {other:?}"),
            })
            .collect();
        assert_eq!(replayed, [2, 3]);
    }

    fn command(json: &str) -> Message {
        Message::text(json)
    }

    fn error_of(event: &ServerEvent) -> (Option<&str>, ErrorCode) {
        match event {
            ServerEvent::Error { room, code, .. } => (room.as_deref(), *code),
            other => panic!("expected an Error, got {other:?}"),
        }
    }

    #[tokio::test]
    async fn a_frame_is_a_command_or_gets_an_error_naming_its_room() {
        let engine = engine();
        let (alice, mut to_alice) = engine.register();
        let join = r#"{"type":"Join","room":"general","username":"alice"}"#;
        alice.handle(&command(join), None).await;
        alice.handle(&command(r#"{"type":"Members","room":"general"}"#), None).await;
        alice
            .handle(&command(r#"{"type":"Join","room":"r","username":"x","since":-1}"#), None)
            .await;
        alice.handle(&command("not json"), None).await;
        alice.handle(&Message::binary(b"{}".to_vec()), None).await;
        alice.handle(&command(r#"{"type":"Message","room":"general","content":""}"#), None).await;
        alice.handle(&command(r#"{"type":"Join","room":"r","username":""}"#), None).await;
        alice
            .handle(&command(r#"{"type":"Join","room":"r","username":"bob"}"#), Some("alice"))
            .await;
        alice.handle(&command(r#"{"type":"Leave","room":"nowhere"}"#), None).await;
        alice.handle(&command(r#"{"type":"Ping"}"#), None).await;
        let seen = events(&mut to_alice);
        assert_eq!(seen[0], joined("general", "alice", 0));
        let members =
            ServerEvent::Members { room: "general".into(), usernames: vec!["alice".into()] };
        assert_eq!(seen[1], members);
        let errors: Vec<_> = seen[2..9].iter().map(error_of).collect();
        use ErrorCode::*;
        assert_eq!(
            errors,
            [
                (Some("r"), Invalid),
                (None, Invalid),
                (None, Invalid),
                (Some("general"), BadContent),
                (Some("r"), BadName),
                (Some("r"), NotYourName),
                (Some("nowhere"), NotMember),
            ]
        );
        assert_eq!(seen[9..], [ServerEvent::Pong]);
    }

    #[tokio::test]
    async fn at_most_sixteen_rooms_per_member() {
        let engine = engine();
        let (alice, mut to_alice) = engine.register();
        for n in 0..=MAX_ROOMS_PER_CLIENT {
            let join = format!(r#"{{"type":"Join","room":"r{n}","username":"alice"}}"#);
            alice.handle(&command(&join), None).await;
        }
        assert_eq!(alice.rooms().len(), MAX_ROOMS_PER_CLIENT);
        let last = events(&mut to_alice).pop().unwrap();
        let room = format!("r{MAX_ROOMS_PER_CLIENT}");
        assert_eq!(error_of(&last), (Some(room.as_str()), ErrorCode::TooManyRooms));
    }

    #[tokio::test]
    async fn over_the_rate_limit_a_command_is_refused_then_the_client_is_flooding() {
        let engine = engine();
        let (alice, mut to_alice) = engine.register();
        let mut rate = RateLimit::new(1, 2);
        let members = command(r#"{"type":"Members","room":"general"}"#);
        // Pings and pongs are the WebSocket's, not commands: no token.
        for _ in 0..5 {
            assert_eq!(
                alice.receive(Message::Ping(Default::default()), None, &mut rate).await,
                Ok(())
            );
        }
        // A burst of 2 is carried out, then refused until a whole burst is
        // owed (the bucket refills at 1 a second: none comes back meanwhile).
        let mut results = Vec::new();
        while results.len() < 10 && results.last() != Some(&Err(Flooding)) {
            results.push(alice.receive(members.clone(), None, &mut rate).await);
        }
        assert_eq!(results.last(), Some(&Err(Flooding)));
        let seen = events(&mut to_alice);
        assert_eq!(seen.len(), results.len() - 1, "an Error for each but the last");
        let codes: Vec<_> = seen.iter().map(error_of).collect();
        let room = Some("general");
        assert_eq!(codes[..2], [(room, ErrorCode::NotMember); 2]);
        assert!(codes.len() > 2 && codes[2..].iter().all(|c| *c == (room, ErrorCode::RateLimited)));
        let ServerEvent::Error { message, .. } = &seen[2] else { unreachable!() };
        assert!(message.starts_with("rate limit: at most 1 commands per second"), "{message}");
    }

    #[tokio::test]
    async fn a_dropped_member_leaves_its_rooms_and_is_announced() {
        let engine = engine();
        let (alice, mut to_alice) = engine.register();
        let (bob, to_bob) = engine.register();
        alice.join("general", "alice", None).await.unwrap();
        bob.join("general", "bob", None).await.unwrap();
        drop((bob, to_bob));
        let left = left("general", "bob");
        assert_eq!(events(&mut to_alice).last(), Some(&left));
        assert_eq!(alice.members("general").await, Ok(vec!["alice".into()]));

        // At shutdown, departures go unannounced (chapter 4.2).
        let (carol, to_carol) = engine.register();
        carol.join("general", "carol", None).await.unwrap();
        events(&mut to_alice);
        engine.shutting_down();
        drop((carol, to_carol));
        assert!(events(&mut to_alice).is_empty());
    }
}
