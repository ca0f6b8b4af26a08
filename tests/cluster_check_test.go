package tests

import (
	"bufio"
	"fmt"
	"math/rand/v2"
	"net"
	"os"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"chatserver/internal/natstest"
)

// TestClusterExactlyOnceUnderFaults runs users who log in, send numbered
// messages to each other and move between three servers, while a seeded
// schedule of faults hits the servers and their links: pauses (SIGSTOP),
// latency, held and cut links, resets, a NATS restart. Afterwards every
// guarantee of docs/protocol.md is checked against what each client saw
// (checkRun). CHAT_FAULT_SEEDS (comma-separated) picks the seeds; a seed
// that fails is a test case.
func TestClusterExactlyOnceUnderFaults(t *testing.T) {
	t.Parallel()
	seeds := []uint64{1, 2, 3}
	if env := os.Getenv("CHAT_FAULT_SEEDS"); env != "" {
		seeds = nil
		for _, f := range strings.Split(env, ",") {
			seed, err := strconv.ParseUint(f, 10, 64)
			if err != nil {
				t.Fatalf("CHAT_FAULT_SEEDS: %v", err)
			}
			seeds = append(seeds, seed)
		}
	}
	for _, seed := range seeds {
		t.Run(fmt.Sprintf("seed%d", seed), func(t *testing.T) {
			t.Parallel()
			runFaultCheck(t, seed, 15*time.Second)
		})
	}
}

const (
	checkPersons = 6 // names, shared by the logins of the run
	checkWindow  = 8 // SENDs a client has out before it waits for replies
)

// runFaultCheck is one seeded run.
func runFaultCheck(t *testing.T, seed uint64, length time.Duration) {
	ns := runNATS(t)
	var nodes []*faultNode
	for range 3 {
		nodes = append(nodes, startFaultNode(t, ns.Addr()))
	}
	log := &runLog{sessions: map[int]*checkSession{}, sends: map[string]*checkSend{}}
	stop := time.Now().Add(length)

	var wg sync.WaitGroup
	for i := range checkPersons {
		wg.Add(1)
		go func() {
			defer wg.Done()
			rng := rand.New(rand.NewPCG(seed, uint64(i)))
			for time.Now().Before(stop) {
				node := nodes[rng.IntN(len(nodes))]
				log.runSession(rng, node.addr, fmt.Sprintf("p%d", i), stop)
			}
		}()
	}
	faults := injectFaults(t, rand.New(rand.NewPCG(seed, 1000)), ns, nodes, stop)
	wg.Wait()
	t.Logf("seed %d: faults %s", seed, strings.Join(faults, ", "))

	// No ghosts: every name is free again within 5 s of the last logout.
	for i := range checkPersons {
		waitLogin(t, nodes[i%len(nodes)].addr, fmt.Sprintf("p%d", i), 5*time.Second).Conn.Close()
	}
	log.check(t)
}

// injectFaults runs one fault after another until stop, and heals
// everything then. It returns what it did.
func injectFaults(t *testing.T, rng *rand.Rand, ns *natstest.Server, nodes []*faultNode, stop time.Time) []string {
	var done []string
	pause := func(d time.Duration) { time.Sleep(min(d, time.Until(stop))) }
	for time.Until(stop) > time.Second {
		pause(time.Duration(500+rng.IntN(1500)) * time.Millisecond)
		n := nodes[rng.IntN(len(nodes))]
		d := time.Duration(500+rng.IntN(4000)) * time.Millisecond
		switch kind := rng.IntN(6); kind {
		case 0:
			done = append(done, fmt.Sprintf("SIGSTOP %s %v", n.addr, d))
			n.Pause()
			pause(d)
			n.Resume()
		case 1:
			delay := time.Duration(rng.IntN(250)) * time.Millisecond
			done = append(done, fmt.Sprintf("delay %s %v for %v", n.addr, delay, d))
			n.proxy.SetDelay(delay)
			pause(d)
			n.proxy.SetDelay(0)
		case 2:
			done = append(done, fmt.Sprintf("hold %s %v", n.addr, d))
			n.proxy.Pause()
			pause(d)
			n.proxy.Resume()
		case 3:
			done = append(done, fmt.Sprintf("cut %s %v", n.addr, d))
			n.proxy.Cut()
			pause(d)
			n.proxy.Heal()
		case 4:
			done = append(done, "reset "+n.addr)
			n.proxy.Reset()
		case 5:
			d /= 2
			done = append(done, fmt.Sprintf("NATS down %v", d))
			ns.Stop()
			pause(d)
			ns.Start()
		}
	}
	return done
}

// runLog is what every client of a run saw, with the times it saw it.
type runLog struct {
	mu       sync.Mutex
	next     int
	sessions map[int]*checkSession // guarded by mu
	sends    map[string]*checkSend // guarded by mu, by message id "<session>.<n>"
	got      []checkDelivery       // guarded by mu
	problems []string              // guarded by mu: what a client saw that no server may send
}

type checkSession struct {
	id    int
	name  string
	addr  string    // its server
	hello time.Time // when its HELLO was read
}

func (s *checkSession) String() string {
	return fmt.Sprintf("session %d (%s on %s, HELLO at %s)", s.id, s.name, s.addr, s.hello.Format("15:04:05.000"))
}

type checkSend struct {
	from    *checkSession
	to      string
	written time.Time
	reply   string    // "" if the connection ended first
	replied time.Time // when the reply was read
}

func (snd *checkSend) String() string {
	return fmt.Sprintf("from %v to %s, written at %s, answered %q at %s", snd.from, snd.to, snd.written.Format("15:04:05.000"), snd.reply, snd.replied.Format("15:04:05.000"))
}

type checkDelivery struct {
	to       *checkSession
	from, id string
	seq      int       // its place among to's deliveries
	at       time.Time // when it was read
}

// runSession is one login: it sends numbered messages to random names,
// then logs out by closing its side and reads until the server closes.
func (l *runLog) runSession(rng *rand.Rand, addr, name string, stop time.Time) {
	conn, err := net.Dial("tcp", addr)
	if err != nil {
		time.Sleep(50 * time.Millisecond)
		return
	}
	defer conn.Close()
	_ = conn.SetDeadline(stop.Add(30 * time.Second))
	r := bufio.NewReader(conn)
	if ok, problem := login(conn, r, name, stop); !ok {
		if problem != "" {
			l.mu.Lock()
			l.problems = append(l.problems, problem)
			l.mu.Unlock()
		}
		time.Sleep(20 * time.Millisecond)
		return
	}
	l.mu.Lock()
	l.next++
	s := &checkSession{id: l.next, name: name, addr: addr, hello: time.Now()}
	l.sessions[s.id] = s
	l.mu.Unlock()

	outstanding := make(chan *checkSend, checkWindow)
	readDone := make(chan struct{})
	go func() {
		defer close(readDone)
		l.readSession(s, r, outstanding)
	}()
	end := time.Now().Add(time.Duration(300+rng.IntN(2500)) * time.Millisecond)
	for n := 1; time.Now().Before(end) && time.Now().Before(stop); n++ {
		to := fmt.Sprintf("p%d", rng.IntN(checkPersons))
		id := fmt.Sprintf("%d.%d", s.id, n)
		snd := &checkSend{from: s, to: to}
		select {
		case outstanding <- snd:
		case <-readDone:
			return // the server closed the connection
		}
		l.mu.Lock()
		snd.written = time.Now()
		l.sends[id] = snd
		l.mu.Unlock()
		if _, err := fmt.Fprintf(conn, "SEND %s %s\n", to, id); err != nil {
			break
		}
		time.Sleep(time.Duration(rng.IntN(4)) * time.Millisecond)
	}
	_ = conn.(*net.TCPConn).CloseWrite()
	<-readDone
}

// login logs in as name, retrying while the name is taken. The first line
// a login gets must be its answer: a DELIVERY never comes before HELLO.
func login(conn net.Conn, r *bufio.Reader, name string, stop time.Time) (ok bool, problem string) {
	for time.Now().Before(stop) {
		if _, err := fmt.Fprintf(conn, "HELLO-FROM %s\n", name); err != nil {
			return false, ""
		}
		line, err := r.ReadString('\n')
		switch {
		case err != nil:
			return false, ""
		case line == "HELLO "+name+"\n":
			return true, ""
		case line != "IN-USE\n" && line != "BUSY\n":
			return false, fmt.Sprintf("login of %s answered %q", name, line)
		}
		time.Sleep(20 * time.Millisecond)
	}
	return false, ""
}

// readSession reads a session's lines until the server closes it: replies
// in request order, deliveries between them.
func (l *runLog) readSession(s *checkSession, r *bufio.Reader, outstanding chan *checkSend) {
	seq := 0
	for {
		line, err := r.ReadString('\n')
		if err != nil {
			return
		}
		line = strings.TrimSuffix(line, "\n")
		if rest, ok := strings.CutPrefix(line, "DELIVERY "); ok {
			from, id, _ := strings.Cut(rest, " ")
			seq++
			l.mu.Lock()
			l.got = append(l.got, checkDelivery{to: s, from: from, id: id, seq: seq, at: time.Now()})
			l.mu.Unlock()
			continue
		}
		select {
		case snd := <-outstanding:
			l.mu.Lock()
			snd.reply, snd.replied = line, time.Now()
			l.mu.Unlock()
		default:
			l.mu.Lock()
			l.got = append(l.got, checkDelivery{to: s, from: "?", id: line}) // a reply to nothing
			l.mu.Unlock()
		}
	}
}

// check verifies the run against the cluster's guarantees.
func (l *runLog) check(t *testing.T) {
	t.Helper()
	l.mu.Lock()
	defer l.mu.Unlock()
	for _, p := range l.problems {
		t.Error(p)
	}
	// holders lists every login of each name, oldest first.
	holders := map[string][]*checkSession{}
	for id := 1; id <= l.next; id++ {
		s := l.sessions[id]
		holders[s.name] = append(holders[s.name], s)
	}
	newerHolderBy := func(s *checkSession, at time.Time) bool {
		for _, h := range holders[s.name] {
			if h.id > s.id && h.hello.Before(at) {
				return true
			}
		}
		return false
	}

	seen := map[string]bool{}
	lastFrom := map[[2]int]int{}         // (sender, receiver) -> last number delivered
	newestSpeaker := map[[2]string]int{} // (receiver session, name) -> newest sender session delivered so far
	okCount := 0
	for _, d := range l.got {
		snd := l.sends[d.id]
		switch {
		case snd == nil:
			t.Errorf("session %d (%s) got %q from %s: no such message was sent", d.to.id, d.to.name, d.id, d.from)
			continue
		case snd.from.name != d.from:
			t.Errorf("message %s of %s delivered as from %s", d.id, snd.from.name, d.from)
		case snd.to != d.to.name:
			t.Errorf("message %s for %s delivered to %s", d.id, snd.to, d.to.name)
		case seen[d.id]:
			t.Errorf("message %s delivered twice", d.id)
		case snd.reply == "BAD-DEST-USER":
			t.Errorf("message %s %v; delivered to %v at %s", d.id, snd, d.to, d.at.Format("15:04:05.000"))
		case newerHolderBy(d.to, snd.written):
			t.Errorf("message %s written after a newer login of %s had its HELLO, delivered to the older session %d", d.id, d.to.name, d.to.id)
		case newerHolderBy(snd.from, snd.written):
			t.Errorf("message %s written by session %d after a newer login of %s had its HELLO, and delivered", d.id, snd.from.id, snd.from.name)
		}
		seen[d.id] = true
		var n int
		fmt.Sscanf(d.id[strings.IndexByte(d.id, '.')+1:], "%d", &n)
		pair := [2]int{snd.from.id, d.to.id}
		if n <= lastFrom[pair] {
			t.Errorf("session %d got message %s after %d.%d", d.to.id, d.id, snd.from.id, lastFrom[pair])
		}
		lastFrom[pair] = n
		speaker := [2]string{strconv.Itoa(d.to.id), snd.from.name}
		if newest := newestSpeaker[speaker]; snd.from.id < newest {
			t.Errorf("session %d got message %s of an older login of %s after one of login %d", d.to.id, d.id, snd.from.name, newest)
		} else {
			newestSpeaker[speaker] = snd.from.id
		}
	}
	for id, snd := range l.sends {
		if snd.reply == "SEND-OK" {
			okCount++
			if !seen[id] {
				t.Errorf("message %s %v; never delivered", id, snd)
			}
		}
	}
	t.Logf("%d logins, %d SENDs, %d answered SEND-OK, %d delivered", l.next, len(l.sends), okCount, len(seen))
	if okCount < 100 {
		t.Errorf("only %d SENDs answered SEND-OK: the run tested too little", okCount)
	}
}
