package natscluster

import (
	"context"
	"testing"
	"time"

	"chatserver/internal/chat"
	"chatserver/internal/natstest"
)

// TestAViewAskedBeforeAChannelOpenedKeepsItsNode: an answer about the live
// nodes that was read before a channel opened, and before its node
// joined, leaves that node alone; one read after the channel opened marks
// it dead.
func TestAViewAskedBeforeAChannelOpenedKeepsItsNode(t *testing.T) {
	ns := natstest.Run(t)
	asked := time.Now()
	a := joined(t, ns.URL())
	b := joined(t, ns.URL())
	na, nb := a.node.Load(), b.node.Load()
	ctx, cancel := a.requestContext()
	defer cancel()
	p := a.peerFor(ctx, na, nb.id)
	if p == nil {
		t.Fatal("no channel to a node that holds a lease")
	}
	beforeB := map[string]bool{na.id: true} // what NATS answered at asked

	a.applyView(na, beforeB, asked)
	if a.isDead(nb.id) || (*na.peers.Load())[nb.id] != p {
		t.Fatal("a view asked before the channel opened ended it and marked its node dead")
	}
	a.applyView(na, beforeB, time.Now())
	if !a.isDead(nb.id) || (*na.peers.Load())[nb.id] != nil {
		t.Error("a view asked after the channel opened, without its node, left the node alive")
	}
}

// TestTheFirstFrameOfANodeNotInTheViewIsTaken: a frame from a node that
// holds a lease but is not in the view yet (it has just joined) opens the
// channel and is handled, not dropped until it is sent again.
func TestTheFirstFrameOfANodeNotInTheViewIsTaken(t *testing.T) {
	ns := natstest.Run(t)
	a := joined(t, ns.URL())
	b := joined(t, ns.URL())
	na, nb := a.node.Load(), b.node.Load()
	frame := appendHeader(nil, na.id, nb.id, 1, 0)
	frame = appendSend(frame, 1, []byte("bob"), "ann", []byte("hi"))

	b.alive.Store(&map[string]bool{nb.id: true}) // a view read before a joined
	b.onFrame(nb, frame)
	p := (*nb.peers.Load())[na.id]
	if p == nil {
		t.Fatal("the frame was dropped: no channel to its node")
	}
	if p.expect != 2 {
		t.Errorf("next record expected from a = %d, want 2: the frame's record was not handled", p.expect)
	}
}

// joined returns a node of the cluster "view" on url that serves a server
// with no users, with none of its goroutines running: the test itself
// plays the view loop and the inbox, so nothing races with what it
// checks. Its lease is not refreshed: it holds for fenceAfter.
func joined(t *testing.T, url string) *Cluster {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	c, err := New(ctx, natstest.Connect(t, url), Config{Cluster: "view", MaxUsers: 4, MaxMessageBytes: 1 << 10})
	if err != nil {
		t.Fatalf("New: %v", err)
	}
	n := c.node.Load()
	c.members, c.lease = noUsers{}, chat.NewLease()
	c.lease.Extend(n.epoch, n.leaseSent.Add(fenceAfter))
	t.Cleanup(func() { c.Close() })
	return c
}

// noUsers is a server with no one logged in.
type noUsers struct{}

func (noUsers) Deliver([]byte, uint64, []byte, int) bool { return false }
func (noUsers) EvictAll()                                {}
