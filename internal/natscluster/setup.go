package natscluster

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
)

// minServerVersion: nats.go's jetstream package is written against 2.10
// and later (DiscardNewPerSubject itself arrived in 2.9.1).
const minServerVersion = "2.10.0"

// MaxMessageFor is the longest message a SEND can carry through a NATS
// server whose max payload is maxPayload.
func MaxMessageFor(maxPayload int64) int {
	return int(maxPayload) - frameOverhead
}

// checkServer checks what New needs of the NATS server.
func checkServer(ctx context.Context, nc *nats.Conn, cfg Config) error {
	if v := nc.ConnectedServerVersion(); !versionAtLeast(v, minServerVersion) {
		return fmt.Errorf("NATS server %s is too old: cluster mode needs %s or later", v, minServerVersion)
	}
	js, err := jetstream.New(nc)
	if err != nil {
		return fmt.Errorf("jetstream: %w", err)
	}
	if _, err := js.AccountInfo(ctx); err != nil {
		if errors.Is(err, jetstream.ErrJetStreamNotEnabled) || errors.Is(err, jetstream.ErrJetStreamNotEnabledForAccount) {
			return errors.New("JetStream is not enabled on the NATS server: start it with -js")
		}
		return fmt.Errorf("JetStream account info: %w", err)
	}
	if fits := MaxMessageFor(nc.MaxPayload()); cfg.MaxMessageBytes > fits {
		return fmt.Errorf("NATS max payload is %d bytes, room for messages of up to %d bytes, not %d: raise max_payload on the NATS server or lower --max-line-bytes", nc.MaxPayload(), fits, cfg.MaxMessageBytes)
	}
	return nil
}

// replicas resolves Config.Replicas' default.
func (c *Cluster) replicas() int {
	if c.cfg.Replicas > 0 {
		return c.cfg.Replicas
	}
	if c.nc.ConnectedClusterName() != "" {
		return 3
	}
	return 1
}

// ensureObjects creates the claims stream and the lease bucket, or checks
// and updates them; again after NATS lost them (restarted without
// storage, say).
func (c *Cluster) ensureObjects(ctx context.Context) error {
	replicas := c.replicas()
	var objs objects
	var err error
	if objs.claims, err = whilePlacing(ctx, func() (jetstream.Stream, error) { return c.ensureStream(ctx, replicas) }); err != nil {
		return err
	}
	bucket := c.cfg.Cluster + "_nodes"
	if objs.leases, err = whilePlacing(ctx, func() (jetstream.KeyValue, error) {
		return c.js.CreateOrUpdateKeyValue(ctx, jetstream.KeyValueConfig{
			Bucket:   bucket,
			TTL:      leaseTTL,
			History:  1,
			Storage:  jetstream.FileStorage,
			Replicas: replicas,
		})
	}); err != nil {
		return fmt.Errorf("lease bucket %s: %w%s", bucket, err, replicasHint(err))
	}
	if objs.leaseStream, err = c.js.Stream(ctx, "KV_"+bucket); err != nil {
		return fmt.Errorf("lease bucket %s: %w", bucket, err)
	}
	c.objs.Store(&objs)
	return nil
}

// ensureStream creates the claims stream, or checks that an existing one
// has the same user limit and gives it the replicas asked for.
func (c *Cluster) ensureStream(ctx context.Context, replicas int) (jetstream.Stream, error) {
	name := c.cfg.Cluster + "_users"
	cfg := jetstream.StreamConfig{
		Name:                 name,
		Subjects:             []string{c.usersPrefix + "*"},
		MaxMsgsPerSubject:    1,
		MaxMsgs:              int64(c.cfg.MaxUsers),
		Discard:              jetstream.DiscardNew,
		DiscardNewPerSubject: true,
		Storage:              jetstream.FileStorage,
		Replicas:             replicas,
	}
	s, err := c.js.CreateStream(ctx, cfg)
	if errors.Is(err, jetstream.ErrStreamNameAlreadyInUse) {
		if s, err = c.js.Stream(ctx, name); err == nil {
			have := s.CachedInfo().Config
			switch {
			case have.MaxMsgs != int64(c.cfg.MaxUsers):
				return nil, fmt.Errorf("max users %d differs from the cluster's %d (stream %s): every server of a cluster needs the same --max-users", c.cfg.MaxUsers, have.MaxMsgs, name)
			case have.Replicas != replicas:
				c.log.Info("changing the replicas of the claims stream", "stream", name, "from", have.Replicas, "to", replicas)
				s, err = c.js.UpdateStream(ctx, cfg)
			}
		}
	}
	if err != nil {
		return nil, fmt.Errorf("stream %s: %w%s", name, err, replicasHint(err))
	}
	return s, nil
}

// errCodeNoPeers is JetStream's "no suitable peers for placement": it
// cannot place a stream's replicas on servers that are current right now.
const errCodeNoPeers jetstream.ErrorCode = 10005

// placingRetry is the pause between two tries to place a stream.
const placingRetry = 250 * time.Millisecond

// whilePlacing calls create until it stops failing for lack of peers, or
// ctx ends. A NATS cluster that just started, or whose servers were slow
// to answer each other (a loaded machine), has too few current peers for
// a moment; a server that starts then should wait, not fail.
func whilePlacing[T any](ctx context.Context, create func() (T, error)) (T, error) {
	for {
		v, err := create()
		var apiErr *jetstream.APIError
		if !errors.As(err, &apiErr) || apiErr.ErrorCode != errCodeNoPeers {
			return v, err
		}
		select {
		case <-ctx.Done():
			return v, err
		case <-time.After(placingRetry):
		}
	}
}

// replicasHint explains a failure to place the replicas asked for.
func replicasHint(err error) string {
	if msg := err.Error(); strings.Contains(msg, "insufficient resources") || strings.Contains(msg, "replicas") || strings.Contains(msg, "no suitable peers") {
		return " (set --nats-replicas to what the NATS cluster can hold)"
	}
	return ""
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
