package aggregator

import (
	"fmt"
	"log/slog"
	"strings"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/segmentio/kafka-go"

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
	// DefaultHubBatchBytes bounds one produce request (uncompressed), below
	// Kafka's default max.message.bytes of 1 MiB.
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
	// DefaultShutdownTimeout bounds the graceful shutdown.
	DefaultShutdownTimeout = 30 * time.Second
	// DefaultHubTimeout bounds one request to the hub.
	DefaultHubTimeout = 30 * time.Second
	// DefaultParallelPartitions bounds how many partitions of one chunk are
	// produced at once.
	DefaultParallelPartitions = 8
	// DefaultCheckpointTopic is the compacted hub topic that keeps the
	// latest translated checkpoint per (edge, group, partition).
	DefaultCheckpointTopic = "_edgemirror.checkpoints"
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
		ShutdownTimeout:       DefaultShutdownTimeout,
		HubTimeout:            DefaultHubTimeout,
		ParallelPartitions:    DefaultParallelPartitions,
		CheckpointTopic:       DefaultCheckpointTopic,
		SyncTopicConfigs:      true,
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
