package chat

import (
	"testing"
	"unsafe"
)

// TestIdleConnectionFitsItsSizeClasses: an idle logged-in user on an event
// loop is a session, a pollConn and an outbox. Each is allocated from one
// of the runtime's size classes, and one more field can push it into the
// next class, which every idle user then pays (the idle memory per user
// is a documented figure, bench/conns.sh). A change that needs a bigger
// class must say so here and in docs/benchmarks.md.
func TestIdleConnectionFitsItsSizeClasses(t *testing.T) {
	for _, tc := range []struct {
		name       string
		size, most uintptr
	}{
		{"session", unsafe.Sizeof(session{}), 416},
		{"pollConn", unsafe.Sizeof(pollConn{}), 128},
		{"outbox", unsafe.Sizeof(outbox{}), 64},
	} {
		if tc.size > tc.most {
			t.Errorf("%s is %d bytes, more than its size class of %d", tc.name, tc.size, tc.most)
		}
	}
}
