package protocol

import (
	"bytes"
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
// It runs once per SEND on the server's hot path, so it leans on the
// standard library's word-at-a-time scans and decodes runes only until
// the first visible one, which is usually the first byte.
func ValidMessage(msg []byte) bool {
	if !utf8.Valid(msg) || hasByte(msg, 0) || hasByte(msg, '\r') || hasByte(msg, '\n') {
		return false
	}
	for len(msg) > 0 {
		r, size := utf8.DecodeRune(msg)
		if !unicode.IsSpace(r) {
			return true
		}
		msg = msg[size:]
	}
	return false
}

func hasByte(b []byte, c byte) bool {
	return bytes.IndexByte(b, c) >= 0
}
