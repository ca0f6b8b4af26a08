package tests

import (
	"fmt"
	"net"
	"strings"
	"testing"
	"time"

	"chatserver/internal/chat"
	"chatserver/internal/chat/chattest"
)

// This file tests the limits that keep one client from taking the whole
// server: connections and users per client network, and flood control.

// dialFrom connects to addr from the loopback address ip (127.0.0.x), so
// that a test can be several clients.
func dialFrom(t *testing.T, ip, addr string) *chattest.Wire {
	t.Helper()
	d := net.Dialer{LocalAddr: &net.TCPAddr{IP: net.ParseIP(ip)}}
	c, err := d.Dial("tcp", addr)
	if err != nil {
		t.Fatalf("dial %s from %s: %v", addr, ip, err)
	}
	return chattest.NewWire(t, c)
}

// TestConnsPerIP: one address may have MaxConnsPerIP connections open; one
// more is told BUSY and closed, another address is not held back, and a
// place is free again once a connection closes.
func TestConnsPerIP(t *testing.T) {
	eachLink(t, true, func(t *testing.T, start serverStarter) {
		srv, addr := start(t, func(c *chat.Config) {
			c.MaxConnsPerIP = 3
			c.LimitLoopback = true
		})
		var held []*chattest.Wire
		for i := range 3 {
			held = append(held, dialFrom(t, "127.0.0.2", addr).Login(fmt.Sprintf("a%d", i)))
		}
		over := dialFrom(t, "127.0.0.2", addr)
		over.Send("HELLO-FROM a3\n")
		over.ExpectEOF("BUSY")
		dialFrom(t, "127.0.0.3", addr).Login("b0")
		expectClosed(t, srv, map[chat.CloseReason]uint64{chat.ReasonIPLimit: 1})

		held[0].Conn.Close()
		chattest.Eventually(t, "a place for 127.0.0.2", func() bool { return srv.Stats().Connections == 3 })
		dialFrom(t, "127.0.0.2", addr).Login("a3")
	})
}

// TestLoopbackIsExemptByDefault: without LimitLoopback, clients on the
// server's own machine are not counted per address.
func TestLoopbackIsExemptByDefault(t *testing.T) {
	t.Parallel()
	_, addr := startServer(t, func(c *chat.Config) { c.MaxConnsPerIP, c.MaxUsersPerIP = 2, 2 })
	for i := range 5 {
		chattest.LoggedIn(t, addr, fmt.Sprintf("u%d", i))
	}
}

// TestUsersPerIP: one address may have MaxUsersPerIP users logged in; one
// more login is told BUSY, and may try again on the same connection once
// a place is free.
func TestUsersPerIP(t *testing.T) {
	eachLink(t, true, func(t *testing.T, start serverStarter) {
		srv, addr := start(t, func(c *chat.Config) {
			c.MaxUsersPerIP = 2
			c.LimitLoopback = true
		})
		first := dialFrom(t, "127.0.0.2", addr).Login("a0")
		dialFrom(t, "127.0.0.2", addr).Login("a1")
		third := dialFrom(t, "127.0.0.2", addr)
		third.Send("HELLO-FROM a2\n")
		third.Expect("BUSY")
		dialFrom(t, "127.0.0.3", addr).Login("b0")
		first.Conn.Close()
		chattest.Eventually(t, "a0 to log out", func() bool { return srv.Stats().Users == 2 })
		third.Login("a2")
		if n := srv.Stats().Logins[chat.LoginIPLimit]; n != 1 {
			t.Errorf("logins refused for the address's limit = %d, want 1", n)
		}
	})
}

// TestFloodControlHoldsBackAFlooder: a user sending far above the rate is
// slowed to it, not refused: every request is answered, every message
// delivered once and in order, and a quiet pair on the same server keeps
// talking meanwhile.
func TestFloodControlHoldsBackAFlooder(t *testing.T) {
	eachLink(t, true, func(t *testing.T, start serverStarter) {
		const (
			n     = 1500
			rate  = 500
			burst = 50
		)
		srv, addr := start(t, func(c *chat.Config) { c.Rate, c.Burst = rate, burst })
		sink := chattest.LoggedIn(t, addr, "sink")
		flooder := chattest.LoggedIn(t, addr, "flooder")
		stopPairs := startPairs(t, addr, "quiet", 1)
		var b strings.Builder
		for i := range n {
			fmt.Fprintf(&b, "SEND sink %d\n", i)
		}
		began := time.Now()
		written := writeAsync(flooder.Conn, []byte(b.String()))
		for i := range n {
			sink.Expect(fmt.Sprintf("DELIVERY flooder %d", i))
			flooder.Expect("SEND-OK")
		}
		took := time.Since(began)
		if err := <-written; err != nil {
			t.Fatalf("write: %v", err)
		}
		rounds := stopPairs()
		if min := time.Duration(n-burst) * time.Second / rate; took < min*3/4 {
			t.Errorf("%d requests at once took %v, want about %v at %d a second", n, took, min, rate)
		}
		if rounds[0] < 5 {
			t.Errorf("the quiet pair did %d rounds while the flooder was held back, want many", rounds[0])
		}
		if srv.Stats().Delayed == 0 {
			t.Error("no read was counted as held back")
		}
		t.Logf("%d requests took %v; the quiet pair did %d rounds meanwhile", n, took.Round(time.Millisecond), rounds[0])
	})
}

// TestFloodControlClosesAPersistentFlooder: a client that keeps sending
// far above the rate, for long, is closed (reason flood); a client that
// stays within it is not touched.
func TestFloodControlClosesAPersistentFlooder(t *testing.T) {
	eachLink(t, true, func(t *testing.T, start serverStarter) {
		srv, addr := start(t, func(c *chat.Config) { c.Rate, c.Burst, c.FloodTimeout = 50, 10, 2*time.Second })
		flooder := chattest.LoggedIn(t, addr, "flooder")
		calm := chattest.LoggedIn(t, addr, "calm")
		go func() { // until the server closes the connection
			batch := strings.Repeat("LIST\n", 200)
			for flooder.SendErr(batch) == nil {
			}
		}()
		began := time.Now()
		flooder.Drain()
		t.Logf("flooder closed %v after it began", time.Since(began).Round(time.Millisecond))
		expectClosed(t, srv, map[chat.CloseReason]uint64{chat.ReasonFlood: 1})
		calm.Send("LIST\n")
		calm.Expect("LIST-OK calm")
	})
}
