#!/usr/bin/env python3
"""An echo server written with Python's `websockets` package, for our clients
to talk to a server nobody here wrote. Run by tests/interop_python.rs.

    python3 tests/python/echo_server.py

Listens on 127.0.0.1, on a free port, and prints `listening on
ws://127.0.0.1:PORT` as its first line, like our servers. Each message comes
back unchanged. What makes it worth testing against: once it has received a
client's close frame, it sends nothing more (its `send` raises
`ConnectionClosedOK`), so a client that closes right after its last message
loses the echoes still on their way. Runs until it is killed.

Exit status: 77 when the `websockets` package (>= 15) is not available.
"""

import asyncio
import sys

# The import guard (websockets >= 15, else exit 77), shared with the
# clients: echo_check runs it when imported.
import echo_check  # noqa: F401
from websockets.asyncio.server import serve
from websockets.exceptions import ConnectionClosed


async def echo(ws):
    try:
        async for message in ws:
            await ws.send(message)
    except ConnectionClosed as e:
        # An echo that could not go out: the client closed first.
        print(f"echo not sent: {type(e).__name__}", file=sys.stderr, flush=True)


async def main():
    async with serve(echo, "127.0.0.1", 0) as server:
        port = server.sockets[0].getsockname()[1]
        print(f"listening on ws://127.0.0.1:{port}", flush=True)
        await server.serve_forever()


if __name__ == "__main__":
    asyncio.run(main())
