package metrics_test

import (
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	dto "github.com/prometheus/client_model/go"
	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"
	"go.uber.org/goleak"

	"chatserver/internal/chat"
	"chatserver/internal/chat/chattest"
	"chatserver/internal/metrics"
)

func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m)
}

// timeout bounds every wait; tests synchronise on replies and this only
// turns a hang into a failure.
const timeout = 10 * time.Second

// startServer runs a chat server on 127.0.0.1 and its metrics handler
// on a real HTTP server. The chat server is shut down when the test ends
// unless the test did it already.
func startServer(t *testing.T, edit func(*chat.Config)) (srv *chattest.Server, addr, metricsURL string) {
	t.Helper()
	srv = chattest.Start(t, edit)
	web := httptest.NewServer(metrics.NewHandler(srv.Server, slog.New(slog.DiscardHandler)))
	t.Cleanup(web.Close) // cleanups run in reverse: the handler stops before the chat server
	return srv, srv.Addr, web.URL
}

// do sends one request line on c and returns the next line the server
// sends.
func do(c *chattest.Wire, request string) string {
	c.T.Helper()
	c.Send(request + "\n")
	return c.Line()
}

// quit closes c's side and reads the rest: the server answers a
// half-closed client in full, then ends it as client_closed.
func quit(c *chattest.Wire) {
	c.T.Helper()
	c.CloseWrite()
	c.Drain()
}

// scrape fetches /metrics and parses it.
func scrape(t *testing.T, url string) map[string]*dto.MetricFamily {
	t.Helper()
	resp, err := http.Get(url + "/metrics")
	if err != nil {
		t.Fatalf("GET /metrics: %v", err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("GET /metrics: %s", resp.Status)
	}
	parser := expfmt.NewTextParser(model.UTF8Validation)
	families, err := parser.TextToMetricFamilies(resp.Body)
	if err != nil {
		t.Fatalf("parse /metrics: %v", err)
	}
	return families
}

// samples flattens the chat_ families into "name" or "name{label=value}"
// keys; each chat metric has at most one label.
func samples(families map[string]*dto.MetricFamily) map[string]float64 {
	out := make(map[string]float64)
	for name, f := range families {
		if !strings.HasPrefix(name, "chat_") {
			continue
		}
		for _, m := range f.GetMetric() {
			key := name
			for _, l := range m.GetLabel() {
				key += "{" + l.GetName() + "=" + l.GetValue() + "}"
			}
			switch {
			case m.Gauge != nil:
				out[key] = m.GetGauge().GetValue()
			case m.Counter != nil:
				out[key] = m.GetCounter().GetValue()
			}
		}
	}
	return out
}

func TestMetricsAfterAScriptedSession(t *testing.T) {
	const maxLine = 64 << 10
	srv, addr, url := startServer(t, func(c *chat.Config) {
		c.MaxUsers = 2
		c.MaxLineBytes = maxLine
		c.MaxPendingBytes = maxLine + 128 // one big delivery fits, two do not
	})

	alice, bob, carol := chattest.Dial(t, addr), chattest.Dial(t, addr), chattest.Dial(t, addr)
	alice.Request("HELLO-FROM alice", "HELLO alice")
	bob.Request("HELLO-FROM bob", "HELLO bob")
	carol.Request("HELLO-FROM alice", "IN-USE")
	carol.Request("HELLO-FROM carol", "BUSY")
	carol.Request("HELLO-FROM a,b", "BAD-RQST-BODY")
	carol.Request("WHO", "BAD-RQST-HDR")

	alice.Request("SEND bob hi", "SEND-OK")
	if got := do(bob, "SEND alice yo"); got != "DELIVERY alice hi" {
		t.Fatalf("bob got %q, want the DELIVERY", got)
	}
	if got := bob.Line(); got != "SEND-OK" {
		t.Fatalf("bob got %q, want SEND-OK", got)
	}
	if got := alice.Line(); got != "DELIVERY bob yo" {
		t.Fatalf("alice got %q, want the DELIVERY", got)
	}
	alice.Request("SEND nobody x", "BAD-DEST-USER")
	alice.Request("LIST", "LIST-OK alice,bob")

	// Bob stops reading; alice floods him until his queue overflows and
	// he is disconnected, which she sees as BAD-DEST-USER.
	big := "SEND bob " + strings.Repeat("m", maxLine-len("SEND bob "))
	flooded := 0
	for {
		reply := do(alice, big)
		if reply == "BAD-DEST-USER" {
			break
		}
		if reply != "SEND-OK" {
			t.Fatalf("flood: reply %q", reply)
		}
		flooded++
		if flooded > 10000 {
			t.Fatal("bob was never disconnected as a slow consumer")
		}
	}
	bob.Drain() // what the server wrote before closing him still arrives

	quit(alice)
	quit(carol)
	// The server counts a connection's last bytes before it stops counting
	// the connection, so once none is open every total is final.
	chattest.Eventually(t, "every connection to close", func() bool { return srv.Stats().Connections == 0 })

	clients := []*chattest.Wire{alice, bob, carol}
	var read, written int
	for _, c := range clients {
		read += c.Read
		written += c.Written
	}
	sends := float64(2 + flooded)
	want := map[string]float64{
		"chat_connections{transport=tcp}":                       0,
		"chat_connections{transport=tls}":                       0,
		"chat_connections{transport=ws}":                        0,
		"chat_connections{transport=bot}":                       0,
		"chat_users_logged_in":                                  0,
		"chat_logins_total{result=ok}":                          2,
		"chat_logins_total{result=in_use}":                      1,
		"chat_logins_total{result=busy}":                        1,
		"chat_logins_total{result=bad_name}":                    1,
		"chat_messages_delivered_total":                         sends,
		"chat_bytes_received_total":                             float64(written),
		"chat_bytes_sent_total":                                 float64(read),
		"chat_replies_total{reply=HELLO}":                       2,
		"chat_replies_total{reply=IN-USE}":                      1,
		"chat_replies_total{reply=BUSY}":                        1,
		"chat_replies_total{reply=LIST-OK}":                     1,
		"chat_replies_total{reply=SEND-OK}":                     sends,
		"chat_replies_total{reply=BAD-DEST-USER}":               2,
		"chat_replies_total{reply=DELIVERY}":                    sends,
		"chat_replies_total{reply=BAD-RQST-HDR}":                1,
		"chat_replies_total{reply=BAD-RQST-BODY}":               1,
		"chat_connections_closed_total{reason=client_closed}":   2,
		"chat_connections_closed_total{reason=reset}":           0,
		"chat_connections_closed_total{reason=slow_consumer}":   1,
		"chat_connections_closed_total{reason=login_timeout}":   0,
		"chat_connections_closed_total{reason=server_shutdown}": 0,
		"chat_connections_closed_total{reason=conn_limit}":      0,
		"chat_connections_closed_total{reason=internal_error}":  0,
		"chat_connections_closed_total{reason=fenced}":          0,
		"chat_connections_closed_total{reason=send_unknown}":    0,
		"chat_connections_closed_total{reason=ip_limit}":        0,
		"chat_connections_closed_total{reason=flood}":           0,
		"chat_connections_closed_total{reason=tls_handshake}":   0,
		"chat_logins_total{result=ip_limit}":                    0,
		"chat_flood_delays_total":                               0,
	}
	families := scrape(t, url)
	got := samples(families)
	for k, w := range want {
		if g, ok := got[k]; !ok {
			t.Errorf("%s missing", k)
		} else if g != w {
			t.Errorf("%s = %v, want %v", k, g, w)
		}
	}
	for k, g := range got {
		if _, ok := want[k]; !ok {
			t.Errorf("unexpected sample %s = %v", k, g)
		}
	}
	for name, typ := range map[string]dto.MetricType{
		"chat_connections":              dto.MetricType_GAUGE,
		"chat_users_logged_in":          dto.MetricType_GAUGE,
		"chat_logins_total":             dto.MetricType_COUNTER,
		"chat_replies_total":            dto.MetricType_COUNTER,
		"chat_connections_closed_total": dto.MetricType_COUNTER,
		"chat_messages_delivered_total": dto.MetricType_COUNTER,
		"go_goroutines":                 dto.MetricType_GAUGE,
		"process_open_fds":              dto.MetricType_GAUGE,
		"process_cpu_seconds_total":     dto.MetricType_COUNTER,
	} {
		if f, ok := families[name]; !ok {
			t.Errorf("family %s missing", name)
		} else if f.GetType() != typ {
			t.Errorf("family %s has type %v, want %v", name, f.GetType(), typ)
		}
	}
	t.Logf("flooded %d deliveries before the slow consumer was cut off", flooded)
}

func TestGaugesFollowLiveConnections(t *testing.T) {
	_, addr, url := startServer(t, nil)
	a := chattest.Dial(t, addr)
	a.Request("HELLO-FROM alice", "HELLO alice")
	chattest.Dial(t, addr).Request("LIST", "BAD-RQST-HDR") // open, not logged in
	got := samples(scrape(t, url))
	if got["chat_connections{transport=tcp}"] != 2 || got["chat_users_logged_in"] != 1 {
		t.Errorf("tcp connections = %v, users = %v; want 2 and 1", got["chat_connections{transport=tcp}"], got["chat_users_logged_in"])
	}
}

func TestHealthz(t *testing.T) {
	srv, addr, url := startServer(t, nil)
	health := func() (int, string) {
		t.Helper()
		resp, err := http.Get(url + "/healthz")
		if err != nil {
			t.Fatalf("GET /healthz: %v", err)
		}
		defer resp.Body.Close()
		body, _ := io.ReadAll(resp.Body)
		return resp.StatusCode, strings.TrimSpace(string(body))
	}
	if code, body := health(); code != http.StatusOK || body != "ok" {
		t.Errorf("serving: /healthz = %d %q, want 200 ok", code, body)
	}

	// The handler outlives the chat server's shutdown, as in the binary,
	// where it is stopped last: a load balancer sees 503 while clients
	// drain.
	chattest.Dial(t, addr).Request("HELLO-FROM alice", "HELLO alice")
	srv.Stop()
	if code, body := health(); code != http.StatusServiceUnavailable || body != "shutting down" {
		t.Errorf("after Shutdown: /healthz = %d %q, want 503 shutting down", code, body)
	}
	got := samples(scrape(t, url))
	if got["chat_connections_closed_total{reason=server_shutdown}"] != 1 {
		t.Errorf("server_shutdown closes = %v, want 1", got["chat_connections_closed_total{reason=server_shutdown}"])
	}
}

func TestClusterMetrics(t *testing.T) {
	srv, _, _ := startServer(t, nil)
	st := metrics.ClusterStats{Connected: true, CrossServer: 7, Fences: 2}
	web := httptest.NewServer(metrics.NewHandler(srv.Server, slog.New(slog.DiscardHandler),
		metrics.NewClusterCollector(func() metrics.ClusterStats { return st })))
	defer web.Close()
	got := samples(scrape(t, web.URL))
	for k, w := range map[string]float64{
		"chat_cluster_nats_connected":           1,
		"chat_cluster_fenced":                   0,
		"chat_cluster_cross_server_sends_total": 7,
		"chat_cluster_fences_total":             2,
	} {
		if got[k] != w {
			t.Errorf("%s = %v, want %v", k, got[k], w)
		}
	}
}
