package aggregator

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"slices"
	"sync"
	"time"

	"github.com/segmentio/kafka-go"

	"github.com/edgemirror/edgemirror/internal/kafkautil"
	"github.com/edgemirror/edgemirror/internal/wire"
)

// fleetTopicPartitions is the partition count of the status and events
// topics the aggregator creates. One partition gives one order of every
// edge's records; topics created by an operator with more partitions are
// read and written the same way (murmur2 of the edge id, as Kafka's own
// producers do, so every record of an edge is in one partition).
const fleetTopicPartitions = 1

// statusRecord is the value of an edge's record in the status topic.
type statusRecord struct {
	Edge string `json:"edge"`
	// LastSeen is the receiving aggregator's clock, never the agent's.
	LastSeen   time.Time      `json:"last_seen"`
	Aggregator string         `json:"aggregator"`
	Heartbeat  wire.Heartbeat `json:"heartbeat"`
}

// topicPartition is a partition of a fleet topic.
type topicPartition struct {
	topic     string
	partition int
}

// fleet is the fleet view: the latest status of every edge and every loss
// event, both read back from the hub. It is the same in every aggregator
// that reads the same hub, and survives the loss of any of them: the local
// copy is a cache of the compacted status topic and the events topic.
type fleet struct {
	cfg    *Config
	log    *slog.Logger
	client *kafka.Client
	m      *metrics
	id     string // this aggregator, written into status records and events

	// readMu serialises reads of the fleet topics; writeMu serialises loss
	// event writes (read the events, then append what is new).
	readMu  sync.Mutex
	writeMu sync.Mutex

	mu      sync.Mutex
	status  map[string]statusRecord
	events  map[string][]wire.LossEvent // by edge, in topic order
	ids     map[string]bool             // IDs of the events read or written
	next    map[topicPartition]int64    // read position
	topics  map[string]int              // partition count of a fleet topic known to exist
	lastErr error                       // of the last read; nil when it succeeded

	// beforeCommit, if set, runs before a loss event transaction commits
	// (tests: a second aggregator takes over meanwhile).
	beforeCommit func()
}

func newFleet(cfg *Config, log *slog.Logger, client *kafka.Client, m *metrics) *fleet {
	return &fleet{cfg: cfg, log: log.With(slog.String("system", "fleet")), client: client, m: m,
		id:     cfg.AggregatorID,
		status: make(map[string]statusRecord), events: make(map[string][]wire.LossEvent),
		ids: make(map[string]bool), next: make(map[topicPartition]int64), topics: make(map[string]int)}
}

// run reads the fleet topics every FleetRefresh until ctx ends, so that
// heartbeats received by other aggregators reach this one's view and
// metrics.
func (f *fleet) run(ctx context.Context) {
	t := time.NewTimer(0)
	defer t.Stop()
	failing := false
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		rctx, cancel := context.WithTimeout(ctx, f.cfg.HubTimeout)
		err := f.refresh(rctx)
		cancel()
		switch {
		case err != nil && ctx.Err() == nil && !failing:
			f.log.Warn("read fleet topics from the hub; the fleet view may be stale", slog.Any("error", err))
			failing = true
		case err == nil && failing:
			f.log.Info("fleet topics read again")
			failing = false
		}
		t.Reset(f.cfg.FleetRefresh)
	}
}

// refresh reads both fleet topics up to their current end.
func (f *fleet) refresh(ctx context.Context) error {
	f.readMu.Lock()
	defer f.readMu.Unlock()
	err := errors.Join(f.catchUp(ctx, f.cfg.StatusTopic, f.applyStatus), f.catchUp(ctx, f.cfg.EventsTopic, f.applyEvent))
	f.mu.Lock()
	f.lastErr = err
	f.mu.Unlock()
	if err != nil {
		f.m.fleetReadErrors.Inc()
	}
	return err
}

// partitions returns the partition count of a fleet topic, 0 if it does
// not exist yet.
func (f *fleet) partitions(ctx context.Context, topic string) (int, error) {
	f.mu.Lock()
	n := f.topics[topic]
	f.mu.Unlock()
	if n > 0 {
		return n, nil
	}
	md, err := f.client.Metadata(ctx, &kafka.MetadataRequest{Topics: []string{topic}})
	if err != nil {
		return 0, fmt.Errorf("describe %s: %w", topic, err)
	}
	for _, t := range md.Topics {
		if t.Name != topic {
			continue
		}
		if t.Error != nil {
			if errors.Is(t.Error, kafka.UnknownTopicOrPartition) {
				return 0, nil
			}
			return 0, fmt.Errorf("describe %s: %w", topic, t.Error)
		}
		for _, p := range t.Partitions {
			if p.Leader.ID < 0 || p.Leader.Host == "" || p.Error != nil {
				return 0, fmt.Errorf("describe %s: partition %d has no leader", topic, p.ID)
			}
		}
		f.mu.Lock()
		f.topics[topic] = len(t.Partitions)
		f.mu.Unlock()
		return len(t.Partitions), nil
	}
	return 0, nil
}

// catchUp reads every partition of topic from where the last read stopped
// to the last stable offset it has now, calling apply for each committed
// record (see fetchCommitted).
func (f *fleet) catchUp(ctx context.Context, topic string, apply func(offset int64, key, value []byte)) error {
	n, err := f.partitions(ctx, topic)
	if err != nil || n == 0 {
		return err
	}
	for p := 0; p < n; p++ {
		tp := topicPartition{topic, p}
		first, last, err := kafkautil.Offsets(ctx, f.client, topic, int32(p), kafka.ReadCommitted)
		if err != nil {
			if errors.Is(err, kafka.UnknownTopicOrPartition) {
				f.forgetTopic(topic)
			}
			return err
		}
		f.mu.Lock()
		if f.next[tp] > last {
			// The log ends before where we were: the topic was deleted and
			// created again. What was read from it is gone from the hub.
			f.log.Warn("fleet topic was recreated; reading it again from the start", slog.String("topic", topic))
			f.resetLocked(topic)
		}
		next := max(f.next[tp], first)
		f.mu.Unlock()
		for next < last {
			recs, after, err := fetchCommitted(ctx, f.client, topic, p, next)
			if err != nil {
				if errors.Is(err, kafka.OffsetOutOfRange) {
					// Retention or compaction moved the log start past
					// us: start again from the first offset there is.
					if first, _, err := kafkautil.Offsets(ctx, f.client, topic, int32(p), kafka.ReadCommitted); err == nil && first > next {
						next = first
						continue
					}
				}
				return fmt.Errorf("read %s/%d at %d: %w", topic, p, next, err)
			}
			for _, r := range recs {
				apply(r.offset, r.key, r.value)
			}
			if after <= next {
				// Nothing at or after next below last (compacted away, or
				// only markers of transactions still open): the next
				// read starts here again.
				break
			}
			next = after
		}
		f.mu.Lock()
		f.next[tp] = max(f.next[tp], next)
		f.mu.Unlock()
	}
	return nil
}

// resetLocked forgets everything read from topic. f.mu is held.
func (f *fleet) resetLocked(topic string) {
	for tp := range f.next {
		if tp.topic == topic {
			delete(f.next, tp)
		}
	}
	switch topic {
	case f.cfg.StatusTopic:
		clear(f.status)
	case f.cfg.EventsTopic:
		clear(f.events)
		clear(f.ids)
	}
}

func (f *fleet) forgetTopic(topic string) {
	f.mu.Lock()
	delete(f.topics, topic)
	f.mu.Unlock()
}

// applyStatus takes a status record read from the hub. A tombstone (null
// value) removes the edge; a record older than what is known is ignored.
func (f *fleet) applyStatus(offset int64, key, value []byte) {
	if value == nil {
		f.mu.Lock()
		delete(f.status, string(key))
		f.mu.Unlock()
		return
	}
	var rec statusRecord
	if err := json.Unmarshal(value, &rec); err != nil || wire.ValidEdgeID(rec.Edge) != nil {
		f.log.Warn("ignoring an unreadable record in the status topic", slog.String("topic", f.cfg.StatusTopic),
			slog.Int64("offset", offset), slog.Any("error", err))
		return
	}
	f.merge(rec)
}

// merge keeps the newer of rec and what is known of its edge.
func (f *fleet) merge(rec statusRecord) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if old, ok := f.status[rec.Edge]; ok && old.LastSeen.After(rec.LastSeen) {
		return
	}
	f.status[rec.Edge] = rec
}

// putStatus writes an edge's status to the status topic (acks=all), then
// to the local view.
func (f *fleet) putStatus(ctx context.Context, rec statusRecord) error {
	value, err := json.Marshal(rec)
	if err != nil {
		return fmt.Errorf("encode status of %s: %w", rec.Edge, err)
	}
	if _, err := f.produce(ctx, f.cfg.StatusTopic, rec.Edge, value); err != nil {
		return err
	}
	f.merge(rec)
	return nil
}

// produce appends records with key edge to the partition of edge in a
// fleet topic, creating the topic if needed, and returns the first
// record's offset.
func (f *fleet) produce(ctx context.Context, topic, edge string, values ...[]byte) (int64, error) {
	n, err := f.partitions(ctx, topic)
	if err != nil {
		return 0, err
	}
	if n == 0 {
		if n, err = f.createTopic(ctx, topic); err != nil {
			return 0, err
		}
	}
	p := kafka.Murmur2Balancer{}.Balance(kafka.Message{Key: []byte(edge)}, seq(n)...)
	now := time.Now()
	recs := make([]kafka.Record, len(values))
	for i, v := range values {
		recs[i] = kafka.Record{Time: now, Key: kafka.NewBytes([]byte(edge)), Value: kafka.NewBytes(v)}
	}
	start := time.Now()
	res, err := f.client.Produce(ctx, &kafka.ProduceRequest{Topic: topic, Partition: p, RequiredAcks: kafka.RequireAll,
		Records: kafka.NewRecordReader(recs...)})
	f.m.fleetWriteDuration.Observe(time.Since(start).Seconds())
	if err == nil && res.Error != nil {
		err = res.Error
	}
	if err != nil {
		f.m.fleetWriteErrors.Inc()
		if errors.Is(err, kafka.UnknownTopicOrPartition) || errors.Is(err, kafka.NotLeaderForPartition) {
			f.forgetTopic(topic)
		}
		return 0, fmt.Errorf("write to %s/%d: %w", topic, p, err)
	}
	return res.BaseOffset, nil
}

func seq(n int) []int {
	out := make([]int, n)
	for i := range out {
		out[i] = i
	}
	return out
}

// createTopic creates a fleet topic: the status topic compacted (one
// record per edge survives) with small segments, the events topic kept forever (losses are
// rare and each one matters; an operator may set a retention).
func (f *fleet) createTopic(ctx context.Context, topic string) (int, error) {
	// Compaction never touches the active segment: roll it every 10
	// minutes so that an aggregator starting on a busy fleet reads about
	// one record per edge plus ten minutes of heartbeats, not days of them.
	cfgs := []kafka.ConfigEntry{{ConfigName: "cleanup.policy", ConfigValue: "compact"},
		{ConfigName: "segment.ms", ConfigValue: "600000"}, {ConfigName: "min.cleanable.dirty.ratio", ConfigValue: "0.1"}}
	if topic == f.cfg.EventsTopic {
		cfgs = []kafka.ConfigEntry{{ConfigName: "cleanup.policy", ConfigValue: "delete"},
			{ConfigName: "retention.ms", ConfigValue: "-1"}}
	}
	res, err := f.client.CreateTopics(ctx, &kafka.CreateTopicsRequest{Topics: []kafka.TopicConfig{{
		Topic: topic, NumPartitions: fleetTopicPartitions, ReplicationFactor: f.cfg.HubReplicationFactor,
		ConfigEntries: cfgs,
	}}})
	if err == nil {
		if e := res.Errors[topic]; e != nil && !errors.Is(e, kafka.TopicAlreadyExists) {
			err = e
		}
	}
	if err != nil {
		return 0, fmt.Errorf("create hub topic %s: %w", topic, err)
	}
	f.log.Info("created fleet topic", slog.String("topic", topic))
	// Creation is asynchronous; kafka-go fails a produce to a leaderless
	// partition without retrying (kafka-go #1208).
	deadline := time.Now().Add(30 * time.Second)
	for {
		n, err := f.partitions(ctx, topic)
		if err == nil && n > 0 {
			return n, nil
		}
		if time.Now().After(deadline) {
			return 0, fmt.Errorf("hub topic %s has no leader yet: %v", topic, err)
		}
		t := time.NewTimer(100 * time.Millisecond)
		select {
		case <-ctx.Done():
			t.Stop()
			return 0, ctx.Err()
		case <-t.C:
		}
	}
}

// view computes every edge's row at now, sorted by edge id.
func (f *fleet) view(now time.Time) []wire.EdgeStatus {
	var configured []string
	if f.cfg.EdgeIDs != nil {
		configured = f.cfg.EdgeIDs()
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	rows := make(map[string]*wire.EdgeStatus, len(f.status)+len(configured))
	for _, e := range configured {
		rows[e] = &wire.EdgeStatus{Edge: e, State: wire.EdgeNeverSeen}
	}
	for e, rec := range f.status {
		hb := rec.Heartbeat
		seen := rec.LastSeen
		since := max(now.Sub(seen).Seconds(), 0)
		row := &wire.EdgeStatus{Edge: e, LastSeen: &seen, SecondsSinceSeen: since,
			BacklogChunks: hb.BacklogChunks, BacklogRecords: hb.BacklogRecords, BacklogBytes: hb.BacklogBytes,
			RPOSeconds: hb.RPOSeconds, EdgeLagRecords: hb.EdgeLagRecords, BufferFillRatio: hb.BufferFillRatio,
			RecordsPerSecond: hb.RecordsPerSecond, Version: hb.Version, LinkUp: hb.LinkUp, Blocked: hb.Blocked,
			Refused: hb.Refused, Aggregator: rec.Aggregator}
		switch {
		case now.Sub(seen) > f.cfg.DisconnectAfter:
			row.State = wire.EdgeDisconnected
			// Nothing pending was acknowledged since: what was oldest
			// then is older by the time since, and whatever the edge
			// produced meanwhile is not in the hub either.
			row.RPOSeconds += since
			row.RecordsPerSecond = 0
		case hb.RPOSeconds > f.cfg.BehindAfter.Seconds() || hb.Blocked || hb.Refused != "":
			row.State = wire.EdgeBehind
		default:
			row.State = wire.EdgeOK
		}
		rows[e] = row
	}
	for e, evs := range f.events {
		row := rows[e]
		if row == nil || row.LastSeen == nil {
			// Known only from its losses (an agent that sends no
			// heartbeats, or its status record was deleted): heard from
			// when its last loss was written, nothing more.
			seen := evs[len(evs)-1].Time
			row = &wire.EdgeStatus{Edge: e, State: wire.EdgeDisconnected, LastSeen: &seen,
				SecondsSinceSeen: max(now.Sub(seen).Seconds(), 0)}
			rows[e] = row
		}
		for _, ev := range evs {
			row.LostRecords += ev.Records
		}
		row.LossRanges = len(evs)
	}
	out := make([]wire.EdgeStatus, 0, len(rows))
	for _, r := range rows {
		out = append(out, *r)
	}
	slices.SortFunc(out, func(a, b wire.EdgeStatus) int {
		switch {
		case a.Edge < b.Edge:
			return -1
		case a.Edge > b.Edge:
			return 1
		}
		return 0
	})
	return out
}

// fresh reads the fleet topics before an answer, so that the answer holds
// what any aggregator wrote before the request. On error the cached view
// is used and the error returned for a header.
func (f *fleet) fresh(ctx context.Context) error {
	ctx, cancel := context.WithTimeout(ctx, min(f.cfg.HubTimeout, 10*time.Second))
	defer cancel()
	return f.refresh(ctx)
}

// HeaderStale is set on GET /v1/edges and /v1/losses answers served from
// the aggregator's cached view because the hub could not be read.
const HeaderStale = "Edgemirror-Stale"

func (s *server) handleHeartbeat(w http.ResponseWriter, r *http.Request) {
	edge, he := s.identity(r)
	if he != nil {
		writeJSON(w, he.status, wire.ErrorResponse{Error: he.msg, Permanent: true})
		return
	}
	body, err := io.ReadAll(io.LimitReader(r.Body, wire.MaxHeartbeatBytes+1))
	if err != nil {
		writeJSON(w, http.StatusServiceUnavailable, wire.ErrorResponse{Error: "read heartbeat: " + err.Error()})
		return
	}
	if len(body) > wire.MaxHeartbeatBytes {
		s.m.heartbeats.WithLabelValues("invalid").Inc()
		writeJSON(w, http.StatusRequestEntityTooLarge, wire.ErrorResponse{
			Error: fmt.Sprintf("heartbeat larger than %d bytes", wire.MaxHeartbeatBytes), Permanent: true})
		return
	}
	var hb wire.Heartbeat
	if err := json.Unmarshal(body, &hb); err != nil {
		s.m.heartbeats.WithLabelValues("invalid").Inc()
		writeJSON(w, http.StatusBadRequest, wire.ErrorResponse{Error: "decode heartbeat: " + err.Error(), Permanent: true})
		return
	}
	if err := validHeartbeat(&hb); err != nil {
		s.m.heartbeats.WithLabelValues("invalid").Inc()
		writeJSON(w, http.StatusBadRequest, wire.ErrorResponse{Error: "invalid heartbeat: " + err.Error(), Permanent: true})
		return
	}
	rec := statusRecord{Edge: edge, LastSeen: time.Now().UTC(), Aggregator: s.fleet.id, Heartbeat: hb}
	if err := s.fleet.putStatus(r.Context(), rec); err != nil {
		s.m.heartbeats.WithLabelValues("unavailable").Inc()
		s.log.Debug("heartbeat not stored in the hub", slog.String("edge", edge), slog.Any("error", err))
		writeJSON(w, http.StatusServiceUnavailable, wire.ErrorResponse{Error: "store status in hub: " + err.Error()})
		return
	}
	s.m.heartbeats.WithLabelValues("ok").Inc()
	writeJSON(w, http.StatusOK, map[string]string{"status": "ok"})
}

// validHeartbeat rejects numbers no agent sends.
func validHeartbeat(hb *wire.Heartbeat) error {
	switch {
	case len(hb.Version) > 64:
		return fmt.Errorf("version longer than 64 bytes")
	case len(hb.Refused) > 1024:
		return fmt.Errorf("refused longer than 1024 bytes")
	case hb.BacklogChunks < 0 || hb.BacklogRecords < 0 || hb.BacklogBytes < 0 || hb.EdgeLagRecords < 0 || hb.PendingLossRanges < 0:
		return fmt.Errorf("negative count")
	case hb.RPOSeconds < 0 || hb.RecordsPerSecond < 0 || hb.ReadPerSecond < 0 || hb.IntervalSeconds < 0:
		return fmt.Errorf("negative rate or duration")
	case hb.BufferFillRatio < 0 || hb.BufferFillRatio > 1:
		return fmt.Errorf("buffer_fill_ratio %v outside [0, 1]", hb.BufferFillRatio)
	case len(hb.LostRecords) > 32:
		return fmt.Errorf("more than 32 loss reasons")
	}
	return nil
}

func (s *server) handleEdges(w http.ResponseWriter, r *http.Request) {
	if err := s.fleet.fresh(r.Context()); err != nil {
		w.Header().Set(HeaderStale, headerSafe(err.Error()))
	}
	writeJSON(w, http.StatusOK, s.fleet.view(time.Now()))
}
