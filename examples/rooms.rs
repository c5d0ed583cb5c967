//! Chapter 4.2: the room manager, walked through in-process.
//!
//! What it teaches: rooms that hold their members' *queues* (so they can
//! deliver, unlike a list of ids), created on first join and removed when
//! empty; a client in several rooms; one serialised message shared by every
//! member; per-room sequence numbers; and what happens to a member that stops
//! reading: it is evicted, and nobody else waits for it.
//!
//! ```text
//! cargo run --example rooms
//! ```
//!
//! No network: each "client" is just the receiving end of its queue, which is
//! what a connection's writer task would drain into its socket (see
//! `examples/chat_server.rs`). The output is the same on every run.
//!
//! Docs: docs/04-server-development.md

use tokio::sync::mpsc;
use tokio_tungstenite::tungstenite::Message;
use websocket_tutorial::rooms::{Registration, RoomManager};

/// A client as the room manager sees it: a bounded queue.
fn client(rooms: &RoomManager, capacity: usize) -> (Registration, mpsc::Receiver<Message>) {
    let (queue, queued) = mpsc::channel(capacity);
    (rooms.register(queue), queued)
}

/// Everything waiting in a client's queue, as text.
fn drain(queued: &mut mpsc::Receiver<Message>) -> Vec<String> {
    std::iter::from_fn(|| queued.try_recv().ok())
        .map(|msg| msg.into_text().map(|t| t.to_string()).unwrap_or_default())
        .collect()
}

fn main() {
    // ANCHOR: join
    let rooms = RoomManager::new();
    let (alice, mut alice_queue) = client(&rooms, 8);
    let (bob, mut bob_queue) = client(&rooms, 8);
    println!("registered {} and {}", alice.id, bob.id);

    rooms.join(alice.id, "general", "alice").expect("alice is registered");
    rooms.join(bob.id, "general", "bob").expect("bob is registered");
    rooms.join(alice.id, "rust", "alice").expect("alice is registered");
    println!("rooms: {:?}", rooms.room_names());
    println!("alice is in {:?}", rooms.rooms_of(alice.id));
    match rooms.join(bob.id, "general", "bob") {
        Ok(()) => println!("joined twice?"),
        Err(e) => println!("bob joins general again: {e}"),
    }
    // ANCHOR_END: join

    // ANCHOR: deliver
    let hello = Message::text("hello, general");
    let delivered = rooms.broadcast("general", &hello);
    println!("broadcast to general reached {delivered} members");
    println!("alice got {:?}", drain(&mut alice_queue));
    println!("bob got {:?}", drain(&mut bob_queue));

    // Numbered messages: the room counts, the sender's name comes from the room.
    for text in ["first", "second"] {
        let seq = rooms
            .say(bob.id, "general", |name, seq| Message::text(format!("#{seq} <{name}> {text}")))
            .expect("bob is in general");
        println!("bob said {text:?} as seq {seq}");
    }
    println!("alice got {:?}", drain(&mut alice_queue));
    drain(&mut bob_queue);
    match rooms.say(bob.id, "rust", |_, _| Message::text("?")) {
        Ok(_) => println!("bob spoke in a room he is not in?"),
        Err(e) => println!("bob says something in rust: {e}"),
    }
    // ANCHOR_END: deliver

    // ANCHOR: slow
    // A client whose queue fills up (it stopped reading) is evicted at once:
    // the room never waits for it.
    let (slow, _never_read) = client(&rooms, 2);
    rooms.join(slow.id, "general", "slow").expect("registered");
    for i in 1..=3 {
        rooms.broadcast("general", &Message::text(format!("news {i}")));
    }
    println!("slow evicted: {}", slow.evicted.is_cancelled());
    println!("general members now: {:?}", rooms.members("general"));
    println!("alice got {:?}", drain(&mut alice_queue));
    // ANCHOR_END: slow

    // ANCHOR: leave
    // Leaving, and disconnecting: empty rooms disappear.
    let name = rooms.leave(alice.id, "rust").expect("alice was in rust");
    println!("{name} left rust; rooms: {:?}", rooms.room_names());
    let left = rooms.remove(bob.id);
    println!("bob disconnected, leaving {left:?}");
    rooms.remove(alice.id);
    rooms.remove(slow.id);
    println!("rooms after everyone left: {:?}", rooms.room_names());
    // ANCHOR_END: leave
}
