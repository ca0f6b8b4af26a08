// Package natstest runs NATS servers with JetStream inside a test process
// (one, or a routed cluster of several), stops and restarts them, and
// puts a TCP proxy between a client and NATS that can delay, hold, cut
// and reset the link. Only tests import it, so the chat server's binary
// does not link nats-server.
package natstest

import (
	"fmt"
	"net"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"
)

// readyTimeout bounds how long a server may take to accept clients, and a
// cluster to elect its JetStream leader.
const readyTimeout = 30 * time.Second

// Server is a NATS server run in the test process. It can be stopped and
// started again on the same port with the same storage, as a restarted
// NATS server would be. It is stopped when the test ends.
type Server struct {
	t    testing.TB
	opts server.Options

	mu  sync.Mutex
	srv *server.Server // guarded by mu; nil while stopped
}

// Option changes a server's options before it starts.
type Option func(*server.Options)

// MaxPayload sets the server's max_payload.
func MaxPayload(n int32) Option {
	return func(o *server.Options) { o.MaxPayload = n }
}

// WithoutJetStream runs the server without JetStream.
func WithoutJetStream() Option {
	return func(o *server.Options) { o.JetStream = false }
}

// Run starts a NATS server with JetStream, storing in a temporary
// directory, on a free loopback port, with NATS's defaults (max payload
// 1 MiB) unless opts change them.
func Run(t testing.TB, opts ...Option) *Server {
	t.Helper()
	o := baseOptions(t)
	for _, opt := range opts {
		opt(&o)
	}
	s := &Server{t: t, opts: o}
	s.Start()
	t.Cleanup(s.Stop)
	return s
}

// Start starts the server, if it is stopped, and waits until it accepts
// clients.
func (s *Server) Start() {
	s.t.Helper()
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.srv != nil {
		return
	}
	opts := s.opts
	srv, err := server.NewServer(&opts)
	if err != nil {
		s.t.Fatalf("nats server: %v", err)
	}
	srv.Start()
	if !srv.ReadyForConnections(readyTimeout) {
		s.t.Fatalf("nats server not ready in %v", readyTimeout)
	}
	s.srv = srv
}

// Stop shuts the server down; its clients see it go away.
func (s *Server) Stop() {
	s.mu.Lock()
	srv := s.srv
	s.srv = nil
	s.mu.Unlock()
	if srv != nil {
		srv.Shutdown()
		srv.WaitForShutdown()
	}
}

// URL is the nats:// URL of the server.
func (s *Server) URL() string { return "nats://" + s.Addr() }

// Addr is the server's host:port.
func (s *Server) Addr() string { return fmt.Sprintf("%s:%d", s.opts.Host, s.opts.Port) }

// Name is the server's name in its cluster.
func (s *Server) Name() string { return s.opts.ServerName }

// Running returns the running server, or nil while it is stopped.
func (s *Server) Running() *server.Server {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.srv
}

// Cluster is several NATS servers with JetStream, routed to each other.
type Cluster struct {
	Nodes []*Server
}

// baseOptions are every test NATS server's: on 127.0.0.1, a free port,
// JetStream in the test's temporary directory, no logs, no signals.
func baseOptions(t testing.TB) server.Options {
	return server.Options{
		Host:      "127.0.0.1",
		Port:      freePort(t),
		JetStream: true,
		StoreDir:  t.TempDir(),
		NoLog:     true,
		NoSigs:    true,
	}
}

// RunCluster starts n routed NATS servers with JetStream, changed by
// opts, and waits until JetStream has a leader.
func RunCluster(t testing.TB, n int, opts ...Option) *Cluster {
	t.Helper()
	routePorts := make([]int, n)
	for i := range routePorts {
		routePorts[i] = freePort(t)
	}
	c := &Cluster{}
	for i := range n {
		var routes []string
		for j, p := range routePorts {
			if j != i {
				routes = append(routes, fmt.Sprintf("nats://127.0.0.1:%d", p))
			}
		}
		o := baseOptions(t)
		o.ServerName = fmt.Sprintf("nats-%d", i)
		o.Cluster = server.ClusterOpts{Name: "test", Host: "127.0.0.1", Port: routePorts[i]}
		o.Routes = server.RoutesFromStr(strings.Join(routes, ","))
		for _, opt := range opts {
			opt(&o)
		}
		s := &Server{t: t, opts: o}
		s.Start()
		t.Cleanup(s.Stop)
		c.Nodes = append(c.Nodes, s)
	}
	c.WaitForLeader()
	return c
}

// URLs is the comma-separated URLs of every node, as --nats-url takes them.
func (c *Cluster) URLs() string {
	urls := make([]string, len(c.Nodes))
	for i, s := range c.Nodes {
		urls[i] = s.URL()
	}
	return strings.Join(urls, ",")
}

// WaitForLeader waits until a running node is JetStream's meta leader.
func (c *Cluster) WaitForLeader() {
	t := c.Nodes[0].t
	t.Helper()
	deadline := time.Now().Add(readyTimeout)
	for time.Now().Before(deadline) {
		for _, s := range c.Nodes {
			if srv := s.Running(); srv != nil && srv.JetStreamIsLeader() {
				return
			}
		}
		time.Sleep(50 * time.Millisecond)
	}
	t.Fatalf("no JetStream leader in %v", readyTimeout)
}

// StreamLeader returns the node that leads stream in the global account,
// or nil if none does now.
func (c *Cluster) StreamLeader(stream string) *Server {
	for _, s := range c.Nodes {
		if srv := s.Running(); srv != nil && srv.JetStreamIsStreamLeader(server.DEFAULT_GLOBAL_ACCOUNT, stream) {
			return s
		}
	}
	return nil
}

// Connect connects to url with settings fit for tests: quick reconnects,
// forever, and only to the servers in url (not to those a NATS cluster
// tells about), so a proxy in url is the client's only link. The
// connection is closed when the test ends.
func Connect(t testing.TB, url string) *nats.Conn {
	t.Helper()
	nc, err := nats.Connect(url, nats.MaxReconnects(-1), nats.ReconnectWait(100*time.Millisecond), nats.ReconnectJitter(0, 0), nats.ReconnectBufSize(-1), nats.IgnoreDiscoveredServers())
	if err != nil {
		t.Fatalf("connect to nats: %v", err)
	}
	t.Cleanup(nc.Close)
	return nc
}

// freePort returns a loopback port that was free a moment ago. A server
// that restarts needs the same port, so it cannot ask for port 0.
func freePort(t testing.TB) int {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	return ln.Addr().(*net.TCPAddr).Port
}
