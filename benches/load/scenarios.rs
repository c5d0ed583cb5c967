//! The scenarios. Each one starts a fresh server, connects its clients,
//! measures one phase, stops the server with SIGINT, and turns what the
//! clients saw into a [`Row`].
//!
//! Every client is its own task, reading continuously (a client that reads
//! late is what the servers evict, and the generator must not cause what it
//! measures). Every wait has a deadline that records a problem instead of
//! hanging, and nothing sleeps to synchronise: starting gates, countdowns
//! and the servers' own replies do.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use futures_util::{SinkExt, Stream, StreamExt};
use tokio::task::JoinSet;
use tokio::time::{Instant, Interval, interval, interval_at, timeout};
use tokio_tungstenite::tungstenite::{self, Message, Utf8Bytes};

use crate::client::{
    self, Certificates, ClientStats, CountOnce, Countdown, Endpoint, Gate, Probe, Ws, connect_many,
    json_str, json_u64, micros_since, now_ns, parse_stamp, stamp,
};
use crate::report::Row;
use crate::server::{Impl, Mode, Paths, Redis, Server};

/// The scenarios, in the order they run.
pub const NAMES: [&str; 10] = [
    "echo",
    "broadcast",
    "chat",
    "chat-admin",
    "chat-cluster",
    "chat-stalled",
    "idle",
    "idle-tls",
    "join-storm-1k",
    "join-storm-10k",
];

/// Whether `--compare` also runs the Node, Python and Go servers for
/// `scenario`. chat-admin measures our admin port, chat-stalled our eviction
/// policy, chat-cluster our Redis engine
/// (`--redis`), and idle-tls our TLS (`--tls-cert`, `--tls-key`), which the
/// compare servers do not have.
pub fn compared(scenario: &str) -> bool {
    !matches!(scenario, "chat-admin" | "chat-stalled" | "chat-cluster" | "idle-tls")
}

/// Whether `scenario` also runs against our chat inside axum (axum_chat,
/// when the benchmark is built with the `axum` feature): chat and idle, to
/// say what the framework costs per delivery and per connection.
pub fn on_axum(scenario: &str) -> bool {
    matches!(scenario, "chat" | "idle")
}

/// chat-cluster's chat_server nodes, sharing one redis-server.
const CLUSTER_NODES: usize = 2;

/// How big each scenario is.
#[derive(Debug, Clone)]
pub struct Scale {
    pub echo_connections: usize,
    /// Echoes per connection; `echo_for` bounds the phase in time instead.
    pub echo_count: u64,
    pub echo_for: Option<Duration>,
    pub broadcast_subscribers: usize,
    pub broadcast_messages: u64,
    pub broadcast_rate: f64,
    /// Members of the chat room, publishers and stalled ones included.
    pub chat_members: usize,
    pub chat_publishers: usize,
    pub chat_messages_each: u64,
    pub chat_rate_each: f64,
    pub stalled: usize,
    pub idle_connections: usize,
    pub idle_rooms: usize,
    pub storm_small: usize,
    pub storm_big: usize,
    /// Handshakes in flight while connecting many clients.
    pub in_flight: usize,
    /// Deadline for a phase beyond its planned length (joins, draining).
    pub deadline: Duration,
}

impl Scale {
    /// `cargo bench --bench load`.
    pub fn full() -> Scale {
        Scale {
            echo_connections: 50,
            echo_count: u64::MAX,
            // Several seconds of CPU time at a 10 ms clock tick: well under
            // 1 % resolution.
            echo_for: Some(Duration::from_secs(10)),
            broadcast_subscribers: 1_000,
            broadcast_messages: 2_000, // 10 s at 200 msg/s
            broadcast_rate: 200.0,
            chat_members: 1_000,
            chat_publishers: 20,
            chat_messages_each: 100, // 10 s at 10 msg/s each, 200 msg/s in all
            chat_rate_each: 10.0,
            stalled: 5,
            idle_connections: 10_000,
            idle_rooms: 100,
            storm_small: 1_000,
            storm_big: 10_000,
            in_flight: 100,
            deadline: Duration::from_secs(60),
        }
    }

    /// The run `cargo test` does: every code path, a few seconds, correctness
    /// only (debug builds, so the numbers mean nothing).
    pub fn tiny() -> Scale {
        Scale {
            echo_connections: 5,
            echo_count: 20,
            echo_for: None,
            broadcast_subscribers: 20,
            broadcast_messages: 50,
            broadcast_rate: 200.0,
            chat_members: 20,
            chat_publishers: 5,
            chat_messages_each: 10,
            chat_rate_each: 20.0,
            stalled: 2,
            idle_connections: 200,
            idle_rooms: 10,
            storm_small: 50,
            storm_big: 200,
            in_flight: 50,
            deadline: Duration::from_secs(15),
        }
    }
}

/// What every scenario needs.
pub struct Ctx {
    pub scale: Scale,
    pub paths: Paths,
    /// Our soft limit on open files.
    pub open_files: u64,
    pub clock_ticks: u64,
}

/// Runs `scenario` against `implementation`.
pub async fn run(scenario: &str, implementation: Impl, ctx: &Ctx) -> Row {
    let mut row = Row::new(scenario, implementation);
    let s = &ctx.scale;
    if scenario == "chat-cluster"
        && let Some(why) = Redis::missing()
    {
        // As the tests do with a component that is missing (see
        // `trial_needing` in tests/common/mod.rs): skipped, so that it
        // claims no pass, and a failure with CI set.
        let why =
            format!("redis-server missing: {why}; install it with `apt-get install redis-server`");
        if std::env::var_os("CI").is_some() {
            row.problem(format!("{why}. CI must run this scenario (.ci/run installs it)"));
            return row;
        }
        return Row::skipped(scenario, implementation, &why);
    }
    let result = match scenario {
        "echo" => echo(ctx, implementation, &mut row).await,
        "broadcast" => broadcast(ctx, implementation, &mut row).await,
        "chat" => chat(ctx, implementation, &mut row, 0, 1).await,
        "chat-admin" => chat(ctx, implementation, &mut row, 0, 0).await,
        "chat-cluster" => chat(ctx, implementation, &mut row, 0, CLUSTER_NODES).await,
        "chat-stalled" => chat(ctx, implementation, &mut row, s.stalled, 1).await,
        "idle" => idle(ctx, implementation, &mut row, Transport::Plain).await,
        "idle-tls" => idle(ctx, implementation, &mut row, Transport::Tls).await,
        "join-storm-1k" => storm(ctx, implementation, &mut row, s.storm_small).await,
        "join-storm-10k" => storm(ctx, implementation, &mut row, s.storm_big).await,
        other => Err(format!("no scenario {other}")),
    };
    if let Err(e) = result {
        row.problem(e);
    }
    row
}

// ---------------------------------------------------------------------------
// echo: ping-pong on 50 connections

/// No echo within this long means the connection is broken.
const ECHO_TIMEOUT: Duration = Duration::from_secs(10);

async fn echo(ctx: &Ctx, implementation: Impl, row: &mut Row) -> Result<(), String> {
    let s = &ctx.scale;
    let n = s.echo_connections;
    need_open_files(ctx, n)?;
    let server = start(ctx, implementation, Mode::Echo, &[], row).await?;
    let rss_before = server.rss_kib()?;
    let clients = connect_many(&[server.endpoint()], n, s.in_flight, false, None).await?;
    row.connections = n;
    row.kib_per_connection = kib_per(rss_before, server.rss_kib()?, n);

    let done = Countdown::new(n);
    let deliveries = Arc::new(AtomicU64::new(0));
    let window = Window::open(&[server.pid], &deliveries)?;
    let until = s.echo_for.map(|d| Instant::now() + d);
    let mut tasks = JoinSet::new();
    for (id, ws) in clients.into_iter().enumerate() {
        let (done, deliveries) = (done.clone(), deliveries.clone());
        tasks.spawn(echo_client(ws, id, s.echo_count, until, done, deliveries));
    }
    let planned = s.echo_for.unwrap_or_default();
    let unfinished = done.wait(Instant::now() + planned + s.deadline).await;
    let measured = window.close(ctx, &deliveries)?;
    let stats = finish(vec![server], tasks, row).await;

    if unfinished > 0 {
        row.problem(format!("{unfinished} echo clients were still waiting after the deadline"));
    }
    measured.record(row);
    row.set_rate(measured.deliveries as f64 / measured.secs, "msg/s");
    message_latencies(&stats, row);
    let sent: u64 = stats.iter().map(|c| c.sent).sum();
    let echoed: u64 = stats.iter().map(|c| c.messages).sum();
    row.lost = Some(sent.saturating_sub(echoed));
    row.evicted = Some(evictions(&stats));
    row.notes.push(format!("{echoed} echoes, one in flight per connection"));
    check_clients(&stats, row);
    Ok(())
}

/// Sends a timestamped message, waits for its echo, and again, until the
/// count or the time is up; then waits for the server to close.
async fn echo_client(
    mut ws: Ws,
    id: usize,
    count: u64,
    until: Option<Instant>,
    done: Arc<Countdown>,
    deliveries: Arc<AtomicU64>,
) -> ClientStats {
    let mut stats = ClientStats::default();
    let mut done = CountOnce::new(&done);
    while stats.sent < count && until.is_none_or(|t| Instant::now() < t) {
        let text = stamp(id, stats.sent + 1);
        if let Err(e) = ws.send(Message::text(text.clone())).await {
            stats.dropped = Some(e.to_string());
            return stats;
        }
        stats.sent += 1;
        let echo = match timeout(ECHO_TIMEOUT, next_text(&mut ws, &mut stats)).await {
            Ok(Some(echo)) => echo,
            Ok(None) => return stats, // the connection ended; `stats` says how
            Err(_) => {
                stats.dropped = Some(format!("no echo within {ECHO_TIMEOUT:?}"));
                return stats;
            }
        };
        deliveries.fetch_add(1, Ordering::Relaxed);
        match parse_stamp(&echo) {
            Some(sent) if echo.as_str() == text => {
                stats.messages += 1;
                stats.latencies_us.push(micros_since(sent.sent_ns));
            }
            _ => stats.unexpected(&echo),
        }
    }
    done.fire();
    client::read_until_closed(&mut ws, &mut stats).await;
    stats
}

/// The next text frame, or `None` when the connection ended.
async fn next_text(ws: &mut Ws, stats: &mut ClientStats) -> Option<Utf8Bytes> {
    loop {
        match ws.next().await {
            Some(Ok(Message::Text(text))) => return Some(text),
            other => {
                if stats.on_end(other) {
                    return None;
                }
            }
        }
    }
}

// ---------------------------------------------------------------------------
// broadcast: one publisher, 1,000 subscribers

struct BroadcastShared {
    /// Receivers that have not seen a warm-up message yet.
    warm: Arc<Countdown>,
    /// Receivers that have not received (or been told they missed) every
    /// measured message yet.
    received_all: Arc<Countdown>,
    expect: u64,
    deliveries: AtomicU64,
}

async fn broadcast(ctx: &Ctx, implementation: Impl, row: &mut Row) -> Result<(), String> {
    let s = &ctx.scale;
    let n = s.broadcast_subscribers;
    need_open_files(ctx, n + 1)?;
    let server = start(ctx, implementation, Mode::Broadcast, &[], row).await?;
    let rss_before = server.rss_kib()?;
    let subscribers = connect_many(&[server.endpoint()], n, s.in_flight, false, None).await?;
    let publisher = client::connect(server.endpoint(), false, None).await?;
    row.connections = n + 1;
    row.kib_per_connection = kib_per(rss_before, server.rss_kib()?, n + 1);

    // The server relays to every client, the publisher too: n + 1 receivers.
    let receivers = n + 1;
    let shared = Arc::new(BroadcastShared {
        warm: Countdown::new(receivers),
        received_all: Countdown::new(receivers),
        expect: s.broadcast_messages,
        deliveries: AtomicU64::new(0),
    });
    let (mut sink, publisher_stream) = publisher.split();
    let mut tasks = JoinSet::new();
    for ws in subscribers {
        tasks.spawn(subscriber(ws, shared.clone()));
    }
    tasks.spawn(subscriber(publisher_stream, shared.clone()));

    // A client whose handshake is done is not necessarily subscribed yet
    // (the server subscribes it just after). So the publisher sends warm-up
    // messages, one every 50 ms, until every receiver has seen one: from then
    // on, every message must reach every receiver.
    let warm_deadline = Instant::now() + s.deadline;
    loop {
        sink.send(Message::text("w")).await.map_err(|e| format!("publisher: {e}"))?;
        let retry = (Instant::now() + Duration::from_millis(50)).min(warm_deadline);
        if shared.warm.wait(retry).await == 0 {
            break;
        }
        if Instant::now() >= warm_deadline {
            return Err(format!(
                "{} of {receivers} receivers saw no warm-up message within {:?}",
                shared.warm.left(),
                s.deadline
            ));
        }
    }

    let window = Window::open(&[server.pid], &shared.deliveries)?;
    let mut pace = interval(Duration::from_secs_f64(1.0 / s.broadcast_rate));
    for n in 1..=s.broadcast_messages {
        pace.tick().await;
        sink.send(Message::text(stamp(0, n))).await.map_err(|e| format!("publisher: {e}"))?;
    }
    let lacking = shared.received_all.wait(Instant::now() + s.deadline).await;
    let measured = window.close(ctx, &shared.deliveries)?;
    let stats = finish(vec![server], tasks, row).await;

    if lacking > 0 {
        row.problem(format!(
            "{lacking} receivers still lacked messages {:?} after the last was sent",
            s.deadline
        ));
    }
    measured.record(row);
    let received: u64 = stats.iter().map(|c| c.messages).sum();
    row.set_rate(received as f64 / measured.secs, "deliv/s");
    message_latencies(&stats, row);
    let lost: u64 = stats.iter().map(|c| s.broadcast_messages.saturating_sub(c.messages)).sum();
    row.lost = Some(lost);
    row.evicted = Some(evictions(&stats));
    row.notes.push(format!(
        "{} messages of {} bytes at {} msg/s to {receivers} receivers (the publisher too)",
        s.broadcast_messages,
        client::CONTENT_BYTES,
        s.broadcast_rate
    ));
    let missed: u64 = stats.iter().map(|c| c.missed).sum();
    if missed > 0 {
        row.notes.push(format!("the server told receivers they missed {missed} messages"));
    }
    if lost > 0 {
        row.problem(format!("{lost} deliveries lost"));
    }
    check_clients(&stats, row);
    Ok(())
}

/// A broadcast receiver: checks order, times every message, counts what
/// the server says it missed.
async fn subscriber<S>(mut stream: S, shared: Arc<BroadcastShared>) -> ClientStats
where
    S: Stream<Item = Result<Message, tungstenite::Error>> + Unpin,
{
    let mut stats = ClientStats::default();
    let mut warm = CountOnce::new(&shared.warm);
    let mut received_all = CountOnce::new(&shared.received_all);
    let mut last_n = 0;
    loop {
        let text = match stream.next().await {
            Some(Ok(Message::Text(text))) => text,
            other => {
                if stats.on_end(other) {
                    return stats;
                }
                continue;
            }
        };
        shared.deliveries.fetch_add(1, Ordering::Relaxed);
        if text.starts_with('w') {
            warm.fire();
        } else if let Some(stamp) = parse_stamp(&text) {
            stats.messages += 1;
            stats.latencies_us.push(micros_since(stamp.sent_ns));
            if stamp.n <= last_n {
                stats.out_of_order += 1;
            }
            last_n = stamp.n;
        } else if let Some(missed) = missed_notice(&text) {
            stats.missed += missed;
        } else {
            stats.unexpected(&text);
        }
        if stats.messages + stats.missed >= shared.expect {
            received_all.fire();
        }
    }
}

/// `[server] you missed N messages`, broadcast_server's notice to a client
/// that fell behind.
fn missed_notice(text: &str) -> Option<u64> {
    text.strip_prefix("[server] you missed ")?.split(' ').next()?.parse().ok()
}

// ---------------------------------------------------------------------------
// chat, chat-stalled, idle, idle-tls, join storms: the chat server

struct ChatShared {
    /// Opened when every member should send its Join.
    go_join: Gate,
    /// Opened when the publishers should start.
    go_publish: Gate,
    /// Opened when the stalled members should find out where they stand.
    go_probe: Gate,
    /// Members without their own Joined yet.
    joined: Arc<Countdown>,
    /// Reading members that have not received every message yet.
    received_all: Arc<Countdown>,
    /// Stalled members that have not been probed yet.
    probed: Arc<Countdown>,
    /// Joined events still to come, when the scenario knows how many.
    presence: Option<Arc<Countdown>>,
    /// Messages every reading member should receive.
    expect_messages: u64,
    publishers: usize,
    /// Text frames received by reading members.
    deliveries: AtomicU64,
}

impl ChatShared {
    fn new(members: usize, readers: usize, stalled: usize, publishers: usize, expect: u64) -> Self {
        ChatShared {
            go_join: Gate::default(),
            go_publish: Gate::default(),
            go_probe: Gate::default(),
            joined: Countdown::new(members),
            received_all: Countdown::new(if expect > 0 { readers } else { 0 }),
            probed: Countdown::new(stalled),
            presence: None,
            expect_messages: expect,
            publishers,
            deliveries: AtomicU64::new(0),
        }
    }
}

/// One chat member.
struct Member {
    room: String,
    username: String,
    /// Set for the members that also publish.
    publish: Option<Publish>,
}

struct Publish {
    id: usize,
    count: u64,
    every: Duration,
    /// When to start after the gate opens. Publishers start evenly spread
    /// over one period, so that 20 of them at 10 msg/s make an even 200
    /// msg/s rather than a burst of 20 every 100 ms.
    offset: Duration,
}

fn join_command(member: &Member) -> Message {
    Message::text(format!(
        r#"{{"type":"Join","room":"{}","username":"{}"}}"#,
        member.room, member.username
    ))
}

/// A chat member that reads everything as it arrives: sends its Join when
/// the gate opens, confirms it by its own Joined, publishes if it is a
/// publisher, and checks every message for order and time.
async fn member(mut ws: Ws, me: Member, shared: Arc<ChatShared>) -> ClientStats {
    let mut stats = ClientStats::default();
    let mut joined = CountOnce::new(&shared.joined);
    let mut received_all = CountOnce::new(&shared.received_all);
    if shared.expect_messages == 0 {
        received_all.fire();
    }
    let quota = me.publish.as_ref().map_or(0, |p| p.count);
    let mut last_n = vec![0_u64; shared.publishers];
    let mut last_seq = 0;

    // Read while waiting at the gate: connecting 10,000 clients takes
    // seconds, and tungstenite answers the server's heartbeat pings only
    // while we read. Nothing else should arrive before we join.
    loop {
        tokio::select! {
            () = shared.go_join.opened() => break,
            frame = ws.next() => match frame {
                Some(Ok(Message::Text(text))) => stats.unexpected(&text),
                other => {
                    if stats.on_end(other) {
                        return stats;
                    }
                }
            },
        }
    }
    let join_sent = now_ns();
    if let Err(e) = ws.send(join_command(&me)).await {
        stats.dropped = Some(e.to_string());
        return stats;
    }
    let mut pace: Option<Interval> = None;
    loop {
        tokio::select! {
            frame = ws.next() => {
                let text = match frame {
                    Some(Ok(Message::Text(text))) => text,
                    other => {
                        if stats.on_end(other) {
                            return stats;
                        }
                        continue;
                    }
                };
                shared.deliveries.fetch_add(1, Ordering::Relaxed);
                match json_str(&text, "type") {
                    Some("Message") => {
                        stats.messages += 1;
                        let seq = json_u64(&text, "seq").unwrap_or(0);
                        if seq <= last_seq {
                            stats.out_of_order += 1;
                        }
                        last_seq = seq;
                        stats.max_seq = stats.max_seq.max(seq);
                        match json_str(&text, "content").and_then(parse_stamp) {
                            Some(stamp) => {
                                stats.latencies_us.push(micros_since(stamp.sent_ns));
                                if let Some(last) = last_n.get_mut(stamp.publisher) {
                                    if stamp.n <= *last {
                                        stats.out_of_order += 1;
                                    }
                                    *last = stamp.n;
                                }
                            }
                            None => stats.unexpected(&text),
                        }
                        if stats.messages >= shared.expect_messages {
                            received_all.fire();
                        }
                    }
                    Some("Joined") => {
                        stats.presence += 1;
                        if let Some(presence) = &shared.presence {
                            presence.tick();
                        }
                        let mine = json_str(&text, "username") == Some(me.username.as_str());
                        if mine && joined.is_pending() {
                            stats.joined_at_ns = Some(now_ns());
                            stats.join_us = Some(micros_since(join_sent));
                            joined.fire();
                        }
                    }
                    Some("Left") => stats.presence += 1,
                    _ => stats.unexpected(&text),
                }
            }
            () = shared.go_publish.opened(), if pace.is_none() && quota > 0 => {
                pace = me.publish.as_ref().map(|p| interval_at(Instant::now() + p.offset, p.every));
            }
            () = tick(&mut pace), if stats.sent < quota => {
                let id = me.publish.as_ref().map_or(0, |p| p.id);
                let content = stamp(id, stats.sent + 1);
                let say = format!(
                    r#"{{"type":"Message","room":"{}","content":"{content}"}}"#,
                    me.room
                );
                if let Err(e) = ws.send(Message::text(say)).await {
                    stats.dropped = Some(format!("publishing: {e}"));
                    return stats;
                }
                stats.sent += 1;
            }
        }
    }
}

/// The next tick of `pace`, or never when there is none.
async fn tick(pace: &mut Option<Interval>) {
    match pace {
        Some(pace) => {
            pace.tick().await;
        }
        None => std::future::pending().await,
    }
}

/// A member that joins, reads up to its own Joined, and then never reads
/// again: everything the server sends it piles up, in its small receive
/// buffer, in the server's socket buffer, then in the server's queue for
/// it, until the server evicts it. At the end the scenario probes it.
async fn stalled_member(mut ws: Ws, me: Member, shared: Arc<ChatShared>) -> ClientStats {
    let mut stats = ClientStats { stalled: true, ..ClientStats::default() };
    let mut joined = CountOnce::new(&shared.joined);
    let mut probed = CountOnce::new(&shared.probed);
    shared.go_join.opened().await;
    let join_sent = now_ns();
    if let Err(e) = ws.send(join_command(&me)).await {
        stats.dropped = Some(e.to_string());
        return stats;
    }
    while joined.is_pending() {
        match ws.next().await {
            Some(Ok(Message::Text(text))) => {
                let is_joined = json_str(&text, "type") == Some("Joined");
                if is_joined && json_str(&text, "username") == Some(me.username.as_str()) {
                    stats.joined_at_ns = Some(now_ns());
                    stats.join_us = Some(micros_since(join_sent));
                    joined.fire();
                }
            }
            other => {
                if stats.on_end(other) {
                    return stats;
                }
            }
        }
    }

    shared.go_probe.opened().await;
    let probe = client::probe(&mut ws, Duration::from_secs(20)).await;
    if let Probe::Closed(code) = probe {
        stats.close_code = Some(code);
    }
    let connected = matches!(probe, Probe::Connected | Probe::Closed(_));
    stats.probe = Some(probe);
    probed.fire();
    if connected {
        // Finish the close handshake (ours or, later, the shutdown's).
        client::read_until_closed(&mut ws, &mut stats).await;
    }
    stats
}

/// chat-admin's Prometheus: `GET /metrics` every second (the first at
/// once), until aborted; a failed scrape ends it with the reason.
async fn scrape_every_second(admin: SocketAddr) -> Result<(), String> {
    let mut every = interval(Duration::from_secs(1));
    loop {
        every.tick().await;
        scrape(admin).await?;
    }
}

/// `GET /metrics` on a connection of its own: the page, if the answer is a
/// 200 with the chat's counters on it.
async fn scrape(admin: SocketAddr) -> Result<String, String> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let exchange = async {
        let mut stream = tokio::net::TcpStream::connect(admin).await?;
        let request =
            format!("GET /metrics HTTP/1.1\r\nHost: {admin}\r\nConnection: close\r\n\r\n");
        stream.write_all(request.as_bytes()).await?;
        let mut page = String::new();
        stream.read_to_string(&mut page).await?;
        Ok::<_, std::io::Error>(page)
    };
    let page = match timeout(Duration::from_secs(5), exchange).await {
        Ok(Ok(page)) => page,
        Ok(Err(e)) => return Err(format!("GET /metrics failed: {e}")),
        Err(_) => return Err("GET /metrics took over 5 s".into()),
    };
    if !page.starts_with("HTTP/1.1 200") || !page.contains("\nchat_deliveries_total ") {
        return Err(format!("GET /metrics: not the metrics page: {page:.200}"));
    }
    Ok(page)
}

/// The value of a metric without labels on a `/metrics` page.
fn metric(page: &str, name: &str) -> Option<u64> {
    page.lines().find_map(|line| line.strip_prefix(name)?.strip_prefix(' ')?.parse().ok())
}

/// Settings for our chat server in every chat scenario. Publishers send 10
/// commands a second, right at the default rate limit; the limit is raised
/// so that jitter in our pacing cannot trip it: this measures delivery, not
/// the limiter.
fn chat_settings() -> Vec<(&'static str, String)> {
    vec![("rate-limit", "50".into()), ("rate-burst", "50".into())]
}

/// chat (`stalled` = 0) and chat-stalled: members join at once, then 20 of
/// them publish 10 msg/s each, and every member receives every message.
///
/// chat-cluster (`nodes` > 1): the same on `nodes` chat_servers that share
/// a redis-server (`--redis`). Members take turns among the nodes, and so
/// do publishers, so every member receives messages sent on every node; the
/// CPU and memory columns are the nodes' and redis-server's together.
///
/// chat-admin (`nodes` = 0): `chat` on one server with `--admin-addr`,
/// whose `/metrics` is scraped every second through the measured phase, as
/// Prometheus would (more often than its default 15 s), to show what the
/// counting and the scrapes cost per delivery.
async fn chat(
    ctx: &Ctx,
    implementation: Impl,
    row: &mut Row,
    stalled: usize,
    nodes: usize,
) -> Result<(), String> {
    let admin = nodes == 0;
    let nodes = nodes.max(1);
    let s = &ctx.scale;
    let members = s.chat_members;
    let readers = members - stalled;
    let planned = s.chat_publishers as u64 * s.chat_messages_each;
    need_open_files(ctx, members)?;
    let mut settings = chat_settings();
    if stalled > 0 {
        // Stalled members never answer the heartbeat's pings either; without
        // this they would be dropped for that (1011) after 15 s, and the
        // scenario is about the slow-consumer policy.
        settings.push(("pong-timeout-ms", "600000".into()));
    }
    if admin {
        settings.push(("admin-addr", "127.0.0.1:0".into()));
    }
    let redis = if nodes > 1 { Some(Redis::start().await?) } else { None };
    if let Some(redis) = &redis {
        settings.push(("redis", redis.url.clone()));
    }
    let mut servers = Vec::with_capacity(nodes);
    for _ in 0..nodes {
        servers.push(start(ctx, implementation, Mode::Chat, &settings, row).await?);
    }
    let endpoints: Vec<Endpoint> = servers.iter().map(Server::endpoint).collect();
    let pids: Vec<u32> =
        servers.iter().map(|server| server.pid).chain(redis.as_ref().map(|r| r.pid)).collect();
    let rss_before = rss_kib(&pids)?;
    let reading = connect_many(&endpoints, readers, s.in_flight, false, None).await?;
    let stalling = connect_many(&endpoints, stalled, s.in_flight, true, None).await?;
    row.connections = members;

    let shared = Arc::new(ChatShared::new(members, readers, stalled, s.chat_publishers, planned));
    let mut tasks = JoinSet::new();
    for (i, ws) in reading.into_iter().enumerate() {
        let every = Duration::from_secs_f64(1.0 / s.chat_rate_each);
        let publish = (i < s.chat_publishers).then(|| Publish {
            id: i,
            count: s.chat_messages_each,
            every,
            offset: every * i as u32 / s.chat_publishers as u32,
        });
        let me = Member { room: "bench".into(), username: format!("u{i}"), publish };
        tasks.spawn(member(ws, me, shared.clone()));
    }
    for (i, ws) in stalling.into_iter().enumerate() {
        let me = Member { room: "bench".into(), username: format!("stalled{i}"), publish: None };
        tasks.spawn(stalled_member(ws, me, shared.clone()));
    }

    // The measured phase starts before the join storm: its CPU counts, and
    // so do the Joined events it delivers.
    let window = Window::open(&pids, &shared.deliveries)?;
    let scraper = match servers[0].admin {
        Some(addr) if admin => Some(tokio::spawn(scrape_every_second(addr))),
        _ if admin => return Err("chat_server printed no `admin on http://IP:PORT`".into()),
        _ => None,
    };
    shared.go_join.open();
    let not_joined = shared.joined.wait(Instant::now() + s.deadline).await;
    let joins_took = window.started.elapsed();
    let publishing = Instant::now();
    shared.go_publish.open();
    let publish_for = Duration::from_secs_f64(s.chat_messages_each as f64 / s.chat_rate_each);
    let lacking = shared.received_all.wait(Instant::now() + publish_for + s.deadline).await;
    let publish_secs = publishing.elapsed().as_secs_f64();
    let measured = window.close(ctx, &shared.deliveries)?;
    if let Some(scraper) = scraper {
        scraper.abort();
        match scraper.await {
            Err(e) if e.is_cancelled() => {}
            Err(e) => row.problem(format!("the scraper failed: {e}")),
            Ok(Err(e)) => row.problem(e),
            Ok(Ok(())) => {}
        }
        // Once more after the phase: the counts are what the clients did.
        let page = scrape(servers[0].admin.expect("checked above")).await?;
        let counts = (metric(&page, "chat_joins_total"), metric(&page, "chat_messages_total"));
        if counts != (Some(members as u64), Some(planned)) {
            row.problem(format!(
                "/metrics counted (joins, messages) {counts:?}, not ({members}, {planned})"
            ));
        }
    }
    row.kib_per_connection = kib_per(rss_before, rss_kib(&pids)?, members);
    shared.go_probe.open();
    let unprobed = shared.probed.wait(Instant::now() + Duration::from_secs(30)).await;
    let stats = finish(servers, tasks, row).await;
    // Redis goes last: a node uses it to the end (a clean shutdown removes
    // the node's members and publishes their Left).
    if let Some(redis) = redis
        && let Err(e) = redis.stop().await
    {
        row.problem(e);
    }

    // Evicted members count as done (their connection ended), so these
    // say: still connected and still waiting.
    if not_joined > 0 {
        row.problem(format!(
            "{not_joined} of {members} members had not received their own Joined after {:?}",
            s.deadline
        ));
    }
    if lacking > 0 {
        row.problem(format!(
            "{lacking} readers still lacked messages {:?} after publishing should have ended",
            s.deadline
        ));
    }
    if unprobed > 0 {
        row.problem("stalled members could not be probed within 30 s".into());
    }
    measured.record(row);
    let (stalled_stats, reader_stats): (Vec<&ClientStats>, Vec<&ClientStats>) =
        stats.iter().partition(|c| c.stalled);
    let received: u64 = reader_stats.iter().map(|c| c.messages).sum();
    row.set_rate(received as f64 / publish_secs, "deliv/s");
    let latencies = reader_stats.iter().flat_map(|c| c.latencies_us.iter().copied());
    row.set_latencies(latencies.collect());

    // The server numbers every message it accepted (`seq`); each one should
    // reach every reader. Compare with what publishers sent, too.
    let numbered = stats.iter().map(|c| c.max_seq).max().unwrap_or(0);
    let sent: u64 = reader_stats.iter().map(|c| c.sent).sum();
    if sent < planned {
        row.problem(format!("publishers could send only {sent} of {planned} messages"));
    }
    if numbered < sent {
        row.problem(format!("the server numbered {numbered} messages of {sent} sent"));
    }
    let lost: u64 =
        reader_stats.iter().map(|c| numbered.max(sent).saturating_sub(c.messages)).sum();
    row.lost = Some(lost);
    if lost > 0 {
        row.problem(format!("{lost} deliveries lost among {readers} readers"));
    }
    let evicted_readers = reader_stats.iter().filter(|c| c.evicted()).count() as u64;
    let evicted_stalled = stalled_stats.iter().filter(|c| c.evicted()).count() as u64;
    row.evicted = Some(evicted_readers + evicted_stalled);
    if evicted_readers > 0 {
        row.problem(format!(
            "{evicted_readers} of {readers} readers evicted (1008) though they read continuously"
        ));
    }

    let presence: u64 = reader_stats.iter().map(|c| c.presence).sum();
    let joins: Vec<u32> = stats.iter().filter_map(|c| c.join_us).collect();
    row.notes.push(format!(
        "join storm of {members}: {} joined in {:.2} s (join p99 {}), {presence} presence \
         events; then {planned} messages from {} publishers at {} msg/s each",
        joins.len(),
        joins_took.as_secs_f64(),
        percentile_ms(&joins, 0.99).map_or("-".into(), |ms| format!("{ms:.1} ms")),
        s.chat_publishers,
        s.chat_rate_each
    ));
    if nodes > 1 {
        let on_node = |k: usize| (0..s.chat_publishers).filter(|i| i % nodes == k).count();
        let publishers: Vec<String> = (0..nodes).map(|k| on_node(k).to_string()).collect();
        row.notes.push(format!(
            "{nodes} nodes sharing one redis-server; members take turns among them, and so do \
             publishers ({} on each); CPU and KiB/conn are the nodes' and redis-server's \
             together",
            publishers.join(" and ")
        ));
    }
    if stalled > 0 {
        let mut outcomes: Vec<String> = stalled_stats
            .iter()
            .map(|c| match &c.probe {
                Some(Probe::Connected) => "still connected".to_string(),
                Some(Probe::Closed(1008)) => "evicted (1008)".to_string(),
                Some(Probe::Closed(code)) => format!("closed with {code}"),
                Some(Probe::Dropped(why)) => format!("dropped ({why})"),
                Some(Probe::NoAnswer) => "no answer to a ping".to_string(),
                None => "never joined".to_string(),
            })
            .collect();
        outcomes.sort();
        outcomes.dedup_by(|a, b| a == b);
        row.notes.push(format!(
            "{readers} readers, {stalled} stalled: {evicted_stalled} of {stalled} stalled \
             evicted [{}]",
            outcomes.join(", ")
        ));
    }
    check_clients(&stats, row);
    Ok(())
}

/// How idle's clients reach the server.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Transport {
    /// `ws://` (idle).
    Plain,
    /// `wss://`, TLS with rustls on both sides (idle-tls).
    Tls,
}

/// idle: 10,000 connections, each joins one of 100 rooms, then all sit idle;
/// measures the server's memory per connection.
///
/// Why rooms: an idle chat connection in real life is a member of a room,
/// and the room manager's bookkeeping (membership maps, names) is part of
/// what a connection costs. 100 rooms of 100 keep the Joined announcements
/// small (each room's joins cost 100 x 101 / 2 deliveries; one room of
/// 10,000 would be the join storm scenario, not an idle one).
///
/// idle-tls (`Transport::Tls`) is the same over `wss://`, so that the two
/// rows side by side say what TLS adds to an idle connection: rustls's
/// state and buffers in the server, and the TLS handshake's CPU.
async fn idle(
    ctx: &Ctx,
    implementation: Impl,
    row: &mut Row,
    transport: Transport,
) -> Result<(), String> {
    let s = &ctx.scale;
    let n = s.idle_connections;
    need_open_files(ctx, n)?;
    let mut settings = vec![("max-connections", "20000".to_string())];
    // Made for this run; the files go when `certificates` does, at the end
    // of the scenario (the server reads them once, before it listens).
    let certificates = match transport {
        Transport::Plain => None,
        Transport::Tls => Some(Certificates::new()?),
    };
    if let Some(certificates) = &certificates {
        settings.push(("tls-cert", certificates.cert.display().to_string()));
        settings.push(("tls-key", certificates.key.display().to_string()));
    }
    let server = start(ctx, implementation, Mode::Chat, &settings, row).await?;
    // A server that dropped the TLS settings as unknown (see Server::start)
    // serves ws://, and this row would measure the wrong thing.
    if server.tls != certificates.is_some() {
        let scheme = |tls| if tls { "wss://" } else { "ws://" };
        return Err(format!(
            "the server serves {}, and this scenario needs {}",
            scheme(server.tls),
            scheme(certificates.is_some())
        ));
    }
    let tls = certificates.as_ref().map(Certificates::connector);
    let rss_before = server.rss_kib()?;

    // Every member of a room hears every later join: room r with k members
    // delivers k (k + 1) / 2 Joined events. Waiting for all of them means
    // the server's queues are empty when we read its memory.
    let rooms = s.idle_rooms.max(1);
    let presence: usize = (0..rooms)
        .map(|r| (n + rooms - 1 - r) / rooms) // members of room r
        .map(|k| k * (k + 1) / 2)
        .sum();
    let mut shared = ChatShared::new(n, n, 0, 0, 0);
    let expected_presence = Countdown::new(presence);
    shared.presence = Some(expected_presence.clone());
    let shared = Arc::new(shared);

    let window = Window::open(&[server.pid], &shared.deliveries)?;
    let started = Instant::now();
    let clients = connect_many(&[server.endpoint()], n, s.in_flight, false, tls).await?;
    row.connections = n;
    let mut tasks = JoinSet::new();
    for (i, ws) in clients.into_iter().enumerate() {
        let me =
            Member { room: format!("idle{}", i % rooms), username: format!("u{i}"), publish: None };
        tasks.spawn(member(ws, me, shared.clone()));
    }
    shared.go_join.open();
    let not_joined = shared.joined.wait(Instant::now() + s.deadline).await;
    let missing_presence = expected_presence.wait(Instant::now() + s.deadline).await;
    let took = started.elapsed().as_secs_f64();
    let measured = window.close(ctx, &shared.deliveries)?;
    let rss_after = server.rss_kib()?;
    let stats = finish(vec![server], tasks, row).await;

    if not_joined > 0 {
        row.problem(format!("{not_joined} of {n} had no Joined of their own"));
    }
    if missing_presence > 0 {
        row.problem(format!("{missing_presence} of {presence} Joined announcements never arrived"));
    }
    row.measured_seconds = measured.secs;
    row.server_cpu_seconds = measured.cpu_secs;
    row.deliveries = measured.deliveries;
    row.set_rate(n as f64 / took, "conn/s");
    row.set_latencies(stats.iter().filter_map(|c| c.join_us).collect());
    row.kib_per_connection = kib_per(rss_before, rss_after, n);
    row.lost = Some(missing_presence as u64);
    row.evicted = Some(evictions(&stats));
    let cpu_per_connection = measured.cpu_secs * 1e6 / n as f64;
    row.cpu_us_per_connection = Some(cpu_per_connection);
    let (over, handshakes) = match transport {
        Transport::Plain => ("", "handshake"),
        Transport::Tls => (" over TLS (rustls)", "TLS and WebSocket handshakes"),
    };
    row.notes.push(format!(
        "{n} connections in {rooms} rooms{over}; server RSS {rss_before} KiB -> {rss_after} \
         KiB; {cpu_per_connection:.0} us CPU per connection ({handshakes} + join); latency = \
         Join to own Joined"
    ));
    if row.evicted > Some(0) {
        row.problem("idle members were evicted".into());
    }
    check_clients(&stats, row);
    Ok(())
}

/// join-storm-N: N clients connect, then all send Join for the same room at
/// the same moment and read continuously. How long until every joiner has
/// its own Joined, and does the server evict anyone for falling behind
/// on the announcements?
async fn storm(ctx: &Ctx, implementation: Impl, row: &mut Row, n: usize) -> Result<(), String> {
    let s = &ctx.scale;
    need_open_files(ctx, n)?;
    let settings = [("max-connections", "20000".to_string())];
    let server = start(ctx, implementation, Mode::Chat, &settings, row).await?;
    let rss_before = server.rss_kib()?;
    let clients = connect_many(&[server.endpoint()], n, s.in_flight, false, None).await?;
    row.connections = n;

    let shared = Arc::new(ChatShared::new(n, n, 0, 0, 0));
    let mut tasks = JoinSet::new();
    for (i, ws) in clients.into_iter().enumerate() {
        let me = Member { room: "storm".into(), username: format!("s{i}"), publish: None };
        tasks.spawn(member(ws, me, shared.clone()));
    }
    let deadline = s.deadline * if n >= 10_000 { 2 } else { 1 };
    let window = Window::open(&[server.pid], &shared.deliveries)?;
    let go = now_ns();
    shared.go_join.open();
    let not_joined = shared.joined.wait(Instant::now() + deadline).await;
    let measured = window.close(ctx, &shared.deliveries)?;
    let rss_after = server.rss_kib()?;
    let stats = finish(vec![server], tasks, row).await;

    measured.record(row);
    let joined = stats.iter().filter(|c| c.joined_at_ns.is_some()).count();
    let last = stats.iter().filter_map(|c| c.joined_at_ns).max().unwrap_or(go);
    let last_secs = (last.saturating_sub(go)) as f64 / 1e9;
    if joined > 0 && last_secs > 0.0 {
        row.set_rate(joined as f64 / last_secs, "joins/s");
    }
    row.set_latencies(stats.iter().filter_map(|c| c.join_us).collect());
    row.kib_per_connection = kib_per(rss_before, rss_after, n);
    let evicted = evictions(&stats);
    row.evicted = Some(evicted);
    // Lost: a joiner that was neither confirmed nor evicted.
    let unconfirmed =
        stats.iter().filter(|c| c.joined_at_ns.is_none() && !c.evicted()).count() as u64;
    row.lost = Some(unconfirmed);
    let presence: u64 = stats.iter().map(|c| c.presence).sum();
    if joined == n {
        row.notes.push(format!("all {n} joiners had their own Joined after {last_secs:.2} s"));
    } else {
        row.notes.push(format!(
            "{joined} of {n} joiners had their own Joined, the last after {last_secs:.2} s"
        ));
    }
    row.notes.push(format!(
        "{presence} presence events received; latency = Join to own Joined; KiB/conn \
         includes what is queued at the end of the storm"
    ));
    if not_joined > 0 && unconfirmed > 0 {
        row.problem(format!("{unconfirmed} joiners had no Joined of their own after {deadline:?}"));
    }
    if evicted > 0 {
        row.problem(format!(
            "{evicted} of {n} joiners evicted (1008) during the storm though they read \
             continuously"
        ));
    }
    check_clients(&stats, row);
    Ok(())
}

// ---------------------------------------------------------------------------
// Shared pieces

/// Starts a server for `row`, noting the settings it ran with.
async fn start(
    ctx: &Ctx,
    implementation: Impl,
    mode: Mode,
    settings: &[(&'static str, String)],
    row: &mut Row,
) -> Result<Server, String> {
    // Settings are our chat server's, which axum_chat shares; the compare
    // servers take none.
    let settings = if implementation.ours() { settings } else { &[] };
    let server = Server::start(&ctx.paths, implementation, mode, settings).await?;
    for name in &server.unknown_settings {
        row.notes.push(format!("this server has no --{name} setting yet; ran without it"));
    }
    row.settings = settings
        .iter()
        .filter(|(name, _)| !server.unknown_settings.iter().any(|u| u == name))
        .map(|(name, value)| format!("--{name} {value}"))
        .collect();
    Ok(server)
}

/// Stops the servers, all at once (SIGINT: each closes every connection
/// with 1001), and collects every client's report as its connection ends.
async fn finish(
    servers: Vec<Server>,
    mut tasks: JoinSet<ClientStats>,
    row: &mut Row,
) -> Vec<ClientStats> {
    for stopped in futures_util::future::join_all(servers.into_iter().map(Server::stop)).await {
        if let Err(e) = stopped {
            row.problem(e);
        }
    }
    let deadline = Instant::now() + Duration::from_secs(30);
    let mut all = Vec::with_capacity(tasks.len());
    loop {
        match tokio::time::timeout_at(deadline, tasks.join_next()).await {
            Ok(Some(Ok(stats))) => all.push(stats),
            Ok(Some(Err(e))) => row.problem(format!("a client task failed: {e}")),
            Ok(None) => break,
            Err(_) => {
                // Dropping the JoinSet aborts them.
                row.problem(format!(
                    "{} clients still open 30 s after the server exited",
                    tasks.len()
                ));
                break;
            }
        }
    }
    all
}

/// Checks that apply to every scenario: order, unexpected frames, and how
/// connections ended (1001 at shutdown; 1008 is counted as an eviction).
fn check_clients(stats: &[ClientStats], row: &mut Row) {
    let out_of_order: u64 = stats.iter().map(|c| c.out_of_order).sum();
    if out_of_order > 0 {
        row.problem(format!("{out_of_order} messages out of order"));
    }
    let unexpected: u64 = stats.iter().map(|c| c.unexpected_count).sum();
    if unexpected > 0 {
        let examples: Vec<&str> =
            stats.iter().flat_map(|c| c.unexpected.iter().map(String::as_str)).take(3).collect();
        row.problem(format!("{unexpected} unexpected frames, e.g. {examples:?}"));
    }
    // A stalled client's probe has its own note.
    let readers = stats.iter().filter(|c| !c.stalled);
    let dropped: Vec<&str> = readers.clone().filter_map(|c| c.dropped.as_deref()).collect();
    if let Some(first) = dropped.first() {
        row.problem(format!(
            "{} connections ended without a close frame, e.g. {first}",
            dropped.len()
        ));
    }
    let odd_codes: Vec<u16> = readers
        .filter_map(|c| c.close_code)
        .filter(|code| *code != 1001 && *code != 1008)
        .collect();
    if let Some(code) = odd_codes.first() {
        row.problem(format!(
            "{} connections closed with unexpected codes, e.g. {code}",
            odd_codes.len()
        ));
    }
}

fn evictions(stats: &[ClientStats]) -> u64 {
    stats.iter().filter(|c| c.evicted()).count() as u64
}

fn message_latencies(stats: &[ClientStats], row: &mut Row) {
    row.set_latencies(stats.iter().flat_map(|c| c.latencies_us.iter().copied()).collect());
}

/// The `q` quantile (nearest rank) of latencies in microseconds, in ms.
fn percentile_ms(latencies_us: &[u32], q: f64) -> Option<f64> {
    let mut sorted = latencies_us.to_vec();
    sorted.sort_unstable();
    crate::report::quantile_ms(&sorted, q)
}

/// Server memory growth per connection, in KiB.
fn kib_per(before: u64, after: u64, connections: usize) -> Option<f64> {
    (connections > 0).then(|| after.saturating_sub(before) as f64 / connections as f64)
}

/// The CPU time of `pids` together so far, in clock ticks.
fn cpu_ticks(pids: &[u32]) -> Result<u64, String> {
    pids.iter().map(|&pid| crate::proc::cpu_ticks(pid)).sum()
}

/// The resident memory of `pids` together now, in KiB.
fn rss_kib(pids: &[u32]) -> Result<u64, String> {
    pids.iter().map(|&pid| crate::proc::rss_kib(pid)).sum()
}

/// Refuses a scenario the open-file limit cannot hold, with the fix.
fn need_open_files(ctx: &Ctx, connections: usize) -> Result<(), String> {
    let needed = connections as u64 + 100;
    if ctx.open_files < needed {
        return Err(format!(
            "needs about {needed} open files and the limit is {}: raise the hard limit \
             (ulimit -Hn) and run again",
            ctx.open_files
        ));
    }
    Ok(())
}

/// The measured phase: server CPU time and deliveries between `open` and
/// `close`. The CPU time is that of every process serving the scenario
/// together (chat-cluster: both nodes and redis-server).
struct Window {
    started: Instant,
    pids: Vec<u32>,
    ticks: u64,
    deliveries: u64,
}

struct Measured {
    secs: f64,
    cpu_secs: f64,
    deliveries: u64,
}

impl Window {
    fn open(pids: &[u32], deliveries: &AtomicU64) -> Result<Window, String> {
        Ok(Window {
            started: Instant::now(),
            pids: pids.to_vec(),
            ticks: cpu_ticks(pids)?,
            deliveries: deliveries.load(Ordering::Relaxed),
        })
    }

    fn close(&self, ctx: &Ctx, deliveries: &AtomicU64) -> Result<Measured, String> {
        let ticks = cpu_ticks(&self.pids)?.saturating_sub(self.ticks);
        Ok(Measured {
            secs: self.started.elapsed().as_secs_f64(),
            cpu_secs: ticks as f64 / ctx.clock_ticks as f64,
            deliveries: deliveries.load(Ordering::Relaxed).saturating_sub(self.deliveries),
        })
    }
}

impl Measured {
    /// Fills the measured-phase columns of `row`.
    fn record(&self, row: &mut Row) {
        row.measured_seconds = self.secs;
        row.server_cpu_seconds = self.cpu_secs;
        row.deliveries = self.deliveries;
        if self.deliveries > 0 {
            row.cpu_us_per_delivery = Some(self.cpu_secs * 1e6 / self.deliveries as f64);
        }
    }
}
