package tests

import (
	"encoding/json"
	"log/slog"
	"slices"
	"strings"
	"testing"

	"chatserver/internal/chat"
	"chatserver/internal/chat/chattest"
)

// traced is one log line of a trace, as the JSON handler writes it.
type traced struct {
	Msg, Line, Reply, Why, User, Result string
	Conn                                int
	Bytes                               int
}

// logLines parses out's JSON lines.
func logLines(t *testing.T, out *chattest.Output) []traced {
	t.Helper()
	var lines []traced
	for _, l := range out.Lines() {
		var tr traced
		if err := json.Unmarshal([]byte(l), &tr); err != nil {
			t.Fatalf("log line %q: %v", l, err)
		}
		lines = append(lines, tr)
	}
	return lines
}

// scriptedSession runs a session with a mistake of each kind against the
// server at addr, as ann (conn 2), and closes it.
func scriptedSession(t *testing.T, addr string) {
	t.Helper()
	chattest.LoggedIn(t, addr, "bob")
	ann := chattest.Dial(t, addr)
	for _, step := range []struct{ req, reply string }{
		{"list", "BAD-RQST-HDR"},
		{"LIST", "BAD-RQST-HDR"},
		{"HELLO-FROM a,b", "BAD-RQST-BODY"},
		{"HELLO-FROM bob", "IN-USE"},
		{"HELLO-FROM ann", "HELLO ann"},
		{"SEND bob", "BAD-RQST-BODY"},
		{"SEND bob the secret body", "SEND-OK"},
		{"SEND nobody hi", "BAD-DEST-USER"},
		{"SEND ann " + strings.Repeat("x", 200), "BAD-RQST-BODY"}, // over the line cap
	} {
		ann.Request(step.req, step.reply)
	}
	ann.Conn.Close()
}

// TestTraceShowsEveryLine: at debug level the log shows every line a
// client sent and every line written to it, in order, and why each
// refused request was refused.
func TestTraceShowsEveryLine(t *testing.T) {
	out := chattest.NewOutput()
	srv, addr := startServer(t, func(c *chat.Config) {
		c.Logger = slog.New(slog.NewJSONHandler(out, &slog.HandlerOptions{Level: slog.LevelDebug}))
		c.MaxLineBytes = 100
	})
	scriptedSession(t, addr)
	chattest.Eventually(t, "ann's connection to close", func() bool { return srv.Stats().Closed[chat.ReasonClientClosed] == 1 })

	var in, outLines []traced
	for _, l := range logLines(t, out) {
		if l.Conn != 2 { // ann's
			continue
		}
		switch l.Msg {
		case "in":
			in = append(in, l)
		case "out":
			outLines = append(outLines, l)
		}
	}
	wantIn := []traced{
		{Msg: "in", Conn: 2, Line: "list", Reply: "BAD-RQST-HDR", Why: "headers are upper case: LIST, not list"},
		{Msg: "in", Conn: 2, Line: "LIST", Reply: "BAD-RQST-HDR", Why: "not logged in: the first request must be HELLO-FROM <name>"},
		{Msg: "in", Conn: 2, Line: "HELLO-FROM a,b", Reply: "BAD-RQST-BODY", Why: "the name holds ',', which names may not (none of ! @ # $ % ^ & * ,)"},
		{Msg: "in", Conn: 2, Line: "HELLO-FROM bob"},
		{Msg: "in", Conn: 2, Line: "HELLO-FROM ann"},
		{Msg: "in", Conn: 2, Line: "SEND bob", Reply: "BAD-RQST-BODY", Why: "SEND needs a name and a message: SEND <name> <message>"},
		{Msg: "in", Conn: 2, Line: "SEND bob the secret body"},
		{Msg: "in", Conn: 2, Line: "SEND nobody hi"},
		{Msg: "in", Conn: 2, Reply: "BAD-RQST-BODY", Why: `the line is longer than the line cap: skipped up to its \n`},
	}
	if !slices.Equal(in, wantIn) {
		t.Errorf("requests traced:\n%+v\nwant\n%+v", in, wantIn)
	}
	var written []string
	for _, l := range outLines {
		written = append(written, l.Line)
	}
	wantOut := []string{"BAD-RQST-HDR", "BAD-RQST-HDR", "BAD-RQST-BODY", "IN-USE", "HELLO ann", "BAD-RQST-BODY", "SEND-OK", "BAD-DEST-USER", "BAD-RQST-BODY"}
	if !slices.Equal(written, wantOut) {
		t.Errorf("lines written, traced: %q, want %q", written, wantOut)
	}
}

// TestInfoLogsFailedLoginsNotBodies: at info level each failed login is
// logged with its outcome, and no message body appears anywhere.
func TestInfoLogsFailedLoginsNotBodies(t *testing.T) {
	out := chattest.NewOutput()
	srv, addr := startServer(t, func(c *chat.Config) {
		c.Logger = slog.New(slog.NewJSONHandler(out, nil))
		c.MaxLineBytes = 100
	})
	scriptedSession(t, addr)
	chattest.Eventually(t, "ann's connection to close", func() bool { return srv.Stats().Closed[chat.ReasonClientClosed] == 1 })

	var failed []traced
	for _, l := range logLines(t, out) {
		if l.Msg == "in" || l.Msg == "out" {
			t.Errorf("a trace line at info level: %+v", l)
		}
		if l.Msg == "login failed" {
			failed = append(failed, traced{Msg: l.Msg, Conn: l.Conn, User: l.User, Reply: l.Reply, Result: l.Result})
		}
	}
	want := []traced{
		{Msg: "login failed", Conn: 2, User: "a,b", Reply: "BAD-RQST-BODY", Result: "bad_name"},
		{Msg: "login failed", Conn: 2, User: "bob", Reply: "IN-USE", Result: "in_use"},
	}
	if !slices.Equal(failed, want) {
		t.Errorf("failed logins logged: %+v, want %+v", failed, want)
	}
	if s := out.String(); strings.Contains(s, "secret") {
		t.Errorf("a message body is in the info log:\n%s", s)
	}
}
