// Package metrics exports a chat server's counters to Prometheus and
// answers health checks.
//
// Nothing here runs per message: the chat server already keeps its
// totals in atomics (chat.Server.Stats), and the collector turns one
// snapshot of them into constant metrics when Prometheus scrapes.
package metrics

import (
	"fmt"
	"log/slog"
	"net/http"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"

	"chatserver/internal/chat"
	"chatserver/internal/protocol"
)

// collector reads a chat server's Stats at scrape time.
type collector struct {
	srv *chat.Server

	connections *prometheus.Desc
	users       *prometheus.Desc
	logins      *prometheus.Desc
	delivered   *prometheus.Desc
	delayed     *prometheus.Desc
	bytesIn     *prometheus.Desc
	bytesOut    *prometheus.Desc
	replies     *prometheus.Desc
	closed      *prometheus.Desc
}

// NewCollector returns a collector of srv's counters, named chat_*.
func NewCollector(srv *chat.Server) prometheus.Collector {
	desc := func(name, help string, labels ...string) *prometheus.Desc {
		return prometheus.NewDesc("chat_"+name, help, labels, nil)
	}
	return &collector{
		srv:         srv,
		connections: desc("connections", "Connections open now, logged in or not, by transport (tcp, tls, ws: a browser's WebSocket, bot: a built-in user).", "transport"),
		users:       desc("users_logged_in", "Users logged in now."),
		logins:      desc("logins_total", "Login attempts (HELLO-FROM before login with a header the server accepts), by result.", "result"),
		delivered:   desc("messages_delivered_total", "Messages queued for their recipient (each SEND answered SEND-OK)."),
		delayed:     desc("flood_delays_total", "Times flood control held back reading a connection that sent faster than --rate."),
		bytesIn:     desc("bytes_received_total", "Bytes read from clients (for TLS, after decryption)."),
		bytesOut:    desc("bytes_sent_total", "Bytes written to clients (for TLS, before encryption)."),
		replies:     desc("replies_total", "Lines sent to clients, by reply; DELIVERY counts pushed messages.", "reply"),
		closed:      desc("connections_closed_total", "Connections ended, by close reason.", "reason"),
	}
}

func (c *collector) Describe(ch chan<- *prometheus.Desc) {
	for _, d := range []*prometheus.Desc{c.connections, c.users, c.logins, c.delivered, c.delayed, c.bytesIn, c.bytesOut, c.replies, c.closed} {
		ch <- d
	}
}

func (c *collector) Collect(ch chan<- prometheus.Metric) {
	st := c.srv.Stats()
	metric := func(d *prometheus.Desc, t prometheus.ValueType, v float64, label ...string) {
		ch <- prometheus.MustNewConstMetric(d, t, v, label...)
	}
	for t := range chat.NumTransports {
		metric(c.connections, prometheus.GaugeValue, float64(st.ConnectionsBy[t]), t.String())
	}
	metric(c.users, prometheus.GaugeValue, float64(st.Users))
	metric(c.delivered, prometheus.CounterValue, float64(st.Delivered))
	metric(c.delayed, prometheus.CounterValue, float64(st.Delayed))
	metric(c.bytesIn, prometheus.CounterValue, float64(st.BytesReceived))
	metric(c.bytesOut, prometheus.CounterValue, float64(st.BytesSent))
	for r := range chat.NumLoginResults {
		metric(c.logins, prometheus.CounterValue, float64(st.Logins[r]), r.String())
	}
	// Every kind but ReplyUnknown, which the server never sends.
	for k := protocol.ReplyUnknown + 1; k < protocol.NumReplyKinds; k++ {
		metric(c.replies, prometheus.CounterValue, float64(st.Replies[k]), k.String())
	}
	for r := range chat.NumCloseReasons {
		metric(c.closed, prometheus.CounterValue, float64(st.Closed[r]), r.String())
	}
}

// NewHandler returns the operations endpoint of srv:
//
//	GET /metrics  srv's counters plus Go runtime and process metrics, in
//	              the Prometheus text format
//	GET /healthz  200 while srv accepts connections, 503 once Shutdown
//	              has begun
//
// The metrics live in a registry of their own, not the global one, so two
// servers in one process (as in tests) do not collide. Collection errors
// are logged to log and the metrics that could be gathered are served.
//
// extra collectors (the cluster's, say) are served with them.
func NewHandler(srv *chat.Server, log *slog.Logger, extra ...prometheus.Collector) http.Handler {
	reg := prometheus.NewRegistry()
	reg.MustRegister(
		NewCollector(srv),
		collectors.NewGoCollector(),
		collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}),
	)
	reg.MustRegister(extra...)
	mux := http.NewServeMux()
	mux.Handle("GET /metrics", promhttp.HandlerFor(reg, promhttp.HandlerOpts{
		ErrorLog:      errorLog{log},
		ErrorHandling: promhttp.ContinueOnError,
	}))
	mux.HandleFunc("GET /healthz", func(w http.ResponseWriter, _ *http.Request) {
		w.Header().Set("Content-Type", "text/plain; charset=utf-8")
		if srv.Closing() {
			w.WriteHeader(http.StatusServiceUnavailable)
			fmt.Fprintln(w, "shutting down")
			return
		}
		fmt.Fprintln(w, "ok")
	})
	return mux
}

// errorLog adapts a slog.Logger to promhttp's Logger.
type errorLog struct{ log *slog.Logger }

func (l errorLog) Println(v ...any) {
	l.log.Warn("metrics: collection failed", "err", fmt.Sprint(v...))
}

// ClusterStats are a cluster-mode server's figures.
type ClusterStats struct {
	Connected   bool   // the NATS connection is up
	Fenced      bool   // cut off from the cluster: users closed, logins refused
	CrossServer uint64 // SENDs that went to a user of another server
	Fences      uint64 // times the server cut itself off
	Resent      uint64 // frames to other servers sent again for want of an ack
	Dropped     uint64 // messages NATS dropped for this server's slow subscription
}

// clusterCollector reads ClusterStats at scrape time.
type clusterCollector struct {
	stats                                                   func() ClusterStats
	connected, fenced, crossServer, fences, resent, dropped *prometheus.Desc
}

// NewClusterCollector returns a collector of a cluster-mode server's
// figures, named chat_cluster_*.
func NewClusterCollector(stats func() ClusterStats) prometheus.Collector {
	return &clusterCollector{
		stats:       stats,
		connected:   prometheus.NewDesc("chat_cluster_nats_connected", "1 while the connection to NATS is up.", nil, nil),
		fenced:      prometheus.NewDesc("chat_cluster_fenced", "1 while this server is cut off from the cluster (its users closed, logins answered BUSY).", nil, nil),
		crossServer: prometheus.NewDesc("chat_cluster_cross_server_sends_total", "SENDs to a user of another server, through NATS.", nil, nil),
		fences:      prometheus.NewDesc("chat_cluster_fences_total", "Times this server cut itself off after it could no longer prove its users' names.", nil, nil),
		resent:      prometheus.NewDesc("chat_cluster_frames_resent_total", "Frames to other servers sent again because no acknowledgement came in time.", nil, nil),
		dropped:     prometheus.NewDesc("chat_cluster_nats_dropped_total", "Messages NATS dropped because this server's subscription fell behind (they are sent again).", nil, nil),
	}
}

func (c *clusterCollector) Describe(ch chan<- *prometheus.Desc) {
	for _, d := range []*prometheus.Desc{c.connected, c.fenced, c.crossServer, c.fences, c.resent, c.dropped} {
		ch <- d
	}
}

func (c *clusterCollector) Collect(ch chan<- prometheus.Metric) {
	st := c.stats()
	b := func(v bool) float64 {
		if v {
			return 1
		}
		return 0
	}
	ch <- prometheus.MustNewConstMetric(c.connected, prometheus.GaugeValue, b(st.Connected))
	ch <- prometheus.MustNewConstMetric(c.fenced, prometheus.GaugeValue, b(st.Fenced))
	ch <- prometheus.MustNewConstMetric(c.crossServer, prometheus.CounterValue, float64(st.CrossServer))
	ch <- prometheus.MustNewConstMetric(c.fences, prometheus.CounterValue, float64(st.Fences))
	ch <- prometheus.MustNewConstMetric(c.resent, prometheus.CounterValue, float64(st.Resent))
	ch <- prometheus.MustNewConstMetric(c.dropped, prometheus.CounterValue, float64(st.Dropped))
}
