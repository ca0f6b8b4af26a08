package protocol

import "bytes"

// keepIdleBytes is the largest buffer Release keeps: a bigger one is
// given back to the garbage collector so an idle connection holds little
// memory. A busy connection keeps its buffer from one long line to the
// next: growing it again for every line would cost more than the lines.
const keepIdleBytes = 4 << 10

// Framer cuts a byte stream into lines and enforces the line-length cap.
//
// Each byte is scanned once: complete lines inside a chunk are handed out
// in place, and only the start of a line whose end has not arrived yet is
// copied. A line over the cap is reported as soon as it is known to be too
// long; the rest of it, up to the next "\n", is skipped without being
// buffered.
type Framer struct {
	maxLine  int
	partial  []byte // the start of a line whose "\n" has not arrived
	skipping bool   // inside an overlong line that was already reported
}

// NewFramer returns a Framer for lines of at most maxLine bytes, not
// counting the "\n" and the single "\r" before it.
func NewFramer(maxLine int) *Framer {
	return &Framer{maxLine: maxLine}
}

// SetMaxLine changes the cap for the lines after the one being handled.
func (f *Framer) SetMaxLine(maxLine int) {
	f.maxLine = maxLine
}

// Holding reports how many bytes of buffer the Framer holds.
func (f *Framer) Holding() int {
	return cap(f.partial)
}

// Release gives back a big buffer the Framer holds between lines: the
// connection went quiet.
func (f *Framer) Release() {
	if len(f.partial) == 0 && cap(f.partial) > keepIdleBytes {
		f.partial = nil
	}
}

// Feed hands the Framer the next bytes of the stream. For each complete
// line, in order, it calls handle with the line (its "\n" and one "\r"
// before it removed, valid only during the call) and a nil error; for each
// line over the cap it calls handle once with a nil line and the error to
// answer it with (ErrBadBody when the line's header is a known command,
// else ErrBadHeader). If handle returns false, Feed stops at once and
// returns false, and how many bytes of data it took up to and including
// that line's "\n": the rest is the caller's, to feed again later or not
// at all. Otherwise it returns len(data) and true.
func (f *Framer) Feed(data []byte, handle func(line []byte, err error) bool) (int, bool) {
	total := len(data)
	for len(data) > 0 {
		end := bytes.IndexByte(data, '\n')
		if f.skipping {
			if end < 0 {
				return total, true
			}
			f.skipping = false
			data = data[end+1:]
			continue
		}
		if end < 0 {
			if f.knownOverlong(data) {
				err := overlongError(f.partial, data)
				f.resetPartial()
				f.skipping = true
				return total, handle(nil, err)
			}
			f.partial = append(f.partial, data...)
			return total, true
		}
		seg := data[:end]
		data = data[end+1:]
		if !f.handleLine(seg, handle) {
			return total - len(data), false
		}
	}
	return total, true
}

// knownOverlong reports whether the line that starts with the buffered
// partial line followed by data, whose "\n" has not arrived, is already sure
// to be over the cap, and its header is settled so that the reply does not
// depend on how the stream was cut. data is not empty.
func (f *Framer) knownOverlong(data []byte) bool {
	n := len(f.partial) + len(data)
	// The line may still lose one "\r" right before its "\n".
	if n <= f.maxLine || n == f.maxLine+1 && data[len(data)-1] == '\r' {
		return false
	}
	// Only a cap below the longest header gets here with fewer bytes than
	// overlongError looks at; wait for them or for the first space.
	return n >= headerPrefixLen ||
		bytes.IndexByte(f.partial, ' ') >= 0 || bytes.IndexByte(data, ' ') >= 0
}

// handleLine completes the buffered partial line with seg, the bytes up to
// its "\n", and hands it out.
func (f *Framer) handleLine(seg []byte, handle func([]byte, error) bool) bool {
	n := len(f.partial) + len(seg)
	if n > 0 && lastByte(f.partial, seg) == '\r' {
		n--
	}
	if n > f.maxLine {
		err := overlongError(f.partial, seg)
		f.resetPartial()
		return handle(nil, err)
	}
	if len(f.partial) == 0 {
		return handle(seg[:n], nil) // the whole line is in this chunk: no copy
	}
	f.partial = append(f.partial, seg...)
	ok := handle(f.partial[:n], nil)
	f.resetPartial()
	return ok
}

// resetPartial drops the buffered partial line, keeping its buffer for
// the next one (see Release).
func (f *Framer) resetPartial() {
	f.partial = f.partial[:0]
}

// lastByte returns the last byte of a followed by b; one of them is not
// empty.
func lastByte(a, b []byte) byte {
	if len(b) > 0 {
		return b[len(b)-1]
	}
	return a[len(a)-1]
}

// headerPrefixLen is the length of the longest header and the space after
// it: the bytes that tell a known header from an unknown one.
const headerPrefixLen = len("HELLO-FROM ")

// overlongError returns the reply to a line too long to parse, judged by
// its header: the bytes before the first space of a followed by b.
func overlongError(a, b []byte) error {
	var head [headerPrefixLen]byte
	n := copy(head[:], a)
	n += copy(head[n:], b)
	header, _, found := bytes.Cut(head[:n], []byte{' '})
	if found && commandOf(header) != CmdUnknown {
		return ErrBadBody
	}
	return ErrBadHeader
}
