package chat

import (
	"sync/atomic"

	"chatserver/internal/protocol"
)

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
	ReasonFenced                            // cluster mode: this server was cut off from NATS too long
	ReasonSendUnknown                       // cluster mode: a SEND's recipient's server was lost before it answered
	ReasonIPLimit                           // MaxConnsPerIP connections of its network were already open
	ReasonFlood                             // it kept sending far above the request rate for long
	ReasonTLSHandshake                      // its TLS handshake failed (not for a timeout: that is ReasonLoginTimeout)
	NumCloseReasons
)

var reasonNames = [NumCloseReasons]string{
	ReasonClientClosed:   "client_closed",
	ReasonReset:          "reset",
	ReasonSlowConsumer:   "slow_consumer",
	ReasonLoginTimeout:   "login_timeout",
	ReasonServerShutdown: "server_shutdown",
	ReasonConnLimit:      "conn_limit",
	ReasonInternalError:  "internal_error",
	ReasonFenced:         "fenced",
	ReasonSendUnknown:    "send_unknown",
	ReasonIPLimit:        "ip_limit",
	ReasonFlood:          "flood",
	ReasonTLSHandshake:   "tls_handshake",
}

// drains reports whether a connection ending for this reason still gets
// what is queued for it, so that no message acknowledged with SEND-OK is
// lost to a recipient that reads. A connection that broke, cannot keep up,
// or hit a bug does not.
func (r CloseReason) drains() bool {
	switch r {
	case ReasonReset, ReasonSlowConsumer, ReasonInternalError, ReasonTLSHandshake:
		return false
	}
	return true
}

// String returns the reason's name as it appears in logs and metrics.
func (r CloseReason) String() string {
	if r >= NumCloseReasons {
		return "unknown"
	}
	return reasonNames[r]
}

// MarshalText returns the reason's name, so JSON logs (slog's
// JSONHandler) show "slow_consumer" rather than a number.
func (r CloseReason) MarshalText() ([]byte, error) {
	return []byte(r.String()), nil
}

// LoginResult is the outcome of a HELLO-FROM sent before login.
type LoginResult uint8

// The outcomes of a login attempt.
const (
	LoginOK      LoginResult = iota // HELLO
	LoginInUse                      // IN-USE
	LoginBusy                       // BUSY
	LoginBadName                    // BAD-RQST-BODY: the name breaks the rules
	LoginIPLimit                    // BUSY: MaxUsersPerIP users of its network are logged in
	NumLoginResults
)

var loginResultNames = [NumLoginResults]string{
	LoginOK:      "ok",
	LoginInUse:   "in_use",
	LoginBusy:    "busy",
	LoginBadName: "bad_name",
	LoginIPLimit: "ip_limit",
}

// String returns the result's name as it appears in metrics.
func (r LoginResult) String() string {
	if r >= NumLoginResults {
		return "unknown"
	}
	return loginResultNames[r]
}

// MarshalText returns the result's name, as for CloseReason.
func (r LoginResult) MarshalText() ([]byte, error) {
	return []byte(r.String()), nil
}

// Transport is what carries a connection.
type Transport uint8

// The transports.
const (
	TransportTCP Transport = iota // plain TCP
	TransportTLS                  // TLS over TCP
	TransportWS                   // a WebSocket (package web), plain or over TLS
	TransportBot                  // none: a built-in user's session (bots.go)
	NumTransports
)

var transportNames = [NumTransports]string{TransportTCP: "tcp", TransportTLS: "tls", TransportWS: "ws", TransportBot: "bot"}

// String returns the transport's name as it appears in logs and metrics.
func (t Transport) String() string {
	if t >= NumTransports {
		return "unknown"
	}
	return transportNames[t]
}

// counters are the server's running totals, shared by all connections.
// They are atomics, and the per-message ones are added to once per read
// batch from a session's tally, so the hot path takes no lock and touches
// no shared cache line per message.
type counters struct {
	connections [NumTransports]atomic.Int64 // open now, by transport
	users       atomic.Int64                // logged in now
	closed      [NumCloseReasons]atomic.Uint64
	logins      [NumLoginResults]atomic.Uint64
	replies     [protocol.NumReplyKinds]atomic.Uint64
	delivered   atomic.Uint64 // SEND-OKs: messages queued for a recipient
	delayed     atomic.Uint64 // reads held back by flood control
	bytesIn     atomic.Uint64
	bytesOut    atomic.Uint64
}

// tally is one session's counts since its last flush; only its read loop
// touches it. It is flushed at least once per chunk read, so 32 bits
// are plenty, and every session carries one.
type tally struct {
	replies   [protocol.NumReplyKinds]uint32
	delivered uint32
	bytesIn   uint32
}

// add moves t into c and zeroes t.
func (c *counters) add(t *tally) {
	for k, n := range t.replies {
		if n > 0 {
			c.replies[k].Add(uint64(n))
		}
	}
	if t.delivered > 0 {
		c.delivered.Add(uint64(t.delivered))
	}
	if t.bytesIn > 0 {
		c.bytesIn.Add(uint64(t.bytesIn))
	}
	*t = tally{}
}

// Stats is a snapshot of the server's counters.
type Stats struct {
	Connections   int64                          // connections open now
	ConnectionsBy [NumTransports]int64           // connections open now, by transport
	Users         int64                          // users logged in now
	Closed        [NumCloseReasons]uint64        // connections ended, by reason
	Logins        [NumLoginResults]uint64        // login attempts, by result
	Replies       [protocol.NumReplyKinds]uint64 // lines sent, by kind (DELIVERY included)
	Delivered     uint64                         // messages queued for a recipient
	Delayed       uint64                         // times flood control held back reading a connection
	BytesReceived uint64                         // bytes read from clients
	BytesSent     uint64                         // bytes written to clients
}

func (c *counters) snapshot() Stats {
	s := Stats{

		Users:         c.users.Load(),
		Delivered:     c.delivered.Load(),
		Delayed:       c.delayed.Load(),
		BytesReceived: c.bytesIn.Load(),
		BytesSent:     c.bytesOut.Load(),
	}
	for i := range c.connections {
		s.ConnectionsBy[i] = c.connections[i].Load()
		s.Connections += s.ConnectionsBy[i]
	}
	for i := range c.closed {
		s.Closed[i] = c.closed[i].Load()
	}
	for i := range c.logins {
		s.Logins[i] = c.logins[i].Load()
	}
	for i := range c.replies {
		s.Replies[i] = c.replies[i].Load()
	}
	return s
}
