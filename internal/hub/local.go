package hub

import "sync"

// Local is the in-memory hub: unique names, at most max of them, in login
// order. It is the whole hub of a single server, and the users of this
// server in a cluster.
type Local struct {
	max int

	mu     sync.RWMutex
	byName map[string]*entry
	first  *entry // oldest login; the entries form a list in login order
	last   *entry
}

// entry is one logged-in user. Its links are guarded by Local.mu.
type entry struct {
	name       string
	in         Inbox
	prev, next *entry
}

var _ Hub = (*Local)(nil)

// NewLocal returns an empty hub that admits at most max users.
func NewLocal(max int) *Local {
	return &Local{max: max, byName: make(map[string]*entry)}
}

// Join claims name for in.
func (r *Local) Join(name string, in Inbox) error {
	r.mu.Lock()
	defer r.mu.Unlock()
	if _, taken := r.byName[name]; taken {
		return ErrInUse
	}
	if len(r.byName) >= r.max {
		return ErrFull
	}
	e := &entry{name: name, in: in, prev: r.last}
	if r.last != nil {
		r.last.next = e
	} else {
		r.first = e
	}
	r.last = e
	r.byName[e.name] = e
	return nil
}

// Leave frees name if in still holds it.
func (r *Local) Leave(name string, in Inbox) {
	r.Remove(name, in)
}

// Remove frees name if in still holds it, and reports whether it did.
func (r *Local) Remove(name string, in Inbox) bool {
	r.mu.Lock()
	defer r.mu.Unlock()
	e := r.byName[name]
	if e == nil || e.in != in {
		return false
	}
	delete(r.byName, name)
	if e.prev != nil {
		e.prev.next = e.next
	} else {
		r.first = e.next
	}
	if e.next != nil {
		e.next.prev = e.prev
	} else {
		r.last = e.prev
	}
	return true
}

// Lookup returns the inbox logged in as name, or nil. It does not
// allocate: it is on every SEND's path.
func (r *Local) Lookup(name []byte) Inbox {
	r.mu.RLock()
	defer r.mu.RUnlock()
	if e := r.byName[string(name)]; e != nil {
		return e.in
	}
	return nil
}

// List appends every logged-in name to dst, in login order.
func (r *Local) List(dst []string) ([]string, error) {
	r.mu.RLock()
	defer r.mu.RUnlock()
	for e := r.first; e != nil; e = e.next {
		dst = append(dst, e.name)
	}
	return dst, nil
}

// All returns every inbox, in login order.
func (r *Local) All() []Inbox {
	r.mu.RLock()
	defer r.mu.RUnlock()
	var all []Inbox
	for e := r.first; e != nil; e = e.next {
		all = append(all, e.in)
	}
	return all
}

// Len returns how many users are logged in.
func (r *Local) Len() int {
	r.mu.RLock()
	defer r.mu.RUnlock()
	return len(r.byName)
}

// Here returns r itself.
func (r *Local) Here() *Local { return r }

// Send delivers msg to the user named to, synchronously.
func (r *Local) Send(from, to string, msg []byte, done func(error)) {
	in := r.Lookup([]byte(to))
	if in == nil || !in.Deliver(from, msg) {
		done(ErrNoUser)
		return
	}
	done(nil)
}

// Close does nothing.
func (r *Local) Close() error { return nil }
