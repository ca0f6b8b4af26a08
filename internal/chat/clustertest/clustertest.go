// Package clustertest is the contract every chat.Cluster keeps, as a test
// suite that runs against an implementation: names and the user limit
// across nodes, LIST, forwarding, releases, and what must hold when a
// node's link fails.
package clustertest

import (
	"errors"
	"fmt"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"chatserver/internal/chat"
	"chatserver/internal/chat/chattest"
)

// Node is one server's Cluster, not yet attached, and its link to the
// others.
type Node struct {
	chat.Cluster
	// Link hurts the node's link to the others; nil if the maker cannot,
	// and then the fault cases are skipped.
	Link Link
}

// Link is what the fault cases do to a node's link.
type Link interface {
	Cut()    // drop the link and refuse it until Heal
	Heal()   // let it back
	Pause()  // hold what is sent, until Resume
	Resume() // deliver what was held
}

// NewCluster returns n nodes that share one set of users, at most
// maxUsers of them. They are closed when the test ends.
type NewCluster func(t *testing.T, n, maxUsers int) []Node

// Run runs the contract.
func Run(t *testing.T, newCluster NewCluster) {
	start := func(t *testing.T, n, maxUsers int) []*member {
		var out []*member
		for _, node := range newCluster(t, n, maxUsers) {
			m := &member{Node: node, lease: chat.NewLease(), users: map[string]*user{}}
			node.Attach(m, m.lease)
			out = append(out, m)
		}
		return out
	}
	t.Run("InUseBeforeBusy", func(t *testing.T) {
		ms := start(t, 2, 2)
		ms[0].login(t, "ann")
		ms[1].login(t, "bob")
		if _, err := ms[1].Claim("ann"); !errors.Is(err, chat.ErrInUse) {
			t.Errorf("Claim(taken name, full) = %v, want ErrInUse", err)
		}
		if _, err := ms[0].Claim("cid"); !errors.Is(err, chat.ErrFull) {
			t.Errorf("Claim(full) = %v, want ErrFull", err)
		}
	})
	t.Run("ListInLoginOrder", func(t *testing.T) {
		ms := start(t, 2, 16)
		names := []string{"c", "a", "d", "b"}
		for i, name := range names {
			ms[i%2].login(t, name)
		}
		for _, m := range ms {
			if got, err := m.List(nil); err != nil || !slices.Equal(got, names) {
				t.Errorf("List = %v, %v; want %v", got, err, names)
			}
		}
	})
	t.Run("ReleaseFreesTheNameEverywhere", func(t *testing.T) {
		ms := start(t, 2, 1)
		for range 5 {
			c := ms[0].login(t, "ann")
			ms[0].logout(c)
			c = ms[1].login(t, "ann") // at once: the place is free too
			ms[1].logout(c)
		}
	})
	t.Run("Forward", func(t *testing.T) {
		ms := start(t, 2, 16)
		ms[0].login(t, "ann")
		bob := ms[1].login(t, "bob")
		if o := ms[0].forward("ann", "bob", "hi"); o != chat.Delivered {
			t.Errorf("forward to bob = %v, want Delivered", o)
		}
		if got := ms[1].got("bob"); !slices.Equal(got, []string{"ann hi"}) {
			t.Errorf("bob got %q", got)
		}
		if o := ms[0].forward("ann", "nobody", "hi"); o != chat.NotDelivered {
			t.Errorf("forward to nobody = %v, want NotDelivered", o)
		}
		ms[1].logout(bob)
		if o := ms[0].forward("ann", "bob", "gone?"); o != chat.NotDelivered {
			t.Errorf("forward after bob left = %v, want NotDelivered", o)
		}
		ms[0].login(t, "bob") // now on the sender's own node: not forwarded to
		if o := ms[1].forward("bob", "bob", "x"); o != chat.Delivered {
			t.Errorf("forward to the new bob = %v, want Delivered", o)
		}
	})
	t.Run("TryForward", func(t *testing.T) {
		ms := start(t, 2, 16)
		ms[0].login(t, "ann")
		ms[1].login(t, "bob")
		f := newForwards(1)
		if ms[0].TryForward("ann", []byte("nobody"), []byte("x"), f, 0) {
			t.Error("TryForward to a name never looked up was made; it must be left to Forward")
		}
		// The first forward opens the channel to bob's node, the second
		// looks bob up over it: then bob's route is known.
		for _, msg := range []string{"first", "second"} {
			if o := ms[0].forward("ann", "bob", msg); o != chat.Delivered {
				t.Fatalf("forward to bob = %v, want Delivered", o)
			}
		}
		if !ms[0].TryForward("ann", []byte("bob"), []byte("third"), f, 0) {
			t.Fatal("TryForward to a known recipient was not made")
		}
		ms[0].Flush()
		if o := f.wait(t)[0]; o != chat.Delivered {
			t.Errorf("TryForward to bob = %v, want Delivered", o)
		}
		if got := ms[1].got("bob"); !slices.Equal(got, []string{"ann first", "ann second", "ann third"}) {
			t.Errorf("bob got %q", got)
		}
	})
	t.Run("UnflushedForwardLeavesAnyway", func(t *testing.T) {
		ms := start(t, 2, 16)
		ms[0].login(t, "ann")
		ms[1].login(t, "bob")
		if o := ms[0].forward("ann", "bob", "first"); o != chat.Delivered {
			t.Fatalf("forward to bob = %v, want Delivered", o)
		}
		f := newForwards(1)
		ms[0].Forward("ann", []byte("bob"), []byte("unflushed"), f, 0) // the channel is open: nothing waits
		if o := f.wait(t)[0]; o != chat.Delivered {
			t.Errorf("forward without Flush = %v, want Delivered", o)
		}
	})
	t.Run("ForwardsInOrder", func(t *testing.T) {
		const n = 10_000
		ms := start(t, 2, 16)
		ms[0].login(t, "ann")
		ms[1].login(t, "bob")
		f := newForwards(n)
		for i := range n {
			ms[0].Forward("ann", []byte("bob"), fmt.Appendf(nil, "%d", i), f, uint64(i))
		}
		ms[0].Flush()
		for i, o := range f.wait(t) {
			if o != chat.Delivered {
				t.Fatalf("forward %d = %v, want Delivered", i, o)
			}
		}
		got := ms[1].got("bob")
		for i := range n {
			if want := fmt.Sprintf("ann %d", i); i >= len(got) || got[i] != want {
				t.Fatalf("delivery %d = %q, want %q", i, got[min(i, len(got)-1)], want)
			}
		}
	})
	t.Run("RacingClaimsOfOneName", func(t *testing.T) {
		ms := start(t, 2, 16)
		if won := race(ms, slices.Repeat([]string{"same"}, 20)); won != 1 {
			t.Errorf("%d of 20 racers for one name won it, want 1", won)
		}
	})
	t.Run("RacingClaimsForPlaces", func(t *testing.T) {
		ms := start(t, 2, 16)
		names := make([]string, 40)
		for i := range names {
			names[i] = fmt.Sprintf("racer%02d", i)
		}
		if won := race(ms, names); won != 16 {
			t.Errorf("%d of 40 racers for 16 places won one", won)
		}
		for _, m := range ms {
			if got, _ := m.List(nil); len(got) != 16 {
				t.Errorf("List has %d names, want 16", len(got))
			}
		}
	})
	faults(t, start)
}

// faults are the cases that hurt a node's link.
func faults(t *testing.T, start func(t *testing.T, n, maxUsers int) []*member) {
	needLink := func(t *testing.T, ms []*member) {
		if ms[0].Link == nil {
			t.Skip("the cluster maker cannot hurt a link")
		}
	}
	t.Run("ShortCutKeepsTheNode", func(t *testing.T) {
		ms := start(t, 2, 16)
		needLink(t, ms)
		ms[0].login(t, "ann")
		ms[1].login(t, "bob")
		ms[0].Link.Cut()
		time.Sleep(time.Second) // the cut
		ms[0].Link.Heal()
		chattest.Eventually(t, "a forward across the healed link", func() bool {
			return ms[0].forward("ann", "bob", "after the cut") == chat.Delivered
		})
		if ms[0].isEvicted() {
			t.Error("a 1 s cut evicted the node's users")
		}
	})
	t.Run("LongCutFences", func(t *testing.T) {
		ms := start(t, 2, 16)
		needLink(t, ms)
		ms[0].login(t, "ann")
		ms[0].Link.Cut()
		cut := time.Now()
		chattest.Eventually(t, "the cut node to evict its users", ms[0].isEvicted)
		if d := time.Since(cut); d > 4*time.Second {
			t.Errorf("evicted %v after the cut, want within about 2.5 s", d)
		}
		if ms[0].lease.Valid() {
			t.Error("the fenced node's lease is still valid")
		}
		chattest.Eventually(t, "ann's name free on the other node", func() bool {
			_, err := ms[1].Claim("ann")
			return err == nil
		})
		if d := time.Since(cut); d > 6*time.Second {
			t.Errorf("the name was free %v after the cut, want within 5 s of the fence", d)
		}
		ms[0].Link.Heal()
		chattest.Eventually(t, "the healed node to admit logins", func() bool {
			_, err := ms[0].Claim("cid")
			return err == nil
		})
	})
	t.Run("HeldForwardIsDroppedAfterTheFence", func(t *testing.T) {
		ms := start(t, 2, 16)
		needLink(t, ms)
		ms[0].login(t, "ann")
		ms[1].login(t, "bob")
		ms[0].Link.Pause()
		f := newForwards(1)
		ms[0].Forward("ann", []byte("bob"), []byte("held"), f, 0)
		ms[0].Flush()
		chattest.Eventually(t, "the held node to fence", ms[0].isEvicted)
		chattest.Eventually(t, "ann's name free on the other node", func() bool {
			_, err := ms[1].Claim("ann")
			return err == nil
		})
		ms[0].Link.Resume()
		chattest.Eventually(t, "the node to come back", func() bool {
			_, err := ms[0].Claim("cid")
			return err == nil
		})
		if o := ms[0].forward("cid", "bob", "marker"); o != chat.Delivered {
			t.Fatalf("forward after the heal = %v, want Delivered", o)
		}
		if got := ms[1].got("bob"); !slices.Equal(got, []string{"cid marker"}) {
			t.Errorf("bob got %q, want only the marker", got)
		}
		if o := f.wait(t)[0]; o == chat.Delivered {
			t.Error("the held forward was reported Delivered")
		}
	})
	t.Run("DeliveredButUnacknowledgedIsNeverNotDelivered", func(t *testing.T) {
		ms := start(t, 2, 16)
		needLink(t, ms)
		ms[0].login(t, "ann")
		ms[1].login(t, "bob")
		if o := ms[0].forward("ann", "bob", "first"); o != chat.Delivered {
			t.Fatalf("forward to bob = %v, want Delivered", o)
		}
		// bob's node is cut off the moment it delivers, before its ack can
		// leave: the sender sends the frame again, and NATS answers those
		// copies "no responders", but the first copy was delivered.
		delivered := make(chan struct{})
		ms[1].mu.Lock()
		ms[1].onDeliver = func() {
			ms[1].Link.Cut()
			close(delivered)
		}
		ms[1].mu.Unlock()
		f := newForwards(1)
		ms[0].Forward("ann", []byte("bob"), []byte("unacknowledged"), f, 0)
		ms[0].Flush()
		o := f.wait(t)[0]
		select {
		case <-delivered:
		default:
			t.Fatalf("bob's node never delivered the forward (outcome %v)", o)
		}
		if o == chat.NotDelivered {
			t.Error("a forward that was delivered was reported NotDelivered (BAD-DEST-USER)")
		}
		ms[1].Link.Heal()
	})
	t.Run("ReleaseDuringABlip", func(t *testing.T) {
		ms := start(t, 2, 1)
		needLink(t, ms)
		c := ms[0].login(t, "ann")
		ms[0].Link.Cut()
		ms[0].logout(c)
		time.Sleep(300 * time.Millisecond) // the blip
		ms[0].Link.Heal()
		released := time.Now()
		chattest.Eventually(t, "ann's place free", func() bool {
			_, err := ms[1].Claim("bob")
			return err == nil
		})
		if d := time.Since(released); d > 5*time.Second {
			t.Errorf("the place was free %v after the release, want within 5 s", d)
		}
	})
}

// member is the suite's side of a node: its users, and what they got.
type member struct {
	Node
	lease *chat.Lease

	mu        sync.Mutex
	users     map[string]*user // guarded by mu
	evicted   bool             // guarded by mu
	onDeliver func()           // guarded by mu: called once, by the next delivery, once it is recorded
}

type user struct {
	claim uint64
	got   []string // "from msg"
}

// Deliver records deliveries to a user logged in with that claim.
func (m *member) Deliver(to []byte, claim uint64, lines []byte, count int) bool {
	m.mu.Lock()
	defer m.mu.Unlock()
	u := m.users[string(to)]
	if u == nil || u.claim != claim || !m.lease.Valid() {
		return false
	}
	got := strings.SplitAfter(string(lines), "\n")
	if got[len(got)-1] == "" {
		got = got[:len(got)-1]
	}
	if len(got) != count {
		panic(fmt.Sprintf("Deliver: %d lines, told %d", len(got), count))
	}
	for _, line := range got {
		u.got = append(u.got, strings.TrimSuffix(strings.TrimPrefix(line, "DELIVERY "), "\n"))
	}
	if hook := m.onDeliver; hook != nil {
		m.onDeliver = nil
		hook()
	}
	return true
}

// EvictAll records an eviction: the users are gone.
func (m *member) EvictAll() {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.evicted = true
	clear(m.users)
}

func (m *member) isEvicted() bool {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.evicted
}

func (m *member) login(t *testing.T, name string) chat.Claim {
	t.Helper()
	c, err := m.Claim(name)
	if err != nil {
		t.Fatalf("Claim(%s) = %v", name, err)
	}
	m.mu.Lock()
	m.users[name] = &user{claim: c.Seq}
	m.mu.Unlock()
	return c
}

func (m *member) logout(c chat.Claim) {
	m.mu.Lock()
	delete(m.users, c.Name)
	m.mu.Unlock()
	m.Release(c)
}

func (m *member) got(name string) []string {
	m.mu.Lock()
	defer m.mu.Unlock()
	if u := m.users[name]; u != nil {
		return slices.Clone(u.got)
	}
	return nil
}

// forward forwards one message and waits for its outcome.
func (m *member) forward(from, to, msg string) chat.Outcome {
	f := newForwards(1)
	m.Forward(from, []byte(to), []byte(msg), f, 0)
	m.Flush()
	return f.wait(nil)[0]
}

// forwards collects the outcomes of n forwards.
type forwards struct {
	mu       sync.Mutex
	outcomes []chat.Outcome
	told     []bool
	left     int
	done     chan struct{}
}

func newForwards(n int) *forwards {
	return &forwards{outcomes: make([]chat.Outcome, n), told: make([]bool, n), left: n, done: make(chan struct{})}
}

func (f *forwards) Forwarded(outcomes ...chat.ForwardOutcome) {
	f.mu.Lock()
	defer f.mu.Unlock()
	for _, o := range outcomes {
		if f.told[o.ID] {
			panic(fmt.Sprintf("forward %d told twice", o.ID))
		}
		f.told[o.ID], f.outcomes[o.ID] = true, o.Outcome
		if f.left--; f.left == 0 {
			close(f.done)
		}
	}
}

// waitTimeout bounds every wait: it only turns a hang into a failure.
const waitTimeout = 20 * time.Second

func (f *forwards) wait(t *testing.T) []chat.Outcome {
	select {
	case <-f.done:
	case <-time.After(waitTimeout):
		if t == nil {
			panic("forwards not answered in time")
		}
		t.Fatalf("forwards not answered within %v", waitTimeout)
	}
	return f.outcomes
}

// race claims names, each on a node in turn, all at once, and returns
// how many won.
func race(ms []*member, names []string) int {
	var wg sync.WaitGroup
	var mu sync.Mutex
	won := 0
	start := make(chan struct{})
	for i, name := range names {
		wg.Add(1)
		go func() {
			defer wg.Done()
			<-start
			if _, err := ms[i%len(ms)].Claim(name); err == nil {
				mu.Lock()
				won++
				mu.Unlock()
			}
		}()
	}
	close(start)
	wg.Wait()
	return won
}
