//go:build unix

package chattest

import (
	"bytes"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"
)

// Output collects what a server writes to stdout or stderr (a process's,
// or run's in the test process), line by line, so that a test can wait
// for a line.
type Output struct {
	lines chan string // every complete line, in order, for WaitFor

	mu   sync.Mutex
	raw  []byte   // guarded by mu: everything written
	rest []byte   // guarded by mu: an incomplete last line
	all  []string // guarded by mu: the complete lines
}

// NewOutput returns an empty Output.
func NewOutput() *Output { return &Output{lines: make(chan string, 1<<16)} }

func (o *Output) Write(p []byte) (int, error) {
	o.mu.Lock()
	defer o.mu.Unlock()
	o.raw = append(o.raw, p...)
	o.rest = append(o.rest, p...)
	for {
		i := bytes.IndexByte(o.rest, '\n')
		if i < 0 {
			return len(p), nil
		}
		line := string(o.rest[:i])
		o.rest = o.rest[i+1:]
		o.all = append(o.all, line)
		select {
		case o.lines <- line:
		default: // nobody waits for that many lines
		}
	}
}

// Lines returns every complete line written so far.
func (o *Output) Lines() []string {
	o.mu.Lock()
	defer o.mu.Unlock()
	return slices.Clone(o.all)
}

// String returns everything written so far.
func (o *Output) String() string {
	o.mu.Lock()
	defer o.mu.Unlock()
	return string(o.raw)
}

// WaitFor returns the first line not yet waited for that match accepts.
func (o *Output) WaitFor(t testing.TB, what string, match func(string) bool) string {
	t.Helper()
	timer := time.NewTimer(WaitTimeout)
	defer timer.Stop()
	for {
		select {
		case line := <-o.lines:
			if match(line) {
				return line
			}
		case <-timer.C:
			t.Fatalf("timed out waiting for %s; output so far:\n%s", what, o.String())
		}
	}
}

// Address waits for the line "<prefix><host:port>" and returns the
// address.
func (o *Output) Address(t testing.TB, prefix string) string {
	t.Helper()
	line := o.WaitFor(t, prefix, func(l string) bool { return strings.HasPrefix(l, prefix) })
	addr := strings.TrimPrefix(line, prefix)
	if _, port, err := net.SplitHostPort(addr); err != nil {
		t.Fatalf("line %q: no address: %v", line, err)
	} else if n, err := strconv.Atoi(port); err != nil || n <= 0 || n > 65535 {
		t.Fatalf("line %q: bad port", line)
	}
	return addr
}

// Proc is a command under test running as a process.
type Proc struct {
	T      testing.TB
	Cmd    *exec.Cmd
	Stdout *Output
	Stderr *Output
	exited chan struct{} // closed once the process exited and was waited for
}

// ExitTimeout bounds how long a process may take to exit after a signal.
const ExitTimeout = 10 * time.Second

// StartProc starts cmd with its stdout and stderr collected. When the test
// ends the process is killed if it still runs, its stderr is printed if
// the test failed, and a data race it reported (a binary built with
// -race) fails the test.
func StartProc(t testing.TB, cmd *exec.Cmd) *Proc {
	t.Helper()
	p := &Proc{T: t, Cmd: cmd, Stdout: NewOutput(), Stderr: NewOutput(), exited: make(chan struct{})}
	cmd.Stdout, cmd.Stderr = p.Stdout, p.Stderr
	if err := cmd.Start(); err != nil {
		t.Fatalf("start %s: %v", cmd.Path, err)
	}
	go func() {
		defer close(p.exited)
		_ = cmd.Wait()
	}()
	t.Cleanup(func() {
		select {
		case <-p.exited:
		default:
			_ = cmd.Process.Signal(syscall.SIGCONT) // a paused process cannot die cleanly
			_ = cmd.Process.Kill()
			<-p.exited
		}
		if errs := p.Stderr.String(); strings.Contains(errs, "WARNING: DATA RACE") {
			t.Errorf("%s reported a data race:\n%s", cmd.Path, errs)
		} else if t.Failed() {
			t.Logf("stderr of %s %s:\n%s", filepath.Base(cmd.Path), strings.Join(cmd.Args[1:], " "), errs)
		}
	})
	return p
}

// ListenAddr waits for the "Server is on" line and returns the address to
// dial.
func (p *Proc) ListenAddr() string {
	p.T.Helper()
	return p.Stdout.Address(p.T, "Server is on ")
}

// Signal sends sig to the process.
func (p *Proc) Signal(sig os.Signal) {
	p.T.Helper()
	if err := p.Cmd.Process.Signal(sig); err != nil {
		p.T.Fatalf("signal %v: %v", sig, err)
	}
}

// Wait waits for the process to exit and returns its exit status (-1 if
// a signal killed it).
func (p *Proc) Wait() int {
	p.T.Helper()
	select {
	case <-p.exited:
		return p.Cmd.ProcessState.ExitCode()
	case <-time.After(ExitTimeout):
		p.T.Fatalf("process did not exit within %v; stderr:\n%s", ExitTimeout, p.Stderr.String())
	}
	return 0
}

// Pause stops the process with SIGSTOP and returns once every one of its
// threads is stopped: the signal is asynchronous, and a thread running on
// another CPU could still handle a request written just after it.
func (p *Proc) Pause() {
	p.T.Helper()
	p.Signal(syscall.SIGSTOP)
	deadline := time.Now().Add(ExitTimeout)
	for !allStopped(p.Cmd.Process.Pid) {
		if time.Now().After(deadline) {
			p.T.Fatalf("process not stopped %v after SIGSTOP", ExitTimeout)
		}
		time.Sleep(time.Millisecond)
	}
}

// Resume lets a paused process go on.
func (p *Proc) Resume() { p.Signal(syscall.SIGCONT) }

// RSS returns the process's resident memory in bytes, from /proc.
func (p *Proc) RSS() int64 {
	p.T.Helper()
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", p.Cmd.Process.Pid))
	if err != nil {
		p.T.Fatalf("read status: %v", err)
	}
	for _, line := range strings.Split(string(b), "\n") {
		if rest, ok := strings.CutPrefix(line, "VmRSS:"); ok {
			kb, err := strconv.ParseInt(strings.TrimSpace(strings.TrimSuffix(strings.TrimSpace(rest), "kB")), 10, 64)
			if err != nil {
				p.T.Fatalf("VmRSS %q: %v", rest, err)
			}
			return kb << 10
		}
	}
	p.T.Fatal("no VmRSS in /proc status")
	return 0
}

// allStopped reports whether every thread of process pid is stopped.
func allStopped(pid int) bool {
	tasks, err := filepath.Glob(fmt.Sprintf("/proc/%d/task/*/stat", pid))
	if err != nil || len(tasks) == 0 {
		return false
	}
	for _, task := range tasks {
		b, err := os.ReadFile(task)
		if err != nil {
			return false
		}
		// The state follows the command name, which is in parentheses.
		i := bytes.LastIndexByte(b, ')')
		if i < 0 || i+2 >= len(b) || (b[i+2] != 'T' && b[i+2] != 't') {
			return false
		}
	}
	return true
}
