//! The heartbeat every server keeps, so that a half-open connection does not
//! hold a slot forever.
//!
//! A client whose machine vanishes (a pulled cable, a laptop lid closed, a
//! crashed VM) sends no FIN: its connection looks open, costs a task and a
//! file descriptor, and counts against `--max-connections` until something
//! tries to talk to it. So a server pings every client every `ping_every`,
//! and any frame from the client (its pong included) proves it alive.
//! Silence for longer than `ping_every + pong_timeout` means the client is
//! gone, and the server closes the connection with 1011.
//!
//! [`Heartbeat`] is only the bookkeeping, a few `Instant`s with no timer and
//! no allocation. Each server keeps one timer of its own in its connection
//! loop (a pinned `sleep_until`), resets it to [`Heartbeat::next_wake`],
//! and asks [`Heartbeat::on_wake`] what to do when it fires. One timer
//! serves both jobs: it fires at the next ping or at the end of the allowed
//! silence, whichever comes first, and a frame from the client only notes
//! the time ([`Heartbeat::heard`]), with no timer to move for every frame.
//! [`Heartbeat::due`] is that timer's arm of a connection's `select!`, written
//! once: it waits, asks, resets the timer, and returns only when a ping is
//! due or the client is gone.
//!
//! ```
//! # use std::time::Duration;
//! # use tokio::time::Instant;
//! use websocket_tutorial::heartbeat::{Beat, Heartbeat};
//!
//! let start = Instant::now();
//! let mut heartbeat = Heartbeat::new(start, Duration::from_secs(5), Duration::from_secs(10));
//! assert_eq!(heartbeat.next_wake(), start + Duration::from_secs(5));
//! assert_eq!(heartbeat.on_wake(start + Duration::from_secs(5)), Beat::Ping);
//! assert_eq!(heartbeat.on_wake(start + Duration::from_secs(15)), Beat::Dead);
//! ```

use std::pin::Pin;
use std::time::Duration;

use tokio::time::{Instant, Sleep};

use crate::args;

/// A server's heartbeat settings, as every server takes them on its command
/// line (`#[command(flatten)] heartbeat: HeartbeatArgs`, or within
/// [`crate::server::Deadlines`]): `--ping-ms` (5000) and `--pong-timeout-ms`
/// (10000).
#[derive(Debug, Clone, Copy, clap::Args)]
pub struct HeartbeatArgs {
    /// Heartbeat interval, in milliseconds.
    #[arg(long = "ping-ms", value_name = "MS", default_value = "5000")]
    #[arg(value_parser = args::period)]
    pub ping_every: Duration,
    /// Silence allowed after a ping, in milliseconds.
    #[arg(long = "pong-timeout-ms", value_name = "MS", default_value = "10000")]
    #[arg(value_parser = args::millis)]
    pub pong_timeout: Duration,
}

impl HeartbeatArgs {
    /// A heartbeat with these settings for a connection that starts now.
    pub fn start(&self) -> Heartbeat {
        Heartbeat::new(Instant::now(), self.ping_every, self.pong_timeout)
    }
}

/// When to ping a client, and when its silence means it is gone.
#[derive(Debug, Clone)]
pub struct Heartbeat {
    ping_every: Duration,
    /// A ping interval plus the pong timeout.
    allowed_silence: Duration,
    last_heard: Instant,
    next_ping: Instant,
}

/// What to do when the heartbeat's timer fires.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Beat {
    /// Send a ping now.
    Ping,
    /// The client has been silent too long: close with 1011.
    Dead,
    /// Nothing is due (the client was heard since the timer was set).
    Wait,
}

impl Heartbeat {
    /// A heartbeat for a connection that starts at `now`: the first ping is
    /// due at `now + ping_every`.
    pub fn new(now: Instant, ping_every: Duration, pong_timeout: Duration) -> Heartbeat {
        Heartbeat {
            ping_every,
            allowed_silence: ping_every + pong_timeout,
            last_heard: now,
            next_ping: now + ping_every,
        }
    }

    /// Notes a frame from the client, whatever it was.
    pub fn heard(&mut self, now: Instant) {
        self.last_heard = now;
    }

    /// When the timer should fire next: the next ping, or the end of the
    /// allowed silence, whichever comes first.
    pub fn next_wake(&self) -> Instant {
        self.next_ping.min(self.last_heard + self.allowed_silence)
    }

    /// What is due at `now`. A `Ping` counts as sent: the next one is due
    /// `ping_every` from now.
    pub fn on_wake(&mut self, now: Instant) -> Beat {
        if now >= self.last_heard + self.allowed_silence {
            Beat::Dead
        } else if now >= self.next_ping {
            self.next_ping = now + self.ping_every;
            Beat::Ping
        } else {
            Beat::Wait
        }
    }
}

// ANCHOR: due
/// What [`Heartbeat::due`] found due.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Due {
    /// Send a ping now.
    Ping,
    /// The client has been silent too long: close with 1011 `ping timeout`.
    Dead,
}

impl Heartbeat {
    /// The heartbeat's arm of a connection's `select!` loop: waits for
    /// `timer` (the connection's one heartbeat timer, a pinned
    /// `sleep_until(heartbeat.next_wake())`), asks [`Heartbeat::on_wake`]
    /// what is due, and resets the timer to the next wake. A wake with
    /// nothing due (the client was heard since the timer was set) only
    /// moves the timer; so this returns only when a ping is due or the
    /// client is gone.
    ///
    /// Cancel-safe, as a `select!` arm must be: dropped while it waits (another
    /// arm won), it has changed nothing.
    pub async fn due(&mut self, mut timer: Pin<&mut Sleep>) -> Due {
        loop {
            timer.as_mut().await;
            let beat = self.on_wake(Instant::now());
            timer.as_mut().reset(self.next_wake());
            match beat {
                Beat::Ping => return Due::Ping,
                Beat::Dead => return Due::Dead,
                Beat::Wait => {}
            }
        }
    }
}
// ANCHOR_END: due

#[cfg(test)]
mod tests {
    use super::*;

    const PING: Duration = Duration::from_millis(100);
    const PONG: Duration = Duration::from_millis(300);

    fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
    }

    #[test]
    fn a_silent_client_is_pinged_on_schedule_and_dead_after_ping_plus_pong_timeout() {
        let t0 = Instant::now();
        let mut heartbeat = Heartbeat::new(t0, PING, PONG);
        assert_eq!(heartbeat.next_wake(), t0 + ms(100));
        assert_eq!(heartbeat.on_wake(t0 + ms(100)), Beat::Ping);
        assert_eq!(heartbeat.next_wake(), t0 + ms(200));
        assert_eq!(heartbeat.on_wake(t0 + ms(200)), Beat::Ping);
        assert_eq!(heartbeat.on_wake(t0 + ms(300)), Beat::Ping);
        // The next ping would be at 400, which is also the end of the
        // allowed silence: dead wins.
        assert_eq!(heartbeat.next_wake(), t0 + ms(400));
        assert_eq!(heartbeat.on_wake(t0 + ms(399)), Beat::Wait);
        assert_eq!(heartbeat.on_wake(t0 + ms(400)), Beat::Dead);
    }

    #[test]
    fn a_frame_from_the_client_moves_the_end_of_its_allowed_silence() {
        let t0 = Instant::now();
        let mut heartbeat = Heartbeat::new(t0, PING, PONG);
        assert_eq!(heartbeat.on_wake(t0 + ms(100)), Beat::Ping);
        heartbeat.heard(t0 + ms(150)); // the pong
        assert_eq!(heartbeat.on_wake(t0 + ms(200)), Beat::Ping);
        assert_eq!(heartbeat.on_wake(t0 + ms(300)), Beat::Ping);
        assert_eq!(heartbeat.on_wake(t0 + ms(400)), Beat::Ping);
        // Silent since 150: gone at 550, not at 400.
        assert_eq!(heartbeat.next_wake(), t0 + ms(500));
        assert_eq!(heartbeat.on_wake(t0 + ms(500)), Beat::Ping);
        assert_eq!(heartbeat.next_wake(), t0 + ms(550));
        assert_eq!(heartbeat.on_wake(t0 + ms(550)), Beat::Dead);
    }

    #[test]
    fn a_timer_that_fires_late_pings_once_and_not_for_every_missed_interval() {
        let t0 = Instant::now();
        let mut heartbeat = Heartbeat::new(t0, PING, PONG);
        heartbeat.heard(t0 + ms(250));
        // A busy runtime woke us at 270 instead of 100.
        assert_eq!(heartbeat.on_wake(t0 + ms(270)), Beat::Ping);
        assert_eq!(heartbeat.on_wake(t0 + ms(271)), Beat::Wait);
        assert_eq!(heartbeat.next_wake(), t0 + ms(370));
    }

    #[test]
    fn a_zero_pong_timeout_allows_exactly_one_ping_interval_of_silence() {
        let t0 = Instant::now();
        let mut heartbeat = Heartbeat::new(t0, PING, Duration::ZERO);
        assert_eq!(heartbeat.next_wake(), t0 + ms(100));
        assert_eq!(heartbeat.on_wake(t0 + ms(100)), Beat::Dead);
    }

    /// An instant `ago` before now (the monotonic clock has run for longer
    /// than these tests look back).
    fn before_now(ago: Duration) -> Instant {
        Instant::now().checked_sub(ago).expect("the clock has run that long")
    }

    // `due` is tested with timers set in the past, which fire at once, and
    // with margins of seconds, so that a busy machine cannot change what is
    // due: no test waits for time to pass.

    #[tokio::test]
    async fn due_says_ping_and_sets_the_timer_to_the_next_wake() {
        // Started 1.5 s ago, a ping every second: the first one is overdue.
        let t0 = before_now(Duration::from_millis(1500));
        let mut heartbeat = Heartbeat::new(t0, Duration::from_secs(1), Duration::from_secs(60));
        let mut timer = std::pin::pin!(tokio::time::sleep_until(heartbeat.next_wake()));
        assert_eq!(heartbeat.due(timer.as_mut()).await, Due::Ping);
        assert_eq!(timer.deadline(), heartbeat.next_wake());
        assert!(timer.deadline() > Instant::now(), "the next ping is a second away");
    }

    #[tokio::test]
    async fn due_says_dead_after_too_much_silence() {
        let t0 = before_now(Duration::from_secs(20));
        let mut heartbeat = Heartbeat::new(t0, Duration::from_secs(5), Duration::from_secs(10));
        let mut timer = std::pin::pin!(tokio::time::sleep_until(heartbeat.next_wake()));
        assert_eq!(heartbeat.due(timer.as_mut()).await, Due::Dead);
    }

    #[tokio::test]
    async fn due_only_moves_the_timer_when_the_client_was_heard_since_it_was_set() {
        use futures_util::FutureExt;

        // A ping every 10 s, 5 s of silence after it: started 16 s ago,
        // pinged at 10 s (the next ping is due at 20 s), and the timer was
        // set for the end of the silence, 15 s. The pong came at 12 s: at
        // 16 s nothing is due, and the next wake is the ping at 20 s.
        let t0 = before_now(Duration::from_secs(16));
        let mut heartbeat = Heartbeat::new(t0, Duration::from_secs(10), Duration::from_secs(5));
        assert_eq!(heartbeat.on_wake(t0 + Duration::from_secs(10)), Beat::Ping);
        let mut timer = std::pin::pin!(tokio::time::sleep_until(heartbeat.next_wake()));
        assert_eq!(timer.deadline(), t0 + Duration::from_secs(15));
        heartbeat.heard(t0 + Duration::from_secs(12));
        // Polled once: the timer fires, nothing is due, the timer moves to
        // 20 s, and `due` waits on.
        assert_eq!(heartbeat.due(timer.as_mut()).now_or_never(), None);
        assert_eq!(timer.deadline(), t0 + Duration::from_secs(20));
    }
}
