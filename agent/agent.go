package agent

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"sort"
	"time"

	"github.com/segmentio/kafka-go"
	"golang.org/x/sync/errgroup"

	"github.com/edgemirror/edgemirror/buffer"
	"github.com/edgemirror/edgemirror/internal/wire"
)

// LossReasonTooLarge is the loss reason of records too large for the buffer.
const LossReasonTooLarge = "too-large-for-buffer"

// shutdownFlushTimeout bounds how long Run spends writing the last partial
// chunk to the buffer when it stops. Records not written are read again
// after a restart, from the stored offsets.
const shutdownFlushTimeout = 5 * time.Second

// Agent mirrors an edge cluster to an aggregator. Build it with New.
type Agent struct {
	cfg Config
	log *slog.Logger
	m   *metrics
}

// New validates cfg and returns an Agent. It starts nothing.
func New(cfg Config) (*Agent, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	log := cfg.Logger
	if log == nil {
		log = slog.New(slog.NewTextHandler(io.Discard, nil))
	}
	return &Agent{cfg: cfg, log: log.With(slog.String("edge", cfg.EdgeID)), m: newMetrics()}, nil
}

// Run mirrors until ctx is cancelled. It returns nil after a clean stop, or
// the error that stopped it. The reader stops before the buffer closes.
func (a *Agent) Run(ctx context.Context) error {
	if err := a.m.register(a.cfg.Registerer); err != nil {
		return fmt.Errorf("register metrics: %w", err)
	}
	defer a.m.unregister(a.cfg.Registerer)

	store, err := buffer.Open(a.cfg.BufferDir, buffer.Options{
		MaxBytes:   a.cfg.BufferMaxBytes,
		Policy:     a.cfg.BufferFull,
		Logger:     a.log,
		Registerer: a.cfg.Registerer,
	})
	if err != nil {
		return fmt.Errorf("open buffer: %w", err)
	}
	defer store.Close()

	stored, err := store.Offsets()
	if err != nil {
		return fmt.Errorf("read stored offsets: %w", err)
	}
	enc, err := wire.NewEncoder(a.cfg.Compression, a.cfg.CompressionLevel, wire.WithMaxChunkBytes(a.cfg.BatchBytes))
	if err != nil {
		return fmt.Errorf("create %s encoder: %w", a.cfg.Compression, err)
	}
	defer enc.Close()

	// One long-lived Transport for the edge cluster: kafka-go never closes a
	// Transport on its own (kafka-go #599, #1358).
	tr := &kafka.Transport{
		ClientID:    "edgemirror-agent-" + a.cfg.EdgeID,
		DialTimeout: 10 * time.Second,
		IdleTimeout: 5 * time.Minute,
		MetadataTTL: 2 * time.Second, // no refresh on NOT_LEADER otherwise (kafka-go #1221)
	}
	defer tr.CloseIdleConnections()
	client := &kafka.Client{Addr: kafka.TCP(a.cfg.Brokers...), Transport: tr, Timeout: 30 * time.Second}
	rd, err := newReader(&a.cfg, a.log, client, stored, a.m)
	if err != nil {
		return err
	}

	urls, err := parseAggregators(a.cfg.Aggregator)
	if err != nil {
		return fmt.Errorf("parse --aggregator: %w", err)
	}
	eps := newEndpoints(a.log, urls, a.cfg.resolver)
	hc := newHTTPClient(ctx, eps, newLimiter(a.cfg.Bandwidth), a.m)
	defer hc.CloseIdleConnections()
	sh := &shipper{cfg: &a.cfg, log: a.log, store: store, client: hc, eps: eps, m: a.m, openNext: store.NextSeq()}
	rd.checkStart = newOriginCheck(sh, store).check

	a.log.Info("agent started", slog.String("brokers", fmt.Sprint(a.cfg.Brokers)),
		slog.String("aggregator", a.cfg.Aggregator), slog.Uint64("epoch", store.Epoch()),
		slog.Uint64("next_seq", store.NextSeq()), slog.Int("stored_partitions", len(stored)))

	g, gctx := errgroup.WithContext(ctx)
	g.Go(func() error { return a.readLoop(gctx, rd, store, enc) })
	g.Go(func() error { return sh.run(gctx) })
	err = g.Wait()
	st := store.Stats()
	a.log.Info("agent stopped", slog.Int("buffered_chunks", st.Chunks), slog.Int64("buffered_records", st.Records))
	if err != nil && !errors.Is(err, context.Canceled) {
		return err
	}
	return nil
}

// readLoop fetches from the edge and cuts chunks into the buffer until ctx
// ends.
func (a *Agent) readLoop(ctx context.Context, rd *reader, store *buffer.Store, enc *wire.Encoder) error {
	maxWait := a.cfg.Linger / 2
	if maxWait > 500*time.Millisecond {
		maxWait = 500 * time.Millisecond
	}
	if maxWait < 10*time.Millisecond {
		maxWait = 10 * time.Millisecond
	}
	b := newBatch()
	var since time.Time // when the pending batch got its first content
	flush := func(ctx context.Context) error {
		if err := a.flush(ctx, rd, store, enc, b, true); err != nil {
			return err
		}
		b.reset()
		since = time.Time{}
		return nil
	}
	// A fetch response can hold many chunks' worth of records (compressed
	// edge batches): write full chunks as they fill, in the middle of the
	// response.
	rd.full = func() error {
		if err := a.flush(ctx, rd, store, enc, b, false); err != nil {
			return err
		}
		clear(b.records)
		b.records, b.rawSize = b.records[:0], 0
		return nil
	}
	for {
		if time.Since(rd.lastMeta) >= a.cfg.MetadataInterval {
			if err := rd.refreshMetadata(ctx); err != nil && ctx.Err() == nil {
				a.log.Warn("edge metadata refresh failed; will retry", slog.Any("error", err))
				rd.lastMeta = time.Now().Add(-a.cfg.MetadataInterval + time.Second)
			}
		}
		// Never wait in a fetch past the pending batch's linger deadline.
		wait := maxWait
		if !since.IsZero() {
			wait = min(wait, max(a.cfg.Linger-time.Since(since), time.Millisecond))
		}
		if err := rd.fetch(ctx, wait, b); err != nil {
			if ctx.Err() != nil {
				break
			}
			return err
		}
		if since.IsZero() && !b.empty() {
			since = time.Now()
		}
		if len(b.losses) > 0 || b.rawSize >= a.cfg.BatchBytes || (!since.IsZero() && time.Since(since) >= a.cfg.Linger) {
			if err := flush(ctx); err != nil {
				if ctx.Err() != nil {
					break
				}
				return err
			}
		}
		if ctx.Err() != nil {
			break
		}
	}
	// Stopping: write what was read, briefly, so that it is not read twice.
	fctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), shutdownFlushTimeout)
	defer cancel()
	if err := flush(fctx); err != nil {
		a.log.Info("last partial chunk not buffered; it will be read again after restart", slog.Any("error", err))
	}
	return nil
}

// flush writes the pending records as one or more chunks of at most
// BatchBytes (uncompressed), each with the next offsets it advances. A final
// flush then records the batch's losses and the offsets past them in one
// transaction; a partial one (in the middle of a fetch response) advances
// each partition only past its own records.
func (a *Agent) flush(ctx context.Context, rd *reader, store *buffer.Store, enc *wire.Encoder, b *batch, final bool) error {
	recs := b.records
	for len(recs) > 0 {
		n, size := 0, 0
		for n < len(recs) && (n == 0 || size+wire.RecordSize(&recs[n]) <= a.cfg.BatchBytes) {
			size += wire.RecordSize(&recs[n])
			n++
		}
		part := recs[:n]
		recs = recs[n:]
		next := b.next
		if len(recs) > 0 || !final {
			// Not the last chunk of the batch: it advances each partition
			// only past its own records.
			next = make(map[buffer.PartitionKey]int64)
			for i := range part {
				next[buffer.PartitionKey{Topic: part[i].Topic, Partition: part[i].Partition}] = part[i].Offset + 1
			}
		}
		if err := a.appendChunk(ctx, rd, store, enc, part, size, next); err != nil {
			return err
		}
	}
	if final && (len(b.records) == 0 && len(b.next) > 0 || len(b.losses) > 0) {
		next := make(map[buffer.PartitionKey]int64, len(b.next)+len(b.lossNext))
		for k, v := range b.next {
			next[k] = v
		}
		for k, v := range b.lossNext {
			next[k] = v
		}
		if err := store.AdvanceOffsets(next, b.losses); err != nil {
			return fmt.Errorf("store offsets: %w", err)
		}
		rd.skipLosses(b.lossNext)
	}
	return nil
}

func (a *Agent) appendChunk(ctx context.Context, rd *reader, store *buffer.Store, enc *wire.Encoder,
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
	var topics []wire.Topic
	for _, t := range rd.topicList() {
		if used[t.Name] {
			topics = append(topics, t)
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
		frame, err = enc.Encode(nil, &wire.Chunk{Seq: meta.Seq, Topics: topics, Records: recs})
		if err != nil {
			return fmt.Errorf("encode chunk %d: %w", meta.Seq, err)
		}
		err = store.Append(ctx, frame, meta, next)
		// The shipper moved the next seq past a rolled-back range while
		// this chunk was encoded: encode it again under the new number.
		if !errors.Is(err, buffer.ErrSeq) || tries == 3 {
			break
		}
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
			losses[i] = buffer.Loss{Range: rg, Reason: LossReasonTooLarge, At: time.Now()}
			a.log.Error("records too large for the buffer; they are lost", slog.String("topic", rg.Topic),
				slog.Int("partition", int(rg.Partition)), slog.Int64("first_offset", rg.First),
				slog.Int64("last_offset", rg.Last), slog.Int("frame_bytes", len(frame)))
			a.m.lost.WithLabelValues(LossReasonTooLarge).Add(float64(rg.Records))
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
