//! Chapter 10.5: signs a token for chat_server's `--auth-secret-file`.
//!
//! What it teaches: what a JSON Web Token is made of (a header naming the
//! algorithm, the claims `sub` and `exp`, and an HS256 signature over both
//! with a secret only the issuer and the server hold), made with the same
//! `websocket_tutorial::token::Secret` the server checks it with. A real
//! service signs tokens when a user logs in; this program stands in for it.
//!
//! ```text
//! head -c 32 /dev/urandom | base64 > secret.txt
//! cargo run --example chat_server -- --auth-secret-file secret.txt   # terminal 1
//! cargo run --example make_token -- --secret-file secret.txt alice --ttl 3600
//! cargo run --example chat_client -- --token TOKEN alice             # terminal 2
//! ```
//!
//! It prints the token, one line, and nothing else, so that
//! `TOKEN=$(cargo run -q --example make_token -- --secret-file secret.txt alice)`
//! works. The token is valid for `--ttl` seconds (default 3600, an hour);
//! anyone who holds it may connect as `alice` until then, so treat it like
//! a password. A secret file that cannot be read, or is empty, is an error
//! that names it, and exit code 1.
//!
//! Docs: docs/10-security.md

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use clap::Parser;
use websocket_tutorial::args;
use websocket_tutorial::output;
use websocket_tutorial::token::Secret;

// ANCHOR: args
/// Prints a JSON Web Token (HS256, with sub and exp) for chat_server's
/// --auth-secret-file.
#[derive(Parser)]
#[command(allow_negative_numbers = true)] // `--ttl -60`: a bad value, not a flag
struct Args {
    /// The file that holds the secret: its content, surrounding whitespace
    /// trimmed, as chat_server reads it.
    #[arg(long, value_name = "FILE")]
    secret_file: PathBuf,
    /// The username the token proves (its `sub`).
    username: String,
    /// Seconds until the token expires (its `exp`).
    #[arg(long, value_name = "SECONDS", default_value_t = 3600)]
    #[arg(value_parser = args::positive::<u64>)]
    ttl: u64,
}
// ANCHOR_END: args

fn main() -> ExitCode {
    let _log = output::init_logging();
    let args = Args::parse(); // --help or a mistake: clap exits 0 or 2
    let secret = match Secret::from_file(&args.secret_file) {
        Ok(secret) => secret,
        Err(e) => return output::fail(e),
    };
    let token = match secret.make(&args.username, Duration::from_secs(args.ttl)) {
        Ok(token) => token,
        Err(e) => return output::fail(format_args!("cannot sign a token: {e}")),
    };
    match output::line(token) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => output::fail(format_args!("cannot write the token: {e}")),
    }
}
