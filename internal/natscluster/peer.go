package natscluster

import (
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"chatserver/internal/chat"
)

const (
	// maxFrameBytes is the most records one frame carries; a bigger record
	// goes alone. Bigger frames would only add latency.
	maxFrameBytes = 64 << 10
	// minRTO and maxRTO bound how long a frame waits for its ack before it
	// is sent again, with everything after it.
	minRTO = 200 * time.Millisecond
	maxRTO = 2 * time.Second
)

// peer is this node's channel with another node: the records it sends
// there (kept until they are acknowledged, and sent again if a frame is
// lost), and how far it has handled theirs. Records are SENDs, answers to
// theirs, and notices (a release, a death) that someone waits for.
type peer struct {
	c       *Cluster
	self    *node     // the incarnation of ours this channel belongs to
	id      string    // theirs
	subject string    // their inbox
	opened  time.Time // see applyView

	mu          sync.Mutex
	closed      bool          // guarded by mu: their node or ours is gone; nothing more is appended
	nextSeq     uint64        // guarded by mu: the number of the next record appended
	batches     []batch       // guarded by mu: records appended since the last seal, in frame-sized runs
	building    batch         // guarded by mu: the run being appended to
	buildFirst  uint64        // guarded by mu: the number of the first record not yet in a frame
	frames      []*frame      // guarded by mu: sent and not yet acknowledged, oldest first
	waiting     []waiter      // guarded by mu: records someone waits for, in number order
	acked       uint64        // guarded by mu: they handled our records up to this one
	recvAck     uint64        // guarded by mu: we handled theirs up to this one
	ackDue      bool          // guarded by mu: recvAck moved since our last frame
	established bool          // guarded by mu: they acknowledged a record of ours (see directory)
	srtt, rto   time.Duration // guarded by mu

	expect uint64 // owned by the inbox: the number of their next record to handle
	// dirty: on the flusher's list. Set under Cluster.flushMu; read
	// without it by kick, which has nothing to do while it is set: the
	// flusher clears it before it seals, so it seals what came before.
	dirty atomic.Bool
}

// frame is a sealed frame; its bytes never change.
type frame struct {
	b           []byte
	first, last uint64    // its records' numbers; last < first if it has none
	sent        time.Time // guarded by peer.mu, like the rest
	resent      bool
	copies      []frameCopy // each copy sent, in order
}

// frameCopy is one copy of a frame sent.
type frameCopy struct {
	sent     time.Time
	toNobody bool // NATS answered "no responders" for it: it reached no one
}

// undelivered reports whether no copy of f can have been delivered, at
// the moment its receiver's lease was seen gone (now): every copy reached
// no one, or was sent so late that the receiver, which stopped acting
// for its users fenceAfter after its last refresh, had stopped already.
func (f *frame) undelivered(now time.Time) bool {
	for _, c := range f.copies {
		if !c.toNobody && now.Sub(c.sent) >= leaseTTL-fenceAfter {
			return false
		}
	}
	return true
}

// batch is a run of encoded records, at most maxFrameBytes unless it is one
// big record.
type batch struct {
	records []byte
	count   uint64
}

// waiter is a record someone waits for: a SEND's sender, or a notice's
// barrier.
type waiter struct {
	seq     uint64
	outcome chat.Outcome   // a SEND's, once known: Delivered until a recFailed says otherwise
	done    chat.Forwarded // a SEND
	id      uint64
	barrier chan struct{} // a notice: closed once handled by them, or once they are gone
}

func newPeer(c *Cluster, self *node, id string) *peer {
	return &peer{c: c, self: self, id: id, subject: c.inboxSubject(id), opened: time.Now(), nextSeq: 1, buildFirst: 1, expect: 1, rto: minRTO}
}

// appendSend appends a SEND record, unless the channel is closed or this
// node can no longer vouch for its users. The check and the append are
// one step under mu, so no SEND leaves after the lease ran out.
func (p *peer) appendSend(toClaim uint64, to []byte, from string, msg []byte, done chat.Forwarded, id uint64) bool {
	p.mu.Lock()
	if p.closed || !p.c.lease.Holds(p.self.epoch) {
		p.mu.Unlock()
		return false
	}
	p.waiting = append(p.waiting, waiter{seq: p.nextSeq, done: done, id: id})
	p.startRecordLocked(recordOverhead + len(msg))
	p.building.records = appendSend(p.building.records, toClaim, to, from, msg)
	p.mu.Unlock()
	p.c.mark(p) // sent at the caller's Flush
	return true
}

// appendNotice appends a notice record built by rec and returns a channel
// closed once they handled it or are gone; nil if the channel is closed.
func (p *peer) appendNotice(rec func([]byte) []byte) <-chan struct{} {
	p.mu.Lock()
	if p.closed {
		p.mu.Unlock()
		return nil
	}
	ch := make(chan struct{})
	p.waiting = append(p.waiting, waiter{seq: p.nextSeq, barrier: ch})
	p.startRecordLocked(recordOverhead)
	p.building.records = rec(p.building.records)
	p.mu.Unlock()
	p.c.kick(p)
	return ch
}

// handled records what the inbox did with a frame of theirs: it handled
// their records up to last and failed the SENDs in failed (recFailed
// records go back for those); they marked our SENDs in theirFailed as not
// delivered; and they handled ours up to ack. A frame with records is
// acknowledged, even if it only repeated ones handled before (our ack
// may have been lost). It appends the records whose outcome is now known
// to done, for the caller to report outside the lock. The waiters left
// move to the front of their array, which is reused: a copy of what is in
// flight per ack costs less than a new array and its garbage per ack.
func (p *peer) handled(done []waiter, last uint64, failed, theirFailed []uint64, ack uint64, hadRecords bool, now time.Time) []waiter {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.closed {
		return done
	}
	for _, seq := range failed {
		p.startRecordLocked(1 + 10)
		p.building.records = appendFailed(p.building.records, seq)
	}
	p.recvAck = max(p.recvAck, last)
	p.ackDue = p.ackDue || hadRecords
	for _, seq := range theirFailed {
		if i := p.waiterIndex(seq); i >= 0 {
			p.waiting[i].outcome = chat.NotDelivered
		}
	}
	if ack <= p.acked {
		return done
	}
	p.acked, p.established = ack, true
	n := 0
	for n < len(p.frames) && p.frames[n].last <= ack {
		if f := p.frames[n]; !f.resent && f.last >= f.first {
			p.sampleRTT(now.Sub(f.sent))
		}
		n++
	}
	p.frames = p.frames[n:]
	n = 0
	for n < len(p.waiting) && p.waiting[n].seq <= ack {
		n++
	}
	done = append(done, p.waiting[:n]...)
	rest := copy(p.waiting, p.waiting[n:])
	clear(p.waiting[rest:]) // drop the references to senders
	p.waiting = p.waiting[:rest]
	return done
}

// startRecordLocked numbers the record about to be appended, of about
// size bytes, and starts a new run first if this one would grow past a
// frame.
func (p *peer) startRecordLocked(size int) {
	if p.building.count > 0 && len(p.building.records)+size > maxFrameBytes {
		p.batches = append(p.batches, p.building)
		p.building = batch{}
	}
	p.building.count++
	p.nextSeq++
}

func (p *peer) waiterIndex(seq uint64) int {
	lo, hi := 0, len(p.waiting)
	for lo < hi {
		mid := (lo + hi) / 2
		if p.waiting[mid].seq < seq {
			lo = mid + 1
		} else {
			hi = mid
		}
	}
	if lo < len(p.waiting) && p.waiting[lo].seq == seq {
		return lo
	}
	return -1
}

func (p *peer) sampleRTT(sample time.Duration) {
	if p.srtt == 0 {
		p.srtt = sample
	} else {
		p.srtt += (sample - p.srtt) / 8
	}
	p.rto = min(max(2*p.srtt+50*time.Millisecond, minRTO), maxRTO)
}

// seal turns what was appended, or an ack that is due, into frames to
// send.
func (p *peer) seal(now time.Time) []*frame {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.closed {
		return nil
	}
	var out []*frame
	if p.building.count > 0 {
		p.batches = append(p.batches, p.building)
		p.building = batch{records: p.building.records[:0]} // copied into the frame below
	}
	for _, b := range p.batches {
		f := p.newFrame(b, now)
		p.frames = append(p.frames, f)
		out = append(out, f)
	}
	clear(p.batches)
	p.batches = p.batches[:0]
	if len(out) == 0 && p.ackDue {
		out = append(out, p.newFrame(batch{}, now)) // an ack alone; not kept
	}
	p.ackDue = false
	return out
}

// newFrame makes a frame of the run b, which follows buildFirst.
func (p *peer) newFrame(b batch, now time.Time) *frame {
	buf := make([]byte, 0, headerLen+len(b.records))
	buf = appendHeader(buf, p.self.id, p.id, p.buildFirst, p.recvAck)
	buf = append(buf, b.records...)
	f := &frame{b: buf, first: p.buildFirst, last: p.buildFirst + b.count - 1, sent: now}
	p.buildFirst += b.count
	return f
}

// overdue returns the frames to send again: all of them, once the oldest
// has waited longer than the retransmission timeout. They go as they
// were: a frame's ack may only cover what the recFailed records in it and
// before it vouch for, and a newer ack follows in the next frame.
func (p *peer) overdue(now time.Time) []*frame {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.closed || len(p.frames) == 0 || now.Sub(p.frames[0].sent) < p.rto {
		return nil
	}
	p.rto = min(2*p.rto, maxRTO)
	out := make([]*frame, len(p.frames))
	for i, f := range p.frames {
		f.sent, f.resent = now, true
		out[i] = f
	}
	return out
}

// close ends the channel, at the moment their lease was seen gone or our
// node fenced (now): nothing more is appended or sent, and every waiter is
// released. A SEND never sent, or that no copy can have delivered, was
// not delivered; one that may have been, and was not acknowledged, has an
// unknown outcome.
func (p *peer) close(now time.Time) []waiter {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.closed {
		return nil
	}
	p.closed = true
	all := p.waiting
	for i := range all {
		if f := p.frameOf(all[i].seq); f != nil && !f.undelivered(now) {
			all[i].outcome = chat.Unknown
		} else {
			all[i].outcome = chat.NotDelivered
		}
	}
	p.waiting, p.frames, p.batches, p.building = nil, nil, nil, batch{}
	return all
}

// frameOf returns the sent frame that holds record seq, or nil.
func (p *peer) frameOf(seq uint64) *frame {
	i, found := slices.BinarySearchFunc(p.frames, seq, func(f *frame, seq uint64) int {
		switch {
		case f.last < seq:
			return -1
		case f.first > seq:
			return 1
		}
		return 0
	})
	if !found {
		return nil
	}
	return p.frames[i]
}

// sending notes a copy of f about to be sent, and returns its number.
func (p *peer) sending(f *frame, now time.Time) int {
	p.mu.Lock()
	defer p.mu.Unlock()
	f.copies = append(f.copies, frameCopy{sent: now})
	return len(f.copies) - 1
}

// reachedNobody records that NATS answered copy number nth of the frame
// starting at first with "no responders". Only that copy: an earlier one
// may have been delivered (NATS answers nothing for those).
func (p *peer) reachedNobody(first uint64, nth int) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if f := p.frameOf(first); f != nil && f.first == first && nth < len(f.copies) {
		f.copies[nth].toNobody = true
	}
}

func (p *peer) isClosed() bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.closed
}

func (p *peer) isEstablished() bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.established && !p.closed
}

// release reports the outcome of SENDs and opens barriers. The outcomes
// of consecutive SENDs of one sender go in one call.
func release(ws []waiter) {
	var run []chat.ForwardOutcome
	var sender chat.Forwarded // run's
	report := func() {
		if len(run) > 0 {
			sender.Forwarded(run...)
			run = run[:0]
		}
	}
	for _, w := range ws {
		switch {
		case w.barrier != nil:
			report()
			close(w.barrier)
			continue
		case w.done != sender:
			report()
			sender = w.done
		}
		run = append(run, chat.ForwardOutcome{ID: w.id, Outcome: w.outcome})
	}
	report()
}
