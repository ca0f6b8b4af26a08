// Command chat-client is a line-based terminal client for the chat server.
//
// Usage: chat-client [-a address] [-p port]. It connects, asks for a login
// name, and then reads one command per line: "!who" lists the users
// online, "@<name> <message>" sends a private message, "!quit" (or the end
// of input) quits. Messages for the user are printed as soon as they
// arrive, as "From <name>: <message>".
//
// On a terminal it is a line editor: a message that arrives while the
// user types is printed above the line being typed, which is redrawn
// intact. On a pipe it reads and writes plain lines, byte for byte.
//
// Goroutines: the main goroutine runs the session (session.go: prompts,
// commands and their replies); one goroutine reads the input (console.go),
// one prints deliveries, and the client library's own two run the
// connection. Every line of output is printed whole, so lines never
// interleave.
package main

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"flag"
	"fmt"
	"io"
	"net"
	"os"
	"os/signal"
	"strconv"
	"syscall"
	"time"

	"chatserver/internal/buildinfo"
	"chatserver/internal/client"
)

// connectTimeout bounds the connection attempt.
const connectTimeout = 10 * time.Second

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	err := run(ctx, os.Args[1:], os.Stdin, os.Stdout, os.Stderr)
	stop()
	if err != nil && !errors.Is(err, flag.ErrHelp) {
		fmt.Fprintln(os.Stderr, "chat-client:", err)
		os.Exit(1) // the only exit in the program
	}
}

// options are the command line's values.
type options struct {
	address string
	port    int
	tls     bool   // connect over TLS
	tlsCA   string // PEM file of the CA to trust instead of the system's
}

// run runs the client until the user quits (nil), the input ends (nil),
// ctx is cancelled (nil: an interrupt is a way to quit), or the session
// cannot go on (an error: no connection, a full server, the server gone).
// What the user must read is printed on stdout; the returned error only
// adds detail.
//
// The goroutine that reads stdin may still be blocked in a read when run
// returns: no io.Reader can be interrupted. main exits right after.
func run(ctx context.Context, args []string, stdin io.Reader, stdout, stderr io.Writer) error {
	opts, err := parseFlags(args, stdout)
	if err != nil {
		return err
	}
	conn, err := connect(ctx, opts)
	if err != nil {
		fmt.Fprintln(stdout, textConnectError)
		return fmt.Errorf("connect: %w", err)
	}
	out := newConsole(stdin, stdout)
	defer out.close()
	s := &session{opts: opts, out: out, input: out.lines()}
	s.attach(conn)
	defer s.detach()

	loggedIn, err := s.login(ctx)
	if err != nil || !loggedIn {
		return err
	}
	return s.commands(ctx)
}

// connect dials the server, over TLS if asked.
func connect(ctx context.Context, opts options) (*client.Conn, error) {
	ctx, cancel := context.WithTimeout(ctx, connectTimeout)
	defer cancel()
	addr := net.JoinHostPort(opts.address, strconv.Itoa(opts.port))
	if !opts.tls {
		return client.Dial(ctx, addr)
	}
	cfg := &tls.Config{ServerName: opts.address, MinVersion: tls.VersionTLS12}
	if opts.tlsCA != "" {
		pem, err := os.ReadFile(opts.tlsCA)
		if err != nil {
			return nil, fmt.Errorf("tls ca: %w", err)
		}
		cfg.RootCAs = x509.NewCertPool()
		if !cfg.RootCAs.AppendCertsFromPEM(pem) {
			return nil, fmt.Errorf("tls ca: no PEM certificate in %s", opts.tlsCA)
		}
	}
	return client.DialTLS(ctx, addr, cfg)
}

// parseFlags reads the command line. -h prints the usage to stdout and
// returns flag.ErrHelp.
func parseFlags(args []string, stdout io.Writer) (options, error) {
	opts := options{address: "127.0.0.1", port: 5378}
	fs := flag.NewFlagSet("chat-client", flag.ContinueOnError)
	fs.SetOutput(io.Discard) // errors are returned, usage is printed on -h only
	for _, name := range []string{"a", "address"} {
		fs.StringVar(&opts.address, name, opts.address, "server address")
	}
	for _, name := range []string{"p", "port"} {
		fs.IntVar(&opts.port, name, opts.port, "server port")
	}
	fs.BoolVar(&opts.tls, "tls", false, "connect over TLS")
	fs.StringVar(&opts.tlsCA, "tls-ca", "", "PEM file of the CA that signed the server's certificate (implies --tls)")
	version := fs.Bool("version", false, "print the version and exit")
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			printUsage(stdout, opts)
			return opts, err
		}
		return opts, fmt.Errorf("%w (see -h)", err)
	}
	if *version {
		fmt.Fprintln(stdout, buildinfo.Version("chat-client"))
		return opts, flag.ErrHelp // done, successfully, as after -h
	}
	if fs.NArg() > 0 {
		return opts, fmt.Errorf("unexpected argument %q (see -h)", fs.Arg(0))
	}
	opts.tls = opts.tls || opts.tlsCA != ""
	if opts.port < 1 || opts.port > 65535 {
		return opts, fmt.Errorf("port must be between 1 and 65535, got %d", opts.port)
	}
	return opts, nil
}

func printUsage(w io.Writer, defaults options) {
	fmt.Fprintf(w, `Usage: chat-client [flags]

Connects to a chat server, asks for a login name, then reads commands:
  !who               list the users online
  @<name> <message>  send a private message
  !quit              quit (so does the end of input)

Flags:
  -a, --address  server address (default %s)
  -p, --port     server port (default %d)
  --tls          connect over TLS (the server's --tls-port)
  --tls-ca FILE  trust the CA in this PEM file instead of the system's
                 (implies --tls)
  --version      print the version
  -h, --help     print this help

On a terminal, lines are edited in place (arrows, backspace, history) and
messages that arrive are printed above the line being typed; Ctrl-D on an
empty line or Ctrl-C quits.
`, defaults.address, defaults.port)
}
