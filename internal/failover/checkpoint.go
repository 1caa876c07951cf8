package failover

import (
	"context"
	"encoding/json"
	"fmt"
	"hash/fnv"
	"time"

	"github.com/segmentio/kafka-go"

	"github.com/edgemirror/edgemirror/internal/committed"
)

// DefaultCheckpointTopic is the compacted hub topic of group checkpoints.
const DefaultCheckpointTopic = "_edgemirror.checkpoints"

// CheckpointVersion is the version of the Checkpoint record's value.
const CheckpointVersion = 1

// Checkpoint is the translation of one edge consumer group's committed
// offset on one source partition, as kept in the checkpoint topic. The
// record key is CheckpointKey; the value is this struct as JSON.
type Checkpoint struct {
	Version   int    `json:"v"`
	Edge      string `json:"edge"`
	Group     string `json:"group"`
	Topic     string `json:"topic"`
	Partition int32  `json:"partition"`
	// EdgeOffset is the group's committed offset at the edge: the next
	// record it would consume.
	EdgeOffset int64 `json:"edge_offset"`
	// CommittedAt is when the agent read EdgeOffset from the edge cluster.
	CommittedAt time.Time `json:"read_at"`
	// HubTopic/HubOffset: where the group continues on the hub.
	HubTopic  string `json:"hub_topic"`
	HubOffset int64  `json:"hub_offset"`
	// Exact is true when the hub holds a record of the source at or after
	// EdgeOffset (so everything the group consumed at the edge is below
	// HubOffset). When false, HubOffset is the hub partition's end at
	// TranslatedAt and records the group consumed at the edge may still
	// arrive after it (the group would see them again, never miss one).
	Exact        bool      `json:"exact"`
	TranslatedAt time.Time `json:"translated_at"`
	// EdgeLast is the offset of the last committed record of the edge
	// partition when the agent read the group (-1: empty); HubLast is the
	// source offset of the last record of the partition in the hub when
	// the aggregator translated (-1: none).
	EdgeLast int64 `json:"edge_last"`
	HubLast  int64 `json:"hub_last"`
	// Lost is the number of records at or after EdgeOffset reported lost
	// by the agent (to the aggregator that wrote this checkpoint).
	Lost int64 `json:"lost"`
}

// NotMirrored is how many offsets of records the edge had at CommittedAt
// the hub had not at TranslatedAt: an upper bound (offsets without records,
// such as transaction markers, are counted), 0 when the hub had the edge's
// last record.
func (c *Checkpoint) NotMirrored() int64 {
	if c.EdgeLast <= c.HubLast {
		return 0
	}
	return c.EdgeLast - c.HubLast
}

// CheckpointKey is the compaction key of a checkpoint: JSON
// ["edge","group","topic",partition].
func CheckpointKey(edge, group, topic string, partition int32) []byte {
	b, _ := json.Marshal([]any{edge, group, topic, partition})
	return b
}

// CheckpointPartition is the partition of the checkpoint topic that holds
// the checkpoints of (edge, group), so that they stay in order.
func CheckpointPartition(edge, group string, partitions int) int {
	if partitions <= 1 {
		return 0
	}
	h := fnv.New32a()
	h.Write([]byte(edge))
	h.Write([]byte{0})
	h.Write([]byte(group))
	return int(h.Sum32() % uint32(partitions))
}

// DecodeCheckpoint parses a checkpoint record value.
func DecodeCheckpoint(b []byte) (Checkpoint, error) {
	var c Checkpoint
	if err := json.Unmarshal(b, &c); err != nil {
		return Checkpoint{}, fmt.Errorf("decode checkpoint: %w", err)
	}
	if c.Version != CheckpointVersion {
		return Checkpoint{}, fmt.Errorf("decode checkpoint: version %d, this program reads version %d", c.Version, CheckpointVersion)
	}
	return c, nil
}

// ReadCheckpoints returns the latest checkpoint of every partition of
// (edge, group) in the checkpoint topic, read committed.
func ReadCheckpoints(ctx context.Context, cl *kafka.Client, topic, edge, group string) (map[TopicPartition]Checkpoint, error) {
	parts, err := Partitions(ctx, cl, topic)
	if err != nil {
		return nil, fmt.Errorf("read checkpoints: %w", err)
	}
	out := make(map[TopicPartition]Checkpoint)
	p := int32(CheckpointPartition(edge, group, len(parts)))
	first, end, err := bounds(ctx, cl, topic, p)
	if err != nil {
		return nil, fmt.Errorf("read checkpoints: %w", err)
	}
	err = committed.Read(ctx, cl, topic, p, first, end, committed.Options{}, func(r *committed.Record) error {
		if r.Value == nil {
			return nil // a tombstone; keys are not parsed back
		}
		c, err := DecodeCheckpoint(r.Value)
		if err != nil || c.Edge != edge || c.Group != group {
			return nil
		}
		out[TopicPartition{Topic: c.Topic, Partition: c.Partition}] = c
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("read checkpoints from %s/%d: %w", topic, p, err)
	}
	return out, nil
}
