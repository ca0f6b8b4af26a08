// Package tests holds black-box tests of the chat server: each starts a
// real server on 127.0.0.1 and talks to it over TCP, using only the chat
// package's exported API and the wire.
package tests

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"go.uber.org/goleak"

	"chatserver/internal/chat"
	"chatserver/internal/chat/chattest"
	"chatserver/internal/natscluster"
	"chatserver/internal/natstest"
)

func TestMain(m *testing.M) {
	code := m.Run()
	if serverBuild.dir != "" {
		os.RemoveAll(serverBuild.dir)
	}
	if code == 0 {
		if err := goleak.Find(); err != nil {
			fmt.Fprintln(os.Stderr, "goleak:", err)
			code = 1
		}
	}
	os.Exit(code)
}

// serverBuild is the chat-server binary the process tests run, built once.
var serverBuild struct {
	once sync.Once
	dir  string
	path string
	err  error
}

// serverBinary returns the chat-server binary to run: $CHAT_SERVER_BIN if
// set (to run the process tests against another build), else one built
// from this tree, once per test run, with -race if the tests run with it
// (startProc fails a test whose server reports a race).
func serverBinary(t testing.TB) string {
	t.Helper()
	if bin := os.Getenv("CHAT_SERVER_BIN"); bin != "" {
		return bin
	}
	serverBuild.once.Do(func() {
		if serverBuild.dir, serverBuild.err = os.MkdirTemp("", "chat-server-test-"); serverBuild.err != nil {
			return
		}
		serverBuild.path = filepath.Join(serverBuild.dir, "chat-server")
		args := []string{"build", "-o", serverBuild.path}
		if raceEnabled {
			args = append(args, "-race")
		}
		if out, err := exec.Command("go", append(args, "chatserver/cmd/chat-server")...).CombinedOutput(); err != nil {
			serverBuild.err = fmt.Errorf("go build: %v\n%s", err, out)
		}
	})
	if serverBuild.err != nil {
		t.Fatal(serverBuild.err)
	}
	return serverBuild.path
}

// replyTimeout bounds every wait for a reply. Tests synchronise on replies;
// this only turns a hang into a failure.
const replyTimeout = 10 * time.Second

// startServer starts a server on 127.0.0.1 with the default config changed
// by edit (which may be nil), and stops it when the test ends.
func startServer(t testing.TB, edit func(*chat.Config)) (*chat.Server, string) {
	t.Helper()
	// With CHAT_TEST_CLUSTER set, every server runs as a one-node cluster.
	if os.Getenv("CHAT_TEST_CLUSTER") != "" {
		user := edit
		edit = func(c *chat.Config) {
			if user != nil {
				user(c)
			}
			if c.Cluster == nil {
				c.Cluster = oneNodeCluster(t, *c)
			}
		}
	}
	s := chattest.Start(t, edit)
	return s.Server, s.Addr
}

// oneNodeCluster is a cluster-mode hub on its own embedded NATS server.
// With CHAT_TEST_CLUSTER=1, every test that starts a server runs it in
// cluster mode, as one node: the protocol must not change.
func oneNodeCluster(t testing.TB, cfg chat.Config) *natscluster.Cluster {
	t.Helper()
	ns := runNATS(t)
	nc := natstest.Connect(t, ns.URL())
	h, err := natscluster.New(context.Background(), nc, natscluster.Config{MaxUsers: cfg.MaxUsers, MaxMessageBytes: cfg.MaxLineBytes})
	if err != nil {
		t.Fatalf("natscluster.New: %v", err)
	}
	t.Cleanup(func() { h.Close() })
	return h
}

// runNATS runs a NATS server for in-process cluster nodes, with a max
// payload that carries the default line cap.
func runNATS(t testing.TB) *natstest.Server {
	return natstest.Run(t, natstest.MaxPayload(4<<20))
}

// wire is a raw client connection that speaks the protocol line by line.
type wire struct {
	t    testing.TB
	conn *net.TCPConn
	r    *bufio.Reader
}

func dial(t testing.TB, addr string) *wire {
	t.Helper()
	c, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatalf("dial %s: %v", addr, err)
	}
	t.Cleanup(func() { c.Close() })
	return &wire{t: t, conn: c.(*net.TCPConn), r: bufio.NewReaderSize(c, 1<<16)}
}

// send writes s as it is: the caller includes the "\n"s.
func (w *wire) send(s string) {
	w.t.Helper()
	if _, err := w.conn.Write([]byte(s)); err != nil {
		w.t.Fatalf("write: %v", err)
	}
}

// line reads one reply line, without its "\n".
func (w *wire) line() string {
	w.t.Helper()
	_ = w.conn.SetReadDeadline(time.Now().Add(replyTimeout))
	s, err := w.r.ReadString('\n')
	if err != nil {
		w.t.Fatalf("read reply: %v (got %q so far)", err, s)
	}
	return strings.TrimSuffix(s, "\n")
}

// expect reads len(want) reply lines and checks each.
func (w *wire) expect(want ...string) {
	w.t.Helper()
	for _, wl := range want {
		if got := w.line(); got != wl {
			w.t.Fatalf("reply = %q, want %q", got, wl)
		}
	}
}

// login logs in as name and checks the HELLO.
func (w *wire) login(name string) *wire {
	w.t.Helper()
	w.send("HELLO-FROM " + name + "\n")
	w.expect("HELLO " + name)
	return w
}

// reset closes the connection with a TCP reset instead of a FIN.
func (w *wire) reset() {
	_ = w.conn.SetLinger(0)
	w.conn.Close()
}

// expectEOF checks that the server closes the connection, after at most
// the given replies.
func (w *wire) expectEOF(want ...string) {
	w.t.Helper()
	w.expect(want...)
	_ = w.conn.SetReadDeadline(time.Now().Add(replyTimeout))
	s, err := w.r.ReadString('\n')
	if err == nil || (!errors.Is(err, io.EOF) && !isReset(err)) {
		w.t.Fatalf("read = %q, %v; want the connection closed", s, err)
	}
}

func isReset(err error) bool {
	var op *net.OpError
	return errors.As(err, &op) && !op.Timeout()
}

// loggedIn logs in a fresh connection as name.
func loggedIn(t testing.TB, addr, name string) *wire {
	t.Helper()
	return dial(t, addr).login(name)
}
