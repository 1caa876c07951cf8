// Package testkit holds what the package tests share: a one-broker
// in-process Kafka cluster and the goroutine-leak exceptions it needs. Only
// test code imports it, so the fake broker never reaches the binary.
package testkit

import (
	"encoding/binary"
	"testing"

	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/twmb/franz-go/pkg/kfake"
	"go.uber.org/goleak"
)

// LeakOptions are the goroutines goleak may ignore: kfake and franz-go
// clients stop theirs asynchronously after Close, and the fake broker
// starts a goroutine for every read and write on each client connection
// it serves (also for the test's own clients), so a check in the middle
// of a test can meet a new one. Nothing of edgemirror's own, its HTTP
// connections or kafka-go's pools is ignored.
func LeakOptions() []goleak.Option {
	return []goleak.Option{
		goleak.IgnoreTopFunction("github.com/twmb/franz-go/pkg/kfake.(*Cluster).run"),
		goleak.IgnoreAnyFunction("github.com/twmb/franz-go/pkg/kfake.(*clientConn).read.func1"),
		goleak.IgnoreAnyFunction("github.com/twmb/franz-go/pkg/kfake.(*clientConn).write.func1"),
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

// Committed returns what a read_committed consumer sees of one partition's
// records, read with kgo.ReadUncommitted and kgo.KeepControlRecords in
// offset order: control records are dropped, and so are the records of
// every transaction that an ABORT marker ends or that no marker ends yet.
// It is written independently of the product's own read_committed reader,
// so that a test does not check that reader against itself.
func Committed(recs []*kgo.Record) []*kgo.Record {
	// Walk backwards: the first marker of a producer after a record decides
	// its transaction's fate.
	fate := make(map[int64]int) // producer id -> 0 open, 1 commit, 2 abort (of the transaction being walked)
	keep := make([]bool, len(recs))
	for i := len(recs) - 1; i >= 0; i-- {
		r := recs[i]
		switch {
		case r.Attrs.IsControl():
			if len(r.Key) >= 4 && binary.BigEndian.Uint16(r.Key[2:4]) == 1 {
				fate[r.ProducerID] = 1
			} else {
				fate[r.ProducerID] = 2
			}
		case r.Attrs.IsTransactional():
			keep[i] = fate[r.ProducerID] == 1
		default:
			keep[i] = true
		}
	}
	out := make([]*kgo.Record, 0, len(recs))
	for i, r := range recs {
		if keep[i] {
			out = append(out, r)
		}
	}
	return out
}
