package agent

import (
	"context"
	"fmt"
	"path/filepath"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/edgemirror/edgemirror/internal/testkit"
	"github.com/edgemirror/edgemirror/internal/wire"
)

// hubValues reads the committed values of a hub topic's partition 0, in
// order.
func hubValues(t *testing.T, cl *kgo.Client, topic string) []string {
	t.Helper()
	c, err := kgo.NewClient(kgo.SeedBrokers(cl.OptValue(kgo.SeedBrokers).([]string)...), kgo.ConsumeTopics(topic),
		kgo.ConsumeResetOffset(kgo.NewOffset().AtStart()), kgo.FetchIsolationLevel(kgo.ReadCommitted()))
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	var out []string
	for quiet := 0; quiet < 2 || len(out) == 0 && quiet < 10; {
		ctx, cancel := context.WithTimeout(context.Background(), 300*time.Millisecond)
		fs := c.PollFetches(ctx)
		cancel()
		n := 0
		fs.EachRecord(func(r *kgo.Record) { out = append(out, string(r.Value)); n++ })
		if n == 0 {
			quiet++
		} else {
			quiet = 0
		}
	}
	return out
}

// TestRecreatedEdgeTopicIsAnExplicitDecision: the edge topic is deleted
// and created again, and a new buffer reads it. Its offsets start at 0
// again, at or below the hub's watermark of the old incarnation, and were
// dropped as duplicates without a word. Now the partition is held back
// (logged, counted at agent and aggregator) by default, and with
// --on-new-incarnation=skip it is read from past the hub's offset with the
// skipped offsets reported lost. A topic that was not recreated is still
// deduplicated by the new buffer (the empty-buffer guarantee).
func TestRecreatedEdgeTopicIsAnExplicitDecision(t *testing.T) {
	edge, hub := newCluster(t), newCluster(t)
	prod := newProducer(t, edge)
	createTopic(t, prod, "t", 1)
	createTopic(t, prod, "u", 1)
	agg := aggregatorWithHub(t, hub, filepath.Join(t.TempDir(), "agg"))
	hubReader := newProducer(t, hub)

	send := func(topic, prefix string, from, n int) {
		t.Helper()
		recs := make([]*kgo.Record, n)
		for i := range recs {
			recs[i] = &kgo.Record{Topic: topic, Partition: 0, Value: []byte(fmt.Sprintf("%s-%d", prefix, from+i))}
		}
		produce(t, prod, recs...)
	}
	adm := kadm.NewClient(prod)
	const edgeID = "plant-reborn"
	config := func(dir string, reg prometheus.Registerer, decision NewIncarnation) Config {
		cfg := validConfig()
		cfg.EdgeID = edgeID
		cfg.Brokers = edge.ListenAddrs()
		cfg.Aggregator = agg
		cfg.BufferDir = dir
		cfg.BufferMaxBytes = 8 << 20
		cfg.BatchBytes = 4 << 10
		cfg.Linger = 20 * time.Millisecond
		cfg.MetadataInterval = 200 * time.Millisecond
		cfg.MaxBackoff = 500 * time.Millisecond
		cfg.LossInterval = 100 * time.Millisecond
		cfg.Registerer = reg
		cfg.OnNewIncarnation = decision
		return cfg
	}
	waitHub := func(topic string, n int) {
		t.Helper()
		testkit.Eventually(t, 20*time.Second, fmt.Sprintf("hub %s holds offsets 0..%d once", topic, n-1), func() error {
			return exactlyOnce(hubSourceOffsets(t, hub, edgeID+"."+topic)[0], n)
		})
	}

	send("t", "old", 0, 30)
	send("u", "u", 0, 20)
	_, stop := runAgent(t, config(t.TempDir(), nil, IncarnationHold))
	waitHub("t", 30)
	waitHub("u", 20)
	stop()

	// The edge topic t is recreated and gets 10 new records, offsets 0..9.
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if _, err := adm.DeleteTopics(ctx, "t"); err != nil {
		t.Fatal(err)
	}
	testkit.Eventually(t, 10*time.Second, "topic t deleted", func() error {
		td, err := adm.ListTopics(ctx, "t")
		if err != nil {
			return err
		}
		if td.Has("t") {
			return fmt.Errorf("t still listed")
		}
		return nil
	})
	createTopic(t, prod, "t", 1)
	prod = newProducer(t, edge) // the old one knows t by its old topic id
	send("t", "new", 0, 10)

	// A new buffer: t is held back, u is deduplicated.
	reg := prometheus.NewRegistry()
	_, stop = runAgent(t, config(t.TempDir(), reg, IncarnationHold))
	testkit.Eventually(t, 20*time.Second, "recreated t/0 held back as a new incarnation", func() error {
		v, err := gathered(reg, "edgemirror_agent_source_incarnation_conflict", map[string]string{"topic": "t", "partition": "0"})
		if err != nil {
			return err
		}
		if v != 1 {
			return fmt.Errorf("conflict gauge %v", v)
		}
		return nil
	})
	send("u", "u", 20, 5)
	waitHub("u", 25)
	if v, err := gathered(reg, "edgemirror_agent_source_incarnation_conflict", map[string]string{"topic": "u", "partition": "0"}); err != nil || v != 0 {
		t.Errorf("conflict gauge of unchanged u/0 = %v (%v), want 0", v, err)
	}
	stop()
	if got := hubValues(t, hubReader, edgeID+".t"); len(got) != 30 || got[29] != "old-29" {
		t.Fatalf("hub t holds %d records (last %q) after hold, want the 30 old ones", len(got), got[len(got)-1])
	}

	// The operator chooses skip: offsets 0..29 of the new incarnation are
	// reported lost, and from 30 on it is mirrored.
	_, stop = runAgent(t, config(t.TempDir(), nil, IncarnationSkip))
	testkit.Eventually(t, 20*time.Second, "skipped offsets reported to the aggregator", func() error {
		losses, err := aggregatorLosses(agg, edgeID)
		if err != nil {
			return err
		}
		for _, l := range losses {
			if l.Reason == wire.LossReasonSourceIncarnation && l.Topic == "t" && l.Partition == 0 && l.FirstOffset == 0 && l.LastOffset == 29 && l.Records == 30 {
				return nil
			}
		}
		return fmt.Errorf("aggregator losses %+v, want t/0 0..29 %s", losses, wire.LossReasonSourceIncarnation)
	})
	send("t", "new", 10, 30)
	waitHub("t", 40)
	stop()
	got := hubValues(t, hubReader, edgeID+".t")
	if len(got) != 40 || got[29] != "old-29" || got[30] != "new-30" || got[39] != "new-39" {
		t.Fatalf("hub t holds %v, want old-0..old-29 then new-30..new-39", got)
	}
}
