package chat_test

import (
	"bufio"
	"errors"
	"io"
	"net"
	"slices"
	"strings"
	"testing"
	"time"

	"go.uber.org/goleak"

	"chatserver/internal/chat"
	"chatserver/internal/chat/chattest"
)

func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m)
}

const replyTimeout = 10 * time.Second

// panicLine is the request the test hook panics on.
const panicLine = "PANIC"

// A panic while handling a line ends that connection only: its client
// sees the connection close, the panic is counted as an internal error,
// its name is freed, and everyone else carries on.
func TestPanicEndsOnlyItsConnection(t *testing.T) {
	t.Parallel()
	eachLink(t, func(t *testing.T, noEventLoop bool) {
		srv, addr := startPanicky(t, noEventLoop)
		alice := login(t, addr, "alice")
		bob := login(t, addr, "bob")
		mallory := login(t, addr, "mallory")

		mallory.send(panicLine + "\n")
		mallory.expectClosed()
		chattest.Eventually(t, "the panic to be counted", func() bool {
			st := srv.Stats()
			return st.Closed[chat.ReasonInternalError] == 1 && st.Users == 2
		})

		alice.send("SEND bob still up\n")
		alice.expect("SEND-OK")
		bob.expect("DELIVERY alice still up")
		alice.send("SEND mallory hi\nLIST\n")
		alice.expect("BAD-DEST-USER", "LIST-OK alice,bob")

		// The server still accepts, and mallory's name is free.
		again := login(t, addr, "mallory")
		again.send("SEND alice back\n")
		again.expect("SEND-OK")
		alice.expect("DELIVERY mallory back")

		// A panic before login, and one in the middle of a batch of lines.
		anon := dial(t, addr)
		anon.send(panicLine + "\n")
		anon.expectClosed()
		again.send("LIST\n" + panicLine + "\n")
		again.expectClosed("LIST-OK ")
		chattest.Eventually(t, "all three panics to be counted", func() bool {
			st := srv.Stats()
			return st.Closed[chat.ReasonInternalError] == 3 && st.Users == 2 && st.Connections == 2
		})
		bob.send("LIST\n")
		bob.expect("LIST-OK alice,bob")
		st := srv.Stats()
		for r, n := range st.Closed {
			if chat.CloseReason(r) != chat.ReasonInternalError && n != 0 {
				t.Errorf("connections closed as %v = %d, want 0", chat.CloseReason(r), n)
			}
		}
	})
}

// Many connections panicking at once leave the server whole.
func TestPanicsInParallel(t *testing.T) {
	t.Parallel()
	eachLink(t, func(t *testing.T, noEventLoop bool) {
		const n = 20
		srv, addr := startPanicky(t, noEventLoop)
		watcher := login(t, addr, "watcher")
		conns := make([]*client, n)
		for i := range conns {
			conns[i] = dial(t, addr)
		}
		for _, c := range conns {
			c.send("LIST\nHELLO-FROM x\n" + panicLine + "\n")
		}
		for _, c := range conns {
			c.expectClosed("BAD-RQST-HDR\n", "HELLO x\n", "IN-USE\n")
		}
		chattest.Eventually(t, "every panic to be counted", func() bool {
			st := srv.Stats()
			return st.Closed[chat.ReasonInternalError] == n && st.Connections == 1 && st.Users == 1
		})
		watcher.send("SEND watcher ok\n")
		watcher.expect("DELIVERY watcher ok", "SEND-OK")
		login(t, addr, "x")
	})
}

// eachLink runs test as a parallel subtest for each way the server
// carries connections: event loops (the default for TCP on Linux), and a
// goroutine pair per connection.
func eachLink(t *testing.T, test func(t *testing.T, noEventLoop bool)) {
	for _, noEventLoop := range []bool{false, true} {
		name := map[bool]string{false: "eventloop", true: "goroutines"}[noEventLoop]
		t.Run(name, func(t *testing.T) {
			t.Parallel()
			test(t, noEventLoop)
		})
	}
}

// startPanicky starts a server whose test hook panics on panicLine, and
// stops it when the test ends.
func startPanicky(t *testing.T, noEventLoop bool) (*chat.Server, string) {
	t.Helper()
	cfg := chat.DefaultConfig()
	cfg.NoEventLoop = noEventLoop
	srv, err := chat.NewServer(cfg)
	if err != nil {
		t.Fatalf("NewServer: %v", err)
	}
	srv.SetTestHookLine(func(line []byte) {
		if string(line) == panicLine {
			panic("injected by the test hook")
		}
	})
	return srv, chattest.Serve(t, srv, nil).Addr
}

// client is a raw protocol connection.
type client struct {
	t    *testing.T
	conn net.Conn
	r    *bufio.Reader
}

func dial(t *testing.T, addr string) *client {
	t.Helper()
	c, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatalf("dial: %v", err)
	}
	t.Cleanup(func() { c.Close() })
	return &client{t: t, conn: c, r: bufio.NewReader(c)}
}

func login(t *testing.T, addr, name string) *client {
	t.Helper()
	c := dial(t, addr)
	c.send("HELLO-FROM " + name + "\n")
	c.expect("HELLO " + name)
	return c
}

func (c *client) send(s string) {
	c.t.Helper()
	if _, err := c.conn.Write([]byte(s)); err != nil {
		c.t.Fatalf("write: %v", err)
	}
}

func (c *client) expect(want ...string) {
	c.t.Helper()
	for _, w := range want {
		_ = c.conn.SetReadDeadline(time.Now().Add(replyTimeout))
		got, err := c.r.ReadString('\n')
		if err != nil {
			c.t.Fatalf("read: %v (got %q), want %q", err, got, w)
		}
		if got = strings.TrimSuffix(got, "\n"); got != w {
			c.t.Fatalf("reply = %q, want %q", got, w)
		}
	}
}

// expectClosed checks that the server closes the connection. Replies to
// the lines before the fault (lines starting with one of the prefixes
// maybe) may or may not arrive first; nothing else may.
func (c *client) expectClosed(maybe ...string) {
	c.t.Helper()
	_ = c.conn.SetReadDeadline(time.Now().Add(replyTimeout))
	for {
		line, err := c.r.ReadString('\n')
		if err != nil {
			var ne net.Error
			if errors.Is(err, io.EOF) || !errors.As(err, &ne) || !ne.Timeout() {
				return
			}
			c.t.Fatalf("read: %v; want the connection closed", err)
		}
		if !slices.ContainsFunc(maybe, func(p string) bool { return strings.HasPrefix(line, p) }) {
			c.t.Fatalf("got %q; want the connection closed", line)
		}
	}
}
