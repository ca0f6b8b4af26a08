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
// Cluster mode: every connection is a connLink, because its read loop may
// wait on the cluster (a login, a LIST, a logout, a full window of
// forwarded SENDs). The cluster's own goroutines call into sessions only
// to queue: deliveries from other servers, evictions, and the answers to
// forwarded SENDs (forward.go).
//
// Locks. Two pairs nest, never more: registry.mu then outbox.mu (a login
// queues its HELLO before it becomes visible), and heldReplies.mu then
// outbox.mu. Server.mu and loop.mu are taken alone. No I/O or channel send
// happens under any of them.
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

// ErrServerClosed is returned by Serve after Shutdown.
var ErrServerClosed = errors.New("chat: server closed")

const (
	// rejectTimeout bounds how long a connection over MaxConns may take
	// to be told BUSY.
	rejectTimeout = time.Second
	// shutdownDrain is how long Shutdown lets connections write what is
	// queued before it closes them.
	shutdownDrain = time.Second
	// maxAcceptBackoff caps the pause after a failed accept (for example
	// when the process is out of file descriptors).
	maxAcceptBackoff = time.Second
)

// keepAlive finds peers that vanished without a FIN or RST within about
// two minutes.
var keepAlive = net.KeepAliveConfig{Enable: true, Idle: 30 * time.Second, Interval: 15 * time.Second, Count: 4}

// Server is a chat server. Create it with NewServer, start it with Serve,
// stop it with Shutdown.
type Server struct {
	cfg   Config
	log   *slog.Logger
	users *registry // the users logged in on this server
	// cluster is Config.Cluster: nil on a single server. In cluster mode
	// SENDs to users not here are forwarded, answered later (forward.go),
	// every DELIVERY waits for lease, and every connection is served by a
	// goroutine pair, whose read loop may wait on the cluster without
	// holding up other connections.
	cluster  Cluster
	lease    *Lease // cluster mode only; nil means always valid
	counters counters
	nextID   atomic.Uint64
	wg       sync.WaitGroup // live connections
	done     chan struct{}  // closed when Shutdown begins

	// testHookLine, if set, is called with every line before it is
	// handled; tests use it to inject faults.
	testHookLine func(line []byte)

	mu        sync.Mutex
	closing   bool                      // guarded by mu
	listeners map[net.Listener]struct{} // guarded by mu
	sessions  map[*session]struct{}     // guarded by mu
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
	}
	if srv.cluster != nil {
		srv.users.max = 0 // the cluster's limit
		srv.lease = NewLease()
		srv.cluster.Attach(members{srv}, srv.lease)
	}
	return srv, nil
}

// Serve accepts connections on ln until Shutdown, and then returns
// ErrServerClosed. A plain TCP listener is served by event loops where
// the platform has them. A failed accept is retried after a growing
// pause; only a listener closed by someone else stops Serve with another
// error. Like net/http's, Serve closes ln when it returns.
func (srv *Server) Serve(ln net.Listener) error {
	defer ln.Close()
	if !srv.track(ln) {
		return ErrServerClosed
	}
	defer srv.untrack(ln)
	if tcp, ok := ln.(*net.TCPListener); ok && haveEventLoops && !srv.cfg.NoEventLoop && srv.cluster == nil {
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
	l := newConnLink(s, conn)
	switch srv.admit(s) {
	case admitted:
		go l.serve()
	case overLimit:
		srv.wg.Add(1)
		go srv.reject(conn, s)
	case shuttingDown:
		conn.Close()
	}
}

func remoteAddr(a net.Addr) netip.AddrPort {
	if tcp, ok := a.(*net.TCPAddr); ok {
		return tcp.AddrPort()
	}
	return netip.AddrPort{}
}

// Shutdown stops the listeners and ends every connection: each first
// writes what is queued for it, for at most shutdownDrain, then its socket
// is closed. It waits for the connections until ctx is done, and returns
// ctx's error if they did not finish in time.
func (srv *Server) Shutdown(ctx context.Context) error {
	srv.mu.Lock()
	if !srv.closing {
		srv.closing = true
		close(srv.done)
	}
	users := srv.counters.users.Load()
	listeners := make([]net.Listener, 0, len(srv.listeners))
	for ln := range srv.listeners {
		listeners = append(listeners, ln)
	}
	sessions := make([]*session, 0, len(srv.sessions))
	for s := range srv.sessions {
		sessions = append(sessions, s)
	}
	srv.mu.Unlock()

	for _, ln := range listeners {
		ln.Close()
	}
	for _, s := range sessions {
		s.end(ReasonServerShutdown)
	}
	done := make(chan struct{})
	go func() {
		srv.wg.Wait()
		close(done)
	}()
	drained := time.NewTimer(shutdownDrain)
	defer drained.Stop()
	select {
	case <-done:
	case <-drained.C:
		for _, s := range sessions {
			s.link.shut(false)
		}
	case <-ctx.Done():
	}
	select {
	case <-done:
		srv.log.Info("shutdown complete", "connections_closed", len(sessions), "users_logged_out", users)
		return nil
	case <-ctx.Done():
		return fmt.Errorf("shutdown: %w", ctx.Err())
	}
}

// Stats returns a snapshot of the server's counters.
func (srv *Server) Stats() Stats {
	return srv.counters.snapshot()
}

// Closing reports whether Shutdown has begun, after which the server
// accepts no more connections; a health check turns it into 503 so a load
// balancer stops sending clients while the server drains.
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

// admission is the server's answer to a new connection.
type admission uint8

const (
	admitted     admission = iota
	overLimit              // MaxConns connections are open: tell it BUSY
	shuttingDown           // close it
)

// admit counts s as a live connection unless the server is shutting down
// or full. An admitted session's link must call s.finish when it ends.
func (srv *Server) admit(s *session) admission {
	srv.mu.Lock()
	switch {
	case srv.closing:
		srv.mu.Unlock()
		return shuttingDown
	case len(srv.sessions) >= srv.cfg.MaxConns:
		srv.mu.Unlock()
		return overLimit
	}
	srv.sessions[s] = struct{}{}
	srv.wg.Add(1)
	srv.mu.Unlock()

	srv.counters.connections.Add(1)
	s.log().Info("connection opened")
	return admitted
}

// busyReply is what a connection over MaxConns is told.
var busyReply = protocol.AppendReply(nil, protocol.ReplyBusy)

// reject tells a connection over MaxConns BUSY and closes it. It closes
// its write side first and waits briefly for the client's EOF, so the
// client reads BUSY instead of a reset.
func (srv *Server) reject(conn net.Conn, s *session) {
	defer srv.wg.Done()
	defer conn.Close()
	_ = conn.SetDeadline(time.Now().Add(rejectTimeout))
	n, err := conn.Write(busyReply)
	if tcp, ok := rawConn(conn).(*net.TCPConn); ok && err == nil {
		_ = tcp.CloseWrite()
		var discard [512]byte
		for err == nil {
			_, err = tcp.Read(discard[:])
		}
	}
	srv.rejected(s, n)
}

// rejected counts and logs a connection turned away over MaxConns, which
// was sent n bytes of BUSY.
func (srv *Server) rejected(s *session, n int) {
	srv.counters.bytesOut.Add(uint64(n))
	if n == len(busyReply) {
		srv.counters.replies[protocol.ReplyBusy].Add(1)
	}
	srv.counters.closed[ReasonConnLimit].Add(1)
	s.log().Info("connection refused", "reason", ReasonConnLimit, "max_conns", srv.cfg.MaxConns)
}

// forget is the last step of a session: it is no longer counted or
// tracked, and its end is logged once with its reason.
func (srv *Server) forget(s *session) {
	srv.mu.Lock()
	delete(srv.sessions, s)
	srv.mu.Unlock()
	srv.counters.connections.Add(-1)
	srv.counters.closed[s.reason].Add(1)
	s.log().Info("connection closed", "reason", s.reason)
	srv.wg.Done()
}

// members is the server's users as its cluster reaches them.
type members struct{ srv *Server }

var _ Members = members{}

// Deliver queues a DELIVERY from a user of another server.
func (m members) Deliver(to []byte, claim uint64, from, msg []byte) bool {
	s := m.srv.users.lookup(to)
	if s == nil || s.claim.Seq != claim {
		return false // logged out, or the name is another login's now
	}
	switch pushDelivery(s.out, from, msg, m.srv.lease) {
	case pushed:
		s.link.wake()
		m.srv.counters.replies[protocol.ReplyDelivery].Add(1)
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
