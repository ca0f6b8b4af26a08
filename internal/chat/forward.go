package chat

import (
	"sync"
	"time"

	"chatserver/internal/protocol"
)

// Cluster mode: a SEND to a user of another server is forwarded, and
// answered once the other server says whether it queued the DELIVERY,
// while the session goes on reading. The session's replies must still
// leave in request order, so each forward takes a slot in heldReplies,
// and any reply after it waits there until every slot before it is
// filled. Single-server sessions have no heldReplies and never come here.

const (
	// maxForwards is how many forwards one session may have waiting;
	// then it stops reading requests until one is answered.
	maxForwards = 1024
	// heldRepliesWait bounds how long a session whose client closed its
	// side waits for the answers to its forwards before it ends.
	heldRepliesWait = 5 * time.Second
)

var (
	sendOKReply      = protocol.AppendReply(nil, protocol.ReplySendOK)
	badDestUserReply = protocol.AppendReply(nil, protocol.ReplyBadDestUser)
)

// heldReplies is a session's replies waiting behind its forwards, in
// request order. The reading side adds to it; the cluster's goroutines
// fill its slots. Lock order: heldReplies.mu, then outbox.mu.
type heldReplies struct {
	mu        sync.Mutex
	room      sync.Cond   // signalled when a forward is answered
	slots     []replySlot // guarded by mu: slots[start:end] wait, oldest first
	start     int         // guarded by mu
	end       int         // guarded by mu
	firstID   uint64      // guarded by mu: the id of slots[start]
	forwards  int         // guarded by mu: forwards not yet answered
	heldBytes int         // guarded by mu: bytes of replies held behind them
	out       []byte      // guarded by mu: scratch for the replies released at once
}

// replySlot is one place in the reply order: a forward's answer, or
// replies that came after a forward and wait for it.
type replySlot struct {
	state slotState
	b     []byte // slotReplies: the replies
}

type slotState uint8

const (
	slotWaiting slotState = iota // a forward not yet answered
	slotSendOK
	slotBadDest
	slotReplies // replies held behind an earlier slot
)

func newHeldReplies() *heldReplies {
	h := &heldReplies{}
	h.room.L = &h.mu
	return h
}

// push queues b on s's outbox, or holds it behind the forwards still
// waiting. Held bytes count against MaxPendingBytes. A logged-in user's
// replies may hold a DELIVERY (of a message to itself), so they are
// queued only while the lease is valid, like any DELIVERY.
func (h *heldReplies) push(s *session, b []byte) pushResult {
	lease := s.srv.lease
	if s.claim.Name == "" {
		lease = nil
	}
	h.mu.Lock()
	defer h.mu.Unlock()
	if h.start == h.end {
		return s.out.push(b, lease)
	}
	switch {
	case h.heldBytes+len(b) > s.srv.cfg.MaxPendingBytes:
		return overflow
	case !lease.Valid():
		return unvouched // held now, queued later: the check is now
	}
	h.appendLocked(replySlot{state: slotReplies, b: append([]byte(nil), b...)})
	h.heldBytes += len(b)
	return pushed
}

// hold takes the next place in the reply order for a forward and returns
// its id. It waits while maxForwards are waiting already.
func (h *heldReplies) hold() uint64 {
	h.mu.Lock()
	defer h.mu.Unlock()
	for h.forwards >= maxForwards {
		h.room.Wait()
	}
	h.forwards++
	return h.appendLocked(replySlot{state: slotWaiting})
}

// tryHold is hold that does not wait: false while maxForwards are
// waiting.
func (h *heldReplies) tryHold() (uint64, bool) {
	h.mu.Lock()
	defer h.mu.Unlock()
	if h.forwards >= maxForwards {
		return 0, false
	}
	h.forwards++
	return h.appendLocked(replySlot{state: slotWaiting}), true
}

// unhold gives back the place hold or tryHold just took, for a forward
// that was not made. It is the last place, and still waiting: answers to
// earlier ones stop there.
func (h *heldReplies) unhold() {
	h.mu.Lock()
	defer h.mu.Unlock()
	h.end--
	h.slots[h.end] = replySlot{}
	h.forwards--
	if h.start == h.end {
		h.start, h.end = 0, 0
	}
}

func (h *heldReplies) appendLocked(slot replySlot) uint64 {
	if h.end == len(h.slots) {
		// Full at the back: move what waits to the front, or grow.
		n := copy(h.slots, h.slots[h.start:h.end])
		clear(h.slots[n:h.end])
		h.start, h.end = 0, n
		if h.end == len(h.slots) {
			h.slots = append(h.slots, make([]replySlot, max(16, len(h.slots)))...)
		}
	}
	id := h.firstID + uint64(h.end-h.start)
	h.slots[h.end] = slot
	h.end++
	return id
}

// Forwarded fills forwards' slots and queues, in order, every reply that
// no longer waits (Forwarded). An Unknown outcome ends the session: no
// reply to that SEND could be true, and none after it may come first.
func (s *session) Forwarded(outcomes ...ForwardOutcome) {
	for _, o := range outcomes {
		if o.Outcome == Unknown {
			s.log().Warn("a SEND's recipient's server was lost before it answered: closing the connection without a reply")
			s.end(ReasonSendUnknown)
			break
		}
	}
	h := s.held
	h.mu.Lock()
	var sendOKs uint64
	for _, o := range outcomes {
		state := slotBadDest
		if o.Outcome == Delivered {
			state = slotSendOK
			sendOKs++
		}
		h.slots[h.start+int(o.ID-h.firstID)].state = state
	}
	h.forwards -= len(outcomes)
	h.room.Signal()
	out := h.out[:0]
	for h.start < h.end && h.slots[h.start].state != slotWaiting {
		slot := &h.slots[h.start]
		switch slot.state {
		case slotSendOK:
			out = append(out, sendOKReply...)
		case slotBadDest:
			out = append(out, badDestUserReply...)
		case slotReplies:
			out = append(out, slot.b...)
			h.heldBytes -= len(slot.b)
		}
		*slot = replySlot{}
		h.start++
		h.firstID++
	}
	if h.start == h.end {
		h.start, h.end = 0, 0
	}
	res := pushed
	if len(out) > 0 {
		res = s.out.push(out, s.srv.lease) // nothing is answered once the lease ran out
	}
	h.out = dropBig(out)
	h.mu.Unlock()

	if res == pushed {
		s.srv.counters.replies[protocol.ReplySendOK].Add(sendOKs)
		s.srv.counters.delivered.Add(sendOKs)
		s.srv.counters.replies[protocol.ReplyBadDestUser].Add(uint64(len(outcomes)) - sendOKs)
	}
	switch {
	case len(out) == 0:
	case res == pushed:
		s.link.wake()
	case res == overflow:
		s.log().Warn("slow consumer: client does not read its replies", "limit", s.srv.cfg.MaxPendingBytes)
		s.end(ReasonSlowConsumer)
	case res == unvouched:
		s.end(ReasonFenced)
	}
}

// wait returns once no forward is waiting, or after limit.
func (h *heldReplies) wait(limit time.Duration) {
	deadline := time.Now().Add(limit)
	stop := time.AfterFunc(limit, func() {
		h.mu.Lock()
		h.room.Broadcast()
		h.mu.Unlock()
	})
	defer stop.Stop()
	h.mu.Lock()
	defer h.mu.Unlock()
	for h.forwards > 0 && time.Now().Before(deadline) {
		h.room.Wait()
	}
}

// forward hands a SEND to the cluster for a user this server does not
// hold. The replies so far are queued first, so the SEND's slot comes
// after them. Where the session may not wait (an event loop), a forward
// that would (the recipient must be looked up, or too many forwards wait)
// is offloaded.
func (s *session) forward(toName, message []byte) error {
	if err := s.queueReplies(); err != nil {
		return err
	}
	s.forwarded = true
	if s.mayBlock {
		s.srv.cluster.Forward(s.claim.Name, toName, message, s, s.held.hold())
		return nil
	}
	id, ok := s.held.tryHold()
	if !ok {
		return errOffload
	}
	if !s.srv.cluster.TryForward(s.claim.Name, toName, message, s, id) {
		s.held.unhold()
		return errOffload
	}
	return nil
}
