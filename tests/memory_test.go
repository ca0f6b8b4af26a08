package tests

import (
	"bufio"
	"bytes"
	"fmt"
	"net"
	"strings"
	"sync"
	"testing"
	"time"

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
			t.Logf("RSS %d MiB before, %d MiB with %d connections holding %d-byte lines, %d MiB right after they closed",
				before>>20, peak>>20, conns, lineBytes, p.RSS()>>20)
			if peak-before > tc.growth {
				t.Errorf("RSS grew by %d MiB, want at most %d MiB", (peak-before)>>20, tc.growth>>20)
			}
			// Closing them makes garbage of its own (the goroutines' exits,
			// a log line each), which the server returns once it has been
			// quiet for a second (see chat's memory.go): wait for that.
			chattest.Eventually(t, "RSS after the connections closed to be no more than while they were open", func() bool {
				return p.RSS() <= peak+4<<20
			})
		})
	}
}

// TestBusyConnectionsShrinkOnceQuiet: pairs of users pass 16 KiB
// messages as fast as they can, which grows their connections' buffers
// to megabytes; once they are quiet, the server gives that memory back,
// and its RSS returns to near what the same users cost before the burst.
func TestBusyConnectionsShrinkOnceQuiet(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		engine string
		flags  []string
		within float64 // once quiet, RSS may be this many times what it was, and 2 MiB more
	}{
		{"eventloops", nil, 1.25},
		// Goroutine stacks that grew in the burst shrink only by halves,
		// one per collection; the burst itself peaks at ten times.
		{"goroutines", []string{"--no-event-loop"}, 3},
	} {
		t.Run(tc.engine, func(t *testing.T) {
			t.Parallel()
			const pairs, messages = 64, 128
			p := startProc(t, plainServerBinary(t), append([]string{"-a", "127.0.0.1", "-p", "0", "--rate", "0", "--max-users", "1000"}, tc.flags...)...)
			addr := p.ListenAddr()
			senders, receivers := make([]*chattest.Wire, pairs), make([]*chattest.Wire, pairs)
			for i := range pairs {
				senders[i] = chattest.LoggedIn(t, addr, fmt.Sprintf("s%d", i))
				receivers[i] = chattest.LoggedIn(t, addr, fmt.Sprintf("r%d", i))
			}
			idle := p.RSS()

			send := []byte(strings.Repeat("m", 16<<10))
			var wg sync.WaitGroup
			errs := make(chan error, 2*pairs)
			for i := range pairs {
				wg.Add(2)
				go func(c net.Conn) {
					defer wg.Done()
					errs <- blastAndCount(c, fmt.Appendf(nil, "SEND r%d %s\n", i, send), messages, "SEND-OK")
				}(senders[i].Conn)
				go func(c net.Conn) {
					defer wg.Done()
					errs <- blastAndCount(c, nil, messages, "DELIVERY")
				}(receivers[i].Conn)
			}
			wg.Wait()
			close(errs)
			for err := range errs {
				if err != nil {
					t.Fatal(err)
				}
			}
			peak := p.RSS()

			// Quiet now: within a few ticks the buffers go, and the memory
			// with them.
			allowed := int64(float64(idle)*tc.within) + 2<<20
			now := peak
			for deadline := time.Now().Add(10 * time.Second); now > allowed && time.Now().Before(deadline); now = p.RSS() {
				time.Sleep(50 * time.Millisecond)
			}
			t.Logf("RSS %d KiB with %d users idle, %d KiB after they passed %d MiB, %d KiB once quiet",
				idle>>10, 2*pairs, peak>>10, pairs*messages*len(send)>>20, now>>10)
			if now > allowed {
				t.Errorf("RSS %d KiB once quiet, want at most %d KiB (%d KiB before the burst)", now>>10, allowed>>10, idle>>10)
			}
		})
	}
}

// blastAndCount writes request count times, if any, while it reads lines
// until it has seen count that start with want; any other line is an
// error.
func blastAndCount(c net.Conn, request []byte, count int, want string) error {
	if request != nil {
		go func() {
			for range count {
				if _, err := c.Write(request); err != nil {
					return
				}
			}
		}()
	}
	r := bufio.NewReaderSize(c, 64<<10)
	for seen := 0; seen < count; seen++ {
		line, err := r.ReadSlice('\n')
		if err != nil {
			return fmt.Errorf("after %d %s lines: %v", seen, want, err)
		}
		if !bytes.HasPrefix(line, []byte(want)) {
			return fmt.Errorf("got %.40q, want %s", line, want)
		}
	}
	return nil
}
