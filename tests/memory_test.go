package tests

import (
	"net"
	"strings"
	"sync"
	"testing"

	"chatserver/internal/chat/chattest"
)

// TestPreLoginLinesCostLittle: 1000 connections that have not logged in
// each send a 1,000,000-byte line without its newline. Before login a
// line is capped at a few hundred bytes, so each gets one reply and the
// rest is skipped: the server's memory stays within a few MB of what it
// was (with event loops; a goroutine pair costs its stacks and a read
// buffer per connection), and does not grow once they close.
func TestPreLoginLinesCostLittle(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		engine string
		flags  []string
		growth int64 // the most RSS may grow while the connections are open
	}{
		{"eventloops", nil, 16 << 20},
		{"goroutines", []string{"--no-event-loop"}, 32 << 20},
	} {
		t.Run(tc.engine, func(t *testing.T) {
			t.Parallel()
			const conns, lineBytes = 1000, 1_000_000
			p := startProc(t, plainServerBinary(t), append([]string{"-a", "127.0.0.1", "-p", "0"}, tc.flags...)...)
			addr := p.ListenAddr()
			chattest.LoggedIn(t, addr, "alive").Conn.Close()
			before := p.RSS()

			line := []byte(strings.Repeat("x", lineBytes))
			ws := make([]*chattest.Wire, conns)
			var wg sync.WaitGroup
			errs := make(chan error, conns)
			for i := range ws {
				ws[i] = chattest.Dial(t, addr)
			}
			for i := range ws {
				wg.Add(1)
				go func(c net.Conn) {
					defer wg.Done()
					if _, err := c.Write(line); err != nil {
						errs <- err
					}
				}(ws[i].Conn)
			}
			wg.Wait()
			close(errs)
			for err := range errs {
				t.Fatalf("write: %v", err)
			}
			for _, w := range ws {
				w.Expect("BAD-RQST-HDR") // one reply, as soon as the line is known too long
			}
			peak := p.RSS()
			for _, w := range ws {
				w.Conn.Close()
			}
			after := chattest.LoggedIn(t, addr, "after")
			after.Send("LIST\n")
			after.Expect("LIST-OK after")
			t.Logf("RSS %d MiB before, %d MiB with %d connections holding %d-byte lines, %d MiB after they closed",
				before>>20, peak>>20, conns, lineBytes, p.RSS()>>20)
			if peak-before > tc.growth {
				t.Errorf("RSS grew by %d MiB, want at most %d MiB", (peak-before)>>20, tc.growth>>20)
			}
			if now := p.RSS(); now > peak+4<<20 {
				t.Errorf("RSS %d MiB after the connections closed, more than while they were open", now>>20)
			}
		})
	}
}
