package tests

import (
	"bufio"
	"bytes"
	"io"
	"net"
	"os"
	"os/exec"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"chatserver/internal/chat/chattest"
)

// This file tests the chat-server command as a process: its flags, its
// "Server is on" line, its signals and its exit status.

// exitTimeout bounds how long the process may take to exit: "within a few
// seconds" of a signal, or at once after a bad flag.
const exitTimeout = 10 * time.Second

// TestProcess runs its subtests in parallel against the chat-server
// binary.
func TestProcess(t *testing.T) {
	t.Parallel()
	bin := serverBinary(t)

	t.Run("serves", func(t *testing.T) {
		t.Parallel()
		p := startProc(t, bin, "-a", "127.0.0.1", "-p", "0", "--log-level", "debug")
		addr := p.listenAddr()
		alice := loggedIn(t, addr, "alice")
		alice.send("LIST\n")
		alice.expect("LIST-OK alice")
		bob := loggedIn(t, addr, "bob")
		bob.send("SEND alice hi\nWHO\n")
		bob.expect("SEND-OK", "BAD-RQST-HDR")
		alice.expect("DELIVERY bob hi")
		alice.conn.Close()
		bob.conn.Close()

		p.signal(syscall.SIGTERM)
		if code := p.wait(); code != 0 {
			t.Errorf("exit status %d, want 0; stderr:\n%s", code, p.stderr.String())
		}
		// Logs go to stderr, never stdout; the debug log level makes sure
		// there are some.
		if out := p.stdoutLines(); len(out) != 1 {
			t.Errorf("stdout has %d lines %q, want only the Server is on line", len(out), out)
		}
		if p.stderr.Len() == 0 {
			t.Errorf("stderr is empty, want the logs there")
		}
	})

	for _, sig := range []syscall.Signal{syscall.SIGTERM, syscall.SIGINT} {
		t.Run(sig.String(), func(t *testing.T) {
			t.Parallel()
			p := startProc(t, bin, "-a", "127.0.0.1", "-p", "0")
			addr := p.listenAddr()
			user := loggedIn(t, addr, "alice")
			anon := dial(t, addr)
			anon.send("LIST\n")
			anon.expect("BAD-RQST-HDR") // the server has taken this connection

			p.signal(sig)
			user.expectEOF()
			anon.expectEOF()
			if code := p.wait(); code != 0 {
				t.Errorf("exit status %d, want 0; stderr:\n%s", code, p.stderr.String())
			}
			if out := p.stdoutLines(); len(out) != 1 {
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
		addr := p.listenAddr()
		var conns []*wire
		for range clients { // the kernel completes these even when accept cannot
			conns = append(conns, dial(t, addr))
		}
		chattest.Eventually(t, "an accept failure in the log", func() bool {
			return strings.Contains(p.stderr.String(), "accept failed")
		})
		for _, c := range conns {
			c.conn.Close()
		}
		alice := loggedIn(t, addr, "alice") // waits in the backlog until the server retries
		alice.send("LIST\n")
		alice.expect("LIST-OK alice")
		p.signal(syscall.SIGTERM)
		if code := p.wait(); code != 0 {
			t.Errorf("exit status %d, want 0; stderr:\n%s", code, p.stderr.String())
		}
	})

	t.Run("flags apply", func(t *testing.T) {
		t.Parallel()
		p := startProc(t, bin, "--address", "127.0.0.1", "--port", "0", "--max-users", "1")
		addr := p.listenAddr()
		loggedIn(t, addr, "alice")
		w := dial(t, addr)
		w.send("HELLO-FROM bob\n")
		w.expect("BUSY")
		p.signal(syscall.SIGTERM)
		if code := p.wait(); code != 0 {
			t.Errorf("exit status %d, want 0; stderr:\n%s", code, p.stderr.String())
		}
	})

	for _, args := range [][]string{
		{"-p", "x"},
		{"-p", "70000"},
		{"-p", "-1"},
		{"--port", ""},
		{"--max-users", "0"},
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
		{"--max-users", "0", "--max-conns", "0"}, // two bad values, still one line
	} {
		t.Run("bad flag "+strings.Join(args, " "), func(t *testing.T) {
			t.Parallel()
			p := startProc(t, bin, append([]string{"-a", "127.0.0.1", "-p", "0"}, args...)...)
			code := p.wait()
			if code == 0 {
				t.Errorf("exit status 0, want non-zero")
			}
			expectOneLine(t, "stderr", p.stderr.String())
			if out := p.stdoutLines(); len(out) != 0 {
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
		if code := p.wait(); code == 0 {
			t.Errorf("exit status 0, want non-zero")
		}
		line := expectOneLine(t, "stderr", p.stderr.String())
		if !strings.Contains(line, port) || !strings.Contains(line, "in use") {
			t.Errorf("stderr = %q, want it to name port %s and say it is in use", line, port)
		}
		if out := p.stdoutLines(); len(out) != 0 {
			t.Errorf("stdout = %q, want nothing", out)
		}
	})

	for _, help := range []string{"-h", "--help", "-help"} {
		t.Run(help, func(t *testing.T) {
			t.Parallel()
			p := startProc(t, bin, help)
			if code := p.wait(); code != 0 {
				t.Errorf("exit status %d, want 0", code)
			}
			usage := strings.Join(p.stdoutLines(), "\n")
			for _, flag := range []string{"-a", "--address", "-p", "--port", "--max-users", "--max-conns",
				"--max-line-bytes", "--login-timeout", "--log-level", "--max-pending-bytes", "--write-timeout"} {
				if !regexp.MustCompile(`(^|[\s,])` + regexp.QuoteMeta(flag) + `($|[\s,=])`).MatchString(usage) {
					t.Errorf("usage does not list %s:\n%s", flag, usage)
				}
			}
			if s := p.stderr.String(); s != "" {
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

// proc is a running chat-server process.
type proc struct {
	t      *testing.T
	cmd    *exec.Cmd
	stderr lockedBuffer

	firstLine chan string // the first line on stdout; closed at EOF

	mu     sync.Mutex
	stdout []string // every line on stdout so far; guarded by mu

	exited chan struct{} // closed when the process has exited and been waited for
}

// startProc starts bin with args, and kills it when the test ends if it
// is still running.
func startProc(t *testing.T, bin string, args ...string) *proc {
	t.Helper()
	p := &proc{
		t:         t,
		cmd:       exec.Command(bin, args...),
		firstLine: make(chan string, 1),
		exited:    make(chan struct{}),
	}
	p.cmd.Stderr = &p.stderr
	stdout, err := p.cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := p.cmd.Start(); err != nil {
		t.Fatalf("start %s: %v", bin, err)
	}
	go func() {
		defer close(p.exited)
		sc := bufio.NewScanner(stdout)
		for sc.Scan() {
			p.mu.Lock()
			p.stdout = append(p.stdout, sc.Text())
			first := len(p.stdout) == 1
			p.mu.Unlock()
			if first {
				p.firstLine <- sc.Text()
			}
		}
		close(p.firstLine)
		_, _ = io.Copy(io.Discard, stdout) // past a line too long to scan
		_ = p.cmd.Wait()
	}()
	t.Cleanup(func() {
		select {
		case <-p.exited:
		default:
			_ = p.cmd.Process.Kill()
			<-p.exited
		}
		if strings.Contains(p.stderr.String(), "WARNING: DATA RACE") {
			t.Errorf("%s reported a data race:\n%s", bin, p.stderr.String())
		}
	})
	return p
}

// listenAddr waits for the "Server is on" line and returns the address to
// dial.
func (p *proc) listenAddr() string {
	p.t.Helper()
	select {
	case line, ok := <-p.firstLine:
		const prefix = "Server is on 127.0.0.1:"
		port, found := strings.CutPrefix(line, prefix)
		if !ok || !found {
			p.t.Fatalf("first stdout line = %q, want %q<port>; stderr:\n%s", line, prefix, p.stderr.String())
		}
		if n, err := strconv.Atoi(port); err != nil || n <= 0 || n > 65535 {
			p.t.Fatalf("first stdout line = %q: bad port", line)
		}
		return net.JoinHostPort("127.0.0.1", port)
	case <-time.After(exitTimeout):
		p.t.Fatalf("no Server is on line within %v; stderr:\n%s", exitTimeout, p.stderr.String())
	}
	return ""
}

func (p *proc) signal(sig os.Signal) {
	p.t.Helper()
	if err := p.cmd.Process.Signal(sig); err != nil {
		p.t.Fatalf("signal %v: %v", sig, err)
	}
}

// wait waits for the process to exit and returns its exit status (-1 if a
// signal killed it).
func (p *proc) wait() int {
	p.t.Helper()
	select {
	case <-p.exited:
		return p.cmd.ProcessState.ExitCode()
	case <-time.After(exitTimeout):
		p.t.Fatalf("process did not exit within %v; stderr:\n%s", exitTimeout, p.stderr.String())
	}
	return 0
}

// stdoutLines returns the lines the process wrote to stdout so far.
func (p *proc) stdoutLines() []string {
	p.mu.Lock()
	defer p.mu.Unlock()
	return slices.Clone(p.stdout)
}

// lockedBuffer is a bytes.Buffer that exec's copying goroutine may write
// while the test reads it.
type lockedBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (b *lockedBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

func (b *lockedBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}

func (b *lockedBuffer) Len() int {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Len()
}
