package aggregator

import (
	"github.com/prometheus/client_golang/prometheus"

	"github.com/edgemirror/edgemirror/internal/promutil"
)

const namespace = "edgemirror"

// metrics are the aggregator's collectors, named edgemirror_aggregator_*.
type metrics struct {
	chunks          *prometheus.CounterVec
	written         prometheus.Counter
	duplicates      prometheus.Counter
	produceErrors   prometheus.Counter
	produceDuration prometheus.Histogram
	applyDuration   prometheus.Histogram
	derivations     prometheus.Counter
	lost            *prometheus.CounterVec
	receivedBytes   prometheus.Counter
	edges           prometheus.Gauge

	heartbeats         *prometheus.CounterVec
	fleetReadErrors    prometheus.Counter
	fleetWriteErrors   prometheus.Counter
	fleetWriteDuration prometheus.Histogram

	collectors promutil.Set
}

func newMetrics() *metrics {
	m := &metrics{
		chunks: prometheus.NewCounterVec(prometheus.CounterOpts{Namespace: namespace, Subsystem: "aggregator",
			Name: "chunks_total", Help: "Chunk requests answered, by HTTP status code."}, []string{"code"}),
		written: prometheus.NewCounter(prometheus.CounterOpts{Namespace: namespace, Subsystem: "aggregator",
			Name: "records_written_total", Help: "Records written to the hub and acknowledged (acks=all)."}),
		duplicates: prometheus.NewCounter(prometheus.CounterOpts{Namespace: namespace, Subsystem: "aggregator",
			Name: "records_duplicate_total", Help: "Records dropped because the hub already had them."}),
		produceErrors: prometheus.NewCounter(prometheus.CounterOpts{Namespace: namespace, Subsystem: "aggregator",
			Name: "produce_errors_total", Help: "Failed produce requests to the hub."}),
		produceDuration: prometheus.NewHistogram(prometheus.HistogramOpts{Namespace: namespace, Subsystem: "aggregator",
			Name: "produce_duration_seconds", Help: "Duration of one produce request to the hub.",
			Buckets: prometheus.ExponentialBuckets(0.001, 2, 16)}),
		applyDuration: prometheus.NewHistogram(prometheus.HistogramOpts{Namespace: namespace, Subsystem: "aggregator",
			Name: "chunk_apply_duration_seconds", Help: "Time to apply one chunk to the hub.",
			Buckets: prometheus.ExponentialBuckets(0.001, 2, 16)}),
		derivations: prometheus.NewCounter(prometheus.CounterOpts{Namespace: namespace, Subsystem: "aggregator",
			Name: "watermark_derivations_total", Help: "Watermarks read back from the hub's provenance headers."}),
		lost: prometheus.NewCounterVec(prometheus.CounterOpts{Namespace: namespace, Subsystem: "aggregator",
			Name: "reported_lost_records_total", Help: "Records agents reported lost, by edge and reason."}, []string{"edge", "reason"}),
		receivedBytes: prometheus.NewCounter(prometheus.CounterOpts{Namespace: namespace, Subsystem: "aggregator",
			Name: "chunk_bytes_received_total", Help: "Chunk frame bytes received."}),
		edges: prometheus.NewGauge(prometheus.GaugeOpts{Namespace: namespace, Subsystem: "aggregator",
			Name: "edges", Help: "Edges seen since start."}),
		heartbeats: prometheus.NewCounterVec(prometheus.CounterOpts{Namespace: namespace, Subsystem: "aggregator",
			Name: "heartbeats_total", Help: "Heartbeats received, by result (ok, invalid, unavailable)."}, []string{"result"}),
		fleetReadErrors: prometheus.NewCounter(prometheus.CounterOpts{Namespace: namespace, Subsystem: "aggregator",
			Name: "fleet_read_errors_total", Help: "Failed reads of the status and events topics."}),
		fleetWriteErrors: prometheus.NewCounter(prometheus.CounterOpts{Namespace: namespace, Subsystem: "aggregator",
			Name: "fleet_write_errors_total", Help: "Failed writes to the status and events topics."}),
		fleetWriteDuration: prometheus.NewHistogram(prometheus.HistogramOpts{Namespace: namespace, Subsystem: "aggregator",
			Name: "fleet_write_duration_seconds", Help: "Duration of one write to the status or events topic.",
			Buckets: prometheus.ExponentialBuckets(0.001, 2, 16)}),
	}
	m.collectors = promutil.Set{m.chunks, m.written, m.duplicates, m.produceErrors, m.produceDuration,
		m.applyDuration, m.derivations, m.lost, m.receivedBytes, m.edges,
		m.heartbeats, m.fleetReadErrors, m.fleetWriteErrors, m.fleetWriteDuration}
	return m
}

func (m *metrics) register(reg prometheus.Registerer) error { return m.collectors.Register(reg) }

func (m *metrics) unregister(reg prometheus.Registerer) { m.collectors.Unregister(reg) }
