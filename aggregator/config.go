package aggregator

import (
	"fmt"
	"log/slog"
	"os"
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
	// DefaultSettleTime is how long a partition's high watermark must stay
	// still before its tail is trusted after an ambiguous produce error.
	DefaultSettleTime = 2 * time.Second
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
	// DefaultParallelPartitions bounds how many partitions of one chunk are
	// produced at once.
	DefaultParallelPartitions = 8
)

// Config is everything an Aggregator needs.
type Config struct {
	Listen               string
	Brokers              []string
	StateDir             string
	TopicTemplate        string
	HubReplicationFactor int // -1: the hub's default.replication.factor
	HubCompression       kafka.Compression
	MaxChunkBytes        int64
	MaxRawBytes          int64
	HubBatchBytes        int
	OrderWait            time.Duration
	SettleTime           time.Duration
	ShutdownTimeout      time.Duration
	HubTimeout           time.Duration
	ParallelPartitions   int

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
		Listen:               DefaultListen,
		StateDir:             DefaultStateDir,
		TopicTemplate:        DefaultTopicTemplate,
		HubReplicationFactor: -1,
		HubCompression:       kafka.Lz4,
		MaxChunkBytes:        DefaultMaxChunkBytes,
		MaxRawBytes:          DefaultMaxRawBytes,
		HubBatchBytes:        DefaultHubBatchBytes,
		OrderWait:            DefaultOrderWait,
		SettleTime:           DefaultSettleTime,
		ShutdownTimeout:      DefaultShutdownTimeout,
		HubTimeout:           DefaultHubTimeout,
		ParallelPartitions:   DefaultParallelPartitions,
		StatusTopic:          DefaultStatusTopic,
		EventsTopic:          DefaultEventsTopic,
		DisconnectAfter:      DefaultDisconnectAfter,
		BehindAfter:          DefaultBehindAfter,
		FleetRefresh:         DefaultFleetRefresh,
		AggregatorID:         defaultAggregatorID(),
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
	if c.SettleTime < 0 {
		return bad("--settle-time", c.SettleTime, "must not be negative")
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

// defaultAggregatorID is the host name, or "aggregator" without one.
func defaultAggregatorID() string {
	if h, err := os.Hostname(); err == nil && h != "" {
		return h
	}
	return "aggregator"
}
