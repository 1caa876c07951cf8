package agent

// Group checkpoints: every CheckpointInterval the agent reads the committed
// offsets of the edge consumer groups matching SyncGroups and sends them to
// the aggregator (POST /v1/checkpoints), which translates them into hub
// offsets and keeps the latest in the hub. Checkpoints are state, not
// events: a report that cannot be delivered is not buffered, the next one
// carries fresher offsets. They travel on the same link (and bandwidth cap)
// as the chunks, on their own request, so they never wait behind data.

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"log/slog"
	"net/http"
	"net/url"
	"regexp"
	"sort"
	"time"

	"github.com/klauspost/compress/zstd"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/segmentio/kafka-go"

	"github.com/edgemirror/edgemirror/internal/failover"
	"github.com/edgemirror/edgemirror/internal/promutil"
	"github.com/edgemirror/edgemirror/internal/wire"
)

// checkpointer reads edge group offsets and ships them.
type checkpointer struct {
	cfg      *Config
	log      *slog.Logger
	edge     *kafka.Client
	http     *http.Client
	base     func() *url.URL // the aggregator endpoint in use
	identity func(*http.Request)
	wanted   func(topic string) bool
	groups   *regexp.Regexp

	// last caches the offset of the last record below each partition's
	// last stable offset, so the tail is read only when the partition grew.
	last map[failover.TopicPartition][2]int64

	zstd *zstd.Encoder

	reports    *prometheus.CounterVec
	bytes      prometheus.Counter
	collectors promutil.Set
}

func newCheckpointer(cfg *Config, log *slog.Logger, edge *kafka.Client, hc *http.Client, base func() *url.URL,
	identity func(*http.Request), wanted func(string) bool) (*checkpointer, error) {
	re, err := regexp.Compile("^(?:" + cfg.SyncGroups + ")$")
	if err != nil {
		return nil, fmt.Errorf("compile --sync-groups: %w", err)
	}
	enc, err := zstd.NewWriter(nil, zstd.WithEncoderConcurrency(1), zstd.WithEncoderLevel(zstd.SpeedDefault))
	if err != nil {
		return nil, fmt.Errorf("create checkpoint encoder: %w", err)
	}
	c := &checkpointer{cfg: cfg, zstd: enc, log: log, edge: edge, http: hc, base: base, identity: identity, wanted: wanted,
		groups: re, last: make(map[failover.TopicPartition][2]int64),
		reports: prometheus.NewCounterVec(prometheus.CounterOpts{Namespace: namespace, Subsystem: "agent",
			Name: "checkpoint_reports_total", Help: "Group checkpoint reports sent to the aggregator, by result (ok, error)."}, []string{"result"}),
		bytes: prometheus.NewCounter(prometheus.CounterOpts{Namespace: namespace, Subsystem: "agent",
			Name: "checkpoint_report_bytes_total", Help: "Compressed bytes of group checkpoint report bodies sent (before HTTP framing)."}),
	}
	c.collectors = promutil.Set{c.reports, c.bytes}
	return c, nil
}

// close releases the encoder.
func (c *checkpointer) close() { c.zstd.Close() }

// run reports every CheckpointInterval until ctx ends.
func (c *checkpointer) run(ctx context.Context) error {
	t := time.NewTimer(c.cfg.CheckpointInterval)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return nil
		case <-t.C:
		}
		if err := c.once(ctx); err != nil && ctx.Err() == nil {
			c.reports.WithLabelValues("error").Inc()
			c.log.Info("group checkpoints not delivered; the next round sends fresh ones", slog.Any("error", err))
		}
		t.Reset(c.cfg.CheckpointInterval)
	}
}

// once reads the matching groups and sends one report (split when large).
func (c *checkpointer) once(ctx context.Context) error {
	rctx, cancel := context.WithTimeout(ctx, c.cfg.RequestTimeout)
	defer cancel()
	rep, err := c.read(rctx)
	if err != nil {
		return err
	}
	for len(rep.Groups) > 0 {
		n, parts := 0, 0
		for n < len(rep.Groups) && (n == 0 || parts+len(rep.Groups[n].Partitions) <= wire.MaxCheckpointPartitions) {
			parts += len(rep.Groups[n].Partitions)
			n++
		}
		if err := c.send(rctx, wire.CheckpointReport{Groups: rep.Groups[:n]}); err != nil {
			return err
		}
		rep.Groups = rep.Groups[n:]
	}
	return nil
}

// read collects the committed offsets of the matching groups on mirrored
// topics.
func (c *checkpointer) read(ctx context.Context) (wire.CheckpointReport, error) {
	var rep wire.CheckpointReport
	groups, err := failover.ListGroups(ctx, c.edge)
	if err != nil {
		return rep, err
	}
	lso := make(map[failover.TopicPartition]int64)
	for _, g := range groups {
		if !c.groups.MatchString(g) {
			continue
		}
		offs, err := failover.GroupOffsets(ctx, c.edge, g)
		if err != nil {
			return rep, err
		}
		gc := wire.GroupCheckpoint{Group: g, ReadAt: time.Now().UTC()}
		for tp, off := range offs {
			if !c.wanted(tp.Topic) {
				continue
			}
			gc.Partitions = append(gc.Partitions, wire.PartitionCheckpoint{Topic: tp.Topic, Partition: tp.Partition, Offset: off})
			lso[tp] = -1
		}
		if len(gc.Partitions) == 0 {
			continue
		}
		sort.Slice(gc.Partitions, func(i, j int) bool {
			a, b := gc.Partitions[i], gc.Partitions[j]
			return a.Topic < b.Topic || a.Topic == b.Topic && a.Partition < b.Partition
		})
		rep.Groups = append(rep.Groups, gc)
	}
	if len(lso) == 0 {
		return rep, nil
	}
	if err := c.edgeLast(ctx, lso); err != nil {
		return rep, err
	}
	for i := range rep.Groups {
		for j := range rep.Groups[i].Partitions {
			p := &rep.Groups[i].Partitions[j]
			p.EdgeLast = lso[failover.TopicPartition{Topic: p.Topic, Partition: p.Partition}]
		}
	}
	return rep, nil
}

// edgeLast replaces each entry of parts by the offset of the partition's
// last committed record (-1: none).
func (c *checkpointer) edgeLast(ctx context.Context, parts map[failover.TopicPartition]int64) error {
	req := &kafka.ListOffsetsRequest{Topics: make(map[string][]kafka.OffsetRequest), IsolationLevel: kafka.ReadCommitted}
	for tp := range parts {
		req.Topics[tp.Topic] = append(req.Topics[tp.Topic], kafka.FirstOffsetOf(int(tp.Partition)), kafka.LastOffsetOf(int(tp.Partition)))
	}
	res, err := c.edge.ListOffsets(ctx, req)
	if err != nil {
		return fmt.Errorf("list edge offsets: %w", err)
	}
	for topic, ps := range res.Topics {
		for _, p := range ps {
			tp := failover.TopicPartition{Topic: topic, Partition: int32(p.Partition)}
			if _, ok := parts[tp]; !ok {
				continue
			}
			if p.Error != nil {
				return fmt.Errorf("list edge offsets of %s/%d: %w", topic, p.Partition, p.Error)
			}
			if cached, ok := c.last[tp]; ok && cached[0] == p.LastOffset {
				parts[tp] = cached[1]
				continue
			}
			last, err := failover.LastEdgeRecord(ctx, c.edge, topic, int32(p.Partition), p.FirstOffset, p.LastOffset)
			if err != nil {
				return err
			}
			c.last[tp] = [2]int64{p.LastOffset, last}
			parts[tp] = last
		}
	}
	return nil
}

func (c *checkpointer) send(ctx context.Context, rep wire.CheckpointReport) error {
	raw, err := json.Marshal(rep)
	if err != nil {
		return fmt.Errorf("encode checkpoint report: %w", err)
	}
	// Offsets repeat group and topic names: compressed they cost the link
	// a fraction.
	body := c.zstd.EncodeAll(raw, nil)
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, c.base().JoinPath(wire.PathCheckpoints).String(), bytes.NewReader(body))
	if err != nil {
		return err
	}
	c.identity(req)
	req.Header.Set("Content-Type", wire.ContentTypeJSON)
	req.Header.Set("Content-Encoding", wire.ContentEncodingZstd)
	resp, err := c.http.Do(req)
	if err != nil {
		return err
	}
	defer drain(resp)
	c.bytes.Add(float64(len(body)))
	if resp.StatusCode/100 != 2 {
		var er wire.ErrorResponse
		_ = json.NewDecoder(http.MaxBytesReader(nil, resp.Body, maxErrorBody)).Decode(&er)
		return fmt.Errorf("send checkpoints: aggregator answered %s: %s", resp.Status, er.Error)
	}
	var ok wire.CheckpointResponse
	_ = json.NewDecoder(http.MaxBytesReader(nil, resp.Body, maxErrorBody)).Decode(&ok)
	c.reports.WithLabelValues("ok").Inc()
	parts := 0
	for _, g := range rep.Groups {
		parts += len(g.Partitions)
	}
	c.log.Debug("group checkpoints delivered", slog.Int("groups", len(rep.Groups)), slog.Int("partitions", parts),
		slog.Int("stored", ok.Partitions), slog.Int("exact", ok.Exact), slog.Int("json_bytes", len(raw)), slog.Int("bytes", len(body)))
	return nil
}
