package main

import (
	"bytes"
	"context"
	"crypto/tls"
	"encoding/json"
	"errors"
	"flag"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"go.uber.org/goleak"

	"chatserver/internal/certs/certstest"
	"chatserver/internal/chat/chattest"
	"chatserver/internal/natstest"
	"chatserver/internal/web/webtest"
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
	stdout, stderr *chattest.Output
	cancel         context.CancelFunc
	done           chan error
	once           sync.Once
	err            error
}

func startRun(t *testing.T, args ...string) *server {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	s := &server{stdout: chattest.NewOutput(), stderr: chattest.NewOutput(), cancel: cancel, done: make(chan error, 1)}
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

// startChild runs this test binary as the command, in a process of its
// own (see TestMain).
func startChild(t *testing.T, args ...string) *chattest.Proc {
	t.Helper()
	cmd := exec.Command(os.Args[0], args...)
	cmd.Env = append(os.Environ(), childEnv+"=1")
	return chattest.StartProc(t, cmd)
}

// dialTLS connects trusting cfg's roots and returns the connection and
// the common name of the certificate the server presented.
func dialTLS(t *testing.T, addr string, cfg *tls.Config) (*chattest.Wire, string) {
	t.Helper()
	conn, err := tls.DialWithDialer(&net.Dialer{Timeout: timeout}, "tcp", addr, cfg)
	if err != nil {
		t.Fatalf("dial TLS %s: %v", addr, err)
	}
	return chattest.NewWire(t, conn), conn.ConnectionState().PeerCertificates[0].Subject.CommonName
}

// get fetches url with client and returns the status code and body.
func get(t *testing.T, client *http.Client, url string) (int, string) {
	t.Helper()
	resp, err := client.Get(url)
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

// TestPlainTLSAndBrowserUsersShareOneServer: a plain TCP user, a TLS user
// and a browser over WSS are in one user list under one user limit, and
// message each other.
func TestPlainTLSAndBrowserUsersShareOneServer(t *testing.T) {
	trustA, certFile, keyFile := writeCert(t, t.TempDir(), "A")
	s := startRun(t, "-a", "127.0.0.1", "-p", "0", "--tls-port", "0", "--tls-cert", certFile, "--tls-key", keyFile,
		"--web-port", "0", "--max-users", "3", "--metrics-address", "127.0.0.1:0", "--log-format", "json")
	plainAddr := s.stdout.Address(t, "Server is on ")
	tlsAddr := s.stdout.Address(t, "TLS server is on ")
	page := s.stdout.WaitFor(t, "the web chat's address", func(l string) bool { return strings.HasPrefix(l, "Web chat is on ") })
	pageURL := strings.TrimPrefix(page, "Web chat is on ")
	if !strings.HasPrefix(pageURL, "https://127.0.0.1:") || !strings.HasSuffix(pageURL, "/") {
		t.Fatalf("announced %q, want the web chat at https://127.0.0.1:<port>/", page)
	}
	metricsLine := s.stderr.WaitFor(t, "the metrics address", func(l string) bool { return strings.Contains(l, `"metrics listening"`) })
	metricsAddr, _ := jsonLogs(t, []string{metricsLine})[0]["address"].(string)

	alice := chattest.Dial(t, plainAddr).Login("alice")
	bob, cn := dialTLS(t, tlsAddr, trustA)
	if cn != "A" {
		t.Fatalf("TLS server presented %q, want A", cn)
	}
	bob.Login("bob")
	https := &http.Client{Transport: &http.Transport{TLSClientConfig: trustA}}
	carol := webtest.ConnectWith(t, https, pageURL+"ws")
	carol.Request("HELLO-FROM carol", "HELLO carol")
	alice.Request("SEND bob hi over TLS", "SEND-OK")
	bob.Expect("DELIVERY alice hi over TLS")
	bob.Request("SEND alice and back in plain text", "SEND-OK")
	alice.Expect("DELIVERY bob and back in plain text")
	bob.Request("SEND carol and to a browser", "SEND-OK")
	carol.Expect("DELIVERY bob and to a browser")
	carol.Request("SEND alice from a browser", "SEND-OK")
	alice.Expect("DELIVERY carol from a browser")
	carol.Request("LIST", "LIST-OK alice,bob,carol")
	alice.Request("HELLO-FROM bob", "BAD-RQST-HDR")                                // logged in already
	webtest.ConnectWith(t, https, pageURL+"ws").Request("HELLO-FROM dave", "BUSY") // one limit for all three

	code, body := get(t, https, pageURL)
	if code != http.StatusOK || !strings.Contains(body, `data-testid="login-name"`) {
		t.Errorf("GET %s = %d, want 200 and the page", pageURL, code)
	}
	if code, body := get(t, http.DefaultClient, "http://"+metricsAddr+"/healthz"); code != http.StatusOK {
		t.Errorf("/healthz = %d %q, want 200", code, body)
	}
	_, body = get(t, http.DefaultClient, "http://"+metricsAddr+"/metrics")
	for _, want := range []string{`chat_connections{transport="tcp"} 1`, `chat_connections{transport="tls"} 1`, `chat_connections{transport="ws"} 2`,
		"chat_users_logged_in 3", `chat_logins_total{result="ok"} 3`, `chat_logins_total{result="busy"} 1`, "chat_messages_delivered_total 4"} {
		if !strings.Contains(body, "\n"+want+"\n") {
			t.Errorf("/metrics lacks %q", want)
		}
	}

	if err := s.stop(); err != nil {
		t.Fatalf("run = %v, want nil after shutdown", err)
	}
	alice.ExpectEOF()
	bob.ExpectEOF()

	logs := jsonLogs(t, s.stderr.Lines())
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
			if l["connections_closed"] != 4.0 || l["users_logged_out"] != 3.0 {
				t.Errorf("shutdown line %v, want 4 connections closed and 3 users logged out", l)
			}
		}
	}
	if opened != 4 || complete != 1 {
		t.Errorf("%d connection opened and %d shutdown complete lines, want 4 and 1", opened, complete)
	}
}

// TestPlainWebChatStaysOnLoopback: without a certificate the web chat
// crosses a network in the clear only with --web-insecure. (Options only:
// tests listen on 127.0.0.1 alone.)
func TestPlainWebChatStaysOnLoopback(t *testing.T) {
	_, certFile, keyFile := writeCert(t, t.TempDir(), "A")
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	_, port, _ := net.SplitHostPort(ln.Addr().String())
	for _, tc := range []struct {
		args     []string
		host     string // where the web chat listens
		announce string // the URL announced
	}{
		{[]string{"-a", "0.0.0.0"}, "127.0.0.1", "http://127.0.0.1:" + port + "/"},
		{[]string{"-a", "192.0.2.1"}, "127.0.0.1", "http://127.0.0.1:" + port + "/"},
		{[]string{"-a", "::1"}, "::1", "http://[::1]:" + port + "/"},
		{[]string{"-a", "localhost"}, "localhost", "http://localhost:" + port + "/"},
		{[]string{"-a", "0.0.0.0", "--web-insecure"}, "0.0.0.0", "http://localhost:" + port + "/"},
		{[]string{"-a", "192.0.2.1", "--web-insecure"}, "192.0.2.1", "http://192.0.2.1:" + port + "/"},
		{[]string{"-a", "0.0.0.0", "--tls-cert", certFile, "--tls-key", keyFile}, "0.0.0.0", "https://localhost:" + port + "/"},
	} {
		opts, err := parseFlags(append(tc.args, "--web-port", "0"), io.Discard)
		if err != nil {
			t.Fatal(err)
		}
		scheme := "http"
		if opts.tlsCert != "" {
			scheme = "https"
		}
		if host, url := opts.webHost(), webURL(scheme, opts.webHost(), ln); host != tc.host || url != tc.announce {
			t.Errorf("%v: web chat on %s, announced as %s; want %s and %s", tc.args, host, url, tc.host, tc.announce)
		}
	}
}

// TestWebChatIsAnnouncedAfterTheServer: the web chat's line follows the
// "Server is on" line, and the page and /healthz are served there.
func TestWebChatIsAnnouncedAfterTheServer(t *testing.T) {
	s := startRun(t, "-a", "127.0.0.1", "-p", "0", "--web-port", "0")
	s.stdout.Address(t, "Server is on ")
	line := s.stdout.WaitFor(t, "the next line", func(string) bool { return true })
	page, ok := strings.CutPrefix(line, "Web chat is on ")
	if !ok || !strings.HasPrefix(page, "http://127.0.0.1:") {
		t.Fatalf("line after the server's = %q, want Web chat is on http://127.0.0.1:<port>/", line)
	}
	if code, body := get(t, http.DefaultClient, page); code != http.StatusOK || !strings.Contains(body, `data-testid="login-name"`) {
		t.Errorf("GET %s = %d, want 200 and the page", page, code)
	}
	if code, _ := get(t, http.DefaultClient, page+"healthz"); code != http.StatusOK {
		t.Errorf("GET %shealthz = %d, want 200", page, code)
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
			"--tls-cert and --tls-key go together"},
		{"key without cert", []string{"--web-port", "0", "--tls-key", keyFile},
			"--tls-cert and --tls-key go together"},
		{"cert without tls or web port", tlsFlags,
			"--tls-cert and --tls-key need --tls-port or --web-port"},
		{"web insecure without web port", []string{"--web-insecure"},
			"--web-insecure and --web-origin need --web-port"},
		{"web origin without web port", []string{"--web-origin", "example.com"},
			"--web-insecure and --web-origin need --web-port"},
		{"bad web origin pattern", []string{"--web-port", "0", "--web-origin", "[x"},
			`invalid value "[x" for flag -web-origin: bad pattern: syntax error in pattern`},
		{"web port out of range", []string{"--web-port", "70000"},
			"web port must be between 0 and 65535, got 70000"},
		{"web port busy", []string{"--web-port", busyPort},
			"cannot listen for the web chat on 127.0.0.1:" + busyPort + ": bind: address already in use"},
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
	if code := c.Wait(); code != 1 {
		t.Errorf("exit code %d, want 1", code)
	}
	want := "chat-server: tls certificate: open " + missing + ": no such file or directory"
	if got := c.Stderr.Lines(); len(got) != 1 || got[0] != want {
		t.Errorf("stderr = %q, want the one line %q", got, want)
	}
	if got := c.Stdout.Lines(); len(got) > 0 {
		t.Errorf("stdout = %q, want nothing", got)
	}
}

func TestSIGHUPReloadsTheCertificate(t *testing.T) {
	dir := t.TempDir()
	trustA, certFile, keyFile := writeCert(t, dir, "A")
	c := startChild(t, "-a", "127.0.0.1", "-p", "0", "--tls-port", "0", "--tls-cert", certFile, "--tls-key", keyFile)
	c.Stdout.Address(t, "Server is on ")
	tlsAddr := c.Stdout.Address(t, "TLS server is on ")

	old, cn := dialTLS(t, tlsAddr, trustA)
	if cn != "A" {
		t.Fatalf("before reload: server presented %q, want A", cn)
	}
	old.Login("old")

	trustB, _, _ := writeCert(t, dir, "B") // replaces the files
	c.Signal(syscall.SIGHUP)
	line := c.Stderr.WaitFor(t, "the reload", textLog("tls certificate reloaded"))
	if !strings.Contains(line, "CN=B") {
		t.Errorf("reload line %q does not name the new certificate", line)
	}
	fresh, cn := dialTLS(t, tlsAddr, trustB)
	if cn != "B" {
		t.Fatalf("after reload: server presented %q, want B", cn)
	}
	fresh.Login("fresh")
	fresh.Request("SEND old you still there?", "SEND-OK")
	old.Expect("DELIVERY fresh you still there?")
	old.Request("SEND fresh yes", "SEND-OK")
	fresh.Expect("DELIVERY old yes")

	// A renewal caught half-written is an error line, and the certificate
	// in use stays.
	if err := os.WriteFile(certFile, []byte("-----BEGIN CERTIFICATE-----\ntrunc"), 0o600); err != nil {
		t.Fatal(err)
	}
	c.Signal(syscall.SIGHUP)
	c.Stderr.WaitFor(t, "the failed reload", textLog("tls certificate reload failed; keeping the old one"))
	third, cn := dialTLS(t, tlsAddr, trustB)
	if cn != "B" {
		t.Fatalf("after a failed reload: server presented %q, want B", cn)
	}
	third.Login("third").Request("LIST", "LIST-OK old,fresh,third")

	c.Signal(syscall.SIGTERM)
	if code := c.Wait(); code != 0 {
		t.Errorf("exit code %d after SIGTERM, want 0", code)
	}
	c.Stderr.WaitFor(t, "the shutdown line", func(l string) bool {
		return textLog("shutdown complete")(l) && strings.Contains(l, "connections_closed=3 users_logged_out=3")
	})
}

func TestSIGHUPWithoutTLSIsHarmless(t *testing.T) {
	c := startChild(t, "-a", "127.0.0.1", "-p", "0")
	addr := c.Stdout.Address(t, "Server is on ")
	c.Signal(syscall.SIGHUP)
	c.Stderr.WaitFor(t, "the SIGHUP line", textLog("SIGHUP: no TLS certificate to reload"))
	chattest.Dial(t, addr).Login("alice")
	c.Signal(syscall.SIGTERM)
	if code := c.Wait(); code != 0 {
		t.Errorf("exit code %d after SIGTERM, want 0", code)
	}
}

func TestTLSHandshakeCountsAgainstLoginTimeout(t *testing.T) {
	_, certFile, keyFile := writeCert(t, t.TempDir(), "A")
	s := startRun(t, "-a", "127.0.0.1", "-p", "0", "--tls-port", "0", "--tls-cert", certFile, "--tls-key", keyFile,
		"--login-timeout", "200ms", "--log-format", "json")
	tlsAddr := s.stdout.Address(t, "TLS server is on ")
	silent := chattest.Dial(t, tlsAddr) // TCP only: it never starts the handshake
	silent.ExpectEOF()
	s.stderr.WaitFor(t, "the close line", func(l string) bool {
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
		{"room for no one", []string{"--nats-url", withJS.URL(), "--max-users", "0"},
			"--max-users 0 is for a single server: a cluster needs room for at least one user"},
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

// TestClusterModeRunsAThreadPerLoop: in cluster mode the command runs Go
// code on one thread per event loop, as /metrics shows, unless GOMAXPROCS
// is set or there are no event loops (then the runtime's default stands).
func TestClusterModeRunsAThreadPerLoop(t *testing.T) {
	ns := natstest.Run(t)
	loops := runtime.NumCPU() + 1 // more than the runtime's default ever is
	for i, tc := range []struct {
		name string
		env  []string
		args []string
		want func(int) bool
	}{
		{"loops", nil, []string{"--event-loops", strconv.Itoa(loops)}, func(n int) bool { return n == loops }},
		{"GOMAXPROCS set", []string{"GOMAXPROCS=5"}, []string{"--event-loops", strconv.Itoa(loops)}, func(n int) bool { return n == 5 }},
		{"no event loops", nil, []string{"--event-loops", strconv.Itoa(loops), "--no-event-loop"}, func(n int) bool { return n < loops }},
	} {
		t.Run(tc.name, func(t *testing.T) {
			args := append([]string{"-a", "127.0.0.1", "-p", "0", "--nats-url", ns.URL(), "--cluster-name", "threads" + strconv.Itoa(i),
				"--metrics-address", "127.0.0.1:0", "--log-format", "json"}, tc.args...)
			cmd := exec.Command(os.Args[0], args...)
			env := slices.DeleteFunc(os.Environ(), func(v string) bool { return strings.HasPrefix(v, "GOMAXPROCS=") })
			cmd.Env = append(append(env, childEnv+"=1"), tc.env...)
			c := chattest.StartProc(t, cmd)
			line := c.Stderr.WaitFor(t, "the metrics address", func(l string) bool { return strings.Contains(l, `"metrics listening"`) })
			addr, _ := jsonLogs(t, []string{line})[0]["address"].(string)
			_, body := get(t, http.DefaultClient, "http://"+addr+"/metrics")
			_, value, _ := strings.Cut(body, "\ngo_sched_gomaxprocs_threads ")
			value, _, _ = strings.Cut(value, "\n")
			if n, err := strconv.Atoi(value); err != nil || !tc.want(n) {
				t.Errorf("/metrics: go_sched_gomaxprocs_threads %q (event loops %d)", value, loops)
			}
		})
	}
}

// TestFailedTLSHandshakeIsLogged: a client that speaks plain text to the
// TLS port, or does not trust the certificate, is logged with the
// handshake's error and closed as tls_handshake; TLS connections' lines
// say tls=true.
func TestFailedTLSHandshakeIsLogged(t *testing.T) {
	_, certFile, keyFile := writeCert(t, t.TempDir(), "A")
	s := startRun(t, "-a", "127.0.0.1", "-p", "0", "--tls-port", "0", "--tls-cert", certFile, "--tls-key", keyFile, "--log-format", "json")
	tlsAddr := s.stdout.Address(t, "TLS server is on ")
	plain := chattest.Dial(t, tlsAddr)
	plain.Send("HELLO-FROM ann\n")
	plain.ExpectClosed()
	failed := s.stderr.WaitFor(t, "the handshake's error", func(l string) bool { return strings.Contains(l, `"tls handshake failed"`) })
	log := jsonLogs(t, []string{failed})[0]
	if err, _ := log["err"].(string); !strings.Contains(err, "does not look like a TLS handshake") || log["tls"] != true {
		t.Errorf("handshake failure logged as %v, want the error and tls=true", log)
	}
	s.stderr.WaitFor(t, "the close line", func(l string) bool {
		return strings.Contains(l, `"connection closed"`) && strings.Contains(l, `"reason":"tls_handshake"`) && strings.Contains(l, `"tls":true`)
	})

	distrustful, err := tls.Dial("tcp", tlsAddr, &tls.Config{ServerName: "localhost"}) // the system's roots: not A
	if err == nil {
		distrustful.Close()
		t.Fatal("a client that does not trust the certificate finished the handshake")
	}
	s.stderr.WaitFor(t, "the second handshake's error", func(l string) bool {
		return strings.Contains(l, `"tls handshake failed"`) && strings.Contains(l, "bad certificate")
	})
}

// TestBotsAndTrace: --bots adds echobot and delaybot, and --trace logs
// every line, as a client author runs the server.
func TestBotsAndTrace(t *testing.T) {
	s := startRun(t, "-a", "127.0.0.1", "-p", "0", "--bots", "--trace", "--log-format", "json")
	ann := chattest.Dial(t, s.stdout.Address(t, "Server is on ")).Login("ann")
	ann.Request("LIST", "LIST-OK echobot,delaybot,ann")
	ann.Request("SEND echobot are you there", "SEND-OK")
	ann.Expect("DELIVERY echobot are you there")
	ann.Request("list", "BAD-RQST-HDR")
	s.stderr.WaitFor(t, "the traced mistake", func(l string) bool {
		return strings.Contains(l, `"msg":"in"`) && strings.Contains(l, `"line":"list"`) && strings.Contains(l, `"why":"headers are upper case: LIST, not list"`)
	})
}

func TestVersion(t *testing.T) {
	var stdout bytes.Buffer
	err := run(t.Context(), []string{"--version"}, &stdout, io.Discard)
	if !errors.Is(err, flag.ErrHelp) {
		t.Errorf("run --version = %v, want flag.ErrHelp (exit status 0)", err)
	}
	if got := stdout.String(); !strings.HasPrefix(got, "chat-server ") || !strings.Contains(got, "go1.") || strings.Count(got, "\n") != 1 {
		t.Errorf("--version printed %q, want one line: chat-server <version>; go1.x", got)
	}
}
