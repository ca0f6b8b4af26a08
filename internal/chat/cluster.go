package chat

import (
	"errors"
	"sync/atomic"
	"time"
)

// Cluster mode: several servers share one set of users. A server keeps
// its own users itself (a SEND between two of them never leaves the
// process) and asks its Cluster for what spans servers: claiming and
// releasing names, the list of everyone, and messages to users of other
// servers. Package natscluster implements it over NATS. A single server
// has no Cluster.

// Domain outcomes of a Cluster; login and send turn them into replies.
var (
	ErrInUse = errors.New("chat: name in use")         // IN-USE
	ErrFull  = errors.New("chat: no room for a login") // BUSY: the limit is reached, or the cluster cannot admit now
)

// Claim is a user's hold on a name across the cluster, from its login to
// its release.
type Claim struct {
	Name string
	// Seq is unique per login and orders logins: LIST follows it.
	Seq uint64
	// Epoch is the lease epoch the claim was made under; the claim is
	// only good while the server's lease is of that epoch.
	Epoch uint64
}

// Cluster connects a server to the other servers of its cluster.
type Cluster interface {
	// Attach is called once, by NewServer, before anything else. From
	// then on the cluster delivers to this server's users and evicts them
	// through m, and keeps lease extended while it can vouch for their
	// claims.
	Attach(m Members, lease *Lease)
	// Claim claims name for a user of this server. The name is checked
	// before the limit: ErrInUse wins over ErrFull.
	Claim(name string) (Claim, error)
	// Release gives up a claim. Every message its user sent before is
	// delivered or dropped before the name is free again for anyone.
	Release(c Claim)
	// List appends every logged-in user's name to dst, in login order.
	List(dst []string) ([]string, error)
	// Forward hands msg from the user named from to the user named to on
	// another server, and tells done, once, with id, the outcome.
	// Messages from one sender to one recipient arrive in call order. It
	// may block while it looks the recipient up; msg is only read during
	// the call. The message may wait for Flush before it leaves.
	Forward(from string, to, msg []byte, done Forwarded, id uint64)
	// TryForward is Forward that never blocks: where Forward would wait
	// (the recipient must be looked up first), it does nothing and
	// returns false, and the caller calls Forward from where it may wait.
	TryForward(from string, to, msg []byte, done Forwarded, id uint64) bool
	// Flush sends what was forwarded so far. Forwards between two calls
	// may share one message to their server; a forward not flushed leaves
	// anyway, later.
	Flush()
}

// Members is this server's users as its cluster reaches them.
type Members interface {
	// Deliver queues lines, count "DELIVERY from msg" lines, all at once
	// or none, on the user logged in here as to with the claim seq claim.
	// It reports whether it did; it never blocks.
	Deliver(to []byte, claim uint64, lines []byte, count int) bool
	// EvictAll ends every user's connection: their claims can no longer
	// be vouched for. What is queued for them is still written.
	EvictAll()
}

// Forwarded is told the outcome of each message a session forwarded,
// one or more at a time (the outcomes a frame brought back at once);
// outcomes is only read during the call.
type Forwarded interface {
	Forwarded(outcomes ...ForwardOutcome)
}

// ForwardOutcome is the outcome of the forward with id ID.
type ForwardOutcome struct {
	ID      uint64
	Outcome Outcome
}

// Outcome is what became of a forwarded message.
type Outcome uint8

// The outcomes of a forwarded message.
const (
	Delivered    Outcome = iota // the DELIVERY is queued on the recipient's connection: SEND-OK
	NotDelivered                // it never will be: BAD-DEST-USER
	// Unknown: the recipient's server was lost before it answered, so
	// the message may or may not have been queued there. Neither reply
	// would be true: the sender's connection ends without one.
	Unknown
)

// Lease is how long this server may still act for its users' claims: take
// and deliver messages for them. The cluster extends it while NATS
// confirms the server's membership, to a moment before any other server
// could take those names. A DELIVERY is only queued while the lease is
// valid, checked as it is queued, so a server that was paused or cut off
// queues nothing once its lease may have run out, even before it notices.
type Lease struct {
	base  time.Time // the origin of leaseState.until, on the monotonic clock
	state atomic.Pointer[leaseState]
}

type leaseState struct {
	epoch uint64
	until time.Duration // since base
}

// NewLease returns a lease that is not valid until it is extended.
func NewLease() *Lease {
	l := &Lease{base: time.Now()}
	l.state.Store(&leaseState{})
	return l
}

// Extend makes the lease valid until the given time, in epoch. The time
// must come from time.Now (it carries the monotonic clock).
func (l *Lease) Extend(epoch uint64, until time.Time) {
	l.state.Store(&leaseState{epoch: epoch, until: until.Sub(l.base)})
}

// Revoke ends the lease at once.
func (l *Lease) Revoke() {
	l.state.Store(&leaseState{})
}

// Valid reports whether the lease is valid now. A nil lease (a single
// server) always is.
func (l *Lease) Valid() bool {
	return l == nil || time.Since(l.base) < l.state.Load().until
}

// Of reports whether the lease is of epoch, valid or not: a cheap check,
// with no clock read, for code whose every effect is checked with Valid
// or Holds when it happens.
func (l *Lease) Of(epoch uint64) bool {
	return l == nil || l.state.Load().epoch == epoch
}

// Holds reports whether the lease is valid now and of epoch.
func (l *Lease) Holds(epoch uint64) bool {
	if l == nil {
		return true
	}
	st := l.state.Load()
	return st.epoch == epoch && time.Since(l.base) < st.until
}
