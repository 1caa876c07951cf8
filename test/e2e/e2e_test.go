// Package e2e runs the real edgemirror binary, agent and aggregator as
// separate processes, against two in-process Kafka clusters (franz-go's
// kfake), with a WAN emulator between agent and aggregator, and checks the
// hub record by record.
package e2e

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kfake"
	"github.com/twmb/franz-go/pkg/kgo"
	"go.uber.org/goleak"

	"github.com/edgemirror/edgemirror/test/internal/harness"
	"github.com/edgemirror/edgemirror/test/wan"
)

func TestMain(m *testing.M) {
	if _, err := harness.Binary(); err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	goleak.VerifyTestMain(m,
		// kfake and franz-go clients stop their goroutines asynchronously.
		goleak.IgnoreTopFunction("github.com/twmb/franz-go/pkg/kfake.(*Cluster).run"),
		goleak.IgnoreAnyFunction("github.com/twmb/franz-go/pkg/kgo.(*Client).updateMetadataLoop"),
		goleak.IgnoreAnyFunction("internal/poll.runtime_pollWait"),
	)
}

const topic = "telemetry"

// env is one edge cluster, one hub cluster, a WAN proxy and the processes.
type env struct {
	t      *testing.T
	ctx    context.Context
	edge   *kfake.Cluster
	hub    *kfake.Cluster
	proxy  *wan.Proxy
	agg    *harness.Aggregator
	agent  *harness.Agent
	prod   *harness.Producer
	edgeID string
}

func newEnv(t *testing.T, aggArgs ...string) *env {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	t.Cleanup(cancel)
	edge, err := kfake.NewCluster(kfake.NumBrokers(1))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(edge.Close)
	hub, err := kfake.NewCluster(kfake.NumBrokers(1))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(hub.Close)
	e := &env{t: t, ctx: ctx, edge: edge, hub: hub, edgeID: "plant-7"}
	e.agg = harness.StartAggregator(t, hub.ListenAddrs(), "", aggArgs...)
	e.proxy, err = wan.New(wan.Config{Listen: "127.0.0.1:0", Target: e.agg.Addr, Link: wan.Link{RTT: 20 * time.Millisecond}})
	if err != nil {
		t.Fatal(err)
	}
	pctx, pcancel := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	wg.Add(1)
	go func() { defer wg.Done(); _ = e.proxy.Run(pctx) }()
	t.Cleanup(func() { pcancel(); e.proxy.Close(); wg.Wait() })
	e.prod, err = harness.NewProducer(edge.ListenAddrs())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(e.prod.Close)
	if err := e.prod.CreateTopic(ctx, topic, 3, nil); err != nil {
		t.Fatal(err)
	}
	return e
}

func (e *env) startAgent(bufferDir string, extra ...string) {
	e.agent = harness.StartAgent(e.t, e.edgeID, e.edge.ListenAddrs(), "http://"+e.proxy.Addr(), bufferDir, extra...)
}

func (e *env) hubTopic(t string) string { return e.edgeID + "." + t }

// waitHub waits until the hub holds want records of the topic.
func (e *env) waitHub(want int64, timeout time.Duration) {
	e.t.Helper()
	harness.Eventually(e.t, timeout, fmt.Sprintf("%d records in hub", want), func() error {
		n, err := harness.CountAll(e.ctx, e.hub.ListenAddrs(), e.hubTopic(topic))
		if err != nil {
			return err
		}
		if n < want {
			return fmt.Errorf("hub has %d", n)
		}
		return nil
	})
}

func (e *env) check(lost []harness.Lost) {
	e.t.Helper()
	if err := harness.Check(e.ctx, e.hub.ListenAddrs(), e.edgeID, e.prod.Out, lost, e.hubTopic); err != nil {
		e.t.Fatal(err)
	}
}

// produceInBackground produces rounds of records until stop is closed.
func (e *env) produceInBackground(perRound int) (stop func()) {
	done := make(chan struct{})
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		for {
			select {
			case <-done:
				return
			default:
			}
			if err := e.prod.Produce(e.ctx, topic, 3, perRound); err != nil {
				e.t.Errorf("produce: %v", err)
				return
			}
			time.Sleep(20 * time.Millisecond) // pacing of the synthetic load, not synchronisation
		}
	}()
	return func() { close(done); wg.Wait() }
}

func TestHappyPath(t *testing.T) {
	e := newEnv(t)
	if err := e.prod.Produce(e.ctx, topic, 3, 2000); err != nil {
		t.Fatal(err)
	}
	e.startAgent("")
	e.waitHub(int64(e.prod.Out.Count()), time.Minute)
	e.check(nil)
	// A clean stop on SIGTERM exits 0.
	if err := e.agent.Stop(20 * time.Second); err != nil {
		t.Fatalf("agent stop: %v", err)
	}
	if err := e.agg.Stop(20 * time.Second); err != nil {
		t.Fatalf("aggregator stop: %v", err)
	}
}

func TestKillAgentMidStream(t *testing.T) {
	e := newEnv(t)
	bufDir := filepath.Join(t.TempDir(), "buffer")
	e.startAgent(bufDir, "--batch-bytes", "32KiB")
	stop := e.produceInBackground(200)
	for i := 0; i < 4; i++ {
		// Kill while records are flowing: after the hub grew since the last kill.
		e.waitHubGrowth(1500)
		e.agent.Kill()
		e.agent.Restart()
	}
	stop()
	e.waitHub(int64(e.prod.Out.Count()), time.Minute)
	e.check(nil)
}

func TestKillAggregator(t *testing.T) {
	e := newEnv(t)
	e.startAgent("", "--batch-bytes", "32KiB")
	stop := e.produceInBackground(200)
	for i := 0; i < 3; i++ {
		e.waitHubGrowth(1500)
		e.agg.Kill()
		e.agg.Restart()
		e.agg.WaitHealthy(t)
	}
	stop()
	e.waitHub(int64(e.prod.Out.Count()), time.Minute)
	e.check(nil)
}

func TestEmptyAggregatorState(t *testing.T) {
	e := newEnv(t)
	e.startAgent("", "--batch-bytes", "32KiB")
	stop := e.produceInBackground(200)
	harness.Eventually(t, 30*time.Second, "hub progress", func() error {
		n, err := harness.CountAll(e.ctx, e.hub.ListenAddrs(), e.hubTopic(topic))
		if err != nil || n < 1000 {
			return fmt.Errorf("hub has %d (%v)", n, err)
		}
		return nil
	})
	// Replace the aggregator by one with an empty state directory.
	e.agg.Kill()
	if err := os.RemoveAll(e.agg.StateDir); err != nil {
		t.Fatal(err)
	}
	e.agg.Restart()
	e.agg.WaitHealthy(t)
	stop()
	e.waitHub(int64(e.prod.Out.Count()), time.Minute)
	e.check(nil)
	if !e.agg.LogContains("watermark derived from hub") {
		t.Error("the restarted aggregator never derived a watermark from the hub")
	}
}

func TestLinkCut(t *testing.T) {
	e := newEnv(t)
	e.startAgent("", "--batch-bytes", "16KiB")
	stop := e.produceInBackground(100)
	e.waitHub(300, 30*time.Second)
	e.proxy.Cut()
	// The buffer fills while the link is down.
	harness.Eventually(t, 30*time.Second, "buffer filling during the cut", func() error {
		if got := e.agent.Metrics(e.ctx)["edgemirror_buffer_chunks"]; got < 5 {
			return fmt.Errorf("%v chunks buffered", got)
		}
		return nil
	})
	e.proxy.Restore()
	stop()
	e.waitHub(int64(e.prod.Out.Count()), time.Minute)
	harness.Eventually(t, 30*time.Second, "buffer drained", func() error {
		if got := e.agent.Metrics(e.ctx)["edgemirror_buffer_chunks"]; got != 0 {
			return fmt.Errorf("%v chunks still buffered", got)
		}
		return nil
	})
	e.check(nil)
}

func TestDropOldestReportsExactLoss(t *testing.T) {
	e := newEnv(t)
	e.startAgent("", "--batch-bytes", "16KiB", "--buffer-max-bytes", "1MiB", "--buffer-full", "drop-oldest",
		"--compression", "none")
	e.waitHubTopicExists()
	e.proxy.Cut()
	// Much more than the buffer holds.
	for i := 0; i < 10; i++ {
		if err := e.prod.Produce(e.ctx, topic, 3, 1000); err != nil {
			t.Fatal(err)
		}
	}
	harness.Eventually(t, 60*time.Second, "agent dropped chunks", func() error {
		if got := e.agent.Metrics(e.ctx)["edgemirror_buffer_dropped_records_total"]; got == 0 {
			return fmt.Errorf("nothing dropped yet")
		}
		if got := e.agent.Metrics(e.ctx)["edgemirror_agent_records_read_total"]; got < float64(e.prod.Out.Count()) {
			return fmt.Errorf("read %v of %d", got, e.prod.Out.Count())
		}
		return nil
	})
	e.proxy.Restore()
	var lost []harness.Lost
	harness.Eventually(t, 60*time.Second, "all kept records in hub and losses reported", func() error {
		m := e.agent.Metrics(e.ctx)
		if m["edgemirror_buffer_chunks"] != 0 {
			return fmt.Errorf("%v chunks still buffered", m["edgemirror_buffer_chunks"])
		}
		l, err := e.agg.Losses(e.ctx, e.edgeID)
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
	e.check(lost)
}

// waitHubGrowth waits until the hub holds at least n more records than now.
func (e *env) waitHubGrowth(n int64) {
	e.t.Helper()
	start, err := harness.CountAll(e.ctx, e.hub.ListenAddrs(), e.hubTopic(topic))
	if err != nil {
		start = 0
	}
	e.waitHub(start+n, time.Minute)
}

// waitHubTopicExists produces a few records and waits until they reach the
// hub, so that the agent has shipped at least once.
func (e *env) waitHubTopicExists() {
	e.t.Helper()
	if err := e.prod.Produce(e.ctx, topic, 3, 10); err != nil {
		e.t.Fatal(err)
	}
	e.waitHub(30, 30*time.Second)
}

func TestTransactionsNewTopicsAndPartitions(t *testing.T) {
	e := newEnv(t)
	e.startAgent("")
	e.waitHubTopicExists()

	// A transactional producer: committed records arrive, aborted ones never,
	// and the control records' offset gaps do not confuse deduplication.
	txp, err := harness.NewProducer(e.edge.ListenAddrs(), kgo.TransactionalID("edge-tx"))
	if err != nil {
		t.Fatal(err)
	}
	defer txp.Close()
	txp.Base = e.prod.Base
	const txTopic = "orders"
	if err := e.prod.CreateTopic(e.ctx, txTopic, 2, nil); err != nil {
		t.Fatal(err)
	}
	for i := 0; i < 6; i++ {
		if err := txp.Client().BeginTransaction(); err != nil {
			t.Fatal(err)
		}
		recs := txp.Build(txTopic, 2, 50)
		if err := txp.Client().ProduceSync(e.ctx, recs...).FirstErr(); err != nil {
			t.Fatal(err)
		}
		commit := i%3 != 1
		if err := txp.Client().EndTransaction(e.ctx, kgo.TransactionEndTry(commit)); err != nil {
			t.Fatal(err)
		}
		if commit {
			txp.Record(recs)
		}
	}
	// A topic created while the agent runs is picked up (metadata interval 1s),
	// and so is a partition added to an existing topic.
	if err := e.prod.CreateTopic(e.ctx, "late", 1, nil); err != nil {
		t.Fatal(err)
	}
	if err := e.prod.Produce(e.ctx, "late", 1, 100); err != nil {
		t.Fatal(err)
	}
	if err := e.prod.AddPartitions(e.ctx, topic, 4); err != nil {
		t.Fatal(err)
	}
	if err := e.prod.Produce(e.ctx, topic, 4, 100); err != nil {
		t.Fatal(err)
	}
	harness.Eventually(t, 60*time.Second, "everything in the hub", func() error {
		for _, src := range []*harness.Producer{e.prod, txp} {
			for _, tp := range src.Out.Topics() {
				if _, err := harness.CountAll(e.ctx, e.hub.ListenAddrs(), e.hubTopic(tp)); err != nil {
					return err
				}
			}
		}
		return harness.Check(e.ctx, e.hub.ListenAddrs(), e.edgeID, e.prod.Out, nil, e.hubTopic)
	})
	if err := harness.Check(e.ctx, e.hub.ListenAddrs(), e.edgeID, txp.Out, nil, e.hubTopic); err != nil {
		t.Fatal(err)
	}
	if got := e.agent.Metrics(e.ctx)["edgemirror_agent_records_skipped_total"]; got == 0 {
		t.Error("no aborted or control record was counted as skipped")
	}
}

func TestEdgeRetentionLossIsReported(t *testing.T) {
	e := newEnv(t)
	bufDir := filepath.Join(t.TempDir(), "buffer")
	e.startAgent(bufDir)
	if err := e.prod.Produce(e.ctx, topic, 3, 100); err != nil {
		t.Fatal(err)
	}
	e.waitHub(300, 30*time.Second)
	if err := e.agent.Stop(20 * time.Second); err != nil {
		t.Fatal(err)
	}
	// While the agent is down, more is produced and retention deletes part
	// of it before the agent could read it.
	if err := e.prod.Produce(e.ctx, topic, 3, 100); err != nil {
		t.Fatal(err)
	}
	if err := e.prod.DeleteRecordsBefore(e.ctx, topic, 0, 150); err != nil {
		t.Fatal(err)
	}
	e.agent.Restart()
	want := []harness.Lost{{Topic: topic, Partition: 0, First: 100, Last: 149}}
	harness.Eventually(t, 30*time.Second, "loss reported", func() error {
		l, err := e.agg.Losses(e.ctx, e.edgeID)
		if err != nil {
			return err
		}
		if len(l) != 1 || l[0] != want[0] {
			return fmt.Errorf("losses %+v, want %+v", l, want)
		}
		return nil
	})
	e.waitHub(int64(e.prod.Out.Count()-50), 30*time.Second)
	e.check(want)
	if !e.agent.LogContains("first_lost_offset=100") {
		t.Error("the agent did not log the exact lost range")
	}
}
