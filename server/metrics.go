package server

import (
	"time"

	"github.com/prometheus/client_golang/prometheus"
)

// Metrics counts calls for Prometheus. A nil *Metrics counts nothing.
type Metrics struct {
	Registry *prometheus.Registry
	calls    *prometheus.CounterVec
	latency  *prometheus.HistogramVec
}

// NewMetrics registers keyhole's metrics in a new registry.
func NewMetrics() *Metrics {
	m := &Metrics{
		Registry: prometheus.NewRegistry(),
		calls: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "keyhole_calls_total", Help: "Tool calls by tool and decision.",
		}, []string{"tool", "decision"}),
		latency: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name: "keyhole_call_duration_seconds", Help: "Tool call latency, decision included.",
			Buckets: prometheus.ExponentialBuckets(0.0005, 2, 16),
		}, []string{"decision"}),
	}
	m.Registry.MustRegister(m.calls, m.latency)
	return m
}

func (m *Metrics) observe(tool, decision string, d time.Duration) {
	if m == nil {
		return
	}
	m.calls.WithLabelValues(tool, decision).Inc()
	m.latency.WithLabelValues(decision).Observe(d.Seconds())
}

// CountSessions reports active sessions as the keyhole_active_sessions
// gauge, read from count at each scrape.
func (m *Metrics) CountSessions(count func() int) {
	m.Registry.MustRegister(prometheus.NewGaugeFunc(prometheus.GaugeOpts{
		Name: "keyhole_active_sessions", Help: "Sessions that are active (not expired, revoked or ended).",
	}, func() float64 { return float64(count()) }))
}

// CountConns reports a TCP listener's connections: those held
// (keyhole_http_connections) and those closed unread because a cap was
// reached (keyhole_http_connections_refused_total).
func (m *Metrics) CountConns(l *connLimit) {
	if m == nil {
		return
	}
	m.Registry.MustRegister(
		prometheus.NewGaugeFunc(prometheus.GaugeOpts{
			Name: "keyhole_http_connections", Help: "TCP connections the MCP listener holds.",
		}, func() float64 { return float64(l.Open()) }),
		prometheus.NewCounterFunc(prometheus.CounterOpts{
			Name: "keyhole_http_connections_refused_total", Help: "TCP connections closed unread: over the cap in total or from one address.",
		}, func() float64 { return float64(l.Refused()) }),
	)
}

// CountStoreRoundTrips reports the round trips a broker of a shared store
// made to its database (keyhole_store_round_trips_total).
func (m *Metrics) CountStoreRoundTrips(count func() uint64) {
	if m == nil {
		return
	}
	m.Registry.MustRegister(prometheus.NewCounterFunc(prometheus.CounterOpts{
		Name: "keyhole_store_round_trips_total", Help: "Round trips to the PostgreSQL store (statements sent alone, and pipelined batches).",
	}, func() float64 { return float64(count()) }))
}

// CountMCPSessions reports the MCP sessions the broker holds open as the
// keyhole_mcp_sessions gauge.
func (m *Metrics) CountMCPSessions(count func() int64) {
	if m == nil {
		return
	}
	m.Registry.MustRegister(prometheus.NewGaugeFunc(prometheus.GaugeOpts{
		Name: "keyhole_mcp_sessions", Help: "MCP sessions (initialize handshakes) the broker holds open.",
	}, func() float64 { return float64(count()) }))
}
