//go:build realkafka

package aggregator

import (
	"context"
	"fmt"
	"os"
	"strings"
	"testing"
	"time"

	rk "github.com/edgemirror/edgemirror/test/kafka"
)

type realHub struct{ c *rk.Cluster }

func (h realHub) ListenAddrs() []string { return []string{h.c.Addr()} }

// TestRealKafkaLossEventsFenced runs TestLossEventsFencedAcrossAggregators
// against a real Apache Kafka broker (KAFKA_VERSION, default 4.4): the fencing of an aggregator whose
// loss event transaction is open, by another one taking the edge's events,
// is the broker's doing, and kfake is not Kafka.
func TestRealKafkaLossEventsFenced(t *testing.T) {
	if !rk.Available() {
		t.Skip(rk.EnvRealKafka + "=0")
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	port, err := rk.FreePort()
	if err != nil {
		t.Fatal(err)
	}
	c, err := rk.Start(ctx, fmt.Sprintf("agg-events-%s-%d", strings.ReplaceAll(rk.Version(), ".", ""), os.Getpid()), port, rk.WithVersion(rk.Version()))
	if err != nil {
		t.Fatalf("start Kafka %s: %v", rk.Version(), err)
	}
	t.Cleanup(func() {
		cctx, ccancel := context.WithTimeout(context.Background(), time.Minute)
		defer ccancel()
		_ = c.Clean(cctx)
	})
	t.Logf("Kafka %s up at %s in %s", rk.Version(), c.Addr(), c.StartTime.Round(time.Millisecond))
	lossEventsFenced(t, realHub{c})
}
