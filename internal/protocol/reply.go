package protocol

import (
	"errors"
	"strings"
)

// ReplyKind is a reply's header.
type ReplyKind uint8

// Every reply the server sends. NumReplyKinds counts them, so a caller can
// keep per-kind counters in an array.
const (
	ReplyUnknown ReplyKind = iota
	ReplyHello
	ReplyInUse
	ReplyBusy
	ReplyListOK
	ReplySendOK
	ReplyBadDestUser
	ReplyDelivery
	ReplyBadHeader
	ReplyBadBody
	NumReplyKinds
)

var replyHeaders = [NumReplyKinds]string{
	ReplyUnknown:     "UNKNOWN",
	ReplyHello:       "HELLO",
	ReplyInUse:       "IN-USE",
	ReplyBusy:        "BUSY",
	ReplyListOK:      "LIST-OK",
	ReplySendOK:      "SEND-OK",
	ReplyBadDestUser: "BAD-DEST-USER",
	ReplyDelivery:    "DELIVERY",
	ReplyBadHeader:   "BAD-RQST-HDR",
	ReplyBadBody:     "BAD-RQST-BODY",
}

// String returns the reply's header as it is spelled on the wire.
func (k ReplyKind) String() string {
	if k >= NumReplyKinds {
		return replyHeaders[ReplyUnknown]
	}
	return replyHeaders[k]
}

// AppendReply appends a reply that has no body: IN-USE, BUSY, SEND-OK,
// BAD-DEST-USER, BAD-RQST-HDR or BAD-RQST-BODY.
func AppendReply(buf []byte, k ReplyKind) []byte {
	buf = append(buf, k.String()...)
	return append(buf, '\n')
}

// AppendHello appends "HELLO <name>\n".
func AppendHello(buf []byte, name string) []byte {
	buf = append(buf, "HELLO "...)
	buf = append(buf, name...)
	return append(buf, '\n')
}

// AppendListOK appends "LIST-OK <n1>,<n2>,...\n".
func AppendListOK(buf []byte, names []string) []byte {
	buf = append(buf, "LIST-OK "...)
	for i, name := range names {
		if i > 0 {
			buf = append(buf, ',')
		}
		buf = append(buf, name...)
	}
	return append(buf, '\n')
}

// AppendDelivery appends "DELIVERY <from> <message>\n". The sender's name
// may be a string or bytes, so that neither kind of caller converts (and
// allocates) on the hot path.
func AppendDelivery[Name string | []byte](buf []byte, from Name, message []byte) []byte {
	buf = append(buf, "DELIVERY "...)
	buf = append(buf, from...)
	buf = append(buf, ' ')
	buf = append(buf, message...)
	return append(buf, '\n')
}

// Reply is one parsed reply line, as a client sees it.
type Reply struct {
	Kind    ReplyKind
	Name    string   // HELLO: the name logged in as; DELIVERY: the sender
	Names   []string // LIST-OK: the users, in login order
	Message string   // DELIVERY: the message, byte for byte
}

// ErrBadReply is returned by ParseReply for a line that is not a reply of
// this protocol.
var ErrBadReply = errors.New("protocol: malformed reply")

// ParseReply parses one reply line, given without its "\n".
func ParseReply(line []byte) (Reply, error) {
	header, body, hasBody := cutSpace(line)
	var r Reply
	for k := ReplyHello; k < NumReplyKinds; k++ {
		if string(header) == replyHeaders[k] {
			r.Kind = k
			break
		}
	}
	switch r.Kind {
	case ReplyUnknown:
		return r, ErrBadReply
	case ReplyHello:
		if !hasBody || !ValidName(body) {
			return r, ErrBadReply
		}
		r.Name = string(body)
	case ReplyListOK:
		if !hasBody {
			return r, ErrBadReply
		}
		if len(body) > 0 {
			r.Names = strings.Split(string(body), ",")
		}
	case ReplyDelivery:
		from, msg, hasMsg := cutSpace(body)
		if !hasBody || !hasMsg || !ValidName(from) {
			return r, ErrBadReply
		}
		r.Name, r.Message = string(from), string(msg)
	default:
		if hasBody {
			return r, ErrBadReply
		}
	}
	return r, nil
}
