package web

import (
	"bytes"
	"context"
	"errors"
	"io"
	"net"
	"os"
	"sync"
	"time"

	"github.com/coder/websocket"

	"chatserver/internal/chat"
)

// closeWithin bounds the close handshake with a browser.
const closeWithin = time.Second

// conn is a WebSocket connection as the chat server sees it: a net.Conn
// that carries the protocol's lines, one per text message. Reading yields
// each message as one line followed by "\n" (one trailing "\n" or "\r\n"
// in a message is tolerated); a binary message, or one with a line break
// inside, yields an empty line, which the server answers BAD-RQST-HDR.
// Writing sends each line written as one text message, without its "\n".
// Deadlines work as on a socket: a read past its deadline fails, and the
// connection goes on.
type conn struct {
	ws            *websocket.Conn
	local, remote net.Addr
	overTLS       bool
	ctx           context.Context // the connection's lifetime: cancelled by Close
	cancel        context.CancelFunc

	lines chan []byte // filled by the reader goroutine, in order; closed at its end
	mu    sync.Mutex
	err   error // guarded by mu: why lines was closed
	rd    time.Time
	rdSet chan struct{} // guarded by mu: closed when the read deadline changes

	// Owned by the one goroutine that reads (the session's read loop).
	rest []byte // what is left of the line being read

	// Owned by the one goroutine that writes (the session's write loop).
	partial []byte // the start of a line whose "\n" has not been written yet
	wd      time.Time
}

var (
	_ net.Conn     = (*conn)(nil)
	_ chat.Carried = (*conn)(nil)
)

func newConn(ws *websocket.Conn, local, remote net.Addr, overTLS bool, pingEvery, pongWithin time.Duration) *conn {
	ctx, cancel := context.WithCancel(context.Background())
	c := &conn{ws: ws, local: local, remote: remote, overTLS: overTLS, ctx: ctx, cancel: cancel, lines: make(chan []byte), rdSet: make(chan struct{})}
	go c.readMessages()
	go c.ping(pingEvery, pongWithin)
	return c
}

// readMessages turns messages into lines until the connection ends.
func (c *conn) readMessages() {
	defer close(c.lines)
	for {
		typ, msg, err := c.ws.Read(c.ctx)
		if err != nil {
			c.mu.Lock()
			c.err = readError(err)
			c.mu.Unlock()
			return
		}
		select {
		case c.lines <- asLine(typ, msg):
		case <-c.ctx.Done():
			return
		}
	}
}

// asLine is the line a message stands for.
func asLine(typ websocket.MessageType, msg []byte) []byte {
	msg = bytes.TrimSuffix(msg, []byte("\n"))
	if typ != websocket.MessageText || bytes.IndexByte(msg, '\n') >= 0 {
		return []byte("\n") // not one line: BAD-RQST-HDR
	}
	return append(msg, '\n') // a "\r" before it goes as on a socket
}

// readError is what Read returns once the browser is gone: io.EOF for a
// close it began, as for a socket's FIN.
func readError(err error) error {
	switch websocket.CloseStatus(err) {
	case websocket.StatusNormalClosure, websocket.StatusGoingAway, websocket.StatusNoStatusRcvd:
		return io.EOF
	}
	return err
}

// ping drops a browser that does not answer pings.
func (c *conn) ping(pingEvery, pongWithin time.Duration) {
	t := time.NewTicker(pingEvery)
	defer t.Stop()
	for {
		select {
		case <-c.ctx.Done():
			return
		case <-t.C:
		}
		ctx, cancel := context.WithTimeout(c.ctx, pongWithin)
		err := c.ws.Ping(ctx)
		cancel()
		if err != nil {
			c.Close()
			return
		}
	}
}

func (c *conn) Read(p []byte) (int, error) {
	for len(c.rest) == 0 {
		c.mu.Lock()
		deadline, changed := c.rd, c.rdSet
		c.mu.Unlock()
		var expired <-chan time.Time
		if !deadline.IsZero() {
			wait := time.Until(deadline)
			if wait <= 0 {
				return 0, os.ErrDeadlineExceeded
			}
			t := time.NewTimer(wait)
			expired = t.C
			defer t.Stop() // the loop goes round again only when the deadline changes
		}
		select {
		case line, ok := <-c.lines:
			if !ok {
				c.mu.Lock()
				defer c.mu.Unlock()
				return 0, c.err
			}
			c.rest = line
		case <-expired:
			return 0, os.ErrDeadlineExceeded
		case <-changed:
		}
	}
	n := copy(p, c.rest)
	c.rest = c.rest[n:]
	return n, nil
}

func (c *conn) Write(p []byte) (int, error) {
	ctx, cancel := c.ctx, context.CancelFunc(func() {})
	if !c.wd.IsZero() {
		ctx, cancel = context.WithDeadline(c.ctx, c.wd)
	}
	defer cancel()
	for rest := p; len(rest) > 0; {
		i := bytes.IndexByte(rest, '\n')
		if i < 0 {
			c.partial = append(c.partial, rest...)
			break
		}
		line := rest[:i]
		if len(c.partial) > 0 {
			line = append(c.partial, line...)
			c.partial = c.partial[:0]
		}
		if err := c.ws.Write(ctx, websocket.MessageText, line); err != nil {
			if errors.Is(err, context.DeadlineExceeded) {
				err = os.ErrDeadlineExceeded
			}
			return len(p) - len(rest), err
		}
		rest = rest[i+1:]
	}
	return len(p), nil
}

// Close closes the connection at once, without a close handshake: it must
// not wait on a browser that does not read.
func (c *conn) Close() error {
	c.cancel()
	return c.ws.CloseNow()
}

// CloseFor closes the connection with a close code that tells the page why
// (see closeStatus), waiting at most closeWithin for the browser.
func (c *conn) CloseFor(reason chat.CloseReason) error {
	done := make(chan error, 1)
	go func() { done <- c.ws.Close(closeStatus(reason), reason.String()) }()
	select {
	case err := <-done:
		c.cancel()
		return err
	case <-time.After(closeWithin):
		return c.Close()
	}
}

// closeStatus is the close code the page acts on: it reconnects after
// 1001 (the server restarts), 1011 and 1012; it stops, and says why,
// after 1008 (a limit of this connection's: slow, flooding, too slow to
// log in) and 1013 (the server is full). 1000 is a close the page asked
// for.
func closeStatus(reason chat.CloseReason) websocket.StatusCode {
	switch reason {
	case chat.ReasonClientClosed:
		return websocket.StatusNormalClosure
	case chat.ReasonServerShutdown:
		return websocket.StatusGoingAway
	case chat.ReasonFenced:
		return websocket.StatusServiceRestart
	case chat.ReasonSlowConsumer, chat.ReasonFlood, chat.ReasonLoginTimeout:
		return websocket.StatusPolicyViolation
	case chat.ReasonConnLimit, chat.ReasonIPLimit:
		return websocket.StatusTryAgainLater
	}
	return websocket.StatusInternalError
}

// Transport says a WebSocket carries the connection (chat.Carried).
func (c *conn) Transport() (chat.Transport, bool) { return chat.TransportWS, c.overTLS }

func (c *conn) LocalAddr() net.Addr  { return c.local }
func (c *conn) RemoteAddr() net.Addr { return c.remote }

func (c *conn) SetDeadline(t time.Time) error {
	c.SetReadDeadline(t)
	return c.SetWriteDeadline(t)
}

func (c *conn) SetReadDeadline(t time.Time) error {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.rd = t
	close(c.rdSet)
	c.rdSet = make(chan struct{})
	return nil
}

// SetWriteDeadline sets the deadline of the writes that follow; it is set
// by the goroutine that writes, as the server does.
func (c *conn) SetWriteDeadline(t time.Time) error {
	c.wd = t
	return nil
}
