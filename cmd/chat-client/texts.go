package main

import (
	"fmt"
	"strings"
	"unicode"
	"unicode/utf8"

	"chatserver/internal/protocol"
)

// The texts the user sees. Where the course's own client has a text, it is
// the same.
const (
	textConnectError   = "Error connecting to the server."
	textWelcome        = "Welcome to Chat Client. Enter your login:"
	textLoggedIn       = "Successfully logged in as %s!"
	textDisallowed     = "Cannot log in as %s. That username contains disallowed characters."
	textInUse          = "Cannot log in as %s. That username is already in use."
	textBusy           = "Cannot log in. The server is full!"
	textEmptyName      = "Cannot log in without a name."
	textLongName       = "Cannot log in as %s. That username is too long (%d bytes; at most %d)."
	textTryAgain       = "Enter another login:"
	textWhoUser        = "- %s"
	textSent           = "The message was sent successfully"
	textBadDestUser    = "The destination user does not exist"
	textUnknownCommand = "Command doesn't exist"
	textDelivery       = "From %s: %s"
	textNoRecipient    = "Cannot send: say who to, as @<name> <message>."
	textBadRecipient   = "Cannot send to %s. That username contains disallowed characters."
	textEmptyMessage   = "Cannot send an empty message."
	textBadMessage     = "Cannot send that message: %s."
	textBadHeader      = "Error: Unknown issue in previous message header."
	textBadBody        = "Error: Unknown issue in previous message body."
	textServerClosed   = "The server closed the connection."
)

// textWho is the line before the list of users online.
func textWho(n int) string {
	if n == 1 {
		return "There is 1 online user:"
	}
	return fmt.Sprintf("There are %d online users:", n)
}

// nameRejection says why the client will not log in as name, or returns
// "" when it will ask the server: the protocol's name rules.
func nameRejection(name string) string {
	switch {
	case name == "":
		return textEmptyName
	case len(name) > protocol.MaxNameBytes:
		return fmt.Sprintf(textLongName, sanitize(name), len(name), protocol.MaxNameBytes)
	case !protocol.ValidName([]byte(name)):
		return fmt.Sprintf(textDisallowed, sanitize(name))
	}
	return ""
}

// sendRejection says why the client will not send msg to to, or returns
// "" when it will ask the server.
func sendRejection(to, msg string) string {
	switch {
	case to == "":
		return textNoRecipient
	case !protocol.ValidName([]byte(to)):
		return fmt.Sprintf(textBadRecipient, sanitize(to))
	case strings.TrimSpace(msg) == "":
		return textEmptyMessage
	case !utf8.ValidString(msg):
		return fmt.Sprintf(textBadMessage, "it is not valid UTF-8")
	case strings.Contains(msg, "\x00"):
		return fmt.Sprintf(textBadMessage, "it holds a NUL character")
	case strings.Contains(msg, "\r"):
		return fmt.Sprintf(textBadMessage, "it holds a carriage return")
	case !protocol.ValidMessage([]byte(msg)):
		return textEmptyMessage // white space of another kind only
	}
	return ""
}

// sanitize makes text (a message, a name) safe to print on a terminal:
// control characters other than TAB are shown in caret notation (ESC as
// "^["), and other characters that steer the display without showing
// (C1 controls, bidi overrides and other format characters, line and
// paragraph separators) as \uXXXX, so that no one can move the cursor,
// clear the screen, reverse a line or fake one of their own. Invalid
// UTF-8 is shown as \xXX. Everything else is printed as it came.
func sanitize(text string) string {
	if utf8.ValidString(text) && !strings.ContainsFunc(text, steers) {
		return text
	}
	var b strings.Builder
	for i := 0; i < len(text); {
		r, size := utf8.DecodeRuneInString(text[i:])
		switch {
		case r == utf8.RuneError && size == 1:
			fmt.Fprintf(&b, "\\x%02x", text[i])
		case !steers(r):
			b.WriteString(text[i : i+size])
		case r < 0x20:
			b.WriteByte('^')
			b.WriteByte(byte(r) + '@')
		case r == 0x7f:
			b.WriteString("^?")
		default:
			fmt.Fprintf(&b, "\\u%04x", r)
		}
		i += size
	}
	return b.String()
}

// steers reports whether r changes what a terminal shows without being
// shown itself. TAB is let through: messages may hold it.
func steers(r rune) bool {
	return r < 0x20 && r != '\t' || r >= 0x7f && r < 0xa0 ||
		unicode.Is(unicode.Cf, r) || r == '\u2028' || r == '\u2029'
}
