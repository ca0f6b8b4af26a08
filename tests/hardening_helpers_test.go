package tests

import (
	"errors"
	"fmt"
	"io"
	"net"
	"runtime"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"chatserver/internal/chat"
)

// Helpers for the hardening and soak tests. The harness's wire methods
// fail the test, which only the test's own goroutine may do; the ...Err
// methods here return errors instead, for use from other goroutines.

// sendErr writes s as it is.
func (w *wire) sendErr(s string) error {
	_ = w.conn.SetWriteDeadline(time.Now().Add(replyTimeout))
	_, err := w.conn.Write([]byte(s))
	return err
}

// lineErr reads one reply line, without its "\n".
func (w *wire) lineErr() (string, error) {
	_ = w.conn.SetReadDeadline(time.Now().Add(replyTimeout))
	s, err := w.r.ReadString('\n')
	if err != nil {
		return s, fmt.Errorf("read reply: %w (got %q so far)", err, s)
	}
	return strings.TrimSuffix(s, "\n"), nil
}

// expectErr reads len(want) reply lines and checks each.
func (w *wire) expectErr(want ...string) error {
	for _, wl := range want {
		got, err := w.lineErr()
		if err != nil {
			return err
		}
		if got != wl {
			return fmt.Errorf("reply = %.200q, want %.200q", got, wl)
		}
	}
	return nil
}

// listNames sends LIST and returns the names in the reply. The
// connection must not be receiving deliveries.
func listNames(w *wire) []string {
	w.t.Helper()
	return strings.Split(w.list(), ",")
}

// closedBy returns how many connections srv has closed for reason.
func closedBy(srv *chat.Server, reason chat.CloseReason) uint64 {
	return srv.Stats().Closed[reason]
}

// expectClosed checks that srv has closed exactly want[r] connections
// for every reason r (none for a reason want leaves out). The counters
// move a moment after a client sees its connection end, so it waits for
// them to match before it reports the difference.
func expectClosed(t testing.TB, srv *chat.Server, want map[chat.CloseReason]uint64) {
	t.Helper()
	matches := func(st chat.Stats) bool {
		for r, n := range st.Closed {
			if n != want[chat.CloseReason(r)] {
				return false
			}
		}
		return true
	}
	deadline := time.Now().Add(replyTimeout)
	st := srv.Stats()
	for !matches(st) && time.Now().Before(deadline) {
		time.Sleep(5 * time.Millisecond)
		st = srv.Stats()
	}
	for r, n := range st.Closed {
		if reason := chat.CloseReason(r); n != want[reason] {
			t.Errorf("connections closed as %v = %d, want %d", reason, n, want[reason])
		}
	}
}

// pingPong has a send "SEND b ping-<i>" and checks that a gets SEND-OK and
// b the DELIVERY, in lockstep, until stop is closed or max rounds are done.
// It runs in its own goroutine; first is closed after the first round (or
// when run gives up), so a test can wait for the pair to be going.
type pingPong struct {
	a, b   *wire
	an, bn string // their names
	rounds atomic.Int64
	first  chan struct{}
	err    error // set before run returns
}

func newPingPong(a, b *wire, an, bn string) *pingPong {
	return &pingPong{a: a, b: b, an: an, bn: bn, first: make(chan struct{})}
}

func (p *pingPong) run(stop <-chan struct{}, max int) {
	defer func() {
		select {
		case <-p.first:
		default:
			close(p.first)
		}
	}()
	for i := range max {
		select {
		case <-stop:
			return
		default:
		}
		msg := fmt.Sprintf("ping-%d", i)
		if err := p.a.sendErr("SEND " + p.bn + " " + msg + "\n"); err != nil {
			p.err = fmt.Errorf("%s: %w", p.an, err)
			return
		}
		if err := p.a.expectErr("SEND-OK"); err != nil {
			p.err = fmt.Errorf("%s round %d: %w", p.an, i, err)
			return
		}
		if err := p.b.expectErr("DELIVERY " + p.an + " " + msg); err != nil {
			p.err = fmt.Errorf("%s round %d: %w", p.bn, i, err)
			return
		}
		if p.rounds.Add(1) == 1 {
			close(p.first)
		}
	}
}

// startPairs starts n ping-pong pairs of freshly logged-in users named
// prefix-a<i> and prefix-b<i>. stopPairs stops them and returns each
// one's rounds, failing the test if any pair broke.
func startPairs(t *testing.T, addr, prefix string, n int) (stopPairs func() []int64) {
	t.Helper()
	stop := make(chan struct{})
	var wg sync.WaitGroup
	ps := make([]*pingPong, n)
	for i := range ps {
		an, bn := fmt.Sprintf("%s-a%d", prefix, i), fmt.Sprintf("%s-b%d", prefix, i)
		ps[i] = newPingPong(loggedIn(t, addr, an), loggedIn(t, addr, bn), an, bn)
		wg.Go(func() { ps[i].run(stop, 1_000_000) })
	}
	for _, p := range ps {
		<-p.first
	}
	return func() []int64 {
		t.Helper()
		close(stop)
		wg.Wait()
		rounds := make([]int64, n)
		for i, p := range ps {
			if p.err != nil {
				t.Errorf("pair %d: %v", i, p.err)
			}
			rounds[i] = p.rounds.Load()
		}
		return rounds
	}
}

// heapWatch samples the test process's HeapInuse (the server runs in
// it) until stopped, and returns the largest sample.
func heapWatch() (stopWatch func() uint64) {
	stop := make(chan struct{})
	peak := make(chan uint64)
	go func() {
		var ms runtime.MemStats
		var highest uint64
		tick := time.NewTicker(50 * time.Millisecond)
		defer tick.Stop()
		for {
			runtime.ReadMemStats(&ms)
			highest = max(highest, ms.HeapInuse)
			select {
			case <-stop:
				peak <- highest
				return
			case <-tick.C:
			}
		}
	}()
	return func() uint64 {
		close(stop)
		return <-peak
	}
}

// readToClose reads and discards everything until the server closes the
// connection, and fails if it does not within the reply timeout.
func readToClose(t testing.TB, w *wire) int64 {
	t.Helper()
	_ = w.conn.SetReadDeadline(time.Now().Add(replyTimeout))
	n, err := io.Copy(io.Discard, w.r)
	if err != nil && !isReset(err) {
		t.Fatalf("after %d bytes: %v; want the connection closed", n, err)
	}
	var ne net.Error
	if errors.As(err, &ne) && ne.Timeout() {
		t.Fatalf("after %d bytes: timed out; want the connection closed", n)
	}
	return n
}

// serverStarter starts a server like startServer, on one of the links.
type serverStarter func(t testing.TB, edit func(*chat.Config)) (*chat.Server, string)

// eachLink runs test once for each way the server carries connections:
// its event loops (the default for TCP on Linux) and a goroutine pair per
// connection (NoEventLoop, also what TLS uses). Slow consumers, timeouts
// and limits are enforced separately in each.
func eachLink(t *testing.T, parallel bool, test func(t *testing.T, start serverStarter)) {
	t.Helper()
	if parallel {
		t.Parallel()
	}
	// Three loops, where the default here is one, so that connections on
	// different loops hand each other messages (the core tests cover one).
	for _, link := range []struct {
		name        string
		noEventLoop bool
		eventLoops  int
	}{{"eventloops", false, 3}, {"goroutines", true, 0}} {
		t.Run(link.name, func(t *testing.T) {
			if parallel {
				t.Parallel()
			}
			test(t, func(t testing.TB, edit func(*chat.Config)) (*chat.Server, string) {
				t.Helper()
				return startServer(t, func(c *chat.Config) {
					c.NoEventLoop, c.EventLoops = link.noEventLoop, link.eventLoops
					if edit != nil {
						edit(c)
					}
				})
			})
		})
	}
}

// pacedReader reads at most chunk bytes at a time and pauses gap after
// each read: a client that reads slowly but never stops.
type pacedReader struct {
	r     io.Reader
	chunk int
	gap   time.Duration
}

func (p pacedReader) Read(b []byte) (int, error) {
	n, err := p.r.Read(b[:min(len(b), p.chunk)])
	time.Sleep(p.gap)
	return n, err
}
