package protocol

import (
	"bytes"
	"encoding/binary"
	"unicode"
	"unicode/utf8"
)

// ValidName reports whether name is a valid user name: 1 to 64 bytes of
// valid UTF-8, every character printable and not a space, and none of
// the characters ! @ # $ % ^ & * and the comma (which separates names in
// LIST-OK).
func ValidName(name []byte) bool {
	if len(name) == 0 || len(name) > MaxNameBytes {
		return false
	}
	for len(name) > 0 {
		if c := name[0]; c < utf8.RuneSelf {
			// Most names are ASCII: one lookup per byte, no decoding.
			if !nameASCII[c] {
				return false
			}
			name = name[1:]
			continue
		}
		r, size := utf8.DecodeRune(name)
		if r == utf8.RuneError && size <= 1 {
			return false // invalid UTF-8
		}
		if r == ' ' || !unicode.IsPrint(r) || isReservedInName(r) {
			return false
		}
		name = name[size:]
	}
	return true
}

// nameASCII holds which ASCII characters a name may hold: the same rule,
// worked out once.
var nameASCII = func() (ok [utf8.RuneSelf]bool) {
	for c := range rune(utf8.RuneSelf) {
		ok[c] = c != ' ' && unicode.IsPrint(c) && !isReservedInName(c)
	}
	return ok
}()

// isReservedInName reports whether r is one of the characters a name may
// not hold even though it is printable.
func isReservedInName(r rune) bool {
	switch r {
	case '!', '@', '#', '$', '%', '^', '&', '*', ',':
		return true
	}
	return false
}

// ValidMessage reports whether msg is a valid message: valid UTF-8 with at
// least one character that is not white space, and no NUL or "\r" (a
// message cannot hold a line break, so "\n" never reaches here). TAB and
// leading or trailing spaces are allowed and kept.
//
// It runs once per SEND on the server's hot path, and decodes runes only
// until the first visible one, which is usually the first byte.
func ValidMessage(msg []byte) bool {
	if !cleanText(msg) {
		return false
	}
	for len(msg) > 0 {
		if c := msg[0]; c < utf8.RuneSelf { // unicode.IsSpace's ASCII cases
			if c != ' ' && (c < '\t' || c > '\r') {
				return true
			}
			msg = msg[1:]
			continue
		}
		r, size := utf8.DecodeRune(msg)
		if !unicode.IsSpace(r) {
			return true
		}
		msg = msg[size:]
	}
	return false
}

// shortText is the length below which cleanText checks plain ASCII in one
// loop of its own: the standard library's vectorised scans cost more to
// start than such text takes to check, and less on longer text (measured
// on this project's benchmark machine: 64 B in 14 ns against 27 ns; even
// at 128 B; 16 KiB in 3.8 µs against 1.1 µs).
const shortText = 128

// cleanText reports whether b is valid UTF-8 with no NUL, "\r" or "\n".
func cleanText(b []byte) bool {
	if len(b) >= shortText {
		return scanText(b)
	}
	for i := plainASCII(b); i < len(b); i++ {
		c := b[i]
		if c >= utf8.RuneSelf {
			return scanText(b[i:]) // not ASCII from here: the general checks
		}
		if c == 0 || c == '\r' || c == '\n' {
			return false
		}
	}
	return true
}

// scanText is cleanText by the standard library's scans.
func scanText(b []byte) bool {
	return utf8.Valid(b) && !hasByte(b, 0) && !hasByte(b, '\r') && !hasByte(b, '\n')
}

func hasByte(b []byte, c byte) bool {
	return bytes.IndexByte(b, c) >= 0
}

// Eight copies of a byte, for the word-at-a-time tests below.
const (
	ones    = 0x0101010101010101
	highs   = 0x8080808080808080
	crBytes = '\r' * ones
	lfBytes = '\n' * ones
)

// plainASCII returns how many leading bytes of b are known to be ASCII
// other than NUL, "\r" and "\n", the bytes a message may hold without any
// further check: all of b if it is at least a word long and all such, else
// a multiple of 8. The last word may overlap the one before it.
//
// For a word w with no byte's high bit set, subtracting 1 from every byte
// sets a high bit only where a byte was 0 (or where a 0 below it borrowed),
// so w-ones has a high bit set exactly when w holds a 0 byte, and
// (w^crBytes)-ones when it holds a "\r". One test covers all four cases.
func plainASCII(b []byte) int {
	n := 0
	for ; n+8 <= len(b); n += 8 {
		if !plainWord(binary.LittleEndian.Uint64(b[n:])) {
			return n
		}
	}
	if n < len(b) && n >= 8 && plainWord(binary.LittleEndian.Uint64(b[len(b)-8:])) {
		return len(b)
	}
	return n
}

func plainWord(w uint64) bool {
	return (w|(w-ones)|((w^crBytes)-ones)|((w^lfBytes)-ones))&highs == 0
}
