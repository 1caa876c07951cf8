package scenario

import (
	"context"
	"fmt"
	"math/rand/v2"
	"sync"
	"testing"
	"time"

	"github.com/edgemirror/edgemirror/test/internal/harness"
	"github.com/edgemirror/edgemirror/test/wan"
)

// TwoAggregators: two live aggregators on one hub behind a load balancer
// that moves the edge's connection between them every 1-3 s, sometimes
// freezing the one left behind (SIGSTOP) for a few seconds and thawing it
// later, as a GC pause or a VM migration would. A frozen aggregator wakes up
// with a stale picture of the hub and chunks it had begun to write; every
// record must still be in the hub exactly once. seed fixes the schedule.
func TwoAggregators(t *testing.T, clusters Clusters, records int, seed uint64) {
	e := New(t, clusters)
	second := harness.StartAggregator(t, e.Hub.Brokers(), "")
	aggs := []*harness.Aggregator{e.Agg, second}
	lb := harness.StartBalancer(t, e.Agg.Addr, second.Addr)
	// A WAN between the agent and the balancer keeps several chunks in
	// flight at every move.
	link, err := wan.New(wan.Config{Listen: "127.0.0.1:0", Target: lb.Addr(), Link: wan.Link{RTT: 60 * time.Millisecond}})
	if err != nil {
		t.Fatal(err)
	}
	lctx, lcancel := context.WithCancel(context.Background())
	ldone := make(chan struct{})
	go func() { defer close(ldone); _ = link.Run(lctx) }()
	t.Cleanup(func() { lcancel(); link.Close(); <-ldone })
	e.Agent = harness.StartAgent(e.T, e.EdgeID, e.Edge.Brokers(), "http://"+link.Addr(), e.BufferDir(),
		"--topics", e.Topic, "--batch-bytes", "8KiB", "--linger", "100ms", "--inflight", "8", "--max-backoff", "1s")
	rng := rand.New(rand.NewPCG(seed, seed^0x9e3779b97f4a7c15))

	var (
		wg      sync.WaitGroup
		freezes int
	)
	defer wg.Wait()
	move := func() {
		time.Sleep(time.Duration(1000+rng.IntN(2000)) * time.Millisecond) // the schedule of the moves, not synchronisation
		old := lb.Current()
		lb.Switch(1 - old)
		if rng.IntN(3) != 0 {
			return
		}
		freezes++
		p := aggs[old].Proc
		p.Freeze()
		hold := time.Duration(2000+rng.IntN(3000)) * time.Millisecond
		wg.Add(1)
		go func() {
			defer wg.Done()
			time.Sleep(hold) // the length of the freeze
			p.Thaw()
		}()
	}
	// While producing, then while the backlog drains (and for at least 10
	// moves in all; at most 20 more), the edge keeps being moved.
	stop := e.ProduceInBackground(40)
	for e.Prod.Out.Count() < records && e.Ctx.Err() == nil {
		move()
	}
	stop()
	for i := 0; i < 20 && (lb.Switches() < 10 || e.HubCount() < int64(e.Prod.Out.Count())) && e.Ctx.Err() == nil; i++ {
		move()
	}
	wg.Wait()
	e.WaitAll()
	dups, err := harness.Duplicates(e.Ctx, e.Hub.Brokers(), e.HubTopic(e.Topic))
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("two aggregators: %d records, %d moves, %d freezes, %d duplicates (seed %d)",
		e.Prod.Out.Count(), lb.Switches(), freezes, dups, seed)
	if dups > 0 {
		t.Errorf("%d duplicates in the hub", dups)
	}
	e.Check(nil)
	for i, a := range aggs {
		if !a.Running() {
			t.Errorf("aggregator %d exited:\n%s", i, a.Tail(30))
		}
	}
}

// AgentFailover: the agent is given a dead endpoint and two aggregators;
// it finds a live one, and when that one is killed mid-stream it moves to
// the other. Every record arrives exactly once.
func AgentFailover(t *testing.T, clusters Clusters) {
	e := New(t, clusters)
	second := harness.StartAggregator(t, e.Hub.Brokers(), "")
	dead := fmt.Sprintf("http://127.0.0.1:%d", harness.FreePort(t))
	e.Agent = harness.StartAgent(e.T, e.EdgeID, e.Edge.Brokers(), dead+",http://"+e.Agg.Addr+",http://"+second.Addr,
		e.BufferDir(), "--topics", e.Topic, "--batch-bytes", "16KiB", "--max-backoff", "1s")
	stop := e.ProduceInBackground(100)
	e.WaitHubGrowth(2000)
	// Whichever aggregator the agent uses now is killed.
	e.Agg.Kill()
	e.WaitHubGrowth(2000)
	stop()
	e.WaitAll()
	e.Check(nil)
	if !e.Agent.LogContains("moving to the next aggregator endpoint") {
		t.Errorf("the agent never logged a move between endpoints:\n%s", e.Agent.Tail(30))
	}
}
