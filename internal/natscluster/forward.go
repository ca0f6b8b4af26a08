package natscluster

import (
	"errors"
	"strings"
	"sync"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"chatserver/internal/chat"
)

// Forward appends a SEND record on the channel to the node that holds the
// recipient's claim. The record names that claim: the recipient's node
// delivers it to that login only, and answers whether it did.
func (c *Cluster) Forward(from string, to, msg []byte, done chat.Forwarded, id uint64) {
	c.forward(from, to, msg, done, id, true)
}

// TryForward is Forward from where waiting is not allowed (an event
// loop): it does nothing and returns false where Forward would ask NATS
// first (the recipient is not in the directory, or its node's channel is
// not open yet).
func (c *Cluster) TryForward(from string, to, msg []byte, done chat.Forwarded, id uint64) bool {
	return c.forward(from, to, msg, done, id, false)
}

// forward is Forward, and TryForward without mayWait.
func (c *Cluster) forward(from string, to, msg []byte, done chat.Forwarded, id uint64, mayWait bool) bool {
	n := c.node.Load()
	r, known := c.dir.lookup(to)
	var p *peer
	if n != nil && known {
		p = (*n.peers.Load())[r.node] // the channel is open: no request to make
	}
	if !mayWait && (n == nil || !known || p == nil) {
		return false
	}
	c.forwards.Add(1)
	if n == nil {
		done.Forwarded(chat.ForwardOutcome{ID: id, Outcome: chat.NotDelivered})
		return true
	}
	if !known {
		c.Flush() // what was forwarded before must not wait on the lookup
		r, known = c.resolve(n, to)
	}
	if !known || r.node == n.id {
		// Nobody holds the name, or a user of ours is logging in or out
		// as it: either way not deliverable now (and never through NATS
		// to ourselves, which could overtake a later local SEND).
		done.Forwarded(chat.ForwardOutcome{ID: id, Outcome: chat.NotDelivered})
		return true
	}
	if p == nil {
		c.Flush() // nor on opening the channel
		ctx, cancel := c.requestContext()
		p = c.peerFor(ctx, n, r.node)
		cancel()
	}
	if p == nil || !p.appendSend(r.claim, to, from, msg, done, id) {
		done.Forwarded(chat.ForwardOutcome{ID: id, Outcome: chat.NotDelivered})
	}
	return true
}

// route is where a user is: the node holding its claim, and the claim.
type route struct {
	node  string
	claim uint64
}

// directory caches where the users of other nodes are. An entry comes
// from reading the claims stream, and is cached only if the holder's node
// has acknowledged a record of ours: it then knows our channel, so every
// release of its users' claims is sent to us, and removes the entry,
// before the claim is deleted (see release). A release or a death handled
// while a read was out keeps that read from being cached (gen). So a
// cached entry is never stale once the name is someone else's.
type directory struct {
	mu     sync.RWMutex
	routes map[string]route // guarded by mu
	gen    uint64           // guarded by mu: releases and deaths handled so far
}

func (d *directory) lookup(name []byte) (route, bool) {
	d.mu.RLock()
	defer d.mu.RUnlock()
	r, ok := d.routes[string(name)]
	return r, ok
}

func (d *directory) generation() uint64 {
	d.mu.RLock()
	defer d.mu.RUnlock()
	return d.gen
}

// install caches r for name, unless a release or death was handled since
// gen was read.
func (d *directory) install(name string, r route, gen uint64) {
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.gen == gen {
		d.routes[name] = r
	}
}

// released forgets name if its entry is the claim node gave up.
func (d *directory) released(node, name string, claim uint64) {
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.routes[name] == (route{node, claim}) {
		delete(d.routes, name)
	}
	d.gen++
}

// dropNode forgets every user of node.
func (d *directory) dropNode(node string) {
	d.mu.Lock()
	defer d.mu.Unlock()
	for name, r := range d.routes {
		if r.node == node {
			delete(d.routes, name)
		}
	}
	d.gen++
}

func (d *directory) clear() {
	d.mu.Lock()
	defer d.mu.Unlock()
	clear(d.routes)
	d.gen++
}

// resolve reads who holds the name from the claims stream's leader, which
// has every claim answered so far, and caches it if it may (see
// directory). A read that fails is tried again for as long as this node
// acts: an answer that the name is free must be true, and a node that
// cannot reach NATS fences within fenceAfter.
func (c *Cluster) resolve(n *node, name []byte) (route, bool) {
	gen := c.dir.generation()
	subject := c.usersPrefix + encodeName(name)
	for {
		ctx, cancel := c.requestContext()
		msg, err := c.objects().claims.GetLastMsgForSubject(ctx, subject)
		cancel()
		switch {
		case err == nil:
			node, _, _ := strings.Cut(string(msg.Data), " ")
			r := route{node: node, claim: msg.Sequence}
			if p := (*n.peers.Load())[node]; p != nil && p.isEstablished() {
				c.dir.install(string(name), r, gen)
			}
			return r, true
		case errors.Is(err, jetstream.ErrMsgNotFound):
			return route{}, false
		case n.gone.Load() || !c.pause(50*time.Millisecond):
			return route{}, false
		}
		c.log.Debug("lookup failed; retrying", "err", err)
	}
}
