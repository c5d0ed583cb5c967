#!/usr/bin/env node
// A Node `ws` server for the benchmark (`cargo bench --bench load -- --compare`)
// to put side by side with ours. It is not part of the tutorial: it mirrors the
// behaviour of our examples as a competent Node developer would write them.
//
//   node server.js echo      ADDR   like examples/echo_server.rs
//   node server.js broadcast ADDR   like examples/broadcast_server.rs
//   node server.js chat      ADDR   like examples/chat_server.rs (same JSON protocol)
//
// ADDR is IP:PORT ([::1]:PORT for IPv6); port 0 picks a free port. The first
// line on stdout is `listening on ws://IP:PORT` with the real port. Ctrl-C
// (SIGINT) closes every connection with 1001 (going away) and exits 0.
//
// Limits as in our examples: messages up to 16 MiB (echo) or 64 KiB
// (broadcast, chat; a bigger one closes the connection with 1009); 2 s for a
// close handshake. Slow clients: `ws` never blocks a send, it buffers. Echo
// stops reading a client while over 1 MiB of its answers (`bufferedAmount`)
// are unsent. Broadcast and chat stop sending to a client with over 1 MiB
// unsent and close it with 1008 "too slow", as our chat server does (our
// broadcast server instead lets it skip messages and tells it how many).
// No compression, no per-connection logging, no heartbeat, no rate limit.
'use strict';

const { WebSocketServer, WebSocket } = require('ws');

const MAX_BUFFERED = 1 << 20; // bytes queued for one client before it is "too slow"
const MAX_NAME_CHARS = 32;
const MAX_CONTENT_BYTES = 4 * 1024;
const MAX_ROOMS_PER_CLIENT = 16;
const PRESENCE_LIMIT = 1000; // bigger rooms tell Joined/Left only to the member concerned

const [mode, addr] = process.argv.slice(2);
const modes = { echo, broadcast, chat };
const match = /^\[?([^\]]+)\]?:(\d+)$/.exec(addr || '');
if (!(mode in modes) || !match) {
  console.error('usage: node server.js echo|broadcast|chat IP:PORT');
  process.exit(2);
}

const wss = new WebSocketServer({
  host: match[1],
  port: Number(match[2]),
  maxPayload: mode === 'echo' ? 16 << 20 : 64 << 10,
  closeTimeout: 2000,
});
wss.on('error', (err) => {
  console.error(`cannot listen on ${addr}: ${err.message}`);
  process.exit(1);
});
wss.on('listening', () => {
  const { address, family, port } = wss.address();
  const host = family === 'IPv6' ? `[${address}]` : address;
  process.stdout.write(`listening on ws://${host}:${port}\n`); // a pipe write is synchronous
});
wss.on('connection', (ws) => {
  // A protocol error (a message over maxPayload: 1009, bad UTF-8: 1007...) or a
  // reset: ws has already closed the connection with the right code, and
  // 'close' follows. Without a listener the 'error' event would crash us.
  ws.on('error', () => {});
  modes[mode](ws);
});

let shuttingDown = false;
process.on('SIGINT', () => {
  shuttingDown = true;
  for (const ws of wss.clients) ws.close(1001, 'server shutting down');
  // Called once every connection has closed (or been dropped after closeTimeout).
  wss.close(() => process.exit(0));
});

// Backpressure, as our echo server has by awaiting each send: while over
// MAX_BUFFERED of answers wait to go out, stop reading this client.
function echo(ws) {
  ws.on('message', (data, isBinary) => {
    if (ws.bufferedAmount > MAX_BUFFERED) ws.pause();
    ws.send(data, { binary: isBinary }, () => {
      if (ws.isPaused && ws.bufferedAmount <= MAX_BUFFERED) ws.resume();
    });
  });
}

function broadcast(ws) {
  ws.on('message', (data, isBinary) => {
    for (const client of wss.clients) send(client, data, isBinary);
  });
}

// Sends unless the client is closing or too slow; a too slow one is closed.
function send(ws, data, isBinary = false) {
  if (ws.readyState !== WebSocket.OPEN) return;
  if (ws.bufferedAmount > MAX_BUFFERED) {
    ws.close(1008, 'too slow');
    return;
  }
  ws.send(data, { binary: isBinary });
}

// ---- chat: the JSON protocol of src/protocol.rs ----

// room name -> { members: Map<WebSocket, username>, seq }
const rooms = new Map();

// Serialises `event` once and sends the same bytes to every target.
function deliver(targets, event) {
  const data = Buffer.from(JSON.stringify(event));
  for (const ws of targets) send(ws, data);
}

// Joined/Left go to the whole room up to PRESENCE_LIMIT members (counting the
// member concerned), else only to that member.
function presence(room, ws, event) {
  deliver(room.members.size <= PRESENCE_LIMIT ? room.members.keys() : [ws], event);
}

function chat(ws) {
  const joined = new Map(); // room name -> my username there
  const error = (message, room) =>
    deliver([ws], room === undefined ? { type: 'Error', message } : { type: 'Error', room, message });

  ws.on('message', (data, isBinary) => {
    if (isBinary) return error('binary frames are not supported: send JSON text');
    let msg;
    try {
      msg = JSON.parse(data);
    } catch (e) {
      return error(`invalid JSON message: ${e.message}`);
    }
    const str = (key) => typeof msg[key] === 'string';
    switch (msg && msg.type) {
      case 'Join': {
        if (!str('room') || !str('username')) {
          return error('invalid JSON message: Join needs room and username');
        }
        const { room: name, username } = msg;
        const bad = checkName('username', username) || checkName('room', name);
        if (bad) return error(bad, name);
        if (joined.size >= MAX_ROOMS_PER_CLIENT) return error(`at most ${MAX_ROOMS_PER_CLIENT} rooms`, name);
        const refused = `cannot join ${JSON.stringify(name)}: `;
        if (joined.has(name)) return error(refused + 'already in that room', name);
        let room = rooms.get(name);
        if (room && [...room.members.values()].includes(username)) {
          return error(refused + 'that name is taken in that room', name);
        }
        if (!room) rooms.set(name, (room = { members: new Map(), seq: 0 }));
        room.members.set(ws, username);
        joined.set(name, username);
        return presence(room, ws, { type: 'Joined', room: name, username });
      }
      case 'Leave': {
        if (!str('room')) return error('invalid JSON message: Leave needs room');
        if (!joined.has(msg.room)) {
          return error(`cannot leave ${JSON.stringify(msg.room)}: not in that room`, msg.room);
        }
        return leave(ws, joined, msg.room, true);
      }
      case 'Message': {
        if (!str('room') || !str('content')) {
          return error('invalid JSON message: Message needs room and content');
        }
        const { room: name, content } = msg;
        const bytes = Buffer.byteLength(content);
        if (bytes < 1 || bytes > MAX_CONTENT_BYTES) {
          return error(`content must be 1 to ${MAX_CONTENT_BYTES} bytes`, name);
        }
        if (!joined.has(name)) {
          return error(`cannot send to ${JSON.stringify(name)}: not in that room`, name);
        }
        const room = rooms.get(name);
        room.seq += 1;
        const timestamp = new Date().toISOString();
        const event = { type: 'Message', room: name, username: joined.get(name), content, timestamp, seq: room.seq };
        return deliver(room.members.keys(), event);
      }
      case 'Ping':
        return deliver([ws], { type: 'Pong' });
      case 'Pong':
        return;
      default:
        return error('invalid JSON message: unknown or missing "type"');
    }
  });

  ws.on('close', () => {
    for (const name of [...joined.keys()]) leave(ws, joined, name, false);
  });
}

// Takes `ws` out of room `name` and tells the members (and the leaver itself
// when it is still connected). Empty rooms are deleted.
function leave(ws, joined, name, tellLeaver) {
  const room = rooms.get(name);
  const event = { type: 'Left', room: name, username: joined.get(name) };
  // Skip the announcements when the whole server is going away: everyone is leaving.
  if (!shuttingDown) {
    if (room.members.size <= PRESENCE_LIMIT) deliver(room.members.keys(), event);
    else if (tellLeaver) deliver([ws], event);
  }
  room.members.delete(ws);
  joined.delete(name);
  if (room.members.size === 0) rooms.delete(name);
}

function checkName(what, name) {
  const chars = [...name].length;
  if (chars === 0 || chars > MAX_NAME_CHARS || name.trim() === '') {
    return `${what} must be 1 to ${MAX_NAME_CHARS} characters`;
  }
  if (/\p{Cc}/u.test(name)) return `${what} must not contain control characters`;
  return null;
}
