// Package protocol is the chat protocol's wire format: it frames lines,
// parses requests and replies, checks names and messages, and appends
// requests and replies to caller-owned buffers.
//
// It does no I/O, starts no goroutines and logs nothing. Parsing a request
// returns slices of the caller's line and allocates nothing, so the server
// can parse in place on its hot path.
package protocol

import (
	"bytes"
	"unicode/utf8"
)

// Command is a request's header.
type Command uint8

// The three requests a client may send.
const (
	CmdUnknown Command = iota
	CmdHelloFrom
	CmdList
	CmdSend
)

// String returns the command as it is spelled on the wire.
func (c Command) String() string {
	switch c {
	case CmdHelloFrom:
		return "HELLO-FROM"
	case CmdList:
		return "LIST"
	case CmdSend:
		return "SEND"
	}
	return "UNKNOWN"
}

// Request is one parsed request line. Its slices point into the line that
// was parsed and are valid only as long as that line is.
type Request struct {
	Command Command
	Name    []byte // HELLO-FROM: the name to log in as; SEND: the recipient
	Message []byte // SEND: the message, byte for byte
}

// Error is a request that breaks the protocol; Reply is what the server
// answers to it (ReplyBadHeader or ReplyBadBody).
type Error struct {
	Reply ReplyKind
}

func (e *Error) Error() string { return "protocol: " + e.Reply.String() }

// The two protocol errors. They are shared values, so returning them does
// not allocate.
var (
	ErrBadHeader = &Error{Reply: ReplyBadHeader}
	ErrBadBody   = &Error{Reply: ReplyBadBody}
)

// MaxNameBytes is the longest name the protocol allows, in bytes.
const MaxNameBytes = 64

// Parse parses one request line, given without its "\n" and without the
// single "\r" that may precede it (Framer removes both).
//
// An unknown header returns ErrBadHeader. A known header with a body that
// breaks the grammar returns the Request with only Command set, and
// ErrBadBody: the caller checks whether the command is allowed in its
// state before it reports the body (the protocol's order of checks).
func Parse(line []byte) (Request, error) {
	header, body, hasBody := cutSpaceWithin(line, headerPrefixLen)
	req := Request{Command: commandOf(header)}
	switch req.Command {
	case CmdHelloFrom:
		if !hasBody || !ValidName(body) {
			return req, ErrBadBody
		}
		req.Name = body
	case CmdList:
		if hasBody {
			return req, ErrBadBody
		}
	case CmdSend:
		to, msg, ok := cutName(body)
		if !ok || !ValidMessage(msg) {
			return req, ErrBadBody
		}
		req.Name, req.Message = to, msg
	default:
		return req, ErrBadHeader
	}
	return req, nil
}

// cutSpace is bytes.Cut at the first space, without the general search
// bytes.Cut goes through: parsing runs once per request and reply.
func cutSpace(b []byte) (before, after []byte, found bool) {
	if i := bytes.IndexByte(b, ' '); i >= 0 {
		return b[:i], b[i+1:], true
	}
	return b, nil, false
}

// cutSpaceWithin is cutSpace for a field of at most n-1 bytes: it looks
// for the space among b's first n bytes only, so a field that cannot be
// valid costs no scan of the rest. Fields are short, and a plain loop
// finds their end sooner than a call to a vectorised search.
func cutSpaceWithin(b []byte, n int) (before, after []byte, found bool) {
	for i, c := range b[:min(n, len(b))] {
		if c == ' ' {
			return b[:i], b[i+1:], true
		}
	}
	return b, nil, false
}

// cutName splits a SEND's body at the space after the recipient's name,
// and reports whether there is one and the name is valid. An ASCII name,
// the usual kind, is checked by the same loop that finds its end.
func cutName(body []byte) (name, rest []byte, ok bool) {
	ascii := true
	for i, c := range body[:min(len(body), MaxNameBytes+1)] {
		switch {
		case c == ' ':
			name = body[:i]
			return name, body[i+1:], i > 0 && (ascii || ValidName(name))
		case c >= utf8.RuneSelf:
			ascii = false
		case !nameASCII[c]:
			return nil, nil, false
		}
	}
	return nil, nil, false // no space, or not before the longest name's end
}

// commandOf maps a header to its command, CmdUnknown if it is none of them.
// Headers are case-sensitive.
func commandOf(header []byte) Command {
	switch string(header) { // the conversion does not allocate in a switch
	case "HELLO-FROM":
		return CmdHelloFrom
	case "LIST":
		return CmdList
	case "SEND":
		return CmdSend
	}
	return CmdUnknown
}

// AppendHelloFrom appends the request "HELLO-FROM <name>\n".
func AppendHelloFrom(buf []byte, name string) []byte {
	buf = append(buf, "HELLO-FROM "...)
	buf = append(buf, name...)
	return append(buf, '\n')
}

// AppendList appends the request "LIST\n".
func AppendList(buf []byte) []byte {
	return append(buf, "LIST\n"...)
}

// AppendSend appends the request "SEND <to> <message>\n".
func AppendSend[S string | []byte](buf []byte, to, message S) []byte {
	buf = append(buf, "SEND "...)
	buf = append(buf, to...)
	buf = append(buf, ' ')
	buf = append(buf, message...)
	return append(buf, '\n')
}
