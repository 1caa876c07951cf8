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
	"github.com/edgemirror/edgemirror/internal/kafkaconn"
	"github.com/edgemirror/edgemirror/internal/wire"
)

// shutdownFlushTimeout bounds how long Run spends writing the last partial
// chunk to the buffer when it stops. Records not written are read again
// after a restart, from the stored offsets.
const shutdownFlushTimeout = 5 * time.Second

// Agent mirrors an edge cluster to an aggregator. Build it with New.
type Agent struct {
	cfg   Config
	log   *slog.Logger
	m     *metrics
	creds *credentials
	h     *health
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
	log = log.With(slog.String("edge", cfg.EdgeID))
	creds, err := newCredentials(&cfg, log)
	if err != nil {
		return nil, err
	}
	a := &Agent{cfg: cfg, log: log, m: newMetrics(), creds: creds, h: newHealth(0)}
	a.creds.cfg = &a.cfg
	return a, nil
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
	tr, err := kafkaconn.Transport(a.cfg.Kafka, "edgemirror-agent-"+a.cfg.EdgeID)
	if err != nil {
		return fmt.Errorf("edge Kafka: %w", err)
	}
	defer tr.CloseIdleConnections()
	// A wrong password or CA would otherwise show only as EOFs later. In
	// the background: buffered chunks ship while the edge is down.
	if a.cfg.Kafka.TLS || a.cfg.Kafka.SASLMechanism != "" {
		checked := make(chan struct{})
		go func() {
			defer close(checked)
			if err := kafkaconn.Check(ctx, "edge", a.cfg.Brokers, a.cfg.Kafka); err != nil && ctx.Err() == nil {
				a.log.Error("cannot connect to the edge cluster; will keep trying", slog.String("error", err.Error()))
			}
		}()
		defer func() { <-checked }()
	}
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
	// Chunks and heartbeats share one token bucket: the cap covers both.
	lim := newLimiter(a.cfg.Bandwidth)
	hc := newHTTPClient(ctx, eps, lim, a.m)
	defer hc.CloseIdleConnections()
	a.creds.secure(hc, urls[0].Scheme)
	if a.cfg.TokenFile != "" && urls[0].Scheme != "https" {
		a.log.Warn("INSECURE: --token-file with an http:// aggregator: the token crosses the network in plain text")
	}
	a.h.startSeq = store.NextSeq()
	defer a.h.close()
	sh := &shipper{cfg: &a.cfg, log: a.log, store: store, client: hc, eps: eps, m: a.m, h: a.h, link: newLink(),
		openNext: store.NextSeq()}
	rd.checkStart = newOriginCheck(sh, store).check
	hbc := newHeartbeatClient(ctx, eps, lim, a.m)
	defer hbc.CloseIdleConnections()
	a.creds.secure(hbc, urls[0].Scheme)
	hb := &heartbeater{cfg: &a.cfg, log: a.log, store: store, h: a.h, m: a.m, client: hbc,
		url: func() string { return eps.currentURL().JoinPath(wire.PathHeartbeat).String() }, link: sh.link.isUp}

	a.log.Info("agent started", slog.String("brokers", fmt.Sprint(a.cfg.Brokers)),
		slog.String("aggregator", a.cfg.Aggregator), slog.Uint64("epoch", store.Epoch()),
		slog.Uint64("next_seq", store.NextSeq()), slog.Int("stored_partitions", len(stored)))

	var cp *checkpointer
	if a.cfg.SyncGroups != "" {
		if cp, err = newCheckpointer(&a.cfg, a.log, client, hc, eps.currentURL, sh.setIdentity, rd.wanted); err != nil {
			return err
		}
		if err := cp.collectors.Register(a.cfg.Registerer); err != nil {
			return fmt.Errorf("register metrics: %w", err)
		}
		defer cp.collectors.Unregister(a.cfg.Registerer)
		defer cp.close()
	}

	g, gctx := errgroup.WithContext(ctx)
	var tcs *topicConfigSync
	if a.cfg.SyncTopicConfigs {
		tcs = newTopicConfigSync(&a.cfg, a.log, client, hc, eps.currentURL, sh.setIdentity, a.m)
		rd.topicsSeen = tcs.setTopics
		g.Go(func() error { return tcs.run(gctx) })
	}
	g.Go(func() error { return a.readLoop(gctx, rd, store, enc) })
	g.Go(func() error {
		if tcs != nil {
			// Hub topics created by a backlog's first chunks get the
			// edge's settings from the start (bounded wait).
			tcs.waitFirst(gctx)
		}
		return sh.run(gctx)
	})
	if cp != nil {
		g.Go(func() error { return cp.run(gctx) })
	}
	g.Go(func() error { return hb.run(gctx) })
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
		if err := rd.refreshIfDue(ctx); err != nil && ctx.Err() == nil {
			a.log.Warn("edge metadata refresh failed; will retry", slog.Any("error", err))
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
		if err := a.appendChunk(ctx, rd, store, enc, part, size, capAtLosses(next, b.losses)); err != nil {
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
