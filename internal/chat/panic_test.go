package chat_test

import (
	"testing"

	"go.uber.org/goleak"

	"chatserver/internal/chat"
	"chatserver/internal/chat/chattest"
)

func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m)
}

// panicLine is the request the test hook panics on.
const panicLine = "PANIC"

// A panic while handling a line ends that connection only: its client
// sees the connection close, the panic is counted as an internal error,
// its name is freed, and everyone else carries on.
func TestPanicEndsOnlyItsConnection(t *testing.T) {
	chattest.EachEngine(t, true, func(t *testing.T, e chattest.Engine) {
		srv, addr := startPanicky(t, e)
		alice := chattest.LoggedIn(t, addr, "alice")
		bob := chattest.LoggedIn(t, addr, "bob")
		mallory := chattest.LoggedIn(t, addr, "mallory")

		mallory.Send(panicLine + "\n")
		mallory.ExpectClosed()
		chattest.Eventually(t, "the panic to be counted", func() bool {
			st := srv.Stats()
			return st.Closed[chat.ReasonInternalError] == 1 && st.Users == 2
		})

		alice.Send("SEND bob still up\n")
		alice.Expect("SEND-OK")
		bob.Expect("DELIVERY alice still up")
		alice.Send("SEND mallory hi\nLIST\n")
		alice.Expect("BAD-DEST-USER", "LIST-OK alice,bob")

		// The server still accepts, and mallory's name is free.
		again := chattest.LoggedIn(t, addr, "mallory")
		again.Send("SEND alice back\n")
		again.Expect("SEND-OK")
		alice.Expect("DELIVERY mallory back")

		// A panic before login, and one in the middle of a batch of lines.
		anon := chattest.Dial(t, addr)
		anon.Send(panicLine + "\n")
		anon.ExpectClosed()
		again.Send("LIST\n" + panicLine + "\n")
		again.ExpectClosed("LIST-OK ")
		chattest.Eventually(t, "all three panics to be counted", func() bool {
			st := srv.Stats()
			return st.Closed[chat.ReasonInternalError] == 3 && st.Users == 2 && st.Connections == 2
		})
		bob.Send("LIST\n")
		bob.Expect("LIST-OK alice,bob")
		st := srv.Stats()
		for r, n := range st.Closed {
			if chat.CloseReason(r) != chat.ReasonInternalError && n != 0 {
				t.Errorf("connections closed as %v = %d, want 0", chat.CloseReason(r), n)
			}
		}
	})
}

// Many connections panicking at once leave the server whole.
func TestPanicsInParallel(t *testing.T) {
	chattest.EachEngine(t, true, func(t *testing.T, e chattest.Engine) {
		const n = 20
		srv, addr := startPanicky(t, e)
		watcher := chattest.LoggedIn(t, addr, "watcher")
		conns := make([]*chattest.Wire, n)
		for i := range conns {
			conns[i] = chattest.Dial(t, addr)
		}
		for _, c := range conns {
			c.Send("LIST\nHELLO-FROM x\n" + panicLine + "\n")
		}
		for _, c := range conns {
			c.ExpectClosed("BAD-RQST-HDR\n", "HELLO x\n", "IN-USE\n")
		}
		chattest.Eventually(t, "every panic to be counted", func() bool {
			st := srv.Stats()
			return st.Closed[chat.ReasonInternalError] == n && st.Connections == 1 && st.Users == 1
		})
		watcher.Send("SEND watcher ok\n")
		watcher.Expect("DELIVERY watcher ok", "SEND-OK")
		chattest.LoggedIn(t, addr, "x")
	})
}

// startPanicky starts a server on engine e whose test hook panics on
// panicLine, and stops it when the test ends.
func startPanicky(t *testing.T, e chattest.Engine) (*chat.Server, string) {
	t.Helper()
	cfg := chat.DefaultConfig()
	e.Set(&cfg)
	srv, err := chat.NewServer(cfg)
	if err != nil {
		t.Fatalf("NewServer: %v", err)
	}
	srv.SetTestHookLine(func(line []byte) {
		if string(line) == panicLine {
			panic("injected by the test hook")
		}
	})
	return srv, chattest.Serve(t, srv, nil).Addr
}
