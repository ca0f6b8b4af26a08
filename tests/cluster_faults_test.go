package tests

import (
	"fmt"
	"io"
	"strings"
	"sync"
	"testing"
	"time"

	"chatserver/internal/chat/chattest"
	"chatserver/internal/natstest"
)

// This file tests cluster mode under faults, one contract point of
// docs/protocol.md ("What holds under faults") at a time: chat-server
// processes, each linked to an embedded NATS server through a proxy that
// delays, holds or cuts the link, paused with SIGSTOP.

// faultNode is a chat-server process in cluster mode whose link to NATS
// goes through a proxy.
type faultNode struct {
	*chattest.Proc
	addr  string
	proxy *natstest.Proxy
}

// startFaultNode starts a chat-server joined to the NATS server at
// natsAddr (host:port) through a new proxy. Its logs are printed if the
// test fails.
func startFaultNode(t *testing.T, natsAddr string, args ...string) *faultNode {
	t.Helper()
	proxy := natstest.NewProxy(t, natsAddr)
	p := startProc(t, serverBinary(t), append([]string{"-a", "127.0.0.1", "-p", "0", "--nats-url", proxy.URL(), "--log-level", "debug"}, args...)...)
	return &faultNode{Proc: p, addr: p.ListenAddr(), proxy: proxy}
}

// waitLogin logs in as name on addr as soon as the name is free, and fails
// the test if it is not within limit.
func waitLogin(t *testing.T, addr, name string, limit time.Duration) *chattest.Wire {
	t.Helper()
	w := chattest.Dial(t, addr)
	deadline := time.Now().Add(limit)
	for {
		w.Send("HELLO-FROM " + name + "\n")
		switch r := w.Line(); r {
		case "HELLO " + name:
			return w
		case "IN-USE", "BUSY":
		default:
			t.Fatalf("login %s = %q, want HELLO, IN-USE or BUSY", name, r)
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s still taken %v after it was given up", name, limit)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// TestClusterPausedServerActsForNobody: a server paused past its lease
// (SIGSTOP, as a long GC pause or a VM migration would) checks its lease
// before it serves anything when it resumes. Requests its users sent
// during the pause get no answer and no DELIVERY; its users' names, taken
// meanwhile on another server, get nothing from the old holders.
func TestClusterPausedServerActsForNobody(t *testing.T) {
	t.Parallel()
	ns := runNATS(t)
	a := startFaultNode(t, ns.Addr())
	b := startFaultNode(t, ns.Addr())
	x := chattest.LoggedIn(t, a.addr, "x")
	y := chattest.LoggedIn(t, a.addr, "y")
	x.Send("SEND y before the pause\n")
	x.Expect("SEND-OK")
	y.Expect("DELIVERY x before the pause")

	a.Pause()
	x.Send("SEND y sent during the pause\nSEND x to myself\n") // waits in a's socket
	newY := waitLogin(t, b.addr, "y", 8*time.Second)
	newX := waitLogin(t, b.addr, "x", time.Second)
	a.Resume()

	x.ExpectEOF() // not a SEND-OK, not a DELIVERY to itself
	y.ExpectEOF() // not the DELIVERY
	newX.Send("SEND y marker\n")
	newX.Expect("SEND-OK")
	newY.Expect("DELIVERY x marker") // first: nothing from the old x came before it
}

// TestClusterHeldFramesOfAFencedServerAreDropped: what a server sent just
// before it was cut off, held by the link, arrives after the server has
// fenced itself and its user's name has gone to someone else. It is
// dropped, not delivered under that name.
func TestClusterHeldFramesOfAFencedServerAreDropped(t *testing.T) {
	t.Parallel()
	ns := runNATS(t)
	a := startFaultNode(t, ns.Addr())
	b := startFaultNode(t, ns.Addr())
	fa := chattest.LoggedIn(t, a.addr, "fa")
	r := chattest.LoggedIn(t, b.addr, "r")
	fa.Send("SEND r before\n")
	fa.Expect("SEND-OK")
	r.Expect("DELIVERY fa before")

	a.proxy.Pause()
	fa.Send("SEND r held by the link\n")
	fa.ExpectEOF() // fenced, with no answer
	newFa := waitLogin(t, b.addr, "fa", 8*time.Second)
	a.proxy.Resume()

	// The held frame reaches NATS before anything a sends after it
	// rejoins, and r's server handles frames in arrival order.
	m := waitLogin(t, a.addr, "m", 10*time.Second)
	m.Send("SEND r marker\n")
	m.Expect("SEND-OK")
	r.Expect("DELIVERY m marker")
	newFa.Send("SEND r from the new fa\n")
	newFa.Expect("SEND-OK")
	r.Expect("DELIVERY fa from the new fa")
}

// TestClusterSendsFollowARecipientWhoMoved: a sender keeps sending to x
// while x logs out of the sender's server (whose link to NATS is slow: the
// claim is deleted well before that server hears back)
// and x's name is taken on another server. Every SEND written after the
// new x's HELLO and answered SEND-OK reaches the new x; nothing reaches it
// twice or out of order.
func TestClusterSendsFollowARecipientWhoMoved(t *testing.T) {
	t.Parallel()
	ns := runNATS(t)
	a := startFaultNode(t, ns.Addr())
	b := startFaultNode(t, ns.Addr())
	a.proxy.SetDelay(50 * time.Millisecond)
	s := chattest.LoggedIn(t, a.addr, "s")
	x := chattest.LoggedIn(t, a.addr, "x")
	s.Send("SEND x first\n")
	s.Expect("SEND-OK")
	x.Expect("DELIVERY s first")

	stream := startSendStream(s, "x", 2*time.Millisecond)
	if err := x.TCP().CloseWrite(); err != nil { // logs out, and goes on reading
		t.Fatal(err)
	}
	go io.Copy(io.Discard, x.Conn)
	newX := waitLogin(t, b.addr, "x", 5*time.Second)
	hello := time.Now()
	time.Sleep(500 * time.Millisecond) // the stream goes on to the new x
	sent := stream.stop()
	s.Send("SEND x 0\n") // the end
	s.Expect("SEND-OK")
	got := readDeliveriesUntil(t, newX, "s", 0)

	for _, m := range sent {
		if m.reply == "SEND-OK" && m.written.After(hello) && !got[m.n] {
			t.Errorf("message %d written after the new x's HELLO was answered SEND-OK but not delivered to the new x", m.n)
		}
	}
}

// sendStream is a goroutine that writes numbered SENDs from one user to
// another at a steady pace, and the replies they got.
type sendStream struct {
	w    *chattest.Wire
	quit chan struct{}
	done chan struct{}

	mu   sync.Mutex
	sent []streamSend // guarded by mu
}

type streamSend struct {
	n       int
	written time.Time
	reply   string // "" if none came
}

// startSendStream starts sending "SEND to <n>" from w every pace. The
// replies are read by stop, which must be called once.
func startSendStream(w *chattest.Wire, to string, pace time.Duration) *sendStream {
	st := &sendStream{w: w, quit: make(chan struct{}), done: make(chan struct{})}
	go func() {
		defer close(st.done)
		for n := 1; ; n++ {
			select {
			case <-st.quit:
				return
			case <-time.After(pace):
			}
			st.mu.Lock()
			st.sent = append(st.sent, streamSend{n: n, written: time.Now()})
			st.mu.Unlock()
			if st.w.SendErr(fmt.Sprintf("SEND %s %d\n", to, n)) != nil {
				return
			}
		}
	}()
	return st
}

// stop stops sending and reads a reply for every SEND written.
func (st *sendStream) stop() []streamSend {
	close(st.quit)
	<-st.done
	st.mu.Lock()
	defer st.mu.Unlock()
	for i := range st.sent {
		r, err := st.w.LineErr()
		if err != nil {
			break
		}
		st.sent[i].reply = r
	}
	return st.sent
}

// readDeliveriesUntil reads w's lines until the message "end" from the
// user from, and returns the numbers delivered to it from from before that.
// They must be increasing: from one sender, in order, each once.
func readDeliveriesUntil(t *testing.T, w *chattest.Wire, from string, end int) map[int]bool {
	t.Helper()
	got := map[int]bool{}
	last := 0
	for {
		line := w.Line()
		var n int
		if _, err := fmt.Sscanf(line, "DELIVERY "+from+" %d", &n); err != nil {
			t.Fatalf("got %q, want a DELIVERY from %s", line, from)
		}
		if n == end {
			return got
		}
		if n <= last {
			t.Errorf("message %d delivered after message %d", n, last)
		}
		got[n], last = true, n
	}
}

// readDeliveries reads w's lines for d, or until its connection ends, and
// returns the numbers delivered to it from the user from, checking that
// they are increasing.
func readDeliveries(t *testing.T, w *chattest.Wire, from string, d time.Duration) map[int]bool {
	t.Helper()
	got := map[int]bool{}
	last := 0
	_ = w.Conn.SetReadDeadline(time.Now().Add(d))
	for {
		line, err := w.R.ReadString('\n')
		if err != nil {
			return got
		}
		var n int
		if _, err := fmt.Sscanf(line, "DELIVERY "+from+" %d", &n); err != nil {
			continue
		}
		if n <= last {
			t.Errorf("message %d delivered after message %d", n, last)
		}
		got[n], last = true, n
	}
}

// TestClusterNoGhostAfterALogoutDuringABlip: a user who logs out while its
// server's link to NATS is down for 0.3 s leaves no claim behind: the name
// is free on another server within 5 s, and its place counts again.
func TestClusterNoGhostAfterALogoutDuringABlip(t *testing.T) {
	t.Parallel()
	ns := runNATS(t)
	a := startFaultNode(t, ns.Addr(), "--max-users", "2")
	b := startFaultNode(t, ns.Addr(), "--max-users", "2")
	x := chattest.LoggedIn(t, a.addr, "x")
	chattest.LoggedIn(t, b.addr, "other")

	a.proxy.Cut()
	x.Conn.Close()
	time.Sleep(300 * time.Millisecond) // the blip
	a.proxy.Heal()
	waitLogin(t, b.addr, "x", 5*time.Second) // also the second of two places
}

// TestClusterOrderAcrossTheSwitchToLocal: while x logs in on the sender's
// own server, SENDs to x change from "not here" to local delivery; none
// overtakes another.
func TestClusterOrderAcrossTheSwitchToLocal(t *testing.T) {
	t.Parallel()
	ns := runNATS(t)
	a := startFaultNode(t, ns.Addr())
	startFaultNode(t, ns.Addr())
	s := chattest.LoggedIn(t, a.addr, "s")
	stream := startSendStream(s, "x", 200*time.Microsecond)
	var all map[int]bool
	for range 5 {
		x := waitLogin(t, a.addr, "x", 5*time.Second) // the last x's logout may not be seen yet
		got := readDeliveries(t, x, "s", 300*time.Millisecond)
		x.Conn.Close()
		for n := range got {
			if all[n] {
				t.Errorf("message %d delivered to two logins of x", n)
			}
			if all == nil {
				all = map[int]bool{}
			}
			all[n] = true
		}
	}
	for _, m := range stream.stop() {
		if m.reply != "SEND-OK" && all[m.n] {
			t.Errorf("message %d was answered %q and delivered", m.n, m.reply)
		}
	}
	if len(all) == 0 {
		t.Fatal("x never received anything")
	}
}

// TestClusterNoLateDeliveryAfterBadDestUser: SENDs to a user whose server
// is cut off from NATS for 2.2 s (about when it fences) are answered only
// once their outcome is known: SEND-OK ones are delivered once, and
// BAD-DEST-USER ones never, also not after the link heals.
func TestClusterNoLateDeliveryAfterBadDestUser(t *testing.T) {
	t.Parallel()
	ns := runNATS(t)
	a := startFaultNode(t, ns.Addr())
	b := startFaultNode(t, ns.Addr())
	s := chattest.LoggedIn(t, a.addr, "s")
	r := chattest.LoggedIn(t, b.addr, "r")
	s.Send("SEND r 0\n")
	s.Expect("SEND-OK")
	r.Expect("DELIVERY s 0")

	b.proxy.Pause()
	const n = 20
	for i := 1; i <= n; i++ {
		s.Send(fmt.Sprintf("SEND r %d\n", i))
	}
	time.Sleep(2200 * time.Millisecond) // the partition
	b.proxy.Resume()
	replies := make([]string, n+1)
	for i := 1; i <= n; i++ {
		replies[i] = s.Line()
	}
	got := readDeliveries(t, r, "s", 3*time.Second) // until r's server closed it (fenced), or quiet
	for i := 1; i <= n; i++ {
		switch {
		case replies[i] == "SEND-OK" && !got[i]:
			t.Errorf("message %d answered SEND-OK, not delivered", i)
		case replies[i] == "BAD-DEST-USER" && got[i]:
			t.Errorf("message %d answered BAD-DEST-USER, delivered", i)
		case replies[i] != "SEND-OK" && replies[i] != "BAD-DEST-USER":
			t.Errorf("message %d answered %q", i, replies[i])
		}
	}
}

// TestClusterFencingTolerance: a server cut off from NATS for 1.5 s keeps
// its users; one cut off for 3 s fences them, about 2.5 s after its last
// acknowledged lease refresh.
func TestClusterFencingTolerance(t *testing.T) {
	t.Parallel()
	ns := runNATS(t)
	a := startFaultNode(t, ns.Addr())
	b := startFaultNode(t, ns.Addr())
	c := startFaultNode(t, ns.Addr())
	x := chattest.LoggedIn(t, a.addr, "x")
	r := chattest.LoggedIn(t, b.addr, "r")
	z := chattest.LoggedIn(t, c.addr, "z")

	a.proxy.Cut()
	time.Sleep(1500 * time.Millisecond) // the cut
	a.proxy.Heal()
	x.Send("SEND r still here\n")
	x.Expect("SEND-OK")
	r.Expect("DELIVERY x still here")

	c.proxy.Cut()
	cut := time.Now()
	z.ExpectEOF()
	if d := time.Since(cut); d < 2*time.Second || d > 4*time.Second {
		t.Errorf("fenced %v after the cut, want about 2.5 s", d)
	}
	c.proxy.Heal()
}

// TestClusterDefaultNATS: chat-server with its default line cap joins a
// NATS server with NATS's default max payload (1 MiB): it lowers the cap
// to what fits, says so in one log line, and carries a message of that
// length to another server.
func TestClusterDefaultNATS(t *testing.T) {
	t.Parallel()
	ns := natstest.Run(t)
	a := startFaultNode(t, ns.Addr())
	b := startFaultNode(t, ns.Addr())
	if logs := a.Stderr.String(); strings.Count(logs, "line cap lowered") != 1 {
		t.Errorf("want one log line saying the line cap was lowered; logs:\n%s", logs)
	}
	const fits = 1<<20 - 215 // the cap it lowered to: NATS's max payload less a frame's overhead
	s := chattest.LoggedIn(t, a.addr, "s")
	r := chattest.LoggedIn(t, b.addr, "r")
	msg := strings.Repeat("m", fits-len("SEND r "))
	s.Send("SEND r " + msg + "\n")
	s.Expect("SEND-OK")
	r.Expect("DELIVERY s " + msg)
	s.Send("SEND r " + msg + "x\n")
	s.Expect("BAD-RQST-BODY") // over the lowered cap
}
