// Package metrics collects Sigil's Prometheus metrics and serves them in
// the Prometheus text format.
//
// A Metrics is made once per process with New; the server, the HSM backend
// decorator (Backend), the audit log and the scheduler report into it. All
// its methods are safe for concurrent use. No metric carries a key name,
// an identity or any request data as a label: labels are RPC names, codes
// and operation names only, so the label sets stay small and nothing a
// caller sent appears on the metrics page.
package metrics

import (
	"net/http"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"
)

// namespace prefixes every metric of Sigil's own.
const namespace = "sigil"

// Metrics holds the metrics of one sigild process.
type Metrics struct {
	reg *prometheus.Registry

	requests        *prometheus.CounterVec
	requestDuration *prometheus.HistogramVec
	hsmDuration     *prometheus.HistogramVec
	hsmErrors       *prometheus.CounterVec
	auditBatch      prometheus.Histogram
	auditFlush      *prometheus.HistogramVec
	schedulerRuns   *prometheus.CounterVec
	schedulerTime   prometheus.Histogram
}

// latencyBuckets suit calls that take from tens of microseconds (an AES
// seal in the HSM) to seconds (RSA 4096 key generation, a stalled
// database).
var latencyBuckets = []float64{
	0.00005, 0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01,
	0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10,
}

// New returns a Metrics with every metric registered, the Go runtime's and
// the process's included.
func New() *Metrics {
	m := &Metrics{
		reg: prometheus.NewRegistry(),
		requests: prometheus.NewCounterVec(prometheus.CounterOpts{
			Namespace: namespace, Name: "requests_total",
			Help: "RPCs served, by RPC and Connect code (ok for success).",
		}, []string{"rpc", "code"}),
		requestDuration: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Namespace: namespace, Name: "request_duration_seconds",
			Help:    "Time from an RPC's arrival at the handler to its response, audit record included.",
			Buckets: latencyBuckets,
		}, []string{"rpc"}),
		hsmDuration: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Namespace: namespace, Name: "hsm_call_duration_seconds",
			Help:    "Duration of HSM backend calls, waiting for a session included, by operation.",
			Buckets: latencyBuckets,
		}, []string{"op"}),
		hsmErrors: prometheus.NewCounterVec(prometheus.CounterOpts{
			Namespace: namespace, Name: "hsm_errors_total",
			Help: "HSM backend calls that failed, by operation and kind (not_found, exists, decrypt, unavailable, invalid, canceled, other).",
		}, []string{"op", "kind"}),
		auditBatch: prometheus.NewHistogram(prometheus.HistogramOpts{
			Namespace: namespace, Name: "audit_batch_records",
			Help:    "Records written per audit log transaction.",
			Buckets: []float64{1, 2, 4, 8, 16, 32, 64, 128, 256},
		}),
		auditFlush: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Namespace: namespace, Name: "audit_flush_duration_seconds",
			Help:    "Duration of audit log transactions, by result (ok, error).",
			Buckets: latencyBuckets,
		}, []string{"result"}),
		schedulerRuns: prometheus.NewCounterVec(prometheus.CounterOpts{
			Namespace: namespace, Name: "scheduler_runs_total",
			Help: "Passes of scheduled rotation, promotion and destruction, by result (ok, error, skipped when another replica ran it).",
		}, []string{"result"}),
		schedulerTime: prometheus.NewHistogram(prometheus.HistogramOpts{
			Namespace: namespace, Name: "scheduler_run_duration_seconds",
			Help:    "Duration of scheduler passes.",
			Buckets: latencyBuckets,
		}),
	}
	m.reg.MustRegister(
		collectors.NewGoCollector(),
		collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}),
		m.requests, m.requestDuration, m.hsmDuration, m.hsmErrors,
		m.auditBatch, m.auditFlush, m.schedulerRuns, m.schedulerTime,
	)
	return m
}

// Handler serves the metrics in the Prometheus text format.
func (m *Metrics) Handler() http.Handler {
	return promhttp.HandlerFor(m.reg, promhttp.HandlerOpts{})
}

// Request records one RPC's outcome: its Connect code ("ok" for success)
// and how long it took.
func (m *Metrics) Request(rpc, code string, d time.Duration) {
	m.requests.WithLabelValues(rpc, code).Inc()
	m.requestDuration.WithLabelValues(rpc).Observe(d.Seconds())
}

// AuditBatch records one audit log transaction of n records; err is its
// result. It has the signature of the audit log's batch hook.
func (m *Metrics) AuditBatch(n int, d time.Duration, err error) {
	result := "ok"
	if err != nil {
		result = "error"
	}
	m.auditBatch.Observe(float64(n))
	m.auditFlush.WithLabelValues(result).Observe(d.Seconds())
}

// SchedulerRun records one scheduler pass: whether this replica ran it
// (another may hold the lock), how long it took and its error.
func (m *Metrics) SchedulerRun(ran bool, d time.Duration, err error) {
	result := "ok"
	switch {
	case err != nil:
		result = "error"
	case !ran:
		result = "skipped"
	}
	m.schedulerRuns.WithLabelValues(result).Inc()
	if ran {
		m.schedulerTime.Observe(d.Seconds())
	}
}

// CacheStats are the key metadata cache's counters since start.
type CacheStats struct {
	Hits, Misses, Bypasses, Invalidations uint64
}

// WatchCache exports the counters that stats returns, read at each scrape.
func (m *Metrics) WatchCache(stats func() CacheStats) {
	counter := func(name, help string, f func(CacheStats) uint64) prometheus.Collector {
		return prometheus.NewCounterFunc(prometheus.CounterOpts{Namespace: namespace, Name: name, Help: help},
			func() float64 { return float64(f(stats())) })
	}
	m.reg.MustRegister(
		counter("key_cache_hits_total", "Key metadata lookups served from memory.", func(s CacheStats) uint64 { return s.Hits }),
		counter("key_cache_misses_total", "Key metadata lookups that went to the database.", func(s CacheStats) uint64 { return s.Misses }),
		counter("key_cache_bypasses_total", "Key metadata lookups sent to the database because change notifications were not flowing.", func(s CacheStats) uint64 { return s.Bypasses }),
		counter("key_cache_invalidations_total", "Cached key entries dropped after a change.", func(s CacheStats) uint64 { return s.Invalidations }),
	)
}

// SessionStats describe the HSM session pool at one moment.
type SessionStats struct {
	InUse, Idle, Waiting, Max int
}

// WatchSessions exports the HSM session pool's state, read at each scrape.
func (m *Metrics) WatchSessions(stats func() SessionStats) {
	gauge := func(name, help string, f func(SessionStats) int) prometheus.Collector {
		return prometheus.NewGaugeFunc(prometheus.GaugeOpts{Namespace: namespace, Name: name, Help: help},
			func() float64 { return float64(f(stats())) })
	}
	m.reg.MustRegister(
		gauge("hsm_sessions_in_use", "HSM sessions serving a call.", func(s SessionStats) int { return s.InUse }),
		gauge("hsm_sessions_idle", "Open HSM sessions waiting for a call.", func(s SessionStats) int { return s.Idle }),
		gauge("hsm_sessions_waiting", "Calls waiting for an HSM session.", func(s SessionStats) int { return s.Waiting }),
		gauge("hsm_sessions_max", "Size of the HSM session pool.", func(s SessionStats) int { return s.Max }),
	)
}
