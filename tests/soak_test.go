package tests

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"net"
	"os"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"
	"unicode/utf8"

	"chatserver/internal/chat"
	"chatserver/internal/chat/chattest"
)

// soakSeedEnv names the environment variable that sets the soak test's
// seed, to replay a failure.
const soakSeedEnv = "CHAT_SOAK_SEED"

const (
	soakClients        = 30
	soakMaxLine        = 4 << 10 // a small cap, so long lines are cheap
	soakBytesPerClient = 1 << 20
	soakBytesPerConn   = 256 << 10
	soakDuration       = 3 * time.Second
)

// soakNames are the only names soak clients log in as: more than
// MaxUsers, so logins also meet IN-USE and BUSY.
var soakNames = func() []string {
	names := make([]string, 40)
	for i := range names {
		names[i] = fmt.Sprintf("s%02d", i)
	}
	names[0], names[1] = "zoë", "A-1.x"
	return names
}()

// A live server under 30 clients sending random byte streams: valid
// requests, garbage, long lines, cut into random writes, some clients
// resetting. Clients that close cleanly get exactly one reply per line
// they sent, every reply is well-formed, and afterwards the server is
// empty and still serves.
func TestSoak(t *testing.T) {
	eachLink(t, true, func(t *testing.T, start serverStarter) {
		seed := uint64(20261125)
		if s := os.Getenv(soakSeedEnv); s != "" {
			var err error
			if seed, err = strconv.ParseUint(s, 10, 64); err != nil {
				t.Fatalf("%s=%q: %v", soakSeedEnv, s, err)
			}
		}
		t.Logf("soak seed %d (set %s=%d to replay)", seed, soakSeedEnv, seed)

		srv, addr := start(t, func(c *chat.Config) { c.MaxLineBytes = soakMaxLine })
		master := rand.New(rand.NewPCG(seed, 0))
		deadline := time.Now().Add(soakDuration)
		// Each client connects again when its connection ends, until its
		// byte budget or the deadline runs out.
		results := make([][]soakResult, soakClients)
		var wg sync.WaitGroup
		for i := range soakClients {
			rng := rand.New(rand.NewPCG(master.Uint64(), uint64(i)))
			wg.Go(func() {
				for budget := soakBytesPerClient; budget > 0 && time.Now().Before(deadline); {
					c, err := net.Dial("tcp", addr)
					if err != nil {
						results[i] = append(results[i], soakResult{err: fmt.Errorf("dial: %w", err)})
						return
					}
					r := runSoakClient(c.(*net.TCPConn), rng, min(budget, 1+rng.IntN(soakBytesPerConn)), deadline)
					results[i] = append(results[i], r)
					budget -= max(r.written, 1)
				}
			})
		}
		wg.Wait()

		var total soakResult
		conns := 0
		for i, rs := range results {
			for j, r := range rs {
				if r.err != nil {
					t.Errorf("client %d, connection %d (%s): %v", i, j, r.mode, r.err)
				}
				total.written += r.written
				total.lines += r.lines
				total.replies += r.replies
				total.deliveries += r.deliveries
				conns++
			}
		}
		t.Logf("soak: %d clients, %d connections wrote %d KiB in %d lines; read %d replies and %d deliveries",
			soakClients, conns, total.written>>10, total.lines, total.replies, total.deliveries)

		// A connection the kernel completed may still wait in the listen
		// queue after its client is gone, so count closes, not only what is
		// open now.
		closedTotal := func(st chat.Stats) (n uint64) {
			for _, c := range st.Closed {
				n += c
			}
			return n
		}
		chattest.Eventually(t, "every soak connection to be closed and every user gone", func() bool {
			st := srv.Stats()
			return closedTotal(st) >= uint64(conns) && st.Users == 0 && st.Connections == 0
		})
		st := srv.Stats()
		if closedTotal(st) != uint64(conns) {
			t.Errorf("connections closed = %d (%v), want %d", closedTotal(st), st.Closed, conns)
		}
		for _, r := range []chat.CloseReason{chat.ReasonSlowConsumer, chat.ReasonInternalError, chat.ReasonLoginTimeout, chat.ReasonConnLimit} {
			if st.Closed[r] != 0 {
				t.Errorf("connections closed as %v = %d, want 0", r, st.Closed[r])
			}
		}

		// Still serving, with every slot free.
		first := chattest.LoggedIn(t, addr, soakNames[0])
		for _, name := range soakNames[1:15] {
			chattest.LoggedIn(t, addr, name)
		}
		a := chattest.LoggedIn(t, addr, "after")
		a.Send("LIST\n")
		a.Expect("LIST-OK " + strings.Join(soakNames[:15], ",") + ",after")
		a.Send("SEND " + soakNames[0] + " still here\n")
		a.Expect("SEND-OK")
		first.Expect("DELIVERY after still here")
	})
}

// soakResult is what one soak client did and saw.
type soakResult struct {
	mode       string
	written    int // bytes
	lines      int // "\n"s written
	replies    int // reply lines read, DELIVERY not counted
	deliveries int
	err        error
}

// runSoakClient writes a random stream of about budget bytes on c, or
// less if the deadline comes first, while another goroutine reads and
// checks every reply, then ends the connection the way its mode says.
func runSoakClient(c *net.TCPConn, rng *rand.Rand, budget int, deadline time.Time) (res soakResult) {
	defer c.Close()
	modes := []string{"graceful", "graceful", "graceful", "graceful", "graceful", "graceful", "reset", "reset", "reset", "close"}
	res.mode = modes[rng.IntN(len(modes))]
	resetAt := -1 // never
	if res.mode == "reset" {
		resetAt = rng.IntN(budget) // anywhere, mid-line too
	}

	type drained struct {
		replies, deliveries int
		err                 error
	}
	done := make(chan drained, 1)
	go func() {
		var d drained
		d.replies, d.deliveries, d.err = drainReplies(c)
		done <- d
	}()

	var pending []byte
	flush := func(all bool) error {
		for len(pending) > 0 && (all || len(pending) > 8<<10) {
			n := min(len(pending), 1+rng.IntN(4<<10))
			if rng.IntN(8) == 0 {
				n = min(len(pending), 1+rng.IntN(8)) // tiny writes now and then
			}
			if resetAt >= 0 && res.written+n > resetAt {
				n = resetAt - res.written
			}
			if n > 0 {
				_ = c.SetWriteDeadline(time.Now().Add(chattest.ReplyTimeout))
				if _, err := c.Write(pending[:n]); err != nil {
					return fmt.Errorf("write after %d bytes: %w", res.written, err)
				}
			}
			res.lines += bytes.Count(pending[:n], []byte("\n"))
			res.written += n
			pending = pending[n:]
			if resetAt >= 0 && res.written >= resetAt {
				return errReset
			}
		}
		return nil
	}

	var err error
	for err == nil && res.written+len(pending) < budget && time.Now().Before(deadline) {
		pending = appendSoakItem(pending, rng)
		err = flush(false)
	}
	if err == nil && res.mode == "graceful" && (len(pending) == 0 || pending[len(pending)-1] != '\n') {
		pending = append(pending, '\n') // every line complete, so each has a reply
	}
	if err == nil {
		err = flush(true)
	}

	switch {
	case errors.Is(err, errReset) || res.mode == "reset":
		_ = c.SetLinger(0)
		c.Close()
		<-done
		return res
	case err != nil:
		res.err = err
		c.Close()
		<-done
		return res
	case res.mode == "close":
		c.Close() // without reading the rest: may reset on the server's side
		<-done
		return res
	}
	if err := c.CloseWrite(); err != nil {
		res.err = fmt.Errorf("CloseWrite: %w", err)
		return res
	}
	d := <-done
	res.replies, res.deliveries = d.replies, d.deliveries
	switch {
	case d.err != nil:
		res.err = d.err
	case res.replies != res.lines:
		res.err = fmt.Errorf("sent %d lines (%d bytes), got %d replies (and %d deliveries); want one reply per line",
			res.lines, res.written, res.replies, res.deliveries)
	}
	return res
}

var errReset = errors.New("reset point reached")

// drainReplies reads c until it ends, checking that every line is a
// well-formed reply, and counts replies and deliveries. A clean EOF
// returns a nil error; a closed or reset connection returns the error,
// which matters only to a client that closed cleanly.
func drainReplies(c *net.TCPConn) (replies, deliveries int, err error) {
	_ = c.SetReadDeadline(time.Now().Add(6 * chattest.ReplyTimeout))
	r := bufio.NewReaderSize(c, 16<<10)
	for {
		line, err := r.ReadString('\n')
		if err != nil {
			if errors.Is(err, io.EOF) {
				if line != "" {
					return replies, deliveries, fmt.Errorf("%q at EOF: a reply without its \\n", line)
				}
				return replies, deliveries, nil
			}
			return replies, deliveries, err
		}
		line = strings.TrimSuffix(line, "\n")
		if err := checkReply(line); err != nil {
			return replies, deliveries, err
		}
		if strings.HasPrefix(line, "DELIVERY ") {
			deliveries++
		} else {
			replies++
		}
	}
}

// checkReply reports whether line is a reply the soak clients could get.
func checkReply(line string) error {
	header, body, hasBody := strings.Cut(line, " ")
	known := func(name string) bool { return slices.Contains(soakNames, name) }
	switch {
	case !hasBody && slices.Contains([]string{"IN-USE", "BUSY", "SEND-OK", "BAD-DEST-USER", "BAD-RQST-HDR", "BAD-RQST-BODY"}, header):
		return nil
	case header == "HELLO" && known(body):
		return nil
	case header == "LIST-OK":
		names := strings.Split(body, ",")
		slices.Sort(names)
		if len(names) <= 16 && !slices.ContainsFunc(names, func(n string) bool { return !known(n) }) &&
			len(slices.Compact(names)) == len(names) {
			return nil
		}
	case header == "DELIVERY":
		from, msg, ok := strings.Cut(body, " ")
		if ok && known(from) && utf8.ValidString(msg) && !strings.ContainsAny(msg, "\x00\r") &&
			strings.TrimSpace(msg) != "" && len(line) <= soakMaxLine+len("DELIVERY  ")+len(from) {
			return nil
		}
	}
	return fmt.Errorf("malformed reply %.300q", line)
}

// appendSoakItem appends one random piece of a soak stream: mostly valid
// requests, and garbage, near misses, long lines and bare line ends.
func appendSoakItem(b []byte, rng *rand.Rand) []byte {
	name := func() string { return soakNames[rng.IntN(len(soakNames))] }
	eol := func() string {
		if rng.IntN(4) == 0 {
			return "\r\n"
		}
		return "\n"
	}
	switch k := rng.IntN(100); {
	case k < 15:
		return append(b, "HELLO-FROM "+name()+eol()...)
	case k < 30:
		return append(b, "LIST"+eol()...)
	case k < 55:
		return append(b, "SEND "+name()+" "+soakMessage(rng)+eol()...)
	case k < 68: // random bytes, newlines included
		n := rng.IntN(300)
		for range n {
			b = append(b, byte(rng.Uint32()))
		}
		return b
	case k < 82: // near misses
		misses := []string{
			"list", "LIST ", " LIST", "LIST extra", "Send " + name() + " hi", "SENDX a b",
			"HELLO-FROM", "HELLO-FROM ", "HELLO-FROM  " + name(), "HELLO-FROM " + name() + " ",
			"HELLO-FROM a,b", "HELLO-FROM a\tb", "HELLO-FROM " + strings.Repeat("n", 65),
			"SEND", "SEND ", "SEND " + name(), "SEND " + name() + " ", "SEND " + name() + "  \t ",
			"SEND  " + name() + " hi", "SEND a,b hi", "SEND " + name() + " a\x00b", "SEND " + name() + " \xff",
			"SEND nobody@x hi", "WHO", "", "\x00", "HELLO-FROM \xc3",
		}
		return append(b, misses[rng.IntN(len(misses))]+eol()...)
	case k < 92: // long lines around and over the cap
		n := soakMaxLine - 20 + rng.IntN(40)
		if rng.IntN(3) == 0 {
			n = 80 + rng.IntN(3*soakMaxLine) // never a valid name after HELLO-FROM
		}
		heads := []string{"SEND " + name() + " ", "HELLO-FROM ", "LIST ", "XYZZY ", ""}
		line := heads[rng.IntN(len(heads))]
		line += strings.Repeat("w", max(0, n-len(line)))
		return append(b, line+eol()...)
	default: // bare line ends
		return append(b, eol()...)
	}
}

// soakMessage returns a valid message: words, sometimes with a tab,
// non-ASCII letters, or leading and trailing spaces.
func soakMessage(rng *rand.Rand) string {
	words := []string{"hi", "zoë", "DELIVERY", "x", "€uro", "a\tb", "SEND", "naïve", "🙂", "LIST-OK"}
	var sb strings.Builder
	if rng.IntN(5) == 0 {
		sb.WriteString("  ")
	}
	for i := range 1 + rng.IntN(12) {
		if i > 0 {
			sb.WriteByte(' ')
		}
		sb.WriteString(words[rng.IntN(len(words))])
	}
	if rng.IntN(5) == 0 {
		sb.WriteString(" ")
	}
	return sb.String()
}
