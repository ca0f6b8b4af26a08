// Package chat is the chat server: it accepts connections, runs a session
// for each, and keeps its logged-in users in a registry. In cluster mode
// (Config.Cluster) it meets the users of other servers through a Cluster
// (cluster.go); a SEND between two users of one server never leaves it.
//
// Goroutines. A session is carried by a link. On Linux, plain TCP
// listeners are served by event loops (poller: Config.EventLoops goroutines,
// each waiting in epoll for many connections), so an idle connection costs
// no goroutine and no read buffer. Any other listener (TLS, say) is served
// with two goroutines per connection (connLink): a read loop and a write
// loop. Either way, a session's requests are handled by one goroutine at a
// time, and other sessions hand it bytes through its outbound queue
// (outbox) and never block on it: a queue that would overflow ends that
// session as a slow consumer. Server.wg counts live connections; Shutdown
// waits for them. Serve waits for its own goroutines.
//
// Cluster mode: a login, a LIST, a logout, a SEND to a user not yet looked
// up and a full window of forwarded SENDs wait on NATS. A connLink's read
// loop waits; an event loop must not, so it hands the session to a
// goroutine of its own for that request and the rest of what was read
// (session.offload, loop.goAway), and takes it back when done. The
// cluster's own goroutines call into sessions only to queue: deliveries
// from other servers, evictions, and the answers to forwarded SENDs
// (forward.go).
//
// Locks, in tiers: registry.mu first; then heldReplies.mu or Server.mu;
// then outbox.mu. Only these pairs nest: registry.mu with outbox.mu (a
// login queues its HELLO before it becomes visible) and with Server.mu
// (it takes its place in its network's count), and heldReplies.mu with
// outbox.mu. loop.mu is taken alone. No I/O or channel send happens under
// any of them.
package chat

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/netip"
	"sync"
	"sync/atomic"
	"time"

	"chatserver/internal/protocol"
)

// ErrServerClosed is returned by Serve after Shutdown or Close.
var ErrServerClosed = errors.New("chat: server closed")

const (
	// shutdownDrain is how long Shutdown lets connections write what is
	// queued before it closes them.
	shutdownDrain = time.Second
	// closeWait bounds how long Close waits for closed connections to be
	// cleaned up.
	closeWait = 5 * time.Second
	// maxAcceptBackoff caps the pause after a failed accept (for example
	// when the process is out of file descriptors).
	maxAcceptBackoff = time.Second
)

// keepAlive finds peers that vanished without a FIN or RST within about
// two minutes.
var keepAlive = net.KeepAliveConfig{Enable: true, Idle: 30 * time.Second, Interval: 15 * time.Second, Count: 4}

// Server is a chat server. Create it with NewServer, start it with Serve,
// stop it with Shutdown (gracefully) or Close (at once).
type Server struct {
	cfg   Config
	log   *slog.Logger
	users *registry // the users logged in on this server
	// cluster is Config.Cluster: nil on a single server. In cluster mode
	// SENDs to users not here are forwarded, answered later (forward.go),
	// every DELIVERY waits for lease, and a request that waits on the
	// cluster never holds up other connections (see the package comment).
	cluster  Cluster
	lease    *Lease // cluster mode only; nil means always valid
	counters counters
	pacer    *pacer // writes delaybot's answers in pieces; nil without Config.Bots
	trace    bool   // log every line (trace.go): the logger is at debug level
	nextID   atomic.Uint64
	janitor  sync.Once      // starts returnMemoryWhenQuiet (memory.go) with the first Serve
	wg       sync.WaitGroup // live connections, and event loops still serving after their Serve returned
	done     chan struct{}  // closed when Shutdown or Close begins

	// Test hooks, set before Serve by export_test.go: testHookLine sees
	// every line before it is handled; testHookWatch may fail an event
	// loop's adding of a new connection to its epoll set.
	testHookLine  func(line []byte)
	testHookWatch func() error

	mu        sync.Mutex
	closing   bool                      // guarded by mu
	listeners map[net.Listener]struct{} // guarded by mu
	sessions  map[*session]struct{}     // guarded by mu
	perIP     map[netip.Prefix]*ipCount // guarded by mu: connections and users per client network
}

// NewServer returns a server with the given limits, or an error saying
// which of them is invalid.
func NewServer(cfg Config) (*Server, error) {
	if err := cfg.validate(); err != nil {
		return nil, fmt.Errorf("invalid config: %w", err)
	}
	log := cfg.Logger
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	srv := &Server{
		cfg:       cfg,
		log:       log,
		users:     newRegistry(cfg.MaxUsers),
		cluster:   cfg.Cluster,
		done:      make(chan struct{}),
		listeners: make(map[net.Listener]struct{}),
		sessions:  make(map[*session]struct{}),
		perIP:     make(map[netip.Prefix]*ipCount),
		trace:     tracing(log),
	}
	if srv.cluster != nil {
		srv.users.max = -1 // the cluster's limit
		srv.lease = NewLease()
		srv.cluster.Attach(members{srv}, srv.lease)
	}
	if cfg.Bots {
		srv.startBots()
	}
	return srv, nil
}

// Serve accepts connections on ln until Shutdown or Close, and then
// returns ErrServerClosed. A plain TCP listener is served by event loops
// where the platform has them. A failed accept is retried after a growing
// pause; a listener closed by someone else stops Serve with an accept
// error, whichever engine serves it, and the connections it took go on
// until Shutdown. Like net/http's, Serve closes ln when it returns.
func (srv *Server) Serve(ln net.Listener) error {
	defer ln.Close()
	if !srv.track(ln) {
		return ErrServerClosed
	}
	defer srv.untrack(ln)
	srv.janitor.Do(func() { go srv.returnMemoryWhenQuiet() })
	if tcp, ok := ln.(*net.TCPListener); ok && srv.cfg.EventLoopCount() > 0 {
		return srv.servePolled(tcp)
	}
	var backoff time.Duration
	for {
		conn, err := ln.Accept()
		if err != nil {
			if srv.isClosing() {
				return ErrServerClosed
			}
			if errors.Is(err, net.ErrClosed) {
				return fmt.Errorf("accept: %w", err)
			}
			backoff = nextBackoff(backoff)
			srv.log.Warn("accept failed; retrying", "err", err, "retry_in", backoff)
			time.Sleep(backoff)
			continue
		}
		backoff = 0
		srv.serveConn(conn)
	}
}

// nextBackoff doubles the pause after a failed accept, within bounds.
func nextBackoff(d time.Duration) time.Duration {
	return min(max(2*d, 5*time.Millisecond), maxAcceptBackoff)
}

// serveConn starts a connLink for conn, or turns conn away.
func (srv *Server) serveConn(conn net.Conn) {
	s := srv.newSession(remoteAddr(conn.RemoteAddr()))
	s.transport, s.overTLS = transportOf(conn)
	l := newConnLink(s, conn)
	switch reason, ok := srv.admit(s); {
	case ok:
		go l.serve()
	case reason == ReasonServerShutdown:
		conn.Close()
	default:
		refuseConn(conn, s, reason)
	}
}

// Shutdown stops the listeners and ends every connection: each first
// writes what is queued for it, for at most shutdownDrain, then its socket
// is closed. It waits for the connections until ctx is done; if ctx ends
// first, it closes every connection at once and returns ctx's error.
func (srv *Server) Shutdown(ctx context.Context) error {
	users, sessions := srv.beginClosing()
	for _, s := range sessions {
		s.end(ReasonServerShutdown)
	}
	done := srv.connectionsDone()
	drained := time.NewTimer(shutdownDrain)
	defer drained.Stop()
	late := false // ctx ended first
	select {
	case <-done:
		srv.log.Info("shutdown complete", "connections_closed", len(sessions), "users_logged_out", users)
		return nil
	case <-drained.C:
	case <-ctx.Done():
		late = true
	}
	for _, s := range sessions {
		s.link.shut(false)
	}
	if !late {
		select {
		case <-done:
			srv.log.Info("shutdown complete", "connections_closed", len(sessions), "users_logged_out", users)
			return nil
		case <-ctx.Done():
		}
	}
	select { // closing at once is quick
	case <-done:
	case <-time.After(closeWait):
	}
	return fmt.Errorf("shutdown: %w", ctx.Err())
}

// Close stops the listeners and closes every connection at once, without
// writing what is queued, and waits (briefly) for them to be cleaned up.
func (srv *Server) Close() error {
	_, sessions := srv.beginClosing()
	for _, s := range sessions {
		s.end(ReasonServerShutdown)
		s.link.shut(false)
	}
	select {
	case <-srv.connectionsDone():
		return nil
	case <-time.After(closeWait):
		return errors.New("close: connections still open after " + closeWait.String())
	}
}

// beginClosing marks the server closing, closes its listeners and returns
// the users logged in and every session.
func (srv *Server) beginClosing() (users int64, sessions []*session) {
	srv.mu.Lock()
	if !srv.closing {
		srv.closing = true
		close(srv.done)
	}
	users = srv.counters.users.Load()
	listeners := make([]net.Listener, 0, len(srv.listeners))
	for ln := range srv.listeners {
		listeners = append(listeners, ln)
	}
	sessions = make([]*session, 0, len(srv.sessions))
	for s := range srv.sessions {
		sessions = append(sessions, s)
	}
	srv.mu.Unlock()
	for _, ln := range listeners {
		ln.Close()
	}
	return users, sessions
}

// connectionsDone returns a channel closed once every connection, and
// every event loop, is gone.
func (srv *Server) connectionsDone() <-chan struct{} {
	done := make(chan struct{})
	go func() {
		srv.wg.Wait()
		close(done)
	}()
	return done
}

// Stats returns a snapshot of the server's counters.
func (srv *Server) Stats() Stats {
	return srv.counters.snapshot()
}

// Closing reports whether Shutdown or Close has begun, after which the
// server accepts no more connections; a health check turns it into 503 so
// a load balancer stops sending clients while the server drains.
func (srv *Server) Closing() bool {
	return srv.isClosing()
}

func (srv *Server) track(ln net.Listener) bool {
	srv.mu.Lock()
	defer srv.mu.Unlock()
	if srv.closing {
		return false
	}
	srv.listeners[ln] = struct{}{}
	return true
}

func (srv *Server) untrack(ln net.Listener) {
	srv.mu.Lock()
	defer srv.mu.Unlock()
	delete(srv.listeners, ln)
}

func (srv *Server) isClosing() bool {
	srv.mu.Lock()
	defer srv.mu.Unlock()
	return srv.closing
}

func (srv *Server) newSession(remote netip.AddrPort) *session {
	return newSession(srv, srv.nextID.Add(1), remote)
}

// members is the server's users as its cluster reaches them.
type members struct{ srv *Server }

var _ Members = members{}

// Deliver queues DELIVERYs from users of another server.
func (m members) Deliver(to []byte, claim uint64, lines []byte, count int) bool {
	s := m.srv.users.lookup(to)
	if s == nil || s.claim.Seq != claim {
		return false // logged out, or the name is another login's now
	}
	switch s.out.pushDeliveries(lines, m.srv.lease) {
	case pushed:
		s.link.wake()
		m.srv.counters.replies[protocol.ReplyDelivery].Add(uint64(count))
		return true
	case overflow:
		s.log().Warn("slow consumer: outbound queue full", "limit", m.srv.cfg.MaxPendingBytes)
		s.end(ReasonSlowConsumer)
	}
	return false
}

// EvictAll ends every user's connection: the cluster can no longer vouch
// for their names.
func (m members) EvictAll() {
	all := m.srv.users.all()
	if len(all) > 0 {
		m.srv.log.Warn("cut off from the cluster: closing this server's users", "users", len(all))
	}
	for _, s := range all {
		s.end(ReasonFenced)
	}
}
