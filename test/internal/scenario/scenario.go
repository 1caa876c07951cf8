// Package scenario holds edgemirror's end-to-end scenarios, written once and
// run against in-process clusters (test/e2e, kfake) and against real Apache
// Kafka (test/realkafka). Each scenario starts the real binary as separate
// agent and aggregator processes, puts a WAN emulator between them, and
// checks the hub record by record: key, value, headers, timestamp, order
// per partition, exactly once.
package scenario

import (
	"context"
	"fmt"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/edgemirror/edgemirror/internal/testkit"
	"github.com/edgemirror/edgemirror/test/internal/harness"
	"github.com/edgemirror/edgemirror/test/wan"
)

// Cluster is a Kafka cluster a scenario talks to.
type Cluster interface {
	Brokers() []string
}

// Clusters returns the edge and hub clusters for one scenario. Scenarios use
// edge ids and topic names of their own, so clusters may be shared.
type Clusters func(t *testing.T) (edge, hub Cluster)

// Env is one scenario's clusters, WAN proxy and processes.
type Env struct {
	T      *testing.T
	Ctx    context.Context
	Edge   Cluster
	Hub    Cluster
	EdgeID string
	Topic  string // the main source topic, 3 partitions
	Proxy  *wan.Proxy
	Agg    *harness.Aggregator
	Agent  *harness.Agent
	Prod   *harness.Producer
}

var unsafeName = regexp.MustCompile(`[^a-zA-Z0-9-]+`)

// New builds an Env: an aggregator writing to hub, a WAN proxy in front of
// it, a producer at the edge and the main topic created with 3 partitions.
// The agent is started by the scenario (StartAgent).
func New(t *testing.T, clusters Clusters, aggArgs ...string) *Env {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 4*time.Minute)
	t.Cleanup(cancel)
	edge, hub := clusters(t)
	name := strings.ToLower(unsafeName.ReplaceAllString(t.Name(), "-"))
	if len(name) > 40 {
		name = name[len(name)-40:]
	}
	name = strings.Trim(name, "-")
	e := &Env{T: t, Ctx: ctx, Edge: edge, Hub: hub, EdgeID: "e-" + name, Topic: "telemetry"}
	e.Agg = harness.StartAggregator(t, hub.Brokers(), "", aggArgs...)
	var err error
	e.Proxy, err = wan.New(wan.Config{Listen: "127.0.0.1:0", Target: e.Agg.Addr, Link: wan.Link{RTT: 20 * time.Millisecond}})
	if err != nil {
		t.Fatal(err)
	}
	pctx, pcancel := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	wg.Add(1)
	go func() { defer wg.Done(); _ = e.Proxy.Run(pctx) }()
	t.Cleanup(func() { pcancel(); e.Proxy.Close(); wg.Wait() })
	e.Prod, err = harness.NewProducer(edge.Brokers())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(e.Prod.Close)
	// Topic names are per scenario so that clusters can be shared.
	e.Topic = "telemetry-" + name
	if err := e.Prod.CreateTopic(ctx, e.Topic, 3, nil); err != nil {
		t.Fatal(err)
	}
	return e
}

// StartAgent starts the agent, shipping through the WAN proxy, and only
// mirroring this scenario's topics (prefix telemetry-<name>, orders-<name>...).
func (e *Env) StartAgent(bufferDir string, extra ...string) {
	suffix := strings.TrimPrefix(e.Topic, "telemetry")
	args := append([]string{"--topics", ".*" + regexp.QuoteMeta(suffix)}, extra...)
	e.Agent = harness.StartAgent(e.T, e.EdgeID, e.Edge.Brokers(), "http://"+e.Proxy.Addr(), bufferDir, args...)
}

// Name returns a topic name of this scenario with the given prefix.
func (e *Env) Name(prefix string) string { return prefix + strings.TrimPrefix(e.Topic, "telemetry") }

// HubTopic is the hub topic of a source topic (default template).
func (e *Env) HubTopic(t string) string { return e.EdgeID + "." + t }

// HubCount returns the end minus the start offsets of the hub topic of the
// main topic: cheap, and an upper bound of the records a read_committed
// consumer sees (the hub's commit markers take offsets too). Use it to see
// the hub grow; WaitHub counts the committed records.
func (e *Env) HubCount() int64 {
	n, err := harness.CountAll(e.Ctx, e.Hub.Brokers(), e.HubTopic(e.Topic))
	if err != nil {
		return 0
	}
	return n
}

// WaitHub waits until a read_committed consumer of the hub topic of the
// main topic sees want records. Reading them all is costly, so it is done
// only once the offsets say it could be true, and at most once a second.
func (e *Env) WaitHub(want int64, timeout time.Duration) {
	e.T.Helper()
	var last time.Time
	testkit.Eventually(e.T, timeout, fmt.Sprintf("%d records in hub", want), func() error {
		if n := e.HubCount(); n < want {
			return fmt.Errorf("hub has at most %d", n)
		}
		if time.Since(last) < time.Second {
			return fmt.Errorf("counting committed records again shortly")
		}
		last = time.Now()
		n, err := harness.CountCommitted(e.Ctx, e.Hub.Brokers(), e.HubTopic(e.Topic))
		if err != nil {
			return err
		}
		if n < want {
			return fmt.Errorf("hub has %d committed", n)
		}
		return nil
	})
}

// WaitHubGrowth waits until the hub holds at least n more records than now.
func (e *Env) WaitHubGrowth(n int64) {
	e.T.Helper()
	e.WaitHub(e.HubCount()+n, 2*time.Minute)
}

// WaitAll waits until the hub holds every produced record of the main topic.
func (e *Env) WaitAll() {
	e.T.Helper()
	e.WaitHub(int64(e.Prod.Out.Count()), 2*time.Minute)
}

// Check verifies the hub against everything produced, minus lost ranges.
func (e *Env) Check(lost []harness.Lost) {
	e.T.Helper()
	if err := harness.Check(e.Ctx, e.Hub.Brokers(), e.EdgeID, e.Prod.Out, lost, e.HubTopic); err != nil {
		e.T.Fatal(err)
	}
}

// ProduceInBackground produces rounds of records to the main topic until
// the returned stop function is called.
func (e *Env) ProduceInBackground(perRound int) (stop func()) {
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
			if err := e.Prod.Produce(e.Ctx, e.Topic, 3, perRound); err != nil {
				e.T.Errorf("produce: %v", err)
				return
			}
			time.Sleep(20 * time.Millisecond) // pacing of the synthetic load, not synchronisation
		}
	}()
	return func() { close(done); wg.Wait() }
}

// WaitShipped produces a few records and waits until they reach the hub.
func (e *Env) WaitShipped() {
	e.T.Helper()
	if err := e.Prod.Produce(e.Ctx, e.Topic, 3, 10); err != nil {
		e.T.Fatal(err)
	}
	e.WaitHub(int64(e.Prod.Out.Count()), time.Minute)
}

// ProduceBatch produces recs as one batch per partition (a producer that
// flushes by hand) and records them, with their offsets, in e.Prod.Out.
func (e *Env) ProduceBatch(recs []*kgo.Record) {
	e.T.Helper()
	cl, err := kgo.NewClient(kgo.SeedBrokers(e.Edge.Brokers()...), kgo.ManualFlushing(),
		kgo.RecordPartitioner(kgo.ManualPartitioner()), kgo.ProducerBatchCompression(kgo.NoCompression()),
		kgo.RequiredAcks(kgo.AllISRAcks()), kgo.ProducerBatchMaxBytes(4<<20), kgo.MaxBufferedRecords(len(recs)+1))
	if err != nil {
		e.T.Fatal(err)
	}
	defer cl.Close()
	var (
		mu   sync.Mutex
		errs []error
	)
	for _, r := range recs {
		cl.Produce(e.Ctx, r, func(_ *kgo.Record, err error) {
			if err != nil {
				mu.Lock()
				errs = append(errs, err)
				mu.Unlock()
			}
		})
	}
	if err := cl.Flush(e.Ctx); err != nil {
		e.T.Fatalf("flush batch: %v", err)
	}
	if len(errs) > 0 {
		e.T.Fatalf("produce batch: %v", errs[0])
	}
	e.Prod.Record(recs)
}

// BufferDir returns a fresh buffer directory for the agent.
func (e *Env) BufferDir() string { return filepath.Join(e.T.TempDir(), "buffer") }
