package natstest

import (
	"net"
	"sync"
	"testing"
	"time"
)

// Proxy forwards TCP connections to a target address, and can do to them
// what a bad network does: add latency (SetDelay), stop forwarding
// without closing (Pause, until Resume: what was sent arrives late),
// reset every connection (Reset), or reset them and refuse new ones
// (Cut, until Heal). It stops when the test ends.
type Proxy struct {
	ln     net.Listener
	target string

	mu     sync.Mutex
	cut    bool                  // guarded by mu
	paused bool                  // guarded by mu
	delay  time.Duration         // guarded by mu: added to each direction
	links  map[*net.TCPConn]bool // guarded by mu: both sides of every connection
	closed bool                  // guarded by mu
	wg     sync.WaitGroup
}

// proxyQueue is how many reads a direction holds while it waits to
// forward them; more holds the sender back, as a full socket would.
const proxyQueue = 1 << 14

// NewProxy starts a proxy to target (host:port) on a free loopback port.
func NewProxy(t testing.TB, target string) *Proxy {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	p := &Proxy{ln: ln, target: target, links: make(map[*net.TCPConn]bool)}
	p.wg.Add(1)
	go p.accept()
	t.Cleanup(p.close)
	return p
}

// URL is the nats:// URL to connect through the proxy.
func (p *Proxy) URL() string { return "nats://" + p.ln.Addr().String() }

// SetDelay makes every byte arrive d later, in both directions.
func (p *Proxy) SetDelay(d time.Duration) {
	p.mu.Lock()
	p.delay = d
	p.mu.Unlock()
}

// Pause stops forwarding; connections stay open and what is sent waits.
func (p *Proxy) Pause() {
	p.mu.Lock()
	p.paused = true
	p.mu.Unlock()
}

// Resume forwards again, what waited first.
func (p *Proxy) Resume() {
	p.mu.Lock()
	p.paused = false
	p.mu.Unlock()
}

// Reset resets every connection through the proxy; new ones may come.
func (p *Proxy) Reset() {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.resetLocked()
}

// Cut resets every connection and refuses new ones until Heal.
func (p *Proxy) Cut() {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.cut = true
	p.resetLocked()
}

// Heal lets connections through again.
func (p *Proxy) Heal() {
	p.mu.Lock()
	p.cut = false
	p.mu.Unlock()
}

func (p *Proxy) resetLocked() {
	for c := range p.links {
		_ = c.SetLinger(0)
		c.Close()
		delete(p.links, c)
	}
}

func (p *Proxy) close() {
	p.ln.Close()
	p.mu.Lock()
	p.closed = true
	p.resetLocked()
	p.mu.Unlock()
	p.wg.Wait()
}

func (p *Proxy) accept() {
	defer p.wg.Done()
	for {
		c, err := p.ln.Accept()
		if err != nil {
			return
		}
		up, err := net.Dial("tcp", p.target)
		p.mu.Lock()
		if err != nil || p.cut || p.closed {
			p.mu.Unlock()
			c.Close()
			if up != nil {
				up.Close()
			}
			continue
		}
		down, upTCP := c.(*net.TCPConn), up.(*net.TCPConn)
		p.links[down], p.links[upTCP] = true, true
		p.mu.Unlock()
		p.wg.Add(2)
		go p.pipe(upTCP, down)
		go p.pipe(down, upTCP)
	}
}

// chunk is bytes read from one side, and when.
type chunk struct {
	b  []byte
	at time.Time
}

// pipe forwards src to dst through a queue, so that a delay or a pause
// holds bytes without holding the reader.
func (p *Proxy) pipe(dst, src *net.TCPConn) {
	defer p.wg.Done()
	queue := make(chan chunk, proxyQueue)
	go func() {
		defer close(queue)
		for {
			b := make([]byte, 32<<10)
			n, err := src.Read(b)
			if n > 0 {
				queue <- chunk{b[:n], time.Now()}
			}
			if err != nil {
				return
			}
		}
	}()
	defer func() {
		dst.Close()
		src.Close()
		for range queue { // let the reader finish
		}
		p.mu.Lock()
		delete(p.links, dst)
		delete(p.links, src)
		p.mu.Unlock()
	}()
	for c := range queue {
		if !p.waitToForward(c.at, dst) {
			return
		}
		if _, err := dst.Write(c.b); err != nil {
			return
		}
	}
}

// waitToForward waits while the proxy is paused and until the delay since
// at has passed. It returns false if dst was reset meanwhile.
func (p *Proxy) waitToForward(at time.Time, dst *net.TCPConn) bool {
	for {
		p.mu.Lock()
		open, paused, delay := p.links[dst], p.paused, p.delay
		p.mu.Unlock()
		if !open {
			return false
		}
		wait := time.Until(at.Add(delay))
		if !paused && wait <= 0 {
			return true
		}
		if paused || wait > 5*time.Millisecond {
			wait = 5 * time.Millisecond
		}
		time.Sleep(wait)
	}
}
