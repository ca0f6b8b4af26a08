package main

import (
	"bufio"
	"bytes"
	"context"
	"crypto/tls"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"go.uber.org/goleak"

	"chatserver/internal/certs/certstest"
	"chatserver/internal/chat"
	"chatserver/internal/chat/chattest"
	"chatserver/internal/client"
)

// timeout bounds every wait for output, a reply or an exit. Tests
// synchronise on the client's output lines; this only turns a hang into a
// failure.
const timeout = 10 * time.Second

var build struct {
	once sync.Once
	dir  string
	path string
	err  error
}

func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m, goleak.Cleanup(func(int) {
		if build.dir != "" {
			os.RemoveAll(build.dir)
		}
	}))
}

// binary builds the client once per test run and returns its path.
func binary(t *testing.T) string {
	t.Helper()
	build.once.Do(func() {
		build.dir, build.err = os.MkdirTemp("", "chat-client-test-")
		if build.err != nil {
			return
		}
		build.path = filepath.Join(build.dir, "chat-client")
		// go test puts its own go command first in PATH.
		cmd := exec.Command("go", "build", "-o", build.path, ".")
		if out, err := cmd.CombinedOutput(); err != nil {
			build.err = fmt.Errorf("go build: %v\n%s", err, out)
		}
	})
	if build.err != nil {
		t.Fatal(build.err)
	}
	return build.path
}

// startTLSServer starts a server that speaks TLS with a new self-signed
// certificate for 127.0.0.1, and returns it with the certificate's file.
func startTLSServer(t *testing.T) (*chattest.Server, string) {
	t.Helper()
	dir := t.TempDir()
	certFile, keyFile := filepath.Join(dir, "cert.pem"), filepath.Join(dir, "key.pem")
	certstest.Write(t, certFile, keyFile, "chat test")
	cert, err := tls.LoadX509KeyPair(certFile, keyFile)
	if err != nil {
		t.Fatal(err)
	}
	cfg := &tls.Config{Certificates: []tls.Certificate{cert}}
	srv, err := chat.NewServer(chat.DefaultConfig())
	if err != nil {
		t.Fatalf("NewServer: %v", err)
	}
	s := chattest.Serve(t, srv, func(ln net.Listener) net.Listener { return tls.NewListener(ln, cfg) })
	return s, certFile
}

// proc is a running chat-client process, driven through pipes.
type proc struct {
	t      *testing.T
	cmd    *exec.Cmd
	stdin  io.WriteCloser
	lines  chan string   // stdout, line by line; closed at EOF
	quit   chan struct{} // closed at cleanup: stop handing out lines
	exited chan struct{} // closed once the process has been waited for
	err    error         // Wait's error, set before exited is closed
	stderr bytes.Buffer  // read only after exited is closed
}

// startArgs starts the client with the given arguments.
func startArgs(t *testing.T, args ...string) *proc {
	t.Helper()
	p := &proc{
		t:      t,
		cmd:    exec.Command(binary(t), args...),
		lines:  make(chan string, 64),
		quit:   make(chan struct{}),
		exited: make(chan struct{}),
	}
	p.cmd.Stderr = &p.stderr
	var err error
	if p.stdin, err = p.cmd.StdinPipe(); err != nil {
		t.Fatal(err)
	}
	stdout, err := p.cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := p.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	go func() {
		sc := bufio.NewScanner(stdout)
		sc.Buffer(nil, 4<<20)
	scan:
		for sc.Scan() {
			select {
			case p.lines <- sc.Text():
			case <-p.quit:
				break scan
			}
		}
		io.Copy(io.Discard, stdout)
		close(p.lines)
		p.err = p.cmd.Wait() // after every read from stdout, as Wait requires
		close(p.exited)
	}()
	t.Cleanup(p.cleanup)
	return p
}

// start starts the client against the server at addr.
func start(t *testing.T, addr string) *proc {
	t.Helper()
	host, port, err := net.SplitHostPort(addr)
	if err != nil {
		t.Fatal(err)
	}
	return startArgs(t, "-a", host, "-p", port)
}

// cleanup ends the process: the end of its input makes it quit; a process
// that does not is killed.
func (p *proc) cleanup() {
	close(p.quit)
	p.stdin.Close()
	select {
	case <-p.exited:
		return
	case <-time.After(timeout):
	}
	p.t.Errorf("client did not exit at the end of its input; killing it")
	p.cmd.Process.Kill()
	<-p.exited
}

// send writes line and a "\n" to the client's stdin.
func (p *proc) send(line string) {
	p.t.Helper()
	if _, err := io.WriteString(p.stdin, line+"\n"); err != nil {
		p.t.Fatalf("write %q to the client: %v", line, err)
	}
}

// next returns the client's next line of output.
func (p *proc) next() string {
	p.t.Helper()
	select {
	case line, ok := <-p.lines:
		if !ok {
			<-p.exited
			p.t.Fatalf("client exited (%v) while a line was expected; stderr: %q", p.err, p.stderr.String())
		}
		return line
	case <-time.After(timeout):
		p.t.Fatalf("no output from the client within %v", timeout)
	}
	return ""
}

// expect checks the client's next lines of output.
func (p *proc) expect(want ...string) {
	p.t.Helper()
	for _, w := range want {
		if got := p.next(); got != w {
			p.t.Fatalf("client printed %q, want %q", got, w)
		}
	}
}

// expectAnyOrder checks that the client's next lines are want, in any
// order.
func (p *proc) expectAnyOrder(want ...string) {
	p.t.Helper()
	got := make([]string, len(want))
	for i := range got {
		got[i] = p.next()
	}
	slices.Sort(got)
	want = slices.Sorted(slices.Values(want))
	if !slices.Equal(got, want) {
		p.t.Fatalf("client printed %q, want %q in any order", got, want)
	}
}

// expectExit checks that the client prints nothing more and exits, with
// status 0 if success, else with a non-zero status.
func (p *proc) expectExit(success bool) {
	p.t.Helper()
	select {
	case line, ok := <-p.lines:
		if ok {
			p.t.Fatalf("client printed %q, want it to exit", line)
		}
	case <-time.After(timeout):
		p.t.Fatalf("client did not exit within %v", timeout)
	}
	<-p.exited
	code := p.cmd.ProcessState.ExitCode()
	if (code == 0) != success {
		p.t.Fatalf("client exited with status %d (stderr %q), want success %t", code, p.stderr.String(), success)
	}
}

// login answers the welcome prompt with name and checks it worked.
func (p *proc) login(name string) *proc {
	p.t.Helper()
	p.expect(textWelcome)
	p.send(name)
	p.expect("Successfully logged in as " + name + "!")
	return p
}

// libClient returns a library client logged in as name.
func libClient(t *testing.T, addr, name string) *client.Conn {
	t.Helper()
	ctx, cancel := context.WithTimeout(t.Context(), timeout)
	defer cancel()
	c, err := client.Dial(ctx, addr)
	if err != nil {
		t.Fatalf("Dial: %v", err)
	}
	t.Cleanup(func() { c.Close() })
	if err := c.Login(ctx, name); err != nil {
		t.Fatalf("Login(%q): %v", name, err)
	}
	return c
}

func TestLoginWhoQuit(t *testing.T) {
	s := chattest.Start(t, nil)
	p := start(t, s.Addr).login("alice")
	p.send("!who")
	p.expect("There is 1 online user:", "- alice")
	p.send("!quit")
	p.expectExit(true)
}

func TestLongFlags(t *testing.T) {
	s := chattest.Start(t, nil)
	host, port, _ := net.SplitHostPort(s.Addr)
	p := startArgs(t, "--address", host, "--port", port).login("alice")
	p.stdin.Close() // the end of input quits too
	p.expectExit(true)
}

func TestLoginNameTaken(t *testing.T) {
	s := chattest.Start(t, nil)
	libClient(t, s.Addr, "alice")
	p := start(t, s.Addr)
	p.expect(textWelcome)
	p.send("alice")
	p.expect("Cannot log in as alice. That username is already in use.", textTryAgain)
	p.send("bob") // on the same connection: this server keeps it open
	p.expect("Successfully logged in as bob!")
	p.send("!who")
	p.expect("There are 2 online users:", "- alice", "- bob")
	if st := s.Stats(); st.Connections != 2 || st.Closed[chat.ReasonClientClosed] != 0 {
		t.Errorf("the server saw %d connections open and %d closed, want 2 and none: the client stays on its socket", st.Connections, st.Closed[chat.ReasonClientClosed])
	}
}

func TestLoginDisallowedCharacters(t *testing.T) {
	s := chattest.Start(t, nil)
	p := start(t, s.Addr)
	p.expect(textWelcome)
	for _, name := range []string{"a!b", "a@b", "#", "$x", "x%", "^", "&&", "*", "al ice", "a,b", " ", "@bob hi"} {
		p.send(name)
		p.expect("Cannot log in as "+name+". That username contains disallowed characters.", textTryAgain)
	}
	p.send("carol")
	p.expect("Successfully logged in as carol!")
	p.send("!who") // none of the names above reached the server
	p.expect("There is 1 online user:", "- carol")
}

// TestLoginNameRejections: a name the protocol does not allow is refused
// with why, and a new prompt, before it is sent.
func TestLoginNameRejections(t *testing.T) {
	s := chattest.Start(t, nil)
	p := start(t, s.Addr)
	p.expect(textWelcome)
	for _, tc := range []struct{ name, want string }{
		{"", "Cannot log in without a name."},
		{strings.Repeat("n", 65), "Cannot log in as " + strings.Repeat("n", 65) + ". That username is too long (65 bytes; at most 64)."},
		{"tab\there", "Cannot log in as tab\there. That username contains disallowed characters."},
		{"evil\u202eup", `Cannot log in as evil\u202eup. That username contains disallowed characters.`},
		{"esc\x1b[2J", "Cannot log in as esc^[[2J. That username contains disallowed characters."},
	} {
		p.send(tc.name)
		p.expect(tc.want, textTryAgain)
	}
	p.send("zoë\r") // CRLF input works too
	p.expect("Successfully logged in as zoë!")
	if n := s.Stats().Logins[chat.LoginBadName]; n != 0 {
		t.Errorf("%d bad names reached the server, want none", n)
	}
}

func TestMessagesBothWays(t *testing.T) {
	s := chattest.Start(t, nil)
	alice := start(t, s.Addr).login("alice")
	bob := start(t, s.Addr).login("bob")

	alice.send("@bob hi bob, how are you?")
	alice.expect("The message was sent successfully")
	bob.expect("From alice: hi bob, how are you?")

	bob.send("@alice   fine,\tthanks ")
	bob.expect("The message was sent successfully")
	alice.expect("From bob:   fine,\tthanks ")

	alice.send("!who")
	alice.expect("There are 2 online users:", "- alice", "- bob")
}

// TestDeliveriesWhileIdle checks that messages are printed as they arrive,
// with no input from the user, in order, and whole however many TCP reads
// a long one takes.
func TestDeliveriesWhileIdle(t *testing.T) {
	s := chattest.Start(t, nil)
	p := start(t, s.Addr).login("bob")
	alice := libClient(t, s.Addr, "alice")
	long := strings.Repeat("0123456789abcdef", 32<<10) // 512 KiB
	msgs := []string{"one", "two", long, "DELIVERY eve fake", "three"}
	for _, m := range msgs {
		if err := alice.Send(t.Context(), "bob", m); err != nil {
			t.Fatalf("Send: %v", err)
		}
	}
	for _, m := range msgs {
		if got, want := p.next(), "From alice: "+m; got != want {
			t.Fatalf("client printed %d bytes %.40q..., want %d bytes %.40q...", len(got), got, len(want), want)
		}
	}
}

func TestSendToSelf(t *testing.T) {
	s := chattest.Start(t, nil)
	p := start(t, s.Addr).login("alice")
	p.send("@alice note to self")
	// The delivery printer and the command loop print on their own.
	p.expectAnyOrder("From alice: note to self", "The message was sent successfully")
}

func TestUnknownUser(t *testing.T) {
	s := chattest.Start(t, nil)
	libClient(t, s.Addr, "bob")
	p := start(t, s.Addr).login("alice")
	for _, line := range []string{"@nobody hi", "@Bob hi"} {
		p.send(line)
		p.expect("The destination user does not exist")
	}
}

func TestUnknownCommand(t *testing.T) {
	s := chattest.Start(t, nil)
	p := start(t, s.Addr).login("alice")
	for _, line := range []string{"hello", "", " ", "!who ", "!WHO", "who", "!quit now", "!help", "LIST", " @alice hi"} {
		p.send(line)
		p.expect("Command doesn't exist")
	}
	p.send("!quit")
	p.expectExit(true)
}

// TestSendRejections: a message the protocol does not allow is refused
// with why, before it is sent.
func TestSendRejections(t *testing.T) {
	s := chattest.Start(t, nil)
	p := start(t, s.Addr).login("alice")
	for _, tc := range []struct{ line, want string }{
		{"@alice", "Cannot send an empty message."},
		{"@alice ", "Cannot send an empty message."},
		{"@alice  \t ", "Cannot send an empty message."},
		{"@", "Cannot send: say who to, as @<name> <message>."},
		{"@ hi", "Cannot send: say who to, as @<name> <message>."},
		{"@a,b hi", "Cannot send to a,b. That username contains disallowed characters."},
		{"@alice a\rb", "Cannot send that message: it holds a carriage return."},
		{"@alice a\x00b", "Cannot send that message: it holds a NUL character."},
		{"@alice \xff", "Cannot send that message: it is not valid UTF-8."},
	} {
		p.send(tc.line)
		p.expect(tc.want)
	}
	p.send("@alice still here")
	p.expectAnyOrder("From alice: still here", "The message was sent successfully")
}

func TestServerBusy(t *testing.T) {
	s := chattest.Start(t, func(c *chat.Config) { c.MaxUsers = 1 })
	libClient(t, s.Addr, "alice")
	p := start(t, s.Addr)
	p.expect(textWelcome)
	p.send("bob")
	p.expect("Cannot log in. The server is full!")
	p.expectExit(false)
}

// TestServerRefusesConnection covers a server over its connection limit,
// which says BUSY and closes before the user has typed a name.
func TestServerRefusesConnection(t *testing.T) {
	s := chattest.Start(t, func(c *chat.Config) { c.MaxConns = 1 })
	libClient(t, s.Addr, "alice")
	p := start(t, s.Addr)
	p.expect(textWelcome, "Cannot log in. The server is full!")
	p.expectExit(false)
}

func TestServerGoesAway(t *testing.T) {
	s := chattest.Start(t, nil)
	p := start(t, s.Addr).login("alice")
	s.Stop()
	p.expect("The server closed the connection.")
	p.expectExit(false)
}

func TestServerGoesAwayAtLoginPrompt(t *testing.T) {
	s := chattest.Start(t, nil)
	p := start(t, s.Addr)
	p.expect(textWelcome)
	s.Stop()
	p.expect("The server closed the connection.")
	p.expectExit(false)
}

func TestCannotConnect(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	ln.Close()
	p := start(t, addr)
	p.expect("Error connecting to the server.")
	p.expectExit(false)
}

func TestTLS(t *testing.T) {
	s, certFile := startTLSServer(t)
	host, port, _ := net.SplitHostPort(s.Addr)
	p := startArgs(t, "-a", host, "-p", port, "--tls-ca", certFile).login("alice")
	p.send("!who")
	p.expect("There is 1 online user:", "- alice")
	p.send("!quit")
	p.expectExit(true)
}

func TestTLSUntrustedServer(t *testing.T) {
	s, _ := startTLSServer(t)
	host, port, _ := net.SplitHostPort(s.Addr)
	// The system's CAs do not know the test's self-signed certificate.
	p := startArgs(t, "-a", host, "-p", port, "--tls")
	p.expect("Error connecting to the server.")
	p.expectExit(false)
	if !strings.Contains(p.stderr.String(), "certificate") {
		t.Errorf("stderr = %q, want it to explain the certificate problem", p.stderr.String())
	}
}

func TestQuitAtLoginPrompt(t *testing.T) {
	s := chattest.Start(t, nil)
	p := start(t, s.Addr)
	p.expect(textWelcome)
	p.send("!quit")
	p.expectExit(true)

	p = start(t, s.Addr)
	p.expect(textWelcome)
	p.stdin.Close()
	p.expectExit(true)
}

// TestPipedScript feeds a whole script at once and closes the input, as
// `chat-client < script` does.
func TestPipedScript(t *testing.T) {
	s := chattest.Start(t, nil)
	libClient(t, s.Addr, "bob")
	p := start(t, s.Addr)
	io.WriteString(p.stdin, "bad name\nbob\nalice\n!who\n@bob hi\n@nobody hi\n@bob\nwhat\n@bob bye") // no final "\n"
	p.stdin.Close()
	p.expect(
		textWelcome,
		"Cannot log in as bad name. That username contains disallowed characters.", textTryAgain,
		"Cannot log in as bob. That username is already in use.", textTryAgain,
		"Successfully logged in as alice!",
		"There are 2 online users:", "- bob", "- alice",
		"The message was sent successfully",
		"The destination user does not exist",
		"Cannot send an empty message.",
		"Command doesn't exist",
		"The message was sent successfully",
	)
	p.expectExit(true)
}

func TestHelp(t *testing.T) {
	for _, flag := range []string{"-h", "--help"} {
		p := startArgs(t, flag)
		if got := p.next(); got != "Usage: chat-client [flags]" {
			t.Fatalf("%s: first line %q", flag, got)
		}
		for range p.lines {
		}
		p.expectExit(true)
	}
}

func TestBadFlags(t *testing.T) {
	for _, args := range [][]string{{"-x"}, {"-p", "0"}, {"-p", "http"}, {"extra"}} {
		p := startArgs(t, args...)
		p.expectExit(false)
		if !strings.HasPrefix(p.stderr.String(), "chat-client: ") {
			t.Errorf("%q: stderr %q, want one error line", args, p.stderr.String())
		}
	}
}

func TestSanitize(t *testing.T) {
	tests := []struct{ in, want string }{
		{"plain text", "plain text"},
		{"tab\tkept, ünïcødé too", "tab\tkept, ünïcødé too"},
		{"\x1b[2J\x1b[Hcleared", "^[[2J^[[Hcleared"},
		{"bell\x07 del\x7f", "bell^G del^?"},
		{"c1\u0085", `c1\u0085`},
		{"bidi \u202eevil\u202c and \u2066isolate", `bidi \u202eevil\u202c and \u2066isolate`},
		{"zero\u200bwidth, line\u2028break", `zero\u200bwidth, line\u2028break`},
		{"bad \xff utf-8", `bad \xff utf-8`},
	}
	for _, tc := range tests {
		if got := sanitize(tc.in); got != tc.want {
			t.Errorf("sanitize(%q) = %q, want %q", tc.in, got, tc.want)
		}
	}
}

func TestDeliveryIsSanitized(t *testing.T) {
	s := chattest.Start(t, nil)
	p := start(t, s.Addr).login("bob")
	alice := libClient(t, s.Addr, "alice")
	if err := alice.Send(t.Context(), "bob", "\x1b[31mred"); err != nil {
		t.Fatalf("Send: %v", err)
	}
	p.expect("From alice: ^[[31mred")
}

// closingServer is a server of this protocol that, like the course's,
// closes the connection after it refuses a name: IN-USE for "taken",
// BAD-RQST-BODY for "refused". It knows HELLO-FROM and LIST, and counts
// the connections it accepted.
type closingServer struct {
	ln    net.Listener
	mu    sync.Mutex
	conns int
}

func startClosingServer(t *testing.T) *closingServer {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	s := &closingServer{ln: ln}
	var wg sync.WaitGroup
	t.Cleanup(func() {
		ln.Close()
		wg.Wait()
	})
	wg.Go(func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			s.mu.Lock()
			s.conns++
			s.mu.Unlock()
			wg.Go(func() { s.serve(c) })
		}
	})
	return s
}

func (s *closingServer) serve(c net.Conn) {
	defer c.Close()
	c.SetDeadline(time.Now().Add(timeout))
	r := bufio.NewReader(c)
	name := ""
	for {
		line, err := r.ReadString('\n')
		if err != nil {
			return
		}
		switch line = strings.TrimSuffix(line, "\n"); {
		case line == "HELLO-FROM taken":
			io.WriteString(c, "IN-USE\n")
			return
		case line == "HELLO-FROM refused":
			io.WriteString(c, "BAD-RQST-BODY\n")
			return
		case strings.HasPrefix(line, "HELLO-FROM "):
			name = strings.TrimPrefix(line, "HELLO-FROM ")
			io.WriteString(c, "HELLO "+name+"\n")
		case line == "LIST":
			io.WriteString(c, "LIST-OK "+name+"\n")
		}
	}
}

func (s *closingServer) accepted() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.conns
}

// TestServerThatClosesAfterARefusal: against a server that closes the
// connection after IN-USE or a name it refuses, the client connects again
// and logs in with the next name.
func TestServerThatClosesAfterARefusal(t *testing.T) {
	s := startClosingServer(t)
	p := start(t, s.ln.Addr().String())
	p.expect(textWelcome)
	p.send("taken")
	p.expect("Cannot log in as taken. That username is already in use.", textTryAgain)
	p.send("refused")
	p.expect("Cannot log in as refused. That username contains disallowed characters.", textTryAgain)
	p.send("third")
	p.expect("Successfully logged in as third!")
	p.send("!who")
	p.expect("There is 1 online user:", "- third")
	if n := s.accepted(); n != 3 {
		t.Errorf("the server accepted %d connections, want 3: one per name it refused, and the last", n)
	}
	p.send("!quit")
	p.expectExit(true)
}

func TestVersion(t *testing.T) {
	p := startArgs(t, "--version")
	if got := p.next(); !strings.HasPrefix(got, "chat-client ") || !strings.Contains(got, "go1.") {
		t.Errorf("--version printed %q, want chat-client <version>; go1.x", got)
	}
	p.expectExit(true)
}
