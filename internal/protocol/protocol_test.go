package protocol_test

import (
	"errors"
	"fmt"
	"slices"
	"strings"
	"testing"

	"chatserver/internal/protocol"
)

// parseCase is one line given to Parse and what must come back.
type parseCase struct {
	line    string
	cmd     protocol.Command
	name    string // want Request.Name; "" means nil
	message string // want Request.Message; "" means nil
	err     error
}

func accepted(line string, cmd protocol.Command, name, message string) parseCase {
	return parseCase{line: line, cmd: cmd, name: name, message: message}
}

func badHeader(line string) parseCase {
	return parseCase{line: line, cmd: protocol.CmdUnknown, err: protocol.ErrBadHeader}
}

func badBody(cmd protocol.Command, line string) parseCase {
	return parseCase{line: line, cmd: cmd, err: protocol.ErrBadBody}
}

var (
	name64    = strings.Repeat("n", protocol.MaxNameBytes)
	name65    = strings.Repeat("n", protocol.MaxNameBytes+1)
	name64ë   = strings.Repeat("n", protocol.MaxNameBytes-2) + "ë" // ë is 2 bytes
	name65ë   = strings.Repeat("n", protocol.MaxNameBytes-1) + "ë"
	longWords = strings.Repeat("word ", 1000)
)

// badNames break NAME in PROTOCOL.md's grammar, each in its own way.
var badNames = []string{
	"a,b", "a\tb", "a\x00b", "a\rb", "a\r", "\r", "a\nb",
	"a\x01b", "\x1b[31m", "a\x7fb", "a\u0085b", // C0, DEL and C1 controls
	"a\u200bb", "a\u200eb", "\ufeffa", "a\u2028b", // format characters, line separator
	"a\u00a0b", "a\u3000b", "a\u2003b", // non-ASCII spaces
	"a\xffb", "a\xc3", "\xed\xa0\x80", "\xc0\xaf", // invalid UTF-8: byte, truncated, surrogate, overlong
	"!", "a!", "@a", "a#b", "$", "a%", "^", "a&b", "*", "a,",
	name65, name65ë,
}

// goodNames follow NAME; names are case-sensitive, so Bob and bob differ.
var goodNames = []string{
	"zoë", "a_b", "A-1.x", "123", "Bob", "bob", "x", "日本語", "😀", "e\u0301",
	"~(x)[y]{z}<>/?\\|'\";:+=`-_.", "\ufffd", name64, name64ë,
}

// parseCases covers every row of PROTOCOL.md's Grammar and "Cases people get
// wrong" tables that Parse decides. FuzzParse seeds from it too.
var parseCases = func() []parseCase {
	cs := []parseCase{
		// Header unknown: empty, whitespace only, leading space, wrong case,
		// glued or extra characters, another command.
		badHeader(""), badHeader(" "), badHeader("   "), badHeader("\t"), badHeader(" \t "),
		badHeader(" LIST"), badHeader("list"), badHeader("Send x y"), badHeader("SENDX a b"),
		badHeader("HELLO-FROMbob"), badHeader("WHO"), badHeader("hello-from bob"),
		badHeader("LIST\t"), badHeader("LIST\r"), badHeader("SEND\tbob hi"), badHeader("\x00"),
		badHeader("HELLO bob"), badHeader("DELIVERY eve hi"), badHeader("\xffLIST"),

		// HELLO-FROM with a body that is not exactly one name.
		badBody(protocol.CmdHelloFrom, "HELLO-FROM"),
		badBody(protocol.CmdHelloFrom, "HELLO-FROM "),
		badBody(protocol.CmdHelloFrom, "HELLO-FROM a b"),
		badBody(protocol.CmdHelloFrom, "HELLO-FROM  a"),
		badBody(protocol.CmdHelloFrom, "HELLO-FROM a "),
		badBody(protocol.CmdHelloFrom, "HELLO-FROM a\t"),

		// LIST takes no body at all.
		accepted("LIST", protocol.CmdList, "", ""),
		badBody(protocol.CmdList, "LIST "),
		badBody(protocol.CmdList, "LIST  "),
		badBody(protocol.CmdList, "LIST extra"),
		badBody(protocol.CmdList, "LIST alice"),

		// SEND without a recipient or a visible message.
		badBody(protocol.CmdSend, "SEND"),
		badBody(protocol.CmdSend, "SEND "),
		badBody(protocol.CmdSend, "SEND  "),
		badBody(protocol.CmdSend, "SEND bob"),
		badBody(protocol.CmdSend, "SEND bob "),
		badBody(protocol.CmdSend, "SEND bob  \t "),
		badBody(protocol.CmdSend, "SEND bob \t"),
		badBody(protocol.CmdSend, "SEND bob \u00a0\u3000"), // only Unicode white space
		badBody(protocol.CmdSend, "SEND  bob hi"),
		badBody(protocol.CmdSend, "SEND bob\thi"), // no " " after the recipient
		badBody(protocol.CmdSend, "SEND nobody "),
		// SEND with a message holding NUL, a bare "\r", "\n" or invalid UTF-8.
		badBody(protocol.CmdSend, "SEND bob \x00"),
		badBody(protocol.CmdSend, "SEND bob a\x00b"),
		badBody(protocol.CmdSend, "SEND bob a\rb"),
		badBody(protocol.CmdSend, "SEND bob hi\r"),
		badBody(protocol.CmdSend, "SEND bob a\nb"),
		badBody(protocol.CmdSend, "SEND bob a\xffb"),
		badBody(protocol.CmdSend, "SEND bob hi\xc3"),
		badBody(protocol.CmdSend, "SEND bob \xed\xa0\x80"),

		// SEND that is well-formed: the message is kept byte for byte.
		accepted("SEND bob hi", protocol.CmdSend, "bob", "hi"),
		accepted("SEND Bob hi", protocol.CmdSend, "Bob", "hi"),
		accepted("SEND bob x", protocol.CmdSend, "bob", "x"),
		accepted("SEND bob   hi  there  ", protocol.CmdSend, "bob", "  hi  there  "),
		accepted("SEND bob \thi\t", protocol.CmdSend, "bob", "\thi\t"),
		accepted("SEND bob a\tb", protocol.CmdSend, "bob", "a\tb"),
		accepted("SEND bob DELIVERY eve fake", protocol.CmdSend, "bob", "DELIVERY eve fake"),
		accepted("SEND bob HELLO-FROM x", protocol.CmdSend, "bob", "HELLO-FROM x"),
		accepted("SEND zoë héllo wörld 😀", protocol.CmdSend, "zoë", "héllo wörld 😀"),
		accepted("SEND bob a\x01b", protocol.CmdSend, "bob", "a\x01b"), // only NUL and "\r" are barred
		accepted("SEND bob \u00a0x", protocol.CmdSend, "bob", "\u00a0x"),
		accepted("SEND bob "+longWords, protocol.CmdSend, "bob", longWords),
	}
	for _, n := range badNames {
		cs = append(cs,
			badBody(protocol.CmdHelloFrom, "HELLO-FROM "+n),
			badBody(protocol.CmdSend, "SEND "+n+" hi"))
	}
	for _, n := range goodNames {
		cs = append(cs,
			accepted("HELLO-FROM "+n, protocol.CmdHelloFrom, n, ""),
			accepted("SEND "+n+" hi "+n, protocol.CmdSend, n, "hi "+n))
	}
	return cs
}()

func TestParse(t *testing.T) {
	for i, tc := range parseCases {
		t.Run(fmt.Sprintf("%d/%.40q", i, tc.line), func(t *testing.T) {
			req, err := protocol.Parse([]byte(tc.line))
			if err != tc.err {
				t.Fatalf("Parse(%q) error = %v, want %v", tc.line, err, tc.err)
			}
			if req.Command != tc.cmd {
				t.Errorf("Parse(%q).Command = %v, want %v", tc.line, req.Command, tc.cmd)
			}
			checkField(t, "Name", req.Name, tc.name)
			checkField(t, "Message", req.Message, tc.message)
		})
	}
}

// checkField checks a Request field: nil when want is "", else equal to want.
func checkField(t *testing.T, field string, got []byte, want string) {
	t.Helper()
	if (want == "") != (got == nil) || string(got) != want {
		t.Errorf("%s = %q (nil: %t), want %q", field, got, got == nil, want)
	}
}

// TestParseSlicesLine checks that Parse hands back slices of the line it was
// given, not copies, as Request's doc says.
func TestParseSlicesLine(t *testing.T) {
	line := []byte("SEND bob hi")
	req, err := protocol.Parse(line)
	if err != nil {
		t.Fatal(err)
	}
	line[5], line[9] = 'B', 'H'
	if string(req.Name) != "Bob" || string(req.Message) != "Hi" {
		t.Errorf("after changing the line: Name %q, Message %q; want Bob, Hi", req.Name, req.Message)
	}
}

func TestValidName(t *testing.T) {
	for _, n := range slices.Concat(goodNames, []string{"HELLO-FROM", "SEND"}) {
		if !protocol.ValidName([]byte(n)) {
			t.Errorf("ValidName(%q) = false, want true", n)
		}
	}
	for _, n := range slices.Concat(badNames, []string{"", " ", "a b", "\t", "\x00"}) {
		if protocol.ValidName([]byte(n)) {
			t.Errorf("ValidName(%q) = true, want false", n)
		}
	}
}

func TestValidMessage(t *testing.T) {
	tests := []struct {
		msg  string
		want bool
	}{
		{"hi", true},
		{"x", true},
		{"  hi  ", true},
		{"\thi\t", true},
		{"a\x01b", true},
		{"DELIVERY eve fake", true},
		{"zoë 😀", true},
		{"a,b!@#$%^&*", true},
		{"", false},
		{" ", false},
		{"\t", false},
		{" \t \v\f", false},
		{"\u00a0\u2003\u3000", false},
		{"\x00", false},
		{"a\x00", false},
		{"a\r", false},
		{"\r", false},
		{"a\nb", false},
		{"\xff", false},
		{"ok\xc3", false},
		{"\xed\xa0\x80", false},
	}
	for _, tc := range tests {
		if got := protocol.ValidMessage([]byte(tc.msg)); got != tc.want {
			t.Errorf("ValidMessage(%q) = %t, want %t", tc.msg, got, tc.want)
		}
	}
}

// TestValidMessageAnyPosition puts one byte that decides the answer at
// every position of messages long enough to be checked in 8-byte words,
// and of some around the length where the standard library's scans take
// over.
func TestValidMessageAnyPosition(t *testing.T) {
	var lengths []int // each with an "a" besides the insert: a visible character
	for n := 2; n <= 40; n++ {
		lengths = append(lengths, n)
	}
	lengths = append(lengths, 127, 128, 129, 300)
	tests := []struct {
		insert string
		want   bool
	}{
		{"\x00", false}, {"\r", false}, {"\n", false}, {"\xff", false}, {"\xc3", false},
		{"é", true}, {"😀", true}, {"\x7f", true}, {"\t", true}, {"~", true},
	}
	for _, tc := range tests {
		for _, n := range lengths {
			for at := range n {
				msg := []byte(strings.Repeat("a", n))
				msg = append(msg[:at:at], append([]byte(tc.insert), msg[at+1:]...)...)
				if got := protocol.ValidMessage(msg); got != tc.want {
					t.Fatalf("ValidMessage(%q) = %t, want %t", msg, got, tc.want)
				}
			}
		}
	}
}

func TestCommandString(t *testing.T) {
	tests := []struct {
		cmd  protocol.Command
		want string
	}{
		{protocol.CmdUnknown, "UNKNOWN"},
		{protocol.CmdHelloFrom, "HELLO-FROM"},
		{protocol.CmdList, "LIST"},
		{protocol.CmdSend, "SEND"},
		{protocol.Command(200), "UNKNOWN"},
	}
	for _, tc := range tests {
		if got := tc.cmd.String(); got != tc.want {
			t.Errorf("Command(%d).String() = %q, want %q", tc.cmd, got, tc.want)
		}
	}
}

func TestErrors(t *testing.T) {
	tests := []struct {
		err   error
		reply protocol.ReplyKind
		text  string
	}{
		{protocol.ErrBadHeader, protocol.ReplyBadHeader, "protocol: BAD-RQST-HDR"},
		{protocol.ErrBadBody, protocol.ReplyBadBody, "protocol: BAD-RQST-BODY"},
	}
	for _, tc := range tests {
		var pe *protocol.Error
		if !errors.As(tc.err, &pe) || pe.Reply != tc.reply {
			t.Errorf("%v: want a *protocol.Error with Reply %v", tc.err, tc.reply)
		}
		if got := tc.err.Error(); got != tc.text {
			t.Errorf("Error() = %q, want %q", got, tc.text)
		}
	}
}
