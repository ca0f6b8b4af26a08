// Package hubtest is the contract every hub.Hub keeps, as a test suite
// that runs against each implementation.
package hubtest

import (
	"errors"
	"fmt"
	"slices"
	"sync"
	"testing"
	"time"

	"chatserver/internal/hub"
)

// NewCluster returns nodes hubs that share one set of users with at most
// maxUsers of them; the hubs are closed by t.Cleanup.
type NewCluster func(t *testing.T, nodes, maxUsers int) []hub.Hub

// Inbox is a hub.Inbox that records what it is given.
type Inbox struct {
	mu      sync.Mutex
	got     []string // "from msg"
	evicted bool
	gone    bool
	arrived chan struct{} // one token per delivery, best effort
}

// NewInbox returns an empty inbox.
func NewInbox() *Inbox { return &Inbox{arrived: make(chan struct{}, 1<<16)} }

// Deliver records a delivery.
func (in *Inbox) Deliver(from string, msg []byte) bool {
	in.mu.Lock()
	defer in.mu.Unlock()
	if in.gone {
		return false
	}
	in.got = append(in.got, from+" "+string(msg))
	select {
	case in.arrived <- struct{}{}:
	default:
	}
	return true
}

// Evict records an eviction.
func (in *Inbox) Evict() {
	in.mu.Lock()
	in.evicted, in.gone = true, true
	in.mu.Unlock()
}

// Got returns the deliveries so far.
func (in *Inbox) Got() []string {
	in.mu.Lock()
	defer in.mu.Unlock()
	return slices.Clone(in.got)
}

// Evicted reports whether Evict was called.
func (in *Inbox) Evicted() bool {
	in.mu.Lock()
	defer in.mu.Unlock()
	return in.evicted
}

// Run runs the contract. maxNodes is how many hubs newCluster can make
// (1 for an in-memory hub); the cross-node cases run when it is 2 or more.
func Run(t *testing.T, newCluster NewCluster, maxNodes int) {
	nodes := min(maxNodes, 2)
	t.Run("InUseBeforeBusy", func(t *testing.T) {
		hs := newCluster(t, nodes, 2)
		first, last := hs[0], hs[len(hs)-1]
		mustJoin(t, first, "ann")
		mustJoin(t, last, "bob")
		if err := last.Join("ann", NewInbox()); !errors.Is(err, hub.ErrInUse) {
			t.Fatalf("Join(taken name, full) = %v, want ErrInUse", err)
		}
		if err := first.Join("cid", NewInbox()); !errors.Is(err, hub.ErrFull) {
			t.Fatalf("Join(free name, full) = %v, want ErrFull", err)
		}
	})
	t.Run("ListInLoginOrder", func(t *testing.T) {
		hs := newCluster(t, nodes, 16)
		var want []string
		for i, name := range []string{"zed", "amy", "a.b", "naïve", "x*y", "q>"} {
			mustJoin(t, hs[i%len(hs)], name)
			want = append(want, name)
		}
		for i, h := range hs {
			got, err := h.List(nil)
			if err != nil || !slices.Equal(got, want) {
				t.Fatalf("node %d: List = %q, %v; want %q", i, got, err, want)
			}
		}
	})
	t.Run("LeaveFreesAtOnce", func(t *testing.T) {
		hs := newCluster(t, nodes, 1)
		first, last := hs[0], hs[len(hs)-1]
		in := mustJoin(t, first, "ann")
		first.Leave("ann", in)
		in2 := mustJoin(t, last, "ann")
		got, _ := first.List(nil)
		if !slices.Equal(got, []string{"ann"}) {
			t.Fatalf("List = %q", got)
		}
		first.Leave("ann", in) // not its name any more: a no-op
		if err := first.Join("ann", NewInbox()); !errors.Is(err, hub.ErrInUse) {
			t.Fatalf("Join after a stale Leave = %v, want ErrInUse", err)
		}
		last.Leave("ann", in2)
	})
	t.Run("Send", func(t *testing.T) {
		hs := newCluster(t, nodes, 16)
		first, last := hs[0], hs[len(hs)-1]
		mustJoin(t, first, "ann")
		bob := mustJoin(t, last, "bob")
		if err := send(first, "ann", "bob", "hi there"); err != nil {
			t.Fatalf("Send to bob = %v", err)
		}
		if got := bob.Got(); !slices.Equal(got, []string{"ann hi there"}) {
			t.Fatalf("bob got %q", got)
		}
		if err := send(first, "ann", "nobody", "hi"); !errors.Is(err, hub.ErrNoUser) {
			t.Fatalf("Send to nobody = %v, want ErrNoUser", err)
		}
		last.Leave("bob", bob)
		if err := send(first, "ann", "bob", "hi"); !errors.Is(err, hub.ErrNoUser) {
			t.Fatalf("Send after Leave = %v, want ErrNoUser", err)
		}
	})
	t.Run("RacingJoinsOneName", func(t *testing.T) {
		hs := newCluster(t, nodes, 16)
		errs := race(20, func(i int) error { return hs[i%len(hs)].Join("x", NewInbox()) })
		if ok, inUse := count(errs, nil), count(errs, hub.ErrInUse); ok != 1 || inUse != 19 {
			t.Fatalf("20 racing Joins: %d ok, %d IN-USE; want 1 and 19 (%v)", ok, inUse, errs)
		}
	})
	t.Run("RacingJoinsLimit", func(t *testing.T) {
		hs := newCluster(t, nodes, 16)
		errs := race(40, func(i int) error { return hs[i%len(hs)].Join(fmt.Sprint("u", i), NewInbox()) })
		if ok, full := count(errs, nil), count(errs, hub.ErrFull); ok != 16 || full != 24 {
			t.Fatalf("40 racing Joins: %d ok, %d BUSY; want 16 and 24 (%v)", ok, full, errs)
		}
		for i, h := range hs {
			if got, err := h.List(nil); err != nil || len(got) != 16 {
				t.Fatalf("node %d: List = %q, %v; want 16 names", i, got, err)
			}
		}
	})
	t.Run("PipelinedSendsInOrder", func(t *testing.T) {
		hs := newCluster(t, nodes, 16)
		first, last := hs[0], hs[len(hs)-1]
		mustJoin(t, first, "ann")
		bob := mustJoin(t, last, "bob")
		const n = 2000
		var wg sync.WaitGroup
		var mu sync.Mutex
		var failed []error
		for i := range n {
			wg.Add(1)
			first.Send("ann", "bob", fmt.Appendf(nil, "m%d", i), func(err error) {
				if err != nil {
					mu.Lock()
					failed = append(failed, err)
					mu.Unlock()
				}
				wg.Done()
			})
		}
		wg.Wait()
		if len(failed) > 0 {
			t.Fatalf("%d of %d sends failed: %v", len(failed), n, failed[0])
		}
		got := bob.Got()
		if len(got) != n {
			t.Fatalf("bob got %d messages, want %d", len(got), n)
		}
		for i, m := range got {
			if want := fmt.Sprintf("ann m%d", i); m != want {
				t.Fatalf("message %d is %q, want %q", i, m, want)
			}
		}
	})
}

func mustJoin(t *testing.T, h hub.Hub, name string) *Inbox {
	t.Helper()
	in := NewInbox()
	if err := h.Join(name, in); err != nil {
		t.Fatalf("Join(%q) = %v", name, err)
	}
	return in
}

// send sends one message and waits for its outcome.
func send(h hub.Hub, from, to, msg string) error {
	res := make(chan error, 1)
	h.Send(from, to, []byte(msg), func(err error) { res <- err })
	select {
	case err := <-res:
		return err
	case <-time.After(10 * time.Second):
		return errors.New("no outcome within 10s")
	}
}

// race runs n calls of f at once and returns their results.
func race(n int, f func(i int) error) []error {
	errs := make([]error, n)
	start := make(chan struct{})
	var wg sync.WaitGroup
	for i := range n {
		wg.Go(func() {
			<-start
			errs[i] = f(i)
		})
	}
	close(start)
	wg.Wait()
	return errs
}

func count(errs []error, target error) int {
	n := 0
	for _, err := range errs {
		if err == target || (target != nil && errors.Is(err, target)) {
			n++
		}
	}
	return n
}
