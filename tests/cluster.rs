//! The cluster (issue 9): chat_server nodes started with the same `--redis`
//! are one chat. Each test starts a redis-server of its own (Debian's, on a
//! free loopback port, persistence off) and at least two nodes, and talks to
//! them as raw WebSocket clients: delivery and order across nodes, one `seq`
//! per room, names and `Members` across nodes, resume with and without a
//! `Gap`, and the failures: Redis lost and back, a node killed or stopped,
//! a client moving to the other node.
//!
//! Without redis-server these tests show as ignored; with `CI` set they fail
//! (see `common::trial_needing`). `.ci/run` installs it.

mod common;

use std::collections::BTreeSet;
use std::os::unix::process::ExitStatusExt;
use std::process::ExitCode;
use std::time::{Duration, Instant};

use common::{
    Program, RedisServer, Server, WAIT, connect, expect_close, recv_within, redis_component,
    run_trials, said, trial, trial_needing, unstamped,
};
use futures_util::{SinkExt, StreamExt};
use tokio::time::timeout;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use websocket_tutorial::client::WsClient;
use websocket_tutorial::protocol::{ClientMessage, ErrorCode, ServerEvent};

fn main() -> ExitCode {
    let redis = redis_component();
    let trials = vec![
        trial_needing(
            &redis,
            "members_on_two_nodes_see_each_others_joins_messages_and_leaves",
            members_on_two_nodes_see_each_others_joins_messages_and_leaves,
        ),
        trial_needing(
            &redis,
            "seq_is_one_sequence_for_the_cluster_and_every_member_sees_one_order",
            seq_is_one_sequence_for_the_cluster_and_every_member_sees_one_order,
        ),
        trial_needing(
            &redis,
            "a_name_is_unique_in_a_room_across_nodes",
            a_name_is_unique_in_a_room_across_nodes,
        ),
        trial_needing(
            &redis,
            "members_lists_every_nodes_members_to_members_only",
            members_lists_every_nodes_members_to_members_only,
        ),
        trial_needing(
            &redis,
            "a_join_with_since_on_the_other_node_replays_the_missed_messages",
            a_join_with_since_on_the_other_node_replays_the_missed_messages,
        ),
        trial_needing(
            &redis,
            "a_resume_older_than_the_clusters_history_gets_a_gap_first",
            a_resume_older_than_the_clusters_history_gets_a_gap_first,
        ),
        trial_needing(
            &redis,
            "a_since_ahead_of_the_room_is_an_error_and_the_connection_stays_open",
            a_since_ahead_of_the_room_is_an_error_and_the_connection_stays_open,
        ),
        trial_needing(
            &redis,
            "while_redis_is_lost_messages_are_refused_and_after_it_returns_rooms_recover",
            while_redis_is_lost_messages_are_refused_and_after_it_returns_rooms_recover,
        ),
        trial_needing(
            &redis,
            "a_killed_nodes_members_leave_within_10_s",
            a_killed_nodes_members_leave_within_10_s,
        ),
        trial_needing(
            &redis,
            "a_node_taken_for_dead_while_frozen_claims_its_members_back",
            a_node_taken_for_dead_while_frozen_claims_its_members_back,
        ),
        trial_needing(
            &redis,
            "a_node_stopped_with_ctrl_c_exits_0_and_its_members_leave",
            a_node_stopped_with_ctrl_c_exits_0_and_its_members_leave,
        ),
        trial_needing(
            &redis,
            "a_node_stopped_with_sigterm_exits_0_and_its_members_leave_at_once",
            a_node_stopped_with_sigterm_exits_0_and_its_members_leave_at_once,
        ),
        trial_needing(
            &redis,
            "a_client_moved_to_the_other_node_gets_every_missed_message_once",
            a_client_moved_to_the_other_node_gets_every_missed_message_once,
        ),
        trial_needing(
            &redis,
            "chat_client_moves_to_the_other_node_and_shows_every_message_once",
            chat_client_moves_to_the_other_node_and_shows_every_message_once,
        ),
        trial_needing(
            &redis,
            "a_rolling_restart_loses_no_message",
            a_rolling_restart_loses_no_message,
        ),
        trial_needing(
            &redis,
            "a_room_whose_keys_expired_is_a_new_life_and_a_resume_from_the_old_gets_it_all",
            a_room_whose_keys_expired_is_a_new_life_and_a_resume_from_the_old_gets_it_all,
        ),
        trial(
            "a_node_whose_redis_is_unreachable_exits_1_with_one_line",
            a_node_whose_redis_is_unreachable_exits_1_with_one_line,
        ),
    ];
    run_trials(include_str!("cluster.rs"), trials)
}

/// A redis-server of the test's own and two nodes on it, each started with
/// `extra` arguments. [`Server::start`] returns once a node has printed its
/// `listening on` line, which it prints only once it is connected to Redis.
async fn start_cluster(extra: &[&str]) -> (RedisServer, Server, Server) {
    let redis = RedisServer::start().await;
    let url = redis.url();
    let mut args = vec!["--redis", url.as_str()];
    args.extend_from_slice(extra);
    let a = Server::start("chat_server", &args).await;
    let b = Server::start("chat_server", &args).await;
    (redis, a, b)
}

/// Ctrl-C: the node must exit 0, and must not have panicked on the way.
async fn stop_node(node: Server) {
    node.program.interrupt();
    exits_cleanly(node).await;
}

/// The node, interrupted, exits 0 without having panicked.
async fn exits_cleanly(mut node: Server) {
    assert_eq!(node.program.exit_code().await, 0, "a node exits 0 on Ctrl-C and on SIGTERM");
    let stderr = node.program.stderr_text().await;
    assert!(!stderr.contains("panicked"), "{stderr}");
}

/// SIGKILL: the node dies at once, announcing nothing, as a machine that
/// lost its power would.
async fn kill_node(node: &mut Server) {
    node.program.signal("KILL");
    let status = timeout(WAIT, node.program.child.wait())
        .await
        .expect("a killed node exits at once")
        .expect("wait for the node");
    assert_eq!(status.signal(), Some(libc::SIGKILL), "{status}");
}

/// A chat client speaking the JSON protocol, with the name it joins under.
struct Chat {
    ws: WsClient,
    name: String,
}

impl Chat {
    async fn connect(node: &Server, name: &str) -> Chat {
        Chat { ws: connect(&node.url).await, name: name.into() }
    }

    async fn send(&mut self, command: ClientMessage) {
        self.ws.send(command.to_message()).await.expect("send command");
    }

    async fn join(&mut self, room: &str) {
        let (room, username) = (room.into(), self.name.clone());
        self.send(ClientMessage::Join { room, username, since: None, epoch: None }).await;
    }

    async fn join_since(&mut self, room: &str, since: u64) {
        let (room, username) = (room.into(), self.name.clone());
        self.send(ClientMessage::Join { room, username, since: Some(since), epoch: None }).await;
    }

    async fn say(&mut self, room: &str, content: &str) {
        self.send(ClientMessage::Message { room: room.into(), content: content.into() }).await;
    }

    /// Says `count` messages `{prefix}1`, `{prefix}2`, ... as fast as the
    /// socket takes them, flushing once at the end.
    async fn say_fast(&mut self, room: &str, prefix: &str, count: usize) {
        for i in 1..=count {
            let say = ClientMessage::Message { room: room.into(), content: format!("{prefix}{i}") };
            self.ws.feed(say.to_message()).await.expect("feed");
        }
        self.ws.flush().await.expect("flush");
    }

    /// Asks who is in `room` and returns the answer.
    async fn members(&mut self, room: &str) -> ServerEvent {
        self.send(ClientMessage::Members { room: room.into() }).await;
        self.event().await
    }

    /// The next event, within [`WAIT`].
    async fn event(&mut self) -> ServerEvent {
        parse(recv_within(&mut self.ws, WAIT).await)
    }

    /// The next event as it came, its time and epoch not blanked.
    async fn raw_event(&mut self) -> ServerEvent {
        let msg = recv_within(&mut self.ws, WAIT).await;
        ServerEvent::try_from(&msg).unwrap_or_else(|e| panic!("not a server event: {e}: {msg:?}"))
    }

    /// The next event if one arrives by `deadline`, `None` if none does.
    async fn event_by(&mut self, deadline: Instant) -> Option<ServerEvent> {
        let left = deadline.saturating_duration_since(Instant::now());
        // recv_within's own deadline is later, so it never is the one that
        // fires; it still fails the test on a close or an error.
        let msg = timeout(left, recv_within(&mut self.ws, left + WAIT)).await.ok()?;
        Some(parse(msg))
    }

    /// The next event, which must be an `Error`; returns its room and text.
    async fn error(&mut self) -> (Option<String>, String) {
        let (room, _, message) = self.refused().await;
        (room, message)
    }

    /// The next event, which must be an `Error`: its room, code and text.
    async fn refused(&mut self) -> (Option<String>, ErrorCode, String) {
        match self.event().await {
            ServerEvent::Error { room, code, message } => (room, code, message),
            other => panic!("{}: expected an Error event, got {other:?}", self.name),
        }
    }

    /// Proves that the connection is open and nothing else was queued for
    /// it: a `Ping` is answered with a `Pong`, after anything the server had
    /// already sent.
    async fn expect_nothing_pending(&mut self) {
        self.send(ClientMessage::Ping).await;
        assert_eq!(self.event().await, ServerEvent::Pong, "{}: nothing before the Pong", self.name);
    }
}

fn parse(msg: tokio_tungstenite::tungstenite::Message) -> ServerEvent {
    unstamped(
        ServerEvent::try_from(&msg).unwrap_or_else(|e| panic!("not a server event: {e}: {msg:?}")),
    )
}

/// Joins each of `chats` to `room` in turn, checking that every member so
/// far, on whichever node, sees each newcomer's `Joined`, the newcomer
/// included.
async fn join_in_turn(room: &str, chats: &mut [&mut Chat]) {
    for i in 0..chats.len() {
        chats[i].join(room).await;
        let newcomer = chats[i].name.clone();
        for member in chats[..=i].iter_mut() {
            let seen = member.event().await;
            assert_eq!(seen, joined(room, &newcomer), "{} sees {newcomer} join", member.name);
        }
    }
}

fn joined(room: &str, username: &str) -> ServerEvent {
    joined_at(room, username, 0)
}

/// `username` joined `room`, whose last message was then `seq`.
fn joined_at(room: &str, username: &str, seq: u64) -> ServerEvent {
    ServerEvent::Joined {
        room: room.into(),
        username: username.into(),
        timestamp: String::new(), // checked and blanked by `unstamped`
        seq,
        epoch: String::new(),
    }
}

fn left(room: &str, username: &str) -> ServerEvent {
    ServerEvent::Left { room: room.into(), username: username.into(), timestamp: String::new() }
}

fn members(room: &str, usernames: &[&str]) -> ServerEvent {
    let usernames = usernames.iter().map(|name| name.to_string()).collect();
    ServerEvent::Members { room: room.into(), usernames }
}

fn said_as(username: &str, content: &str, seq: u64) -> (String, String, u64) {
    (username.into(), content.into(), seq)
}

/// Members on different nodes see each other's `Joined`, `Message` and
/// `Left` (after a leave and after a disconnect), with one `seq` for both.
async fn members_on_two_nodes_see_each_others_joins_messages_and_leaves() {
    let (_redis, a, b) = start_cluster(&[]).await;
    let mut alice = Chat::connect(&a, "alice").await;
    let mut bob = Chat::connect(&b, "bob").await;
    let mut carol = Chat::connect(&a, "carol").await;
    // alice (A) sees bob (B) join; bob sees carol (A) join.
    join_in_turn("general", &mut [&mut alice, &mut bob, &mut carol]).await;

    alice.say("general", "from A").await;
    for chat in [&mut alice, &mut bob, &mut carol] {
        assert_eq!(said(chat.event().await), said_as("alice", "from A", 1), "{}", chat.name);
    }
    bob.say("general", "from B").await;
    for chat in [&mut alice, &mut bob, &mut carol] {
        assert_eq!(said(chat.event().await), said_as("bob", "from B", 2), "{}", chat.name);
    }

    drop(carol); // her connection to A drops
    assert_eq!(bob.event().await, left("general", "carol"), "B hears A's disconnect");
    assert_eq!(alice.event().await, left("general", "carol"));
    bob.send(ClientMessage::Leave { room: "general".into() }).await;
    assert_eq!(bob.event().await, left("general", "bob"), "the leaver is told");
    assert_eq!(alice.event().await, left("general", "bob"), "A hears B's leave");
    alice.expect_nothing_pending().await;
    bob.expect_nothing_pending().await;
    stop_node(a).await;
    stop_node(b).await;
}

/// Two senders, one per node, say 50 messages each at once: every member,
/// on both nodes, receives seq 1..=100 exactly, all in the same order, and
/// each sender's messages in the order it said them.
async fn seq_is_one_sequence_for_the_cluster_and_every_member_sees_one_order() {
    let (_redis, a, b) = start_cluster(&["--rate-limit", "1000", "--rate-burst", "1000"]).await;
    let mut alice = Chat::connect(&a, "alice").await;
    let mut bob = Chat::connect(&b, "bob").await;
    let mut carol = Chat::connect(&a, "carol").await;
    let mut dave = Chat::connect(&b, "dave").await;
    join_in_turn("general", &mut [&mut alice, &mut bob, &mut carol, &mut dave]).await;

    const EACH: usize = 50;
    tokio::join!(alice.say_fast("general", "a", EACH), bob.say_fast("general", "b", EACH));

    let mut orders = Vec::new();
    for chat in [&mut alice, &mut bob, &mut carol, &mut dave] {
        let mut order = Vec::new();
        for _ in 0..2 * EACH {
            let (username, content, seq) = said(chat.event().await);
            order.push((seq, username, content));
        }
        let seqs: Vec<u64> = order.iter().map(|(seq, ..)| *seq).collect();
        let expected: Vec<u64> = (1..=2 * EACH as u64).collect();
        assert_eq!(seqs, expected, "{} receives seq 1..=100, consecutive", chat.name);
        chat.expect_nothing_pending().await;
        orders.push((chat.name.clone(), order));
    }
    let (first_name, first) = &orders[0];
    for (name, order) in &orders[1..] {
        assert_eq!(order, first, "{name} and {first_name} see one order");
    }
    for (sender, prefix) in [("alice", "a"), ("bob", "b")] {
        let contents: Vec<&str> =
            first.iter().filter(|(_, u, _)| u == sender).map(|(_, _, c)| c.as_str()).collect();
        let expected: Vec<String> = (1..=EACH).map(|i| format!("{prefix}{i}")).collect();
        assert_eq!(contents, expected, "{sender}'s messages in the order said");
    }
    stop_node(a).await;
    stop_node(b).await;
}

/// A name taken in a room on one node is refused in that room on the
/// other, with an `Error` naming the room; another room takes it.
async fn a_name_is_unique_in_a_room_across_nodes() {
    let (_redis, a, b) = start_cluster(&[]).await;
    let mut alice = Chat::connect(&a, "alice").await;
    let mut other_alice = Chat::connect(&b, "alice").await;
    join_in_turn("general", &mut [&mut alice]).await;

    other_alice.join("general").await;
    let (room, error) = other_alice.error().await;
    assert_eq!(room.as_deref(), Some("general"));
    assert!(error.contains("taken"), "{error}");
    join_in_turn("other", &mut [&mut other_alice]).await;

    alice.expect_nothing_pending().await; // no second alice was announced
    assert_eq!(alice.members("general").await, members("general", &["alice"]));
    stop_node(a).await;
    stop_node(b).await;
}

/// `Members` from a member on either node lists every node's members,
/// sorted; from a non-member on either node it is an `Error` naming the
/// room.
async fn members_lists_every_nodes_members_to_members_only() {
    let (_redis, a, b) = start_cluster(&[]).await;
    let mut zoe = Chat::connect(&a, "zoe").await;
    let mut adam = Chat::connect(&b, "adam").await;
    let mut carol = Chat::connect(&a, "carol").await;
    let mut dave = Chat::connect(&b, "dave").await;
    let mut eve = Chat::connect(&a, "eve").await;
    join_in_turn("general", &mut [&mut zoe, &mut adam, &mut carol]).await;
    join_in_turn("other", &mut [&mut dave, &mut eve]).await;

    let everyone = members("general", &["adam", "carol", "zoe"]);
    assert_eq!(adam.members("general").await, everyone, "asked on B");
    assert_eq!(zoe.members("general").await, everyone, "asked on A");
    for outsider in [&mut dave, &mut eve] {
        outsider.send(ClientMessage::Members { room: "general".into() }).await;
        let (room, error) = outsider.error().await;
        assert_eq!(room.as_deref(), Some("general"), "{}: {error}", outsider.name);
    }
    stop_node(a).await;
    stop_node(b).await;
}

/// Says `count` messages `m1`, `m2`, ... in `room`, one at a time, and
/// returns each `Message` event as `chat` received it.
async fn say_in_turn(chat: &mut Chat, room: &str, count: u64) -> Vec<ServerEvent> {
    let mut events = Vec::new();
    for i in 1..=count {
        chat.say(room, &format!("m{i}")).await;
        let event = chat.event().await;
        assert_eq!(said(event.clone()), said_as(&chat.name, &format!("m{i}"), i));
        events.push(event);
    }
    events
}

/// A room whose keys in Redis expired (deleted here, as 24 h of silence
/// would) starts a new life with a new epoch. Alice, who saw three
/// messages of the old life, resumes with `since` 3 and the old epoch
/// after carol said five in the new one: she is told that the room started
/// over, and gets all five. Dave, resuming the same way without an epoch
/// (a client older than epochs), gets what the numbers say: the last two.
async fn a_room_whose_keys_expired_is_a_new_life_and_a_resume_from_the_old_gets_it_all() {
    let (redis, a, b) = start_cluster(&[]).await;
    let mut alice = Chat::connect(&a, "alice").await;
    alice.join("general").await;
    let old = match alice.raw_event().await {
        ServerEvent::Joined { epoch, seq: 0, .. } => epoch,
        other => panic!("expected alice's Joined, got {other:?}"),
    };
    say_in_turn(&mut alice, "general", 3).await;
    alice.send(ClientMessage::Leave { room: "general".into() }).await;
    assert_eq!(alice.event().await, left("general", "alice"));

    let mut keys =
        redis::Client::open(redis.url()).expect("a URL").get_connection().expect("Redis");
    let expired =
        ["members", "seq", "history", "epoch"].map(|key| format!("chat:room:general:{key}"));
    let deleted: i64 = redis::cmd("DEL").arg(&expired).query(&mut keys).expect("DEL");
    assert_eq!(deleted, 3, "seq, history and epoch were there (members emptied with the leave)");

    let mut carol = Chat::connect(&b, "carol").await;
    carol.join("general").await;
    let new = match carol.raw_event().await {
        ServerEvent::Joined { epoch, .. } => epoch,
        other => panic!("expected carol's Joined, got {other:?}"),
    };
    assert_ne!(new, old, "a new life, a new epoch");
    for i in 1..=5 {
        carol.say("general", &format!("n{i}")).await;
        said(carol.event().await);
    }

    let resume = |name: &str, epoch: Option<&str>| ClientMessage::Join {
        room: "general".into(),
        username: name.into(),
        since: Some(3),
        epoch: epoch.map(String::from),
    };
    alice.send(resume("alice", Some(&old))).await;
    match alice.raw_event().await {
        ServerEvent::Joined { epoch, username, .. } => {
            assert_eq!((epoch, username), (new, "alice".into()))
        }
        other => panic!("expected alice's Joined, got {other:?}"),
    }
    assert_eq!(alice.event().await, ServerEvent::StartedOver { room: "general".into() });
    for i in 1..=5 {
        let (username, content, _) = said(alice.event().await);
        assert_eq!((username.as_str(), content), ("carol", format!("n{i}")), "all of the new life");
    }
    alice.expect_nothing_pending().await;

    let mut dave = Chat::connect(&a, "dave").await;
    dave.send(resume("dave", None)).await;
    assert!(matches!(dave.event().await, ServerEvent::Joined { .. }));
    let numbered: Vec<String> = [said(dave.event().await).1, said(dave.event().await).1].into();
    assert_eq!(numbered, ["n4", "n5"], "without an epoch, since counts as it is");
    dave.expect_nothing_pending().await;
}

/// A join with `since` on the other node gets, after its `Joined`, exactly
/// the messages after `since`, with their original `seq`, timestamp and
/// content, then live ones.
async fn a_join_with_since_on_the_other_node_replays_the_missed_messages() {
    let (_redis, a, b) = start_cluster(&[]).await;
    let mut alice = Chat::connect(&a, "alice").await;
    join_in_turn("general", &mut [&mut alice]).await;
    let said_before = say_in_turn(&mut alice, "general", 5).await;

    let mut bob = Chat::connect(&b, "bob").await;
    bob.join_since("general", 2).await;
    assert_eq!(bob.event().await, joined_at("general", "bob", 5));
    assert_eq!(alice.event().await, joined_at("general", "bob", 5));
    for original in &said_before[2..] {
        assert_eq!(&bob.event().await, original, "the very message: seq, timestamp, content");
    }
    alice.say("general", "live").await;
    assert_eq!(said(bob.event().await), said_as("alice", "live", 6));
    assert_eq!(said(alice.event().await), said_as("alice", "live", 6));
    bob.expect_nothing_pending().await;
    stop_node(a).await;
    stop_node(b).await;
}

/// With `--history 3`, a join with `since` 0 after 5 messages gets a `Gap`
/// naming 1 and 2, then messages 3, 4 and 5.
async fn a_resume_older_than_the_clusters_history_gets_a_gap_first() {
    let (_redis, a, b) = start_cluster(&["--history", "3"]).await;
    let mut alice = Chat::connect(&a, "alice").await;
    join_in_turn("general", &mut [&mut alice]).await;
    let said_before = say_in_turn(&mut alice, "general", 5).await;

    let mut bob = Chat::connect(&b, "bob").await;
    bob.join_since("general", 0).await;
    assert_eq!(bob.event().await, joined_at("general", "bob", 5));
    let gap = ServerEvent::Gap { room: "general".into(), first: 1, last: 2 };
    assert_eq!(bob.event().await, gap);
    for original in &said_before[2..] {
        assert_eq!(&bob.event().await, original);
    }
    bob.expect_nothing_pending().await;
    stop_node(a).await;
    stop_node(b).await;
}

/// A `since` ahead of the room's last `seq` (set on the other node) is an
/// `Error` naming the room; the join does not happen, the connection stays
/// open, and a good `since` then joins.
async fn a_since_ahead_of_the_room_is_an_error_and_the_connection_stays_open() {
    let (_redis, a, b) = start_cluster(&[]).await;
    let mut alice = Chat::connect(&a, "alice").await;
    join_in_turn("general", &mut [&mut alice]).await;
    say_in_turn(&mut alice, "general", 5).await;

    let mut bob = Chat::connect(&b, "bob").await;
    bob.join_since("general", 6).await;
    let (room, error) = bob.error().await;
    assert_eq!(room.as_deref(), Some("general"), "{error}");
    bob.expect_nothing_pending().await;
    alice.expect_nothing_pending().await; // no Joined was announced

    bob.join_since("general", 5).await;
    assert_eq!(bob.event().await, joined_at("general", "bob", 5));
    assert_eq!(alice.event().await, joined_at("general", "bob", 5));
    bob.expect_nothing_pending().await;
    stop_node(a).await;
    stop_node(b).await;
}

/// While Redis is down, a message gets an `Error` naming its room and
/// saying the chat is temporarily unavailable, and every connection stays
/// open. Within 5 s of Redis's restart (empty: persistence is off) messages
/// cross nodes again, numbered above every `seq` seen before.
async fn while_redis_is_lost_messages_are_refused_and_after_it_returns_rooms_recover() {
    let (mut redis, a, b) = start_cluster(&[]).await;
    let mut alice = Chat::connect(&a, "alice").await;
    let mut bob = Chat::connect(&b, "bob").await;
    join_in_turn("general", &mut [&mut alice, &mut bob]).await;
    alice.say("general", "before").await;
    for chat in [&mut alice, &mut bob] {
        assert_eq!(said(chat.event().await), said_as("alice", "before", 1), "{}", chat.name);
    }
    bob.say("general", "before too").await;
    for chat in [&mut alice, &mut bob] {
        assert_eq!(said(chat.event().await), said_as("bob", "before too", 2), "{}", chat.name);
    }
    let last_before = 2;
    let mut keys =
        redis::Client::open(redis.url()).expect("a URL").get_connection().expect("Redis");
    let epoch: String =
        redis::cmd("GET").arg("chat:room:general:epoch").query(&mut keys).expect("GET");

    redis.stop().await;
    for chat in [&mut alice, &mut bob] {
        chat.say("general", "while Redis is gone").await;
        let (room, code, error) = chat.refused().await;
        assert_eq!(room.as_deref(), Some("general"), "{}: {error}", chat.name);
        assert_eq!(code, ErrorCode::Unavailable, "{}: {error}", chat.name);
        assert!(error.contains("temporarily unavailable"), "{}: {error}", chat.name);
        chat.expect_nothing_pending().await; // still open, and nothing else came
    }

    let restarted = Instant::now();
    redis.restart().await;
    let deadline = restarted + Duration::from_secs(5);
    // alice says a message every 300 ms until one reaches bob on the other
    // node; each attempt that fails gets her an Error.
    let mut attempts = 0;
    let crossed = loop {
        assert!(Instant::now() < deadline, "no message crossed nodes within 5 s of the restart");
        attempts += 1;
        alice.say("general", &format!("poll {attempts}")).await;
        let next_attempt = (Instant::now() + Duration::from_millis(300)).min(deadline);
        if let Some(event) = bob.event_by(next_attempt).await {
            break event;
        }
    };
    let (username, content, seq) = said(crossed.clone());
    assert_eq!(
        (username.as_str(), content.as_str()),
        ("alice", format!("poll {attempts}").as_str())
    );
    assert!(seq > last_before, "seq continues above {last_before} after the restart, got {seq}");
    for _ in 1..attempts {
        let (room, error) = alice.error().await;
        assert_eq!(room.as_deref(), Some("general"), "{error}");
        assert!(error.contains("temporarily unavailable"), "{error}");
    }
    assert_eq!(alice.event().await, crossed, "alice gets the message bob got");

    bob.say("general", "back on B").await;
    for chat in [&mut alice, &mut bob] {
        assert_eq!(said(chat.event().await), said_as("bob", "back on B", seq + 1), "{}", chat.name);
    }
    assert_eq!(alice.members("general").await, members("general", &["alice", "bob"]));
    alice.expect_nothing_pending().await;
    bob.expect_nothing_pending().await;
    // The room's life went on: the nodes gave the emptied Redis its epoch
    // back, so a client resuming with it gets no `StartedOver`.
    let mut carol = Chat::connect(&b, "carol").await;
    carol.join("general").await;
    match carol.raw_event().await {
        ServerEvent::Joined { epoch: after, .. } => assert_eq!(after, epoch, "the same life"),
        other => panic!("expected carol's Joined, got {other:?}"),
    }
    stop_node(a).await;
    stop_node(b).await;
}

/// A node killed with SIGKILL says nothing; within 10 s the other node's
/// members see its members' `Left`, and `Members` no longer lists them.
async fn a_killed_nodes_members_leave_within_10_s() {
    let (_redis, mut a, b) = start_cluster(&[]).await;
    let mut bob = Chat::connect(&b, "bob").await;
    let mut alice = Chat::connect(&a, "alice").await;
    let mut carol = Chat::connect(&a, "carol").await;
    join_in_turn("general", &mut [&mut bob, &mut alice, &mut carol]).await;

    let killed = Instant::now();
    kill_node(&mut a).await;
    let deadline = killed + Duration::from_secs(10);
    let mut gone = BTreeSet::new();
    while gone.len() < 2 {
        match bob.event_by(deadline).await {
            Some(ServerEvent::Left { room, username, .. }) if room == "general" => {
                assert!(gone.insert(username.clone()), "{username} left twice");
            }
            Some(other) => panic!("bob expected a Left, got {other:?}"),
            None => panic!("within 10 s of the kill bob saw only {gone:?} leave"),
        }
    }
    assert_eq!(gone, BTreeSet::from(["alice".to_string(), "carol".to_string()]));
    assert_eq!(bob.members("general").await, members("general", &["bob"]));
    bob.expect_nothing_pending().await;
    stop_node(b).await;
}

/// A node frozen (SIGSTOP) for longer than its `alive` key lives is taken
/// for dead: the other node's members see its member's `Left`. Once it runs
/// again (SIGCONT), it finds the cluster has lost it and claims its member
/// back: the others see it join again, its messages go through, `Members`
/// lists it, and the member itself, which never left, hears neither event.
async fn a_node_taken_for_dead_while_frozen_claims_its_members_back() {
    let (_redis, a, b) = start_cluster(&[]).await;
    let mut alice = Chat::connect(&a, "alice").await;
    let mut bob = Chat::connect(&b, "bob").await;
    join_in_turn("general", &mut [&mut alice, &mut bob]).await;

    a.program.signal("STOP");
    assert_eq!(bob.event().await, left("general", "alice"), "the frozen node is reaped");
    a.program.signal("CONT");
    assert_eq!(bob.event().await, joined("general", "alice"), "and claims alice back");
    alice.say("general", "still here").await;
    assert_eq!(said(alice.event().await), said_as("alice", "still here", 1));
    assert_eq!(said(bob.event().await), said_as("alice", "still here", 1));
    assert_eq!(bob.members("general").await, members("general", &["alice", "bob"]));
    alice.expect_nothing_pending().await;
    bob.expect_nothing_pending().await;
    stop_node(a).await;
    stop_node(b).await;
}

/// A node stopped with Ctrl-C closes its clients with 1001 and exits 0, and
/// the other node's members see its members' `Left` within 5 s.
async fn a_node_stopped_with_ctrl_c_exits_0_and_its_members_leave() {
    a_node_stopped_exits_0_and_its_members_leave("INT", Duration::from_secs(5)).await;
}

/// SIGTERM, how systemd, Docker and Kubernetes stop a node, does what Ctrl-C
/// does: the node reaps itself, and the other node's members see its
/// members' `Left` within 2 s, before its 3 s liveness key could have
/// expired (which is how a node that dies without reaping itself is
/// noticed: `a_killed_nodes_members_leave_within_10_s`).
async fn a_node_stopped_with_sigterm_exits_0_and_its_members_leave_at_once() {
    a_node_stopped_exits_0_and_its_members_leave("TERM", Duration::from_secs(2)).await;
}

/// A node stopped with `signal`, and how soon the other node must hear
/// that its member left.
async fn a_node_stopped_exits_0_and_its_members_leave(signal: &str, within: Duration) {
    let (_redis, a, b) = start_cluster(&[]).await;
    let mut alice = Chat::connect(&a, "alice").await;
    let mut bob = Chat::connect(&b, "bob").await;
    join_in_turn("general", &mut [&mut alice, &mut bob]).await;

    let stopped = Instant::now();
    a.program.signal(signal);
    assert_eq!(expect_close(&mut alice.ws).await, CloseCode::Away);
    // Reading on sends alice's answer to the close, as a real client does,
    // so the node does not wait out its close timeout for it.
    let ended = timeout(WAIT, async { while alice.ws.next().await.is_some() {} }).await;
    assert!(ended.is_ok(), "the node ends the connection after the close handshake");
    exits_cleanly(a).await;
    let seen = bob.event_by(stopped + within).await;
    assert_eq!(seen, Some(left("general", "alice")), "within {within:?} of SIG{signal}");
    assert_eq!(bob.members("general").await, members("general", &["bob"]));
    bob.expect_nothing_pending().await;
    stop_node(b).await;
}

/// alice has seen up to seq 2 on node A when A is killed; bob, on B, says
/// three more. alice reconnects to B and joins under the same name with
/// `since` 2: while the dead node still holds her name she is refused, and
/// retrying every 500 ms she is let in within 10 s of the kill, and then
/// gets exactly the three messages she missed, once each, in order.
async fn a_client_moved_to_the_other_node_gets_every_missed_message_once() {
    let (_redis, mut a, b) = start_cluster(&[]).await;
    let mut alice = Chat::connect(&a, "alice").await;
    let mut bob = Chat::connect(&b, "bob").await;
    join_in_turn("general", &mut [&mut alice, &mut bob]).await;
    for i in 1..=2 {
        bob.say("general", &format!("m{i}")).await;
        for chat in [&mut alice, &mut bob] {
            assert_eq!(said(chat.event().await), said_as("bob", &format!("m{i}"), i));
        }
    }
    let last_seen = 2;

    let killed = Instant::now();
    kill_node(&mut a).await;
    drop(alice);
    // bob's node learns of alice's departure at some point of what follows:
    // her `Left` may come anywhere in bob's stream, once.
    let mut bob_saw_her_leave = false;
    let mut missed = Vec::new();
    for i in 3..=5 {
        bob.say("general", &format!("m{i}")).await;
        loop {
            match bob.event().await {
                event @ ServerEvent::Message { .. } => {
                    assert_eq!(said(event.clone()), said_as("bob", &format!("m{i}"), i));
                    missed.push(event);
                    break;
                }
                event if event == left("general", "alice") && !bob_saw_her_leave => {
                    bob_saw_her_leave = true;
                }
                other => panic!("bob expected m{i}, got {other:?}"),
            }
        }
    }

    let deadline = killed + Duration::from_secs(10);
    let mut alice = Chat::connect(&b, "alice").await;
    loop {
        alice.join_since("general", last_seen).await;
        match alice.event().await {
            event if event == joined_at("general", "alice", 5) => break,
            ServerEvent::Error { room, code: ErrorCode::NameTaken, message } => {
                assert_eq!(room.as_deref(), Some("general"), "{message}");
            }
            other => panic!("alice expected Joined or the name taken, got {other:?}"),
        }
        let retry = Instant::now() + Duration::from_millis(500);
        assert!(retry < deadline, "alice's name still taken 10 s after her node was killed");
        tokio::time::sleep_until(retry.into()).await; // her backoff, not a wait for an event
    }
    for original in &missed {
        assert_eq!(&alice.event().await, original, "each missed message once, in order");
    }
    alice.expect_nothing_pending().await;

    loop {
        match bob.event().await {
            event if event == joined_at("general", "alice", 5) => break,
            event if event == left("general", "alice") && !bob_saw_her_leave => {
                bob_saw_her_leave = true;
            }
            other => panic!("bob expected alice's Left and Joined, got {other:?}"),
        }
    }
    assert!(bob_saw_her_leave, "bob saw alice leave (her node died) before she came back");
    bob.expect_nothing_pending().await;
    stop_node(b).await;
}

/// A node whose Redis does not answer (nothing listening on its port)
/// never prints its `listening on` line: it exits 1 with one line on
/// stderr that names Redis.
async fn a_node_whose_redis_is_unreachable_exits_1_with_one_line() {
    let nothing = common::refused_port();
    let url = format!("redis://127.0.0.1:{}", nothing.port);
    let mut node = Program::start("chat_server", &["127.0.0.1:0", "--redis", &url]);
    assert_eq!(node.exit_code().await, 1);
    assert_eq!(node.remaining_lines().await, Vec::<String>::new(), "nothing on stdout");
    let stderr = node.stderr_text().await;
    let lines: Vec<&str> = stderr.lines().filter(|line| !line.trim().is_empty()).collect();
    assert_eq!(lines.len(), 1, "one line: {stderr}");
    assert!(lines[0].to_lowercase().contains("redis"), "names Redis: {stderr}");
}

/// The terminal client, given both nodes, loses its node (SIGKILL): it moves
/// to the other node by itself, waits until the dead node's hold on its name
/// is reaped, rejoins with the last `seq` it showed, and shows what was said
/// meanwhile once, in order, then live messages. (The user's experience of
/// chapter 9.5, end to end.)
async fn chat_client_moves_to_the_other_node_and_shows_every_message_once() {
    let (_redis, mut a, b) = start_cluster(&[]).await;
    let servers = format!("{},{}", a.url, b.url);
    // Quick reconnects, never giving up: the test, not the backoff, decides
    // how long is too long.
    let args = ["--base-ms", "20", "--cap-ms", "200", "--max-attempts", "0", &servers, "alice"];
    let mut alice = Program::start("chat_client", &args);
    alice.wait_for(|l| l.ends_with("#general * alice joined")).await;
    let mut bob = Chat::connect(&b, "bob").await;
    bob.join("general").await;
    assert_eq!(bob.event().await, joined("general", "bob"));
    alice.wait_for(|l| l.ends_with("#general * bob joined")).await;
    bob.say("general", "before").await;
    assert_eq!(said(bob.event().await), said_as("bob", "before", 1));
    let mut transcript = vec![alice.wait_for(|l| l.ends_with("<bob> before")).await.0];

    kill_node(&mut a).await;
    for text in ["while away 1", "while away 2", "while away 3"] {
        bob.say("general", text).await;
    }
    // bob hears his messages, then the reap of the dead node (3 s after
    // its last refresh), then alice back, now on his node.
    let mut seen = Vec::new();
    while seen.len() < 5 {
        seen.push(match bob.event().await {
            ServerEvent::Message { content, .. } => content,
            ServerEvent::Left { username, .. } => format!("-{username}"),
            ServerEvent::Joined { username, .. } => format!("+{username}"),
            other => panic!("bob: unexpected {other:?}"),
        });
    }
    let expected = ["while away 1", "while away 2", "while away 3", "-alice", "+alice"];
    assert_eq!(seen, expected, "bob's view");
    bob.say("general", "after").await;

    let (line, before) = alice.wait_for(|l| l.ends_with("<bob> after")).await;
    transcript.extend(before);
    transcript.push(line);
    alice.write_stdin("/quit\n").await;
    assert_eq!(alice.exit_code().await, 0);
    transcript.extend(alice.remaining_lines().await);
    let from_bob: Vec<&str> = transcript
        .iter()
        .filter_map(|line| line.split_once("<bob> ").map(|(_, text)| text))
        .collect();
    let every_one_once = ["before", "while away 1", "while away 2", "while away 3", "after"];
    assert_eq!(from_bob, every_one_once, "alice's screen:\n{}", transcript.join("\n"));
    stop_node(b).await;
}

/// A rolling restart, as chapter 11 does one: each node of the cluster in
/// turn is stopped with SIGTERM, as a service manager stops it, and started
/// again on its address. Two terminal clients, one on each node, move to
/// the node that is up and resume there; what was said while they moved
/// reaches them after all, and each screen shows every message once, in
/// the order said.
async fn a_rolling_restart_loses_no_message() {
    let (redis, a, b) = start_cluster(&[]).await;
    let (a_addr, b_addr, url) = (a.addr.clone(), b.addr.clone(), redis.url());
    let client = |first: &Server, second: &Server, name: &str| {
        let servers = format!("{},{}", first.url, second.url);
        let args = ["--base-ms", "20", "--cap-ms", "200", "--max-attempts", "0", &servers, name];
        Program::start("chat_client", &args)
    };
    // Reads a client's screen up to a line ending with `end`, keeping it all.
    async fn until(client: &mut Program, seen: &mut Vec<String>, end: &str) {
        let (line, before) = client.wait_for(|l| l.ends_with(end)).await;
        seen.extend(before);
        seen.push(line);
    }
    let (mut alice_saw, mut carol_saw) = (Vec::new(), Vec::new());
    let mut alice = client(&a, &b, "alice");
    until(&mut alice, &mut alice_saw, "#general * alice joined").await;
    // carol only then, so that alice is there to see her join.
    let mut carol = client(&b, &a, "carol");
    until(&mut carol, &mut carol_saw, "#general * carol joined").await;
    until(&mut alice, &mut alice_saw, "#general * carol joined").await;
    alice.write_stdin("one\n").await;
    until(&mut carol, &mut carol_saw, "<alice> one").await;

    // Node A goes: alice moves to B while carol, there, speaks.
    a.program.signal("TERM");
    exits_cleanly(a).await;
    carol.write_stdin("two\n").await;
    until(&mut alice, &mut alice_saw, "<carol> two").await;
    let a = Server::start_on("chat_server", &a_addr, &["--redis", &url]).await;
    let mut bob = Chat::connect(&a, "bob").await;
    bob.join("general").await;
    assert_eq!(bob.event().await, joined_at("general", "bob", 2), "after one and two");

    // Node B goes: both move to the new A while bob, there, speaks.
    b.program.signal("TERM");
    exits_cleanly(b).await;
    bob.say("general", "three").await;
    until(&mut alice, &mut alice_saw, "<bob> three").await;
    until(&mut carol, &mut carol_saw, "<bob> three").await;
    let b = Server::start_on("chat_server", &b_addr, &["--redis", &url]).await;
    alice.write_stdin("four\n").await;
    until(&mut carol, &mut carol_saw, "<alice> four").await;

    for (client, seen) in [(&mut alice, &mut alice_saw), (&mut carol, &mut carol_saw)] {
        client.write_stdin("/quit\n").await;
        let code = client.exit_code().await;
        assert_eq!(code, 0, "/quit: {}", client.stderr_text().await);
        seen.extend(client.remaining_lines().await);
        let said: Vec<&str> = seen
            .iter()
            .filter_map(|line| line.split_once("#general <").map(|(_, said)| said))
            .collect();
        let every_one_once = ["alice> one", "carol> two", "bob> three", "alice> four"];
        assert_eq!(said, every_one_once, "a screen:\n{}", seen.join("\n"));
    }
    stop_node(a).await;
    stop_node(b).await;
}
