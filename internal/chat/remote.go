package chat

import (
	"slices"
	"sync"
	"time"

	"chatserver/internal/hub"
	"chatserver/internal/protocol"
)

// Cluster mode: a SEND to a user of another server is answered later, by
// the hub, while the session goes on reading. The session's replies must
// still leave in request order, so each remote SEND takes a slot in
// heldReplies, and any reply after it waits there until every slot before
// it is filled. Single-server sessions have no heldReplies and never come
// here.

var (
	sendOKReply      = protocol.AppendReply(nil, protocol.ReplySendOK)
	badDestUserReply = protocol.AppendReply(nil, protocol.ReplyBadDestUser)
)

// heldReplies is a session's queue of replies waiting behind a remote
// SEND's. The reading side adds to it; the hub's goroutines fill slots.
// Lock order: heldReplies.mu, then outbox.mu.
type heldReplies struct {
	mu    sync.Mutex
	slots []*replySlot  // guarded by mu; empty: replies go straight to the outbox
	bytes int           // guarded by mu: bytes held in ready slots
	empty chan struct{} // guarded by mu: closed when slots empties; nil while it is empty
}

// heldRepliesWait bounds how long a session whose client closed its side
// waits for the replies to its cross-server SENDs before it ends: the
// hub's answer comes within its RequestTimeout (2 s).
const heldRepliesWait = 3 * time.Second

// wait returns once no reply is held, or after limit.
func (h *heldReplies) wait(limit time.Duration) {
	h.mu.Lock()
	ch := h.empty
	h.mu.Unlock()
	if ch == nil {
		return
	}
	t := time.NewTimer(limit)
	defer t.Stop()
	select {
	case <-ch:
	case <-t.C:
	}
}

// replySlot is one place in the reply order: a remote SEND's reply (ready
// once the hub answers) or replies that came after it (ready at once).
type replySlot struct {
	b     []byte
	ready bool
}

// push queues b on s's outbox, or holds it behind the slots still
// waiting. Held bytes count against MaxPendingBytes.
func (h *heldReplies) push(s *session, b []byte) pushResult {
	h.mu.Lock()
	defer h.mu.Unlock()
	if len(h.slots) == 0 {
		return s.out.push(b)
	}
	if h.bytes+len(b) > s.srv.cfg.MaxPendingBytes {
		return overflow
	}
	h.slots = append(h.slots, &replySlot{b: slices.Clone(b), ready: true})
	h.bytes += len(b)
	return pushed
}

// hold takes the next place in the reply order for a remote SEND.
func (h *heldReplies) hold() *replySlot {
	slot := &replySlot{}
	h.mu.Lock()
	if len(h.slots) == 0 {
		h.empty = make(chan struct{})
	}
	h.slots = append(h.slots, slot)
	h.mu.Unlock()
	return slot
}

// fill gives slot its reply and queues, in order, every ready reply at
// the head. Called from any goroutine.
func (s *session) fill(slot *replySlot, reply []byte) {
	h := s.held
	h.mu.Lock()
	slot.b, slot.ready = reply, true
	h.bytes += len(reply)
	var out []byte
	n := 0
	for ; n < len(h.slots) && h.slots[n].ready; n++ {
		out = append(out, h.slots[n].b...)
		h.bytes -= len(h.slots[n].b)
	}
	h.slots = slices.Delete(h.slots, 0, n)
	if len(h.slots) == 0 && h.empty != nil {
		close(h.empty)
		h.empty = nil
	}
	res := pushed
	if len(out) > 0 {
		res = s.out.push(out)
	}
	h.mu.Unlock()
	switch {
	case len(out) == 0:
	case res == pushed:
		s.link.wake()
	case res == overflow:
		s.log().Warn("slow consumer: client does not read its replies", "limit", s.srv.cfg.MaxPendingBytes)
		s.end(ReasonSlowConsumer)
	}
}

// sendRemote hands a SEND to the hub for a user this server does not
// hold. The replies so far are queued first, so the SEND's slot comes
// after them; the hub publishes in call order, so one sender's SENDs to
// one recipient arrive in order. Send may wait while too many of this
// session's SENDs are in flight, which holds back the client's reading.
func (s *session) sendRemote(toName, message []byte) {
	if !s.flushReplies() {
		s.end(s.stop) // the connection is ending; answer nothing more
		return
	}
	slot := s.held.hold()
	s.srv.hub.Send(s.name, string(toName), message, func(err error) {
		if err != nil {
			s.srv.counters.replies[protocol.ReplyBadDestUser].Add(1)
			s.fill(slot, badDestUserReply)
			return
		}
		s.srv.counters.replies[protocol.ReplySendOK].Add(1)
		s.srv.counters.delivered.Add(1)
		s.fill(slot, sendOKReply)
	})
}

var _ hub.Inbox = (*session)(nil)
