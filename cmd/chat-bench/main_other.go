//go:build !linux

// Command chat-bench measures the chat server; it reads CPU and memory
// from /proc, so it runs on Linux only.
package main

import (
	"fmt"
	"os"
)

func main() {
	fmt.Fprintln(os.Stderr, "chat-bench: runs on Linux only (it reads /proc)")
	os.Exit(1)
}
