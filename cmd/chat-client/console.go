package main

import (
	"bufio"
	"io"
	"os"
	"strings"
	"sync"

	"golang.org/x/term"
)

// console is where the user types and reads: lines in, whole lines out.
// Any goroutine may print.
type console interface {
	// lines yields each line typed, without its line end, until the input
	// ends (the channel is then closed) or the console is closed.
	lines() <-chan string
	// println prints lines, each whole: no other output lands inside one.
	println(lines ...string)
	// close stops reading and gives the terminal back as it was.
	close()
}

// newConsole is a line editor when stdin and stdout are a terminal (a
// message that arrives while the user types is printed above the line
// being typed, which is redrawn intact), else a plain reader and writer of
// lines, byte for byte, for pipes and scripts.
func newConsole(stdin io.Reader, stdout io.Writer) console {
	in, inOK := stdin.(*os.File)
	out, outOK := stdout.(*os.File)
	if inOK && outOK && term.IsTerminal(int(in.Fd())) && term.IsTerminal(int(out.Fd())) {
		if c, err := newTermConsole(in, out); err == nil {
			return c
		}
	}
	return newLineConsole(stdin, stdout)
}

// lineConsole reads and writes plain lines.
type lineConsole struct {
	mu   sync.Mutex
	w    io.Writer // guarded by mu
	in   chan string
	stop chan struct{}
	once sync.Once
}

func newLineConsole(r io.Reader, w io.Writer) *lineConsole {
	c := &lineConsole{w: w, in: make(chan string), stop: make(chan struct{})}
	go c.read(r)
	return c
}

// read sends each line of r, without its "\n" and one "\r" before it. A
// last line without "\n" counts. The goroutine may stay blocked in a read
// after close: no io.Reader can be interrupted (the process exits then).
func (c *lineConsole) read(r io.Reader) {
	defer close(c.in)
	br := bufio.NewReader(r)
	for {
		line, err := br.ReadString('\n')
		if line != "" || err == nil {
			line = strings.TrimSuffix(strings.TrimSuffix(line, "\n"), "\r")
			select {
			case c.in <- line:
			case <-c.stop:
				return
			}
		}
		if err != nil {
			return
		}
	}
}

func (c *lineConsole) lines() <-chan string { return c.in }

// println writes the lines with one write, so that they reach a terminal
// or a pipe at once.
func (c *lineConsole) println(lines ...string) {
	var b []byte
	for _, l := range lines {
		b = append(b, l...)
		b = append(b, '\n')
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	_, _ = c.w.Write(b) // nowhere left to report a failed write to the user
}

func (c *lineConsole) close() { c.once.Do(func() { close(c.stop) }) }

// termConsole is a line editor on a terminal in raw mode (x/term's
// Terminal): arrows, backspace and history work, Enter sends, Ctrl-D on an
// empty line or Ctrl-C quits.
type termConsole struct {
	t       *term.Terminal
	fd      int
	restore *term.State
	in      chan string
	stop    chan struct{}
	once    sync.Once
}

// prompt is shown before the line being typed.
const prompt = "> "

func newTermConsole(in, out *os.File) (*termConsole, error) {
	fd := int(in.Fd())
	state, err := term.MakeRaw(fd)
	if err != nil {
		return nil, err
	}
	c := &termConsole{
		t: term.NewTerminal(struct {
			io.Reader
			io.Writer
		}{in, out}, prompt),
		fd:      fd,
		restore: state,
		in:      make(chan string),
		stop:    make(chan struct{}),
	}
	if w, h, err := term.GetSize(int(out.Fd())); err == nil {
		_ = c.t.SetSize(w, h)
	}
	go c.read()
	return c, nil
}

func (c *termConsole) read() {
	defer close(c.in)
	for {
		line, err := c.t.ReadLine()
		if err != nil && err != term.ErrPasteIndicator {
			return // io.EOF: Ctrl-D or Ctrl-C
		}
		select {
		case c.in <- line:
		case <-c.stop:
			return
		}
	}
}

func (c *termConsole) lines() <-chan string { return c.in }

// println prints above the line being typed, which the Terminal redraws.
func (c *termConsole) println(lines ...string) {
	_, _ = c.t.Write([]byte(strings.Join(lines, "\n") + "\n"))
}

func (c *termConsole) close() {
	c.once.Do(func() {
		close(c.stop)
		_ = term.Restore(c.fd, c.restore)
	})
}
