package tests

import (
	"context"
	"net"
	"net/url"
	"os"
	"slices"
	"strings"
	"testing"

	"github.com/chromedp/cdproto/cdp"
	"github.com/chromedp/cdproto/emulation"
	"github.com/chromedp/chromedp"

	"chatserver/internal/chat/chattest"
)

// The browser tests are not parallel: a Chromium is heavy on two cores,
// and the fault tests' timings must not suffer from it.

// TestBrowserChat: two people in browsers and one on a terminal log in,
// see each other, and message each other every way; a message shows as
// pending until its SEND-OK (the server is paused meanwhile), and as
// failed once its recipient has left. With CHAT_WEB_SCREENSHOT set to a
// file name, the page with a conversation in it is saved there (the
// README's picture).
func TestBrowserChat(t *testing.T) {
	srv := startWebServer(t, "0", "0")
	browser := startBrowser(t)
	cal := chattest.LoggedIn(t, srv.addr, "cal")
	bea := openPage(t, browser, srv.url, "bea").login()
	ann := openPage(t, browser, srv.url, "ann").login()
	ann.waitOnline("ann", "bea", "cal") // the LIST after the login
	bea.waitOnline("ann", "bea", "cal") // a LIST every few seconds

	ann.send("bea", "hi bea, from a browser")
	if m := ann.waitMessage("hi bea, from a browser", "sent"); m.From != "ann" || m.To != "bea" {
		t.Errorf("ann's message shows as %+v, want from ann to bea", m)
	}
	if n := bea.unread("ann"); n != "1" {
		t.Errorf("bea's conversation with ann shows %q unread, want 1", n)
	}
	bea.openConversation("ann")
	if n := bea.unread("ann"); n != "" {
		t.Errorf("the conversation bea opened still shows %q unread", n)
	}
	bea.waitMessage("hi bea, from a browser", "received")
	bea.send("ann", "hi ann, from a browser too")
	bea.waitMessage("hi ann, from a browser too", "sent")
	ann.waitMessage("hi ann, from a browser too", "received")
	var focused string
	bea.eval(`document.activeElement.dataset.testid`, &focused)
	if focused != "compose-text" {
		t.Errorf("after sending, the focus is on %q, want compose-text: Enter sends and the next message can be typed", focused)
	}

	cal.Request("SEND ann hi ann, from a terminal", "SEND-OK")
	ann.openConversation("cal") // a conversation that a message started
	ann.waitMessage("hi ann, from a terminal", "received")
	ann.send("cal", "hi cal, from a browser")
	ann.waitMessage("hi cal, from a browser", "sent")
	cal.Expect("DELIVERY ann hi cal, from a browser")

	srv.proc.Pause() // no SEND-OK until it resumes
	ann.send("cal", "sent while the server is paused")
	if m := ann.waitMessage("sent while the server is paused", "pending"); m.Note != "sending…" {
		t.Errorf("a pending message's note = %q, want sending…", m.Note)
	}
	srv.proc.Resume()
	ann.waitMessage("sent while the server is paused", "sent")
	cal.Expect("DELIVERY ann sent while the server is paused")

	if file := os.Getenv("CHAT_WEB_SCREENSHOT"); file != "" {
		ann.openConversation("bea")
		if err := ann.saveScreenshot(file); err != nil {
			t.Errorf("screenshot for %s: %v", file, err)
		}
		ann.openConversation("cal")
	}

	cal.Conn.Close()
	ann.waitOnline("ann", "bea")
	ann.send("cal", "are you still there?")
	if m := ann.waitMessage("are you still there?", "failed"); m.Note != "not delivered: cal is not online" {
		t.Errorf("failed message's note = %q, want not delivered: cal is not online", m.Note)
	}
}

// TestBrowserLoginErrors: IN-USE, a bad name and BUSY are shown next to
// the name field in chat-client's words, and another name can be tried
// without reloading the page.
func TestBrowserLoginErrors(t *testing.T) {
	srv := startWebServer(t, "0", "0", "--max-users", "2")
	browser := startBrowser(t)
	chattest.LoggedIn(t, srv.addr, "taken")
	p := openPage(t, browser, srv.url, "fresh")

	for _, tc := range []struct{ name, want string }{
		{"taken", "Cannot log in as taken. That username is already in use."},
		{"bad,name", "Cannot log in as bad,name. That username contains disallowed characters."},
	} {
		p.typeName(tc.name)
		p.waitFor("the login error", testID("login-error")+`.textContent !== ""`)
		if got := p.loginError(); got != tc.want {
			t.Errorf("login as %q: the page says %q, want %q", tc.name, got, tc.want)
		}
	}
	p.login() // on the same socket, without reloading
	if got := p.loginError(); got != "" {
		t.Errorf("after logging in, the login error still says %q", got)
	}

	full := openPage(t, browser, srv.url, "third")
	full.typeName("third")
	full.waitFor("the login error", testID("login-error")+`.textContent !== ""`)
	if got, want := full.loginError(), "Cannot log in. The server is full!"; got != want {
		t.Errorf("login on a full server: the page says %q, want %q", got, want)
	}
	if s := full.status(); s != "connected, not logged in" {
		t.Errorf("status after BUSY = %q, want connected, not logged in (no reconnecting)", s)
	}
}

// TestBrowserReconnectsAfterARestart: when the server restarts, the page
// says it is reconnecting, comes back by itself under the same name, and
// messages reach it again.
func TestBrowserReconnectsAfterARestart(t *testing.T) {
	first := startWebServer(t, "0", "0")
	browser := startBrowser(t)
	ann := openPage(t, browser, first.url, "ann").login()

	first.proc.Signal(os.Interrupt)
	if code := first.proc.Wait(); code != 0 {
		t.Fatalf("the first server exited with %d, want 0", code)
	}
	ann.waitFor("the page to say it reconnects", testID("status")+`.textContent.startsWith("reconnecting")`)
	again := startWebServer(t, portOf(t, first.addr), portOf(t, first.url))
	ann.waitFor("the page to log in again", testID("status")+`.textContent === "connected"`)

	bob := chattest.LoggedIn(t, again.addr, "bob")
	waitList(t, bob, "ann,bob")
	bob.Request("SEND ann welcome back", "SEND-OK")
	ann.openConversation("bob")
	ann.waitMessage("welcome back", "received")
}

// TestBrowserShowsMarkupAsText: names and messages are text, whatever
// they hold: markup is shown, not run; control and bidi characters are
// made visible.
func TestBrowserShowsMarkupAsText(t *testing.T) {
	srv := startWebServer(t, "0", "0")
	browser := startBrowser(t)
	const evil = `<script>document.title="owned"</script>`
	const img = `<img/src=x/onerror=document.title="owned">`
	p := openPage(t, browser, srv.url, evil).login()
	attacker := chattest.LoggedIn(t, srv.addr, img)
	attacker.Request("SEND "+evil+" <b>bold?</b> a\tb\x1b[31m \u202eevil", "SEND-OK")
	p.waitOnline(img, evil) // in alphabetical order
	p.openConversation(img)
	p.waitMessage("<b>bold?</b> a^Ib^[[31m <U+202E>evil", "received")

	var me, title string
	p.eval(`document.getElementById("me").textContent`, &me)
	p.eval(`document.title`, &title)
	if me != evil || title != "Chat" {
		t.Errorf("the page shows the user as %q with title %q, want %q and Chat", me, title, evil)
	}
	var injected []string
	p.eval(`[...document.querySelectorAll("body script, body img, body b")].map(e => e.outerHTML)`, &injected)
	if len(injected) > 0 {
		t.Errorf("names and messages became elements: %v", injected)
	}
	if !slices.Contains(p.online(), img) {
		t.Errorf("online list %q lacks %q as text", p.online(), img)
	}
}

// portOf returns the port of a host:port address or of a URL.
func portOf(t *testing.T, addr string) string {
	t.Helper()
	if u, err := url.Parse(addr); err == nil && u.Port() != "" {
		return u.Port()
	}
	_, port, err := net.SplitHostPort(addr)
	if err != nil {
		t.Fatalf("no port in %q: %v", addr, err)
	}
	return port
}

// TestBrowserOnAPhoneInTheDark: on a phone-sized screen nothing needs
// scrolling sideways, a long message wraps, and the page follows a dark
// color scheme.
func TestBrowserOnAPhoneInTheDark(t *testing.T) {
	srv := startWebServer(t, "0", "0")
	browser := startBrowser(t)
	p := openPage(t, browser, srv.url, "ann")
	p.do("look like a phone in dark mode",
		chromedp.EmulateViewport(360, 640),
		chromedp.Func(func(ctx context.Context, tg *chromedp.Target) error {
			_, err := cdp.Call(ctx, tg, emulation.SetEmulatedMedia, emulation.SetEmulatedMediaParams{
				Features: []*emulation.MediaFeature{{Name: "prefers-color-scheme", Value: "dark"}},
			})
			return err
		}),
	)
	p.login()
	long := strings.Repeat("word", 200) + " " + strings.Repeat("and more words ", 40)
	chattest.LoggedIn(t, srv.addr, "bob").Request("SEND ann "+long, "SEND-OK")
	p.openConversation("bob")
	p.waitMessage(long, "received")

	var layout struct {
		Page, Screen, Message, Send   float64 // widths, right edges
		Height, StatusTop, SendBottom float64
		Background                    string
	}
	p.eval(`({
		Page: document.documentElement.scrollWidth,
		Screen: window.innerWidth,
		Message: document.querySelector('[data-testid="message"]').getBoundingClientRect().right,
		Send: document.querySelector('[data-testid="compose-send"]').getBoundingClientRect().right,
		Height: window.innerHeight,
		StatusTop: document.querySelector('[data-testid="status"]').getBoundingClientRect().top,
		SendBottom: document.querySelector('[data-testid="compose-send"]').getBoundingClientRect().bottom,
		Background: getComputedStyle(document.body).backgroundColor})`, &layout)
	if layout.Page > layout.Screen || layout.Message > layout.Screen || layout.Send > layout.Screen {
		t.Errorf("on a %v px wide screen: page %v px wide, message ends at %v px, Send button at %v px; want all within", layout.Screen, layout.Page, layout.Message, layout.Send)
	}
	if layout.StatusTop < 0 || layout.SendBottom > layout.Height {
		t.Errorf("with a long message on a %v px high screen, the status is at %v px and the Send button ends at %v px: both must stay in view", layout.Height, layout.StatusTop, layout.SendBottom)
	}
	if layout.Background != "rgb(20, 20, 20)" {
		t.Errorf("background in dark mode = %s, want the dark one, rgb(20, 20, 20)", layout.Background)
	}
}
