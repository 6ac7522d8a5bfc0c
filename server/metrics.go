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
	sessions prometheus.Gauge
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
		sessions: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "keyhole_active_sessions", Help: "Sessions currently connected.",
		}),
	}
	m.Registry.MustRegister(m.calls, m.latency, m.sessions)
	return m
}

func (m *Metrics) observe(tool, decision string, d time.Duration) {
	if m == nil {
		return
	}
	m.calls.WithLabelValues(tool, decision).Inc()
	m.latency.WithLabelValues(decision).Observe(d.Seconds())
}

func (m *Metrics) sessionDelta(n float64) {
	if m == nil {
		return
	}
	m.sessions.Add(n)
}
