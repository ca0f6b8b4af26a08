// Package natshub is a hub.Hub shared by several chat servers through a
// NATS server with JetStream. See docs/protocol.md, "Cluster mode", and
// the design note it follows.
//
// NATS objects, for a cluster named C:
//
//   - stream C_users on C.users.*: one message per logged-in user, subject
//     C.users.<base64url(name)>, data the owning node's id. MaxMsgsPerSubject=1
//     with DiscardNewPerSubject makes a login one atomic publish that keeps
//     names unique; MaxMsgs=max users with Discard=New makes the limit exact.
//     Stream sequence order is login order.
//   - KV bucket C_nodes with TTL 3s: one lease per node, refreshed every
//     second. A claim whose node has no lease is swept by every node.
//   - C.u.<base64url(name)>: the user's delivery subject, subscribed by the
//     node that holds the user, into one node-wide channel.
//   - C.r.<instance>.<token>: replies to this node's SENDs, one subscription.
//
// Goroutines (all owned by Hub, waited for by Close): the inbox loop
// (delivers to this node's users in arrival order), the reply loop
// (nats.go's handler for the reply subscription), the lease loop (refresh,
// rejoin after a fence), the watchdog (fences when the lease could have
// expired), the sweeper (frees the claims of dead nodes) and the timer
// that fails SENDs whose reply did not come.
//
// Lock order: Hub.mu, then hub.Local's. No NATS I/O under Hub.mu.
package natshub

import (
	"context"
	"encoding/base64"
	"errors"
	"fmt"
	"log/slog"
	"maps"
	"math"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/nats-io/nuid"

	"chatserver/internal/hub"
	"chatserver/internal/protocol"
)

// Config is the hub's settings; zero fields take the defaults below.
type Config struct {
	// Cluster prefixes every subject, stream and bucket. Default "chat".
	Cluster string
	// MaxUsers is the cluster-wide user limit. Every node must agree.
	MaxUsers int
	// MaxMessageBytes bounds the message a SEND may carry (the line cap
	// will do); the NATS server's max payload must hold it plus a name.
	MaxMessageBytes int
	// LeaseTTL is how long a node's lease lives without a refresh.
	// Default 3s; whole seconds.
	LeaseTTL time.Duration
	// RequestTimeout bounds a login's claim, a logout, a LIST and a
	// remote SEND's wait for its reply. Default 2s.
	RequestTimeout time.Duration
	// Window is how many remote SENDs one user may have in flight before
	// the next one waits. Default 1024.
	Window int
	// Logger receives the hub's logs; nil discards them.
	Logger *slog.Logger
}

const (
	defaultCluster = "chat"
	// minServerVersion: DiscardNewPerSubject arrived in 2.9.1; nats.go's
	// jetstream package is written against 2.10 and later.
	minServerVersion = "2.10.0"
	// replyGone is a recipient node's answer when the user is not (or no
	// longer) deliverable there; an empty reply means queued.
	replyGone = "gone"
	// nameOverhead is what a SEND payload adds to a message: the sender's
	// name and a space.
	nameOverhead = protocol.MaxNameBytes + 1
)

var clusterNameRE = regexp.MustCompile(`^[A-Za-z0-9_-]{1,32}$`)

// Stats are the hub's counters.
type Stats struct {
	Connected bool   // the NATS connection is up now
	Fenced    bool   // cut off: users evicted, logins refused
	Remote    uint64 // SENDs that went to another node
	Fences    uint64 // times this node fenced itself
}

// Hub is a hub.Hub over NATS. Create it with New.
type Hub struct {
	nc          *nats.Conn
	js          jetstream.JetStream
	stream      jetstream.Stream
	leases      jetstream.KeyValue
	leaseStream jetstream.Stream // the bucket's stream: its subjects are the live leases
	leasePrefix string           // $KV.C_nodes.
	cfg         Config
	log         *slog.Logger
	here        *hub.Local // this node's users; the cluster limit is the stream's

	usersPrefix   string // C.users.
	deliverPrefix string // C.u.
	replyPrefix   string // C.r.<instance>.
	leaseTTL      time.Duration
	fenceAfter    time.Duration // LeaseTTL - 0.5s

	inbox   chan *nats.Msg // deliveries for this node's users, in arrival order
	replies *nats.Subscription
	quit    chan struct{}
	wg      sync.WaitGroup

	fenced   atomic.Bool
	lastOK   atomic.Int64 // unix nanos: when the last successful lease refresh was sent
	remote   atomic.Uint64
	fences   atomic.Uint64
	closeOne sync.Once

	mu        sync.Mutex
	nodeID    string             // guarded by mu; changes when the node rejoins after a fence
	members   map[string]*member // guarded by mu: this node's users, by name
	calls     map[uint64]*call   // guarded by mu: remote SENDs awaiting a reply
	nextToken uint64             // guarded by mu

	listMu    sync.Mutex
	listKey   listKey  // guarded by listMu: the stream's state when listNames was read
	listNames []string // guarded by listMu; never modified, only replaced
}

// member is one of this node's users as NATS knows it.
type member struct {
	in     hub.Inbox
	seq    uint64             // the claim's stream sequence
	sub    *nats.Subscription // its delivery subject
	window chan struct{}      // one token per remote SEND in flight
}

// call is a remote SEND awaiting its reply.
type call struct {
	done     func(error)
	deadline time.Time
	window   chan struct{} // the sender's, to give its token back; may be nil
}

var _ hub.Hub = (*Hub)(nil)

// New checks the NATS server, creates or checks the stream and the lease
// bucket, takes a lease and starts the hub's goroutines. nc stays the
// caller's: Close does not close it. Each failed check is one error line.
func New(ctx context.Context, nc *nats.Conn, cfg Config) (*Hub, error) {
	if cfg.Cluster == "" {
		cfg.Cluster = defaultCluster
	}
	if !clusterNameRE.MatchString(cfg.Cluster) {
		return nil, fmt.Errorf("cluster name %q: use 1 to 32 letters, digits, '-' or '_'", cfg.Cluster)
	}
	if cfg.MaxUsers < 1 {
		return nil, fmt.Errorf("max users must be at least 1, got %d", cfg.MaxUsers)
	}
	if cfg.LeaseTTL == 0 {
		cfg.LeaseTTL = 3 * time.Second
	}
	if cfg.LeaseTTL < 2*time.Second || cfg.LeaseTTL%time.Second != 0 {
		return nil, fmt.Errorf("lease TTL must be whole seconds, at least 2s, got %v", cfg.LeaseTTL)
	}
	if cfg.RequestTimeout == 0 {
		cfg.RequestTimeout = 2 * time.Second
	}
	if cfg.Window == 0 {
		cfg.Window = 1024
	}
	log := cfg.Logger
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}

	if v := nc.ConnectedServerVersion(); !versionAtLeast(v, minServerVersion) {
		return nil, fmt.Errorf("NATS server %s is too old: cluster mode needs %s or later", v, minServerVersion)
	}
	js, err := jetstream.New(nc)
	if err != nil {
		return nil, fmt.Errorf("jetstream: %w", err)
	}
	if _, err := js.AccountInfo(ctx); err != nil {
		if errors.Is(err, jetstream.ErrJetStreamNotEnabled) || errors.Is(err, jetstream.ErrJetStreamNotEnabledForAccount) {
			return nil, errors.New("JetStream is not enabled on the NATS server: start it with -js")
		}
		return nil, fmt.Errorf("JetStream account info: %w", err)
	}
	if need := int64(cfg.MaxMessageBytes + nameOverhead); nc.MaxPayload() < need {
		return nil, fmt.Errorf("NATS max payload is %d bytes, smaller than a maximal SEND (%d bytes): raise max_payload on the NATS server or lower --max-line-bytes", nc.MaxPayload(), need)
	}

	c := cfg.Cluster
	h := &Hub{
		nc:            nc,
		js:            js,
		cfg:           cfg,
		log:           log,
		here:          hub.NewLocal(math.MaxInt),
		usersPrefix:   c + ".users.",
		deliverPrefix: c + ".u.",
		replyPrefix:   c + ".r." + nuid.Next() + ".",
		leaseTTL:      cfg.LeaseTTL,
		fenceAfter:    cfg.LeaseTTL - 500*time.Millisecond,
		inbox:         make(chan *nats.Msg, 1<<16),
		quit:          make(chan struct{}),
		members:       make(map[string]*member),
		calls:         make(map[uint64]*call),
	}
	if h.stream, err = h.ensureStream(ctx); err != nil {
		return nil, err
	}
	if h.leases, err = js.CreateOrUpdateKeyValue(ctx, jetstream.KeyValueConfig{
		Bucket:  c + "_nodes",
		TTL:     cfg.LeaseTTL,
		History: 1,
		Storage: jetstream.FileStorage,
	}); err != nil {
		return nil, fmt.Errorf("lease bucket %s_nodes: %w", c, err)
	}
	h.leasePrefix = "$KV." + c + "_nodes."
	if h.leaseStream, err = js.Stream(ctx, "KV_"+c+"_nodes"); err != nil {
		return nil, fmt.Errorf("lease bucket %s_nodes: %w", c, err)
	}
	rev, err := h.takeLease(ctx)
	if err != nil {
		return nil, err
	}
	if h.replies, err = nc.Subscribe(h.replyPrefix+"*", h.onReply); err != nil {
		return nil, fmt.Errorf("subscribe to replies: %w", err)
	}
	if err := nc.FlushTimeout(cfg.RequestTimeout); err != nil {
		h.replies.Unsubscribe()
		return nil, fmt.Errorf("flush: %w", err)
	}
	h.sweep() // claims left by nodes that died while nobody watched
	h.wg.Add(5)
	go h.inboxLoop()
	go h.leaseLoop(rev)
	go h.watchdog()
	go h.sweepLoop()
	go h.timeoutLoop()
	return h, nil
}

// ensureStream creates the claims stream, or checks that an existing one
// has the same user limit.
func (h *Hub) ensureStream(ctx context.Context) (jetstream.Stream, error) {
	name := h.cfg.Cluster + "_users"
	s, err := h.js.CreateStream(ctx, jetstream.StreamConfig{
		Name:                 name,
		Subjects:             []string{h.usersPrefix + "*"},
		MaxMsgsPerSubject:    1,
		MaxMsgs:              int64(h.cfg.MaxUsers),
		Discard:              jetstream.DiscardNew,
		DiscardNewPerSubject: true,
		Storage:              jetstream.FileStorage,
	})
	if errors.Is(err, jetstream.ErrStreamNameAlreadyInUse) {
		if s, err = h.js.Stream(ctx, name); err == nil {
			if got := s.CachedInfo().Config.MaxMsgs; got != int64(h.cfg.MaxUsers) {
				return nil, fmt.Errorf("max users %d differs from the cluster's %d (stream %s): every server of a cluster needs the same --max-users", h.cfg.MaxUsers, got, name)
			}
		}
	}
	if err != nil {
		return nil, fmt.Errorf("stream %s: %w", name, err)
	}
	return s, nil
}

// takeLease registers a new node id with a fresh lease.
func (h *Hub) takeLease(ctx context.Context) (uint64, error) {
	id := nuid.Next()
	sent := time.Now()
	rev, err := h.leases.Create(ctx, id, []byte(time.Now().UTC().Format(time.RFC3339)))
	if err != nil {
		return 0, fmt.Errorf("take a node lease: %w", err)
	}
	h.mu.Lock()
	h.nodeID = id
	h.mu.Unlock()
	h.lastOK.Store(sent.UnixNano())
	return rev, nil
}

// Here returns this node's users.
func (h *Hub) Here() *hub.Local { return h.here }

// Stats returns the hub's counters.
func (h *Hub) Stats() Stats {
	return Stats{
		Connected: h.nc.IsConnected(),
		Fenced:    h.fenced.Load(),
		Remote:    h.remote.Load(),
		Fences:    h.fences.Load(),
	}
}

func encodeName(name string) string { return base64.RawURLEncoding.EncodeToString([]byte(name)) }

func decodeName(token string) (string, bool) {
	b, err := base64.RawURLEncoding.DecodeString(token)
	return string(b), err == nil
}

// Join claims name cluster-wide with one publish, subscribes to its
// delivery subject, and only then makes it visible on this node.
func (h *Hub) Join(name string, in hub.Inbox) error {
	epoch := h.fences.Load()
	if h.fenced.Load() {
		return hub.ErrFull
	}
	ctx, cancel := context.WithTimeout(context.Background(), h.cfg.RequestTimeout)
	defer cancel()
	h.mu.Lock()
	node := h.nodeID
	h.mu.Unlock()
	subject := h.usersPrefix + encodeName(name)
	seq, err := h.claim(ctx, subject, node)
	if err != nil {
		return err
	}
	sub, err := h.nc.ChanSubscribe(h.deliverPrefix+encodeName(name), h.inbox)
	if err == nil {
		err = h.nc.FlushWithContext(ctx)
	}
	if err == nil {
		err = h.here.Join(name, in)
	}
	if err != nil {
		if sub != nil {
			sub.Unsubscribe()
		}
		h.unclaim(seq)
		h.log.Warn("login failed after the claim", "err", err)
		return hub.ErrFull
	}
	h.mu.Lock()
	h.members[name] = &member{in: in, seq: seq, sub: sub, window: make(chan struct{}, h.cfg.Window)}
	h.mu.Unlock()
	// A fence that began during the claim may have evicted everyone
	// before in was here, and the claim may carry the id the node had
	// before it rejoined: either way nobody vouches for it any more.
	// fence sets fenced before it lists the users, so a fence after this
	// check sees in and evicts it.
	if h.fenced.Load() || h.fences.Load() != epoch {
		h.Leave(name, in)
		return hub.ErrFull
	}
	return nil
}

// claim publishes the claim. Both limits fail with the same error code,
// so a failure is classified by reading the name's subject: a claim there
// is IN-USE, none is BUSY (after one retry, in case the holder just left).
func (h *Hub) claim(ctx context.Context, subject, node string) (uint64, error) {
	for attempt := 0; ; attempt++ {
		ack, err := h.js.Publish(ctx, subject, []byte(node))
		if err == nil {
			return ack.Sequence, nil
		}
		var apiErr *jetstream.APIError
		if !errors.As(err, &apiErr) {
			h.log.Warn("login claim failed", "err", err)
			return 0, hub.ErrFull // cannot admit now
		}
		_, err = h.stream.GetLastMsgForSubject(ctx, subject)
		switch {
		case err == nil:
			return 0, hub.ErrInUse
		case !errors.Is(err, jetstream.ErrMsgNotFound):
			return 0, hub.ErrFull
		case attempt > 0:
			return 0, hub.ErrFull
		}
	}
}

// unclaim deletes a claim by its sequence, which can never remove a newer
// claim of the same name.
func (h *Hub) unclaim(seq uint64) {
	ctx, cancel := context.WithTimeout(context.Background(), h.cfg.RequestTimeout)
	defer cancel()
	if err := h.stream.DeleteMsg(ctx, seq); err != nil && !errors.Is(err, jetstream.ErrMsgNotFound) {
		h.log.Warn("logout: could not delete the claim; the sweeper will", "seq", seq, "err", err)
	}
}

// Leave frees name if in still holds it: this node forgets it, stops
// receiving for it, then deletes its claim. The unsubscribe goes out
// before the delete on the same connection, so nobody can claim the name
// while this node still receives for it.
func (h *Hub) Leave(name string, in hub.Inbox) {
	if !h.here.Remove(name, in) {
		return
	}
	h.mu.Lock()
	m := h.members[name]
	if m != nil && m.in == in {
		delete(h.members, name)
	} else {
		m = nil
	}
	h.mu.Unlock()
	if m == nil {
		return
	}
	m.sub.Unsubscribe()
	h.unclaim(m.seq)
}

// List reads the claims in stream order, which is login order. It asks
// the stream for its last sequence and message count first: while those
// have not changed, neither has the set of claims (a claim raises the
// last sequence, a logout lowers the count), and the last complete read
// is answered again.
func (h *Hub) List(dst []string) ([]string, error) {
	ctx, cancel := context.WithTimeout(context.Background(), h.cfg.RequestTimeout)
	defer cancel()
	info, err := h.stream.Info(ctx)
	if err != nil {
		return dst, fmt.Errorf("read claims: %w", err)
	}
	key := listKey{info.State.LastSeq, info.State.Msgs}
	h.listMu.Lock()
	if h.listKey == key && h.listNames != nil {
		dst = append(dst, h.listNames...)
		h.listMu.Unlock()
		return dst, nil
	}
	h.listMu.Unlock()
	claims, err := h.claimsUpTo(ctx, info.State.LastSeq, info.State.Msgs)
	if err != nil {
		return dst, err
	}
	names := make([]string, 0, len(claims))
	for _, c := range claims {
		names = append(names, c.name)
	}
	if uint64(len(names)) == info.State.Msgs {
		// Complete: nothing was deleted while it was read.
		h.listMu.Lock()
		h.listKey, h.listNames = key, names
		h.listMu.Unlock()
	}
	return append(dst, names...), nil
}

// listKey is what the claims stream says about its contents in one
// request: the set of claims is the same while it is.
type listKey struct{ lastSeq, msgs uint64 }

type claimInfo struct {
	name string
	node string
	seq  uint64
}

// claims reads the claims in sequence order: one request for the last
// sequence, then one per claim, each asking for the next message on the
// users' subjects. Claims made after the first request are left out, so
// what it returns is the set of claims at that moment, less those deleted
// before they were read: no name twice, never more than MaxUsers, even
// while users come and go.
func (h *Hub) claims(ctx context.Context) ([]claimInfo, error) {
	info, err := h.stream.Info(ctx)
	if err != nil {
		return nil, fmt.Errorf("read claims: %w", err)
	}
	return h.claimsUpTo(ctx, info.State.LastSeq, info.State.Msgs)
}

// claimsUpTo reads the claims up to sequence last; msgs is how many the
// stream held when last was read.
func (h *Hub) claimsUpTo(ctx context.Context, last, msgs uint64) ([]claimInfo, error) {
	var out []claimInfo
	for seq := uint64(1); msgs > 0 && seq <= last; {
		msg, err := h.stream.GetMsg(ctx, seq, jetstream.WithGetMsgSubject(h.usersPrefix+"*"))
		if errors.Is(err, jetstream.ErrMsgNotFound) {
			return out, nil
		}
		if err != nil {
			return nil, fmt.Errorf("read claims: %w", err)
		}
		if msg.Sequence > last {
			break
		}
		if name, ok := decodeName(strings.TrimPrefix(msg.Subject, h.usersPrefix)); ok {
			out = append(out, claimInfo{name: name, node: string(msg.Data), seq: msg.Sequence})
		}
		seq = msg.Sequence + 1
	}
	return out, nil
}

// Send delivers to a user of this node directly, and otherwise publishes
// a request on the recipient's subject from the caller's goroutine, so
// that one sender's requests leave in call order on the one connection.
func (h *Hub) Send(from, to string, msg []byte, done func(error)) {
	if in := h.here.Lookup([]byte(to)); in != nil {
		if in.Deliver(from, msg) {
			done(nil)
		} else {
			done(hub.ErrNoUser)
		}
		return
	}
	if h.fenced.Load() {
		done(hub.ErrNoUser)
		return
	}
	h.mu.Lock()
	var window chan struct{}
	if m := h.members[from]; m != nil {
		window = m.window
	}
	h.mu.Unlock()
	if window != nil {
		select {
		case window <- struct{}{}: // waits while the sender has Window SENDs in flight
		case <-h.quit:
			done(hub.ErrNoUser)
			return
		}
	}
	h.mu.Lock()
	h.nextToken++
	token := h.nextToken
	h.calls[token] = &call{done: done, deadline: time.Now().Add(h.cfg.RequestTimeout), window: window}
	h.mu.Unlock()

	data := make([]byte, 0, len(from)+1+len(msg))
	data = append(append(append(data, from...), ' '), msg...)
	err := h.nc.PublishMsg(&nats.Msg{
		Subject: h.deliverPrefix + encodeName(to),
		Reply:   h.replyPrefix + strconv.FormatUint(token, 10),
		Data:    data,
	})
	h.remote.Add(1)
	if err != nil {
		h.finish(token, hub.ErrNoUser)
	}
}

// finish gives a remote SEND its outcome, once.
func (h *Hub) finish(token uint64, err error) {
	h.mu.Lock()
	c := h.calls[token]
	delete(h.calls, token)
	h.mu.Unlock()
	if c == nil {
		return // timed out already, or a stray reply
	}
	if c.window != nil {
		<-c.window
	}
	c.done(err)
}

// onReply completes a remote SEND: an empty reply means queued; "gone",
// or the server's 503 when nobody listens on the subject, means no such
// user.
func (h *Hub) onReply(msg *nats.Msg) {
	token, err := strconv.ParseUint(msg.Subject[len(h.replyPrefix):], 10, 64)
	if err != nil {
		return
	}
	if len(msg.Data) == 0 && msg.Header.Get("Status") == "" {
		h.finish(token, nil)
		return
	}
	h.finish(token, hub.ErrNoUser)
}

// inboxLoop delivers requests for this node's users in arrival order.
// It never blocks on a user: Deliver only queues.
func (h *Hub) inboxLoop() {
	defer h.wg.Done()
	for {
		select {
		case <-h.quit:
			return
		case msg := <-h.inbox:
			h.deliver(msg)
		}
	}
}

func (h *Hub) deliver(msg *nats.Msg) {
	ok := false
	name, valid := decodeName(strings.TrimPrefix(msg.Subject, h.deliverPrefix))
	from, body, found := strings.Cut(string(msg.Data), " ")
	if valid && found && !h.fenced.Load() {
		if in := h.here.Lookup([]byte(name)); in != nil {
			ok = in.Deliver(from, []byte(body))
		}
	}
	if msg.Reply == "" {
		return
	}
	var reply []byte
	if !ok {
		reply = []byte(replyGone)
	}
	if err := h.nc.Publish(msg.Reply, reply); err != nil {
		h.log.Debug("reply to a SEND failed", "err", err)
	}
}

// timeoutLoop fails remote SENDs whose reply did not come in time.
func (h *Hub) timeoutLoop() {
	defer h.wg.Done()
	t := time.NewTicker(100 * time.Millisecond)
	defer t.Stop()
	for {
		select {
		case <-h.quit:
			h.failAll()
			return
		case now := <-t.C:
			var late []uint64
			h.mu.Lock()
			for token, c := range h.calls {
				if now.After(c.deadline) {
					late = append(late, token)
				}
			}
			h.mu.Unlock()
			for _, token := range late {
				h.finish(token, hub.ErrNoUser)
			}
		}
	}
}

func (h *Hub) failAll() {
	h.mu.Lock()
	var all []uint64
	for token := range h.calls {
		all = append(all, token)
	}
	h.mu.Unlock()
	for _, token := range all {
		h.finish(token, hub.ErrNoUser)
	}
}

// leaseLoop refreshes the node's lease every second; after a fence it
// takes a new lease, under a new node id, as soon as NATS answers.
func (h *Hub) leaseLoop(rev uint64) {
	defer h.wg.Done()
	period := h.leaseTTL / 3
	t := time.NewTicker(period)
	defer t.Stop()
	for {
		select {
		case <-h.quit:
			return
		case <-t.C:
		}
		ctx, cancel := context.WithTimeout(context.Background(), period)
		if h.fenced.Load() {
			if r, err := h.takeLease(ctx); err == nil {
				rev = r
				h.fenced.Store(false)
				h.log.Info("rejoined the cluster")
			}
			cancel()
			continue
		}
		h.mu.Lock()
		node := h.nodeID
		h.mu.Unlock()
		sent := time.Now()
		r, err := h.leases.Update(ctx, node, []byte(sent.UTC().Format(time.RFC3339)), rev)
		cancel()
		switch {
		case err == nil:
			rev = r
			h.lastOK.Store(sent.UnixNano())
		case errors.Is(err, jetstream.ErrKeyNotFound), errors.Is(err, jetstream.ErrKeyExists):
			h.fence("the node's lease is gone")
		default:
			h.log.Warn("lease refresh failed", "err", err)
		}
	}
}

// watchdog fences the node before its lease can expire: after that,
// other nodes may hand its users' names to someone else.
func (h *Hub) watchdog() {
	defer h.wg.Done()
	t := time.NewTicker(50 * time.Millisecond)
	defer t.Stop()
	for {
		select {
		case <-h.quit:
			return
		case <-t.C:
			if !h.fenced.Load() && time.Since(time.Unix(0, h.lastOK.Load())) > h.fenceAfter {
				h.fence("no lease refresh for " + h.fenceAfter.String())
			}
		}
	}
}

// fence evicts every user of this node and refuses logins until the lease
// loop rejoins.
func (h *Hub) fence(why string) {
	if h.fenced.Swap(true) {
		return
	}
	h.fences.Add(1) // after fenced is set, and before it is cleared again: see Join
	all := h.here.All()
	h.log.Warn("cut off from the cluster: closing this server's users", "why", why, "users", len(all))
	for _, in := range all {
		in.Evict()
	}
}

// sweepLoop frees the claims of nodes whose lease has expired. It looks
// at the set of leases four times a second, which is one cheap request,
// and reads the claims when that set changed, and every 10 s as a
// backstop.
func (h *Hub) sweepLoop() {
	defer h.wg.Done()
	t := time.NewTicker(250 * time.Millisecond)
	defer t.Stop()
	var seen map[string]bool
	var last time.Time
	for {
		select {
		case <-h.quit:
			return
		case now := <-t.C:
			if h.fenced.Load() {
				continue
			}
			ctx, cancel := context.WithTimeout(context.Background(), h.cfg.RequestTimeout)
			alive, err := h.liveNodes(ctx)
			cancel()
			if err != nil || (maps.Equal(alive, seen) && now.Sub(last) < 10*time.Second) {
				continue
			}
			h.sweep()
			seen, last = alive, now
		}
	}
}

// liveNodes returns the ids of the nodes that hold a lease. A lease that
// expired has no message any more; one given up at Close was purged.
func (h *Hub) liveNodes(ctx context.Context) (map[string]bool, error) {
	info, err := h.leaseStream.Info(ctx, jetstream.WithSubjectFilter(h.leasePrefix+"*"))
	if err != nil {
		return nil, err
	}
	alive := make(map[string]bool, len(info.State.Subjects))
	for subj := range info.State.Subjects {
		alive[strings.TrimPrefix(subj, h.leasePrefix)] = true
	}
	return alive, nil
}

// sweep deletes every claim whose node holds no lease. It reads the
// claims before the leases: a node takes its lease before it claims, so a
// claim read first has its node's lease in the later read unless the node
// is dead.
func (h *Hub) sweep() {
	ctx, cancel := context.WithTimeout(context.Background(), h.cfg.RequestTimeout)
	defer cancel()
	claims, err := h.claims(ctx)
	if err != nil || len(claims) == 0 {
		return
	}
	alive, err := h.liveNodes(ctx)
	if err != nil {
		return
	}
	for _, c := range claims {
		if !alive[c.node] {
			if err := h.stream.DeleteMsg(ctx, c.seq); err == nil {
				h.log.Info("freed the name of a dead node's user", "user", c.name, "node", c.node)
			}
		}
	}
}

// Close stops the hub's goroutines, fails the SENDs still waiting, and
// gives up the lease so other nodes free its remaining claims at once.
// Users still logged in are not evicted: the server ends them first.
func (h *Hub) Close() error {
	h.closeOne.Do(func() {
		close(h.quit)
		h.replies.Unsubscribe()
		h.wg.Wait()
		h.mu.Lock()
		node := h.nodeID
		members := h.members
		h.members = map[string]*member{}
		h.mu.Unlock()
		for _, m := range members {
			m.sub.Unsubscribe()
			h.unclaim(m.seq)
		}
		ctx, cancel := context.WithTimeout(context.Background(), h.cfg.RequestTimeout)
		defer cancel()
		h.leaseStream.Purge(ctx, jetstream.WithPurgeSubject(h.leasePrefix+node))
	})
	return nil
}

// versionAtLeast compares dotted versions such as "2.15.2" by number.
func versionAtLeast(v, want string) bool {
	parse := func(s string) [3]int {
		var out [3]int
		s, _, _ = strings.Cut(s, "-")
		for i, part := range strings.SplitN(s, ".", 3) {
			out[i], _ = strconv.Atoi(part)
		}
		return out
	}
	a, b := parse(v), parse(want)
	for i := range a {
		if a[i] != b[i] {
			return a[i] > b[i]
		}
	}
	return true
}
