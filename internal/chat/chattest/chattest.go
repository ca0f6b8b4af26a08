// Package chattest starts chat servers for tests, the way net/http/httptest
// starts HTTP servers: a real chat.Server on a real listener on
// 127.0.0.1, stopped when the test ends.
//
// Each Server runs one goroutine, the one in which chat.Server.Serve
// runs; Stop (called by the test or, at the latest, by the test's
// cleanup) shuts the server down and waits for that goroutine, so a test
// that checks for leaked goroutines sees none.
package chattest

import (
	"context"
	"errors"
	"net"
	"os"
	"slices"
	"sync"
	"testing"
	"time"

	"chatserver/internal/chat"
)

// stopTimeout bounds Stop's wait for the server to shut down. Shutdown
// normally takes milliseconds; this only turns a hang into a failure.
const stopTimeout = 10 * time.Second

// Server is a chat.Server serving on 127.0.0.1 for one test.
type Server struct {
	*chat.Server

	// Addr is the address clients dial, as "127.0.0.1:port".
	Addr string

	t        testing.TB
	served   chan error // receives what Serve returned
	stopOnce sync.Once
}

// Start starts a server with chat.DefaultConfig, on the engine
// CHAT_TEST_ENGINE names (see Engines; default: the server's own
// default), changed by edit (which may be nil). It is stopped when the
// test ends, if not before.
func Start(t testing.TB, edit func(*chat.Config)) *Server {
	t.Helper()
	cfg := chat.DefaultConfig()
	if name := os.Getenv("CHAT_TEST_ENGINE"); name != "" {
		i := slices.IndexFunc(Engines, func(e Engine) bool { return e.Name == name })
		if i < 0 {
			t.Fatalf("CHAT_TEST_ENGINE=%s: want one of eventloops, goroutines", name)
		}
		Engines[i].Set(&cfg)
	}
	if edit != nil {
		edit(&cfg)
	}
	srv, err := chat.NewServer(cfg)
	if err != nil {
		t.Fatalf("NewServer: %v", err)
	}
	return Serve(t, srv, nil)
}

// Serve serves srv, which the caller has made and configured (a test
// hook, say), on a new 127.0.0.1 listener, wrapped by wrap unless wrap is
// nil (tls.NewListener, say). It is stopped when the test ends, if not
// before.
func Serve(t testing.TB, srv *chat.Server, wrap func(net.Listener) net.Listener) *Server {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatalf("listen: %v", err)
	}
	s := &Server{Server: srv, Addr: ln.Addr().String(), t: t, served: make(chan error, 1)}
	if wrap != nil {
		ln = wrap(ln)
	}
	go func() { s.served <- srv.Serve(ln) }()
	t.Cleanup(s.Stop)
	return s
}

// Stop shuts the server down, waiting at most 10 seconds, and then waits
// for Serve to return. It reports a failed Shutdown, or Serve returning
// anything but chat.ErrServerClosed, as an error of the test. Calls after
// the first do nothing.
func (s *Server) Stop() {
	s.t.Helper()
	s.stopOnce.Do(func() {
		ctx, cancel := context.WithTimeout(context.Background(), stopTimeout)
		defer cancel()
		if err := s.Shutdown(ctx); err != nil {
			s.t.Errorf("Shutdown: %v", err)
		}
		if err := <-s.served; !errors.Is(err, chat.ErrServerClosed) {
			s.t.Errorf("Serve returned %v, want ErrServerClosed", err)
		}
	})
}

// Engine is one way a server carries plain TCP connections.
type Engine struct {
	Name string
	Set  func(*chat.Config)
}

// Engines are the server's two engines: event loops (three of them, more
// than the default on a small machine, so that connections on different
// loops hand each other messages) and a goroutine pair per connection
// (NoEventLoop, also what TLS and cluster mode use).
var Engines = []Engine{
	{"eventloops", func(c *chat.Config) { c.NoEventLoop, c.EventLoops = false, 3 }},
	{"goroutines", func(c *chat.Config) { c.NoEventLoop = true }},
}

// EachEngine runs test as a subtest for each engine, in parallel if
// parallel is set; test's server must be configured with e.Set.
func EachEngine(t *testing.T, parallel bool, test func(t *testing.T, e Engine)) {
	t.Helper()
	if parallel {
		t.Parallel()
	}
	for _, e := range Engines {
		t.Run(e.Name, func(t *testing.T) {
			if parallel {
				t.Parallel()
			}
			test(t, e)
		})
	}
}

// WaitTimeout bounds Eventually: it only turns a hang into a failure.
const WaitTimeout = 10 * time.Second

// Eventually retries check until it returns true, and fails the test if it
// has not within WaitTimeout. It is for state a test cannot see on its own
// connection, such as another client's close being noticed by the server;
// everything a reply can show, tests wait for by reading the reply.
func Eventually(t testing.TB, what string, check func() bool) {
	t.Helper()
	EventuallyWithin(t, WaitTimeout, what, check)
}

// EventuallyWithin is Eventually with its own bound, for state that takes
// a known long time to come about.
func EventuallyWithin(t testing.TB, timeout time.Duration, what string, check func() bool) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for !check() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(5 * time.Millisecond)
	}
}
