package chat

import (
	"runtime/debug"
	"runtime/metrics"
	"time"
)

const (
	// quietCheck is how often the server looks whether it went quiet.
	quietCheck = time.Second
	// returnMemoryAfter is how much memory the heap must hold beyond its
	// live objects (garbage not yet collected, and free pages the runtime
	// keeps) for a quiet server to return it to the system.
	returnMemoryAfter = 1 << 20
)

// returnMemoryWhenQuiet returns free memory to the system each time the
// server goes quiet holding at least returnMemoryAfter of it, until
// Shutdown or Close. Left to itself the runtime would take minutes: the
// collector runs as the heap grows, and a quiet server's does not, so the
// buffers busy connections gave back and the garbage of a wave of logins
// would stay counted against the process. A server that is never quiet
// for a whole quietCheck is left to the runtime.
func (srv *Server) returnMemoryWhenQuiet() {
	samples := []metrics.Sample{
		{Name: "/memory/classes/heap/objects:bytes"}, // live and dead objects
		{Name: "/gc/heap/live:bytes"},                // live, as of the last collection
		{Name: "/memory/classes/heap/free:bytes"},    // free, not yet returned
	}
	t := time.NewTicker(quietCheck)
	defer t.Stop()
	lastActivity := srv.activity()
	for {
		select {
		case <-srv.done:
			return
		case <-t.C:
		}
		activity := srv.activity()
		quiet := activity == lastActivity
		lastActivity = activity
		if !quiet {
			continue
		}
		metrics.Read(samples)
		objects, live, free := samples[0].Value.Uint64(), samples[1].Value.Uint64(), samples[2].Value.Uint64()
		if objects-min(live, objects)+free >= returnMemoryAfter {
			debug.FreeOSMemory()
		}
	}
}

// activity is a count that moves whenever the server does anything for a
// client: reads its bytes, queues a reply or a DELIVERY.
func (srv *Server) activity() uint64 {
	n := srv.counters.bytesIn.Load()
	for i := range srv.counters.replies {
		n += srv.counters.replies[i].Load()
	}
	return n
}
