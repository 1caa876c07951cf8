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
	// stored are the watermarks the edge's transactions committed as
	// offsets of its consumer group, read once per claim (nil: not yet).
	stored map[sourceKey]int64
	// singles are partitions whose hub topic refused a whole batch without
	// naming a record: they are written one record per batch until the
	// refused record is found.
	singles map[sourceKey]bool
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
	return &edgeWriter{h: h, edge: edge, prod: p, wms: make(map[sourceKey]int64), singles: make(map[sourceKey]bool)}, nil
}

// chunkResult is what applying one chunk did.
type chunkResult struct {
	written, duplicates int
	refused             []wire.LossRange // records the hub refused for good
}

// refusedRecord is a source record the hub refused for good, and why.
type refusedRecord struct {
	key    sourceKey
	offset int64
}

// maxRefusalRounds bounds how many times one group is written again after
// the hub refused single records of it.
const maxRefusalRounds = 16

// group is the run of a chunk's records for one source partition, in order.
type group struct {
	key     sourceKey
	dest    string
	records []*wire.Record // into the chunk
}

// partWrite is what one transaction writes to one hub partition.
type partWrite struct {
	key     sourceKey
	dest    string
	src     []*wire.Record // the source records, in order
	records []txn.Record   // src as the hub gets them, built by write
	owner   []int          // index of the chunk each record comes from
	offsets []int64        // source offset of each record
}

// apply writes the records of the given chunks that the hub does not have
// yet, in one transaction, and commits it. It returns one result per chunk,
// or an error for the whole transaction: then nothing of it is visible, and
// every chunk may be applied again.
func (w *edgeWriter) apply(ctx context.Context, chunks []*wire.Chunk) ([]chunkResult, error) {
	refused := make(map[refusedRecord]string)
	for round := 0; ; round++ {
		res, err := w.attempt(ctx, chunks, refused)
		var be *batchError
		if err == nil || round == maxRefusalRounds || !errors.As(err, &be) || be.err.Kind != txn.Refused {
			if err != nil {
				ae := w.failed(err, chunks)
				w.abort(ctx, ae)
				return nil, ae
			}
			return res, nil
		}
		// The hub refused records of one batch: leave out the ones it
		// named (or, if it named none, find them by writing that
		// partition one record per batch) and write the group again in a
		// new transaction.
		w.forget()
		w.h.m.produceErrors.WithLabelValues(be.err.Kind.String()).Inc()
		if len(be.err.RecordErrors) == 0 && len(be.records) == 1 {
			be.err.RecordErrors = map[int]error{0: be.err.Err}
		}
		if len(be.err.RecordErrors) == 0 {
			w.singles[be.pw.key] = true
			continue
		}
		for i, rerr := range be.err.RecordErrors {
			if i < 0 || i >= len(be.offsets) {
				continue
			}
			reason := fmt.Sprintf("%v", be.err.Err)
			if rerr != nil && rerr.Error() != "" {
				reason = fmt.Sprintf("%v: %v", be.err.Err, rerr)
			}
			refused[refusedRecord{key: be.pw.key, offset: be.offsets[i]}] = reason
			w.h.log.Error("hub refused a record for good; it is recorded as lost and the rest of its chunk is written",
				slog.String("edge", w.edge), slog.String("topic", be.pw.key.topic), slog.Int("partition", int(be.pw.key.partition)),
				slog.Int64("offset", be.offsets[i]), slog.String("hub_topic", be.pw.dest), slog.String("reason", reason))
		}
	}
}

// attempt writes one group in one transaction, leaving out the refused
// records.
func (w *edgeWriter) attempt(ctx context.Context, chunks []*wire.Chunk, refused map[refusedRecord]string) ([]chunkResult, error) {
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
			for _, r := range g.records {
				if r.Offset <= wm {
					res[ci].duplicates++
					continue
				}
				if _, ok := refused[refusedRecord{key: g.key, offset: r.Offset}]; ok {
					res[ci].refused = append(res[ci].refused, wire.LossRange{Topic: r.Topic, Partition: r.Partition,
						FirstOffset: r.Offset, LastOffset: r.Offset, Records: 1, Reason: wire.LossReasonRefusedByHub})
					wm = r.Offset
					continue
				}
				if pw == nil {
					n := len(g.records) // room for this chunk's records; later chunks grow it
					pw = &partWrite{key: g.key, dest: g.dest, src: make([]*wire.Record, 0, n), owner: make([]int, 0, n), offsets: make([]int64, 0, n)}
					index[g.key] = pw
					writes = append(writes, pw)
				}
				pw.src = append(pw.src, r)
				pw.owner = append(pw.owner, ci)
				pw.offsets = append(pw.offsets, r.Offset)
				wm = r.Offset
				res[ci].written++
			}
			marks[g.key] = wm
		}
	}
	if len(writes) > 0 {
		if err := w.write(ctx, writes, marks); err != nil {
			return nil, err
		}
		start := time.Now()
		if err := w.prod.Commit(ctx); err != nil {
			return nil, err
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
		delete(w.singles, k)
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
	w.stored = nil
	pid, epoch, _ := w.prod.Session()
	w.h.m.claims.Inc()
	w.h.log.Info("writing for edge", slog.String("edge", w.edge), slog.String("transactional_id", w.prod.TransactionalID()),
		slog.Int64("producer_id", pid), slog.Int("epoch", int(epoch)), slog.Duration("took", time.Since(start)))
	return nil
}

// abort ends a failed transaction at once (a new claim), so that its
// partitions' last stable offset does not wait for --transaction-timeout
// when no further chunk comes to claim the edge. Best effort and short: the
// next apply claims again anyway. A fenced writer has nothing to abort.
func (w *edgeWriter) abort(ctx context.Context, err error) {
	var ae *applyError
	if errors.As(err, &ae) && ae.kind == applyFenced {
		return
	}
	actx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 5*time.Second)
	defer cancel()
	if aerr := w.prod.Abort(actx); aerr != nil {
		w.h.log.Debug("abort of a failed hub transaction did not finish; the next chunk claims the edge again",
			slog.String("edge", w.edge), slog.Any("error", aerr))
		return
	}
	clear(w.wms)
	w.stored = nil
}

// forget drops the claim's state after a failed transaction: the next
// apply claims again (aborting whatever the failed transaction wrote) and
// derives the watermarks afresh.
func (w *edgeWriter) forget() {
	clear(w.wms)
	w.stored = nil
}

// failed turns a transaction's error into an applyError and leaves the
// writer ready to claim again.
func (w *edgeWriter) failed(err error, chunks []*wire.Chunk) error {
	w.forget()
	var ae *applyError
	if errors.As(err, &ae) {
		return ae
	}
	var te *txn.Error
	if !errors.As(err, &te) {
		return &applyError{kind: applyUnavailable, chunk: -1, msg: err.Error(), cause: err}
	}
	w.h.m.produceErrors.WithLabelValues(te.Kind.String()).Inc()
	switch te.Kind {
	case txn.Fenced:
		w.h.m.fenced.Inc()
		w.h.log.Warn("another aggregator took over the edge; this one's transaction was aborted and nothing of it was written",
			slog.String("edge", w.edge), slog.String("transactional_id", w.prod.TransactionalID()), slog.String("op", te.Op))
		return &applyError{kind: applyFenced, chunk: -1, msg: fmt.Sprintf("edge %s is being written by another aggregator (%v); retry", w.edge, te), cause: err}
	case txn.Refused:
		// Refused even one record at a time, more often than bounded.
		culprit := -1
		var be *batchError
		if errors.As(err, &be) && len(be.owners) > 0 {
			culprit = be.owners[0]
		}
		w.h.log.Error("hub refused records for good", slog.String("edge", w.edge), slog.String("topic", te.Topic),
			slog.Int("partition", int(te.Partition)), slog.Any("error", te.Err))
		return &applyError{kind: applyRefused, chunk: culprit,
			msg: fmt.Sprintf("hub refused records of %s/%d: %v", te.Topic, te.Partition, te.Err), cause: err}
	default:
		if errors.Is(te.Err, kafka.UnknownTopicOrPartition) && te.Topic != "" {
			w.h.forgetTopic(te.Topic) // deleted under us: look it up (and create it) again
		}
		if isAuthorization(te.Err) {
			w.h.log.Error("hub refuses this aggregator's writes: grant its principal Write on the hub topics and the transactional id; the chunks are kept and retried",
				slog.String("edge", w.edge), slog.String("transactional_id", w.prod.TransactionalID()),
				slog.String("op", te.Op), slog.String("topic", te.Topic), slog.Any("error", te.Err))
		} else {
			w.h.log.Warn("hub transaction failed; it is aborted and the chunks will be retried", slog.String("edge", w.edge),
				slog.String("op", te.Op), slog.String("topic", te.Topic), slog.Int("partition", int(te.Partition)), slog.Any("error", te.Err))
		}
		return &applyError{kind: applyUnavailable, chunk: -1, msg: fmt.Sprintf("write to hub: %v", te), cause: err}
	}
}

// isAuthorization reports whether a hub answer is an ACL refusal: an
// operator's mistake to fix, never a reason to drop records.
func isAuthorization(err error) bool {
	return errors.Is(err, kafka.TopicAuthorizationFailed) || errors.Is(err, kafka.TransactionalIDAuthorizationFailed) ||
		errors.Is(err, kafka.ClusterAuthorizationFailed) || errors.Is(err, kafka.GroupAuthorizationFailed)
}

// batchError is a failed produce of one batch: which partition, which
// records (their source offsets and chunks).
type batchError struct {
	pw      *partWrite
	records []txn.Record
	offsets []int64 // source offset of each record of the batch
	owners  []int   // chunk index of each record of the batch
	err     *txn.Error
}

func (e *batchError) Error() string { return e.err.Error() }
func (e *batchError) Unwrap() error { return e.err }

// write writes the planned records in the current transaction and stores
// the watermarks they leave (marks) with it. The transaction's control
// requests run beside the records' preparation and produces: the
// partitions are added while the records are prepared, and the watermarks
// are committed while they are produced. Each partition's records go in
// batches of at most HubBatchBytes; the batches are sent in rounds, one
// batch of each partition that still has one per round, each round one
// produce request per hub partition leader.
func (w *edgeWriter) write(ctx context.Context, writes []*partWrite, marks map[sourceKey]int64) error {
	byTopic := make(map[string][]int32)
	for _, pw := range writes {
		byTopic[pw.dest] = append(byTopic[pw.dest], pw.key.partition)
	}
	added := make(chan struct{})
	eg, ectx := errgroup.WithContext(ctx)
	eg.Go(func() error {
		for topic, parts := range byTopic {
			if err := w.prod.Add(ectx, topic, parts...); err != nil {
				return err
			}
		}
		close(added)
		return w.storeWatermarks(ectx, writes, marks)
	})
	eg.Go(func() error {
		bounds := make([][]int, len(writes)) // per partition, where its batches start and end
		for j, pw := range writes {
			pw.records = hubRecords(pw.key, pw.src)
			bounds[j] = w.batchBounds(pw)
		}
		select {
		case <-added:
		case <-ectx.Done():
			return ectx.Err() // the control requests failed: theirs is the error
		}
		for round := 0; ; round++ {
			var (
				batches []txn.Batch
				of      []int // index into writes of each batch
			)
			for j, pw := range writes {
				if b := bounds[j]; round+1 < len(b) {
					batches = append(batches, txn.Batch{Topic: pw.dest, Partition: pw.key.partition, Records: pw.records[b[round]:b[round+1]]})
					of = append(of, j)
				}
			}
			if len(batches) == 0 {
				return nil
			}
			if err := w.produceRound(ectx, batches, func(i int, be *txn.BatchError) error {
				pw, b := writes[of[i]], bounds[of[i]]
				from, to := b[round], b[round+1]
				return &batchError{pw: pw, records: pw.records[from:to], offsets: pw.offsets[from:to],
					owners: pw.owner[from:to], err: be.Err}
			}); err != nil {
				return err
			}
		}
	})
	return eg.Wait()
}

// produceRound writes one round of batches (each of another partition),
// at most ParallelPartitions of them in one call of ProduceBatches, the
// calls one after another, so that no more than that many partitions are
// produced at once. A failed batch's error is made by failed, from its
// index in batches.
func (w *edgeWriter) produceRound(ctx context.Context, batches []txn.Batch, failed func(int, *txn.BatchError) error) error {
	for from := 0; from < len(batches); from += w.h.cfg.ParallelPartitions {
		to := min(from+w.h.cfg.ParallelPartitions, len(batches))
		start := time.Now()
		_, err := w.prod.ProduceBatches(ctx, batches[from:to])
		w.h.m.produceDuration.Observe(time.Since(start).Seconds())
		var be *txn.BatchError
		if errors.As(err, &be) {
			return failed(from+be.Index, be)
		}
		if err != nil {
			return err
		}
	}
	return nil
}

// batchBounds cuts a partition's records into batches of at most
// HubBatchBytes (one record each while the partition is searched for a
// refused record): batch i is records[bounds[i]:bounds[i+1]].
func (w *edgeWriter) batchBounds(pw *partWrite) []int {
	single := w.singles[pw.key]
	ends := []int{0}
	for from := 0; from < len(pw.records); {
		n, size := 0, 0
		for from+n < len(pw.records) && !(single && n == 1) {
			s := txn.RecordSize(&pw.records[from+n])
			if n > 0 && size+s > w.h.cfg.HubBatchBytes {
				break
			}
			size += s
			n++
		}
		from += n
		ends = append(ends, from)
	}
	return ends
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
		g.records = append(g.records, r)
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

// hubRecords are the source records of one partition as the hub gets
// them: each with its provenance headers after its own. The headers of all
// of them are cut from one slice, and the provenance values are shared
// where they are equal (provenance.Stamper): a record costs no allocation
// of its own.
func hubRecords(key sourceKey, src []*wire.Record) []txn.Record {
	n := 0
	for _, r := range src {
		n += len(r.Headers) + provenance.Count
	}
	all := make([]wire.Header, 0, n)
	st := provenance.NewStamper(key.edge, key.topic, key.partition, len(src))
	out := make([]txn.Record, len(src))
	for i, r := range src {
		from := len(all)
		all = append(all, r.Headers...)
		all = st.Append(all, r.Offset)
		out[i] = txn.Record{Timestamp: r.Timestamp, Key: r.Key, Value: r.Value, Headers: all[from:len(all):len(all)]}
	}
	return out
}

func (h *hub) forgetTopic(topic string) {
	h.mu.Lock()
	delete(h.topics, topic)
	h.mu.Unlock()
}
