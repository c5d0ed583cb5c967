//! The browser client, `web/chat.html`, in a real headless Chromium against
//! the real `chat_server`.
//!
//! Chromium is driven through its DevTools Protocol (CDP): JSON commands and
//! replies over a WebSocket, so the tokio-tungstenite client that the rest of
//! the tutorial uses is all we need, no browser-automation crate. The page
//! is opened from disk, as a reader would open it.
//!
//! Needs Chromium at `/usr/bin/chromium` (Debian: `apt-get install chromium`)
//! or wherever `CHROMIUM` points. Without it `cargo test` shows the tests as
//! `ignored`, with the reason, unless `CI` is set: then they fail, so CI
//! cannot pass by not running them (see `common::trial_needing`).
//!
//! The chat test leaves a screenshot in `target/chat-page.png`; with
//! `UPDATE_SCREENSHOT=1` it also refreshes `docs/images/chat-page.png`.

mod common;

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use chrono::{DateTime, FixedOffset};
use common::stub::{self, StubServer, confirm_join, expect_join, refusal, tell};
use common::{
    Certificates, Component, Cut, Proxy, Server, TempFile, WAIT, axum_chat_missing, connect,
    log_message, recv, run_trials, trial_needing, unstamped,
};
use futures_util::{SinkExt, StreamExt};
use libtest_mimic::Trial;
use serde::Deserialize;
use serde_json::{Value, json};
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::{Child, Command};
use tokio::sync::Mutex;
use tokio::time::{Instant, sleep, timeout};
use tokio_tungstenite::tungstenite::Message;
use websocket_tutorial::client::WsClient;
use websocket_tutorial::protocol::{ClientMessage, ErrorCode, ServerEvent};

/// The pages run in a time zone that is not UTC and has a half-hour offset,
/// so showing the server's UTC time unconverted cannot pass.
const TIME_ZONE: &str = "Asia/Kolkata";
const UTC_OFFSET_SECS: i32 = 5 * 3600 + 30 * 60;

fn main() -> std::process::ExitCode {
    let chromium = Component {
        name: "chromium",
        install: "apt-get install chromium",
        missing: chromium_binary().err(),
    };
    // axum_chat (chapter 12) is built only with `--features axum`.
    let chromium_and_axum = Component {
        name: "chromium, and axum_chat",
        install: "apt-get install chromium; cargo test --features axum",
        missing: chromium.missing.clone().or_else(axum_chat_missing),
    };
    let trials = vec![
        trial_needing(
            &chromium,
            "two_pages_chat_in_a_room_that_other_rooms_do_not_hear",
            two_pages_chat_in_a_room_that_other_rooms_do_not_hear,
        ),
        trial_needing(
            &chromium,
            "page_reconnects_and_rejoins_its_rooms",
            page_reconnects_and_rejoins_its_rooms,
        ),
        trial_needing(
            &chromium,
            "page_heartbeat_notices_a_silent_server",
            page_heartbeat_notices_a_silent_server,
        ),
        trial_needing(
            &chromium,
            "page_keeps_its_room_when_a_join_is_refused_and_shows_why_it_closed",
            page_keeps_its_room_when_a_join_is_refused_and_shows_why_it_closed,
        ),
        trial_needing(
            &chromium,
            "page_shows_every_message_once_across_a_server_restart",
            page_shows_every_message_once_across_a_server_restart,
        ),
        trial_needing(
            &chromium,
            "page_moves_to_the_next_server_when_one_is_gone",
            page_moves_to_the_next_server_when_one_is_gone,
        ),
        trial_needing(
            &chromium,
            "page_resumes_with_since_after_a_dropped_connection",
            page_resumes_with_since_after_a_dropped_connection,
        ),
        trial_needing(
            &chromium,
            "page_shows_a_gap_when_the_history_is_too_short",
            page_shows_a_gap_when_the_history_is_too_short,
        ),
        trial_needing(
            &chromium,
            "page_rejoins_once_the_server_frees_its_name",
            page_rejoins_once_the_server_frees_its_name,
        ),
        trial_needing(
            &chromium,
            "page_decides_a_refused_rejoin_by_its_code_not_its_words",
            page_decides_a_refused_rejoin_by_its_code_not_its_words,
        ),
        trial_needing(
            &chromium,
            "a_page_from_an_origin_not_allowed_gets_no_websocket",
            a_page_from_an_origin_not_allowed_gets_no_websocket,
        ),
        trial_needing(
            &chromium,
            "page_sends_its_token_in_the_url_from_the_field_or_its_own_query",
            page_sends_its_token_in_the_url_from_the_field_or_its_own_query,
        ),
        trial_needing(
            &chromium,
            "page_chats_over_wss_with_a_certificate_chromium_is_told_to_trust",
            page_chats_over_wss_with_a_certificate_chromium_is_told_to_trust,
        ),
        trial_needing(
            &chromium_and_axum,
            "two_pages_served_by_axum_chat_chat_over_its_own_websocket",
            two_pages_served_by_axum_chat_chat_over_its_own_websocket,
        ),
        Trial::test("base64_encodes_and_decodes_the_standard_alphabet", || {
            base64_encodes_and_decodes_the_standard_alphabet();
            Ok(())
        }),
    ];
    run_trials(include_str!("browser.rs"), trials)
}

/// The Chromium binary: `CHROMIUM`, or Debian's `/usr/bin/chromium`; `Err`
/// says why there is none.
fn chromium_binary() -> Result<PathBuf, String> {
    let binary =
        std::env::var_os("CHROMIUM").map_or_else(|| "/usr/bin/chromium".into(), PathBuf::from);
    if binary.exists() { Ok(binary) } else { Err(format!("not found at {}", binary.display())) }
}

/// Two pages chat in `general`: each sees the other join, alice's message
/// reaches bob with her name and the local time, bob's Enter-key reply
/// reaches alice, rooms switch as tabs, a leave is shown, markup stays text,
/// a server `Error` is shown, and a client in `other` hears nothing of it.
async fn two_pages_chat_in_a_room_that_other_rooms_do_not_hear() {
    let browser = Browser::launch().await;
    let server = Server::start("chat_server", &[]).await;

    let alice = browser.open_chat(&server.url).await;
    assert_eq!(alice.eval("document.querySelector('#server').value").await, server.url.as_str());
    alice.connect("alice", "general").await;
    alice
        .wait_for_entry("alice sees her own join", |e| e.is_event("general", "alice joined"))
        .await;

    // A plain WebSocket client in another room.
    let mut carol = connect(&server.url).await;
    let join = ClientMessage::Join {
        room: "other".into(),
        username: "carol".into(),
        since: None,
        epoch: None,
    };
    carol.send(join.to_message()).await.expect("send Join");
    let expected = joined("other", "carol");
    assert_eq!(event(&recv(&mut carol).await), expected);

    let bob = browser.open_chat(&server.url).await;
    bob.connect("bob", "general").await;
    bob.wait_for_entry("bob sees his own join", |e| e.is_event("general", "bob joined")).await;
    alice.wait_for_entry("alice sees bob join", |e| e.is_event("general", "bob joined")).await;

    // Alice sends with the button.
    let hello = "Hi bob! Welcome to #general.";
    alice.fill("#message", hello).await;
    alice.click("#send").await;
    let got =
        bob.wait_for_entry("bob sees alice's message", |e| e.is_message("alice", hello)).await;
    assert!(!got.mine, "alice's message is not marked as bob's own");
    let sent_at = DateTime::parse_from_rfc3339(&got.datetime)
        .unwrap_or_else(|e| panic!("server timestamp {:?} is RFC 3339: {e}", got.datetime));
    let zone = FixedOffset::east_opt(UTC_OFFSET_SECS).expect("valid offset");
    let local = sent_at.with_timezone(&zone).format("%H:%M:%S").to_string();
    assert_eq!(got.time, local, "the time is shown as local HH:MM:SS");
    alice
        .wait_for_entry("alice sees her own message", |e| e.is_message("alice", hello) && e.mine)
        .await;
    assert_eq!(alice.eval("document.querySelector('#message').value").await, "", "input cleared");

    // Bob types and presses Enter, as a person would.
    bob.type_text("#message", "Hey alice, all good here.").await;
    bob.press_enter().await;
    alice
        .wait_for_entry("alice sees bob's reply", |e| {
            e.is_message("bob", "Hey alice, all good here.")
        })
        .await;
    alice.fill("#message", "The server stamps the time; you see it in yours.").await;
    alice.click("#send").await;
    bob.wait_for_entry("bob sees the third message", |e| {
        e.is_msg_from("alice") && e.text.starts_with("The server stamps")
    })
    .await;

    // A second room is a second tab; the log shows one room at a time.
    alice.fill("#room", "random").await;
    alice.click("#join").await;
    alice.wait_for_entry("alice joins random", |e| e.is_event("random", "alice joined")).await;
    assert!(
        alice.entries().await.iter().all(|e| e.visible == (e.room == "random")),
        "only random shows"
    );
    alice.click("#rooms button[data-room='general']").await;
    assert!(
        alice.entries().await.iter().all(|e| e.visible == (e.room == "general")),
        "only general shows"
    );

    bob.click("#leave").await;
    alice.wait_for_entry("alice sees bob leave", |e| e.is_event("general", "bob left")).await;
    let no_room = "document.querySelectorAll('#rooms li').length === 0 \
                   && document.querySelector('#send').disabled";
    bob.wait_until("bob's page has no room left", no_room).await;

    alice.screenshot_to("chat-page.png").await;

    // Markup in a message arrives as text: no element is created, no
    // handler runs.
    let markup = "<b>not bold</b> & <img src=x onerror=\"document.title='owned'\">";
    alice.fill("#message", markup).await;
    alice.click("#send").await;
    let shown = alice
        .wait_for_entry("alice sees her markup message", |e| {
            e.is_msg_from("alice") && e.text.contains("not bold")
        })
        .await;
    let created =
        "[document.querySelectorAll('#messages b, #messages img').length, document.title]";
    let untouched = json!([0, "Chat · websocket-tutorial"]);
    assert_eq!(alice.eval(created).await, untouched, "no markup ran");
    assert_eq!(shown.text, markup);

    // Nothing said in general reached `other`. Waiting out a short silence
    // is the expected outcome here, and carol's connection is alive: her own
    // message comes straight back.
    assert_silent(&mut carol, Duration::from_millis(300)).await;
    let say = ClientMessage::Message { room: "other".into(), content: "anyone?".into() };
    carol.send(say.to_message()).await.expect("send Message");
    match event(&recv(&mut carol).await) {
        ServerEvent::Message { room, username, content, seq, .. } => {
            assert_eq!(
                (room.as_str(), username.as_str(), content.as_str(), seq),
                ("other", "carol", "anyone?", 1)
            );
        }
        other => panic!("expected carol's message, got {other:?}"),
    }

    // The server refuses a message to a room the page is not in; the page
    // shows the server's Error, with the room it names. (The UI cannot send
    // one, so we use the page's socket directly.)
    alice.eval("ws.send(JSON.stringify({type: 'Message', room: 'nowhere', content: 'x'}))").await;
    let shows_error = "document.querySelector('#error').checkVisibility() \
                       && document.querySelector('#error-text').textContent.startsWith('#nowhere: ')";
    alice.wait_until("alice's page shows the server's error", shows_error).await;
    alice.assert_no_errors().await;
    bob.assert_no_errors().await;

    server.stop().await;
}

/// axum_chat (chapter 12) serves the page itself: two tabs open
/// `http://IP:PORT/`, each page connects to that server's `/ws` without
/// being told (its origin is the server's own, so no `--allow-origin`),
/// and they chat.
async fn two_pages_served_by_axum_chat_chat_over_its_own_websocket() {
    let browser = Browser::launch().await;
    let server = Server::start("axum_chat", &[]).await;
    let page = format!("http://{}/", server.addr);

    let alice = browser.open_page(&page).await;
    let chosen = alice.eval("document.querySelector('#server').value").await;
    assert_eq!(chosen, server.url.as_str(), "the page picks its own server's /ws");
    alice.connect("alice", "general").await;
    alice
        .wait_for_entry("alice sees her own join", |e| e.is_event("general", "alice joined"))
        .await;
    let bob = browser.open_page(&page).await;
    bob.connect("bob", "general").await;
    alice.wait_for_entry("alice sees bob join", |e| e.is_event("general", "bob joined")).await;

    let hello = "Served and spoken on one port.";
    alice.fill("#message", hello).await;
    alice.click("#send").await;
    bob.wait_for_entry("bob sees alice's message", |e| e.is_message("alice", hello)).await;
    bob.type_text("#message", "Same chat, another framework.").await;
    bob.press_enter().await;
    alice
        .wait_for_entry("alice sees bob's reply", |e| {
            e.is_message("bob", "Same chat, another framework.")
        })
        .await;
    alice.assert_no_errors().await;
    bob.assert_no_errors().await;
    server.stop().await;
}

/// When the server goes away (Ctrl-C, close 1001), the page says so, retries
/// with backoff, and once a server is back on the same port it reconnects
/// and joins its rooms again: a message sent there reaches it.
async fn page_reconnects_and_rejoins_its_rooms() {
    let browser = Browser::launch().await;
    let server = Server::start("chat_server", &[]).await;
    let addr = server.addr.clone();

    let alice = browser.open_chat(&server.url).await;
    alice.connect("alice", "general").await;
    alice.wait_for_entry("alice joins", |e| e.is_event("general", "alice joined")).await;

    server.stop().await;
    alice.wait_for_status("the page shows it is retrying", "disconnected", "retrying in").await;

    let server = Server::start_on("chat_server", &addr, &[]).await;
    alice.wait_for_status("the page reconnects", "connected", "alice").await;
    let rejoined = |entries: &[Entry]| {
        entries.iter().filter(|e| e.is_event("general", "alice joined")).count() == 2
    };
    alice.wait_until_entries("the page joins general again", rejoined).await;

    // The new server really has the page in `general`.
    let mut bob = connect(&server.url).await;
    let join = ClientMessage::Join {
        room: "general".into(),
        username: "bob".into(),
        since: None,
        epoch: None,
    };
    bob.send(join.to_message()).await.expect("send Join");
    assert_eq!(event(&recv(&mut bob).await), joined("general", "bob"));
    alice.wait_for_entry("alice sees bob join", |e| e.is_event("general", "bob joined")).await;
    alice.fill("#message", "back again").await;
    alice.click("#send").await;
    match event(&recv(&mut bob).await) {
        ServerEvent::Message { username, content, seq, .. } => {
            assert_eq!((username.as_str(), content.as_str(), seq), ("alice", "back again", 1));
        }
        other => panic!("expected alice's message, got {other:?}"),
    }
    alice.assert_no_errors().await;

    server.stop().await;
}

/// A server that goes silent without closing (here: stopped with SIGSTOP,
/// as a vanished machine would be) is noticed by the page's own heartbeat:
/// the page gives up on the connection, and reconnects and rejoins once the
/// server answers again.
async fn page_heartbeat_notices_a_silent_server() {
    let browser = Browser::launch().await;
    let server = Server::start("chat_server", &[]).await;

    let alice = browser.open_chat_with(&format!("server={}&heartbeat_ms=100", server.url)).await;
    alice.connect("alice", "general").await;
    alice.wait_for_entry("alice joins", |e| e.is_event("general", "alice joined")).await;

    // A healthy connection stays: the server's Pongs keep coming long past
    // the silence limit (3 rounds), and nothing reconnected.
    let count = "window.pongs = 0; \
        ws.addEventListener('message', (e) => { if (JSON.parse(e.data).type === 'Pong') pongs++; }); \
        true";
    alice.eval(count).await;
    alice.wait_until("the page hears Pongs past the silence limit", "pongs > 5").await;
    assert_eq!(alice.eval("attempt").await, 0, "no reconnect while the server answers");

    server.program.signal("STOP");
    // `attempt` counts reconnects; the status soon shows `connecting` again
    // (the stopped server's kernel still accepts TCP), so it is the
    // counter that stays as evidence.
    alice.wait_until("the page gives up on the silent connection", "attempt > 0").await;
    assert_ne!(alice.eval("document.querySelector('#status').dataset.state").await, "connected");

    server.program.signal("CONT");
    alice.wait_for_status("the page reconnects", "connected", "alice").await;
    let rejoined = |entries: &[Entry]| {
        entries.iter().filter(|e| e.is_event("general", "alice joined")).count() == 2
    };
    alice.wait_until_entries("the page joins general again", rejoined).await;
    alice.assert_no_errors().await;

    server.stop().await;
}

/// A join the server refuses (the name is taken in that room) does not make
/// that room current: the page names the room in its error, forgets it, and
/// what the user types next still goes to the room they were in. When the
/// server closes, the status badge shows the close code and reason whole.
async fn page_keeps_its_room_when_a_join_is_refused_and_shows_why_it_closed() {
    let browser = Browser::launch().await;
    let server = Server::start("chat_server", &[]).await;

    // Someone else is `alice` in `lobby` already.
    let mut other = connect(&server.url).await;
    let join = ClientMessage::Join {
        room: "lobby".into(),
        username: "alice".into(),
        since: None,
        epoch: None,
    };
    other.send(join.to_message()).await.expect("send Join");
    assert_eq!(event(&recv(&mut other).await), joined("lobby", "alice"));

    let alice = browser.open_chat(&server.url).await;
    alice.connect("alice", "general").await;
    alice.fill("#room", "lobby").await;
    alice.click("#join").await;
    alice
        .wait_until(
            "the page shows the refusal, naming the room",
            "!document.querySelector('#error').hidden \
         && document.querySelector('#error-text').textContent.startsWith('#lobby: ')",
        )
        .await;
    alice.wait_until("the page forgets the refused room", "!rooms.has('lobby')").await;
    assert_eq!(alice.eval("active").await, "general", "the current room is still general");

    alice.fill("#message", "still here").await;
    alice.click("#send").await;
    let mine = alice
        .wait_for_entry("the line went to general", |e| e.is_message("alice", "still here"))
        .await;
    assert_eq!(mine.room, "general");

    // The page retries within half a second, and the badge moves on: record
    // every text it shows, and whether the text fitted, as it changes.
    let record = "window.badges = []; \
        const s = document.querySelector('#status'); \
        new MutationObserver(() => badges.push({ text: s.textContent, \
            whole: s.scrollWidth <= s.clientWidth && s.scrollHeight <= s.clientHeight })) \
          .observe(s, { childList: true, characterData: true, subtree: true }); true";
    alice.eval(record).await;
    server.stop().await;
    let why = "closed 1001: server shutting down";
    let seen = format!("badges.some((b) => b.text.includes({}))", json!(why));
    alice.wait_until("the badge says why the server closed", &seen).await;
    let whole =
        format!("badges.filter((b) => b.text.includes({})).every((b) => b.whole)", json!(why));
    assert_eq!(alice.eval(&whole).await, true, "the badge showed all of its text");
    alice.assert_no_errors().await;
    drop(other);
}

/// Across a server restart on the same port, the page shows every message of
/// its room exactly once, in order. The restarted room is a new life with a
/// new epoch, and counts from 1 again: carol says five messages there, more
/// than the three the page had seen, before the page is back. Its rejoin
/// names the old epoch, so the server says the room started over and
/// replays the new life from its first message: the page shows that note,
/// all five, its own joined line, and then the live one, in time order.
/// (Before epochs, the page rejoined with `since` 3, which the new room had
/// passed: it never showed four, five and six.)
///
/// The page reaches the server through a proxy that turns it away while the
/// server restarts: the messages said meanwhile are certainly said before
/// the page is back.
async fn page_shows_every_message_once_across_a_server_restart() {
    let browser = Browser::launch().await;
    let server = Server::start("chat_server", &[]).await;
    let addr = server.addr.clone();
    let proxy = Proxy::start(&addr).await;

    let mut bob = join(&server.url, "general", "bob").await;
    let alice = browser.open_chat(&proxy.url).await;
    alice.connect("alice", "general").await;
    for text in ["one", "two", "three"] {
        say(&mut bob, "general", text).await;
    }
    let shown = |n: usize| move |entries: &[Entry]| messages_in(entries, "general").len() == n;
    alice.wait_until_entries("alice sees bob's messages", shown(3)).await;

    proxy.refuse(true);
    server.stop().await;
    alice.wait_for_status("the page is retrying", "disconnected", "retrying in").await;
    let server = Server::start_on("chat_server", &addr, &[]).await;
    let mut carol = join(&server.url, "general", "carol").await;
    for (seq, text) in (1..).zip(["four", "five", "six", "seven", "eight"]) {
        assert_eq!(say(&mut carol, "general", text).await, seq, "the new room counts from 1");
    }
    proxy.refuse(false);
    alice.wait_until_entries("alice sees what was said before she was back", shown(8)).await;
    assert_eq!(say(&mut carol, "general", "nine").await, 6);
    alice.wait_until_entries("alice sees carol's later message", shown(9)).await;
    let entries = alice.entries().await;
    let expected = [
        "event: alice joined",
        "bob: one",
        "bob: two",
        "bob: three",
        STARTED_OVER,
        "carol: four",
        "carol: five",
        "carol: six",
        "carol: seven",
        "carol: eight",
        "event: alice joined",
        "carol: nine",
    ];
    assert_eq!(everything_in(&entries, "general"), expected);
    assert_in_time_order(&entries);
    alice.assert_no_errors().await;

    server.stop().await;
}

/// With `?server=A,B`, the page uses A; when A is killed it moves to B, and
/// says so in its badge; rejoining there, B's room is not A's, so the page
/// says it restarted and shows what is said on B. When B goes too, the
/// page comes back round to A, restarted on its port.
async fn page_moves_to_the_next_server_when_one_is_gone() {
    let browser = Browser::launch().await;
    let a = Server::start("chat_server", &[]).await;
    let a_addr = a.addr.clone();
    let b = Server::start("chat_server", &[]).await;

    let alice = browser.open_chat_with(&format!("server={},{}", a.url, b.url)).await;
    alice.connect("alice", "general").await;
    alice.wait_for_server("the page is connected to A", &a.url).await;
    let mut dave = join(&a.url, "general", "dave").await;
    say(&mut dave, "general", "on A").await;
    alice.wait_for_entry("alice sees dave on A", |e| e.is_message("dave", "on A")).await;

    a.program.signal("KILL");
    alice.wait_for_server("the page moves to B", &b.url).await;
    let joined_twice = |entries: &[Entry]| {
        entries.iter().filter(|e| e.is_event("general", "alice joined")).count() == 2
    };
    alice.wait_until_entries("the page joins general on B", joined_twice).await;
    let mut bob = join(&b.url, "general", "bob").await;
    say(&mut bob, "general", "on B").await;
    alice.wait_for_entry("alice sees bob on B", |e| e.is_message("bob", "on B")).await;
    let expected = ["dave: on A", STARTED_OVER, "bob: on B"];
    assert_eq!(log_of(&alice.entries().await, "general"), expected);

    // Round robin: after B, A again.
    let a = Server::start_on("chat_server", &a_addr, &[]).await;
    b.stop().await;
    alice.wait_for_server("the page comes back to A", &a.url).await;
    alice.assert_no_errors().await;

    a.stop().await;
}

/// A connection dropped while the server stays up (the proxy cuts it): the
/// page rejoins with `since`, and the server, which still has the room's
/// history, replays what was said meanwhile, once, before the live messages.
async fn page_resumes_with_since_after_a_dropped_connection() {
    let browser = Browser::launch().await;
    let server = Server::start("chat_server", &[]).await;
    let proxy = Proxy::start(&server.addr).await;

    // Bob keeps the room, and its history, alive.
    let mut bob = join(&server.url, "general", "bob").await;
    let alice = browser.open_chat(&proxy.url).await;
    alice.connect("alice", "general").await;
    say(&mut bob, "general", "one").await;
    say(&mut bob, "general", "two").await;
    let shown = |n: usize| move |entries: &[Entry]| messages_in(entries, "general").len() == n;
    alice.wait_until_entries("alice sees bob's messages", shown(2)).await;

    // Turned away until the room has moved on without her.
    proxy.refuse(true);
    proxy.cut(Cut::Both);
    let gone = left("general", "alice");
    wait_for_event(&mut bob, "the server sees alice go", |e| *e == gone).await;
    say(&mut bob, "general", "three").await;
    say(&mut bob, "general", "four").await;
    proxy.refuse(false);

    alice.wait_until_entries("alice sees what she missed", shown(4)).await;
    say(&mut bob, "general", "five").await;
    alice.wait_until_entries("alice sees the next live message", shown(5)).await;
    let expected = ["bob: one", "bob: two", "bob: three", "bob: four", "bob: five"];
    let entries = alice.entries().await;
    assert_eq!(log_of(&entries, "general"), expected, "no note: nothing lost");
    // Her own joined line after the replay, in time order.
    let all = [
        "event: alice joined",
        "bob: one",
        "bob: two",
        "bob: three",
        "bob: four",
        "event: alice joined",
        "bob: five",
    ];
    assert_eq!(everything_in(&entries, "general"), all);
    assert_in_time_order(&entries);
    alice.assert_no_errors().await;

    server.stop().await;
}

/// When the room's history no longer reaches back to what the page missed,
/// the server's `Gap` comes before the replay: the page says which messages
/// are lost, then shows the ones still held, each once, and no jump after.
async fn page_shows_a_gap_when_the_history_is_too_short() {
    let browser = Browser::launch().await;
    let server = Server::start("chat_server", &["--history", "2"]).await;
    let proxy = Proxy::start(&server.addr).await;

    let mut bob = join(&server.url, "general", "bob").await;
    let alice = browser.open_chat(&proxy.url).await;
    alice.connect("alice", "general").await;
    say(&mut bob, "general", "one").await;
    alice.wait_for_entry("alice sees bob's message", |e| e.is_message("bob", "one")).await;

    proxy.refuse(true);
    proxy.cut(Cut::Both);
    let gone = left("general", "alice");
    wait_for_event(&mut bob, "the server sees alice go", |e| *e == gone).await;
    for text in ["two", "three", "four", "five"] {
        say(&mut bob, "general", text).await;
    }
    proxy.refuse(false);

    let shown = |n: usize| move |entries: &[Entry]| messages_in(entries, "general").len() == n;
    alice.wait_until_entries("alice sees the messages still held", shown(3)).await;
    say(&mut bob, "general", "six").await;
    alice.wait_until_entries("alice sees the next live message", shown(4)).await;
    let expected = [
        "bob: one",
        "note: messages 2–3 lost: the server no longer has them",
        "bob: four",
        "bob: five",
        "bob: six",
    ];
    let entries = alice.entries().await;
    assert_eq!(log_of(&entries, "general"), expected);
    // The gap with the time of the message after it, her own joined line
    // after the replay: in time order.
    let all = [
        "event: alice joined",
        "bob: one",
        "note: messages 2–3 lost: the server no longer has them",
        "bob: four",
        "bob: five",
        "event: alice joined",
        "bob: six",
    ];
    assert_eq!(everything_in(&entries, "general"), all);
    let gap = entries.iter().position(|e| e.kind == "note").expect("the gap");
    assert_eq!(entries[gap].datetime, entries[gap + 1].datetime, "the gap takes four's time");
    assert_in_time_order(&entries);
    alice.assert_no_errors().await;

    server.stop().await;
}

/// After a drop the server has not noticed (the proxy keeps the server's
/// side of the old connection open, as a dead cluster node holds a name),
/// the page's rejoin is refused, the name being taken: the page keeps the
/// room, pending, and retries with backoff until the name is free, then
/// shows what was said meanwhile, once.
async fn page_rejoins_once_the_server_frees_its_name() {
    let browser = Browser::launch().await;
    // Only the test frees the name: the heartbeat would take a minute.
    let server = Server::start("chat_server", &["--pong-timeout-ms", "60000"]).await;
    let proxy = Proxy::start(&server.addr).await;

    let mut bob = join(&server.url, "general", "bob").await;
    let alice = browser.open_chat(&proxy.url).await;
    alice.connect("alice", "general").await;
    say(&mut bob, "general", "one").await;
    alice.wait_for_entry("alice sees bob's message", |e| e.is_message("bob", "one")).await;

    proxy.cut(Cut::KeepServerSide);
    say(&mut bob, "general", "two").await;
    alice
        .wait_for_entry("the page says its name is still held", |e| {
            e.kind == "note" && e.room == "general" && e.text.contains("still held")
        })
        .await;
    let pending = "rooms.get('general')?.joined === false \
        && document.querySelector(\"#rooms button[data-room='general']\").classList.contains('pending') \
        && document.querySelector('#error').hidden";
    assert_eq!(alice.eval(pending).await, true, "general is kept, pending, with no error");
    say(&mut bob, "general", "three").await;

    proxy.release();
    let gone = left("general", "alice");
    wait_for_event(&mut bob, "the server sees the old alice go", |e| *e == gone).await;
    let shown = |n: usize| move |entries: &[Entry]| messages_in(entries, "general").len() == n;
    alice.wait_until_entries("alice sees what she missed", shown(3)).await;
    say(&mut bob, "general", "four").await;
    alice.wait_until_entries("alice sees the next live message", shown(4)).await;
    let expected = [
        "bob: one",
        "note: the name alice is still held here; joining again…",
        "bob: two",
        "bob: three",
        "bob: four",
    ];
    assert_eq!(log_of(&alice.entries().await, "general"), expected);
    alice.assert_no_errors().await;

    server.stop().await;
}

/// The page decides what a refused rejoin means by the refusal's code
/// alone, whatever its words: here a server of the test's own words its
/// refusals in German. `since_ahead`: the page says the room restarted and
/// joins again from its start (`since` 0). `name_taken`: it keeps the room
/// and asks again after a pause. Another code is final, even in the very
/// words this project's server uses for "since ahead": the page shows the
/// refusal and forgets the room, and its next command is the user's.
async fn page_decides_a_refused_rejoin_by_its_code_not_its_words() {
    let browser = Browser::launch().await;
    let stub = StubServer::start().await;
    let alice = browser.open_chat(&stub.url).await;
    let serve_first_join = async {
        let mut ws = stub.accept().await;
        assert_eq!(expect_join(&mut ws, "general", "alice").await, None, "live only");
        confirm_join(&mut ws, "general", "alice").await;
        ws
    };
    let ((), mut ws) = tokio::join!(alice.connect("alice", "general"), serve_first_join);
    tell(&mut ws, stub::message("general", "bob", "m5", 5)).await;
    alice.wait_for_entry("alice sees bob's message", |e| e.is_message("bob", "m5")).await;

    // Dropped: the page comes back and asks for what followed message 5.
    // The room started over.
    drop(ws);
    let mut ws = stub.accept().await;
    assert_eq!(expect_join(&mut ws, "general", "alice").await, Some(5));
    tell(&mut ws, refusal("general", ErrorCode::SinceAhead, "Der Raum hat neu begonnen")).await;
    assert_eq!(expect_join(&mut ws, "general", "alice").await, Some(0), "from the start");
    confirm_join(&mut ws, "general", "alice").await;
    let restarted = |e: &Entry| shown_as(e) == RESTARTED;
    alice.wait_for_entry("the page says the room restarted", restarted).await;

    // Dropped again; its name is still held: the page asks again.
    drop(ws);
    let mut ws = stub.accept().await;
    assert_eq!(expect_join(&mut ws, "general", "alice").await, Some(0));
    tell(&mut ws, refusal("general", ErrorCode::NameTaken, "Dieser Name ist vergeben")).await;
    assert_eq!(expect_join(&mut ws, "general", "alice").await, Some(0), "asks again");
    confirm_join(&mut ws, "general", "alice").await;
    let expected =
        ["bob: m5", RESTARTED, "note: the name alice is still held here; joining again…"];
    alice
        .wait_until_entries("the page says its name was held", |entries| {
            log_of(entries, "general") == expected
        })
        .await;
    alice.wait_until("general is joined again", "rooms.get('general')?.joined === true").await;

    // Another code is final, whatever its words.
    drop(ws);
    let mut ws = stub.accept().await;
    assert_eq!(expect_join(&mut ws, "general", "alice").await, Some(0));
    let words = "since 9 is ahead of the room's last message, seq 0";
    tell(&mut ws, refusal("general", ErrorCode::BadName, words)).await;
    alice.wait_until("the page forgets general", "!rooms.has('general')").await;
    let shown = format!(
        "document.querySelector('#error-text').textContent === {}",
        json!(format!("#general: {words}"))
    );
    alice.wait_until("the page shows the refusal", &shown).await;
    alice.fill("#room", "other").await;
    alice.click("#join").await;
    let next = stub::next_command(&mut ws).await;
    assert!(
        matches!(&next, ClientMessage::Join { room, .. } if room == "other"),
        "no Join of general after a final refusal; the next command is the user's: {next:?}"
    );
}

/// Cross-site WebSocket hijacking, from a real browser (chapter 10.1): the
/// page, opened from disk, has the origin `null`, and Chromium says so in
/// the handshake. A server that allows only another origin refuses it with
/// 403 (the page's WebSocket never opens), and logs why; one that lists
/// `null` lets the same page in.
async fn a_page_from_an_origin_not_allowed_gets_no_websocket() {
    let browser = Browser::launch().await;
    let open = |url: &str| {
        format!(
            "new Promise((done) => {{
                const socket = new WebSocket('{url}');
                socket.onopen = () => {{ socket.close(); done('open'); }};
                socket.onclose = (e) => done('closed ' + e.code);
            }})"
        )
    };

    let args = ["--allow-origin", "https://chat.example.com"];
    let mut elsewhere = Server::start("chat_server", &args).await;
    let page = browser.open_chat(&elsewhere.url).await;
    assert_eq!(page.eval(&open(&elsewhere.url)).await, "closed 1006");
    let refused = |l: &str| l.contains("refused, 403: origin not allowed origin=null");
    elsewhere.program.wait_for_log(refused).await;
    elsewhere.stop().await;

    let local = Server::start("chat_server", &["--allow-origin", "null"]).await;
    assert_eq!(page.eval(&open(&local.url)).await, "open");
    local.stop().await;
}

/// Tokens from a browser (chapter 10.5): against a chat_server started
/// with `--auth-secret-file`, a page opened with `?token=` has it in its
/// Token field and connects; a page whose Token field is typed in connects
/// too, and the two chat; the status shows the server's URL, not the token.
/// A page without a token gets no WebSocket (the server logs its 401), and
/// a page whose token is for bob cannot join as carol.
async fn page_sends_its_token_in_the_url_from_the_field_or_its_own_query() {
    let browser = Browser::launch().await;
    let file = TempFile::new("s3cret\n");
    let mut server = Server::start("chat_server", &["--auth-secret-file", file.arg()]).await;
    let secret = websocket_tutorial::token::Secret::new(b"s3cret").expect("a secret");
    let token = |name: &str| secret.make(name, Duration::from_secs(60)).expect("a token");

    let (alices, bobs) = (token("alice"), token("bob"));
    let alice = browser.open_chat_with(&format!("server={}&token={alices}", server.url)).await;
    assert_eq!(alice.eval("document.querySelector('#token').value").await, alices.as_str());
    alice.connect("alice", "general").await;
    let status = alice.eval("document.querySelector('#status').textContent").await;
    assert!(!status.as_str().unwrap_or_default().contains("token"), "{status}");

    let bob = browser.open_chat(&server.url).await;
    bob.fill("#token", &bobs).await;
    bob.connect("bob", "general").await;
    alice.wait_for_entry("alice sees bob join", |e| e.is_event("general", "bob joined")).await;
    bob.fill("#message", "signed, bob").await;
    bob.click("#send").await;
    alice.wait_for_entry("alice hears bob", |e| e.is_message("bob", "signed, bob")).await;
    alice.assert_no_errors().await;
    bob.assert_no_errors().await;

    let nobody = browser.open_chat(&server.url).await;
    nobody.fill("#name", "nobody").await;
    nobody.click("#connect").await;
    server.program.wait_for_log(|l| log_message(l) == "refused, 401: no token").await;
    assert_ne!(nobody.eval("document.querySelector('#status').dataset.state").await, "connected");

    let carol = browser.open_chat_with(&format!("server={}&token={bobs}", server.url)).await;
    carol.fill("#name", "carol").await;
    carol.click("#connect").await;
    carol.wait_for_status("carol's page is connected", "connected", "carol").await;
    carol
        .wait_until(
            "carol's join is refused",
            "document.querySelector('#error-text').textContent.includes('your token is for')",
        )
        .await;
    server.stop().await;
}

/// wss from a browser (chapter 10.6): chat_server serves a certificate made
/// for this run. Chromium checks it against the system's authorities, none
/// of which signed it, so a page's WebSocket to it never opens, and the
/// server logs the TLS alert Chromium sent. A Chromium told the SHA-256 of
/// the certificate's key (`--ignore-certificate-errors-spki-list`, how one
/// trusts a certificate without installing a CA) connects two chat pages
/// over wss, and they chat.
async fn page_chats_over_wss_with_a_certificate_chromium_is_told_to_trust() {
    let certificates = Certificates::new();
    let mut server = Server::start("chat_server", &certificates.args()).await;
    assert!(server.url.starts_with("wss://"), "{}", server.url);

    let untrusting = Browser::launch().await;
    let page = untrusting.open_chat(&server.url).await;
    let open = format!(
        "new Promise((done) => {{
            const socket = new WebSocket({});
            socket.onopen = () => {{ socket.close(); done('open'); }};
            socket.onclose = (e) => done('closed ' + e.code);
        }})",
        json!(server.url)
    );
    assert_eq!(page.eval(&open).await, "closed 1006", "the certificate is refused");
    // The alert Chromium sent as it hung up: it refused the certificate.
    let alert = "handshake failed error=received fatal alert: CertificateUnknown";
    server.program.wait_for_log(|line| line.ends_with(alert)).await;
    drop(untrusting);

    let spki = encode_base64(&certificates.server_spki_sha256());
    let browser =
        Browser::launch_with(&[&format!("--ignore-certificate-errors-spki-list={spki}")]).await;
    let alice = browser.open_chat(&server.url).await;
    alice.connect("alice", "general").await;
    let bob = browser.open_chat(&server.url).await;
    bob.connect("bob", "general").await;
    alice.wait_for_entry("alice sees bob join", |e| e.is_event("general", "bob joined")).await;
    alice.fill("#message", "sealed in TLS").await;
    alice.click("#send").await;
    bob.wait_for_entry("bob hears alice", |e| e.is_message("alice", "sealed in TLS")).await;
    bob.fill("#message", "same here").await;
    bob.click("#send").await;
    alice.wait_for_entry("alice hears bob", |e| e.is_message("bob", "same here")).await;
    alice.assert_no_errors().await;
    bob.assert_no_errors().await;
    server.stop().await;
}

fn event(msg: &Message) -> ServerEvent {
    unstamped(
        ServerEvent::try_from(msg).unwrap_or_else(|e| panic!("not a server event: {msg:?}: {e}")),
    )
}

/// `username` joined `room`, which had no message yet (the time checked
/// and blanked by `unstamped`).
fn joined(room: &str, username: &str) -> ServerEvent {
    let (room, username, timestamp) = (room.into(), username.into(), String::new());
    ServerEvent::Joined { room, username, timestamp, seq: 0, epoch: String::new() }
}

fn left(room: &str, username: &str) -> ServerEvent {
    let (room, username, timestamp) = (room.into(), username.into(), String::new());
    ServerEvent::Left { room, username, timestamp }
}

/// Fails if a text or binary message arrives within `window`.
async fn assert_silent(ws: &mut WsClient, window: Duration) {
    let heard = timeout(window, async {
        while let Some(msg) = ws.next().await {
            match msg {
                Ok(Message::Text(_) | Message::Binary(_)) => return Some(msg),
                Ok(_) => continue, // pings: the server checking we are alive
                Err(_) => return Some(msg),
            }
        }
        None
    })
    .await;
    if let Ok(msg) = heard {
        panic!("expected silence for {window:?}, got {msg:?}");
    }
}

/// A raw client that has joined `room` as `username`.
async fn join(url: &str, room: &str, username: &str) -> WsClient {
    let mut ws = connect(url).await;
    let join = ClientMessage::Join {
        room: room.into(),
        username: username.into(),
        since: None,
        epoch: None,
    };
    ws.send(join.to_message()).await.expect("send Join");
    let expected = joined(room, username);
    assert_eq!(event(&recv(&mut ws).await), expected);
    ws
}

/// Says `content` in `room` and waits for the server's echo, which means
/// it is in the room's history; returns its `seq`.
async fn say(ws: &mut WsClient, room: &str, content: &str) -> u64 {
    let say = ClientMessage::Message { room: room.into(), content: content.into() };
    ws.send(say.to_message()).await.expect("send Message");
    let mut seq = 0;
    wait_for_event(ws, &format!("the echo of {content:?}"), |e| match e {
        ServerEvent::Message { room: r, content: c, seq: s, .. } if r == room && c == content => {
            seq = *s;
            true
        }
        _ => false,
    })
    .await;
    seq
}

/// Reads events, skipping others, until one satisfies `pred`, within
/// [`WAIT`].
async fn wait_for_event(ws: &mut WsClient, what: &str, mut pred: impl FnMut(&ServerEvent) -> bool) {
    let found = timeout(WAIT, async { while !pred(&event(&recv(ws).await)) {} }).await;
    assert!(found.is_ok(), "{what}: not within {WAIT:?}");
}

// ---- the page, as the test sees it ---------------------------------------

/// One line of the page's log, read from the DOM.
#[derive(Debug, Deserialize)]
struct Entry {
    room: String,
    /// `msg` for a chat message, `event` for a join or leave, `note`.
    kind: String,
    mine: bool,
    user: Option<String>,
    text: String,
    /// What the reader sees, `HH:MM:SS`.
    time: String,
    /// The `<time datetime>` attribute: the server's timestamp.
    datetime: String,
    /// Whether it is on screen (only the selected room's entries are).
    visible: bool,
}

impl Entry {
    fn is_event(&self, room: &str, text: &str) -> bool {
        self.kind == "event" && self.room == room && self.text == text
    }

    fn is_msg_from(&self, user: &str) -> bool {
        self.kind == "msg" && self.user.as_deref() == Some(user)
    }

    fn is_message(&self, user: &str, text: &str) -> bool {
        self.is_msg_from(user) && self.text == text
    }
}

/// The chat messages shown in `room`, oldest first, as `user: text`.
fn messages_in(entries: &[Entry], room: &str) -> Vec<String> {
    entries.iter().filter(|e| e.room == room && e.kind == "msg").map(shown_as).collect()
}

/// The messages and notes shown in `room` (not the joins and leaves), oldest
/// first: `user: text` and `note: text`.
fn log_of(entries: &[Entry], room: &str) -> Vec<String> {
    entries.iter().filter(|e| e.room == room && e.kind != "event").map(shown_as).collect()
}

/// Everything shown in `room`, oldest first: messages, notes, joins and
/// leaves (`event: alice joined`).
fn everything_in(entries: &[Entry], room: &str) -> Vec<String> {
    entries.iter().filter(|e| e.room == room).map(shown_as).collect()
}

/// Fails unless the entries' times (the server's, to the millisecond)
/// never go back.
fn assert_in_time_order(entries: &[Entry]) {
    let times: Vec<&str> = entries.iter().map(|e| e.datetime.as_str()).collect();
    assert!(times.is_sorted(), "entries out of time order: {entries:#?}");
}

/// The page's note when a room it rejoins names another epoch than the
/// page knew: the server's `StartedOver`.
const STARTED_OVER: &str =
    "note: #general started over while you were away: its new messages follow";

/// The page's note when a room it rejoins counts from 1 again, from a
/// server that knows no epochs (`since_ahead`).
const RESTARTED: &str = "note: #general restarted: the server no longer has its earlier messages \
                         and counts from 1 again";

fn shown_as(entry: &Entry) -> String {
    format!("{}: {}", entry.user.as_deref().unwrap_or(&entry.kind), entry.text)
}

const READ_ENTRIES: &str = "[...document.querySelectorAll('#messages li')].map((li) => ({
    room: li.dataset.room,
    kind: li.classList[0],
    mine: li.classList.contains('mine'),
    user: li.querySelector('.user')?.textContent ?? null,
    text: li.querySelector('.text').textContent,
    time: li.querySelector('time').textContent,
    datetime: li.querySelector('time').dateTime,
    visible: li.checkVisibility(),
}))";

/// A tab showing `web/chat.html`.
struct ChatPage {
    page: Page,
}

impl ChatPage {
    /// Types a name and a room and presses Connect; waits until connected
    /// and the server has confirmed the room (the Send button turns on).
    async fn connect(&self, name: &str, room: &str) {
        self.fill("#name", name).await;
        self.fill("#room", room).await;
        self.click("#connect").await;
        self.wait_for_status(&format!("{name} is connected"), "connected", name).await;
        self.wait_until(
            "the server confirmed the room",
            "!document.querySelector('#send').disabled",
        )
        .await;
    }

    /// Polls until the status badge is in `state` and its text contains
    /// `text`.
    async fn wait_for_status(&self, what: &str, state: &str, text: &str) {
        let js = format!(
            "(() => {{
                const status = document.querySelector('#status');
                return status.dataset.state === {} && status.textContent.includes({});
            }})()",
            json!(state),
            json!(text)
        );
        self.wait_until(what, &js).await;
    }

    /// Polls until the badge says the page is connected to `url`.
    async fn wait_for_server(&self, what: &str, url: &str) {
        let js = format!(
            "(() => {{
                const status = document.querySelector('#status');
                return status.dataset.state === 'connected'
                    && status.textContent.endsWith({});
            }})()",
            json!(format!(" · {url}"))
        );
        self.wait_until(what, &js).await;
    }

    /// Fails if the page's JavaScript threw anything uncaught.
    async fn assert_no_errors(&self) {
        assert_eq!(self.eval("pageErrors").await, json!([]), "uncaught errors in the page");
    }

    async fn entries(&self) -> Vec<Entry> {
        let value = self.eval(READ_ENTRIES).await;
        serde_json::from_value(value).expect("entries have the expected shape")
    }

    /// Polls the log until an entry satisfies `pred`, and returns it.
    async fn wait_for_entry(&self, what: &str, pred: impl Fn(&Entry) -> bool) -> Entry {
        let deadline = Instant::now() + WAIT;
        loop {
            if let Some(entry) = self.entries().await.into_iter().find(&pred) {
                return entry;
            }
            self.check_deadline(what, deadline).await;
        }
    }

    /// Polls the log until `pred` holds for all its entries together.
    async fn wait_until_entries(&self, what: &str, pred: impl Fn(&[Entry]) -> bool) {
        let deadline = Instant::now() + WAIT;
        while !pred(&self.entries().await) {
            self.check_deadline(what, deadline).await;
        }
    }

    /// Writes the page as a PNG into the target directory, and into
    /// `docs/images/` when `UPDATE_SCREENSHOT=1`.
    async fn screenshot_to(&self, file: &str) {
        let png = self.screenshot().await;
        assert!(png.starts_with(b"\x89PNG"), "Page.captureScreenshot returns a PNG");
        let mut targets = vec![target_dir().join(file)];
        if std::env::var("UPDATE_SCREENSHOT").is_ok_and(|v| v == "1") {
            targets.push(Path::new(env!("CARGO_MANIFEST_DIR")).join("docs/images").join(file));
        }
        for path in targets {
            std::fs::create_dir_all(path.parent().expect("a directory"))
                .unwrap_or_else(|e| panic!("create directory for {}: {e}", path.display()));
            std::fs::write(&path, &png).unwrap_or_else(|e| panic!("write {}: {e}", path.display()));
        }
    }
}

impl std::ops::Deref for ChatPage {
    type Target = Page;
    fn deref(&self) -> &Page {
        &self.page
    }
}

/// target/, found from the test binary's path (target/debug/deps/...), so a
/// custom `CARGO_TARGET_DIR` works.
fn target_dir() -> PathBuf {
    let exe = std::env::current_exe().expect("test binary path");
    exe.ancestors().nth(3).expect("target directory").to_path_buf()
}

// ---- a small CDP client ---------------------------------------------------

static PROFILES: AtomicUsize = AtomicUsize::new(0);

/// A headless Chromium and the DevTools connection to it. On drop the whole
/// process group is killed and the profile directory removed.
struct Browser {
    child: Child,
    cdp: Arc<Mutex<Cdp>>,
    profile: PathBuf,
}

impl Browser {
    /// Starts Chromium (the trial has checked that there is one).
    async fn launch() -> Browser {
        Browser::launch_with(&[]).await
    }

    /// Like [`Browser::launch`], with extra command-line flags.
    async fn launch_with(flags: &[&str]) -> Browser {
        let binary = chromium_binary().unwrap_or_else(|why| panic!("chromium {why}"));

        // A fresh profile per browser: tests running side by side must not
        // share one, and nothing from an earlier run may leak in.
        let n = PROFILES.fetch_add(1, Ordering::Relaxed);
        let profile =
            std::env::temp_dir().join(format!("chat-browser-test-{}-{n}", std::process::id()));
        std::fs::create_dir_all(&profile).expect("create profile directory");

        let mut child = Command::new(&binary)
            .args([
                "--headless",
                "--no-sandbox",
                "--disable-gpu",
                "--disable-quic",
                "--no-first-run",
                "--disable-background-networking",
                "--disable-component-update",
                "--disable-sync",
                "--remote-debugging-port=0",
            ])
            .args(flags)
            .arg(format!("--user-data-dir={}", profile.display()))
            .arg("about:blank")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            // Chromium is a family of processes (browser, zygote, renderers).
            // Its own process group lets Drop kill all of them at once.
            .process_group(0)
            .kill_on_drop(true)
            .spawn()
            .unwrap_or_else(|e| panic!("start {}: {e}", binary.display()));

        // With port 0 Chromium picks a free port and tells us on stderr.
        let mut stderr = BufReader::new(child.stderr.take().expect("piped stderr")).lines();
        let mut seen = Vec::new();
        let found = timeout(WAIT, async {
            while let Ok(Some(line)) = stderr.next_line().await {
                if let Some(url) = line.strip_prefix("DevTools listening on ") {
                    return Some(url.trim().to_string());
                }
                seen.push(line);
            }
            None
        })
        .await;
        let Ok(Some(url)) = found else {
            panic!(
                "chromium did not print `DevTools listening on` within {WAIT:?}; stderr: {seen:#?}"
            );
        };
        // Keep draining stderr: a full pipe would block Chromium's logging.
        tokio::spawn(async move { while let Ok(Some(_)) = stderr.next_line().await {} });

        let ws = connect(&url).await;
        let cdp = Arc::new(Mutex::new(Cdp { ws, next_id: 0 }));
        Browser { child, cdp, profile }
    }

    /// A new tab, 900x420, in [`TIME_ZONE`], showing the chat page set to
    /// talk to `server_url`; returns once the page has loaded.
    async fn open_chat(&self, server_url: &str) -> ChatPage {
        self.open_chat_with(&format!("server={server_url}")).await
    }

    /// Like [`Browser::open_chat`], with the page's whole query string.
    async fn open_chat_with(&self, query: &str) -> ChatPage {
        let html = Path::new(env!("CARGO_MANIFEST_DIR")).join("web/chat.html");
        self.open_page(&format!("{}?{query}", file_url(&html))).await
    }

    /// A new tab, as [`Browser::open_chat`] makes one, showing the chat
    /// page at `url`: from disk, or from a server that serves it.
    async fn open_page(&self, url: &str) -> ChatPage {
        let mut cdp = self.cdp.lock().await;
        let target = cdp.call(None, "Target.createTarget", json!({ "url": "about:blank" })).await;
        let params = json!({ "targetId": target["targetId"], "flatten": true });
        let attached = cdp.call(None, "Target.attachToTarget", params).await;
        drop(cdp);
        let session = attached["sessionId"].as_str().expect("sessionId").to_string();
        let page = Page { cdp: self.cdp.clone(), session };

        let metrics =
            json!({ "width": 900, "height": 420, "deviceScaleFactor": 1, "mobile": false });
        page.call("Emulation.setDeviceMetricsOverride", metrics).await;
        page.call("Emulation.setTimezoneOverride", json!({ "timezoneId": TIME_ZONE })).await;

        // Collect the page's uncaught errors, so a broken handler that the
        // scenario happens not to look at still fails the test.
        let collect = "window.pageErrors = [];
            addEventListener('error', (e) => pageErrors.push(e.message));
            addEventListener('unhandledrejection', (e) => pageErrors.push(String(e.reason)));";
        page.call("Page.enable", json!({})).await; // needed for the next call to take effect
        page.call("Page.addScriptToEvaluateOnNewDocument", json!({ "source": collect })).await;

        let navigated = page.call("Page.navigate", json!({ "url": url })).await;
        assert!(navigated.get("errorText").is_none(), "open {url}: {navigated}");
        page.wait_until(
            "the chat page has loaded",
            "location.protocol !== 'about:' && document.readyState === 'complete'",
        )
        .await;
        ChatPage { page }
    }
}

impl Drop for Browser {
    fn drop(&mut self) {
        if let Some(pid) = self.child.id() {
            // A negative pid means the whole process group.
            let _ = std::process::Command::new("kill")
                .args(["-KILL", "--", &format!("-{pid}")])
                .status();
        }
        let _ = std::fs::remove_dir_all(&self.profile);
    }
}

/// The DevTools connection: commands go out as `{id, method, params}` (plus
/// `sessionId` for a tab), and the reply carries the same `id`.
struct Cdp {
    ws: WsClient,
    next_id: u64,
}

impl Cdp {
    /// Sends one command and returns its result, within [`WAIT`]. Events
    /// that arrive meanwhile (we subscribe to none on purpose) are skipped.
    async fn call(&mut self, session: Option<&str>, method: &str, params: Value) -> Value {
        self.next_id += 1;
        let id = self.next_id;
        let mut command = json!({ "id": id, "method": method, "params": params });
        if let Some(session) = session {
            command["sessionId"] = session.into();
        }
        self.ws.send(Message::text(command.to_string())).await.expect("send CDP command");

        let reply = timeout(WAIT, async {
            loop {
                let Some(Ok(msg)) = self.ws.next().await else {
                    panic!("the DevTools connection ended while waiting for {method}");
                };
                let Message::Text(text) = msg else { continue };
                let reply: Value = serde_json::from_str(&text).expect("CDP speaks JSON");
                if reply["id"] == id {
                    return reply;
                }
            }
        })
        .await
        .unwrap_or_else(|_| panic!("no reply to {method} within {WAIT:?}"));
        if let Some(error) = reply.get("error") {
            panic!("{method} failed: {error}");
        }
        reply["result"].clone()
    }
}

/// One tab, reached through its CDP session.
struct Page {
    cdp: Arc<Mutex<Cdp>>,
    session: String,
}

impl Page {
    async fn call(&self, method: &str, params: Value) -> Value {
        self.cdp.lock().await.call(Some(&self.session), method, params).await
    }

    /// Evaluates JavaScript in the page and returns its value (promises are
    /// awaited). A thrown exception fails the test.
    async fn eval(&self, expression: &str) -> Value {
        let params =
            json!({ "expression": expression, "awaitPromise": true, "returnByValue": true });
        let result = self.call("Runtime.evaluate", params).await;
        if let Some(exception) = result.get("exceptionDetails") {
            panic!("JavaScript threw: {}\nin: {expression}", exception["exception"]["description"]);
        }
        result["result"].get("value").cloned().unwrap_or(Value::Null)
    }

    /// Polls `condition` (JavaScript) every 50 ms until it is true; fails
    /// with what the page shows after [`WAIT`].
    async fn wait_until(&self, what: &str, condition: &str) {
        let deadline = Instant::now() + WAIT;
        while self.eval(condition).await != Value::Bool(true) {
            self.check_deadline(what, deadline).await;
        }
    }

    /// Between two polls: fails past `deadline`, otherwise pauses 50 ms.
    async fn check_deadline(&self, what: &str, deadline: Instant) {
        if Instant::now() >= deadline {
            let shown = self.eval("document.body.innerText").await;
            panic!(
                "{what}: not within {WAIT:?}. The page shows:\n{}",
                shown.as_str().unwrap_or("")
            );
        }
        sleep(Duration::from_millis(50)).await;
    }

    /// Sets an input's value, as if pasted.
    async fn fill(&self, selector: &str, text: &str) {
        let js = format!("document.querySelector({}).value = {}", json!(selector), json!(text));
        self.eval(&js).await;
    }

    /// Clicks an element once it exists and is enabled and visible.
    async fn click(&self, selector: &str) {
        let js = format!(
            "(() => {{
                const el = document.querySelector({});
                if (!el || el.disabled || !el.checkVisibility()) return false;
                el.click();
                return true;
            }})()",
            json!(selector)
        );
        self.wait_until(&format!("click {selector}"), &js).await;
    }

    /// Focuses an input and types `text` into it through the input pipeline.
    async fn type_text(&self, selector: &str, text: &str) {
        self.eval(&format!("document.querySelector({}).focus()", json!(selector))).await;
        self.call("Input.insertText", json!({ "text": text })).await;
    }

    /// Presses and releases Enter in the focused element.
    async fn press_enter(&self) {
        for kind in ["keyDown", "keyUp"] {
            let key = json!({
                "type": kind, "key": "Enter", "code": "Enter",
                "windowsVirtualKeyCode": 13, "text": if kind == "keyDown" { "\r" } else { "" },
            });
            self.call("Input.dispatchKeyEvent", key).await;
        }
    }

    /// The visible page as PNG bytes.
    async fn screenshot(&self) -> Vec<u8> {
        let shot = self.call("Page.captureScreenshot", json!({ "format": "png" })).await;
        decode_base64(shot["data"].as_str().expect("screenshot data"))
    }
}

/// `file://` URL for an absolute path, percent-encoding what a URL path
/// cannot hold (spaces, for example).
fn file_url(path: &Path) -> String {
    let mut url = String::from("file://");
    for byte in path.to_str().expect("UTF-8 path").bytes() {
        match byte {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'/' | b'-' | b'_' | b'.' | b'~' => {
                url.push(byte as char)
            }
            _ => url.push_str(&format!("%{byte:02X}")),
        }
    }
    url
}

/// Standard base64 (CDP sends screenshots that way, and Chromium takes key
/// hashes that way); small enough to write here rather than add a crate for
/// one test.
fn decode_base64(text: &str) -> Vec<u8> {
    fn value(c: u8) -> u32 {
        match c {
            b'A'..=b'Z' => u32::from(c - b'A'),
            b'a'..=b'z' => u32::from(c - b'a') + 26,
            b'0'..=b'9' => u32::from(c - b'0') + 52,
            b'+' => 62,
            b'/' => 63,
            _ => panic!("not base64: {:?}", c as char),
        }
    }
    let mut bytes = Vec::with_capacity(text.len() / 4 * 3);
    for chunk in text.trim_end_matches('=').as_bytes().chunks(4) {
        let n = chunk.iter().enumerate().fold(0, |n, (i, &c)| n | (value(c) << (18 - 6 * i)));
        bytes.extend_from_slice(&n.to_be_bytes()[1..chunk.len()]);
    }
    bytes
}

/// Standard base64, padded, the inverse of [`decode_base64`].
fn encode_base64(bytes: &[u8]) -> String {
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut text = String::with_capacity(bytes.len().div_ceil(3) * 4);
    for chunk in bytes.chunks(3) {
        let n = chunk.iter().enumerate().fold(0, |n, (i, &b)| n | (u32::from(b) << (16 - 8 * i)));
        for i in 0..4 {
            if i <= chunk.len() {
                text.push(ALPHABET[(n >> (18 - 6 * i) & 63) as usize] as char);
            } else {
                text.push('=');
            }
        }
    }
    text
}

/// The screenshot decoder and the key hash encoder handle padding and the
/// whole alphabet.
fn base64_encodes_and_decodes_the_standard_alphabet() {
    let pairs: [(&[u8], &str); 5] = [
        (b"Man", "TWFu"),
        (b"Ma", "TWE="),
        (b"M", "TQ=="),
        (b"", ""),
        (&[0xfb, 0xff, 0x00], "+/8A"),
    ];
    for (bytes, text) in pairs {
        assert_eq!(encode_base64(bytes), text);
        assert_eq!(decode_base64(text), bytes);
    }
}
