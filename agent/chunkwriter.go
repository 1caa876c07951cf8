package agent

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"sort"
	"sync"
	"time"

	"github.com/edgemirror/edgemirror/buffer"
	"github.com/edgemirror/edgemirror/internal/wire"
)

// The read loop runs in two stages. The first (readLoop) fetches from the
// edge, filters and decodes, and cuts batches; the second, a chunkWriter,
// encodes each batch into chunks and commits them to the buffer. The first
// hands a batch over and goes on fetching while the second compresses and
// commits it, so that on a busy edge neither waits for the other.
//
// Batches are written one at a time and in the order they were handed over,
// so the buffer sees exactly the sequence of chunks, offsets and losses a
// single goroutine would write: a crash loses only what was read and not yet
// committed, and that is read again from the stored offsets. At most one
// batch waits in the hand-over while another is written, so memory stays
// bounded by a few chunks and one fetch response.

// flushJob is one batch handed to the chunk writer; the writer owns its
// records and maps from then on.
type flushJob struct {
	records []wire.Record
	topics  []wire.Topic // the mirrored topics when the batch was cut
	final   bool
	// losses not yet stored: no chunk moves its partition past them
	// (capAtLosses). A final flush stores them, with next and lossNext.
	losses   []buffer.Loss
	next     map[buffer.PartitionKey]int64 // final only
	lossNext map[buffer.PartitionKey]int64 // final only
	done     chan error                    // the outcome, when someone waits for it
}

// chunkWriter is the read loop's second stage.
type chunkWriter struct {
	a      *Agent
	store  *buffer.Store
	enc    *wire.Encoder
	cancel context.CancelFunc // cancels the writer's context

	jobs  chan *flushJob
	spare chan []wire.Record // record slices written, for the next batches
	close sync.Once
	done  chan struct{} // closed when run has returned
	err   error         // why run returned early; read after done
}

// startChunkWriter starts the writer under ctx, which cancel cancels.
func (a *Agent) startChunkWriter(ctx context.Context, cancel context.CancelFunc, store *buffer.Store, enc *wire.Encoder) *chunkWriter {
	w := &chunkWriter{a: a, store: store, enc: enc, cancel: cancel,
		jobs: make(chan *flushJob), spare: make(chan []wire.Record, 2), done: make(chan struct{})}
	go w.run(ctx)
	return w
}

func (w *chunkWriter) run(ctx context.Context) {
	defer close(w.done)
	for j := range w.jobs {
		err := w.a.writeFlush(ctx, w.store, w.enc, j)
		if j.done != nil {
			j.done <- err
		}
		clear(j.records) // drop references to the copied keys and values
		select {
		case w.spare <- j.records[:0]:
		default:
		}
		if err != nil {
			w.err = err
			return
		}
	}
}

// handOff gives the writer the batch's records (all of the batch, for a
// final flush) and leaves b ready for more. It waits while the writer is
// busy with the previous batch; on an error the batch is left as it was.
func (w *chunkWriter) handOff(ctx context.Context, rd *reader, b *batch, final bool) (*flushJob, error) {
	j := &flushJob{records: b.records, topics: rd.topicList(), final: final}
	if final {
		j.losses, j.next, j.lossNext = b.losses, b.next, b.lossNext
		if len(j.lossNext) > 0 {
			j.done = make(chan error, 1)
		}
	} else if len(b.losses) > 0 {
		j.losses = slices.Clone(b.losses)
	}
	select {
	case w.jobs <- j:
	case <-w.done:
		return nil, w.err
	case <-ctx.Done():
		return nil, ctx.Err()
	}
	select {
	case s := <-w.spare:
		b.records = s
	default:
		b.records = make([]wire.Record, 0, cap(j.records))
	}
	b.rawSize = 0
	if final {
		b.losses, b.next, b.lossNext = nil, make(map[buffer.PartitionKey]int64), make(map[buffer.PartitionKey]int64)
	}
	return j, nil
}

// wait returns the outcome of j, handed off with a done channel.
func (w *chunkWriter) wait(ctx context.Context, j *flushJob) error {
	select {
	case err := <-j.done:
		return err
	case <-ctx.Done():
		return ctx.Err()
	}
}

// failed returns why the writer stopped early, or nil while it runs.
func (w *chunkWriter) failed() error {
	select {
	case <-w.done:
		if w.err != nil {
			return w.err
		}
		return errors.New("chunk writer stopped")
	default:
		return nil
	}
}

// finish waits until every batch handed over is written, at most until ctx
// ends; then it cancels the writer.
func (w *chunkWriter) finish(ctx context.Context) error {
	w.close.Do(func() { close(w.jobs) })
	select {
	case <-w.done:
		return w.err
	case <-ctx.Done():
		w.abort()
		if w.err != nil {
			return w.err
		}
		return ctx.Err()
	}
}

// abort cancels the writer and waits for it to return.
func (w *chunkWriter) abort() {
	w.cancel()
	w.close.Do(func() { close(w.jobs) })
	<-w.done
}

// writeFlush writes a batch's records as one or more chunks of at most
// BatchBytes (uncompressed), each with the next offsets it advances. A final
// flush then records the batch's losses and the offsets past them in one
// transaction; a partial one (in the middle of a fetch response) advances
// each partition only past its own records.
func (a *Agent) writeFlush(ctx context.Context, store *buffer.Store, enc *wire.Encoder, j *flushJob) error {
	recs := j.records
	for len(recs) > 0 {
		n, size := 0, 0
		for n < len(recs) && (n == 0 || size+wire.RecordSize(&recs[n]) <= a.cfg.BatchBytes) {
			size += wire.RecordSize(&recs[n])
			n++
		}
		part := recs[:n]
		recs = recs[n:]
		next := j.next
		if len(recs) > 0 || !j.final {
			// Not the last chunk of the batch: it advances each partition
			// only past its own records.
			next = make(map[buffer.PartitionKey]int64)
			for i := range part {
				next[buffer.PartitionKey{Topic: part[i].Topic, Partition: part[i].Partition}] = part[i].Offset + 1
			}
		}
		if err := a.appendChunk(ctx, store, enc, j.topics, part, size, capAtLosses(next, j.losses)); err != nil {
			return err
		}
	}
	if j.final && (len(j.records) == 0 && len(j.next) > 0 || len(j.losses) > 0) {
		next := make(map[buffer.PartitionKey]int64, len(j.next)+len(j.lossNext))
		for k, v := range j.next {
			next[k] = v
		}
		for k, v := range j.lossNext {
			next[k] = v
		}
		if err := store.AdvanceOffsets(next, j.losses); err != nil {
			return fmt.Errorf("store offsets: %w", err)
		}
	}
	return nil
}

// capAtLosses returns next with each partition held at the first offset of
// its earliest loss in losses. Losses are persisted only by the final flush,
// with the offsets past them; a chunk written before must not move a
// partition past a loss, or a crash in between would lose it unreported. A
// record after the loss that the chunk holds is read again after such a
// crash, and the aggregator's deduplication drops the second copy.
func capAtLosses(next map[buffer.PartitionKey]int64, losses []buffer.Loss) map[buffer.PartitionKey]int64 {
	if len(losses) == 0 {
		return next
	}
	out := make(map[buffer.PartitionKey]int64, len(next))
	for k, v := range next {
		out[k] = v
	}
	for _, l := range losses {
		k := buffer.PartitionKey{Topic: l.Range.Topic, Partition: l.Range.Partition}
		if v, ok := out[k]; ok && v > l.Range.First {
			out[k] = l.Range.First
		}
	}
	return out
}

// appendChunk encodes recs as one chunk and appends it to the buffer with
// the next offsets it advances. topics are the mirrored topics when the
// records were read; the chunk names those its records use.
func (a *Agent) appendChunk(ctx context.Context, store *buffer.Store, enc *wire.Encoder, topics []wire.Topic,
	recs []wire.Record, rawSize int, next map[buffer.PartitionKey]int64) error {
	ranges := make(map[buffer.PartitionKey]*buffer.Range)
	used := make(map[string]bool)
	for i := range recs {
		r := &recs[i]
		used[r.Topic] = true
		k := buffer.PartitionKey{Topic: r.Topic, Partition: r.Partition}
		if rg := ranges[k]; rg != nil {
			rg.Last = r.Offset
			rg.Records++
		} else {
			ranges[k] = &buffer.Range{Topic: r.Topic, Partition: r.Partition, First: r.Offset, Last: r.Offset, Records: 1}
		}
	}
	var chunkTopics []wire.Topic
	for _, t := range topics {
		if used[t.Name] {
			chunkTopics = append(chunkTopics, t)
		}
	}
	meta := buffer.ChunkMeta{Records: len(recs), RawBytes: rawSize}
	for _, rg := range ranges {
		meta.Ranges = append(meta.Ranges, *rg)
	}
	sort.Slice(meta.Ranges, func(i, j int) bool {
		if meta.Ranges[i].Topic != meta.Ranges[j].Topic {
			return meta.Ranges[i].Topic < meta.Ranges[j].Topic
		}
		return meta.Ranges[i].Partition < meta.Ranges[j].Partition
	})
	var frame []byte
	var err error
	for tries := 0; ; tries++ {
		meta.Seq = store.NextSeq()
		frame, err = enc.Encode(nil, &wire.Chunk{Seq: meta.Seq, Topics: chunkTopics, Records: recs})
		if err != nil {
			return fmt.Errorf("encode chunk %d: %w", meta.Seq, err)
		}
		a.h.appendSince.Store(time.Now().UnixNano())
		err = store.Append(ctx, frame, meta, next)
		a.h.appendSince.Store(0)
		// The shipper moved the next seq past a rolled-back range while
		// this chunk was encoded: encode it again under the new number.
		if !errors.Is(err, buffer.ErrSeq) || tries == 3 {
			break
		}
	}
	if err == nil {
		a.h.appended(meta.Seq, oldestTimestamp(recs, time.Now()))
	}
	if err != nil {
		if !errors.Is(err, buffer.ErrTooLarge) {
			return fmt.Errorf("buffer chunk %d: %w", meta.Seq, err)
		}
		// A chunk the buffer can never hold (records larger than the whole
		// buffer): it can never be shipped. Record it as a loss, exactly,
		// and move on rather than stop mirroring everything else.
		losses := make([]buffer.Loss, len(meta.Ranges))
		for i, rg := range meta.Ranges {
			losses[i] = buffer.Loss{Range: rg, Reason: wire.LossReasonTooLarge, At: time.Now()}
			a.log.Error("records too large for the buffer; they are lost", slog.String("topic", rg.Topic),
				slog.Int("partition", int(rg.Partition)), slog.Int64("first_offset", rg.First),
				slog.Int64("last_offset", rg.Last), slog.Int("frame_bytes", len(frame)))
			a.m.lost.WithLabelValues(wire.LossReasonTooLarge).Add(float64(rg.Records))
		}
		if err := store.AdvanceOffsets(next, losses); err != nil {
			return fmt.Errorf("record chunk %d as lost: %w", meta.Seq, err)
		}
		return nil
	}
	a.m.chunksBuilt.Inc()
	a.m.rawBytes.Add(float64(rawSize))
	a.m.frameBytes.Add(float64(len(frame)))
	return nil
}
