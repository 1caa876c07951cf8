// Package e2e runs edgemirror's end-to-end scenarios (test/internal/scenario)
// against two in-process Kafka clusters (franz-go's kfake): the real binary
// as agent and aggregator processes, a WAN emulator between them, and a
// record-by-record check of the hub. The same scenarios run against real
// Apache Kafka in test/realkafka.
package e2e

import (
	"fmt"
	"os"
	"testing"

	"github.com/twmb/franz-go/pkg/kfake"
	"go.uber.org/goleak"

	"github.com/edgemirror/edgemirror/internal/testkit"
	"github.com/edgemirror/edgemirror/test/internal/harness"
	"github.com/edgemirror/edgemirror/test/internal/scenario"
)

func TestMain(m *testing.M) {
	if _, err := harness.Binary(); err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	goleak.VerifyTestMain(m, append(testkit.LeakOptions(),
		// The harness's HTTP clients keep idle connections to the processes.
		goleak.IgnoreAnyFunction("internal/poll.runtime_pollWait"))...)
}

type fake struct{ c *kfake.Cluster }

func (f fake) Brokers() []string { return f.c.ListenAddrs() }

// clusters gives each scenario a fresh edge and hub kfake cluster.
func clusters(t *testing.T) (scenario.Cluster, scenario.Cluster) {
	var out [2]scenario.Cluster
	for i := range out {
		out[i] = fake{testkit.Cluster(t)}
	}
	return out[0], out[1]
}

func TestHappyPath(t *testing.T)            { scenario.HappyPath(t, clusters) }
func TestKillAgentMidStream(t *testing.T)   { scenario.KillAgent(t, clusters) }
func TestKillAggregator(t *testing.T)       { scenario.KillAggregator(t, clusters) }
func TestEmptyAggregatorState(t *testing.T) { scenario.EmptyAggregatorState(t, clusters) }
func TestLinkCut(t *testing.T)              { scenario.LinkCut(t, clusters) }
func TestDropOldestReportsExactLoss(t *testing.T) {
	scenario.DropOldest(t, clusters)
}
func TestTransactionsNewTopicsAndPartitions(t *testing.T) {
	scenario.Transactions(t, clusters)
}
func TestEdgeRetentionLossIsReported(t *testing.T) { scenario.EdgeRetention(t, clusters) }

// TestTwoAggregators: two aggregators behind a balancer that moves the edge
// every 1-3 s and sometimes freezes the one left behind.
func TestTwoAggregators(t *testing.T) { scenario.TwoAggregators(t, clusters, 30000, 7) }

// TestAgentFailover: a dead endpoint, then a killed aggregator; the agent
// moves on each time.
func TestAgentFailover(t *testing.T)   { scenario.AgentFailover(t, clusters) }
func TestTopicConfigSync(t *testing.T) { scenario.TopicConfigSync(t, clusters) }
func TestFleetView(t *testing.T)       { scenario.FleetView(t, clusters) }
