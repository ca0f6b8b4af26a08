// Package client is a small client library for the chat protocol: the
// terminal client (cmd/chat-client) is built on it.
//
// A Conn is one connection to a server. Its methods may be called from
// many goroutines at once: requests are pipelined, and each call gets the
// reply to its own request, because replies come in request order.
//
// Goroutines: each Conn has two, both started by New and both waited for
// by Close.
//
//   - The read loop owns the socket's read side. It reads reply lines
//     through a bufio.Reader (so a line split across many TCP reads is put
//     back together), parses them with protocol.ParseReply, appends each
//     DELIVERY to an unbounded delivery queue, and hands every other reply
//     to the oldest pending request. When the connection ends it fails
//     every pending request, ends the delivery queue and closes Done.
//   - The delivery pump moves deliveries from that queue to the Deliveries
//     channel. The read loop never waits for a caller to take a delivery,
//     so replies keep flowing however slowly deliveries are read; the queue
//     grows instead, without bound.
//
// Callers write their own requests, one at a time: a caller takes the write
// token, appends a waiter to the pending queue and writes the request
// before it gives the token back, so the queue is in the order the requests
// went out. A call whose context ends returns ctx.Err() at once; its waiter
// stays queued, and the read loop drops its reply when it comes. A context
// that ends while the request is still being written interrupts the write:
// if nothing was written the waiter leaves the queue, and if part of the
// line was, the connection ends, since the stream can no longer be trusted.
//
// Lock order: the write token (writeSem), then mu. No I/O or channel send
// that can block happens under mu; the write token is held across the
// write of one request, and only that.
//
// A reply line longer than maxReplyBytes (16 MiB) or one that is not a
// reply of the protocol ends the connection.
package client

import (
	"bufio"
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"net"
	"strings"
	"sync"
	"time"

	"chatserver/internal/protocol"
)

// The outcomes of requests that the server refused for a reason of its
// own; compare with errors.Is.
var (
	// ErrNameInUse is Login's error when another user has the name (IN-USE).
	ErrNameInUse = errors.New("name already in use")
	// ErrServerBusy is Login's error when the server has as many users as
	// it allows (BUSY). A connection the server refuses outright (it has
	// too many connections) ends with an error that wraps it too.
	ErrServerBusy = errors.New("server is full")
	// ErrBadDestUser is Send's error when the recipient is not logged in
	// (BAD-DEST-USER).
	ErrBadDestUser = errors.New("destination user does not exist")
)

// ErrClosed is returned by every call once the connection has ended, and
// by Err. When the connection ended for another reason than Close (the
// server closed it, a read or write failed), the error wraps that cause
// too: errors.Is(err, io.EOF) reports a server that closed the connection.
var ErrClosed = errors.New("client: connection closed")

// ErrLineBreak is returned, and nothing is sent, when an argument of a
// request holds "\n" or "\r": the line would not mean what the caller
// meant, and a second line would put the replies out of step.
var ErrLineBreak = errors.New("client: request holds a line break")

// ErrUnexpectedReply is wrapped by the error a call returns when the server
// answers a request with a reply that request cannot have, such as SEND-OK
// to LIST.
var ErrUnexpectedReply = errors.New("client: unexpected reply")

// RequestError is the error for a request the server found malformed: it
// answered BAD-RQST-HDR (the request is unknown, or not allowed now, like
// LIST before login) or BAD-RQST-BODY (its body breaks the grammar, like a
// name with a comma or an empty message).
type RequestError struct {
	Command protocol.Command   // the request
	Reply   protocol.ReplyKind // protocol.ReplyBadHeader or protocol.ReplyBadBody
}

func (e *RequestError) Error() string {
	return fmt.Sprintf("server answered %v with %v", e.Command, e.Reply)
}

// Delivery is a message another user (or this one) sent to this user.
type Delivery struct {
	From    string
	Message string
}

const (
	// maxReplyBytes caps one reply line; the server's default request cap
	// is 1 MiB, so a DELIVERY is a little more.
	maxReplyBytes = 16 << 20
	// readBufferBytes is the size of the read loop's bufio.Reader.
	readBufferBytes = 64 << 10
	// keepBatchDeliveries is the largest delivery batch the pump keeps
	// for reuse.
	keepBatchDeliveries = 1024
)

// Conn is a connection to a chat server. Create it with Dial or New; call
// Close when done with it, also after the server closed it, to stop its
// goroutines.
type Conn struct {
	conn net.Conn

	// writeSem holds a token while a caller writes a request; it owns wbuf
	// and the socket's write side.
	writeSem chan struct{}
	wbuf     []byte

	mu         sync.Mutex
	pending    []*waiter  // guarded by mu; requests sent and not yet answered, oldest first
	err        error      // guarded by mu; why the connection ended, set once
	deliveries []Delivery // guarded by mu; received and not yet handed to the pump
	readEnded  bool       // guarded by mu; no more deliveries will be queued

	pumpWake  chan struct{}  // holds a token when the pump may have deliveries to send
	deliverCh chan Delivery  // the pump sends, Deliveries hands it out; closed by the pump
	done      chan struct{}  // closed by the read loop when it has ended
	quit      chan struct{}  // closed by Close: the pump drops what is left
	closeOnce sync.Once      // guards closing quit
	wg        sync.WaitGroup // the read loop and the pump

	// Owned by the read loop.
	r    *bufio.Reader
	long []byte // a line longer than r's buffer
}

// waiter is a request waiting for its reply.
type waiter struct {
	ch chan result // buffered: the read loop never blocks on it
}

type result struct {
	reply protocol.Reply
	err   error
}

// Dial connects to the chat server at addr ("host:port") over TCP.
func Dial(ctx context.Context, addr string) (*Conn, error) {
	return dial(ctx, &net.Dialer{}, addr)
}

// DialTLS connects to the chat server at addr over TLS, checking the
// server's certificate as cfg says. The handshake is done when it returns.
func DialTLS(ctx context.Context, addr string, cfg *tls.Config) (*Conn, error) {
	return dial(ctx, &tls.Dialer{Config: cfg}, addr)
}

func dial(ctx context.Context, d interface {
	DialContext(ctx context.Context, network, addr string) (net.Conn, error)
}, addr string) (*Conn, error) {
	nc, err := d.DialContext(ctx, "tcp", addr)
	if err != nil {
		return nil, err
	}
	return New(nc), nil
}

// New returns a Conn that speaks the protocol over nc, which it owns from
// now on (for example a *tls.Conn). It starts the Conn's goroutines.
func New(nc net.Conn) *Conn {
	c := &Conn{
		conn:      nc,
		writeSem:  make(chan struct{}, 1),
		pumpWake:  make(chan struct{}, 1),
		deliverCh: make(chan Delivery),
		done:      make(chan struct{}),
		quit:      make(chan struct{}),
		r:         bufio.NewReaderSize(nc, readBufferBytes),
	}
	c.wg.Add(2)
	go c.readLoop()
	go c.pump()
	return c
}

// Login logs in as name (HELLO-FROM). It returns ErrNameInUse, ErrServerBusy,
// a *RequestError (BAD-RQST-BODY for a name the server refuses,
// BAD-RQST-HDR when already logged in), or an error wrapping ErrClosed. A
// failed login leaves the connection open: Login may be called again.
func (c *Conn) Login(ctx context.Context, name string) error {
	if hasLineBreak(name) {
		return ErrLineBreak
	}
	rep, err := c.do(ctx, func(b []byte) []byte { return protocol.AppendHelloFrom(b, name) })
	if err != nil {
		return err
	}
	switch rep.Kind {
	case protocol.ReplyHello:
		if rep.Name == name {
			return nil
		}
	case protocol.ReplyInUse:
		return ErrNameInUse
	case protocol.ReplyBusy:
		return ErrServerBusy
	}
	return replyError(protocol.CmdHelloFrom, rep)
}

// List returns the names of the users logged in, in login order, this one
// included (LIST).
func (c *Conn) List(ctx context.Context) ([]string, error) {
	rep, err := c.do(ctx, protocol.AppendList)
	if err != nil {
		return nil, err
	}
	if rep.Kind == protocol.ReplyListOK {
		return rep.Names, nil
	}
	return nil, replyError(protocol.CmdList, rep)
}

// Send sends message to the user to (SEND). It returns nil once the server
// has queued the message for the recipient (SEND-OK), ErrBadDestUser when
// the recipient is not logged in, or a *RequestError (BAD-RQST-BODY for an
// empty message or a malformed name, BAD-RQST-HDR before login).
func (c *Conn) Send(ctx context.Context, to, message string) error {
	if hasLineBreak(to) || hasLineBreak(message) {
		return ErrLineBreak
	}
	rep, err := c.do(ctx, func(b []byte) []byte { return protocol.AppendSend(b, to, message) })
	if err != nil {
		return err
	}
	switch rep.Kind {
	case protocol.ReplySendOK:
		return nil
	case protocol.ReplyBadDestUser:
		return ErrBadDestUser
	}
	return replyError(protocol.CmdSend, rep)
}

// Deliveries returns the channel of messages sent to this user, in the
// order the server sent them. Nothing is dropped: deliveries not yet taken
// wait in an unbounded queue. When the connection ends, the channel is
// closed once every delivery received before the end has been taken, or at
// once when Close is called (the rest are dropped).
func (c *Conn) Deliveries() <-chan Delivery {
	return c.deliverCh
}

// Done returns a channel that is closed when the connection has ended: the
// server closed it, it failed, or Close was called. Every call still
// pending has been answered with an error by then.
func (c *Conn) Done() <-chan struct{} {
	return c.done
}

// Err returns nil while the connection is open; once Done is closed, it
// returns why it ended: ErrClosed itself after Close, else an error that
// wraps ErrClosed and the cause (io.EOF when the server closed the
// connection).
func (c *Conn) Err() error {
	select {
	case <-c.done:
	default:
		return nil
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.err
}

// Close closes the connection, fails every pending call with ErrClosed,
// closes the Deliveries channel, and waits for the Conn's goroutines to
// return. It returns the error of closing the socket, if Close was what
// ended the connection; later calls return nil.
func (c *Conn) Close() error {
	var err error
	c.closeOnce.Do(func() {
		err = c.shut(ErrClosed)
		close(c.quit)
	})
	c.wg.Wait()
	return err
}

// do sends the request that encode appends and waits for its reply.
func (c *Conn) do(ctx context.Context, encode func([]byte) []byte) (protocol.Reply, error) {
	if err := ctx.Err(); err != nil {
		return protocol.Reply{}, err
	}
	select {
	case c.writeSem <- struct{}{}:
	case <-ctx.Done():
		return protocol.Reply{}, ctx.Err()
	case <-c.done:
		return protocol.Reply{}, c.Err()
	}
	w := &waiter{ch: make(chan result, 1)}
	c.mu.Lock()
	err := c.err
	if err == nil {
		c.pending = append(c.pending, w)
	}
	c.mu.Unlock()
	if err == nil {
		c.wbuf = encode(c.wbuf[:0])
		err = c.write(ctx, w, c.wbuf)
	}
	<-c.writeSem
	if err != nil {
		return protocol.Reply{}, err
	}

	select {
	case r := <-w.ch:
		return r.reply, r.err
	case <-ctx.Done():
		// w stays queued, so the replies to later requests still go to
		// them; its own reply will land in w.ch and be dropped with it.
		return protocol.Reply{}, ctx.Err()
	}
}

// write writes one request, w's, with the write token held. If ctx ends
// first, the write is cut short: when nothing was written yet, w leaves
// the queue and the connection goes on; a partial line would corrupt the
// stream, so then the connection ends.
func (c *Conn) write(ctx context.Context, w *waiter, b []byte) error {
	if ctx.Done() != nil {
		interrupted := make(chan struct{})
		stop := context.AfterFunc(ctx, func() {
			_ = c.conn.SetWriteDeadline(time.Unix(1, 0))
			close(interrupted)
		})
		defer func() {
			if !stop() {
				<-interrupted
				_ = c.conn.SetWriteDeadline(time.Time{})
			}
		}()
	}
	n, err := c.conn.Write(b)
	if err == nil {
		return nil
	}
	if n == 0 && ctx.Err() != nil {
		c.dropWaiter(w)
		return ctx.Err()
	}
	c.shut(fmt.Errorf("write: %w", err))
	if ctx.Err() != nil {
		return ctx.Err()
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.err
}

// dropWaiter takes w out of the pending queue, for a request that was
// never written.
func (c *Conn) dropWaiter(w *waiter) {
	c.mu.Lock()
	defer c.mu.Unlock()
	for i, p := range c.pending {
		if p == w {
			c.pending = append(c.pending[:i], c.pending[i+1:]...)
			return
		}
	}
}

// shut records why the connection ends, if it is the first to, and closes
// the socket, which stops the read loop; the read loop does the rest. It
// returns the error of closing the socket when it was the first.
func (c *Conn) shut(cause error) error {
	c.mu.Lock()
	first := c.err == nil
	if first {
		if cause == ErrClosed {
			c.err = ErrClosed
		} else {
			c.err = fmt.Errorf("%w: %w", ErrClosed, cause)
		}
	}
	c.mu.Unlock()
	if !first {
		return nil
	}
	return c.conn.Close()
}

// readLoop reads replies until the connection ends, then fails the pending
// calls, ends the delivery queue and closes done.
func (c *Conn) readLoop() {
	defer c.wg.Done()
	c.shut(c.readReplies())

	c.mu.Lock()
	pending := c.pending
	c.pending = nil
	err := c.err
	c.readEnded = true
	c.mu.Unlock()
	for _, w := range pending {
		w.ch <- result{err: err}
	}
	c.wakePump()
	close(c.done)
}

// readReplies routes reply lines until reading fails or the server breaks
// the protocol, and returns why it stopped.
func (c *Conn) readReplies() error {
	for {
		line, err := c.readLine()
		if err != nil {
			return err
		}
		rep, err := protocol.ParseReply(line)
		if err != nil {
			return fmt.Errorf("%w: %q", err, truncate(line))
		}
		if err := c.route(rep); err != nil {
			return err
		}
	}
}

// route queues a delivery, or hands a reply to the oldest pending request.
// Once the connection is ending (Close was called or a write failed), it
// routes nothing more, so pending calls all get the connection's error
// even when their replies were already buffered.
func (c *Conn) route(rep protocol.Reply) error {
	c.mu.Lock()
	if c.err != nil {
		c.mu.Unlock()
		return c.err
	}
	if rep.Kind == protocol.ReplyDelivery {
		c.deliveries = append(c.deliveries, Delivery{From: rep.Name, Message: rep.Message})
		c.mu.Unlock()
		c.wakePump()
		return nil
	}
	var w *waiter
	if len(c.pending) > 0 {
		w = c.pending[0]
		c.pending[0] = nil
		c.pending = c.pending[1:]
	}
	c.mu.Unlock()
	switch {
	case w != nil:
		w.ch <- result{reply: rep}
		return nil
	case rep.Kind == protocol.ReplyBusy:
		// The server has too many connections: it says BUSY before any
		// request, and closes.
		return fmt.Errorf("server refused the connection: %w", ErrServerBusy)
	}
	return fmt.Errorf("%w %v with no request pending", ErrUnexpectedReply, rep.Kind)
}

// readLine returns the next line without its "\n" and one "\r" before it.
// The line is valid until the next call.
func (c *Conn) readLine() ([]byte, error) {
	line, err := c.r.ReadSlice('\n')
	if err == bufio.ErrBufferFull {
		c.long = append(c.long[:0], line...)
		for err == bufio.ErrBufferFull {
			if len(c.long) > maxReplyBytes {
				return nil, fmt.Errorf("reply line longer than %d bytes", maxReplyBytes)
			}
			line, err = c.r.ReadSlice('\n')
			c.long = append(c.long, line...)
		}
		line = c.long
		if cap(c.long) > 4*readBufferBytes {
			c.long = nil // the returned line keeps it alive until the next call
		}
	}
	if err != nil {
		return nil, err // at EOF, bytes after the last "\n" are not a reply
	}
	line = line[:len(line)-1]
	if n := len(line); n > 0 && line[n-1] == '\r' {
		line = line[:n-1]
	}
	return line, nil
}

func (c *Conn) wakePump() {
	select {
	case c.pumpWake <- struct{}{}:
	default: // a wake-up is already pending
	}
}

// pump hands queued deliveries to the Deliveries channel, in order, until
// the read loop has ended and the queue is empty, or Close is called.
func (c *Conn) pump() {
	defer c.wg.Done()
	defer close(c.deliverCh)
	var batch []Delivery
	for {
		if cap(batch) > keepBatchDeliveries {
			batch = nil
		}
		c.mu.Lock()
		batch, c.deliveries = c.deliveries, batch[:0]
		ended := c.readEnded
		c.mu.Unlock()
		for i, d := range batch {
			select {
			case c.deliverCh <- d:
			case <-c.quit:
				return
			}
			batch[i] = Delivery{}
		}
		if len(batch) > 0 {
			continue
		}
		if ended {
			return
		}
		select {
		case <-c.pumpWake:
		case <-c.quit:
			return
		}
	}
}

// replyError is the error for a reply that is not a success of cmd.
func replyError(cmd protocol.Command, rep protocol.Reply) error {
	switch rep.Kind {
	case protocol.ReplyBadHeader, protocol.ReplyBadBody:
		return &RequestError{Command: cmd, Reply: rep.Kind}
	}
	return fmt.Errorf("%w %v to %v", ErrUnexpectedReply, rep.Kind, cmd)
}

func hasLineBreak(s string) bool {
	return strings.ContainsAny(s, "\r\n")
}

// truncate shortens a line for an error message.
func truncate(line []byte) []byte {
	const max = 64
	if len(line) > max {
		return line[:max]
	}
	return line
}
