package chat

import (
	"crypto/tls"
	"errors"
	"io"
	"net"
	"os"
	"runtime/debug"
	"sync"
	"time"
)

const (
	// readBufferBytes is how much one read asks the kernel for: many
	// pipelined requests are parsed per read. Before login, when a line is
	// at most preLoginMaxLine, a connection reads into a buffer of
	// preLoginReadBytes, so one that never logs in costs little.
	readBufferBytes   = 16 << 10
	preLoginReadBytes = 1 << 10
	// writeChunkBytes is the most one write with one deadline carries.
	writeChunkBytes = 64 << 10
	// quietAfter is how long a connection goes without traffic before it
	// gives back its big buffers; a busy one keeps them.
	quietAfter = 100 * time.Millisecond
)

// connLink carries a session over any net.Conn (TLS, or where there is no
// event loop) with two goroutines: the read loop (the one that runs serve)
// reads and handles requests; the write loop writes what the outbox holds.
type connLink struct {
	sess       *session
	conn       net.Conn
	raw        net.Conn      // the socket under conn (under TLS, say), closed to end at once
	wakeup     chan struct{} // holds a token while there may be bytes to write
	writerDone chan struct{} // closed when the write loop has returned
	shutOnce   sync.Once
	stopped    chan struct{} // closed by the first shut: a read loop held back by flood control stops waiting
}

func newConnLink(s *session, conn net.Conn) *connLink {
	l := &connLink{sess: s, conn: conn, raw: rawConn(conn), wakeup: make(chan struct{}, 1), writerDone: make(chan struct{}), stopped: make(chan struct{})}
	s.link = l
	s.mayBlock = true // its read loop is the connection's own goroutine
	return l
}

func (l *connLink) wake() {
	select {
	case l.wakeup <- struct{}{}:
	default: // a wake-up is already pending
	}
}

func (l *connLink) shut(graceful bool) {
	l.shutOnce.Do(func() { close(l.stopped) })
	l.wake() // the write loop sees the closed outbox: it drains it, or fails
	if graceful {
		_ = l.conn.SetReadDeadline(time.Now()) // stop the read loop, if it still runs
		return
	}
	// Not conn.Close: closing a TLS conn writes an alert, which could block
	// the sender that ends a slow consumer.
	l.raw.Close()
}

// rawConn returns the socket under a wrapping conn such as *tls.Conn.
func rawConn(conn net.Conn) net.Conn {
	if w, ok := conn.(interface{ NetConn() net.Conn }); ok {
		return w.NetConn()
	}
	return conn
}

func (l *connLink) loggedIn() {
	_ = l.conn.SetReadDeadline(time.Time{})
}

// serve runs the connection until it ends, then cleans up after it.
func (l *connLink) serve() {
	if tcp, ok := l.raw.(*net.TCPConn); ok {
		_ = tcp.SetKeepAliveConfig(keepAlive)
	}
	_ = l.conn.SetReadDeadline(time.Now().Add(l.sess.srv.cfg.LoginTimeout))
	go l.writeLoop()
	l.sess.readStopped(l.readLoop())
	<-l.writerDone
	closeFor(l.conn, l.sess.reason)
	l.sess.closed()
}

// readLoop reads and handles requests until the connection ends, and
// returns why it ended. While the session holds big buffers, a read waits
// at most quietAfter: then they go back (the framer's if no line is half
// read).
func (l *connLink) readLoop() CloseReason {
	if reason, ok := l.handshake(); !ok {
		return reason
	}
	buf := make([]byte, preLoginReadBytes)
	quietDeadline := false // the read deadline is quietAfter's, not the login's
	for {
		n, err := l.conn.Read(buf)
		if n > 0 {
			wait, ok := l.sess.receive(buf[:n])
			for ok && wait > 0 { // flood control: the client waits, unread
				if !l.holdBack(wait) {
					return ReasonReset // ended meanwhile; that reason stands
				}
				wait, ok = 0, true
				if l.sess.holdingBack() {
					wait, ok = l.sess.resume()
				}
			}
			if !ok {
				return l.sess.stop
			}
			if len(buf) < readBufferBytes && l.sess.claim.Name != "" {
				buf = make([]byte, readBufferBytes)
			}
			if l.sess.claim.Name != "" && l.sess.holding() > keepIdleBytes {
				quietDeadline = true
				_ = l.conn.SetReadDeadline(time.Now().Add(quietAfter))
			}
		}
		if err == nil {
			continue
		}
		if quietDeadline && errors.Is(err, os.ErrDeadlineExceeded) && !l.isStopped() {
			quietDeadline = false
			l.sess.release()
			_ = l.conn.SetReadDeadline(time.Time{})
			continue
		}
		return readErrorReason(err)
	}
}

// handshake runs a TLS connection's handshake (within the login
// timeout, the read deadline set by serve), so that a failed one is
// logged with why: a client author's wrong certificate or protocol shows
// in the log, not as a bare reset.
func (l *connLink) handshake() (CloseReason, bool) {
	tc, ok := l.conn.(*tls.Conn)
	if !ok {
		return 0, true
	}
	err := tc.Handshake()
	switch {
	case err == nil:
		return 0, true
	case errors.Is(err, os.ErrDeadlineExceeded):
		return ReasonLoginTimeout, false
	case errors.Is(err, io.EOF):
		return ReasonClientClosed, false
	}
	l.sess.log().Info("tls handshake failed", "err", err)
	return ReasonTLSHandshake, false
}

func (l *connLink) isStopped() bool {
	select {
	case <-l.stopped:
		return true
	default:
		return false
	}
}

// holdBack waits d (flood control: the client waits, unread), or less if
// the connection is shut meanwhile; then it returns false.
func (l *connLink) holdBack(d time.Duration) bool {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
		return true
	case <-l.stopped:
		return false
	}
}

func readErrorReason(err error) CloseReason {
	switch {
	case errors.Is(err, io.EOF):
		return ReasonClientClosed
	case errors.Is(err, os.ErrDeadlineExceeded):
		return ReasonLoginTimeout // the only read deadline is the login's
	}
	return ReasonReset
}

// writeLoop writes whatever is queued, in as few writes as it can, until
// the queue is closed and empty or a write fails. A busy connection keeps
// its buffers from one batch to the next; quietAfter without output, it
// gives back the big ones.
func (l *connLink) writeLoop() {
	defer close(l.writerDone)
	defer func() {
		if p := recover(); p != nil {
			l.sess.log().Error("panic in connection writer", "panic", p, "stack", string(debug.Stack()))
			l.sess.end(ReasonInternalError)
		}
	}()
	var batch []byte
	quiet := time.NewTimer(quietAfter)
	quiet.Stop()
	defer quiet.Stop()
	for {
		select {
		case <-l.wakeup:
		case <-quiet.C:
			batch = dropBig(batch)
			l.sess.out.release()
			continue
		}
		for {
			var closed bool
			batch, closed = l.sess.takeOut(batch)
			if len(batch) == 0 {
				if closed {
					return
				}
				break // drained: the last take released the written batch
			}
			if err := l.write(batch); err != nil {
				l.sess.end(writeErrorReason(err))
				return
			}
		}
		if cap(batch) > keepIdleBytes {
			quiet.Reset(quietAfter)
		}
	}
}

// write writes b in chunks, each with its own deadline, so that a client
// that reads slowly but steadily is not taken for a stalled one.
func (l *connLink) write(b []byte) error {
	for len(b) > 0 {
		chunk := b[:min(len(b), writeChunkBytes)]
		_ = l.conn.SetWriteDeadline(time.Now().Add(l.sess.srv.cfg.WriteTimeout))
		n, err := l.conn.Write(chunk)
		l.sess.srv.counters.bytesOut.Add(uint64(n))
		b = b[n:]
		if err != nil {
			return err
		}
	}
	return nil
}

func writeErrorReason(err error) CloseReason {
	if errors.Is(err, os.ErrDeadlineExceeded) {
		return ReasonSlowConsumer
	}
	return ReasonReset
}
