package tests

import (
	"context"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"chatserver/internal/chat/chattest"
	"chatserver/internal/natstest"
)

// This file tests cluster mode on a NATS cluster of three routed servers,
// run in the test process.

// startOnNATS starts a chat-server process joined through urls.
func startOnNATS(t *testing.T, urls string, args ...string) (*chattest.Proc, string) {
	t.Helper()
	p := startProc(t, serverBinary(t), append([]string{"-a", "127.0.0.1", "-p", "0", "--nats-url", urls, "--log-level", "debug"}, args...)...)
	return p, p.ListenAddr()
}

// TestClusterOnANATSCluster: on a NATS cluster the claims and the leases
// are kept in three copies, and killing the NATS server that leads the
// claims leaves logins, LIST and SEND working within 10 s, with nothing
// that was answered SEND-OK lost.
func TestClusterOnANATSCluster(t *testing.T) {
	t.Parallel()
	nats := natstest.RunCluster(t, 3, natstest.MaxPayload(4<<20))
	_, a := startOnNATS(t, nats.URLs())
	_, b := startOnNATS(t, nats.URLs())

	js, err := jetstream.New(natstest.Connect(t, nats.URLs()))
	if err != nil {
		t.Fatal(err)
	}
	for _, name := range []string{"chat_users", "KV_chat_nodes"} {
		s, err := js.Stream(context.Background(), name)
		if err != nil {
			t.Fatal(err)
		}
		if r := s.CachedInfo().Config.Replicas; r != 3 {
			t.Errorf("stream %s has %d replicas, want 3", name, r)
		}
	}

	x := chattest.LoggedIn(t, a, "x")
	y := chattest.LoggedIn(t, b, "y")
	stream := startSendStream(x, "y", time.Millisecond)
	leader := nats.StreamLeader("chat_users")
	if leader == nil {
		t.Fatal("the claims stream has no leader")
	}
	time.Sleep(200 * time.Millisecond) // SENDs on the way
	leader.Stop()
	killed := time.Now()
	time.Sleep(200 * time.Millisecond)
	sent := stream.stop()
	y.TCP().CloseWrite()
	got := readDeliveries(t, y, "x", 15*time.Second) // until its server closes it
	for _, m := range sent {
		if m.reply == "SEND-OK" && !got[m.n] {
			t.Errorf("message %d answered SEND-OK, never delivered", m.n)
		}
	}

	x.Conn.Close()
	var p, q *chattest.Wire
	chattest.Eventually(t, "logins on both servers", func() bool {
		if p == nil {
			p = tryLogin(t, a, "p")
		}
		if q == nil {
			q = tryLogin(t, b, "q")
		}
		return p != nil && q != nil
	})
	waitList(t, p, "p,q")
	p.Send("SEND q works again\n")
	p.Expect("SEND-OK")
	q.Expect("DELIVERY p works again")
	if d := time.Since(killed); d > 10*time.Second {
		t.Errorf("the cluster worked again %v after the kill, want within 10 s", d)
	}
	t.Logf("working again %v after the NATS server was stopped", time.Since(killed).Round(time.Millisecond))
}

// tryLogin logs in as name on addr once and returns the connection, or
// nil if the login was refused.
func tryLogin(t *testing.T, addr, name string) *chattest.Wire {
	w := chattest.Dial(t, addr)
	w.Send("HELLO-FROM " + name + "\n")
	if w.Line() == "HELLO "+name {
		return w
	}
	w.Conn.Close()
	return nil
}

// TestClusterNoBadDestUserRightAfterALogin: a SEND from a server on one
// NATS node, right after its recipient's login was answered HELLO through
// another NATS node, is delivered: the recipient is found through the
// claims, not through NATS interest, which takes a moment to spread.
func TestClusterNoBadDestUserRightAfterALogin(t *testing.T) {
	t.Parallel()
	nats := natstest.RunCluster(t, 3, natstest.MaxPayload(4<<20))
	_, a := startOnNATS(t, nats.Nodes[0].URL())
	_, b := startOnNATS(t, nats.Nodes[1].URL())
	s := chattest.LoggedIn(t, a, "s")
	for i := range 200 {
		name := fmt.Sprintf("u%d", i)
		u := chattest.LoggedIn(t, b, name)
		s.Send("SEND " + name + " right after your login\n")
		if r := s.Line(); r != "SEND-OK" {
			t.Fatalf("round %d: SEND right after the login = %q, want SEND-OK", i, r)
		}
		u.Expect("DELIVERY s right after your login")
		u.Conn.Close()
	}
}

// TestClusterLongPause: a server paused for 30 s (longer than NATS waits
// for a client that does not read) comes back, fences, and rejoins; its
// old users get nothing, its names serve others meanwhile.
func TestClusterLongPause(t *testing.T) {
	t.Parallel()
	ns := runNATS(t)
	a := startFaultNode(t, ns.Addr())
	b := startFaultNode(t, ns.Addr(), "--rate", "0") // y floods
	x := chattest.LoggedIn(t, a.addr, "x")
	y := chattest.LoggedIn(t, b.addr, "y")
	a.Pause()
	x.Send("SEND y from the paused server\n")
	newX := waitLogin(t, b.addr, "x", 8*time.Second)
	flood := strings.Repeat("SEND x keep the old server busy\n", 200)
	for range 150 { // traffic for the paused server's users' names: now on b
		y.Send(flood)
	}
	time.Sleep(20 * time.Second) // the rest of the 30 s
	a.Resume()
	x.ExpectEOF()
	back := waitLogin(t, a.addr, "back", 10*time.Second)
	back.Send("SEND y the paused server is back\n")
	back.Expect("SEND-OK")
	for {
		line := y.Line()
		if line == "DELIVERY back the paused server is back" {
			break
		}
		if line != "SEND-OK" {
			t.Fatalf("y got %q", line)
		}
	}
	newX.Conn.Close()
}
