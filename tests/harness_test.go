// Package tests holds black-box tests of the chat server: each starts a
// real server on 127.0.0.1 and talks to it over TCP, using only the chat
// package's exported API and the wire.
package tests

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"sync"
	"testing"

	"go.uber.org/goleak"

	"chatserver/internal/chat"
	"chatserver/internal/chat/chattest"
	"chatserver/internal/natscluster"
	"chatserver/internal/natstest"
)

func TestMain(m *testing.M) {
	code := m.Run()
	if buildDir != "" {
		os.RemoveAll(buildDir)
	}
	if code == 0 {
		if err := goleak.Find(); err != nil {
			fmt.Fprintln(os.Stderr, "goleak:", err)
			code = 1
		}
	}
	os.Exit(code)
}

// serverBuild is a chat-server binary the process tests run, built once.
type serverBuild struct {
	once sync.Once
	path string
	err  error
}

var (
	buildDir     string      // where the builds go; removed by TestMain
	buildDirOnce sync.Once   // makes buildDir
	raceBuild    serverBuild // with -race when the tests run with it
	plainBuild   serverBuild // never with -race: for tests that measure memory
)

// serverBinary returns the chat-server binary to run: $CHAT_SERVER_BIN if
// set (to run the process tests against another build), else one built
// from this tree, once per test run, with -race if the tests run with it
// (chattest.StartProc fails a test whose server reports a race).
func serverBinary(t testing.TB) string {
	t.Helper()
	return raceBuild.get(t, raceEnabled)
}

// plainServerBinary is serverBinary without the race detector, whose
// memory would swamp what a test measures.
func plainServerBinary(t testing.TB) string {
	t.Helper()
	return plainBuild.get(t, false)
}

func (b *serverBuild) get(t testing.TB, race bool) string {
	t.Helper()
	if bin := os.Getenv("CHAT_SERVER_BIN"); bin != "" {
		return bin
	}
	b.once.Do(func() {
		buildDirOnce.Do(func() { buildDir, b.err = os.MkdirTemp("", "chat-server-test-") })
		if buildDir == "" {
			b.err = fmt.Errorf("no directory for the build: %w", b.err)
			return
		}
		b.path = filepath.Join(buildDir, fmt.Sprintf("chat-server-race-%t", race))
		args := []string{"build", "-o", b.path}
		if race {
			args = append(args, "-race")
		}
		if out, err := exec.Command("go", append(args, "chatserver/cmd/chat-server")...).CombinedOutput(); err != nil {
			b.err = fmt.Errorf("go build: %v\n%s", err, out)
		}
	})
	if b.err != nil {
		t.Fatal(b.err)
	}
	return b.path
}

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
