package natscluster

import (
	"encoding/binary"
	"errors"
)

// A frame is one NATS message from one node to another: a header, then
// records. Records are numbered per channel (one sending node, one
// receiving node), from 1, in the order they were appended; a frame holds
// a run of consecutive ones, and its header says the first one's number
// and how far the sender has handled the receiver's records (a cumulative
// acknowledgement). Frames may be lost or repeated; records are handled
// once each, in number order (see peer and inbox).
//
// Header:
//
//	version  1 byte
//	from     22 bytes: the sending node's id
//	to       22 bytes: the receiving node's id
//	first    8 bytes, big endian: the number of the first record
//	ack      8 bytes, big endian: every record of the receiver's up to this one is handled
//
// Records, each a kind byte and its fields (numbers are uvarints, strings
// a uvarint length and the bytes):
//
//	recSend     toClaim, to, from, message: a SEND for the user to, logged in with claim toClaim
//	recFailed   seq: the receiver's SEND record seq was not delivered
//	recRelease  claim, name: the sender's user name gives up the claim; nothing more from it follows
//	recDead     node (22 bytes): that node's lease is gone; take nothing more from it
const (
	frameVersion = 1
	nodeIDLen    = 22 // a nuid
	headerLen    = 1 + 2*nodeIDLen + 8 + 8
	offFirst     = 1 + 2*nodeIDLen
	offAck       = offFirst + 8
)

// A frame's ack covers only records whose recFailed answers are in that
// frame or in earlier ones, and a receiver applies an ack only once it has
// every record before the frame's: so a SEND is never taken as delivered
// while its recFailed is still on the way.

type recordKind byte

const (
	recSend recordKind = iota + 1
	recFailed
	recRelease
	recDead
)

// recordOverhead bounds what a SEND record adds to its message: kind,
// claim, three lengths and two names.
const recordOverhead = 1 + binary.MaxVarintLen64 + 3*binary.MaxVarintLen32 + 2*64

// frameOverhead bounds what a frame adds to the message of one SEND.
const frameOverhead = headerLen + recordOverhead

var errBadFrame = errors.New("natscluster: malformed frame")

func appendHeader(b []byte, from, to string, first, ack uint64) []byte {
	b = append(b, frameVersion)
	b = append(b, from...)
	b = append(b, to...)
	b = binary.BigEndian.AppendUint64(b, first)
	return binary.BigEndian.AppendUint64(b, ack)
}

func appendString[S string | []byte](b []byte, s S) []byte {
	b = binary.AppendUvarint(b, uint64(len(s)))
	return append(b, s...)
}

func appendSend(b []byte, toClaim uint64, to []byte, from string, msg []byte) []byte {
	b = append(b, byte(recSend))
	b = binary.AppendUvarint(b, toClaim)
	b = appendString(b, to)
	b = appendString(b, from)
	return appendString(b, msg)
}

func appendFailed(b []byte, seq uint64) []byte {
	return binary.AppendUvarint(append(b, byte(recFailed)), seq)
}

func appendRelease(b []byte, claim uint64, name string) []byte {
	b = binary.AppendUvarint(append(b, byte(recRelease)), claim)
	return appendString(b, name)
}

func appendDead(b []byte, node string) []byte {
	return append(append(b, byte(recDead)), node...)
}

// header is a decoded frame header; its ids point into the frame.
type header struct {
	from, to   []byte
	first, ack uint64
}

func parseHeader(frame []byte) (header, []byte, error) {
	if len(frame) < headerLen || frame[0] != frameVersion {
		return header{}, nil, errBadFrame
	}
	return header{
		from:  frame[1 : 1+nodeIDLen],
		to:    frame[1+nodeIDLen : offFirst],
		first: binary.BigEndian.Uint64(frame[offFirst:]),
		ack:   binary.BigEndian.Uint64(frame[offAck:]),
	}, frame[headerLen:], nil
}

// record is a decoded record; its byte slices point into the frame.
type record struct {
	kind     recordKind
	seq      uint64 // recFailed: the failed SEND; recRelease: the claim; recSend: toClaim
	to, from []byte // recSend
	name     []byte // recRelease: the name; recDead: the node
	msg      []byte // recSend
}

// nextRecord decodes the record at the start of b and returns the rest.
func nextRecord(b []byte) (record, []byte, error) {
	r := record{kind: recordKind(b[0])}
	b = b[1:]
	var ok bool
	switch r.kind {
	case recSend:
		if r.seq, b, ok = uvarint(b); !ok {
			break
		}
		if r.to, b, ok = str(b); !ok {
			break
		}
		if r.from, b, ok = str(b); !ok {
			break
		}
		r.msg, b, ok = str(b)
	case recFailed:
		r.seq, b, ok = uvarint(b)
	case recRelease:
		if r.seq, b, ok = uvarint(b); ok {
			r.name, b, ok = str(b)
		}
	case recDead:
		if ok = len(b) >= nodeIDLen; ok {
			r.name, b = b[:nodeIDLen], b[nodeIDLen:]
		}
	}
	if !ok {
		return record{}, nil, errBadFrame
	}
	return r, b, nil
}

func uvarint(b []byte) (uint64, []byte, bool) {
	v, n := binary.Uvarint(b)
	if n <= 0 {
		return 0, nil, false
	}
	return v, b[n:], true
}

func str(b []byte) ([]byte, []byte, bool) {
	n, b, ok := uvarint(b)
	if !ok || n > uint64(len(b)) {
		return nil, nil, false
	}
	return b[:n], b[n:], true
}
