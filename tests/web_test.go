package tests

import (
	"strings"
	"testing"

	"chatserver/internal/chat/chattest"
	"chatserver/internal/web/webtest"
)

// webChatURL waits for p's "Web chat is on <url>" line and returns the url.
func webChatURL(t *testing.T, p *chattest.Proc) string {
	t.Helper()
	line := p.Stdout.WaitFor(t, "the web chat's address", func(l string) bool { return strings.HasPrefix(l, "Web chat is on ") })
	return strings.TrimPrefix(line, "Web chat is on ")
}

// TestClusterBrowserAndTCPUsersTalk: in cluster mode a browser user on one
// server and a TCP user on another see each other and message each other.
func TestClusterBrowserAndTCPUsersTalk(t *testing.T) {
	t.Parallel()
	ns := runNATS(t)
	a, _ := startOnNATS(t, ns.URL(), "--web-port", "0")
	_, b := startOnNATS(t, ns.URL())
	ws := webChatURL(t, a) + "ws"
	ann := webtest.Connect(t, ws).Login("ann")
	bob := chattest.LoggedIn(t, b, "bob")
	waitList(t, bob, "ann,bob")
	ann.Request("LIST", "LIST-OK ann,bob")
	ann.Request("SEND bob from a browser on A", "SEND-OK")
	bob.Expect("DELIVERY ann from a browser on A")
	bob.Request("SEND ann from a terminal on B", "SEND-OK")
	ann.Expect("DELIVERY bob from a terminal on B")
	webtest.Connect(t, ws).Request("HELLO-FROM bob", "IN-USE") // one user list
}
