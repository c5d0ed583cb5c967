//! Chapter 4.2: the room manager, walked through in-process.
//!
//! What it teaches: rooms that hold their members' *outboxes* (so they can
//! deliver, unlike a list of ids), created on first join and removed when
//! empty; joins and leaves announced by the manager in the same step that
//! changes the membership; a client in several rooms; one serialised message
//! shared by every member; per-room sequence numbers; and what happens to a
//! member that stops reading: once its outbox is over its budget in bytes,
//! it is evicted, its departure is announced, and nobody else waits for it.
//!
//! ```text
//! cargo run --example rooms
//! ```
//!
//! No network: each "client" is just the receiving end of its outbox, which
//! is what a connection drains into its socket (see
//! `examples/chat_server.rs`). The output is the same on every run.
//!
//! Docs: docs/04-server-development.md

use std::io::{self, Write};
use std::sync::Arc;

use clap::Parser;
use tokio_tungstenite::tungstenite::Message;
use websocket_tutorial::outbox::{Outgoing, frame_len};
use websocket_tutorial::output;
use websocket_tutorial::rooms::{Config, RoomManager};

/// Everything waiting in a client's outbox, as text. A real connection
/// writes these to its socket and then gives their bytes back.
fn drain(outgoing: &mut Outgoing) -> Vec<String> {
    let mut texts = Vec::new();
    while let Some(msg) = outgoing.try_recv() {
        outgoing.written(frame_len(&msg));
        texts.push(msg.into_text().map(|t| t.to_string()).unwrap_or_default());
    }
    texts
}

/// Walks through the room manager, in-process: no network, no options.
#[derive(Parser)]
struct Args {}

fn main() {
    Args::parse(); // --help, or an error for any argument (exit 2)
    let _log = output::init_logging();
    // The walk-through writes to `out` and stops at the first failed write:
    // `println!` would panic when stdout is gone (`rooms | head -1`), and
    // there is nobody left to show the rest to.
    let mut out = io::stdout().lock();
    let _ = walk_through(&mut out);
}

fn walk_through(out: &mut impl Write) -> io::Result<()> {
    // ANCHOR: join
    // Plain-text announcements keep the output short; the chat server uses
    // the default, its JSON `Joined` and `Left` events.
    let rooms = Arc::new(RoomManager::new(Config {
        outbox_bytes: 256,
        joined: |room, name, _seq, _epoch| Message::text(format!("* {name} joined {room}")),
        left: |room, name| Message::text(format!("* {name} left {room}")),
        ..Config::default()
    }));
    let (alice, mut alice_out) = rooms.register();
    let (bob, mut bob_out) = rooms.register();
    writeln!(out, "registered {} and {}", alice.id(), bob.id())?;

    alice.join("general", "alice").expect("alice is connected");
    bob.join("general", "bob").expect("bob is connected");
    alice.join("rust", "alice").expect("alice is connected");
    writeln!(out, "rooms: {:?}", rooms.room_names())?;
    writeln!(out, "alice is in {:?}", alice.rooms())?;
    match bob.join("general", "bob") {
        Ok(()) => writeln!(out, "joined twice?")?,
        Err(e) => writeln!(out, "bob joins general again: {e}")?,
    }
    writeln!(out, "alice got {:?}", drain(&mut alice_out))?;
    writeln!(out, "bob got {:?}", drain(&mut bob_out))?;
    // ANCHOR_END: join

    // ANCHOR: deliver
    let hello = Message::text("hello, general");
    let delivered = rooms.broadcast("general", &hello);
    writeln!(out, "broadcast to general reached {delivered} members")?;
    writeln!(out, "alice got {:?}", drain(&mut alice_out))?;
    writeln!(out, "bob got {:?}", drain(&mut bob_out))?;

    // Numbered messages: the room counts, the sender's name comes from the room.
    for text in ["first", "second"] {
        let seq = bob
            .say("general", |name, seq| Message::text(format!("#{seq} <{name}> {text}")))
            .expect("bob is in general");
        writeln!(out, "bob said {text:?} as seq {seq}")?;
    }
    writeln!(out, "alice got {:?}", drain(&mut alice_out))?;
    drain(&mut bob_out);
    match bob.say("rust", |_, _| Message::text("?")) {
        Ok(_) => writeln!(out, "bob spoke in a room he is not in?")?,
        Err(e) => writeln!(out, "bob says something in rust: {e}")?,
    }
    // ANCHOR_END: deliver

    // ANCHOR: slow
    // A client that stops reading is evicted as soon as its outbox is over
    // its budget (256 bytes here, 1 MiB in the chat server): the room never
    // waits for it, and the others hear that it left.
    let (slow, _never_read) = rooms.register();
    slow.join("general", "slow").expect("slow is connected");
    let mut alice_got = Vec::new();
    for i in 1..=3 {
        rooms.broadcast("general", &Message::text(format!("news {i}: {}", ".".repeat(90))));
        writeln!(out, "after news {i}: slow evicted: {}", slow.is_evicted())?;
        alice_got.extend(drain(&mut alice_out)); // alice and bob keep up
        drain(&mut bob_out);
    }
    writeln!(out, "general members now: {:?}", rooms.members("general"))?;
    let news = alice_got.iter().filter(|m| m.starts_with("news")).count();
    writeln!(out, "alice got {news} news and {:?}", alice_got.last().expect("events"))?;
    // ANCHOR_END: slow

    // ANCHOR: leave
    // Leaving, and disconnecting (dropping the member): empty rooms go.
    let name = alice.leave("rust").expect("alice was in rust");
    writeln!(out, "{name} left rust; rooms: {:?}", rooms.room_names())?;
    drain(&mut bob_out);
    drop(alice);
    writeln!(out, "alice disconnected; bob got {:?}", drain(&mut bob_out))?;
    drop((bob, slow));
    writeln!(out, "rooms after everyone left: {:?}", rooms.room_names())?;
    // ANCHOR_END: leave
    Ok(())
}
