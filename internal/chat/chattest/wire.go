package chattest

import (
	"bufio"
	"errors"
	"fmt"
	"io"
	"net"
	"slices"
	"strings"
	"testing"
	"time"
)

// ReplyTimeout bounds every wait for a reply. Tests synchronise on
// replies; this only turns a hang into a failure.
const ReplyTimeout = 10 * time.Second

// Wire is a raw client connection, plain TCP or TLS, that speaks the
// protocol line by line and counts the bytes it moves, so that a test
// knows what the server must have seen. Every test package's clients are
// Wires.
type Wire struct {
	T       testing.TB
	Conn    net.Conn
	R       *bufio.Reader
	Read    int // bytes read from the connection so far
	Written int // bytes written to it so far
}

// Dial connects to addr; the connection is closed when the test ends.
func Dial(t testing.TB, addr string) *Wire {
	t.Helper()
	c, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatalf("dial %s: %v", addr, err)
	}
	return NewWire(t, c)
}

// NewWire speaks the protocol on conn, which is closed when the test ends.
func NewWire(t testing.TB, conn net.Conn) *Wire {
	t.Cleanup(func() { conn.Close() })
	w := &Wire{T: t, Conn: conn}
	w.R = bufio.NewReaderSize(readerFunc(func(p []byte) (int, error) {
		n, err := w.Conn.Read(p)
		w.Read += n
		return n, err
	}), 1<<16)
	return w
}

type readerFunc func([]byte) (int, error)

func (f readerFunc) Read(p []byte) (int, error) { return f(p) }

// LoggedIn dials addr and logs in as name.
func LoggedIn(t testing.TB, addr, name string) *Wire {
	t.Helper()
	return Dial(t, addr).Login(name)
}

// TCP returns the underlying TCP connection, for a half-close or a reset.
func (w *Wire) TCP() *net.TCPConn {
	if c, ok := w.Conn.(interface{ NetConn() net.Conn }); ok {
		return c.NetConn().(*net.TCPConn)
	}
	return w.Conn.(*net.TCPConn)
}

// Send writes s as it is: the caller includes the "\n"s.
func (w *Wire) Send(s string) {
	w.T.Helper()
	if err := w.SendErr(s); err != nil {
		w.T.Fatalf("write: %v", err)
	}
}

// SendErr is Send that returns a failed write instead of failing the
// test. A write the server does not take within ReplyTimeout fails.
func (w *Wire) SendErr(s string) error {
	_ = w.Conn.SetWriteDeadline(time.Now().Add(ReplyTimeout))
	n, err := io.WriteString(w.Conn, s)
	w.Written += n
	return err
}

// Line reads one line, without its "\n".
func (w *Wire) Line() string {
	w.T.Helper()
	s, err := w.LineErr()
	if err != nil {
		w.T.Fatalf("read reply: %v", err)
	}
	return s
}

// LineErr is Line that returns a failed read instead of failing the test.
func (w *Wire) LineErr() (string, error) {
	_ = w.Conn.SetReadDeadline(time.Now().Add(ReplyTimeout))
	s, err := w.R.ReadString('\n')
	if err != nil {
		return "", fmt.Errorf("%w (got %q so far)", err, s)
	}
	return strings.TrimSuffix(s, "\n"), nil
}

// Expect reads len(want) lines and checks each.
func (w *Wire) Expect(want ...string) {
	w.T.Helper()
	if err := w.ExpectErr(want...); err != nil {
		w.T.Fatal(err)
	}
}

// ExpectErr is Expect that returns what went wrong instead of failing the
// test.
func (w *Wire) ExpectErr(want ...string) error {
	for _, wl := range want {
		got, err := w.LineErr()
		if err != nil {
			return fmt.Errorf("read reply: %w; want %q", err, wl)
		}
		if got != wl {
			return fmt.Errorf("reply = %q, want %q", got, wl)
		}
	}
	return nil
}

// Request sends one request line and checks the line that comes back.
func (w *Wire) Request(request, want string) {
	w.T.Helper()
	w.Send(request + "\n")
	if got := w.Line(); got != want {
		w.T.Fatalf("%q: reply %q, want %q", request, got, want)
	}
}

// Login logs in as name and checks the HELLO.
func (w *Wire) Login(name string) *Wire {
	w.T.Helper()
	w.Request("HELLO-FROM "+name, "HELLO "+name)
	return w
}

// SendUntilBadDest sends line, a SEND, again and again while the server
// answers SEND-OK, until it answers BAD-DEST-USER: its recipient, who
// does not read, was cut off as a slow consumer. Any other reply, or more
// than max SEND-OKs, fails the test.
func (w *Wire) SendUntilBadDest(line string, max int) {
	w.T.Helper()
	for i := 0; ; i++ {
		w.Send(line)
		r := w.Line()
		if r == "BAD-DEST-USER" {
			return
		}
		if r != "SEND-OK" || i > max {
			w.T.Fatalf("reply %d = %q, want SEND-OK until BAD-DEST-USER", i, r)
		}
	}
}

// Reset closes the connection with a TCP reset instead of a FIN.
func (w *Wire) Reset() {
	_ = w.TCP().SetLinger(0)
	w.Conn.Close()
}

// CloseWrite closes the client's side: the server answers what it got,
// then closes.
func (w *Wire) CloseWrite() {
	w.T.Helper()
	if err := w.TCP().CloseWrite(); err != nil {
		w.T.Fatalf("close write: %v", err)
	}
}

// ExpectEOF checks that the server closes the connection, after at most
// the given lines.
func (w *Wire) ExpectEOF(want ...string) {
	w.T.Helper()
	w.Expect(want...)
	_ = w.Conn.SetReadDeadline(time.Now().Add(ReplyTimeout))
	s, err := w.R.ReadString('\n')
	if err == nil || !closedByPeer(err) {
		w.T.Fatalf("read = %q, %v; want the connection closed", s, err)
	}
}

// ExpectClosed checks that the server closes the connection, after lines
// that each start with one of maybe (replies that may or may not have come
// before a fault), and nothing else.
func (w *Wire) ExpectClosed(maybe ...string) {
	w.T.Helper()
	_ = w.Conn.SetReadDeadline(time.Now().Add(ReplyTimeout))
	for {
		line, err := w.R.ReadString('\n')
		if err != nil {
			if !closedByPeer(err) {
				w.T.Fatalf("read: %v; want the connection closed", err)
			}
			return
		}
		if !slices.ContainsFunc(maybe, func(p string) bool { return strings.HasPrefix(line, p) }) {
			w.T.Fatalf("got %q; want the connection closed", line)
		}
	}
}

// Drain reads and counts whatever the server still sends until it closes
// the connection, and returns how many bytes that was. It fails if the
// server does not close within ReplyTimeout.
func (w *Wire) Drain() int64 {
	w.T.Helper()
	_ = w.Conn.SetReadDeadline(time.Now().Add(ReplyTimeout))
	n, err := io.Copy(io.Discard, w.R)
	if err != nil && !closedByPeer(err) {
		w.T.Fatalf("after %d bytes: %v; want the connection closed", n, err)
	}
	return n
}

// closedByPeer reports whether a read error means the server closed the
// connection (a FIN or a reset), not a timeout.
func closedByPeer(err error) bool {
	var ne net.Error
	return errors.Is(err, io.EOF) || !errors.As(err, &ne) || !ne.Timeout()
}
