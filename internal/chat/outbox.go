package chat

import (
	"sync"

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

	mu           sync.Mutex
	pending      []byte // guarded by mu
	inflight     int    // guarded by mu: bytes taken by the link, not yet all written
	closed       bool   // guarded by mu; once set, nothing more is queued
	noDeliveries bool   // guarded by mu; once set (the user logged out), only its own replies are queued
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
	o.mu.Lock()
	defer o.mu.Unlock()
	res := o.reserveLocked(len(b), lease)
	if res == pushed {
		o.pending = append(o.pending, b...)
	}
	return res
}

// pushDelivery queues "DELIVERY <from> <message>", encoded straight into
// the queue, while lease is valid (nil: always).
func pushDelivery[Name string | []byte](o *outbox, from Name, message []byte, lease *Lease) pushResult {
	n := len("DELIVERY  \n") + len(from) + len(message)
	o.mu.Lock()
	defer o.mu.Unlock()
	res := o.reserveLocked(n, lease)
	if res == pushed && o.noDeliveries {
		res = ending
	}
	if res == pushed {
		o.pending = protocol.AppendDelivery(o.pending, from, message)
	}
	return res
}

func (o *outbox) reserveLocked(n int, lease *Lease) pushResult {
	switch {
	case o.closed:
		return ending
	case o.inflight+len(o.pending)+n > o.limit:
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
	o.noDeliveries = true
	o.mu.Unlock()
}

// close stops the queue from taking more bytes; what it holds can still be
// taken.
func (o *outbox) close() {
	o.mu.Lock()
	o.closed = true
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
