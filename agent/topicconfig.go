package agent

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"maps"
	"net/http"
	"net/url"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/segmentio/kafka-go"

	"github.com/edgemirror/edgemirror/internal/kafkautil"
	"github.com/edgemirror/edgemirror/internal/wire"
)

// firstSyncWait bounds how long shipping waits at start for the first topic
// settings report (see topicConfigSync.waitFirst).
const firstSyncWait = 5 * time.Second

// resyncInterval is how often every topic is reported again, changed or
// not: the hub topic may have been deleted and recreated by a chunk (with
// the hub's defaults), or changed by hand. A report of unchanged settings
// costs the aggregator one DescribeConfigs.
const resyncInterval = time.Hour

// maxDescribeTopics bounds the topics of one DescribeConfigs request to the
// edge cluster.
const maxDescribeTopics = 100

// topicConfigSync reads the synced settings (wire.SyncedTopicConfigs) of
// every mirrored edge topic when the reader starts mirroring it and every
// --metadata-interval after, and reports to the aggregator each topic whose
// settings it has not yet taken: new topics, changed settings, and topics
// whose last report failed or was partly refused by the hub; and every topic
// once per resyncInterval. Only topic
// overrides are read; a setting the edge broker reports as a broker setting
// or default is not an override and is not carried.
//
// It never holds up reading, and shipping only at start, for at most
// firstSyncWait (waitFirst): reports go in their own small requests, and a
// failure only means the topic is reported again at the next sync.
type topicConfigSync struct {
	cfg      *Config
	log      *slog.Logger
	edge     *kafka.Client
	http     *http.Client
	base     func() *url.URL // the aggregator endpoint in use
	identity func(*http.Request)
	m        *metrics

	mu     sync.Mutex
	topics map[string]int32 // mirrored topics and partition counts, from the reader
	wake   chan struct{}
	// first is closed when the first sync with topics has finished
	// (delivered or not).
	first     chan struct{}
	firstOnce sync.Once

	// Used by run's goroutine only.
	synced   map[string]string // topic → settings the aggregator took (canonical form)
	warned   map[string]string // topic → last problem logged, so that it is logged once
	lastFull time.Time         // when every topic was last reported
	resync   time.Duration     // resyncInterval; shorter in tests
	maxWait  time.Duration     // firstSyncWait; shorter in tests
}

func newTopicConfigSync(cfg *Config, log *slog.Logger, edge *kafka.Client, hc *http.Client, base func() *url.URL,
	identity func(*http.Request), m *metrics) *topicConfigSync {
	return &topicConfigSync{cfg: cfg, log: log, edge: edge, http: hc, base: base, identity: identity, m: m,
		topics: make(map[string]int32), wake: make(chan struct{}, 1), first: make(chan struct{}),
		synced: make(map[string]string), warned: make(map[string]string), resync: resyncInterval, maxWait: firstSyncWait}
}

// setTopics tells the sync which topics the reader mirrors now. A new topic
// wakes the sync at once, so that its settings usually reach the hub before
// its first chunk. It never blocks.
func (s *topicConfigSync) setTopics(list []wire.Topic) {
	topics := make(map[string]int32, len(list))
	for _, t := range list {
		topics[t.Name] = t.Partitions
	}
	s.mu.Lock()
	grew := false
	for name := range topics {
		if _, ok := s.topics[name]; !ok {
			grew = true
		}
	}
	s.topics = topics // a topic the reader dropped is no longer synced
	s.mu.Unlock()
	if grew {
		select {
		case s.wake <- struct{}{}:
		default:
		}
	}
}

// waitFirst waits until the first sync has been tried, at most
// firstSyncWait. The agent starts shipping after it: chunks buffered before
// a restart are ready at once, and the hub topic a chunk creates before the
// report arrives lacks the edge's settings for a moment (until the report
// reaches the aggregator). It gives up early when ctx ends.
func (s *topicConfigSync) waitFirst(ctx context.Context) {
	t := time.NewTimer(s.maxWait)
	defer t.Stop()
	select {
	case <-s.first:
	case <-t.C:
		s.log.Debug("first topic settings report not done yet; shipping starts anyway")
	case <-ctx.Done():
	}
}

// run syncs on every wake and every MetadataInterval until ctx ends.
func (s *topicConfigSync) run(ctx context.Context) error {
	t := time.NewTimer(s.cfg.MetadataInterval)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return nil
		case <-s.wake:
		case <-t.C:
		}
		// Syncs start every MetadataInterval, however long one takes, so
		// that a change at the edge reaches the hub within about one
		// interval plus one sync.
		start := time.Now()
		s.syncOnce(ctx)
		t.Reset(max(s.cfg.MetadataInterval-time.Since(start), time.Millisecond))
	}
}

// syncOnce reads the settings of every mirrored topic and reports those the
// aggregator has not taken yet.
func (s *topicConfigSync) syncOnce(ctx context.Context) {
	s.mu.Lock()
	topics := maps.Clone(s.topics)
	s.mu.Unlock()
	if len(topics) == 0 {
		return
	}
	defer s.firstOnce.Do(func() { close(s.first) })
	if time.Since(s.lastFull) >= s.resync {
		clear(s.synced)
		s.lastFull = time.Now()
	}
	names := slices.Sorted(maps.Keys(topics))
	var report []wire.TopicConfig
	for len(names) > 0 {
		n := min(len(names), maxDescribeTopics)
		batch := names[:n]
		names = names[n:]
		current, err := s.describe(ctx, batch)
		if err != nil {
			if ctx.Err() == nil {
				s.warnOnce("", "read edge topic settings; will retry", err)
			}
			return
		}
		s.clearWarning("")
		for _, name := range batch {
			cfg, ok := current[name]
			if !ok {
				continue
			}
			if c, done := s.synced[name]; done && c == canonical(cfg) {
				continue
			}
			report = append(report, wire.TopicConfig{Topic: name, Partitions: topics[name], Configs: cfg})
		}
	}
	for len(report) > 0 {
		n := min(len(report), wire.MaxTopicConfigTopics)
		if err := s.send(ctx, report[:n]); err != nil {
			if ctx.Err() == nil {
				s.m.topicConfigReports.WithLabelValues("error").Add(float64(n))
				s.warnOnce("", "topic settings not delivered to the aggregator; will retry", err)
			}
			return
		}
		report = report[n:]
	}
}

// describe returns the synced overrides of topics at the edge. A topic the
// edge cannot describe (deleted meanwhile, not authorized) is logged and
// left out.
func (s *topicConfigSync) describe(ctx context.Context, topics []string) (map[string]map[string]string, error) {
	req := &kafka.DescribeConfigsRequest{}
	for _, t := range topics {
		req.Resources = append(req.Resources, kafka.DescribeConfigRequestResource{
			ResourceType: kafka.ResourceTypeTopic, ResourceName: t, ConfigNames: wire.SyncedTopicConfigs,
		})
	}
	rctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	res, err := s.edge.DescribeConfigs(rctx, req)
	if err != nil {
		return nil, fmt.Errorf("describe edge topic configs: %w", err)
	}
	out := make(map[string]map[string]string, len(topics))
	for _, t := range topics {
		over, err := kafkautil.TopicOverrides(res, t)
		if err != nil {
			s.warnOnce(t, "cannot read the settings of an edge topic; its hub topic keeps what it has", err)
			continue
		}
		s.clearWarning(t)
		cfg := make(map[string]string, len(over))
		for k, v := range over {
			if wire.IsSyncedTopicConfig(k) {
				cfg[k] = v
			}
		}
		out[t] = cfg
	}
	return out, nil
}

// send posts one report and records which topics the aggregator took.
func (s *topicConfigSync) send(ctx context.Context, topics []wire.TopicConfig) error {
	body, err := json.Marshal(wire.TopicConfigReport{Topics: topics})
	if err != nil {
		return fmt.Errorf("encode topic config report: %w", err)
	}
	rctx, cancel := context.WithTimeout(ctx, s.cfg.RequestTimeout)
	defer cancel()
	req, err := http.NewRequestWithContext(rctx, http.MethodPost, s.base().JoinPath(wire.PathTopicConfigs).String(), bytes.NewReader(body))
	if err != nil {
		return err
	}
	if s.identity != nil {
		s.identity(req)
	} else {
		req.Header.Set(wire.HeaderEdge, s.cfg.EdgeID)
	}
	req.Header.Set("Content-Type", wire.ContentTypeJSON)
	resp, err := s.http.Do(req)
	if err != nil {
		return err
	}
	defer drain(resp)
	if resp.StatusCode != http.StatusOK {
		var er wire.ErrorResponse
		b, _ := io.ReadAll(io.LimitReader(resp.Body, maxErrorBody))
		if json.Unmarshal(b, &er) != nil || er.Error == "" {
			er.Error = http.StatusText(resp.StatusCode)
		}
		return fmt.Errorf("aggregator answered %d: %s", resp.StatusCode, er.Error)
	}
	var out wire.TopicConfigResponse
	if err := json.NewDecoder(io.LimitReader(resp.Body, wire.MaxJSONBytes)).Decode(&out); err != nil {
		return fmt.Errorf("decode topic config answer: %w", err)
	}
	s.clearWarning("")
	sent := make(map[string]wire.TopicConfig, len(topics))
	for _, t := range topics {
		sent[t.Topic] = t
	}
	for _, r := range out.Topics {
		t, ok := sent[r.Topic]
		if !ok {
			continue
		}
		switch {
		case r.Ignored:
			s.synced[r.Topic] = canonical(t.Configs)
			s.m.topicConfigReports.WithLabelValues("ignored").Inc()
			s.log.Debug("aggregator does not sync topic settings", slog.String("topic", r.Topic))
		case r.Error != "":
			s.m.topicConfigReports.WithLabelValues("error").Inc()
			s.warnOnce(r.Topic, "hub topic settings not synced; will retry", fmt.Errorf("%s", r.Error))
		case len(r.Refused) > 0:
			s.m.topicConfigReports.WithLabelValues("refused").Inc()
			keys := make([]string, len(r.Refused))
			for i, rf := range r.Refused {
				keys[i] = rf.Key + ": " + rf.Error
			}
			s.warnOnce(r.Topic, "hub refused topic settings; will retry at the next sync",
				fmt.Errorf("hub topic %s: %s", r.HubTopic, strings.Join(keys, "; ")))
		default:
			s.m.topicConfigReports.WithLabelValues("synced").Inc()
			s.clearWarning(r.Topic)
			s.synced[r.Topic] = canonical(t.Configs)
			s.log.Info("topic settings synced to the hub", slog.String("topic", r.Topic),
				slog.String("hub_topic", r.HubTopic), slog.Any("settings", t.Configs))
		}
	}
	return nil
}

// warnOnce logs a problem of a topic ("" for the whole sync) at warn level
// the first time it is seen and at debug level while it repeats.
func (s *topicConfigSync) warnOnce(topic, msg string, err error) {
	attrs := []any{slog.Any("error", err)}
	if topic != "" {
		attrs = append(attrs, slog.String("topic", topic))
	}
	if s.warned[topic] == err.Error() {
		s.log.Debug(msg, attrs...)
		return
	}
	s.warned[topic] = err.Error()
	s.log.Warn(msg, attrs...)
}

func (s *topicConfigSync) clearWarning(topic string) { delete(s.warned, topic) }

// canonical is a comparable form of a set of settings.
func canonical(cfg map[string]string) string {
	var b strings.Builder
	for _, k := range slices.Sorted(maps.Keys(cfg)) {
		b.WriteString(k)
		b.WriteByte('=')
		b.WriteString(cfg[k])
		b.WriteByte('\n')
	}
	return b.String()
}
