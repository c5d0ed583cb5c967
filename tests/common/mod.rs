//! The test harness: runs the real example binaries (the very programs
//! `cargo run --example NAME` starts) and talks to them over real sockets.
//!
//! Nothing here sleeps to synchronise: a server is ready when it has printed
//! its `listening on` line, a message has arrived when it is read, and every
//! wait has a deadline that fails the test.

#![allow(dead_code)] // each test file uses a different part of the harness

mod files;
mod http;
mod program;
mod proxy;
mod redis;
pub mod stub;
mod trials;
mod ws;

// One harness for every test file: each uses a part of it.
#[allow(unused_imports)]
pub use {files::*, http::*, program::*, proxy::*, redis::*, trials::*, ws::*};

use std::time::Duration;

/// The deadline for anything that should happen promptly.
pub const WAIT: Duration = Duration::from_secs(10);
