package web_test

import (
	"errors"
	"net"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/coder/websocket"
	"go.uber.org/goleak"

	"chatserver/internal/chat"
	"chatserver/internal/chat/chattest"
	"chatserver/internal/web"
	"chatserver/internal/web/webtest"
)

func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m)
}

// front is a chat server with a web front, both on 127.0.0.1.
type front struct {
	srv     *chattest.Server // the chat server, on its plain TCP listener
	webAddr string           // host:port of the web front
}

// startFront starts a chat server (config changed by edit) and a web front
// for it (changed by editWeb); both stop when the test ends.
func startFront(t *testing.T, edit func(*chat.Config), editWeb func(*web.Config)) *front {
	t.Helper()
	s := chattest.Start(t, edit)
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	cfg := web.Config{MaxLineBytes: chat.DefaultConfig().MaxLineBytes, Closing: s.Closing}
	if edit != nil {
		c := chat.DefaultConfig()
		edit(&c)
		cfg.MaxLineBytes = c.MaxLineBytes
	}
	if editWeb != nil {
		editWeb(&cfg)
	}
	f := web.New(cfg, ln.Addr())
	hs := &http.Server{Handler: f.Handler(), ReadHeaderTimeout: 5 * time.Second}
	go hs.Serve(ln)
	served := make(chan error, 1)
	go func() { served <- s.Serve(f.Listener()) }()
	t.Cleanup(func() {
		s.Stop()
		if err := <-served; !errors.Is(err, chat.ErrServerClosed) {
			t.Errorf("Serve(web listener) = %v", err)
		}
		hs.Close()
	})
	return &front{srv: s, webAddr: ln.Addr().String()}
}

// url is the WebSocket's URL on the web front at addr.
func url(addr string) string { return "ws://" + addr + "/ws" }

// TestOneLinePerMessage: each message is one request line, handled as on
// a socket, and each reply or DELIVERY is one message; one trailing "\n"
// or "\r\n" is tolerated.
func TestOneLinePerMessage(t *testing.T) {
	f := startFront(t, nil, nil)
	alice := webtest.Connect(t, url(f.webAddr))
	alice.Send("LIST")
	alice.Expect("BAD-RQST-HDR")
	alice.Login("alice")
	for _, list := range []string{"LIST", "LIST\n", "LIST\r\n"} {
		alice.Send(list)
		alice.Expect("LIST-OK alice")
	}
	alice.Send("SEND alice hello me")
	alice.Expect("DELIVERY alice hello me", "SEND-OK")
	alice.Send("SEND nobody x")
	alice.Expect("BAD-DEST-USER")
	alice.Send("SEND alice a\rb")
	alice.Expect("BAD-RQST-BODY") // as on a socket: a bare "\r" in a message
	if n := f.srv.Stats().ConnectionsBy[chat.TransportWS]; n != 1 {
		t.Errorf("WebSocket connections counted = %d, want 1", n)
	}
}

// TestNotOneLine: a message with two lines, or a binary message, is
// answered BAD-RQST-HDR, and the connection goes on.
func TestNotOneLine(t *testing.T) {
	f := startFront(t, nil, nil)
	b := webtest.Connect(t, url(f.webAddr)).Login("bob")
	b.Send("LIST\nLIST")
	b.Expect("BAD-RQST-HDR")
	b.SendMessage(websocket.MessageBinary, "LIST")
	b.Expect("BAD-RQST-HDR")
	b.Send("LIST")
	b.Expect("LIST-OK bob")
}

// TestReadLimit: a message longer than the line cap closes the
// connection (1009, message too big); one at the cap is handled.
func TestReadLimit(t *testing.T) {
	const maxLine = 1 << 10
	f := startFront(t, func(c *chat.Config) { c.MaxLineBytes = maxLine }, nil)
	b := webtest.Connect(t, url(f.webAddr)).Login("bob")
	fits := "SEND bob " + strings.Repeat("x", maxLine-len("SEND bob "))
	b.Send(fits)
	b.Expect("DELIVERY bob "+strings.Repeat("x", maxLine-len("SEND bob ")), "SEND-OK")
	b.Send(fits + "xxx")
	if code := b.ExpectClose(); code != websocket.StatusMessageTooBig {
		t.Errorf("close code = %v, want 1009 (message too big)", code)
	}
	chattest.Eventually(t, "the close to be counted as reset", func() bool {
		return f.srv.Stats().Closed[chat.ReasonReset] == 1
	})
}

// TestOrigins: a page of another origin may not open the WebSocket unless
// allowed; a request without Origin (a script) may.
func TestOrigins(t *testing.T) {
	f := startFront(t, nil, func(c *web.Config) { c.Origins = []string{"*.allowed.example"} })
	if _, err := webtest.Dial(t, url(f.webAddr), &websocket.DialOptions{HTTPHeader: http.Header{"Origin": {"http://evil.example"}}}); err == nil {
		t.Error("a page of another origin opened the WebSocket")
	}
	for _, origin := range []string{"http://" + f.webAddr, "https://chat.allowed.example", ""} {
		h := http.Header{}
		if origin != "" {
			h.Set("Origin", origin)
		}
		b, err := webtest.Dial(t, url(f.webAddr), &websocket.DialOptions{HTTPHeader: h})
		if err != nil {
			t.Errorf("origin %q: %v", origin, err)
			continue
		}
		b.Send("LIST")
		b.Expect("BAD-RQST-HDR")
	}
}

// TestBrowserAndTCPUsersTalk: a browser user and a TCP user share one
// user list and message each other.
func TestBrowserAndTCPUsersTalk(t *testing.T) {
	f := startFront(t, nil, nil)
	ann := webtest.Connect(t, url(f.webAddr)).Login("ann")
	bob := chattest.LoggedIn(t, f.srv.Addr, "bob")
	ann.Send("LIST")
	ann.Expect("LIST-OK ann,bob")
	ann.Send("SEND bob hi from the browser")
	ann.Expect("SEND-OK")
	bob.Expect("DELIVERY ann hi from the browser")
	bob.Send("SEND ann hi from a terminal\n")
	bob.Expect("SEND-OK")
	ann.Expect("DELIVERY bob hi from a terminal")
}

// TestSlowBrowserIsASlowConsumer: a browser that stops reading is closed
// as a slow consumer, like any client, and its sender is told
// BAD-DEST-USER.
func TestSlowBrowserIsASlowConsumer(t *testing.T) {
	f := startFront(t, func(c *chat.Config) {
		c.MaxLineBytes = 64 << 10
		c.MaxPendingBytes = 256 << 10
		c.WriteTimeout = time.Second
		c.Rate = 0 // the sender floods
	}, nil)
	webtest.Connect(t, url(f.webAddr)).Login("lazy") // reads nothing from here on
	sender := chattest.LoggedIn(t, f.srv.Addr, "sender")
	line := "SEND lazy " + strings.Repeat("x", 60<<10) + "\n"
	sender.SendUntilBadDest(line, 10_000)
	chattest.Eventually(t, "the slow browser to be counted", func() bool {
		return f.srv.Stats().Closed[chat.ReasonSlowConsumer] == 1
	})
}

// TestBrowserThatStopsAnsweringPings is dropped, and its name freed.
func TestBrowserThatStopsAnsweringPings(t *testing.T) {
	f := startFront(t, nil, func(c *web.Config) { c.PingEvery, c.PongWithin = 100*time.Millisecond, 100*time.Millisecond })
	webtest.Connect(t, url(f.webAddr)).Login("gone") // never reads again, so never answers a ping
	again := chattest.Dial(t, f.srv.Addr)
	chattest.Eventually(t, "the name to be free", func() bool {
		again.Send("HELLO-FROM gone\n")
		return again.Line() == "HELLO gone"
	})
	if n := f.srv.Stats().Closed[chat.ReasonReset]; n != 1 {
		t.Errorf("%d connections closed as reset, want 1: the one that did not answer pings", n)
	}
}

// TestBrowsersHaveTheSameLimits: the per-IP connection limit, the login
// timeout and the close codes apply to browsers as to sockets.
func TestBrowsersHaveTheSameLimits(t *testing.T) {
	f := startFront(t, func(c *chat.Config) {
		c.MaxConnsPerIP, c.LimitLoopback = 1, true
		c.LoginTimeout = 200 * time.Millisecond
	}, nil)
	first := webtest.Connect(t, url(f.webAddr))
	refused := webtest.Connect(t, url(f.webAddr))
	refused.Expect("BUSY")
	if code := refused.ExpectClose(); code != websocket.StatusTryAgainLater {
		t.Errorf("refused connection's close code = %v, want 1013 (try again later)", code)
	}
	if code := first.ExpectClose(); code != websocket.StatusPolicyViolation {
		t.Errorf("close code after the login timeout = %v, want 1008 (policy violation)", code)
	}
	chattest.Eventually(t, "one ip_limit and one login_timeout close to be counted", func() bool {
		st := f.srv.Stats()
		return st.Closed[chat.ReasonIPLimit] == 1 && st.Closed[chat.ReasonLoginTimeout] == 1
	})
}

// TestShutdownTellsBrowsersToComeBack: a server shutting down closes its
// browsers with 1001 (going away), which the page reconnects after.
func TestShutdownTellsBrowsersToComeBack(t *testing.T) {
	f := startFront(t, nil, nil)
	b := webtest.Connect(t, url(f.webAddr)).Login("ann")
	f.srv.Stop()
	if code := b.ExpectClose(); code != websocket.StatusGoingAway {
		t.Errorf("close code at shutdown = %v, want 1001 (going away)", code)
	}
}

// TestHealthz: /healthz answers 200 while the chat serves, 503 once it
// shuts down.
func TestHealthz(t *testing.T) {
	f := startFront(t, nil, nil)
	get := func() int {
		resp, err := http.Get("http://" + f.webAddr + "/healthz")
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		return resp.StatusCode
	}
	if code := get(); code != http.StatusOK {
		t.Errorf("/healthz = %d, want 200", code)
	}
	f.srv.Stop()
	if code := get(); code != http.StatusServiceUnavailable {
		t.Errorf("/healthz after shutdown = %d, want 503", code)
	}
}
