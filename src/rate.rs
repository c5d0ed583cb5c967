//! A per-connection rate limit: a token bucket.
//!
//! Every command a client sends takes a token. Tokens come back at
//! `per_second`, up to `burst`, so a client may send `burst` commands at
//! once and `per_second` for ever after. A command that finds no token is
//! *refused*: the server answers it with an `Error` event and does not carry
//! it out. A refused command costs a token too, so a client that keeps
//! sending while refused digs itself into debt; once it owes a whole burst,
//! it is not a person typing fast but a flood, and the connection is closed
//! with 1008 (policy violation). A client that stops after a burst is back
//! in credit as the tokens return.
//!
//! Why per connection and in the reader: the cost of a chat message is paid
//! by every member of the room, so one sender must not be able to fill
//! everybody's outbox. The limit stops it before anything is queued.

// ANCHOR: rate
use std::time::Duration;

use tokio::time::Instant;

/// What [`RateLimit::check`] says of one command.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// Within the limit: carry it out.
    Allowed,
    /// Over the limit: refuse it, and say so.
    Refused,
    /// A whole burst in debt: close the connection.
    Exceeded,
}

/// A token bucket for one connection.
#[derive(Debug, Clone)]
pub struct RateLimit {
    per_second: f64,
    burst: f64,
    tokens: f64,
    last: Instant,
}

impl RateLimit {
    /// A full bucket: `burst` commands at once, `per_second` after that.
    /// Both must be at least 1.
    pub fn new(per_second: u32, burst: u32) -> RateLimit {
        let burst = f64::from(burst.max(1));
        RateLimit {
            per_second: f64::from(per_second.max(1)),
            burst,
            tokens: burst,
            last: Instant::now(),
        }
    }

    /// Takes a token for one command received at `now`.
    pub fn check(&mut self, now: Instant) -> Verdict {
        let elapsed = now.saturating_duration_since(self.last);
        self.last = now;
        self.tokens = (self.tokens + elapsed.as_secs_f64() * self.per_second).min(self.burst);
        let allowed = self.tokens >= 1.0;
        self.tokens -= 1.0;
        match () {
            _ if allowed => Verdict::Allowed,
            _ if self.tokens <= -self.burst => Verdict::Exceeded,
            _ => Verdict::Refused,
        }
    }

    /// How long a client that is refused now must wait for its next token.
    pub fn retry_after(&self) -> Duration {
        Duration::from_secs_f64(((1.0 - self.tokens) / self.per_second).max(0.0))
    }
}
// ANCHOR_END: rate

/// The chat server's rate limit, as flags (chapter 6.1).
#[derive(Debug, Clone, Copy, clap::Args)]
pub struct RateArgs {
    /// Commands per second per connection; a command over the limit gets an
    /// Error.
    #[arg(long = "rate-limit", value_name = "N", default_value_t = 10)]
    #[arg(value_parser = crate::args::positive::<u32>)]
    pub per_second: u32,
    /// Commands that may come at once; a client a whole burst over the
    /// limit is closed with 1008.
    #[arg(long = "rate-burst", value_name = "N", default_value_t = 20)]
    #[arg(value_parser = crate::args::positive::<u32>)]
    pub burst: u32,
}

impl RateLimit {
    /// The commands allowed per second.
    pub fn per_second(&self) -> u32 {
        self.per_second as u32 // made from a u32
    }
}

impl RateArgs {
    /// A full bucket for a new connection.
    pub fn start(&self) -> RateLimit {
        RateLimit::new(self.per_second, self.burst)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_burst_then_the_rate() {
        let start = Instant::now();
        let mut limit = RateLimit::new(10, 3);
        let verdicts: Vec<_> = (0..4).map(|_| limit.check(start)).collect();
        use Verdict::*;
        assert_eq!(verdicts, [Allowed, Allowed, Allowed, Refused]);
        // 0.25 s later 2.5 tokens came back, minus the one the refusal cost.
        let later = start + Duration::from_millis(250);
        assert_eq!(limit.check(later), Allowed);
        assert_eq!(limit.check(later), Refused);
    }

    #[test]
    fn a_client_that_keeps_sending_while_refused_is_cut_off() {
        let now = Instant::now();
        let mut limit = RateLimit::new(1, 5);
        let verdicts: Vec<_> = (0..10).map(|_| limit.check(now)).collect();
        assert_eq!(verdicts.iter().filter(|v| **v == Verdict::Allowed).count(), 5);
        assert_eq!(verdicts[5..9], [Verdict::Refused; 4]);
        assert_eq!(verdicts[9], Verdict::Exceeded, "a whole burst in debt");
    }

    #[test]
    fn the_flags_set_the_bucket_and_refuse_zero() {
        use clap::Parser;
        #[derive(Parser)]
        struct Flags {
            #[command(flatten)]
            rate: RateArgs,
        }
        let flags = Flags::try_parse_from(["x", "--rate-limit", "2", "--rate-burst", "3"]).unwrap();
        let mut limit = flags.rate.start();
        let now = Instant::now();
        let verdicts: Vec<_> = (0..4).map(|_| limit.check(now)).collect();
        use Verdict::*;
        assert_eq!(verdicts, [Allowed, Allowed, Allowed, Refused]);
        assert_eq!(limit.retry_after(), Duration::from_secs(1), "2 a second, one owed");
        assert_eq!(limit.per_second(), 2);
        let defaults = Flags::try_parse_from(["x"]).unwrap().rate;
        assert_eq!((defaults.per_second, defaults.burst), (10, 20));
        assert!(Flags::try_parse_from(["x", "--rate-limit", "0"]).is_err());
        assert!(Flags::try_parse_from(["x", "--rate-burst", "0"]).is_err());
    }

    #[test]
    fn a_client_that_pauses_is_forgiven() {
        let start = Instant::now();
        let mut limit = RateLimit::new(10, 2);
        for _ in 0..3 {
            limit.check(start); // two allowed, one refused: one token owed
        }
        assert_eq!(limit.retry_after(), Duration::from_millis(200));
        let later = start + Duration::from_secs(1);
        assert_eq!(limit.check(later), Verdict::Allowed, "tokens came back, up to the burst");
        assert_eq!(limit.check(later), Verdict::Allowed);
        assert_eq!(limit.check(later), Verdict::Refused);
    }
}
