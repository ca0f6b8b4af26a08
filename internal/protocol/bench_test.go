package protocol_test

import (
	"bytes"
	"strings"
	"testing"

	"chatserver/internal/protocol"
)

var (
	sendLine  = []byte("SEND bob " + strings.Repeat("hello there ", 8))
	helloLine = []byte("HELLO-FROM alice_the_first")
	// sendLine16K carries a 16 KiB message.
	sendLine16K = []byte("SEND bob " + strings.Repeat("hello there ", 16<<10/12))
	// framerChunk is a read's worth of complete requests.
	framerChunk = bytes.Repeat([]byte("SEND bob hello there\r\nLIST\nHELLO-FROM zoë\n"), 100)
)

func benchmarkParse(b *testing.B, line []byte) {
	b.ReportAllocs()
	b.SetBytes(int64(len(line)))
	for b.Loop() {
		if _, err := protocol.Parse(line); err != nil {
			b.Fatal(err)
		}
	}
}

func BenchmarkParseSend(b *testing.B)      { benchmarkParse(b, sendLine) }
func BenchmarkParseSend16K(b *testing.B)   { benchmarkParse(b, sendLine16K) }
func BenchmarkParseHelloFrom(b *testing.B) { benchmarkParse(b, helloLine) }

func BenchmarkAppendDelivery(b *testing.B) {
	msg := []byte(strings.Repeat("hello there ", 8))
	buf := make([]byte, 0, 256)
	b.ReportAllocs()
	b.SetBytes(int64(len(protocol.AppendDelivery(nil, "alice", msg))))
	for b.Loop() {
		buf = protocol.AppendDelivery(buf[:0], "alice", msg)
	}
}

func BenchmarkFramerFeed(b *testing.B) {
	f := protocol.NewFramer(1 << 20)
	handle := parseEach(b)
	b.ReportAllocs()
	b.SetBytes(int64(len(framerChunk)))
	for b.Loop() {
		f.Feed(framerChunk, handle)
	}
}

// parseEach returns a Framer handler that parses each line, as a server
// does, and fails tb on anything but a valid request.
func parseEach(tb testing.TB) func([]byte, error) bool {
	return func(line []byte, err error) bool {
		if err == nil {
			_, err = protocol.Parse(line)
		}
		if err != nil {
			tb.Fatalf("line %q: %v", line, err)
		}
		return true
	}
}

// TestParseDoesNotAllocate checks the hot path the package promises:
// parsing a request and framing a read of complete lines allocate nothing.
func TestParseDoesNotAllocate(t *testing.T) {
	tests := []struct {
		name string
		run  func()
	}{
		{"Parse SEND", func() { protocol.Parse(sendLine) }},
		{"Parse HELLO-FROM", func() { protocol.Parse(helloLine) }},
		{"Parse bad header", func() { protocol.Parse([]byte("WHO")) }},
		{"Parse bad body", func() { protocol.Parse([]byte("SEND bob \x00")) }},
		{"Feed complete lines", func() func() {
			f := protocol.NewFramer(1 << 20)
			handle := parseEach(t)
			return func() { f.Feed(framerChunk, handle) }
		}()},
		{"AppendDelivery to a big enough buffer", func() func() {
			buf := make([]byte, 0, 256)
			return func() { buf = protocol.AppendDelivery(buf[:0], "alice", sendLine) }
		}()},
	}
	for _, tc := range tests {
		if n := testing.AllocsPerRun(100, tc.run); n != 0 {
			t.Errorf("%s: %v allocations per run, want 0", tc.name, n)
		}
	}
}
