package chat

import (
	"runtime/debug"
	"time"
)

const (
	// returnMemoryAfter is how many bytes of buffers quiet connections
	// give back before the server returns its free memory to the system.
	// Left to itself the runtime would take minutes on a server gone quiet
	// after a burst: the collector runs as the heap grows, and an idle
	// server's does not, so what the busy connections held would stay
	// counted against the process.
	returnMemoryAfter = 4 << 20
	// returnMemoryDelay spaces those returns (each is a full collection):
	// at most one per delay, however many connections go quiet.
	returnMemoryDelay = time.Second
)

// releasedBuffers records that a quiet connection gave back n bytes of
// buffers. Past returnMemoryAfter, the free memory goes back to the
// system returnMemoryDelay later, off the caller's goroutine.
func (srv *Server) releasedBuffers(n int) {
	if n == 0 || srv.released.Add(int64(n)) < returnMemoryAfter {
		return
	}
	if srv.returning.CompareAndSwap(false, true) {
		srv.released.Store(0)
		time.AfterFunc(returnMemoryDelay, func() {
			srv.returning.Store(false)
			debug.FreeOSMemory()
		})
	}
}
