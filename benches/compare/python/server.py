#!/usr/bin/env python3
"""A Python `websockets` server for the benchmark (`cargo bench --bench load
-- --compare`) to put side by side with ours. It is not part of the tutorial:
it mirrors the behaviour of our examples as a competent Python developer would
write them, with websockets' asyncio API.

    python server.py echo      ADDR   like examples/echo_server.rs
    python server.py broadcast ADDR   like examples/broadcast_server.rs
    python server.py chat      ADDR   like examples/chat_server.rs (same JSON protocol)

ADDR is IP:PORT ([::1]:PORT for IPv6); port 0 picks a free port. The first
line on stdout is `listening on ws://IP:PORT` with the real port. Ctrl-C
(SIGINT) closes every connection with 1001 (going away) and exits 0.

Limits as in our examples: messages up to 16 MiB (echo) or 64 KiB (broadcast,
chat; a bigger one closes the connection with 1009); 2 s for a close
handshake. Slow clients: echo awaits `send()`, so websockets' write limit
holds the echo back until the client reads. Broadcast and chat fan out with
`websockets.broadcast()`, which never waits and has no backpressure, so a
client whose transport holds over 1 MiB of unsent data gets no more messages
and is closed with 1008 "too slow", as our chat server does (our broadcast
server instead lets it skip messages and tells it how many). Compression is
off, as in our servers; websockets' default keepalive pings stay on; no rate
limit.
"""

import asyncio
import json
import signal
import sys
import unicodedata
from datetime import datetime, timezone

from websockets.asyncio.server import ServerConnection, broadcast, serve
from websockets.exceptions import ConnectionClosedError

CLOSE_TIMEOUT = 2.0  # seconds for a close handshake, as in src/close.rs
MAX_BUFFERED = 1 << 20  # bytes queued for one client before it is "too slow"
MAX_NAME_CHARS = 32
MAX_CONTENT_BYTES = 4 * 1024
MAX_ROOMS_PER_CLIENT = 16
PRESENCE_LIMIT = 1000  # bigger rooms tell Joined/Left only to the member concerned

connected: set[ServerConnection] = set()
closing: dict[ServerConnection, asyncio.Task] = {}  # too slow, being closed
shutting_down = False


def abort_later(connections) -> None:
    """websockets' close() first waits, with no deadline, for the write
    buffer to drain: a client that has stopped reading would hold it until
    the next keepalive ping (20 s). Like our servers, give up after
    CLOSE_TIMEOUT. Aborting a connection that has closed does nothing."""
    transports = [ws.transport for ws in connections]
    asyncio.get_running_loop().call_later(CLOSE_TIMEOUT, lambda: [t.abort() for t in transports])


def send(connections, message) -> None:
    """Sends one message (str: text, bytes: binary), encoded once, to every
    connection that is open and keeping up; closes those that are not."""
    keeping_up = []
    for ws in connections:
        if ws in closing:
            continue
        if ws.transport.get_write_buffer_size() > MAX_BUFFERED:
            closing[ws] = task = asyncio.create_task(ws.close(1008, "too slow"))
            task.add_done_callback(lambda _, ws=ws: closing.pop(ws, None))
            abort_later([ws])
        else:
            keeping_up.append(ws)
    broadcast(keeping_up, message)  # skips connections that are not open


async def echo(ws: ServerConnection) -> None:
    async for message in ws:
        await ws.send(message)


async def relay(ws: ServerConnection) -> None:
    async for message in ws:
        send(connected, message)


# ---- chat: the JSON protocol of src/protocol.rs ----


class Room:
    def __init__(self) -> None:
        self.members: dict[ServerConnection, str] = {}  # connection -> username
        self.seq = 0


rooms: dict[str, Room] = {}


def deliver(targets, event: dict) -> None:
    """Serialises `event` once and sends it to every target."""
    send(targets, json.dumps(event, separators=(",", ":"), ensure_ascii=False))


def presence(room: Room, ws: ServerConnection, event: dict) -> None:
    """Joined/Left go to the whole room up to PRESENCE_LIMIT members (counting
    the member concerned), else only to that member."""
    deliver(room.members if len(room.members) <= PRESENCE_LIMIT else [ws], event)


class Refused(Exception):
    """A command we answer with an Error event; the connection stays open."""

    def __init__(self, message: str, room: str | None = None) -> None:
        super().__init__(message)
        self.room = room


def field(msg: dict, key: str) -> str:
    value = msg.get(key)
    if not isinstance(value, str):
        raise Refused(f"invalid JSON message: {msg['type']} needs a string {key!r}")
    return value


def check_name(what: str, name: str, room: str) -> None:
    if not 1 <= len(name) <= MAX_NAME_CHARS or not name.strip():
        raise Refused(f"{what} must be 1 to {MAX_NAME_CHARS} characters", room)
    if any(unicodedata.category(c) == "Cc" for c in name):
        raise Refused(f"{what} must not contain control characters", room)


def handle(ws: ServerConnection, joined: dict[str, str], raw) -> None:
    if isinstance(raw, bytes):
        raise Refused("binary frames are not supported: send JSON text")
    try:
        msg = json.loads(raw)
    except ValueError as e:
        raise Refused(f"invalid JSON message: {e}") from None
    kind = msg.get("type") if isinstance(msg, dict) else None

    if kind == "Join":
        name, username = field(msg, "room"), field(msg, "username")
        check_name("username", username, name)
        check_name("room", name, name)
        if len(joined) >= MAX_ROOMS_PER_CLIENT:
            raise Refused(f"at most {MAX_ROOMS_PER_CLIENT} rooms", name)
        refused = f"cannot join {json.dumps(name, ensure_ascii=False)}: "
        if name in joined:
            raise Refused(refused + "already in that room", name)
        room = rooms.setdefault(name, Room())
        if username in room.members.values():
            raise Refused(refused + "that name is taken in that room", name)
        room.members[ws] = joined[name] = username
        presence(room, ws, {"type": "Joined", "room": name, "username": username})
    elif kind == "Leave":
        name = field(msg, "room")
        if name not in joined:
            raise Refused(f"cannot leave {json.dumps(name, ensure_ascii=False)}: not in that room", name)
        leave(ws, joined, name, tell_leaver=True)
    elif kind == "Message":
        name, content = field(msg, "room"), field(msg, "content")
        if not 1 <= len(content.encode()) <= MAX_CONTENT_BYTES:
            raise Refused(f"content must be 1 to {MAX_CONTENT_BYTES} bytes", name)
        if name not in joined:
            raise Refused(f"cannot send to {json.dumps(name, ensure_ascii=False)}: not in that room", name)
        room = rooms[name]
        room.seq += 1
        now = datetime.now(timezone.utc).isoformat(timespec="milliseconds")
        deliver(room.members, {
            "type": "Message", "room": name, "username": joined[name], "content": content,
            "timestamp": now.replace("+00:00", "Z"), "seq": room.seq,
        })
    elif kind == "Ping":
        deliver([ws], {"type": "Pong"})
    elif kind != "Pong":
        raise Refused('invalid JSON message: unknown or missing "type"')


def leave(ws: ServerConnection, joined: dict[str, str], name: str, tell_leaver: bool) -> None:
    """Takes `ws` out of room `name` and tells the members (and the leaver
    itself when it is still connected). Empty rooms are deleted."""
    room = rooms[name]
    event = {"type": "Left", "room": name, "username": joined.pop(name)}
    # Skip the announcements when the whole server is going away.
    if not shutting_down:
        if len(room.members) <= PRESENCE_LIMIT:
            deliver(room.members, event)
        elif tell_leaver:
            deliver([ws], event)
    del room.members[ws]
    if not room.members:
        del rooms[name]


async def chat(ws: ServerConnection) -> None:
    joined: dict[str, str] = {}  # room name -> my username there
    try:
        async for raw in ws:
            try:
                handle(ws, joined, raw)
            except Refused as e:
                error = {"type": "Error", "message": str(e)}
                if e.room is not None:
                    error = {"type": "Error", "room": e.room, "message": str(e)}
                deliver([ws], error)
    finally:
        for name in list(joined):
            leave(ws, joined, name, tell_leaver=False)


async def main(mode: str, host: str, port: int) -> None:
    serve_one = {"echo": echo, "broadcast": relay, "chat": chat}[mode]

    async def handler(ws: ServerConnection) -> None:
        connected.add(ws)
        try:
            await serve_one(ws)
        except ConnectionClosedError:
            pass  # the peer vanished or broke a limit (1009...): already closed
        finally:
            connected.discard(ws)

    max_size = 16 << 20 if mode == "echo" else 64 << 10
    async with serve(handler, host, port, max_size=max_size, compression=None,
                     close_timeout=CLOSE_TIMEOUT) as server:
        ip, real_port = server.sockets[0].getsockname()[:2]
        print(f"listening on ws://{f'[{ip}]' if ':' in ip else ip}:{real_port}", flush=True)

        def stop() -> None:
            global shutting_down
            shutting_down = True
            server.close(reason="server shutting down")  # 1001 (going away) to all
            abort_later(connected)

        asyncio.get_running_loop().add_signal_handler(signal.SIGINT, stop)
        await server.wait_closed()


if __name__ == "__main__":
    mode, addr = (sys.argv[1:] + ["", ""])[:2]
    host, _, port = addr.rpartition(":")
    if mode not in ("echo", "broadcast", "chat") or not host or not port.isdigit():
        print("usage: python server.py echo|broadcast|chat IP:PORT", file=sys.stderr)
        sys.exit(2)
    try:
        asyncio.run(main(mode, host.strip("[]"), int(port)))
    except OSError as e:
        sys.exit(f"cannot listen on {addr}: {e}")
