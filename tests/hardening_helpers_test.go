package tests

import (
	"fmt"
	"io"
	"runtime"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"chatserver/internal/chat"
	"chatserver/internal/chat/chattest"
)

// Helpers for the hardening and soak tests. The harness's wire methods
// fail the test, which only the test's own goroutine may do; the ...Err
// methods here return errors instead, for use from other goroutines.

// listNames sends LIST and returns the names in the reply. The
// connection must not be receiving deliveries.
func listNames(w *chattest.Wire) []string {
	w.T.Helper()
	return strings.Split(list(w), ",")
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
	deadline := time.Now().Add(chattest.ReplyTimeout)
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
	a, b   *chattest.Wire
	an, bn string // their names
	rounds atomic.Int64
	first  chan struct{}
	err    error // set before run returns
}

func newPingPong(a, b *chattest.Wire, an, bn string) *pingPong {
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
		if err := p.a.SendErr("SEND " + p.bn + " " + msg + "\n"); err != nil {
			p.err = fmt.Errorf("%s: %w", p.an, err)
			return
		}
		if err := p.a.ExpectErr("SEND-OK"); err != nil {
			p.err = fmt.Errorf("%s round %d: %w", p.an, i, err)
			return
		}
		if err := p.b.ExpectErr("DELIVERY " + p.an + " " + msg); err != nil {
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
		ps[i] = newPingPong(chattest.LoggedIn(t, addr, an), chattest.LoggedIn(t, addr, bn), an, bn)
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

// serverStarter starts a server like startServer, on one of the links.
type serverStarter func(t testing.TB, edit func(*chat.Config)) (*chat.Server, string)

// eachLink runs test once for each engine (chattest.Engines): slow
// consumers, timeouts and limits are enforced separately in each.
func eachLink(t *testing.T, parallel bool, test func(t *testing.T, start serverStarter)) {
	t.Helper()
	chattest.EachEngine(t, parallel, func(t *testing.T, e chattest.Engine) {
		test(t, func(t testing.TB, edit func(*chat.Config)) (*chat.Server, string) {
			t.Helper()
			return startServer(t, func(c *chat.Config) {
				e.Set(c)
				if edit != nil {
					edit(c)
				}
			})
		})
	})
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
