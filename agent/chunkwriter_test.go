package agent

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kfake"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/edgemirror/edgemirror/buffer"
	"github.com/edgemirror/edgemirror/internal/testkit"
	"github.com/edgemirror/edgemirror/internal/wire"
)

// readLoopRig runs the read loop over a kfake cluster into a fresh buffer,
// as Agent.Run does, without a shipper.
type readLoopRig struct {
	a     *Agent
	rd    *reader
	store *buffer.Store
	enc   *wire.Encoder
}

func newReadLoopRig(t testing.TB, c *kfake.Cluster, mutate func(*Config)) *readLoopRig {
	t.Helper()
	dir := t.TempDir()
	rd := newTestReader(t, c, func(cfg *Config) {
		cfg.BufferDir = dir
		mutate(cfg)
	}, nil)
	cfg := *rd.cfg
	a, err := New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	a.log = slog.New(slog.NewTextHandler(io.Discard, nil))
	store, err := buffer.Open(cfg.BufferDir, buffer.Options{MaxBytes: cfg.BufferMaxBytes, Policy: cfg.BufferFull})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { store.Close() })
	enc, err := wire.NewEncoder(cfg.Compression, cfg.CompressionLevel, wire.WithMaxChunkBytes(cfg.BatchBytes))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(enc.Close)
	rd.m = a.m
	return &readLoopRig{a: a, rd: rd, store: store, enc: enc}
}

// start runs the read loop until stop is called. ended is closed when the
// loop has returned, with err; stop cancels it and waits (bounded).
func (r *readLoopRig) start(t testing.TB) *runningLoop {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	l := &runningLoop{cancel: cancel, ended: make(chan struct{})}
	go func() {
		defer close(l.ended)
		l.err = r.a.readLoop(ctx, r.rd, r.store, r.enc)
	}()
	t.Cleanup(func() { l.stop() })
	return l
}

type runningLoop struct {
	cancel context.CancelFunc
	ended  chan struct{}
	err    error // what readLoop returned; read after ended
}

func (l *runningLoop) stop() error {
	l.cancel()
	select {
	case <-l.ended:
		return l.err
	case <-time.After(shutdownFlushTimeout + 10*time.Second):
		return errors.New("read loop did not return after cancel")
	}
}

// TestReadLoopBacklogChunksInOrder reads a backlog whose fetch responses
// are each cut into several chunks in the middle (the reader hands them to
// the chunk writer while it fetches on), and checks the buffer record by
// record: chunk sequence numbers consecutive from 1, every record exactly
// once and in offset order, each chunk's ranges matching its records, and
// the stored offsets at the end of every partition. Every chunk is full but
// for the linger's cuts: none exceeds --batch-bytes, and none is cut short
// of a record that would have fit.
func TestReadLoopBacklogChunksInOrder(t *testing.T) {
	const (
		partitions   = 3
		perPartition = 3000
		batchBytes   = 16 << 10 // about 90 records: many chunks per response
		linger       = time.Second
	)
	c := newCluster(t)
	prod := newProducer(t, c, kgo.ProducerBatchMaxBytes(256<<10))
	createTopic(t, prod, "backlog", partitions)
	var recs []*kgo.Record
	for p := int32(0); p < partitions; p++ {
		for i := 0; i < perPartition; i++ {
			recs = append(recs, &kgo.Record{Topic: "backlog", Partition: p,
				Value: fmt.Appendf(bytes.Repeat([]byte("v"), 150), "-%d-%d", p, i)})
		}
	}
	produce(t, prod, recs...)

	r := newReadLoopRig(t, c, func(cfg *Config) {
		cfg.BatchBytes = batchBytes
		cfg.FetchMaxBytes = 512 << 10
		cfg.BufferMaxBytes = 64 << 20
		cfg.Linger = linger
		cfg.Compression = wire.CodecZstd
	})
	start := time.Now()
	loop := r.start(t)
	testkit.Eventually(t, 30*time.Second, "every partition stored to its end", func() error {
		offs, err := r.store.Offsets()
		if err != nil {
			return err
		}
		for p := int32(0); p < partitions; p++ {
			if got := offs[buffer.PartitionKey{Topic: "backlog", Partition: p}]; got != perPartition {
				return fmt.Errorf("backlog/%d stored at %d, want %d", p, got, perPartition)
			}
		}
		return nil
	})
	read := time.Since(start)
	if err := loop.stop(); err != nil {
		t.Fatalf("read loop: %v", err)
	}

	dec, err := wire.NewDecoder(wire.DefaultLimits())
	if err != nil {
		t.Fatal(err)
	}
	defer dec.Close()
	n := r.store.Stats().Chunks
	if n < partitions*perPartition*170/(16<<10) {
		t.Fatalf("%d chunks for %d records of 16 KiB chunks: the batches were not cut", n, partitions*perPartition)
	}
	next := map[int32]int64{}
	var raws []int // each chunk's uncompressed size
	maxRecord := 0
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	for i := 0; i < n; i++ {
		ch, err := r.store.Lease(ctx)
		if err != nil {
			t.Fatalf("lease chunk %d of %d: %v", i+1, n, err)
		}
		if ch.Seq != uint64(i+1) {
			t.Fatalf("chunk %d has seq %d, want %d", i+1, ch.Seq, i+1)
		}
		chunk, err := dec.Decode(ch.Frame)
		if err != nil {
			t.Fatalf("decode chunk %d: %v", ch.Seq, err)
		}
		if len(chunk.Records) != ch.Meta.Records {
			t.Errorf("chunk %d: %d records, meta says %d", ch.Seq, len(chunk.Records), ch.Meta.Records)
		}
		raw := 0
		for i := range chunk.Records {
			size := wire.RecordSize(&chunk.Records[i])
			raw += size
			maxRecord = max(maxRecord, size)
		}
		raws = append(raws, raw)
		first := map[int32]int64{}
		last := map[int32]int64{}
		for _, rec := range chunk.Records {
			if rec.Offset != next[rec.Partition] {
				t.Fatalf("chunk %d: backlog/%d offset %d, want %d (a record lost, repeated or out of order)",
					ch.Seq, rec.Partition, rec.Offset, next[rec.Partition])
			}
			if want := fmt.Appendf(bytes.Repeat([]byte("v"), 150), "-%d-%d", rec.Partition, rec.Offset); !bytes.Equal(rec.Value, want) {
				t.Fatalf("chunk %d: backlog/%d offset %d has value %q", ch.Seq, rec.Partition, rec.Offset, rec.Value)
			}
			if _, ok := first[rec.Partition]; !ok {
				first[rec.Partition] = rec.Offset
			}
			last[rec.Partition] = rec.Offset
			next[rec.Partition]++
		}
		if len(ch.Meta.Ranges) != len(first) {
			t.Errorf("chunk %d: %d ranges, records of %d partitions", ch.Seq, len(ch.Meta.Ranges), len(first))
		}
		for _, rg := range ch.Meta.Ranges {
			if rg.First != first[rg.Partition] || rg.Last != last[rg.Partition] {
				t.Errorf("chunk %d: range %d..%d of backlog/%d, records %d..%d", ch.Seq, rg.First, rg.Last,
					rg.Partition, first[rg.Partition], last[rg.Partition])
			}
		}
	}
	for p := int32(0); p < partitions; p++ {
		if next[p] != perPartition {
			t.Errorf("backlog/%d: %d records in the buffer, want %d", p, next[p], perPartition)
		}
	}
	// Short chunks come only from the linger: at most one per linger of
	// reading, and the last.
	short, allowed := 0, int(read/linger)+1
	for i, raw := range raws {
		if raw > batchBytes {
			t.Errorf("chunk %d: %d bytes uncompressed, over --batch-bytes %d", i+1, raw, batchBytes)
		}
		if raw+maxRecord <= batchBytes {
			short++
		}
	}
	if short > allowed {
		t.Errorf("%d of %d chunks were cut with room for another record (sizes %v); the linger explains %d",
			short, len(raws), raws, allowed)
	}
}

// TestReadLoopStopsOnBufferError: when the buffer refuses a chunk for a
// reason other than the stop (here it is closed under the loop), the read
// loop returns that error instead of reading on with nothing stored.
func TestReadLoopStopsOnBufferError(t *testing.T) {
	c := newCluster(t)
	prod := newProducer(t, c)
	createTopic(t, prod, "t", 1)
	r := newReadLoopRig(t, c, func(cfg *Config) { cfg.Linger = 20 * time.Millisecond })
	loop := r.start(t)
	produce(t, prod, &kgo.Record{Topic: "t", Value: []byte("first")})
	testkit.Eventually(t, 20*time.Second, "first record stored", func() error {
		if offs, err := r.store.Offsets(); err != nil || offs[buffer.PartitionKey{Topic: "t"}] != 1 {
			return fmt.Errorf("offsets %v, %v", offs, err)
		}
		return nil
	})
	if err := r.store.Close(); err != nil {
		t.Fatal(err)
	}
	produce(t, prod, &kgo.Record{Topic: "t", Value: []byte("second")})
	select {
	case <-loop.ended:
		if !errors.Is(loop.err, buffer.ErrClosed) {
			t.Fatalf("read loop returned %v, want an error wrapping %v", loop.err, buffer.ErrClosed)
		}
	case <-time.After(20 * time.Second):
		t.Fatal("read loop still running 20 s after the buffer refused a chunk")
	}
}

// TestReadLoopReadsAheadBounded: while the writer is blocked on a full
// buffer, the reader goes on reading, but only as far as one batch handed
// over and the one it is filling: the backlog waits in the edge, not in
// memory. Once the buffer has room again, everything is stored in order.
func TestReadLoopReadsAheadBounded(t *testing.T) {
	c := newCluster(t)
	prod := newProducer(t, c, kgo.ProducerBatchMaxBytes(64<<10))
	createTopic(t, prod, "t", 1)
	value := bytes.Repeat([]byte("x"), 1000)
	const total = 8000 // about 8 MB: twice what the buffer holds
	var recs []*kgo.Record
	for i := 0; i < total; i++ {
		recs = append(recs, &kgo.Record{Topic: "t", Value: value})
	}
	produce(t, prod, recs...)
	r := newReadLoopRig(t, c, func(cfg *Config) {
		cfg.BufferMaxBytes = buffer.MinMaxBytes
		cfg.BufferFull = buffer.PolicyBlock
		cfg.BatchBytes = 64 << 10
		cfg.FetchMaxBytes = 256 << 10
		cfg.Compression = wire.CodecNone
		cfg.Linger = 20 * time.Millisecond
	})
	r.start(t)
	k := buffer.PartitionKey{Topic: "t"}
	// The buffer fills and the writer blocks; then reading stops too, with
	// records read and not stored.
	var (
		read float64
		offs map[buffer.PartitionKey]int64
	)
	testkit.Eventually(t, 30*time.Second, "reading stopped behind a full buffer", func() error {
		before := metricValue(t, r.a.m.recordsRead)
		time.Sleep(300 * time.Millisecond) // a window to see it still
		read = metricValue(t, r.a.m.recordsRead)
		var err error
		if offs, err = r.store.Offsets(); err != nil {
			return err
		}
		if read != before || read <= float64(offs[k]) {
			return fmt.Errorf("records read %v, then %v; stored up to %d", before, read, offs[k])
		}
		return nil
	})
	t.Logf("behind a full buffer: %v records read, stored up to offset %d, %d chunks buffered", read, offs[k], r.store.Stats().Chunks)
	ahead := int(read) - int(offs[k])
	// One batch being written, one handed over, one being filled and the
	// rest of a fetch response: at most 3 chunks and a response of records.
	bound := (3*r.rd.cfg.BatchBytes + r.rd.cfg.FetchMaxBytes) / 1000
	if ahead <= 0 || ahead > bound {
		t.Fatalf("reader %d records ahead of the buffer (read %v, stored up to %d), want 1..%d", ahead, read, offs[k], bound)
	}
	if int(read) >= total {
		t.Fatalf("reader read all %d records into memory behind a full buffer", total)
	}
	// Make room: what the buffer holds is shipped and acknowledged.
	dctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	var acked int64
	for acked < total {
		ch, err := r.store.Lease(dctx)
		if err != nil {
			t.Fatalf("lease after %d acknowledged records: %v", acked, err)
		}
		for _, rg := range ch.Meta.Ranges {
			if rg.First != acked {
				t.Fatalf("chunk %d starts at offset %d, want %d", ch.Seq, rg.First, acked)
			}
			acked = rg.Last + 1
		}
		if err := r.store.Ack(ch.Seq); err != nil {
			t.Fatal(err)
		}
	}
}

// BenchmarkReadLoopBacklog reads a backlog of 300,000 sensor-sized records
// (3 partitions) from a kfake edge into a fresh buffer with the default
// chunk size and compression, as an agent does after a long stop, and
// reports records/s.
func BenchmarkReadLoopBacklog(b *testing.B) {
	const (
		partitions   = 3
		perPartition = 100_000
	)
	c := newCluster(b)
	prod := newProducer(b, c, kgo.ProducerBatchMaxBytes(1<<20), kgo.MaxBufferedBytes(256<<20))
	createTopic(b, prod, "sensors", partitions)
	recs := make([]*kgo.Record, 0, partitions*perPartition)
	for p := int32(0); p < partitions; p++ {
		for i := 0; i < perPartition; i++ {
			recs = append(recs, &kgo.Record{Topic: "sensors", Partition: p, Key: fmt.Appendf(nil, "sensor-%03d", i%500),
				Value: fmt.Appendf(nil, `{"sensor":"s-%03d","seq":%d,"temp_c":%d.%d,"humidity":%d,"status":"ok","site":"plant-7","line":%d}`,
					i%500, i, 20+i%10, i%7, 40+i%30, p)})
		}
	}
	produce(b, prod, recs...)
	var total time.Duration
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		b.StopTimer()
		r := newReadLoopRig(b, c, func(cfg *Config) {
			cfg.BufferMaxBytes = 512 << 20
			cfg.Linger = 10 * time.Millisecond // the last chunk is cut at once, not after the default 1 s
		})
		ctx, cancel := context.WithCancel(context.Background())
		done := make(chan error, 1)
		b.StartTimer()
		start := time.Now()
		go func() { done <- r.a.readLoop(ctx, r.rd, r.store, r.enc) }()
		deadline := time.Now().Add(2 * time.Minute)
		for {
			offs, err := r.store.Offsets()
			if err != nil {
				b.Fatal(err)
			}
			n := int64(0)
			for p := int32(0); p < partitions; p++ {
				n += offs[buffer.PartitionKey{Topic: "sensors", Partition: p}]
			}
			if n == partitions*perPartition {
				break
			}
			if time.Now().After(deadline) {
				b.Fatalf("after 2 minutes %d of %d records stored", n, partitions*perPartition)
			}
			time.Sleep(5 * time.Millisecond)
		}
		total += time.Since(start)
		b.StopTimer()
		cancel()
		if err := <-done; err != nil {
			b.Fatal(err)
		}
		b.StartTimer()
	}
	b.ReportMetric(float64(b.N*partitions*perPartition)/total.Seconds(), "records/s")
}
