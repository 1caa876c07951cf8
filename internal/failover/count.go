package failover

import (
	"context"
	"fmt"

	"github.com/segmentio/kafka-go"

	"github.com/edgemirror/edgemirror/internal/committed"
	"github.com/edgemirror/edgemirror/internal/provenance"
)

// CountLimit bounds how many records one count reads. A range with more
// offsets than this is not read; its count is the offset span, an upper
// bound.
const CountLimit = 1_000_000

// Count is a number of records, exact or an upper bound.
type Count struct {
	N     int64 `json:"records"`
	Exact bool  `json:"exact"`
}

func (c Count) String() string {
	if c.Exact || c.N == 0 {
		return fmt.Sprint(c.N)
	}
	return fmt.Sprintf("<=%d", c.N)
}

// Add returns the sum of two counts.
func (c Count) Add(d Count) Count { return Count{N: c.N + d.N, Exact: c.Exact && d.Exact} }

// CountEdge counts the committed records of an edge partition with offsets
// in [start, end).
func CountEdge(ctx context.Context, cl *kafka.Client, topic string, partition int32, start, end int64) (Count, error) {
	if end <= start {
		return Count{Exact: true}, nil
	}
	if end-start > CountLimit {
		return Count{N: end - start}, nil
	}
	var n int64
	err := committed.Read(ctx, cl, topic, partition, start, end, committed.Options{KeysOnly: true}, func(*committed.Record) error {
		n++
		return nil
	})
	if err != nil {
		return Count{}, fmt.Errorf("count records of edge %s/%d in [%d, %d): %w", topic, partition, start, end, err)
	}
	return Count{N: n, Exact: true}, nil
}

// CountHub counts the committed records of src in its hub partition with hub
// offsets in [start, end) and source offsets in [from, to].
func CountHub(ctx context.Context, cl *kafka.Client, hubTopic string, src Source, start, end, from, to int64) (Count, error) {
	if end <= start || to < from {
		return Count{Exact: true}, nil
	}
	if end-start > CountLimit {
		return Count{N: end - start}, nil
	}
	var n int64
	err := committed.Read(ctx, cl, hubTopic, src.Partition, start, end, committed.Options{KeysOnly: true}, func(r *committed.Record) error {
		if o, ok := provenance.Parse(r.Headers); ok && src.matches(o) && o.Offset >= from && o.Offset <= to {
			n++
		}
		return nil
	})
	if err != nil {
		return Count{}, fmt.Errorf("count records of %s in hub %s/%d: %w", src, hubTopic, src.Partition, err)
	}
	return Count{N: n, Exact: true}, nil
}

// LastEdgeRecord returns the offset of the last committed record of an edge
// partition below end (-1 if none after start), reading backwards in
// growing windows: the partition's last stable offset may sit past
// transaction markers.
func LastEdgeRecord(ctx context.Context, cl *kafka.Client, topic string, partition int32, start, end int64) (int64, error) {
	last := int64(-1)
	window := int64(32)
	for stop := end; stop > start; window *= 4 {
		from := max(start, stop-window)
		err := committed.Read(ctx, cl, topic, partition, from, stop, committed.Options{KeysOnly: true, MaxBytes: probeBytes},
			func(r *committed.Record) error {
				last = r.Offset
				return nil
			})
		if err != nil {
			return -1, fmt.Errorf("read tail of edge %s/%d: %w", topic, partition, err)
		}
		if last >= 0 {
			return last, nil
		}
		stop = from
	}
	return -1, nil
}
