package scenario

import (
	"context"
	"errors"
	"fmt"
	"maps"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kgo"
	"github.com/twmb/franz-go/pkg/kmsg"

	"github.com/edgemirror/edgemirror/internal/testkit"
	"github.com/edgemirror/edgemirror/test/internal/harness"
)

// TopicSettings returns the settings set on a topic itself
// (DYNAMIC_TOPIC_CONFIG), as the cluster reports them.
func TopicSettings(ctx context.Context, brokers []string, topic string) (map[string]string, error) {
	all, err := describeTopic(ctx, brokers, topic)
	if err != nil {
		return nil, err
	}
	out := make(map[string]string)
	for _, c := range all {
		if c.Source == kmsg.ConfigSourceDynamicTopicConfig {
			out[c.Key] = c.MaybeValue()
		}
	}
	return out, nil
}

func describeTopic(ctx context.Context, brokers []string, topic string) ([]kadm.Config, error) {
	cl, err := kgo.NewClient(kgo.SeedBrokers(brokers...))
	if err != nil {
		return nil, err
	}
	defer cl.Close()
	rcs, err := kadm.NewClient(cl).DescribeTopicConfigs(ctx, topic)
	if err != nil {
		return nil, err
	}
	rc, err := rcs.On(topic, nil)
	if err != nil {
		return nil, err
	}
	if rc.Err != nil {
		return nil, rc.Err
	}
	return rc.Configs, nil
}

func alterTopic(ctx context.Context, brokers []string, topic string, cfgs ...kadm.AlterConfig) error {
	cl, err := kgo.NewClient(kgo.SeedBrokers(brokers...))
	if err != nil {
		return err
	}
	defer cl.Close()
	res, err := kadm.NewClient(cl).AlterTopicConfigs(ctx, cfgs, topic)
	if err != nil {
		return err
	}
	for _, r := range res {
		if r.Err != nil {
			return fmt.Errorf("alter %s: %w (%s)", topic, r.Err, r.ErrMessage)
		}
	}
	return nil
}

// TopicConfigSync: a compacted edge topic with overrides becomes a compacted
// hub topic with the same overrides; --hub-topic-config wins over the edge;
// an override that is never carried (min.insync.replicas) and a value the
// edge broker reports as a broker default are not copied; a retention
// change at the edge reaches the hub within two metadata intervals (the
// agent's --metadata-interval is 1s in the harness). Records still arrive
// exactly once.
func TopicConfigSync(t *testing.T, clusters Clusters) {
	const interval = time.Second // harness.StartAgent's --metadata-interval
	e := New(t, clusters, "--hub-topic-config", "max.message.bytes=2000000")
	topic := e.Name("devstate")
	e.Prod.Keyed[topic] = true
	edgeSettings := map[string]string{
		"cleanup.policy":        "compact",
		"min.compaction.lag.ms": "3600000", // no compaction at the edge while the test runs
		"delete.retention.ms":   "7200000",
		"retention.ms":          "604800001",
		"max.message.bytes":     "500000", // --hub-topic-config wins
		"min.insync.replicas":   "1",      // replication setting: never carried
	}
	cfgs := make(map[string]*string)
	for k, v := range edgeSettings {
		cfgs[k] = &v
	}
	if err := e.Prod.CreateTopic(e.Ctx, topic, 2, cfgs); err != nil {
		t.Fatal(err)
	}
	waitTopic(t, e.Ctx, e.Edge.Brokers(), topic)

	// A cluster-wide broker default at the edge: the edge topic reports
	// retention.bytes with it, but it is not a topic override and must not
	// reach the hub. (kfake reports broker settings under their broker
	// names, so there the precondition does not hold and is only logged.)
	brokerDefault := checkBrokerDefault(t, e, topic)

	if err := e.Prod.Produce(e.Ctx, topic, 2, 50); err != nil {
		t.Fatal(err)
	}
	e.StartAgent("")
	hubTopic := e.HubTopic(topic)
	want := map[string]string{
		"message.timestamp.type": "CreateTime",
		"cleanup.policy":         "compact",
		"min.compaction.lag.ms":  "3600000",
		"delete.retention.ms":    "7200000",
		"retention.ms":           "604800001",
		"max.message.bytes":      "2000000",
	}
	var got map[string]string
	testkit.Eventually(t, time.Minute, "hub topic with the edge topic's settings", func() error {
		var err error
		if got, err = TopicSettings(e.Ctx, e.Hub.Brokers(), hubTopic); err != nil {
			return err
		}
		if !maps.Equal(got, want) {
			return fmt.Errorf("hub topic settings %v, want %v", got, want)
		}
		return nil
	})
	t.Logf("hub topic %s has %v", hubTopic, got)
	// Created with them, not changed afterwards: the agent reports a new
	// topic before its first chunk. (The hub shows the new topic before
	// kafka-go's CreateTopics returns and the aggregator logs it: wait.)
	created := ""
	testkit.Eventually(t, 30*time.Second, "hub topic creation logged", func() error {
		for _, l := range strings.Split(e.Agg.Tail(1<<20), "\n") {
			if strings.Contains(l, "created hub topic") && strings.Contains(l, "topic="+hubTopic+" ") {
				created = strings.TrimSpace(l)
				return nil
			}
		}
		return fmt.Errorf("no creation of %s in the aggregator log", hubTopic)
	})
	t.Logf("aggregator: %s", created)
	if !strings.Contains(created, "cleanup.policy:compact") || !strings.Contains(created, "delete.retention.ms:7200000") ||
		!strings.Contains(created, "min.compaction.lag.ms:3600000") {
		t.Errorf("hub topic not created with the edge topic's settings: %q", created)
	}
	if brokerDefault {
		if v, ok := got["retention.bytes"]; ok {
			t.Fatalf("the edge broker's default retention.bytes was copied to the hub topic as %s", v)
		}
	}
	testkit.Eventually(t, time.Minute, "records mirrored", func() error {
		return harness.Check(e.Ctx, e.Hub.Brokers(), e.EdgeID, e.Prod.Out, nil, e.HubTopic)
	})

	// A retention change at the edge: measured from the edge's answer to
	// the hub reporting the new value.
	newRetention := "86400000"
	if err := alterTopic(e.Ctx, e.Edge.Brokers(), topic, kadm.AlterConfig{Op: kadm.SetConfig, Name: "retention.ms", Value: &newRetention}); err != nil {
		t.Fatal(err)
	}
	changed := time.Now()
	var took time.Duration
	testkit.Eventually(t, 30*time.Second, "retention change at the hub", func() error {
		s, err := TopicSettings(e.Ctx, e.Hub.Brokers(), hubTopic)
		if err != nil {
			return err
		}
		if s["retention.ms"] != newRetention {
			return fmt.Errorf("hub retention.ms %q", s["retention.ms"])
		}
		took = time.Since(changed)
		return nil
	})
	t.Logf("retention.ms change reached the hub in %s (metadata interval %s)", took.Round(time.Millisecond), interval)
	if took > 2*interval {
		t.Errorf("retention change took %s to reach the hub, more than two metadata intervals (%s)", took, 2*interval)
	}
	// Dropping an override at the edge removes it at the hub.
	if err := alterTopic(e.Ctx, e.Edge.Brokers(), topic, kadm.AlterConfig{Op: kadm.DeleteConfig, Name: "delete.retention.ms"}); err != nil {
		t.Fatal(err)
	}
	testkit.Eventually(t, 30*time.Second, "removed override gone at the hub", func() error {
		s, err := TopicSettings(e.Ctx, e.Hub.Brokers(), hubTopic)
		if err != nil {
			return err
		}
		if v, ok := s["delete.retention.ms"]; ok {
			return fmt.Errorf("hub still overrides delete.retention.ms=%s", v)
		}
		return nil
	})
	if e.Agg.LogContains("hub refused a topic setting") {
		t.Errorf("the hub refused a setting:\n%s", e.Agg.Tail(40))
	}
}

// checkBrokerDefault sets a cluster-wide broker default at the edge
// (log.retention.bytes, harmless at 1 TiB) and reports whether the edge
// topic then shows retention.bytes as a broker setting, not an override.
// The default is removed when the test ends.
func checkBrokerDefault(t *testing.T, e *Env, topic string) bool {
	t.Helper()
	cl, err := kgo.NewClient(kgo.SeedBrokers(e.Edge.Brokers()...))
	if err != nil {
		t.Fatal(err)
	}
	defer cl.Close()
	adm := kadm.NewClient(cl)
	v := strconv.FormatInt(1<<40, 10)
	res, err := adm.AlterBrokerConfigs(e.Ctx, []kadm.AlterConfig{{Op: kadm.SetConfig, Name: "log.retention.bytes", Value: &v}})
	if err == nil {
		for _, r := range res {
			if r.Err != nil {
				err = r.Err
			}
		}
	}
	if err != nil {
		t.Logf("cannot set a broker default at the edge (%v); the default-not-copied check is skipped", err)
		return false
	}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		c2, err := kgo.NewClient(kgo.SeedBrokers(e.Edge.Brokers()...))
		if err != nil {
			return
		}
		defer c2.Close()
		_, _ = kadm.NewClient(c2).AlterBrokerConfigs(ctx, []kadm.AlterConfig{{Op: kadm.DeleteConfig, Name: "log.retention.bytes"}})
	})
	var found bool
	testkit.Eventually(t, 30*time.Second, "broker default visible on the edge topic", func() error {
		all, err := describeTopic(e.Ctx, e.Edge.Brokers(), topic)
		if err != nil {
			return err
		}
		var seen []string
		for _, c := range all {
			switch {
			case c.Key == "retention.bytes" && c.MaybeValue() == v:
				if c.Source == kmsg.ConfigSourceDynamicTopicConfig {
					t.Fatalf("precondition: retention.bytes shows as a topic override")
				}
				t.Logf("edge topic reports retention.bytes=%s from a broker default (source %v), not as an override", v, c.Source)
				found = true
				return nil
			case c.Key == "log.retention.bytes" && c.MaybeValue() == v:
				return nil // kfake: the broker setting under its broker name
			case strings.Contains(c.Key, "retention.bytes"):
				seen = append(seen, fmt.Sprintf("%s=%s (%v)", c.Key, c.MaybeValue(), c.Source))
			}
		}
		return fmt.Errorf("not visible yet: %v", seen)
	})
	if !found {
		t.Logf("edge cluster does not report the broker default as retention.bytes of the topic; the default-not-copied check is skipped")
	}
	return found
}

// waitTopic waits until every partition of a new topic has a leader, so
// that the first produce to it does not fail on a cluster that is slow to
// spread the new topic's metadata.
func waitTopic(t *testing.T, ctx context.Context, brokers []string, topic string) {
	t.Helper()
	cl, err := kgo.NewClient(kgo.SeedBrokers(brokers...))
	if err != nil {
		t.Fatal(err)
	}
	defer cl.Close()
	testkit.Eventually(t, time.Minute, "topic "+topic+" ready", func() error {
		td, err := kadm.NewClient(cl).ListTopics(ctx, topic)
		if err != nil {
			return err
		}
		d, ok := td[topic]
		if !ok || d.Err != nil || len(d.Partitions) == 0 {
			return fmt.Errorf("not listed yet (%v)", d.Err)
		}
		for _, p := range d.Partitions {
			if p.Leader < 0 || p.Err != nil {
				return fmt.Errorf("partition %d has no leader (%v)", p.Partition, p.Err)
			}
		}
		return nil
	})
}

// hubRecord is one record of a hub partition with its provenance, if any.
type hubRecord struct {
	offset    int64 // hub offset
	key       string
	tombstone bool
	source    int64 // edgemirror-offset; -1 without provenance
}

// readPartition reads a whole hub partition (read committed) as it is now.
// With compaction the offsets have gaps and the last offsets may hold no
// record, so it reads until a fetch brings nothing new.
func readPartition(ctx context.Context, brokers []string, topic string, partition int32) ([]hubRecord, int64, error) {
	cl, err := kgo.NewClient(kgo.SeedBrokers(brokers...))
	if err != nil {
		return nil, 0, err
	}
	ends, err := kadm.NewClient(cl).ListEndOffsets(ctx, topic)
	cl.Close()
	if err != nil {
		return nil, 0, err
	}
	end, ok := ends.Lookup(topic, partition)
	if !ok || end.Err != nil {
		return nil, 0, fmt.Errorf("end offset of %s/%d: %v", topic, partition, end.Err)
	}
	rd, err := kgo.NewClient(kgo.SeedBrokers(brokers...),
		kgo.ConsumePartitions(map[string]map[int32]kgo.Offset{topic: {partition: kgo.NewOffset().AtStart()}}),
		kgo.FetchIsolationLevel(kgo.ReadCommitted()), kgo.FetchMaxWait(200*time.Millisecond))
	if err != nil {
		return nil, 0, err
	}
	defer rd.Close()
	var out []hubRecord
	quiet := 0
	for quiet < 3 && (len(out) == 0 || out[len(out)-1].offset < end.Offset-1) {
		pctx, cancel := context.WithTimeout(ctx, time.Second)
		fs := rd.PollFetches(pctx)
		cancel()
		if ctx.Err() != nil {
			return nil, 0, ctx.Err()
		}
		n := 0
		fs.EachRecord(func(r *kgo.Record) {
			n++
			h := hubRecord{offset: r.Offset, key: string(r.Key), tombstone: r.Value == nil, source: -1}
			for _, hd := range r.Headers {
				if hd.Key == "edgemirror-offset" {
					h.source, _ = strconv.ParseInt(string(hd.Value), 10, 64)
				}
			}
			out = append(out, h)
		})
		if n == 0 {
			quiet++
		} else {
			quiet = 0
		}
	}
	return out, end.Offset, nil
}

// CompactedHubTail: a compacted hub topic whose tail was compacted away
// (tombstones past delete.retention.ms removed, with the values they
// deleted), then an aggregator on an empty state dir and an agent that sends
// every chunk again: nothing may be written twice. docs/design.md
// ("Compaction at the hub and exactly-once") explains when the tail can go:
// only once something is appended after it and its segment rolls — with
// transactional hub writes the commit markers do that; here a record of
// another writer on the hub partition does.
func CompactedHubTail(t *testing.T, clusters Clusters) {
	// The hub compacts at once; the edge not at all while the test runs
	// (the flag wins over what the edge says).
	e := New(t, clusters,
		"--hub-topic-config", "segment.ms=100",
		"--hub-topic-config", "min.compaction.lag.ms=0",
		"--hub-topic-config", "delete.retention.ms=100",
		"--hub-topic-config", "min.cleanable.dirty.ratio=0.01")
	topic := e.Name("ledger")
	compact, lag := "compact", "3600000"
	if err := e.Prod.CreateTopic(e.Ctx, topic, 1, map[string]*string{"cleanup.policy": &compact, "min.compaction.lag.ms": &lag}); err != nil {
		t.Fatal(err)
	}
	waitTopic(t, e.Ctx, e.Edge.Brokers(), topic)
	// k0..k19, then tombstones for k10..k19: the log ends with 10
	// tombstones, and the values they delete sit just below them.
	var recs []*kgo.Record
	for i := 0; i < 20; i++ {
		recs = append(recs, &kgo.Record{Topic: topic, Partition: 0, Key: []byte(fmt.Sprintf("k%d", i)), Value: []byte(fmt.Sprintf("v%d", i))})
	}
	for i := 10; i < 20; i++ {
		recs = append(recs, &kgo.Record{Topic: topic, Partition: 0, Key: []byte(fmt.Sprintf("k%d", i))})
	}
	if err := e.Prod.Send(e.Ctx, recs); err != nil {
		t.Fatal(err)
	}

	// Read everything into the buffer with the link cut, and keep a copy of
	// that buffer: it holds every chunk unacknowledged.
	e.Proxy.Cut()
	buf := e.BufferDir()
	e.StartAgent(buf, "--linger", "50ms")
	testkit.Eventually(t, time.Minute, "agent buffered every record", func() error {
		if got := e.Agent.Metrics(e.Ctx)["edgemirror_agent_records_read_total"]; got < float64(len(recs)) {
			return fmt.Errorf("%v records read", got)
		}
		return nil
	})
	if err := e.Agent.Stop(30 * time.Second); err != nil {
		t.Fatal(err)
	}
	snapshot := filepath.Join(t.TempDir(), "buffer-copy")
	copyDir(t, buf, snapshot)
	e.Proxy.Restore()
	e.Agent.Restart()
	hubTopic := e.HubTopic(topic)
	testkit.Eventually(t, time.Minute, "every record in the hub", func() error {
		if got := e.Agent.Metrics(e.Ctx)["edgemirror_agent_records_acked_total"]; got < float64(len(recs)) {
			return fmt.Errorf("%v records acknowledged", got)
		}
		return nil
	})
	if err := e.Agent.Stop(30 * time.Second); err != nil {
		t.Fatal(err)
	}
	testkit.Eventually(t, 30*time.Second, "hub topic compacted", func() error {
		settings, err := TopicSettings(e.Ctx, e.Hub.Brokers(), hubTopic)
		if err != nil {
			return err
		}
		if settings["cleanup.policy"] != "compact" {
			return fmt.Errorf("hub topic settings %v", settings)
		}
		return nil
	})

	// Another writer appends to the hub partition, so that the tail leaves
	// the active segment; the cleaner then removes the superseded values
	// and, after delete.retention.ms, the tombstones.
	other, err := kgo.NewClient(kgo.SeedBrokers(e.Hub.Brokers()...), kgo.RecordPartitioner(kgo.ManualPartitioner()))
	if err != nil {
		t.Fatal(err)
	}
	defer other.Close()
	var tail []hubRecord
	var end int64
	testkit.Eventually(t, 2*time.Minute, "hub tail compacted away", func() error {
		if err := other.ProduceSync(e.Ctx, &kgo.Record{Topic: hubTopic, Partition: 0, Key: []byte("other-writer"), Value: []byte("x")}).FirstErr(); err != nil {
			return err
		}
		var err error
		tail, end, err = readPartition(e.Ctx, e.Hub.Brokers(), hubTopic, 0)
		if err != nil {
			return err
		}
		for _, r := range tail {
			if r.source >= 10 {
				return fmt.Errorf("source offset %d (key %s, tombstone %v) still at hub offset %d", r.source, r.key, r.tombstone, r.offset)
			}
		}
		return nil
	})
	var survivors []int64
	for _, r := range tail {
		if r.source >= 0 {
			survivors = append(survivors, r.source)
		}
	}
	t.Logf("hub partition after compaction: source offsets %v survive, end offset %d; source offsets 10-29 (values and tombstones) compacted away", survivors, end)
	if !slices.Equal(survivors, []int64{0, 1, 2, 3, 4, 5, 6, 7, 8, 9}) {
		t.Fatalf("survivors %v, want source offsets 0-9", survivors)
	}

	// An aggregator that lost its state, and an agent that sends every
	// chunk again (a buffer restored from the copy: nothing acknowledged).
	e.Agg.Kill()
	if err := os.RemoveAll(e.Agg.StateDir); err != nil {
		t.Fatal(err)
	}
	e.Agg.Restart()
	e.Agg.WaitHealthy(t)
	again := harness.StartAgent(t, e.EdgeID, e.Edge.Brokers(), "http://"+e.Proxy.Addr(), snapshot,
		"--topics", regexp.QuoteMeta(topic))
	testkit.Eventually(t, time.Minute, "re-sent chunks acknowledged", func() error {
		m := again.Metrics(e.Ctx)
		if m["edgemirror_agent_records_acked_total"] < float64(len(recs)) {
			return fmt.Errorf("%v records acknowledged", m["edgemirror_agent_records_acked_total"])
		}
		return nil
	})
	after, _, err := readPartition(e.Ctx, e.Hub.Brokers(), hubTopic, 0)
	if err != nil {
		t.Fatal(err)
	}
	var twice []string
	for _, r := range after {
		if r.offset >= end && r.source >= 0 {
			twice = append(twice, fmt.Sprintf("source %d (key %s, tombstone %v) at hub offset %d", r.source, r.key, r.tombstone, r.offset))
		}
	}
	if len(twice) > 0 {
		t.Fatalf("%d records written to the hub a second time after its tail was compacted away:\n  %s",
			len(twice), strings.Join(twice, "\n  "))
	}
}

// copyDir copies the regular files of src into a new directory dst.
func copyDir(t *testing.T, src, dst string) {
	t.Helper()
	if err := os.MkdirAll(dst, 0o700); err != nil {
		t.Fatal(err)
	}
	ents, err := os.ReadDir(src)
	if err != nil {
		t.Fatal(err)
	}
	for _, en := range ents {
		if !en.Type().IsRegular() {
			continue
		}
		b, err := os.ReadFile(filepath.Join(src, en.Name()))
		if err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join(dst, en.Name()), b, 0o600); err != nil {
			t.Fatal(err)
		}
	}
	if len(ents) == 0 {
		t.Fatal(errors.New("empty buffer directory"))
	}
}

// TopicConfigRefused: a setting the hub refuses (here an invalid
// --hub-topic-config value: min.cleanable.dirty.ratio must be at most 1)
// never stops records. The hub topic is created without it and gets the
// edge's other settings, the refusal is logged with topic and key, counted,
// and tried again at the next sync; every record arrives exactly once.
// Real Kafka only: kfake validates no topic setting.
func TopicConfigRefused(t *testing.T, clusters Clusters) {
	e := New(t, clusters, "--hub-topic-config", "min.cleanable.dirty.ratio=2")
	topic := e.Name("config")
	e.Prod.Keyed[topic] = true
	compact, lag := "compact", "3600000"
	if err := e.Prod.CreateTopic(e.Ctx, topic, 2, map[string]*string{"cleanup.policy": &compact, "min.compaction.lag.ms": &lag}); err != nil {
		t.Fatal(err)
	}
	waitTopic(t, e.Ctx, e.Edge.Brokers(), topic)
	if err := e.Prod.Produce(e.Ctx, topic, 2, 100); err != nil {
		t.Fatal(err)
	}
	e.StartAgent("")
	testkit.Eventually(t, time.Minute, "records mirrored", func() error {
		return harness.Check(e.Ctx, e.Hub.Brokers(), e.EdgeID, e.Prod.Out, nil, e.HubTopic)
	})
	hubTopic := e.HubTopic(topic)
	testkit.Eventually(t, 30*time.Second, "edge settings on the hub topic", func() error {
		s, err := TopicSettings(e.Ctx, e.Hub.Brokers(), hubTopic)
		if err != nil {
			return err
		}
		want := map[string]string{"message.timestamp.type": "CreateTime", "cleanup.policy": "compact", "min.compaction.lag.ms": "3600000"}
		if !maps.Equal(s, want) {
			return fmt.Errorf("hub topic settings %v, want %v", s, want)
		}
		return nil
	})
	refused := func() float64 {
		m, err := harness.Scrape(e.Ctx, e.Agg.MetricsAddr)
		if err != nil {
			return 0
		}
		return m["edgemirror_aggregator_topic_config_refused_total"]
	}
	first := refused()
	if first < 1 {
		t.Fatalf("refusal not counted (edgemirror_aggregator_topic_config_refused_total %v)", first)
	}
	if !e.Agg.LogContains(`msg="hub refused a topic setting; records are still written, the setting is retried at the next sync" topic=` + hubTopic + ` key=min.cleanable.dirty.ratio value=2`) {
		t.Fatalf("refusal not logged with topic and key:\n%s", e.Agg.Tail(30))
	}
	// Retried at the next syncs (the agent reports the topic again).
	testkit.Eventually(t, 30*time.Second, "refused setting retried", func() error {
		if n := refused(); n < first+2 {
			return fmt.Errorf("refused %v times, %v at first", n, first)
		}
		return nil
	})
	// Records keep flowing while the setting is refused.
	if err := e.Prod.Produce(e.Ctx, topic, 2, 50); err != nil {
		t.Fatal(err)
	}
	testkit.Eventually(t, time.Minute, "later records mirrored", func() error {
		return harness.Check(e.Ctx, e.Hub.Brokers(), e.EdgeID, e.Prod.Out, nil, e.HubTopic)
	})
	for _, l := range strings.Split(e.Agg.Tail(1<<20), "\n") {
		if strings.Contains(l, "hub refused") || strings.Contains(l, "created hub topic") {
			t.Logf("aggregator: %s", strings.TrimSpace(l))
		}
		if strings.Contains(l, "hub refused a topic setting") {
			break
		}
	}
}

// CompactedHubTailActive is the case today's writer meets: nothing is
// appended after edgemirror's last record of a hub partition, so that record
// stays in the active segment, which the cleaner never touches. The hub is
// compacted below it (superseded values removed, as a check that the cleaner
// did run after the tail was written), the tail of tombstones stays, and an
// aggregator on an empty state dir with an agent that reads the edge again
// from the start (a rebuilt gateway: a new, empty buffer) writes nothing
// twice.
func CompactedHubTailActive(t *testing.T, clusters Clusters) {
	e := New(t, clusters,
		"--hub-topic-config", "segment.ms=100",
		"--hub-topic-config", "max.compaction.lag.ms=100",
		"--hub-topic-config", "min.compaction.lag.ms=0",
		"--hub-topic-config", "delete.retention.ms=100",
		"--hub-topic-config", "min.cleanable.dirty.ratio=0.01")
	topic := e.Name("ledger")
	compact, lag := "compact", "3600000"
	if err := e.Prod.CreateTopic(e.Ctx, topic, 1, map[string]*string{"cleanup.policy": &compact, "min.compaction.lag.ms": &lag}); err != nil {
		t.Fatal(err)
	}
	waitTopic(t, e.Ctx, e.Edge.Brokers(), topic)
	e.StartAgent("", "--linger", "50ms")
	hubTopic := e.HubTopic(topic)
	// Three appends at the hub, each in a segment of its own (segment.ms=100
	// rolls the segment at the next append): values k0-k19, values k0-k9
	// again, tombstones k10-k19.
	rounds := [][]*kgo.Record{nil, nil, nil}
	for i := 0; i < 20; i++ {
		rounds[0] = append(rounds[0], &kgo.Record{Topic: topic, Key: []byte(fmt.Sprintf("k%d", i)), Value: []byte(fmt.Sprintf("v%d", i))})
	}
	for i := 0; i < 10; i++ {
		rounds[1] = append(rounds[1], &kgo.Record{Topic: topic, Key: []byte(fmt.Sprintf("k%d", i)), Value: []byte(fmt.Sprintf("w%d", i))})
	}
	for i := 10; i < 20; i++ {
		rounds[2] = append(rounds[2], &kgo.Record{Topic: topic, Key: []byte(fmt.Sprintf("k%d", i))})
	}
	total := 0
	for _, recs := range rounds {
		if err := e.Prod.Send(e.Ctx, recs); err != nil {
			t.Fatal(err)
		}
		total += len(recs)
		testkit.Eventually(t, time.Minute, fmt.Sprintf("%d records acknowledged", total), func() error {
			if got := e.Agent.Metrics(e.Ctx)["edgemirror_agent_records_acked_total"]; got < float64(total) {
				return fmt.Errorf("%v acknowledged", got)
			}
			return nil
		})
		time.Sleep(300 * time.Millisecond) // let segment.ms (100ms) pass before the next append, so that it rolls
	}
	var end int64
	testkit.Eventually(t, 2*time.Minute, "hub compacted below the tail", func() error {
		recs, n, err := readPartition(e.Ctx, e.Hub.Brokers(), hubTopic, 0)
		if err != nil {
			return err
		}
		end = n
		var src []int64
		for _, r := range recs {
			src = append(src, r.source)
		}
		if len(recs) == 0 || recs[0].source < 10 {
			return fmt.Errorf("source offsets %v: the first values are not compacted away yet", src)
		}
		// The tail: the ten tombstones, still there.
		tail := recs[len(recs)-10:]
		for i, r := range tail {
			if r.source != int64(30+i) || !r.tombstone {
				t.Fatalf("tail of the hub partition changed by compaction: source offsets %v", src)
			}
		}
		t.Logf("hub partition compacted to source offsets %v (end offset %d); the tail of tombstones is intact", src, end)
		return nil
	})
	if err := e.Agent.Stop(30 * time.Second); err != nil {
		t.Fatal(err)
	}
	e.Agg.Kill()
	if err := os.RemoveAll(e.Agg.StateDir); err != nil {
		t.Fatal(err)
	}
	e.Agg.Restart()
	e.Agg.WaitHealthy(t)
	again := harness.StartAgent(t, e.EdgeID, e.Edge.Brokers(), "http://"+e.Proxy.Addr(), filepath.Join(t.TempDir(), "new-buffer"),
		"--topics", regexp.QuoteMeta(topic))
	testkit.Eventually(t, time.Minute, "edge read again and acknowledged", func() error {
		if got := again.Metrics(e.Ctx)["edgemirror_agent_records_acked_total"]; got < float64(total) {
			return fmt.Errorf("%v records acknowledged", got)
		}
		return nil
	})
	after, _, err := readPartition(e.Ctx, e.Hub.Brokers(), hubTopic, 0)
	if err != nil {
		t.Fatal(err)
	}
	for _, r := range after {
		if r.offset >= end {
			t.Errorf("source offset %d written again at hub offset %d", r.source, r.offset)
		}
	}
}
