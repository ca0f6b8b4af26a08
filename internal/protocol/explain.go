package protocol

import (
	"bytes"
	"fmt"
	"unicode"
	"unicode/utf8"
)

// The explanations below say, for a person, why a line is refused: the
// server's trace shows them next to BAD-RQST-HDR and BAD-RQST-BODY, and
// the terminal client says why it will not send a name. They are off the
// hot path: Parse only says that a line is refused.

// Explain says why the server answers line with an error, in the order
// the server checks (loggedIn: whether the connection is logged in), or
// returns "" when the line is a valid request.
func Explain(line []byte, loggedIn bool) string {
	header, body, hasBody := bytes.Cut(line, []byte{' '})
	cmd := commandOf(header)
	switch {
	case len(line) == 0:
		return "empty line"
	case cmd == CmdUnknown:
		return explainHeader(line, header)
	case !loggedIn && cmd != CmdHelloFrom:
		return "not logged in: the first request must be HELLO-FROM <name>"
	case loggedIn && cmd == CmdHelloFrom:
		return "already logged in: a connection logs in once"
	}
	switch cmd {
	case CmdHelloFrom:
		if !hasBody {
			return "HELLO-FROM without a name"
		}
		return ExplainName(body)
	case CmdList:
		if hasBody {
			return "LIST takes nothing after it, not even a space"
		}
	case CmdSend:
		to, msg, hasMsg := bytes.Cut(body, []byte{' '})
		switch {
		case !hasBody || !hasMsg:
			return "SEND needs a name and a message: SEND <name> <message>"
		case !ValidName(to):
			return "recipient: " + ExplainName(to)
		}
		return ExplainMessage(msg)
	}
	return ""
}

// explainHeader says why header is not one of the three.
func explainHeader(line, header []byte) string {
	for _, known := range []string{"HELLO-FROM", "LIST", "SEND"} {
		switch {
		case bytes.EqualFold(header, []byte(known)):
			return fmt.Sprintf("headers are upper case: %s, not %s", known, header)
		case len(header) > len(known) && bytes.HasPrefix(header, []byte(known)):
			if known == "LIST" {
				return "LIST takes nothing after it"
			}
			return fmt.Sprintf("no space after %s", known)
		}
	}
	if line[0] == ' ' {
		return "the line starts with a space"
	}
	for _, known := range []string{"HELLO-FROM", "LIST", "SEND"} {
		if len(header) >= 3 && bytes.HasPrefix([]byte(known), bytes.ToUpper(header)) {
			return fmt.Sprintf("unknown header %q: did you mean %s?", header, known)
		}
	}
	if len(header) > 20 {
		header = append(header[:20:20], "..."...)
	}
	return fmt.Sprintf("unknown header %q: the requests are HELLO-FROM, LIST and SEND", header)
}

// ExplainName says why name is not a valid user name, or returns "" when
// it is one.
func ExplainName(name []byte) string {
	switch {
	case len(name) == 0:
		return "the name is empty"
	case len(name) > MaxNameBytes:
		return fmt.Sprintf("the name is %d bytes long, more than %d", len(name), MaxNameBytes)
	case !utf8.Valid(name):
		return "the name is not valid UTF-8"
	}
	for _, r := range string(name) {
		switch {
		case unicode.IsSpace(r):
			return fmt.Sprintf("the name holds white space (%U)", r)
		case !unicode.IsPrint(r):
			return fmt.Sprintf("the name holds a control or format character (%U)", r)
		case isReservedInName(r):
			return fmt.Sprintf("the name holds %q, which names may not (none of ! @ # $ %% ^ & * ,)", r)
		}
	}
	return ""
}

// ExplainMessage says why msg is not a valid message, or returns "" when
// it is one.
func ExplainMessage(msg []byte) string {
	switch {
	case !utf8.Valid(msg):
		return "the message is not valid UTF-8"
	case hasByte(msg, 0):
		return "the message holds a NUL byte"
	case hasByte(msg, '\r'):
		return `the message holds a "\r" (only one, right before the "\n", is dropped)`
	case !ValidMessage(msg):
		return "the message is empty or only white space"
	}
	return ""
}
