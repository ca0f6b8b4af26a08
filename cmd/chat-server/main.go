// Command chat-server runs the chat server.
//
// Usage: chat-server [-a address] [-p port] [flags]; chat-server -h lists
// every flag with its default.
package main

import (
	"context"
	"crypto/tls"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"os/signal"
	"runtime"
	"strconv"
	"syscall"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/prometheus/client_golang/prometheus"

	"chatserver/internal/certs"
	"chatserver/internal/chat"
	"chatserver/internal/metrics"
	"chatserver/internal/natscluster"
	"chatserver/internal/web"
)

const (
	// shutdownTimeout bounds how long the server waits for its connections
	// to end after SIGINT or SIGTERM.
	shutdownTimeout = 5 * time.Second
	// readHeaderTimeout stops a client that never finishes its request
	// (a browser, a scraper) from holding an HTTP connection open.
	readHeaderTimeout = 10 * time.Second
	// maxHeaderBytes bounds an HTTP request's headers.
	maxHeaderBytes = 16 << 10
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	ownProcess = true
	err := run(ctx, os.Args[1:], os.Stdout, os.Stderr)
	if errors.Is(err, flag.ErrHelp) {
		return
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, "chat-server:", err)
		os.Exit(1) // the only exit in the program
	}
}

// ownProcess is set by main: run, which tests also call in their own
// process, changes the process's runtime settings only then.
var ownProcess bool

// run starts the server and serves until ctx is cancelled. SIGHUP rereads
// the TLS certificate.
func run(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	opts, err := parseFlags(args, stdout)
	if err != nil {
		return err
	}
	log := newLogger(stderr, opts.logFormat, opts.logLevel)
	opts.chat.Logger = log
	var collectors []prometheus.Collector
	if opts.natsURL != "" {
		if ownProcess {
			threadPerLoop(&opts.chat, log)
		}
		cl, leave, err := joinCluster(&opts, log)
		if err != nil {
			return err
		}
		defer leave()
		opts.chat.Cluster = cl
		collectors = append(collectors, metrics.NewClusterCollector(func() metrics.ClusterStats {
			st := cl.Stats()
			return metrics.ClusterStats{Connected: st.Connected, Fenced: st.Fenced, CrossServer: st.CrossServer, Fences: st.Fences, Resent: st.Resent, Dropped: st.Dropped}
		}))
	}
	srv, err := chat.NewServer(opts.chat)
	if err != nil {
		return err
	}
	var cert *certs.Reloadable
	if opts.tlsCert != "" {
		if cert, err = certs.Load(opts.tlsCert, opts.tlsKey); err != nil {
			return err
		}
		logCertificate(log, "tls certificate loaded", cert)
	}
	lns, err := listen(opts)
	if err != nil {
		return err
	}
	defer lns.close() // Shutdown closes them too; a second Close is harmless

	// Registered before the listeners are announced, so a SIGHUP sent by
	// anyone who has seen them cannot kill the process.
	hup := make(chan os.Signal, 1)
	signal.Notify(hup, syscall.SIGHUP)
	defer signal.Stop(hup)

	fmt.Fprintf(stdout, "Server is on %s\n", announced(opts.address, lns.plain))

	// Each listener is served by one goroutine that reports on done; run
	// waits for all of them before it returns.
	done := make(chan error, 5)
	running := 0
	serve := func(f func() error) {
		running++
		go func() { done <- f() }()
	}
	serve(func() error { return srv.Serve(lns.plain) })
	var tlsConfig *tls.Config
	if cert != nil {
		tlsConfig = &tls.Config{MinVersion: tls.VersionTLS12, GetCertificate: cert.GetCertificate}
	}
	if lns.tls != nil {
		fmt.Fprintf(stdout, "TLS server is on %s\n", announced(opts.address, lns.tls))
		// The same server: TLS users and plain users share one registry.
		serve(func() error { return srv.Serve(tls.NewListener(lns.tls, tlsConfig)) })
	}
	var webSrv, metricsSrv *http.Server // stopped after the chat server
	if lns.web != nil {
		if host := opts.webHost(); host != opts.address {
			log.Info("the web chat is plain HTTP: it listens on loopback only (--tls-cert serves HTTPS, --web-insecure plain HTTP on the address)", "address", host)
		}
		front := web.New(web.Config{Origins: opts.webOrigins, MaxLineBytes: opts.chat.MaxLineBytes, Closing: srv.Closing, Logger: log}, lns.web.Addr())
		webSrv = newHTTPServer(front.Handler(), log)
		scheme := "http"
		if tlsConfig != nil {
			scheme = "https"
			webSrv.TLSConfig = tlsConfig
		}
		fmt.Fprintf(stdout, "Web chat is on %s\n", webURL(scheme, opts.webHost(), lns.web))
		// The same server again: browsers, plain and TLS users are one.
		serve(func() error { return srv.Serve(front.Listener()) })
		serve(func() error {
			if tlsConfig != nil {
				return fmt.Errorf("web: %w", webSrv.ServeTLS(lns.web, "", ""))
			}
			return fmt.Errorf("web: %w", webSrv.Serve(lns.web))
		})
	}
	if lns.metrics != nil {
		metricsSrv = newHTTPServer(metrics.NewHandler(srv, log, collectors...), log)
		log.Info("metrics listening", "address", lns.metrics.Addr().String())
		serve(func() error { return fmt.Errorf("metrics: %w", metricsSrv.Serve(lns.metrics)) })
	}

	var failed error // a listener that failed on its own
wait:
	for {
		select {
		case <-ctx.Done():
			break wait
		case failed = <-done:
			running--
			break wait
		case <-hup:
			reload(log, cert)
		}
	}

	// The chat server drains first; the HTTP listeners stay up meanwhile,
	// so /healthz answers 503 and a last scrape still works.
	shutdownCtx, cancel := context.WithTimeout(context.Background(), shutdownTimeout)
	defer cancel()
	errs := []error{failed, srv.Shutdown(shutdownCtx)}
	for _, hs := range []*http.Server{webSrv, metricsSrv} {
		if hs == nil {
			continue
		}
		if err := hs.Shutdown(shutdownCtx); err != nil {
			hs.Close()
			errs = append(errs, fmt.Errorf("http: %w", err))
		}
	}
	for range running {
		if err := <-done; !errors.Is(err, chat.ErrServerClosed) && !errors.Is(err, http.ErrServerClosed) {
			errs = append(errs, err)
		}
	}
	return errors.Join(errs...)
}

// threadPerLoop runs Go code on one thread per event loop, for cluster
// mode, unless GOMAXPROCS is set or there are no loops. A loop in cluster
// mode waits in Go's netpoller, so the goroutines of the NATS client and
// of the cluster run on its thread while it waits, instead of on other
// threads woken for each message (docs/benchmarks.md has what it saves).
// The default number of loops is resolved first, as it depends on
// GOMAXPROCS.
func threadPerLoop(cfg *chat.Config, log *slog.Logger) {
	loops := cfg.EventLoopCount()
	if loops == 0 || os.Getenv("GOMAXPROCS") != "" {
		return
	}
	cfg.EventLoops = loops
	runtime.GOMAXPROCS(loops)
	log.Info("cluster mode: one thread per event loop", "gomaxprocs", cfg.EventLoops)
}

// joinCluster connects to NATS and joins the cluster. Each failed
// start-up check is one error line. A line cap that does not fit NATS's
// max payload is lowered to what fits, with one log line, unless
// --max-line-bytes asked for it. leave leaves the cluster and closes the
// connection; call it after the chat server's Shutdown.
func joinCluster(opts *options, log *slog.Logger) (cl *natscluster.Cluster, leave func(), err error) {
	nc, err := nats.Connect(opts.natsURL,
		nats.Name("chat-server"),
		nats.Timeout(2*time.Second),
		nats.MaxReconnects(-1),
		nats.ReconnectWait(100*time.Millisecond),
		// No buffering while disconnected: what cannot go now is sent
		// again by the cluster's own channels once NATS is back.
		nats.ReconnectBufSize(-1),
		nats.DisconnectErrHandler(func(_ *nats.Conn, err error) {
			log.Warn("nats disconnected", "err", err)
		}),
		nats.ReconnectHandler(func(nc *nats.Conn) {
			log.Info("nats reconnected", "server", nc.ConnectedUrlRedacted())
		}),
	)
	if err != nil {
		return nil, nil, fmt.Errorf("cannot reach NATS at %s: %w", opts.natsURL, err)
	}
	if fits := natscluster.MaxMessageFor(nc.MaxPayload()); opts.chat.MaxLineBytes > fits && !opts.lineCapSet {
		log.Info("line cap lowered to fit NATS's max payload", "max_line_bytes", fits, "nats_max_payload", nc.MaxPayload())
		opts.chat.MaxLineBytes = fits
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	cl, err = natscluster.New(ctx, nc, natscluster.Config{
		Cluster:         opts.clusterName,
		MaxUsers:        opts.chat.MaxUsers,
		MaxMessageBytes: opts.chat.MaxLineBytes,
		Replicas:        opts.natsReplicas,
		Logger:          log,
	})
	if err != nil {
		nc.Close()
		return nil, nil, err
	}
	log.Info("joined the cluster", "nats", nc.ConnectedUrlRedacted(), "cluster", opts.clusterName, "nats_version", nc.ConnectedServerVersion())
	return cl, func() {
		cl.Close()
		nc.Close()
	}, nil
}

// newHTTPServer is an HTTP server for the web front or the metrics, with
// limits for clients that are slow to send their request.
func newHTTPServer(h http.Handler, log *slog.Logger) *http.Server {
	return &http.Server{
		Handler:           h,
		ReadHeaderTimeout: readHeaderTimeout,
		MaxHeaderBytes:    maxHeaderBytes,
		ErrorLog:          slog.NewLogLogger(log.Handler(), slog.LevelWarn),
	}
}

// listeners are the process's sockets; nil ones were not asked for.
type listeners struct {
	plain, tls, web, metrics net.Listener
}

// listen opens every listener before anything is served, so a busy port
// is one error line and never a half-started server.
func listen(opts options) (*listeners, error) {
	lns := &listeners{}
	var err error
	if lns.plain, err = listenTCP("", net.JoinHostPort(opts.address, strconv.Itoa(opts.port))); err != nil {
		return nil, err
	}
	if opts.tls() {
		if lns.tls, err = listenTCP(" for TLS", net.JoinHostPort(opts.address, strconv.Itoa(int(opts.tlsPort)))); err != nil {
			lns.close()
			return nil, err
		}
	}
	if opts.web() {
		if lns.web, err = listenTCP(" for the web chat", net.JoinHostPort(opts.webHost(), strconv.Itoa(int(opts.webPort)))); err != nil {
			lns.close()
			return nil, err
		}
	}
	if opts.metricsAddress != "" {
		if lns.metrics, err = listenTCP(" for metrics", opts.metricsAddress); err != nil {
			lns.close()
			return nil, err
		}
	}
	return lns, nil
}

func (lns *listeners) close() {
	for _, ln := range []net.Listener{lns.plain, lns.tls, lns.web, lns.metrics} {
		if ln != nil {
			ln.Close()
		}
	}
}

// listenTCP listens on addr; its error says what the listener is for and
// drops net's repetition of the address.
func listenTCP(what, addr string) (net.Listener, error) {
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		var op *net.OpError
		if errors.As(err, &op) {
			err = op.Err
		}
		return nil, fmt.Errorf("cannot listen%s on %s: %w", what, addr, err)
	}
	return ln, nil
}

// announced is the address printed on stdout: the host as given (the
// protocol's test tools expect 0.0.0.0, not [::]) with the port actually bound.
func announced(host string, ln net.Listener) string {
	_, port, _ := net.SplitHostPort(ln.Addr().String())
	return net.JoinHostPort(host, port)
}

// webURL is the address to open the web chat at. A browser cannot open
// "any address" (0.0.0.0, ::), so that is announced as localhost.
func webURL(scheme, host string, ln net.Listener) string {
	if ip := net.ParseIP(host); ip != nil && ip.IsUnspecified() {
		host = "localhost"
	}
	return scheme + "://" + announced(host, ln) + "/"
}

// reload rereads the TLS certificate on SIGHUP. Open connections keep
// their session; new handshakes get the new certificate. A failed reload
// keeps the old certificate, so a botched renewal is an error line, not an
// outage.
func reload(log *slog.Logger, cert *certs.Reloadable) {
	if cert == nil {
		log.Info("SIGHUP: no TLS certificate to reload")
		return
	}
	if err := cert.Reload(); err != nil {
		log.Error("tls certificate reload failed; keeping the old one", "err", err)
		return
	}
	logCertificate(log, "tls certificate reloaded", cert)
}

func logCertificate(log *slog.Logger, msg string, cert *certs.Reloadable) {
	leaf := cert.Certificate().Leaf
	log.Info(msg, "subject", leaf.Subject.String(), "not_after", leaf.NotAfter.UTC())
}
