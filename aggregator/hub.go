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

	"github.com/edgemirror/edgemirror/internal/kafkautil"
	"github.com/edgemirror/edgemirror/internal/provenance"
	"github.com/edgemirror/edgemirror/internal/wire"
)

// sourceKey identifies a source partition of one edge.
type sourceKey struct {
	edge      string
	topic     string
	partition int32
}

// watermark is the highest source offset of a source partition known to be
// in the hub.
type watermark struct {
	known  bool
	offset int64 // -1: nothing in the hub yet
	// unsettled is set after a produce whose outcome is unknown: the hub may
	// still append it, so the tail is read only after it stops moving.
	unsettled bool
}

// hub writes records to the hub cluster with kafka-go's Client.Produce: one
// batch for one partition per request, acks=all, and an exact answer.
// kafka-go's Writer is not used because it ignores Message.Partition and
// keeps sending after a failed batch (see the package notes).
type hub struct {
	cfg    *Config
	log    *slog.Logger
	client *kafka.Client
	m      *metrics

	mu     sync.Mutex
	topics map[string]int32 // hub topics known to have at least this many partitions
	wms    map[sourceKey]*watermark
}

func newHub(cfg *Config, log *slog.Logger, client *kafka.Client, m *metrics) *hub {
	return &hub{cfg: cfg, log: log, client: client, m: m,
		topics: make(map[string]int32), wms: make(map[sourceKey]*watermark)}
}

// applyResult counts what one chunk did.
type applyResult struct {
	written, duplicates int
}

// group is the run of a chunk's records for one source partition, in order.
type group struct {
	key     sourceKey
	dest    string
	records []wire.Record
}

// apply writes the records of a decoded chunk that the hub does not have
// yet. The caller serialises calls for the same edge.
func (h *hub) apply(ctx context.Context, edge string, c *wire.Chunk) (applyResult, error) {
	parts := make(map[string]int32, len(c.Topics))
	for _, t := range c.Topics {
		parts[t.Name] = t.Partitions
	}
	var groups []*group
	index := make(map[sourceKey]*group)
	for i := range c.Records {
		r := &c.Records[i]
		k := sourceKey{edge: edge, topic: r.Topic, partition: r.Partition}
		g := index[k]
		if g == nil {
			dest, err := destTopic(h.cfg.TopicTemplate, edge, r.Topic)
			if err != nil {
				return applyResult{}, &httpError{status: 422, msg: err.Error()}
			}
			g = &group{key: k, dest: dest}
			index[k] = g
			groups = append(groups, g)
		}
		if n := len(g.records); n > 0 && g.records[n-1].Offset >= r.Offset {
			return applyResult{}, errBadRequest(fmt.Sprintf("offsets of %s/%d are not increasing in the chunk", r.Topic, r.Partition))
		}
		g.records = append(g.records, *r)
	}
	for _, g := range groups {
		if err := h.ensureTopic(ctx, g.dest, parts[g.key.topic]); err != nil {
			return applyResult{}, err
		}
	}
	var (
		mu  sync.Mutex
		res applyResult
	)
	eg, ectx := errgroup.WithContext(ctx)
	eg.SetLimit(h.cfg.ParallelPartitions)
	for _, g := range groups {
		eg.Go(func() error {
			w, d, err := h.writeGroup(ectx, g)
			mu.Lock()
			res.written += w
			res.duplicates += d
			mu.Unlock()
			return err
		})
	}
	err := eg.Wait()
	return res, err
}

// writeGroup writes the records of one source partition above its
// watermark, in batches of at most HubBatchBytes.
func (h *hub) writeGroup(ctx context.Context, g *group) (written, dups int, err error) {
	wm, err := h.watermark(ctx, g.key, g.dest)
	if err != nil {
		return 0, 0, err
	}
	recs := g.records
	for len(recs) > 0 && recs[0].Offset <= wm.offset {
		recs = recs[1:]
		dups++
	}
	h.m.duplicates.Add(float64(dups))
	for len(recs) > 0 {
		n, size := 0, 0
		for n < len(recs) && (n == 0 || size+wire.RecordSize(&recs[n]) <= h.cfg.HubBatchBytes) {
			size += wire.RecordSize(&recs[n])
			n++
		}
		if err := h.produce(ctx, g, recs[:n]); err != nil {
			if isCause(err, kafka.UnknownTopicOrPartition) {
				// The hub topic may have been deleted: look it up (and
				// create it) again, and read its watermark again.
				h.mu.Lock()
				delete(h.topics, g.dest)
				wm.known = false
				h.mu.Unlock()
			}
			if !notAppended(err) {
				// Unknown outcome: the watermark must be read from the hub
				// again, after the partition settles, before anything else
				// is written.
				h.mu.Lock()
				wm.known, wm.unsettled = false, true
				h.mu.Unlock()
			}
			return written, dups, err
		}
		wm.offset = recs[n-1].Offset
		written += n
		h.m.written.Add(float64(n))
		recs = recs[n:]
	}
	return written, dups, nil
}

// notAppendedErrors are broker answers that mean the request was refused
// before anything was appended, so the watermark is still exact. The first
// produce after creating a topic often gets NOT_LEADER_OR_FOLLOWER on real
// brokers although metadata already names a leader.
var notAppendedErrors = []error{
	kafka.NotLeaderForPartition, kafka.UnknownTopicOrPartition, kafka.LeaderNotAvailable, kafka.NotEnoughReplicas,
	kafka.MessageSizeTooLarge, kafka.RecordListTooLarge, kafka.InvalidRecord, kafka.InvalidTimestamp,
	kafka.TopicAuthorizationFailed,
}

// isCause reports whether the hub broker's answer behind err is target.
func isCause(err, target error) bool {
	var he *httpError
	return errors.As(err, &he) && he.cause != nil && errors.Is(he.cause, target)
}

// notAppended reports whether a produce error is a broker answer that
// guarantees nothing was appended. Transport errors never are.
func notAppended(err error) bool {
	var he *httpError
	if !errors.As(err, &he) || he.cause == nil {
		return false
	}
	for _, e := range notAppendedErrors {
		if errors.Is(he.cause, e) {
			return true
		}
	}
	return false
}

// permanentProduceErrors are hub answers that retrying cannot fix.
var permanentProduceErrors = []error{
	kafka.MessageSizeTooLarge, kafka.RecordListTooLarge, kafka.InvalidRecord, kafka.InvalidTimestamp,
	kafka.TopicAuthorizationFailed,
}

func (h *hub) produce(ctx context.Context, g *group, recs []wire.Record) error {
	out := make([]kafka.Record, len(recs))
	for i := range recs {
		r := &recs[i]
		hs := make([]kafka.Header, 0, len(r.Headers)+4)
		for _, x := range r.Headers {
			hs = append(hs, kafka.Header{Key: x.Key, Value: x.Value})
		}
		for _, x := range provenance.Append(nil, provenance.Origin{Edge: g.key.edge, Topic: g.key.topic,
			Partition: g.key.partition, Offset: r.Offset}) {
			hs = append(hs, kafka.Header{Key: x.Key, Value: x.Value})
		}
		out[i] = kafka.Record{
			Time:    time.UnixMilli(r.Timestamp),
			Key:     kafka.NewBytes(r.Key), // nil stays null, empty stays empty
			Value:   kafka.NewBytes(r.Value),
			Headers: hs,
		}
	}
	start := time.Now()
	res, err := h.client.Produce(ctx, &kafka.ProduceRequest{
		Topic:        g.dest,
		Partition:    int(g.key.partition),
		RequiredAcks: kafka.RequireAll,
		Compression:  h.cfg.HubCompression,
		Records:      kafka.NewRecordReader(out...),
	})
	h.m.produceDuration.Observe(time.Since(start).Seconds())
	var brokerErr error
	if err == nil && res.Error != nil {
		err, brokerErr = res.Error, res.Error
	}
	if err == nil {
		return nil
	}
	h.m.produceErrors.Inc()
	h.log.Warn("produce to hub failed", slog.String("topic", g.dest), slog.Int("partition", int(g.key.partition)),
		slog.Int64("first_source_offset", recs[0].Offset), slog.Int("records", len(recs)), slog.Any("error", err))
	for _, p := range permanentProduceErrors {
		if errors.Is(err, p) {
			return &httpError{status: 422, cause: brokerErr,
				msg: fmt.Sprintf("hub refused records of %s/%d: %v", g.key.topic, g.key.partition, err)}
		}
	}
	he := errUnavailable(fmt.Sprintf("produce to hub %s/%d: %v", g.dest, g.key.partition, err), 1)
	he.cause = brokerErr
	return he
}

// watermark returns the watermark of k, deriving it from the hub when it is
// not known in this process.
func (h *hub) watermark(ctx context.Context, k sourceKey, dest string) (*watermark, error) {
	h.mu.Lock()
	wm := h.wms[k]
	if wm == nil {
		wm = &watermark{}
		h.wms[k] = wm
	}
	known, unsettled := wm.known, wm.unsettled
	h.mu.Unlock()
	if known {
		return wm, nil
	}
	if unsettled {
		if err := h.settle(ctx, dest, k.partition); err != nil {
			return nil, err
		}
	}
	off, err := h.derive(ctx, k, dest)
	if err != nil {
		if isCause(err, kafka.UnknownTopicOrPartition) {
			h.mu.Lock()
			delete(h.topics, dest) // deleted under us: look it up again
			h.mu.Unlock()
		}
		return nil, err
	}
	h.mu.Lock()
	wm.known, wm.unsettled, wm.offset = true, false, off
	h.mu.Unlock()
	h.m.derivations.Inc()
	h.log.Debug("watermark derived from hub", slog.String("edge", k.edge), slog.String("topic", k.topic),
		slog.Int("partition", int(k.partition)), slog.Int64("offset", off))
	return wm, nil
}

// offsets returns the first and high-watermark offsets of a hub partition.
func (h *hub) offsets(ctx context.Context, topic string, partition int32) (first, last int64, err error) {
	first, last, err = kafkautil.Offsets(ctx, h.client, topic, partition, kafka.ReadUncommitted)
	if err != nil {
		he := errUnavailable("hub: "+err.Error(), 1)
		var ke kafka.Error
		if errors.As(err, &ke) {
			he.cause = ke
		}
		return 0, 0, he
	}
	return first, last, nil
}

// settle waits until the high watermark of a hub partition has not moved
// for SettleTime, so that a produce in flight during an error has landed
// (or never will) before the tail is read.
func (h *hub) settle(ctx context.Context, topic string, partition int32) error {
	_, last, err := h.offsets(ctx, topic, partition)
	if err != nil {
		return err
	}
	for i := 0; i < 30; i++ {
		t := time.NewTimer(h.cfg.SettleTime)
		select {
		case <-ctx.Done():
			t.Stop()
			return ctx.Err()
		case <-t.C:
		}
		_, now, err := h.offsets(ctx, topic, partition)
		if err != nil {
			return err
		}
		if now == last {
			return nil
		}
		last = now
	}
	return errUnavailable(fmt.Sprintf("hub partition %s/%d keeps moving; not writing to it yet", topic, partition), 5)
}

// derive reads the tail of the destination partition backwards, in growing
// windows, until it finds a record whose provenance is k, and returns its
// source offset (-1 if the partition holds none).
func (h *hub) derive(ctx context.Context, k sourceKey, dest string) (int64, error) {
	first, last, err := h.offsets(ctx, dest, k.partition)
	if err != nil {
		return 0, err
	}
	window := int64(16)
	end := last
	for end > first {
		start := end - window
		if start < first {
			start = first
		}
		best, err := h.scan(ctx, k, dest, start, end)
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

// scan reads hub records in [start, end) and returns the highest source
// offset among those whose provenance is k, or -1.
func (h *hub) scan(ctx context.Context, k sourceKey, dest string, start, end int64) (int64, error) {
	best := int64(-1)
	for off := start; off < end; {
		res, err := h.client.Fetch(ctx, &kafka.FetchRequest{
			Topic: dest, Partition: int(k.partition), Offset: off,
			MinBytes: 1, MaxBytes: 8 << 20, MaxWait: 100 * time.Millisecond,
		})
		if err == nil && res.Error != nil {
			err = res.Error
		}
		if err != nil {
			return 0, errUnavailable(fmt.Sprintf("read tail of hub %s/%d: %v", dest, k.partition, err), 1)
		}
		progressed := false
		for {
			rec, err := res.Records.ReadRecord()
			if err != nil {
				break
			}
			// Client.Fetch returns whole batches, so records below the
			// requested offset come back too: skip them.
			if rec.Offset < off || rec.Offset >= end {
				continue
			}
			if o, ok := provenance.Parse(rec.Headers); ok && o.Edge == k.edge && o.Topic == k.topic &&
				o.Partition == k.partition && o.Offset > best {
				best = o.Offset
			}
			off = rec.Offset + 1
			progressed = true
		}
		if !progressed {
			// Only compacted-away or control records left in the range.
			break
		}
	}
	return best, nil
}
