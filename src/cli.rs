//! A very small command-line parser, so that examples need no argument crate.
//!
//! Every example takes an address or URL as its first positional argument and
//! a few `--name value` settings (mostly durations in milliseconds, so tests
//! can make a 5-second heartbeat take 50 ms).

use std::collections::HashMap;
use std::io::Write;
use std::process::ExitCode;
use std::str::FromStr;
use std::time::Duration;

/// Parsed command-line arguments.
#[derive(Debug, Default)]
pub struct Args {
    positional: Vec<String>,
    settings: HashMap<String, String>,
}

impl Args {
    /// Parses the process's arguments. On `--help`, a malformed or unknown
    /// setting, prints `usage` and exits (0 for help, 2 for a mistake).
    pub fn from_env(usage: &str, known: &[&str]) -> Args {
        match Args::parse(std::env::args().skip(1), known) {
            Ok(args) => args,
            Err(None) => {
                // Not println!, which panics when stdout is a closed pipe
                // (`--help | head -1`).
                let _ = writeln!(std::io::stdout(), "{usage}");
                std::process::exit(0);
            }
            Err(Some(mistake)) => {
                eprintln!("error: {mistake}\n{usage}");
                std::process::exit(2);
            }
        }
    }

    /// Parses `args`. `Err(None)` means help was asked for.
    pub fn parse(
        args: impl IntoIterator<Item = String>,
        known: &[&str],
    ) -> Result<Args, Option<String>> {
        let mut parsed = Args::default();
        let mut args = args.into_iter();
        while let Some(arg) = args.next() {
            if arg == "-h" || arg == "--help" {
                return Err(None);
            }
            let Some(flag) = arg.strip_prefix("--") else {
                parsed.positional.push(arg);
                continue;
            };
            let (name, value) = match flag.split_once('=') {
                Some((name, value)) => (name.to_string(), value.to_string()),
                None => {
                    let value = args.next().ok_or_else(|| format!("--{flag} needs a value"))?;
                    (flag.to_string(), value)
                }
            };
            if !known.contains(&name.as_str()) {
                return Err(Some(format!("unknown setting --{name}")));
            }
            parsed.settings.insert(name, value);
        }
        Ok(parsed)
    }

    /// The `index`th positional argument, or `default`.
    pub fn positional(&self, index: usize, default: &str) -> String {
        self.positional.get(index).cloned().unwrap_or_else(|| default.to_string())
    }

    /// All positional arguments from `index` on.
    pub fn rest(&self, index: usize) -> &[String] {
        self.positional.get(index..).unwrap_or(&[])
    }

    /// The setting `--name`, parsed, or `default`. Exits with a usage error
    /// when the value does not parse.
    pub fn get<T: FromStr>(&self, name: &str, default: T) -> T {
        match self.settings.get(name) {
            None => default,
            Some(value) => value.parse().unwrap_or_else(|_| {
                eprintln!("error: --{name} {value:?} is not a valid value");
                std::process::exit(2);
            }),
        }
    }

    /// The setting `--name` as a count or a size that must be at least 1, or
    /// `default`. Exits with a usage error for 0, a negative number or
    /// anything that is not a number.
    pub fn positive<T: FromStr + Default + PartialEq>(&self, name: &str, default: T) -> T {
        let value = self.get(name, default);
        if value == T::default() {
            eprintln!("error: --{name} must be at least 1");
            std::process::exit(2);
        }
        value
    }

    /// The setting `--name` as a number of milliseconds.
    pub fn millis(&self, name: &str, default_ms: u64) -> Duration {
        Duration::from_millis(self.get(name, default_ms))
    }

    /// The setting `--name` as the period of a timer, in milliseconds: at
    /// least 1, because `tokio::time::interval` panics on a zero period.
    /// Exits with a usage error for 0.
    pub fn period(&self, name: &str, default_ms: u64) -> Duration {
        let period = self.millis(name, default_ms);
        if period.is_zero() {
            eprintln!("error: --{name} must be at least 1");
            std::process::exit(2);
        }
        period
    }
}

/// Prints `error: {message}` to stderr and returns the failure exit code:
/// a one-line error a user can act on, instead of a `Debug` dump.
pub fn fail(message: impl std::fmt::Display) -> ExitCode {
    eprintln!("error: {message}");
    ExitCode::FAILURE
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(args: &[&str]) -> Result<Args, Option<String>> {
        Args::parse(args.iter().map(|s| s.to_string()), &["base-ms", "max-attempts"])
    }

    #[test]
    fn positionals_and_settings_in_any_order() {
        let args = parse(&["--base-ms", "5", "ws://x", "--max-attempts=3", "hi"]).unwrap();
        assert_eq!(args.positional(0, "d"), "ws://x");
        assert_eq!(args.positional(1, "d"), "hi");
        assert_eq!(args.positional(2, "d"), "d");
        assert_eq!(args.millis("base-ms", 1), Duration::from_millis(5));
        assert_eq!(args.get("max-attempts", 0u32), 3);
    }

    #[test]
    fn mistakes_and_help_are_reported() {
        assert_eq!(parse(&["--nope", "1"]).unwrap_err(), Some("unknown setting --nope".into()));
        assert_eq!(parse(&["--base-ms"]).unwrap_err(), Some("--base-ms needs a value".into()));
        assert_eq!(parse(&["-h"]).unwrap_err(), None);
    }
}
