package chat

import (
	"errors"
	"fmt"
	"log/slog"
	"runtime"
	"strings"
	"time"

	"chatserver/internal/protocol"
)

// Config holds the server's limits. Every field has a default in
// DefaultConfig; a zero Config is not valid.
type Config struct {
	// MaxUsers is how many users may be logged in at once (0: none, every
	// login is answered BUSY). Connections that have not logged in do not
	// count.
	MaxUsers int
	// MaxConns is how many connections may be open at once, logged in or
	// not. A connection over it is answered BUSY and closed.
	MaxConns int
	// MaxLineBytes is the longest request line, not counting its "\n" and
	// the single "\r" before it.
	MaxLineBytes int
	// MaxConnsPerIP is how many connections one client network (an IPv4
	// address, or an IPv6 /64) may have open at once; 0 means no limit.
	// Loopback clients are not counted unless LimitLoopback.
	MaxConnsPerIP int
	// MaxUsersPerIP is how many users one client network may have logged
	// in at once; 0 means no limit (a class behind one NAT address is one
	// network).
	MaxUsersPerIP int
	// LimitLoopback applies the per-IP limits to loopback clients too.
	LimitLoopback bool
	// Rate is how many requests a second one connection may send on
	// average before the server holds back reading it (flood control);
	// Burst is how many it may send at once. Rate 0 turns it off.
	Rate  float64
	Burst int
	// FloodTimeout is how long in a row a connection may keep the server
	// holding back its requests before it is closed as a flood.
	FloodTimeout time.Duration
	// LoginTimeout is how long a connection may stay open without
	// logging in.
	LoginTimeout time.Duration
	// MaxPendingBytes caps each connection's outbound queue. A connection
	// whose queue would grow past it is closed as a slow consumer.
	MaxPendingBytes int
	// WriteTimeout is how long a socket may take no bytes while output
	// waits before the connection is closed as a slow consumer.
	WriteTimeout time.Duration
	// NoEventLoop serves plain TCP with two goroutines per connection, as
	// for TLS, instead of event loops. Slower and bigger; for comparison
	// and for platforms without epoll.
	NoEventLoop bool
	// EventLoops is how many event loops serve plain TCP; 0 means one per
	// two CPUs (at least one), which leaves the other CPUs to the kernel's
	// TCP work, TLS connections and the runtime.
	EventLoops int
	// Bots adds the built-in users echobot and delaybot (bots.go), logged
	// in before anyone else.
	Bots bool
	// Cluster, if set, joins the server to others that share its users
	// (cluster mode, package natscluster); it enforces MaxUsers across all
	// of them. Nil means a single server.
	Cluster Cluster
	// Logger receives the server's logs; nil discards them.
	Logger *slog.Logger
}

// DefaultConfig returns the defaults documented in the README.
func DefaultConfig() Config {
	return Config{
		MaxUsers:        16,
		MaxConns:        1024,
		MaxConnsPerIP:   128,
		Rate:            200,
		Burst:           1000,
		FloodTimeout:    30 * time.Second,
		MaxLineBytes:    1 << 20,
		LoginTimeout:    60 * time.Second,
		MaxPendingBytes: 4 << 20,
		WriteTimeout:    10 * time.Second,
	}
}

// deliveryOverhead is what a DELIVERY adds to a message: the header, the
// longest sender name and the separators. MaxPendingBytes must hold the
// largest reply a single request can cause, one delivery of a maximal line.
const deliveryOverhead = len("DELIVERY  \n") + protocol.MaxNameBytes

func (c Config) validate() error {
	var errs []string
	positive := func(name string, v int) {
		if v < 1 {
			errs = append(errs, fmt.Sprintf("%s must be at least 1, got %d", name, v))
		}
	}
	notNegative := func(name string, v float64) {
		if v < 0 {
			errs = append(errs, fmt.Sprintf("%s must not be negative, got %v", name, v))
		}
	}
	notNegative("max users", float64(c.MaxUsers)) // 0: every login is BUSY
	positive("max conns", c.MaxConns)
	positive("max line bytes", c.MaxLineBytes)
	notNegative("max conns per ip", float64(c.MaxConnsPerIP))
	notNegative("max users per ip", float64(c.MaxUsersPerIP))
	notNegative("rate", c.Rate)
	if c.Rate > 0 && c.Burst < 1 {
		errs = append(errs, fmt.Sprintf("burst must be at least 1 when rate is set, got %d", c.Burst))
	}
	if c.Rate > 0 && c.FloodTimeout <= 0 {
		errs = append(errs, fmt.Sprintf("flood timeout must be positive when rate is set, got %v", c.FloodTimeout))
	}
	notNegative("event loops", float64(c.EventLoops))
	if c.LoginTimeout <= 0 {
		errs = append(errs, fmt.Sprintf("login timeout must be positive, got %v", c.LoginTimeout))
	}
	if c.WriteTimeout <= 0 {
		errs = append(errs, fmt.Sprintf("write timeout must be positive, got %v", c.WriteTimeout))
	}
	if min := c.MaxLineBytes + deliveryOverhead; c.MaxPendingBytes < min {
		errs = append(errs, fmt.Sprintf("max pending bytes must hold one delivery of a maximal line (at least %d), got %d", min, c.MaxPendingBytes))
	}
	if len(errs) == 0 {
		return nil
	}
	return errors.New(strings.Join(errs, "; ")) // one line, for the command line
}

// EventLoopCount is how many event loops serve plain TCP: EventLoops, or
// its default; 0 with NoEventLoop, or where there are no event loops.
func (c Config) EventLoopCount() int {
	if c.NoEventLoop || !haveEventLoops {
		return 0
	}
	if c.EventLoops > 0 {
		return c.EventLoops
	}
	return max(1, runtime.GOMAXPROCS(0)/2)
}
