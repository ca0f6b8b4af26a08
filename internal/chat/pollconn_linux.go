package chat

import (
	"errors"
	"sync/atomic"
	"time"

	"golang.org/x/sys/unix"
)

// pollConn carries a session on an event loop.
type pollConn struct {
	sess *session
	loop *loop

	// Owned by the loop.
	fd            int // -1 once closed
	batch         []byte
	written       int     // bytes of batch already written
	flushedTick   uint64  // the loop's tick count when a big batch was last taken
	stalledSince  instant // zero unless batch waits for the socket; its last progress
	loginDeadline instant
	resumeAt      instant // zero unless flood control holds back reading until then
	wantWrite     bool    // EPOLLOUT is in the epoll set
	readDone      bool    // the read side ended; only draining is left
	queued        bool    // on the loop's flush list
	// away: a goroutine has the session's reading side (cluster mode: a
	// request or a logout that waits on NATS). The socket is out of the
	// epoll set meanwhile; it is still written when output comes.
	away bool

	// Set by the goroutine that had the session, before it gives it back.
	backWait time.Duration
	backOK   bool

	notified  atomic.Bool // on the loop's woken list
	shutNow   atomic.Bool // end asked for the socket to close at once
	loginDone atomic.Bool // logged in: no login deadline (set on the reading side)
}

const pollIn = unix.EPOLLIN | unix.EPOLLRDHUP

// events is what pc waits for in the epoll set.
func (pc *pollConn) events() uint32 {
	var ev uint32
	if !pc.readDone && pc.resumeAt == 0 {
		ev = pollIn
	}
	if pc.wantWrite {
		ev |= unix.EPOLLOUT
	}
	return ev
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
			pc.batch, closed = pc.sess.takeOut(pc.batch)
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
	if pc.stalledSince == 0 || progressed {
		pc.stalledSince = nowInstant()
		l.stalled[pc] = struct{}{}
	}
	if !pc.wantWrite {
		pc.wantWrite = true
		_ = l.ctl(unix.EPOLL_CTL_MOD, pc.fd, pc.events(), pc.sess.id)
	}
}

// drained notes that pc's last batch is fully written.
func (l *loop) drained(pc *pollConn) {
	if pc.stalledSince != 0 {
		pc.stalledSince = 0
		delete(l.stalled, pc)
	}
	if pc.wantWrite {
		pc.wantWrite = false
		_ = l.ctl(unix.EPOLL_CTL_MOD, pc.fd, pc.events(), pc.sess.id)
	}
}

// close closes pc's socket and, unless a goroutine has the session (back
// finishes then), finishes the session.
func (l *loop) close(pc *pollConn) {
	if pc.fd < 0 {
		return
	}
	delete(l.loginPending, pc)
	delete(l.stalled, pc)
	delete(l.holding, pc)
	delete(l.heldBack, pc)
	pc.closeNow()
	if !pc.away {
		l.finish(pc)
	}
}

// finish is a closed pc's last step: its reading side stops, if it has
// not (ended elsewhere; that reason stands), and the session is closed.
func (l *loop) finish(pc *pollConn) {
	if !pc.readDone {
		pc.readDone = true
		if l.stopReading(pc, ReasonReset) {
			return // back finishes it
		}
	}
	delete(l.conns, pc.sess.id)
	pc.sess.closed()
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

// loggedIn lifts the login deadline. The reading side calls it: the loop,
// or the goroutine that has the session.
func (pc *pollConn) loggedIn() {
	pc.loginDone.Store(true)
}

func (pc *pollConn) closeNow() {
	unix.Close(pc.fd)
	pc.fd = -1
}
