package aggregator

import (
	"context"
	"errors"
	"fmt"
	"hash/fnv"
	"log/slog"
	"maps"
	"math"
	"slices"
	"sort"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/segmentio/kafka-go"

	"github.com/edgemirror/edgemirror/internal/kafkautil"
	"github.com/edgemirror/edgemirror/internal/wire"
)

// Hub topic management: creation with the source's partition count and the
// edge topic's settings, growth, and keeping the synced settings in line
// with the edge (docs/design.md, "Hub topic configuration").

// configTimestampType is set on every hub topic: records keep the source's
// timestamps (CreateTime), whatever the hub's default is.
const configTimestampType = "message.timestamp.type"

// ensureTopic makes sure the hub topic exists with at least partitions
// partitions, each with a leader. A topic it creates gets the
// --hub-topic-config settings; the edge's own settings arrive with the
// agent's topic config report (topicSyncer.sync).
func (h *hub) ensureTopic(ctx context.Context, topic string, partitions int32) error {
	_, err := h.ensureTopicWith(ctx, topic, partitions, nil)
	return err
}

// ensureTopicWith is ensureTopic creating a missing topic with the synced
// settings edge (plus --hub-topic-config, which wins). Settings the hub
// refuses never stop the creation: the topic is then created without them,
// each one is tried on its own, and the refused ones are returned, logged
// and counted.
func (h *hub) ensureTopicWith(ctx context.Context, topic string, partitions int32, edge map[string]string) ([]wire.RefusedTopicConfig, error) {
	if partitions <= 0 {
		return nil, badChunk("chunk gives no partition count for the source of %s", topic)
	}
	h.mu.Lock()
	have := h.topics[topic]
	h.mu.Unlock()
	if have >= partitions {
		return nil, nil
	}
	n, leaders, err := h.describe(ctx, topic)
	if err != nil {
		return nil, err
	}
	var refused []wire.RefusedTopicConfig
	switch {
	case n == 0:
		want := desiredTopicConfigs(h.cfg, edge)
		created, err := h.createTopic(ctx, topic, partitions, want)
		if err != nil && len(want) > 0 && refusal(err) {
			// A setting the hub does not take (a bad --hub-topic-config
			// value, a topic policy): create the topic with what edgemirror
			// needs, then apply the settings one by one.
			h.log.Warn("hub refused to create topic with its settings; creating it without them",
				slog.String("topic", topic), slog.Any("settings", want), slog.Any("error", err))
			if created, err = h.createTopic(ctx, topic, partitions, nil); err == nil {
				refused, err = h.alterTopicConfigs(ctx, topic, setOps(want))
				if err != nil {
					// The topic exists; its settings are retried at the
					// next sync.
					h.log.Warn("apply hub topic settings", slog.String("topic", topic), slog.Any("error", err))
					err = nil
				}
			}
		}
		if err != nil {
			return nil, hubUnavailable("create hub topic %s: %v", topic, err)
		}
		if created {
			h.log.Info("created hub topic", slog.String("topic", topic), slog.Int("partitions", int(partitions)),
				slog.Any("settings", want))
		} else {
			h.log.Debug("hub topic created meanwhile by another request", slog.String("topic", topic))
		}
	case n < partitions:
		res, err := h.client.CreatePartitions(ctx, &kafka.CreatePartitionsRequest{Topics: []kafka.TopicPartitionsConfig{{
			Name: topic, Count: partitions,
		}}})
		if err == nil && res.Errors[topic] != nil {
			err = res.Errors[topic]
		}
		if err != nil {
			return nil, hubUnavailable("grow hub topic %s to %d partitions: %v", topic, partitions, err)
		}
		h.log.Info("grew hub topic", slog.String("topic", topic), slog.Int("from", int(n)), slog.Int("to", int(partitions)))
	default:
		if leaders {
			h.mu.Lock()
			h.topics[topic] = n
			h.mu.Unlock()
			return nil, nil
		}
	}
	// Creation is asynchronous: wait until every partition has a leader,
	// since kafka-go fails a produce to a leaderless partition without
	// retrying (kafka-go #1208).
	deadline := time.Now().Add(30 * time.Second)
	for {
		n, leaders, err := h.describe(ctx, topic)
		if err == nil && n >= partitions && leaders {
			h.mu.Lock()
			h.topics[topic] = n
			h.mu.Unlock()
			return refused, nil
		}
		if time.Now().After(deadline) {
			return refused, hubUnavailable("hub topic %s has no leader for every partition yet", topic)
		}
		t := time.NewTimer(200 * time.Millisecond)
		select {
		case <-ctx.Done():
			t.Stop()
			return refused, ctx.Err()
		case <-t.C:
		}
	}
}

// createTopic sends one CreateTopics request. An existing topic is no
// error, but created is false: its settings are not these.
func (h *hub) createTopic(ctx context.Context, topic string, partitions int32, settings map[string]string) (created bool, err error) {
	entries := []kafka.ConfigEntry{{ConfigName: configTimestampType, ConfigValue: "CreateTime"}}
	for _, k := range slices.Sorted(maps.Keys(settings)) {
		entries = append(entries, kafka.ConfigEntry{ConfigName: k, ConfigValue: settings[k]})
	}
	res, err := h.client.CreateTopics(ctx, &kafka.CreateTopicsRequest{Topics: []kafka.TopicConfig{{
		Topic:             topic,
		NumPartitions:     int(partitions),
		ReplicationFactor: h.cfg.HubReplicationFactor,
		ConfigEntries:     entries,
	}}})
	if err != nil {
		return false, err
	}
	if e := res.Errors[topic]; e != nil {
		if errors.Is(e, kafka.TopicAlreadyExists) {
			return false, nil
		}
		return false, e
	}
	return true, nil
}

// describe returns a hub topic's partition count (0 if it does not exist)
// and whether every partition has a leader.
func (h *hub) describe(ctx context.Context, topic string) (int32, bool, error) {
	md, err := h.client.Metadata(ctx, &kafka.MetadataRequest{Topics: []string{topic}})
	if err != nil {
		return 0, false, hubUnavailable("describe hub topic %s: %v", topic, err)
	}
	for _, t := range md.Topics {
		if t.Name != topic {
			continue
		}
		if t.Error != nil {
			if errors.Is(t.Error, kafka.UnknownTopicOrPartition) {
				return 0, false, nil
			}
			return 0, false, hubUnavailable("describe hub topic %s: %v", topic, t.Error)
		}
		leaders := true
		for _, p := range t.Partitions {
			if p.Leader.ID < 0 || p.Leader.Host == "" || p.Error != nil {
				leaders = false
			}
		}
		return int32(len(t.Partitions)), leaders, nil
	}
	return 0, false, nil
}

// desiredTopicConfigs is what a hub topic should carry: the edge's synced
// overrides, then --hub-topic-config on top (the operator wins).
func desiredTopicConfigs(cfg *Config, edge map[string]string) map[string]string {
	out := make(map[string]string, len(edge)+len(cfg.HubTopicConfigs))
	if cfg.SyncTopicConfigs {
		for k, v := range edge {
			if wire.IsSyncedTopicConfig(k) {
				out[k] = v
			}
		}
		if v, ok := out[configMaxMessageBytes]; ok {
			out[configMaxMessageBytes] = hubMaxMessageBytes(cfg, v)
		}
	}
	for k, v := range cfg.HubTopicConfigs {
		out[k] = v
	}
	return out
}

// configMaxMessageBytes bounds a record batch on a topic.
const configMaxMessageBytes = "max.message.bytes"

// maxMessageMargin is added to the edge's max.message.bytes on the hub: a
// hub record carries the four provenance headers on top of the edge
// record, so a record at the edge's limit would not fit the same limit.
const maxMessageMargin = 64 << 10

// hubMaxMessageBytes is the max.message.bytes a hub topic gets for the
// edge's value v: at least v plus the provenance margin, and at least what
// the aggregator's own produce batches need (--hub-batch-bytes plus the
// margin). Copying a smaller edge value verbatim would make the hub refuse
// batches the edge accepted, which loses records. A value that is not a
// number is passed on for the hub to refuse (and report).
func hubMaxMessageBytes(cfg *Config, v string) string {
	n, err := strconv.ParseInt(v, 10, 64)
	if err != nil || n < 0 {
		return v
	}
	return strconv.FormatInt(min(max(n, int64(cfg.HubBatchBytes))+maxMessageMargin, math.MaxInt32), 10)
}

// topicConfigOp is one change of a hub topic setting; an empty value with
// del set removes the topic's override.
type topicConfigOp struct {
	key, value string
	del        bool
}

func setOps(settings map[string]string) []topicConfigOp {
	ops := make([]topicConfigOp, 0, len(settings))
	for _, k := range slices.Sorted(maps.Keys(settings)) {
		ops = append(ops, topicConfigOp{key: k, value: settings[k]})
	}
	return ops
}

// planTopicConfigs returns the changes that turn the hub topic's overrides
// (current) into want. A synced key that the hub topic overrides but want
// does not name is removed: the edge dropped its override, so the hub topic
// goes back to the hub's default. Keys outside the synced list are only
// ever set (from --hub-topic-config), never removed.
func planTopicConfigs(current, want map[string]string) []topicConfigOp {
	var ops []topicConfigOp
	for _, k := range slices.Sorted(maps.Keys(want)) {
		if cur, ok := current[k]; !ok || cur != want[k] {
			ops = append(ops, topicConfigOp{key: k, value: want[k]})
		}
	}
	for _, k := range wire.SyncedTopicConfigs {
		if _, over := current[k]; over {
			if _, keep := want[k]; !keep {
				ops = append(ops, topicConfigOp{key: k, del: true})
			}
		}
	}
	return ops
}

// topicOverrides returns the settings of a hub topic that are set on the
// topic itself (not broker settings or defaults), for the keys edgemirror
// manages.
func (h *hub) topicOverrides(ctx context.Context, topic string, keys []string) (map[string]string, error) {
	res, err := h.client.DescribeConfigs(ctx, &kafka.DescribeConfigsRequest{Resources: []kafka.DescribeConfigRequestResource{{
		ResourceType: kafka.ResourceTypeTopic, ResourceName: topic, ConfigNames: keys,
	}}})
	if err != nil {
		return nil, fmt.Errorf("describe configs of hub topic %s: %w", topic, err)
	}
	return kafkautil.TopicOverrides(res, topic)
}

// refusal reports whether a hub answer means the hub will not take a
// setting (as opposed to the hub being unavailable now).
func refusal(err error) bool {
	var ke kafka.Error
	return errors.As(err, &ke) && !ke.Temporary() && !errors.Is(err, kafka.RequestTimedOut) &&
		!errors.Is(err, kafka.NotController)
}

// alterTopicConfigs applies ops to a hub topic with IncrementalAlterConfigs.
// The hub validates a resource's changes as a whole, so when it refuses
// them, each change is tried on its own to find the refused ones. It
// returns the refused changes; an error means the hub could not be asked.
func (h *hub) alterTopicConfigs(ctx context.Context, topic string, ops []topicConfigOp) ([]wire.RefusedTopicConfig, error) {
	if len(ops) == 0 {
		return nil, nil
	}
	err := h.alterOnce(ctx, topic, ops)
	if err == nil {
		h.logChanges(topic, ops)
		return nil, nil
	}
	if !refusal(err) {
		return nil, err
	}
	if len(ops) == 1 {
		return []wire.RefusedTopicConfig{h.refused(topic, ops[0], err)}, nil
	}
	var refused []wire.RefusedTopicConfig
	for _, op := range ops {
		switch err := h.alterOnce(ctx, topic, []topicConfigOp{op}); {
		case err == nil:
			h.logChanges(topic, []topicConfigOp{op})
		case refusal(err):
			refused = append(refused, h.refused(topic, op, err))
		default:
			return refused, err
		}
	}
	return refused, nil
}

func (h *hub) alterOnce(ctx context.Context, topic string, ops []topicConfigOp) error {
	res := kafka.IncrementalAlterConfigsRequestResource{ResourceType: kafka.ResourceTypeTopic, ResourceName: topic}
	for _, op := range ops {
		c := kafka.IncrementalAlterConfigsRequestConfig{Name: op.key, Value: op.value, ConfigOperation: kafka.ConfigOperationSet}
		if op.del {
			c.ConfigOperation = kafka.ConfigOperationDelete
		}
		res.Configs = append(res.Configs, c)
	}
	out, err := h.client.IncrementalAlterConfigs(ctx, &kafka.IncrementalAlterConfigsRequest{
		Resources: []kafka.IncrementalAlterConfigsRequestResource{res},
	})
	if err != nil {
		return fmt.Errorf("alter configs of hub topic %s: %w", topic, err)
	}
	for _, r := range out.Resources {
		if r.ResourceName == topic && r.Error != nil {
			return r.Error
		}
	}
	return nil
}

func (h *hub) logChanges(topic string, ops []topicConfigOp) {
	for _, op := range ops {
		if op.del {
			h.m.topicConfigChanges.WithLabelValues("delete").Inc()
			h.log.Info("hub topic setting removed; the hub default applies", slog.String("topic", topic), slog.String("key", op.key))
		} else {
			h.m.topicConfigChanges.WithLabelValues("set").Inc()
			h.log.Info("hub topic setting changed", slog.String("topic", topic), slog.String("key", op.key), slog.String("value", op.value))
		}
	}
}

// refused logs and counts one refused change.
func (h *hub) refused(topic string, op topicConfigOp, err error) wire.RefusedTopicConfig {
	h.m.topicConfigRefused.WithLabelValues(op.key).Inc()
	h.log.Warn("hub refused a topic setting; records are still written, the setting is retried at the next sync",
		slog.String("topic", topic), slog.String("key", op.key), slog.String("value", op.value),
		slog.Bool("remove", op.del), slog.Any("error", err))
	return wire.RefusedTopicConfig{Key: op.key, Value: op.value, Error: err.Error()}
}

// topicSyncer applies the agents' topic config reports to the hub. Two
// reports for one hub topic are applied one after the other (they would
// race between DescribeConfigs and IncrementalAlterConfigs); reports for
// different hub topics mostly in parallel (striped locks), since every
// agent reports all its topics when it starts.
type topicSyncer struct {
	hub   *hub
	cfg   *Config
	locks [64]sync.Mutex
}

func (ts *topicSyncer) lock(topic string) *sync.Mutex {
	h := fnv.New32a()
	_, _ = h.Write([]byte(topic))
	return &ts.locks[h.Sum32()%uint32(len(ts.locks))]
}

func newTopicSyncer(h *hub, cfg *Config) *topicSyncer { return &topicSyncer{hub: h, cfg: cfg} }

// sync brings the hub topic of one reported edge topic in line with it:
// created with its settings when missing, changed with
// IncrementalAlterConfigs otherwise.
func (ts *topicSyncer) sync(ctx context.Context, edge string, tc wire.TopicConfig) wire.TopicConfigResult {
	res := wire.TopicConfigResult{Topic: tc.Topic}
	if !ts.cfg.SyncTopicConfigs {
		res.Ignored = true
		return res
	}
	dest, err := destTopic(ts.cfg.TopicTemplate, edge, tc.Topic)
	if err != nil {
		res.Error = err.Error()
		return res
	}
	res.HubTopic = dest
	mu := ts.lock(dest)
	mu.Lock()
	defer mu.Unlock()
	h := ts.hub
	n, _, err := h.describe(ctx, dest)
	if err != nil {
		res.Error = err.Error()
		return res
	}
	if n == 0 {
		refused, err := h.ensureTopicWith(ctx, dest, tc.Partitions, tc.Configs)
		if err != nil {
			res.Error = err.Error()
			return res
		}
		if len(refused) > 0 {
			res.Refused = refused
			return res
		}
		// Check what the hub topic has: a chunk may have created it a
		// moment before, without these settings.
	}
	current, err := h.topicOverrides(ctx, dest, managedKeys(ts.cfg))
	if err != nil {
		res.Error = err.Error()
		return res
	}
	ops := planTopicConfigs(current, desiredTopicConfigs(ts.cfg, tc.Configs))
	res.Refused, err = h.alterTopicConfigs(ctx, dest, ops)
	if err != nil {
		res.Error = err.Error()
	}
	return res
}

// managedKeys are the hub topic settings edgemirror looks at: the synced
// ones and those of --hub-topic-config.
func managedKeys(cfg *Config) []string {
	keys := append([]string(nil), wire.SyncedTopicConfigs...)
	for k := range cfg.HubTopicConfigs {
		if !wire.IsSyncedTopicConfig(k) {
			keys = append(keys, k)
		}
	}
	sort.Strings(keys)
	return keys
}

// ParseTopicConfig parses one --hub-topic-config KEY=VALUE.
func ParseTopicConfig(s string) (key, value string, err error) {
	k, v, ok := strings.Cut(s, "=")
	k, v = strings.TrimSpace(k), strings.TrimSpace(v)
	if !ok || k == "" || v == "" {
		return "", "", fmt.Errorf("want KEY=VALUE such as retention.ms=2592000000, got %q", s)
	}
	return k, v, nil
}
