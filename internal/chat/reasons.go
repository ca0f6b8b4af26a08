package chat

import "sync/atomic"

// CloseReason says why a connection ended. Every connection ends with
// exactly one, which is logged once and counted in Stats.
type CloseReason uint8

// The reasons a connection can end.
const (
	ReasonClientClosed   CloseReason = iota // the client closed its side (EOF)
	ReasonReset                             // the connection was reset or broke
	ReasonSlowConsumer                      // its outbound queue overflowed or a write stalled
	ReasonLoginTimeout                      // it did not log in within LoginTimeout
	ReasonServerShutdown                    // the server is shutting down
	ReasonConnLimit                         // MaxConns connections were already open
	ReasonInternalError                     // a bug: a panic in its handler
	numCloseReasons
)

var reasonNames = [numCloseReasons]string{
	ReasonClientClosed:   "client_closed",
	ReasonReset:          "reset",
	ReasonSlowConsumer:   "slow_consumer",
	ReasonLoginTimeout:   "login_timeout",
	ReasonServerShutdown: "server_shutdown",
	ReasonConnLimit:      "conn_limit",
	ReasonInternalError:  "internal_error",
}

// String returns the reason's name as it appears in logs.
func (r CloseReason) String() string {
	if r >= numCloseReasons {
		return "unknown"
	}
	return reasonNames[r]
}

// counters are the server's running totals. They are atomics so that the
// hot path counts without locks.
type counters struct {
	connections atomic.Int64 // open now
	users       atomic.Int64 // logged in now
	closed      [numCloseReasons]atomic.Uint64
}

// Stats is a snapshot of the server's counters.
type Stats struct {
	Connections int64                  // connections open now
	Users       int64                  // users logged in now
	Closed      map[CloseReason]uint64 // connections ended, by reason
}

func (c *counters) snapshot() Stats {
	s := Stats{
		Connections: c.connections.Load(),
		Users:       c.users.Load(),
		Closed:      make(map[CloseReason]uint64, numCloseReasons),
	}
	for r := range c.closed {
		s.Closed[CloseReason(r)] = c.closed[r].Load()
	}
	return s
}
