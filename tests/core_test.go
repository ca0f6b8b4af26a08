package tests

import (
	"fmt"
	"net"
	"slices"
	"strconv"
	"strings"
	"testing"

	"chatserver/internal/chat"
	"chatserver/internal/chat/chattest"
)

// This file tests the core protocol over real TCP: every reply and error,
// the order of checks, logins and the user limit, framing, and delivery.

func TestLoginAndList(t *testing.T) {
	t.Parallel()
	_, addr := startServer(t, nil)

	alice := chattest.Dial(t, addr)
	alice.Send("HELLO-FROM alice\n")
	alice.Expect("HELLO alice")
	alice.Send("LIST\n")
	alice.Expect("LIST-OK alice") // alone: no comma, no spaces

	bob := chattest.LoggedIn(t, addr, "bob")
	carol := chattest.LoggedIn(t, addr, "carol")
	// Every user sees every user, itself included, in login order.
	for _, w := range []*chattest.Wire{carol, alice, bob} {
		w.Send("LIST\n")
		w.Expect("LIST-OK alice,bob,carol")
	}
}

// TestRequestErrors sends every row of the protocol's "cases people get
// wrong" table, each on its own connection, both before and after login:
// the order of checks decides which reply comes. After the reply, the
// connection must still work, in the state it should be in.
func TestRequestErrors(t *testing.T) {
	t.Parallel()
	const (
		hdr  = "BAD-RQST-HDR"
		body = "BAD-RQST-BODY"
		dest = "BAD-DEST-USER"
	)
	tests := []struct {
		line string // sent with "\n" appended
		out  string // the reply before login
		in   string // the reply after login
	}{
		// Headers that are not one of the three.
		{"", hdr, hdr},
		{" ", hdr, hdr},
		{"   ", hdr, hdr},
		{"\t", hdr, hdr},
		{" LIST", hdr, hdr},
		{" HELLO-FROM x1", hdr, hdr},
		{"list", hdr, hdr},
		{"List", hdr, hdr},
		{"hello-from x2", hdr, hdr},
		{"Send x y", hdr, hdr},
		{"SENDX a b", hdr, hdr},
		{"LISTX", hdr, hdr},
		{"HELLO-FROMbob", hdr, hdr},
		{"HELLO-FROM\tx3", hdr, hdr},
		{"LIST\t", hdr, hdr},
		{"LIST\r\r", hdr, hdr}, // only one "\r" is dropped
		{"WHO", hdr, hdr},
		{"HELLO x4", hdr, hdr},
		{"LIST-OK", hdr, hdr},
		{"\x00", hdr, hdr},
		{"\xff", hdr, hdr},

		// LIST and SEND are not allowed before login, whatever the body.
		{"LIST", hdr, ""},
		{"LIST extra", hdr, body},
		{"LIST ", hdr, body},
		{"SEND", hdr, body},
		{"SEND ", hdr, body},
		{"SEND bob", hdr, body},
		{"SEND bob ", hdr, body},
		{"SEND bob  \t ", hdr, body},
		{"SEND  bob hi", hdr, body},
		{"SEND bob,x hi", hdr, body},
		{"SEND nobody ", hdr, body}, // the body is checked before the lookup
		{"SEND nobody \t", hdr, body},
		{"SEND bob a\x00b", hdr, body},
		{"SEND bob a\rb", hdr, body},
		{"SEND bob \r", hdr, body},
		{"SEND bob \xff", hdr, body},
		{"SEND bob caf\xc3", hdr, body},      // truncated UTF-8
		{"SEND bob \xed\xa0\x80", hdr, body}, // a UTF-16 surrogate
		{"SEND bob \u3000\u00a0", hdr, body}, // white space only
		{"SEND nobody hi", hdr, dest},        // well-formed, not logged in
		{"SEND Bob hi", hdr, dest},           // names are case-sensitive
		{"SEND " + strings.Repeat("n", 65) + " hi", hdr, body},

		// HELLO-FROM with a bad name: BAD-RQST-BODY before login, and
		// BAD-RQST-HDR after it, whatever the body.
		{"HELLO-FROM", body, hdr},
		{"HELLO-FROM ", body, hdr},
		{"HELLO-FROM a b", body, hdr},
		{"HELLO-FROM  a", body, hdr},
		{"HELLO-FROM a ", body, hdr},
		{"HELLO-FROM a,b", body, hdr},
		{"HELLO-FROM a\tb", body, hdr},
		{"HELLO-FROM a\x00b", body, hdr},
		{"HELLO-FROM a\rb", body, hdr},
		{"HELLO-FROM a\x01", body, hdr},
		{"HELLO-FROM a\x1b", body, hdr},
		{"HELLO-FROM a\x7f", body, hdr},
		{"HELLO-FROM a\u0085", body, hdr},  // C1 control
		{"HELLO-FROM a\u200bb", body, hdr}, // zero-width space: a format character
		{"HELLO-FROM a\ufeff", body, hdr},  // BOM: a format character
		{"HELLO-FROM a\u00a0b", body, hdr}, // no-break space
		{"HELLO-FROM a\u3000b", body, hdr}, // ideographic space
		{"HELLO-FROM a\u2028b", body, hdr}, // line separator
		{"HELLO-FROM \xff", body, hdr},
		{"HELLO-FROM caf\xc3", body, hdr},
		{"HELLO-FROM \xc0\xaf", body, hdr}, // overlong encoding
		{"HELLO-FROM \xed\xa0\x80", body, hdr},
		{"HELLO-FROM " + strings.Repeat("n", 65), body, hdr},
		{"HELLO-FROM " + strings.Repeat("日", 22), body, hdr}, // 66 bytes
		{"HELLO-FROM a!", body, hdr},
		{"HELLO-FROM a@", body, hdr},
		{"HELLO-FROM a#", body, hdr},
		{"HELLO-FROM a$", body, hdr},
		{"HELLO-FROM a%", body, hdr},
		{"HELLO-FROM a^", body, hdr},
		{"HELLO-FROM a&", body, hdr},
		{"HELLO-FROM a*", body, hdr},

		// Good names: accepted before login, BAD-RQST-HDR after it.
		{"HELLO-FROM zoë", "HELLO zoë", hdr},
		{"HELLO-FROM a_b", "HELLO a_b", hdr},
		{"HELLO-FROM A-1.x", "HELLO A-1.x", hdr},
		{"HELLO-FROM 123", "HELLO 123", hdr},
		{"HELLO-FROM 日本", "HELLO 日本", hdr},
		{"HELLO-FROM 😀", "HELLO 😀", hdr},
		{"HELLO-FROM é́", "HELLO é́", hdr}, // combining marks are printable
		{"HELLO-FROM " + strings.Repeat("n", 64), "HELLO " + strings.Repeat("n", 64), hdr},
		{"HELLO-FROM " + strings.Repeat("日", 21) + "x", "HELLO " + strings.Repeat("日", 21) + "x", hdr},
		{"HELLO-FROM bob", "IN-USE", hdr},
	}

	_, addr := startServer(t, func(c *chat.Config) { c.MaxUsers = 1000 })
	chattest.LoggedIn(t, addr, "bob") // the recipient the SEND rows name
	for i, tt := range tests {
		if tt.out != "" {
			t.Run("out/"+strconv.Quote(tt.line), func(t *testing.T) {
				t.Parallel()
				w := chattest.Dial(t, addr)
				w.Send(tt.line + "\n")
				w.Expect(tt.out)
				if name, ok := strings.CutPrefix(tt.out, "HELLO "); ok {
					// Logged in as exactly that name.
					w.Send("SEND " + name + " ping\n")
					w.Expect("DELIVERY "+name+" ping", "SEND-OK")
					return
				}
				// Still connected and not logged in: a login works.
				w.Login(fmt.Sprintf("out%d", i))
			})
		}
		if tt.in != "" {
			t.Run("in/"+strconv.Quote(tt.line), func(t *testing.T) {
				t.Parallel()
				me := fmt.Sprintf("in%d", i)
				w := chattest.LoggedIn(t, addr, me)
				w.Send(tt.line + "\n")
				w.Expect(tt.in)
				// Still connected and logged in as before.
				w.Send("SEND " + me + " ping\n")
				w.Expect("DELIVERY "+me+" ping", "SEND-OK")
			})
		}
	}
}

func TestNamesAreCaseSensitive(t *testing.T) {
	t.Parallel()
	_, addr := startServer(t, nil)
	bob := chattest.LoggedIn(t, addr, "bob")
	bob.Send("SEND Bob hi\n")
	bob.Expect("BAD-DEST-USER")
	bob.Send("SEND BOB hi\n")
	bob.Expect("BAD-DEST-USER")

	bigBob := chattest.LoggedIn(t, addr, "Bob") // a second user, not IN-USE
	bob.Send("SEND Bob hi\n")
	bob.Expect("SEND-OK")
	bigBob.Expect("DELIVERY bob hi")
	bigBob.Send("LIST\n")
	bigBob.Expect("LIST-OK bob,Bob")
}

// TestLoginRetrySameSocket checks that a failed login leaves the
// connection open and unauthenticated, so the client may try again.
func TestLoginRetrySameSocket(t *testing.T) {
	t.Parallel()
	t.Run("after IN-USE", func(t *testing.T) {
		t.Parallel()
		_, addr := startServer(t, nil)
		chattest.LoggedIn(t, addr, "bob")
		w := chattest.Dial(t, addr)
		w.Send("HELLO-FROM bob\n")
		w.Expect("IN-USE")
		w.Send("HELLO-FROM bob\n")
		w.Expect("IN-USE")
		w.Send("LIST\n")
		w.Expect("BAD-RQST-HDR") // still not logged in
		w.Login("bob2")
		w.Send("LIST\n")
		w.Expect("LIST-OK bob,bob2")
	})
	t.Run("after BUSY", func(t *testing.T) {
		t.Parallel()
		_, addr := startServer(t, func(c *chat.Config) { c.MaxUsers = 2 })
		first := chattest.LoggedIn(t, addr, "first")
		watcher := chattest.LoggedIn(t, addr, "watcher")
		w := chattest.Dial(t, addr)
		w.Send("HELLO-FROM late\n")
		w.Expect("BUSY")
		w.Send("SEND first hi\n")
		w.Expect("BAD-RQST-HDR") // still not logged in
		first.Conn.Close()
		waitList(t, watcher, "watcher")
		w.Login("late")
		w.Send("LIST\n")
		w.Expect("LIST-OK watcher,late")
	})
	t.Run("after a bad name", func(t *testing.T) {
		t.Parallel()
		_, addr := startServer(t, nil)
		w := chattest.Dial(t, addr)
		for _, bad := range []string{"HELLO-FROM a,b", "HELLO-FROM", "HELLO-FROM a b", "HELLO-FROM " + strings.Repeat("x", 65)} {
			w.Send(bad + "\n")
			w.Expect("BAD-RQST-BODY")
		}
		w.Login("ab")
		w.Send("LIST\n")
		w.Expect("LIST-OK ab")
	})
	t.Run("after BAD-RQST-HDR", func(t *testing.T) {
		t.Parallel()
		_, addr := startServer(t, nil)
		w := chattest.Dial(t, addr)
		w.Send("LIST\nSEND x y\nWHO\n")
		w.Expect("BAD-RQST-HDR", "BAD-RQST-HDR", "BAD-RQST-HDR")
		w.Login("x")
	})
}

// leaveWays are the ways a client can leave: each must free its name and
// its slot at once.
var leaveWays = []struct {
	name  string
	leave func(*chattest.Wire)
}{
	{"close", func(w *chattest.Wire) { w.Conn.Close() }},
	{"reset", (*chattest.Wire).Reset},
	{"half-close", func(w *chattest.Wire) { _ = w.TCP().CloseWrite() }},
}

// usersNamed returns the names u00, u01, ... u<n-1>.
func usersNamed(n int) []string {
	names := make([]string, n)
	for i := range names {
		names[i] = fmt.Sprintf("u%02d", i)
	}
	return names
}

func TestMaxUsers(t *testing.T) {
	t.Parallel()
	const maxUsers = 16 // the default
	for _, way := range leaveWays {
		t.Run(way.name, func(t *testing.T) {
			t.Parallel()
			_, addr := startServer(t, nil)

			// Connections that have not logged in do not count.
			idle := make([]*chattest.Wire, 20)
			for i := range idle {
				idle[i] = chattest.Dial(t, addr)
			}
			names := usersNamed(maxUsers)
			users := make([]*chattest.Wire, maxUsers)
			for i, name := range names {
				users[i] = chattest.LoggedIn(t, addr, name)
			}
			users[0].Send("LIST\n")
			users[0].Expect("LIST-OK " + strings.Join(names, ","))

			late := chattest.Dial(t, addr)
			late.Send("HELLO-FROM late\n")
			late.Expect("BUSY")
			late.Send("HELLO-FROM u05\n")
			late.Expect("IN-USE") // the name is checked before the limit
			idle[0].Send("HELLO-FROM idle\n")
			idle[0].Expect("BUSY")

			way.leave(users[3])
			names = slices.Delete(names, 3, 4)
			waitList(t, users[0], strings.Join(names, ","))
			late.Login("late") // the freed slot, on the socket that got BUSY

			idle[1].Send("HELLO-FROM idle\n")
			idle[1].Expect("BUSY") // full again
			users[15].Send("LIST\n")
			users[15].Expect("LIST-OK " + strings.Join(append(names, "late"), ","))
		})
	}
}

func TestNameFreedAtOnce(t *testing.T) {
	t.Parallel()
	for _, way := range leaveWays {
		t.Run(way.name, func(t *testing.T) {
			t.Parallel()
			_, addr := startServer(t, nil)
			alice := chattest.LoggedIn(t, addr, "alice")
			bob := chattest.LoggedIn(t, addr, "bob")

			way.leave(alice)
			waitList(t, bob, "bob")
			bob.Send("SEND alice hi\n")
			bob.Expect("BAD-DEST-USER")

			alice2 := chattest.LoggedIn(t, addr, "alice")
			bob.Send("SEND alice again\n")
			bob.Expect("SEND-OK")
			alice2.Expect("DELIVERY bob again")
			alice2.Send("LIST\n")
			alice2.Expect("LIST-OK bob,alice")
		})
	}
}

// expectOneHello checks that of the connections racing for name exactly
// one got HELLO and all the others IN-USE.
func expectOneHello(t *testing.T, name string, replies []string) {
	t.Helper()
	hello, inUse := 0, 0
	for _, r := range replies {
		switch r {
		case "HELLO " + name:
			hello++
		case "IN-USE":
			inUse++
		default:
			t.Errorf("got %q, want HELLO %s or IN-USE", r, name)
		}
	}
	if hello != 1 || inUse != len(replies)-1 {
		t.Fatalf("got %d HELLO and %d IN-USE, want 1 and %d", hello, inUse, len(replies)-1)
	}
}

// raceLogins dials one connection per name, then sends all the logins at
// once, released by a barrier, and returns the connections and their
// replies in the same order.
func raceLogins(t *testing.T, addr string, names []string) ([]*chattest.Wire, []string) {
	t.Helper()
	return raceLoginsAcross(t, []string{addr}, names)
}

// raceLoginsAcross is raceLogins with connection i on addrs[i%len(addrs)],
// for a cluster of servers.
func raceLoginsAcross(t *testing.T, addrs []string, names []string) ([]*chattest.Wire, []string) {
	t.Helper()
	conns := make([]*chattest.Wire, len(names))
	for i := range conns {
		conns[i] = chattest.Dial(t, addrs[i%len(addrs)])
	}
	start := make(chan struct{})
	errs := make(chan error, len(conns))
	for i, w := range conns {
		go func() {
			<-start
			_, err := w.Conn.Write([]byte("HELLO-FROM " + names[i] + "\n"))
			errs <- err
		}()
	}
	close(start)
	for range conns {
		if err := <-errs; err != nil {
			t.Fatalf("write: %v", err)
		}
	}
	replies := make([]string, len(conns))
	for i, w := range conns {
		replies[i] = w.Line()
	}
	return conns, replies
}

func TestLoginRaceForSlots(t *testing.T) {
	t.Parallel()
	_, addr := startServer(t, nil)
	names := make([]string, 40)
	for i := range names {
		names[i] = fmt.Sprintf("racer%02d", i)
	}
	conns, replies := raceLogins(t, addr, names)
	var winners []string
	var winner *chattest.Wire
	busy := 0
	for i, r := range replies {
		switch r {
		case "HELLO " + names[i]:
			winners = append(winners, names[i])
			winner = conns[i]
		case "BUSY":
			busy++
		default:
			t.Errorf("%s got %q, want HELLO or BUSY", names[i], r)
		}
	}
	if len(winners) != 16 || busy != 24 {
		t.Fatalf("got %d HELLO and %d BUSY, want 16 and 24", len(winners), busy)
	}
	got := strings.Split(list(winner), ",")
	slices.Sort(got)
	if !slices.Equal(got, winners) {
		t.Errorf("LIST-OK has %v, want the winners %v", got, winners)
	}
}

func TestLoginRaceForOneName(t *testing.T) {
	t.Parallel()
	_, addr := startServer(t, nil)
	names := make([]string, 20)
	for i := range names {
		names[i] = "same"
	}
	_, replies := raceLogins(t, addr, names)
	expectOneHello(t, "same", replies)
	w := chattest.LoggedIn(t, addr, "other")
	w.Send("LIST\n")
	w.Expect("LIST-OK same,other")
}

func TestSendAndDelivery(t *testing.T) {
	t.Parallel()
	_, addr := startServer(t, nil)
	names := []string{"alice", "bob", "zoë", "日本", "😀"}
	users := map[string]*chattest.Wire{}
	for _, name := range names {
		users[name] = chattest.LoggedIn(t, addr, name)
	}
	tests := []struct{ from, to, msg string }{
		{"alice", "bob", "hi"},
		{"bob", "alice", "hello back"},
		{"zoë", "日本", "zoë says こんにちは"},
		{"日本", "😀", "emoji 🎉👍🏽 and a family 👨‍👩‍👧"},
		{"😀", "zoë", "ÿ ß ø Ω ∑ ≠ €"},
		{"alice", "bob", "  leading and trailing spaces  "},
		{"alice", "bob", "\ttabs\tinside\tand around\t"},
		{"alice", "bob", " \t x \t "},
		{"alice", "bob", "double  spaces   kept"},
		{"alice", "bob", "DELIVERY eve fake"}, // verbatim, no escaping
		{"alice", "bob", "SEND-OK"},
		{"alice", "bob", "commas, and punctuation! @#$%^&*"},
		{"alice", "bob", "\x1b[31mred\x1b[0m"},
		{"bob", "zoë", "a\u200bzero-width space and a\u00a0no-break space"},
	}
	for _, tt := range tests {
		t.Run(tt.from+"->"+tt.to, func(t *testing.T) {
			from, to := users[tt.from], users[tt.to]
			from.T, to.T = t, t
			from.Send("SEND " + tt.to + " " + tt.msg + "\n")
			from.Expect("SEND-OK")
			to.Expect("DELIVERY " + tt.from + " " + tt.msg)
		})
	}
	// Nobody got anything else, and every name came back byte for byte.
	for _, name := range names {
		w := users[name]
		w.T = t
		w.Send("LIST\n")
		w.Expect("LIST-OK " + strings.Join(names, ","))
	}
}

func TestSendToSelf(t *testing.T) {
	t.Parallel()
	_, addr := startServer(t, nil)
	alice := chattest.LoggedIn(t, addr, "alice")
	alice.Send("SEND alice note to self\n")
	alice.Expect("DELIVERY alice note to self", "SEND-OK")
	alice.Send("SEND alice one\nSEND alice two\nLIST\n")
	alice.Expect("DELIVERY alice one", "SEND-OK", "DELIVERY alice two", "SEND-OK", "LIST-OK alice")
}

func TestThirdUserReceivesNothing(t *testing.T) {
	t.Parallel()
	_, addr := startServer(t, nil)
	alice := chattest.LoggedIn(t, addr, "alice")
	bob := chattest.LoggedIn(t, addr, "bob")
	carol := chattest.LoggedIn(t, addr, "carol")
	for i := range 10 {
		alice.Send(fmt.Sprintf("SEND bob a%d\n", i))
		alice.Expect("SEND-OK")
		bob.Expect(fmt.Sprintf("DELIVERY alice a%d", i))
		bob.Send(fmt.Sprintf("SEND alice b%d\n", i))
		bob.Expect("SEND-OK")
		alice.Expect(fmt.Sprintf("DELIVERY bob b%d", i))
		alice.Send("SEND alice self\n")
		alice.Expect("DELIVERY alice self", "SEND-OK")
	}
	// The senders saw SEND-OK, so any DELIVERY for carol would be queued
	// before her LIST-OK.
	carol.Send("LIST\n")
	carol.Expect("LIST-OK alice,bob,carol")
}

// TestDeliveryQueuedBeforeSendOK checks that once the sender reads
// SEND-OK, the DELIVERY is already on the recipient's queue: the
// recipient's next request is answered after it, never before.
func TestDeliveryQueuedBeforeSendOK(t *testing.T) {
	t.Parallel()
	_, addr := startServer(t, nil)
	alice := chattest.LoggedIn(t, addr, "alice")
	bob := chattest.LoggedIn(t, addr, "bob")
	for i := range 100 {
		alice.Send(fmt.Sprintf("SEND bob m%d\n", i))
		alice.Expect("SEND-OK")
		bob.Send("LIST\n")
		bob.Expect(fmt.Sprintf("DELIVERY alice m%d", i), "LIST-OK alice,bob")
	}
}

func TestByteAtATime(t *testing.T) {
	t.Parallel()
	_, addr := startServer(t, nil)
	w := chattest.Dial(t, addr)
	for _, b := range []byte("WHO\nHELLO-FROM alice\nSEND alice hi there\r\nLIST\n") {
		w.Send(string(b))
	}
	w.Expect("BAD-RQST-HDR", "HELLO alice", "DELIVERY alice hi there", "SEND-OK", "LIST-OK alice")
}

func TestManyRequestsInOneWrite(t *testing.T) {
	t.Parallel()
	_, addr := startServer(t, nil)
	bob := chattest.LoggedIn(t, addr, "bob")
	w := chattest.Dial(t, addr)
	w.Send("LIST\nHELLO-FROM a,b\nHELLO-FROM bob\nHELLO-FROM alice\nLIST\nWHO\nSEND alice x\n" +
		"LIST extra\nSEND carol y\nSEND bob z\nHELLO-FROM alice\nSEND nobody \nLIST\n")
	w.Expect(
		"BAD-RQST-HDR",
		"BAD-RQST-BODY",
		"IN-USE",
		"HELLO alice",
		"LIST-OK bob,alice",
		"BAD-RQST-HDR",
		"DELIVERY alice x",
		"SEND-OK",
		"BAD-RQST-BODY",
		"BAD-DEST-USER",
		"SEND-OK",
		"BAD-RQST-HDR",
		"BAD-RQST-BODY",
		"LIST-OK bob,alice",
	)
	bob.Expect("DELIVERY alice z")
}

func TestPipelinedSends(t *testing.T) {
	t.Parallel()
	const n = 2000
	_, addr := startServer(t, func(c *chat.Config) { c.Rate = 0 }) // all at once
	alice := chattest.LoggedIn(t, addr, "alice")
	bob := chattest.LoggedIn(t, addr, "bob")
	var b strings.Builder
	for i := range n {
		fmt.Fprintf(&b, "SEND bob message %d of %d\n", i, n)
	}
	written := writeAsync(alice.Conn, []byte(b.String()))
	for i := range n {
		bob.Expect(fmt.Sprintf("DELIVERY alice message %d of %d", i, n))
	}
	for range n {
		alice.Expect("SEND-OK")
	}
	if err := <-written; err != nil {
		t.Fatalf("write: %v", err)
	}
	// Nothing more on either side.
	alice.Send("LIST\n")
	alice.Expect("LIST-OK alice,bob")
	bob.Send("LIST\n")
	bob.Expect("LIST-OK alice,bob")
}

func TestLargeMessage(t *testing.T) {
	t.Parallel()
	const size = 200 << 10
	_, addr := startServer(t, nil)
	alice := chattest.LoggedIn(t, addr, "alice")
	bob := chattest.LoggedIn(t, addr, "bob")
	var b strings.Builder
	for i := 0; b.Len() < size; i++ {
		fmt.Fprintf(&b, "%d zoë 日本 😀\t", i)
	}
	msg := b.String()

	written := writeAsync(alice.Conn, []byte("SEND bob "+msg+"\n"))
	got := bob.Line()
	if err := <-written; err != nil {
		t.Fatalf("write: %v", err)
	}
	if want := "DELIVERY alice " + msg; got != want {
		i := 0
		for i < min(len(got), len(want)) && got[i] == want[i] {
			i++
		}
		t.Fatalf("DELIVERY is %d bytes, want %d; first difference at byte %d", len(got), len(want), i)
	}
	alice.Expect("SEND-OK")
	bob.Send("LIST\n")
	bob.Expect("LIST-OK alice,bob")
}

func TestCRLF(t *testing.T) {
	t.Parallel()
	_, addr := startServer(t, nil)
	w := chattest.Dial(t, addr)
	// line() keeps any "\r" the server sent, so expect checks LF-only
	// replies, and that the "\r" is not part of a name or message.
	w.Send("HELLO-FROM alice\r\n")
	w.Expect("HELLO alice")
	w.Send("LIST\r\nSEND alice hi \r\nWHO\r\nLIST \r\nSEND bob x\r\n")
	w.Expect("LIST-OK alice", "DELIVERY alice hi ", "SEND-OK", "BAD-RQST-HDR", "BAD-RQST-BODY", "BAD-DEST-USER")
	// A CRLF user and an LF user talk to each other.
	bob := chattest.LoggedIn(t, addr, "bob")
	bob.Send("SEND alice hey\n")
	bob.Expect("SEND-OK")
	w.Expect("DELIVERY bob hey")
}

// TestHalfClose checks that bytes after the last "\n" at EOF are dropped,
// and that a client that closed its write side still reads every reply to
// its complete lines.
func TestHalfClose(t *testing.T) {
	t.Parallel()
	for _, tail := range []string{"LIST", "SEND a x", "LIST\r", "HELLO-FROM b"} {
		t.Run(strconv.Quote(tail), func(t *testing.T) {
			t.Parallel()
			_, addr := startServer(t, nil)
			w := chattest.Dial(t, addr)
			w.Send("HELLO-FROM a\n" + tail)
			if err := w.TCP().CloseWrite(); err != nil {
				t.Fatal(err)
			}
			w.ExpectEOF("HELLO a")
		})
	}
	t.Run("all replies arrive", func(t *testing.T) {
		t.Parallel()
		// About 8 MB of replies: more than the kernel's socket buffers hold,
		// so that most are still queued in the server when it reads EOF.
		const n = 2000
		_, addr := startServer(t, func(c *chat.Config) {
			c.MaxPendingBytes = 64 << 20
			c.Rate = 0 // 6000 requests at once
		})
		watcher := chattest.LoggedIn(t, addr, "watcher")
		w := chattest.LoggedIn(t, addr, "a")
		filler := strings.Repeat("0123456789", 400)
		var req strings.Builder
		var want []string
		for i := range n {
			fmt.Fprintf(&req, "SEND a m%d %s\nLIST\nSEND watcher w%d\n", i, filler, i)
			want = append(want, fmt.Sprintf("DELIVERY a m%d %s", i, filler), "SEND-OK", "LIST-OK watcher,a", "SEND-OK")
		}
		written := writeAsync(w.Conn, []byte(req.String()))
		for i := range n {
			watcher.Expect(fmt.Sprintf("DELIVERY a w%d", i))
		}
		if err := <-written; err != nil {
			t.Fatalf("write: %v", err)
		}
		if err := w.TCP().CloseWrite(); err != nil {
			t.Fatal(err)
		}
		w.ExpectEOF(want...)
		waitList(t, watcher, "watcher")
	})
}

// list sends LIST on w and returns the names of its LIST-OK reply, as
// the server joined them.
func list(w *chattest.Wire) string {
	w.T.Helper()
	w.Send("LIST\n")
	got := w.Line()
	names, ok := strings.CutPrefix(got, "LIST-OK ")
	if !ok {
		w.T.Fatalf("reply to LIST = %q, want LIST-OK ...", got)
	}
	return names
}

// waitList waits until the users logged in, as w sees them with LIST, are
// want; it is how a test learns that the server noticed another client's
// close.
func waitList(t testing.TB, w *chattest.Wire, want string) {
	t.Helper()
	chattest.Eventually(t, "LIST-OK "+want, func() bool { return list(w) == want })
}

// writeAsync writes b to c from another goroutine, so that the test can
// read replies while a large write is still going on. The channel yields
// the write's error once it is done.
func writeAsync(c net.Conn, b []byte) <-chan error {
	done := make(chan error, 1)
	go func() {
		_, err := c.Write(b)
		done <- err
	}()
	return done
}
