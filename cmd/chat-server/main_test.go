package main

import (
	"bufio"
	"bytes"
	"context"
	"crypto/tls"
	"encoding/json"
	"errors"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"go.uber.org/goleak"

	"chatserver/internal/certs/certstest"
	"chatserver/internal/natstest"
)

// childEnv makes the test binary run main instead of the tests, so a
// test can run the real command as a process and send it signals.
const childEnv = "CHAT_SERVER_TEST_RUN_MAIN"

func TestMain(m *testing.M) {
	if os.Getenv(childEnv) == "1" {
		main()
		os.Exit(0)
	}
	goleak.VerifyTestMain(m)
}

// timeout bounds every wait. Tests synchronise on output and replies;
// this only turns a hang into a failure.
const timeout = 10 * time.Second

// output collects what the server writes to stdout or stderr, line by
// line, so a test can wait for a line.
type output struct {
	lines chan string // every complete line, in order

	mu   sync.Mutex
	rest []byte   // guarded by mu: an incomplete last line
	all  []string // guarded by mu
}

func newOutput() *output { return &output{lines: make(chan string, 4096)} }

func (o *output) Write(p []byte) (int, error) {
	o.mu.Lock()
	defer o.mu.Unlock()
	o.rest = append(o.rest, p...)
	for {
		i := bytes.IndexByte(o.rest, '\n')
		if i < 0 {
			return len(p), nil
		}
		line := string(o.rest[:i])
		o.rest = o.rest[i+1:]
		o.all = append(o.all, line)
		o.lines <- line
	}
}

// allLines returns every complete line written so far.
func (o *output) allLines() []string {
	o.mu.Lock()
	defer o.mu.Unlock()
	return append([]string(nil), o.all...)
}

// waitFor returns the first line not yet waited for that match accepts.
func (o *output) waitFor(t *testing.T, what string, match func(string) bool) string {
	t.Helper()
	timer := time.NewTimer(timeout)
	defer timer.Stop()
	for {
		select {
		case line := <-o.lines:
			if match(line) {
				return line
			}
		case <-timer.C:
			t.Fatalf("timed out waiting for %s; output so far:\n%s", what, strings.Join(o.allLines(), "\n"))
		}
	}
}

// address waits for the line "<prefix><address>" and returns the address.
func (o *output) address(t *testing.T, prefix string) string {
	t.Helper()
	line := o.waitFor(t, prefix, func(l string) bool { return strings.HasPrefix(l, prefix) })
	return strings.TrimPrefix(line, prefix)
}

// jsonLogs parses lines written with --log-format json.
func jsonLogs(t *testing.T, lines []string) []map[string]any {
	t.Helper()
	var logs []map[string]any
	for _, l := range lines {
		var m map[string]any
		if err := json.Unmarshal([]byte(l), &m); err != nil {
			t.Fatalf("log line %q is not JSON: %v", l, err)
		}
		logs = append(logs, m)
	}
	return logs
}

// textLog matches a --log-format text line with the given message.
func textLog(msg string) func(string) bool {
	return func(l string) bool {
		return strings.Contains(l, "msg=\""+msg+"\"") || strings.Contains(l, "msg="+msg+" ")
	}
}

// server is run called in this process.
type server struct {
	stdout, stderr *output
	cancel         context.CancelFunc
	done           chan error
	once           sync.Once
	err            error
}

func startRun(t *testing.T, args ...string) *server {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	s := &server{stdout: newOutput(), stderr: newOutput(), cancel: cancel, done: make(chan error, 1)}
	go func() { s.done <- run(ctx, args, s.stdout, s.stderr) }()
	t.Cleanup(func() { s.stop() })
	return s
}

// stop is SIGINT: it cancels run's context and returns what run returned.
func (s *server) stop() error {
	s.once.Do(func() {
		s.cancel()
		s.err = <-s.done
	})
	return s.err
}

// child is the command running as a process.
type child struct {
	cmd            *exec.Cmd
	stdout, stderr *output
	exited         chan error
}

func startChild(t *testing.T, args ...string) *child {
	t.Helper()
	c := &child{cmd: exec.Command(os.Args[0], args...), stdout: newOutput(), stderr: newOutput(), exited: make(chan error, 1)}
	c.cmd.Env = append(os.Environ(), childEnv+"=1")
	c.cmd.Stdout, c.cmd.Stderr = c.stdout, c.stderr
	if err := c.cmd.Start(); err != nil {
		t.Fatalf("start: %v", err)
	}
	go func() { c.exited <- c.cmd.Wait() }()
	t.Cleanup(func() {
		if c.cmd.ProcessState == nil {
			_ = c.cmd.Process.Kill()
			<-c.exited
		}
	})
	return c
}

func (c *child) signal(t *testing.T, sig os.Signal) {
	t.Helper()
	if err := c.cmd.Process.Signal(sig); err != nil {
		t.Fatalf("signal %v: %v", sig, err)
	}
}

// wait returns the exit code once the process has ended.
func (c *child) wait(t *testing.T) int {
	t.Helper()
	select {
	case err := <-c.exited:
		var exit *exec.ExitError
		if err != nil && !errors.As(err, &exit) {
			t.Fatalf("wait: %v", err)
		}
		return c.cmd.ProcessState.ExitCode()
	case <-time.After(timeout):
		t.Fatal("the process did not exit")
		return -1
	}
}

// wire is a client connection, plain or TLS, speaking the protocol.
type wire struct {
	t    *testing.T
	conn net.Conn
	r    *bufio.Reader
}

func dialPlain(t *testing.T, addr string) *wire {
	t.Helper()
	conn, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatalf("dial %s: %v", addr, err)
	}
	return newWire(t, conn)
}

// dialTLS connects trusting cfg's roots and returns the connection and
// the common name of the certificate the server presented.
func dialTLS(t *testing.T, addr string, cfg *tls.Config) (*wire, string) {
	t.Helper()
	conn, err := tls.DialWithDialer(&net.Dialer{Timeout: timeout}, "tcp", addr, cfg)
	if err != nil {
		t.Fatalf("dial TLS %s: %v", addr, err)
	}
	return newWire(t, conn), conn.ConnectionState().PeerCertificates[0].Subject.CommonName
}

func newWire(t *testing.T, conn net.Conn) *wire {
	t.Cleanup(func() { conn.Close() })
	return &wire{t: t, conn: conn, r: bufio.NewReader(conn)}
}

func (w *wire) line() string {
	w.t.Helper()
	_ = w.conn.SetReadDeadline(time.Now().Add(timeout))
	s, err := w.r.ReadString('\n')
	if err != nil {
		w.t.Fatalf("read: %v (got %q)", err, s)
	}
	return strings.TrimSuffix(s, "\n")
}

func (w *wire) expectLine(want string) {
	w.t.Helper()
	if got := w.line(); got != want {
		w.t.Fatalf("got %q, want %q", got, want)
	}
}

// expect sends request and checks the next line.
func (w *wire) expect(request, want string) {
	w.t.Helper()
	if _, err := io.WriteString(w.conn, request+"\n"); err != nil {
		w.t.Fatalf("write: %v", err)
	}
	w.expectLine(want)
}

func (w *wire) login(name string) *wire {
	w.t.Helper()
	w.expect("HELLO-FROM "+name, "HELLO "+name)
	return w
}

// expectEOF checks that the server has closed the connection.
func (w *wire) expectEOF() {
	w.t.Helper()
	_ = w.conn.SetReadDeadline(time.Now().Add(timeout))
	if s, err := w.r.ReadString('\n'); err == nil || errors.Is(err, os.ErrDeadlineExceeded) {
		w.t.Fatalf("read = %q, %v; want the connection closed", s, err)
	}
}

// get fetches url and returns the status code and body.
func get(t *testing.T, url string) (int, string) {
	t.Helper()
	resp, err := http.Get(url)
	if err != nil {
		t.Fatalf("GET %s: %v", url, err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatalf("GET %s: %v", url, err)
	}
	return resp.StatusCode, string(body)
}

// writeCert writes a certificate named cn into dir and returns it with
// its file names.
func writeCert(t *testing.T, dir, cn string) (cert *tls.Config, certFile, keyFile string) {
	t.Helper()
	certFile, keyFile = filepath.Join(dir, "cert.pem"), filepath.Join(dir, "key.pem")
	return certstest.Config(certstest.Write(t, certFile, keyFile, cn)), certFile, keyFile
}

func TestPlainAndTLSUsersTalk(t *testing.T) {
	trustA, certFile, keyFile := writeCert(t, t.TempDir(), "A")
	s := startRun(t, "-a", "127.0.0.1", "-p", "0", "--tls-port", "0", "--tls-cert", certFile, "--tls-key", keyFile,
		"--metrics-address", "127.0.0.1:0", "--log-format", "json")
	plainAddr := s.stdout.address(t, "Server is on ")
	tlsAddr := s.stdout.address(t, "TLS server is on ")
	metricsLine := s.stderr.waitFor(t, "the metrics address", func(l string) bool { return strings.Contains(l, `"metrics listening"`) })
	metricsAddr, _ := jsonLogs(t, []string{metricsLine})[0]["address"].(string)

	alice := dialPlain(t, plainAddr).login("alice")
	bob, cn := dialTLS(t, tlsAddr, trustA)
	if cn != "A" {
		t.Fatalf("TLS server presented %q, want A", cn)
	}
	bob.login("bob")
	alice.expect("SEND bob hi over TLS", "SEND-OK")
	bob.expectLine("DELIVERY alice hi over TLS")
	bob.expect("SEND alice and back in plain text", "SEND-OK")
	alice.expectLine("DELIVERY bob and back in plain text")
	bob.expect("LIST", "LIST-OK alice,bob")
	alice.expect("HELLO-FROM bob", "BAD-RQST-HDR") // logged in already

	if code, body := get(t, "http://"+metricsAddr+"/healthz"); code != http.StatusOK {
		t.Errorf("/healthz = %d %q, want 200", code, body)
	}
	_, body := get(t, "http://"+metricsAddr+"/metrics")
	for _, want := range []string{"chat_connections 2", "chat_users_logged_in 2", `chat_logins_total{result="ok"} 2`, "chat_messages_delivered_total 2"} {
		if !strings.Contains(body, "\n"+want+"\n") {
			t.Errorf("/metrics lacks %q", want)
		}
	}

	if err := s.stop(); err != nil {
		t.Fatalf("run = %v, want nil after shutdown", err)
	}
	alice.expectEOF()
	bob.expectEOF()

	logs := jsonLogs(t, s.stderr.allLines())
	var opened, complete int
	for _, l := range logs {
		switch l["msg"] {
		case "connection opened", "connection closed", "login", "logout":
			if l["conn"] == nil || l["remote"] == nil {
				t.Errorf("connection log without conn and remote: %v", l)
			}
			switch l["msg"] {
			case "connection opened":
				opened++
			case "connection closed":
				if l["reason"] != "server_shutdown" {
					t.Errorf("close line %v, want reason server_shutdown, by name", l)
				}
			}
		case "shutdown complete":
			complete++
			if l["connections_closed"] != 2.0 || l["users_logged_out"] != 2.0 {
				t.Errorf("shutdown line %v, want 2 connections closed and 2 users logged out", l)
			}
		}
	}
	if opened != 2 || complete != 1 {
		t.Errorf("%d connection opened and %d shutdown complete lines, want 2 and 1", opened, complete)
	}
}

func TestStartupErrors(t *testing.T) {
	_, certFile, keyFile := writeCert(t, t.TempDir(), "A")
	missing := filepath.Join(t.TempDir(), "missing.pem")
	busy, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer busy.Close()
	busyAddr := busy.Addr().String()
	_, busyPort, _ := net.SplitHostPort(busyAddr)
	tlsFlags := []string{"--tls-cert", certFile, "--tls-key", keyFile}

	for _, tc := range []struct {
		name string
		args []string
		want string // the whole error line
	}{
		{"tls port without cert", []string{"--tls-port", "0"},
			"--tls-port needs --tls-cert and --tls-key"},
		{"tls port without key", []string{"--tls-port", "0", "--tls-cert", certFile},
			"--tls-port needs --tls-cert and --tls-key"},
		{"cert without tls port", tlsFlags,
			"--tls-cert and --tls-key need --tls-port"},
		{"tls port out of range", append([]string{"--tls-port", "70000"}, tlsFlags...),
			"tls port must be between 0 and 65535, got 70000"},
		{"tls port not a number", append([]string{"--tls-port", "x"}, tlsFlags...),
			`invalid value "x" for flag -tls-port: not a port number`},
		{"missing certificate", []string{"--tls-port", "0", "--tls-cert", missing, "--tls-key", keyFile},
			"tls certificate: open " + missing + ": no such file or directory"},
		{"missing key", []string{"--tls-port", "0", "--tls-cert", certFile, "--tls-key", missing},
			"tls key: open " + missing + ": no such file or directory"},
		{"key is not a key", []string{"--tls-port", "0", "--tls-cert", certFile, "--tls-key", certFile},
			"tls certificate " + certFile + " with key " + certFile + ": tls: found a certificate rather than a key in the PEM for the private key"},
		{"tls port busy", append([]string{"--tls-port", busyPort}, tlsFlags...),
			"cannot listen for TLS on 127.0.0.1:" + busyPort + ": bind: address already in use"},
		{"metrics port busy", []string{"--metrics-address", busyAddr},
			"cannot listen for metrics on " + busyAddr + ": bind: address already in use"},
		{"metrics address without port", []string{"--metrics-address", "localhost"},
			"cannot listen for metrics on localhost: address localhost: missing port in address"},
		{"bad log format", []string{"--log-format", "xml"},
			`invalid value "xml" for flag -log-format: must be text or json`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			ctx, cancel := context.WithTimeout(context.Background(), timeout)
			defer cancel()
			var stdout, stderr bytes.Buffer
			err := run(ctx, append([]string{"-a", "127.0.0.1", "-p", "0"}, tc.args...), &stdout, &stderr)
			if err == nil || err.Error() != tc.want {
				t.Errorf("run = %v\nwant %s", err, tc.want)
			}
			if stdout.Len() > 0 {
				t.Errorf("stdout = %q, want nothing: no listener may be announced", stdout.String())
			}
		})
	}
}

func TestBadCertificateExitsWithOneLine(t *testing.T) {
	_, _, keyFile := writeCert(t, t.TempDir(), "A")
	missing := filepath.Join(t.TempDir(), "missing.pem")
	c := startChild(t, "-a", "127.0.0.1", "-p", "0", "--tls-port", "0", "--tls-cert", missing, "--tls-key", keyFile)
	if code := c.wait(t); code != 1 {
		t.Errorf("exit code %d, want 1", code)
	}
	want := "chat-server: tls certificate: open " + missing + ": no such file or directory"
	if got := c.stderr.allLines(); len(got) != 1 || got[0] != want {
		t.Errorf("stderr = %q, want the one line %q", got, want)
	}
	if got := c.stdout.allLines(); len(got) > 0 {
		t.Errorf("stdout = %q, want nothing", got)
	}
}

func TestSIGHUPReloadsTheCertificate(t *testing.T) {
	dir := t.TempDir()
	trustA, certFile, keyFile := writeCert(t, dir, "A")
	c := startChild(t, "-a", "127.0.0.1", "-p", "0", "--tls-port", "0", "--tls-cert", certFile, "--tls-key", keyFile)
	c.stdout.address(t, "Server is on ")
	tlsAddr := c.stdout.address(t, "TLS server is on ")

	old, cn := dialTLS(t, tlsAddr, trustA)
	if cn != "A" {
		t.Fatalf("before reload: server presented %q, want A", cn)
	}
	old.login("old")

	trustB, _, _ := writeCert(t, dir, "B") // replaces the files
	c.signal(t, syscall.SIGHUP)
	line := c.stderr.waitFor(t, "the reload", textLog("tls certificate reloaded"))
	if !strings.Contains(line, "CN=B") {
		t.Errorf("reload line %q does not name the new certificate", line)
	}
	fresh, cn := dialTLS(t, tlsAddr, trustB)
	if cn != "B" {
		t.Fatalf("after reload: server presented %q, want B", cn)
	}
	fresh.login("fresh")
	fresh.expect("SEND old you still there?", "SEND-OK")
	old.expectLine("DELIVERY fresh you still there?")
	old.expect("SEND fresh yes", "SEND-OK")
	fresh.expectLine("DELIVERY old yes")

	// A renewal caught half-written is an error line, and the certificate
	// in use stays.
	if err := os.WriteFile(certFile, []byte("-----BEGIN CERTIFICATE-----\ntrunc"), 0o600); err != nil {
		t.Fatal(err)
	}
	c.signal(t, syscall.SIGHUP)
	c.stderr.waitFor(t, "the failed reload", textLog("tls certificate reload failed; keeping the old one"))
	third, cn := dialTLS(t, tlsAddr, trustB)
	if cn != "B" {
		t.Fatalf("after a failed reload: server presented %q, want B", cn)
	}
	third.login("third").expect("LIST", "LIST-OK old,fresh,third")

	c.signal(t, syscall.SIGTERM)
	if code := c.wait(t); code != 0 {
		t.Errorf("exit code %d after SIGTERM, want 0", code)
	}
	c.stderr.waitFor(t, "the shutdown line", func(l string) bool {
		return textLog("shutdown complete")(l) && strings.Contains(l, "connections_closed=3 users_logged_out=3")
	})
}

func TestSIGHUPWithoutTLSIsHarmless(t *testing.T) {
	c := startChild(t, "-a", "127.0.0.1", "-p", "0")
	addr := c.stdout.address(t, "Server is on ")
	c.signal(t, syscall.SIGHUP)
	c.stderr.waitFor(t, "the SIGHUP line", textLog("SIGHUP: no TLS certificate to reload"))
	dialPlain(t, addr).login("alice")
	c.signal(t, syscall.SIGTERM)
	if code := c.wait(t); code != 0 {
		t.Errorf("exit code %d after SIGTERM, want 0", code)
	}
}

func TestTLSHandshakeCountsAgainstLoginTimeout(t *testing.T) {
	_, certFile, keyFile := writeCert(t, t.TempDir(), "A")
	s := startRun(t, "-a", "127.0.0.1", "-p", "0", "--tls-port", "0", "--tls-cert", certFile, "--tls-key", keyFile,
		"--login-timeout", "200ms", "--log-format", "json")
	tlsAddr := s.stdout.address(t, "TLS server is on ")
	silent := dialPlain(t, tlsAddr) // TCP only: it never starts the handshake
	silent.expectEOF()
	s.stderr.waitFor(t, "the close line", func(l string) bool {
		return strings.Contains(l, `"connection closed"`) && strings.Contains(l, `"reason":"login_timeout"`)
	})
}

// TestClusterStartupErrors: each start-up check of cluster mode is one
// error line, and nothing is announced.
func TestClusterStartupErrors(t *testing.T) {
	closed, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	nowhere := "nats://" + closed.Addr().String()
	closed.Close()
	withJS := natstest.Run(t) // max payload 1 MiB, NATS's default
	noJS := natstest.Run(t, natstest.WithoutJetStream())

	for _, tc := range []struct {
		name string
		args []string
		want string // a prefix of the error line
	}{
		{"unreachable", []string{"--nats-url", nowhere},
			"cannot reach NATS at " + nowhere + ": "},
		{"no jetstream", []string{"--nats-url", noJS.URL()},
			"JetStream is not enabled on the NATS server: start it with -js"},
		{"line cap over the payload", []string{"--nats-url", withJS.URL(), "--max-line-bytes", "1048576"},
			"NATS max payload is 1048576 bytes, room for messages of up to 1048361 bytes, not 1048576: raise max_payload on the NATS server or lower --max-line-bytes"},
		{"bad cluster name", []string{"--nats-url", withJS.URL(), "--cluster-name", "a.b"},
			`cluster name "a.b": use 1 to 32 letters, digits, '-' or '_'`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			ctx, cancel := context.WithTimeout(context.Background(), timeout)
			defer cancel()
			var stdout, stderr bytes.Buffer
			err := run(ctx, append([]string{"-a", "127.0.0.1", "-p", "0"}, tc.args...), &stdout, &stderr)
			if err == nil || !strings.HasPrefix(err.Error(), tc.want) || strings.Contains(err.Error(), "\n") {
				t.Errorf("run = %v\nwant one line starting %s", err, tc.want)
			}
			if stdout.Len() > 0 {
				t.Errorf("stdout = %q, want nothing: no listener may be announced", stdout.String())
			}
		})
	}
}
