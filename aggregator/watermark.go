package aggregator

import (
	"context"
	"errors"
	"fmt"
	"log/slog"

	"github.com/segmentio/kafka-go"

	"github.com/edgemirror/edgemirror/internal/committed"
	"github.com/edgemirror/edgemirror/internal/kafkautil"
	"github.com/edgemirror/edgemirror/internal/provenance"
)

// watermark returns the highest source offset of k that the hub has
// committed (-1: none), deriving it under the current claim if needed.
//
// It is derived only while this writer holds the edge's transactional id:
// the claim aborted every transaction of the edge still open, so what a
// read_committed read returns is everything the edge's writers ever
// committed, and nobody else can commit more without fencing this writer
// first (which its next produce or commit then learns).
func (w *edgeWriter) watermark(ctx context.Context, k sourceKey, dest string) (int64, error) {
	if off, ok := w.wms[k]; ok {
		return off, nil
	}
	off, err := w.h.derive(ctx, k, dest)
	if err != nil {
		if errors.Is(err, kafka.UnknownTopicOrPartition) {
			w.h.forgetTopic(dest) // deleted under us: look it up again
		}
		return 0, &applyError{kind: applyUnavailable, msg: fmt.Sprintf("derive watermark of %s/%d from hub %s: %v", k.topic, k.partition, dest, err), cause: err}
	}
	w.wms[k] = off
	w.h.m.derivations.Inc()
	w.h.log.Debug("watermark derived from hub", slog.String("edge", k.edge), slog.String("topic", k.topic),
		slog.Int("partition", int(k.partition)), slog.Int64("offset", off))
	return off, nil
}

// derive reads the committed tail of the destination partition backwards,
// in growing windows, until it finds a record whose provenance is k, and
// returns its source offset (-1 if the partition holds none). Records of
// aborted transactions are never looked at.
func (h *hub) derive(ctx context.Context, k sourceKey, dest string) (int64, error) {
	first, stable, err := kafkautil.Offsets(ctx, h.client, dest, k.partition, kafka.ReadCommitted)
	if err != nil {
		return 0, err
	}
	window := int64(16)
	end := stable
	for end > first {
		start := max(end-window, first)
		best := int64(-1)
		err := committed.Read(ctx, h.client, dest, k.partition, start, end, committed.Options{KeysOnly: true},
			func(r *committed.Record) error {
				if o, ok := provenance.Parse(r.Headers); ok && o.Edge == k.edge && o.Topic == k.topic &&
					o.Partition == k.partition && o.Offset > best {
					best = o.Offset
				}
				return nil
			})
		if err != nil {
			return 0, err
		}
		if best >= 0 {
			return best, nil
		}
		end = start
		window *= 4
	}
	return -1, nil
}
