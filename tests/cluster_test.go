package tests

import (
	"context"
	"fmt"
	"slices"
	"strings"
	"syscall"
	"testing"
	"time"

	"chatserver/internal/chat"
	"chatserver/internal/chat/chattest"
	"chatserver/internal/natscluster"
	"chatserver/internal/natstest"
)

// This file tests cluster mode: several chat servers in this process,
// sharing one NATS server embedded in the test, talked to over real TCP.

// startNode starts a chat server in cluster mode, joined through natsURL,
// and stops it when the test ends.
func startNode(t *testing.T, natsURL string, edit func(*chat.Config)) (*chat.Server, string, *natscluster.Cluster) {
	t.Helper()
	cfg := chat.DefaultConfig()
	if edit != nil {
		edit(&cfg)
	}
	nc := natstest.Connect(t, natsURL)
	h, err := natscluster.New(context.Background(), nc, natscluster.Config{MaxUsers: cfg.MaxUsers, MaxMessageBytes: cfg.MaxLineBytes})
	if err != nil {
		t.Fatalf("natscluster.New: %v", err)
	}
	t.Cleanup(func() { h.Close() }) // after the server's Shutdown, registered below
	srv, addr := startServer(t, func(c *chat.Config) {
		*c = cfg
		c.Cluster = h
	})
	return srv, addr, h
}

// startCluster starts n nodes on one embedded NATS server and returns
// their addresses.
func startCluster(t *testing.T, n int) []string {
	t.Helper()
	ns := runNATS(t)
	addrs := make([]string, n)
	for i := range addrs {
		_, addrs[i], _ = startNode(t, ns.URL(), nil)
	}
	return addrs
}

func TestClusterLoginRaceForSlots(t *testing.T) {
	t.Parallel()
	addrs := startCluster(t, 2)
	names := make([]string, 40)
	for i := range names {
		names[i] = fmt.Sprintf("racer%02d", i)
	}
	conns, replies := raceLoginsAcross(t, addrs, names)
	var winners []string
	busy := 0
	for i, r := range replies {
		switch r {
		case "HELLO " + names[i]:
			winners = append(winners, names[i])
		case "BUSY":
			busy++
		default:
			t.Errorf("%s got %q, want HELLO or BUSY", names[i], r)
		}
	}
	if len(winners) != 16 || busy != 24 {
		t.Fatalf("got %d HELLO and %d BUSY, want 16 and 24", len(winners), busy)
	}
	for i, r := range replies {
		if r == "BUSY" {
			continue
		}
		got := strings.Split(conns[i].list(), ",")
		slices.Sort(got)
		if !slices.Equal(got, winners) {
			t.Errorf("LIST-OK on %s has %v, want the winners %v", addrs[i%2], got, winners)
		}
	}
}

func TestClusterLoginRaceForOneName(t *testing.T) {
	t.Parallel()
	addrs := startCluster(t, 3)
	names := make([]string, 20)
	for i := range names {
		names[i] = "same"
	}
	_, replies := raceLoginsAcross(t, addrs, names)
	expectOneHello(t, "same", replies)
}

// TestClusterPipelinedSends: 2,000 SENDs written at once to a user on
// another node arrive in order, each answered SEND-OK, and a LIST among
// them is answered in its place, not before the SENDs ahead of it.
func TestClusterPipelinedSends(t *testing.T) {
	t.Parallel()
	const n = 2000
	addrs := startCluster(t, 2)
	alice := loggedIn(t, addrs[0], "alice")
	bob := loggedIn(t, addrs[1], "bob")
	var b strings.Builder
	var want []string
	for i := range n {
		fmt.Fprintf(&b, "SEND bob message %d of %d\n", i, n)
		want = append(want, "SEND-OK")
		if i%250 == 0 {
			b.WriteString("LIST\nSEND alice self\n")
			want = append(want, "LIST-OK alice,bob", "DELIVERY alice self", "SEND-OK")
		}
	}
	written := writeAsync(alice.conn, []byte(b.String()))
	for i := range n {
		bob.expect(fmt.Sprintf("DELIVERY alice message %d of %d", i, n))
	}
	alice.expect(want...)
	if err := <-written; err != nil {
		t.Fatalf("write: %v", err)
	}
	bob.send("LIST\n")
	bob.expect("LIST-OK alice,bob")
}

// TestClusterAcrossNodes: LIST in login order on every node, delivery
// across nodes both ways, and a logout that frees the name cluster-wide.
func TestClusterAcrossNodes(t *testing.T) {
	t.Parallel()
	addrs := startCluster(t, 3)
	var users []*wire
	names := []string{"u1", "u2", "u3", "u4", "u5"}
	for i, name := range names {
		users = append(users, loggedIn(t, addrs[i%3], name))
	}
	for _, u := range users {
		u.send("LIST\n")
		u.expect("LIST-OK u1,u2,u3,u4,u5")
	}
	dup := dial(t, addrs[2])
	dup.send("HELLO-FROM u1\n")
	dup.expect("IN-USE")

	users[0].send("SEND u2 hello from node 0\n")
	users[0].expect("SEND-OK")
	users[1].expect("DELIVERY u1 hello from node 0")
	users[1].send("SEND u1 and back\nSEND u4 same node\nSEND nobody x\n")
	users[1].expect("SEND-OK", "SEND-OK", "BAD-DEST-USER")
	users[0].expect("DELIVERY u2 and back")
	users[3].expect("DELIVERY u2 same node")

	users[1].conn.Close() // u2 leaves node 1
	waitList(t, users[0], "u1,u3,u4,u5")
	users[0].send("SEND u2 gone?\n")
	users[0].expect("BAD-DEST-USER")
	dup.login("u2") // on node 2, at once
	users[0].send("SEND u2 back again\n")
	users[0].expect("SEND-OK")
	dup.expect("DELIVERY u1 back again")
	users[4].send("LIST\n")
	users[4].expect("LIST-OK u1,u3,u4,u5,u2")
}

// TestClusterNodeKilled: a chat-server process killed with SIGKILL has
// its users' names free on the other node within 5 s.
func TestClusterNodeKilled(t *testing.T) {
	t.Parallel()
	bin := serverBinary(t)
	ns := runNATS(t)
	_, addr, _ := startNode(t, ns.URL(), nil)
	p := startProc(t, bin, "-a", "127.0.0.1", "-p", "0", "--nats-url", ns.URL())
	remote := p.listenAddr()
	victim := loggedIn(t, remote, "ann")
	bob := loggedIn(t, addr, "bob")
	bob.send("SEND ann hi\n")
	bob.expect("SEND-OK")
	victim.expect("DELIVERY bob hi")

	p.signal(syscall.SIGKILL)
	killed := time.Now()
	p.wait()
	bob.send("SEND ann still there?\n")
	bob.expect("BAD-DEST-USER") // once its lease is gone: NATS said no one got the SEND
	again := dial(t, addr)
	for {
		again.send("HELLO-FROM ann\n")
		if r := again.line(); r == "HELLO ann" {
			break
		} else if r != "IN-USE" {
			t.Fatalf("login = %q, want IN-USE then HELLO", r)
		}
		if time.Since(killed) > 5*time.Second {
			t.Fatalf("ann still in use %v after the kill", time.Since(killed))
		}
		time.Sleep(50 * time.Millisecond)
	}
	t.Logf("name free %v after SIGKILL", time.Since(killed).Round(time.Millisecond))
}

// TestClusterNATSOutage: a node cut off from NATS closes its users'
// connections and answers logins BUSY, while the others keep serving and
// can take its users' names; after Heal it rejoins on its own.
func TestClusterNATSOutage(t *testing.T) {
	t.Parallel()
	ns := runNATS(t)
	proxy := natstest.NewProxy(t, ns.Addr())
	_, a0, _ := startNode(t, ns.URL(), nil)
	_, a1, _ := startNode(t, ns.URL(), nil)
	cutSrv, a2, _ := startNode(t, proxy.URL(), nil)
	u0 := loggedIn(t, a0, "u0")
	u1 := loggedIn(t, a1, "u1")
	u2 := loggedIn(t, a2, "u2")

	proxy.Cut()
	u2.expectEOF()
	expectClosed(t, cutSrv, map[chat.CloseReason]uint64{chat.ReasonFenced: 1})
	late := dial(t, a2)
	late.send("HELLO-FROM late\n")
	late.expect("BUSY")

	u0.send("SEND u1 still here\n")
	u0.expect("SEND-OK")
	u1.expect("DELIVERY u0 still here")
	taker := dial(t, a1)
	chattest.Eventually(t, "u2's name free", func() bool {
		taker.send("HELLO-FROM u2\n")
		return taker.line() == "HELLO u2"
	})

	proxy.Heal()
	back := dial(t, a2)
	chattest.Eventually(t, "the cut node to rejoin", func() bool {
		back.send("HELLO-FROM back\n")
		return back.line() == "HELLO back"
	})
	back.send("LIST\nSEND u0 I am back\n")
	back.expect("LIST-OK u0,u1,u2,back", "SEND-OK")
	u0.expect("DELIVERY back I am back")
}

// TestClusterHalfClose: a client that pipelines cross-server SENDs and
// closes its side at once still gets every reply before its connection
// ends, as with one server.
func TestClusterHalfClose(t *testing.T) {
	t.Parallel()
	const n = 500
	addrs := startCluster(t, 2)
	alice := loggedIn(t, addrs[0], "alice")
	loggedIn(t, addrs[1], "bob")
	alice.send(strings.Repeat("SEND bob hi\n", n))
	if err := alice.conn.CloseWrite(); err != nil {
		t.Fatal(err)
	}
	want := slices.Repeat([]string{"SEND-OK"}, n)
	alice.expectEOF(want...)
}

// TestClusterSlowConsumerAcrossNodes: a recipient on another node that
// does not read is closed as a slow consumer once its queue would
// overflow, and the sender is told BAD-DEST-USER, as on one server.
func TestClusterSlowConsumerAcrossNodes(t *testing.T) {
	t.Parallel()
	ns := runNATS(t)
	small := func(c *chat.Config) {
		c.MaxLineBytes = 64 << 10
		c.MaxPendingBytes = 256 << 10
	}
	_, a0, _ := startNode(t, ns.URL(), small)
	srv1, a1, _ := startNode(t, ns.URL(), small)
	sender := loggedIn(t, a0, "sender")
	lazy := loggedIn(t, a1, "lazy")
	_ = lazy.conn.SetReadBuffer(16 << 10)
	line := "SEND lazy " + strings.Repeat("x", 60<<10) + "\n"
	for i := 0; ; i++ {
		sender.send(line)
		r := sender.line()
		if r == "BAD-DEST-USER" {
			break
		}
		if r != "SEND-OK" || i > 10_000 {
			t.Fatalf("reply %d = %q, want SEND-OK until BAD-DEST-USER", i, r)
		}
	}
	expectClosed(t, srv1, map[chat.CloseReason]uint64{chat.ReasonSlowConsumer: 1})
	sender.send("LIST\n")
	sender.expect("LIST-OK sender")
}
