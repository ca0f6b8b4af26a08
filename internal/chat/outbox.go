package chat

import (
	"sync"

	"chatserver/internal/protocol"
)

// keepOutboxBytes is the largest buffer an outbox keeps once it is
// drained; a bigger one is dropped so an idle connection stays small.
const keepOutboxBytes = 16 << 10

// outbox is a connection's outbound queue: bytes waiting for its write
// loop. Any goroutine may add to it; adding never blocks on the socket.
// The queue is bounded by limit bytes.
type outbox struct {
	limit int
	wake  chan struct{} // holds a token while there may be bytes to write

	mu      sync.Mutex
	pending []byte // guarded by mu
	closed  bool   // guarded by mu; once set, nothing more is queued
}

// pushResult is what happened to bytes handed to an outbox.
type pushResult uint8

const (
	pushed   pushResult = iota
	overflow            // the queue would exceed its limit; nothing was queued
	closed              // the connection is ending; nothing was queued
)

func newOutbox(limit int) *outbox {
	return &outbox{limit: limit, wake: make(chan struct{}, 1)}
}

// push queues b.
func (o *outbox) push(b []byte) pushResult {
	if len(b) == 0 {
		return pushed
	}
	o.mu.Lock()
	res := o.reserveLocked(len(b))
	if res == pushed {
		o.pending = append(o.pending, b...)
	}
	o.mu.Unlock()
	if res == pushed {
		o.wakeWriter()
	}
	return res
}

// pushDelivery queues "DELIVERY <from> <message>", encoded straight into
// the queue.
func (o *outbox) pushDelivery(from string, message []byte) pushResult {
	n := len("DELIVERY  \n") + len(from) + len(message)
	o.mu.Lock()
	res := o.reserveLocked(n)
	if res == pushed {
		o.pending = protocol.AppendDelivery(o.pending, from, message)
	}
	o.mu.Unlock()
	if res == pushed {
		o.wakeWriter()
	}
	return res
}

func (o *outbox) reserveLocked(n int) pushResult {
	switch {
	case o.closed:
		return closed
	case len(o.pending)+n > o.limit:
		return overflow
	}
	return pushed
}

// wakeWriter makes sure the write loop looks at the queue again.
func (o *outbox) wakeWriter() {
	select {
	case o.wake <- struct{}{}:
	default: // a wake-up is already pending
	}
}

// close stops the queue from taking more bytes; what it holds can still be
// taken.
func (o *outbox) close() {
	o.mu.Lock()
	o.closed = true
	o.mu.Unlock()
	o.wakeWriter()
}

// take swaps the queued bytes for spare (emptied) and returns them, and
// whether the queue is closed. The write loop owns both buffers between
// calls.
func (o *outbox) take(spare []byte) (batch []byte, isClosed bool) {
	if cap(spare) > keepOutboxBytes {
		spare = nil
	}
	o.mu.Lock()
	defer o.mu.Unlock()
	batch, o.pending = o.pending, spare[:0]
	return batch, o.closed
}
