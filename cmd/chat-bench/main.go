//go:build linux

// Command chat-bench is a load generator that measures the chat server,
// or nats-server doing the same work, over real loopback connections.
//
// Usage:
//
//	chat-bench pairs|fanin|conns [--addr 127.0.0.1:5378] [--target chat|nats] [flags]
//
// Shapes. pairs: n senders, sender s<i> sends m messages to its own
// receiver r<i>. fanin: n senders all send m messages to one receiver r0.
// conns: n idle users log in; the server's RSS per connection is reported,
// and LIST and SEND must still be answered.
//
// Workload. Every sender writes its messages in batches, one write each,
// on a tight loop over the raw wire (a client library with a channel per
// delivery would be the bottleneck). The window is how many messages a
// sender may have sent that its receiver has not yet seen; a batch is at
// most window minus those in flight, and a sender with a full window
// waits until its receiver reports deliveries. So the window, not the
// kernel's socket buffers, bounds the load on the server, and latency is
// measured at a steady queue depth instead of while queues grow. Each
// payload carries its sender, sequence number and send time (ns since the
// run's start, monotonic), padded to --size bytes; receivers parse
// deliveries in place from large reads, check that every message arrives
// exactly once and in order per sender, and record its latency. For chat,
// a reader per sender counts SEND-OKs, which must equal the messages sent.
//
// Targets. chat speaks our protocol; nats speaks the NATS text protocol
// (users become subjects, receivers subscribe before senders start), so
// the same workload compares the two servers. Both adapters sit behind the
// small wire interface; everything else is shared.
//
// The bench only dials loopback addresses and stops after --timeout,
// reporting what it measured so far and exiting non-zero. It exits
// non-zero whenever a check fails.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"net"
	"net/netip"
	"os"
	"os/signal"
	"strconv"
	"strings"
	"syscall"
	"time"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	err := run(ctx, os.Args[1:], os.Stdout, os.Stderr)
	if errors.Is(err, flag.ErrHelp) {
		return
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, "chat-bench:", err)
		os.Exit(1) // the only exit in the program
	}
}

// errChecksFailed is returned after printing a result whose checks failed.
var errChecksFailed = errors.New("checks failed")

// options are the command line's values.
type options struct {
	shape    string
	addr     string
	recvAddr string
	target   string
	n        int
	m        int64
	size     int
	window   int64
	timeout  time.Duration
	pids     []int
	json     bool
	srcAddrs int
	settle   time.Duration
}

// run runs one shape against one server and prints its result.
func run(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	opts, err := parseArgs(args, stdout)
	if err != nil {
		return err
	}
	w := map[string]wire{"chat": chatWire{}, "nats": natsWire{}}[opts.target]
	var res interface{ writeTable(io.Writer) error }
	var ok bool
	if opts.shape == "conns" {
		r := runConns(ctx, w, connsConfig{addr: opts.addr, conns: opts.n, srcAddrs: opts.srcAddrs, settle: opts.settle, timeout: opts.timeout}, opts.pids)
		res, ok = r, r.OK
	} else {
		r, err := runLoad(ctx, w, loadConfig{
			addr: opts.addr, recvAddr: opts.recvAddr, shape: shapes[opts.shape], senders: opts.n, messages: opts.m,
			size: opts.size, window: opts.window, timeout: opts.timeout,
		}, opts.pids)
		if err != nil {
			return err
		}
		res, ok = r, r.OK
	}
	if opts.json {
		err = writeJSON(stdout, res)
	} else {
		err = res.writeTable(stdout)
	}
	if err != nil {
		return err
	}
	if !ok {
		return errChecksFailed
	}
	return nil
}

const usageText = `Usage: chat-bench pairs|fanin|conns [flags]

  pairs  n senders, s<i> sends m messages to its own receiver r<i>
  fanin  n senders all send m messages to one receiver r0
  conns  n idle users log in; reports server RSS per connection once they
         have been idle for --settle

Flags:
`

// parseArgs reads the shape and the flags. -h prints the usage to stdout
// and returns flag.ErrHelp.
func parseArgs(args []string, stdout io.Writer) (options, error) {
	opts := options{addr: "127.0.0.1:5378", target: "chat", n: 8, m: 100_000, size: 64, window: 64, timeout: 60 * time.Second, srcAddrs: 1, settle: 3 * time.Second}
	fs := flag.NewFlagSet("chat-bench", flag.ContinueOnError)
	fs.SetOutput(io.Discard)
	fs.StringVar(&opts.addr, "addr", opts.addr, "server `host:port`; must be a loopback address")
	fs.StringVar(&opts.recvAddr, "recv-addr", opts.recvAddr, "pairs, fanin: receivers log in on this `host:port` instead (another server of a cluster: cross-server SENDs)")
	fs.StringVar(&opts.target, "target", opts.target, "server protocol: chat or nats")
	fs.IntVar(&opts.n, "n", opts.n, "senders (pairs, fanin) or connections (conns)")
	fs.Int64Var(&opts.m, "m", opts.m, "messages per sender")
	fs.IntVar(&opts.size, "size", opts.size, fmt.Sprintf("payload bytes (at least %d)", minPayload))
	fs.Int64Var(&opts.window, "window", opts.window, "messages a sender may have sent but not yet seen delivered")
	fs.DurationVar(&opts.timeout, "timeout", opts.timeout, "hard bound on the run; after it, partial results and a non-zero exit")
	fs.Func("pid", "server's process `id[,id...]`: report its CPU per message and RSS from /proc (several: their sum, as for the chat servers and NATS of a cluster)", func(v string) error {
		for _, f := range strings.Split(v, ",") {
			pid, err := strconv.Atoi(f)
			if err != nil || pid <= 0 {
				return fmt.Errorf("not a process id: %q", f)
			}
			opts.pids = append(opts.pids, pid)
		}
		return nil
	})
	fs.BoolVar(&opts.json, "json", false, "print the result as JSON")
	fs.IntVar(&opts.srcAddrs, "src-addrs", opts.srcAddrs, "conns: spread connections over 127.0.0.1 ... 127.0.0.N (beyond ~28k connections)")
	fs.DurationVar(&opts.settle, "settle", opts.settle, "conns: how long the users are idle before the server's RSS is read")
	help := func() (options, error) {
		fmt.Fprint(stdout, usageText)
		fs.SetOutput(stdout)
		fs.PrintDefaults()
		return opts, flag.ErrHelp
	}
	if len(args) == 0 {
		return opts, errors.New("no shape given: pairs, fanin or conns (see -h)")
	}
	opts.shape = args[0]
	if opts.shape == "-h" || opts.shape == "--help" || opts.shape == "help" {
		return help()
	}
	if err := fs.Parse(args[1:]); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return help()
		}
		return opts, err
	}
	if fs.NArg() > 0 {
		return opts, fmt.Errorf("unexpected argument %q (see -h)", fs.Arg(0))
	}
	return opts, opts.validate()
}

func (o options) validate() error {
	var errs []error
	check := func(ok bool, format string, args ...any) {
		if !ok {
			errs = append(errs, fmt.Errorf(format, args...))
		}
	}
	_, isLoad := shapes[o.shape]
	check(isLoad || o.shape == "conns", "unknown shape %q: want pairs, fanin or conns", o.shape)
	check(o.target == "chat" || o.target == "nats", "--target must be chat or nats, got %q", o.target)
	check(o.n >= 1 && o.n < maxSenders, "-n must be between 1 and %d, got %d", maxSenders-1, o.n)
	check(o.m >= 1 && o.m < maxMessages, "-m must be between 1 and %d, got %d", maxMessages-1, o.m)
	check(o.size >= minPayload && o.size <= 1<<20, "--size must be between %d and %d, got %d", minPayload, 1<<20, o.size)
	check(o.window >= 1, "--window must be at least 1, got %d", o.window)
	check(o.timeout > 0, "--timeout must be positive, got %v", o.timeout)
	check(o.srcAddrs >= 1 && o.srcAddrs <= 254, "--src-addrs must be between 1 and 254, got %d", o.srcAddrs)
	check(o.settle >= 0, "--settle must not be negative, got %v", o.settle)
	if o.recvAddr != "" {
		if err := checkLoopback(o.recvAddr); err != nil {
			errs = append(errs, err)
		}
	}
	if err := checkLoopback(o.addr); err != nil {
		errs = append(errs, err)
	} else if o.srcAddrs > 1 && !netip.MustParseAddrPort(o.addr).Addr().Is4() {
		errs = append(errs, fmt.Errorf("--src-addrs needs an IPv4 --addr, got %q", o.addr))
	}
	for _, pid := range o.pids {
		if _, err := procCPU(pid); err != nil {
			errs = append(errs, fmt.Errorf("--pid %d: %w", pid, err))
		}
	}
	return errors.Join(errs...)
}

// checkLoopback refuses any address but a loopback IP and port: the bench
// must never load a server on another machine.
func checkLoopback(addr string) error {
	ap, err := netip.ParseAddrPort(addr)
	if err != nil {
		if host, _, serr := net.SplitHostPort(addr); serr == nil && host == "localhost" {
			return fmt.Errorf("--addr %q: give the loopback IP (127.0.0.1 or [::1]), not a name", addr)
		}
		return fmt.Errorf("--addr %q: want a loopback ip:port such as 127.0.0.1:5378", addr)
	}
	if !ap.Addr().Unmap().IsLoopback() {
		return fmt.Errorf("--addr %q is not a loopback address: chat-bench only loads servers on this machine (127.0.0.0/8 or ::1)", addr)
	}
	return nil
}
