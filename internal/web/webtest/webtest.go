// Package webtest is a WebSocket client of the web chat for tests. It
// speaks the protocol as the page does: one line per text message.
package webtest

import (
	"context"
	"net/http"
	"testing"

	"github.com/coder/websocket"

	"chatserver/internal/chat/chattest"
)

// Conn is one WebSocket connection to the web chat's /ws.
type Conn struct {
	t  testing.TB
	ws *websocket.Conn
}

// Dial connects to url (ws://, wss://, http:// or https://host:port/ws),
// with opts (nil: the defaults), and closes the connection when the test
// ends.
func Dial(t testing.TB, url string, opts *websocket.DialOptions) (*Conn, error) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), chattest.ReplyTimeout)
	defer cancel()
	ws, resp, err := websocket.Dial(ctx, url, opts)
	if resp != nil && resp.Body != nil {
		resp.Body.Close()
	}
	if err != nil {
		return nil, err
	}
	t.Cleanup(func() { ws.CloseNow() })
	return &Conn{t: t, ws: ws}, nil
}

// Connect is Dial without options that fails the test if it fails.
func Connect(t testing.TB, url string) *Conn {
	t.Helper()
	c, err := Dial(t, url, nil)
	if err != nil {
		t.Fatalf("dial %s: %v", url, err)
	}
	return c
}

// ConnectWith is Connect through client (say, one that trusts a test
// certificate).
func ConnectWith(t testing.TB, client *http.Client, url string) *Conn {
	t.Helper()
	c, err := Dial(t, url, &websocket.DialOptions{HTTPClient: client})
	if err != nil {
		t.Fatalf("dial %s: %v", url, err)
	}
	return c
}

// Send sends line as one text message.
func (c *Conn) Send(line string) {
	c.t.Helper()
	c.SendMessage(websocket.MessageText, line)
}

// SendMessage sends one message of type typ.
func (c *Conn) SendMessage(typ websocket.MessageType, msg string) {
	c.t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), chattest.ReplyTimeout)
	defer cancel()
	if err := c.ws.Write(ctx, typ, []byte(msg)); err != nil {
		c.t.Fatalf("write %q: %v", msg, err)
	}
}

// Expect reads messages, each one a line, and checks them against want.
func (c *Conn) Expect(want ...string) {
	c.t.Helper()
	for _, w := range want {
		ctx, cancel := context.WithTimeout(context.Background(), chattest.ReplyTimeout)
		typ, msg, err := c.ws.Read(ctx)
		cancel()
		if err != nil {
			c.t.Fatalf("read: %v; want %q", err, w)
		}
		if typ != websocket.MessageText || string(msg) != w {
			c.t.Fatalf("message = %v %q, want text %q", typ, msg, w)
		}
	}
}

// Request sends line and expects want as the next message.
func (c *Conn) Request(line, want string) {
	c.t.Helper()
	c.Send(line)
	c.Expect(want)
}

// Login logs in as name.
func (c *Conn) Login(name string) *Conn {
	c.t.Helper()
	c.Request("HELLO-FROM "+name, "HELLO "+name)
	return c
}

// ExpectClose reads until the server closes the connection, and returns
// the close code it sent.
func (c *Conn) ExpectClose() websocket.StatusCode {
	c.t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), chattest.ReplyTimeout)
	defer cancel()
	for {
		if _, _, err := c.ws.Read(ctx); err != nil {
			if ctx.Err() != nil {
				c.t.Fatal("the server did not close the connection")
			}
			return websocket.CloseStatus(err)
		}
	}
}
