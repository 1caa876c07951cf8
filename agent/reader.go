package agent

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"regexp"
	"sort"
	"strings"
	"sync"
	"time"

	"github.com/segmentio/kafka-go"
	"github.com/segmentio/kafka-go/protocol"
	fetchapi "github.com/segmentio/kafka-go/protocol/fetch"

	"github.com/edgemirror/edgemirror/buffer"
	"github.com/edgemirror/edgemirror/internal/committed"
	"github.com/edgemirror/edgemirror/internal/kafkautil"
	"github.com/edgemirror/edgemirror/internal/provenance"
	"github.com/edgemirror/edgemirror/internal/wire"
)

// Kafka error codes the reader acts on.
const (
	errCodeOffsetOutOfRange = 1
)

// initRetry is the first wait before finding a partition's start offset
// again after a failure; it doubles up to the metadata interval.
const initRetry = 200 * time.Millisecond

// partition is the reader's view of one edge partition.
type partition struct {
	key    buffer.PartitionKey
	next   int64 // next offset to fetch; -1 until initialised
	leader int
	// retryAt delays the next fetch of this partition after an error.
	retryAt time.Time
	// initFailures counts failed attempts to find the start offset in a
	// row: they are retried soon at first (the aggregator is often only
	// creating the hub topic), then at most every metadata interval.
	initFailures int
	// stuckLogged avoids repeating the same error line every fetch.
	stuckLogged bool
}

// batch is what one fetch round produced: records to ship, the next offsets
// they advance, and losses found on the way.
type batch struct {
	records []wire.Record
	rawSize int // sum of wire.RecordSize over records
	next    map[buffer.PartitionKey]int64
	// losses found in this round, and the offsets to resume from after
	// them. They are persisted together in one transaction, after every
	// pending chunk, so that a crash can never advance past a loss that was
	// not recorded.
	losses   []buffer.Loss
	lossNext map[buffer.PartitionKey]int64
}

func newBatch() *batch {
	return &batch{next: make(map[buffer.PartitionKey]int64), lossNext: make(map[buffer.PartitionKey]int64)}
}

// empty reports whether the batch holds nothing to write.
func (b *batch) empty() bool {
	return len(b.records) == 0 && len(b.next) == 0 && len(b.losses) == 0
}

// skipLosses moves the partitions past the lost ranges once they are recorded.
func (r *reader) skipLosses(lossNext map[buffer.PartitionKey]int64) {
	for k, off := range lossNext {
		if p := r.parts[k]; p != nil {
			if off > p.next {
				p.next = off
			}
			p.retryAt = time.Time{}
		}
	}
}

// reader fetches committed records from the edge cluster. It is used by a
// single goroutine.
type reader struct {
	cfg     *Config
	log     *slog.Logger
	client  *kafka.Client
	include *regexp.Regexp
	exclude *regexp.Regexp
	m       *metrics

	parts    map[buffer.PartitionKey]*partition
	topics   map[string]int32 // partition count per mirrored topic
	stored   map[buffer.PartitionKey]int64
	lastMeta time.Time
	round    int // rotates the order partitions are fetched in

	clientID      string // sent with raw fetch requests
	correlationID int32

	// checkStart, if set, decides about a partition the buffer has never
	// read before it is started (incarnation.go): where to start (-1: per
	// --start-offset), or an error to try again later.
	checkStart func(ctx context.Context, key buffer.PartitionKey, first, last int64) (int64, error)

	// full is called when the batch's records reach the chunk size in the
	// middle of a fetch response; it writes them out, so that memory is
	// bounded by one chunk and one response, whatever the compression
	// ratio of the edge's batches.
	full func() error
	// topicsSeen, if set, is told the mirrored topics after every metadata
	// refresh (the topic config sync, topicconfig.go). It must not block.
	topicsSeen func([]wire.Topic)
}

func newReader(cfg *Config, log *slog.Logger, client *kafka.Client, stored map[buffer.PartitionKey]int64, m *metrics) (*reader, error) {
	include, err := regexp.Compile("^(?:" + cfg.Topics + ")$")
	if err != nil {
		return nil, fmt.Errorf("compile --topics: %w", err)
	}
	var exclude *regexp.Regexp
	if cfg.ExcludeTopics != "" {
		if exclude, err = regexp.Compile("^(?:" + cfg.ExcludeTopics + ")$"); err != nil {
			return nil, fmt.Errorf("compile --exclude-topics: %w", err)
		}
	}
	return &reader{
		cfg:      cfg,
		log:      log,
		client:   client,
		include:  include,
		exclude:  exclude,
		m:        m,
		parts:    make(map[buffer.PartitionKey]*partition),
		topics:   make(map[string]int32),
		stored:   stored,
		clientID: "edgemirror-agent-" + cfg.EdgeID,
	}, nil
}

// wanted reports whether topic should be mirrored.
func (r *reader) wanted(topic string) bool {
	if strings.HasPrefix(topic, "_") {
		return false
	}
	if r.exclude != nil && r.exclude.MatchString(topic) {
		return false
	}
	return r.include.MatchString(topic)
}

// refreshIfDue refreshes the metadata when the last refresh is older than
// the metadata interval (or a fetch error asked for one).
func (r *reader) refreshIfDue(ctx context.Context) error {
	if time.Since(r.lastMeta) < r.cfg.MetadataInterval {
		return nil
	}
	err := r.refreshMetadata(ctx)
	if err != nil {
		// Try again in a second, not at once.
		r.lastMeta = time.Now().Add(-r.cfg.MetadataInterval + time.Second)
	}
	return err
}

// refreshMetadata lists topics and partitions and starts reading new ones.
func (r *reader) refreshMetadata(ctx context.Context) error {
	md, err := r.client.Metadata(ctx, &kafka.MetadataRequest{})
	if err != nil {
		return fmt.Errorf("list edge topics: %w", err)
	}
	r.lastMeta = time.Now()
	listed := make(map[string]bool, len(md.Topics))
	for _, t := range md.Topics {
		listed[t.Name] = true
	}
	for name := range r.topics {
		if !listed[name] {
			r.dropTopic(name)
		}
	}
	for _, t := range md.Topics {
		if t.Internal || t.Error != nil || !r.wanted(t.Name) {
			continue
		}
		if n := int32(len(t.Partitions)); n > r.topics[t.Name] {
			if r.topics[t.Name] == 0 {
				r.log.Info("mirroring topic", slog.String("topic", t.Name), slog.Int("partitions", int(n)))
			} else {
				r.log.Info("topic grew", slog.String("topic", t.Name), slog.Int("partitions", int(n)))
			}
			r.topics[t.Name] = n
		}
		for _, p := range t.Partitions {
			key := buffer.PartitionKey{Topic: t.Name, Partition: int32(p.ID)}
			part, ok := r.parts[key]
			if !ok {
				next := int64(-1)
				if off, ok := r.stored[key]; ok {
					next = off
				}
				part = &partition{key: key, next: next}
				r.parts[key] = part
			}
			part.leader = p.Leader.ID
		}
	}
	r.m.partitions.Set(float64(len(r.parts)))
	if r.topicsSeen != nil {
		r.topicsSeen(r.topicList())
	}
	return nil
}

// dropTopic stops reading a topic the edge cluster no longer lists (it was
// deleted). kafka-go fails a whole fetch request when one of its topics is
// missing from its metadata, so a deleted topic kept in the request would
// stop every other partition of that broker. What was read of it stays in
// the buffer and is shipped; if a topic of the same name comes back, it is
// treated as a stored partition would be after a restart.
func (r *reader) dropTopic(name string) {
	var offsets []string
	for k, p := range r.parts {
		if k.Topic != name {
			continue
		}
		if p.next >= 0 {
			r.stored[k] = p.next
			offsets = append(offsets, fmt.Sprintf("%d:%d", k.Partition, p.next))
		}
		delete(r.parts, k)
		r.m.highWatermark.DeleteLabelValues(k.Topic, itoa(k.Partition))
		r.m.lag.DeleteLabelValues(k.Topic, itoa(k.Partition))
	}
	sort.Strings(offsets)
	r.log.Warn("edge topic deleted; stopped mirroring it (what was read of it is shipped from the buffer; next_offsets lists partition:offset)",
		slog.String("topic", name), slog.Int("partitions", int(r.topics[name])),
		slog.String("next_offsets", strings.Join(offsets, ",")))
	delete(r.topics, name)
}

// topicList returns the mirrored topics and their partition counts, sorted.
func (r *reader) topicList() []wire.Topic {
	out := make([]wire.Topic, 0, len(r.topics))
	for name, n := range r.topics {
		out = append(out, wire.Topic{Name: name, Partitions: n})
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Name < out[j].Name })
	return out
}

// listOffsets returns the first and last (high watermark) offsets of a partition.
func (r *reader) listOffsets(ctx context.Context, key buffer.PartitionKey) (first, last int64, err error) {
	return kafkautil.Offsets(ctx, r.client, key.Topic, key.Partition, kafka.ReadCommitted)
}

// fetch runs one fetch round over every ready partition, one request per
// leader broker, waiting at most maxWait for data, and appends what it read
// to b.
func (r *reader) fetch(ctx context.Context, maxWait time.Duration, b *batch) error {
	now := time.Now()
	byLeader := make(map[int][]*partition)
	for _, p := range r.parts {
		if now.Before(p.retryAt) {
			continue
		}
		if p.next < 0 {
			if err := r.initPartition(ctx, p); err != nil {
				wait := r.cfg.MetadataInterval
				if !errors.Is(err, errIncarnationHeld) { // logged once where decided
					wait = min(initRetry<<min(p.initFailures, 16), wait)
					p.initFailures++
					r.log.Warn("cannot find start offset; will retry", slog.String("topic", p.key.Topic),
						slog.Int("partition", int(p.key.Partition)), slog.Duration("retry_in", wait), slog.Any("error", err))
				}
				p.retryAt = now.Add(wait)
				continue
			}
			p.initFailures = 0
		}
		byLeader[p.leader] = append(byLeader[p.leader], p)
	}
	if len(byLeader) == 0 {
		// Nothing to read yet: wait as a fetch would, so the loop does not spin.
		t := time.NewTimer(maxWait)
		defer t.Stop()
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-t.C:
		}
		return nil
	}

	type result struct {
		parts []*partition
		res   *fetchapi.Response
		last  map[buffer.PartitionKey]int64
		err   error
	}
	// A broker fills the partitions of a request in request order, and only
	// the first one with data may exceed its share of the response (KIP-74):
	// with a backlog of batches larger than the share, only that one gets
	// data. Rotate the order every round, so that every partition comes
	// first once every len(parts) rounds.
	r.round++
	results := make([]result, 0, len(byLeader))
	for _, parts := range byLeader {
		sort.Slice(parts, func(i, j int) bool {
			if parts[i].key.Topic != parts[j].key.Topic {
				return parts[i].key.Topic < parts[j].key.Topic
			}
			return parts[i].key.Partition < parts[j].key.Partition
		})
		k := r.round % len(parts)
		parts = append(parts[k:len(parts):len(parts)], parts[:k]...)
		results = append(results, result{parts: parts})
	}
	var wg sync.WaitGroup
	for i := range results {
		wg.Add(1)
		go func(res *result) {
			defer wg.Done()
			res.res, res.last, res.err = r.roundTrip(ctx, res.parts, maxWait)
		}(&results[i])
	}
	wg.Wait()

	var firstErr error
	for _, res := range results {
		if res.err != nil {
			if ctx.Err() != nil {
				return ctx.Err()
			}
			r.m.fetchErrors.Inc()
			r.log.Warn("fetch from edge failed; will retry", slog.Any("error", res.err))
			for _, p := range res.parts {
				p.retryAt = now.Add(time.Second)
			}
			// The leader may have moved: kafka-go does not refresh its metadata
			// cache on NOT_LEADER (kafka-go #1221), so ask again soon.
			r.lastMeta = time.Time{}
			if firstErr == nil {
				firstErr = res.err
			}
			continue
		}
		if err := r.process(ctx, res.parts, res.res, res.last, b); err != nil {
			return err
		}
	}
	if len(results) == 1 && firstErr != nil {
		// The only broker failed: back off here rather than spin.
		t := time.NewTimer(time.Second)
		defer t.Stop()
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-t.C:
		}
	}
	return nil
}

func (r *reader) roundTrip(ctx context.Context, parts []*partition, maxWait time.Duration) (*fetchapi.Response, map[buffer.PartitionKey]int64, error) {
	req := &fetchapi.Request{
		ReplicaID:      -1,
		MaxWaitTime:    int32(maxWait / time.Millisecond),
		MinBytes:       1,
		MaxBytes:       int32(r.cfg.FetchMaxBytes),
		IsolationLevel: 1, // read_committed: stop at the last stable offset
		SessionID:      0,
		SessionEpoch:   -1, // sessionless full fetch
	}
	perPart := int32(r.cfg.FetchMaxBytes / len(parts))
	if perPart < 64<<10 {
		perPart = 64 << 10
	}
	for _, p := range parts {
		if n := len(req.Topics); n == 0 || req.Topics[n-1].Topic != p.key.Topic {
			req.Topics = append(req.Topics, fetchapi.RequestTopic{Topic: p.key.Topic})
		}
		t := &req.Topics[len(req.Topics)-1]
		t.Partitions = append(t.Partitions, fetchapi.RequestPartition{
			Partition:          p.key.Partition,
			CurrentLeaderEpoch: -1,
			FetchOffset:        p.next,
			LogStartOffset:     -1,
			PartitionMaxBytes:  perPart,
		})
	}
	rctx, cancel := context.WithTimeout(ctx, maxWait+30*time.Second)
	defer cancel()
	r.correlationID++
	raw := &rawFetch{Request: req, clientID: r.clientID, correlationID: r.correlationID}
	msg, err := r.client.Transport.RoundTrip(rctx, r.client.Addr, raw)
	if err != nil {
		return nil, nil, fmt.Errorf("fetch: %w", err)
	}
	res, ok := msg.(*fetchapi.Response)
	if !ok {
		return nil, nil, fmt.Errorf("fetch: unexpected response type %T", msg)
	}
	if res.ErrorCode != 0 {
		return nil, nil, fmt.Errorf("fetch: %w", kafka.Error(res.ErrorCode))
	}
	return res, raw.last, nil
}

// initPartition sets the start offset of a partition the buffer knows nothing about.
func (r *reader) initPartition(ctx context.Context, p *partition) error {
	first, last, err := r.listOffsets(ctx, p.key)
	if err != nil {
		return err
	}
	if r.checkStart != nil {
		start, err := r.checkStart(ctx, p.key, first, last)
		if err != nil {
			return err
		}
		if start >= 0 {
			p.next = start
			return nil
		}
	}
	if r.cfg.StartOffset == StartLatest {
		p.next = last
	} else {
		p.next = first
	}
	r.log.Info("starting partition", slog.String("topic", p.key.Topic), slog.Int("partition", int(p.key.Partition)),
		slog.Int64("offset", p.next), slog.String("start", r.cfg.StartOffset.String()))
	return nil
}

func (r *reader) process(ctx context.Context, parts []*partition, res *fetchapi.Response, last map[buffer.PartitionKey]int64, b *batch) error {
	byKey := make(map[buffer.PartitionKey]*partition, len(parts))
	for _, p := range parts {
		byKey[p.key] = p
	}
	type answer struct {
		p  *partition
		rp *fetchapi.ResponsePartition
	}
	var answers []answer
	for ti := range res.Topics {
		t := &res.Topics[ti]
		for pi := range t.Partitions {
			rp := &t.Partitions[pi]
			p := byKey[buffer.PartitionKey{Topic: t.Topic, Partition: rp.Partition}]
			if p == nil {
				closeRecords(rp.RecordSet.Records)
				continue
			}
			answers = append(answers, answer{p, rp})
		}
	}
	// The answers come in request order, which rotates every round: no
	// partition's records always come last in the chunks.
	var fatal error
	for _, a := range answers {
		p, rp := a.p, a.rp
		{
			if fatal != nil {
				closeRecords(rp.RecordSet.Records)
				continue
			}
			if rp.ErrorCode != 0 {
				closeRecords(rp.RecordSet.Records)
				r.partitionError(ctx, p, rp, b)
				continue
			}
			p.stuckLogged = false
			r.m.highWatermark.WithLabelValues(p.key.Topic, itoa(p.key.Partition)).Set(float64(rp.LastStableOffset))
			next, err := r.readPartition(p, rp, b)
			if l, ok := last[p.key]; ok && err == nil && l+1 > next {
				// Every batch of the response was read: move past the last
				// one's last offset, even if compaction removed the records
				// at its end.
				next = l + 1
			}
			var fe *flushError
			if errors.As(err, &fe) {
				fatal = fe.err
			} else if err != nil {
				r.log.Warn("decode fetched records; will refetch", slog.String("topic", p.key.Topic),
					slog.Int("partition", int(p.key.Partition)), slog.Int64("offset", p.next), slog.Any("error", err))
				p.retryAt = time.Now().Add(time.Second)
			}
			if next > p.next {
				p.next = next
				b.next[p.key] = next
				r.m.lag.WithLabelValues(p.key.Topic, itoa(p.key.Partition)).Set(float64(rp.LastStableOffset - next))
			}
		}
	}
	return fatal
}

// flushError carries an error of the full callback out of readPartition:
// the buffer refused a chunk, which ends the read loop.
type flushError struct{ err error }

func (e *flushError) Error() string { return e.err.Error() }

// partitionError handles a per-partition fetch error.
func (r *reader) partitionError(ctx context.Context, p *partition, rp *fetchapi.ResponsePartition, b *batch) {
	kerr := kafka.Error(rp.ErrorCode)
	if rp.ErrorCode != errCodeOffsetOutOfRange {
		if !p.stuckLogged {
			r.log.Warn("edge partition not readable; will retry", slog.String("topic", p.key.Topic),
				slog.Int("partition", int(p.key.Partition)), slog.Any("error", kerr))
			p.stuckLogged = true
		}
		p.retryAt = time.Now().Add(time.Second)
		r.lastMeta = time.Time{} // NOT_LEADER and friends: refresh metadata (kafka-go #1221)
		return
	}
	first, last, err := r.listOffsets(ctx, p.key)
	if err != nil {
		r.log.Warn("offset out of range and cannot list offsets; will retry", slog.String("topic", p.key.Topic),
			slog.Int("partition", int(p.key.Partition)), slog.Any("error", err))
		p.retryAt = time.Now().Add(time.Second)
		return
	}
	switch {
	case p.next < first:
		loss := buffer.Loss{
			Range:  buffer.Range{Topic: p.key.Topic, Partition: p.key.Partition, First: p.next, Last: first - 1, Records: first - p.next},
			Reason: wire.LossReasonEdgeRetention,
			At:     time.Now(),
		}
		r.log.Error("edge retention deleted records before they were read; they are lost",
			slog.String("topic", p.key.Topic), slog.Int("partition", int(p.key.Partition)),
			slog.Int64("first_lost_offset", p.next), slog.Int64("last_lost_offset", first-1),
			slog.Int64("offsets", first-p.next))
		r.m.lost.WithLabelValues(wire.LossReasonEdgeRetention).Add(float64(first - p.next))
		b.losses = append(b.losses, loss)
		b.lossNext[p.key] = first
		// p.next moves only after the loss is persisted (skipLosses); until
		// then this partition is not fetched again.
		p.retryAt = time.Now().Add(time.Hour)
	case p.next > last:
		// The partition is shorter than what we already read: the topic was
		// deleted and recreated, or the edge cluster was rebuilt. Never guess:
		// offsets below our stored one would be dropped as duplicates.
		if !p.stuckLogged {
			r.log.Error("stored offset is beyond the end of the edge partition; not reading it (was the topic recreated?)",
				slog.String("topic", p.key.Topic), slog.Int("partition", int(p.key.Partition)),
				slog.Int64("stored_offset", p.next), slog.Int64("log_end_offset", last))
			p.stuckLogged = true
		}
		p.retryAt = time.Now().Add(r.cfg.MetadataInterval)
	default:
		// Raced with retention or a leader change; fetch again.
		p.retryAt = time.Now().Add(100 * time.Millisecond)
	}
}

// readPartition filters one partition's record set and appends the
// committed records at or after p.next to b. It returns the offset after the
// last record or control marker seen.
//
// Aborted transactions are filtered on the client with the algorithm of the
// Java consumer, because kafka-go hands aborted records and control records
// to the caller (kafka-go #1332).
func (r *reader) readPartition(p *partition, rp *fetchapi.ResponsePartition, b *batch) (int64, error) {
	next := p.next
	if rp.RecordSet.Records == nil {
		return next, nil
	}
	var batches []protocol.RecordReader
	if stream, ok := rp.RecordSet.Records.(*protocol.RecordStream); ok {
		batches = stream.Records
	} else {
		batches = []protocol.RecordReader{rp.RecordSet.Records}
	}
	filter := committed.NewAbortFilter(rp.AbortedTransactions)
	var firstErr error
	// open is the index in b.losses of the loss range the last refused
	// record went to, while no record was shipped since; -1 otherwise.
	open, firstLoss := -1, len(b.losses)
	defer func() { r.logRefused(b.losses[firstLoss:]) }()
	for _, rb := range batches {
		var (
			skip bool
			recs protocol.RecordReader = rb
		)
		switch bt := rb.(type) {
		case *protocol.ControlBatch:
			cr, err := bt.ReadControlRecord()
			filter.Marker(bt.ProducerID, bt.BaseOffset, err == nil && cr.Type == 0) // ABORT ends an aborted transaction
			if bt.BaseOffset+1 > next {
				next = bt.BaseOffset + 1
			}
			r.m.skipped.WithLabelValues("control").Inc()
			closeRecords(bt.Records)
			continue
		case *protocol.RecordBatch:
			skip = filter.Skip(bt.ProducerID, bt.BaseOffset, bt.Attributes.Transactional())
		}
		for {
			rec, err := recs.ReadRecord()
			if err != nil {
				if !errors.Is(err, io.EOF) && firstErr == nil {
					firstErr = err
				}
				break
			}
			off := rec.Offset
			if off < p.next || skip {
				if skip && off >= p.next {
					r.m.skipped.WithLabelValues("aborted").Inc()
				}
				closeRecord(rec)
				if off+1 > next {
					next = off + 1
				}
				continue
			}
			wr, err := toWire(p.key, rec)
			closeRecord(rec)
			if err != nil {
				if firstErr == nil {
					firstErr = err
				}
				break
			}
			if off+1 > next {
				next = off + 1
			}
			if provenance.Has(wr.Headers) {
				// Mirrored from elsewhere: shipping it again could build a
				// cycle. Not shipped, and reported like any loss.
				r.m.skipped.WithLabelValues("provenance").Inc()
				r.refuse(b, p.key, off, wire.LossReasonProvenance, &open)
				continue
			}
			if !wire.ValidTimestamp(wr.Timestamp) {
				// kafka-go would write it wrapped (time.UnixNano overflows).
				r.refuse(b, p.key, off, wire.LossReasonTimestamp, &open)
				continue
			}
			open = -1
			size := wire.RecordSize(&wr)
			// Cut before a record that would overfill the chunk, not after:
			// the chunk writer splits a batch at BatchBytes, and a batch one
			// record over it became a full chunk and a chunk of one record.
			// A batch that ends the response full is cut by the read loop.
			if r.full != nil && len(b.records) > 0 && b.rawSize+size > r.cfg.BatchBytes {
				if err := r.full(); err != nil {
					closeRecords(recs)
					return next, &flushError{err}
				}
			}
			b.records = append(b.records, wr)
			b.rawSize += size
			r.m.recordsRead.Inc()
		}
		if firstErr != nil {
			break
		}
	}
	return next, firstErr
}

// refuse records a record that is read but never shipped as a loss with
// reason, extending the open range (see readPartition) when it has the same
// reason. Losses are persisted with the offsets past them, and no chunk
// advances its partition past a loss not yet persisted (Agent.flush).
func (r *reader) refuse(b *batch, key buffer.PartitionKey, off int64, reason string, open *int) {
	r.m.lost.WithLabelValues(reason).Inc()
	if *open >= 0 && b.losses[*open].Reason == reason {
		l := &b.losses[*open]
		l.Range.Last = off
		l.Range.Records++
		return
	}
	b.losses = append(b.losses, buffer.Loss{
		Range:  buffer.Range{Topic: key.Topic, Partition: key.Partition, First: off, Last: off, Records: 1},
		Reason: reason,
		At:     time.Now(),
	})
	*open = len(b.losses) - 1
}

// logRefused logs the loss ranges of records refused while reading one
// partition's answer.
func (r *reader) logRefused(losses []buffer.Loss) {
	for _, l := range losses {
		msg := "records carry edgemirror provenance (mirrored from elsewhere); not shipped, reported as lost"
		if l.Reason == wire.LossReasonTimestamp {
			msg = "record timestamps outside the years 1678 to 2262 cannot be written to Kafka exactly; not shipped, reported as lost"
		}
		r.log.Warn(msg, slog.String("topic", l.Range.Topic), slog.Int("partition", int(l.Range.Partition)),
			slog.Int64("first_offset", l.Range.First), slog.Int64("last_offset", l.Range.Last),
			slog.Int64("records", l.Range.Records), slog.String("reason", l.Reason))
	}
}

// toWire copies a fetched record into a wire.Record. Null and empty keys
// and values stay distinct.
func toWire(key buffer.PartitionKey, rec *protocol.Record) (wire.Record, error) {
	k, err := protocol.ReadAll(rec.Key)
	if err != nil {
		return wire.Record{}, fmt.Errorf("read key: %w", err)
	}
	v, err := protocol.ReadAll(rec.Value)
	if err != nil {
		return wire.Record{}, fmt.Errorf("read value: %w", err)
	}
	var hs []wire.Header
	if len(rec.Headers) > 0 {
		hs = make([]wire.Header, len(rec.Headers))
		for i, h := range rec.Headers {
			var val []byte
			if h.Value != nil {
				val = append([]byte{}, h.Value...)
			}
			hs[i] = wire.Header{Key: h.Key, Value: val}
		}
	}
	ts := rec.Time.UnixMilli()
	return wire.Record{
		Topic:     key.Topic,
		Partition: key.Partition,
		Offset:    rec.Offset,
		Timestamp: ts,
		Key:       k,
		Value:     v,
		Headers:   hs,
	}, nil
}

func closeRecord(rec *protocol.Record) {
	if rec.Key != nil {
		rec.Key.Close()
	}
	if rec.Value != nil {
		rec.Value.Close()
	}
}

// closeRecords drains a record reader so that its pooled pages are released.
func closeRecords(rr protocol.RecordReader) {
	if rr == nil {
		return
	}
	for {
		rec, err := rr.ReadRecord()
		if err != nil {
			return
		}
		closeRecord(rec)
	}
}
