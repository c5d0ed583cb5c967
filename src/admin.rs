//! Chapter 10.7: the admin port. With `--admin-addr IP:PORT`, chat_server
//! answers plain HTTP on a second address, apart from the chat's (a probe
//! or a scraper never competes with chat clients for `--max-connections`,
//! `--max-per-ip` or the handshake's origin and token checks, and the port
//! can stay on a private interface while the chat's is public):
//!
//! - `GET /healthz`: 200 while the process serves (a liveness probe);
//! - `GET /readyz`: 200 while it accepts chat connections and, with
//!   `--redis`, Redis answers a PING within [`READY_TIMEOUT`]; 503 otherwise,
//!   and from the moment shutdown begins (Ctrl-C), so that a load balancer
//!   stops sending clients while the server closes the ones it has;
//! - `GET /metrics`: the metrics below, in Prometheus's text format;
//! - any other path: 404; another method than GET or HEAD: 405.
//!
//! The address is bound before the chat's (a port that cannot be bound is
//! one line naming it, and exit code 1, before `listening on`), and once
//! the chat's is listening the server prints a second line,
//! `admin on http://IP:PORT`, with the real port (port 0 works).
//!
//! HTTP is hyper's, served over tokio by hyper-util; the metrics are the
//! `metrics` facade's, rendered by `metrics-exporter-prometheus`.
//!
//! The metrics ([`Metrics`]), each counted where its event happens:
//!
//! - `chat_connections` (gauge): WebSocket connections open;
//! - `chat_outbox_bytes` (gauge): bytes queued in the clients' outboxes
//!   and not yet written (both gauges are read from the rooms when scraped);
//! - `chat_handshakes_refused_total{status}`: handshakes answered with
//!   HTTP 401 (no valid token), 403 (origin), 429 (`--max-per-ip`) or 503;
//! - `chat_joins_total`, `chat_messages_total`: joins that succeeded, and
//!   messages said (numbered), by this server's clients;
//! - `chat_deliveries_total`: messages handed to clients' sockets (chat
//!   messages, presence events, answers and errors);
//! - `chat_evictions_total{reason}`: connections the server closed on a
//!   client: `outbox` (too slow: outbox over budget, 1008), `write_timeout`
//!   (a write waited `--send-timeout-ms`, 1008), `rate_limit` (a whole burst
//!   over the rate limit, 1008), `ping_timeout` (silent too long, 1011);
//! - `chat_rate_limited_total`: commands refused for the rate limit;
//! - `chat_redis_errors_total` and `chat_redis_command_seconds` (histogram):
//!   with `--redis`, commands that failed, and every command's round trip;
//! - `chat_event_stream_reconnects_total`: with `--redis`, times the node
//!   lost Redis's event stream and subscribed again.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::{Arc, LazyLock, OnceLock};
use std::time::Duration;

use http_body_util::Full;
use hyper::body::{Bytes, Incoming};
use hyper::header::{ALLOW, CONTENT_TYPE, HeaderValue};
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::{TokioIo, TokioTimer};
use metrics::{Counter, Gauge, Histogram, counter, describe_counter, describe_gauge};
use metrics::{describe_histogram, gauge, histogram};
use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};
use redis::aio::ConnectionLike;
use redis::{Cmd, ErrorKind, Pipeline, RedisFuture, RedisResult, ServerErrorKind, Value};
use tokio::net::TcpListener;
use tokio::sync::Semaphore;
use tokio::time::{Instant, sleep, timeout};
use tokio_util::sync::CancellationToken;
use tracing::{debug, error};

use crate::engine::Engine;
use crate::{output, server};

/// How long `/readyz` waits for Redis's answer to a PING.
pub const READY_TIMEOUT: Duration = Duration::from_secs(1);

/// Admin connections served at once; more wait in the listen backlog. A
/// probe or a scrape is one short request.
const MAX_ADMIN_CONNECTIONS: usize = 64;

/// The longest one admin connection may last, its request and our answer
/// included: one that says nothing, or reads nothing, is let go.
const ADMIN_CONNECTION_TIMEOUT: Duration = Duration::from_secs(10);

/// The round-trip histogram's buckets, in seconds: 100 µs to about 1.6 s,
/// doubling (a local Redis answers in well under a millisecond, and a
/// command gives up after 1 s).
const REDIS_BUCKETS: [f64; 15] = [
    0.0001, 0.0002, 0.0004, 0.0008, 0.0016, 0.0032, 0.0064, 0.0128, 0.0256, 0.0512, 0.1024, 0.2048,
    0.4096, 0.8192, 1.6384,
];

/// The statuses a handshake may be refused with, in
/// `chat_handshakes_refused_total`'s order.
const REFUSALS: [StatusCode; 4] = [
    StatusCode::UNAUTHORIZED,
    StatusCode::FORBIDDEN,
    StatusCode::TOO_MANY_REQUESTS,
    StatusCode::SERVICE_UNAVAILABLE,
];

/// The reasons of `chat_evictions_total`, and the start of the close
/// reason that chat_server sends with each.
const EVICTIONS: [(&str, &str); 4] = [
    ("outbox", "too slow: outbox"),
    ("write_timeout", "too slow: a write"),
    ("rate_limit", "rate limit"),
    ("ping_timeout", "ping timeout"),
];

// ANCHOR: args
/// The admin port, as a flag.
#[derive(Debug, Clone, clap::Args)]
pub struct AdminArgs {
    /// Serve /healthz, /readyz and /metrics over HTTP on this second
    /// address, IP:PORT (chapter 10.7); port 0 picks a free port. Off by
    /// default.
    #[arg(long = "admin-addr", value_name = "IP:PORT", value_parser = server::parse_addr)]
    pub admin_addr: Option<SocketAddr>,
}
// ANCHOR_END: args

/// The admin port, bound and not yet serving; nothing without
/// `--admin-addr`.
pub struct Admin {
    bound: Option<(TcpListener, PrometheusHandle)>,
}

impl AdminArgs {
    /// Binds the admin address, if there is one, and starts counting
    /// ([`metrics()`]). Fails with a line that names the address.
    pub async fn bind(&self) -> Result<Admin, String> {
        let Some(addr) = self.admin_addr else { return Ok(Admin { bound: None }) };
        let listener = TcpListener::bind(addr)
            .await
            .map_err(|e| format!("cannot listen on admin address {addr}: {e}"))?;
        let recorder = recorder();
        let handle = recorder.handle();
        // Once per process: a second admin port would share the first's.
        if metrics::set_global_recorder(recorder).is_ok() {
            let _ = METRICS.set(Metrics::register());
        }
        Ok(Admin { bound: Some((listener, handle)) })
    }
}

impl Admin {
    /// Prints `admin on http://IP:PORT` and serves the admin port in a task
    /// of its own, for as long as the process runs: through a shutdown too,
    /// when `/readyz` says 503. Call it once the chat's address listens.
    pub fn serve(self, engine: Arc<Engine>, shutdown: CancellationToken) {
        let Some((listener, handle)) = self.bound else { return };
        if let Ok(addr) = listener.local_addr() {
            let _ = output::line(format_args!("admin on http://{addr}"));
        }
        tokio::spawn(accept(listener, Arc::new(Answers { engine, shutdown, handle })));
    }
}

/// What the admin port answers from.
struct Answers {
    engine: Arc<Engine>,
    shutdown: CancellationToken,
    handle: PrometheusHandle,
}

/// The admin port's accept loop: each connection in a task of its own,
/// at most [`MAX_ADMIN_CONNECTIONS`] at once, each for at most
/// [`ADMIN_CONNECTION_TIMEOUT`], one request each.
async fn accept(listener: TcpListener, answers: Arc<Answers>) {
    let limit = Arc::new(Semaphore::new(MAX_ADMIN_CONNECTIONS));
    loop {
        // (`Err` only from a closed semaphore, and this one never closes.)
        let Ok(permit) = limit.clone().acquire_owned().await else { return };
        let stream = match listener.accept().await {
            Ok((stream, _)) => stream,
            Err(e) => {
                error!(error = %e, "admin port: accept failed");
                sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
        let answers = answers.clone();
        let service = service_fn(move |request| {
            let answers = answers.clone();
            async move { Ok::<_, Infallible>(answers.answer(&request).await) }
        });
        let connection = http1::Builder::new()
            .timer(TokioTimer::new())
            .header_read_timeout(ADMIN_CONNECTION_TIMEOUT)
            .keep_alive(false)
            .serve_connection(TokioIo::new(stream), service);
        tokio::spawn(async move {
            match timeout(ADMIN_CONNECTION_TIMEOUT, connection).await {
                Ok(Ok(())) => {}
                Ok(Err(e)) => debug!(error = %e, "admin connection failed"),
                Err(_) => debug!("admin connection timed out"),
            }
            drop(permit);
        });
    }
}

impl Answers {
    /// The answer to one request: hyper has parsed it.
    async fn answer(&self, request: &Request<Incoming>) -> Response<Full<Bytes>> {
        let path = request.uri().path();
        if !["/healthz", "/readyz", "/metrics"].contains(&path) {
            return text(StatusCode::NOT_FOUND, "not found\n");
        }
        if !matches!(*request.method(), Method::GET | Method::HEAD) {
            let mut response = text(StatusCode::METHOD_NOT_ALLOWED, "GET or HEAD\n");
            response.headers_mut().insert(ALLOW, HeaderValue::from_static("GET, HEAD"));
            return response;
        }
        match path {
            "/healthz" => text(StatusCode::OK, "ok\n"),
            "/readyz" => match self.not_ready().await {
                None => text(StatusCode::OK, "ready\n"),
                Some(why) => text(StatusCode::SERVICE_UNAVAILABLE, why),
            },
            _ => {
                let (connections, bytes) = self.engine.outboxes();
                metrics().sample(connections, bytes);
                self.handle.run_upkeep();
                let mut response = Response::new(Full::new(Bytes::from(self.handle.render())));
                let format = HeaderValue::from_static("text/plain; version=0.0.4; charset=utf-8");
                response.headers_mut().insert(CONTENT_TYPE, format);
                response
            }
        }
    }

    /// Why the server is not ready for new clients, if it is not.
    async fn not_ready(&self) -> Option<&'static str> {
        if self.shutdown.is_cancelled() {
            return Some("shutting down\n");
        }
        if !self.engine.redis_answers(READY_TIMEOUT).await {
            return Some("Redis does not answer\n");
        }
        // Shutdown may have begun while we waited for Redis.
        self.shutdown.is_cancelled().then_some("shutting down\n")
    }
}

/// A plain-text response.
fn text(status: StatusCode, body: &'static str) -> Response<Full<Bytes>> {
    let mut response = Response::new(Full::new(Bytes::from_static(body.as_bytes())));
    *response.status_mut() = status;
    let plain = HeaderValue::from_static("text/plain; charset=utf-8");
    response.headers_mut().insert(CONTENT_TYPE, plain);
    response
}

/// The Prometheus recorder: counters as they are, and a histogram with
/// buckets (rather than the exporter's default, a summary) for Redis's
/// round trips, so that Prometheus can add up the nodes of a cluster.
fn recorder() -> metrics_exporter_prometheus::PrometheusRecorder {
    let redis = Matcher::Full(REDIS_SECONDS.to_string());
    PrometheusBuilder::new()
        .set_buckets_for_metric(redis, &REDIS_BUCKETS)
        .expect("the buckets are not empty")
        .build_recorder()
}

const REDIS_SECONDS: &str = "chat_redis_command_seconds";

// ANCHOR: metrics
/// The chat server's metrics: handles on the recorder's counters, gauges
/// and histogram, taken once, so that counting an event costs an atomic
/// add, not a look-up by name.
pub struct Metrics {
    pub joins: Counter,
    pub messages: Counter,
    pub deliveries: Counter,
    pub rate_limited: Counter,
    pub redis_errors: Counter,
    pub redis_seconds: Histogram,
    pub reconnects: Counter,
    refused: [Counter; REFUSALS.len()],
    evictions: [Counter; EVICTIONS.len()],
    connections: Gauge,
    outbox_bytes: Gauge,
}

/// The metrics, once the admin port is bound; until then, and without
/// `--admin-addr`, handles that count nothing.
pub fn metrics() -> &'static Metrics {
    METRICS.get().unwrap_or_else(|| &NOTHING)
}
// ANCHOR_END: metrics

static METRICS: OnceLock<Metrics> = OnceLock::new();
static NOTHING: LazyLock<Metrics> = LazyLock::new(Metrics::noop);

impl Metrics {
    /// Registers every metric, with its help text, with the current
    /// recorder. Each appears at once, at zero.
    fn register() -> Metrics {
        describe_gauge!("chat_connections", "WebSocket connections open.");
        describe_gauge!("chat_outbox_bytes", "Bytes queued for clients, not yet written.");
        describe_counter!("chat_handshakes_refused_total", "Handshakes refused, by HTTP status.");
        describe_counter!("chat_joins_total", "Joins that succeeded.");
        describe_counter!("chat_messages_total", "Messages said.");
        describe_counter!("chat_deliveries_total", "Messages handed to clients' sockets.");
        describe_counter!("chat_evictions_total", "Clients closed by the server, by reason.");
        describe_counter!("chat_rate_limited_total", "Commands refused for the rate limit.");
        describe_counter!("chat_redis_errors_total", "Redis commands that failed.");
        describe_histogram!(REDIS_SECONDS, metrics::Unit::Seconds, "Redis commands' round trips.");
        let reconnects = "Times the Redis event stream was lost and subscribed to again.";
        describe_counter!("chat_event_stream_reconnects_total", reconnects);
        let refused = REFUSALS.map(|status| {
            counter!("chat_handshakes_refused_total", "status" => status.as_str().to_string())
        });
        let evictions =
            EVICTIONS.map(|(reason, _)| counter!("chat_evictions_total", "reason" => reason));
        let metrics = Metrics {
            joins: counter!("chat_joins_total"),
            messages: counter!("chat_messages_total"),
            deliveries: counter!("chat_deliveries_total"),
            rate_limited: counter!("chat_rate_limited_total"),
            redis_errors: counter!("chat_redis_errors_total"),
            redis_seconds: histogram!(REDIS_SECONDS),
            reconnects: counter!("chat_event_stream_reconnects_total"),
            refused,
            evictions,
            connections: gauge!("chat_connections"),
            outbox_bytes: gauge!("chat_outbox_bytes"),
        };
        // A counter is shown once it has a value: zero, from the start.
        for counter in metrics.counters() {
            counter.absolute(0);
        }
        metrics.sample(0, 0);
        metrics
    }

    fn noop() -> Metrics {
        Metrics {
            joins: Counter::noop(),
            messages: Counter::noop(),
            deliveries: Counter::noop(),
            rate_limited: Counter::noop(),
            redis_errors: Counter::noop(),
            redis_seconds: Histogram::noop(),
            reconnects: Counter::noop(),
            refused: std::array::from_fn(|_| Counter::noop()),
            evictions: std::array::from_fn(|_| Counter::noop()),
            connections: Gauge::noop(),
            outbox_bytes: Gauge::noop(),
        }
    }

    fn counters(&self) -> impl Iterator<Item = &Counter> {
        let one = [&self.joins, &self.messages, &self.deliveries, &self.rate_limited];
        let cluster = [&self.redis_errors, &self.reconnects];
        one.into_iter().chain(cluster).chain(&self.refused).chain(&self.evictions)
    }

    /// A handshake refused with `status` (401, 403, 429 or 503).
    pub fn refused(&self, status: StatusCode) {
        if let Some(i) = REFUSALS.iter().position(|s| *s == status) {
            self.refused[i].increment(1);
        }
    }

    /// The server closes a connection with `reason`: counted as an
    /// eviction if the reason is one of `chat_evictions_total`'s four (the
    /// module's opening comment); a shutdown is not.
    pub fn closing(&self, reason: &str) {
        if let Some(i) = EVICTIONS.iter().position(|(_, start)| reason.starts_with(start)) {
            self.evictions[i].increment(1);
        }
    }

    /// The gauges, read from the rooms when scraped.
    fn sample(&self, connections: usize, outbox_bytes: usize) {
        self.connections.set(connections as f64);
        self.outbox_bytes.set(outbox_bytes as f64);
    }
}

// ANCHOR: timed
/// A Redis connection whose every command is timed
/// (`chat_redis_command_seconds`) and whose failures are counted
/// (`chat_redis_errors_total`): the cluster's connection (chapter 9) is one,
/// so no command needs a line of its own.
#[derive(Clone)]
pub struct Timed<C>(pub C);

impl<C: ConnectionLike + Send> ConnectionLike for Timed<C> {
    fn req_packed_command<'a>(&'a mut self, cmd: &'a Cmd) -> RedisFuture<'a, Value> {
        Box::pin(timed(self.0.req_packed_command(cmd), failed))
    }

    fn req_packed_commands<'a>(
        &'a mut self,
        pipeline: &'a Pipeline,
        offset: usize,
        count: usize,
    ) -> RedisFuture<'a, Vec<Value>> {
        let command = self.0.req_packed_commands(pipeline, offset, count);
        Box::pin(timed(command, |values| values.iter().any(failed)))
    }

    fn get_db(&self) -> i64 {
        self.0.get_db()
    }
}
// ANCHOR_END: timed

/// Runs one command, and counts it.
async fn timed<T>(command: RedisFuture<'_, T>, failed: fn(&T) -> bool) -> RedisResult<T> {
    let start = Instant::now();
    let result = command.await;
    let metrics = metrics();
    metrics.redis_seconds.record(start.elapsed());
    let error = match &result {
        Ok(value) => failed(value),
        Err(e) => e.kind() != ErrorKind::Server(ServerErrorKind::NoScript),
    };
    if error {
        metrics.redis_errors.increment(1);
    }
    result
}

/// Whether Redis answered with an error. A script it does not have yet
/// (NOSCRIPT) is no failure: the script is sent, and the command retried.
fn failed(value: &Value) -> bool {
    matches!(value, Value::ServerError(e) if e.kind() != Some(ServerErrorKind::NoScript))
}

#[cfg(test)]
mod tests {
    use metrics_exporter_prometheus::PrometheusRecorder;

    use super::*;

    /// Registers the metrics with a recorder of their own, runs `count`
    /// on them, and returns the page `/metrics` would show.
    fn rendered(count: impl FnOnce(&Metrics)) -> String {
        let recorder: PrometheusRecorder = recorder();
        let handle = recorder.handle();
        let metrics = metrics::with_local_recorder(&recorder, Metrics::register);
        count(&metrics);
        handle.render()
    }

    fn value(page: &str, series: &str) -> Option<f64> {
        page.lines().find_map(|line| line.strip_prefix(series)?.strip_prefix(' ')?.parse().ok())
    }

    #[test]
    fn every_metric_is_on_the_page_from_the_start_at_zero() {
        let page = rendered(|_| {});
        for series in [
            "chat_connections",
            "chat_outbox_bytes",
            "chat_joins_total",
            "chat_messages_total",
            "chat_deliveries_total",
            "chat_rate_limited_total",
            "chat_redis_errors_total",
            "chat_event_stream_reconnects_total",
            r#"chat_handshakes_refused_total{status="401"}"#,
            r#"chat_handshakes_refused_total{status="503"}"#,
            r#"chat_evictions_total{reason="outbox"}"#,
            r#"chat_evictions_total{reason="ping_timeout"}"#,
        ] {
            assert_eq!(value(&page, series), Some(0.0), "{series} in\n{page}");
        }
        assert!(page.contains("# TYPE chat_redis_command_seconds histogram"), "{page}");
        assert!(page.contains("# HELP chat_joins_total Joins that succeeded."), "{page}");
    }

    #[test]
    fn refusals_and_evictions_are_counted_under_their_label() {
        let page = rendered(|m| {
            m.refused(StatusCode::TOO_MANY_REQUESTS);
            m.refused(StatusCode::TOO_MANY_REQUESTS);
            m.refused(StatusCode::IM_A_TEAPOT); // not a refusal: not counted
            m.closing("too slow: outbox over budget");
            m.closing("too slow: a write timed out");
            m.closing("rate limit exceeded");
            m.closing("server shutting down"); // not an eviction
            m.sample(3, 1234);
        });
        assert_eq!(value(&page, r#"chat_handshakes_refused_total{status="429"}"#), Some(2.0));
        assert_eq!(value(&page, r#"chat_handshakes_refused_total{status="401"}"#), Some(0.0));
        assert_eq!(value(&page, r#"chat_evictions_total{reason="outbox"}"#), Some(1.0));
        assert_eq!(value(&page, r#"chat_evictions_total{reason="write_timeout"}"#), Some(1.0));
        assert_eq!(value(&page, r#"chat_evictions_total{reason="rate_limit"}"#), Some(1.0));
        assert_eq!(value(&page, r#"chat_evictions_total{reason="ping_timeout"}"#), Some(0.0));
        assert_eq!(value(&page, "chat_connections"), Some(3.0));
        assert_eq!(value(&page, "chat_outbox_bytes"), Some(1234.0));
    }

    #[test]
    fn a_round_trip_lands_in_its_bucket() {
        let page = rendered(|m| m.redis_seconds.record(Duration::from_micros(300)));
        let bucket =
            |le| value(&page, &format!(r#"chat_redis_command_seconds_bucket{{le="{le}"}}"#));
        assert_eq!(bucket("0.0002"), Some(0.0), "{page}");
        assert_eq!(bucket("0.0004"), Some(1.0), "{page}");
        assert_eq!(value(&page, "chat_redis_command_seconds_count"), Some(1.0), "{page}");
    }

    #[test]
    fn only_real_failures_count_as_redis_errors() {
        let parse = |reply: &[u8]| redis::parse_redis_value(reply).expect("a RESP reply");
        assert!(!failed(&parse(b"+OK\r\n")));
        assert!(failed(&parse(b"-ERR wrong number of arguments\r\n")));
        assert!(!failed(&parse(b"-NOSCRIPT No matching script\r\n")));
    }
}
