#!/usr/bin/env python3
"""Talks to the tutorial's echo_server with Python's `websockets` package, a
WebSocket client written by someone else. Run by tests/interop_python.rs.

    python3 tests/python/echo_check.py ws://127.0.0.1:PORT
        Sends text (ASCII, non-ASCII, empty) and binary messages of sizes
        around each WebSocket length encoding (7-bit, 16-bit, 64-bit), checks
        each echo is identical and of the same frame type, pings, then closes
        with 1000 and checks the server answers with 1000. One line per check.

    python3 tests/python/echo_check.py ws://127.0.0.1:PORT --wait-for-close
        Connects, prints `connected`, waits for the server to close, prints
        `close code: N`.

    python3 tests/python/echo_check.py wss://127.0.0.1:PORT --cafile ca.pem
        Either of the above over TLS, trusting only the CA in ca.pem
        (`ssl.create_default_context(cafile=...)`), not the system's.

    python3 tests/python/echo_check.py wss://127.0.0.1:PORT --expect-untrusted
        Connects trusting the system's authorities, as `websockets` does by
        default, expects the TLS handshake to refuse the server's
        certificate, and prints `certificate refused: REASON (DETAIL)`.

Exit status: 0 when every check passed, 1 when one failed (the reason is on
stderr), 77 when the `websockets` package (>= 15) is not available.
"""

import argparse
import asyncio
import ssl
import sys

UNAVAILABLE = 77
DEADLINE = 10.0  # seconds, for every step that waits on the server

try:
    import websockets
    from websockets.exceptions import ConnectionClosed
    # asyncio, not websockets.sync: the threaded client reads its socket on
    # one thread while it writes on another, which Python's ssl module does
    # not make safe. Over wss, 4 of 800 runs of chat_check.py, four at once,
    # stalled in the opening handshake (its request never reached the
    # server); with this client, none of 600.
    from websockets.asyncio.client import connect
except ImportError as e:
    print(f"cannot import websockets: {e}", file=sys.stderr)
    sys.exit(UNAVAILABLE)

# `proxy=None` below needs websockets >= 15 (which otherwise takes a proxy from
# the environment, and the server is on this machine).
if int(websockets.__version__.split(".")[0]) < 15:
    print(f"websockets {websockets.__version__} is too old; need >= 15", file=sys.stderr)
    sys.exit(UNAVAILABLE)

TEXTS = ["hello", "héllo wörld, 你好, 🦀", ""]
# A frame's length field has three sizes: 125 is the largest length that fits
# in 7 bits, 126 the smallest that needs the 16-bit field, 65535 the largest
# that fits it and 65536 the smallest that needs the 64-bit field.
BINARY_SIZES = [0, 1, 125, 126, 65535, 65536, 1 << 20]


def fail(message):
    print(f"FAILED: {message}", file=sys.stderr)
    sys.exit(1)


async def receive(ws):
    """The next message, within the deadline."""
    return await asyncio.wait_for(ws.recv(), DEADLINE)


def pattern(size):
    """Deterministic bytes that are not all the same, so a shifted or
    truncated echo cannot pass by accident."""
    block = bytes(range(256))
    return (block * (size // 256 + 1))[:size]


def add_cafile_argument(parser):
    parser.add_argument(
        "--cafile",
        metavar="PEM",
        help="for a wss:// URL, trust only the CA certificate in this file",
    )


def open_connection(url, cafile=None):
    """Connects to `url`. For a wss:// URL, without `cafile` the server's
    certificate is checked against the system's authorities (websockets's
    default); with one, against that CA alone."""
    # Without `ssl`, a wss:// URL gets websockets's default context; a ws://
    # URL must not be given one at all.
    tls = {} if cafile is None else {"ssl": ssl.create_default_context(cafile=cafile)}
    # max_size limits *incoming* messages; its default (1 MiB) is exactly our
    # largest echo, so leave room.
    return connect(
        url,
        max_size=4 << 20,
        open_timeout=DEADLINE,
        close_timeout=DEADLINE,
        proxy=None,
        **tls,
    )


async def echo_checks(url, cafile):
    async with open_connection(url, cafile) as ws:
        for text in TEXTS:
            await ws.send(text)
            reply = await receive(ws)
            if not isinstance(reply, str):
                fail(f"text {text!r} came back as a binary frame")
            if reply != text:
                fail(f"text {text!r} came back as {reply!r}")
            print(f"text ({len(text.encode())} bytes): identical", flush=True)

        for size in BINARY_SIZES:
            data = pattern(size)
            await ws.send(data)
            reply = await receive(ws)
            if not isinstance(reply, bytes):
                fail(f"binary message of {size} bytes came back as a text frame")
            if reply != data:
                fail(f"binary message of {size} bytes came back different ({len(reply)} bytes)")
            print(f"binary ({size} bytes): identical", flush=True)

        # The server's WebSocket layer answers pings by itself.
        pong = await ws.ping(b"are you there")
        try:
            await asyncio.wait_for(pong, DEADLINE)
        except asyncio.TimeoutError:  # TimeoutError itself since Python 3.11
            fail("no pong within the deadline")
        print("ping: pong received", flush=True)

        await ws.close()  # code 1000; returns once the close handshake is done
        print(f"close code: {ws.close_code}", flush=True)
        if ws.close_code != 1000:
            fail(f"server answered our 1000 with {ws.close_code}")


async def wait_for_close(url, cafile):
    async with open_connection(url, cafile) as ws:
        print("connected", flush=True)
        try:
            while True:
                message = await receive(ws)
                print(f"unexpected message: {message!r}", flush=True)
        except ConnectionClosed:
            pass
        except asyncio.TimeoutError:  # TimeoutError itself since Python 3.11
            fail("the server did not close the connection")
        print(f"close code: {ws.close_code}", flush=True)
        print(f"close reason: {ws.close_reason}", flush=True)


async def expect_untrusted(url):
    try:
        async with open_connection(url):
            fail("the server's certificate was trusted")
    except ssl.SSLCertVerificationError as e:
        print(f"certificate refused: {e.reason} ({e.verify_message})", flush=True)


def main():
    parser = argparse.ArgumentParser(description="Checks the tutorial's echo_server.")
    parser.add_argument("url")
    add_cafile_argument(parser)
    mode = parser.add_mutually_exclusive_group()
    mode.add_argument("--wait-for-close", action="store_true")
    mode.add_argument("--expect-untrusted", action="store_true")
    args = parser.parse_args()
    if args.expect_untrusted and args.cafile is not None:
        parser.error("--expect-untrusted checks the system's authorities: no --cafile")
    try:
        if args.expect_untrusted:
            asyncio.run(expect_untrusted(args.url))
        elif args.wait_for_close:
            asyncio.run(wait_for_close(args.url, args.cafile))
        else:
            asyncio.run(echo_checks(args.url, args.cafile))
    except (ConnectionClosed, OSError) as e:  # TimeoutError is an OSError
        fail(f"{type(e).__name__}: {e}")


if __name__ == "__main__":
    main()
