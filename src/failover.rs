//! Several servers of one chat, used in turn (chapters 6.1 and 9): which
//! server a client connects to, when it comes back after a drop, and how
//! long it waits before each attempt.
//!
//! The first connection tries each server once, in order: when none
//! answers, a wrong port or a server not started yet is likelier than a
//! passing failure, and the client says so at once rather than retry for
//! minutes. After a drop, [`Failover::reconnect`] tries the next server
//! (the one it lost may be gone for good), round robin, each attempt after
//! the backoff's delay of chapter 3.2, until one answers or `--max-attempts`
//! failures in a row say to stop. [`reconnects`] says which closes are a
//! reason to come back at all.
//!
//! How to connect is the caller's (a URL in, a connection or an error
//! out), so the rules here are tested without a network.

use std::fmt::Display;

use tokio::time::sleep;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tracing::{info, warn};

use crate::client::Backoff;

/// The servers to use, in turn, and the backoff between attempts.
#[derive(Debug)]
pub struct Failover {
    urls: Vec<String>,
    /// Attempts so far: the next server is `urls[next % urls.len()]`.
    next: usize,
    backoff: Backoff,
}

impl Failover {
    /// Uses `urls` in this order (an empty list connects nowhere).
    pub fn new(urls: Vec<String>, backoff: Backoff) -> Failover {
        Failover { urls, next: 0, backoff }
    }

    /// The server to try next, round robin.
    fn next_url(&mut self) -> Option<String> {
        let url = self.urls.get(self.next % self.urls.len().max(1)).cloned();
        self.next += 1;
        url
    }

    /// The first connection: each server once, in order, until one
    /// answers. None answering: why the last one did not, in one line.
    pub async fn connect_first<T, E: Display>(
        &mut self,
        connect: impl AsyncFn(&str) -> Result<T, E>,
    ) -> Result<T, String> {
        let mut failure = String::from("no server given");
        for tried in 1..=self.urls.len() {
            let Some(url) = self.next_url() else { break };
            match connect(&url).await {
                Ok(ws) => return Ok(ws),
                Err(e) if tried < self.urls.len() => {
                    warn!("cannot connect to {url}: {e}; trying the next server")
                }
                Err(e) => failure = format!("cannot connect to {url}: {e}"),
            }
        }
        Err(failure)
    }

    // ANCHOR: reconnect
    /// After a drop: waits for the backoff's delay, then tries the next
    /// server, and so on, until one answers or the backoff says to stop
    /// (then why, in one line). The first attempt waits too: a server that
    /// restarts drops all of its clients at once, and the jitter keeps them
    /// from all coming back in the same millisecond.
    pub async fn reconnect<T, E: Display>(
        &mut self,
        connect: impl AsyncFn(&str) -> Result<T, E>,
    ) -> Result<T, String> {
        let mut failed = 0;
        loop {
            let url = self.next_url().ok_or("no server given")?;
            let delay = self.backoff.delay(failed + 1);
            info!("reconnecting to {url} in {} ms", delay.as_millis());
            sleep(delay).await;
            match connect(&url).await {
                Ok(ws) => {
                    info!("connected to {url}");
                    return Ok(ws);
                }
                Err(e) => {
                    warn!("cannot connect to {url}: {e}");
                    failed += 1;
                    if !self.backoff.should_retry(failed) {
                        return Err(format!("giving up after {failed} failed attempts"));
                    }
                }
            }
        }
    }
    // ANCHOR_END: reconnect
}

// ANCHOR: reconnects
/// Whether a close from the server is a reason to come back: it went away
/// (1001, a server shutting down or restarting), failed (1011, chat_server's
/// `ping timeout` included), or asks to be tried again (1012 restarting,
/// 1013 try again later). Not a normal close (1000), and not a close that
/// refuses this client (1008: too slow, or over the rate limit; 1009: too
/// big; 1002, 1007: broken protocol): the server said stop, and coming back
/// would repeat the fault.
pub fn reconnects(code: CloseCode) -> bool {
    matches!(code, CloseCode::Away | CloseCode::Error | CloseCode::Restart | CloseCode::Again)
}
// ANCHOR_END: reconnects

#[cfg(test)]
mod tests {
    use std::cell::RefCell;
    use std::time::Duration;

    use super::*;

    /// No waiting: the delays are zero.
    fn failover(urls: &[&str], max_attempts: u32) -> Failover {
        let backoff = Backoff { base: Duration::ZERO, cap: Duration::ZERO, max_attempts };
        Failover::new(urls.iter().map(|u| u.to_string()).collect(), backoff)
    }

    /// A connect that answers only at the URLs in `up`, and notes every
    /// URL it was asked for.
    struct Network {
        up: RefCell<Vec<&'static str>>,
        tried: RefCell<Vec<String>>,
    }

    impl Network {
        fn new(up: &[&'static str]) -> Network {
            Network { up: RefCell::new(up.to_vec()), tried: RefCell::new(Vec::new()) }
        }

        async fn connect(&self, url: &str) -> Result<String, &'static str> {
            self.tried.borrow_mut().push(url.into());
            match self.up.borrow().contains(&url) {
                true => Ok(url.into()),
                false => Err("connection refused"),
            }
        }
    }

    #[tokio::test]
    async fn the_first_connection_tries_each_server_once_in_order() {
        let mut servers = failover(&["ws://a", "ws://b", "ws://c"], 10);
        let net = Network::new(&["ws://b"]);
        let first = servers.connect_first(async |url: &str| net.connect(url).await).await;
        assert_eq!(first, Ok("ws://b".to_string()));
        assert_eq!(*net.tried.borrow(), ["ws://a", "ws://b"]);

        let mut servers = failover(&["ws://a", "ws://b"], 0);
        let net = Network::new(&[]);
        let first = servers.connect_first(async |url: &str| net.connect(url).await).await;
        assert_eq!(first, Err("cannot connect to ws://b: connection refused".to_string()));
        assert_eq!(*net.tried.borrow(), ["ws://a", "ws://b"], "once each, even retrying forever");

        let mut none = failover(&[], 10);
        let first = none.connect_first(async |url: &str| net.connect(url).await).await;
        assert_eq!(first, Err("no server given".to_string()));
    }

    #[tokio::test]
    async fn a_reconnect_goes_on_from_the_next_server_round_robin() {
        let mut servers = failover(&["ws://a", "ws://b", "ws://c"], 10);
        let net = Network::new(&["ws://b"]);
        servers.connect_first(async |url: &str| net.connect(url).await).await.expect("b");
        // b is lost, and a comes up: c is tried first, then a.
        *net.up.borrow_mut() = vec!["ws://a"];
        let back = servers.reconnect(async |url: &str| net.connect(url).await).await;
        assert_eq!(back.as_deref(), Ok("ws://a"));
        assert_eq!(*net.tried.borrow(), ["ws://a", "ws://b", "ws://c", "ws://a"]);
    }

    #[tokio::test]
    async fn a_reconnect_gives_up_after_max_attempts_failures_in_a_row() {
        let mut servers = failover(&["ws://a", "ws://b"], 3);
        let net = Network::new(&[]);
        let back = servers.reconnect(async |url: &str| net.connect(url).await).await;
        assert_eq!(back, Err("giving up after 3 failed attempts".to_string()));
        assert_eq!(*net.tried.borrow(), ["ws://a", "ws://b", "ws://a"]);

        // Each drop starts a new count.
        *net.up.borrow_mut() = vec!["ws://a"];
        net.tried.borrow_mut().clear();
        let back = servers.reconnect(async |url: &str| net.connect(url).await).await;
        assert_eq!(back.as_deref(), Ok("ws://a"));
        assert_eq!(*net.tried.borrow(), ["ws://b", "ws://a"]);
    }

    #[test]
    fn only_a_server_that_went_away_or_failed_is_a_reason_to_come_back() {
        for code in [CloseCode::Away, CloseCode::Error, CloseCode::Restart, CloseCode::Again] {
            assert!(reconnects(code), "{code:?}");
        }
        for code in [CloseCode::Normal, CloseCode::Policy, CloseCode::Size, CloseCode::Protocol] {
            assert!(!reconnects(code), "{code:?}");
        }
    }
}
