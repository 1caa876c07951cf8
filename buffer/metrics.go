package buffer

import (
	"errors"
	"fmt"

	"github.com/prometheus/client_golang/prometheus"
)

const (
	metricsNamespace = "edgemirror"
	metricsSubsystem = "buffer"
)

// metrics are the store's collectors. They always exist; they are
// registered only when Options.Registerer is not nil.
type metrics struct {
	reg        prometheus.Registerer
	registered []prometheus.Collector

	chunks         prometheus.Gauge
	payloadBytes   prometheus.Gauge
	fileBytes      prometheus.Gauge
	usedBytes      prometheus.Gauge
	budgetBytes    prometheus.Gauge
	leased         prometheus.Gauge
	pendingLosses  prometheus.Gauge
	appended       prometheus.Counter
	acked          prometheus.Counter
	droppedChunks  *prometheus.CounterVec
	droppedRecords *prometheus.CounterVec
	blockedSeconds prometheus.Counter
	fullCommits    prometheus.Counter
	commitDuration prometheus.Histogram
}

func newMetrics() *metrics {
	gauge := func(name, help string) prometheus.Gauge {
		return prometheus.NewGauge(prometheus.GaugeOpts{
			Namespace: metricsNamespace, Subsystem: metricsSubsystem, Name: name, Help: help})
	}
	counter := func(name, help string) prometheus.Counter {
		return prometheus.NewCounter(prometheus.CounterOpts{
			Namespace: metricsNamespace, Subsystem: metricsSubsystem, Name: name, Help: help})
	}
	return &metrics{
		chunks:        gauge("chunks", "Chunks stored in the buffer."),
		payloadBytes:  gauge("payload_bytes", "Bytes of chunk frames stored in the buffer."),
		fileBytes:     gauge("file_bytes", "Size of the buffer file on disk."),
		usedBytes:     gauge("used_bytes", "Accounted bytes of everything stored, with page rounding; compared against budget_bytes."),
		budgetBytes:   gauge("budget_bytes", "Bytes the store admits before the full policy applies (MaxBytes minus the bbolt reserve)."),
		leased:        gauge("leased_chunks", "Chunks handed to the shipper and not yet acknowledged or released."),
		pendingLosses: gauge("pending_losses", "Loss records not yet acknowledged by the aggregator."),
		appended:      counter("appended_chunks_total", "Chunks appended to the buffer."),
		acked:         counter("acked_chunks_total", "Chunks deleted after the aggregator applied them (Ack and DropBefore)."),
		droppedChunks: prometheus.NewCounterVec(prometheus.CounterOpts{
			Namespace: metricsNamespace, Subsystem: metricsSubsystem, Name: "dropped_chunks_total",
			Help: "Chunks deleted without being applied, by loss reason."}, []string{"reason"}),
		droppedRecords: prometheus.NewCounterVec(prometheus.CounterOpts{
			Namespace: metricsNamespace, Subsystem: metricsSubsystem, Name: "dropped_records_total",
			Help: "Records recorded as lost, by loss reason."}, []string{"reason"}),
		blockedSeconds: counter("blocked_seconds_total", "Time Append spent waiting for room."),
		fullCommits:    counter("full_commits_total", "Commits bbolt refused because the file would have grown past MaxBytes or the disk was full."),
		commitDuration: prometheus.NewHistogram(prometheus.HistogramOpts{
			Namespace: metricsNamespace, Subsystem: metricsSubsystem, Name: "commit_duration_seconds",
			Help:    "Duration of write transactions including fsync.",
			Buckets: prometheus.ExponentialBuckets(0.0005, 2, 14)}),
	}
}

func (m *metrics) all() []prometheus.Collector {
	return []prometheus.Collector{m.chunks, m.payloadBytes, m.fileBytes, m.usedBytes, m.budgetBytes,
		m.leased, m.pendingLosses, m.appended, m.acked, m.droppedChunks, m.droppedRecords,
		m.blockedSeconds, m.fullCommits, m.commitDuration}
}

// register registers every collector, or none.
func (m *metrics) register(reg prometheus.Registerer) error {
	if reg == nil {
		return nil
	}
	m.reg = reg
	for _, c := range m.all() {
		if err := reg.Register(c); err != nil {
			m.unregister()
			var are prometheus.AlreadyRegisteredError
			if errors.As(err, &are) {
				return fmt.Errorf("register buffer metrics (is another Store open on this registry?): %w", err)
			}
			return fmt.Errorf("register buffer metrics: %w", err)
		}
		m.registered = append(m.registered, c)
	}
	return nil
}

func (m *metrics) unregister() {
	for _, c := range m.registered {
		m.reg.Unregister(c)
	}
	m.registered = nil
}

// lossLabel bounds the label values of the dropped_* counters: reasons are
// kept when they look like the short constants the agent uses, else "other".
func lossLabel(reason string) string {
	if reason == "" || len(reason) > 48 {
		return "other"
	}
	for i := 0; i < len(reason); i++ {
		c := reason[i]
		if !(c >= 'a' && c <= 'z' || c >= '0' && c <= '9' || c == '-' || c == '_' || c == '.') {
			return "other"
		}
	}
	return reason
}
