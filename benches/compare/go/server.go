// A Go gorilla/websocket server for the benchmark (`cargo bench --bench load
// -- --compare`) to put side by side with ours. It is not part of the
// tutorial: it mirrors the behaviour of our examples as a competent Go
// developer would write them, in the shape of gorilla's own chat example: a
// hub goroutine that owns the shared state, and per connection a reader and a
// writer goroutine with a send queue between the hub and the writer.
//
//	server echo      ADDR   like examples/echo_server.rs
//	server broadcast ADDR   like examples/broadcast_server.rs
//	server chat      ADDR   like examples/chat_server.rs (same JSON protocol)
//
// ADDR is IP:PORT ([::1]:PORT for IPv6); port 0 picks a free port. The first
// line on stdout is `listening on ws://IP:PORT` with the real port. SIGINT
// (Ctrl-C) or SIGTERM closes every connection with 1001 (going away) and
// exits 0. setup.sh builds it from Debian's golang-go and
// golang-github-gorilla-websocket-dev, in GOPATH mode.
//
// Limits as in our examples: messages up to 16 MiB (echo) or 64 KiB
// (broadcast, chat; a bigger one closes the connection with 1009); 2 s for a
// close handshake. Slow clients: gorilla's example gives each client a
// channel of 256 messages and drops a client whose channel is full. A count
// of messages is the wrong measure (a join storm queues a thousand small
// Joined events in an instant, for clients that read perfectly well), so the
// queue here is bounded in bytes, as ours is: a slice behind a mutex, with a
// one-slot channel to wake the writer. Echo stops reading a client while over
// 1 MiB of its answers are unsent. Broadcast and chat close a client with
// 1008 "too slow" when a message would take its unsent bytes over 1 MiB, as
// our chat server does (our broadcast server instead lets it skip messages
// and tells it how many). As in gorilla's example, the writer pings every
// 54 s and a connection silent for 60 s is dropped, and each write may take
// 10 s. No compression, no per-connection logging, no rate limit, no
// connection limit, no history (a Join's `since` is ignored).
package main

import (
	"encoding/json"
	"fmt"
	"io"
	"log"
	"net"
	"net/http"
	"os"
	"os/signal"
	"sort"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"
	"unicode"
	"unicode/utf8"

	"github.com/gorilla/websocket"
)

const (
	maxBuffered       = 1 << 20 // bytes queued for one client before it is "too slow"
	maxNameChars      = 32
	maxContentBytes   = 4 * 1024
	maxRoomsPerClient = 16
	presenceLimit     = 1000 // bigger rooms tell Joined/Left only to the member concerned

	closeTimeout = 2 * time.Second  // for a close handshake, as in src/close.rs
	writeWait    = 10 * time.Second // for one write, as in gorilla's example
	pongWait     = 60 * time.Second // silence before a connection is dropped
	pingPeriod   = pongWait * 9 / 10
)

var (
	mode     string
	upgrader = websocket.Upgrader{
		ReadBufferSize:  1024,
		WriteBufferSize: 1024,
		// Like the Node and Python servers: any page may connect.
		CheckOrigin: func(*http.Request) bool { return true },
	}
	theHub       *hub // broadcast and chat
	shuttingDown atomic.Bool
	everyone     = registry{clients: map[*client]struct{}{}}
)

func main() {
	if len(os.Args) != 3 || !validMode(os.Args[1]) || !validAddr(os.Args[2]) {
		fmt.Fprintln(os.Stderr, "usage: server echo|broadcast|chat IP:PORT")
		os.Exit(2)
	}
	mode = os.Args[1]
	listener, err := net.Listen("tcp", os.Args[2])
	if err != nil {
		fmt.Fprintf(os.Stderr, "cannot listen on %s: %v\n", os.Args[2], err)
		os.Exit(1)
	}
	// os.Stdout is not buffered: the line is out before anyone connects.
	fmt.Printf("listening on ws://%s\n", listener.Addr())

	if mode != "echo" {
		theHub = newHub()
		go theHub.run()
	}
	server := &http.Server{
		Handler:  http.HandlerFunc(serveWs),
		ErrorLog: log.New(io.Discard, "", 0), // no per-connection logging
	}
	go server.Serve(listener)

	signals := make(chan os.Signal, 1)
	signal.Notify(signals, syscall.SIGINT, syscall.SIGTERM)
	<-signals
	// Stop accepting (connections taken over by gorilla are not the HTTP
	// server's any more: closing them is ours to do).
	server.Close()
	shuttingDown.Store(true)
	everyone.shutdown()
	os.Exit(0)
}

func validMode(m string) bool {
	return m == "echo" || m == "broadcast" || m == "chat"
}

// validAddr accepts IP:PORT, with the IPv6 address in brackets.
func validAddr(addr string) bool {
	host, port, err := net.SplitHostPort(addr)
	if err != nil || net.ParseIP(host) == nil {
		return false
	}
	_, err = strconv.ParseUint(port, 10, 16)
	return err == nil
}

// serveWs upgrades any request to a WebSocket (Upgrade answers a plain HTTP
// request with an error itself) and starts the connection's goroutines.
func serveWs(w http.ResponseWriter, r *http.Request) {
	conn, err := upgrader.Upgrade(w, r, nil)
	if err != nil {
		return
	}
	c := &client{conn: conn, out: newOutbox(), done: make(chan struct{})}
	if !everyone.add(c) { // the server is shutting down
		c.conn.WriteControl(websocket.CloseMessage,
			websocket.FormatCloseMessage(websocket.CloseGoingAway, "server shutting down"),
			time.Now().Add(closeTimeout))
		c.conn.Close()
		return
	}
	if mode == "broadcast" {
		// Through the hub's queue, so it is registered before its first message.
		theHub.requests <- request{from: c, kind: register}
	}
	go c.writePump()
	go c.readPump()
}

// ---- connections ----

type client struct {
	conn *websocket.Conn
	out  *outbox
	// Closed when the reader has ended: the writer stops.
	done chan struct{}
	// Chat: room name -> this client's username there. Only the hub
	// goroutine touches it.
	rooms map[string]string
}

// closeWith sends a close frame with `code`: after what is queued (a
// shutdown), or instead of it (`drop`: a client too slow to read it). The
// writer sends it; the reader goes on until the client's answer or 2 s.
func (c *client) closeWith(code int, reason string, drop bool) {
	c.out.close(code, reason, drop)
}

// readPump reads every message, hands it on, and tidies up when the
// connection ends.
func (c *client) readPump() {
	defer func() {
		if theHub != nil {
			theHub.requests <- request{from: c, kind: unregister}
		}
		c.out.shut()
		close(c.done)
		c.conn.Close()
		everyone.remove(c)
	}()
	if mode == "echo" {
		c.conn.SetReadLimit(16 << 20)
	} else {
		c.conn.SetReadLimit(64 << 10) // over it gorilla closes with 1009
	}
	c.conn.SetReadDeadline(time.Now().Add(pongWait))
	c.conn.SetPongHandler(func(string) error {
		if !c.out.closing() {
			c.conn.SetReadDeadline(time.Now().Add(pongWait))
		}
		return nil
	})
	for {
		// On the client's close frame, gorilla answers it and returns an error.
		kind, data, err := c.conn.ReadMessage()
		if err != nil {
			return
		}
		if c.out.closing() {
			continue // we have said goodbye: wait for the answer
		}
		// gorilla leaves this check to the application.
		if kind == websocket.TextMessage && !utf8.Valid(data) {
			c.closeWith(websocket.CloseInvalidFramePayloadData, "invalid UTF-8", true)
			continue
		}
		switch mode {
		case "echo":
			c.out.push(frame{kind: kind, data: data})
			// Backpressure, as our echo server has by awaiting each send.
			if !c.out.waitBelowLimit(c.done) {
				return
			}
		case "broadcast":
			prepared, err := websocket.NewPreparedMessage(kind, data)
			if err == nil {
				theHub.requests <- request{from: c, kind: relay, frame: frame{prepared: prepared, data: data}}
			}
		case "chat":
			theHub.requests <- parseCommand(c, kind, data)
		}
	}
}

// writePump writes what the queue holds, pings, and sends the close frame.
func (c *client) writePump() {
	ticker := time.NewTicker(pingPeriod)
	defer ticker.Stop()
	for {
		select {
		case <-c.out.wake:
			batch, closing, code, reason := c.out.take()
			for _, f := range batch {
				if c.out.dropping.Load() {
					break // too slow: what is left goes unsent
				}
				if err := f.write(c.conn); err != nil {
					c.conn.Close() // the reader ends too
					return
				}
				c.out.written(len(f.data))
			}
			if closing {
				c.conn.WriteControl(websocket.CloseMessage, websocket.FormatCloseMessage(code, reason),
					time.Now().Add(closeTimeout))
				c.conn.SetReadDeadline(time.Now().Add(closeTimeout))
				return
			}
		case <-ticker.C:
			if err := c.conn.WriteControl(websocket.PingMessage, nil, time.Now().Add(writeWait)); err != nil {
				c.conn.Close()
				return
			}
		case <-c.done:
			return
		}
	}
}

// frame is one message to send: a prepared one (encoded once for all its
// recipients) or raw data (an echo).
type frame struct {
	prepared *websocket.PreparedMessage
	kind     int
	data     []byte // the payload, for its size (and for an echo, to send)
}

func (f frame) write(conn *websocket.Conn) error {
	conn.SetWriteDeadline(time.Now().Add(writeWait))
	if f.prepared != nil {
		return conn.WritePreparedMessage(f.prepared)
	}
	return conn.WriteMessage(f.kind, f.data)
}

// ---- the send queue, bounded in bytes ----

type outbox struct {
	mu     sync.Mutex
	queue  []frame
	bytes  int // queued, or taken and not yet written
	isOver bool
	// Closing: no more pushes; the writer sends a close frame.
	isClosing bool
	code      int
	reason    string
	// Closing without sending what is queued: the writer stops at once.
	dropping atomic.Bool
	// wake tells the writer there is something to do; below tells a waiting
	// echo reader the bytes went back under the limit.
	wake  chan struct{}
	below chan struct{}
}

func newOutbox() *outbox {
	return &outbox{wake: make(chan struct{}, 1), below: make(chan struct{}, 1)}
}

func poke(ch chan struct{}) {
	select {
	case ch <- struct{}{}:
	default: // already signalled
	}
}

// push queues f and reports false when the client is too slow: f would take
// its unsent bytes over the limit. An empty queue always takes one message.
// After close, pushes are dropped.
func (o *outbox) push(f frame) bool {
	o.mu.Lock()
	defer o.mu.Unlock()
	if o.isClosing {
		return true
	}
	if mode != "echo" && o.bytes > 0 && o.bytes+len(f.data) > maxBuffered {
		return false
	}
	o.queue = append(o.queue, f)
	o.bytes += len(f.data)
	o.isOver = o.bytes > maxBuffered
	poke(o.wake)
	return true
}

// take hands the writer everything queued, and whether to close after it.
func (o *outbox) take() ([]frame, bool, int, string) {
	o.mu.Lock()
	defer o.mu.Unlock()
	batch := o.queue
	o.queue = nil
	return batch, o.isClosing, o.code, o.reason
}

// written gives back the bytes of a frame the socket took.
func (o *outbox) written(n int) {
	o.mu.Lock()
	defer o.mu.Unlock()
	o.bytes -= n
	if o.isOver && o.bytes <= maxBuffered {
		o.isOver = false
		poke(o.below)
	}
}

// waitBelowLimit waits while over the limit; false if the connection ended.
func (o *outbox) waitBelowLimit(done chan struct{}) bool {
	for {
		o.mu.Lock()
		over := o.isOver
		o.mu.Unlock()
		if !over {
			return true
		}
		select {
		case <-o.below:
		case <-done:
			return false
		}
	}
}

func (o *outbox) close(code int, reason string, drop bool) {
	o.mu.Lock()
	defer o.mu.Unlock()
	if o.isClosing {
		return
	}
	o.isClosing, o.code, o.reason = true, code, reason
	if drop {
		o.queue = nil
		o.dropping.Store(true)
	}
	poke(o.wake)
}

// shut drops the queue when the connection has ended.
func (o *outbox) shut() {
	o.mu.Lock()
	defer o.mu.Unlock()
	o.isClosing = true
	o.queue = nil
}

func (o *outbox) closing() bool {
	o.mu.Lock()
	defer o.mu.Unlock()
	return o.isClosing
}

// ---- every connection, for the shutdown ----

type registry struct {
	mu      sync.Mutex
	clients map[*client]struct{}
	closed  bool
	wg      sync.WaitGroup
}

func (r *registry) add(c *client) bool {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.closed {
		return false
	}
	r.clients[c] = struct{}{}
	r.wg.Add(1)
	return true
}

func (r *registry) remove(c *client) {
	r.mu.Lock()
	defer r.mu.Unlock()
	delete(r.clients, c)
	r.wg.Done()
}

// shutdown closes every connection with 1001 and waits for the close
// handshakes, 2 s at most; then it drops those still open.
func (r *registry) shutdown() {
	r.mu.Lock()
	r.closed = true
	for c := range r.clients {
		c.closeWith(websocket.CloseGoingAway, "server shutting down", false)
	}
	r.mu.Unlock()
	ended := make(chan struct{})
	go func() {
		r.wg.Wait()
		close(ended)
	}()
	select {
	case <-ended:
	case <-time.After(closeTimeout):
		r.mu.Lock()
		for c := range r.clients {
			c.conn.Close()
		}
		r.mu.Unlock()
		<-ended
	}
}

// ---- the hub: broadcast's clients, chat's rooms ----

type requestKind int

const (
	register requestKind = iota
	unregister
	relay   // broadcast: a message for everyone
	command // chat: a parsed command, or the error to answer it with
)

type request struct {
	from  *client
	kind  requestKind
	frame frame
	cmd   clientMessage
	// A command that could not be read: answer with this Error.
	errCode, errMessage string
}

type hub struct {
	// One queue for everything, so that each client's requests are handled
	// in the order it made them.
	requests chan request
	clients  map[*client]struct{} // broadcast
	rooms    map[string]*room     // chat
	epochs   uint64
}

type room struct {
	members map[*client]string // -> username
	seq     uint64
	epoch   string
}

func newHub() *hub {
	return &hub{
		requests: make(chan request, 1024),
		clients:  map[*client]struct{}{},
		rooms:    map[string]*room{},
	}
}

func (h *hub) run() {
	for r := range h.requests {
		switch r.kind {
		case register:
			h.clients[r.from] = struct{}{}
		case unregister:
			delete(h.clients, r.from)
			for name := range r.from.rooms {
				h.leave(r.from, name, false)
			}
		case relay:
			for c := range h.clients {
				send(c, r.frame)
			}
		case command:
			h.handle(r)
		}
	}
}

// send queues f for c; a client too slow for it is closed with 1008. Its
// writer is likely stuck in a write to a full socket: that write gets the
// close handshake's 2 s, not its own 10, and the connection then ends (a
// client that does not read would not read the close frame either).
func send(c *client, f frame) {
	if !c.out.push(f) {
		c.closeWith(websocket.ClosePolicyViolation, "too slow", true)
		c.conn.UnderlyingConn().SetWriteDeadline(time.Now().Add(closeTimeout))
	}
}

// ---- chat: the JSON protocol of src/protocol.rs ----

// clientMessage is what a client sends; a field of the wrong type makes the
// whole message invalid, and one missing stays nil.
type clientMessage struct {
	Type     string  `json:"type"`
	Room     *string `json:"room"`
	Username *string `json:"username"`
	Content  *string `json:"content"`
}

// The events, with their fields in protocol.rs's order.
type joinedEvent struct {
	Type      string `json:"type"`
	Room      string `json:"room"`
	Username  string `json:"username"`
	Timestamp string `json:"timestamp"`
	Seq       uint64 `json:"seq"`
	Epoch     string `json:"epoch"`
}

type leftEvent struct {
	Type      string `json:"type"`
	Room      string `json:"room"`
	Username  string `json:"username"`
	Timestamp string `json:"timestamp"`
}

type messageEvent struct {
	Type      string `json:"type"`
	Room      string `json:"room"`
	Username  string `json:"username"`
	Content   string `json:"content"`
	Timestamp string `json:"timestamp"`
	Seq       uint64 `json:"seq"`
}

type membersEvent struct {
	Type      string   `json:"type"`
	Room      string   `json:"room"`
	Usernames []string `json:"usernames"`
}

type errorEvent struct {
	Type    string `json:"type"`
	Room    string `json:"room,omitempty"`
	Code    string `json:"code"`
	Message string `json:"message"`
}

// parseCommand reads a command in the reader's goroutine, so that the hub
// only decides.
func parseCommand(c *client, kind int, data []byte) request {
	r := request{from: c, kind: command}
	if kind != websocket.TextMessage {
		r.errCode, r.errMessage = "invalid", "binary frames are not supported: send JSON text"
		return r
	}
	if err := json.Unmarshal(data, &r.cmd); err != nil {
		r.errCode, r.errMessage = "invalid", "invalid JSON message: "+err.Error()
	}
	return r
}

// timestamp is RFC 3339 in UTC with milliseconds, as our servers write it.
func timestamp() string {
	return time.Now().UTC().Format("2006-01-02T15:04:05.000Z")
}

// encode serialises an event once, for every recipient.
func encode(event any) frame {
	data, _ := json.Marshal(event) // plain structs: cannot fail
	prepared, _ := websocket.NewPreparedMessage(websocket.TextMessage, data)
	return frame{prepared: prepared, data: data}
}

func deliver(targets map[*client]string, f frame) {
	for c := range targets {
		send(c, f)
	}
}

func (h *hub) refuse(c *client, room *string, code, message string) {
	event := errorEvent{Type: "Error", Code: code, Message: message}
	if room != nil {
		event.Room = *room
	}
	send(c, encode(event))
}

func (h *hub) handle(r request) {
	c, m := r.from, r.cmd
	if r.errCode != "" {
		h.refuse(c, nil, r.errCode, r.errMessage)
		return
	}
	switch m.Type {
	case "Join":
		if m.Room == nil || m.Username == nil {
			h.refuse(c, m.Room, "invalid", "invalid JSON message: Join needs room and username")
			return
		}
		h.join(c, *m.Room, *m.Username)
	case "Leave":
		if m.Room == nil {
			h.refuse(c, nil, "invalid", "invalid JSON message: Leave needs room")
			return
		}
		if _, in := c.rooms[*m.Room]; !in {
			h.refuse(c, m.Room, "not_member", fmt.Sprintf("cannot leave %q: not in that room", *m.Room))
			return
		}
		h.leave(c, *m.Room, true)
	case "Message":
		if m.Room == nil || m.Content == nil {
			h.refuse(c, m.Room, "invalid", "invalid JSON message: Message needs room and content")
			return
		}
		h.say(c, *m.Room, *m.Content)
	case "Members":
		if m.Room == nil {
			h.refuse(c, nil, "invalid", "invalid JSON message: Members needs room")
			return
		}
		if _, in := c.rooms[*m.Room]; !in {
			h.refuse(c, m.Room, "not_member", fmt.Sprintf("cannot list %q: not in that room", *m.Room))
			return
		}
		names := make([]string, 0, len(h.rooms[*m.Room].members))
		for _, name := range h.rooms[*m.Room].members {
			names = append(names, name)
		}
		sort.Strings(names)
		send(c, encode(membersEvent{Type: "Members", Room: *m.Room, Usernames: names}))
	case "Ping":
		send(c, encode(struct {
			Type string `json:"type"`
		}{"Pong"}))
	case "Pong":
	default:
		h.refuse(c, nil, "invalid", `invalid JSON message: unknown or missing "type"`)
	}
}

func (h *hub) join(c *client, name, username string) {
	if bad := checkName("username", username); bad != "" {
		h.refuse(c, &name, "bad_name", bad)
		return
	}
	if bad := checkName("room", name); bad != "" {
		h.refuse(c, &name, "bad_name", bad)
		return
	}
	if len(c.rooms) >= maxRoomsPerClient {
		h.refuse(c, &name, "too_many_rooms", fmt.Sprintf("at most %d rooms", maxRoomsPerClient))
		return
	}
	refused := fmt.Sprintf("cannot join %q: ", name)
	if _, in := c.rooms[name]; in {
		h.refuse(c, &name, "already_joined", refused+"already in that room")
		return
	}
	r := h.rooms[name]
	if r != nil {
		for _, taken := range r.members {
			if taken == username {
				h.refuse(c, &name, "name_taken", refused+"that name is taken in that room")
				return
			}
		}
	} else {
		// A new life of the room: its seq starts again, under a new epoch.
		h.epochs++
		r = &room{members: map[*client]string{}, epoch: fmt.Sprintf("%x-%d", time.Now().UnixNano(), h.epochs)}
		h.rooms[name] = r
	}
	r.members[c] = username
	if c.rooms == nil {
		c.rooms = map[string]string{}
	}
	c.rooms[name] = username
	f := encode(joinedEvent{Type: "Joined", Room: name, Username: username, Timestamp: timestamp(), Seq: r.seq, Epoch: r.epoch})
	if len(r.members) <= presenceLimit {
		deliver(r.members, f)
	} else {
		send(c, f)
	}
}

func (h *hub) say(c *client, name, content string) {
	if n := len(content); n < 1 || n > maxContentBytes {
		h.refuse(c, &name, "bad_content", fmt.Sprintf("content must be 1 to %d bytes", maxContentBytes))
		return
	}
	username, in := c.rooms[name]
	if !in {
		h.refuse(c, &name, "not_member", fmt.Sprintf("cannot send to %q: not in that room", name))
		return
	}
	r := h.rooms[name]
	r.seq++
	deliver(r.members, encode(messageEvent{Type: "Message", Room: name, Username: username,
		Content: content, Timestamp: timestamp(), Seq: r.seq}))
}

// leave takes c out of room `name` and tells the members (and c itself, when
// it asked to leave). Empty rooms are deleted.
func (h *hub) leave(c *client, name string, asked bool) {
	r := h.rooms[name]
	// Skip the announcements when the whole server is going away.
	if !shuttingDown.Load() {
		f := encode(leftEvent{Type: "Left", Room: name, Username: c.rooms[name], Timestamp: timestamp()})
		if len(r.members) <= presenceLimit {
			deliver(r.members, f)
		} else if asked {
			send(c, f)
		}
	}
	delete(r.members, c)
	delete(c.rooms, name)
	if len(r.members) == 0 {
		delete(h.rooms, name)
	}
}

// checkName returns why a username or room name breaks the rules, or "".
func checkName(what, name string) string {
	chars := utf8.RuneCountInString(name)
	if chars == 0 || chars > maxNameChars || strings.TrimSpace(name) == "" {
		return fmt.Sprintf("%s must be 1 to %d characters", what, maxNameChars)
	}
	if strings.IndexFunc(name, unicode.IsControl) >= 0 {
		return fmt.Sprintf("%s must not contain control characters", what)
	}
	return ""
}
