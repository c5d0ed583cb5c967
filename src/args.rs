//! Value parsers for the examples' arguments, where `clap`'s built-in ones
//! would give an unclear message.
//!
//! Each example declares its arguments as a `#[derive(clap::Parser)]`
//! struct, and names one of these in `value_parser = ...` where a value has
//! a rule. Durations are whole milliseconds on the command line, so that a
//! test can turn a 5-second heartbeat into 50 ms (`--ping-ms 50`), and a
//! `Duration` in the program.

use std::fmt::Display;
use std::str::FromStr;
use std::time::Duration;

/// Milliseconds, 0 or more, as a `Duration`.
pub fn millis(text: &str) -> Result<Duration, String> {
    text.parse().map(Duration::from_millis).map_err(|e| format!("{e}"))
}

/// The period of a timer, in milliseconds: at least 1, because
/// `tokio::time::interval` panics on a zero period.
pub fn period(text: &str) -> Result<Duration, String> {
    positive(text).map(Duration::from_millis)
}

/// A count or a size that must be at least 1 (`--outbox-bytes`,
/// `--rate-limit`, ...): 0 would make the setting meaningless.
pub fn positive<T>(text: &str) -> Result<T, String>
where
    T: FromStr + PartialOrd + From<u8>,
    T::Err: Display,
{
    let value: T = text.parse().map_err(|e| format!("{e}"))?;
    if value < T::from(1) {
        return Err("must be at least 1".into());
    }
    Ok(value)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn zero_negative_and_non_numbers_are_refused_where_they_make_no_sense() {
        assert_eq!(millis("0"), Ok(Duration::ZERO));
        assert_eq!(period("250"), Ok(Duration::from_millis(250)));
        assert_eq!(period("0"), Err("must be at least 1".into()));
        assert_eq!(positive::<usize>("1048576"), Ok(1 << 20));
        assert_eq!(positive::<u32>("0"), Err("must be at least 1".into()));
        for bad in ["-5", "1.5", "fast", ""] {
            assert!(millis(bad).is_err() && positive::<usize>(bad).is_err(), "{bad}");
        }
    }
}
