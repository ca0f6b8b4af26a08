package natscluster

import (
	"errors"
	"time"

	"github.com/nats-io/nats.go/jetstream"
)

// sweep frees the claims of nodes whose lease is gone. Before it deletes
// them, every live node must have acknowledged a death record for their
// node: from then on it drops anything more that node sent, so nothing a
// dead node's user wrote is delivered once the name is someone else's.
// Nodes that join later never take from the dead node: its lease was gone
// before they looked. Every node sweeps; deleting by sequence twice is
// harmless.
func (c *Cluster) sweep(time.Time) {
	n := c.node.Load()
	if n == nil {
		return
	}
	ctx, cancel := c.requestContext()
	snap, err := c.snapshot(ctx)
	var alive map[string]bool
	if err == nil {
		alive, err = c.liveNodes(ctx)
	}
	cancel()
	if err != nil {
		return
	}
	orphans := make(map[string][]claimInfo)
	for _, cl := range snap.claims {
		if !alive[cl.node] && cl.node != n.id {
			orphans[cl.node] = append(orphans[cl.node], cl)
		}
	}
	for dead, claims := range orphans {
		c.markDead(dead)
		if !c.announceDeath(n, dead, alive) {
			return
		}
		for _, cl := range claims {
			ctx, cancel := c.requestContext()
			err := c.objects().claims.DeleteMsg(ctx, cl.seq)
			cancel()
			if err == nil {
				c.log.Info("freed the name of a user of a server that left", "user", cl.name, "node", dead)
			} else if !errors.Is(err, jetstream.ErrMsgNotFound) {
				c.log.Debug("sweep: could not delete a claim; retrying later", "seq", cl.seq, "err", err)
			}
		}
	}
}

// announceDeath sends a death record for dead to every live node and waits
// until each has handled it or is gone too. It returns false if the
// cluster closes first, or n is fenced.
func (c *Cluster) announceDeath(n *node, dead string, alive map[string]bool) bool {
	record := func(b []byte) []byte { return appendDead(b, dead) }
	var barriers []<-chan struct{}
	for id := range alive {
		if id == n.id || id == dead {
			continue
		}
		ctx, cancel := c.requestContext()
		p := c.peerFor(ctx, n, id)
		cancel()
		if p == nil {
			continue // died meanwhile
		}
		if ch := p.appendNotice(record); ch != nil {
			barriers = append(barriers, ch)
		}
	}
	return c.await(barriers, "freeing the names of a server that left waits for another server to confirm") && !n.gone.Load()
}

// reap looks for claims of this node's that no user holds (a login whose
// answer was lost on the way; a logout that could not finish) and
// releases them, and for claims of its users that the stream no longer
// holds, which only an operator can cause: then it fences, so its users
// log in again under claims that exist.
func (c *Cluster) reap(time.Time) {
	n := c.node.Load()
	if n == nil {
		return
	}
	ctx, cancel := c.requestContext()
	snap, err := c.snapshot(ctx)
	cancel()
	if err != nil {
		return
	}
	var leftovers []claimInfo
	present := make(map[uint64]bool)
	lost := false
	c.mu.Lock()
	if c.node.Load() != n {
		c.mu.Unlock()
		return
	}
	for _, cl := range snap.claims {
		if cl.node != n.id {
			continue
		}
		present[cl.seq] = true
		if c.owned[cl.seq] == nil && !c.claiming[cl.token] {
			leftovers = append(leftovers, cl)
			c.owned[cl.seq] = &ownedClaim{name: cl.name}
		}
	}
	for seq, o := range c.owned {
		if seq <= snap.key.lastSeq && !present[seq] && !o.releasing {
			lost = true
		}
	}
	c.mu.Unlock()
	for _, cl := range leftovers {
		c.log.Info("releasing a claim no user holds", "user", cl.name, "seq", cl.seq)
		c.startRelease(n, cl.name, cl.seq)
	}
	if lost {
		c.fence(n, "the claims of its users are gone from the stream")
	}
}
