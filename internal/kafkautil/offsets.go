// Package kafkautil holds the small kafka-go calls the agent and the
// aggregator both make.
package kafkautil

import (
	"context"
	"fmt"

	"github.com/segmentio/kafka-go"
)

// Offsets returns the first offset and the last offset (the high watermark,
// or the last stable offset with kafka.ReadCommitted) of one partition. A
// broker's per-partition error is wrapped, so errors.Is and errors.As see the
// kafka.Error.
func Offsets(ctx context.Context, cl *kafka.Client, topic string, partition int32, iso kafka.IsolationLevel) (first, last int64, err error) {
	res, err := cl.ListOffsets(ctx, &kafka.ListOffsetsRequest{
		Topics:         map[string][]kafka.OffsetRequest{topic: {kafka.FirstOffsetOf(int(partition)), kafka.LastOffsetOf(int(partition))}},
		IsolationLevel: iso,
	})
	if err != nil {
		return 0, 0, fmt.Errorf("list offsets of %s/%d: %w", topic, partition, err)
	}
	for _, p := range res.Topics[topic] {
		if p.Partition != int(partition) {
			continue
		}
		if p.Error != nil {
			return 0, 0, fmt.Errorf("list offsets of %s/%d: %w", topic, partition, p.Error)
		}
		return p.FirstOffset, p.LastOffset, nil
	}
	return 0, 0, fmt.Errorf("list offsets of %s/%d: partition missing from the answer", topic, partition)
}
