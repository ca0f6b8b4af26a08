package natscluster

import (
	"context"
	"maps"
	"strings"
	"time"

	"github.com/nats-io/nats.go/jetstream"
)

// Which nodes are alive: those whose lease the bucket holds. Every node
// reads the bucket's subjects four times a second (one request), and a
// node whose lease is gone is dead for good: its channel ends, SENDs
// waiting on it are told not delivered (that node stopped delivering
// before its lease ran out), and nothing more is taken from it.

// liveNodes returns the ids of the nodes that hold a lease now.
func (c *Cluster) liveNodes(ctx context.Context) (map[string]bool, error) {
	prefix := c.leasePrefix
	info, err := c.objects().leaseStream.Info(ctx, jetstream.WithSubjectFilter(prefix+"*"))
	if err != nil {
		return nil, err
	}
	alive := make(map[string]bool, len(info.State.Subjects))
	for subj := range info.State.Subjects {
		alive[strings.TrimPrefix(subj, prefix)] = true
	}
	return alive, nil
}

// pollView reads the live nodes, marks the ones that are gone dead, and
// has the claims swept when one went.
func (c *Cluster) pollView(time.Time) {
	n := c.node.Load() // before the read: its lease is in it unless gone
	asked := time.Now()
	ctx, cancel := c.requestContext()
	defer cancel()
	alive, err := c.liveNodes(ctx)
	if err != nil {
		return
	}
	c.applyView(n, alive, asked)
}

// applyView takes alive, the live nodes as NATS answered a read sent at
// asked, as the view. A channel opened since asked is to a node that held
// a lease when it opened (peerFor asked NATS), which the answer may not
// know yet: it is left to the next view.
func (c *Cluster) applyView(n *node, alive map[string]bool, asked time.Time) {
	before := *c.alive.Swap(&alive)
	if n == nil || c.node.Load() != n {
		return
	}
	if !alive[n.id] {
		c.fence(n, "the node's lease is gone")
		return
	}
	went := false
	for id := range before {
		if !alive[id] && id != n.id {
			c.markDead(id)
			went = true
		}
	}
	var closed []string
	for id, p := range *n.peers.Load() {
		switch {
		case !alive[id] && p.opened.Before(asked):
			c.markDead(id) // a channel opened since the last look, to a node gone before asked
			closed = append(closed, id)
		case p.isClosed():
			closed = append(closed, id)
		}
	}
	if len(closed) > 0 {
		c.relMu.Lock()
		peers := maps.Clone(*n.peers.Load())
		for _, id := range closed {
			delete(peers, id)
		}
		n.peers.Store(&peers)
		c.relMu.Unlock()
	}
	c.forgetOldDeaths()
	if went {
		kick(c.sweepKick)
	}
}

// isAlive reports whether node holds a lease, asking NATS if the last look
// did not see it.
func (c *Cluster) isAlive(ctx context.Context, node string) bool {
	if c.isDead(node) {
		return false
	}
	if (*c.alive.Load())[node] {
		return true
	}
	_, err := c.objects().leases.Get(ctx, node)
	return err == nil
}

func (c *Cluster) isDead(node string) bool {
	c.deadMu.RLock()
	defer c.deadMu.RUnlock()
	_, dead := c.dead[node]
	return dead
}

// markDead stops taking anything from node: it waits for a frame from it
// being handled, if any, and from then on the inbox drops its frames. Its
// channel ends and its users are forgotten by the directory.
func (c *Cluster) markDead(node string) {
	c.deadMu.Lock()
	_, already := c.dead[node]
	if !already {
		c.dead[node] = time.Now()
	}
	c.deadMu.Unlock()
	if already {
		return
	}
	c.log.Info("a server left the cluster", "node", node)
	if n := c.node.Load(); n != nil {
		if p := (*n.peers.Load())[node]; p != nil {
			release(p.close(time.Now()))
		}
	}
	c.dir.dropNode(node)
}

// rememberDeaths is how long a dead node is remembered. A frame of its that
// comes later still is dropped all the same: its node is unknown, and
// holds no lease.
const rememberDeaths = time.Minute

func (c *Cluster) forgetOldDeaths() {
	c.deadMu.Lock()
	defer c.deadMu.Unlock()
	for id, at := range c.dead {
		if time.Since(at) > rememberDeaths {
			delete(c.dead, id)
		}
	}
}

// peerList returns n's channels.
func (n *node) peerList() []*peer {
	peers := *n.peers.Load()
	out := make([]*peer, 0, len(peers))
	for _, p := range peers {
		out = append(out, p)
	}
	return out
}

// hasPeerOutside reports whether n has a channel not in told.
func (n *node) hasPeerOutside(told map[*peer]bool) bool {
	for _, p := range *n.peers.Load() {
		if !told[p] {
			return true
		}
	}
	return false
}

// peerFor returns n's channel with node, opening it if node is alive;
// nil if it is not, or n is gone.
func (c *Cluster) peerFor(ctx context.Context, n *node, node string) *peer {
	if p := (*n.peers.Load())[node]; p != nil {
		return p
	}
	if !c.isAlive(ctx, node) {
		return nil
	}
	return c.addPeer(n, node)
}

// addPeer opens n's channel with node. It holds relMu alone: see release.
func (c *Cluster) addPeer(n *node, node string) *peer {
	c.relMu.Lock()
	defer c.relMu.Unlock()
	peers := *n.peers.Load()
	if p := peers[node]; p != nil {
		return p
	}
	if n.gone.Load() {
		return nil
	}
	next := maps.Clone(peers)
	p := newPeer(c, n, node)
	next[node] = p
	n.peers.Store(&next)
	return p
}
