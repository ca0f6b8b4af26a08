package chat

import (
	"errors"
	"fmt"
	"net"
	"net/netip"
	"sync"
	"sync/atomic"
	"time"

	"golang.org/x/sys/unix"
)

// haveEventLoops says Serve can use event loops for plain TCP here.
const haveEventLoops = true

const (
	// loopReadBytes is each event loop's read buffer, shared by all its
	// connections: a connection holds no read buffer while idle.
	loopReadBytes = 64 << 10
	// loopEvents is how many epoll events a loop takes per wait.
	loopEvents = 256
	// tickInterval is how often a loop checks login deadlines and stalled
	// writes, and retries a paused accept.
	tickInterval = 100 * time.Millisecond
	// acceptBatch bounds the accepts per event, so a connection storm
	// cannot starve the loop's connections.
	acceptBatch = 64
)

// Tokens in epoll event data that are not connection ids. Connection ids
// start at 1 and never reach these.
const (
	tokenListener = ^uint64(0)
	tokenWake     = ^uint64(0) - 1
)

// poller serves one TCP listener from Config.EventLoops event loops.
// Each loop accepts connections from the shared listener (EPOLLEXCLUSIVE:
// one loop woken per new connection) and then owns them: it reads, hands
// bytes to the session, and writes each connection's output once per batch
// of events. Nothing about a connection is touched by another goroutine
// except through its outbox and pollConn's atomics.
type poller struct {
	srv   *Server
	lnFd  int // our own descriptor for the listening socket
	loops []*loop
	wg    sync.WaitGroup // the loops' goroutines
}

// servePolled serves ln with event loops until Shutdown.
func (srv *Server) servePolled(ln *net.TCPListener) error {
	p, err := newPoller(srv, ln)
	if err != nil {
		return err
	}
	for _, l := range p.loops {
		p.wg.Add(1)
		go l.run()
	}
	<-srv.done
	for _, l := range p.loops {
		l.stopping.Store(true)
		l.wakeUp()
	}
	p.wg.Wait()
	p.close()
	return ErrServerClosed
}

func newPoller(srv *Server, ln *net.TCPListener) (*poller, error) {
	p := &poller{srv: srv, lnFd: -1}
	rc, err := ln.SyscallConn()
	if err != nil {
		return nil, fmt.Errorf("listener: %w", err)
	}
	// A duplicate of the socket, so Go's own poller never sees our
	// accepts. It shares the original's non-blocking mode.
	ctlErr := rc.Control(func(fd uintptr) {
		p.lnFd, err = unix.FcntlInt(fd, unix.F_DUPFD_CLOEXEC, 0)
	})
	if err = errors.Join(ctlErr, err); err != nil {
		return nil, fmt.Errorf("listener: dup: %w", err)
	}
	for range srv.cfg.eventLoops() {
		l, err := newLoop(p)
		if err != nil {
			p.close()
			return nil, err
		}
		p.loops = append(p.loops, l)
	}
	return p, nil
}

func (p *poller) close() {
	for _, l := range p.loops {
		unix.Close(l.epfd)
		unix.Close(l.wakeFd)
	}
	if p.lnFd >= 0 {
		unix.Close(p.lnFd)
	}
}

// loop is one event loop.
type loop struct {
	p      *poller
	srv    *Server
	epfd   int
	wakeFd int // an eventfd: other goroutines wake the loop through it

	// Owned by the loop's goroutine.
	events       []unix.EpollEvent
	buf          []byte
	conns        map[uint64]*pollConn // by id, the epoll event data
	toFlush      []*pollConn          // conns to write before waiting again
	loginPending map[*pollConn]struct{}
	stalled      map[*pollConn]struct{} // conns with a write waiting for the socket
	holding      map[*pollConn]struct{} // conns that may hold big output buffers
	ticks        uint64                 // ticks so far
	nextTick     time.Time
	acceptPaused time.Time     // zero, or when accepting resumes after an error
	backoff      time.Duration // the last pause after an accept error
	listening    bool          // the listener is in this loop's epoll set

	sleeping atomic.Bool // in or about to enter epoll_wait: wakers must write wakeFd
	stopping atomic.Bool // Shutdown began: accept no more, exit once conns are gone

	mu    sync.Mutex
	woken []*pollConn // guarded by mu: conns with news from other goroutines
	spare []*pollConn // owned by the loop: the other woken list, swapped in
}

func newLoop(p *poller) (*loop, error) {
	l := &loop{
		p:            p,
		srv:          p.srv,
		epfd:         -1,
		wakeFd:       -1,
		events:       make([]unix.EpollEvent, loopEvents),
		buf:          make([]byte, loopReadBytes),
		conns:        make(map[uint64]*pollConn),
		loginPending: make(map[*pollConn]struct{}),
		stalled:      make(map[*pollConn]struct{}),
		holding:      make(map[*pollConn]struct{}),
	}
	var err error
	if l.epfd, err = unix.EpollCreate1(unix.EPOLL_CLOEXEC); err != nil {
		return nil, fmt.Errorf("epoll_create: %w", err)
	}
	if l.wakeFd, err = unix.Eventfd(0, unix.EFD_NONBLOCK|unix.EFD_CLOEXEC); err != nil {
		unix.Close(l.epfd)
		return nil, fmt.Errorf("eventfd: %w", err)
	}
	if err = l.ctl(unix.EPOLL_CTL_ADD, l.wakeFd, unix.EPOLLIN, tokenWake); err == nil {
		err = l.listen(true)
	}
	if err != nil {
		unix.Close(l.epfd)
		unix.Close(l.wakeFd)
		return nil, err
	}
	return l, nil
}

func (l *loop) ctl(op, fd int, events uint32, token uint64) error {
	ev := unix.EpollEvent{Events: events}
	// The event data is 8 bytes: Fd and Pad together hold the token.
	ev.Fd, ev.Pad = int32(uint32(token)), int32(uint32(token>>32))
	if err := unix.EpollCtl(l.epfd, op, fd, &ev); err != nil {
		return fmt.Errorf("epoll_ctl: %w", err)
	}
	return nil
}

func eventToken(ev *unix.EpollEvent) uint64 {
	return uint64(uint32(ev.Fd)) | uint64(uint32(ev.Pad))<<32
}

// listen adds the listener to, or removes it from, this loop's epoll set.
func (l *loop) listen(on bool) error {
	if on == l.listening {
		return nil
	}
	l.listening = on
	if on {
		return l.ctl(unix.EPOLL_CTL_ADD, l.p.lnFd, unix.EPOLLIN|unix.EPOLLEXCLUSIVE, tokenListener)
	}
	return l.ctl(unix.EPOLL_CTL_DEL, l.p.lnFd, 0, 0)
}

// wakeUp makes the loop leave epoll_wait, if it is in it.
func (l *loop) wakeUp() {
	var one = [8]byte{1}
	_, _ = unix.Write(l.wakeFd, one[:]) // EAGAIN: the counter is already non-zero
}

// notify queues pc for the loop's attention from any goroutine.
func (l *loop) notify(pc *pollConn) {
	l.mu.Lock()
	l.woken = append(l.woken, pc)
	l.mu.Unlock()
	if l.sleeping.Swap(false) {
		l.wakeUp()
	}
}

func (l *loop) run() {
	defer l.p.wg.Done()
	for {
		if l.stopping.Load() {
			_ = l.listen(false)
			if len(l.conns) == 0 {
				return
			}
		}
		n, err := unix.EpollWait(l.epfd, l.events, l.waitMillis())
		l.sleeping.Store(false)
		if err != nil && !errors.Is(err, unix.EINTR) {
			l.srv.log.Error("epoll_wait failed", "err", err)
			time.Sleep(tickInterval) // do not spin on a broken epoll set
		}
		for i := range n {
			l.dispatch(&l.events[i])
		}
		l.takeWoken()
		l.flushAll()
		if now := time.Now(); !now.Before(l.nextTick) {
			l.tick(now)
		}
	}
}

// waitMillis says how long epoll_wait may block: not at all if there is
// news already, else until the next tick. It announces the sleep first, so
// a notify racing with it writes the eventfd.
func (l *loop) waitMillis() int {
	l.sleeping.Store(true)
	l.mu.Lock()
	news := len(l.woken) > 0
	l.mu.Unlock()
	if news {
		return 0
	}
	return max(int(time.Until(l.nextTick)/time.Millisecond), 1)
}

func (l *loop) dispatch(ev *unix.EpollEvent) {
	switch token := eventToken(ev); token {
	case tokenListener:
		l.accept()
	case tokenWake:
		var b [8]byte
		_, _ = unix.Read(l.wakeFd, b[:])
	default:
		pc := l.conns[token]
		if pc == nil {
			return // closed earlier in this batch
		}
		if ev.Events&unix.EPOLLOUT != 0 {
			l.queueFlush(pc)
		}
		if ev.Events&(unix.EPOLLIN|unix.EPOLLRDHUP|unix.EPOLLHUP|unix.EPOLLERR) != 0 {
			l.read(pc)
		}
	}
}

// takeWoken moves the conns other goroutines notified onto the flush list.
func (l *loop) takeWoken() {
	l.mu.Lock()
	woken := l.woken
	l.woken = l.spare
	l.mu.Unlock()
	for i, pc := range woken {
		pc.notified.Store(false)
		l.queueFlush(pc)
		woken[i] = nil
	}
	l.spare = woken[:0]
}

func (l *loop) queueFlush(pc *pollConn) {
	if !pc.queued {
		pc.queued = true
		l.toFlush = append(l.toFlush, pc)
	}
}

// flushAll writes every connection that has output or news, once.
func (l *loop) flushAll() {
	for i, pc := range l.toFlush {
		pc.queued = false
		if pc.fd >= 0 {
			l.flush(pc)
		}
		l.toFlush[i] = nil
	}
	l.toFlush = l.toFlush[:0]
}

// tick frees the big buffers of connections that went quiet, ends
// connections past their login deadline or stalled in a write past
// WriteTimeout, and resumes a paused accept.
func (l *loop) tick(now time.Time) {
	l.nextTick = now.Add(tickInterval)
	l.ticks++
	for pc := range l.holding {
		if pc.flushedTick+1 < l.ticks && pc.written == len(pc.batch) {
			// Quiet for a whole tick: give its big buffers back.
			delete(l.holding, pc)
			pc.batch = dropBig(pc.batch)
			pc.sess.out.release()
		}
	}
	for pc := range l.loginPending {
		if now.After(pc.loginDeadline) {
			l.endRead(pc, ReasonLoginTimeout)
		}
	}
	for pc := range l.stalled {
		if now.Sub(pc.stalledSince) > l.srv.cfg.WriteTimeout {
			delete(l.stalled, pc)
			pc.sess.log().Warn("slow consumer: write stalled", "timeout", l.srv.cfg.WriteTimeout)
			pc.sess.end(ReasonSlowConsumer)
		}
	}
	if !l.acceptPaused.IsZero() && now.After(l.acceptPaused) && !l.stopping.Load() {
		l.acceptPaused = time.Time{}
		_ = l.listen(true)
	}
}

// accept takes new connections from the listener.
func (l *loop) accept() {
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
			l.acceptPaused = time.Now().Add(l.backoff)
			_ = l.listen(false)
			return
		}
	}
}

// admit starts serving a new connection, or turns it away.
func (l *loop) admit(fd int, sa unix.Sockaddr) {
	s := l.srv.newSession(sockaddrAddrPort(sa))
	pc := &pollConn{sess: s, loop: l, fd: fd, loginDeadline: time.Now().Add(l.srv.cfg.LoginTimeout)}
	s.link = pc
	switch l.srv.admit(s) {
	case shuttingDown:
		unix.Close(fd)
		return
	case overLimit:
		l.reject(fd, s)
		return
	}
	setSockopts(fd)
	if err := l.ctl(unix.EPOLL_CTL_ADD, fd, pollIn, s.id); err != nil {
		s.log().Error("cannot watch connection", "err", err)
		s.readEnded(ReasonReset)
		pc.closeNow()
		return
	}
	l.conns[s.id] = pc
	l.loginPending[pc] = struct{}{}
}

const pollIn = unix.EPOLLIN | unix.EPOLLRDHUP

// reject tells a connection over MaxConns BUSY and closes it. Whatever the
// client already sent is read first, so that the close is a FIN, not a
// reset that could destroy the BUSY before the client reads it.
func (l *loop) reject(fd int, s *session) {
	for range 4 { // bounded: a client that keeps sending gets a reset
		if n, _ := unix.Read(fd, l.buf); n <= 0 {
			break
		}
	}
	n, _ := unix.Write(fd, busyReply) // a new socket's buffer has room
	unix.Close(fd)
	l.srv.rejected(s, max(n, 0))
}

func setSockopts(fd int) {
	_ = unix.SetsockoptInt(fd, unix.IPPROTO_TCP, unix.TCP_NODELAY, 1)
	_ = unix.SetsockoptInt(fd, unix.SOL_SOCKET, unix.SO_KEEPALIVE, 1)
	_ = unix.SetsockoptInt(fd, unix.IPPROTO_TCP, unix.TCP_KEEPIDLE, int(keepAlive.Idle/time.Second))
	_ = unix.SetsockoptInt(fd, unix.IPPROTO_TCP, unix.TCP_KEEPINTVL, int(keepAlive.Interval/time.Second))
	_ = unix.SetsockoptInt(fd, unix.IPPROTO_TCP, unix.TCP_KEEPCNT, keepAlive.Count)
}

// read reads once from a readable connection and hands the bytes to its
// session. The epoll set is level-triggered, so whatever is left is read
// in the next round, after the other connections had their turn.
func (l *loop) read(pc *pollConn) {
	if pc.readDone {
		l.queueFlush(pc) // a hang-up while draining: the next write fails
		return
	}
	n, err := unix.Read(pc.fd, l.buf)
	switch {
	case n > 0:
		if !pc.sess.receive(l.buf[:n]) {
			l.endRead(pc, pc.sess.stop)
		}
	case n == 0:
		l.endRead(pc, ReasonClientClosed)
	case errors.Is(err, unix.EAGAIN), errors.Is(err, unix.EINTR):
	default:
		l.endRead(pc, ReasonReset)
	}
}

// endRead stops reading pc: a half-closed socket stays readable, and the
// loop must not be woken for it again.
func (l *loop) endRead(pc *pollConn, reason CloseReason) {
	pc.readDone = true
	delete(l.loginPending, pc)
	_ = l.ctl(unix.EPOLL_CTL_MOD, pc.fd, pc.writeEvents(), pc.sess.id)
	pc.sess.readEnded(reason)
}

// flush writes what pc has queued, until the socket is full or the queue
// empty, and closes pc once it is ended and drained (or ended at once).
func (l *loop) flush(pc *pollConn) {
	if pc.shutNow.Load() {
		l.close(pc)
		return
	}
	wrote := false // this flush moved some bytes
	for {
		if pc.written == len(pc.batch) {
			var closed bool
			pc.batch, closed = pc.sess.out.take(pc.batch)
			pc.written = 0
			l.drained(pc)
			if cap(pc.batch) > keepIdleBytes {
				pc.flushedTick = l.ticks
				l.holding[pc] = struct{}{}
			}
			if len(pc.batch) == 0 {
				if closed {
					l.close(pc)
				}
				return
			}
		}
		n, err := unix.Write(pc.fd, pc.batch[pc.written:])
		if n > 0 {
			pc.written += n
			wrote = true
			l.srv.counters.bytesOut.Add(uint64(n))
		}
		switch {
		case errors.Is(err, unix.EAGAIN):
			l.wait(pc, wrote)
			return
		case err != nil && !errors.Is(err, unix.EINTR):
			pc.sess.end(ReasonReset)
			l.close(pc)
			return
		}
	}
}

// wait asks for EPOLLOUT: pc's socket is full, its batch half written.
// The stall clock starts now unless it runs already and this flush wrote
// nothing: a client that reads slowly but steadily is not stalled.
func (l *loop) wait(pc *pollConn, progressed bool) {
	if pc.stalledSince.IsZero() || progressed {
		pc.stalledSince = time.Now()
		l.stalled[pc] = struct{}{}
	}
	if !pc.wantWrite {
		pc.wantWrite = true
		_ = l.ctl(unix.EPOLL_CTL_MOD, pc.fd, pc.readEvents()|unix.EPOLLOUT, pc.sess.id)
	}
}

// drained notes that pc's last batch is fully written.
func (l *loop) drained(pc *pollConn) {
	if !pc.stalledSince.IsZero() {
		pc.stalledSince = time.Time{}
		delete(l.stalled, pc)
	}
	if pc.wantWrite {
		pc.wantWrite = false
		_ = l.ctl(unix.EPOLL_CTL_MOD, pc.fd, pc.readEvents(), pc.sess.id)
	}
}

// close closes pc's socket and finishes its session.
func (l *loop) close(pc *pollConn) {
	if pc.fd < 0 {
		return
	}
	delete(l.conns, pc.sess.id)
	delete(l.loginPending, pc)
	delete(l.stalled, pc)
	delete(l.holding, pc)
	if !pc.readDone {
		pc.readDone = true
		pc.sess.readEnded(ReasonReset) // ended elsewhere; that reason stands
	}
	pc.closeNow()
	pc.sess.finish()
}

// pollConn carries a session on an event loop.
type pollConn struct {
	sess *session
	loop *loop

	// Owned by the loop.
	fd            int // -1 once closed
	batch         []byte
	written       int       // bytes of batch already written
	flushedTick   uint64    // the loop's tick count when a big batch was last taken
	stalledSince  time.Time // zero unless batch waits for the socket; its last progress
	loginDeadline time.Time
	wantWrite     bool // EPOLLOUT is in the epoll set
	readDone      bool // the read side ended; only draining is left
	queued        bool // on the loop's flush list

	notified atomic.Bool // on the loop's woken list
	shutNow  atomic.Bool // end asked for the socket to close at once
}

func (pc *pollConn) readEvents() uint32 {
	if pc.readDone {
		return 0
	}
	return pollIn
}

func (pc *pollConn) writeEvents() uint32 {
	if pc.wantWrite {
		return unix.EPOLLOUT
	}
	return 0
}

func (pc *pollConn) wake() {
	if !pc.notified.Swap(true) {
		pc.loop.notify(pc)
	}
}

func (pc *pollConn) shut(graceful bool) {
	if !graceful {
		pc.shutNow.Store(true)
	}
	pc.loop.notify(pc) // bypass notified: a pending wake may predate the shut
}

// loggedIn lifts the login deadline. Only the loop calls it (the session
// handles requests on the loop).
func (pc *pollConn) loggedIn() {
	delete(pc.loop.loginPending, pc)
}

func (pc *pollConn) closeNow() {
	unix.Close(pc.fd)
	pc.fd = -1
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
