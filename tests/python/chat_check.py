#!/usr/bin/env python3
"""Two clients written with Python's `websockets` package use the tutorial's
chat_server exactly as its docs say. Run by tests/interop_python.rs.

    python3 tests/python/chat_check.py ws://127.0.0.1:PORT
    python3 tests/python/chat_check.py wss://127.0.0.1:PORT --cafile ca.pem

alice and bob join room `general`; alice says something and both receive it
as a `Message` event with seq 1 and a timestamp the server set; bob sends
invalid JSON and gets an `Error` event, and his connection stays open: his
next message (which claims another username and an old timestamp) reaches
both as seq 2, with his name and the server's time. Both close with 1000.
One line per check. With `--cafile`, a wss:// server's certificate is
checked against that CA alone.

Exit status: 0 when every check passed, 1 when one failed (the reason is on
stderr), 77 when the `websockets` package (>= 15) is not available.
"""

import argparse
import asyncio
import json
import re
from datetime import datetime, timezone

# The import guard (exit 77), the deadline and the connection settings.
from echo_check import add_cafile_argument, fail, open_connection
from echo_check import receive as receive_frame
from websockets.exceptions import ConnectionClosed

ROOM = "general"
# RFC 3339 as the server writes it: UTC, with a `Z` or an offset.
RFC3339 = re.compile(r"^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}(\.\d+)?(Z|[+-]\d{2}:\d{2})$")
MESSAGE_FIELDS = {"type", "room", "username", "content", "timestamp", "seq"}


async def send(ws, command):
    await ws.send(json.dumps(command))


async def receive(ws, who):
    """The next event for `who`, which must be a JSON text frame."""
    frame = await receive_frame(ws)
    if not isinstance(frame, str):
        fail(f"{who} got a binary frame, expected a JSON text frame")
    try:
        return json.loads(frame)
    except json.JSONDecodeError as e:
        fail(f"{who} got a frame that is not JSON ({e}): {frame!r}")


async def expect(ws, who, expected):
    event = await receive(ws, who)
    if event != expected:
        fail(f"{who} expected {expected}, got {event}")


async def expect_message(ws, who, username, content, seq):
    """A `Message` event with a timestamp the server set just now."""
    event = await receive(ws, who)
    if set(event) != MESSAGE_FIELDS:
        fail(f"{who}: a Message event has the fields {sorted(MESSAGE_FIELDS)}, got {event}")
    wanted = {"type": "Message", "room": ROOM, "username": username, "content": content, "seq": seq}
    got = {key: event[key] for key in wanted}
    if got != wanted:
        fail(f"{who} expected {wanted}, got {event}")
    check_stamp(who, event["timestamp"])


async def expect_joined(ws, who, username, seq):
    """A `Joined` event with the server's time, the room's last seq and its
    epoch."""
    event = await receive(ws, who)
    wanted = {"type": "Joined", "room": ROOM, "username": username, "seq": seq}
    if set(event) != set(wanted) | {"timestamp", "epoch"}:
        fail(f"{who}: a Joined event has {sorted(wanted)}, timestamp and epoch, got {event}")
    if {key: event[key] for key in wanted} != wanted:
        fail(f"{who} expected {wanted}, got {event}")
    check_stamp(who, event["timestamp"])
    if not isinstance(event["epoch"], str) or not event["epoch"]:
        fail(f"{who}: a Joined names the room's epoch, got {event}")


def check_stamp(who, stamp):
    """`stamp` must be the server's current time, in RFC 3339."""
    if not isinstance(stamp, str) or not RFC3339.match(stamp):
        fail(f"{who}: timestamp {stamp!r} is not RFC 3339")
    # Python before 3.11 does not read a `Z` suffix.
    sent_at = datetime.fromisoformat(stamp.replace("Z", "+00:00"))
    age = abs((datetime.now(timezone.utc) - sent_at).total_seconds())
    if age > 60:
        fail(f"{who}: timestamp {stamp} is not the server's current time")


async def chat_checks(url, cafile):
    async with open_connection(url, cafile) as alice, open_connection(url, cafile) as bob:
        await send(alice, {"type": "Join", "room": ROOM, "username": "alice"})
        await expect_joined(alice, "alice", "alice", 0)
        await send(bob, {"type": "Join", "room": ROOM, "username": "bob"})
        for ws, who in [(alice, "alice"), (bob, "bob")]:
            await expect_joined(ws, who, "bob", 0)
        print("joined: alice and bob are in general", flush=True)

        content = "hello from alice ✓"
        await send(alice, {"type": "Message", "room": ROOM, "content": content})
        for ws, who in [(alice, "alice"), (bob, "bob")]:
            await expect_message(ws, who, "alice", content, 1)
        print("message seq 1 from alice: received by alice and bob", flush=True)

        await bob.send("this is not JSON")
        event = await receive(bob, "bob")
        if event.get("type") != "Error" or not isinstance(event.get("message"), str):
            fail(f"invalid JSON should get an Error event, got {event}")
        print("invalid JSON: answered with an Error event", flush=True)

        # The server, not the client, decides who spoke and when: the extra
        # fields are ignored.
        await send(
            bob,
            {
                "type": "Message",
                "room": ROOM,
                "content": "still here",
                "username": "mallory",
                "timestamp": "1999-12-31T23:59:59Z",
            },
        )
        for ws, who in [(alice, "alice"), (bob, "bob")]:
            await expect_message(ws, who, "bob", "still here", 2)
        print("message seq 2 from bob: received by alice and bob", flush=True)

        for ws, who in [(bob, "bob"), (alice, "alice")]:
            await ws.close()  # code 1000; returns once the close handshake is done
            if ws.close_code != 1000:
                fail(f"server answered {who}'s 1000 with {ws.close_code}")
        print("close code: 1000 for both", flush=True)


def main():
    parser = argparse.ArgumentParser(description="Checks the tutorial's chat_server.")
    parser.add_argument("url")
    add_cafile_argument(parser)
    args = parser.parse_args()
    try:
        asyncio.run(chat_checks(args.url, args.cafile))
    except (ConnectionClosed, OSError) as e:  # TimeoutError is an OSError
        fail(f"{type(e).__name__}: {e}")


if __name__ == "__main__":
    main()
