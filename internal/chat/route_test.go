package chat

import (
	"bytes"
	"net/netip"
	"strings"
	"testing"
)

// nopLink carries nothing: these tests drive sessions directly and drain
// their queues themselves, to measure the routing of a SEND alone.
type nopLink struct{}

func (nopLink) wake()     {}
func (nopLink) shut(bool) {}
func (nopLink) loggedIn() {}

// routePair returns a server with alice and bob logged in, and a SEND from
// alice to bob with a 64-byte message. Flood control is off: these measure
// routing alone, faster than any client may send.
func routePair(tb testing.TB) (alice, bob *session, send []byte) {
	tb.Helper()
	cfg := DefaultConfig()
	cfg.Rate = 0
	srv, err := NewServer(cfg)
	if err != nil {
		tb.Fatal(err)
	}
	login := func(name string) *session {
		s := srv.newSession(netip.AddrPort{})
		s.link = nopLink{}
		if _, ok := s.receive([]byte("HELLO-FROM " + name + "\n")); !ok {
			tb.Fatalf("login %s failed", name)
		}
		if got, _ := s.out.take(nil); string(got) != "HELLO "+name+"\n" {
			tb.Fatalf("login %s: got %q", name, got)
		}
		return s
	}
	alice, bob = login("alice"), login("bob")
	return alice, bob, []byte("SEND bob " + strings.Repeat("m", 64) + "\n")
}

// routeOnce hands alice one chunk and drains both queues like a link.
func routeOnce(alice, bob *session, chunk []byte, spare [][]byte) bool {
	_, ok := alice.receive(chunk)
	spare[0], _ = bob.out.take(spare[0])
	spare[1], _ = alice.out.take(spare[1])
	return ok
}

func TestRouteSend(t *testing.T) {
	alice, bob, send := routePair(t)
	if _, ok := alice.receive(send); !ok {
		t.Fatal("receive failed")
	}
	delivered, _ := bob.out.take(nil)
	if want := "DELIVERY alice " + strings.Repeat("m", 64) + "\n"; string(delivered) != want {
		t.Fatalf("bob got %q, want %q", delivered, want)
	}
	if acked, _ := alice.out.take(nil); string(acked) != "SEND-OK\n" {
		t.Fatalf("alice got %q, want SEND-OK", acked)
	}
}

// TestRouteSendAfterRecipientLeft checks the remembered recipient: once
// bob has left, a SEND to bob is BAD-DEST-USER, and once someone else logs
// in as bob, it reaches the new bob.
func TestRouteSendAfterRecipientLeft(t *testing.T) {
	alice, bob, send := routePair(t)
	spare := make([][]byte, 2)
	routeOnce(alice, bob, send, spare) // alice now remembers bob
	bob.readStopped(ReasonClientClosed)

	alice.receive(send)
	if got, _ := alice.out.take(nil); string(got) != "BAD-DEST-USER\n" {
		t.Fatalf("SEND to bob after bob left: got %q, want BAD-DEST-USER", got)
	}
	newBob := alice.srv.newSession(netip.AddrPort{})
	newBob.link = nopLink{}
	newBob.receive([]byte("HELLO-FROM bob\n"))
	newBob.out.take(nil)
	alice.receive(send)
	if got, _ := alice.out.take(nil); string(got) != "SEND-OK\n" {
		t.Fatalf("SEND to the new bob: got %q, want SEND-OK", got)
	}
	if got, _ := newBob.out.take(nil); !bytes.HasPrefix(got, []byte("DELIVERY alice ")) {
		t.Fatalf("the new bob got %q, want the DELIVERY", got)
	}
}

// TestRouteSendDoesNotAllocate holds the hot path to zero allocations:
// parsing, looking up the recipient, queueing the DELIVERY and the SEND-OK.
func TestRouteSendDoesNotAllocate(t *testing.T) {
	alice, bob, send := routePair(t)
	batch := bytes.Repeat(send, 64)
	spare := make([][]byte, 2)
	for _, chunk := range [][]byte{send, batch} {
		routeOnce(alice, bob, chunk, spare) // warm the buffers up
		if n := testing.AllocsPerRun(100, func() { routeOnce(alice, bob, chunk, spare) }); n != 0 {
			t.Errorf("routing a chunk of %d bytes allocates %v times, want 0", len(chunk), n)
		}
	}
}

func BenchmarkRouteSend(b *testing.B) {
	alice, bob, send := routePair(b)
	spare := make([][]byte, 2)
	b.ReportAllocs()
	b.SetBytes(int64(len(send)))
	for b.Loop() {
		routeOnce(alice, bob, send, spare)
	}
}

// BenchmarkRouteSendBatch routes 64 pipelined SENDs read in one chunk, as
// a sender with a full window delivers them.
func BenchmarkRouteSendBatch(b *testing.B) {
	alice, bob, send := routePair(b)
	batch := bytes.Repeat(send, 64)
	spare := make([][]byte, 2)
	b.ReportAllocs()
	b.SetBytes(int64(len(batch)))
	for b.Loop() {
		routeOnce(alice, bob, batch, spare)
	}
}

// TestRouteChunkKeepsOrder: the DELIVERYs of a chunk are queued per
// recipient at once, and every reply still comes in the order of the
// requests.
func TestRouteChunkKeepsOrder(t *testing.T) {
	alice, bob, _ := routePair(t)
	carl := alice.srv.newSession(netip.AddrPort{})
	carl.link = nopLink{}
	carl.receive([]byte("HELLO-FROM carl\n"))
	carl.out.take(nil)

	alice.receive([]byte("SEND bob 1\nSEND bob 2\nSEND alice 3\nSEND bob 4\nSEND carl 5\nSEND bob\nLIST\nSEND bob 6\n"))
	for _, tc := range []struct {
		who  *session
		want string
	}{
		{alice, "SEND-OK\nSEND-OK\nDELIVERY alice 3\nSEND-OK\nSEND-OK\nSEND-OK\nBAD-RQST-BODY\nLIST-OK alice,bob,carl\nSEND-OK\n"},
		{bob, "DELIVERY alice 1\nDELIVERY alice 2\nDELIVERY alice 4\nDELIVERY alice 6\n"},
		{carl, "DELIVERY alice 5\n"},
	} {
		if got, _ := tc.who.out.take(nil); string(got) != tc.want {
			t.Errorf("%s got %q, want %q", tc.who.claim.Name, got, tc.want)
		}
	}
}

// TestRouteEndedSenderQueuesNothing: a sender ended in the middle of a
// chunk (evicted, its name maybe someone else's already) gets none of the
// chunk's SENDs delivered, not even those before the end.
func TestRouteEndedSenderQueuesNothing(t *testing.T) {
	alice, bob, _ := routePair(t)
	lines := 0
	alice.srv.testHookLine = func([]byte) {
		if lines++; lines == 3 {
			alice.end(ReasonFenced)
		}
	}
	if _, ok := alice.receive([]byte("SEND bob 1\nSEND bob 2\nSEND bob 3\n")); ok {
		t.Error("the ended session went on")
	}
	if got, _ := bob.out.take(nil); len(got) != 0 {
		t.Errorf("bob got %q from a sender ended before its SENDs were answered", got)
	}
}
