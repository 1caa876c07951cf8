package failover

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/segmentio/kafka-go"
)

// ParseDateTime parses a --to-datetime value the way Kafka's
// kafka-consumer-groups does: YYYY-MM-DDTHH:mm:SS with optional .sss
// milliseconds and an optional zone (Z, +hh:mm, -hh:mm, +hhmm or +hh); no
// zone means UTC.
func ParseDateTime(s string) (time.Time, error) {
	date, clock, ok := strings.Cut(s, "T")
	if !ok || date == "" {
		return time.Time{}, fmt.Errorf("parse date-time %q: want YYYY-MM-DDTHH:mm:SS[.sss][Z|+hh:mm], e.g. 2026-12-01T10:00:00Z", s)
	}
	if !strings.ContainsAny(clock, "Z+-") {
		s += "Z"
	}
	for _, layout := range []string{
		"2006-01-02T15:04:05.000Z07:00", "2006-01-02T15:04:05Z07:00",
		"2006-01-02T15:04:05.000Z0700", "2006-01-02T15:04:05Z0700",
		"2006-01-02T15:04:05.000Z07", "2006-01-02T15:04:05Z07",
	} {
		if t, err := time.Parse(layout, s); err == nil {
			return t, nil
		}
	}
	return time.Time{}, fmt.Errorf("parse date-time %q: want YYYY-MM-DDTHH:mm:SS[.sss][Z|+hh:mm], e.g. 2026-12-01T10:00:00Z", s)
}

// OffsetsForTime returns, for each partition, the offset of the first record
// whose timestamp is at or after t, or the partition's end when there is
// none: the conventions of kafka-consumer-groups --to-datetime.
func OffsetsForTime(ctx context.Context, cl *kafka.Client, topic string, partitions []int32, t time.Time) (map[int32]int64, error) {
	reqs := make([]kafka.OffsetRequest, 0, 2*len(partitions))
	for _, p := range partitions {
		reqs = append(reqs, kafka.TimeOffsetOf(int(p), t))
	}
	res, err := cl.ListOffsets(ctx, &kafka.ListOffsetsRequest{Topics: map[string][]kafka.OffsetRequest{topic: reqs},
		IsolationLevel: kafka.ReadCommitted})
	if err != nil {
		return nil, fmt.Errorf("list offsets of %s at %s: %w", topic, t.Format(time.RFC3339Nano), err)
	}
	out := make(map[int32]int64, len(partitions))
	for _, po := range res.Topics[topic] {
		if po.Error != nil {
			return nil, fmt.Errorf("list offsets of %s/%d at %s: %w", topic, po.Partition, t.Format(time.RFC3339Nano), po.Error)
		}
		off := int64(-1)
		for o := range po.Offsets {
			if o >= 0 && (off < 0 || o < off) {
				off = o
			}
		}
		if off >= 0 {
			out[int32(po.Partition)] = off
		}
	}
	for _, p := range partitions {
		if _, ok := out[p]; ok {
			continue
		}
		// No record at or after t: the end, as Kafka's tool does.
		_, end, err := bounds(ctx, cl, topic, p)
		if err != nil {
			return nil, err
		}
		out[p] = end
	}
	return out, nil
}

// Partitions returns the partition numbers of a topic.
func Partitions(ctx context.Context, cl *kafka.Client, topic string) ([]int32, error) {
	md, err := cl.Metadata(ctx, &kafka.MetadataRequest{Topics: []string{topic}})
	if err != nil {
		return nil, fmt.Errorf("describe topic %s: %w", topic, err)
	}
	for _, t := range md.Topics {
		if t.Name != topic {
			continue
		}
		if t.Error != nil {
			if errors.Is(t.Error, kafka.UnknownTopicOrPartition) {
				return nil, fmt.Errorf("topic %s: %w", topic, ErrNoHubPartition)
			}
			return nil, fmt.Errorf("describe topic %s: %w", topic, t.Error)
		}
		out := make([]int32, 0, len(t.Partitions))
		for _, p := range t.Partitions {
			out = append(out, int32(p.ID))
		}
		return out, nil
	}
	return nil, fmt.Errorf("topic %s: %w", topic, ErrNoHubPartition)
}

// Topics returns the names of a cluster's topics, internal ones left out.
func Topics(ctx context.Context, cl *kafka.Client) ([]string, error) {
	md, err := cl.Metadata(ctx, &kafka.MetadataRequest{})
	if err != nil {
		return nil, fmt.Errorf("list topics: %w", err)
	}
	var out []string
	for _, t := range md.Topics {
		if t.Internal || t.Error != nil {
			continue
		}
		out = append(out, t.Name)
	}
	return out, nil
}
