package wire

import (
	"errors"
	"fmt"
	"time"
	"unicode/utf8"
)

// PathCheckpoints accepts POST with a JSON CheckpointReport: the committed
// offsets of edge consumer groups, for the aggregator to translate into hub
// offsets. The answer is CheckpointResponse (200) or ErrorResponse.
const PathCheckpoints = "/v1/checkpoints"

// ContentEncodingZstd is the Content-Encoding of a zstd-compressed
// CheckpointReport body. A receiver accepts it and uncompressed bodies; it
// decodes at most MaxJSONBytes.
const ContentEncodingZstd = "zstd"

// Bounds of a CheckpointReport. A sender splits larger reports; a receiver
// rejects them with 413.
const (
	// MaxCheckpointPartitions bounds the partitions of one report (about
	// 100 bytes of JSON each, well below MaxJSONBytes).
	MaxCheckpointPartitions = 5000
	// MaxGroupIDLen bounds a consumer group id, in bytes.
	MaxGroupIDLen = 255
)

// ErrInvalidCheckpoint is wrapped by CheckpointReport.Validate.
var ErrInvalidCheckpoint = errors.New("invalid checkpoint report")

// CheckpointReport is the body of a PathCheckpoints request.
type CheckpointReport struct {
	Groups []GroupCheckpoint `json:"groups"`
}

// GroupCheckpoint is one edge consumer group's committed offsets.
type GroupCheckpoint struct {
	Group string `json:"group"`
	// ReadAt is when the agent read the offsets from the edge cluster.
	ReadAt     time.Time             `json:"read_at"`
	Partitions []PartitionCheckpoint `json:"partitions"`
}

// PartitionCheckpoint is a group's committed offset on one source
// partition.
type PartitionCheckpoint struct {
	Topic     string `json:"topic"`
	Partition int32  `json:"partition"`
	// Offset is the committed offset: the next record the group consumes.
	Offset int64 `json:"offset"`
	// EdgeLast is the offset of the partition's last committed record when
	// the offsets were read, -1 when it has none.
	EdgeLast int64 `json:"edge_last"`
}

// CheckpointResponse answers a successful PathCheckpoints request, sent
// after every checkpoint is stored in the hub.
type CheckpointResponse struct {
	Partitions int `json:"partitions"` // checkpoints stored
	Exact      int `json:"exact"`      // of which the hub already had a record at or after the offset
}

// Validate checks every field of a report. Errors wrap ErrInvalidCheckpoint.
func (r *CheckpointReport) Validate() error {
	n := 0
	for _, g := range r.Groups {
		if g.Group == "" || len(g.Group) > MaxGroupIDLen || !utf8.ValidString(g.Group) {
			return fmt.Errorf("group id %.40q: 1 to %d bytes of UTF-8: %w", g.Group, MaxGroupIDLen, ErrInvalidCheckpoint)
		}
		if g.ReadAt.IsZero() {
			return fmt.Errorf("group %s: read_at missing: %w", g.Group, ErrInvalidCheckpoint)
		}
		for _, p := range g.Partitions {
			if err := ValidTopicName(p.Topic); err != nil {
				return fmt.Errorf("group %s: %w: %w", g.Group, ErrInvalidCheckpoint, err)
			}
			if p.Partition < 0 || p.Offset < 0 || p.EdgeLast < -1 {
				return fmt.Errorf("group %s: %s/%d: partition, offset must not be negative, edge_last at least -1: %w",
					g.Group, p.Topic, p.Partition, ErrInvalidCheckpoint)
			}
		}
		n += len(g.Partitions)
	}
	if n > MaxCheckpointPartitions {
		return fmt.Errorf("%d partitions, at most %d in one report: %w", n, MaxCheckpointPartitions, ErrInvalidCheckpoint)
	}
	return nil
}
