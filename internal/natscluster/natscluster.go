// Package natscluster is a chat.Cluster: chat servers that share one set
// of users through a NATS server, or a NATS cluster, with JetStream.
// docs/protocol.md ("Cluster mode") states what it guarantees; this is how.
//
// NATS objects, for a cluster named C:
//
//   - stream C_users, the claims: one message per logged-in user, subject
//     C.users.<base64url(name)>, data "<node> <token>". MaxMsgsPerSubject=1
//     with DiscardNewPerSubject makes a login one atomic publish that keeps
//     names unique; MaxMsgs=max users with Discard=New makes the limit
//     exact. Stream sequence order is login order, and a claim's sequence
//     identifies that login.
//   - KV bucket C_nodes: one lease per node, refreshed every 250 ms, gone
//     3 s after the last refresh.
//   - C.n.<node>: a node's inbox. Everything one node tells another is a
//     frame on the receiver's inbox (frame.go), on a channel that numbers
//     records, acknowledges them and sends lost ones again (peer.go), so a
//     pair of nodes sees each other's records once each, in order.
//
// A node is one incarnation of a server in the cluster: an id, a lease,
// an inbox and its channels. A server that fences itself rejoins as a new
// node; nothing of the old one is taken any more.
//
// Safety rests on three rules, each checked where the work is done:
//
//   - A node acts for its users only while its lease is surely alive: its
//     own clock says the last refresh it sent was acknowledged less than
//     2.5 s ago (the lease lives 3 s from when NATS stored it). chat.Lease
//     is checked as each DELIVERY is queued and as each SEND record is
//     appended, so a paused or cut-off node stops at once, before it
//     notices, and fences (evicts its users) when it does.
//   - A name is free again only after every node has handled everything
//     its holder sent. A logout sends a release record on every channel,
//     after the user's SENDs, and deletes the claim once every node has
//     acknowledged it (Release). A dead node's claims are deleted only
//     after every live node has acknowledged a death record for it and
//     drops anything more from it (sweep.go).
//   - A SEND names the recipient's claim, and is delivered only to that
//     login; the sender is answered only once the recipient's node has
//     handled it, or that node's lease is gone. Nothing is answered on a
//     timeout, so BAD-DEST-USER never comes before a late delivery.
//
// Goroutines, all waited for by Close: the lease loop (refresh; rejoin
// after a fence), the watchdog (fences once the lease may have run out),
// the view loop (which nodes hold a lease), the sweeper (frees dead
// nodes' claims; reaps this node's own leftovers), the flusher (sends
// frames, and sends them again when unacknowledged), one per release in
// progress, and nats.go's handler for the inbox.
//
// Locks: Cluster.mu, relMu, deadMu, directory.mu, peer.mu and flushMu
// never nest, except deadMu (shared, while the inbox handles a frame)
// around chat's own locks and peer.mu. No NATS request is made under any
// of them, except the claim's delete under relMu (see Release).
package natscluster

import (
	"context"
	"encoding/base64"
	"errors"
	"fmt"
	"log/slog"
	"regexp"
	"sync"
	"sync/atomic"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"chatserver/internal/chat"
)

// Config is the cluster's settings; zero fields take the defaults below.
type Config struct {
	// Cluster prefixes every subject, stream and bucket. Default "chat".
	Cluster string
	// MaxUsers is the cluster-wide user limit. Every node must agree.
	MaxUsers int
	// MaxMessageBytes bounds the message a SEND may carry (the line cap
	// will do); the NATS server's max payload must hold it in a frame.
	MaxMessageBytes int
	// Replicas is how many copies NATS keeps of the claims and the
	// leases: 0 means 3 when the NATS server is part of a cluster, else 1.
	Replicas int
	// RequestTimeout bounds each request to NATS: a login's claim, a
	// lookup, a LIST, and how long Release waits before it goes on in the
	// background. Default 2s.
	RequestTimeout time.Duration
	// Logger receives the cluster's logs; nil discards them.
	Logger *slog.Logger
}

const (
	defaultCluster = "chat"
	// leaseTTL is how long a lease lives after its last refresh.
	leaseTTL = 3 * time.Second
	// fenceAfter is how long after sending a refresh that NATS
	// acknowledged a node still acts for its users. The 0.5 s to leaseTTL
	// is the margin for the two clocks' rates and the refresh's travel.
	fenceAfter = leaseTTL - 500*time.Millisecond
	// leaseRefresh is how often the lease is refreshed: a cut-off shorter
	// than fenceAfter - leaseRefresh (less one round trip) never fences.
	leaseRefresh = 250 * time.Millisecond
	// watchdogTick is how often the node checks that its lease holds.
	watchdogTick = 50 * time.Millisecond
	// viewPoll is how often the node reads which nodes hold a lease.
	viewPoll = 250 * time.Millisecond
	// reapEvery is how often the node looks for claims of its own that no
	// user holds (a login whose answer was lost, say).
	reapEvery = 2 * time.Second
	// sweepEvery is how often every claim is checked for a live node, on
	// top of the sweep that follows each change of the view.
	sweepEvery = 10 * time.Second
	// retransmitTick is how often unacknowledged frames are looked at.
	retransmitTick = 50 * time.Millisecond
	// releaseRetry is the pause between attempts to delete a claim while
	// NATS does not answer.
	releaseRetry = 250 * time.Millisecond
	// slowRelease is when a release that waits for a node is logged.
	slowRelease = 10 * time.Second
)

var clusterNameRE = regexp.MustCompile(`^[A-Za-z0-9_-]{1,32}$`)

// Stats are the cluster's counters.
type Stats struct {
	Connected   bool   // the NATS connection is up now
	Fenced      bool   // cut off: users evicted, logins refused
	CrossServer uint64 // SENDs forwarded to another node
	Fences      uint64 // times this server fenced itself
	Resent      uint64 // frames sent again because no ack came in time
	Dropped     uint64 // messages NATS dropped on this connection (slow subscription)
}

// Cluster is a chat.Cluster over NATS. Create it with New; it starts
// serving when the chat server attaches to it.
type Cluster struct {
	nc      *nats.Conn
	js      jetstream.JetStream
	leaseJS jetstream.JetStream // for lease refreshes: asynchronous, each answered or failed within a request timeout
	cfg     Config
	log     *slog.Logger

	usersPrefix  string // C.users.
	inboxPrefix  string // C.n.
	nobodyPrefix string // C.nobody.: NATS's "no responders" answers to frames
	leasePrefix  string // $KV.C_nodes.

	objs  atomic.Pointer[objects] // replaced when NATS lost them and they are made again
	snaps snapshotCache

	members chat.Members // set by Attach
	lease   *chat.Lease  // set by Attach

	node atomic.Pointer[node] // this server's current incarnation; nil while fenced

	mu        sync.Mutex
	epochs    uint64                   // guarded by mu: incarnations so far
	owned     map[uint64]*ownedClaim   // guarded by mu: the current node's claims, by seq, until deleted
	claiming  map[string]bool          // guarded by mu: tokens of claims published and not yet answered
	releasing map[string]chan struct{} // guarded by mu: names being released here; closed when free
	retired   []string                 // guarded by mu: ids of fenced incarnations whose leases may live on

	// relMu orders releases against new channels: a release holds it
	// shared from its last look at the channels to the delete of its
	// claim; adding a channel holds it alone.
	relMu sync.RWMutex

	// deadMu orders deaths against deliveries: the inbox holds it shared
	// while it handles a frame; marking a node dead holds it alone.
	deadMu sync.RWMutex
	dead   map[string]time.Time // guarded by deadMu: nodes whose lease is gone, and since when

	alive atomic.Pointer[map[string]bool] // the nodes holding a lease at the last look; replaced, never changed

	dir directory // where users of other nodes are

	flushMu    sync.Mutex
	dirty      []*peer       // guarded by flushMu: channels with something to send
	spareDirty []*peer       // owned by the flusher: the other dirty list, swapped in
	lastResend time.Time     // owned by the flusher
	flushKick  chan struct{} // holds a token when dirty should be sent now (Flush)
	viewKick   chan struct{} // holds a token when the view should be read now
	sweepKick  chan struct{} // holds a token when the claims should be swept now

	quit      chan struct{}
	wg        sync.WaitGroup
	closeOnce sync.Once

	forwards, fences, resent, dropped atomic.Uint64
}

// objects are the stream and bucket the cluster lives in.
type objects struct {
	claims      jetstream.Stream
	leases      jetstream.KeyValue
	leaseStream jetstream.Stream // the bucket's stream: its subjects are the live leases
}

func (c *Cluster) objects() *objects { return c.objs.Load() }

// node is one incarnation of this server in the cluster.
type node struct {
	id        string
	epoch     uint64
	leaseSent time.Time          // when the lease was taken
	refreshes refreshes          // owned by the lease loop
	inbox     *nats.Subscription // set by Attach or rejoin
	nobody    *nats.Subscription // NATS's answers to its frames that reached no one
	tokens    atomic.Uint64      // for claims' tokens
	gone      atomic.Bool        // fenced: nothing more is done as this node

	peers atomic.Pointer[map[string]*peer] // its channels; replaced under Cluster.relMu, never changed
	run   deliveryRun                      // owned by the inbox's handler (onFrame)
	acked []waiter                         // owned by onFrame: the waiters a frame's ack released, reused
}

// ownedClaim is a claim of the current node's.
type ownedClaim struct {
	name      string
	releasing bool
}

var _ chat.Cluster = (*Cluster)(nil)

// New checks the NATS server, creates or checks the claims stream and the
// lease bucket, and takes a lease. Each failed check is one error line.
// nc stays the caller's: Close does not close it, but the cluster sets its
// error handler, to count and log what NATS drops.
func New(ctx context.Context, nc *nats.Conn, cfg Config) (*Cluster, error) {
	if err := cfg.setDefaults(); err != nil {
		return nil, err
	}
	if err := checkServer(ctx, nc, cfg); err != nil {
		return nil, err
	}
	js, err := jetstream.New(nc)
	if err != nil {
		return nil, fmt.Errorf("jetstream: %w", err)
	}
	leaseJS, err := jetstream.New(nc, jetstream.WithPublishAsyncTimeout(cfg.RequestTimeout))
	if err != nil {
		return nil, fmt.Errorf("jetstream: %w", err)
	}
	c := &Cluster{
		nc:           nc,
		js:           js,
		leaseJS:      leaseJS,
		cfg:          cfg,
		log:          cfg.Logger,
		usersPrefix:  cfg.Cluster + ".users.",
		inboxPrefix:  cfg.Cluster + ".n.",
		nobodyPrefix: cfg.Cluster + ".nobody.",
		leasePrefix:  "$KV." + cfg.Cluster + "_nodes.",
		owned:        make(map[uint64]*ownedClaim),
		claiming:     make(map[string]bool),
		releasing:    make(map[string]chan struct{}),
		dead:         make(map[string]time.Time),
		dir:          directory{routes: make(map[string]route)},
		flushKick:    make(chan struct{}, 1),
		viewKick:     make(chan struct{}, 1),
		sweepKick:    make(chan struct{}, 1),
		quit:         make(chan struct{}),
	}
	c.alive.Store(&map[string]bool{})
	if err := c.ensureObjects(ctx); err != nil {
		return nil, err
	}
	n, err := c.newNode(ctx)
	if err != nil {
		return nil, err
	}
	c.node.Store(n)
	nc.SetErrorHandler(c.onNATSError)
	return c, nil
}

func (cfg *Config) setDefaults() error {
	if cfg.Cluster == "" {
		cfg.Cluster = defaultCluster
	}
	if !clusterNameRE.MatchString(cfg.Cluster) {
		return fmt.Errorf("cluster name %q: use 1 to 32 letters, digits, '-' or '_'", cfg.Cluster)
	}
	if cfg.MaxUsers < 1 {
		return fmt.Errorf("max users must be at least 1, got %d", cfg.MaxUsers)
	}
	if cfg.Replicas < 0 || cfg.Replicas > 5 {
		return fmt.Errorf("replicas must be between 1 and 5 (0: automatic), got %d", cfg.Replicas)
	}
	if cfg.RequestTimeout == 0 {
		cfg.RequestTimeout = 2 * time.Second
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	return nil
}

// Attach starts serving: the inbox, the lease loop and the rest (see the
// package doc).
func (c *Cluster) Attach(m chat.Members, lease *chat.Lease) {
	c.members, c.lease = m, lease
	n := c.node.Load()
	if err := c.subscribe(n); err != nil {
		// The lease loop notices the node cannot be reached and fences.
		c.log.Error("subscribe to this node's inbox", "err", err)
	}
	lease.Extend(n.epoch, n.leaseSent.Add(fenceAfter))
	c.every(leaseRefresh, c.refreshLease)
	c.every(watchdogTick, c.watchdog)
	c.loop(viewPoll, c.viewKick, c.pollView)
	c.loop(sweepEvery, c.sweepKick, c.sweep)
	c.every(reapEvery, c.reap)
	c.loop(retransmitTick, c.flushKick, c.flush)
	kick(c.sweepKick) // claims left by nodes that died while nobody watched
}

// every runs f every period until Close, on a goroutine of its own; a run
// that takes longer than period delays the next.
func (c *Cluster) every(period time.Duration, f func(now time.Time)) {
	c.loop(period, nil, f)
}

// loop is every, that also runs f at once when kicked.
func (c *Cluster) loop(period time.Duration, kicked <-chan struct{}, f func(now time.Time)) {
	c.wg.Add(1)
	go func() {
		defer c.wg.Done()
		t := time.NewTicker(period)
		defer t.Stop()
		for {
			select {
			case <-c.quit:
				return
			case now := <-t.C:
				f(now)
			case <-kicked:
				f(time.Now())
			}
		}
	}()
}

func kick(ch chan struct{}) {
	select {
	case ch <- struct{}{}:
	default: // already kicked
	}
}

// Stats returns the cluster's counters.
func (c *Cluster) Stats() Stats {
	return Stats{
		Connected:   c.nc.IsConnected(),
		Fenced:      c.node.Load() == nil,
		CrossServer: c.forwards.Load(),
		Fences:      c.fences.Load(),
		Resent:      c.resent.Load(),
		Dropped:     c.dropped.Load(),
	}
}

// onNATSError logs and counts what the NATS connection reports, such as a
// subscription that fell behind and lost messages (frames are sent again;
// nothing is lost for good, but it should be seen).
func (c *Cluster) onNATSError(_ *nats.Conn, sub *nats.Subscription, err error) {
	if errors.Is(err, nats.ErrSlowConsumer) && sub != nil {
		msgs, _ := sub.Dropped()
		c.dropped.Store(uint64(msgs))
		c.log.Warn("nats dropped messages for a slow subscription", "subject", sub.Subject, "dropped", msgs)
		return
	}
	c.log.Warn("nats error", "err", err)
}

// Close stops the cluster's goroutines and gives up its lease, so other
// nodes free what it still holds at once. Users still logged in are not
// evicted: the chat server ends them first, and the releases their ends
// began get up to RequestTimeout to finish.
func (c *Cluster) Close() error {
	c.closeOnce.Do(func() {
		c.waitReleases(c.cfg.RequestTimeout)
		close(c.quit)
		c.wg.Wait()
		n := c.node.Swap(nil)
		if n == nil {
			return
		}
		n.gone.Store(true)
		n.unsubscribe()
		for _, p := range n.peerList() {
			release(p.close(time.Now()))
		}
		ctx, cancel := context.WithTimeout(context.Background(), c.cfg.RequestTimeout)
		defer cancel()
		c.objects().leaseStream.Purge(ctx, jetstream.WithPurgeSubject(c.leasePrefix+n.id))
	})
	return nil
}

func (c *Cluster) waitReleases(limit time.Duration) {
	deadline := time.After(limit)
	for {
		c.mu.Lock()
		var wait chan struct{}
		for _, ch := range c.releasing {
			wait = ch
			break
		}
		c.mu.Unlock()
		if wait == nil {
			return
		}
		select {
		case <-wait:
		case <-deadline:
			return
		}
	}
}

func encodeName[S string | []byte](name S) string {
	return base64.RawURLEncoding.EncodeToString([]byte(name))
}

func decodeName(token string) (string, bool) {
	b, err := base64.RawURLEncoding.DecodeString(token)
	return string(b), err == nil
}

func (c *Cluster) inboxSubject(node string) string { return c.inboxPrefix + node }

func (c *Cluster) requestContext() (context.Context, context.CancelFunc) {
	return context.WithTimeout(context.Background(), c.cfg.RequestTimeout)
}
