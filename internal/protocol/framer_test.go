package protocol_test

import (
	"fmt"
	"runtime"
	"slices"
	"strings"
	"testing"

	"chatserver/internal/protocol"
)

// event is one call of a Framer's handler.
type event struct {
	chunk int // index of the Feed call it happened in
	line  string
	err   error
}

func (e event) String() string { return fmt.Sprintf("{%d %q %v}", e.chunk, e.line, e.err) }

// feedAll feeds chunks to f in order and records every handler call.
func feedAll(f *protocol.Framer, chunks [][]byte) []event {
	var events []event
	for i, c := range chunks {
		if n, _ := f.Feed(c, func(line []byte, err error) bool {
			events = append(events, event{chunk: i, line: string(line), err: err})
			return true
		}); n != len(c) {
			panic(fmt.Sprintf("Feed took %d of %d bytes without being stopped", n, len(c)))
		}
	}
	return events
}

// split cuts s into chunks of at most n bytes.
func split(s string, n int) [][]byte {
	var chunks [][]byte
	for len(s) > n {
		chunks = append(chunks, []byte(s[:n]))
		s = s[n:]
	}
	return append(chunks, []byte(s))
}

func chunks(ss ...string) [][]byte {
	var cs [][]byte
	for _, s := range ss {
		cs = append(cs, []byte(s))
	}
	return cs
}

func TestFramer(t *testing.T) {
	const max = 16
	x := func(n int) string { return strings.Repeat("x", n) }
	tests := []struct {
		name    string
		maxLine int
		chunks  [][]byte
		want    []event
	}{
		{
			"several lines in one chunk", max,
			chunks("LIST\nSEND bob hi\nHELLO-FROM a\n"),
			[]event{{0, "LIST", nil}, {0, "SEND bob hi", nil}, {0, "HELLO-FROM a", nil}},
		},
		{
			"line split byte by byte", max,
			split("SEND bob hi\nLIST\n", 1),
			[]event{{11, "SEND bob hi", nil}, {16, "LIST", nil}},
		},
		{
			"lines split across chunks", max,
			chunks("LI", "ST\nSEND b", "ob hi", "\nLIST", "\n"),
			[]event{{1, "LIST", nil}, {3, "SEND bob hi", nil}, {4, "LIST", nil}},
		},
		{
			"empty chunks", max,
			chunks("", "LIST", "", "\n", ""),
			[]event{{3, "LIST", nil}},
		},
		{
			"CRLF drops one CR", max,
			chunks("LIST\r\na\r\r\n\r\n\r\r\n"),
			[]event{{0, "LIST", nil}, {0, "a\r", nil}, {0, "", nil}, {0, "\r", nil}},
		},
		{
			"CRLF split between CR and LF", max,
			chunks("LIST\r", "\n", "a\r\r", "\n"),
			[]event{{1, "LIST", nil}, {3, "a\r", nil}},
		},
		{
			"CR inside a line is kept", max,
			chunks("a\rb\n"),
			[]event{{0, "a\rb", nil}},
		},
		{
			"empty lines", max,
			chunks("\n\n", "\n"),
			[]event{{0, "", nil}, {0, "", nil}, {1, "", nil}},
		},
		{
			"bytes after the last LF are kept back", max,
			chunks("LIST\nSEND bob", " hi"),
			[]event{{0, "LIST", nil}},
		},
		{
			"maxLine bytes pass", max,
			chunks(x(max) + "\n" + "LIST\n"),
			[]event{{0, x(max), nil}, {0, "LIST", nil}},
		},
		{
			"maxLine bytes and CRLF pass", max,
			chunks(x(max) + "\r\n"),
			[]event{{0, x(max), nil}},
		},
		{
			"maxLine bytes and CRLF pass byte by byte", max,
			split(x(max)+"\r\n", 1),
			[]event{{max + 1, x(max), nil}},
		},
		{
			"maxLine bytes, CR, then more is too long", max,
			split(x(max)+"\r"+"y\nLIST\n", 1),
			[]event{{max + 1, "", protocol.ErrBadHeader}, {max + 7, "LIST", nil}},
		},
		{
			"maxLine bytes and CRCRLF is too long", max,
			chunks(x(max) + "\r\r\n" + "LIST\n"),
			[]event{{0, "", protocol.ErrBadHeader}, {0, "LIST", nil}},
		},
		{
			"too long, unknown header, in one chunk", max,
			chunks(x(max+1) + "\nLIST\n"),
			[]event{{0, "", protocol.ErrBadHeader}, {0, "LIST", nil}},
		},
		{
			"too long, header glued to a known one, in one chunk", max,
			chunks("LIST" + x(max-3) + "\nLIST\n"),
			[]event{{0, "", protocol.ErrBadHeader}, {0, "LIST", nil}},
		},
		{
			"too long SEND in one chunk", max,
			chunks("SEND bob " + x(max-8) + "\nLIST\n"),
			[]event{{0, "", protocol.ErrBadBody}, {0, "LIST", nil}},
		},
		{
			"too long LIST in one chunk", max,
			chunks("LIST " + x(max-4) + "\nLIST\n"),
			[]event{{0, "", protocol.ErrBadBody}, {0, "LIST", nil}},
		},
		{
			"too long HELLO-FROM in one chunk", max,
			chunks("HELLO-FROM " + x(max-10) + "\nLIST\n"),
			[]event{{0, "", protocol.ErrBadBody}, {0, "LIST", nil}},
		},
		{
			"too long SEND in small chunks, reported once as soon as it is", max,
			chunks("SEND bob ", "xxxx", "xxxx", "xxxx", "xxxx", "xx\n", "LIST\n"),
			[]event{{2, "", protocol.ErrBadBody}, {6, "LIST", nil}},
		},
		{
			"too long unknown header in small chunks", max,
			chunks("xxxx", "xxxx", "xxxx", "xxxx", "xxxx", "xxxx", "\nLIST\n"),
			[]event{{4, "", protocol.ErrBadHeader}, {6, "LIST", nil}},
		},
		{
			"too long glued header in small chunks", max,
			chunks("LISTx", "xxxx", "xxxx", "xxxx", "\n", "LIST\n"),
			[]event{{3, "", protocol.ErrBadHeader}, {5, "LIST", nil}},
		},
		{
			"too long byte by byte, reported at the first byte over", max,
			split("SEND bob "+x(max)+"\nLIST\n", 1),
			[]event{{max, "", protocol.ErrBadBody}, {max + 14, "LIST", nil}},
		},
		{
			"too long in small chunks, then its LF in the next line's chunk", max,
			chunks("SEND bob "+x(max), x(max), "x\nLIST\nLI", "ST\n"),
			[]event{{0, "", protocol.ErrBadBody}, {2, "LIST", nil}, {3, "LIST", nil}},
		},
		{
			"too long without LF, then more lines", max,
			chunks(x(max+1), x(max+1), "\n"+x(max+1)+"\n", "LIST\n"),
			[]event{{0, "", protocol.ErrBadHeader}, {2, "", protocol.ErrBadHeader}, {3, "LIST", nil}},
		},
		{
			"tiny cap: the header decides the reply however the line is cut", 2,
			chunks("SEND", " bob hi\n", "HELLO-F", "ROM a\n", "WHO", "x\n", "OK\n"),
			[]event{{1, "", protocol.ErrBadBody}, {3, "", protocol.ErrBadBody}, {5, "", protocol.ErrBadHeader}, {6, "OK", nil}},
		},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			got := feedAll(protocol.NewFramer(tc.maxLine), tc.chunks)
			if !slices.Equal(got, tc.want) {
				t.Errorf("events:\n got %v\nwant %v", got, tc.want)
			}
		})
	}
}

func TestFramerHandleStops(t *testing.T) {
	tests := []struct {
		name   string
		chunks [][]byte
		stopAt string // the handler returns false for this line or, if "", for an error
		want   []event
	}{
		{"on a line", chunks("a\nb\nc\n", "d\n"), "b", []event{{0, "a", nil}, {0, "b", nil}, {1, "d", nil}}},
		{"on a buffered line", chunks("a\nb", "\nc\n", "d\n"), "b", []event{{0, "a", nil}, {1, "b", nil}, {2, "d", nil}}},
		{"on a long line with LF", chunks("a\n"+strings.Repeat("x", 20)+"\nc\n", "d\n"), "", []event{{0, "a", nil}, {0, "", protocol.ErrBadHeader}, {1, "d", nil}}},
		{"on a long line without LF", chunks("a\n"+strings.Repeat("x", 20), "\nc\n"), "", []event{{0, "a", nil}, {0, "", protocol.ErrBadHeader}, {1, "c", nil}}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			f := protocol.NewFramer(16)
			var got []event
			for i, c := range tc.chunks {
				stopped := false
				n, ok := f.Feed(c, func(line []byte, err error) bool {
					got = append(got, event{i, string(line), err})
					stopped = string(line) == tc.stopAt && (err == nil) == (tc.stopAt != "")
					return !stopped
				})
				if ok == stopped {
					t.Errorf("chunk %d: Feed returned %t, handler stopped: %t", i, ok, stopped)
				}
				if !stopped && n != len(c) {
					t.Errorf("chunk %d: Feed took %d of %d bytes", i, n, len(c))
				}
			}
			if !slices.Equal(got, tc.want) {
				t.Errorf("events:\n got %v\nwant %v", got, tc.want)
			}
		})
	}
}

// TestFramerResumesWhereItStopped: Feed says how much it took when the
// handler stopped it, and feeding the rest later goes on from there, also
// when the stop came on a line that began in an earlier chunk and the
// rest holds the start of another.
func TestFramerResumesWhereItStopped(t *testing.T) {
	f := protocol.NewFramer(64)
	var got []string
	handle := func(line []byte, err error) bool {
		got = append(got, string(line))
		return string(line) != "stop"
	}
	if n, ok := f.Feed([]byte("a\nst"), handle); !ok || n != 4 {
		t.Fatalf("Feed = %d, %t; want 4, true", n, ok)
	}
	chunk := []byte("op\nb\nc")
	n, ok := f.Feed(chunk, handle)
	if ok || n != 3 {
		t.Fatalf("Feed = %d, %t; want 3 (through the stopping line), false", n, ok)
	}
	if n, ok := f.Feed(chunk[n:], handle); !ok || n != len(chunk)-3 {
		t.Fatalf("Feed of the rest = %d, %t", n, ok)
	}
	f.Feed([]byte("\n"), handle)
	if want := []string{"a", "stop", "b", "c"}; !slices.Equal(got, want) {
		t.Errorf("lines = %q, want %q", got, want)
	}
}

// TestFramerOverlongLineMemory feeds a 3 MiB line in 4 KiB chunks and checks
// that the Framer allocates about its cap, not the line's length: it must
// skip the rest of an overlong line, not buffer it.
func TestFramerOverlongLineMemory(t *testing.T) {
	const (
		maxLine   = 64 << 10
		lineBytes = 3 << 20
		limit     = 1 << 20 // about 2*maxLine is expected; 3 MiB if the line were kept
	)
	chunk := []byte(strings.Repeat("x", 4<<10))
	f := protocol.NewFramer(maxLine)
	events := make([]event, 0, 4)
	handle := func(line []byte, err error) bool {
		events = append(events, event{line: string(line), err: err})
		return true
	}
	var before, after runtime.MemStats
	runtime.ReadMemStats(&before)
	f.Feed([]byte("SEND bob "), handle)
	for range lineBytes / len(chunk) {
		f.Feed(chunk, handle)
	}
	f.Feed([]byte("\nLIST\n"), handle)
	runtime.ReadMemStats(&after)

	want := []event{{0, "", protocol.ErrBadBody}, {0, "LIST", nil}}
	if !slices.Equal(events, want) {
		t.Errorf("events:\n got %v\nwant %v", events, want)
	}
	if n := after.TotalAlloc - before.TotalAlloc; n > limit {
		t.Errorf("feeding a %d-byte line allocated %d bytes, want at most %d", lineBytes, n, limit)
	}
}
