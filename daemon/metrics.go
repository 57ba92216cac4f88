package daemon

import (
	"net/http"
	"strconv"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"
)

// metrics are the daemon's Prometheus series, named in the spirit of Flux's.
type metrics struct {
	reg               *prometheus.Registry
	reconcileDuration *prometheus.HistogramVec
	revisionInfo      *prometheus.GaugeVec
	rollbacks         *prometheus.CounterVec
	ingestBytes       *prometheus.CounterVec
	verifyFailures    *prometheus.CounterVec
	drift             *prometheus.CounterVec
	apiUp             atomic.Int64 // unix time of the last successful API server check
}

func newMetrics() *metrics {
	m := &metrics{
		reg: prometheus.NewRegistry(),
		reconcileDuration: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name: "ferry_reconcile_duration_seconds", Help: "Time a reconcile took, by bundle and operation (rollout, resume, sync).",
			Buckets: []float64{0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300},
		}, []string{"bundle", "operation"}),
		revisionInfo: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: "ferry_revision_info", Help: "1 for the revision a bundle runs now, with its version and state.",
		}, []string{"bundle", "revision", "version", "state"}),
		rollbacks: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "ferry_rollbacks_total", Help: "Automatic rollbacks to the last good revision.",
		}, []string{"bundle"}),
		ingestBytes: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "ferry_ingest_bytes_total", Help: "Bytes of bundles admitted, by source.",
		}, []string{"source"}),
		verifyFailures: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "ferry_verify_failures_total", Help: "Bundles refused for their signatures, by source.",
		}, []string{"source"}),
		drift: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "ferry_drift_objects_total", Help: "Objects found drifted from what was applied.",
		}, []string{"bundle"}),
	}
	m.reg.MustRegister(m.reconcileDuration, m.revisionInfo, m.rollbacks, m.ingestBytes, m.verifyFailures, m.drift,
		collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	return m
}

// refreshInfo sets ferry_revision_info for a bundle to its current revision.
func (d *Daemon) refreshInfo(name string) {
	b, err := d.st.GetBundle(name)
	if err != nil {
		return
	}
	if b.Current == 0 {
		// Nothing runs (never applied, or removed, by the API or by a removal finished
		// after a restart): no series names a revision.
		d.m.revisionInfo.DeletePartialMatch(prometheus.Labels{"bundle": name})
		return
	}
	r, err := d.st.GetRevision(name, b.Current)
	if err != nil {
		return
	}
	d.m.revisionInfo.DeletePartialMatch(prometheus.Labels{"bundle": name})
	d.m.revisionInfo.WithLabelValues(name, strconv.FormatUint(r.Revision, 10), r.Version, string(r.State)).Set(1)
}

// metricsHandler serves /metrics, /healthz (the process answers) and /readyz (the API
// server answered within the last minute).
func (d *Daemon) metricsHandler() http.Handler {
	mux := http.NewServeMux()
	mux.Handle("GET /metrics", promhttp.HandlerFor(d.m.reg, promhttp.HandlerOpts{}))
	mux.HandleFunc("GET /healthz", func(w http.ResponseWriter, _ *http.Request) { w.Write([]byte("ok\n")) })
	mux.HandleFunc("GET /readyz", func(w http.ResponseWriter, r *http.Request) {
		if time.Since(time.Unix(d.m.apiUp.Load(), 0)) > time.Minute {
			if err := d.eng.Ping(r.Context()); err != nil {
				http.Error(w, "API server unreachable: "+err.Error(), http.StatusServiceUnavailable)
				return
			}
			d.m.apiUp.Store(time.Now().Unix())
		}
		w.Write([]byte("ok\n"))
	})
	d.statusPage(mux)
	return mux
}
