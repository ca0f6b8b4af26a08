//go:build linux

package main

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"go.uber.org/goleak"

	"chatserver/internal/chat"
	"chatserver/internal/chat/chattest"
	"chatserver/internal/protocol"
)

func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m)
}

// startChat starts a chat server on 127.0.0.1 for up to maxUsers users,
// without flood control (the bench sends faster than any client may), and
// stops it when the test ends.
func startChat(t *testing.T, maxUsers int) string {
	t.Helper()
	return chattest.Start(t, func(c *chat.Config) {
		c.MaxUsers, c.MaxConns = maxUsers, maxUsers+8
		c.Rate = 0
	}).Addr
}

// runJSON runs the bench with --json and decodes its result into res.
func runJSON(t *testing.T, res any, args ...string) error {
	t.Helper()
	var stdout, stderr bytes.Buffer
	err := run(context.Background(), append(args, "--json"), &stdout, &stderr)
	if jerr := json.Unmarshal(stdout.Bytes(), res); jerr != nil {
		t.Fatalf("run %v: %v; output %q: %v", args, err, stdout.String(), jerr)
	}
	return err
}

func TestLoadAgainstChatServer(t *testing.T) {
	addr := startChat(t, 64)
	tests := []struct {
		shape           string
		n, m, receivers int
	}{
		{"pairs", 4, 3000, 4},
		{"fanin", 6, 2000, 1},
	}
	for _, tc := range tests {
		t.Run(tc.shape, func(t *testing.T) {
			var res loadResult
			err := runJSON(t, &res, tc.shape, "--addr", addr, "-n", strconv.Itoa(tc.n), "-m", strconv.Itoa(tc.m),
				"--window", "16", "--size", "100", "--timeout", "20s", "--pid", strconv.Itoa(os.Getpid()))
			if err != nil {
				t.Fatalf("run: %v (%+v)", err, res)
			}
			want := int64(tc.n * tc.m)
			if !res.OK || res.Sent != want || res.Delivered != want || res.Receivers != tc.receivers {
				t.Errorf("got %+v, want ok with %d sent and delivered to %d receivers", res, want, tc.receivers)
			}
			if res.Missing != 0 || res.Duplicate != 0 || res.OutOfOrder != 0 {
				t.Errorf("missing %d, duplicate %d, out of order %d; want none", res.Missing, res.Duplicate, res.OutOfOrder)
			}
			if res.SendOKs == nil || *res.SendOKs != want {
				t.Errorf("SEND-OKs %v, want %d", res.SendOKs, want)
			}
			if res.MsgsPerSec <= 0 || res.P50us <= 0 || res.P999us < res.P99us || res.P99us < res.P50us {
				t.Errorf("implausible rate or latencies: %+v", res)
			}
			if res.ServerCPUus == nil || res.ServerRSS == nil || *res.ServerRSS <= 0 {
				t.Errorf("--pid given but no server CPU or RSS: %+v", res)
			}
		})
	}
}

func TestConnsAgainstChatServer(t *testing.T) {
	const n = 40
	addr := startChat(t, n+1)
	var res connsResult
	if err := runJSON(t, &res, "conns", "--addr", addr, "-n", strconv.Itoa(n), "--src-addrs", "3", "--settle", "100ms",
		"--pid", strconv.Itoa(os.Getpid()), "--timeout", "20s"); err != nil {
		t.Fatalf("run: %v (%+v)", err, res)
	}
	if !res.OK || res.Opened != n || res.ListUsers == nil || *res.ListUsers != n+1 || res.RSSPerConn == nil || res.Settle != 0.1 {
		t.Errorf("got %+v, want %d opened, LIST with %d users, RSS per connection after 0.1 s idle", res, n, n+1)
	}
}

// TestLoadAgainstNATS runs both shapes against a real nats-server, when
// one is installed (bench/compare.sh installs it).
func TestLoadAgainstNATS(t *testing.T) {
	addr, pid := startNATS(t)
	for _, shape := range []string{"pairs", "fanin"} {
		var res loadResult
		err := runJSON(t, &res, shape, "--target", "nats", "--addr", addr, "-n", "3", "-m", "2000",
			"--timeout", "20s", "--pid", strconv.Itoa(pid))
		if err != nil || !res.OK || res.Delivered != 6000 || res.SendOKs != nil || res.ServerCPUus == nil {
			t.Errorf("%s: run = %v, %+v; want ok, 6000 delivered, no SEND-OK count, server CPU", shape, err, res)
		}
	}
	var res connsResult
	if err := runJSON(t, &res, "conns", "--target", "nats", "--addr", addr, "-n", "20", "--settle", "0", "--timeout", "20s"); err != nil || !res.OK {
		t.Errorf("conns: run = %v, %+v; want ok", err, res)
	}
}

// startNATS starts nats-server on a random port of 127.0.0.1, or skips
// the test if it is not installed, and stops it when the test ends.
func startNATS(t *testing.T) (addr string, pid int) {
	path, err := exec.LookPath("nats-server")
	if err != nil {
		// CI installs it (.ci/run): there the comparison must run.
		const why = "nats-server is not installed (apt-get install -y nats-server)"
		if os.Getenv("CI") != "" {
			t.Fatal(why)
		}
		t.Skip(why)
	}
	cmd := exec.Command(path, "-a", "127.0.0.1", "-p", "-1")
	logs, err := cmd.StderrPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		cmd.Process.Kill()
		cmd.Wait()
	})
	const listening = "Listening for client connections on "
	found := make(chan string, 1)
	go func() {
		sc := bufio.NewScanner(logs)
		for sc.Scan() {
			if _, a, ok := strings.Cut(sc.Text(), listening); ok {
				select {
				case found <- a:
				default:
				}
			}
		}
	}()
	select {
	case addr = <-found:
		return addr, cmd.Process.Pid
	case <-time.After(10 * time.Second):
		t.Fatal("nats-server did not say where it listens within 10s")
	}
	return "", 0
}

// TestConnsReportsBusy runs conns against a server too small for it.
func TestConnsReportsBusy(t *testing.T) {
	addr := startChat(t, 3)
	var res connsResult
	err := runJSON(t, &res, "conns", "--addr", addr, "-n", "10", "--settle", "0", "--timeout", "20s")
	if !errors.Is(err, errChecksFailed) || res.OK || !strings.Contains(res.Error, "BUSY") {
		t.Errorf("run = %v, %+v; want checks failed with BUSY", err, res)
	}
}

// TestTimeoutReportsPartialResults loads a server that logs users in and
// then never delivers: the run must stop at --timeout, fail, and say so.
func TestTimeoutReportsPartialResults(t *testing.T) {
	addr := startSilentServer(t)
	var res loadResult
	start := time.Now()
	err := runJSON(t, &res, "pairs", "--addr", addr, "-n", "2", "-m", "1000", "--timeout", "300ms")
	if !errors.Is(err, errChecksFailed) {
		t.Errorf("run = %v, want errChecksFailed", err)
	}
	if res.OK || !strings.Contains(res.Error, "timed out") || res.Sent != 2*64 || res.Delivered != 0 || res.Missing != 2000 {
		t.Errorf("got %+v, want a timed-out run with one window sent per sender and nothing delivered", res)
	}
	if d := time.Since(start); d > 5*time.Second {
		t.Errorf("run took %v after a 300ms timeout", d)
	}
}

// startSilentServer accepts chat logins, then reads and ignores
// everything.
func startSilentServer(t *testing.T) string {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	var wg sync.WaitGroup
	var mu sync.Mutex
	var conns []net.Conn
	wg.Go(func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			mu.Lock()
			conns = append(conns, c)
			mu.Unlock()
			wg.Go(func() {
				r := bufio.NewReader(c)
				line, _ := r.ReadString('\n')
				name := strings.TrimSuffix(strings.TrimPrefix(line, "HELLO-FROM "), "\n")
				c.Write(protocol.AppendHello(nil, name))
				for {
					if _, err := r.Discard(1); err != nil {
						return
					}
				}
			})
		}
	})
	t.Cleanup(func() {
		ln.Close()
		mu.Lock()
		for _, c := range conns {
			c.Close()
		}
		mu.Unlock()
		wg.Wait()
	})
	return ln.Addr().String()
}

func TestNonLoopbackAddrRefused(t *testing.T) {
	for _, addr := range []string{"10.0.0.1:5378", "0.0.0.0:5378", "[2001:db8::1]:5378", "example.com:80", "localhost:5378", "127.0.0.1"} {
		var stdout bytes.Buffer
		err := run(context.Background(), []string{"pairs", "--addr", addr}, &stdout, &stdout)
		if err == nil || !strings.Contains(err.Error(), "--addr") {
			t.Errorf("--addr %s: got %v, want an --addr error", addr, err)
		}
	}
	for _, addr := range []string{"127.0.0.1:5378", "127.1.2.3:1", "[::1]:5378"} {
		if err := checkLoopback(addr); err != nil {
			t.Errorf("checkLoopback(%s) = %v, want nil", addr, err)
		}
	}
}

func TestPayloadRoundTrip(t *testing.T) {
	tests := []struct {
		sender int
		seq    int64
		ts     time.Duration
		size   int
	}{
		{0, 0, 0, minPayload},
		{7, 123456, 3 * time.Second, 64},
		{maxSenders - 1, maxMessages - 1, 1<<48 - 1, 1000},
	}
	for _, tc := range tests {
		p := appendPayload(nil, tc.sender, tc.seq, tc.ts, tc.size)
		if len(p) != tc.size || !protocol.ValidMessage(p) {
			t.Errorf("payload %q: length %d, want %d and a valid chat message", p, len(p), tc.size)
		}
		s, q, ts, ok := parsePayload(p, tc.size)
		if !ok || s != tc.sender || q != tc.seq || ts != tc.ts {
			t.Errorf("parsePayload(%q) = %d, %d, %v, %v; want %d, %d, %v", p, s, q, ts, ok, tc.sender, tc.seq, tc.ts)
		}
	}
	good := appendPayload(nil, 1, 2, 3, 64)
	for _, bad := range [][]byte{good[:63], append(bytes.Clone(good), 'x'), bytes.Replace(good, []byte("-"), []byte("+"), 1), bytes.Replace(good, []byte("0"), []byte("g"), 1)} {
		if _, _, _, ok := parsePayload(bad, 64); ok {
			t.Errorf("parsePayload(%q) ok, want a rejection", bad)
		}
	}
}

func TestPercentile(t *testing.T) {
	var samples []time.Duration
	for i := 1; i <= 1000; i++ {
		samples = append(samples, time.Duration(i))
	}
	tests := []struct {
		samples []time.Duration
		q       float64
		want    time.Duration
	}{
		{nil, 0.5, 0},
		{[]time.Duration{5}, 0.999, 5},
		{[]time.Duration{1, 2}, 0.5, 1},
		{samples, 0.5, 500},
		{samples, 0.99, 990},
		{samples, 0.999, 999},
		{samples, 1, 1000},
	}
	for _, tc := range tests {
		if got := percentile(tc.samples, tc.q); got != tc.want {
			t.Errorf("percentile(%d samples, %v) = %v, want %v", len(tc.samples), tc.q, got, tc.want)
		}
	}
}

// recorder is a sink that logs what a wire parses.
type recorder struct{ events []string }

func (r *recorder) delivery(p []byte) error {
	r.events = append(r.events, "msg "+string(p))
	return nil
}

func (r *recorder) ack() error {
	r.events = append(r.events, "ack")
	return nil
}

func (r *recorder) reply(b []byte) error {
	r.events = append(r.events, "reply "+string(b))
	return nil
}

// TestWireParseAnySplit feeds each wire a stream cut at every byte and
// checks that the frames come out the same, as a read loop would see them.
func TestWireParseAnySplit(t *testing.T) {
	tests := []struct {
		w      wire
		stream string
		want   []string
	}{
		{chatWire{}, "SEND-OK\nDELIVERY s1 hello there\nSEND-OK\n",
			[]string{"ack", "msg hello there", "ack"}},
		{natsWire{}, "MSG r1 1 5\r\nhe\r\no\r\nPING\r\nINFO {}\r\nMSG r1 1 _INBOX.x 3\r\nabc\r\n",
			[]string{"msg he\r\no", "reply PONG\r\n", "msg abc"}},
	}
	for _, tc := range tests {
		for cut := range len(tc.stream) + 1 {
			var r recorder
			buf := []byte(tc.stream[:cut])
			n, err := tc.w.parse(buf, &r)
			if err == nil {
				buf = append(buf[n:], tc.stream[cut:]...)
				n, err = tc.w.parse(buf, &r)
			}
			if err != nil || n != len(buf) || fmt.Sprint(r.events) != fmt.Sprint(tc.want) {
				t.Errorf("%s cut at %d: events %q, used %d of %d, err %v; want %q", tc.w.name(), cut, r.events, n, len(buf), err, tc.want)
			}
		}
	}
}

func TestWireParseRejects(t *testing.T) {
	tests := []struct {
		w    wire
		line string
	}{
		{chatWire{}, "BAD-DEST-USER\n"},
		{chatWire{}, "DELIVERY nobody\n"},
		{natsWire{}, "-ERR 'Slow Consumer'\r\n"},
		{natsWire{}, "MSG r1 1 x\r\n"},
	}
	for _, tc := range tests {
		if _, err := tc.w.parse([]byte(tc.line), &recorder{}); err == nil {
			t.Errorf("%s parse %q: no error", tc.w.name(), tc.line)
		}
	}
}

func TestChatFrameIsAppendSend(t *testing.T) {
	payload := appendPayload(nil, 3, 4, 5, 40)
	head, tail := chatWire{}.frame("r3", len(payload))
	got := string(head) + string(payload) + string(tail)
	if want := string(protocol.AppendSend(nil, "r3", string(payload))); got != want {
		t.Errorf("frame = %q, want %q", got, want)
	}
}

// TestPidList: --pid takes several processes (a cluster's chat servers
// and NATS) and reports their sum.
func TestPidList(t *testing.T) {
	self, parent := os.Getpid(), os.Getppid()
	opts, err := parseArgs([]string{"pairs", "--pid", fmt.Sprintf("%d,%d", self, parent)}, io.Discard)
	if err != nil || !slices.Equal(opts.pids, []int{self, parent}) {
		t.Fatalf("--pid %d,%d: %v, %v", self, parent, opts.pids, err)
	}
	for _, bad := range []string{"x", "0", "1,", "-3"} {
		if _, err := parseArgs([]string{"pairs", "--pid", bad}, io.Discard); err == nil {
			t.Errorf("--pid %q accepted", bad)
		}
	}
	one, both := sample([]int{self}), sample([]int{self, parent})
	if !one.server || !both.server || both.serverRSS <= one.serverRSS || both.serverCPU < one.serverCPU {
		t.Errorf("one process %+v, two %+v: want the two summed", one, both)
	}
}

// TestSettleMustNotBeNegative: --settle is a wait; a negative one is an
// operator's mistake, refused with a clear message.
func TestSettleMustNotBeNegative(t *testing.T) {
	_, err := parseArgs([]string{"conns", "--settle", "-1s"}, io.Discard)
	if err == nil || !strings.Contains(err.Error(), "--settle must not be negative") {
		t.Errorf("--settle -1s: %v, want refused", err)
	}
}
