//go:build linux

package main

import (
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"math"
	"os"
	"slices"
	"strconv"
	"syscall"
	"text/tabwriter"
	"time"
)

// clockTick is the unit of /proc/PID/stat's CPU times (USER_HZ, 100 on
// every Linux the bench runs on; reading it needs sysconf, i.e. cgo).
const clockTick = 10 * time.Millisecond

// usage is the CPU time and memory of the server (every process of it:
// the chat servers and NATS of a cluster) and of the bench at one moment.
type usage struct {
	server    bool // pids were given and readable
	serverCPU time.Duration
	serverRSS int64 // bytes
	benchCPU  time.Duration
}

// sample reads the usage now; without pids only the bench's own.
func sample(pids []int) usage {
	var u usage
	var ru syscall.Rusage
	if syscall.Getrusage(syscall.RUSAGE_SELF, &ru) == nil {
		u.benchCPU = time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
	}
	u.server = len(pids) > 0
	for _, pid := range pids {
		cpu, err1 := procCPU(pid)
		rss, err2 := procRSS(pid)
		u.server = u.server && err1 == nil && err2 == nil
		u.serverCPU += cpu
		u.serverRSS += rss
	}
	return u
}

// procCPU returns the user plus system CPU time of process pid, from
// /proc/PID/stat.
func procCPU(pid int) (time.Duration, error) {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return 0, err
	}
	// The command name, field 2, is in parentheses and may hold spaces;
	// utime and stime are fields 14 and 15, so 11 and 12 after it.
	fields := bytes.Fields(b[bytes.LastIndexByte(b, ')')+1:])
	if len(fields) < 13 {
		return 0, fmt.Errorf("/proc/%d/stat: too few fields", pid)
	}
	utime, err1 := strconv.ParseInt(string(fields[11]), 10, 64)
	stime, err2 := strconv.ParseInt(string(fields[12]), 10, 64)
	if err1 != nil || err2 != nil {
		return 0, fmt.Errorf("/proc/%d/stat: bad CPU times", pid)
	}
	return time.Duration(utime+stime) * clockTick, nil
}

// procRSS returns the resident memory of process pid in bytes, from
// VmRSS in /proc/PID/status.
func procRSS(pid int) (int64, error) {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return 0, err
	}
	for line := range bytes.Lines(b) {
		if v, ok := bytes.CutPrefix(line, []byte("VmRSS:")); ok {
			kb, err := strconv.ParseInt(string(bytes.TrimSuffix(bytes.TrimSpace(v), []byte(" kB"))), 10, 64)
			if err != nil {
				return 0, fmt.Errorf("/proc/%d/status: bad VmRSS %q", pid, v)
			}
			return kb << 10, nil
		}
	}
	return 0, fmt.Errorf("/proc/%d/status: no VmRSS", pid)
}

// percentile returns the q-quantile (0 < q <= 1) of sorted by the
// nearest-rank method, or 0 for no samples.
func percentile(sorted []time.Duration, q float64) time.Duration {
	if len(sorted) == 0 {
		return 0
	}
	rank := int(math.Ceil(q * float64(len(sorted))))
	return sorted[min(max(rank, 1), len(sorted))-1]
}

// loadResult is what a pairs or fanin run measured.
type loadResult struct {
	Target     string  `json:"target"`
	Shape      string  `json:"shape"`
	Senders    int     `json:"senders"`
	Receivers  int     `json:"receivers"`
	PerSender  int64   `json:"messages_per_sender"`
	Size       int     `json:"size"`
	Window     int64   `json:"window"`
	Sent       int64   `json:"sent"`
	Delivered  int64   `json:"delivered"` // distinct
	Missing    int64   `json:"missing"`
	Duplicate  int64   `json:"duplicate"`
	OutOfOrder int64   `json:"out_of_order"`
	SendOKs    *int64  `json:"send_oks,omitempty"` // nil where the server does not ack
	Seconds    float64 `json:"seconds"`            // first send to last delivery
	MsgsPerSec float64 `json:"msgs_per_sec"`
	P50us      float64 `json:"latency_p50_us"`
	P99us      float64 `json:"latency_p99_us"`
	P999us     float64 `json:"latency_p999_us"`
	// With --pid: the server's CPU per delivered message over the run and
	// its RSS at the end.
	ServerCPUus *float64 `json:"server_cpu_us_per_msg,omitempty"`
	ServerRSS   *int64   `json:"server_rss_bytes,omitempty"`
	BenchCPUus  float64  `json:"bench_cpu_us_per_msg"`
	Error       string   `json:"error,omitempty"` // why the run stopped early
	OK          bool     `json:"ok"`
}

// result tallies the run; call it after every loop has ended.
func (l *load) result(elapsed time.Duration, before, after usage, abort error) *loadResult {
	cfg := l.cfg
	res := &loadResult{
		Target: l.w.name(), Shape: cfg.shape.name,
		Senders: cfg.senders, Receivers: len(l.receivers), PerSender: cfg.messages,
		Size: cfg.size, Window: cfg.window,
	}
	var lats []time.Duration
	var last time.Duration
	for _, r := range l.receivers {
		lats = append(lats, r.lats...)
		last = max(last, r.last)
		for _, st := range r.streams {
			if st != nil {
				res.Delivered += st.distinct
				res.Duplicate += st.dup
				res.OutOfOrder += st.ooo
			}
		}
	}
	var acks int64
	for _, s := range l.senders {
		res.Sent += s.sent
		acks += s.acks
	}
	res.Missing = int64(cfg.senders)*cfg.messages - res.Delivered
	if l.w.acked() {
		res.SendOKs = &acks
	}
	if abort == nil {
		last = elapsed // everything arrived: the run ended at the last delivery
	}
	res.Seconds = last.Seconds()
	if last > 0 {
		res.MsgsPerSec = float64(res.Delivered) / last.Seconds()
	}
	slices.Sort(lats)
	us := func(d time.Duration) float64 { return float64(d) / float64(time.Microsecond) }
	res.P50us, res.P99us, res.P999us = us(percentile(lats, 0.5)), us(percentile(lats, 0.99)), us(percentile(lats, 0.999))
	if res.Delivered > 0 {
		res.BenchCPUus = us(after.benchCPU-before.benchCPU) / float64(res.Delivered)
		if before.server && after.server {
			cpu := us(after.serverCPU-before.serverCPU) / float64(res.Delivered)
			res.ServerCPUus, res.ServerRSS = &cpu, &after.serverRSS
		}
	}
	if abort != nil {
		res.Error = abort.Error()
	}
	res.OK = abort == nil && res.Missing == 0 && res.Duplicate == 0 && res.OutOfOrder == 0 &&
		(res.SendOKs == nil || *res.SendOKs == res.Sent)
	return res
}

// writeJSON prints v as one line of JSON.
func writeJSON(w io.Writer, v any) error {
	return json.NewEncoder(w).Encode(v)
}

// writeTable prints r for a person.
func (r *loadResult) writeTable(w io.Writer) error {
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	row := func(k, format string, args ...any) { fmt.Fprintf(tw, "%s\t"+format+"\n", append([]any{k}, args...)...) }
	row("target", "%s", r.Target)
	row("shape", "%s: %d senders -> %d receivers, %d msgs each, %d-byte payload, window %d",
		r.Shape, r.Senders, r.Receivers, r.PerSender, r.Size, r.Window)
	row("delivered", "%d of %d sent in %.3fs", r.Delivered, r.Sent, r.Seconds)
	row("throughput", "%.0f msgs/s", r.MsgsPerSec)
	row("latency", "p50 %.0fµs  p99 %.0fµs  p99.9 %.0fµs", r.P50us, r.P99us, r.P999us)
	row("order", "missing %d, duplicate %d, out of order %d", r.Missing, r.Duplicate, r.OutOfOrder)
	if r.SendOKs != nil {
		row("SEND-OK", "%d for %d sent", *r.SendOKs, r.Sent)
	} else {
		row("SEND-OK", "not checked (the server does not ack)")
	}
	if r.ServerCPUus != nil {
		row("server", "%.2f µs CPU/msg, RSS %.1f MiB", *r.ServerCPUus, float64(*r.ServerRSS)/(1<<20))
	}
	row("bench", "%.2f µs CPU/msg", r.BenchCPUus)
	if r.Error != "" {
		row("stopped", "%s", r.Error)
	}
	row("checks", "%s", okText(r.OK))
	return tw.Flush()
}

func okText(ok bool) string {
	if ok {
		return "ok"
	}
	return "FAILED"
}
