package aggregator

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"time"

	"github.com/segmentio/kafka-go"
	"golang.org/x/sync/errgroup"

	"github.com/edgemirror/edgemirror/aggregator/txn"
	"github.com/edgemirror/edgemirror/internal/provenance"
	"github.com/edgemirror/edgemirror/internal/wire"
)

// sourceKey identifies a source partition of one edge.
type sourceKey struct {
	edge      string
	topic     string
	partition int32
}

// hub is what all edges share on the hub side: the kafka-go client, the
// topic manager and the metrics. Each edge writes through its own
// edgeWriter.
type hub struct {
	cfg    *Config
	log    *slog.Logger
	client *kafka.Client
	m      *metrics

	mu     sync.Mutex
	topics map[string]int32 // hub topics known to have at least this many partitions
}

func newHub(cfg *Config, log *slog.Logger, client *kafka.Client, m *metrics) *hub {
	return &hub{cfg: cfg, log: log, client: client, m: m, topics: make(map[string]int32)}
}

// transactionalID is the transactional id of an edge's hub writes.
func (h *hub) transactionalID(edge string) string { return h.cfg.TransactionalIDPrefix + edge }

// edgeWriter writes the chunks of one edge to the hub in Kafka
// transactions under the edge's transactional id. Its watermarks are valid
// only while its claim on the id is: on a new claim they are derived again
// from what the hub committed. Calls are serialised by the caller.
type edgeWriter struct {
	h    *hub
	edge string
	prod *txn.Producer
	wms  map[sourceKey]int64 // -1: nothing in the hub yet; missing: not derived under this claim
}

func (h *hub) newEdgeWriter(edge string) (*edgeWriter, error) {
	p, err := txn.New(txn.Config{
		Client:             h.client,
		TransactionalID:    h.transactionalID(edge),
		TransactionTimeout: h.cfg.TransactionTimeout,
		Compression:        h.cfg.HubCompression,
		RetryFor:           h.cfg.HubTimeout,
	})
	if err != nil {
		return nil, err
	}
	return &edgeWriter{h: h, edge: edge, prod: p, wms: make(map[sourceKey]int64)}, nil
}

// chunkResult is what applying one chunk did.
type chunkResult struct {
	written, duplicates int
}

// group is the run of a chunk's records for one source partition, in order.
type group struct {
	key     sourceKey
	dest    string
	records []wire.Record
}

// partWrite is what one transaction writes to one hub partition.
type partWrite struct {
	key     sourceKey
	dest    string
	records []txn.Record
	owner   []int // index of the chunk each record comes from
	last    int64 // source offset of the last record
}

// apply writes the records of the given chunks that the hub does not have
// yet, in one transaction, and commits it. It returns one result per chunk,
// or an error for the whole transaction: then nothing of it is visible, and
// every chunk may be applied again.
func (w *edgeWriter) apply(ctx context.Context, chunks []*wire.Chunk) ([]chunkResult, error) {
	if _, _, claimed := w.prod.Session(); !claimed {
		if err := w.claim(ctx); err != nil {
			return nil, err
		}
	}
	res := make([]chunkResult, len(chunks))
	// Plan: per hub partition, the records above the watermark, in chunk
	// order (the caller passes chunks in sequence order).
	var (
		writes []*partWrite
		index  = make(map[sourceKey]*partWrite)
		marks  = make(map[sourceKey]int64) // watermarks as they will be after commit
	)
	for ci, c := range chunks {
		groups, err := w.groups(c)
		if err != nil {
			return nil, err
		}
		for _, g := range groups {
			if err := w.h.ensureTopic(ctx, g.dest, partitionsOf(c, g.key.topic)); err != nil {
				return nil, err
			}
			wm, ok := marks[g.key]
			if !ok {
				if wm, err = w.watermark(ctx, g.key, g.dest); err != nil {
					return nil, err
				}
			}
			pw := index[g.key]
			for i := range g.records {
				r := &g.records[i]
				if r.Offset <= wm {
					res[ci].duplicates++
					continue
				}
				if pw == nil {
					pw = &partWrite{key: g.key, dest: g.dest}
					index[g.key] = pw
					writes = append(writes, pw)
				}
				pw.records = append(pw.records, hubRecord(w.edge, r))
				pw.owner = append(pw.owner, ci)
				pw.last = r.Offset
				wm = r.Offset
				res[ci].written++
			}
			marks[g.key] = wm
		}
	}
	if len(writes) > 0 {
		if err := w.write(ctx, writes); err != nil {
			return nil, w.failed(err, writes, chunks)
		}
		start := time.Now()
		if err := w.prod.Commit(ctx); err != nil {
			return nil, w.failed(err, nil, chunks)
		}
		w.h.m.commitDuration.Observe(time.Since(start).Seconds())
		w.h.m.transactions.Inc()
	}
	n := 0
	for ci := range res {
		n += res[ci].written
		w.h.m.duplicates.Add(float64(res[ci].duplicates))
	}
	w.h.m.written.Add(float64(n))
	w.h.m.txnRecords.Observe(float64(n))
	for k, off := range marks {
		w.wms[k] = off
	}
	return res, nil
}

// claim takes the edge's transactional id, fencing every other aggregator
// that wrote for this edge, and forgets every watermark: from now on they
// are derived from what the hub committed.
func (w *edgeWriter) claim(ctx context.Context) error {
	start := time.Now()
	if err := w.prod.Claim(ctx); err != nil {
		return &applyError{kind: applyUnavailable, msg: fmt.Sprintf("take transactional id %s: %v", w.prod.TransactionalID(), err), cause: err}
	}
	clear(w.wms)
	pid, epoch, _ := w.prod.Session()
	w.h.m.claims.Inc()
	w.h.log.Info("writing for edge", slog.String("edge", w.edge), slog.String("transactional_id", w.prod.TransactionalID()),
		slog.Int64("producer_id", pid), slog.Int("epoch", int(epoch)), slog.Duration("took", time.Since(start)))
	return nil
}

// forget drops the claim's state after a failed transaction: the next
// apply claims again (aborting whatever the failed transaction wrote) and
// derives the watermarks afresh.
func (w *edgeWriter) forget() {
	clear(w.wms)
}

// failed turns a transaction's error into an applyError and leaves the
// writer ready to claim again.
func (w *edgeWriter) failed(err error, writes []*partWrite, chunks []*wire.Chunk) error {
	w.forget()
	var te *txn.Error
	if !errors.As(err, &te) {
		return &applyError{kind: applyUnavailable, msg: err.Error(), cause: err}
	}
	w.h.m.produceErrors.WithLabelValues(te.Kind.String()).Inc()
	switch te.Kind {
	case txn.Fenced:
		w.h.m.fenced.Inc()
		w.h.log.Warn("another aggregator took over the edge; this one's transaction was aborted and nothing of it was written",
			slog.String("edge", w.edge), slog.String("transactional_id", w.prod.TransactionalID()), slog.String("op", te.Op))
		return &applyError{kind: applyFenced, msg: fmt.Sprintf("edge %s is being written by another aggregator (%v); retry", w.edge, te), cause: err}
	case txn.Refused:
		// Find the chunk whose records the hub refused.
		culprit := -1
		for _, pw := range writes {
			if pw.dest == te.Topic && pw.key.partition == te.Partition && len(pw.owner) > 0 {
				culprit = pw.owner[0]
				for i := range te.RecordErrors {
					if i < len(pw.owner) {
						culprit = pw.owner[i]
						break
					}
				}
				break
			}
		}
		seq := uint64(0)
		if culprit >= 0 {
			seq = chunks[culprit].Seq
		}
		w.h.log.Error("hub refused records for good", slog.String("edge", w.edge), slog.String("topic", te.Topic),
			slog.Int("partition", int(te.Partition)), slog.Uint64("chunk", seq), slog.Any("error", te.Err))
		return &applyError{kind: applyRefused, chunk: culprit,
			msg: fmt.Sprintf("hub refused records of %s/%d: %v", te.Topic, te.Partition, te.Err), cause: err}
	default:
		if errors.Is(te.Err, kafka.UnknownTopicOrPartition) && te.Topic != "" {
			w.h.forgetTopic(te.Topic) // deleted under us: look it up (and create it) again
		}
		w.h.log.Warn("hub transaction failed; it is aborted and the chunks will be retried", slog.String("edge", w.edge),
			slog.String("op", te.Op), slog.String("topic", te.Topic), slog.Int("partition", int(te.Partition)), slog.Any("error", te.Err))
		return &applyError{kind: applyUnavailable, msg: fmt.Sprintf("write to hub: %v", te), cause: err}
	}
}

// write adds every partition to the transaction and produces the records,
// partitions in parallel, each in batches of at most HubBatchBytes.
func (w *edgeWriter) write(ctx context.Context, writes []*partWrite) error {
	byTopic := make(map[string][]int32)
	for _, pw := range writes {
		byTopic[pw.dest] = append(byTopic[pw.dest], pw.key.partition)
	}
	for topic, parts := range byTopic {
		if err := w.prod.Add(ctx, topic, parts...); err != nil {
			return err
		}
	}
	eg, ectx := errgroup.WithContext(ctx)
	eg.SetLimit(w.h.cfg.ParallelPartitions)
	for _, pw := range writes {
		eg.Go(func() error {
			recs := pw.records
			for len(recs) > 0 {
				n, size := 0, 0
				for n < len(recs) {
					s := txn.RecordSize(&recs[n])
					if n > 0 && size+s > w.h.cfg.HubBatchBytes {
						break
					}
					size += s
					n++
				}
				start := time.Now()
				_, err := w.prod.Produce(ectx, pw.dest, pw.key.partition, recs[:n])
				w.h.m.produceDuration.Observe(time.Since(start).Seconds())
				if err != nil {
					return err
				}
				recs = recs[n:]
			}
			return nil
		})
	}
	return eg.Wait()
}

// groups splits a chunk by source partition and checks its offsets.
func (w *edgeWriter) groups(c *wire.Chunk) ([]*group, error) {
	var groups []*group
	index := make(map[sourceKey]*group)
	for i := range c.Records {
		r := &c.Records[i]
		k := sourceKey{edge: w.edge, topic: r.Topic, partition: r.Partition}
		g := index[k]
		if g == nil {
			dest, err := destTopic(w.h.cfg.TopicTemplate, w.edge, r.Topic)
			if err != nil {
				return nil, &applyError{kind: applyRefused, chunk: -1, msg: err.Error()}
			}
			g = &group{key: k, dest: dest}
			index[k] = g
			groups = append(groups, g)
		}
		if n := len(g.records); n > 0 && g.records[n-1].Offset >= r.Offset {
			return nil, &applyError{kind: applyBadChunk, msg: fmt.Sprintf("offsets of %s/%d are not increasing in chunk %d", r.Topic, r.Partition, c.Seq)}
		}
		g.records = append(g.records, *r)
	}
	return groups, nil
}

func partitionsOf(c *wire.Chunk, topic string) int32 {
	for _, t := range c.Topics {
		if t.Name == topic {
			return t.Partitions
		}
	}
	return 0
}

// hubRecord is a source record as the hub gets it: with its provenance
// headers after its own.
func hubRecord(edge string, r *wire.Record) txn.Record {
	hs := make([]wire.Header, 0, len(r.Headers)+4)
	hs = append(hs, r.Headers...)
	hs = provenance.Append(hs, provenance.Origin{Edge: edge, Topic: r.Topic, Partition: r.Partition, Offset: r.Offset})
	return txn.Record{Timestamp: r.Timestamp, Key: r.Key, Value: r.Value, Headers: hs}
}

func (h *hub) forgetTopic(topic string) {
	h.mu.Lock()
	delete(h.topics, topic)
	h.mu.Unlock()
}
