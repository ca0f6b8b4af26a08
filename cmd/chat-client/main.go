// Command chat-client is a line-based terminal client for the chat server.
//
// Usage: chat-client [-a address] [-p port]. It connects, asks for a login
// name, and then reads one command per line: "!who" lists the users
// online, "@<name> <message>" sends a private message, "!quit" (or the end
// of input) quits. Messages for the user are printed as soon as they
// arrive, as "From <name>: <message>".
//
// Goroutines: the main goroutine runs the session (prompts, commands and
// their replies); one goroutine reads standard input line by line, one
// prints deliveries, and the client library's own two run the connection.
// Every line of output is written whole, under one mutex, with a single
// write, so it reaches a terminal or a pipe at once and never interleaves.
package main

import (
	"bufio"
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
	"strings"
	"sync"
	"syscall"
	"time"

	"chatserver/internal/client"
	"chatserver/internal/protocol"
)

// connectTimeout bounds the connection attempt.
const connectTimeout = 10 * time.Second

// The texts the user sees.
const (
	textConnectError   = "Error connecting to the server."
	textWelcome        = "Welcome to Chat Client. Enter your login:"
	textLoggedIn       = "Successfully logged in as %s!"
	textDisallowed     = "Cannot log in as %s. That username contains disallowed characters."
	textInUse          = "Cannot log in as %s. That username is already in use."
	textBusy           = "Cannot log in. The server is full!"
	textWho            = "There are %d online users:"
	textWhoUser        = "- %s"
	textSent           = "The message was sent successfully"
	textBadDestUser    = "The destination user does not exist"
	textUnknownCommand = "Command doesn't exist"
	textDelivery       = "From %s: %s"
	textBadHeader      = "Error: Unknown issue in previous message header."
	textBadBody        = "Error: Unknown issue in previous message body."
	textServerClosed   = "The server closed the connection."
)

// disallowedInName are the characters the client refuses in a login name
// before asking the server.
const disallowedInName = "!@#$%^&* ,"

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
	out := &printer{w: stdout}

	conn, err := connect(ctx, opts)
	if err != nil {
		out.println(textConnectError)
		return fmt.Errorf("connect: %w", err)
	}

	stopInput := make(chan struct{})
	defer close(stopInput)
	s := &session{
		conn:    conn,
		out:     out,
		input:   readLines(stdin, stopInput),
		printed: make(chan struct{}),
	}
	go s.printDeliveries()
	defer func() {
		conn.Close() // closes Deliveries, which ends printDeliveries
		<-s.printed
	}()

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
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			printUsage(stdout, opts)
			return opts, err
		}
		return opts, fmt.Errorf("%w (see -h)", err)
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
  -h, --help     print this help
`, defaults.address, defaults.port)
}

// printer writes whole lines to the user; any goroutine may use it.
type printer struct {
	mu sync.Mutex
	w  io.Writer // guarded by mu
}

// println writes lines, each followed by "\n", with one write, so that no
// other output lands between them.
func (p *printer) println(lines ...string) {
	var b []byte
	for _, l := range lines {
		b = append(b, l...)
		b = append(b, '\n')
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	_, _ = p.w.Write(b) // nowhere left to report a failed write to the user
}

func (p *printer) printf(format string, args ...any) {
	p.println(fmt.Sprintf(format, args...))
}

// readLines sends each line of r, without its "\n" and one "\r" before it,
// until r ends (the channel is then closed) or stop is closed. A last line
// without "\n" counts.
func readLines(r io.Reader, stop <-chan struct{}) <-chan string {
	lines := make(chan string)
	go func() {
		defer close(lines)
		br := bufio.NewReader(r)
		for {
			line, err := br.ReadString('\n')
			if line != "" || err == nil {
				line = strings.TrimSuffix(line, "\n")
				line = strings.TrimSuffix(line, "\r")
				select {
				case lines <- line:
				case <-stop:
					return
				}
			}
			if err != nil {
				return
			}
		}
	}()
	return lines
}

// session is the client's state once connected.
type session struct {
	conn    *client.Conn
	out     *printer
	input   <-chan string
	printed chan struct{} // closed when printDeliveries has returned
}

// printDeliveries prints each message for the user as it arrives, until
// the Deliveries channel is closed.
func (s *session) printDeliveries() {
	defer close(s.printed)
	for d := range s.conn.Deliveries() {
		s.out.printf(textDelivery, d.From, sanitize(d.Message))
	}
}

// login asks for names until one is accepted (true), the user quits
// (false) or the session cannot go on (an error).
func (s *session) login(ctx context.Context) (bool, error) {
	s.out.println(textWelcome)
	for {
		var name string
		select {
		case <-ctx.Done():
			return false, nil
		case <-s.conn.Done():
			return false, s.connectionEnded()
		case line, ok := <-s.input:
			if !ok || line == "!quit" {
				return false, nil
			}
			name = line
		}
		if strings.ContainsAny(name, disallowedInName) {
			s.out.printf(textDisallowed, name)
			continue
		}
		err := s.conn.Login(ctx, name)
		switch {
		case err == nil:
			s.out.printf(textLoggedIn, name)
			return true, nil
		case errors.Is(err, client.ErrNameInUse):
			s.out.printf(textInUse, name)
		case errors.Is(err, client.ErrServerBusy):
			s.out.println(textBusy)
			return false, err
		default:
			if stop, err := s.failed(ctx, err); stop {
				return false, err
			}
		}
	}
}

// commands runs the user's commands until they quit or the session cannot
// go on.
func (s *session) commands(ctx context.Context) error {
	for {
		select {
		case <-ctx.Done():
			return nil
		case <-s.conn.Done():
			return s.connectionEnded()
		case line, ok := <-s.input:
			if !ok || line == "!quit" {
				return nil
			}
			if stop, err := s.command(ctx, line); stop {
				return err
			}
		}
	}
}

// command runs one command line, and reports whether the session must
// stop, and with what error.
func (s *session) command(ctx context.Context, line string) (bool, error) {
	switch {
	case line == "!who":
		names, err := s.conn.List(ctx)
		if err != nil {
			return s.failed(ctx, err)
		}
		lines := []string{fmt.Sprintf(textWho, len(names))}
		for _, n := range names {
			lines = append(lines, fmt.Sprintf(textWhoUser, n))
		}
		s.out.println(lines...)
	case strings.HasPrefix(line, "@"):
		// The server judges the name and the message: "@bob" alone is
		// sent as an empty message and answered BAD-RQST-BODY.
		to, msg, _ := strings.Cut(line[1:], " ")
		err := s.conn.Send(ctx, to, msg)
		switch {
		case err == nil:
			s.out.println(textSent)
		case errors.Is(err, client.ErrBadDestUser):
			s.out.println(textBadDestUser)
		default:
			return s.failed(ctx, err)
		}
	default:
		s.out.println(textUnknownCommand)
	}
	return false, nil
}

// failed handles a call's error that is not one of its own outcomes: it
// prints what the user must know and reports whether the session must
// stop, and with what error.
func (s *session) failed(ctx context.Context, err error) (bool, error) {
	var reqErr *client.RequestError
	switch {
	case errors.As(err, &reqErr) && reqErr.Reply == protocol.ReplyBadHeader:
		s.out.println(textBadHeader)
		return false, nil
	case errors.As(err, &reqErr), errors.Is(err, client.ErrLineBreak):
		// A "\r" inside a line is not sent: the server would refuse it
		// as a bad body, so the user is told just that.
		s.out.println(textBadBody)
		return false, nil
	case ctx.Err() != nil:
		return true, nil // interrupted: quit
	case errors.Is(err, client.ErrClosed):
		<-s.conn.Done()
		return true, s.connectionEnded()
	}
	return true, err // the server broke the protocol
}

// connectionEnded tells the user the connection is gone, after every
// message that arrived before the end, and returns why it ended.
func (s *session) connectionEnded() error {
	<-s.printed // the Deliveries channel closes once all are taken
	err := s.conn.Err()
	if errors.Is(err, client.ErrServerBusy) {
		// Refused outright: the server has too many connections.
		s.out.println(textBusy)
	} else {
		s.out.println(textServerClosed)
	}
	return err
}

// sanitize makes a message safe to print on a terminal: control
// characters other than TAB are shown in caret notation (ESC as "^["), so
// a message cannot move the cursor, clear the screen or fake a line of its
// own. Everything else is printed as it came.
func sanitize(msg string) string {
	if !strings.ContainsFunc(msg, isControl) {
		return msg
	}
	var b strings.Builder
	for _, r := range msg {
		switch {
		case !isControl(r):
			b.WriteRune(r)
		case r < 0x20:
			b.WriteByte('^')
			b.WriteByte(byte(r) + '@')
		case r == 0x7f:
			b.WriteString("^?")
		default: // C1 controls
			fmt.Fprintf(&b, "\\u%04x", r)
		}
	}
	return b.String()
}

func isControl(r rune) bool {
	return r < 0x20 && r != '\t' || r >= 0x7f && r < 0xa0
}
