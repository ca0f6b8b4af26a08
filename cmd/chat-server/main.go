// Command chat-server runs the chat server.
//
// Usage: chat-server [-a address] [-p port] [flags]; chat-server -h lists
// every flag with its default.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"os/signal"
	"strconv"
	"strings"
	"syscall"
	"time"

	"chatserver/internal/chat"
)

// shutdownTimeout bounds how long the server waits for its connections to
// end after SIGINT or SIGTERM.
const shutdownTimeout = 5 * time.Second

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	err := run(ctx, os.Args[1:], os.Stdout, os.Stderr)
	if errors.Is(err, flag.ErrHelp) {
		return
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, "chat-server:", err)
		os.Exit(1) // the only exit in the program
	}
}

// options are the command line's values.
type options struct {
	address  string
	port     int
	logLevel slog.Level
	chat     chat.Config
}

// run starts the server and serves until ctx is cancelled.
func run(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	opts, err := parseFlags(args, stdout)
	if err != nil {
		return err
	}
	opts.chat.Logger = slog.New(slog.NewTextHandler(stderr, &slog.HandlerOptions{Level: opts.logLevel}))
	srv, err := chat.NewServer(opts.chat)
	if err != nil {
		return err
	}
	addr := net.JoinHostPort(opts.address, strconv.Itoa(opts.port))
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return fmt.Errorf("cannot listen on %s: %w", addr, errors.Unwrap(err))
	}
	_, port, _ := net.SplitHostPort(ln.Addr().String())
	fmt.Fprintf(stdout, "Server is on %s\n", net.JoinHostPort(opts.address, port))

	served := make(chan error, 1)
	go func() { served <- srv.Serve(ln) }()
	select {
	case err := <-served:
		return err // the listener failed on its own
	case <-ctx.Done():
	}
	shutdownCtx, cancel := context.WithTimeout(context.Background(), shutdownTimeout)
	defer cancel()
	if err := srv.Shutdown(shutdownCtx); err != nil {
		return err
	}
	if err := <-served; !errors.Is(err, chat.ErrServerClosed) {
		return err
	}
	return nil
}

// parseFlags reads the command line. -h prints the usage to stdout and
// returns flag.ErrHelp; a bad flag returns one error line.
func parseFlags(args []string, stdout io.Writer) (options, error) {
	opts := options{address: "0.0.0.0", port: 5378, chat: chat.DefaultConfig()}
	fs := flag.NewFlagSet("chat-server", flag.ContinueOnError)
	fs.SetOutput(io.Discard) // errors are returned, usage is printed on -h only
	c := &opts.chat
	for _, name := range []string{"a", "address"} {
		fs.StringVar(&opts.address, name, opts.address, "address to listen on")
	}
	for _, name := range []string{"p", "port"} {
		fs.IntVar(&opts.port, name, opts.port, "TCP port to listen on (0: any free port)")
	}
	fs.IntVar(&c.MaxUsers, "max-users", c.MaxUsers, "users logged in at once")
	fs.IntVar(&c.MaxConns, "max-conns", c.MaxConns, "open connections at once, logged in or not")
	fs.IntVar(&c.MaxLineBytes, "max-line-bytes", c.MaxLineBytes, "longest request line in bytes")
	fs.DurationVar(&c.LoginTimeout, "login-timeout", c.LoginTimeout, "time a connection has to log in")
	fs.IntVar(&c.MaxPendingBytes, "max-pending-bytes", c.MaxPendingBytes, "outbound queue per connection in bytes; a client over it is a slow consumer")
	fs.DurationVar(&c.WriteTimeout, "write-timeout", c.WriteTimeout, "longest stall of one socket write before the client is a slow consumer")
	fs.TextVar(&opts.logLevel, "log-level", opts.logLevel, "log level: debug, info, warn or error")

	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			printUsage(fs, stdout)
		}
		return opts, err
	}
	if fs.NArg() > 0 {
		return opts, fmt.Errorf("unexpected argument %q (see -h)", fs.Arg(0))
	}
	if opts.port < 0 || opts.port > 65535 {
		return opts, fmt.Errorf("port must be between 0 and 65535, got %d", opts.port)
	}
	return opts, nil
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
		fmt.Fprintf(w, "  %-22s %s (default %s)\n", names, f.Usage, strings.TrimSpace(f.DefValue))
	})
}
