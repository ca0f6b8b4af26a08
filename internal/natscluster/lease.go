package natscluster

import (
	"context"
	"fmt"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/nats-io/nuid"
)

// newNode registers a new incarnation of this server: a fresh id with a
// lease. Its inbox is subscribed by Attach, or by rejoin.
func (c *Cluster) newNode(ctx context.Context) (*node, error) {
	id := nuid.Next()
	sent := time.Now()
	_, err := c.objects().leases.Create(ctx, id, []byte(sent.UTC().Format(time.RFC3339)))
	if err != nil {
		return nil, fmt.Errorf("take a node lease: %w", err)
	}
	c.mu.Lock()
	c.epochs++
	n := &node{id: id, epoch: c.epochs, leaseSent: sent}
	c.mu.Unlock()
	n.peers.Store(&map[string]*peer{})
	return n, nil
}

// subscribe subscribes n's inbox, and the subject where NATS answers its
// frames that reached no one. Frames are handled in arrival order on
// nats.go's goroutine for the subscription.
func (c *Cluster) subscribe(n *node) error {
	var err error
	if n.inbox, err = c.nc.Subscribe(c.inboxSubject(n.id), func(msg *nats.Msg) { c.onFrame(n, msg.Data) }); err != nil {
		return err
	}
	// Frames that overflow these are dropped by nats.go, and sent again.
	_ = n.inbox.SetPendingLimits(1<<16, 256<<20)
	if n.nobody, err = c.nc.Subscribe(c.nobodyPrefix+n.id+".>", func(msg *nats.Msg) { c.onNobody(n, msg) }); err != nil {
		return err
	}
	return c.nc.FlushTimeout(c.cfg.RequestTimeout)
}

// unsubscribe ends n's subscriptions.
func (n *node) unsubscribe() {
	for _, sub := range []*nats.Subscription{n.inbox, n.nobody} {
		if sub != nil {
			sub.Unsubscribe()
		}
	}
}

// refreshLease sends a refresh of the current node's lease, without
// waiting for earlier ones (a refresh stuck on a lost link must not hold
// back the next), and extends chat's lease from the latest refresh NATS
// acknowledged: from when it was sent, since NATS stored it after that.
// A lease that is gone is seen by pollView. After a fence it rejoins.
func (c *Cluster) refreshLease(time.Time) {
	n := c.node.Load()
	if n == nil {
		c.rejoin()
		return
	}
	latest := n.refreshes.settle()
	c.mu.Lock()
	if !latest.IsZero() && c.node.Load() == n { // not fenced meanwhile
		c.lease.Extend(n.epoch, latest.Add(fenceAfter))
	}
	c.mu.Unlock()
	sent := time.Now()
	future, err := c.leaseJS.PublishAsync(c.leasePrefix+n.id, []byte(sent.UTC().Format(time.RFC3339)))
	if err != nil {
		c.log.Debug("lease refresh not sent", "err", err)
		return
	}
	n.refreshes.add(future, sent)
}

// refreshes are a node's lease refreshes still out; owned by the lease
// loop.
type refreshes struct {
	out []refresh
}

type refresh struct {
	future jetstream.PubAckFuture
	sent   time.Time
}

func (r *refreshes) add(f jetstream.PubAckFuture, sent time.Time) {
	r.out = append(r.out, refresh{f, sent})
}

// settle forgets the refreshes that were answered and returns when the
// latest acknowledged one was sent (zero if none).
func (r *refreshes) settle() time.Time {
	var latest time.Time
	keep := r.out[:0]
	for _, ref := range r.out {
		select {
		case <-ref.future.Ok():
			latest = ref.sent // r.out is in send order
		case <-ref.future.Err():
		default:
			keep = append(keep, ref)
			continue
		}
	}
	clear(r.out[len(keep):])
	r.out = keep
	return latest
}

// watchdog fences the node once its lease may have run out: other nodes
// may hand its users' names to someone else soon after.
func (c *Cluster) watchdog(time.Time) {
	if n := c.node.Load(); n != nil && !c.lease.Holds(n.epoch) {
		c.fence(n, "no lease refresh acknowledged for "+fenceAfter.String())
	}
}

// fence stops acting as n: it evicts every user, ends every channel, and
// refuses logins until the lease loop rejoins as a new node. n's claims
// are freed by the other nodes, or by the new node, once n's lease is
// gone (sweep).
func (c *Cluster) fence(n *node, why string) {
	c.mu.Lock()
	if c.node.Load() != n {
		c.mu.Unlock()
		return
	}
	c.node.Store(nil)
	n.gone.Store(true)
	c.lease.Revoke()
	clear(c.owned)
	clear(c.claiming)
	c.retired = append(c.retired, n.id)
	c.mu.Unlock()

	c.fences.Add(1)
	c.log.Warn("cut off from the cluster: closing this server's users", "why", why, "node", n.id)
	c.members.EvictAll()
	n.unsubscribe()
	c.relMu.Lock() // no channel is added to n after this
	peers := n.peerList()
	n.peers.Store(&map[string]*peer{})
	c.relMu.Unlock()
	for _, p := range peers {
		release(p.close(time.Now()))
	}
	c.dir.clear()
}

// rejoin takes a new lease as a new node, once NATS answers, and gives up
// the old ones so that their claims are freed at once.
func (c *Cluster) rejoin() {
	ctx, cancel := c.requestContext()
	defer cancel()
	if err := c.ensureObjects(ctx); err != nil {
		c.log.Debug("rejoin: NATS not ready", "err", err)
		return
	}
	n, err := c.newNode(ctx)
	if err == nil {
		err = c.subscribe(n)
	}
	if err != nil {
		if n != nil {
			n.unsubscribe()
		}
		c.log.Debug("rejoin failed", "err", err)
		return
	}
	c.mu.Lock()
	c.node.Store(n)
	c.lease.Extend(n.epoch, n.leaseSent.Add(fenceAfter))
	c.mu.Unlock()
	c.log.Info("rejoined the cluster", "node", n.id)
	c.purgeOldLeases(ctx)
	kick(c.sweepKick)
}

// purgeOldLeases deletes the leases of this server's earlier
// incarnations, which no longer act, so their claims are freed now
// rather than when the leases run out.
func (c *Cluster) purgeOldLeases(ctx context.Context) {
	c.mu.Lock()
	old := c.retired
	c.retired = nil
	c.mu.Unlock()
	for _, id := range old {
		if err := c.objects().leaseStream.Purge(ctx, jetstream.WithPurgeSubject(c.leasePrefix+id)); err != nil {
			c.log.Debug("could not give up an old lease; it runs out on its own", "node", id, "err", err)
		}
	}
}
