package natscluster

import (
	"context"
	"errors"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"chatserver/internal/chat"
)

// Claim claims name with one publish to the claims stream. A login of a
// name this server is releasing waits for the release first, so that a
// user who reconnects to the same server at once is not told IN-USE.
func (c *Cluster) Claim(name string) (chat.Claim, error) {
	c.waitRelease(name)
	n := c.node.Load()
	if n == nil || !c.lease.Holds(n.epoch) {
		return chat.Claim{}, chat.ErrFull // cut off: cannot vouch for a new user
	}
	token := strconv.FormatUint(n.tokens.Add(1), 36)
	c.mu.Lock()
	c.claiming[token] = true
	c.mu.Unlock()
	defer func() {
		c.mu.Lock()
		delete(c.claiming, token)
		c.mu.Unlock()
	}()
	ctx, cancel := c.requestContext()
	defer cancel()
	seq, err := c.publishClaim(ctx, c.usersPrefix+encodeName(name), n, token)
	if err != nil {
		return chat.Claim{}, err
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.node.Load() != n {
		return chat.Claim{}, chat.ErrFull // fenced meanwhile: the claim goes with n
	}
	c.owned[seq] = &ownedClaim{name: name}
	return chat.Claim{Name: name, Seq: seq, Epoch: n.epoch}, nil
}

// publishClaim publishes the claim. Both stream limits fail with the same
// error code, so a refusal is classified by reading the name's subject: a
// claim there is IN-USE, none is BUSY (after one retry, in case the holder
// just left). A publish that got no answer is sent again with the same
// message id until the deadline: if the first one was stored, the stream
// answers with its sequence. A claim stored whose answer never came is
// found by reap.
func (c *Cluster) publishClaim(ctx context.Context, subject string, n *node, token string) (uint64, error) {
	data := []byte(n.id + " " + token)
	id := jetstream.WithMsgID(n.id + "." + token)
	refused := 0
	for {
		ack, err := c.js.Publish(ctx, subject, data, id)
		if err == nil {
			return ack.Sequence, nil
		}
		var apiErr *jetstream.APIError
		if !errors.As(err, &apiErr) {
			if ctx.Err() != nil || !sleep(ctx, 100*time.Millisecond) {
				c.log.Warn("login claim got no answer from NATS", "err", err)
				return 0, chat.ErrFull
			}
			continue
		}
		_, err = c.objects().claims.GetLastMsgForSubject(ctx, subject)
		switch {
		case err == nil:
			return 0, chat.ErrInUse
		case !errors.Is(err, jetstream.ErrMsgNotFound), refused > 0:
			return 0, chat.ErrFull
		}
		refused++
	}
}

// waitRelease waits, for at most a request timeout, while name is being
// released here.
func (c *Cluster) waitRelease(name string) {
	c.mu.Lock()
	ch := c.releasing[name]
	c.mu.Unlock()
	if ch != nil {
		select {
		case <-ch:
		case <-time.After(c.cfg.RequestTimeout):
		}
	}
}

// Release gives up a claim: once every node has handled everything its
// user sent, the claim is deleted and the name is free. Release returns
// then, or after a request timeout while a node is slow to answer; the
// release goes on in the background until it is done.
func (c *Cluster) Release(cl chat.Claim) {
	n := c.node.Load()
	if n == nil || n.epoch != cl.Epoch {
		return // made by an earlier incarnation: freed with it
	}
	if done := c.startRelease(n, cl.Name, cl.Seq); done != nil {
		select {
		case <-done:
		case <-time.After(c.cfg.RequestTimeout):
		}
	}
}

// startRelease starts releasing one of n's claims, unless it is already
// being released, and returns a channel closed when the name is free.
func (c *Cluster) startRelease(n *node, name string, seq uint64) <-chan struct{} {
	c.mu.Lock()
	defer c.mu.Unlock()
	o := c.owned[seq]
	if c.node.Load() != n || o == nil || o.releasing {
		return nil
	}
	o.releasing = true
	done := make(chan struct{})
	c.releasing[name] = done
	c.wg.Add(1)
	go c.release(n, name, seq, done)
	return done
}

// release is a release's goroutine. It sends a release record on every
// channel, waits until each is handled (or its node is gone), and deletes
// the claim. A channel added meanwhile is told too before the delete: the
// delete is made under relMu, which adding a channel takes alone, so a
// node that opens a channel with this one later than that sees the claim
// deleted already (see directory).
func (c *Cluster) release(n *node, name string, seq uint64, done chan struct{}) {
	defer c.wg.Done()
	defer func() {
		c.mu.Lock()
		if c.node.Load() == n {
			delete(c.owned, seq)
		}
		if c.releasing[name] == done {
			delete(c.releasing, name)
		}
		c.mu.Unlock()
		close(done)
	}()
	record := func(b []byte) []byte { return appendRelease(b, seq, name) }
	told := make(map[*peer]bool)
	for !n.gone.Load() {
		var barriers []<-chan struct{}
		for _, p := range n.peerList() {
			if !told[p] {
				told[p] = true
				if ch := p.appendNotice(record); ch != nil {
					barriers = append(barriers, ch)
				}
			}
		}
		if !c.await(barriers, "a logout waits for a server to confirm") {
			return
		}
		c.relMu.RLock()
		if n.hasPeerOutside(told) {
			c.relMu.RUnlock()
			continue
		}
		ctx, cancel := c.requestContext()
		err := c.objects().claims.DeleteMsg(ctx, seq)
		cancel()
		c.relMu.RUnlock()
		if err == nil || errors.Is(err, jetstream.ErrMsgNotFound) {
			return
		}
		c.log.Debug("logout: could not delete the claim yet", "seq", seq, "err", err)
		if !c.pause(releaseRetry) {
			return
		}
	}
}

// await waits for every barrier, logging once if it takes long. It
// returns false if the cluster closes first.
func (c *Cluster) await(barriers []<-chan struct{}, what string) bool {
	slow := time.NewTimer(slowRelease)
	defer slow.Stop()
	for _, ch := range barriers {
		for waiting := true; waiting; {
			select {
			case <-ch:
				waiting = false
			case <-slow.C:
				c.log.Warn(what, "waited", slowRelease)
			case <-c.quit:
				return false
			}
		}
	}
	return true
}

// pause waits d, or returns false if the cluster closes first.
func (c *Cluster) pause(d time.Duration) bool {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
		return true
	case <-c.quit:
		return false
	}
}

func sleep(ctx context.Context, d time.Duration) bool {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
		return true
	case <-ctx.Done():
		return false
	}
}

// List reads the claims in stream order, which is login order, and leaves
// out those of nodes whose lease is gone (not yet swept). Which nodes hold
// a lease comes from the view pollView keeps (at most viewPoll old); only
// a claim of a node not in it (one that just joined, or just died) makes
// List read the leases itself.
func (c *Cluster) List(dst []string) ([]string, error) {
	ctx, cancel := c.requestContext()
	defer cancel()
	snap, err := c.snapshot(ctx)
	if err != nil {
		return dst, err
	}
	alive := *c.alive.Load()
	for _, cl := range snap.claims {
		if !alive[cl.node] {
			if alive, err = c.liveNodes(ctx); err != nil {
				return dst, err
			}
			break
		}
	}
	for _, cl := range snap.claims {
		if alive[cl.node] {
			dst = append(dst, cl.name)
		}
	}
	return dst, nil
}

// claimInfo is one claim as read from the stream.
type claimInfo struct {
	name, node, token string
	seq               uint64
}

// snapshot is the claims as read at one moment.
type snapshot struct {
	key    snapshotKey
	claims []claimInfo // in sequence order
}

// snapshotKey is what the claims stream says about its contents in one
// request: the set of claims is the same while it is (a claim raises the
// last sequence, a delete lowers the count).
type snapshotKey struct{ lastSeq, msgs uint64 }

// snapshotCache keeps the last complete snapshot.
type snapshotCache struct {
	mu   sync.Mutex
	last *snapshot // guarded by mu; never changed, only replaced
}

// snapshot reads the claims: one request for the stream's state and, if
// that changed since the last complete read, one per claim, each asking
// for the next message on the users' subjects. Claims made after the first
// request are left out, so what it returns is the set of claims at that
// moment, less those deleted before they were read: no name twice, never
// more than MaxUsers, even while users come and go.
func (c *Cluster) snapshot(ctx context.Context) (*snapshot, error) {
	claims := c.objects().claims
	info, err := claims.Info(ctx)
	if err != nil {
		return nil, err
	}
	key := snapshotKey{info.State.LastSeq, info.State.Msgs}
	c.snaps.mu.Lock()
	last := c.snaps.last
	c.snaps.mu.Unlock()
	if last != nil && last.key == key {
		return last, nil
	}
	snap := &snapshot{key: key}
	for seq := uint64(1); key.msgs > 0 && seq <= key.lastSeq; {
		msg, err := claims.GetMsg(ctx, seq, jetstream.WithGetMsgSubject(c.usersPrefix+"*"))
		if errors.Is(err, jetstream.ErrMsgNotFound) {
			break
		}
		if err != nil {
			return nil, err
		}
		if msg.Sequence > key.lastSeq {
			break
		}
		name, ok := decodeName(strings.TrimPrefix(msg.Subject, c.usersPrefix))
		node, token, _ := strings.Cut(string(msg.Data), " ")
		if ok {
			snap.claims = append(snap.claims, claimInfo{name: name, node: node, token: token, seq: msg.Sequence})
		}
		seq = msg.Sequence + 1
	}
	if uint64(len(snap.claims)) == key.msgs { // complete: nothing was deleted while it was read
		c.snaps.mu.Lock()
		c.snaps.last = snap
		c.snaps.mu.Unlock()
	}
	return snap, nil
}
