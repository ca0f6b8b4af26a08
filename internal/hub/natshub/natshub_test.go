package natshub_test

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"go.uber.org/goleak"

	"chatserver/internal/hub"
	"chatserver/internal/hub/hubtest"
	"chatserver/internal/hub/natshub"
	"chatserver/internal/natstest"
)

func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m)
}

func newHub(t *testing.T, url string, cfg natshub.Config) *natshub.Hub {
	t.Helper()
	nc := natstest.Connect(t, url)
	if cfg.MaxMessageBytes == 0 {
		cfg.MaxMessageBytes = 1 << 20
	}
	h, err := natshub.New(context.Background(), nc, cfg)
	if err != nil {
		t.Fatalf("natshub.New: %v", err)
	}
	t.Cleanup(func() { h.Close() })
	return h
}

func TestContract(t *testing.T) {
	for _, nodes := range []int{1, 2} {
		t.Run(map[int]string{1: "OneNode", 2: "TwoNodes"}[nodes], func(t *testing.T) {
			hubtest.Run(t, func(t *testing.T, n, maxUsers int) []hub.Hub {
				ns := natstest.Run(t)
				var hs []hub.Hub
				for range min(n, nodes) {
					hs = append(hs, newHub(t, ns.ClientURL(), natshub.Config{MaxUsers: maxUsers}))
				}
				return hs
			}, nodes)
		})
	}
}

func TestStartupChecks(t *testing.T) {
	ns := natstest.Run(t)
	nc := natstest.Connect(t, ns.ClientURL())
	ctx := context.Background()
	_, err := natshub.New(ctx, nc, natshub.Config{MaxUsers: 4, MaxMessageBytes: 8 << 20})
	if err == nil || !strings.Contains(err.Error(), "max payload") {
		t.Fatalf("payload check: %v", err)
	}
	h := newHub(t, ns.ClientURL(), natshub.Config{MaxUsers: 4})
	_ = h
	_, err = natshub.New(ctx, nc, natshub.Config{MaxUsers: 5, MaxMessageBytes: 1024})
	if err == nil || !strings.Contains(err.Error(), "max users 5 differs from the cluster's 4") {
		t.Fatalf("limit check: %v", err)
	}
}

func TestNoJetStream(t *testing.T) {
	ns := natstest.RunWithoutJetStream(t)
	nc := natstest.Connect(t, ns.ClientURL())
	_, err := natshub.New(context.Background(), nc, natshub.Config{MaxUsers: 4, MaxMessageBytes: 1024})
	if err == nil || !strings.Contains(err.Error(), "JetStream is not enabled") {
		t.Fatalf("New without JetStream: %v", err)
	}
}

// TestCrashFreesNames: a node that vanishes without logging out (its
// connection closed, its hub never closed) has its names freed by the
// others within 5 s.
func TestCrashFreesNames(t *testing.T) {
	ns := natstest.Run(t)
	survivor := newHub(t, ns.ClientURL(), natshub.Config{MaxUsers: 4})
	nc, err := nats.Connect(ns.ClientURL(), nats.NoReconnect())
	if err != nil {
		t.Fatal(err)
	}
	doomed, err := natshub.New(context.Background(), nc, natshub.Config{MaxUsers: 4, MaxMessageBytes: 1024})
	if err != nil {
		t.Fatal(err)
	}
	defer doomed.Close()
	if err := doomed.Join("ann", hubtest.NewInbox()); err != nil {
		t.Fatal(err)
	}
	nc.Close() // the crash
	start := time.Now()
	for {
		err := survivor.Join("ann", hubtest.NewInbox())
		if err == nil {
			break
		}
		if !errors.Is(err, hub.ErrInUse) || time.Since(start) > 5*time.Second {
			t.Fatalf("after %v: Join = %v", time.Since(start), err)
		}
		time.Sleep(50 * time.Millisecond)
	}
	t.Logf("name free %v after the crash", time.Since(start).Round(time.Millisecond))
}

// TestFence: a node cut off from NATS evicts its users and refuses
// logins; the others take the names; after Heal it rejoins on its own.
func TestFence(t *testing.T) {
	ns := natstest.Run(t)
	proxy := natstest.NewProxy(t, ns.Addr().String())
	other := newHub(t, ns.ClientURL(), natshub.Config{MaxUsers: 4})
	cut := newHub(t, proxy.URL(), natshub.Config{MaxUsers: 4})
	ann := hubtest.NewInbox()
	if err := cut.Join("ann", ann); err != nil {
		t.Fatal(err)
	}
	proxy.Cut()
	waitFor(t, 5*time.Second, "eviction", ann.Evicted)
	cut.Leave("ann", ann)
	if err := cut.Join("bob", hubtest.NewInbox()); !errors.Is(err, hub.ErrFull) {
		t.Fatalf("Join while cut off = %v, want ErrFull", err)
	}
	waitFor(t, 5*time.Second, "ann free on the other node", func() bool {
		return other.Join("ann", hubtest.NewInbox()) == nil
	})
	proxy.Heal()
	waitFor(t, 10*time.Second, "rejoin", func() bool {
		return cut.Join("cid", hubtest.NewInbox()) == nil
	})
	got, err := other.List(nil)
	if err != nil || !slices.Equal(got, []string{"ann", "cid"}) {
		t.Fatalf("List = %q, %v", got, err)
	}
	if s := cut.Stats(); s.Fences != 1 || s.Fenced {
		t.Fatalf("stats %+v", s)
	}
}

func waitFor(t *testing.T, limit time.Duration, what string, ok func() bool) {
	t.Helper()
	deadline := time.Now().Add(limit)
	for !ok() {
		if time.Now().After(deadline) {
			t.Fatalf("no %s within %v", what, limit)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// TestListUnderChurn: while users come and go on two nodes, List never
// shows a name twice or more names than the limit.
func TestListUnderChurn(t *testing.T) {
	ns := natstest.Run(t)
	const max = 8
	hs := []*natshub.Hub{
		newHub(t, ns.ClientURL(), natshub.Config{MaxUsers: max}),
		newHub(t, ns.ClientURL(), natshub.Config{MaxUsers: max}),
	}
	stop := make(chan struct{})
	var wg sync.WaitGroup
	for i := range 6 {
		wg.Go(func() {
			h := hs[i%2]
			for j := 0; ; j++ {
				select {
				case <-stop:
					return
				default:
				}
				name := fmt.Sprint("u", (i+j)%10)
				in := hubtest.NewInbox()
				if h.Join(name, in) == nil {
					h.Leave(name, in)
				}
			}
		})
	}
	defer func() {
		close(stop)
		wg.Wait()
	}()
	for range 200 {
		got, err := hs[0].List(nil)
		if err != nil {
			t.Fatal(err)
		}
		if len(got) > max || len(slices.Compact(slices.Sorted(slices.Values(got)))) != len(got) {
			t.Fatalf("List = %q: over the limit or a name twice", got)
		}
	}
}
