package chat

import (
	"sync"
	"sync/atomic"

	"chatserver/internal/protocol"
)

// keepIdleBytes is the most output buffer a quiet connection holds. A busy
// connection keeps its buffers from one batch to the next, whatever their
// size (the queue's limit bounds them): regrowing them for every batch
// cost a fifth of the server's CPU in the benchmarks, and most of it with
// large messages. Once it goes quiet, its link drops buffers bigger than
// this, so idle connections stay small.
const keepIdleBytes = 4 << 10

// outbox is a connection's outbound queue: bytes waiting for its link to
// write them. Any goroutine may add to it; adding never blocks on the
// socket. The bytes queued plus the batch being written are bounded by
// limit; whoever adds must wake the link after a push.
//
// In cluster mode a DELIVERY is queued only while the server's lease is
// valid, checked under mu: the check and the queueing are one step, so a
// pause of the process between them cannot slip a DELIVERY in after the
// lease ran out.
type outbox struct {
	limit int

	mu       sync.Mutex
	pending  []byte // guarded by mu
	inflight int    // guarded by mu: bytes taken by the link, not yet all written
	closed   bool   // guarded by mu; once set, nothing more is queued
	// noDeliveries is set under mu, once: the user logged out, and only
	// its own replies are queued from then on. Senders read it without
	// the lock to know a remembered recipient is gone (session.recipient).
	noDeliveries atomic.Bool

	paced *pacedWrite // guarded by mu; nil unless a paced write is under way
}

// pacedWrite is a paced write under way (delaybot's answers, pushPaced):
// its bytes are queued in pieces over time, and meanwhile what else is
// queued waits behind them, so that no other line lands inside a paced
// one. Few connections ever have one, so it is not part of every outbox.
type pacedWrite struct {
	rest   []byte // the paced bytes not queued yet
	behind []byte // queued meanwhile, to follow the paced bytes
}

// pushResult is what happened to bytes handed to an outbox.
type pushResult uint8

const (
	pushed    pushResult = iota
	overflow             // the queue would exceed its limit; nothing was queued
	ending               // the connection is ending, or takes no more deliveries; nothing was queued
	unvouched            // the server's lease is not valid; nothing was queued
)

func newOutbox(limit int) *outbox {
	return &outbox{limit: limit}
}

// push queues b, one of the connection's own replies, while lease is
// valid (nil: always).
func (o *outbox) push(b []byte, lease *Lease) pushResult {
	return o.pushBytes(b, lease, false)
}

// pushDeliveries queues b, whole DELIVERY lines, as pushDelivery does one.
func (o *outbox) pushDeliveries(b []byte, lease *Lease) pushResult {
	return o.pushBytes(b, lease, true)
}

// handOver queues b, whole DELIVERY lines, as pushDeliveries does, and
// returns the empty buffer the caller is to gather its next ones in. When
// nothing is queued ahead of them, b itself becomes the queue and the
// queue's empty buffer comes back: a batch is handed over, not copied.
func (o *outbox) handOver(b []byte, lease *Lease) (pushResult, []byte) {
	o.mu.Lock()
	defer o.mu.Unlock()
	res := o.reserveLocked(len(b), lease, true)
	if res == pushed {
		if len(o.pending) == 0 && o.paced == nil {
			b, o.pending = o.pending, b
		} else {
			o.appendLocked(b)
		}
	}
	return res, b[:0]
}

func (o *outbox) pushBytes(b []byte, lease *Lease, deliveries bool) pushResult {
	o.mu.Lock()
	defer o.mu.Unlock()
	res := o.reserveLocked(len(b), lease, deliveries)
	if res == pushed {
		o.appendLocked(b)
	}
	return res
}

// appendLocked queues b where bytes queued now go (tailLocked).
func (o *outbox) appendLocked(b []byte) {
	tail := o.tailLocked()
	*tail = append(*tail, b...)
}

// tailLocked is where bytes queued now go: behind a paced write under
// way, or else straight into pending.
func (o *outbox) tailLocked() *[]byte {
	if o.paced != nil {
		return &o.paced.behind
	}
	return &o.pending
}

// pushDelivery queues "DELIVERY <from> <message>", encoded straight into
// the queue, while lease is valid (nil: always).
func pushDelivery[Name string | []byte](o *outbox, from Name, message []byte, lease *Lease) pushResult {
	n := len("DELIVERY  \n") + len(from) + len(message)
	o.mu.Lock()
	defer o.mu.Unlock()
	res := o.reserveLocked(n, lease, true)
	if res == pushed {
		tail := o.tailLocked()
		*tail = protocol.AppendDelivery(*tail, from, message)
	}
	return res
}

// takesDeliveries reports whether the user is still logged in: false once
// it logged out (the queue may still be open for its last replies).
func (o *outbox) takesDeliveries() bool {
	return !o.noDeliveries.Load()
}

// pushPaced queues deliveries, whole lines, that are to reach the client
// in pieces: the first first bytes now, the rest as advancePaced says.
// Until the last piece, what else is queued waits behind them. If a
// paced write is under way already, or first is all of b, b is queued
// whole.
func (o *outbox) pushPaced(b []byte, first int, lease *Lease) pushResult {
	o.mu.Lock()
	defer o.mu.Unlock()
	res := o.reserveLocked(len(b), lease, true)
	switch {
	case res != pushed:
		return res
	case o.paced != nil || first >= len(b):
		o.appendLocked(b)
		return pushed
	}
	o.pending = append(o.pending, b[:first]...)
	o.paced = &pacedWrite{rest: append(make([]byte, 0, len(b)-first), b[first:]...)}
	return pushed
}

// advancePaced queues the next n bytes of the paced write under way (all
// that is left if n is more), and reports whether it is complete.
func (o *outbox) advancePaced(n int) (complete bool) {
	o.mu.Lock()
	defer o.mu.Unlock()
	if o.paced == nil {
		return true // completed by close
	}
	p := o.paced
	n = min(n, len(p.rest))
	o.pending = append(o.pending, p.rest[:n]...)
	p.rest = p.rest[n:]
	if len(p.rest) > 0 {
		return false
	}
	o.completePacedLocked()
	return true
}

// completePacedLocked queues the rest of the paced write under way, and
// what waited behind it.
func (o *outbox) completePacedLocked() {
	o.pending = append(o.pending, o.paced.rest...)
	o.pending = append(o.pending, o.paced.behind...)
	o.paced = nil
}

// size is how many bytes p holds; 0 for none.
func (p *pacedWrite) size() int {
	if p == nil {
		return 0
	}
	return len(p.rest) + len(p.behind)
}

// reserveLocked reports whether n more bytes may be queued now; of
// DELIVERYs (deliveries), none once the user logged out.
func (o *outbox) reserveLocked(n int, lease *Lease, deliveries bool) pushResult {
	switch {
	case o.closed, deliveries && o.noDeliveries.Load():
		return ending
	case o.inflight+len(o.pending)+o.paced.size()+n > o.limit:
		return overflow
	case !lease.Valid():
		return unvouched
	}
	return pushed
}

// stopDeliveries makes the queue take no more DELIVERYs: the user logged
// out, and its name may soon be someone else's. Its own replies still go.
func (o *outbox) stopDeliveries() {
	o.mu.Lock()
	o.noDeliveries.Store(true)
	o.mu.Unlock()
}

// close stops the queue from taking more bytes; what it holds can still be
// taken, a paced write's pieces included, all at once: a connection that
// ends gets its last replies without waiting for a bot.
func (o *outbox) close() {
	o.mu.Lock()
	o.closed = true
	if o.paced != nil {
		o.completePacedLocked()
	}
	o.mu.Unlock()
}

// take hands the link everything queued, in exchange for spare: the
// previous batch, which the link has fully written by now. It also reports
// whether the queue is closed. A batch counts against the limit until the
// next take, so a link takes again until it gets an empty batch.
func (o *outbox) take(spare []byte) (batch []byte, isClosed bool) {
	o.mu.Lock()
	defer o.mu.Unlock()
	batch, o.pending = o.pending, spare[:0]
	o.inflight = len(batch)
	return batch, o.closed
}

// release drops the queue's buffer if it is empty and big: the connection
// has gone quiet.
func (o *outbox) release() {
	o.mu.Lock()
	defer o.mu.Unlock()
	if len(o.pending) == 0 && cap(o.pending) > keepIdleBytes {
		o.pending = nil
	}
}

// dropBig returns b, or nil if its buffer is bigger than a quiet
// connection should hold.
func dropBig(b []byte) []byte {
	if cap(b) > keepIdleBytes {
		return nil
	}
	return b
}
