package aggregator

// Group checkpoints: agents report the committed offsets of edge consumer
// groups (POST /v1/checkpoints); the aggregator translates each exactly into
// a hub offset (failover.Translate, by binary search over the provenance
// headers, read committed) and keeps the latest per (edge, group, source
// partition) in a compacted hub topic, so that a group can be moved to the
// hub after the edge is gone (edgemirror translate-group without
// --edge-brokers). With SyncGroupOffsets the translated offsets are also
// committed to the same group on the hub while it has no active members,
// and never backwards.

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"sync"
	"time"

	"github.com/klauspost/compress/zstd"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/segmentio/kafka-go"

	"github.com/edgemirror/edgemirror/internal/failover"
	"github.com/edgemirror/edgemirror/internal/promutil"
	"github.com/edgemirror/edgemirror/internal/wire"
)

// checkpointTimeout bounds the handling of one checkpoint report.
const checkpointTimeout = 50 * time.Second

// cpKey identifies the checkpoint of one (edge, group, source partition).
type cpKey struct {
	edge, group, topic string
	partition          int32
}

// cpCache is what the aggregator remembers of a checkpoint it stored: the
// next translation of a larger offset starts its search there, and an
// unchanged exact one is not searched again.
type cpCache struct {
	edgeOffset int64
	hubOffset  int64
	exact      bool
}

type checkpointMetrics struct {
	reports    *prometheus.CounterVec
	stored     prometheus.Counter
	inexact    prometheus.Counter
	synced     prometheus.Counter
	duration   prometheus.Histogram
	collectors promutil.Set
}

func newCheckpointMetrics() *checkpointMetrics {
	m := &checkpointMetrics{
		reports: prometheus.NewCounterVec(prometheus.CounterOpts{Namespace: namespace, Subsystem: "aggregator",
			Name: "checkpoint_reports_total", Help: "Checkpoint reports answered, by HTTP status code."}, []string{"code"}),
		stored: prometheus.NewCounter(prometheus.CounterOpts{Namespace: namespace, Subsystem: "aggregator",
			Name: "checkpoints_stored_total", Help: "Translated group checkpoints written to the checkpoint topic."}),
		inexact: prometheus.NewCounter(prometheus.CounterOpts{Namespace: namespace, Subsystem: "aggregator",
			Name: "checkpoints_ahead_of_hub_total", Help: "Checkpoints of offsets the hub had no record at or after yet (stored as the hub end)."}),
		synced: prometheus.NewCounter(prometheus.CounterOpts{Namespace: namespace, Subsystem: "aggregator",
			Name: "group_offsets_synced_total", Help: "Partition offsets committed to hub groups (--sync-group-offsets)."}),
		duration: prometheus.NewHistogram(prometheus.HistogramOpts{Namespace: namespace, Subsystem: "aggregator",
			Name: "checkpoint_report_duration_seconds", Help: "Time to translate and store one checkpoint report.",
			Buckets: prometheus.ExponentialBuckets(0.001, 2, 16)}),
	}
	m.collectors = promutil.Set{m.reports, m.stored, m.inexact, m.synced, m.duration}
	return m
}

// checkpointer translates and stores group checkpoints.
type checkpointer struct {
	cfg    *Config
	log    *slog.Logger
	client *kafka.Client
	state  *state
	// losses returns the loss ranges the fleet knows of an edge (the
	// events topic in the hub), for the checkpoints' lost counts.
	losses func(edge string) []wire.LossRange
	m      *checkpointMetrics

	mu         sync.Mutex
	partitions int // of the checkpoint topic; 0 until known
	cache      map[cpKey]cpCache
	// edges serialises the reports of one edge.
	edges map[string]*sync.Mutex
	// refused remembers hub groups found active, to log that once.
	refused map[string]bool

	decOnce sync.Once
	dec     *zstd.Decoder
	decErr  error
}

func newCheckpointer(cfg *Config, log *slog.Logger, client *kafka.Client, st *state) *checkpointer {
	return &checkpointer{cfg: cfg, log: log, client: client, state: st, m: newCheckpointMetrics(),
		cache: make(map[cpKey]cpCache), edges: make(map[string]*sync.Mutex), refused: make(map[string]bool)}
}

func (s *server) handleCheckpoints(w http.ResponseWriter, r *http.Request) {
	s.inflight.Add(1)
	defer s.inflight.Done()
	code, body := s.checkpoints(r)
	if s.cps != nil {
		s.cps.m.reports.WithLabelValues(fmt.Sprint(code)).Inc()
	}
	if he, ok := body.(*httpError); ok {
		if he.retryAfter > 0 {
			w.Header().Set("Retry-After", fmt.Sprint(he.retryAfter))
		}
		writeJSON(w, code, wire.ErrorResponse{Error: he.msg, Permanent: he.permanent()})
		return
	}
	writeJSON(w, code, body)
}

func (s *server) checkpoints(r *http.Request) (int, any) {
	fail := func(e *httpError) (int, any) { return e.status, e }
	if s.cps == nil {
		return fail(&httpError{status: http.StatusNotFound, msg: "this aggregator does not keep checkpoints"})
	}
	if s.draining.Load() {
		return fail(errUnavailable("aggregator is shutting down", 5))
	}
	edge, he := s.identity(r)
	if he != nil {
		return fail(he)
	}
	body, err := io.ReadAll(io.LimitReader(r.Body, wire.MaxJSONBytes+1))
	if err != nil {
		return fail(errUnavailable("read checkpoint report: "+err.Error(), 1))
	}
	switch ce := r.Header.Get("Content-Encoding"); ce {
	case "", "identity":
	case wire.ContentEncodingZstd:
		if len(body) > wire.MaxJSONBytes {
			break
		}
		if body, err = s.cps.unzstd(body); err != nil {
			if errors.Is(err, zstd.ErrDecoderSizeExceeded) {
				return fail(&httpError{status: http.StatusRequestEntityTooLarge,
					msg: fmt.Sprintf("checkpoint report larger than %d bytes uncompressed; send fewer groups at once", wire.MaxJSONBytes)})
			}
			return fail(errBadRequest("decompress checkpoint report: " + err.Error()))
		}
	default:
		return fail(&httpError{status: http.StatusUnsupportedMediaType, msg: fmt.Sprintf("Content-Encoding %q is not supported (use zstd or none)", ce)})
	}
	if len(body) > wire.MaxJSONBytes {
		return fail(&httpError{status: http.StatusRequestEntityTooLarge,
			msg: fmt.Sprintf("checkpoint report larger than %d bytes; send fewer groups at once", wire.MaxJSONBytes)})
	}
	var rep wire.CheckpointReport
	if err := json.Unmarshal(body, &rep); err != nil {
		return fail(errBadRequest("decode checkpoint report: " + err.Error()))
	}
	if err := rep.Validate(); err != nil {
		return fail(errBadRequest(err.Error()))
	}
	if e := credentialOf(r); e != nil {
		for _, g := range rep.Groups {
			for _, p := range g.Partitions {
				if !e.allows(p.Topic) {
					return fail(&httpError{status: http.StatusForbidden,
						msg: fmt.Sprintf("topic %q is not allowed for edge %s (--edges-file allows %s)", p.Topic, edge, e.topicsSrc)})
				}
			}
		}
	}
	ctx, cancel := context.WithTimeout(r.Context(), checkpointTimeout)
	defer cancel()
	start := time.Now()
	res, err := s.cps.apply(ctx, edge, &rep)
	s.cps.m.duration.Observe(time.Since(start).Seconds())
	if err != nil {
		var he *httpError
		if errors.As(err, &he) {
			return fail(he)
		}
		return fail(errUnavailable(err.Error(), 2))
	}
	return http.StatusOK, res
}

// unzstd decompresses a report body, to at most wire.MaxJSONBytes.
func (c *checkpointer) unzstd(b []byte) ([]byte, error) {
	c.decOnce.Do(func() {
		c.dec, c.decErr = zstd.NewReader(nil, zstd.WithDecoderConcurrency(1), zstd.WithDecoderMaxMemory(wire.MaxJSONBytes))
	})
	if c.decErr != nil {
		return nil, c.decErr
	}
	return c.dec.DecodeAll(b, nil)
}

// close releases the decoder.
func (c *checkpointer) close() {
	if c.dec != nil {
		c.dec.Close()
	}
}

// edgeLock returns the mutex that serialises one edge's reports.
func (c *checkpointer) edgeLock(edge string) *sync.Mutex {
	c.mu.Lock()
	defer c.mu.Unlock()
	l := c.edges[edge]
	if l == nil {
		l = new(sync.Mutex)
		c.edges[edge] = l
	}
	return l
}

// apply translates every partition of a report, stores the checkpoints and,
// with SyncGroupOffsets, commits them to the hub groups.
func (c *checkpointer) apply(ctx context.Context, edge string, rep *wire.CheckpointReport) (*wire.CheckpointResponse, error) {
	l := c.edgeLock(edge)
	l.Lock()
	defer l.Unlock()
	var losses []wire.LossRange
	if c.losses != nil {
		losses = c.losses(edge)
	}
	now := time.Now().UTC()
	res := &wire.CheckpointResponse{}
	var cps []failover.Checkpoint
	for _, g := range rep.Groups {
		for _, p := range g.Partitions {
			dest, err := destTopic(c.cfg.TopicTemplate, edge, p.Topic)
			if err != nil {
				return nil, &httpError{status: http.StatusUnprocessableEntity, msg: err.Error()}
			}
			cp, err := c.translate(ctx, edge, g, p, dest, losses, now)
			if errors.Is(err, failover.ErrNoHubPartition) {
				// Not mirrored (yet): nothing to translate to.
				c.log.Debug("checkpoint of a partition the hub does not have", slog.String("edge", edge),
					slog.String("group", g.Group), slog.String("topic", p.Topic), slog.Int("partition", int(p.Partition)))
				continue
			}
			if err != nil {
				return nil, err
			}
			cps = append(cps, cp)
			if cp.Exact {
				res.Exact++
			} else {
				c.m.inexact.Inc()
			}
		}
	}
	if err := c.store(ctx, cps); err != nil {
		return nil, err
	}
	res.Partitions = len(cps)
	c.m.stored.Add(float64(len(cps)))
	c.mu.Lock()
	for _, cp := range cps {
		c.cache[cpKey{edge, cp.Group, cp.Topic, cp.Partition}] = cpCache{edgeOffset: cp.EdgeOffset, hubOffset: cp.HubOffset, exact: cp.Exact}
	}
	c.mu.Unlock()
	if c.cfg.SyncGroupOffsets {
		c.sync(ctx, cps)
	}
	return res, nil
}

func (c *checkpointer) translate(ctx context.Context, edge string, g wire.GroupCheckpoint, p wire.PartitionCheckpoint,
	dest string, losses []wire.LossRange, now time.Time) (failover.Checkpoint, error) {
	src := failover.Source{Edge: edge, Topic: p.Topic, Partition: p.Partition}
	cp := failover.Checkpoint{Version: failover.CheckpointVersion, Edge: edge, Group: g.Group, Topic: p.Topic,
		Partition: p.Partition, EdgeOffset: p.Offset, CommittedAt: g.ReadAt.UTC(), HubTopic: dest,
		TranslatedAt: now, EdgeLast: p.EdgeLast}
	c.mu.Lock()
	prev, known := c.cache[cpKey{edge, g.Group, p.Topic, p.Partition}]
	c.mu.Unlock()
	var from int64
	if known && prev.edgeOffset <= p.Offset {
		from = prev.hubOffset
	}
	tail, err := failover.LastRecord(ctx, c.client, dest, src)
	if err != nil {
		return cp, err
	}
	cp.HubLast = tail.SourceOffset
	if known && prev.exact && prev.edgeOffset == p.Offset {
		cp.HubOffset, cp.Exact = prev.hubOffset, true
	} else {
		t, err := failover.Translate(ctx, c.client, dest, src, p.Offset, from)
		if err != nil {
			return cp, err
		}
		cp.HubOffset, cp.Exact = t.HubOffset, t.Found
	}
	for _, l := range losses {
		if l.Topic != p.Topic || l.Partition != p.Partition || l.LastOffset < p.Offset {
			continue
		}
		n := l.Records
		if l.FirstOffset < p.Offset {
			n = min(n, l.LastOffset-p.Offset+1)
		}
		cp.Lost += n
	}
	return cp, nil
}

// store writes checkpoints to the checkpoint topic, creating it (compacted)
// on first use.
func (c *checkpointer) store(ctx context.Context, cps []failover.Checkpoint) error {
	if len(cps) == 0 {
		return nil
	}
	n, err := c.topic(ctx)
	if err != nil {
		return err
	}
	byPart := make(map[int][]kafka.Record)
	for _, cp := range cps {
		v, err := json.Marshal(cp)
		if err != nil {
			return fmt.Errorf("encode checkpoint: %w", err)
		}
		p := failover.CheckpointPartition(cp.Edge, cp.Group, n)
		byPart[p] = append(byPart[p], kafka.Record{Time: cp.TranslatedAt,
			Key:   kafka.NewBytes(failover.CheckpointKey(cp.Edge, cp.Group, cp.Topic, cp.Partition)),
			Value: kafka.NewBytes(v)})
	}
	for p, recs := range byPart {
		for len(recs) > 0 {
			k := min(len(recs), 500)
			res, err := c.client.Produce(ctx, &kafka.ProduceRequest{Topic: c.cfg.CheckpointTopic, Partition: p,
				RequiredAcks: kafka.RequireAll, Compression: c.cfg.HubCompression, Records: kafka.NewRecordReader(recs[:k]...)})
			if err == nil && res.Error != nil {
				err = res.Error
			}
			if err != nil {
				if errors.Is(err, kafka.UnknownTopicOrPartition) {
					c.mu.Lock()
					c.partitions = 0
					c.mu.Unlock()
				}
				return errUnavailable(fmt.Sprintf("write checkpoints to %s/%d: %v", c.cfg.CheckpointTopic, p, err), 2)
			}
			recs = recs[k:]
		}
	}
	return nil
}

// topic returns the partition count of the checkpoint topic, creating the
// topic (one partition, compacted) if it does not exist.
func (c *checkpointer) topic(ctx context.Context) (int, error) {
	c.mu.Lock()
	n := c.partitions
	c.mu.Unlock()
	if n > 0 {
		return n, nil
	}
	deadline := time.Now().Add(30 * time.Second)
	created := false
	for {
		parts, err := failover.Partitions(ctx, c.client, c.cfg.CheckpointTopic)
		if err == nil && len(parts) > 0 {
			c.mu.Lock()
			c.partitions = len(parts)
			c.mu.Unlock()
			return len(parts), nil
		}
		if err != nil && !errors.Is(err, failover.ErrNoHubPartition) {
			return 0, errUnavailable("describe checkpoint topic: "+err.Error(), 2)
		}
		if !created {
			res, err := c.client.CreateTopics(ctx, &kafka.CreateTopicsRequest{Topics: []kafka.TopicConfig{{
				Topic: c.cfg.CheckpointTopic, NumPartitions: 1, ReplicationFactor: c.cfg.HubReplicationFactor,
				ConfigEntries: []kafka.ConfigEntry{{ConfigName: "cleanup.policy", ConfigValue: "compact"}},
			}}})
			if err == nil {
				if e := res.Errors[c.cfg.CheckpointTopic]; e != nil && !errors.Is(e, kafka.TopicAlreadyExists) {
					err = e
				}
			}
			if err != nil {
				return 0, errUnavailable(fmt.Sprintf("create checkpoint topic %s: %v", c.cfg.CheckpointTopic, err), 2)
			}
			c.log.Info("created checkpoint topic", slog.String("topic", c.cfg.CheckpointTopic))
			created = true
		}
		if time.Now().After(deadline) {
			return 0, errUnavailable("checkpoint topic has no partitions yet", 2)
		}
		t := time.NewTimer(200 * time.Millisecond)
		select {
		case <-ctx.Done():
			t.Stop()
			return 0, ctx.Err()
		case <-t.C:
		}
	}
}

// sync commits the translated offsets to the hub groups of the same name,
// only while a group has no active members and never backwards (as
// MirrorMaker 2's sync.group.offsets). Failures are logged, not returned:
// the checkpoints are stored, and the next report tries again.
func (c *checkpointer) sync(ctx context.Context, cps []failover.Checkpoint) {
	byGroup := make(map[string][]failover.Checkpoint)
	for _, cp := range cps {
		byGroup[cp.Group] = append(byGroup[cp.Group], cp)
	}
	for group, list := range byGroup {
		log := c.log.With(slog.String("edge", list[0].Edge), slog.String("group", group))
		info, err := failover.GroupState(ctx, c.client, group)
		if err != nil {
			log.Warn("sync group offsets: describe hub group", slog.Any("error", err))
			continue
		}
		if info.Active() {
			c.mu.Lock()
			first := !c.refused[group]
			c.refused[group] = true
			c.mu.Unlock()
			if first {
				log.Info("sync group offsets: hub group has active members; not committing while it has",
					slog.String("state", info.State), slog.Int("members", info.Members))
			}
			continue
		}
		c.mu.Lock()
		delete(c.refused, group)
		c.mu.Unlock()
		current, err := failover.GroupOffsets(ctx, c.client, group)
		if err != nil {
			log.Warn("sync group offsets: read hub group offsets", slog.Any("error", err))
			continue
		}
		commit := make(map[failover.TopicPartition]int64)
		for _, cp := range list {
			tp := failover.TopicPartition{Topic: cp.HubTopic, Partition: cp.Partition}
			if cur, ok := current[tp]; ok && cur >= cp.HubOffset {
				continue
			}
			commit[tp] = cp.HubOffset
		}
		if len(commit) == 0 {
			continue
		}
		if err := failover.Commit(ctx, c.client, group, commit); err != nil {
			log.Info("sync group offsets: not committed", slog.Any("error", err))
			continue
		}
		c.m.synced.Add(float64(len(commit)))
		log.Debug("synced group offsets to the hub", slog.Int("partitions", len(commit)))
	}
}
