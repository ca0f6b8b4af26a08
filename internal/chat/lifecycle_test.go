package chat_test

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"chatserver/internal/chat"
	"chatserver/internal/chat/chattest"
)

// startWith starts a server on engine e, with cfg changed by edit and
// prepare called on the server before it serves, on 127.0.0.1.
func startWith(t *testing.T, e chattest.Engine, edit func(*chat.Config), prepare func(*chat.Server)) *chattest.Server {
	t.Helper()
	cfg := chat.DefaultConfig()
	e.Set(&cfg)
	if edit != nil {
		edit(&cfg)
	}
	srv, err := chat.NewServer(cfg)
	if err != nil {
		t.Fatalf("NewServer: %v", err)
	}
	if prepare != nil {
		prepare(srv)
	}
	return chattest.Serve(t, srv, nil)
}

// TestHelloComesFirst: a user's first line is its HELLO, never a DELIVERY
// from a sender that saw it a moment early, with senders sending to the
// name as fast as they can while it logs in and out, on several loops and
// on goroutines.
func TestHelloComesFirst(t *testing.T) {
	chattest.EachEngine(t, true, func(t *testing.T, e chattest.Engine) {
		const rounds = 300
		s := startWith(t, e, func(c *chat.Config) {
			c.Rate = 0                   // the senders send as fast as they can
			c.MaxPendingBytes = 64 << 20 // and x reads one line only
		}, nil)
		stop := make(chan struct{})
		var wg sync.WaitGroup
		for i := range 4 {
			sender := chattest.LoggedIn(t, s.Addr, fmt.Sprintf("s%d", i))
			wg.Add(2)
			go func() { // replies are not read here: drain them
				defer wg.Done()
				_, _ = sender.R.WriteTo(discard{})
			}()
			go func() {
				defer wg.Done()
				batch := strings.Repeat("SEND x early?\n", 64)
				for {
					select {
					case <-stop:
						return
					default:
					}
					if sender.SendErr(batch) != nil {
						return
					}
				}
			}()
		}
		for i := range rounds {
			x := chattest.Dial(t, s.Addr)
			for { // the last x's logout may not be seen yet: IN-USE
				x.Send("HELLO-FROM x\n")
				first := x.Line()
				if first == "HELLO x" {
					break
				}
				if first != "IN-USE" {
					t.Fatalf("round %d: the first line after the login is %q, want HELLO x (or IN-USE)", i, first)
				}
			}
			x.Conn.Close()
		}
		close(stop)
		s.Stop() // ends the senders' connections, and so their goroutines
		wg.Wait()
	})
}

type discard struct{}

func (discard) Write(p []byte) (int, error) { return len(p), nil }

// TestRemoteAddressLoggedAlike: an IPv4 client of a dual-stack listener is
// logged as a.b.c.d on both engines.
func TestRemoteAddressLoggedAlike(t *testing.T) {
	chattest.EachEngine(t, true, func(t *testing.T, e chattest.Engine) {
		var logs syncBuffer
		cfg := chat.DefaultConfig()
		e.Set(&cfg)
		cfg.Logger = slog.New(slog.NewTextHandler(&logs, nil))
		srv, err := chat.NewServer(cfg)
		if err != nil {
			t.Fatal(err)
		}
		ln, err := net.Listen("tcp", "[::]:0")
		if err != nil {
			t.Skipf("no dual-stack listener here: %v", err)
		}
		go srv.Serve(ln)
		t.Cleanup(func() { srv.Close() })
		_, port, _ := net.SplitHostPort(ln.Addr().String())
		c := chattest.LoggedIn(t, "127.0.0.1:"+port, "alice")
		want := "remote=" + c.Conn.LocalAddr().String()
		chattest.Eventually(t, "the login to be logged", func() bool { return strings.Contains(logs.String(), "msg=login") })
		if got := logs.String(); !strings.Contains(got, want+" user=alice") {
			t.Errorf("logs have no %q:\n%s", want, got)
		}
	})
}

// syncBuffer is a bytes.Buffer for a logger on other goroutines.
type syncBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (b *syncBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

func (b *syncBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}

// TestListenerClosedByItsOwner: on both engines, Serve returns an accept
// error once the listener's owner closes it, no new client is served, and
// the connections already open go on until Shutdown.
func TestListenerClosedByItsOwner(t *testing.T) {
	chattest.EachEngine(t, true, func(t *testing.T, e chattest.Engine) {
		cfg := chat.DefaultConfig()
		e.Set(&cfg)
		srv, err := chat.NewServer(cfg)
		if err != nil {
			t.Fatal(err)
		}
		ln, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		served := make(chan error, 1)
		go func() { served <- srv.Serve(ln) }()
		alice := chattest.LoggedIn(t, ln.Addr().String(), "alice")
		ln.Close()
		select {
		case err := <-served:
			if !errors.Is(err, net.ErrClosed) {
				t.Errorf("Serve = %v, want an accept error for the closed listener", err)
			}
		case <-time.After(chattest.WaitTimeout):
			t.Fatal("Serve did not return after its listener was closed")
		}
		if c, err := net.Dial("tcp", ln.Addr().String()); err == nil {
			late := chattest.NewWire(t, c)
			late.Send("HELLO-FROM bob\n")
			if line, err := late.LineErr(); err == nil {
				t.Errorf("a client of the closed listener got %q", line)
			}
		}
		alice.Send("LIST\n")
		alice.Expect("LIST-OK alice")
		if err := srv.Shutdown(context.Background()); err != nil {
			t.Errorf("Shutdown: %v", err)
		}
		alice.ExpectEOF()
	})
}

// TestRefusalIsTheSameOnBothEngines: a connection over MaxConns is told
// BUSY and closed at once, even if it sent a request first and never
// closes its side.
func TestRefusalIsTheSameOnBothEngines(t *testing.T) {
	chattest.EachEngine(t, true, func(t *testing.T, e chattest.Engine) {
		s := startWith(t, e, func(c *chat.Config) { c.MaxConns = 1 }, nil)
		chattest.LoggedIn(t, s.Addr, "alice")
		for range 3 {
			refused := chattest.Dial(t, s.Addr)
			refused.Send("HELLO-FROM bob\n")
			refused.ExpectEOF("BUSY")
		}
		chattest.Eventually(t, "the refusals to be counted", func() bool {
			return s.Stats().Closed[chat.ReasonConnLimit] == 3
		})
	})
}

// TestCloseEndsEverythingAtOnce: Close closes every connection without
// waiting for a client that does not read, and Serve returns.
func TestCloseEndsEverythingAtOnce(t *testing.T) {
	chattest.EachEngine(t, true, func(t *testing.T, e chattest.Engine) {
		s := startWith(t, e, func(c *chat.Config) { c.Rate = 0 }, nil)
		stalled := chattest.LoggedIn(t, s.Addr, "stalled")
		_ = stalled.TCP().SetReadBuffer(4 << 10)
		sender := chattest.LoggedIn(t, s.Addr, "sender")
		sender.Send(strings.Repeat("SEND stalled "+strings.Repeat("x", 1000)+"\n", 3000)) // more than the sockets hold
		sender.Send("LIST\n")
		for sender.Line() != "LIST-OK stalled,sender" {
		}
		if err := s.Close(); err != nil {
			t.Fatalf("Close: %v", err)
		}
		if st := s.Stats(); st.Connections != 0 || st.Users != 0 {
			t.Errorf("after Close: %d connections, %d users; want none", st.Connections, st.Users)
		}
		sender.Drain()
		s.Stop()
	})
}

// TestShutdownPastItsDeadlineStillCloses: when Shutdown's context ends
// before the connections are drained, it closes them all anyway and says
// it ran out of time.
func TestShutdownPastItsDeadlineStillCloses(t *testing.T) {
	chattest.EachEngine(t, true, func(t *testing.T, e chattest.Engine) {
		s := startWith(t, e, func(c *chat.Config) {
			c.Rate = 0
			c.MaxPendingBytes = 64 << 20
		}, nil)
		stalled := chattest.LoggedIn(t, s.Addr, "stalled")
		_ = stalled.TCP().SetReadBuffer(4 << 10)
		sender := chattest.LoggedIn(t, s.Addr, "sender")
		// 30 MB for stalled: more than any socket buffers hold.
		sender.Send(strings.Repeat("SEND stalled "+strings.Repeat("x", 10000)+"\n", 3000))
		sender.Send("LIST\n")
		for sender.Line() != "LIST-OK stalled,sender" {
		}
		ctx, cancel := context.WithTimeout(context.Background(), 50*time.Millisecond)
		defer cancel()
		if err := s.Shutdown(ctx); !errors.Is(err, context.DeadlineExceeded) {
			t.Errorf("Shutdown = %v, want the deadline", err)
		}
		if st := s.Stats(); st.Connections != 0 {
			t.Errorf("after Shutdown: %d connections, want none", st.Connections)
		}
		sender.Drain() // closed too
		s.Stop()
	})
}

// TestNothingHandledAfterTheEnd: once a session is ended (as Shutdown
// ends it, from another goroutine) in the middle of a chunk of requests,
// the rest of the chunk is not handled.
func TestNothingHandledAfterTheEnd(t *testing.T) {
	chattest.EachEngine(t, true, func(t *testing.T, e chattest.Engine) {
		var seen sync.Map
		var srv *chat.Server
		s := startWith(t, e, nil, func(s *chat.Server) {
			srv = s
			s.SetTestHookLine(func(line []byte) {
				seen.Store(string(line), true)
				if string(line) == "LIST-AND-END" {
					srv.EndSessions() // this one too
				}
			})
		})
		alice := chattest.LoggedIn(t, s.Addr, "alice")
		alice.Send("LIST-AND-END\nSEND alice after the end\n")
		alice.Drain()
		if _, ok := seen.Load("SEND alice after the end"); ok {
			t.Error("the line after the end of the session was handled")
		}
		s.Stop()
	})
}

// TestWatchFailureEndsTheConnection: if an event loop cannot add a new
// connection to its epoll set, the connection ends at once, with a reason,
// and is not counted as open.
func TestWatchFailureEndsTheConnection(t *testing.T) {
	var failed atomic.Bool
	s := startWith(t, chattest.Engines[0], nil, func(s *chat.Server) {
		s.SetTestHookWatch(func() error {
			if failed.CompareAndSwap(false, true) {
				return errors.New("injected: epoll_ctl failed")
			}
			return nil
		})
	})
	if !haveEventLoops(t) {
		return
	}
	doomed := chattest.Dial(t, s.Addr)
	doomed.ExpectClosed()
	chattest.Eventually(t, "the failed connection to be closed", func() bool {
		st := s.Stats()
		return st.Closed[chat.ReasonReset] == 1 && st.Connections == 0
	})
	chattest.LoggedIn(t, s.Addr, "next") // the loop goes on
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if err := s.Shutdown(ctx); err != nil {
		t.Errorf("Shutdown: %v (a connection was left open)", err)
	}
	s.Stop()
}

// haveEventLoops reports whether this platform has event loops; the test
// is skipped where it has not.
func haveEventLoops(t *testing.T) bool {
	t.Helper()
	if !chat.HaveEventLoops {
		t.Skip("no event loops on this platform")
	}
	return true
}
