package tests

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/chromedp/chromedp"

	"chatserver/internal/chat/chattest"
)

// This file drives the web chat's page in a real headless Chromium: each
// test gets a browser, each user a tab of their own (a browser context:
// no shared storage), driven through the page's data-testid hooks.

// browserWait bounds each wait for the page to show something.
const browserWait = 15 * time.Second

// startBrowser starts a headless Chromium for the test and closes it when
// the test ends. Without Chromium the test is skipped, except in CI,
// where it fails: the browser tests must run there.
func startBrowser(t *testing.T) context.Context {
	t.Helper()
	path := ""
	for _, name := range []string{"chromium", "chromium-browser", "google-chrome"} {
		if p, err := exec.LookPath(name); err == nil {
			path = p
			break
		}
	}
	if path == "" {
		const why = "no Chromium to run the browser tests: apt-get install -y chromium"
		if os.Getenv("CI") != "" {
			t.Fatal(why)
		}
		t.Skip(why)
	}
	opts := append(chromedp.DefaultExecAllocatorOptions[:],
		chromedp.ExecPath(path),
		chromedp.NoSandbox, // the tests may run as root
		chromedp.WindowSize(1000, 640),
	)
	allocCtx, cancelAlloc := chromedp.NewExecAllocator(context.Background(), opts...)
	ctx, cancel := chromedp.NewContext(allocCtx)
	t.Cleanup(func() {
		cancel()
		cancelAlloc()
	})
	if err := chromedp.Do(ctx); err != nil { // starts the browser
		t.Fatalf("start %s: %v", path, err)
	}
	return ctx
}

// webServer is a chat-server process with its web chat.
type webServer struct {
	proc *chattest.Proc
	addr string // the chat's TCP address
	url  string // the page's URL
}

// startWebServer starts a chat-server process with the web chat on, on
// 127.0.0.1 (on the given ports; "0": any free one).
func startWebServer(t *testing.T, port, webPort string, args ...string) *webServer {
	t.Helper()
	p := startProc(t, serverBinary(t), append([]string{"-a", "127.0.0.1", "-p", port, "--web-port", webPort}, args...)...)
	return &webServer{proc: p, addr: p.ListenAddr(), url: webChatURL(t, p)}
}

// page is one user's tab showing the web chat.
type page struct {
	t    *testing.T
	ctx  context.Context
	name string // the user's, for messages and file names
}

// pageMessage is one message as the page shows it.
type pageMessage struct {
	From, To, State, Text, Note string
}

// openPage opens the web chat at url in a new tab of browser, for the
// user name. When the test ends the tab is closed; if the test failed, a
// screenshot of the tab is saved first and its path logged. An uncaught
// exception in the page's script fails the test.
func openPage(t *testing.T, browser context.Context, url, name string) *page {
	t.Helper()
	ctx, cancel := chromedp.NewContext(browser, chromedp.WithNewBrowserContext())
	p := &page{t: t, ctx: ctx, name: name}
	exceptions := make(chan []string, 1)
	console := chromedp.Console(ctx)
	go func() {
		var seen []string
		for m, err := range console {
			if err != nil {
				break
			}
			if m.Type == chromedp.ConsoleException {
				seen = append(seen, m.Text)
			}
		}
		exceptions <- seen
	}()
	t.Cleanup(func() {
		if t.Failed() {
			p.screenshot()
		}
		cancel()
		if seen := <-exceptions; len(seen) > 0 {
			t.Errorf("%s's page threw: %s", name, strings.Join(seen, "\n"))
		}
	})
	p.do("open the page", chromedp.Navigate(url))
	p.waitFor("the page to load", `document.readyState === "complete"`)
	return p
}

// do runs actions in the tab, and fails the test if one fails.
func (p *page) do(what string, actions ...chromedp.Action[chromedp.Void]) {
	p.t.Helper()
	ctx, cancel := context.WithTimeout(p.ctx, browserWait)
	defer cancel()
	if err := chromedp.Do(ctx, actions...); err != nil {
		p.t.Fatalf("%s: %s: %v", p.name, what, err)
	}
}

// eval evaluates a JavaScript expression in the page into out.
func (p *page) eval(expr string, out any) {
	p.t.Helper()
	ctx, cancel := context.WithTimeout(p.ctx, browserWait)
	defer cancel()
	raw, err := chromedp.Run(ctx, chromedp.Evaluate[[]byte](expr))
	if err == nil {
		err = json.Unmarshal(raw, out)
	}
	if err != nil {
		p.t.Fatalf("%s: evaluate %s: %v", p.name, expr, err)
	}
}

// waitFor waits until the JavaScript expression cond is true in the page.
func (p *page) waitFor(what, cond string) {
	p.t.Helper()
	ctx, cancel := context.WithTimeout(p.ctx, browserWait)
	defer cancel()
	_, err := chromedp.Run(ctx, chromedp.Poll[chromedp.Void](cond,
		chromedp.WithPollingInterval(20*time.Millisecond), chromedp.WithPollingTimeout(browserWait)))
	if err != nil {
		p.t.Fatalf("%s: waiting for %s (%s): %v\nstatus %q, messages %+v", p.name, what, cond, err, p.status(), p.messages())
	}
}

// js quotes s as a JavaScript string.
func js(s string) string {
	b, _ := json.Marshal(s)
	return string(b)
}

// testID is the query for the page's element with data-testid id.
func testID(id string) string {
	return fmt.Sprintf(`document.querySelector('[data-testid=%q]')`, id)
}

func (p *page) status() string {
	var s string
	p.eval(testID("status")+`.textContent`, &s)
	return s
}

func (p *page) loginError() string {
	var s string
	p.eval(testID("login-error")+`.textContent`, &s)
	return s
}

// clear empties the input with data-testid id, as select-all and delete
// would (chromedp.Clear resets the value attribute only, not what was
// typed).
func clear(id string) chromedp.Action[chromedp.Void] {
	return chromedp.Evaluate[chromedp.Void](testID(id) + `.value = ""`)
}

// typeName types name into the login field, in place of what it held, and
// clicks the login button.
func (p *page) typeName(name string) {
	p.t.Helper()
	p.do("type a name",
		clear("login-name"),
		chromedp.SendKeys(chromedp.CSS(`[data-testid="login-name"]`), name),
		chromedp.Click(chromedp.CSS(`[data-testid="login-submit"]`)),
	)
}

// login logs in as the page's user and waits until the page says so.
func (p *page) login() *page {
	p.t.Helper()
	p.typeName(p.name)
	p.waitFor("the login", testID("status")+`.textContent === "connected" && !document.getElementById("chat").hidden`)
	return p
}

// online returns the online list as shown.
func (p *page) online() []string {
	var names []string
	p.eval(`[...document.querySelectorAll('[data-testid="online-user"]')].map(e => e.textContent)`, &names)
	return names
}

// waitOnline waits until the online list shows exactly names, in order.
func (p *page) waitOnline(names ...string) {
	p.t.Helper()
	want, _ := json.Marshal(names) // a JavaScript literal too
	p.waitFor(fmt.Sprintf("the online list %q", names),
		fmt.Sprintf(`JSON.stringify([...document.querySelectorAll('[data-testid="online-user"]')].map(e => e.textContent)) === JSON.stringify(%s)`, want))
}

// messages returns the messages of the open conversation, as shown.
func (p *page) messages() []pageMessage {
	var msgs []pageMessage
	p.eval(`[...document.querySelectorAll('[data-testid="message"]')].map(e => ({
		From: e.dataset.from, To: e.dataset.to, State: e.dataset.state,
		Text: e.firstChild.textContent, Note: e.querySelector('.note').textContent}))`, &msgs)
	return msgs
}

// waitMessage waits until the open conversation shows a message with
// text in the given state, and returns it.
func (p *page) waitMessage(text, state string) pageMessage {
	p.t.Helper()
	p.waitFor(fmt.Sprintf("message %q to be %s", text, state), fmt.Sprintf(
		`[...document.querySelectorAll('[data-testid="message"]')].some(e => e.firstChild.textContent === %s && e.dataset.state === %s)`,
		js(text), js(state)))
	for _, m := range p.messages() {
		if m.Text == text && m.State == state {
			return m
		}
	}
	p.t.Fatalf("%s: message %q vanished", p.name, text)
	return pageMessage{}
}

// unread returns the unread count shown for the conversation with peer
// ("" when none is shown), waiting for the conversation to exist.
func (p *page) unread(peer string) string {
	p.t.Helper()
	entry := fmt.Sprintf(`[...document.querySelectorAll('[data-testid="conversation"]')].find(e => e.dataset.user === %s)`, js(peer))
	p.waitFor("a conversation with "+peer, entry+` !== undefined`)
	var n string
	p.eval(fmt.Sprintf(`(b => b.hidden ? "" : b.textContent)(%s.querySelector('.unread'))`, entry), &n)
	return n
}

// openConversation clicks the conversation with peer.
func (p *page) openConversation(peer string) {
	p.t.Helper()
	p.unread(peer) // waits for it
	p.do("open the conversation with "+peer, chromedp.Evaluate[chromedp.Void](fmt.Sprintf(
		`[...document.querySelectorAll('[data-testid="conversation"]')].find(e => e.dataset.user === %s).querySelector('button').click()`, js(peer))))
}

// send writes text to the user to and presses Enter, as a person would.
func (p *page) send(to, text string) {
	p.t.Helper()
	p.do("send a message",
		clear("compose-to"),
		chromedp.SendKeys(chromedp.CSS(`[data-testid="compose-to"]`), to),
		chromedp.SendKeys(chromedp.CSS(`[data-testid="compose-text"]`), text+"\r"),
	)
}

// screenshot saves a PNG of the tab where it outlives the test, and logs
// its path.
func (p *page) screenshot() {
	dir, err := os.MkdirTemp("", "chat-browser-"+strings.ReplaceAll(p.t.Name(), "/", "_")+"-")
	if err != nil {
		p.t.Logf("no screenshot of %s's page: %v", p.name, err)
		return
	}
	file := filepath.Join(dir, fmt.Sprintf("%x.png", p.name))
	if err := p.saveScreenshot(file); err != nil {
		p.t.Logf("no screenshot of %s's page: %v", p.name, err)
		return
	}
	p.t.Logf("screenshot of %s's page: %s", p.name, file)
}

func (p *page) saveScreenshot(file string) error {
	ctx, cancel := context.WithTimeout(p.ctx, browserWait)
	defer cancel()
	png, err := chromedp.Run(ctx, chromedp.CaptureScreenshot())
	if err != nil {
		return err
	}
	return os.WriteFile(file, png, 0o644)
}
