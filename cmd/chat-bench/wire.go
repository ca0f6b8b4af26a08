//go:build linux

package main

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"net"
	"sync"
	"time"
)

// wire is one server's protocol, as far as the bench needs it. chatWire
// and natsWire implement it; connections, the load loops, the checks and
// the output are shared.
type wire interface {
	// name is the --target that selects the wire.
	name() string
	// handshake logs c in as user. For a receiver it returns only once
	// the server will deliver messages addressed to user.
	handshake(c *conn, user string, receiver bool) error
	// frame returns the bytes that go before and after a payload of size
	// bytes addressed to user to.
	frame(to string, size int) (head, tail []byte)
	// parse hands every complete frame at the start of b to s, in order,
	// and returns how many bytes they took; a partial frame is left for
	// the next call. Anything s does not expect is an error.
	parse(b []byte, s sink) (int, error)
	// acked reports whether the server answers every message sent
	// (SEND-OK), so that the bench can count the answers.
	acked() bool
}

// lister is a wire that can list the logged-in users (chat's LIST).
type lister interface {
	list(c *conn) (users int, err error)
}

// sink receives what a wire parses from one connection.
type sink interface {
	// delivery is a message delivered to this connection; payload is
	// valid only during the call.
	delivery(payload []byte) error
	// ack is the server's answer to one message this connection sent.
	ack() error
	// reply writes a protocol-level answer the server asked for (NATS
	// PING).
	reply(b []byte) error
}

const (
	// handshakeTimeout bounds one connection's login or subscription.
	handshakeTimeout = 10 * time.Second
	// smallRead is a connection's read buffer before its read loop
	// starts: enough for a handshake, small for idle connections.
	smallRead = 4 << 10
	// bigRead is the read buffer of a connection under load: each read
	// takes many frames at once.
	bigRead = 256 << 10
	// clipReply is how much of an unexpected line an error quotes.
	clipReply = 80
)

// conn is one client connection. Its read side belongs to one goroutine
// at a time (the handshake, then its read loop); writes may come from the
// send loop and, for NATS PONGs, the read loop, so they are serialised.
type conn struct {
	nc net.Conn

	wmu sync.Mutex // serialises writes

	buf  []byte // owned by the reader; buf[r:n] is read but not yet parsed
	r, n int
}

// dial connects to addr, from local if it is not nil.
func dial(ctx context.Context, addr string, local *net.TCPAddr) (*conn, error) {
	d := net.Dialer{Timeout: handshakeTimeout}
	if local != nil {
		d.LocalAddr = local
	}
	nc, err := d.DialContext(ctx, "tcp", addr)
	if err != nil {
		return nil, err
	}
	return &conn{nc: nc, buf: make([]byte, smallRead)}, nil
}

func (c *conn) write(b []byte) error {
	c.wmu.Lock()
	defer c.wmu.Unlock()
	_, err := c.nc.Write(b)
	return err
}

// reply implements sink.reply for everything that embeds a conn.
func (c *conn) reply(b []byte) error { return c.write(b) }

func (c *conn) close() { c.nc.Close() }

// fill reads once more into the buffer, first moving the unparsed bytes
// to its front and growing it if they fill it.
func (c *conn) fill() error {
	c.n = copy(c.buf, c.buf[c.r:c.n])
	c.r = 0
	if c.n == len(c.buf) {
		c.buf = append(c.buf, make([]byte, len(c.buf))...)
	}
	k, err := c.nc.Read(c.buf[c.n:])
	c.n += k
	return err
}

// readLine returns the next line without its "\n" and one "\r" before
// it, valid until the next read. It is for handshakes; bytes after the
// line stay buffered for the read loop.
func (c *conn) readLine() ([]byte, error) {
	for {
		if i := bytes.IndexByte(c.buf[c.r:c.n], '\n'); i >= 0 {
			line := c.buf[c.r : c.r+i]
			c.r += i + 1
			return bytes.TrimSuffix(line, []byte{'\r'}), nil
		}
		if err := c.fill(); err != nil {
			return nil, err
		}
	}
}

// readLoop reads in large chunks until the connection fails or consume
// returns an error, handing consume the bytes not yet used each time;
// consume returns how many it used.
func (c *conn) readLoop(consume func(b []byte) (int, error)) error {
	if len(c.buf) < bigRead {
		c.buf = append(c.buf, make([]byte, bigRead-len(c.buf))...)
	}
	for {
		if c.r < c.n {
			used, err := consume(c.buf[c.r:c.n])
			c.r += used
			if err != nil {
				return err
			}
		}
		if err := c.fill(); err != nil {
			return err
		}
	}
}

// errDone ends a read loop that got what it waited for.
var errDone = errors.New("done")

// await reads from c until the wire parses one ack (ack) or one delivery
// (!ack), or until the deadline, and returns the delivery's payload.
// Other lines are errors.
func (c *conn) await(w wire, ack bool, deadline time.Time) (payload []byte, err error) {
	c.nc.SetReadDeadline(deadline)
	defer c.nc.SetReadDeadline(time.Time{})
	s := &oneShot{conn: c}
	err = c.readLoop(func(b []byte) (int, error) {
		n, err := w.parse(b, s)
		if err == nil && (ack && s.acks > 0 || !ack && s.got != nil) {
			err = errDone
		}
		return n, err
	})
	if errors.Is(err, errDone) {
		return s.got, nil
	}
	return nil, err
}

// oneShot is a sink that keeps the first delivery and takes acks.
type oneShot struct {
	*conn
	got  []byte
	acks int
}

func (s *oneShot) delivery(p []byte) error {
	if s.got == nil {
		s.got = bytes.Clone(p)
	}
	return nil
}

func (s *oneShot) ack() error { s.acks++; return nil }

// unexpected is the error for a line a wire did not expect.
func unexpected(line []byte) error {
	if len(line) > clipReply {
		return fmt.Errorf("unexpected reply %q (first %d bytes)", line[:clipReply], clipReply)
	}
	return fmt.Errorf("unexpected reply %q", line)
}

// withDeadline runs f with c's deadline set to at most handshakeTimeout
// from now, and clears it after.
func withDeadline(ctx context.Context, c *conn, f func() error) error {
	deadline := time.Now().Add(handshakeTimeout)
	if d, ok := ctx.Deadline(); ok && d.Before(deadline) {
		deadline = d
	}
	c.nc.SetDeadline(deadline)
	defer c.nc.SetDeadline(time.Time{})
	return f()
}
