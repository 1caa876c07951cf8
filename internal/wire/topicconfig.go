package wire

import (
	"fmt"
	"slices"
)

// Topic configuration sync: the agent tells the aggregator the topic-level
// overrides of each mirrored edge topic, so that hub topics keep the nature
// of their source (a compacted edge topic becomes a compacted hub topic).
// docs/protocol.md, section 3.7, describes the exchange.

// PathTopicConfigs accepts POST with a JSON TopicConfigReport as the body.
// The answer is TopicConfigResponse (200) or ErrorResponse.
const PathTopicConfigs = "/v1/topic-configs"

// SyncedTopicConfigs are the topic configs carried from an edge topic to
// its hub topic, sorted. Nothing else is carried: not replication or ISR
// settings (the hub has its own cluster size), not message.timestamp.type
// (the aggregator sets CreateTime so that source timestamps are kept), not
// throttles, not unclean.leader.election.enable.
var SyncedTopicConfigs = []string{
	"cleanup.policy",
	"compression.type",
	"delete.retention.ms",
	"max.compaction.lag.ms",
	"max.message.bytes",
	"min.cleanable.dirty.ratio",
	"min.compaction.lag.ms",
	"retention.bytes",
	"retention.ms",
	"segment.ms",
}

// IsSyncedTopicConfig reports whether name is one of SyncedTopicConfigs.
func IsSyncedTopicConfig(name string) bool {
	_, ok := slices.BinarySearch(SyncedTopicConfigs, name)
	return ok
}

// Bounds of a TopicConfigReport, checked by the receiver.
const (
	// MaxTopicConfigTopics bounds the topics of one report; a sender with
	// more splits them over several requests.
	MaxTopicConfigTopics = 1000
	// MaxTopicConfigValueLen bounds one config value.
	MaxTopicConfigValueLen = 256
)

// TopicConfigReport is the body of a PathTopicConfigs request.
type TopicConfigReport struct {
	Topics []TopicConfig `json:"topics"`
}

// TopicConfig is the complete set of synced overrides of one edge topic at
// the time it was read. A key missing from Configs means the edge topic
// uses its broker's default for it: the hub topic then uses the hub's.
type TopicConfig struct {
	Topic      string            `json:"topic"`
	Partitions int32             `json:"partitions"` // the source's partition count
	Configs    map[string]string `json:"configs"`    // only SyncedTopicConfigs keys
}

// Validate checks what a receiver must not trust: the topic name, the
// partition count, and that every key is a synced config with a value of
// sane length.
func (t *TopicConfig) Validate() error {
	if err := ValidTopicName(t.Topic); err != nil {
		return err
	}
	if t.Partitions < 1 {
		return fmt.Errorf("topic %s: partitions must be at least 1, got %d", t.Topic, t.Partitions)
	}
	for k, v := range t.Configs {
		if !IsSyncedTopicConfig(k) {
			return fmt.Errorf("topic %s: config %q is not synced (allowed: %v)", t.Topic, k, SyncedTopicConfigs)
		}
		if v == "" || len(v) > MaxTopicConfigValueLen {
			return fmt.Errorf("topic %s: config %s: value must be 1-%d bytes, got %d", t.Topic, k, MaxTopicConfigValueLen, len(v))
		}
	}
	return nil
}

// TopicConfigResponse answers a PathTopicConfigs request: one result per
// reported topic, in the order of the report.
type TopicConfigResponse struct {
	Topics []TopicConfigResult `json:"topics"`
}

// TopicConfigResult says what the aggregator did with one reported topic.
// A topic is in sync when Error is empty and Refused is empty; otherwise the
// agent reports it again at its next sync.
type TopicConfigResult struct {
	Topic    string `json:"topic"`
	HubTopic string `json:"hub_topic,omitempty"`
	// Ignored is true when the aggregator does not sync topic configs
	// (--sync-topic-configs=false); the agent need not report again.
	Ignored bool `json:"ignored,omitempty"`
	// Error is set when the hub could not be asked or changed at all (hub
	// unavailable): nothing was decided.
	Error string `json:"error,omitempty"`
	// Refused lists the settings the hub refused.
	Refused []RefusedTopicConfig `json:"refused,omitempty"`
}

// RefusedTopicConfig is one setting the hub refused to take.
type RefusedTopicConfig struct {
	Key   string `json:"key"`
	Value string `json:"value,omitempty"` // empty: removing the key was refused
	Error string `json:"error"`
}
