package tests

import (
	"net"
	"os/exec"
	"regexp"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"chatserver/internal/chat/chattest"
)

// This file tests the chat-server command as a process: its flags, its
// "Server is on" line, its signals and its exit status.

// TestProcess runs its subtests in parallel against the chat-server
// binary.
func TestProcess(t *testing.T) {
	t.Parallel()
	bin := serverBinary(t)

	t.Run("serves", func(t *testing.T) {
		t.Parallel()
		p := startProc(t, bin, "-a", "127.0.0.1", "-p", "0", "--log-level", "debug")
		addr := p.ListenAddr()
		alice := chattest.LoggedIn(t, addr, "alice")
		alice.Send("LIST\n")
		alice.Expect("LIST-OK alice")
		bob := chattest.LoggedIn(t, addr, "bob")
		bob.Send("SEND alice hi\nWHO\n")
		bob.Expect("SEND-OK", "BAD-RQST-HDR")
		alice.Expect("DELIVERY bob hi")
		alice.Conn.Close()
		bob.Conn.Close()

		p.Signal(syscall.SIGTERM)
		if code := p.Wait(); code != 0 {
			t.Errorf("exit status %d, want 0; stderr:\n%s", code, p.Stderr.String())
		}
		// Logs go to stderr, never stdout; the debug log level makes sure
		// there are some.
		if out := p.Stdout.Lines(); len(out) != 1 {
			t.Errorf("stdout has %d lines %q, want only the Server is on line", len(out), out)
		}
		if p.Stderr.String() == "" {
			t.Errorf("stderr is empty, want the logs there")
		}
	})

	for _, sig := range []syscall.Signal{syscall.SIGTERM, syscall.SIGINT} {
		t.Run(sig.String(), func(t *testing.T) {
			t.Parallel()
			p := startProc(t, bin, "-a", "127.0.0.1", "-p", "0")
			addr := p.ListenAddr()
			user := chattest.LoggedIn(t, addr, "alice")
			anon := chattest.Dial(t, addr)
			anon.Send("LIST\n")
			anon.Expect("BAD-RQST-HDR") // the server has taken this connection

			p.Signal(sig)
			user.ExpectEOF()
			anon.ExpectEOF()
			if code := p.Wait(); code != 0 {
				t.Errorf("exit status %d, want 0; stderr:\n%s", code, p.Stderr.String())
			}
			if out := p.Stdout.Lines(); len(out) != 1 {
				t.Errorf("stdout has %d lines %q, want only the Server is on line", len(out), out)
			}
			// The port is closed: nothing listens there any more.
			if c, err := net.DialTimeout("tcp", addr, time.Second); err == nil {
				c.Close()
				t.Errorf("dial %s after exit succeeded", addr)
			}
		})
	}

	// With its file descriptors used up, accept fails: the server must
	// log it, back off, and serve again once descriptors are free.
	t.Run("out of file descriptors", func(t *testing.T) {
		t.Parallel()
		const limit, clients = 32, 40
		p := startProc(t, "bash", "-c", `ulimit -n `+strconv.Itoa(limit)+` && exec "$0" "$@"`,
			bin, "-a", "127.0.0.1", "-p", "0")
		addr := p.ListenAddr()
		var conns []*chattest.Wire
		for range clients { // the kernel completes these even when accept cannot
			conns = append(conns, chattest.Dial(t, addr))
		}
		chattest.Eventually(t, "an accept failure in the log", func() bool {
			return strings.Contains(p.Stderr.String(), "accept failed")
		})
		for _, c := range conns {
			c.Conn.Close()
		}
		alice := chattest.LoggedIn(t, addr, "alice") // waits in the backlog until the server retries
		alice.Send("LIST\n")
		alice.Expect("LIST-OK alice")
		p.Signal(syscall.SIGTERM)
		if code := p.Wait(); code != 0 {
			t.Errorf("exit status %d, want 0; stderr:\n%s", code, p.Stderr.String())
		}
	})

	t.Run("flags apply", func(t *testing.T) {
		t.Parallel()
		p := startProc(t, bin, "--address", "127.0.0.1", "--port", "0", "--max-users", "1")
		addr := p.ListenAddr()
		chattest.LoggedIn(t, addr, "alice")
		w := chattest.Dial(t, addr)
		w.Send("HELLO-FROM bob\n")
		w.Expect("BUSY")
		p.Signal(syscall.SIGTERM)
		if code := p.Wait(); code != 0 {
			t.Errorf("exit status %d, want 0; stderr:\n%s", code, p.Stderr.String())
		}
	})

	for _, args := range [][]string{
		{"-p", "x"},
		{"-p", "70000"},
		{"-p", "-1"},
		{"--port", ""},
		{"--max-users", "-3"},
		{"--max-users", "many"},
		{"--max-conns", "0"},
		{"--max-line-bytes", "0"},
		{"--max-pending-bytes", "10"},
		{"--login-timeout", "soon"},
		{"--login-timeout", "0s"},
		{"--write-timeout", "-1s"},
		{"--log-level", "loud"},
		{"--no-such-flag"},
		{"-p"},
		{"extra-argument"},
		{"--max-users", "-1", "--max-conns", "0"}, // two bad values, still one line
	} {
		t.Run("bad flag "+strings.Join(args, " "), func(t *testing.T) {
			t.Parallel()
			p := startProc(t, bin, append([]string{"-a", "127.0.0.1", "-p", "0"}, args...)...)
			code := p.Wait()
			if code == 0 {
				t.Errorf("exit status 0, want non-zero")
			}
			expectOneLine(t, "stderr", p.Stderr.String())
			if out := p.Stdout.Lines(); len(out) != 0 {
				t.Errorf("stdout = %q, want nothing", out)
			}
		})
	}

	t.Run("busy port", func(t *testing.T) {
		t.Parallel()
		ln, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		defer ln.Close()
		_, port, _ := net.SplitHostPort(ln.Addr().String())
		p := startProc(t, bin, "-a", "127.0.0.1", "-p", port)
		if code := p.Wait(); code == 0 {
			t.Errorf("exit status 0, want non-zero")
		}
		line := expectOneLine(t, "stderr", p.Stderr.String())
		if !strings.Contains(line, port) || !strings.Contains(line, "in use") {
			t.Errorf("stderr = %q, want it to name port %s and say it is in use", line, port)
		}
		if out := p.Stdout.Lines(); len(out) != 0 {
			t.Errorf("stdout = %q, want nothing", out)
		}
	})

	for _, help := range []string{"-h", "--help", "-help"} {
		t.Run(help, func(t *testing.T) {
			t.Parallel()
			p := startProc(t, bin, help)
			if code := p.Wait(); code != 0 {
				t.Errorf("exit status %d, want 0", code)
			}
			usage := strings.Join(p.Stdout.Lines(), "\n")
			for _, flag := range []string{"-a", "--address", "-p", "--port", "--max-users", "--max-conns",
				"--max-line-bytes", "--login-timeout", "--log-level", "--max-pending-bytes", "--write-timeout"} {
				if !regexp.MustCompile(`(^|[\s,])` + regexp.QuoteMeta(flag) + `($|[\s,=])`).MatchString(usage) {
					t.Errorf("usage does not list %s:\n%s", flag, usage)
				}
			}
			if s := p.Stderr.String(); s != "" {
				t.Errorf("stderr = %q, want nothing", s)
			}
		})
	}
}

// expectOneLine checks that s is exactly one non-empty line ending in
// "\n", and returns it without the "\n".
func expectOneLine(t *testing.T, what, s string) string {
	t.Helper()
	line, ok := strings.CutSuffix(s, "\n")
	if !ok || strings.TrimSpace(line) == "" || strings.Contains(line, "\n") {
		t.Errorf("%s = %q, want exactly one line", what, s)
	}
	return line
}

// startProc starts bin with args as a process; chattest.StartProc says
// what happens when the test ends.
func startProc(t *testing.T, bin string, args ...string) *chattest.Proc {
	t.Helper()
	return chattest.StartProc(t, exec.Command(bin, args...))
}
