// Package testkit holds what the package tests share: a one-broker
// in-process Kafka cluster and the goroutine-leak exceptions it needs. Only
// test code imports it, so the fake broker never reaches the binary.
package testkit

import (
	"testing"

	"github.com/twmb/franz-go/pkg/kfake"
	"go.uber.org/goleak"
)

// LeakOptions are the goroutines goleak may ignore: kfake and franz-go
// clients stop theirs asynchronously after Close. Nothing of edgemirror's
// own, its HTTP connections or kafka-go's pools is ignored.
func LeakOptions() []goleak.Option {
	return []goleak.Option{
		goleak.IgnoreTopFunction("github.com/twmb/franz-go/pkg/kfake.(*Cluster).run"),
		goleak.IgnoreAnyFunction("github.com/twmb/franz-go/pkg/kgo.(*Client).updateMetadataLoop"),
	}
}

// Cluster starts a one-broker in-process Kafka cluster, closed when the
// test ends.
func Cluster(t testing.TB) *kfake.Cluster {
	t.Helper()
	c, err := kfake.NewCluster(kfake.NumBrokers(1))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(c.Close)
	return c
}
