//go:build linux

package main

import (
	"bytes"
	"fmt"
	"strconv"
)

// natsWire is the NATS text protocol, the little of it the bench needs:
// the server greets with INFO, the client says CONNECT, a receiver
// subscribes to its user's subject with SUB, a sender publishes with
// "PUB <subject> <len>\r\n<payload>\r\n", and the server pushes
// "MSG <subject> <sid> <len>\r\n<payload>\r\n". Each side answers the
// other's PING with PONG. There is no per-message answer, so no acks.
type natsWire struct{}

var (
	natsConnect = []byte(`CONNECT {"verbose":false,"pedantic":false,"echo":false}` + "\r\n")
	natsPing    = []byte("PING\r\n")
	natsPong    = []byte("PONG\r\n")
)

func (natsWire) name() string { return "nats" }

func (natsWire) acked() bool { return false }

// handshake connects and, for a receiver, subscribes. The PING after them
// is answered only once the server has processed both, so on PONG the
// subscription is in place.
func (natsWire) handshake(c *conn, user string, receiver bool) error {
	line, err := c.readLine()
	if err != nil {
		return err
	}
	if !bytes.HasPrefix(line, []byte("INFO ")) {
		return fmt.Errorf("nats greeting: %w", unexpected(line))
	}
	req := append([]byte(nil), natsConnect...)
	if receiver {
		req = fmt.Appendf(req, "SUB %s 1\r\n", user)
	}
	if err := c.write(append(req, natsPing...)); err != nil {
		return err
	}
	for {
		line, err := c.readLine()
		switch {
		case err != nil:
			return err
		case string(line) == "PONG":
			return nil
		case string(line) == "PING":
			if err := c.write(natsPong); err != nil {
				return err
			}
		case string(line) == "+OK" || bytes.HasPrefix(line, []byte("INFO ")):
		default:
			return fmt.Errorf("nats connect as %s: %w", user, unexpected(line))
		}
	}
}

func (natsWire) frame(to string, size int) (head, tail []byte) {
	return fmt.Appendf(nil, "PUB %s %d\r\n", to, size), []byte("\r\n")
}

func (natsWire) parse(b []byte, s sink) (int, error) {
	used := 0
	for {
		rest := b[used:]
		i := bytes.IndexByte(rest, '\n')
		if i < 0 {
			return used, nil
		}
		line := bytes.TrimSuffix(rest[:i], []byte{'\r'})
		var err error
		switch {
		case bytes.HasPrefix(line, []byte("MSG ")):
			// MSG <subject> <sid> [reply-to] <len>
			size, perr := strconv.Atoi(string(line[bytes.LastIndexByte(line, ' ')+1:]))
			if perr != nil || size < 0 {
				return used, unexpected(line)
			}
			end := i + 1 + size + len("\r\n")
			if len(rest) < end {
				return used, nil // the payload has not all arrived
			}
			if err := s.delivery(rest[i+1 : i+1+size]); err != nil {
				return used, err
			}
			used += end
			continue
		case string(line) == "PING":
			err = s.reply(natsPong)
		case string(line) == "PONG", string(line) == "+OK", bytes.HasPrefix(line, []byte("INFO ")):
		default: // -ERR, or anything we do not know
			err = unexpected(line)
		}
		if err != nil {
			return used, err
		}
		used += i + 1
	}
}
