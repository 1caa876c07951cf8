//go:build realkafka

// Package realkafka runs edgemirror's end-to-end scenarios against real
// Apache Kafka brokers (KRaft, started from Maven Central jars by
// test/kafka/kafka.sh): every scenario of the in-process suite on Kafka 4.x,
// plus broker kill -9 and restart at the edge and at the hub, a compacted
// source topic, hub topics that keep their edge topics' settings (also on
// 3.9), compaction at the hub under an aggregator with an empty state dir,
// and the main exactly-once scenario on Kafka 3.9.
//
// Run it with `make test-realkafka` (or `go test -tags realkafka`). The first
// run downloads Kafka once into ~/.m2. EDGEMIRROR_REAL_KAFKA=0 skips it.
package realkafka

import (
	"context"
	"fmt"
	"os"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/edgemirror/edgemirror/test/internal/harness"
	"github.com/edgemirror/edgemirror/test/internal/scenario"
	rk "github.com/edgemirror/edgemirror/test/kafka"
)

// Version39 is the 3.9 line the edge-gateway compatibility run uses.
const Version39 = "3.9.1"

var (
	pairs   = map[string]*pair{}
	pairsMu sync.Mutex
)

// pair is an edge and a hub cluster of one Kafka version, shared by the
// scenarios that do not kill brokers.
type pair struct {
	edge, hub *rk.Cluster
}

type cluster struct{ c *rk.Cluster }

func (c cluster) Brokers() []string { return []string{c.c.Addr()} }

func TestMain(m *testing.M) {
	if !rk.Available() {
		fmt.Println("realkafka: skipped (" + rk.EnvRealKafka + "=0)")
		os.Exit(0)
	}
	if _, err := harness.Binary(); err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	code := m.Run()
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	for _, p := range pairs {
		_ = p.edge.Clean(ctx)
		_ = p.hub.Clean(ctx)
	}
	os.Exit(code)
}

// start starts a single-node cluster and removes it when the test ends.
func start(t *testing.T, name, version string, props ...string) *rk.Cluster {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	port, err := rk.FreePort()
	if err != nil {
		t.Fatal(err)
	}
	// Fast log cleaning so that the compacted-topic scenario sees compaction.
	props = append(props, "log.cleaner.backoff.ms=500")
	// The name includes the version: kafka.sh returns a running cluster of
	// the same name as it is.
	c, err := rk.Start(ctx, fmt.Sprintf("%s-%s-%d", name, strings.ReplaceAll(version, ".", ""), os.Getpid()), port, rk.WithVersion(version), rk.WithProps(props...))
	if err != nil {
		t.Fatalf("start Kafka %s %s: %v", version, name, err)
	}
	t.Logf("Kafka %s %q up at %s in %s", version, c.Name(), c.Addr(), c.StartTime.Round(time.Millisecond))
	return c
}

// shared returns the clusters of a version, started on first use and
// cleaned when the test binary exits.
func shared(version string) scenario.Clusters {
	return func(t *testing.T) (scenario.Cluster, scenario.Cluster) {
		pairsMu.Lock()
		defer pairsMu.Unlock()
		p := pairs[version]
		if p == nil {
			p = &pair{edge: start(t, "edge", version), hub: start(t, "hub", version)}
			pairs[version] = p
		}
		return cluster{p.edge}, cluster{p.hub}
	}
}

// own returns fresh clusters for a scenario that kills brokers.
func own(t *testing.T, version string) (edge, hub *rk.Cluster) {
	edge, hub = start(t, "edge-own", version), start(t, "hub-own", version)
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
		defer cancel()
		_ = edge.Clean(ctx)
		_ = hub.Clean(ctx)
	})
	return edge, hub
}

var kafka4 = shared(rk.DefaultVersion)

func TestHappyPath(t *testing.T)                   { scenario.HappyPath(t, kafka4) }
func TestKillAgentMidStream(t *testing.T)          { scenario.KillAgent(t, kafka4) }
func TestKillAggregator(t *testing.T)              { scenario.KillAggregator(t, kafka4) }
func TestEmptyAggregatorState(t *testing.T)        { scenario.EmptyAggregatorState(t, kafka4) }
func TestLinkCut(t *testing.T)                     { scenario.LinkCut(t, kafka4) }
func TestDropOldestReportsExactLoss(t *testing.T)  { scenario.DropOldest(t, kafka4) }
func TestTransactions(t *testing.T)                { scenario.Transactions(t, kafka4) }
func TestEdgeRetentionLossIsReported(t *testing.T) { scenario.EdgeRetention(t, kafka4) }
func TestCompactedSourceTopic(t *testing.T)        { scenario.Compacted(t, kafka4) }
func TestTopicConfigSync(t *testing.T)             { scenario.TopicConfigSync(t, kafka4) }
func TestCompactedHubTail(t *testing.T)            { scenario.CompactedHubTail(t, kafka4) }
func TestCompactedHubTailActive(t *testing.T)      { scenario.CompactedHubTailActive(t, kafka4) }
func TestTopicConfigRefused(t *testing.T)          { scenario.TopicConfigRefused(t, kafka4) }
func TestKafka39TopicConfigSync(t *testing.T)      { scenario.TopicConfigSync(t, shared(Version39)) }
func TestFleetView(t *testing.T)                   { scenario.FleetView(t, kafka4) }
func TestKafka39DropOldestLossEvents(t *testing.T) { scenario.DropOldest(t, shared(Version39)) }
func TestKafka39KillAgentMidStream(t *testing.T)   { scenario.KillAgent(t, shared(Version39)) }
func TestKafka39EmptyAggregatorState(t *testing.T) {
	scenario.EmptyAggregatorState(t, shared(Version39))
}

func TestHubBrokerKilledAndRestarted(t *testing.T) {
	edge, hub := own(t, rk.DefaultVersion)
	scenario.BrokerRestart(t, func(*testing.T) (scenario.Cluster, scenario.Cluster) { return cluster{edge}, cluster{hub} },
		func(ctx context.Context) error { return hub.Kill(ctx) },
		func(ctx context.Context) error { return hub.Restart(ctx) })
}

func TestEdgeBrokerKilledAndRestarted(t *testing.T) {
	edge, hub := own(t, rk.DefaultVersion)
	scenario.BrokerRestart(t, func(*testing.T) (scenario.Cluster, scenario.Cluster) { return cluster{edge}, cluster{hub} },
		func(ctx context.Context) error { return edge.Kill(ctx) },
		func(ctx context.Context) error { return edge.Restart(ctx) })
}

// TestTwoAggregators and TestKafka39TwoAggregators: two aggregators behind
// a balancer that moves the edge every 1-3 s and sometimes freezes the one
// left behind; exactly once, record by record.
func TestTwoAggregators(t *testing.T)        { scenario.TwoAggregators(t, kafka4, 30000, 7) }
func TestKafka39TwoAggregators(t *testing.T) { scenario.TwoAggregators(t, shared(Version39), 30000, 7) }

func TestFailoverTranslateGroupFromEdge(t *testing.T) {
	scenario.Failover(t, kafka4, scenario.FailoverFromEdge, nil)
}

func TestFailoverFromCheckpointsEdgeStopped(t *testing.T) {
	edge := start(t, "edge-failover", rk.DefaultVersion)
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
		defer cancel()
		_ = edge.Clean(ctx)
	})
	hub := kafka4
	scenario.Failover(t, func(t *testing.T) (scenario.Cluster, scenario.Cluster) {
		_, h := hub(t)
		return cluster{edge}, h
	}, scenario.FailoverFromCheckpoints, func(ctx context.Context) error { return edge.Stop(ctx) })
}

func TestFailoverSyncGroupOffsets(t *testing.T) {
	scenario.Failover(t, kafka4, scenario.FailoverSyncGroupOffsets, nil)
}

func TestResetGroupToDatetime(t *testing.T) { scenario.ResetGroupToDatetime(t, kafka4) }
