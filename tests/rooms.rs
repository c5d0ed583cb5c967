//! The room manager walk-through (chapter 4.2) prints what the chapter says.

mod common;

use common::Program;

/// The demo runs to the end and shows presence, delivery, numbering,
/// eviction of a slow member (announced to the others) and removal of empty
/// rooms.
#[tokio::test]
async fn rooms_demo_shows_delivery_numbering_eviction_and_cleanup() {
    let mut demo = Program::start("rooms", &[]);
    let lines = demo.remaining_lines().await;
    assert_eq!(demo.exit_code().await, 0);
    for expected in [
        "rooms: [\"general\", \"rust\"]",
        "bob joins general again: already in that room",
        "alice got [\"* alice joined general\", \"* bob joined general\", \"* alice joined rust\"]",
        "broadcast to general reached 2 members",
        "alice got [\"#1 <bob> first\", \"#2 <bob> second\"]",
        "bob says something in rust: not in that room",
        "after news 2: slow evicted: false",
        "after news 3: slow evicted: true",
        "alice got 3 news and \"* slow left general\"",
        "alice disconnected; bob got [\"* alice left general\"]",
        "rooms after everyone left: []",
    ] {
        assert!(lines.iter().any(|l| l == expected), "missing {expected:?} in {lines:#?}");
    }
}
