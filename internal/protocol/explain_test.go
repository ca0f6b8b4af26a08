package protocol_test

import (
	"testing"

	"chatserver/internal/protocol"
)

func TestExplain(t *testing.T) {
	for _, tc := range []struct {
		line     string
		loggedIn bool
		want     string
	}{
		{"", false, "empty line"},
		{"list", true, "headers are upper case: LIST, not list"},
		{"Hello-From ann", false, "headers are upper case: HELLO-FROM, not Hello-From"},
		{"HELLO-FROMann", false, "no space after HELLO-FROM"},
		{"SENDbob hi", true, "no space after SEND"},
		{"LISTx", true, "LIST takes nothing after it"},
		{" LIST", true, "the line starts with a space"},
		{"HELLO ann", false, `unknown header "HELLO": did you mean HELLO-FROM?`},
		{"WHO", true, `unknown header "WHO": the requests are HELLO-FROM, LIST and SEND`},
		{"LIST", false, "not logged in: the first request must be HELLO-FROM <name>"},
		{"SEND bob hi", false, "not logged in: the first request must be HELLO-FROM <name>"},
		{"HELLO-FROM ann", true, "already logged in: a connection logs in once"},
		{"HELLO-FROM", false, "HELLO-FROM without a name"},
		{"HELLO-FROM ", false, "the name is empty"},
		{"HELLO-FROM a b", false, "the name holds white space (U+0020)"},
		{"HELLO-FROM a\u202eb", false, "the name holds a control or format character (U+202E)"},
		{"HELLO-FROM a\x01", false, "the name holds a control or format character (U+0001)"},
		{"HELLO-FROM a!", false, "the name holds '!', which names may not (none of ! @ # $ % ^ & * ,)"},
		{"HELLO-FROM \xff", false, "the name is not valid UTF-8"},
		{"HELLO-FROM " + string(make([]byte, 65)), false, "the name is 65 bytes long, more than 64"},
		{"LIST ", true, "LIST takes nothing after it, not even a space"},
		{"SEND bob", true, "SEND needs a name and a message: SEND <name> <message>"},
		{"SEND", true, "SEND needs a name and a message: SEND <name> <message>"},
		{"SEND b,c hi", true, "recipient: the name holds ',', which names may not (none of ! @ # $ % ^ & * ,)"},
		{"SEND bob  ", true, "the message is empty or only white space"},
		{"SEND bob a\x00b", true, "the message holds a NUL byte"},
		{"SEND bob a\rb", true, `the message holds a "\r" (only one, right before the "\n", is dropped)`},
		{"SEND bob \xff", true, "the message is not valid UTF-8"},
		{"SEND bob hi", true, ""},
		{"HELLO-FROM zoë", false, ""},
		{"LIST", true, ""},
	} {
		if got := protocol.Explain([]byte(tc.line), tc.loggedIn); got != tc.want {
			t.Errorf("Explain(%q, logged in %v) = %q, want %q", tc.line, tc.loggedIn, got, tc.want)
		}
	}
}

// FuzzExplainAgreesWithParse: Explain finds a reason exactly for the
// lines the server refuses, in either login state.
func FuzzExplainAgreesWithParse(f *testing.F) {
	for _, tc := range parseCases {
		f.Add([]byte(tc.line), false)
		f.Add([]byte(tc.line), true)
	}
	f.Fuzz(func(t *testing.T, line []byte, loggedIn bool) {
		req, err := protocol.Parse(line)
		allowed := req.Command != protocol.CmdUnknown && loggedIn == (req.Command != protocol.CmdHelloFrom)
		refused := !allowed || err != nil
		if why := protocol.Explain(line, loggedIn); (why != "") != refused {
			t.Fatalf("Explain(%q, logged in %v) = %q, but the server refuses it: %v", line, loggedIn, why, refused)
		}
	})
}
