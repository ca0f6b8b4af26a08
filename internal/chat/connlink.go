package chat

import (
	"errors"
	"io"
	"net"
	"os"
	"runtime/debug"
	"time"
)

const (
	// readBufferBytes is how much one read asks the kernel for: many
	// pipelined requests are parsed per read.
	readBufferBytes = 16 << 10
	// writeChunkBytes is the most one write with one deadline carries.
	writeChunkBytes = 64 << 10
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
}

func newConnLink(s *session, conn net.Conn) *connLink {
	l := &connLink{sess: s, conn: conn, raw: rawConn(conn), wakeup: make(chan struct{}, 1), writerDone: make(chan struct{})}
	s.link = l
	return l
}

func (l *connLink) wake() {
	select {
	case l.wakeup <- struct{}{}:
	default: // a wake-up is already pending
	}
}

func (l *connLink) shut(graceful bool) {
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
	l.sess.readEnded(l.readLoop())
	<-l.writerDone
	l.conn.Close()
	l.sess.finish()
}

// readLoop reads and handles requests until the connection ends, and
// returns why it ended.
func (l *connLink) readLoop() CloseReason {
	buf := make([]byte, readBufferBytes)
	for {
		n, err := l.conn.Read(buf)
		if n > 0 && !l.sess.receive(buf[:n]) {
			return l.sess.stop
		}
		if err != nil {
			return readErrorReason(err)
		}
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
// the queue is closed and empty or a write fails.
func (l *connLink) writeLoop() {
	defer close(l.writerDone)
	defer func() {
		if p := recover(); p != nil {
			l.sess.log().Error("panic in connection writer", "panic", p, "stack", string(debug.Stack()))
			l.sess.end(ReasonInternalError)
		}
	}()
	var batch []byte
	for range l.wakeup {
		for {
			var closed bool
			batch, closed = l.sess.out.take(batch)
			if len(batch) == 0 {
				if closed {
					return
				}
				// Drained: the last take released the written batch.
				// Buffers are not kept: TLS is not the fast path, and an
				// idle connection should stay small.
				batch = dropBig(batch)
				l.sess.out.release()
				break
			}
			if err := l.write(batch); err != nil {
				l.sess.end(writeErrorReason(err))
				return
			}
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
