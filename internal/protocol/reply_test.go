package protocol_test

import (
	"bytes"
	"fmt"
	"reflect"
	"testing"

	"chatserver/internal/protocol"
)

// TestAppendReply checks every reply encoder's wire bytes and that
// ParseReply reads them back.
func TestAppendReply(t *testing.T) {
	tests := []struct {
		name   string
		append func([]byte) []byte
		wire   string
		want   protocol.Reply
	}{
		{
			"HELLO",
			func(b []byte) []byte { return protocol.AppendHello(b, "zoë") },
			"HELLO zoë\n",
			protocol.Reply{Kind: protocol.ReplyHello, Name: "zoë"},
		},
		{
			"IN-USE",
			func(b []byte) []byte { return protocol.AppendReply(b, protocol.ReplyInUse) },
			"IN-USE\n",
			protocol.Reply{Kind: protocol.ReplyInUse},
		},
		{
			"BUSY",
			func(b []byte) []byte { return protocol.AppendReply(b, protocol.ReplyBusy) },
			"BUSY\n",
			protocol.Reply{Kind: protocol.ReplyBusy},
		},
		{
			"LIST-OK alone",
			func(b []byte) []byte { return protocol.AppendListOK(b, []string{"alice"}) },
			"LIST-OK alice\n",
			protocol.Reply{Kind: protocol.ReplyListOK, Names: []string{"alice"}},
		},
		{
			"LIST-OK several",
			func(b []byte) []byte { return protocol.AppendListOK(b, []string{"alice", "Bob", "bob", "zoë"}) },
			"LIST-OK alice,Bob,bob,zoë\n",
			protocol.Reply{Kind: protocol.ReplyListOK, Names: []string{"alice", "Bob", "bob", "zoë"}},
		},
		{
			"SEND-OK",
			func(b []byte) []byte { return protocol.AppendReply(b, protocol.ReplySendOK) },
			"SEND-OK\n",
			protocol.Reply{Kind: protocol.ReplySendOK},
		},
		{
			"BAD-DEST-USER",
			func(b []byte) []byte { return protocol.AppendReply(b, protocol.ReplyBadDestUser) },
			"BAD-DEST-USER\n",
			protocol.Reply{Kind: protocol.ReplyBadDestUser},
		},
		{
			"DELIVERY",
			func(b []byte) []byte { return protocol.AppendDelivery(b, "eve", []byte("hi bob")) },
			"DELIVERY eve hi bob\n",
			protocol.Reply{Kind: protocol.ReplyDelivery, Name: "eve", Message: "hi bob"},
		},
		{
			"DELIVERY spaces kept",
			func(b []byte) []byte { return protocol.AppendDelivery(b, "eve", []byte("  hi\tthere  ")) },
			"DELIVERY eve   hi\tthere  \n",
			protocol.Reply{Kind: protocol.ReplyDelivery, Name: "eve", Message: "  hi\tthere  "},
		},
		{
			"DELIVERY verbatim",
			func(b []byte) []byte { return protocol.AppendDelivery(b, "alice", []byte("DELIVERY eve fake")) },
			"DELIVERY alice DELIVERY eve fake\n",
			protocol.Reply{Kind: protocol.ReplyDelivery, Name: "alice", Message: "DELIVERY eve fake"},
		},
		{
			"BAD-RQST-HDR",
			func(b []byte) []byte { return protocol.AppendReply(b, protocol.ReplyBadHeader) },
			"BAD-RQST-HDR\n",
			protocol.Reply{Kind: protocol.ReplyBadHeader},
		},
		{
			"BAD-RQST-BODY",
			func(b []byte) []byte { return protocol.AppendReply(b, protocol.ReplyBadBody) },
			"BAD-RQST-BODY\n",
			protocol.Reply{Kind: protocol.ReplyBadBody},
		},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			if got := string(tc.append(nil)); got != tc.wire {
				t.Fatalf("appended %q, want %q", got, tc.wire)
			}
			// Appending keeps what the buffer held.
			if got := string(tc.append([]byte("BUSY\n"))); got != "BUSY\n"+tc.wire {
				t.Errorf("appended to a buffer: %q, want %q", got, "BUSY\n"+tc.wire)
			}
			line := bytes.TrimSuffix([]byte(tc.wire), []byte("\n"))
			got, err := protocol.ParseReply(line)
			if err != nil || !reflect.DeepEqual(got, tc.want) {
				t.Errorf("ParseReply(%q) = %+v, %v; want %+v, nil", line, got, err, tc.want)
			}
		})
	}
}

// TestAppendRequest checks the request encoders' wire bytes and that Parse
// reads them back.
func TestAppendRequest(t *testing.T) {
	tests := []struct {
		name   string
		append func([]byte) []byte
		wire   string
		want   parseCase
	}{
		{
			"HELLO-FROM",
			func(b []byte) []byte { return protocol.AppendHelloFrom(b, "zoë") },
			"HELLO-FROM zoë\n",
			accepted("", protocol.CmdHelloFrom, "zoë", ""),
		},
		{
			"LIST",
			protocol.AppendList,
			"LIST\n",
			accepted("", protocol.CmdList, "", ""),
		},
		{
			"SEND",
			func(b []byte) []byte { return protocol.AppendSend(b, "bob", "  hi\tthere ") },
			"SEND bob   hi\tthere \n",
			accepted("", protocol.CmdSend, "bob", "  hi\tthere "),
		},
		{
			"SEND verbatim",
			func(b []byte) []byte { return protocol.AppendSend(b, "bob", "DELIVERY eve fake") },
			"SEND bob DELIVERY eve fake\n",
			accepted("", protocol.CmdSend, "bob", "DELIVERY eve fake"),
		},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			if got := string(tc.append(nil)); got != tc.wire {
				t.Fatalf("appended %q, want %q", got, tc.wire)
			}
			if got := string(tc.append([]byte("LIST\n"))); got != "LIST\n"+tc.wire {
				t.Errorf("appended to a buffer: %q, want %q", got, "LIST\n"+tc.wire)
			}
			line := bytes.TrimSuffix([]byte(tc.wire), []byte("\n"))
			req, err := protocol.Parse(line)
			if err != nil || req.Command != tc.want.cmd {
				t.Fatalf("Parse(%q) = %v, %v; want %v, nil", line, req.Command, err, tc.want.cmd)
			}
			checkField(t, "Name", req.Name, tc.want.name)
			checkField(t, "Message", req.Message, tc.want.message)
		})
	}
}

func TestParseReplyRejects(t *testing.T) {
	for _, line := range []string{
		"", " ", "WHO", "UNKNOWN", "hello alice", "Hello alice", " HELLO alice", "HELLO\talice",
		"HELLO", "HELLO ", "HELLO a b", "HELLO a,b", "HELLO a\x00", "HELLO \xff",
		"IN-USE now", "BUSY ", "SEND-OK extra", "SEND-OK ", "BAD-DEST-USER bob",
		"BAD-RQST-HDR x", "BAD-RQST-BODY ", "SEND-OKx", "LIST-OK",
		"DELIVERY", "DELIVERY ", "DELIVERY bob", "DELIVERY  hi", "DELIVERY a,b hi",
	} {
		if r, err := protocol.ParseReply([]byte(line)); err != protocol.ErrBadReply {
			t.Errorf("ParseReply(%q) = %+v, %v; want ErrBadReply", line, r, err)
		}
	}
}

func TestReplyKindString(t *testing.T) {
	want := map[protocol.ReplyKind]string{
		protocol.ReplyUnknown:     "UNKNOWN",
		protocol.ReplyHello:       "HELLO",
		protocol.ReplyInUse:       "IN-USE",
		protocol.ReplyBusy:        "BUSY",
		protocol.ReplyListOK:      "LIST-OK",
		protocol.ReplySendOK:      "SEND-OK",
		protocol.ReplyBadDestUser: "BAD-DEST-USER",
		protocol.ReplyDelivery:    "DELIVERY",
		protocol.ReplyBadHeader:   "BAD-RQST-HDR",
		protocol.ReplyBadBody:     "BAD-RQST-BODY",
		protocol.NumReplyKinds:    "UNKNOWN",
		protocol.ReplyKind(255):   "UNKNOWN",
	}
	if len(want) != int(protocol.NumReplyKinds)+2 {
		t.Fatalf("the table has %d kinds, want every one of %d plus two out of range", len(want), protocol.NumReplyKinds)
	}
	for k, s := range want {
		t.Run(fmt.Sprint(int(k)), func(t *testing.T) {
			if got := k.String(); got != s {
				t.Errorf("ReplyKind(%d).String() = %q, want %q", k, got, s)
			}
		})
	}
}
