package chat

import (
	"errors"
	"fmt"
	"net"
	"net/netip"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"golang.org/x/sys/unix"
)

// haveEventLoops says Serve can use event loops for plain TCP here.
const haveEventLoops = true

// acceptBatch bounds the accepts per event, so a connection storm cannot
// starve a loop's connections.
const acceptBatch = 64

// poller serves one TCP listener from Config.EventLoops event loops.
// Each loop accepts connections from the shared listener (EPOLLEXCLUSIVE:
// one loop woken per new connection) and then owns them: it reads, hands
// bytes to the session, and writes each connection's output once per batch
// of events (loop_linux.go, pollconn_linux.go). Nothing about a connection
// is touched by another goroutine except through its outbox and
// pollConn's atomics.
type poller struct {
	srv    *Server
	ln     syscall.RawConn // the listener, to see whether its owner closed it
	lnFd   int             // our own descriptor for the listening socket; -1 once closed
	loops  []*loop
	wg     sync.WaitGroup // the loops' goroutines
	lnGone atomic.Bool    // the listener's owner closed it: accept no more
	// When the owner closes the listener, every loop takes it out of its
	// epoll set; the last one closes lnFd, so the socket is closed for
	// good and new clients are refused, as with the goroutine engine.
	listening atomic.Int32  // loops that may still use lnFd
	lnClosed  chan struct{} // closed once lnFd is closed that way
}

// servePolled serves ln with event loops until Shutdown or Close, or until
// the listener's owner closes it: then it returns an accept error, as the
// goroutine engine does, and the loops go on serving the connections they
// have until Shutdown or Close ends them.
func (srv *Server) servePolled(ln *net.TCPListener) error {
	p, err := newPoller(srv, ln)
	if err != nil {
		return err
	}
	for _, l := range p.loops {
		p.wg.Add(1)
		go l.run()
	}
	stop := func() {
		for _, l := range p.loops {
			l.stopping.Store(true)
			l.wakeUp()
		}
		p.wg.Wait()
		p.close()
	}
	select {
	case <-srv.done:
		stop()
		return ErrServerClosed
	case <-p.lnClosed:
		srv.wg.Add(1) // Shutdown waits for the loops, which outlive Serve
		go func() {
			defer srv.wg.Done()
			<-srv.done
			stop()
		}()
		return fmt.Errorf("accept: %w", net.ErrClosed)
	}
}

func newPoller(srv *Server, ln *net.TCPListener) (*poller, error) {
	p := &poller{srv: srv, lnFd: -1, lnClosed: make(chan struct{})}
	rc, err := ln.SyscallConn()
	if err != nil {
		return nil, fmt.Errorf("listener: %w", err)
	}
	p.ln = rc
	// A duplicate of the socket, so Go's own poller never sees our
	// accepts. It shares the original's non-blocking mode.
	ctlErr := rc.Control(func(fd uintptr) {
		p.lnFd, err = unix.FcntlInt(fd, unix.F_DUPFD_CLOEXEC, 0)
	})
	if err = errors.Join(ctlErr, err); err != nil {
		return nil, fmt.Errorf("listener: dup: %w", err)
	}
	for range srv.cfg.EventLoopCount() {
		l, err := newLoop(p)
		if err != nil {
			p.close()
			return nil, err
		}
		p.loops = append(p.loops, l)
	}
	p.listening.Store(int32(len(p.loops)))
	return p, nil
}

func (p *poller) close() {
	for _, l := range p.loops {
		l.closeFds()
	}
	if p.lnFd >= 0 {
		unix.Close(p.lnFd)
	}
}

// checkListener notices that the listener's owner closed it (our
// duplicate still accepts, so nothing else would tell).
func (p *poller) checkListener() {
	if !p.lnGone.Load() && p.ln.Control(func(uintptr) {}) != nil {
		p.lnGone.Store(true)
		for _, l := range p.loops {
			l.wakeUp()
		}
	}
}

// unlisten is a loop's last use of lnFd once the owner closed the
// listener.
func (p *poller) unlisten() {
	if p.listening.Add(-1) == 0 {
		unix.Close(p.lnFd)
		p.lnFd = -1
		close(p.lnClosed)
	}
}

// accept takes new connections from the listener.
func (l *loop) accept() {
	if l.p.lnGone.Load() {
		return
	}
	for range acceptBatch {
		fd, sa, err := unix.Accept4(l.p.lnFd, unix.SOCK_NONBLOCK|unix.SOCK_CLOEXEC)
		switch {
		case err == nil:
			l.backoff = 0
			l.admit(fd, sa)
		case errors.Is(err, unix.EAGAIN):
			return
		case errors.Is(err, unix.EINTR), errors.Is(err, unix.ECONNABORTED):
		default:
			// Out of descriptors, say: pause this loop's accepts, since
			// the listener stays readable and would spin the loop.
			l.backoff = nextBackoff(l.backoff)
			l.srv.log.Warn("accept failed; retrying", "err", err, "retry_in", l.backoff)
			l.acceptPaused = nowInstant().add(l.backoff)
			_ = l.listen(false)
			return
		}
	}
}

// admit starts serving a new connection, or turns it away.
func (l *loop) admit(fd int, sa unix.Sockaddr) {
	s := l.srv.newSession(sockaddrAddrPort(sa))
	pc := &pollConn{sess: s, loop: l, fd: fd, loginDeadline: nowInstant().add(l.srv.cfg.LoginTimeout)}
	s.link = pc
	switch reason, ok := l.srv.admit(s); {
	case !ok && reason == ReasonServerShutdown:
		unix.Close(fd)
		return
	case !ok:
		l.refuse(fd, s, reason)
		return
	}
	setSockopts(fd)
	err := l.ctl(unix.EPOLL_CTL_ADD, fd, pollIn, s.id)
	if hook := l.srv.testHookWatch; hook != nil && err == nil {
		if err = hook(); err != nil {
			_ = l.ctl(unix.EPOLL_CTL_DEL, fd, 0, 0)
		}
	}
	if err != nil {
		s.log().Error("cannot watch connection", "err", err)
		s.readStopped(ReasonReset)
		pc.closeNow()
		s.closed()
		return
	}
	l.conns[s.id] = pc
	l.loginPending[pc] = struct{}{}
}

// refuse tells a connection refused for a limit BUSY and closes it, at
// once. Whatever the client already sent is read first, so that the close
// is a FIN, not a reset that could destroy the BUSY before the client
// reads it.
func (l *loop) refuse(fd int, s *session, reason CloseReason) {
	for range 4 { // bounded: a client that keeps sending gets a reset
		if n, _ := unix.Read(fd, l.buf); n <= 0 {
			break
		}
	}
	n, _ := unix.Write(fd, busyReply) // a new socket's buffer has room
	unix.Close(fd)
	l.srv.refused(s, reason, n)
}

func setSockopts(fd int) {
	_ = unix.SetsockoptInt(fd, unix.IPPROTO_TCP, unix.TCP_NODELAY, 1)
	_ = unix.SetsockoptInt(fd, unix.SOL_SOCKET, unix.SO_KEEPALIVE, 1)
	_ = unix.SetsockoptInt(fd, unix.IPPROTO_TCP, unix.TCP_KEEPIDLE, int(keepAlive.Idle/time.Second))
	_ = unix.SetsockoptInt(fd, unix.IPPROTO_TCP, unix.TCP_KEEPINTVL, int(keepAlive.Interval/time.Second))
	_ = unix.SetsockoptInt(fd, unix.IPPROTO_TCP, unix.TCP_KEEPCNT, keepAlive.Count)
}

func sockaddrAddrPort(sa unix.Sockaddr) netip.AddrPort {
	switch sa := sa.(type) {
	case *unix.SockaddrInet4:
		return netip.AddrPortFrom(netip.AddrFrom4(sa.Addr), uint16(sa.Port))
	case *unix.SockaddrInet6:
		// A dual-stack listener reports IPv4 clients as ::ffff:a.b.c.d.
		return netip.AddrPortFrom(netip.AddrFrom16(sa.Addr).Unmap(), uint16(sa.Port))
	}
	return netip.AddrPort{}
}
