package main

import (
	"context"
	"fmt"

	"github.com/klauspost/compress/zstd"

	"github.com/edgemirror/edgemirror/internal/wire"
)

// plainZstdRatio is the practical limit edgemirror's compression is
// compared with: the records of an edge topic as they are stored there
// (partition, offset, timestamp, key, value, headers), laid out as
// edgemirror's own raw chunk payload (wire format, no compression), cut
// into blocks of at most 1 MiB (the agent's default --batch-bytes) and each
// block compressed on its own with plain zstd at the agent's default level.
// It returns raw/compressed, raw counted as the agent's
// edgemirror_agent_chunk_raw_bytes_total counts it (wire.RecordSize), so
// that the two ratios compare the same bytes.
//
// Blocks hold one partition's records in offset order; the agent's chunks
// interleave partitions by fetch, which changes the ratio by well under a
// percent.
func plainZstdRatio(ctx context.Context, brokers, topic string) (float64, error) {
	none, err := wire.NewEncoder(wire.CodecNone, wire.LevelDefault)
	if err != nil {
		return 0, err
	}
	defer none.Close()
	z, err := zstd.NewWriter(nil, zstd.WithEncoderLevel(zstd.SpeedDefault), zstd.WithEncoderConcurrency(1))
	if err != nil {
		return 0, err
	}
	defer z.Close()
	const block = 1 << 20
	topics := []wire.Topic{{Name: topic, Partitions: 3}}
	var (
		raw, comp int64
		recs      []wire.Record
		size      int
		frame     []byte
		out       []byte
		seq       uint64
	)
	flush := func() error {
		if len(recs) == 0 {
			return nil
		}
		var err error
		frame, err = none.Encode(frame[:0], &wire.Chunk{Seq: seq, Topics: topics, Records: recs})
		if err != nil {
			return fmt.Errorf("encode reference chunk: %w", err)
		}
		out = z.EncodeAll(frame[wire.HeaderSize:], out[:0])
		raw += int64(size)
		comp += int64(len(out))
		recs, size = recs[:0], 0
		seq++
		return nil
	}
	byPart, err := readTopic(ctx, brokers, topic)
	if err != nil {
		return 0, err
	}
	for p := int32(0); p < 3; p++ {
		for _, kr := range byPart[p] {
			r := wire.Record{Topic: topic, Partition: p, Offset: kr.Offset, Timestamp: kr.Timestamp.UnixMilli(),
				Key: kr.Key, Value: kr.Value}
			for _, h := range kr.Headers {
				r.Headers = append(r.Headers, wire.Header{Key: h.Key, Value: h.Value})
			}
			rs := wire.RecordSize(&r)
			if size+rs > block && len(recs) > 0 {
				if err := flush(); err != nil {
					return 0, err
				}
			}
			recs = append(recs, r)
			size += rs
		}
		if err := flush(); err != nil {
			return 0, err
		}
	}
	if comp == 0 {
		return 0, nil
	}
	return float64(raw) / float64(comp), nil
}
