//go:build unix

package main

import (
	"bytes"
	"context"
	"net"
	"os/exec"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/creack/pty"

	"chatserver/internal/chat/chattest"
)

// screen is what a client in a pseudo-terminal wrote to it.
type screen struct {
	mu   sync.Mutex
	out  bytes.Buffer // guarded by mu
	seen int          // guarded by mu: how much waitFor has looked at
}

func (s *screen) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.out.Write(p)
}

func (s *screen) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.out.String()
}

// waitFor waits until want appears on the screen after what the last
// waitFor found, and returns the screen from there on.
func (s *screen) waitFor(t *testing.T, want string) string {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for time.Now().Before(deadline) {
		s.mu.Lock()
		rest := s.out.String()[s.seen:]
		if i := strings.Index(rest, want); i >= 0 {
			s.seen += i + len(want)
			s.mu.Unlock()
			return rest[i:]
		}
		s.mu.Unlock()
		time.Sleep(10 * time.Millisecond)
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	t.Fatalf("the screen never showed %q; it shows %q", want, s.out.String())
	return ""
}

// TestTypingSurvivesADelivery: on a terminal, a message that arrives while
// the user types is printed on a line of its own, above the line being
// typed, which is drawn again intact; finishing the line sends it whole.
func TestTypingSurvivesADelivery(t *testing.T) {
	srv := chattest.Start(t, nil)
	host, port, _ := net.SplitHostPort(srv.Addr)
	cmd := exec.Command(binary(t), "-a", host, "-p", port)
	tty, err := pty.StartWithSize(cmd, &pty.Winsize{Rows: 24, Cols: 120})
	if err != nil {
		t.Fatalf("start in a pseudo-terminal: %v", err)
	}
	exited := make(chan error, 1)
	go func() { exited <- cmd.Wait() }()
	scr := &screen{}
	copied := make(chan struct{})
	go func() {
		defer close(copied)
		buf := make([]byte, 4096)
		for {
			n, err := tty.Read(buf)
			scr.Write(buf[:n])
			if err != nil {
				return
			}
		}
	}()
	t.Cleanup(func() {
		cmd.Process.Kill() // if it still runs
		<-exited
		tty.Close()
		<-copied
	})

	scr.waitFor(t, textWelcome)
	tty.WriteString("bob\r")
	scr.waitFor(t, "Successfully logged in as bob!")
	alice := libClient(t, srv.Addr, "alice")
	tty.WriteString("@alice I am typi")
	scr.waitFor(t, "@alice I am typi")
	if err := alice.Send(t.Context(), "bob", "interrupt!"); err != nil {
		t.Fatalf("Send: %v", err)
	}
	scr.waitFor(t, "From alice: interrupt!")
	scr.waitFor(t, prompt+"@alice I am typi") // drawn again under it
	if all := scr.String(); !strings.Contains(all, "From alice: interrupt!\r\n"+prompt+"@alice I am typi") || strings.Contains(all, "typiFrom") {
		t.Errorf("the screen shows %q, want the message on its own line, then the prompt and the typed text", all)
	}
	tty.WriteString("ng\r")
	scr.waitFor(t, textSent)
	ctx, cancel := context.WithTimeout(t.Context(), timeout)
	defer cancel()
	select {
	case d := <-alice.Deliveries():
		if d.From != "bob" || d.Message != "I am typing" {
			t.Errorf("alice got %+v, want bob's I am typing, whole", d)
		}
	case <-ctx.Done():
		t.Fatal("alice got nothing")
	}
	tty.WriteString("\x04") // Ctrl-D on an empty line quits
	select {
	case err := <-exited:
		exited <- err // for the cleanup
		if err != nil {
			t.Errorf("after Ctrl-D the client exited with %v, want status 0", err)
		}
	case <-time.After(timeout):
		t.Fatal("Ctrl-D did not quit")
	}
}
