//! Chapter 9: one chat across several servers, with Redis as the engine.
//!
//! Every chat server started with the same `--redis` URL is a *node* of one
//! chat. Each node keeps its own connections and its own [`RoomManager`],
//! which delivers through its members' outboxes exactly as on a single
//! server. What must be one for the whole chat lives in Redis:
//!
//! | key | what it holds |
//! |---|---|
//! | `chat:room:ROOM:members` | hash: username -> the node its member is on (names are unique per room) |
//! | `chat:room:ROOM:seq` | the room's last `seq` (kept 24 h after the room's last message or join) |
//! | `chat:room:ROOM:history` | list: the room's last `--history` messages (kept as long) |
//! | `chat:room:ROOM:epoch` | the room's life: made by the join that finds none (kept as long) |
//! | `chat:node:NODE:members` | set: the `[room, username]` pairs of a node's members |
//! | `chat:node:NODE:alive` | a key that expires 3 s after the node last refreshed it |
//! | `chat:node:NODE:reaped` | set for an hour when a node is reaped, for its restore |
//! | `chat:nodes` | set: the nodes that may have members |
//!
//! **How a message travels.** A node runs one Lua script (`say.lua`): it
//! checks that the sender holds its name, takes the room's next `seq`,
//! appends the message to the history and publishes it on one channel,
//! `chat:events`. Redis runs a script alone, start to end, so numbering,
//! storing and publishing are one step: no two messages get one `seq`, and
//! Redis publishes them in `seq` order. Every node subscribes to that
//! channel over one connection, which brings it everything in that same
//! order, and hands each event on to the node's members (`relay.rs`,
//! through the room manager's outboxes). So
//! every member, on any node, sees a room's messages in `seq` order; the
//! sender sees its own when they come back through the channel.
//!
//! **Joins** (`join.lua`) claim the name with `HSETNX`, publish the `Joined`
//! and read the history after `since`, in one script. The joiner must get
//! each message once: replayed if said before the script, live if after.
//! The node makes it a *joining* member before it runs the script, so
//! nothing published after it can pass the member by, and then sorts the
//! stream by two facts: the `seq` the script saw last, and the script's own
//! `Joined` coming through the channel (see `Joining` in `relay.rs`).
//!
//! **Failures.**
//! - *A node dies* (SIGKILL, a crash, a lost network): it stops refreshing
//!   its `alive` key, which expires after 3 s. Every node runs `reap.lua`
//!   once a second; the first to find the key gone removes the dead node's
//!   members and publishes their `Left`. A node that shuts down cleanly
//!   reaps itself at once.
//! - *Redis is lost*: commands fail at once when Redis refuses them, and
//!   within [`REDIS_TIMEOUT`] when it does not answer; a command that needs
//!   Redis gets an `Error`, "the chat is temporarily unavailable";
//!   connections stay open. The event stream, pinged every second, is
//!   reconnected with a backoff capped at 1 s, and then the node *restores*
//!   (`restore.lua`): it claims its members' names again (announcing the ones
//!   the cluster had lost) and raises each room's `seq` to at least what it
//!   has seen (a Redis restarted without persistence has forgotten both),
//!   and catches up from the history on what was published while it was
//!   away. Every script that numbers messages also takes the node's last
//!   seen `seq` as a floor, so `seq` never goes back even before every node
//!   has restored.
//! - *A node is taken for dead while alive* (frozen, or cut off from Redis,
//!   for longer than 3 s): the others reap it. When it next refreshes its
//!   `alive` key it finds that the cluster had lost it, and restores.
//!
//! What this does not do: Redis itself is one process, and a chat that must
//! outlive it needs Redis Sentinel or Cluster (the scripts would then have
//! to declare every key they touch: `reap.lua` does not). Presence events
//! published while a node's stream was away are not shown on that node;
//! `Members` always tells the truth.

use std::sync::Arc;
use std::time::Duration;

use futures_util::StreamExt;
use redis::aio::{ConnectionManager, ConnectionManagerConfig, PubSubSink, PubSubStream};
use redis::{Client, RedisResult, Script};
use serde::Deserialize;
use tokio::sync::mpsc;
use tokio::time::{interval, sleep, timeout};
use tokio_tungstenite::tungstenite::Message;
use tracing::{debug, info, warn};

use crate::admin::{self, Timed};
use crate::protocol::ServerEvent;
use crate::rooms::{self, ClientId, RoomError, RoomManager};

mod relay;
use relay::{Departure, Relay, Relayed};

/// The channel every node publishes its events on and listens to.
const CHANNEL: &str = "chat:events";
/// The longest a Redis command, or a connection to Redis, may take before
/// the node treats Redis as lost.
pub const REDIS_TIMEOUT: Duration = Duration::from_secs(1);
/// How often a node says it is alive, and looks for dead nodes.
const KEEPALIVE: Duration = Duration::from_secs(1);
/// How long a node's `alive` key outlives its last refresh.
const ALIVE_FOR: Duration = Duration::from_secs(3);
/// How long a room's `seq` and history outlive its last message or join:
/// every key a client can make Redis create must go away by itself, or
/// joining ever new room names would fill Redis's memory. A member's node
/// remembers the room's `seq`, so a room silent for longer still counts on
/// (the floor), but its history is gone.
const RETENTION: Duration = Duration::from_secs(24 * 60 * 60);

// The scripts Redis runs, each a file of its own (src/cluster/*.lua, quoted
// in chapter 9.2). `depart.lua` defines a function that `leave.lua` and
// `reap.lua` call, so it goes in front of both.
const DEPART: &str = include_str!("cluster/depart.lua");
const JOIN: &str = include_str!("cluster/join.lua");
const SAY: &str = include_str!("cluster/say.lua");
const LEAVE: &str = include_str!("cluster/leave.lua");
const REAP: &str = include_str!("cluster/reap.lua");
const RESTORE: &str = include_str!("cluster/restore.lua");

// ANCHOR: event
/// An event as the scripts publish it on [`CHANNEL`] (and keep in history),
/// in JSON made by Redis's `cjson`. Each node turns it into the client's
/// [`ServerEvent`] once, for all of its members.
#[derive(Debug, Deserialize)]
#[serde(tag = "kind", rename_all = "lowercase")]
enum Event {
    Said {
        room: String,
        seq: u64,
        username: String,
        content: String,
        timestamp: String,
    },
    /// `client` is absent when a restore announces a member again; `seq`
    /// is the room's last at the join (absent from an older node: 0).
    Joined {
        room: String,
        username: String,
        node: String,
        #[serde(default)]
        client: Option<String>,
        announce: bool,
        #[serde(default)]
        seq: u64,
        #[serde(default)]
        epoch: String,
    },
    Left {
        room: String,
        username: String,
        announce: bool,
    },
}
// ANCHOR_END: event

/// Redis keys of a room.
fn room_key(room: &str, what: &str) -> String {
    format!("chat:room:{room}:{what}")
}

/// A node of the chat. Share it with `Arc<Cluster>`.
pub struct Cluster {
    /// This node's id: random, new at every start.
    node: String,
    /// This node's members, as the cluster sees them, and the room manager
    /// that delivers to them.
    relay: Relay,
    redis: Timed<ConnectionManager>,
    client: Client,
    /// Where a leave that Redis could not take goes, to be tried again.
    departures: mpsc::UnboundedSender<Departure>,
    /// The room manager's settings: its limits, and how it words presence
    /// and gaps, which a node's events are worded with too.
    config: rooms::Config,
    join: Script,
    say: Script,
    leave: Script,
    reap: Script,
    restore: Script,
}

/// Parses a `--redis` URL without connecting.
pub fn parse_url(text: &str) -> Result<Client, String> {
    if !text.starts_with("redis://") {
        return Err(format!("expected a redis:// URL, like redis://127.0.0.1:6379, not {text:?}"));
    }
    Client::open(text).map_err(|e| e.to_string())
}

impl Cluster {
    // ANCHOR: start
    /// Joins the chat that `client`'s Redis holds: connects, subscribes to
    /// the event stream, and starts the node's background tasks. Returns the
    /// node, whose [`Cluster::rooms`] the connections register with. Fails
    /// if Redis cannot be reached now.
    pub async fn start(client: Client, config: rooms::Config) -> RedisResult<Arc<Cluster>> {
        let (departures, departed) = mpsc::unbounded_channel();
        let rooms = Arc::new(RoomManager::quiet(config.clone()));
        // Fail fast, and let the next command reconnect: a node whose Redis
        // is gone answers its clients at once instead of holding them.
        let settings = ConnectionManagerConfig::new()
            .set_number_of_retries(1)
            .set_max_delay(REDIS_TIMEOUT)
            .set_connection_timeout(Some(REDIS_TIMEOUT))
            .set_response_timeout(Some(REDIS_TIMEOUT));
        let redis = ConnectionManager::new_with_config(client.clone(), settings).await?;
        let cluster = Arc::new(Cluster {
            node: format!("{:016x}", rand::random::<u64>()),
            relay: Relay::new(rooms, departures.clone()),
            redis: Timed(redis),
            client,
            departures,
            config,
            join: Script::new(JOIN),
            say: Script::new(SAY),
            leave: Script::new(&format!("{DEPART}{LEAVE}")),
            reap: Script::new(&format!("{DEPART}{REAP}")),
            restore: Script::new(RESTORE),
        });
        cluster.keep_alive_once().await?;
        let events = cluster.subscribe().await?;
        info!(node = %cluster.node, "joined the cluster");
        tokio::spawn(cluster.clone().listen(events));
        tokio::spawn(cluster.clone().keep_alive());
        tokio::spawn(cluster.clone().announce_departures(departed));
        Ok(cluster)
    }
    // ANCHOR_END: start

    /// The node's room manager: connections register with it.
    pub fn rooms(&self) -> &Arc<RoomManager> {
        self.relay.rooms()
    }

    /// Client `id`'s connection has ended: the cluster hears that it left
    /// every room it was in here.
    pub fn disconnect(&self, id: ClientId) {
        self.relay.disconnect(id);
    }

    /// The server is shutting down: departures are no longer announced one
    /// by one; [`Cluster::leave_cluster`] takes them all out at once.
    pub fn shutting_down(&self) {
        self.relay.shutting_down();
    }

    // ANCHOR: join
    /// Joins `room` under `username` across the cluster, resuming after
    /// `since` (see [`Member::join_since`](rooms::Member::join_since)). Answers like a
    /// single node.
    pub async fn join(
        &self,
        id: ClientId,
        room: &str,
        username: &str,
        since: Option<u64>,
        epoch: Option<&str>,
    ) -> Result<(), RoomError> {
        self.relay.enter(id, room, username)?;
        let floor = self.relay.last_seq(room);
        let since_arg = since.map_or(-1, |s| i64::try_from(s).unwrap_or(i64::MAX));
        let answer: RedisResult<(String, u64, Vec<String>, String)> = self
            .join
            .key(room_key(room, "members"))
            .key(room_key(room, "seq"))
            .key(room_key(room, "history"))
            .key(format!("chat:node:{}:members", self.node))
            .key(room_key(room, "epoch"))
            .arg(CHANNEL)
            .arg(&self.node)
            .arg(id.number())
            .arg(room)
            .arg(username)
            .arg(since_arg)
            .arg(floor)
            .arg(self.config.presence_limit)
            .arg(RETENTION.as_secs())
            // The epoch this node knows, if Redis lost the room's (its
            // seq goes on from the floor: the same life); else a new one.
            .arg(self.relay.epoch(room).unwrap_or_else(rooms::new_epoch))
            .arg(epoch.unwrap_or(""))
            .invoke_async(&mut self.redis.clone())
            .await;
        let refusal = match answer {
            Ok((status, last, missed, life)) if status == "ok" => {
                self.relay.note_epoch(room, &life);
                let mut first = vec![(self.config.joined)(room, username, last, &life)];
                // Counted in another life of the room: as join.lua did.
                let started_over = since.is_some() && epoch.is_some_and(|e| e != life);
                if started_over {
                    first.push((self.config.started_over)(room));
                }
                if let Some(since) = since.map(|since| if started_over { 0 } else { since }) {
                    first.extend(self.replay(room, since, last, &missed));
                }
                self.relay.entered(id, room, last, first);
                return Ok(());
            }
            Ok((status, _, _, _)) if status == "taken" => RoomError::NameTaken,
            Ok((_, last, _, _)) => RoomError::SinceAhead { since: since.unwrap_or(0), last },
            Err(e) => {
                warn!(error = %e, room, "join: Redis failed");
                // The script may have run after all: if the name is ours
                // there, the retried leave frees it.
                let _ = self
                    .departures
                    .send(Departure { room: room.into(), username: username.into() });
                RoomError::Unavailable
            }
        };
        let _ = self.relay.withdraw(id, room);
        Err(refusal)
    }

    /// What a joiner resuming after `since` is sent after its `Joined`: the
    /// messages it missed, from the room's history in Redis, replayed as a
    /// single server replays its own (see [`rooms::replay`]).
    fn replay(&self, room: &str, since: u64, last: u64, missed: &[String]) -> Vec<Message> {
        let messages: Vec<(u64, Message)> = missed
            .iter()
            .filter_map(|json| match serde_json::from_str(json) {
                Ok(Event::Said { room, seq, username, content, timestamp }) => {
                    let event = ServerEvent::Message { room, username, content, timestamp, seq };
                    Some((seq, event.to_message()))
                }
                _ => None,
            })
            .collect();
        let held = messages.iter().map(|(seq, msg)| (*seq, msg));
        let budget = self.config.outbox_bytes / 2;
        rooms::replay(room, since, last, held, budget, self.config.gap)
    }
    // ANCHOR_END: join

    // ANCHOR: say
    /// Says `content` in `room`: numbered and published by Redis, delivered
    /// to every member (the sender too) through the event stream. Returns
    /// its `seq`.
    pub async fn say(
        &self,
        id: ClientId,
        room: &str,
        content: &str,
        timestamp: &str,
    ) -> Result<u64, RoomError> {
        let username = self.relay.name_in(id, room)?;
        let seq: RedisResult<i64> = self
            .say
            .key(room_key(room, "members"))
            .key(room_key(room, "seq"))
            .key(room_key(room, "history"))
            .key(room_key(room, "epoch"))
            .arg(CHANNEL)
            .arg(&self.node)
            .arg(room)
            .arg(&username)
            .arg(content)
            .arg(timestamp)
            .arg(self.relay.last_seq(room))
            .arg(self.config.history)
            .arg(RETENTION.as_secs())
            .invoke_async(&mut self.redis.clone())
            .await;
        match seq {
            Ok(seq) => u64::try_from(seq).map_err(|_| RoomError::Unavailable),
            Err(e) => {
                warn!(error = %e, room, "say: Redis failed");
                Err(RoomError::Unavailable)
            }
        }
    }
    // ANCHOR_END: say

    /// Leaves `room`: the leaver hears its `Left` at once, everyone else
    /// through the event stream. A leave Redis cannot take now is retried
    /// in the background; the name stays taken until then.
    pub async fn leave(&self, id: ClientId, room: &str) -> Result<String, RoomError> {
        let username = self.relay.withdraw(id, room)?;
        self.relay.rooms().send(id, (self.config.left)(room, &username));
        let departure = Departure { room: room.into(), username: username.clone() };
        if let Err(e) = self.depart(&departure).await {
            warn!(error = %e, room, "leave: Redis failed; will retry");
            let _ = self.departures.send(departure);
        }
        Ok(username)
    }

    /// The names of `room`'s members on every node, sorted; only a member
    /// may ask.
    pub async fn members(&self, id: ClientId, room: &str) -> Result<Vec<String>, RoomError> {
        self.relay.name_in(id, room)?;
        let names: RedisResult<Vec<String>> = redis::cmd("HKEYS")
            .arg(room_key(room, "members"))
            .query_async(&mut self.redis.clone())
            .await;
        let mut names = names.map_err(|e| {
            warn!(error = %e, room, "members: Redis failed");
            RoomError::Unavailable
        })?;
        names.sort();
        Ok(names)
    }

    /// Whether Redis answers a PING within `wait` (the admin port's
    /// `/readyz`, chapter 10.7).
    pub async fn answers(&self, wait: Duration) -> bool {
        let (ping, mut redis) = (redis::cmd("PING"), self.redis.clone());
        let answer = timeout(wait, ping.query_async::<redis::Value>(&mut redis)).await;
        matches!(answer, Ok(Ok(_)))
    }

    /// At shutdown: takes this node's members out of the cluster at once,
    /// announcing their departure to the other nodes.
    pub async fn leave_cluster(&self) {
        let reaped = timeout(REDIS_TIMEOUT * 2, self.reap_nodes(&self.node)).await;
        if !matches!(reaped, Ok(Ok(_))) {
            warn!("could not leave the cluster; the other nodes will find this node gone");
        }
    }

    async fn depart(&self, departure: &Departure) -> RedisResult<i64> {
        self.leave
            .key(room_key(&departure.room, "members"))
            .key(format!("chat:node:{}:members", self.node))
            .arg(CHANNEL)
            .arg(&self.node)
            .arg(&departure.room)
            .arg(&departure.username)
            .arg(self.config.presence_limit)
            .invoke_async(&mut self.redis.clone())
            .await
    }

    /// Removes `node` from the cluster, or with `""`, every node whose
    /// `alive` key has expired.
    async fn reap_nodes(&self, node: &str) -> RedisResult<i64> {
        self.reap
            .key("chat:nodes")
            .arg(CHANNEL)
            .arg(self.config.presence_limit)
            .arg(node)
            .invoke_async(&mut self.redis.clone())
            .await
    }

    // ANCHOR: background
    /// Announces, one by one, the members that left this node without a
    /// leave (a disconnect, an eviction), retrying while Redis is away.
    async fn announce_departures(
        self: Arc<Self>,
        mut departed: mpsc::UnboundedReceiver<Departure>,
    ) {
        while let Some(departure) = departed.recv().await {
            while let Err(e) = self.depart(&departure).await {
                debug!(error = %e, "departure: Redis failed; retrying");
                sleep(KEEPALIVE).await;
            }
        }
    }

    /// Once a second: says this node is alive, and removes dead nodes.
    async fn keep_alive(self: Arc<Self>) {
        let mut healthy = true;
        loop {
            sleep(KEEPALIVE).await;
            let result = match self.keep_alive_once().await {
                Ok(false) => self.reap_nodes("").await.map(|_| ()),
                // The cluster had forgotten this node: Redis restarted, or
                // the node was silent for longer than `ALIVE_FOR` and the
                // others reaped it. Its members are still here: claim them
                // back.
                Ok(true) => {
                    warn!("the cluster had lost this node; restoring its members");
                    self.restore().await
                }
                Err(e) => Err(e),
            };
            // Say it once when Redis goes, and once when it is back.
            match &result {
                Err(e) if healthy => warn!(error = %e, "Redis is unavailable"),
                Ok(()) if !healthy => info!("Redis is available again"),
                _ => {}
            }
            healthy = result.is_ok();
        }
    }
    // ANCHOR_END: background

    /// Refreshes this node's `alive` key. Returns whether the node had to
    /// be added back to the set of nodes: whether the cluster had lost it.
    async fn keep_alive_once(&self) -> RedisResult<bool> {
        let alive = format!("chat:node:{}:alive", self.node);
        let (added,): (i64,) = redis::pipe()
            .atomic()
            .cmd("SET")
            .arg(alive)
            .arg(1)
            .arg("PX")
            .arg(ALIVE_FOR.as_millis() as u64)
            .ignore()
            .cmd("SADD")
            .arg("chat:nodes")
            .arg(&self.node)
            .query_async(&mut self.redis.clone())
            .await?;
        Ok(added == 1)
    }

    /// A connection subscribed to [`CHANNEL`]: the stream of events, and
    /// the half that can still send (a `PING`) on it.
    async fn subscribe(&self) -> RedisResult<(PubSubSink, PubSubStream)> {
        let connecting = timeout(REDIS_TIMEOUT, self.client.get_async_pubsub());
        let mut pubsub = connecting.await.map_err(|_| timed_out())??;
        timeout(REDIS_TIMEOUT, pubsub.subscribe(CHANNEL)).await.map_err(|_| timed_out())??;
        Ok(pubsub.split())
    }

    // ANCHOR: listen
    /// The node's one reader of the event stream: hands every event to the
    /// room manager, in the order Redis published them. When the stream is
    /// lost it subscribes again, restores what Redis may have forgotten,
    /// and catches up on what was published meanwhile.
    ///
    /// A stream that ends is plainly lost; one whose connection died without
    /// a FIN (a cable pulled, a Redis hung) would just stay silent, so the
    /// node pings Redis on it every second, as servers ping their clients.
    async fn listen(self: Arc<Self>, subscription: (PubSubSink, PubSubStream)) {
        let (mut sink, mut events) = subscription;
        let mut check = interval(KEEPALIVE);
        loop {
            // Wait for one of: an event, or time to check the connection.
            tokio::select! {
                msg = events.next() => match msg {
                    Some(msg) => {
                        self.on_event(msg.get_payload_bytes());
                        continue;
                    }
                    None => warn!("lost the Redis event stream; reconnecting"),
                },
                _ = check.tick() => {
                    let pong = timeout(REDIS_TIMEOUT, sink.ping::<redis::Value>()).await;
                    if matches!(pong, Ok(Ok(_))) {
                        continue;
                    }
                    warn!("the Redis event stream stopped answering; reconnecting");
                }
            }
            admin::metrics().reconnects.increment(1);
            (sink, events) = self.resubscribe().await;
        }
    }

    async fn resubscribe(&self) -> (PubSubSink, PubSubStream) {
        let mut delay = Duration::from_millis(100);
        loop {
            sleep(delay).await;
            delay = (delay * 2).min(KEEPALIVE);
            let Ok(subscription) = self.subscribe().await else { continue };
            // Subscribed first: whatever is published from now on comes
            // through `events`, and what came before is in the history.
            if let Err(e) = self.restore().await {
                debug!(error = %e, "restore failed; trying again");
                continue;
            }
            self.relay.relay_resumed();
            info!("event stream back");
            return subscription;
        }
    }

    /// Claims this node's members' names again, raises each room's `seq`
    /// to what this node has seen, and hands on the messages it missed.
    async fn restore(&self) -> RedisResult<()> {
        let reaped = format!("chat:node:{}:reaped", self.node);
        for (room, floor, epoch, names) in self.relay.local_rooms() {
            let (taken, missed): (Vec<String>, Vec<String>) = self
                .restore
                .key(room_key(&room, "members"))
                .key(room_key(&room, "seq"))
                .key(room_key(&room, "history"))
                .key(format!("chat:node:{}:members", self.node))
                .key(&reaped)
                .key(room_key(&room, "epoch"))
                .arg(CHANNEL)
                .arg(&self.node)
                .arg(&room)
                .arg(floor)
                .arg(self.config.presence_limit)
                .arg(RETENTION.as_secs())
                .arg(&epoch)
                .arg(names)
                .invoke_async(&mut self.redis.clone())
                .await?;
            for username in taken {
                warn!(room, username, "name taken by another node while Redis was away");
            }
            for json in missed {
                self.on_event(json.as_bytes());
            }
        }
        redis::cmd("DEL").arg(reaped).query_async(&mut self.redis.clone()).await
    }

    fn on_event(&self, payload: &[u8]) {
        let event = match serde_json::from_slice::<Event>(payload) {
            Ok(event) => event,
            Err(e) => return warn!(error = %e, "ignored a malformed cluster event"),
        };
        let (room, relayed, msg) = match event {
            Event::Said { room, seq, username, content, timestamp } => {
                let event =
                    ServerEvent::Message { room: room.clone(), username, content, timestamp, seq };
                (room, Relayed::Said(seq), event.to_message())
            }
            // Presence about a member this node still has is not news here:
            // a restore announcing it again, or a reap that took this node
            // for dead while it was only cut off from Redis.
            Event::Joined { room, username, .. } | Event::Left { room, username, .. }
                if self.relay.has_member(&room, &username) =>
            {
                return;
            }
            // Each node stamps presence with its own clock as it hands it
            // on: the same server time, give or take the channel's delay.
            Event::Joined { room, username, node, client, announce, seq, epoch } => {
                self.relay.note_epoch(&room, &epoch);
                let joiner = client
                    .filter(|_| node == self.node)
                    .and_then(|client| client.parse().ok())
                    .map(ClientId::from_number);
                let event = (self.config.joined)(&room, &username, seq, &epoch);
                (room, Relayed::Presence { announce, joiner }, event)
            }
            Event::Left { room, username, announce } => {
                let event = (self.config.left)(&room, &username);
                (room, Relayed::Presence { announce, joiner: None }, event)
            }
        };
        self.relay.relay(&room, relayed, &msg);
    }
    // ANCHOR_END: listen
}

fn timed_out() -> redis::RedisError {
    redis::RedisError::from(std::io::Error::new(std::io::ErrorKind::TimedOut, "Redis timed out"))
}
