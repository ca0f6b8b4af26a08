package chat

import "testing"

// TestHandOver checks that a batch handed to an outbox is queued whole and
// in order: taken over when nothing is queued ahead of it, copied behind
// what is, and refused whole when it would pass the limit.
func TestHandOver(t *testing.T) {
	o := newOutbox(64)
	first := append(make([]byte, 0, 32), "DELIVERY a 1\n"...)
	res, next := o.handOver(first, nil)
	if res != pushed || len(next) != 0 {
		t.Fatalf("handOver to an empty queue = %v, %q; want pushed and an empty buffer", res, next)
	}
	if &o.pending[0] != &first[0] {
		t.Fatal("a batch for an empty queue was copied, not taken over")
	}
	res, next = o.handOver(append(next, "DELIVERY b 2\n"...), nil)
	if res != pushed || len(next) != 0 {
		t.Fatalf("handOver behind a queued batch = %v, %q; want pushed and an empty buffer", res, next)
	}
	if res, _ = o.handOver(make([]byte, 64), nil); res != overflow {
		t.Fatalf("handOver past the limit = %v, want overflow", res)
	}
	batch, _ := o.take(nil)
	if got, want := string(batch), "DELIVERY a 1\nDELIVERY b 2\n"; got != want {
		t.Fatalf("queued %q, want %q", got, want)
	}
}
