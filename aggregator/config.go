package aggregator

import (
	"fmt"
	"log/slog"
	"os"
	"strings"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/segmentio/kafka-go"

	"github.com/edgemirror/edgemirror/internal/kafkaconn"
	"github.com/edgemirror/edgemirror/internal/wire"
)

// Defaults. Each is the value a flag takes when the operator does not set it.
const (
	// DefaultListen is the address the chunk API listens on.
	DefaultListen = ":8080"
	// DefaultStateDir holds the aggregator's bbolt state file.
	DefaultStateDir = "/var/lib/edgemirror-aggregator"
	// DefaultTopicTemplate names the hub topic of an edge topic.
	DefaultTopicTemplate = "{edge}.{topic}"
	// DefaultMaxChunkBytes bounds one chunk frame as received.
	DefaultMaxChunkBytes = 16 << 20
	// DefaultMaxRawBytes bounds one chunk's decompressed payload.
	DefaultMaxRawBytes = 64 << 20
	// DefaultHubBatchBytes bounds one record batch to a hub partition
	// (uncompressed), below Kafka's default max.message.bytes of 1 MiB.
	DefaultHubBatchBytes = 512 << 10
	// DefaultOrderWait is how long a chunk that arrived ahead of its
	// predecessor waits for it before it is answered 503.
	DefaultOrderWait = 10 * time.Second
	// DefaultTransactionalIDPrefix prefixes the edge id to make the
	// transactional id of the edge's hub writes.
	DefaultTransactionalIDPrefix = "edgemirror-"
	// DefaultTransactionTimeout is the hub transaction timeout: how long
	// the hub keeps a transaction of a vanished aggregator open (and its
	// partitions' last stable offset held back) before aborting it, when no
	// other aggregator takes the edge first.
	DefaultTransactionTimeout = time.Minute
	// DefaultMaxGroupChunks bounds how many ready chunks of one edge share
	// one hub transaction.
	DefaultMaxGroupChunks = 16
	// DefaultGroupLinger is how long a busy edge's next transaction waits
	// for more of its chunks before it starts.
	DefaultGroupLinger = 10 * time.Millisecond
	// DefaultShutdownTimeout bounds the graceful shutdown.
	DefaultShutdownTimeout = 30 * time.Second
	// DefaultHubTimeout bounds one request to the hub.
	DefaultHubTimeout = 30 * time.Second
	// DefaultStatusTopic is the compacted hub topic with one status record
	// per edge: the fleet view.
	DefaultStatusTopic = "_edgemirror.status"
	// DefaultEventsTopic is the hub topic of loss events, keyed by edge.
	DefaultEventsTopic = "_edgemirror.events"
	// DefaultDisconnectAfter is how long an edge may go unheard before it is
	// shown disconnected: three default heartbeat intervals.
	DefaultDisconnectAfter = 30 * time.Second
	// DefaultBehindAfter is the RPO above which an edge is shown behind.
	DefaultBehindAfter = time.Minute
	// DefaultFleetRefresh is how often the fleet topics are read back, so
	// that what other aggregators received shows here too.
	DefaultFleetRefresh = 2 * time.Second
	// DefaultParallelPartitions bounds how many partitions of one
	// transaction are produced at once (in one produce request per leader).
	DefaultParallelPartitions = 8
	// DefaultCheckpointTopic is the compacted hub topic that keeps the
	// latest translated checkpoint per (edge, group, partition).
	DefaultCheckpointTopic = "_edgemirror.checkpoints"

	// DefaultMaxChunkRecords bounds the records of one chunk.
	DefaultMaxChunkRecords = wire.DefaultMaxRecords
	// DefaultMaxRecordBytes bounds one record's key plus value, Kafka's
	// default max.message.bytes.
	DefaultMaxRecordBytes = 1 << 20
	// DefaultMaxRecordHeaders bounds the headers of one record.
	DefaultMaxRecordHeaders = 64
	// DefaultMaxRecordHeaderBytes bounds the header keys and values of one
	// record.
	DefaultMaxRecordHeaderBytes = 64 << 10
	// DefaultMaxRequestHeaderBytes bounds an HTTP request's headers.
	DefaultMaxRequestHeaderBytes = 64 << 10
	// DefaultReadHeaderTimeout bounds reading a request's headers.
	DefaultReadHeaderTimeout = 30 * time.Second
	// DefaultReadTimeout is how long a request body may stall (no byte
	// arriving) before the request is dropped. A slow body that moves is
	// never cut.
	DefaultReadTimeout = 60 * time.Second
	// DefaultIdleTimeout closes connections idle this long.
	DefaultIdleTimeout = 5 * time.Minute
	// DefaultMaxRequests bounds the API requests handled at once.
	DefaultMaxRequests = 1024
	// DefaultMaxEdgeRequests bounds one edge's API requests in flight.
	DefaultMaxEdgeRequests = 64
	// DefaultEdgeRequestRate bounds one edge's API requests per second
	// (bursts of twice as many); 0 is unlimited.
	DefaultEdgeRequestRate = 200
	// DefaultMaxDecodedBytes bounds the memory of all chunks being received,
	// decoded and applied at once.
	DefaultMaxDecodedBytes = 512 << 20
	// DefaultMaxEdges bounds the distinct edge ids served.
	DefaultMaxEdges = 10_000
	// DefaultMaxSourcePartitions bounds the distinct (edge, topic,
	// partition) whose state the aggregator holds.
	DefaultMaxSourcePartitions = 1 << 20
)

// Config is everything an Aggregator needs.
type Config struct {
	Listen                string
	Brokers               []string
	StateDir              string
	TopicTemplate         string
	HubReplicationFactor  int // -1: the hub's default.replication.factor
	HubCompression        kafka.Compression
	MaxChunkBytes         int64
	MaxRawBytes           int64
	HubBatchBytes         int
	OrderWait             time.Duration
	TransactionalIDPrefix string
	TransactionTimeout    time.Duration
	MaxGroupChunks        int
	GroupLinger           time.Duration
	ShutdownTimeout       time.Duration
	HubTimeout            time.Duration
	ParallelPartitions    int
	// CheckpointTopic keeps the translated group checkpoints of the edges.
	CheckpointTopic string
	// SyncGroupOffsets also commits translated checkpoints to the same
	// group on the hub while that group has no active members.
	SyncGroupOffsets bool
	// SyncTopicConfigs applies the agents' topic config reports: hub
	// topics take the edge topics' synced settings (wire.SyncedTopicConfigs).
	SyncTopicConfigs bool
	// HubTopicConfigs are set on every hub topic and win over what the
	// edge says (--hub-topic-config KEY=VALUE).
	HubTopicConfigs map[string]string

	// Security (see docs/security.md).
	TLSCert               string // --tls-cert: serve HTTPS
	TLSKey                string // --tls-key
	ClientCA              string // --client-ca: verify client certificates
	EdgesFile             string // --edges-file: the edges allowed in
	InsecureAcceptAnyEdge bool   // --insecure-accept-any-edge
	Kafka                 kafkaconn.Config

	// Limits.
	MaxChunkRecords       int
	MaxRecordBytes        int64
	MaxRecordHeaders      int
	MaxRecordHeaderBytes  int64
	MaxRequestHeaderBytes int
	ReadHeaderTimeout     time.Duration
	ReadTimeout           time.Duration
	IdleTimeout           time.Duration
	MaxRequests           int
	MaxEdgeRequests       int
	EdgeRequestRate       int
	MaxDecodedBytes       int64
	MaxEdges              int
	MaxSourcePartitions   int

	// The fleet view.
	StatusTopic     string
	EventsTopic     string
	DisconnectAfter time.Duration
	BehindAfter     time.Duration
	FleetRefresh    time.Duration
	// AggregatorID names this aggregator in status records and loss events.
	AggregatorID string
	// EdgeIDs returns the edges that are expected to connect (the edges
	// file); those never heard from are shown never-seen. Nil: none.
	EdgeIDs func() []string

	Logger     *slog.Logger          // nil: discard
	Registerer prometheus.Registerer // nil: no metrics
}

// DefaultConfig returns a Config with every default set; Brokers has none.
func DefaultConfig() Config {
	return Config{
		Listen:                DefaultListen,
		StateDir:              DefaultStateDir,
		TopicTemplate:         DefaultTopicTemplate,
		HubReplicationFactor:  -1,
		HubCompression:        kafka.Lz4,
		MaxChunkBytes:         DefaultMaxChunkBytes,
		MaxRawBytes:           DefaultMaxRawBytes,
		HubBatchBytes:         DefaultHubBatchBytes,
		OrderWait:             DefaultOrderWait,
		TransactionalIDPrefix: DefaultTransactionalIDPrefix,
		TransactionTimeout:    DefaultTransactionTimeout,
		MaxGroupChunks:        DefaultMaxGroupChunks,
		GroupLinger:           DefaultGroupLinger,
		ShutdownTimeout:       DefaultShutdownTimeout,
		HubTimeout:            DefaultHubTimeout,
		ParallelPartitions:    DefaultParallelPartitions,
		CheckpointTopic:       DefaultCheckpointTopic,
		SyncTopicConfigs:      true,

		MaxChunkRecords:       DefaultMaxChunkRecords,
		MaxRecordBytes:        DefaultMaxRecordBytes,
		MaxRecordHeaders:      DefaultMaxRecordHeaders,
		MaxRecordHeaderBytes:  DefaultMaxRecordHeaderBytes,
		MaxRequestHeaderBytes: DefaultMaxRequestHeaderBytes,
		ReadHeaderTimeout:     DefaultReadHeaderTimeout,
		ReadTimeout:           DefaultReadTimeout,
		IdleTimeout:           DefaultIdleTimeout,
		MaxRequests:           DefaultMaxRequests,
		MaxEdgeRequests:       DefaultMaxEdgeRequests,
		EdgeRequestRate:       DefaultEdgeRequestRate,
		MaxDecodedBytes:       DefaultMaxDecodedBytes,
		MaxEdges:              DefaultMaxEdges,
		MaxSourcePartitions:   DefaultMaxSourcePartitions,
		StatusTopic:           DefaultStatusTopic,
		EventsTopic:           DefaultEventsTopic,
		DisconnectAfter:       DefaultDisconnectAfter,
		BehindAfter:           DefaultBehindAfter,
		FleetRefresh:          DefaultFleetRefresh,
		AggregatorID:          defaultAggregatorID(),
	}
}

// Validate checks every field and returns the first problem as a *ConfigError.
func (c *Config) Validate() error {
	bad := func(field string, v any, format string, args ...any) error {
		return &ConfigError{Field: field, Value: v, Reason: fmt.Sprintf(format, args...)}
	}
	if c.Listen == "" {
		return bad("--listen", "", "must not be empty (e.g. :8080)")
	}
	if len(c.Brokers) == 0 {
		return bad("--brokers", "", "at least one hub broker address (host:port) is required")
	}
	for _, b := range c.Brokers {
		if b == "" || !strings.Contains(b, ":") {
			return bad("--brokers", b, "broker address %q must be host:port", b)
		}
	}
	if c.StateDir == "" {
		return bad("--state-dir", "", "must not be empty")
	}
	if err := validateTemplate(c.TopicTemplate); err != nil {
		return bad("--topic-template", c.TopicTemplate, "%v", err)
	}
	if c.HubReplicationFactor == 0 || c.HubReplicationFactor < -1 || c.HubReplicationFactor > 32767 {
		return bad("--hub-replication-factor", c.HubReplicationFactor, "must be -1 (the hub's default) or between 1 and 32767")
	}
	if c.MaxChunkBytes < 64<<10 || c.MaxChunkBytes > 1<<30 {
		return bad("--max-chunk-bytes", c.MaxChunkBytes, "must be between 64KiB and 1GiB")
	}
	if c.MaxRawBytes < c.MaxChunkBytes {
		return bad("--max-raw-bytes", c.MaxRawBytes, "must be at least --max-chunk-bytes (%d)", c.MaxChunkBytes)
	}
	if c.MaxRawBytes > 2<<30 {
		return bad("--max-raw-bytes", c.MaxRawBytes, "must be at most 2GiB")
	}
	if c.HubBatchBytes < 1024 {
		return bad("--hub-batch-bytes", c.HubBatchBytes, "must be at least 1KiB")
	}
	if c.OrderWait <= 0 {
		return bad("--order-wait", c.OrderWait, "must be positive")
	}
	if len(c.TransactionalIDPrefix) > 200 {
		return bad("--transactional-id-prefix", c.TransactionalIDPrefix, "must be at most 200 characters")
	}
	if c.TransactionTimeout < time.Second || c.TransactionTimeout > 15*time.Minute {
		return bad("--transaction-timeout", c.TransactionTimeout, "must be between 1s and 15m (the hub's transaction.max.timeout.ms is 15m by default)")
	}
	if c.TransactionTimeout <= c.HubTimeout {
		return bad("--transaction-timeout", c.TransactionTimeout, "must be longer than --hub-timeout (%s), or the hub aborts transactions still being written", c.HubTimeout)
	}
	if c.MaxGroupChunks < 1 || c.MaxGroupChunks > 1024 {
		return bad("--max-group-chunks", c.MaxGroupChunks, "must be between 1 and 1024")
	}
	if c.GroupLinger < 0 || c.GroupLinger > time.Second {
		return bad("--group-linger", c.GroupLinger, "must be between 0 and 1s")
	}
	if c.ShutdownTimeout <= 0 {
		return bad("--shutdown-timeout", c.ShutdownTimeout, "must be positive")
	}
	if c.HubTimeout < time.Second {
		return bad("--hub-timeout", c.HubTimeout, "must be at least 1s")
	}
	if c.ParallelPartitions < 1 {
		return bad("--parallel-partitions", c.ParallelPartitions, "must be at least 1")
	}
	if err := wire.ValidTopicName(c.CheckpointTopic); err != nil {
		return bad("--checkpoint-topic", c.CheckpointTopic, "%v", err)
	}
	for k, v := range c.HubTopicConfigs {
		if err := validTopicConfigKey(k); err != nil {
			return bad("--hub-topic-config", k+"="+v, "%v", err)
		}
		if v == "" || len(v) > wire.MaxTopicConfigValueLen {
			return bad("--hub-topic-config", k+"="+v, "value of %s must be 1-%d characters", k, wire.MaxTopicConfigValueLen)
		}
	}
	for _, t := range []struct{ flag, v string }{{"--status-topic", c.StatusTopic}, {"--events-topic", c.EventsTopic}} {
		if err := wire.ValidTopicName(t.v); err != nil {
			return bad(t.flag, t.v, "%v", err)
		}
	}
	if c.StatusTopic == c.EventsTopic {
		return bad("--events-topic", c.EventsTopic, "must differ from --status-topic")
	}
	if c.DisconnectAfter < time.Second {
		return bad("--disconnect-after", c.DisconnectAfter, "must be at least 1s (and longer than the agents' --heartbeat-interval)")
	}
	if c.BehindAfter <= 0 {
		return bad("--behind-after", c.BehindAfter, "must be positive")
	}
	if c.FleetRefresh < 100*time.Millisecond {
		return bad("--fleet-refresh", c.FleetRefresh, "must be at least 100ms")
	}
	if len(c.AggregatorID) > 255 {
		return bad("--aggregator-id", c.AggregatorID, "must be at most 255 bytes")
	}
	if err := c.validateSecurity(); err != nil {
		return err
	}
	return c.validateLimits()
}

func (c *Config) validateSecurity() error {
	bad := func(field string, v any, format string, args ...any) error {
		return &ConfigError{Field: field, Value: v, Reason: fmt.Sprintf(format, args...)}
	}
	if (c.TLSCert == "") != (c.TLSKey == "") {
		return bad("--tls-cert", c.TLSCert, "--tls-cert and --tls-key go together")
	}
	if c.ClientCA != "" && c.TLSCert == "" {
		return bad("--client-ca", c.ClientCA, "%v", errNoTLSForCA)
	}
	if err := c.Kafka.Validate(); err != nil {
		return bad("--kafka-tls", "", "%v", err)
	}
	return c.checkExposure()
}

func (c *Config) validateLimits() error {
	bad := func(field string, v any, format string, args ...any) error {
		return &ConfigError{Field: field, Value: v, Reason: fmt.Sprintf(format, args...)}
	}
	for _, f := range []struct {
		name string
		v    int64
		min  int64
	}{
		{"--max-chunk-records", int64(c.MaxChunkRecords), 1},
		{"--max-record-bytes", c.MaxRecordBytes, 1},
		{"--max-record-headers", int64(c.MaxRecordHeaders), 0},
		{"--max-record-header-bytes", c.MaxRecordHeaderBytes, 0},
		{"--max-request-header-bytes", int64(c.MaxRequestHeaderBytes), 4 << 10},
		{"--max-requests", int64(c.MaxRequests), 1},
		{"--max-edge-requests", int64(c.MaxEdgeRequests), 1},
		{"--edge-request-rate", int64(c.EdgeRequestRate), 0},
		{"--max-edges", int64(c.MaxEdges), 1},
		{"--max-source-partitions", int64(c.MaxSourcePartitions), 1},
	} {
		if f.v < f.min {
			return bad(f.name, f.v, "must be at least %d", f.min)
		}
	}
	if c.MaxChunkRecords > wire.DefaultMaxRecords*16 {
		return bad("--max-chunk-records", c.MaxChunkRecords, "must be at most %d", wire.DefaultMaxRecords*16)
	}
	if c.MaxDecodedBytes < c.MaxChunkBytes+c.MaxRawBytes {
		return bad("--max-decoded-bytes", c.MaxDecodedBytes, "must be at least --max-chunk-bytes + --max-raw-bytes (%d), so that the largest chunk fits", c.MaxChunkBytes+c.MaxRawBytes)
	}
	if c.ReadHeaderTimeout < 100*time.Millisecond {
		return bad("--read-header-timeout", c.ReadHeaderTimeout, "must be at least 100ms")
	}
	if c.ReadTimeout < 100*time.Millisecond {
		return bad("--read-timeout", c.ReadTimeout, "must be at least 100ms")
	}
	if c.IdleTimeout < time.Second {
		return bad("--idle-timeout", c.IdleTimeout, "must be at least 1s")
	}
	return nil
}

// validTopicConfigKey checks a --hub-topic-config key: a Kafka topic config
// name, and not one edgemirror sets itself.
func validTopicConfigKey(k string) error {
	if k == "" || strings.Trim(k, "abcdefghijklmnopqrstuvwxyz0123456789.") != "" || strings.HasPrefix(k, ".") || strings.HasSuffix(k, ".") {
		return fmt.Errorf("%q is not a topic config name (lower case words joined by dots, e.g. retention.ms)", k)
	}
	if k == configTimestampType {
		return fmt.Errorf("%s is always CreateTime on hub topics, so that records keep their source timestamps", k)
	}
	return nil
}

// validateTemplate checks that a topic template uses only {edge} and
// {topic}, and that it names the source topic (else every topic of an edge
// would land in one hub topic).
func validateTemplate(t string) error {
	rest := strings.NewReplacer("{edge}", "", "{topic}", "").Replace(t)
	if strings.ContainsAny(rest, "{}") {
		return fmt.Errorf("only {edge} and {topic} may be used, got %q", t)
	}
	if !strings.Contains(t, "{topic}") {
		return fmt.Errorf("must contain {topic}, got %q", t)
	}
	// The fixed parts must be legal in a Kafka topic name.
	if err := wire.ValidTopicName(strings.NewReplacer("{edge}", "e", "{topic}", "t").Replace(t)); err != nil {
		return fmt.Errorf("has characters not allowed in a Kafka topic name: %w", err)
	}
	// Without {edge}, the edges share hub partitions, and finding an edge's
	// watermark would mean scanning whole partitions of other edges' records.
	if !strings.Contains(t, "{edge}") {
		return fmt.Errorf("must contain {edge}: hub topics shared by several edges are not supported, got %q", t)
	}
	return nil
}

// destTopic applies the template and checks the result is a legal Kafka
// topic name.
func destTopic(template, edge, topic string) (string, error) {
	name := strings.NewReplacer("{edge}", edge, "{topic}", topic).Replace(template)
	if err := wire.ValidTopicName(name); err != nil {
		return "", fmt.Errorf("hub topic for %s of edge %s: %w", topic, edge, err)
	}
	return name, nil
}

// HubTopic returns the hub topic of an edge's source topic under a topic
// template (see --topic-template), checked to be a legal Kafka topic name.
func HubTopic(template, edge, topic string) (string, error) {
	if err := validateTemplate(template); err != nil {
		return "", err
	}
	return destTopic(template, edge, topic)
}

// defaultAggregatorID is the host name, or "aggregator" without one.
func defaultAggregatorID() string {
	if h, err := os.Hostname(); err == nil && h != "" {
		return h
	}
	return "aggregator"
}
