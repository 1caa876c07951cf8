package main

import (
	"context"
	"errors"
	"fmt"
	"sort"
	"sync"
	"sync/atomic"
	"time"

	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kgo"
	"github.com/twmb/franz-go/pkg/kmsg"
)

// producer writes workload records to the edge cluster on its plain
// listener (never across the WAN), with the row's edge compression.
type producer struct {
	cl     *kgo.Client
	wl     workload
	failed atomic.Int64
	errMu  sync.Mutex
	err    error
}

func newProducer(brokers, compression string, wl workload, linger time.Duration) (*producer, error) {
	codec := kgo.NoCompression()
	switch compression {
	case "none":
	case "lz4":
		codec = kgo.Lz4Compression()
	default:
		return nil, fmt.Errorf("unknown edge compression %q", compression)
	}
	cl, err := kgo.NewClient(
		kgo.SeedBrokers(brokers),
		kgo.ProducerBatchCompression(codec),
		kgo.ProducerLinger(linger),
		kgo.RequiredAcks(kgo.AllISRAcks()),
		kgo.ProducerBatchMaxBytes(1<<20),
		kgo.MaxBufferedRecords(50_000),
		kgo.RecordRetries(1<<20),
	)
	if err != nil {
		return nil, err
	}
	return &producer{cl: cl, wl: wl}, nil
}

func (p *producer) close() { p.cl.Close() }

func (p *producer) record(topic string, id int64, ts time.Time) *kgo.Record {
	k, v := p.wl.make(id, rngFor(id), nil, nil)
	r := &kgo.Record{Topic: topic, Value: v, Timestamp: ts}
	if len(k) > 0 {
		r.Key = k
	}
	return r
}

func (p *producer) done(_ *kgo.Record, err error) {
	if err != nil {
		p.failed.Add(1)
		p.errMu.Lock()
		if p.err == nil {
			p.err = err
		}
		p.errMu.Unlock()
	}
}

// produce sends records with ids [from, from+n) as fast as the edge takes
// them, and waits until all are acknowledged.
func (p *producer) produce(ctx context.Context, topic string, from, n int64) error {
	for id := from; id < from+n; id++ {
		p.cl.Produce(ctx, p.record(topic, id, time.Now()), p.done)
	}
	return p.flush(ctx)
}

func (p *producer) flush(ctx context.Context) error {
	if err := p.cl.Flush(ctx); err != nil {
		return err
	}
	p.errMu.Lock()
	defer p.errMu.Unlock()
	if p.err != nil {
		return fmt.Errorf("%d records failed, first: %w", p.failed.Load(), p.err)
	}
	return nil
}

// paced produces rate records per second with ids from `from`, stamped
// with the time they are handed to the client, until ctx ends or stop is
// closed. It returns how many it produced.
func (p *producer) paced(ctx context.Context, stop <-chan struct{}, topic string, from int64, rate int) int64 {
	const tick = 10 * time.Millisecond
	start := time.Now()
	var sent int64
	t := time.NewTicker(tick)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return sent
		case <-stop:
			return sent
		case now := <-t.C:
			due := int64(now.Sub(start).Seconds() * float64(rate))
			for ; sent < due; sent++ {
				p.cl.Produce(ctx, p.record(topic, from+sent, time.Now()), p.done)
			}
		}
	}
}

// createTopics creates topics with partitions on brokers.
func createTopics(ctx context.Context, brokers string, partitions int32, topics ...string) error {
	cl, err := kgo.NewClient(kgo.SeedBrokers(brokers))
	if err != nil {
		return err
	}
	defer cl.Close()
	res, err := kadm.NewClient(cl).CreateTopics(ctx, partitions, 1, nil, topics...)
	if err != nil {
		return err
	}
	for _, r := range res {
		if r.Err != nil && !errors.Is(r.Err, kerr.TopicAlreadyExists) {
			return fmt.Errorf("create %s: %w", r.Topic, r.Err)
		}
	}
	return nil
}

// hubClient answers "how many records does this hub topic hold".
type hubClient struct {
	addr string
	cl   *kgo.Client
	adm  *kadm.Client
}

func newHubClient(brokers string) (*hubClient, error) {
	cl, err := kgo.NewClient(kgo.SeedBrokers(brokers))
	if err != nil {
		return nil, err
	}
	return &hubClient{addr: brokers, cl: cl, adm: kadm.NewClient(cl)}, nil
}

// edgeTail names the edge topic that a hub topic mirrors, so that
// waitCount can tell when the hub holds the edge's last records.
type edgeTail struct {
	addr, topic string
	wl          workload
	// produced reports whether the edge producer has had every record of
	// the run acknowledged (nil: it has).
	produced func() bool
	ids      map[int32]int64 // the edge's last ids, read once produced
}

func (h *hubClient) close() { h.cl.Close() }

// committedCount is what a read_committed consumer of topic may read now:
// the sum of its partitions' last stable offsets (0 while it does not
// exist), those offsets, and whether every partition's last stable offset
// is its end offset (no transaction open, nothing appended but not yet
// visible).
//
// Offsets count records plus transaction markers (one per transaction and
// partition), so a transactional writer's count can reach a record count
// early; waitCount therefore also compares the partitions' last records
// with the edge's, and verify's lastData checks afterwards that the count
// was not reached early (checkCommitted).
func (h *hubClient) committedCount(ctx context.Context, topic string) (n int64, stable map[int32]int64, settled bool, err error) {
	ctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	lso, err := h.adm.ListCommittedOffsets(ctx, topic)
	if err != nil {
		return 0, nil, false, err
	}
	ends, err := h.adm.ListEndOffsets(ctx, topic)
	if err != nil {
		return 0, nil, false, err
	}
	stable = map[int32]int64{}
	settled = true
	lso.Each(func(o kadm.ListedOffset) {
		if o.Err != nil {
			settled = false
			return
		}
		n += o.Offset
		stable[o.Partition] = o.Offset
		if e, ok := ends.Lookup(topic, o.Partition); !ok || e.Err != nil || e.Offset != o.Offset {
			settled = false
		}
	})
	return n, stable, settled, nil
}

// waitCount polls topic every 50 ms until a read_committed consumer can
// read the whole run (complete), the deadline passes or check reports a
// dead process. It returns when that was first seen and the last stable
// offsets then: records of a transaction count only once it is committed,
// as hub consumers see them.
//
// The count of committed offsets (committedCount) gates the check: it
// reaches want no later than the records do, but with many transactions
// its markers make it reach want early, by hundreds of offsets on a
// 1,000,000-record row. So once it has, and no transaction is open, the
// last record of each hub partition is compared with the edge's.
func (h *hubClient) waitCount(ctx context.Context, topic string, want int64, timeout time.Duration, check func() error, edge *edgeTail) (done time.Time, stable map[int32]int64, err error) {
	deadline := time.Now().Add(timeout)
	var (
		have    int64
		lastErr error
	)
	for {
		n, st, settled, cerr := h.committedCount(ctx, topic)
		now := time.Now()
		if cerr == nil {
			have = n
			if n >= want && settled {
				ok, terr := h.complete(ctx, topic, st, edge)
				if ok {
					return now, st, nil
				}
				lastErr = terr
			}
		}
		if check != nil {
			if err := check(); err != nil {
				return now, nil, err
			}
		}
		if now.After(deadline) {
			if lastErr != nil {
				return now, nil, fmt.Errorf("hub topic %s has %d of %d offsets committed after %s; last check of its tail: %w", topic, have, want, timeout, lastErr)
			}
			return now, nil, fmt.Errorf("hub topic %s has %d of %d records committed after %s", topic, have, want, timeout)
		}
		if ctx.Err() != nil {
			return now, nil, ctx.Err()
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// complete reports whether every partition of the hub topic ends, below
// its last stable offset, with the same record as the edge topic's
// partition: the edge producer writes ids in order and both systems keep
// each partition's order, so the hub then holds the whole run (verify
// checks that record by record afterwards).
func (h *hubClient) complete(ctx context.Context, topic string, stable map[int32]int64, edge *edgeTail) (bool, error) {
	if edge.produced != nil && !edge.produced() {
		return false, nil
	}
	ctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	if edge.ids == nil {
		ids, err := lastIDs(ctx, edge.addr, edge.topic, nil, edge.wl)
		if err != nil {
			return false, fmt.Errorf("edge %s: %w", edge.topic, err)
		}
		edge.ids = ids
	}
	got, err := lastIDs(ctx, h.addr, topic, stable, edge.wl)
	if err != nil {
		return false, err
	}
	return tailsMatch(got, edge.ids), nil
}

// tailsMatch reports whether the hub's last id of every partition the
// edge has records in is the edge's.
func tailsMatch(hub, edge map[int32]int64) bool {
	for p, id := range edge {
		if got, ok := hub[p]; !ok || got != id {
			return false
		}
	}
	return true
}

// lastIDs returns the id of the last data record below ends[p] in each
// partition p of topic (all of its partitions' end offsets when ends is
// nil), read as a read_committed consumer sees them; a partition without
// a data record there is left out. It reads each partition's last 16
// offsets, and further back only when those are all transaction markers.
// Below a last stable offset with no transaction open, the last offset is
// always readable: a data record or a marker, never an aborted record.
func lastIDs(ctx context.Context, brokers, topic string, ends map[int32]int64, wl workload) (map[int32]int64, error) {
	if ends == nil {
		var err error
		if _, ends, err = wholeTopic(ctx, brokers, topic); err != nil {
			return nil, err
		}
	}
	ids := map[int32]int64{}
	todo := map[int32]int64{}
	for p, end := range ends {
		if end > 0 {
			todo[p] = end
		}
	}
	for back := int64(16); len(todo) > 0; back *= 16 {
		from := map[int32]int64{}
		offs := map[int32]kgo.Offset{}
		for p, end := range todo {
			from[p] = max(0, end-back)
			offs[p] = kgo.NewOffset().At(from[p])
		}
		last, err := readTail(ctx, brokers, topic, offs, todo, wl)
		if err != nil {
			return nil, err
		}
		for p := range todo {
			if id, ok := last[p]; ok {
				ids[p] = id
				delete(todo, p)
			} else if from[p] == 0 {
				delete(todo, p) // markers only
			}
		}
	}
	return ids, nil
}

// readTail reads each partition of topic from offs up to its offset
// ends[p]-1 and returns the id of the last data record it read there.
func readTail(ctx context.Context, brokers, topic string, offs map[int32]kgo.Offset, ends map[int32]int64, wl workload) (map[int32]int64, error) {
	last := map[int32]int64{}
	var bad error
	err := readRange(ctx, brokers, topic, offs, ends, func(r *kgo.Record) {
		if r.Attrs.IsControl() || bad != nil {
			return
		}
		id, ok := wl.parseID(r.Value)
		if !ok {
			bad = fmt.Errorf("%s/%d offset %d holds a record without an id", topic, r.Partition, r.Offset)
			return
		}
		last[r.Partition] = id
	})
	if err == nil {
		err = bad
	}
	if err != nil {
		return nil, err
	}
	return last, nil
}

// readRange reads each partition p of topic from offs[p] up to its offset
// ends[p]-1 as a read_committed consumer (control records kept, so that a
// range ending in a transaction marker ends) and calls each, in offset
// order per partition, for every record below ends[p].
func readRange(ctx context.Context, brokers, topic string, offs map[int32]kgo.Offset, ends map[int32]int64, each func(*kgo.Record)) error {
	if len(offs) == 0 {
		return nil
	}
	cl, err := kgo.NewClient(kgo.SeedBrokers(brokers), kgo.ConsumePartitions(map[string]map[int32]kgo.Offset{topic: offs}),
		kgo.FetchMaxBytes(64<<20), kgo.FetchMaxPartitionBytes(16<<20),
		kgo.FetchIsolationLevel(kgo.ReadCommitted()), kgo.KeepControlRecords())
	if err != nil {
		return err
	}
	defer cl.Close()
	remaining := make(map[int32]int64, len(ends))
	for p := range offs {
		remaining[p] = ends[p]
	}
	for len(remaining) > 0 {
		fs := cl.PollFetches(ctx)
		if ctx.Err() != nil {
			return fmt.Errorf("read %s: %w", topic, ctx.Err())
		}
		var ferr error
		fs.EachError(func(t string, p int32, e error) { ferr = fmt.Errorf("fetch %s/%d: %w", t, p, e) })
		if ferr != nil {
			return ferr
		}
		fs.EachRecord(func(r *kgo.Record) {
			end, ok := remaining[r.Partition]
			if !ok || r.Offset >= end {
				return
			}
			if r.Offset == end-1 {
				delete(remaining, r.Partition)
			}
			each(r)
		})
	}
	return nil
}

// checkCommitted reports an error if waitCount's last stable offsets did
// not yet cover each partition's last record (verify's lastData): the count
// then reached its target early, on transaction markers, and the row's time
// would be short.
func checkCommitted(topic string, stable, lastData map[int32]int64) error {
	for p, last := range lastData {
		if stable[p] <= last {
			return fmt.Errorf("hub topic %s: the committed count was reached while partition %d's last record (offset %d) was not yet committed (last stable offset %d); the time measured is short",
				topic, p, last, stable[p])
		}
	}
	return nil
}

// verify reads the whole hub topic and checks that every id in [0, n)
// arrived: it returns how many arrived more than once (each extra copy
// counts), how many never did, and the offset of each partition's last
// record. Records without an id, or with one outside the range, are an
// error: nothing else is written there.
func verify(ctx context.Context, brokers, topic string, wl workload, n int64) (dups, missing int64, lastData map[int32]int64, err error) {
	offs, ends, err := wholeTopic(ctx, brokers, topic)
	if err != nil {
		return 0, 0, nil, err
	}
	lastData = map[int32]int64{}
	seen := make([]uint8, n)
	var bad int64
	// read_committed, as hub consumers must read edgemirror's hub topics.
	err = readRange(ctx, brokers, topic, offs, ends, func(r *kgo.Record) {
		if r.Attrs.IsControl() {
			return
		}
		lastData[r.Partition] = r.Offset
		id, ok := wl.parseID(r.Value)
		if !ok || id < 0 || id >= n {
			bad++
			return
		}
		if seen[id] < 255 {
			seen[id]++
		}
	})
	if err != nil {
		return 0, 0, nil, err
	}
	for _, c := range seen {
		switch {
		case c == 0:
			missing++
		case c > 1:
			dups += int64(c) - 1
		}
	}
	if bad > 0 {
		return dups, missing, nil, fmt.Errorf("%s holds %d records that are not this run's", topic, bad)
	}
	return dups, missing, lastData, nil
}

// latencies consumes a hub topic from its current end and records, for the
// first copy of each id, how long after its edge timestamp it was read.
type latencies struct {
	cl   *kgo.Client
	wl   workload
	mu   sync.Mutex
	seen map[int64]bool
	ms   []float64
}

func startLatencies(ctx context.Context, brokers, topic string, wl workload) (*latencies, error) {
	h, err := newHubClient(brokers)
	if err != nil {
		return nil, err
	}
	ends, err := h.adm.ListEndOffsets(ctx, topic)
	h.close()
	if err != nil {
		return nil, err
	}
	parts := map[int32]kgo.Offset{}
	ends.Each(func(o kadm.ListedOffset) {
		if o.Err == nil {
			parts[o.Partition] = kgo.NewOffset().At(o.Offset)
		}
	})
	if len(parts) == 0 {
		return nil, fmt.Errorf("hub topic %s has no partitions yet", topic)
	}
	// read_committed, as hub consumers must: a transactional writer's
	// record is read only once its transaction is committed.
	cl, err := kgo.NewClient(kgo.SeedBrokers(brokers),
		kgo.ConsumePartitions(map[string]map[int32]kgo.Offset{topic: parts}),
		kgo.FetchMaxWait(200*time.Millisecond), kgo.FetchIsolationLevel(kgo.ReadCommitted()))
	if err != nil {
		return nil, err
	}
	l := &latencies{cl: cl, wl: wl, seen: map[int64]bool{}}
	go func() {
		for {
			fs := cl.PollFetches(ctx)
			if fs.IsClientClosed() || ctx.Err() != nil {
				return
			}
			now := time.Now()
			l.mu.Lock()
			fs.EachRecord(func(r *kgo.Record) {
				id, ok := wl.parseID(r.Value)
				if !ok || l.seen[id] {
					return
				}
				l.seen[id] = true
				l.ms = append(l.ms, float64(now.Sub(r.Timestamp).Microseconds())/1000)
			})
			l.mu.Unlock()
		}
	}()
	return l, nil
}

func (l *latencies) count() int64 {
	l.mu.Lock()
	defer l.mu.Unlock()
	return int64(len(l.ms))
}

// percentiles closes the consumer and returns p50 and p99 in milliseconds.
func (l *latencies) percentiles() (p50, p99 float64) {
	l.cl.Close()
	l.mu.Lock()
	defer l.mu.Unlock()
	if len(l.ms) == 0 {
		return 0, 0
	}
	s := append([]float64(nil), l.ms...)
	sort.Float64s(s)
	at := func(q float64) float64 { return s[min(len(s)-1, int(q*float64(len(s))))] }
	return at(0.50), at(0.99)
}

// readTopic reads every record of topic, up to its end offsets at the time
// of the call, by partition.
func readTopic(ctx context.Context, brokers, topic string) (map[int32][]*kgo.Record, error) {
	offs, ends, err := wholeTopic(ctx, brokers, topic)
	if err != nil {
		return nil, err
	}
	out := map[int32][]*kgo.Record{}
	err = readRange(ctx, brokers, topic, offs, ends, func(r *kgo.Record) {
		out[r.Partition] = append(out[r.Partition], r)
	})
	if err != nil {
		return nil, err
	}
	return out, nil
}

// wholeTopic returns, for readRange, the start and the current end offset
// of every partition of topic that holds records.
func wholeTopic(ctx context.Context, brokers, topic string) (map[int32]kgo.Offset, map[int32]int64, error) {
	h, err := newHubClient(brokers)
	if err != nil {
		return nil, nil, err
	}
	listed, err := h.adm.ListEndOffsets(ctx, topic)
	h.close()
	if err != nil {
		return nil, nil, err
	}
	offs, ends := map[int32]kgo.Offset{}, map[int32]int64{}
	var lerr error
	listed.Each(func(o kadm.ListedOffset) {
		switch {
		case o.Err != nil:
			lerr = fmt.Errorf("end offset of %s/%d: %w", topic, o.Partition, o.Err)
		case o.Offset > 0:
			offs[o.Partition] = kgo.NewOffset().AtStart()
			ends[o.Partition] = o.Offset
		}
	})
	return offs, ends, lerr
}

// prepareHub creates the hub's internal topics (__consumer_offsets and
// __transaction_state, 50 partitions each by default) before any row runs,
// as every hub in service already has them. Kafka creates each on the
// first group or transactional request; on a fresh cluster that costs the
// first row seconds of broker work that no later row and no deployment
// pays (edgemirror needs both; MirrorMaker 2's workers need the first).
func prepareHub(ctx context.Context, brokers string) error {
	cl, err := kgo.NewClient(kgo.SeedBrokers(brokers))
	if err != nil {
		return err
	}
	defer cl.Close()
	ctx, cancel := context.WithTimeout(ctx, 3*time.Minute)
	defer cancel()
	for _, kt := range []int8{0, 1} { // group, transaction
		for {
			req := kmsg.NewPtrFindCoordinatorRequest()
			req.CoordinatorType = kt
			req.CoordinatorKeys = []string{"edgemirror-bench-prepare"}
			res, err := req.RequestWith(ctx, cl)
			if err == nil {
				err = errors.New("no coordinator in the answer")
				if len(res.Coordinators) == 1 {
					err = kerr.ErrorForCode(res.Coordinators[0].ErrorCode)
				}
			}
			if err == nil {
				break
			}
			select {
			case <-ctx.Done():
				return fmt.Errorf("hub internal topics (coordinator type %d): %w", kt, err)
			case <-time.After(200 * time.Millisecond):
			}
		}
	}
	adm := kadm.NewClient(cl)
	for {
		td, err := adm.ListTopicsWithInternal(ctx, "__consumer_offsets", "__transaction_state")
		ready := err == nil && len(td) == 2
		for _, t := range td {
			if t.Err != nil || len(t.Partitions) == 0 {
				ready = false
			}
			for _, p := range t.Partitions {
				if p.Err != nil || p.Leader < 0 {
					ready = false
				}
			}
		}
		if ready {
			return nil
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("hub internal topics never got leaders: %v", err)
		case <-time.After(200 * time.Millisecond):
		}
	}
}
