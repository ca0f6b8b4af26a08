// Package hub is where logged-in users meet: unique names, the user limit,
// the login-ordered list and delivery. Local is the in-memory hub of a
// single server; package natshub is the same contract across servers.
//
// A server always keeps its own users in a Local (Hub.Here), so that a
// SEND between two users of one server is a map lookup and never leaves
// the process. Hub.Send is only for users that Here does not hold.
package hub

import "errors"

// Domain outcomes; exactly one function in package chat turns them into
// wire replies.
var (
	ErrInUse  = errors.New("hub: name in use")  // IN-USE
	ErrFull   = errors.New("hub: no room")      // BUSY: the limit is reached, or the hub cannot admit now
	ErrNoUser = errors.New("hub: no such user") // BAD-DEST-USER
)

// Inbox is a logged-in connection as the hub sees it.
type Inbox interface {
	// Deliver queues "DELIVERY from msg" without blocking. It returns
	// false if the connection is gone or its queue is over its cap (and
	// then the connection ends itself as a slow consumer).
	Deliver(from string, msg []byte) bool
	// Evict ends the connection because the hub can no longer vouch for
	// its name (a cluster node cut off from the others).
	Evict()
}

// Hub is the set of logged-in users as one server sees it.
type Hub interface {
	// Join claims name for in. The name is checked before the limit:
	// ErrInUse wins over ErrFull.
	Join(name string, in Inbox) error
	// Leave frees name if in still holds it. The name is free again for
	// everybody when Leave returns.
	Leave(name string, in Inbox)
	// List appends every logged-in name to dst, in login order.
	List(dst []string) ([]string, error)
	// Here holds the users logged in on this server.
	Here() *Local
	// Send hands msg from the user named from to the user named to, and
	// calls done exactly once: nil once the DELIVERY is queued on the
	// recipient's connection, ErrNoUser otherwise. Sends from one sender
	// to one recipient arrive in call order. done may run before Send
	// returns, or later on another goroutine. Send may block while too
	// many of from's sends are in flight. msg is only read during the
	// call: the caller may reuse it when Send returns.
	Send(from, to string, msg []byte, done func(error))
	// Close releases the hub's resources.
	Close() error
}
