package failover

import (
	"context"
	"errors"
	"fmt"

	"github.com/segmentio/kafka-go"

	"github.com/edgemirror/edgemirror/internal/committed"
	"github.com/edgemirror/edgemirror/internal/kafkautil"
	"github.com/edgemirror/edgemirror/internal/provenance"
)

// probeBytes bounds one fetch of the binary search. A broker answers at
// least one whole batch whatever the bound (KIP-74).
const probeBytes = 256 << 10

// Source is one source partition of one edge.
type Source struct {
	Edge      string
	Topic     string
	Partition int32
}

func (s Source) String() string { return fmt.Sprintf("%s:%s/%d", s.Edge, s.Topic, s.Partition) }

func (s Source) matches(o provenance.Origin) bool {
	return o.Edge == s.Edge && o.Topic == s.Topic && o.Partition == s.Partition
}

// Translation is where a source offset lands in the hub.
type Translation struct {
	HubTopic     string `json:"hub_topic"`
	HubPartition int32  `json:"hub_partition"`
	// SourceOffset is the offset asked for.
	SourceOffset int64 `json:"source_offset"`
	// HubOffset is where a consumer that had consumed everything below
	// SourceOffset at the edge continues on the hub.
	HubOffset int64 `json:"hub_offset"`
	// Found is true when a record of the source at or after SourceOffset
	// is in the hub: HubOffset is that record's offset and FoundSource its
	// source offset (SourceOffset itself when that record is there).
	// Otherwise HubOffset is the hub partition's end.
	Found       bool  `json:"found"`
	FoundSource int64 `json:"found_source_offset"`
	// HubStart and HubEnd are the partition's log start and last stable
	// offset when it was read.
	HubStart int64 `json:"hub_start"`
	HubEnd   int64 `json:"hub_end"`
}

// ErrNoHubPartition is returned when the hub topic or partition does not
// exist: nothing of the source was mirrored yet.
var ErrNoHubPartition = errors.New("hub partition does not exist")

// hit is one hub record of the source.
type hit struct {
	hub, src int64
}

// Translate returns the hub offset of the source record at offset, or of the
// first later record of the source present in the hub, by binary search over
// the provenance headers of hubTopic's partition src.Partition. from is a
// lower bound of the answer's hub offset known to the caller (the
// translation of a smaller source offset), or 0.
func Translate(ctx context.Context, cl *kafka.Client, hubTopic string, src Source, offset, from int64) (Translation, error) {
	t := Translation{HubTopic: hubTopic, HubPartition: src.Partition, SourceOffset: offset, FoundSource: -1}
	if offset < 0 {
		return t, fmt.Errorf("translate %s offset %d: offsets are not negative", src, offset)
	}
	first, end, err := bounds(ctx, cl, hubTopic, src.Partition)
	if err != nil {
		return t, err
	}
	t.HubStart, t.HubEnd = first, end
	lo, hi := max(first, from), end
	if lo > hi {
		lo = first
	}
	var best hit
	found := false
	for lo < hi {
		mid := lo + (hi-lo)/2
		h, ok, err := next(ctx, cl, hubTopic, src, mid, end)
		if err != nil {
			return t, err
		}
		switch {
		case !ok:
			hi = mid
		case h.src >= offset:
			best, found = h, true
			hi = mid
		default:
			lo = h.hub + 1
		}
	}
	if found {
		t.Found, t.HubOffset, t.FoundSource = true, best.hub, best.src
	} else {
		t.HubOffset = end
	}
	return t, nil
}

// bounds returns a hub partition's log start offset and last stable offset.
func bounds(ctx context.Context, cl *kafka.Client, topic string, partition int32) (first, end int64, err error) {
	first, end, err = kafkautil.Offsets(ctx, cl, topic, partition, kafka.ReadCommitted)
	if err != nil {
		if errors.Is(err, kafka.UnknownTopicOrPartition) {
			return 0, 0, fmt.Errorf("%s/%d: %w", topic, partition, ErrNoHubPartition)
		}
		return 0, 0, err
	}
	return first, end, nil
}

// next returns the first committed record of src at hub offset at or after
// start and before end.
func next(ctx context.Context, cl *kafka.Client, topic string, src Source, start, end int64) (hit, bool, error) {
	var h hit
	found := false
	err := committed.Read(ctx, cl, topic, src.Partition, start, end, committed.Options{MaxBytes: probeBytes, KeysOnly: true},
		func(r *committed.Record) error {
			o, ok := provenance.Parse(r.Headers)
			if !ok || !src.matches(o) {
				return nil
			}
			h, found = hit{hub: r.Offset, src: o.Offset}, true
			return committed.ErrStop
		})
	if err != nil {
		return hit{}, false, fmt.Errorf("read hub %s/%d at %d: %w", topic, src.Partition, start, err)
	}
	return h, found, nil
}

// Tail is the last record of a source in its hub partition.
type Tail struct {
	// HubOffset and SourceOffset of the last record of the source; both -1
	// when the partition holds none.
	HubOffset    int64
	SourceOffset int64
	HubEnd       int64
}

// LastRecord returns the last committed record of src in the hub partition,
// reading the tail backwards in growing windows.
func LastRecord(ctx context.Context, cl *kafka.Client, hubTopic string, src Source) (Tail, error) {
	first, end, err := bounds(ctx, cl, hubTopic, src.Partition)
	if err != nil {
		return Tail{}, err
	}
	tail := Tail{HubOffset: -1, SourceOffset: -1, HubEnd: end}
	window := int64(32)
	for stop := end; stop > first; window *= 4 {
		start := max(first, stop-window)
		err := committed.Read(ctx, cl, hubTopic, src.Partition, start, stop, committed.Options{MaxBytes: probeBytes, KeysOnly: true},
			func(r *committed.Record) error {
				if o, ok := provenance.Parse(r.Headers); ok && src.matches(o) {
					tail.HubOffset, tail.SourceOffset = r.Offset, o.Offset
				}
				return nil
			})
		if err != nil {
			return Tail{}, fmt.Errorf("read tail of hub %s/%d: %w", hubTopic, src.Partition, err)
		}
		if tail.HubOffset >= 0 {
			return tail, nil
		}
		stop = start
	}
	return tail, nil
}
