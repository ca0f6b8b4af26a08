//go:build linux

package main

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"strconv"
	"sync"
	"sync/atomic"
	"time"
)

// Payload layout: "SSSSSS-QQQQQQQQ-TTTTTTTTTTTT" in lower-case hex (the
// sender's index, the message's sequence number, and its send time in ns
// since the run's start), then 'x' up to the payload size. It is valid
// chat message text and has a fixed length, so decoding needs no search.
const (
	senderDigits = 6
	seqDigits    = 8
	tsDigits     = 12
	minPayload   = senderDigits + 1 + seqDigits + 1 + tsDigits
	maxSenders   = 1 << (4 * senderDigits)
	maxMessages  = 1 << (4 * seqDigits)
)

// appendPayload appends the payload of message seq from sender, sent at
// ts, padded to size bytes (at least minPayload).
func appendPayload(buf []byte, sender int, seq int64, ts time.Duration, size int) []byte {
	buf = appendHex(buf, uint64(sender), senderDigits)
	buf = append(buf, '-')
	buf = appendHex(buf, uint64(seq), seqDigits)
	buf = append(buf, '-')
	buf = appendHex(buf, uint64(ts), tsDigits)
	for pad := size - minPayload; pad > 0; pad -= len(padding) {
		buf = append(buf, padding[:min(pad, len(padding))]...)
	}
	return buf
}

// padding fills payloads up to their size, a slice at a time.
var padding = bytes.Repeat([]byte{'x'}, 256)

// parsePayload decodes a payload of size bytes made by appendPayload.
func parsePayload(p []byte, size int) (sender int, seq int64, ts time.Duration, ok bool) {
	if len(p) != size || size < minPayload || p[senderDigits] != '-' || p[senderDigits+1+seqDigits] != '-' {
		return 0, 0, 0, false
	}
	s, ok1 := parseHex(p[:senderDigits])
	q, ok2 := parseHex(p[senderDigits+1 : senderDigits+1+seqDigits])
	t, ok3 := parseHex(p[senderDigits+1+seqDigits+1 : minPayload])
	return int(s), int64(q), time.Duration(t), ok1 && ok2 && ok3
}

const hexDigits = "0123456789abcdef"

func appendHex(buf []byte, v uint64, width int) []byte {
	for i := width - 1; i >= 0; i-- {
		buf = append(buf, hexDigits[v>>(4*uint(i))&0xf])
	}
	return buf
}

func parseHex(b []byte) (uint64, bool) {
	var v uint64
	for _, c := range b {
		switch {
		case '0' <= c && c <= '9':
			v = v<<4 | uint64(c-'0')
		case 'a' <= c && c <= 'f':
			v = v<<4 | uint64(c-'a'+10)
		default:
			return 0, false
		}
	}
	return v, true
}

// shape says who sends to whom.
type shape struct {
	name      string
	receivers func(senders int) int
	to        func(sender int) int // the receiver a sender sends to
}

var shapes = map[string]shape{
	"pairs": {"pairs", func(n int) int { return n }, func(i int) int { return i }},
	"fanin": {"fanin", func(int) int { return 1 }, func(int) int { return 0 }},
}

// userName is the chat user name of sender ("s") or receiver ("r") i; a
// receiver's name is also its NATS subject.
func userName(role string, i int) string { return role + strconv.Itoa(i) }

// loadConfig is one pairs or fanin run.
type loadConfig struct {
	addr     string
	recvAddr string // where receivers log in: another server of a cluster, or addr
	shape    shape
	senders  int
	messages int64 // per sender
	size     int
	window   int64
	timeout  time.Duration
}

// load is one run of a shape: its connections, its progress and the
// checks' tallies.
type load struct {
	cfg   loadConfig
	w     wire
	start time.Time // senders start here; payload times count from it

	senders   []*sender
	receivers []*receiver

	ctx    context.Context // cancelled on the first failure or the timeout
	cancel context.CancelCauseFunc
	// remaining counts the deliveries and acks still to come; done is
	// closed when it reaches zero.
	remaining atomic.Int64
	done      chan struct{}
}

// sender writes its messages in batches of at most window minus the
// messages in flight, and counts the server's acks on its read loop.
type sender struct {
	*conn
	l          *load
	idx        int
	head, tail []byte // the wire's frame around each payload

	// delivered counts this sender's messages its receiver has seen, once
	// each. The receiver adds to it and then wakes the sender through
	// wake (capacity 1, so a wake is never lost and never blocks).
	delivered atomic.Int64
	wake      chan struct{}

	sent int64 // owned by the send loop
	acks int64 // owned by the read loop
}

// receiver checks and times the messages delivered to one user.
type receiver struct {
	*conn
	l *load

	// Owned by the read loop.
	now     time.Duration // when the current read arrived
	last    time.Duration // when the last new message arrived
	streams []*stream     // by sender index; nil for senders that do not send here
	touched []*stream     // streams with deliveries not yet handed to their senders
	lats    []time.Duration
	fresh   int64 // new deliveries not yet subtracted from load.remaining
}

// stream is one sender's messages as one receiver sees them.
type stream struct {
	s         *sender
	seen      []uint64 // bit per sequence number
	next      int64    // one past the highest sequence number seen
	distinct  int64
	dup, ooo  int64
	unflushed int64 // distinct deliveries not yet added to s.delivered
}

// runLoad connects every receiver and then every sender, runs the load
// until everything is delivered and acked, a connection fails, or the
// timeout, and returns what it measured. It returns an error only when
// the connections cannot be set up; a failed run is reported in its
// result.
func runLoad(ctx context.Context, w wire, cfg loadConfig, pids []int) (*loadResult, error) {
	ctx, stopTimer := context.WithTimeoutCause(ctx, cfg.timeout, fmt.Errorf("timed out after %v", cfg.timeout))
	defer stopTimer()
	l := &load{cfg: cfg, w: w, done: make(chan struct{})}
	l.ctx, l.cancel = context.WithCancelCause(ctx)
	defer l.cancel(nil)
	defer l.closeAll()
	if err := l.connect(); err != nil {
		return nil, err
	}

	total := int64(cfg.senders) * cfg.messages
	want := total
	if w.acked() {
		want += total
	}
	l.remaining.Store(want)
	before := sample(pids)
	var wg sync.WaitGroup
	l.start = time.Now()
	for i, r := range l.receivers {
		wg.Go(func() { l.fail("receiver", i, r.readLoop(r.consume)) })
	}
	for i, s := range l.senders {
		wg.Go(func() { l.fail("sender", i, s.readLoop(s.consume)) })
		wg.Go(func() { l.fail("sender", i, s.send()) })
	}
	select {
	case <-l.done:
	case <-l.ctx.Done():
	}
	elapsed := time.Since(l.start)
	after := sample(pids)
	abort := context.Cause(l.ctx)
	l.cancel(errDone)
	l.closeAll()
	wg.Wait()
	return l.result(elapsed, before, after, abort), nil
}

// connect dials and hands shakes every receiver, then every sender, so
// that every recipient is ready before the first message.
func (l *load) connect() error {
	open := func(user string, receiver bool) (*conn, error) {
		addr := l.cfg.addr
		if receiver && l.cfg.recvAddr != "" {
			addr = l.cfg.recvAddr
		}
		c, err := dial(l.ctx, addr, nil)
		if err != nil {
			return nil, fmt.Errorf("%s: %w", user, err)
		}
		err = withDeadline(l.ctx, c, func() error { return l.w.handshake(c, user, receiver) })
		if err != nil {
			c.close()
			return nil, fmt.Errorf("%s: %w", user, err)
		}
		return c, nil
	}
	nrecv := l.cfg.shape.receivers(l.cfg.senders)
	for i := range nrecv {
		c, err := open(userName("r", i), true)
		if err != nil {
			return err
		}
		streams := make([]*stream, l.cfg.senders)
		l.receivers = append(l.receivers, &receiver{conn: c, l: l, streams: streams,
			lats: make([]time.Duration, 0, int64(l.cfg.senders/nrecv)*l.cfg.messages)})
	}
	for i := range l.cfg.senders {
		c, err := open(userName("s", i), false)
		if err != nil {
			return err
		}
		to := l.cfg.shape.to(i)
		s := &sender{conn: c, l: l, idx: i, wake: make(chan struct{}, 1)}
		s.head, s.tail = l.w.frame(userName("r", to), l.cfg.size)
		l.senders = append(l.senders, s)
		l.receivers[to].streams[i] = &stream{s: s, seen: make([]uint64, (l.cfg.messages+63)/64)}
	}
	return nil
}

// closeAll closes every connection, which ends their loops.
func (l *load) closeAll() {
	for _, r := range l.receivers {
		r.close()
	}
	for _, s := range l.senders {
		s.close()
	}
}

// fail ends the run with the error of connection role i, unless the run
// is already over (then a closed connection is expected).
func (l *load) fail(role string, i int, err error) {
	if err != nil && l.ctx.Err() == nil {
		l.cancel(fmt.Errorf("%s %s: %w", role, userName(role[:1], i), err))
	}
}

// progress subtracts k deliveries or acks from those still to come.
func (l *load) progress(k int64) {
	if k > 0 && l.remaining.Add(-k) == 0 {
		close(l.done)
	}
}

// send writes the sender's messages, each batch in one write.
func (s *sender) send() error {
	cfg := s.l.cfg
	frameLen := len(s.head) + cfg.size + len(s.tail)
	buf := make([]byte, 0, int(cfg.window)*frameLen)
	for s.sent < cfg.messages {
		room := cfg.window - (s.sent - s.delivered.Load())
		if room <= 0 {
			select {
			case <-s.wake:
				continue
			case <-s.l.ctx.Done():
				return nil
			}
		}
		n := min(room, cfg.messages-s.sent)
		ts := time.Since(s.l.start)
		buf = buf[:0]
		for k := range n {
			buf = append(buf, s.head...)
			buf = appendPayload(buf, s.idx, s.sent+k, ts, cfg.size)
			buf = append(buf, s.tail...)
		}
		if err := s.write(buf); err != nil {
			return fmt.Errorf("write: %w", err)
		}
		s.sent += n
	}
	return nil
}

// consume counts acks.
func (s *sender) consume(b []byte) (int, error) {
	before := s.acks
	n, err := s.l.w.parse(b, s)
	s.l.progress(s.acks - before)
	return n, err
}

func (s *sender) ack() error {
	if s.acks == s.l.cfg.messages {
		return errors.New("more acks than messages")
	}
	s.acks++
	return nil
}

func (s *sender) delivery([]byte) error { return errors.New("delivery to a sender") }

// consume checks a read's worth of deliveries, then lets their senders
// know.
func (r *receiver) consume(b []byte) (int, error) {
	r.now = time.Since(r.l.start)
	n, err := r.l.w.parse(b, r)
	for _, st := range r.touched {
		st.s.delivered.Add(st.unflushed)
		st.unflushed = 0
		select {
		case st.s.wake <- struct{}{}:
		default:
		}
	}
	r.touched = r.touched[:0]
	r.l.progress(r.fresh)
	r.fresh = 0
	return n, err
}

func (r *receiver) delivery(p []byte) error {
	idx, seq, ts, ok := parsePayload(p, r.l.cfg.size)
	if !ok || idx >= len(r.streams) || r.streams[idx] == nil || seq >= r.l.cfg.messages {
		return fmt.Errorf("receiver got a foreign message %q", p)
	}
	st := r.streams[idx]
	word, bit := seq/64, uint64(1)<<(seq%64)
	if st.seen[word]&bit != 0 {
		st.dup++
		return nil
	}
	st.seen[word] |= bit
	if seq < st.next {
		st.ooo++
	}
	st.next = max(st.next, seq+1)
	st.distinct++
	if st.unflushed == 0 {
		r.touched = append(r.touched, st)
	}
	st.unflushed++
	r.fresh++
	r.last = r.now
	r.lats = append(r.lats, r.now-ts)
	return nil
}

func (r *receiver) ack() error { return errors.New("ack to a receiver") }
