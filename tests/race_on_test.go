//go:build race

package tests

// raceEnabled is set when the tests run with -race: the chat-server
// binary they start is built with it too.
const raceEnabled = true
