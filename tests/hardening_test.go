package tests

// Hardening: slow consumers, limits and hostile input, with nothing lost.

import (
	"bufio"
	"bytes"
	"fmt"
	"math/rand/v2"
	"slices"
	"strings"
	"testing"
	"time"

	"chatserver/internal/chat"
	"chatserver/internal/chat/chattest"
)

// A recipient that never reads, flooded with large messages, is closed as
// a slow consumer and its name freed, while the sender keeps getting
// replies, other users keep talking, and the server's memory stays
// bounded.
func TestSlowConsumerFlooded(t *testing.T) {
	// Not in parallel: it measures the heap of the whole test process,
	// where other tests run NATS servers.
	eachLink(t, false, func(t *testing.T, start serverStarter) {
		const (
			msgBytes     = 64 << 10
			floodMsgs    = 1600 // 100 MiB
			window       = 8    // requests the flooder has in flight
			floodTimeout = 60 * time.Second
			heapBound    = 256 << 20
		)
		srv, addr := start(t, func(c *chat.Config) {
			c.MaxLineBytes = 128 << 10
			c.MaxPendingBytes = 1 << 20
			c.WriteTimeout = 2 * time.Second
			c.Rate = 0 // the sender floods faster than flood control lets anyone
		})
		stalled := chattest.LoggedIn(t, addr, "stalled") // never reads from here on
		flooder := chattest.LoggedIn(t, addr, "flooder")
		stopPairs := startPairs(t, addr, "pair", 3)

		line := []byte("SEND stalled " + strings.Repeat("x", msgBytes) + "\n")
		stopWatch := heapWatch()
		deadline := time.Now().Add(floodTimeout)
		var sent, got, sendOK, badDest int
		var replyAtOverflow int
		for got < sent || sent < floodMsgs && time.Now().Before(deadline) {
			for sent < floodMsgs && sent-got < window && time.Now().Before(deadline) {
				_ = flooder.Conn.SetWriteDeadline(deadline)
				if _, err := flooder.Conn.Write(line); err != nil {
					t.Fatalf("flooder write %d: %v", sent, err)
				}
				sent++
			}
			switch reply := flooder.Line(); reply {
			case "SEND-OK":
				if badDest > 0 {
					t.Fatalf("reply %d = SEND-OK after %d BAD-DEST-USER: the stalled user came back", got, badDest)
				}
				sendOK++
			case "BAD-DEST-USER":
				if badDest == 0 {
					replyAtOverflow = got
				}
				badDest++
			default:
				t.Fatalf("flooder reply %d = %.100q, want SEND-OK or BAD-DEST-USER", got, reply)
			}
			got++
		}
		peak := stopWatch()
		rounds := stopPairs()

		t.Logf("flood: %d messages (%d MiB), %d SEND-OK then %d BAD-DEST-USER (first at reply %d); peak HeapInuse %d MiB; pair rounds %v",
			sent, sent*len(line)>>20, sendOK, badDest, replyAtOverflow, peak>>20, rounds)
		if sent < floodMsgs {
			t.Errorf("flood stopped by its %v time bound after %d of %d messages", floodTimeout, sent, floodMsgs)
		}
		if sendOK == 0 || badDest == 0 {
			t.Errorf("flooder got %d SEND-OK and %d BAD-DEST-USER; want SEND-OK until the overflow, then BAD-DEST-USER", sendOK, badDest)
		}
		if peak > heapBound {
			t.Errorf("peak HeapInuse = %d MiB while flooding, want under %d MiB", peak>>20, heapBound>>20)
		}
		for i, r := range rounds {
			if r < 2 {
				t.Errorf("pair %d did %d rounds during the flood; others must keep talking", i, r)
			}
		}

		expectClosed(t, srv, map[chat.CloseReason]uint64{chat.ReasonSlowConsumer: 1})
		stalled.Drain()
		chattest.Eventually(t, "the stalled user to leave LIST", func() bool {
			return !slices.Contains(listNames(flooder), "stalled")
		})
		again := chattest.LoggedIn(t, addr, "stalled")
		again.Send("SEND flooder back\n")
		again.Expect("SEND-OK")
		flooder.Expect("DELIVERY stalled back")
		if names := listNames(flooder); names[len(names)-1] != "stalled" {
			t.Errorf("LIST = %v, want the new stalled last", names)
		}
		expectClosed(t, srv, map[chat.CloseReason]uint64{chat.ReasonSlowConsumer: 1})
	})
}

// A client that sends requests but never reads its own replies is closed
// as a slow consumer, whatever fills its queue; the others do not notice.
func TestSlowConsumerOwnReplies(t *testing.T) {
	eachLink(t, true, func(t *testing.T, start serverStarter) {
		// 13 other users with 64-byte names make each LIST-OK about 1 KiB.
		long := func(i int) string { return fmt.Sprintf("%02d%s", i, strings.Repeat("n", 62)) }
		for _, tc := range []struct {
			name    string
			request string
			max     int // requests at most
		}{
			{"LIST", "LIST\n", 200_000},
			{"self-send", "SEND lazy " + strings.Repeat("s", 60<<10) + "\n", 2_000},
		} {
			t.Run(tc.name, func(t *testing.T) {
				t.Parallel()
				srv, addr := start(t, func(c *chat.Config) {
					c.MaxLineBytes = 64 << 10
					c.MaxPendingBytes = 256 << 10
					c.WriteTimeout = 2 * time.Second
					c.Rate = 0 // the client floods faster than flood control lets anyone
				})
				var watchers []*chattest.Wire
				for i := range 13 {
					watchers = append(watchers, chattest.LoggedIn(t, addr, long(i)))
				}
				lazy := chattest.LoggedIn(t, addr, "lazy")
				// A small window, so that what the lazy client leaves unread
				// fills the sockets soon, also where LIST is slow (cluster
				// mode: a NATS request each).
				_ = lazy.TCP().SetReadBuffer(16 << 10)
				stopPairs := startPairs(t, addr, "p", 1)

				// Many requests per write, so the loop is short.
				batch := []byte(strings.Repeat(tc.request, max(1, 32<<10/len(tc.request))))
				perBatch := bytes.Count(batch, []byte("\n"))
				deadline := time.Now().Add(30 * time.Second)
				requests := 0
				for requests < tc.max && time.Now().Before(deadline) && closedBy(srv, chat.ReasonSlowConsumer) == 0 {
					_ = lazy.Conn.SetWriteDeadline(deadline)
					if _, err := lazy.Conn.Write(batch); err != nil {
						break // the server has closed it
					}
					requests += perBatch
				}
				// In cluster mode each LIST is a NATS request, and thousands
				// must be answered before the unread replies fill the
				// sockets: on loaded cores that takes longer than
				// chattest.Eventually waits.
				chattest.EventuallyWithin(t, time.Minute, "the lazy client to be closed as a slow consumer", func() bool {
					return closedBy(srv, chat.ReasonSlowConsumer) == 1
				})
				rounds := stopPairs()
				t.Logf("%d requests sent; pair rounds %v", requests, rounds)
				lazy.Drain()

				chattest.Eventually(t, "lazy to leave LIST", func() bool {
					return !slices.Contains(listNames(watchers[0]), "lazy")
				})
				want := []string{}
				for i := range 13 {
					want = append(want, long(i))
				}
				want = append(want, "p-a0", "p-b0")
				if got := listNames(watchers[12]); !slices.Equal(got, want) {
					t.Errorf("LIST = %v, want %v", got, want)
				}
				listNames(chattest.LoggedIn(t, addr, "lazy")) // the slot was freed: 16 users again
				expectClosed(t, srv, map[chat.CloseReason]uint64{chat.ReasonSlowConsumer: 1})
			})
		}
	})
}

// A client that reads slowly but steadily is not a slow consumer: its
// queue stays under MaxPendingBytes and its socket never stops taking
// bytes for anywhere near WriteTimeout, so it gets every reply, however
// long the whole backlog takes to drain.
func TestSteadyReaderIsNotASlowConsumer(t *testing.T) {
	eachLink(t, true, func(t *testing.T, start serverStarter) {
		// Reading everything takes about five seconds, well past the write
		// timeout, while the socket never goes two seconds without taking
		// bytes, even on a loaded machine.
		const (
			lists     = 20_000 // about 19.5 MiB of replies
			readChunk = 32 << 10
			readGap   = 8 * time.Millisecond // at most 4 MiB/s, never idle longer
		)
		srv, addr := start(t, func(c *chat.Config) {
			c.WriteTimeout = 2 * time.Second
			c.MaxPendingBytes = 32 << 20 // the backlog fits
			c.Rate = 0                   // 20,000 requests at once
		})
		// 14 users with 64-byte names make each LIST-OK about 1 KiB.
		for i := range 14 {
			chattest.LoggedIn(t, addr, fmt.Sprintf("%02d%s", i, strings.Repeat("n", 62)))
		}
		reader := chattest.Dial(t, addr)
		// A small receive buffer keeps the backlog in the server's queue
		// rather than in the kernel.
		if err := reader.TCP().SetReadBuffer(64 << 10); err != nil {
			t.Fatalf("SetReadBuffer: %v", err)
		}
		reader.R = bufio.NewReaderSize(pacedReader{r: reader.Conn, chunk: readChunk, gap: readGap}, 1<<16)
		reader.Login("reader")

		reader.Send(strings.Repeat("LIST\n", lists))
		began := time.Now()
		for i := range lists {
			got, err := reader.LineErr()
			if err != nil {
				took := time.Since(began).Round(time.Millisecond)
				chattest.Eventually(t, "the reader's connection to be counted", func() bool { return srv.Stats().Connections == 14 })
				t.Fatalf("the server closed a client that was reading steadily: at reply %d of %d, after %v of reading: %.120v; closed by reason %v",
					i, lists, took, err, srv.Stats().Closed)
			}
			if !strings.HasPrefix(got, "LIST-OK 00") {
				t.Fatalf("reply %d = %.100q, want LIST-OK", i, got)
			}
		}
		t.Logf("read %d replies in %v", lists, time.Since(began).Round(time.Millisecond))
		expectClosed(t, srv, nil)
	})
}

// A line over the cap gets exactly one reply, its rest is skipped, and the
// connection goes on with the next line.
func TestLineCapDefault(t *testing.T) {
	eachLink(t, true, func(t *testing.T, start serverStarter) {
		srv, addr := start(t, nil)
		const huge = 3 << 20
		alice := chattest.LoggedIn(t, addr, "alice")
		bob := chattest.LoggedIn(t, addr, "bob")

		alice.Send("SEND bob " + strings.Repeat("x", huge) + "\nLIST\n")
		alice.Expect("BAD-RQST-BODY", "LIST-OK alice,bob")

		alice.Send(strings.Repeat("X", huge) + "\nSEND bob after the long lines\n")
		alice.Expect("BAD-RQST-HDR", "SEND-OK")

		// CRLF, and the line split over many writes.
		long := "SEND bob " + strings.Repeat("y", huge) + "\r\n"
		for len(long) > 0 {
			n := min(len(long), 100_000)
			alice.Send(long[:n])
			long = long[n:]
		}
		alice.Send("SEND alice me\n")
		alice.Expect("BAD-RQST-BODY", "DELIVERY alice me", "SEND-OK")

		// Nothing of the long lines reached bob.
		bob.Expect("DELIVERY alice after the long lines")
		bob.Send("LIST\n")
		bob.Expect("LIST-OK alice,bob")

		// Before login: a known header is BAD-RQST-BODY whatever the state.
		carol := chattest.Dial(t, addr)
		carol.Send("HELLO-FROM " + strings.Repeat("c", huge) + "\nHELLO-FROM carol\n")
		carol.Expect("BAD-RQST-BODY", "HELLO carol")
		expectClosed(t, srv, nil)
	})
}

// With a small cap, the cap is exact: MaxLineBytes bytes are fine, one
// more is not, and a "\r" before the "\n" does not count.
func TestLineCapSmall(t *testing.T) {
	eachLink(t, true, func(t *testing.T, start serverStarter) {
		const capBytes = 100
		_, addr := start(t, func(c *chat.Config) { c.MaxLineBytes = capBytes })
		alice := chattest.LoggedIn(t, addr, "alice")
		head := "SEND alice "
		msg100 := strings.Repeat("m", capBytes-len(head))
		line100 := head + msg100
		if len(line100) != capBytes {
			t.Fatalf("test bug: line is %d bytes", len(line100))
		}

		alice.Send(line100 + "\n")
		alice.Expect("DELIVERY alice "+msg100, "SEND-OK")
		alice.Send(line100 + "m\n")
		alice.Expect("BAD-RQST-BODY")
		alice.Send(line100 + "\r\n")
		alice.Expect("DELIVERY alice "+msg100, "SEND-OK")
		alice.Send(line100 + "\r\r\n") // the line is line100 + "\r": one over
		alice.Expect("BAD-RQST-BODY")
		alice.Send(strings.Repeat("Z", capBytes+1) + "\n")
		alice.Expect("BAD-RQST-HDR")

		// The same at the edges of writes.
		alice.Send(line100 + "\r")
		alice.Send("\n")
		alice.Expect("DELIVERY alice "+msg100, "SEND-OK")
		alice.Send(line100)
		alice.Send("m")
		alice.Send("\nLIST\n")
		alice.Expect("BAD-RQST-BODY", "LIST-OK alice")
	})
}

// Binary garbage, NUL bytes and invalid UTF-8 get the protocol's error
// replies, line by line, and the connection still logs in afterwards.
func TestGarbageInput(t *testing.T) {
	eachLink(t, true, func(t *testing.T, start serverStarter) {
		srv, addr := start(t, nil)
		bob := chattest.LoggedIn(t, addr, "bob")
		w := chattest.Dial(t, addr)

		check := func(who *chattest.Wire, cases [][2]string) {
			t.Helper()
			var in strings.Builder
			for _, c := range cases {
				in.WriteString(c[0] + "\n")
			}
			who.Send(in.String())
			for _, c := range cases {
				if got := who.Line(); got != c[1] {
					t.Errorf("reply to %q = %q, want %q", c[0], got, c[1])
				}
			}
		}
		const hdr, body = "BAD-RQST-HDR", "BAD-RQST-BODY"
		check(w, [][2]string{
			{"\x00", hdr},
			{"\x00\x00\x00LIST", hdr},
			{"LIST\x00", hdr},
			{"LIST\x00 x", hdr},
			{"\xff\xfe\xfd", hdr},
			{"\r", hdr},
			{"LIST\r\r", hdr},
			{"SEND bob hi", hdr},
			{"HELLO-FROM\x00 bob", hdr},
			{"HELLO-FROM \x00", body},
			{"HELLO-FROM a\x00b", body},
			{"HELLO-FROM \xff\xfe", body},
			{"HELLO-FROM \xc3\x28", body},
			{"HELLO-FROM \xed\xa0\x80", body}, // a UTF-16 surrogate
			{"HELLO-FROM a\x7f", body},
			{"HELLO-FROM a\u200bb", body}, // zero-width space: a format character
			{"HELLO-FROM \x1b[31mred", body},
			{"HELLO-FROM bob", "IN-USE"},
		})

		// Random bytes, cut into lines. A line whose header happens to be a
		// command is spoilt, so every reply must be BAD-RQST-HDR.
		rng := rand.New(rand.NewPCG(7, 7))
		random := randomGarbageLines(rng, 300)
		var in strings.Builder
		for _, l := range random {
			in.WriteString(l + "\n")
		}
		in.WriteString("HELLO-FROM mallory\n")
		writeInPieces(t, w, rng, in.String())
		for i, l := range random {
			if got := w.Line(); got != hdr {
				t.Fatalf("reply to random line %d %q = %q, want %q", i, l, got, hdr)
			}
		}
		w.Expect("HELLO mallory")

		check(w, [][2]string{
			{"SEND bob a\x00b", body},
			{"SEND bob \x00", body},
			{"SEND bob \xff", body},
			{"SEND bob \xc3\x28", body},
			{"SEND bob a\rb", body},
			{"SEND b\x00b hi", body},
			{"SEND \xffbob hi", body},
			{"SEND bob\x00 hi", body},
			{"HELLO-FROM \xff", hdr},
			{"\xff LIST", hdr},
			{"SEND bob tab\there\x01", "SEND-OK"}, // control characters other than NUL and CR are allowed
			{"SEND bob \xe2\x82\xac euro", "SEND-OK"},
		})
		random = randomGarbageLines(rng, 300)
		in.Reset()
		for _, l := range random {
			in.WriteString(l + "\n")
		}
		in.WriteString("SEND bob end\nLIST\n")
		writeInPieces(t, w, rng, in.String())
		for i, l := range random {
			if got := w.Line(); got != hdr {
				t.Fatalf("reply to random line %d %q = %q, want %q", i, l, got, hdr)
			}
		}
		w.Expect("SEND-OK", "LIST-OK bob,mallory")
		bob.Expect(
			"DELIVERY mallory tab\there\x01",
			"DELIVERY mallory \xe2\x82\xac euro",
			"DELIVERY mallory end",
		)
		expectClosed(t, srv, nil)
	})
}

// randomGarbageLines returns n random lines of up to 200 bytes of any
// value but "\n", none of which has a command as its header.
func randomGarbageLines(rng *rand.Rand, n int) []string {
	lines := make([]string, n)
	for i := range lines {
		b := make([]byte, rng.IntN(200))
		for j := range b {
			for b[j] = byte(rng.Uint32()); b[j] == '\n'; b[j] = byte(rng.Uint32()) {
			}
		}
		header, _, _ := bytes.Cut(bytes.TrimSuffix(b, []byte("\r")), []byte(" "))
		switch string(header) {
		case "HELLO-FROM", "LIST", "SEND":
			b = append([]byte{0}, b...)
		}
		lines[i] = string(b)
	}
	return lines
}

// writeInPieces writes s in random-sized writes.
func writeInPieces(t *testing.T, w *chattest.Wire, rng *rand.Rand, s string) {
	t.Helper()
	for len(s) > 0 {
		n := min(len(s), 1+rng.IntN(700))
		w.Send(s[:n])
		s = s[n:]
	}
}

// Hundreds of connections that never log in do not keep a new user from
// logging in and talking.
func TestManyIdleConnections(t *testing.T) {
	eachLink(t, true, func(t *testing.T, start serverStarter) {
		const idle = 500
		srv, addr := start(t, nil) // the default MaxConns, 1024, is enough
		conns := make([]*chattest.Wire, idle)
		for i := range conns {
			conns[i] = chattest.Dial(t, addr)
		}
		chattest.Eventually(t, "all idle connections to be served", func() bool {
			return srv.Stats().Connections == idle
		})
		alice := chattest.LoggedIn(t, addr, "alice")
		bob := chattest.LoggedIn(t, addr, "bob")
		alice.Send("SEND bob hello through the crowd\n")
		alice.Expect("SEND-OK")
		bob.Expect("DELIVERY alice hello through the crowd")
		bob.Send("LIST\n")
		bob.Expect("LIST-OK alice,bob")

		// The idle ones are still there and still served.
		conns[0].Send("LIST\n")
		conns[0].Expect("BAD-RQST-HDR")
		conns[idle-1].Login("late")
		if st := srv.Stats(); st.Connections != idle+2 || st.Users != 3 {
			t.Errorf("stats = %d connections, %d users; want %d and 3", st.Connections, st.Users, idle+2)
		}
		expectClosed(t, srv, nil)
	})
}

// Over MaxConns a connection is told BUSY and closed, and counted; once a
// connection closes there is room again.
func TestConnectionLimit(t *testing.T) {
	eachLink(t, true, func(t *testing.T, start serverStarter) {
		srv, addr := start(t, func(c *chat.Config) { c.MaxConns = 3 })
		a := chattest.LoggedIn(t, addr, "a")
		b := chattest.LoggedIn(t, addr, "b")
		c := chattest.Dial(t, addr)
		c.Send("LIST\n")
		c.Expect("BAD-RQST-HDR") // admitted, not logged in

		d := chattest.Dial(t, addr)
		d.ExpectEOF("BUSY")
		d.Conn.Close()
		chattest.Eventually(t, "the refusal to be counted", func() bool {
			return closedBy(srv, chat.ReasonConnLimit) == 1
		})
		if n := srv.Stats().Connections; n != 3 {
			t.Errorf("connections = %d, want 3", n)
		}

		a.Conn.Close()
		chattest.Eventually(t, "a's connection to be gone", func() bool {
			return srv.Stats().Connections == 2
		})
		e := chattest.LoggedIn(t, addr, "e")
		e.Send("SEND b hi\n")
		e.Expect("SEND-OK")
		b.Expect("DELIVERY e hi")

		f := chattest.Dial(t, addr)
		f.ExpectEOF("BUSY")
		f.Conn.Close()
		chattest.Eventually(t, "the second refusal to be counted", func() bool {
			return closedBy(srv, chat.ReasonConnLimit) == 2
		})
		b.Send("LIST\n")
		b.Expect("LIST-OK b,e")
		c.Login("c")
		expectClosed(t, srv, map[chat.CloseReason]uint64{
			chat.ReasonConnLimit:    2,
			chat.ReasonClientClosed: 1,
		})
	})
}

// A connection that does not log in within LoginTimeout is closed, failed
// attempts or not; one that logged in in time stays.
//
// Not parallel: it is about time passing, and a 300 ms timeout should not
// race the CPU-heavy tests.
func TestLoginTimeout(t *testing.T) {
	eachLink(t, false, func(t *testing.T, start serverStarter) {
		const timeout = 300 * time.Millisecond
		srv, addr := start(t, func(c *chat.Config) { c.LoginTimeout = timeout })
		began := time.Now()
		alice := chattest.LoggedIn(t, addr, "alice")
		idle := chattest.Dial(t, addr)
		trying := chattest.Dial(t, addr)
		trying.Send("LIST\nHELLO-FROM a b\nHELLO-FROM alice\nHELLO-FR")
		trying.Expect("BAD-RQST-HDR", "BAD-RQST-BODY", "IN-USE")

		idle.ExpectEOF()
		trying.ExpectEOF()
		chattest.Eventually(t, "both timeouts to be counted", func() bool {
			return closedBy(srv, chat.ReasonLoginTimeout) == 2
		})

		// Past the timeout for alice too, with room to spare.
		time.Sleep(time.Until(began.Add(3 * timeout)))
		alice.Send("LIST\n")
		alice.Expect("LIST-OK alice")
		if st := srv.Stats(); st.Connections != 1 || st.Users != 1 {
			t.Errorf("stats = %d connections, %d users; want 1 and 1", st.Connections, st.Users)
		}
		expectClosed(t, srv, map[chat.CloseReason]uint64{chat.ReasonLoginTimeout: 2})
	})
}

// Users who log in and then drop, by close or by reset, leave nothing
// behind: every name and every slot is free again.
func TestLoginAndDropLeavesNoUser(t *testing.T) {
	eachLink(t, true, func(t *testing.T, start serverStarter) {
		const n = 300
		srv, addr := start(t, func(c *chat.Config) { c.MaxUsers = n })
		name := func(i int) string { return fmt.Sprintf("u%03d", i) }
		loginAll := func() []*chattest.Wire {
			ws := make([]*chattest.Wire, n)
			for i := range ws {
				ws[i] = chattest.Dial(t, addr)
				ws[i].Send("HELLO-FROM " + name(i) + "\n")
			}
			for i, w := range ws {
				w.Expect("HELLO " + name(i))
			}
			return ws
		}

		ws := loginAll()
		if st := srv.Stats(); st.Users != n {
			t.Fatalf("users = %d, want %d", st.Users, n)
		}
		for i, w := range ws {
			if i%2 == 0 {
				w.Conn.Close()
			} else {
				w.Reset()
			}
		}
		chattest.Eventually(t, "every user and connection to be gone", func() bool {
			st := srv.Stats()
			return st.Users == 0 && st.Connections == 0
		})
		expectClosed(t, srv, map[chat.CloseReason]uint64{
			chat.ReasonClientClosed: n / 2,
			chat.ReasonReset:        n / 2,
		})

		ws = loginAll() // all of them: every slot was freed too
		got := listNames(ws[0])
		want := make([]string, n)
		for i := range want {
			want[i] = name(i)
		}
		slices.Sort(got)
		if !slices.Equal(got, want) {
			t.Errorf("LIST after logging in again = %v, want %v", got, want)
		}
	})
}

// A client that closes its write side still gets every reply to what it
// sent before, and every delivery acknowledged before; bytes after its
// last "\n" are not a request.
func TestHalfClosedClientGetsAllReplies(t *testing.T) {
	eachLink(t, true, func(t *testing.T, start serverStarter) {
		const lists = 20_000                                       // about 340 KB of replies, more than socket buffers hold
		srv, addr := start(t, func(c *chat.Config) { c.Rate = 0 }) // all at once
		alice := chattest.LoggedIn(t, addr, "alice")
		bob := chattest.LoggedIn(t, addr, "bob")

		alice.Send("SEND bob hi\nSEND alice me\nWHO\n" + strings.Repeat("LIST\n", lists) + "SEND bob last\nLIST")
		if err := alice.TCP().CloseWrite(); err != nil {
			t.Fatalf("CloseWrite: %v", err)
		}
		alice.Expect("SEND-OK", "DELIVERY alice me", "SEND-OK", "BAD-RQST-HDR")
		for i := range lists {
			if got := alice.Line(); got != "LIST-OK alice,bob" {
				t.Fatalf("reply to LIST %d = %q", i, got)
			}
		}
		alice.ExpectEOF("SEND-OK")
		bob.Expect("DELIVERY alice hi", "DELIVERY alice last")
		chattest.Eventually(t, "alice to be logged out", func() bool { return srv.Stats().Users == 1 })
		bob.Send("LIST\n")
		bob.Expect("LIST-OK bob")

		// Deliveries acknowledged before a recipient half-closes reach it.
		const msgs = 2_000
		carol := chattest.LoggedIn(t, addr, "carol")
		var in strings.Builder
		for i := range msgs {
			fmt.Fprintf(&in, "SEND bob m%d\n", i)
		}
		carol.Send(in.String())
		for range msgs {
			carol.Expect("SEND-OK")
		}
		if err := bob.TCP().CloseWrite(); err != nil {
			t.Fatalf("CloseWrite: %v", err)
		}
		for i := range msgs {
			bob.Expect(fmt.Sprintf("DELIVERY carol m%d", i))
		}
		bob.ExpectEOF()
		expectClosed(t, srv, map[chat.CloseReason]uint64{chat.ReasonClientClosed: 2})
	})
}

// A client that resets in the middle of a line affects no one: its half
// line is not delivered and its name is free.
func TestResetMidLine(t *testing.T) {
	eachLink(t, true, func(t *testing.T, start serverStarter) {
		srv, addr := start(t, nil)
		bob := chattest.LoggedIn(t, addr, "bob")
		carol := chattest.LoggedIn(t, addr, "carol")
		alice := chattest.LoggedIn(t, addr, "alice")
		mallory := chattest.LoggedIn(t, addr, "mallory")

		alice.Send("SEND bob this line never ends")
		mallory.Send("SEND bob " + strings.Repeat("z", 200<<10)) // spans many reads
		alice.Reset()
		mallory.Reset()
		chattest.Eventually(t, "alice and mallory to be gone", func() bool { return srv.Stats().Users == 2 })

		carol.Send("SEND bob after the resets\n")
		carol.Expect("SEND-OK")
		bob.Expect("DELIVERY carol after the resets") // the first thing bob sees
		bob.Send("LIST\n")
		bob.Expect("LIST-OK bob,carol")
		chattest.LoggedIn(t, addr, "alice")
		chattest.LoggedIn(t, addr, "mallory")
		expectClosed(t, srv, map[chat.CloseReason]uint64{chat.ReasonReset: 2})
	})
}
