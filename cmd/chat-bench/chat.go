//go:build linux

package main

import (
	"bytes"
	"fmt"

	"chatserver/internal/protocol"
)

// chatWire is our chat protocol: a user logs in with HELLO-FROM, sends
// with "SEND <to> <message>\n", is answered SEND-OK for each and is
// pushed "DELIVERY <from> <message>\n".
type chatWire struct{}

var (
	deliveryPrefix = []byte("DELIVERY ")
	sendOK         = []byte(protocol.ReplySendOK.String())
)

func (chatWire) name() string { return "chat" }

func (chatWire) acked() bool { return true }

// handshake logs in; a logged-in user is delivered to at once.
func (chatWire) handshake(c *conn, user string, _ bool) error {
	if err := c.write(protocol.AppendHelloFrom(nil, user)); err != nil {
		return err
	}
	line, err := c.readLine()
	if err != nil {
		return err
	}
	if r, err := protocol.ParseReply(line); err != nil || r.Kind != protocol.ReplyHello || r.Name != user {
		hint := ""
		if string(line) == protocol.ReplyBusy.String() {
			hint = " (raise the server's --max-users and --max-conns)"
		}
		return fmt.Errorf("log in as %s: server said %q%s", user, line, hint)
	}
	return nil
}

// frame is protocol.AppendSend split around the message, so the bench
// can write the payload straight into its batch.
func (chatWire) frame(to string, size int) (head, tail []byte) {
	full := protocol.AppendSend(nil, to, string(make([]byte, size)))
	return full[:len(full)-size-1], full[len(full)-1:]
}

func (chatWire) parse(b []byte, s sink) (int, error) {
	used := 0
	for {
		i := bytes.IndexByte(b[used:], '\n')
		if i < 0 {
			return used, nil
		}
		line := b[used : used+i]
		used += i + 1
		var err error
		switch {
		case bytes.HasPrefix(line, deliveryPrefix):
			_, payload, ok := bytes.Cut(line[len(deliveryPrefix):], []byte{' '})
			if !ok {
				return used, unexpected(line)
			}
			err = s.delivery(payload)
		case bytes.Equal(line, sendOK):
			err = s.ack()
		default:
			err = unexpected(line)
		}
		if err != nil {
			return used, err
		}
	}
}

// list sends LIST and counts the users in its answer.
func (chatWire) list(c *conn) (int, error) {
	if err := c.write(protocol.AppendList(nil)); err != nil {
		return 0, err
	}
	line, err := c.readLine()
	if err != nil {
		return 0, err
	}
	r, err := protocol.ParseReply(line)
	if err != nil || r.Kind != protocol.ReplyListOK {
		return 0, fmt.Errorf("list: %w", unexpected(line))
	}
	return len(r.Names), nil
}
