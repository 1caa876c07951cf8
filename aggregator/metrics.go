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
	produceErrors   *prometheus.CounterVec
	claims          prometheus.Counter
	fenced          prometheus.Counter
	transactions    prometheus.Counter
	txnRecords      prometheus.Histogram
	txnChunks       prometheus.Histogram
	groupLinger     prometheus.Histogram
	commitDuration  prometheus.Histogram
	produceDuration prometheus.Histogram
	applyDuration   prometheus.Histogram
	derivations     prometheus.Counter
	lost            *prometheus.CounterVec
	receivedBytes   prometheus.Counter
	edges           prometheus.Gauge
	// topicConfigChanges counts hub topic settings changed, by op (set,
	// delete); topicConfigRefused those the hub refused, by key (the synced
	// keys and --hub-topic-config keys: a bounded set).
	topicConfigChanges *prometheus.CounterVec
	topicConfigRefused *prometheus.CounterVec

	heartbeats         *prometheus.CounterVec
	fleetReadErrors    prometheus.Counter
	fleetWriteErrors   prometheus.Counter
	fleetWriteDuration prometheus.Histogram
	staleEpoch         *prometheus.CounterVec
	seqReused          *prometheus.CounterVec
	incarnations       *prometheus.CounterVec

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
		produceErrors: prometheus.NewCounterVec(prometheus.CounterOpts{Namespace: namespace, Subsystem: "aggregator",
			Name: "hub_transaction_errors_total", Help: "Hub transactions that failed and were aborted, by kind (unavailable, fenced, refused)."}, []string{"kind"}),
		claims: prometheus.NewCounter(prometheus.CounterOpts{Namespace: namespace, Subsystem: "aggregator",
			Name: "hub_claims_total", Help: "Times this aggregator took an edge's transactional id (InitProducerId), fencing any other writer."}),
		fenced: prometheus.NewCounter(prometheus.CounterOpts{Namespace: namespace, Subsystem: "aggregator",
			Name: "hub_fenced_total", Help: "Transactions refused because another aggregator had taken the edge."}),
		transactions: prometheus.NewCounter(prometheus.CounterOpts{Namespace: namespace, Subsystem: "aggregator",
			Name: "hub_transactions_total", Help: "Hub transactions committed."}),
		txnRecords: prometheus.NewHistogram(prometheus.HistogramOpts{Namespace: namespace, Subsystem: "aggregator",
			Name: "hub_transaction_records", Help: "Records written per committed hub transaction.",
			Buckets: prometheus.ExponentialBuckets(1, 4, 12)}),
		txnChunks: prometheus.NewHistogram(prometheus.HistogramOpts{Namespace: namespace, Subsystem: "aggregator",
			Name: "hub_transaction_chunks", Help: "Chunks applied per hub transaction (group commit).",
			Buckets: []float64{1, 2, 3, 4, 6, 8, 12, 16, 32}}),
		groupLinger: prometheus.NewHistogram(prometheus.HistogramOpts{Namespace: namespace, Subsystem: "aggregator",
			Name: "group_linger_seconds", Help: "Time a busy edge's hub transaction waited for more of its chunks before it started (--group-linger).",
			Buckets: prometheus.ExponentialBuckets(0.0005, 2, 12)}),
		commitDuration: prometheus.NewHistogram(prometheus.HistogramOpts{Namespace: namespace, Subsystem: "aggregator",
			Name: "hub_commit_duration_seconds", Help: "Duration of committing one hub transaction (EndTxn).",
			Buckets: prometheus.ExponentialBuckets(0.001, 2, 16)}),
		produceDuration: prometheus.NewHistogram(prometheus.HistogramOpts{Namespace: namespace, Subsystem: "aggregator",
			Name: "produce_duration_seconds", Help: "Duration of one produce request to the hub.",
			Buckets: prometheus.ExponentialBuckets(0.001, 2, 16)}),
		applyDuration: prometheus.NewHistogram(prometheus.HistogramOpts{Namespace: namespace, Subsystem: "aggregator",
			Name: "chunk_apply_duration_seconds", Help: "Time to apply one chunk to the hub: the whole hub transaction it was written in (group commit).",
			Buckets: prometheus.ExponentialBuckets(0.001, 2, 16)}),
		derivations: prometheus.NewCounter(prometheus.CounterOpts{Namespace: namespace, Subsystem: "aggregator",
			Name: "watermark_derivations_total", Help: "Watermarks read back from the hub's provenance headers."}),
		lost: prometheus.NewCounterVec(prometheus.CounterOpts{Namespace: namespace, Subsystem: "aggregator",
			Name: "reported_lost_records_total", Help: "Records agents reported lost, by edge and reason."}, []string{"edge", "reason"}),
		receivedBytes: prometheus.NewCounter(prometheus.CounterOpts{Namespace: namespace, Subsystem: "aggregator",
			Name: "chunk_bytes_received_total", Help: "Chunk frame bytes received."}),
		edges: prometheus.NewGauge(prometheus.GaugeOpts{Namespace: namespace, Subsystem: "aggregator",
			Name: "edges", Help: "Edges seen since start."}),
		topicConfigChanges: prometheus.NewCounterVec(prometheus.CounterOpts{Namespace: namespace, Subsystem: "aggregator",
			Name: "topic_config_changes_total", Help: "Hub topic settings changed to follow the edge, by op (set, delete)."}, []string{"op"}),
		topicConfigRefused: prometheus.NewCounterVec(prometheus.CounterOpts{Namespace: namespace, Subsystem: "aggregator",
			Name: "topic_config_refused_total", Help: "Hub topic settings the hub refused, by key; retried at the next sync."}, []string{"key"}),
		heartbeats: prometheus.NewCounterVec(prometheus.CounterOpts{Namespace: namespace, Subsystem: "aggregator",
			Name: "heartbeats_total", Help: "Heartbeats received, by result (ok, invalid, unavailable)."}, []string{"result"}),
		fleetReadErrors: prometheus.NewCounter(prometheus.CounterOpts{Namespace: namespace, Subsystem: "aggregator",
			Name: "fleet_read_errors_total", Help: "Failed reads of the status and events topics."}),
		fleetWriteErrors: prometheus.NewCounter(prometheus.CounterOpts{Namespace: namespace, Subsystem: "aggregator",
			Name: "fleet_write_errors_total", Help: "Failed writes to the status and events topics."}),
		fleetWriteDuration: prometheus.NewHistogram(prometheus.HistogramOpts{Namespace: namespace, Subsystem: "aggregator",
			Name: "fleet_write_duration_seconds", Help: "Duration of one write to the status or events topic.",
			Buckets: prometheus.ExponentialBuckets(0.001, 2, 16)}),
		staleEpoch: prometheus.NewCounterVec(prometheus.CounterOpts{Namespace: namespace, Subsystem: "aggregator",
			Name: "stale_epoch_chunks_total", Help: "Chunks refused (409) because their buffer epoch was replaced: a stranded buffer, by edge."}, []string{"edge"}),
		seqReused: prometheus.NewCounterVec(prometheus.CounterOpts{Namespace: namespace, Subsystem: "aggregator",
			Name: "seq_reused_chunks_total", Help: "Chunks refused (409) because their seq was applied before with other content (rolled-back buffer), by edge."}, []string{"edge"}),
		incarnations: prometheus.NewCounterVec(prometheus.CounterOpts{Namespace: namespace, Subsystem: "aggregator",
			Name: "source_incarnation_conflicts_total", Help: "Watermark checks where the edge partition ends at or below what the hub holds (new incarnation of the source), by edge."}, []string{"edge"}),
	}
	m.collectors = promutil.Set{m.chunks, m.written, m.duplicates, m.produceErrors, m.produceDuration,
		m.claims, m.fenced, m.transactions, m.txnRecords, m.txnChunks, m.groupLinger, m.commitDuration,
		m.applyDuration, m.derivations, m.lost, m.receivedBytes, m.edges, m.topicConfigChanges, m.topicConfigRefused,
		m.heartbeats, m.fleetReadErrors, m.fleetWriteErrors, m.fleetWriteDuration,
		m.staleEpoch, m.seqReused, m.incarnations}
	return m
}

func (m *metrics) register(reg prometheus.Registerer) error { return m.collectors.Register(reg) }

func (m *metrics) unregister(reg prometheus.Registerer) { m.collectors.Unregister(reg) }
