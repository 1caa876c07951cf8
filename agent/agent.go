package agent

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
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
// ends. It is the first of two stages: it fetches, filters and decodes, and
// hands each cut batch to a chunk writer (chunkwriter.go), which encodes it
// and commits it to the buffer while the next fetch is under way.
func (a *Agent) readLoop(ctx context.Context, rd *reader, store *buffer.Store, enc *wire.Encoder) error {
	maxWait := a.cfg.Linger / 2
	if maxWait > 500*time.Millisecond {
		maxWait = 500 * time.Millisecond
	}
	if maxWait < 10*time.Millisecond {
		maxWait = 10 * time.Millisecond
	}
	// The writer outlives ctx by up to shutdownFlushTimeout, to write what
	// was read before the stop.
	wctx, wcancel := context.WithCancel(context.WithoutCancel(ctx))
	w := a.startChunkWriter(wctx, wcancel, store, enc)
	defer w.abort()

	b := newBatch()
	var since time.Time // when the pending batch got its first content
	flush := func(ctx context.Context) error {
		if b.empty() {
			return nil
		}
		j, err := w.handOff(ctx, rd, b, true)
		if err != nil {
			return err
		}
		since = time.Time{}
		if len(j.lossNext) > 0 {
			// A partition past a loss is fetched again only once the loss
			// is stored.
			if err := w.wait(ctx, j); err != nil {
				return err
			}
			rd.skipLosses(j.lossNext)
		}
		return nil
	}
	// A fetch response can hold many chunks' worth of records (compressed
	// edge batches): hand full chunks over as they fill, in the middle of
	// the response.
	rd.full = func() error {
		_, err := w.handOff(ctx, rd, b, false)
		return err
	}
	for {
		if err := w.failed(); err != nil {
			return err
		}
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
	err := flush(fctx)
	if err == nil {
		err = w.finish(fctx)
	}
	if err != nil {
		a.log.Info("last partial chunk not buffered; it will be read again after restart", slog.Any("error", err))
	}
	return nil
}
