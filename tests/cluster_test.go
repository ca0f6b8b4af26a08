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
		got := strings.Split(list(conns[i]), ",")
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
	addrs := startCluster(t, 2) // flood control holds the sender back after 1000: part of the test
	alice := chattest.LoggedIn(t, addrs[0], "alice")
	bob := chattest.LoggedIn(t, addrs[1], "bob")
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
	written := writeAsync(alice.Conn, []byte(b.String()))
	for i := range n {
		bob.Expect(fmt.Sprintf("DELIVERY alice message %d of %d", i, n))
	}
	alice.Expect(want...)
	if err := <-written; err != nil {
		t.Fatalf("write: %v", err)
	}
	bob.Send("LIST\n")
	bob.Expect("LIST-OK alice,bob")
}

// TestClusterAcrossNodes: LIST in login order on every node, delivery
// across nodes both ways, and a logout that frees the name cluster-wide.
func TestClusterAcrossNodes(t *testing.T) {
	t.Parallel()
	addrs := startCluster(t, 3)
	var users []*chattest.Wire
	names := []string{"u1", "u2", "u3", "u4", "u5"}
	for i, name := range names {
		users = append(users, chattest.LoggedIn(t, addrs[i%3], name))
	}
	for _, u := range users {
		u.Send("LIST\n")
		u.Expect("LIST-OK u1,u2,u3,u4,u5")
	}
	dup := chattest.Dial(t, addrs[2])
	dup.Send("HELLO-FROM u1\n")
	dup.Expect("IN-USE")

	users[0].Send("SEND u2 hello from node 0\n")
	users[0].Expect("SEND-OK")
	users[1].Expect("DELIVERY u1 hello from node 0")
	users[1].Send("SEND u1 and back\nSEND u4 same node\nSEND nobody x\n")
	users[1].Expect("SEND-OK", "SEND-OK", "BAD-DEST-USER")
	users[0].Expect("DELIVERY u2 and back")
	users[3].Expect("DELIVERY u2 same node")

	users[1].Conn.Close() // u2 leaves node 1
	waitList(t, users[0], "u1,u3,u4,u5")
	users[0].Send("SEND u2 gone?\n")
	users[0].Expect("BAD-DEST-USER")
	dup.Login("u2") // on node 2, at once
	users[0].Send("SEND u2 back again\n")
	users[0].Expect("SEND-OK")
	dup.Expect("DELIVERY u1 back again")
	users[4].Send("LIST\n")
	users[4].Expect("LIST-OK u1,u3,u4,u5,u2")
}

// TestClusterNodeKilled: a chat-server process killed with SIGKILL has
// its users' names free on the other node within 5 s.
func TestClusterNodeKilled(t *testing.T) {
	t.Parallel()
	bin := serverBinary(t)
	ns := runNATS(t)
	_, addr, _ := startNode(t, ns.URL(), nil)
	p := startProc(t, bin, "-a", "127.0.0.1", "-p", "0", "--nats-url", ns.URL())
	remote := p.ListenAddr()
	victim := chattest.LoggedIn(t, remote, "ann")
	bob := chattest.LoggedIn(t, addr, "bob")
	bob.Send("SEND ann hi\n")
	bob.Expect("SEND-OK")
	victim.Expect("DELIVERY bob hi")

	p.Signal(syscall.SIGKILL)
	killed := time.Now()
	p.Wait()
	bob.Send("SEND ann still there?\n")
	bob.Expect("BAD-DEST-USER") // once its lease is gone: NATS said no one got the SEND
	waitLogin(t, addr, "ann", 5*time.Second-time.Since(killed))
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
	u0 := chattest.LoggedIn(t, a0, "u0")
	u1 := chattest.LoggedIn(t, a1, "u1")
	u2 := chattest.LoggedIn(t, a2, "u2")

	proxy.Cut()
	u2.ExpectEOF()
	expectClosed(t, cutSrv, map[chat.CloseReason]uint64{chat.ReasonFenced: 1})
	late := chattest.Dial(t, a2)
	late.Send("HELLO-FROM late\n")
	late.Expect("BUSY")

	u0.Send("SEND u1 still here\n")
	u0.Expect("SEND-OK")
	u1.Expect("DELIVERY u0 still here")
	taker := chattest.Dial(t, a1)
	chattest.Eventually(t, "u2's name free", func() bool {
		taker.Send("HELLO-FROM u2\n")
		return taker.Line() == "HELLO u2"
	})

	proxy.Heal()
	back := chattest.Dial(t, a2)
	chattest.Eventually(t, "the cut node to rejoin", func() bool {
		back.Send("HELLO-FROM back\n")
		return back.Line() == "HELLO back"
	})
	back.Send("LIST\nSEND u0 I am back\n")
	back.Expect("LIST-OK u0,u1,u2,back", "SEND-OK")
	u0.Expect("DELIVERY back I am back")
}

// TestClusterRepliesBeforeListWaits: the replies before a LIST go out
// before the LIST waits on NATS. With the node's NATS link paused, the
// reply to a request pipelined before a LIST arrives; once the link is
// back, the LIST is answered from the cluster, the other node's user
// included. (Held back behind the LIST, that reply would come only once
// the LIST had given up on NATS and answered with this node's users.)
// The node runs a goroutine pair per connection (as TLS does), which
// handles a whole read where it may wait; an event loop hands the
// connection to a goroutine at its first LIST, and queues the replies
// before that hand-off anyway.
func TestClusterRepliesBeforeListWaits(t *testing.T) {
	t.Parallel()
	ns := runNATS(t)
	proxy := natstest.NewProxy(t, ns.Addr())
	_, a0, _ := startNode(t, ns.URL(), nil)
	_, a1, _ := startNode(t, proxy.URL(), func(c *chat.Config) { c.NoEventLoop = true })
	chattest.LoggedIn(t, a0, "bob")
	alice := chattest.LoggedIn(t, a1, "alice")

	proxy.Pause()
	alice.Send("WHO\nLIST\n")
	alice.Expect("BAD-RQST-HDR")
	proxy.Resume()
	alice.Expect("LIST-OK bob,alice")
}

// TestClusterHalfClose: a client that pipelines cross-server SENDs and
// closes its side at once still gets every reply before its connection
// ends, as with one server.
func TestClusterHalfClose(t *testing.T) {
	t.Parallel()
	const n = 500
	addrs := startCluster(t, 2)
	alice := chattest.LoggedIn(t, addrs[0], "alice")
	chattest.LoggedIn(t, addrs[1], "bob")
	alice.Send(strings.Repeat("SEND bob hi\n", n))
	if err := alice.TCP().CloseWrite(); err != nil {
		t.Fatal(err)
	}
	want := slices.Repeat([]string{"SEND-OK"}, n)
	alice.ExpectEOF(want...)
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
	sender := chattest.LoggedIn(t, a0, "sender")
	lazy := chattest.LoggedIn(t, a1, "lazy")
	_ = lazy.TCP().SetReadBuffer(16 << 10)
	line := "SEND lazy " + strings.Repeat("x", 60<<10) + "\n"
	sender.SendUntilBadDest(line, 10_000)
	expectClosed(t, srv1, map[chat.CloseReason]uint64{chat.ReasonSlowConsumer: 1})
	sender.Send("LIST\n")
	sender.Expect("LIST-OK sender")
}
