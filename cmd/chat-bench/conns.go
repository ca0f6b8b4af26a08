//go:build linux

package main

import (
	"context"
	"fmt"
	"io"
	"net"
	"sync"
	"sync/atomic"
	"syscall"
	"text/tabwriter"
	"time"
)

// dialers is how many connections the conns shape opens at once.
const dialers = 32

// connsConfig is one conns run.
type connsConfig struct {
	addr     string
	conns    int
	srcAddrs int           // spread over 127.0.0.1 ... 127.0.0.<srcAddrs>
	settle   time.Duration // how long the users are idle before the server's RSS is read
	timeout  time.Duration
}

// connsResult is what a conns run measured. RSS figures are in bytes.
type connsResult struct {
	Target      string   `json:"target"`
	Conns       int      `json:"conns"`
	Opened      int      `json:"opened"`
	SrcAddrs    int      `json:"src_addrs"`
	Settle      float64  `json:"settle_seconds"`
	OpenSeconds float64  `json:"open_seconds"`
	RSSBefore   *int64   `json:"server_rss_before_bytes,omitempty"`
	RSSAfter    *int64   `json:"server_rss_after_bytes,omitempty"`
	RSSPerConn  *float64 `json:"server_rss_per_conn_bytes,omitempty"`   // (after - before) / conns
	RSSOverConn *float64 `json:"server_rss_over_conns_bytes,omitempty"` // after / conns
	ListUsers   *int     `json:"list_users,omitempty"`                  // chat: users in LIST-OK
	ListMs      *float64 `json:"list_ms,omitempty"`                     // chat: LIST round trip
	SendMs      float64  `json:"send_ms"`                               // a message to the first user, to its delivery
	Error       string   `json:"error,omitempty"`
	OK          bool     `json:"ok"`
}

// runConns opens cfg.conns idle users, reads the server's RSS once they
// have been idle for cfg.settle, checks
// that the server still answers LIST (chat) and delivers a message to the
// first user, and closes them all.
func runConns(ctx context.Context, w wire, cfg connsConfig, pids []int) *connsResult {
	res := &connsResult{Target: w.name(), Conns: cfg.conns, SrcAddrs: cfg.srcAddrs, Settle: cfg.settle.Seconds()}
	ctx, cancel := context.WithTimeoutCause(ctx, cfg.timeout, fmt.Errorf("timed out after %v", cfg.timeout))
	defer cancel()
	raiseNoFile()

	before := sample(pids)
	start := time.Now()
	conns, err := openIdle(ctx, w, cfg)
	defer func() {
		for _, c := range conns {
			if c != nil {
				c.close()
			}
		}
	}()
	res.OpenSeconds = time.Since(start).Seconds()
	for _, c := range conns {
		if c != nil {
			res.Opened++
		}
	}
	select { // idle users: a server may give memory back once quiet
	case <-time.After(cfg.settle):
	case <-ctx.Done():
	}
	after := sample(pids)
	if before.server && after.server && res.Opened > 0 {
		// Per connection actually open: a run cut short still measures.
		d := float64(after.serverRSS-before.serverRSS) / float64(res.Opened)
		o := float64(after.serverRSS) / float64(res.Opened)
		res.RSSBefore, res.RSSAfter, res.RSSPerConn, res.RSSOverConn = &before.serverRSS, &after.serverRSS, &d, &o
	}
	if err == nil {
		err = probe(ctx, w, cfg, conns[0], res)
	}
	if err != nil {
		res.Error = err.Error()
	}
	res.OK = err == nil
	return res
}

// openIdle opens and logs in cfg.conns connections as u0, u1, ...; on
// failure it returns those it opened and the first error.
func openIdle(ctx context.Context, w wire, cfg connsConfig) ([]*conn, error) {
	conns := make([]*conn, cfg.conns)
	ctx, cancel := context.WithCancelCause(ctx)
	defer cancel(nil)
	var next atomic.Int64
	var wg sync.WaitGroup
	for range min(dialers, cfg.conns) {
		wg.Go(func() {
			for ctx.Err() == nil {
				i := int(next.Add(1) - 1)
				if i >= cfg.conns {
					return
				}
				var local *net.TCPAddr
				if cfg.srcAddrs > 1 {
					local = &net.TCPAddr{IP: net.IPv4(127, 0, 0, byte(1+i%cfg.srcAddrs))}
				}
				c, err := dial(ctx, cfg.addr, local)
				if err == nil {
					conns[i] = c
					err = withDeadline(ctx, c, func() error { return w.handshake(c, userName("u", i), true) })
				}
				if err != nil {
					cancel(fmt.Errorf("connection %d of %d: %w", i+1, cfg.conns, err))
				}
			}
		})
	}
	wg.Wait()
	if err := context.Cause(ctx); err != context.Canceled && err != nil {
		return conns, err
	}
	return conns, nil
}

// probe checks that the loaded server still answers: LIST on a new
// connection (chat only) and a message from it to u0.
func probe(ctx context.Context, w wire, cfg connsConfig, u0 *conn, res *connsResult) error {
	c, err := dial(ctx, cfg.addr, nil)
	if err != nil {
		return fmt.Errorf("probe: %w", err)
	}
	defer c.close()
	return withDeadline(ctx, c, func() error {
		if err := w.handshake(c, "probe", false); err != nil {
			return fmt.Errorf("probe: %w", err)
		}
		if l, ok := w.(lister); ok {
			t := time.Now()
			n, err := l.list(c)
			if err != nil {
				return fmt.Errorf("probe: %w", err)
			}
			ms := msSince(t)
			res.ListUsers, res.ListMs = &n, &ms
			if n != cfg.conns+1 {
				return fmt.Errorf("probe: LIST has %d users, want %d", n, cfg.conns+1)
			}
		}
		t := time.Now()
		head, tail := w.frame(userName("u", 0), minPayload)
		msg := append(appendPayload(head, 0, 0, 0, minPayload), tail...)
		if err := c.write(msg); err != nil {
			return fmt.Errorf("probe: send: %w", err)
		}
		deadline := time.Now().Add(handshakeTimeout)
		if d, ok := ctx.Deadline(); ok && d.Before(deadline) {
			deadline = d
		}
		if w.acked() {
			if _, err := c.await(w, true, deadline); err != nil {
				return fmt.Errorf("probe: waiting for the ack: %w", err)
			}
		}
		got, err := u0.await(w, false, deadline)
		if err != nil {
			return fmt.Errorf("probe: waiting for u0's delivery: %w", err)
		}
		res.SendMs = msSince(t)
		if string(got) != string(msg[len(head):len(msg)-len(tail)]) {
			return fmt.Errorf("probe: u0 got %q", got)
		}
		return nil
	})
}

func msSince(t time.Time) float64 { return float64(time.Since(t)) / float64(time.Millisecond) }

// raiseNoFile lifts the bench's open-file limit to its hard limit, for
// the conns shape's many sockets.
func raiseNoFile() {
	var lim syscall.Rlimit
	if syscall.Getrlimit(syscall.RLIMIT_NOFILE, &lim) == nil && lim.Cur < lim.Max {
		lim.Cur = lim.Max
		_ = syscall.Setrlimit(syscall.RLIMIT_NOFILE, &lim)
	}
}

// writeTable prints r for a person.
func (r *connsResult) writeTable(w io.Writer) error {
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	row := func(k, format string, args ...any) { fmt.Fprintf(tw, "%s\t"+format+"\n", append([]any{k}, args...)...) }
	row("target", "%s", r.Target)
	row("shape", "conns: %d idle users from %d source addresses", r.Conns, r.SrcAddrs)
	row("opened", "%d in %.2fs", r.Opened, r.OpenSeconds)
	if r.RSSPerConn != nil {
		row("server RSS", "%.1f MiB before, %.1f MiB after, idle %gs", float64(*r.RSSBefore)/(1<<20), float64(*r.RSSAfter)/(1<<20), r.Settle)
		row("RSS per conn", "%.0f bytes (after-before)/N, %.0f bytes after/N", *r.RSSPerConn, *r.RSSOverConn)
	}
	if r.ListUsers != nil {
		row("LIST", "%d users in %.2fms", *r.ListUsers, *r.ListMs)
	}
	if r.Error == "" || r.SendMs > 0 {
		row("SEND", "delivered in %.2fms", r.SendMs)
	}
	if r.Error != "" {
		row("stopped", "%s", r.Error)
	}
	row("checks", "%s", okText(r.OK))
	return tw.Flush()
}
