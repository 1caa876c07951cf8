package agent

import (
	"strconv"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/edgemirror/edgemirror/internal/promutil"
)

const namespace = "edgemirror"

// metrics are the agent's collectors, named edgemirror_agent_*.
type metrics struct {
	recordsRead    prometheus.Counter
	skipped        *prometheus.CounterVec
	lost           *prometheus.CounterVec
	fetchErrors    prometheus.Counter
	partitions     prometheus.Gauge
	highWatermark  *prometheus.GaugeVec
	lag            *prometheus.GaugeVec
	chunksBuilt    prometheus.Counter
	rawBytes       prometheus.Counter
	frameBytes     prometheus.Counter
	chunksSent     prometheus.Counter
	recordsAcked   prometheus.Counter
	sendErrors     *prometheus.CounterVec
	inflight       prometheus.Gauge
	wireBytes      *prometheus.CounterVec
	linkUp         prometheus.Gauge
	sendDuration   prometheus.Histogram
	lossesReported prometheus.Counter
	// topicConfigReports counts topics reported to the aggregator by
	// result (synced, refused, error, ignored).
	topicConfigReports *prometheus.CounterVec
	rpo                prometheus.Gauge
	backlogRecords     prometheus.Gauge
	backlogBytes       prometheus.Gauge
	bufferFill         prometheus.Gauge
	heartbeats         *prometheus.CounterVec
	heartbeatBytes     *prometheus.CounterVec
	// rolled-back buffers and stranded epochs (resume.go, epoch.go) and new
	// source incarnations (incarnation.go)
	rollbacks       prometheus.Counter
	stranded        prometheus.Gauge
	strandedRecords prometheus.Gauge
	incarnations    *prometheus.GaugeVec

	collectors promutil.Set
}

func newMetrics() *metrics {
	m := &metrics{
		recordsRead: prometheus.NewCounter(prometheus.CounterOpts{Namespace: namespace, Subsystem: "agent",
			Name: "records_read_total", Help: "Committed records read from the edge cluster and put in chunks."}),
		skipped: prometheus.NewCounterVec(prometheus.CounterOpts{Namespace: namespace, Subsystem: "agent",
			Name: "records_skipped_total", Help: "Records read but not shipped, by reason (aborted, control, provenance)."}, []string{"reason"}),
		lost: prometheus.NewCounterVec(prometheus.CounterOpts{Namespace: namespace, Subsystem: "agent",
			Name: "records_lost_total", Help: "Offsets lost by an explicit policy, by reason."}, []string{"reason"}),
		fetchErrors: prometheus.NewCounter(prometheus.CounterOpts{Namespace: namespace, Subsystem: "agent",
			Name: "fetch_errors_total", Help: "Failed fetch requests to the edge cluster."}),
		partitions: prometheus.NewGauge(prometheus.GaugeOpts{Namespace: namespace, Subsystem: "agent",
			Name: "partitions", Help: "Edge partitions being mirrored."}),
		highWatermark: prometheus.NewGaugeVec(prometheus.GaugeOpts{Namespace: namespace, Subsystem: "agent",
			Name: "edge_last_stable_offset", Help: "Last stable offset of each edge partition at the last fetch."}, []string{"topic", "partition"}),
		lag: prometheus.NewGaugeVec(prometheus.GaugeOpts{Namespace: namespace, Subsystem: "agent",
			Name: "edge_lag_records", Help: "Offsets between the last stable offset and the agent's next offset."}, []string{"topic", "partition"}),
		chunksBuilt: prometheus.NewCounter(prometheus.CounterOpts{Namespace: namespace, Subsystem: "agent",
			Name: "chunks_built_total", Help: "Chunks compressed and written to the buffer."}),
		rawBytes: prometheus.NewCounter(prometheus.CounterOpts{Namespace: namespace, Subsystem: "agent",
			Name: "chunk_raw_bytes_total", Help: "Uncompressed payload bytes of the chunks built."}),
		frameBytes: prometheus.NewCounter(prometheus.CounterOpts{Namespace: namespace, Subsystem: "agent",
			Name: "chunk_frame_bytes_total", Help: "Compressed frame bytes of the chunks built."}),
		chunksSent: prometheus.NewCounter(prometheus.CounterOpts{Namespace: namespace, Subsystem: "agent",
			Name: "chunks_acked_total", Help: "Chunks acknowledged by the aggregator."}),
		recordsAcked: prometheus.NewCounter(prometheus.CounterOpts{Namespace: namespace, Subsystem: "agent",
			Name: "records_acked_total", Help: "Records in chunks acknowledged by the aggregator."}),
		sendErrors: prometheus.NewCounterVec(prometheus.CounterOpts{Namespace: namespace, Subsystem: "agent",
			Name: "chunk_send_errors_total", Help: "Failed chunk uploads, by class (network, retryable, auth, conflict, rejected, unacknowledged, and resume requests before them under network: an answer not proven to come from the aggregator)."}, []string{"class"}),
		inflight: prometheus.NewGauge(prometheus.GaugeOpts{Namespace: namespace, Subsystem: "agent",
			Name: "chunks_inflight", Help: "Chunks being uploaded now."}),
		wireBytes: prometheus.NewCounterVec(prometheus.CounterOpts{Namespace: namespace, Subsystem: "agent",
			Name: "wire_bytes_total", Help: "Bytes on the connection to the aggregator, by direction (sent, received)."}, []string{"direction"}),
		linkUp: prometheus.NewGauge(prometheus.GaugeOpts{Namespace: namespace, Subsystem: "agent",
			Name: "link_up", Help: "1 when the last exchange with the aggregator succeeded, else 0."}),
		sendDuration: prometheus.NewHistogram(prometheus.HistogramOpts{Namespace: namespace, Subsystem: "agent",
			Name: "chunk_send_duration_seconds", Help: "Time from sending a chunk to its acknowledgement.",
			Buckets: prometheus.ExponentialBuckets(0.005, 2, 16)}),
		lossesReported: prometheus.NewCounter(prometheus.CounterOpts{Namespace: namespace, Subsystem: "agent",
			Name: "loss_ranges_reported_total", Help: "Loss ranges delivered to the aggregator."}),
		topicConfigReports: prometheus.NewCounterVec(prometheus.CounterOpts{Namespace: namespace, Subsystem: "agent",
			Name: "topic_config_reports_total", Help: "Edge topic settings reported to the aggregator, per topic, by result (synced, refused, error, ignored)."}, []string{"result"}),
		rpo: prometheus.NewGauge(prometheus.GaugeOpts{Namespace: namespace, Subsystem: "agent",
			Name: "rpo_seconds", Help: "Age of the oldest buffered record not yet acknowledged by the aggregator (0 when nothing is pending), at the last heartbeat."}),
		backlogRecords: prometheus.NewGauge(prometheus.GaugeOpts{Namespace: namespace, Subsystem: "agent",
			Name: "backlog_records", Help: "Records in the buffer not yet acknowledged by the aggregator, at the last heartbeat."}),
		backlogBytes: prometheus.NewGauge(prometheus.GaugeOpts{Namespace: namespace, Subsystem: "agent",
			Name: "backlog_bytes", Help: "Chunk frame bytes in the buffer not yet acknowledged, at the last heartbeat."}),
		bufferFill: prometheus.NewGauge(prometheus.GaugeOpts{Namespace: namespace, Subsystem: "agent",
			Name: "buffer_fill_ratio", Help: "Used part of the buffer's budget (0 to 1), at the last heartbeat."}),
		heartbeats: prometheus.NewCounterVec(prometheus.CounterOpts{Namespace: namespace, Subsystem: "agent",
			Name: "heartbeats_total", Help: "Heartbeats sent, by result (delivered, failed)."}, []string{"result"}),
		heartbeatBytes: prometheus.NewCounterVec(prometheus.CounterOpts{Namespace: namespace, Subsystem: "agent",
			Name: "heartbeat_wire_bytes_total", Help: "Bytes on the heartbeat connection, by direction (sent, received); also counted in wire_bytes_total."}, []string{"direction"}),
		rollbacks: prometheus.NewCounter(prometheus.CounterOpts{Namespace: namespace, Subsystem: "agent",
			Name: "buffer_rollbacks_total", Help: "Times the buffer was found rolled back (the aggregator had seen its next sequence numbers) and moved past them."}),
		stranded: prometheus.NewGauge(prometheus.GaugeOpts{Namespace: namespace, Subsystem: "agent",
			Name: "buffer_stranded", Help: "1 while the aggregator refuses this buffer's epoch (another buffer of the edge id took over); an operator must act."}),
		strandedRecords: prometheus.NewGauge(prometheus.GaugeOpts{Namespace: namespace, Subsystem: "agent",
			Name: "buffer_stranded_records", Help: "Records held by the stranded buffer when it was found stranded."}),
		incarnations: prometheus.NewGaugeVec(prometheus.GaugeOpts{Namespace: namespace, Subsystem: "agent",
			Name: "source_incarnation_conflict", Help: "1 for an edge partition held back because it is a new incarnation of one the hub already holds."}, []string{"topic", "partition"}),
	}
	m.collectors = promutil.Set{m.recordsRead, m.skipped, m.lost, m.fetchErrors, m.partitions,
		m.highWatermark, m.lag, m.chunksBuilt, m.rawBytes, m.frameBytes, m.chunksSent, m.recordsAcked,
		m.sendErrors, m.inflight, m.wireBytes, m.linkUp, m.sendDuration, m.lossesReported, m.topicConfigReports,
		m.rpo, m.backlogRecords, m.backlogBytes, m.bufferFill, m.heartbeats, m.heartbeatBytes,
		m.rollbacks, m.stranded, m.strandedRecords, m.incarnations}
	return m
}

func (m *metrics) register(reg prometheus.Registerer) error { return m.collectors.Register(reg) }

func (m *metrics) unregister(reg prometheus.Registerer) { m.collectors.Unregister(reg) }

func itoa(p int32) string { return strconv.FormatInt(int64(p), 10) }
