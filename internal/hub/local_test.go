package hub_test

import (
	"testing"

	"chatserver/internal/hub"
	"chatserver/internal/hub/hubtest"
)

func TestLocalContract(t *testing.T) {
	hubtest.Run(t, func(t *testing.T, nodes, maxUsers int) []hub.Hub {
		return []hub.Hub{hub.NewLocal(maxUsers)}
	}, 1)
}

func TestLookupDoesNotAllocate(t *testing.T) {
	h := hub.NewLocal(4)
	in := hubtest.NewInbox()
	if err := h.Join("ann", in); err != nil {
		t.Fatal(err)
	}
	name := []byte("ann")
	if n := testing.AllocsPerRun(100, func() {
		if h.Lookup(name) != in {
			t.Fatal("lookup failed")
		}
	}); n != 0 {
		t.Fatalf("Lookup allocates %v times", n)
	}
}
