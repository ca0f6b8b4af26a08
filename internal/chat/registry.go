package chat

import (
	"errors"
	"sync"
)

// Domain outcomes of a login; reply turns them into wire replies.
var (
	ErrNameTaken  = errors.New("name already in use")
	ErrServerFull = errors.New("server full")
)

// registry is the set of logged-in users: unique names, at most max of
// them, in login order.
type registry struct {
	max int

	mu     sync.RWMutex
	byName map[string]*entry
	first  *entry // oldest login; the entries form a list in login order
	last   *entry
}

// entry is one logged-in user. Its links are guarded by registry.mu.
type entry struct {
	name       string
	sess       *session
	prev, next *entry
}

func newRegistry(max int) *registry {
	return &registry{max: max, byName: make(map[string]*entry)}
}

// login claims name for sess. The name is checked before the limit, so a
// taken name is ErrNameTaken even when the server is full.
func (r *registry) login(name []byte, sess *session) (string, error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if _, taken := r.byName[string(name)]; taken {
		return "", ErrNameTaken
	}
	if len(r.byName) >= r.max {
		return "", ErrServerFull
	}
	e := &entry{name: string(name), sess: sess, prev: r.last}
	if r.last != nil {
		r.last.next = e
	} else {
		r.first = e
	}
	r.last = e
	r.byName[e.name] = e
	return e.name, nil
}

// logout frees name if sess still holds it, and reports whether it did.
func (r *registry) logout(name string, sess *session) bool {
	r.mu.Lock()
	defer r.mu.Unlock()
	e := r.byName[name]
	if e == nil || e.sess != sess {
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

// lookup returns the entry of the user logged in as name, or nil. An
// entry's name and session never change.
func (r *registry) lookup(name []byte) *entry {
	r.mu.RLock()
	defer r.mu.RUnlock()
	return r.byName[string(name)]
}

// names appends every logged-in name to dst, in login order.
func (r *registry) names(dst []string) []string {
	r.mu.RLock()
	defer r.mu.RUnlock()
	for e := r.first; e != nil; e = e.next {
		dst = append(dst, e.name)
	}
	return dst
}
