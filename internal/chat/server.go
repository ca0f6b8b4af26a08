// Package chat is the chat server: it accepts connections, runs a session
// for each, and keeps the registry of logged-in users.
//
// Goroutines: Serve runs an accept loop per listener. Each connection has
// a read loop (its own goroutine: owns the socket's read side, the line
// framer and the session's login state) and a write loop (owns the write
// side). Other sessions hand a session bytes through its outbound queue
// and never block on it: a queue that would overflow ends that session as
// a slow consumer. Server.wg counts the connection goroutines; Shutdown
// waits for them.
//
// Lock order: Server.mu, registry.mu, outbox.mu. No I/O, channel send or
// call into another package happens under any of them.
package chat

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
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
	// maxAcceptBackoff caps the pause after a failed accept (for example
	// when the process is out of file descriptors).
	maxAcceptBackoff = time.Second
)

// Server is a chat server. Create it with NewServer, start it with Serve,
// stop it with Shutdown.
type Server struct {
	cfg      Config
	log      *slog.Logger
	users    *registry
	counters counters
	nextID   atomic.Uint64
	wg       sync.WaitGroup // connection goroutines

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
	return &Server{
		cfg:       cfg,
		log:       log,
		users:     newRegistry(cfg.MaxUsers),
		listeners: make(map[net.Listener]struct{}),
		sessions:  make(map[*session]struct{}),
	}, nil
}

// Serve accepts connections on ln until Shutdown, and then returns
// ErrServerClosed. A failed accept is retried after a growing pause; only
// a listener closed by someone else stops Serve with another error.
func (srv *Server) Serve(ln net.Listener) error {
	if !srv.track(ln) {
		return ErrServerClosed
	}
	defer srv.untrack(ln)
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
			backoff = min(max(2*backoff, 5*time.Millisecond), maxAcceptBackoff)
			srv.log.Warn("accept failed; retrying", "err", err, "retry_in", backoff)
			time.Sleep(backoff)
			continue
		}
		backoff = 0
		srv.admit(conn)
	}
}

// Shutdown stops the listeners, ends every connection and waits for their
// goroutines until ctx is done. It returns ctx's error if they did not
// finish in time.
func (srv *Server) Shutdown(ctx context.Context) error {
	srv.mu.Lock()
	srv.closing = true
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

// admit starts a session for conn, or turns it away when the server is
// closing or already has MaxConns connections.
func (srv *Server) admit(conn net.Conn) {
	log := srv.log.With("conn", srv.nextID.Add(1), "remote", conn.RemoteAddr().String())
	srv.mu.Lock()
	switch {
	case srv.closing:
		srv.mu.Unlock()
		conn.Close()
		return
	case len(srv.sessions) >= srv.cfg.MaxConns:
		srv.wg.Add(1)
		srv.mu.Unlock()
		go srv.reject(conn, log)
		return
	}
	s := newSession(srv, conn, log)
	srv.sessions[s] = struct{}{}
	srv.wg.Add(1)
	srv.mu.Unlock()

	srv.counters.connections.Add(1)
	log.Info("connection opened")
	go s.run()
}

// reject tells a connection over MaxConns BUSY and closes it. It closes
// its write side first and waits briefly for the client's EOF, so the
// client reads BUSY instead of a reset.
func (srv *Server) reject(conn net.Conn, log *slog.Logger) {
	defer srv.wg.Done()
	defer conn.Close()
	_ = conn.SetDeadline(time.Now().Add(rejectTimeout))
	n, err := conn.Write(protocol.AppendReply(nil, protocol.ReplyBusy))
	srv.counters.bytesOut.Add(uint64(n))
	if err == nil {
		srv.counters.replies[protocol.ReplyBusy].Add(1)
		if tcp, ok := conn.(*net.TCPConn); ok {
			_ = tcp.CloseWrite()
			var discard [512]byte
			for {
				if _, err := tcp.Read(discard[:]); err != nil {
					break
				}
			}
		}
	}
	srv.counters.closed[ReasonConnLimit].Add(1)
	log.Info("connection refused", "reason", ReasonConnLimit, "max_conns", srv.cfg.MaxConns)
}

// forget is the last step of a session: it is no longer counted or
// tracked, and its end is logged once with its reason.
func (srv *Server) forget(s *session) {
	srv.mu.Lock()
	delete(srv.sessions, s)
	srv.mu.Unlock()
	srv.counters.connections.Add(-1)
	srv.counters.closed[s.reason].Add(1)
	s.log.Info("connection closed", "reason", s.reason)
	srv.wg.Done()
}
