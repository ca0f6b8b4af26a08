package chat

import (
	"bytes"
	"context"
	"log/slog"
	"unicode/utf8"

	"chatserver/internal/protocol"
)

// Tracing, for people who write clients: with the logger at debug level,
// every request line a connection sends ("in") and every line written to
// it ("out") is logged with the connection's id, and a refused request
// with its error reply and why. Message bodies appear in no other log
// line. The text and JSON handlers escape control characters; long lines
// are cut, with their length.

// traceCut is the longest line a trace shows whole.
const traceCut = 200

// tracing reports whether log logs every line.
func tracing(log *slog.Logger) bool {
	return log.Enabled(context.Background(), slog.LevelDebug)
}

// traceIn logs a request line (nil: one over the line cap, which the
// framer skipped), and if it was refused, the reply and why. wasLoggedIn
// is the login state it was judged in.
func (s *session) traceIn(line []byte, err error, wasLoggedIn bool) {
	attrs := make([]any, 0, 8)
	if line != nil {
		attrs = appendLineAttrs(attrs, line)
	}
	if perr, ok := err.(*protocol.Error); ok {
		why := protocol.Explain(line, wasLoggedIn)
		if line == nil {
			why = "the line is longer than the line cap: skipped up to its \\n"
		}
		attrs = append(attrs, "reply", perr.Reply.String(), "why", why)
	}
	s.log().Debug("in", attrs...)
}

// traceOut logs each line of b, bytes about to be written to the client.
// A paced write (delaybot's) hands out a line in pieces: each is logged as
// it goes.
func (s *session) traceOut(b []byte) {
	log := s.log()
	for line := range bytes.Lines(b) {
		log.Debug("out", appendLineAttrs(nil, bytes.TrimSuffix(line, []byte("\n")))...)
	}
}

// appendLineAttrs appends the attributes that show line: the line, cut
// after traceCut bytes (at a character boundary) with its length.
func appendLineAttrs(attrs []any, line []byte) []any {
	if len(line) <= traceCut {
		return append(attrs, "line", string(line))
	}
	cut := traceCut
	for cut > traceCut-utf8.UTFMax && !utf8.RuneStart(line[cut]) {
		cut--
	}
	return append(attrs, "line", string(line[:cut])+"...", "bytes", len(line))
}

// takeOut hands a link what the outbox holds (see outbox.take), traced.
func (s *session) takeOut(spare []byte) (batch []byte, isClosed bool) {
	batch, isClosed = s.out.take(spare)
	if s.srv.trace && len(batch) > 0 {
		s.traceOut(batch)
	}
	return batch, isClosed
}
