package chat

import (
	"net/netip"
	"testing"
)

// nopLink carries a session in a test without a socket: what is queued
// stays in the outbox until the test takes it.
type nopLink struct{}

func (nopLink) wake()     {}
func (nopLink) shut(bool) {}
func (nopLink) loggedIn() {}

// sendPair returns a server with two logged-in sessions, a and b.
func sendPair(tb testing.TB) (a, b *session) {
	tb.Helper()
	srv, err := NewServer(DefaultConfig())
	if err != nil {
		tb.Fatal(err)
	}
	login := func(name string) *session {
		s := newSession(srv, srv.nextID.Add(1), netip.AddrPort{})
		s.link = nopLink{}
		if !s.receive([]byte("HELLO-FROM " + name + "\n")) {
			tb.Fatalf("login %s failed", name)
		}
		s.out.take(nil)
		return s
	}
	return login("alice"), login("bob")
}

// The single-server SEND path (lookup, queue the DELIVERY, queue SEND-OK)
// does not allocate once the buffers are warm: cluster mode must not have
// added anything to it.
func TestLocalSendDoesNotAllocate(t *testing.T) {
	a, b := sendPair(t)
	line := []byte("SEND bob hello there\n")
	var sa, sb []byte
	round := func() {
		if !a.receive(line) {
			t.Fatal("send failed")
		}
		sa, _ = a.out.take(sa)
		sb, _ = b.out.take(sb)
	}
	round()
	if string(sa) != "SEND-OK\n" || string(sb) != "DELIVERY alice hello there\n" {
		t.Fatalf("replies %q, delivery %q", sa, sb)
	}
	if n := testing.AllocsPerRun(1000, round); n != 0 {
		t.Fatalf("a local SEND allocates %v times", n)
	}
}

// BenchmarkLocalSend is one SEND between two users of one server, without
// sockets: the part of the hot path that cluster mode touches.
func BenchmarkLocalSend(b *testing.B) {
	sa, sb := sendPair(b)
	line := []byte("SEND bob hello there\n")
	var ba, bb []byte
	b.ReportAllocs()
	for b.Loop() {
		sa.receive(line)
		ba, _ = sa.out.take(ba)
		bb, _ = sb.out.take(bb)
	}
}
