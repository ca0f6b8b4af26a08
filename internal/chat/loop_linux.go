package chat

import (
	"errors"
	"fmt"
	"os"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"golang.org/x/sys/unix"
)

const (
	// loopReadBytes is each event loop's read buffer, shared by all its
	// connections: a connection holds no read buffer while idle.
	loopReadBytes = 64 << 10
	// loopEvents is how many epoll events a loop takes per wait.
	loopEvents = 256
	// tickInterval is how often a loop checks login deadlines, stalled
	// writes and connections held back by flood control, retries a paused
	// accept, and looks whether the listener was closed.
	tickInterval = 100 * time.Millisecond
)

// Tokens in epoll event data that are not connection ids. Connection ids
// start at 1 and never reach these.
const (
	tokenListener = ^uint64(0)
	tokenWake     = ^uint64(0) - 1
)

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
	holding      map[*pollConn]struct{} // conns that may hold big buffers
	heldBack     map[*pollConn]struct{} // conns not read until their resumeAt (flood control)
	ticks        uint64                 // ticks so far
	nextTick     instant
	acceptPaused instant       // zero, or when accepting resumes after an error
	backoff      time.Duration // the last pause after an accept error
	listening    bool          // the listener is in this loop's epoll set
	unlistened   bool          // this loop is done with the listener for good

	// In cluster mode: the epoll set as a file in Go's netpoller (see waitEvents).
	epollFile *os.File
	epollConn syscall.RawConn

	sleeping atomic.Bool // in or about to enter epoll_wait: wakers must write wakeFd
	stopping atomic.Bool // Shutdown began: accept no more, exit once conns are gone

	mu       sync.Mutex
	woken    []*pollConn // guarded by mu: conns with news from other goroutines
	returned []*pollConn // guarded by mu: conns whose goroutine gave the session back
	spare    []*pollConn // owned by the loop: the other woken list, swapped in
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
		heldBack:     make(map[*pollConn]struct{}),
	}
	var err error
	if l.epfd, err = unix.EpollCreate1(unix.EPOLL_CLOEXEC); err != nil {
		return nil, fmt.Errorf("epoll_create: %w", err)
	}
	if l.wakeFd, err = unix.Eventfd(0, unix.EFD_NONBLOCK|unix.EFD_CLOEXEC); err != nil {
		l.closeFds()
		return nil, fmt.Errorf("eventfd: %w", err)
	}
	if err = l.ctl(unix.EPOLL_CTL_ADD, l.wakeFd, unix.EPOLLIN, tokenWake); err == nil {
		err = l.listen(true)
	}
	if err == nil && p.srv.cluster != nil {
		err = l.pollInGo()
	}
	if err != nil {
		l.closeFds()
		return nil, err
	}
	return l, nil
}

// pollInGo puts the epoll set into Go's netpoller, for waitEvents.
func (l *loop) pollInGo() error {
	if err := unix.SetNonblock(l.epfd, true); err != nil {
		return fmt.Errorf("epoll set non-blocking: %w", err)
	}
	l.epollFile = os.NewFile(uintptr(l.epfd), "epoll")
	// A deadline is only possible on a file in the netpoller.
	err := l.epollFile.SetReadDeadline(time.Time{})
	if err == nil {
		l.epollConn, err = l.epollFile.SyscallConn()
	}
	if err != nil {
		return fmt.Errorf("epoll set in the netpoller: %w", err)
	}
	return nil
}

// closeFds closes the loop's epoll set and eventfd; the file closes the set
// if it has one, so that its number is closed once.
func (l *loop) closeFds() {
	if l.epollFile != nil {
		l.epollFile.Close()
	} else if l.epfd >= 0 {
		unix.Close(l.epfd)
	}
	if l.wakeFd >= 0 {
		unix.Close(l.wakeFd)
	}
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
		if l.p.lnGone.Load() && !l.unlistened {
			_ = l.listen(false)
			l.unlistened = true
			l.p.unlisten()
		}
		if l.stopping.Load() {
			_ = l.listen(false)
			if len(l.conns) == 0 {
				return
			}
		}
		n, err := l.waitEvents()
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
		if now := nowInstant(); now >= l.nextTick {
			l.tick(now)
		}
	}
}

// waitEvents waits for events, until the next tick at most. A single server
// waits in epoll_wait: one system call. In cluster mode the loop waits in
// Go's netpoller, which watches the epoll set as a file: the goroutines of
// the NATS client and of the cluster then run on this loop's thread while
// it waits, where epoll_wait would hold the thread and leave them to
// threads woken for each message (cmd/chat-server runs one thread per
// loop in cluster mode; docs/benchmarks.md has the measurements).
func (l *loop) waitEvents() (int, error) {
	ms := l.waitMillis()
	if l.epollConn == nil || ms == 0 {
		return unix.EpollWait(l.epfd, l.events, ms)
	}
	_ = l.epollFile.SetReadDeadline(time.Now().Add(time.Duration(ms) * time.Millisecond))
	n := 0
	var err error
	rerr := l.epollConn.Read(func(fd uintptr) bool {
		n, err = unix.EpollWait(int(fd), l.events, 0)
		return n > 0 || err != nil // else wait until the set is readable
	})
	if rerr != nil && !errors.Is(rerr, os.ErrDeadlineExceeded) {
		return 0, rerr
	}
	return max(n, 0), err
}

// waitMillis says how long epoll_wait may block: not at all if there is
// news already, else until the next tick. It announces the sleep first, so
// a notify racing with it writes the eventfd.
func (l *loop) waitMillis() int {
	l.sleeping.Store(true)
	l.mu.Lock()
	news := len(l.woken) > 0 || len(l.returned) > 0
	l.mu.Unlock()
	if news {
		return 0
	}
	return max(int(l.nextTick.sub(nowInstant())/time.Millisecond), 1)
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

// takeWoken moves the conns other goroutines notified onto the flush
// list, and takes back the sessions goroutines are done with.
func (l *loop) takeWoken() {
	l.mu.Lock()
	woken := l.woken
	l.woken = l.spare
	var returned []*pollConn
	if len(l.returned) > 0 {
		returned, l.returned = l.returned, nil
	}
	l.mu.Unlock()
	for i, pc := range woken {
		pc.notified.Store(false)
		l.queueFlush(pc)
		woken[i] = nil
	}
	l.spare = woken[:0]
	for _, pc := range returned {
		l.back(pc)
	}
}

// goAway hands pc's session to a goroutine of its own that may wait on
// the cluster (run), which calls giveBack when done. The socket leaves the
// epoll set meanwhile: nothing is read, and a hang-up cannot spin the loop.
func (l *loop) goAway(pc *pollConn, run func()) {
	pc.away = true
	if pc.fd >= 0 {
		_ = l.ctl(unix.EPOLL_CTL_DEL, pc.fd, 0, 0)
	}
	go run()
}

// giveBack returns pc's session to the loop, from the goroutine that had
// it, with what handling returned.
func (l *loop) giveBack(pc *pollConn, wait time.Duration, ok bool) {
	pc.backWait, pc.backOK = wait, ok
	l.mu.Lock()
	l.returned = append(l.returned, pc)
	l.mu.Unlock()
	if l.sleeping.Swap(false) {
		l.wakeUp()
	}
}

// back takes pc's session back from its goroutine.
func (l *loop) back(pc *pollConn) {
	pc.away = false
	switch {
	case pc.fd < 0:
		l.finish(pc) // closed meanwhile
		return
	case l.ctl(unix.EPOLL_CTL_ADD, pc.fd, pc.events(), pc.sess.id) != nil:
		pc.sess.end(ReasonReset)
	}
	l.queueFlush(pc)
	if !pc.readDone { // an offloaded request, not a logout
		l.handled(pc, pc.backWait, pc.backOK)
	}
}

// stopReading tells pc's session its reading side stopped. In cluster
// mode that waits on NATS (the logout), so a goroutine does it and true
// is returned: back goes on once it is done.
func (l *loop) stopReading(pc *pollConn, reason CloseReason) bool {
	if l.srv.cluster == nil {
		pc.sess.readStopped(reason)
		return false
	}
	l.goAway(pc, func() {
		pc.sess.readStopped(reason)
		l.giveBack(pc, 0, false)
	})
	return true
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
// WriteTimeout, reads again the ones flood control held back whose time
// came, resumes a paused accept, and looks whether the listener was
// closed.
func (l *loop) tick(now instant) {
	l.nextTick = now.add(tickInterval)
	l.ticks++
	for pc := range l.holding {
		if pc.flushedTick+1 < l.ticks && pc.written == len(pc.batch) && !pc.away {
			// Quiet for a whole tick: give its big buffers back.
			delete(l.holding, pc)
			pc.batch = dropBig(pc.batch)
			pc.sess.out.release()
			pc.sess.release()
		}
	}
	for pc := range l.loginPending {
		switch {
		case pc.loginDone.Load():
			delete(l.loginPending, pc)
		case now > pc.loginDeadline && !pc.away:
			l.endRead(pc, ReasonLoginTimeout)
		}
	}
	for pc := range l.stalled {
		if now.sub(pc.stalledSince) > l.srv.cfg.WriteTimeout {
			delete(l.stalled, pc)
			pc.sess.log().Warn("slow consumer: write stalled", "timeout", l.srv.cfg.WriteTimeout)
			pc.sess.end(ReasonSlowConsumer)
		}
	}
	for pc := range l.heldBack {
		if now >= pc.resumeAt {
			l.resume(pc)
		}
	}
	if l.acceptPaused != 0 && now > l.acceptPaused && !l.stopping.Load() && !l.p.lnGone.Load() {
		l.acceptPaused = 0
		_ = l.listen(true)
	}
	l.p.checkListener()
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
		wait, ok := pc.sess.receive(l.buf[:n])
		if pc.sess.holding() > keepIdleBytes {
			pc.flushedTick = l.ticks
			l.holding[pc] = struct{}{}
		}
		l.handled(pc, wait, ok)
	case n == 0:
		l.endRead(pc, ReasonClientClosed)
	case errors.Is(err, unix.EAGAIN), errors.Is(err, unix.EINTR):
	default:
		l.endRead(pc, ReasonReset)
	}
}

// handled goes on after the session handled input: it ends, waits for a
// goroutine (offloading), or is held back by flood control.
func (l *loop) handled(pc *pollConn, wait time.Duration, ok bool) {
	switch {
	case !ok:
		l.endRead(pc, pc.sess.stop)
	case pc.sess.offloading():
		l.goAway(pc, func() {
			pc.sess.offload(func(wait time.Duration, ok bool) { l.giveBack(pc, wait, ok) })
		})
	case wait > 0:
		l.holdBack(pc, nowInstant().add(wait))
	}
}

// holdBack stops reading pc until resume (flood control): what the
// client sends waits in the socket.
func (l *loop) holdBack(pc *pollConn, resume instant) {
	pc.resumeAt = resume
	l.heldBack[pc] = struct{}{}
	_ = l.ctl(unix.EPOLL_CTL_MOD, pc.fd, pc.events(), pc.sess.id)
}

// resume ends pc's hold: what flood control kept is handled, and then
// the socket is read again, unless the session must wait once more.
func (l *loop) resume(pc *pollConn) {
	delete(l.heldBack, pc)
	pc.resumeAt = 0
	_ = l.ctl(unix.EPOLL_CTL_MOD, pc.fd, pc.events(), pc.sess.id)
	if pc.sess.holdingBack() {
		wait, ok := pc.sess.resume()
		l.handled(pc, wait, ok)
	}
}

// endRead stops reading pc: a half-closed socket stays readable, and the
// loop must not be woken for it again.
func (l *loop) endRead(pc *pollConn, reason CloseReason) {
	pc.readDone = true
	delete(l.loginPending, pc)
	delete(l.heldBack, pc)
	_ = l.ctl(unix.EPOLL_CTL_MOD, pc.fd, pc.events(), pc.sess.id)
	l.stopReading(pc, reason)
}
