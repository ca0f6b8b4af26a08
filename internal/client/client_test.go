package client_test

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"go.uber.org/goleak"

	"chatserver/internal/chat"
	"chatserver/internal/chat/chattest"
	"chatserver/internal/client"
	"chatserver/internal/protocol"
)

func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m)
}

// timeout bounds every wait. Tests synchronise on replies and deliveries;
// this only turns a hang into a failure.
const timeout = 10 * time.Second

func testCtx(t *testing.T) context.Context {
	ctx, cancel := context.WithTimeout(t.Context(), timeout)
	t.Cleanup(cancel)
	return ctx
}

// dial connects to addr and closes the Conn when the test ends.
func dial(t *testing.T, addr string) *client.Conn {
	t.Helper()
	c, err := client.Dial(testCtx(t), addr)
	if err != nil {
		t.Fatalf("Dial: %v", err)
	}
	t.Cleanup(func() { c.Close() })
	return c
}

// wrap connects to addr, wraps the socket with wrap and returns a Conn
// over it, closed when the test ends.
func wrap[T net.Conn](t *testing.T, addr string, wrap func(net.Conn) T) (*client.Conn, T) {
	t.Helper()
	nc, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatalf("dial: %v", err)
	}
	w := wrap(nc)
	c := client.New(w)
	t.Cleanup(func() { c.Close() })
	return c, w
}

func login(t *testing.T, c *client.Conn, name string) *client.Conn {
	t.Helper()
	if err := c.Login(testCtx(t), name); err != nil {
		t.Fatalf("Login(%q): %v", name, err)
	}
	return c
}

// loggedIn returns a new Conn logged in as name.
func loggedIn(t *testing.T, addr, name string) *client.Conn {
	t.Helper()
	return login(t, dial(t, addr), name)
}

// recv returns the next delivery on c.
func recv(t *testing.T, c *client.Conn) client.Delivery {
	t.Helper()
	select {
	case d, ok := <-c.Deliveries():
		if !ok {
			t.Fatalf("Deliveries closed (conn error %v), want a delivery", c.Err())
		}
		return d
	case <-time.After(timeout):
		t.Fatalf("no delivery within %v", timeout)
	}
	return client.Delivery{}
}

func wantList(t *testing.T, c *client.Conn, want ...string) {
	t.Helper()
	got, err := c.List(testCtx(t))
	if err != nil {
		t.Fatalf("List: %v", err)
	}
	if !slices.Equal(got, want) {
		t.Fatalf("List = %q, want %q", got, want)
	}
}

// wantRequestError checks that err is a *client.RequestError for cmd with
// the given reply.
func wantRequestError(t *testing.T, err error, cmd protocol.Command, reply protocol.ReplyKind) {
	t.Helper()
	var re *client.RequestError
	if !errors.As(err, &re) || re.Command != cmd || re.Reply != reply {
		t.Fatalf("error = %v, want a RequestError for %v with %v", err, cmd, reply)
	}
}

// waitDone waits until c's connection has ended.
func waitDone(t *testing.T, c *client.Conn) {
	t.Helper()
	select {
	case <-c.Done():
	case <-time.After(timeout):
		t.Fatalf("Done not closed within %v", timeout)
	}
}

func TestLogin(t *testing.T) {
	s := chattest.Start(t, nil)
	c := dial(t, s.Addr)
	if err := c.Login(testCtx(t), "alice"); err != nil {
		t.Fatalf("Login: %v", err)
	}
	if err := c.Err(); err != nil {
		t.Errorf("Err on an open connection = %v, want nil", err)
	}
	wantList(t, c, "alice")
}

func TestLoginNameInUse(t *testing.T) {
	s := chattest.Start(t, nil)
	loggedIn(t, s.Addr, "alice")
	c := dial(t, s.Addr)
	if err := c.Login(testCtx(t), "alice"); err != client.ErrNameInUse {
		t.Fatalf("Login(alice) again = %v, want ErrNameInUse", err)
	}
	// The connection stays open and unauthenticated: try another name.
	login(t, c, "bob")
	wantList(t, c, "alice", "bob")
}

func TestLoginServerBusy(t *testing.T) {
	s := chattest.Start(t, func(c *chat.Config) { c.MaxUsers = 1 })
	loggedIn(t, s.Addr, "alice")
	c := dial(t, s.Addr)
	for range 2 { // the connection stays usable after BUSY
		if err := c.Login(testCtx(t), "bob"); err != client.ErrServerBusy {
			t.Fatalf("Login(bob) = %v, want ErrServerBusy", err)
		}
	}
	// A taken name is IN-USE even when the server is full.
	if err := c.Login(testCtx(t), "alice"); err != client.ErrNameInUse {
		t.Fatalf("Login(alice) = %v, want ErrNameInUse", err)
	}
}

func TestLoginBadName(t *testing.T) {
	s := chattest.Start(t, nil)
	c := dial(t, s.Addr)
	for _, name := range []string{"", "a,b", "a b", "a!", "x\ty", strings.Repeat("n", protocol.MaxNameBytes+1)} {
		err := c.Login(testCtx(t), name)
		wantRequestError(t, err, protocol.CmdHelloFrom, protocol.ReplyBadBody)
	}
	login(t, c, "zoë")
}

func TestLoginTwice(t *testing.T) {
	s := chattest.Start(t, nil)
	c := loggedIn(t, s.Addr, "alice")
	wantRequestError(t, c.Login(testCtx(t), "bob"), protocol.CmdHelloFrom, protocol.ReplyBadHeader)
	wantList(t, c, "alice")
}

func TestRequestsBeforeLogin(t *testing.T) {
	s := chattest.Start(t, nil)
	c := dial(t, s.Addr)
	_, err := c.List(testCtx(t))
	wantRequestError(t, err, protocol.CmdList, protocol.ReplyBadHeader)
	wantRequestError(t, c.Send(testCtx(t), "bob", "hi"), protocol.CmdSend, protocol.ReplyBadHeader)
	var re *client.RequestError
	errors.As(err, &re)
	if got, want := re.Error(), "server answered LIST with BAD-RQST-HDR"; got != want {
		t.Errorf("Error() = %q, want %q", got, want)
	}
}

func TestList(t *testing.T) {
	s := chattest.Start(t, nil)
	names := []string{"alice", "bob", "carol"}
	var conns []*client.Conn
	for _, n := range names {
		conns = append(conns, loggedIn(t, s.Addr, n))
	}
	for _, c := range conns {
		wantList(t, c, names...)
	}
}

func TestSend(t *testing.T) {
	s := chattest.Start(t, nil)
	alice := loggedIn(t, s.Addr, "alice")
	bob := loggedIn(t, s.Addr, "bob")

	if err := alice.Send(testCtx(t), "bob", "  hello\tthere "); err != nil {
		t.Fatalf("Send to bob: %v", err)
	}
	if d, want := recv(t, bob), (client.Delivery{From: "alice", Message: "  hello\tthere "}); d != want {
		t.Errorf("bob got %+v, want %+v", d, want)
	}
	if err := bob.Send(testCtx(t), "alice", "DELIVERY eve fake"); err != nil {
		t.Fatalf("Send to alice: %v", err)
	}
	if d, want := recv(t, alice), (client.Delivery{From: "bob", Message: "DELIVERY eve fake"}); d != want {
		t.Errorf("alice got %+v, want %+v", d, want)
	}
}

func TestSendBadDestUser(t *testing.T) {
	s := chattest.Start(t, nil)
	loggedIn(t, s.Addr, "bob")
	c := loggedIn(t, s.Addr, "alice")
	for _, to := range []string{"nobody", "Bob"} {
		if err := c.Send(testCtx(t), to, "hi"); err != client.ErrBadDestUser {
			t.Errorf("Send to %q = %v, want ErrBadDestUser", to, err)
		}
	}
}

func TestSendBadBody(t *testing.T) {
	s := chattest.Start(t, nil)
	c := loggedIn(t, s.Addr, "alice")
	for _, tc := range []struct{ to, msg string }{
		{"alice", ""}, {"alice", " \t "}, {"", "hi"}, {"a,b", "hi"}, {"nobody", ""},
	} {
		wantRequestError(t, c.Send(testCtx(t), tc.to, tc.msg), protocol.CmdSend, protocol.ReplyBadBody)
	}
}

func TestSendSelf(t *testing.T) {
	s := chattest.Start(t, nil)
	c := loggedIn(t, s.Addr, "alice")
	if err := c.Send(testCtx(t), "alice", "note to self"); err != nil {
		t.Fatalf("Send to self: %v", err)
	}
	if d, want := recv(t, c), (client.Delivery{From: "alice", Message: "note to self"}); d != want {
		t.Errorf("got %+v, want %+v", d, want)
	}
}

func TestLineBreakNotSent(t *testing.T) {
	s := chattest.Start(t, nil)
	c := dial(t, s.Addr)
	if err := c.Login(testCtx(t), "alice\nLIST"); err != client.ErrLineBreak {
		t.Fatalf("Login with a line break = %v, want ErrLineBreak", err)
	}
	login(t, c, "alice")
	for _, tc := range []struct{ to, msg string }{{"alice", "a\nLIST"}, {"alice\r", "hi"}, {"alice", "hi\r"}} {
		if err := c.Send(testCtx(t), tc.to, tc.msg); err != client.ErrLineBreak {
			t.Errorf("Send(%q, %q) = %v, want ErrLineBreak", tc.to, tc.msg, err)
		}
	}
	wantList(t, c, "alice") // nothing was sent: replies are still in step
}

// TestPipelinedSends sends from many goroutines on one Conn at once, mixed
// with LISTs, and checks that every call gets its own reply and every
// message arrives, each goroutine's in the order it sent them.
func TestPipelinedSends(t *testing.T) {
	const (
		senders = 8
		each    = 200
	)
	s := chattest.Start(t, nil)
	alice := loggedIn(t, s.Addr, "alice")
	bob := loggedIn(t, s.Addr, "bob")

	var wg sync.WaitGroup
	errs := make(chan error, senders)
	for g := range senders {
		wg.Go(func() {
			ctx := testCtx(t)
			for i := range each {
				if err := alice.Send(ctx, "bob", fmt.Sprintf("%d %d", g, i)); err != nil {
					errs <- fmt.Errorf("sender %d, message %d: %w", g, i, err)
					return
				}
				if i%50 == 0 {
					names, err := alice.List(ctx)
					if err != nil || !slices.Equal(names, []string{"alice", "bob"}) {
						errs <- fmt.Errorf("sender %d: List = %q, %v", g, names, err)
						return
					}
				}
			}
		})
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Fatal(err)
	}

	next := make([]int, senders)
	for range senders * each {
		d := recv(t, bob)
		var g, i int
		if _, err := fmt.Sscanf(d.Message, "%d %d", &g, &i); err != nil || d.From != "alice" {
			t.Fatalf("unexpected delivery %+v", d)
		}
		if i != next[g] {
			t.Fatalf("sender %d: got message %d, want %d", g, i, next[g])
		}
		next[g]++
	}
}

// TestDeliveriesQueued checks that deliveries nobody reads yet neither get
// lost nor hold up the replies to the same connection.
func TestDeliveriesQueued(t *testing.T) {
	const n = 2000
	s := chattest.Start(t, nil)
	alice := loggedIn(t, s.Addr, "alice")
	bob := loggedIn(t, s.Addr, "bob")
	for i := range n {
		if err := alice.Send(testCtx(t), "bob", fmt.Sprint(i)); err != nil {
			t.Fatalf("Send %d: %v", i, err)
		}
	}
	wantList(t, bob, "alice", "bob") // bob's reader is not stuck behind the deliveries
	for i := range n {
		if d := recv(t, bob); d.Message != fmt.Sprint(i) {
			t.Fatalf("delivery %d = %+v", i, d)
		}
	}
}

// trickleConn hands the reader one byte per Read, so every reply line is
// split across many reads.
type trickleConn struct{ net.Conn }

func (c trickleConn) Read(p []byte) (int, error) {
	return c.Conn.Read(p[:min(len(p), 1)])
}

func TestRepliesSplitAcrossReads(t *testing.T) {
	s := chattest.Start(t, nil)
	c, _ := wrap(t, s.Addr, func(nc net.Conn) trickleConn { return trickleConn{nc} })
	login(t, c, "alice")
	long := strings.Repeat("0123456789", 10_000) // longer than the read buffer
	for _, msg := range []string{"hi", long} {
		if err := c.Send(testCtx(t), "alice", msg); err != nil {
			t.Fatalf("Send: %v", err)
		}
		if d := recv(t, c); d.From != "alice" || d.Message != msg {
			t.Fatalf("delivery = %q from %q, want %d bytes from alice", truncate(d.Message), d.From, len(msg))
		}
	}
	wantList(t, c, "alice")
}

func TestLongDelivery(t *testing.T) {
	s := chattest.Start(t, nil)
	alice := loggedIn(t, s.Addr, "alice")
	bob := loggedIn(t, s.Addr, "bob")
	msg := strings.Repeat("x", 1<<20-len("SEND bob ")) // the server's longest line
	for range 2 {
		if err := alice.Send(testCtx(t), "bob", msg); err != nil {
			t.Fatalf("Send: %v", err)
		}
		if d := recv(t, bob); d.Message != msg {
			t.Fatalf("delivery of %d bytes, want %d", len(d.Message), len(msg))
		}
	}
}

func truncate(s string) string { return s[:min(len(s), 20)] }

// gatedConn can hold back what its reads return, so a test can keep a
// Conn's reader from seeing a reply that has already arrived.
type gatedConn struct {
	net.Conn

	mu     sync.Mutex
	gate   chan struct{} // nil: reads return at once; else they wait for it to close
	closed bool
}

func newGatedConn(nc net.Conn) *gatedConn { return &gatedConn{Conn: nc} }

func (g *gatedConn) Read(p []byte) (int, error) {
	n, err := g.Conn.Read(p)
	g.mu.Lock()
	gate := g.gate
	g.mu.Unlock()
	if gate != nil {
		<-gate
	}
	g.mu.Lock()
	defer g.mu.Unlock()
	if g.closed {
		return 0, net.ErrClosed
	}
	return n, err
}

// hold makes reads wait, once they have their bytes, until release.
func (g *gatedConn) hold() {
	g.mu.Lock()
	defer g.mu.Unlock()
	g.gate = make(chan struct{})
}

func (g *gatedConn) release() {
	g.mu.Lock()
	defer g.mu.Unlock()
	if g.gate != nil {
		close(g.gate)
		g.gate = nil
	}
}

func (g *gatedConn) Close() error {
	g.mu.Lock()
	g.closed = true
	g.mu.Unlock()
	g.release()
	return g.Conn.Close()
}

func TestContextAlreadyDone(t *testing.T) {
	s := chattest.Start(t, nil)
	c := loggedIn(t, s.Addr, "alice")
	ctx, cancel := context.WithCancel(t.Context())
	cancel()
	if err := c.Send(ctx, "alice", "hi"); err != context.Canceled {
		t.Errorf("Send = %v, want context.Canceled", err)
	}
	if _, err := c.List(ctx); err != context.Canceled {
		t.Errorf("List = %v, want context.Canceled", err)
	}
	if n := client.PendingCount(c); n != 0 {
		t.Errorf("%d requests pending, want 0: nothing was sent", n)
	}
	wantList(t, c, "alice")
}

// TestContextCancelWhileWaiting cancels calls whose requests the server
// has handled but whose replies the reader has not seen yet, and checks
// that the replies to later calls still go to the right calls.
func TestContextCancelWhileWaiting(t *testing.T) {
	s := chattest.Start(t, nil)
	alice, gate := wrap(t, s.Addr, newGatedConn)
	login(t, alice, "alice")
	bob := loggedIn(t, s.Addr, "bob")

	gate.hold()
	ctx, cancel := context.WithCancel(t.Context())
	errs := make(chan error, 3)
	go func() { errs <- alice.Send(ctx, "bob", "first") }()
	if d := recv(t, bob); d.Message != "first" { // the server has answered it
		t.Fatalf("bob got %+v", d)
	}
	go func() { errs <- alice.Send(ctx, "nobody", "second") }() // BAD-DEST-USER, dropped
	go func() {
		_, err := alice.List(ctx)
		errs <- err
	}()
	chattest.Eventually(t, "3 requests in flight", func() bool { return client.PendingCount(alice) == 3 })
	cancel()
	for range 3 {
		if err := <-errs; err != context.Canceled {
			t.Fatalf("cancelled call = %v, want context.Canceled", err)
		}
	}
	gate.release()

	wantList(t, alice, "alice", "bob")
	if err := alice.Send(testCtx(t), "nobody", "hi"); err != client.ErrBadDestUser {
		t.Errorf("Send to nobody = %v, want ErrBadDestUser", err)
	}
	if err := alice.Send(testCtx(t), "bob", "third"); err != nil {
		t.Errorf("Send to bob = %v", err)
	}
	if n := client.PendingCount(alice); n != 0 {
		t.Errorf("%d requests pending, want 0", n)
	}
}

func TestContextDeadline(t *testing.T) {
	s := chattest.Start(t, nil)
	alice, gate := wrap(t, s.Addr, newGatedConn)
	login(t, alice, "alice")
	gate.hold()
	ctx, cancel := context.WithTimeout(t.Context(), 50*time.Millisecond)
	defer cancel()
	if _, err := alice.List(ctx); err != context.DeadlineExceeded {
		t.Fatalf("List = %v, want context.DeadlineExceeded", err)
	}
	gate.release()
	wantList(t, alice, "alice")
}

func TestServerShutdown(t *testing.T) {
	s := chattest.Start(t, nil)
	alice := loggedIn(t, s.Addr, "alice")
	bob := loggedIn(t, s.Addr, "bob")
	if err := alice.Send(testCtx(t), "bob", "before"); err != nil {
		t.Fatalf("Send: %v", err)
	}
	// The server queued the DELIVERY on bob before alice's SEND-OK, so it
	// reaches bob before the reply to this LIST. (Shutdown drops what a
	// connection has queued and not yet written.)
	wantList(t, bob, "alice", "bob")
	s.Stop()

	for _, c := range []*client.Conn{alice, bob} {
		waitDone(t, c)
		err := c.Err()
		if !errors.Is(err, client.ErrClosed) || err == client.ErrClosed {
			t.Errorf("Err = %v, want ErrClosed wrapping the cause", err)
		}
		if _, err := c.List(testCtx(t)); !errors.Is(err, client.ErrClosed) {
			t.Errorf("List after the end = %v, want ErrClosed", err)
		}
		if err := c.Login(testCtx(t), "carol"); !errors.Is(err, client.ErrClosed) {
			t.Errorf("Login after the end = %v, want ErrClosed", err)
		}
	}
	// A delivery that arrived before the end is still handed out, then the
	// channel is closed.
	if d := recv(t, bob); d.Message != "before" {
		t.Errorf("bob got %+v, want the message sent before the end", d)
	}
	if _, ok := <-bob.Deliveries(); ok {
		t.Error("Deliveries still open after the end")
	}
	if err := bob.Close(); err != nil {
		t.Errorf("Close after the end = %v, want nil", err)
	}
}

// TestServerClosesWithCallPending checks that a call waiting for a reply
// when the server closes the connection gets ErrClosed.
func TestServerClosesWithCallPending(t *testing.T) {
	s := chattest.Start(t, nil)
	alice, gate := wrap(t, s.Addr, newGatedConn)
	login(t, alice, "alice")
	gate.hold() // the reader does not see the end yet
	s.Stop()

	errs := make(chan error, 1)
	go func() {
		_, err := alice.List(testCtx(t))
		errs <- err
	}()
	// The write may fail at once if the server's reset came back already;
	// usually the call is left waiting for its reply.
	chattest.Eventually(t, "the call to wait or fail", func() bool { return client.PendingCount(alice) == 1 || len(errs) == 1 })
	gate.release()
	if err := <-errs; !errors.Is(err, client.ErrClosed) {
		t.Fatalf("pending List = %v, want ErrClosed", err)
	}
	waitDone(t, alice)
	if err := alice.Err(); !errors.Is(err, client.ErrClosed) {
		t.Errorf("Err = %v, want ErrClosed", err)
	}
}

// TestCloseWithCallPending closes a Conn while a call waits for a reply
// that has already arrived but is not read yet: the call gets ErrClosed.
func TestCloseWithCallPending(t *testing.T) {
	s := chattest.Start(t, nil)
	alice, gate := wrap(t, s.Addr, newGatedConn)
	login(t, alice, "alice")
	gate.hold()
	errs := make(chan error, 1)
	go func() {
		_, err := alice.List(testCtx(t))
		errs <- err
	}()
	chattest.Eventually(t, "the request in flight", func() bool { return client.PendingCount(alice) == 1 })
	if err := alice.Close(); err != nil {
		t.Errorf("Close = %v", err)
	}
	if err := <-errs; err != client.ErrClosed {
		t.Errorf("pending List = %v, want ErrClosed", err)
	}
	if err := alice.Err(); err != client.ErrClosed {
		t.Errorf("Err after Close = %v, want ErrClosed", err)
	}
	if _, ok := <-alice.Deliveries(); ok {
		t.Error("Deliveries still open after Close")
	}
	if err := alice.Close(); err != nil {
		t.Errorf("second Close = %v, want nil", err)
	}
	if err := alice.Send(testCtx(t), "alice", "hi"); err != client.ErrClosed {
		t.Errorf("Send after Close = %v, want ErrClosed", err)
	}
}

// TestCloseDropsUnreadDeliveries closes a Conn with deliveries nobody took:
// Close still returns, and goleak checks that nothing is left running.
func TestCloseDropsUnreadDeliveries(t *testing.T) {
	s := chattest.Start(t, nil)
	alice := loggedIn(t, s.Addr, "alice")
	for i := range 10 {
		if err := alice.Send(testCtx(t), "alice", fmt.Sprint(i)); err != nil {
			t.Fatalf("Send: %v", err)
		}
	}
	if err := alice.Close(); err != nil {
		t.Fatalf("Close: %v", err)
	}
	waitDone(t, alice)
}

// TestConnectionRefusedBusy checks a server over its connection limit: it
// says BUSY before any request and closes, and the Conn ends with an error
// that says so.
func TestConnectionRefusedBusy(t *testing.T) {
	s := chattest.Start(t, func(c *chat.Config) { c.MaxConns = 1 })
	loggedIn(t, s.Addr, "alice")
	c := dial(t, s.Addr)
	waitDone(t, c)
	if err := c.Err(); !errors.Is(err, client.ErrServerBusy) || !errors.Is(err, client.ErrClosed) {
		t.Errorf("Err = %v, want ErrClosed wrapping ErrServerBusy", err)
	}
	if err := c.Login(testCtx(t), "bob"); !errors.Is(err, client.ErrServerBusy) {
		t.Errorf("Login = %v, want ErrServerBusy", err)
	}
}

func TestDialError(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	ln.Close()
	if c, err := client.Dial(testCtx(t), addr); err == nil {
		c.Close()
		t.Fatalf("Dial to a closed port succeeded")
	}
}

func TestEOFErr(t *testing.T) {
	s := chattest.Start(t, func(c *chat.Config) { c.LoginTimeout = 10 * time.Millisecond })
	c := dial(t, s.Addr) // never logs in: the server closes it
	waitDone(t, c)
	if err := c.Err(); !errors.Is(err, io.EOF) || !errors.Is(err, client.ErrClosed) {
		t.Errorf("Err = %v, want ErrClosed wrapping io.EOF", err)
	}
}

// stuckConn makes its next write stall after writing partial bytes, until
// the write deadline is set in the past, as a write to a server that does
// not read would.
type stuckConn struct {
	net.Conn
	partial int
	blocked chan struct{} // closed when the write stalls
	unblock chan struct{} // closed when the deadline is set in the past

	mu    sync.Mutex
	armed bool
	once  sync.Once
}

func (c *stuckConn) arm() {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.armed = true
}

func (c *stuckConn) Write(p []byte) (int, error) {
	c.mu.Lock()
	armed := c.armed
	c.armed = false
	c.mu.Unlock()
	if !armed {
		return c.Conn.Write(p)
	}
	n, err := c.Conn.Write(p[:c.partial])
	if err != nil {
		return n, err
	}
	close(c.blocked)
	<-c.unblock
	return n, os.ErrDeadlineExceeded
}

func (c *stuckConn) SetWriteDeadline(t time.Time) error {
	if !t.IsZero() && t.Before(time.Now()) {
		c.once.Do(func() { close(c.unblock) })
	}
	return c.Conn.SetWriteDeadline(t)
}

// TestContextCancelWhileWriting cancels a call whose request is still
// being written. If nothing was written, the connection goes on; after a
// partial line it cannot, and it ends.
func TestContextCancelWhileWriting(t *testing.T) {
	for _, tc := range []struct {
		name    string
		partial int
	}{{"nothing written", 0}, {"part of the line written", len("SEN")}} {
		t.Run(tc.name, func(t *testing.T) {
			s := chattest.Start(t, nil)
			alice, stuck := wrap(t, s.Addr, func(nc net.Conn) *stuckConn {
				return &stuckConn{Conn: nc, partial: tc.partial, blocked: make(chan struct{}), unblock: make(chan struct{})}
			})
			login(t, alice, "alice")
			stuck.arm()
			ctx, cancel := context.WithCancel(t.Context())
			errs := make(chan error, 1)
			go func() { errs <- alice.Send(ctx, "alice", "hi") }()
			<-stuck.blocked
			cancel()
			if err := <-errs; err != context.Canceled {
				t.Fatalf("Send = %v, want context.Canceled", err)
			}
			if tc.partial == 0 {
				if n := client.PendingCount(alice); n != 0 {
					t.Errorf("%d requests pending, want 0", n)
				}
				wantList(t, alice, "alice")
				return
			}
			waitDone(t, alice)
			if err := alice.Err(); !errors.Is(err, client.ErrClosed) || !errors.Is(err, os.ErrDeadlineExceeded) {
				t.Errorf("Err = %v, want ErrClosed wrapping the write's error", err)
			}
		})
	}
}
