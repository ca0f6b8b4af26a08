package chat

import (
	"crypto/tls"
	"net"
	"net/netip"
	"time"

	"chatserver/internal/protocol"
)

// The edges of a connection, one policy for both engines (the event loop
// in poll_linux.go, the goroutine pair in connlink.go):
//
//  1. admit: a new connection is counted, or refused (BUSY, then closed
//     at once) when MaxConns or MaxConnsPerIP connections are open, and
//     logged ("connection opened") with its remote address in one form.
//  2. readStopped: the reading side is done, with why: the user is logged
//     out at once, then end.
//  3. end: the connection is to end, for the first reason given: its
//     queue takes nothing more, and its link closes the socket at once or
//     once what is queued is written (CloseReason.drains).
//  4. closed: the link's last call, once the socket is closed: the
//     connection is no longer counted, and its end is logged once, with
//     its reason.

// refusalTimeout bounds how long a TLS connection refused for a limit may
// take to be told BUSY: it needs a handshake first.
const refusalTimeout = time.Second

// remoteAddr is a client's address as logs and limits see it: an IPv4
// client of a dual-stack listener is a.b.c.d, not ::ffff:a.b.c.d.
func remoteAddr(a net.Addr) netip.AddrPort {
	if tcp, ok := a.(*net.TCPAddr); ok {
		ap := tcp.AddrPort()
		return netip.AddrPortFrom(ap.Addr().Unmap(), ap.Port())
	}
	return netip.AddrPort{}
}

// ipCount is what one client network holds.
type ipCount struct {
	conns, users int
}

// clientNet is the network limits count a client in: its IPv4 address, or
// the /64 of its IPv6 address (one host, or one home, usually has a /64).
// ok is false for a client the per-IP limits do not apply to: loopback
// unless Config.LimitLoopback, or an unknown address.
func (srv *Server) clientNet(a netip.Addr) (netip.Prefix, bool) {
	if !a.IsValid() || (a.IsLoopback() && !srv.cfg.LimitLoopback) {
		return netip.Prefix{}, false
	}
	bits := 32
	if a.Is6() {
		bits = 64
	}
	p, err := a.Prefix(bits)
	return p, err == nil
}

// admit counts s as a live connection, unless the server is closing or a
// limit is reached: then it returns why (ReasonServerShutdown,
// ReasonConnLimit or ReasonIPLimit) and false. An admitted session's link
// must call s.closed when it ends.
func (srv *Server) admit(s *session) (CloseReason, bool) {
	ipNet, limited := srv.clientNet(s.remote.Addr())
	srv.mu.Lock()
	switch {
	case srv.closing:
		srv.mu.Unlock()
		return ReasonServerShutdown, false
	case len(srv.sessions) >= srv.cfg.MaxConns:
		srv.mu.Unlock()
		return ReasonConnLimit, false
	case limited && srv.cfg.MaxConnsPerIP > 0 && srv.perIP[ipNet] != nil && srv.perIP[ipNet].conns >= srv.cfg.MaxConnsPerIP:
		srv.mu.Unlock()
		return ReasonIPLimit, false
	}
	if limited {
		c := srv.perIP[ipNet]
		if c == nil {
			c = &ipCount{}
			srv.perIP[ipNet] = c
		}
		c.conns++
	}
	srv.sessions[s] = struct{}{}
	srv.wg.Add(1)
	srv.mu.Unlock()

	srv.counters.connections[s.transport].Add(1)
	s.log().Info("connection opened")
	return 0, true
}

// reserveUser counts a login from s's network against MaxUsersPerIP, and
// reports whether there was room. releaseUser gives the place back.
func (srv *Server) reserveUser(s *session) bool {
	ipNet, limited := srv.clientNet(s.remote.Addr())
	if !limited || srv.cfg.MaxUsersPerIP == 0 {
		return true
	}
	srv.mu.Lock()
	defer srv.mu.Unlock()
	c := srv.perIP[ipNet]
	if c == nil || c.users >= srv.cfg.MaxUsersPerIP {
		return false
	}
	c.users++
	return true
}

func (srv *Server) releaseUser(s *session) {
	ipNet, limited := srv.clientNet(s.remote.Addr())
	if !limited || srv.cfg.MaxUsersPerIP == 0 {
		return
	}
	srv.mu.Lock()
	defer srv.mu.Unlock()
	if c := srv.perIP[ipNet]; c != nil {
		c.users--
	}
}

// closed is a session's last step: it is no longer counted or tracked,
// and its end is logged once with its reason.
func (s *session) closed() {
	srv := s.srv
	ipNet, limited := srv.clientNet(s.remote.Addr())
	srv.mu.Lock()
	delete(srv.sessions, s)
	if c := srv.perIP[ipNet]; limited && c != nil {
		if c.conns--; c.conns == 0 && c.users == 0 {
			delete(srv.perIP, ipNet)
		}
	}
	srv.mu.Unlock()
	srv.counters.connections[s.transport].Add(-1)
	srv.counters.closed[s.reason].Add(1)
	s.log().Info("connection closed", "reason", s.reason)
	srv.wg.Done()
}

// Carried is what a connection from elsewhere than a listener of plain
// TCP or TLS (a WebSocket from package web) tells about itself.
type Carried interface {
	// Transport says what carries the connection, and whether it is
	// inside TLS.
	Transport() (t Transport, overTLS bool)
	// CloseFor closes the connection saying why it ends, as its protocol
	// can (a WebSocket's close code), without blocking for long.
	CloseFor(reason CloseReason) error
}

// transportOf says what carries conn.
func transportOf(conn net.Conn) (t Transport, overTLS bool) {
	switch c := conn.(type) {
	case Carried:
		return c.Transport()
	case *tls.Conn:
		return TransportTLS, true
	}
	return TransportTCP, false
}

// closeFor closes conn, saying why if its protocol can.
func closeFor(conn net.Conn, reason CloseReason) {
	if c, ok := conn.(Carried); ok {
		_ = c.CloseFor(reason)
		return
	}
	conn.Close()
}

// busyReply is what a refused connection is told.
var busyReply = protocol.AppendReply(nil, protocol.ReplyBusy)

// refuseConn tells a connection the goroutine engine refused BUSY and
// closes it, at once: what the client already sent is read first (for a
// few milliseconds at most), so that the close is a FIN, not a reset that
// could destroy the BUSY before the client reads it. A TLS connection
// needs its handshake before it can be told anything, so it is refused
// on a goroutine of its own, within refusalTimeout.
func refuseConn(conn net.Conn, s *session, reason CloseReason) {
	if _, isTLS := conn.(*tls.Conn); isTLS {
		s.srv.wg.Add(1)
		go func() {
			defer s.srv.wg.Done()
			_ = conn.SetDeadline(time.Now().Add(refusalTimeout))
			n, _ := conn.Write(busyReply)
			conn.Close()
			s.srv.refused(s, reason, n)
		}()
		return
	}
	var discard [512]byte
	_ = conn.SetReadDeadline(time.Now().Add(time.Millisecond))
	for range 4 { // bounded: a client that keeps sending gets a reset
		if _, err := conn.Read(discard[:]); err != nil {
			break
		}
	}
	_ = conn.SetWriteDeadline(time.Now().Add(time.Millisecond)) // a new socket's buffer has room
	n, _ := conn.Write(busyReply)
	closeFor(conn, reason)
	s.srv.refused(s, reason, n)
}

// refused counts and logs a connection refused for a limit, which was
// sent n bytes of BUSY.
func (srv *Server) refused(s *session, reason CloseReason, n int) {
	srv.counters.bytesOut.Add(uint64(max(n, 0)))
	if n == len(busyReply) {
		srv.counters.replies[protocol.ReplyBusy].Add(1)
	}
	srv.counters.closed[reason].Add(1)
	s.log().Info("connection refused", "reason", reason)
}
