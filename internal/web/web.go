// Package web serves the chat to browsers: the page at /, a WebSocket at
// /ws, and /healthz. The WebSocket's connections come out of a Listener,
// which the chat server serves like any other (chat.Server.Serve): same
// sessions, limits, close reasons and metrics, one protocol line per
// message (conn.go).
package web

import (
	"embed"
	"io/fs"
	"log/slog"
	"net"
	"net/http"
	"sync"
	"time"

	"github.com/coder/websocket"

	"chatserver/internal/chat"
)

// The page: one HTML file, with its script and style, no build step.
//
//go:embed page
var page embed.FS

// Config is the web front's settings.
type Config struct {
	// Origins are the host patterns (path.Match, or "scheme://host"
	// patterns) of pages on other origins allowed to connect; the page's
	// own origin always is, and so is a request without an Origin header
	// (a script, curl).
	Origins []string
	// MaxLineBytes is the longest request line: a longer message closes
	// the connection (WebSocket status 1009).
	MaxLineBytes int
	// Closing reports whether the chat server is shutting down (/healthz).
	Closing func() bool
	// PingEvery and PongWithin keep a browser that vanished without a
	// close from holding its name: it is pinged every PingEvery (default
	// 30 s), and dropped if the pong does not come within PongWithin
	// (default 10 s).
	PingEvery, PongWithin time.Duration
	// Logger receives the web front's logs; nil discards them.
	Logger *slog.Logger
}

// Server is the web front: an http.Handler, and the Listener its
// WebSocket connections come out of.
type Server struct {
	cfg     Config
	log     *slog.Logger
	handler http.Handler
	ln      *Listener
}

// New returns a web front whose listener reports addr as its address.
func New(cfg Config, addr net.Addr) *Server {
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	if cfg.PingEvery == 0 {
		cfg.PingEvery = 30 * time.Second
	}
	if cfg.PongWithin == 0 {
		cfg.PongWithin = 10 * time.Second
	}
	s := &Server{cfg: cfg, log: cfg.Logger, ln: newListener(addr)}
	files, err := fs.Sub(page, "page")
	if err != nil {
		panic(err) // the embedded directory is part of the binary
	}
	mux := http.NewServeMux()
	mux.Handle("GET /{$}", http.FileServerFS(files))
	mux.Handle("GET /page.js", http.FileServerFS(files))
	mux.Handle("GET /page.css", http.FileServerFS(files))
	mux.HandleFunc("GET /ws", s.serveWebSocket)
	mux.HandleFunc("GET /healthz", s.serveHealth)
	s.handler = securityHeaders(mux)
	return s
}

// Handler serves the page, the WebSocket and /healthz.
func (s *Server) Handler() http.Handler { return s.handler }

// Listener returns the WebSocket connections, for chat.Server.Serve.
func (s *Server) Listener() net.Listener { return s.ln }

func (s *Server) serveWebSocket(w http.ResponseWriter, r *http.Request) {
	ws, err := websocket.Accept(w, r, &websocket.AcceptOptions{OriginPatterns: s.cfg.Origins})
	if err != nil {
		s.log.Debug("websocket handshake refused", "remote", r.RemoteAddr, "origin", r.Header.Get("Origin"), "err", err)
		return // Accept has answered the request
	}
	// A message is a line without its "\n": allow one "\r\n" more.
	ws.SetReadLimit(int64(s.cfg.MaxLineBytes) + 2)
	local, _ := r.Context().Value(http.LocalAddrContextKey).(net.Addr)
	remote, err := net.ResolveTCPAddr("tcp", r.RemoteAddr)
	if err != nil {
		ws.CloseNow()
		return
	}
	c := newConn(ws, local, remote, r.TLS != nil, s.cfg.PingEvery, s.cfg.PongWithin)
	if !s.ln.deliver(c) {
		c.CloseFor(chat.ReasonServerShutdown)
	}
}

func (s *Server) serveHealth(w http.ResponseWriter, _ *http.Request) {
	if s.cfg.Closing != nil && s.cfg.Closing() {
		http.Error(w, "shutting down", http.StatusServiceUnavailable)
		return
	}
	w.Write([]byte("ok\n"))
}

// securityHeaders keeps the page from being framed or fed other scripts.
func securityHeaders(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		h := w.Header()
		h.Set("Content-Security-Policy", "default-src 'self'; connect-src 'self' ws: wss:; frame-ancestors 'none'; base-uri 'none'; form-action 'none'")
		h.Set("X-Content-Type-Options", "nosniff")
		h.Set("Referrer-Policy", "no-referrer")
		next.ServeHTTP(w, r)
	})
}

// Listener hands the chat server the WebSocket connections the web front
// accepted. Closing it makes the web front refuse new ones.
type Listener struct {
	addr  net.Addr
	conns chan net.Conn
	done  chan struct{}
	once  sync.Once
}

var _ net.Listener = (*Listener)(nil)

func newListener(addr net.Addr) *Listener {
	return &Listener{addr: addr, conns: make(chan net.Conn), done: make(chan struct{})}
}

// deliver waits for the chat server to accept c, and reports whether it
// did (false: the listener is closed).
func (l *Listener) deliver(c net.Conn) bool {
	select {
	case l.conns <- c:
		return true
	case <-l.done:
		return false
	}
}

// Accept returns the next WebSocket connection.
func (l *Listener) Accept() (net.Conn, error) {
	select {
	case c := <-l.conns:
		return c, nil
	case <-l.done:
		return nil, net.ErrClosed
	}
}

// Close stops handing out connections.
func (l *Listener) Close() error {
	l.once.Do(func() { close(l.done) })
	return nil
}

// Addr is the web front's address.
func (l *Listener) Addr() net.Addr { return l.addr }
