package protocol_test

import (
	"bytes"
	"slices"
	"testing"
	"unicode"
	"unicode/utf8"

	"chatserver/internal/protocol"
)

// FuzzParse checks Parse's contract on any line: it never panics, answers
// with a valid Request or exactly one of the two protocol errors, leaves the
// line alone, and a Request it accepts encodes back to the very same line.
func FuzzParse(f *testing.F) {
	for _, tc := range parseCases {
		f.Add([]byte(tc.line))
	}
	f.Fuzz(func(t *testing.T, line []byte) {
		orig := bytes.Clone(line)
		req, err := protocol.Parse(line)
		if !bytes.Equal(line, orig) {
			t.Fatalf("Parse changed its line %q to %q", orig, line)
		}
		if want := parseModel(line); err != want {
			t.Fatalf("Parse(%q) = %v, want %v", line, err, want)
		}
		switch {
		case err == protocol.ErrBadHeader && req.Command == protocol.CmdUnknown,
			err == protocol.ErrBadBody && req.Command != protocol.CmdUnknown:
			if req.Name != nil || req.Message != nil {
				t.Fatalf("Parse(%q) = %+v with %v; want only Command set", line, req, err)
			}
			return
		case err != nil:
			t.Fatalf("Parse(%q) = %v, %v; want ErrBadHeader with CmdUnknown or ErrBadBody with a command", line, req.Command, err)
		}

		var enc []byte
		switch req.Command {
		case protocol.CmdHelloFrom:
			if !protocol.ValidName(req.Name) || req.Message != nil {
				t.Fatalf("Parse(%q) accepted name %q, message %q", line, req.Name, req.Message)
			}
			enc = protocol.AppendHelloFrom(nil, string(req.Name))
		case protocol.CmdList:
			if req.Name != nil || req.Message != nil {
				t.Fatalf("Parse(%q) accepted LIST with name %q, message %q", line, req.Name, req.Message)
			}
			enc = protocol.AppendList(nil)
		case protocol.CmdSend:
			if !protocol.ValidName(req.Name) || !protocol.ValidMessage(req.Message) {
				t.Fatalf("Parse(%q) accepted name %q, message %q", line, req.Name, req.Message)
			}
			enc = protocol.AppendSend(nil, string(req.Name), string(req.Message))
		default:
			t.Fatalf("Parse(%q) accepted command %v", line, req.Command)
		}
		if got, ok := bytes.CutSuffix(enc, []byte("\n")); !ok || !bytes.Equal(got, line) {
			t.Fatalf("Parse(%q) = %+v, which encodes to %q", line, req, enc)
		}
	})
}

// parseModel is the grammar spelled out plainly: the error Parse must
// return for line.
func parseModel(line []byte) error {
	header, body, hasBody := bytes.Cut(line, []byte(" "))
	valid := false
	switch string(header) {
	case "HELLO-FROM":
		valid = hasBody && protocol.ValidName(body)
	case "LIST":
		valid = !hasBody
	case "SEND":
		to, msg, hasMsg := bytes.Cut(body, []byte(" "))
		valid = hasBody && hasMsg && protocol.ValidName(to) && protocol.ValidMessage(msg)
	default:
		return protocol.ErrBadHeader
	}
	if !valid {
		return protocol.ErrBadBody
	}
	return nil
}

// FuzzValidMessage checks ValidMessage against the rule it implements,
// spelled out plainly.
func FuzzValidMessage(f *testing.F) {
	for _, seed := range []string{"hi", "  hi  ", "zoë 😀", "", " \t", "a\x00", "a\r", "ok\xc3",
		"hello there hello there", "hello there\x00hello", "\u00a0\u2003\u3000 plain text after"} {
		f.Add([]byte(seed))
	}
	f.Fuzz(func(t *testing.T, msg []byte) {
		want := utf8.Valid(msg) && !bytes.ContainsAny(msg, "\x00\r\n") &&
			len(bytes.TrimLeftFunc(msg, unicode.IsSpace)) > 0
		if got := protocol.ValidMessage(msg); got != want {
			t.Fatalf("ValidMessage(%q) = %t, want %t", msg, got, want)
		}
	})
}

// FuzzFramer checks that a Framer gives the same events however the stream
// is cut into chunks, and that they are the lines a plain split on "\n"
// gives.
func FuzzFramer(f *testing.F) {
	f.Add([]byte("LIST\nSEND bob hi\r\nHELLO-FROM a\n\n\r\n"), uint8(16), []byte{1, 5, 0, 3})
	f.Add([]byte("SEND bob xxxxxxxxxxxxxxxxxxxx\nLIST\n"), uint8(16), []byte{4, 4, 4, 4, 4, 4})
	f.Add([]byte("xxxxxxxxxxxxxxxxxxxxxxxxx\r\nLIST\r\r\nxx"), uint8(12), []byte{13, 1, 1})
	f.Add([]byte("SEND bob hi\nHELLO-FROM x\nWHOxx\nOK\n"), uint8(2), []byte{4, 7, 3})
	f.Add([]byte("xxxxxxxxxxxxxxxx\r\nxxxxxxxxxxxxxxxx\ry\nSEND bob xxxxxxxxxxxxxxxx"), uint8(16), []byte{16, 1, 17, 1})
	f.Fuzz(func(t *testing.T, stream []byte, maxLine uint8, cuts []byte) {
		max := int(maxLine % 48)
		whole := feedAll(protocol.NewFramer(max), [][]byte{stream})
		for i := range whole {
			whole[i].chunk = 0
		}

		var chunks [][]byte
		rest := stream
		for _, c := range cuts {
			n := min(int(c%24), len(rest))
			chunks = append(chunks, rest[:n])
			rest = rest[n:]
		}
		chunks = append(chunks, rest)
		cut := feedAll(protocol.NewFramer(max), chunks)
		for i := range cut {
			cut[i].chunk = 0
		}
		if !slices.Equal(whole, cut) {
			t.Fatalf("maxLine %d, stream %q\nwhole: %v\n  cut: %v (chunks %q)", max, stream, whole, cut, chunks)
		}

		want, tail := splitLines(stream, max)
		got := whole
		// A tail without "\n" that is already too long is answered at once.
		if len(got) == len(want)+1 && got[len(got)-1].err != nil && len(tail) > max {
			if e := overlongReply(tail); got[len(got)-1].err != e {
				t.Fatalf("maxLine %d, tail %q answered %v, want %v", max, tail, got[len(got)-1].err, e)
			}
			got = got[:len(want)]
		}
		if !slices.Equal(got, want) {
			t.Fatalf("maxLine %d, stream %q\n got: %v\nwant: %v", max, stream, got, want)
		}
	})
}

// splitLines is the plain model of a Framer: the events for each complete
// line of stream, and the bytes after its last "\n".
func splitLines(stream []byte, maxLine int) (events []event, tail []byte) {
	lines := bytes.Split(stream, []byte("\n"))
	for _, l := range lines[:len(lines)-1] {
		l = bytes.TrimSuffix(l, []byte("\r"))
		if len(l) > maxLine {
			events = append(events, event{err: overlongReply(l)})
		} else {
			events = append(events, event{line: string(l)})
		}
	}
	return events, lines[len(lines)-1]
}

// overlongReply is the answer to a line over the cap: ErrBadBody if it has
// a known header followed by a space, else ErrBadHeader.
func overlongReply(line []byte) error {
	header, _, found := bytes.Cut(line, []byte(" "))
	if found && slices.Contains([]string{"HELLO-FROM", "LIST", "SEND"}, string(header)) {
		return protocol.ErrBadBody
	}
	return protocol.ErrBadHeader
}
