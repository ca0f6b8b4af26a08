package chat

import "sync"

// registry is this server's logged-in users: unique names, in login
// order. On a single server it is every user and enforces MaxUsers; in
// cluster mode it holds this server's users, whose names the cluster has
// claimed, and the cluster enforces the limit.
type registry struct {
	max int // below 0: no limit here (cluster mode)

	mu          sync.RWMutex
	byName      map[string]*session // guarded by mu
	first, last *session            // guarded by mu: the oldest and newest login; session.prev and next link them
}

func newRegistry(max int) *registry {
	return &registry{max: max, byName: make(map[string]*session)}
}

// add makes s visible as name, unless the name is taken or the limit is
// reached. Before it does, admit must admit the login and queue its reply
// (HELLO) on s: a user's first line is its HELLO, never a DELIVERY from
// someone who saw the user a moment early. If admit fails, s is not
// added, and add returns admit's error.
func (r *registry) add(s *session, name string, admit func() error) error {
	r.mu.Lock()
	defer r.mu.Unlock()
	if _, taken := r.byName[name]; taken {
		return ErrInUse
	}
	if r.max >= 0 && len(r.byName) >= r.max {
		return ErrFull
	}
	if err := admit(); err != nil {
		return err
	}
	s.prev, s.next = r.last, nil
	if r.last != nil {
		r.last.next = s
	} else {
		r.first = s
	}
	r.last = s
	r.byName[name] = s
	return nil
}

// remove takes s out if it is still there as name.
func (r *registry) remove(s *session, name string) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.byName[name] != s {
		return
	}
	delete(r.byName, name)
	if s.prev != nil {
		s.prev.next = s.next
	} else {
		r.first = s.next
	}
	if s.next != nil {
		s.next.prev = s.prev
	} else {
		r.last = s.prev
	}
	s.prev, s.next = nil, nil
}

// lookup returns the session logged in as name, or nil. It does not
// allocate: it is on every SEND's path.
func (r *registry) lookup(name []byte) *session {
	r.mu.RLock()
	defer r.mu.RUnlock()
	return r.byName[string(name)]
}

// names appends every name to dst, in login order.
func (r *registry) names(dst []string) []string {
	r.mu.RLock()
	defer r.mu.RUnlock()
	for s := r.first; s != nil; s = s.next {
		dst = append(dst, s.claim.Name)
	}
	return dst
}

// all returns every session, in login order.
func (r *registry) all() []*session {
	r.mu.RLock()
	defer r.mu.RUnlock()
	all := make([]*session, 0, len(r.byName))
	for s := r.first; s != nil; s = s.next {
		all = append(all, s)
	}
	return all
}
