package aggregator

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"time"

	"github.com/cenkalti/backoff/v4"

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
//
// Two committed sources are read, and the higher wins: the provenance of
// the committed tail of the hub partition, and the watermark each
// transaction commits atomically with its records as an offset of the
// edge's consumer group (storeWatermarks). The tail alone is not enough
// where the hub removed it: retention deleting a quiet partition's records,
// or compaction removing tombstones (and the values they deleted) past
// delete.retention.ms once a commit marker followed them. The group offsets
// alone are not enough either: an operator may delete the group, and
// offsets of an empty group expire after offsets.retention.minutes.
func (w *edgeWriter) watermark(ctx context.Context, k sourceKey, dest string) (int64, error) {
	if off, ok := w.wms[k]; ok {
		return off, nil
	}
	if w.stored == nil {
		stored, err := w.h.storedWatermarks(ctx, w.prod.TransactionalID(), w.edge)
		if err != nil {
			return 0, &applyError{kind: applyUnavailable, chunk: -1,
				msg: fmt.Sprintf("read committed watermarks of edge %s: %v", w.edge, err), cause: err}
		}
		w.stored = stored
	}
	off, err := w.h.derive(ctx, k, dest)
	if err != nil {
		if errors.Is(err, kafka.UnknownTopicOrPartition) {
			w.h.forgetTopic(dest) // deleted under us: look it up again
		}
		return 0, &applyError{kind: applyUnavailable, chunk: -1, msg: fmt.Sprintf("derive watermark of %s/%d from hub %s: %v", k.topic, k.partition, dest, err), cause: err}
	}
	if st, ok := w.stored[k]; ok && st > off {
		w.h.log.Info("hub partition's tail no longer shows what was written (retention or compaction removed it); using the committed watermark",
			slog.String("edge", k.edge), slog.String("topic", k.topic), slog.Int("partition", int(k.partition)),
			slog.String("hub_topic", dest), slog.Int64("tail", off), slog.Int64("watermark", st))
		off = st
	}
	w.wms[k] = off
	w.h.m.derivations.Inc()
	w.h.log.Debug("watermark derived from hub", slog.String("edge", k.edge), slog.String("topic", k.topic),
		slog.Int("partition", int(k.partition)), slog.Int64("offset", off))
	return off, nil
}

// storedWatermark is the metadata of an offset the edge's group commits
// for a hub partition.
type storedWatermark struct {
	Version   int    `json:"v"`
	Topic     string `json:"topic"`     // source topic
	Partition int32  `json:"partition"` // source partition
	Offset    int64  `json:"offset"`    // highest source offset written or refused
}

// storeWatermarks commits, inside the transaction, one offset per written
// hub partition for the edge's consumer group (named like its transactional
// id): the source offset after the watermark (where the edge's partition
// resumes), with the source partition and the watermark as its metadata.
// It needs nothing from the produces, so it runs while they do.
func (w *edgeWriter) storeWatermarks(ctx context.Context, writes []*partWrite, marks map[sourceKey]int64) error {
	offsets := make(map[string][]kafka.TxnOffsetCommit)
	for _, pw := range writes {
		md, err := json.Marshal(storedWatermark{Version: 1, Topic: pw.key.topic, Partition: pw.key.partition, Offset: marks[pw.key]})
		if err != nil {
			return err
		}
		offsets[pw.dest] = append(offsets[pw.dest], kafka.TxnOffsetCommit{Partition: int(pw.key.partition),
			Offset: marks[pw.key] + 1, Metadata: string(md)})
	}
	return w.prod.CommitOffsets(ctx, w.prod.TransactionalID(), offsets)
}

// storedWatermarks reads the watermarks the edge's transactions committed
// as offsets of its group.
func (h *hub) storedWatermarks(ctx context.Context, group, edge string) (map[sourceKey]int64, error) {
	out := make(map[sourceKey]int64)
	b := backoff.WithContext(backoff.NewExponentialBackOff(backoff.WithInitialInterval(20*time.Millisecond),
		backoff.WithMaxElapsedTime(h.cfg.HubTimeout)), ctx)
	return out, backoff.Retry(func() error {
		clear(out)
		res, err := h.client.OffsetFetch(ctx, &kafka.OffsetFetchRequest{GroupID: group})
		if err == nil && res.Error != nil && !errors.Is(res.Error, kafka.GroupIdNotFound) {
			err = res.Error
		}
		if err != nil {
			var ke kafka.Error
			if errors.As(err, &ke) && !ke.Temporary() && !errors.Is(err, kafka.NotCoordinatorForGroup) &&
				!errors.Is(err, kafka.GroupCoordinatorNotAvailable) && !errors.Is(err, kafka.GroupLoadInProgress) {
				return backoff.Permanent(err)
			}
			return err
		}
		for _, ps := range res.Topics {
			for _, p := range ps {
				var st storedWatermark
				if p.Error != nil || p.CommittedOffset < 0 || json.Unmarshal([]byte(p.Metadata), &st) != nil || st.Version != 1 {
					continue
				}
				k := sourceKey{edge: edge, topic: st.Topic, partition: st.Partition}
				out[k] = max(out[k], st.Offset)
			}
		}
		return nil
	}, b)
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
