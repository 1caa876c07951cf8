package scenario

import (
	"bytes"
	"context"
	"fmt"
	"os"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/edgemirror/edgemirror/internal/testkit"
	"github.com/edgemirror/edgemirror/test/internal/harness"
)

// HappyPath: a backlog is mirrored, and both processes stop cleanly on SIGTERM.
func HappyPath(t *testing.T, clusters Clusters) {
	e := New(t, clusters)
	if err := e.Prod.Produce(e.Ctx, e.Topic, 3, 2000); err != nil {
		t.Fatal(err)
	}
	e.StartAgent("")
	e.WaitAll()
	e.Check(nil)
	if err := e.Agent.Stop(20 * time.Second); err != nil {
		t.Fatalf("agent stop: %v", err)
	}
	if err := e.Agg.Stop(20 * time.Second); err != nil {
		t.Fatalf("aggregator stop: %v", err)
	}
}

// KillAgent: kill -9 of the agent mid-stream, four times.
func KillAgent(t *testing.T, clusters Clusters) {
	e := New(t, clusters)
	e.StartAgent(e.BufferDir(), "--batch-bytes", "32KiB")
	stop := e.ProduceInBackground(200)
	for i := 0; i < 4; i++ {
		e.WaitHubGrowth(1500) // kill while records are flowing
		e.Agent.Kill()
		e.Agent.Restart()
	}
	stop()
	e.WaitAll()
	e.Check(nil)
}

// KillAggregator: kill -9 of the aggregator mid-stream, three times.
func KillAggregator(t *testing.T, clusters Clusters) {
	e := New(t, clusters)
	e.StartAgent("", "--batch-bytes", "32KiB")
	stop := e.ProduceInBackground(200)
	for i := 0; i < 3; i++ {
		e.WaitHubGrowth(1500)
		e.Agg.Kill()
		e.Agg.Restart()
		e.Agg.WaitHealthy(t)
	}
	stop()
	e.WaitAll()
	e.Check(nil)
}

// EmptyAggregatorState: the aggregator is replaced by one with an empty
// state directory mid-stream; it must derive its watermarks from the hub.
func EmptyAggregatorState(t *testing.T, clusters Clusters) {
	e := New(t, clusters)
	e.StartAgent("", "--batch-bytes", "32KiB")
	stop := e.ProduceInBackground(200)
	e.WaitHubGrowth(1000)
	e.Agg.Kill()
	if err := os.RemoveAll(e.Agg.StateDir); err != nil {
		t.Fatal(err)
	}
	e.Agg.Restart()
	e.Agg.WaitHealthy(t)
	stop()
	e.WaitAll()
	e.Check(nil)
	if !e.Agg.LogContains("watermark derived from hub") {
		t.Error("the restarted aggregator never derived a watermark from the hub")
	}
}

// LinkCut: the link is cut while records flow; the buffer fills, then drains.
func LinkCut(t *testing.T, clusters Clusters) {
	e := New(t, clusters)
	e.StartAgent("", "--batch-bytes", "16KiB")
	stop := e.ProduceInBackground(100)
	e.WaitHub(300, time.Minute)
	e.Proxy.Cut()
	testkit.Eventually(t, time.Minute, "buffer filling during the cut", func() error {
		if got := e.Agent.Metrics(e.Ctx)["edgemirror_buffer_chunks"]; got < 5 {
			return fmt.Errorf("%v chunks buffered", got)
		}
		return nil
	})
	e.Proxy.Restore()
	stop()
	e.WaitAll()
	testkit.Eventually(t, time.Minute, "buffer drained", func() error {
		if got := e.Agent.Metrics(e.Ctx)["edgemirror_buffer_chunks"]; got != 0 {
			return fmt.Errorf("%v chunks still buffered", got)
		}
		return nil
	})
	e.Check(nil)
}

// DropOldest: with a small buffer and the link down, the oldest chunks are
// dropped; the ranges the aggregator is told about are exactly what is
// missing in the hub.
func DropOldest(t *testing.T, clusters Clusters) {
	e := New(t, clusters)
	e.StartAgent("", "--batch-bytes", "16KiB", "--buffer-max-bytes", "4MiB", "--buffer-full", "drop-oldest",
		"--compression", "none")
	e.WaitShipped()
	e.Proxy.Cut()
	for i := 0; i < 25; i++ { // about 11 MB: much more than the buffer holds
		if err := e.Prod.Produce(e.Ctx, e.Topic, 3, 1000); err != nil {
			t.Fatal(err)
		}
	}
	testkit.Eventually(t, 2*time.Minute, "agent read everything and dropped chunks", func() error {
		m := e.Agent.Metrics(e.Ctx)
		if m["edgemirror_buffer_dropped_records_total"] == 0 {
			return fmt.Errorf("nothing dropped yet")
		}
		if got := m["edgemirror_agent_records_read_total"]; got < float64(e.Prod.Out.Count()) {
			return fmt.Errorf("read %v of %d", got, e.Prod.Out.Count())
		}
		return nil
	})
	e.Proxy.Restore()
	var lost []harness.Lost
	testkit.Eventually(t, 2*time.Minute, "kept records in hub and losses reported", func() error {
		m := e.Agent.Metrics(e.Ctx)
		if m["edgemirror_buffer_chunks"] != 0 {
			return fmt.Errorf("%v chunks still buffered", m["edgemirror_buffer_chunks"])
		}
		l, err := e.Agg.Losses(e.Ctx, e.EdgeID)
		if err != nil {
			return err
		}
		var n int64
		for _, r := range l {
			n += r.Last - r.First + 1
		}
		if float64(n) != m["edgemirror_buffer_dropped_records_total"] {
			return fmt.Errorf("aggregator knows %d lost records, agent dropped %v", n, m["edgemirror_buffer_dropped_records_total"])
		}
		lost = l
		return nil
	})
	if len(lost) == 0 {
		t.Fatal("no loss was reported")
	}
	e.Check(lost)
	e.checkLossEvents(lost)
}

// Transactions: committed transactional records arrive, aborted ones never,
// control-record gaps do not confuse dedupe; topics and partitions created
// while the agent runs are picked up.
func Transactions(t *testing.T, clusters Clusters) {
	e := New(t, clusters)
	e.StartAgent("")
	e.WaitShipped()

	txp, err := harness.NewProducer(e.Edge.Brokers(), kgo.TransactionalID("tx-"+e.EdgeID))
	if err != nil {
		t.Fatal(err)
	}
	defer txp.Close()
	txTopic := e.Name("orders")
	if err := e.Prod.CreateTopic(e.Ctx, txTopic, 2, nil); err != nil {
		t.Fatal(err)
	}
	for i := 0; i < 6; i++ {
		if err := txp.Client().BeginTransaction(); err != nil {
			t.Fatal(err)
		}
		recs := txp.Build(txTopic, 2, 50)
		if err := txp.Client().ProduceSync(e.Ctx, recs...).FirstErr(); err != nil {
			t.Fatal(err)
		}
		commit := i%3 != 1
		if err := txp.Client().EndTransaction(e.Ctx, kgo.TransactionEndTry(commit)); err != nil {
			t.Fatal(err)
		}
		if commit {
			txp.Record(recs)
		}
	}
	late := e.Name("late")
	if err := e.Prod.CreateTopic(e.Ctx, late, 1, nil); err != nil {
		t.Fatal(err)
	}
	if err := e.Prod.Produce(e.Ctx, late, 1, 100); err != nil {
		t.Fatal(err)
	}
	if err := e.Prod.AddPartitions(e.Ctx, e.Topic, 4); err != nil {
		t.Fatal(err)
	}
	if err := e.Prod.Produce(e.Ctx, e.Topic, 4, 100); err != nil {
		t.Fatal(err)
	}
	// New topics and partitions must be picked up within 30 s.
	testkit.Eventually(t, 45*time.Second, "everything in the hub", func() error {
		if err := harness.Check(e.Ctx, e.Hub.Brokers(), e.EdgeID, txp.Out, nil, e.HubTopic); err != nil {
			return err
		}
		return harness.Check(e.Ctx, e.Hub.Brokers(), e.EdgeID, e.Prod.Out, nil, e.HubTopic)
	})
	if got := e.Agent.Metrics(e.Ctx)["edgemirror_agent_records_skipped_total"]; got == 0 {
		t.Error("no aborted or control record was counted as skipped")
	}
}

// EdgeRetention: records deleted at the edge before the agent read them are
// reported with their exact range, and nothing else is missing.
func EdgeRetention(t *testing.T, clusters Clusters) {
	e := New(t, clusters)
	e.StartAgent(e.BufferDir())
	if err := e.Prod.Produce(e.Ctx, e.Topic, 3, 100); err != nil {
		t.Fatal(err)
	}
	e.WaitHub(300, time.Minute)
	if err := e.Agent.Stop(20 * time.Second); err != nil {
		t.Fatal(err)
	}
	if err := e.Prod.Produce(e.Ctx, e.Topic, 3, 100); err != nil {
		t.Fatal(err)
	}
	if err := e.Prod.DeleteRecordsBefore(e.Ctx, e.Topic, 0, 150); err != nil {
		t.Fatal(err)
	}
	e.Agent.Restart()
	want := harness.Lost{Topic: e.Topic, Partition: 0, First: 100, Last: 149}
	testkit.Eventually(t, time.Minute, "loss reported", func() error {
		l, err := e.Agg.Losses(e.Ctx, e.EdgeID)
		if err != nil {
			return err
		}
		if len(l) != 1 || l[0] != want {
			return fmt.Errorf("losses %+v, want %+v", l, want)
		}
		return nil
	})
	e.WaitHub(int64(e.Prod.Out.Count()-50), time.Minute)
	e.Check([]harness.Lost{want})
	if !e.Agent.LogContains("first_lost_offset=100") {
		t.Error("the agent did not log the exact lost range")
	}
}

// BrokerRestart: a broker (edge or hub) is killed with SIGKILL while records
// flow, stays down for a few seconds and restarts with its data.
func BrokerRestart(t *testing.T, clusters Clusters, kill, restart func(context.Context) error) {
	e := New(t, clusters)
	e.StartAgent("", "--batch-bytes", "32KiB")
	stop := e.ProduceInBackground(100)
	e.WaitHubGrowth(1000)
	if err := kill(e.Ctx); err != nil {
		t.Fatal(err)
	}
	// With the hub down, the aggregator keeps retrying a transaction for
	// its --hub-timeout (30 s) before it answers the agent's chunk 503:
	// the agent sees its first send error up to that long after the kill.
	testkit.Eventually(t, 90*time.Second, "agent notices the outage", func() error {
		m := e.Agent.Metrics(e.Ctx)
		if m["edgemirror_agent_fetch_errors_total"]+m["edgemirror_agent_chunk_send_errors_total"] == 0 {
			return fmt.Errorf("no error seen yet")
		}
		return nil
	})
	if err := restart(e.Ctx); err != nil {
		t.Fatal(err)
	}
	e.WaitHubGrowth(1000)
	stop()
	e.WaitAll()
	e.Check(nil)
}

// Compacted: a compacted source topic whose batch tails were compacted away
// is mirrored completely, and the check does not depend on when the log
// cleaner runs.
//
// The log is built so that compaction removes the last records of a batch
// while keeping the batch's last offset (Kafka keeps it, so that producer
// sequence state survives): batch A holds keys k00..k19, batch B rewrites
// k10..k19 with values large enough that B alone exceeds the agent's
// per-partition fetch size, and batch C rolls the segment so that A and B
// can be cleaned. After cleaning, a fetch at offset 10 returns A (whose
// retained records end at 9, but whose last offset is 19) and none of B: a
// reader that advances only by record offsets fetches A again forever.
//
// The hub is compared with a snapshot of the edge taken after the cleaning
// and before the agent starts: every hub record is a record of the snapshot,
// in source-offset order and exactly once, and every key's latest value is
// there. Further cleaning can only remove records the snapshot holds, so the
// check holds whenever the agent reads.
func Compacted(t *testing.T, clusters Clusters) {
	e := New(t, clusters)
	topic := e.Name("state")
	if err := e.Prod.CreateTopic(e.Ctx, topic, 1, map[string]*string{
		"cleanup.policy":            ptr("compact"),
		"segment.ms":                ptr("100"),
		"min.cleanable.dirty.ratio": ptr("0.001"),
		"min.compaction.lag.ms":     ptr("0"),
		"max.compaction.lag.ms":     ptr("100"),
		"min.insync.replicas":       ptr("1"),
	}); err != nil {
		t.Fatal(err)
	}
	key := func(i int) []byte { return fmt.Appendf(nil, "k%02d", i) }
	var a, b []*kgo.Record
	for i := 0; i < 20; i++ {
		a = append(a, &kgo.Record{Topic: topic, Key: key(i), Value: fmt.Appendf(nil, "a-%d", i)})
	}
	big := bytes.Repeat([]byte("v"), 12<<10) // 10 × 12 KiB: B is larger than --fetch-max-bytes 64KiB
	for i := 10; i < 20; i++ {
		b = append(b, &kgo.Record{Topic: topic, Key: key(i), Value: append(fmt.Appendf(nil, "b-%d-", i), big...)})
	}
	e.ProduceBatch(a)
	e.ProduceBatch(b)
	// segment.ms=100: the next append after 100ms starts a new segment,
	// which leaves A and B in a closed, cleanable one.
	time.Sleep(150 * time.Millisecond) // segment age, not synchronisation
	e.ProduceBatch([]*kgo.Record{{Topic: topic, Key: []byte("roll"), Value: []byte("c")}})

	var edgeView *harness.Produced
	testkit.Eventually(t, 2*time.Minute, "tail of batch A compacted away at the edge", func() error {
		v, n, err := harness.FromTopic(e.Ctx, e.Edge.Brokers(), topic)
		if err != nil {
			return err
		}
		if want := 10 + 10 + 1; n != want {
			return fmt.Errorf("edge holds %d records, want %d after cleaning", n, want)
		}
		edgeView = v
		return nil
	})
	e.StartAgent("", "--fetch-max-bytes", "64KiB")
	testkit.Eventually(t, time.Minute, "compacted topic mirrored", func() error {
		return harness.CheckCompacted(e.Ctx, e.Hub.Brokers(), e.EdgeID, edgeView, e.HubTopic)
	})
}

func ptr(s string) *string { return &s }
