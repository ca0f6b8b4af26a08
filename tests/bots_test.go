package tests

import (
	"bytes"
	"context"
	"io"
	"strings"
	"testing"
	"time"

	"chatserver/internal/chat"
	"chatserver/internal/chat/chattest"
)

// withBots turns the built-in users on.
func withBots(c *chat.Config) { c.Bots = true }

// TestBotsAreUsers: echobot and delaybot are logged in before anyone,
// listed first, count against the user limit, and echobot sends every
// message straight back.
func TestBotsAreUsers(t *testing.T) {
	eachLink(t, true, func(t *testing.T, start serverStarter) {
		_, addr := start(t, func(c *chat.Config) {
			withBots(c)
			c.MaxUsers = 3
		})
		ann := chattest.LoggedIn(t, addr, "ann")
		ann.Request("LIST", "LIST-OK echobot,delaybot,ann")
		chattest.Dial(t, addr).Request("HELLO-FROM bob", "BUSY") // two bots and ann: full
		chattest.Dial(t, addr).Request("HELLO-FROM echobot", "IN-USE")
		for _, msg := range []string{"hi", "  spaced\tand tabbed  ", "zoë 日本 \u202e"} {
			ann.Request("SEND echobot "+msg, "SEND-OK")
			ann.Expect("DELIVERY echobot " + msg)
		}
	})
}

// TestMaxUsersZero: with room for no one, every login is BUSY, and the
// connection may try again. (A single server's setting: a cluster needs
// room for one user.)
func TestMaxUsersZero(t *testing.T) {
	w := chattest.Dial(t, chattest.Start(t, func(c *chat.Config) { c.MaxUsers = 0 }).Addr)
	w.Request("HELLO-FROM ann", "BUSY")
	w.Request("HELLO-FROM bob", "BUSY")
	w.Request("LIST", "BAD-RQST-HDR") // still not logged in
}

// read is one read of a client's socket, and when it returned.
type read struct {
	data []byte
	at   time.Time
}

// readAll reads w until it has want bytes (or EOF, or the deadline),
// keeping each read of the socket apart (a bufio.Reader's Read reads the
// socket at most once).
func readAll(t *testing.T, w *chattest.Wire, want int) []read {
	t.Helper()
	var reads []read
	got := 0
	w.Conn.SetReadDeadline(time.Now().Add(chattest.WaitTimeout))
	buf := make([]byte, 64<<10)
	for got < want {
		n, err := w.R.Read(buf)
		if n > 0 {
			reads = append(reads, read{bytes.Clone(buf[:n]), time.Now()})
			got += n
		}
		if err != nil {
			if err != io.EOF {
				t.Fatalf("read after %d of %d bytes: %v", got, want, err)
			}
			break
		}
	}
	return reads
}

// chunks is each read's bytes, as text.
func chunks(reads []read) []string {
	var s []string
	for _, r := range reads {
		s = append(s, string(r.data))
	}
	return s
}

// joined is every read's bytes, in order.
func joined(reads []read) string {
	var b strings.Builder
	for _, r := range reads {
		b.Write(r.data)
	}
	return b.String()
}

// TestDelaybotWritesInPieces: delaybot's two answers reach the client in
// several reads over about a second, and put back together they are the
// exact lines; what else is queued for the client meanwhile (a reply, a
// message from someone else) comes after them, never inside a line.
func TestDelaybotWritesInPieces(t *testing.T) {
	eachLink(t, true, func(t *testing.T, start serverStarter) {
		_, addr := start(t, withBots)
		ann := chattest.LoggedIn(t, addr, "ann")
		bob := chattest.LoggedIn(t, addr, "bob")
		const msg = "a message to split"
		answer := "DELIVERY delaybot " + msg + "\n"

		sent := time.Now()
		ann.Send("SEND delaybot " + msg + "\n")
		ann.Expect("SEND-OK")
		ann.Conn.SetReadDeadline(time.Now().Add(chattest.WaitTimeout))
		if _, err := ann.R.Peek(1); err != nil { // delaybot has begun
			t.Fatalf("no piece of delaybot's answer arrived: %v", err)
		}
		bob.Request("SEND ann from bob, meanwhile", "SEND-OK") // queued while delaybot writes
		ann.Send("LIST\n")
		rest := answer + answer + "DELIVERY bob from bob, meanwhile\nLIST-OK echobot,delaybot,ann,bob\n"
		reads := readAll(t, ann, len(rest))
		if got := joined(reads); got != rest {
			t.Fatalf("after SEND-OK ann read %q, want %q", got, rest)
		}
		pieces, at := 0, 0 // reads with bytes of the answers; where each starts
		for _, r := range reads {
			if at < 2*len(answer) {
				pieces++
			}
			at += len(r.data)
		}
		if pieces < 3 {
			t.Errorf("delaybot's answers came in %d reads (%q), want at least 3 pieces", pieces, chunks(reads))
		}
		if took := reads[len(reads)-1].at.Sub(sent); took < 500*time.Millisecond {
			t.Errorf("delaybot's answers were complete %v after the SEND, want them spread over about a second", took)
		}
	})
}

// TestDelaybotLinesAreCompleteAtShutdown: a server that shuts down while
// delaybot writes an answer in pieces writes the rest at once: the client
// gets whole lines, and what waited behind them, before the close.
func TestDelaybotLinesAreCompleteAtShutdown(t *testing.T) {
	srv, addr := startServer(t, withBots)
	ann := chattest.LoggedIn(t, addr, "ann")
	ann.Request("SEND delaybot bye", "SEND-OK")
	ann.Conn.SetReadDeadline(time.Now().Add(chattest.WaitTimeout))
	if _, err := ann.R.Peek(1); err != nil { // the first piece is here
		t.Fatalf("no piece of delaybot's answer arrived: %v", err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if err := srv.Shutdown(ctx); err != nil {
		t.Fatalf("Shutdown: %v", err)
	}
	rest, err := io.ReadAll(ann.R)
	if want := "DELIVERY delaybot bye\nDELIVERY delaybot bye\n"; string(rest) != want || err != nil {
		t.Errorf("before the close ann read %q (%v), want %q", rest, err, want)
	}
}

// TestClusterBots: two servers of a cluster with bots run one echobot and
// one delaybot between them: the first server's; the second's wait, and
// take over when the first shuts down. Users of either server reach them.
func TestClusterBots(t *testing.T) {
	t.Parallel()
	ns := runNATS(t)
	first, a, _ := startNode(t, ns.URL(), withBots)
	_, b, _ := startNode(t, ns.URL(), withBots)
	bea := chattest.LoggedIn(t, b, "bea")
	bea.Request("LIST", "LIST-OK echobot,delaybot,bea")
	bea.Request("SEND echobot across", "SEND-OK")
	bea.Expect("DELIVERY echobot across")
	bea.Request("SEND delaybot across", "SEND-OK")
	bea.Expect("DELIVERY delaybot across", "DELIVERY delaybot across") // whole: it crossed NATS
	ann := chattest.LoggedIn(t, a, "ann")
	waitList(t, ann, "echobot,delaybot,bea,ann")

	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if err := first.Shutdown(ctx); err != nil {
		t.Fatalf("Shutdown: %v", err)
	}
	deadline := time.Now().Add(2*chat.BotRetry + 5*time.Second)
	for l := list(bea); l != "bea,echobot,delaybot" && l != "bea,delaybot,echobot"; l = list(bea) {
		if time.Now().After(deadline) {
			t.Fatalf("the second server's bots did not take over; LIST-OK %s", l)
		}
		time.Sleep(100 * time.Millisecond)
	}
	bea.Request("SEND echobot still there?", "SEND-OK")
	bea.Expect("DELIVERY echobot still there?")
}
