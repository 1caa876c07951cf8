package agent

import (
	"context"
	"fmt"
	"log/slog"
	"regexp"
	"strings"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/edgemirror/edgemirror/buffer"
	"github.com/edgemirror/edgemirror/internal/kafkaconn"
	"github.com/edgemirror/edgemirror/internal/wire"
)

// Defaults. Each is the value a flag takes when the operator does not set it.
const (
	// DefaultTopics mirrors every topic; topics starting with "_" (Kafka's
	// internal topics and most tools' state topics) are always excluded.
	DefaultTopics = ".*"
	// DefaultBufferDir is where the buffer's bbolt file lives.
	DefaultBufferDir = "/var/lib/edgemirror"
	// DefaultBufferMaxBytes caps the buffer file on disk.
	DefaultBufferMaxBytes = 1 << 30
	// DefaultBatchBytes is the uncompressed size at which a chunk is cut.
	DefaultBatchBytes = 1 << 20
	// DefaultLinger is the longest a partial chunk waits before it is cut.
	DefaultLinger = time.Second
	// DefaultInflight is how many chunks may be on the wire at once. The
	// aggregator answers a chunk only when the hub transaction it rode in
	// committed, and commits the chunks it has in one transaction (group
	// commit), so more chunks in flight mean fewer, larger transactions and
	// a link that stays busy across a round trip.
	DefaultInflight = 8
	// DefaultMetadataInterval is how often topics and partitions are
	// re-listed; new ones are picked up within this interval.
	DefaultMetadataInterval = 10 * time.Second
	// DefaultFetchMaxBytes bounds one fetch response (and so the reader's memory).
	DefaultFetchMaxBytes = 1 << 20
	// DefaultRequestTimeout is how long an upload may go without any byte
	// of it (or of its connection) moving, and how long the aggregator's
	// answer may take after the last byte. It is not a budget for the whole
	// upload: uploads in flight share the link.
	DefaultRequestTimeout = 60 * time.Second
	// DefaultMaxBackoff is the longest wait between two attempts to ship a chunk.
	DefaultMaxBackoff = 30 * time.Second
	// DefaultLossReportInterval is how often pending loss reports are sent.
	DefaultLossReportInterval = 5 * time.Second
	// DefaultCheckpointInterval is how often the committed offsets of the
	// groups matching --sync-groups are sent to the aggregator.
	DefaultCheckpointInterval = 30 * time.Second
	// DefaultHeartbeatInterval is how often the agent reports its backlog,
	// RPO and losses to the aggregator, whatever else it is doing.
	DefaultHeartbeatInterval = 10 * time.Second
	// MaxBatchBytes is the largest chunk the agent builds (the aggregator's
	// default --max-chunk-bytes is 16MiB for the compressed frame).
	MaxBatchBytes = 16 << 20
	// MaxInflight bounds --inflight.
	MaxInflight = 256
)

// StartOffset says where a partition with no stored offset starts.
type StartOffset int

const (
	// StartEarliest reads a new partition from its log start.
	StartEarliest StartOffset = iota
	// StartLatest reads only records produced after the partition was found.
	StartLatest
)

// ParseStartOffset parses "earliest" or "latest".
func ParseStartOffset(s string) (StartOffset, error) {
	switch s {
	case "earliest":
		return StartEarliest, nil
	case "latest":
		return StartLatest, nil
	}
	return 0, fmt.Errorf("unknown start offset %q (want earliest or latest)", s)
}

func (s StartOffset) String() string {
	if s == StartLatest {
		return "latest"
	}
	return "earliest"
}

// Config is everything an Agent needs. Build it with DefaultConfig, change
// what you need, and call Validate (New does).
type Config struct {
	EdgeID        string
	Brokers       []string
	Topics        string // regular expression, matched against the whole topic name
	ExcludeTopics string // regular expression; empty excludes nothing
	StartOffset   StartOffset
	// OnNewIncarnation decides about an edge partition that is a new
	// incarnation of one the hub already holds (see incarnation.go).
	OnNewIncarnation NewIncarnation
	BufferDir        string
	BufferMaxBytes   int64
	BufferFull       buffer.Policy
	// Aggregator is one or more comma-separated base URLs, http:// or
	// https://; a host name resolving to several addresses counts as
	// several endpoints.
	Aggregator       string
	BatchBytes       int
	Linger           time.Duration
	Bandwidth        int64 // bytes/s on the wire towards the aggregator; 0 = unlimited
	Compression      wire.Codec
	CompressionLevel wire.Level
	Inflight         int
	MetadataInterval time.Duration
	FetchMaxBytes    int
	RequestTimeout   time.Duration
	MaxBackoff       time.Duration
	LossInterval     time.Duration // how often pending loss reports are sent; not a flag
	// SyncGroups is a regular expression of the edge consumer groups whose
	// committed offsets are checkpointed (whole id); empty: none.
	SyncGroups         string
	CheckpointInterval time.Duration
	// SyncTopicConfigs reports the edge topics' settings to the aggregator
	// so that hub topics keep them (topicconfig.go).
	SyncTopicConfigs bool

	// Towards the aggregator (see docs/security.md).
	TLSCA     string // --tls-ca: the aggregator's CA; empty = system roots
	TLSCert   string // --tls-cert: client certificate naming this edge
	TLSKey    string // --tls-key
	TokenFile string // --token-file: bearer token
	// Kafka is how the edge cluster is reached (--kafka-*).
	Kafka kafkaconn.Config
	// HeartbeatInterval is the time between two heartbeats.
	HeartbeatInterval time.Duration
	// Version is reported in heartbeats (the build version).
	Version string

	Logger     *slog.Logger          // nil: discard
	Registerer prometheus.Registerer // nil: no metrics registered

	// resolver replaces DNS in tests (nil: the system resolver).
	resolver func(ctx context.Context, host string) ([]string, error)
}

// DefaultConfig returns a Config with every default set. EdgeID, Brokers and
// Aggregator have no default.
func DefaultConfig() Config {
	return Config{
		Topics:           DefaultTopics,
		BufferDir:        DefaultBufferDir,
		BufferMaxBytes:   DefaultBufferMaxBytes,
		BufferFull:       buffer.PolicyBlock,
		BatchBytes:       DefaultBatchBytes,
		Linger:           DefaultLinger,
		Compression:      wire.CodecZstd,
		CompressionLevel: wire.LevelDefault,
		Inflight:         DefaultInflight,
		MetadataInterval: DefaultMetadataInterval,
		FetchMaxBytes:    DefaultFetchMaxBytes,
		RequestTimeout:   DefaultRequestTimeout,
		MaxBackoff:       DefaultMaxBackoff,
		LossInterval:     DefaultLossReportInterval,

		CheckpointInterval: DefaultCheckpointInterval,
		SyncTopicConfigs:   true,
		HeartbeatInterval:  DefaultHeartbeatInterval,
		Version:            "dev",
	}
}

// Validate checks every field and returns the first problem as a
// *ConfigError naming the flag.
func (c *Config) Validate() error {
	bad := func(field string, v any, format string, args ...any) error {
		return &ConfigError{Field: field, Value: v, Reason: fmt.Sprintf(format, args...)}
	}
	if err := wire.ValidEdgeID(c.EdgeID); err != nil {
		return bad("--edge-id", c.EdgeID, "%v", err)
	}
	if len(c.Brokers) == 0 {
		return bad("--brokers", "", "at least one edge broker address (host:port) is required")
	}
	for _, b := range c.Brokers {
		if b == "" || !strings.Contains(b, ":") {
			return bad("--brokers", b, "broker address %q must be host:port", b)
		}
	}
	if _, err := regexp.Compile(c.Topics); err != nil {
		return bad("--topics", c.Topics, "invalid regular expression: %v", err)
	}
	if _, err := regexp.Compile(c.ExcludeTopics); err != nil {
		return bad("--exclude-topics", c.ExcludeTopics, "invalid regular expression: %v", err)
	}
	if c.BufferDir == "" {
		return bad("--buffer-dir", "", "must not be empty")
	}
	if _, err := buffer.ParsePolicy(c.BufferFull.String()); err != nil {
		return bad("--buffer-full", c.BufferFull, "%v", err)
	}
	if c.BufferMaxBytes < buffer.MinMaxBytes {
		return bad("--buffer-max-bytes", c.BufferMaxBytes, "must be at least %d bytes", buffer.MinMaxBytes)
	}
	if _, err := parseAggregators(c.Aggregator); err != nil {
		return bad("--aggregator", c.Aggregator, "%v", err)
	}
	if c.BatchBytes < 1024 || c.BatchBytes > MaxBatchBytes {
		return bad("--batch-bytes", c.BatchBytes, "must be between 1KiB and %d bytes", MaxBatchBytes)
	}
	if int64(c.BatchBytes)*2 > c.BufferMaxBytes {
		return bad("--batch-bytes", c.BatchBytes, "must be at most half of --buffer-max-bytes (%d)", c.BufferMaxBytes)
	}
	// An incompressible chunk's frame is about as large as its records; it
	// must fit the largest frame the buffer stores.
	if max := (buffer.Options{MaxBytes: c.BufferMaxBytes}).MaxFrameBytes(); max > 0 && c.BatchBytes+c.BatchBytes/8 > max {
		return bad("--batch-bytes", c.BatchBytes, "is too large for --buffer-max-bytes %d (largest chunk it stores: %d bytes)", c.BufferMaxBytes, max)
	}
	if c.Linger <= 0 {
		return bad("--linger", c.Linger, "must be positive")
	}
	if c.Bandwidth < 0 {
		return bad("--bandwidth", c.Bandwidth, "must not be negative (0 = unlimited)")
	}
	if c.Bandwidth > 0 && c.Bandwidth < 1024 {
		return bad("--bandwidth", c.Bandwidth, "must be 0 (unlimited) or at least 1KiB/s")
	}
	if c.Inflight < 1 || c.Inflight > MaxInflight {
		return bad("--inflight", c.Inflight, "must be between 1 and %d", MaxInflight)
	}
	if c.MetadataInterval < 100*time.Millisecond {
		return bad("--metadata-interval", c.MetadataInterval, "must be at least 100ms")
	}
	if c.FetchMaxBytes < 64<<10 {
		return bad("--fetch-max-bytes", c.FetchMaxBytes, "must be at least 64KiB")
	}
	if c.RequestTimeout <= 0 {
		return bad("--request-timeout", c.RequestTimeout, "must be positive")
	}
	if c.MaxBackoff <= 0 {
		return bad("--max-backoff", c.MaxBackoff, "must be positive")
	}
	if c.HeartbeatInterval < 100*time.Millisecond || c.HeartbeatInterval > time.Hour {
		return bad("--heartbeat-interval", c.HeartbeatInterval, "must be between 100ms and 1h (the aggregator's --disconnect-after must be longer)")
	}
	if c.LossInterval <= 0 {
		// Not a flag: only programs embedding the agent set it.
		return bad("LossInterval", c.LossInterval, "must be positive")
	}
	if _, err := regexp.Compile(c.SyncGroups); err != nil {
		return bad("--sync-groups", c.SyncGroups, "invalid regular expression: %v", err)
	}
	if c.CheckpointInterval < time.Second {
		return bad("--checkpoint-interval", c.CheckpointInterval, "must be at least 1s")
	}
	if urls, _ := parseAggregators(c.Aggregator); (c.TLSCA != "" || c.TLSCert != "") && len(urls) > 0 && urls[0].Scheme != "https" {
		return bad("--aggregator", c.Aggregator, "--tls-ca and --tls-cert need an https:// aggregator URL")
	}
	if (c.TLSCert == "") != (c.TLSKey == "") {
		return bad("--tls-cert", c.TLSCert, "--tls-cert and --tls-key go together")
	}
	if err := c.Kafka.Validate(); err != nil {
		return bad("--kafka-tls", "", "%v", err)
	}
	if _, err := ParseNewIncarnation(c.OnNewIncarnation.String()); err != nil {
		return bad("--on-new-incarnation", c.OnNewIncarnation, "%v", err)
	}
	if _, err := wire.ParseCodec(c.Compression.String()); err != nil {
		return bad("--compression", c.Compression, "%v", err)
	}
	if _, err := wire.ParseLevel(c.CompressionLevel.String()); err != nil {
		return bad("--compression-level", c.CompressionLevel, "%v", err)
	}
	return nil
}
