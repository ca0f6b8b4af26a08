package main

import (
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"net"
	"path"
	"strconv"
	"strings"

	"chatserver/internal/buildinfo"
	"chatserver/internal/chat"
)

// options are the command line's values: the chat server's limits, and
// the listeners and logging the process puts around it.
type options struct {
	address        string
	port           int
	tlsPort        optionalPort // portOff: no TLS listener
	tlsCert        string
	tlsKey         string
	metricsAddress string       // "": no metrics listener
	webPort        optionalPort // portOff: no web chat
	webInsecure    bool
	webOrigins     []string
	natsURL        string // "": a single server, no NATS
	clusterName    string
	natsReplicas   int  // 0: automatic
	lineCapSet     bool // --max-line-bytes was given, so it is not lowered to fit NATS
	logLevel       slog.Level
	logFormat      logFormat
	chat           chat.Config
}

// parseFlags reads the command line. -h prints the usage to stdout and
// returns flag.ErrHelp, and so does --version, which prints the version;
// a bad flag returns one error line.
func parseFlags(args []string, stdout io.Writer) (options, error) {
	opts := options{address: "0.0.0.0", port: 5378, tlsPort: portOff, webPort: portOff, logFormat: "text", clusterName: "chat", chat: chat.DefaultConfig()}
	fs := flag.NewFlagSet("chat-server", flag.ContinueOnError)
	fs.SetOutput(io.Discard) // errors are returned, usage is printed on -h only
	c := &opts.chat
	for _, name := range []string{"a", "address"} {
		fs.StringVar(&opts.address, name, opts.address, "address to listen on")
	}
	for _, name := range []string{"p", "port"} {
		fs.IntVar(&opts.port, name, opts.port, "TCP port to listen on (0: any free port)")
	}
	fs.IntVar(&c.MaxUsers, "max-users", c.MaxUsers, "users logged in at once (0: none, every login gets BUSY)")
	fs.BoolVar(&c.Bots, "bots", c.Bots, "add the built-in users echobot (sends every message back) and delaybot (sends it back twice, each line in pieces over a second), for testing clients")
	fs.IntVar(&c.MaxConns, "max-conns", c.MaxConns, "open connections at once, logged in or not")
	fs.IntVar(&c.MaxConnsPerIP, "max-conns-per-ip", c.MaxConnsPerIP, "open connections at once from one IPv4 address or IPv6 /64 (0: no limit)")
	fs.IntVar(&c.MaxUsersPerIP, "max-users-per-ip", c.MaxUsersPerIP, "users logged in at once from one IPv4 address or IPv6 /64 (0: no limit)")
	fs.BoolVar(&c.LimitLoopback, "limit-loopback", c.LimitLoopback, "apply the per-IP limits to loopback clients too")
	fs.Float64Var(&c.Rate, "rate", c.Rate, "requests a second one connection may send on average before its reading is held back (0: no limit)")
	fs.IntVar(&c.Burst, "burst", c.Burst, "requests one connection may send at once, above --rate")
	fs.DurationVar(&c.FloodTimeout, "flood-timeout", c.FloodTimeout, "how long in a row a connection may keep the server holding back its requests before it is closed as a flood")
	fs.IntVar(&c.MaxLineBytes, "max-line-bytes", c.MaxLineBytes, "longest request line in bytes")
	fs.DurationVar(&c.LoginTimeout, "login-timeout", c.LoginTimeout, "time a connection has to log in")
	fs.IntVar(&c.MaxPendingBytes, "max-pending-bytes", c.MaxPendingBytes, "outbound queue per connection in bytes; a client over it is a slow consumer")
	fs.DurationVar(&c.WriteTimeout, "write-timeout", c.WriteTimeout, "how long a socket may take no bytes while output waits before the client is a slow consumer")
	fs.IntVar(&c.EventLoops, "event-loops", c.EventLoops, "event loops serving plain TCP (0: one per two CPUs)")
	fs.BoolVar(&c.NoEventLoop, "no-event-loop", c.NoEventLoop, "serve plain TCP with two goroutines per connection instead (slower, bigger; for comparison)")
	fs.TextVar(&opts.logLevel, "log-level", opts.logLevel, "log level: debug, info, warn or error (debug logs every line of every connection, message bodies included: see --trace)")
	fs.BoolFunc("trace", "log every request line and every line written, of every connection, with why a request was refused (the same as --log-level debug); message bodies appear in the log only then", func(string) error {
		opts.logLevel = min(opts.logLevel, slog.LevelDebug)
		return nil
	})
	fs.TextVar(&opts.logFormat, "log-format", opts.logFormat, "log format: text or json")
	fs.TextVar(&opts.tlsPort, "tls-port", opts.tlsPort, "TLS port on the same address, same protocol and users (0: any free port); needs --tls-cert and --tls-key")
	fs.StringVar(&opts.tlsCert, "tls-cert", opts.tlsCert, "PEM certificate file (chain) for --tls-port and the web chat (HTTPS); reread on SIGHUP")
	fs.StringVar(&opts.tlsKey, "tls-key", opts.tlsKey, "PEM private key file for --tls-cert; reread on SIGHUP")
	fs.TextVar(&opts.webPort, "web-port", opts.webPort, "serve the web chat (a page, and a WebSocket for it) on this port of the same address (0: any free port); HTTPS with --tls-cert")
	fs.BoolVar(&opts.webInsecure, "web-insecure", opts.webInsecure, "serve the web chat over plain HTTP on a non-loopback address (without it, plain HTTP listens on 127.0.0.1 only)")
	fs.Func("web-origin", "allow pages of this origin host pattern (say *.example.com) to use the web chat's WebSocket; repeatable", func(v string) error {
		if _, err := path.Match(v, ""); err != nil {
			return fmt.Errorf("bad pattern: %w", err)
		}
		opts.webOrigins = append(opts.webOrigins, v)
		return nil
	})
	fs.StringVar(&opts.metricsAddress, "metrics-address", opts.metricsAddress, "host:port for HTTP /metrics (Prometheus) and /healthz")
	fs.StringVar(&opts.natsURL, "nats-url", opts.natsURL, "cluster mode: NATS server (with JetStream) that the servers of the cluster share, as nats://host:port")
	fs.StringVar(&opts.clusterName, "cluster-name", opts.clusterName, "cluster mode: prefix of every NATS subject, stream and bucket; servers with the same name form one cluster")
	fs.IntVar(&opts.natsReplicas, "nats-replicas", opts.natsReplicas, "cluster mode: copies NATS keeps of the names and leases (0: 3 on a NATS cluster, else 1)")

	version := fs.Bool("version", false, "print the version and exit")
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			printUsage(fs, stdout)
		}
		return opts, err
	}
	if *version {
		fmt.Fprintln(stdout, buildinfo.Version("chat-server"))
		return opts, flag.ErrHelp // done, successfully, as after -h
	}
	if fs.NArg() > 0 {
		return opts, fmt.Errorf("unexpected argument %q (see -h)", fs.Arg(0))
	}
	fs.Visit(func(f *flag.Flag) {
		if f.Name == "max-line-bytes" {
			opts.lineCapSet = true
		}
	})
	return opts, opts.validate()
}

// validate checks what no single flag can: ranges and flags that need
// each other. chat.NewServer checks the limits.
func (o *options) validate() error {
	if err := checkPort("port", o.port); err != nil {
		return err
	}
	switch {
	case o.natsURL != "" && o.chat.MaxUsers == 0:
		return errors.New("--max-users 0 is for a single server: a cluster needs room for at least one user")
	case (o.tlsCert == "") != (o.tlsKey == ""):
		return errors.New("--tls-cert and --tls-key go together")
	case o.tls() && o.tlsCert == "":
		return errors.New("--tls-port needs --tls-cert and --tls-key")
	case o.tlsCert != "" && !o.tls() && !o.web():
		return errors.New("--tls-cert and --tls-key need --tls-port or --web-port")
	case !o.web() && (o.webInsecure || len(o.webOrigins) > 0):
		return errors.New("--web-insecure and --web-origin need --web-port")
	}
	if o.tls() {
		if err := checkPort("tls port", int(o.tlsPort)); err != nil {
			return err
		}
	}
	if o.web() {
		return checkPort("web port", int(o.webPort))
	}
	return nil
}

// tls reports whether a TLS listener was asked for.
func (o *options) tls() bool {
	return o.tlsPort != portOff
}

// web reports whether the web chat was asked for.
func (o *options) web() bool {
	return o.webPort != portOff
}

// webHost is where the web chat listens: --address, unless that is not a
// loopback address and the chat would go over plain HTTP without
// --web-insecure: then loopback only, so that names and messages do not
// cross a network in the clear unless asked to.
func (o *options) webHost() string {
	if o.tlsCert != "" || o.webInsecure || isLoopback(o.address) {
		return o.address
	}
	return "127.0.0.1"
}

func isLoopback(host string) bool {
	if host == "localhost" {
		return true
	}
	ip := net.ParseIP(host)
	return ip != nil && ip.IsLoopback()
}

func checkPort(name string, port int) error {
	if port < 0 || port > 65535 {
		return fmt.Errorf("%s must be between 0 and 65535, got %d", name, port)
	}
	return nil
}

// optionalPort is a port number or portOff, which -h shows as "off"
// rather than a magic number.
type optionalPort int

const portOff optionalPort = -1

func (p optionalPort) MarshalText() ([]byte, error) {
	if p == portOff {
		return []byte("off"), nil
	}
	return strconv.AppendInt(nil, int64(p), 10), nil
}

func (p *optionalPort) UnmarshalText(b []byte) error {
	n, err := strconv.Atoi(string(b))
	if err != nil {
		return errors.New("not a port number")
	}
	*p = optionalPort(n)
	return nil
}

// logFormat is --log-format: "text" (slog's key=value) or "json" (one
// object per line, for log shippers).
type logFormat string

func (f logFormat) MarshalText() ([]byte, error) { return []byte(f), nil }

func (f *logFormat) UnmarshalText(b []byte) error {
	switch s := logFormat(b); s {
	case "text", "json":
		*f = s
		return nil
	}
	return errors.New("must be text or json")
}

// newLogger returns the process's logger, writing to w.
func newLogger(w io.Writer, format logFormat, level slog.Level) *slog.Logger {
	o := &slog.HandlerOptions{Level: level}
	if format == "json" {
		return slog.New(slog.NewJSONHandler(w, o))
	}
	return slog.New(slog.NewTextHandler(w, o))
}

// printUsage lists every flag with its default, short and long names
// together.
func printUsage(fs *flag.FlagSet, w io.Writer) {
	fmt.Fprintln(w, "Usage: chat-server [flags]")
	fmt.Fprintln(w, "\nFlags:")
	short := map[string]string{"address": "a", "port": "p"}
	fs.VisitAll(func(f *flag.Flag) {
		if len(f.Name) == 1 {
			return // listed with its long name
		}
		names := "--" + f.Name
		if s, ok := short[f.Name]; ok {
			names = "-" + s + ", " + names
		}
		def := strings.TrimSpace(f.DefValue)
		if def == "" {
			def = "none"
		}
		fmt.Fprintf(w, "  %-22s %s (default %s)\n", names, f.Usage, def)
	})
}
