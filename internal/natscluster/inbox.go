package natscluster

import (
	"strconv"
	"strings"
	"time"

	"github.com/nats-io/nats.go"

	"chatserver/internal/protocol"
)

// onFrame handles a frame that came to n's inbox, on nats.go's goroutine
// for the subscription: frames are handled one at a time, in arrival
// order. Each record of a channel is handled once, in number order; a
// frame that skips ahead of what was handled is dropped whole (its sender
// sends it again, after the frames before it). Nothing is handled while
// this node's lease does not hold, or from a node known dead.
func (c *Cluster) onFrame(n *node, data []byte) {
	h, body, err := parseHeader(data)
	if err != nil || string(h.to) != n.id {
		return // malformed, or for an earlier incarnation of ours
	}
	p := (*n.peers.Load())[string(h.from)]
	if p == nil {
		// A node the view does not know yet may have just joined: NATS
		// is asked, rather than its first frame dropped until it comes
		// again.
		from := string(h.from)
		ctx, cancel := c.requestContext()
		alive := c.isAlive(ctx, from)
		cancel()
		if !alive {
			kick(c.viewKick) // gone, or not seen yet: look again
			return
		}
		if p = c.addPeer(n, from); p == nil {
			return
		}
	}

	c.deadMu.RLock()
	_, dead := c.dead[p.id]
	if dead || n.gone.Load() || !c.lease.Holds(n.epoch) || h.first > p.expect {
		c.deadMu.RUnlock()
		return
	}
	var failed, theirFailed []uint64
	var deaths []string
	run := &n.run
	hadRecords := len(body) > 0
	for seq := h.first; len(body) > 0; seq++ {
		r, rest, err := nextRecord(body)
		if err != nil {
			c.log.Error("malformed frame from another server", "node", p.id, "seq", seq)
			break
		}
		body = rest
		if seq < p.expect {
			continue // handled already: a frame sent again
		}
		switch r.kind {
		case recSend:
			if !run.continues(r.to, r.seq) {
				failed = c.deliver(run, failed)
			}
			run.add(r.to, r.seq, seq, r.from, r.msg)
		case recFailed:
			theirFailed = append(theirFailed, r.seq)
		case recRelease:
			c.dir.released(p.id, string(r.name), r.seq)
		case recDead:
			deaths = append(deaths, string(r.name))
		}
		p.expect = seq + 1
	}
	failed = c.deliver(run, failed)
	c.deadMu.RUnlock()

	for _, node := range deaths {
		if node == n.id {
			c.fence(n, "another server found this server's lease gone")
			return
		}
		c.markDead(node)
	}
	n.acked = p.handled(n.acked[:0], p.expect-1, failed, theirFailed, h.ack, hadRecords, time.Now())
	release(n.acked)
	clear(n.acked) // drop the references to senders
	if hadRecords {
		c.kick(p) // the ack
	}
}

// deliveryRun is consecutive SEND records of a frame for one recipient
// (the same name and claim), delivered at once: one lookup, one lock and
// one wake for the run, not one per record. Owned by the node's inbox.
type deliveryRun struct {
	to    []byte // valid during onFrame only
	claim uint64
	lines []byte   // the DELIVERY lines
	seqs  []uint64 // the records' numbers
}

func (r *deliveryRun) continues(to []byte, claim uint64) bool {
	return len(r.seqs) > 0 && r.claim == claim && string(r.to) == string(to)
}

func (r *deliveryRun) add(to []byte, claim, seq uint64, from, msg []byte) {
	r.to, r.claim = to, claim
	r.lines = protocol.AppendDelivery(r.lines, from, msg)
	r.seqs = append(r.seqs, seq)
}

// deliver delivers the run, if any, and empties it; if it could not, its
// records join failed.
func (c *Cluster) deliver(r *deliveryRun, failed []uint64) []uint64 {
	if len(r.seqs) == 0 {
		return failed
	}
	if !c.members.Deliver(r.to, r.claim, r.lines, len(r.seqs)) {
		failed = append(failed, r.seqs...)
	}
	r.to, r.lines, r.seqs = nil, r.lines[:0], r.seqs[:0]
	if cap(r.lines) > maxFrameBytes {
		r.lines = nil // a big record's: not kept
	}
	return failed
}

// kick puts p on the flusher's list and wakes the flusher.
func (c *Cluster) kick(p *peer) {
	c.mark(p)
	c.Flush()
}

// mark puts p on the flusher's list without waking it: the next Flush,
// or the flusher's tick, sends what p has.
func (c *Cluster) mark(p *peer) {
	if p.dirty.Load() {
		return // the flusher will seal it, and what was appended before
	}
	c.flushMu.Lock()
	if !p.dirty.Load() {
		p.dirty.Store(true)
		c.dirty = append(c.dirty, p)
	}
	c.flushMu.Unlock()
}

// Flush wakes the flusher to send what was forwarded so far. A session
// calls it once per read rather than once per SEND, so a read's SENDs to
// one server leave in one frame, for one wake of the flusher.
func (c *Cluster) Flush() {
	kick(c.flushKick)
}

// flush sends what the channels on the flusher's list have sealed, and,
// every retransmitTick, sends again what waited too long for its ack.
func (c *Cluster) flush(now time.Time) {
	c.flushMu.Lock()
	dirty := c.dirty
	c.dirty = c.spareDirty[:0]
	for _, p := range dirty {
		p.dirty.Store(false)
	}
	c.flushMu.Unlock()
	for _, p := range dirty {
		for _, f := range p.seal(now) {
			c.publish(p, f)
		}
	}
	clear(dirty)
	c.spareDirty = dirty
	if now.Sub(c.lastResend) < retransmitTick {
		return
	}
	c.lastResend = now
	if n := c.node.Load(); n != nil {
		for _, p := range n.peerList() {
			for _, f := range p.overdue(now) {
				c.resent.Add(1)
				c.publish(p, f)
			}
		}
	}
}

// publish sends a frame. A frame that cannot go now (NATS is away) is
// sent again later, like a lost one. A frame with records asks NATS to
// say so if no one receives it (see onNobody); an ack alone needs no
// answer.
func (c *Cluster) publish(p *peer, f *frame) {
	msg := &nats.Msg{Subject: p.subject, Data: f.b}
	if f.last >= f.first {
		nth := p.sending(f, time.Now())
		msg.Reply = c.nobodyPrefix + p.self.id + "." + p.id + "." + strconv.FormatUint(f.first, 10) + "." + strconv.Itoa(nth)
	}
	_ = c.nc.PublishMsg(msg)
}

// onNobody handles NATS's answer to a frame that reached no subscriber:
// its receiver's node is gone, or not subscribed yet. Either way that copy
// delivered nothing.
func (c *Cluster) onNobody(n *node, msg *nats.Msg) {
	if msg.Header.Get("Status") != "503" {
		return
	}
	// <prefix><our id>.<their id>.<the frame's first record>.<the copy>
	peerID, rest, ok1 := strings.Cut(strings.TrimPrefix(msg.Subject, c.nobodyPrefix+n.id+"."), ".")
	first, nthText, ok2 := strings.Cut(rest, ".")
	seq, err1 := strconv.ParseUint(first, 10, 64)
	nth, err2 := strconv.Atoi(nthText)
	if !ok1 || !ok2 || err1 != nil || err2 != nil || nth < 0 {
		return
	}
	if p := (*n.peers.Load())[peerID]; p != nil {
		p.reachedNobody(seq, nth)
	}
}
