package main

import (
	"context"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/edgemirror/edgemirror/internal/testkit"
	"github.com/twmb/franz-go/pkg/kgo"
)

// TestCheckCommitted: a count that reached its target while a partition's
// last record was still above the last stable offset (transaction markers
// counted as records) is an error; one past every last record is not.
func TestCheckCommitted(t *testing.T) {
	last := map[int32]int64{0: 99, 1: 41, 2: 7}
	cases := []struct {
		name   string
		stable map[int32]int64
		early  int32 // partition named in the error, -1 for none
	}{
		{"all past their last record", map[int32]int64{0: 101, 1: 43, 2: 9}, -1},
		{"exactly one past", map[int32]int64{0: 100, 1: 42, 2: 8}, -1},
		{"last record not committed", map[int32]int64{0: 101, 1: 41, 2: 9}, 1},
		{"partition missing", map[int32]int64{0: 101, 1: 43}, 2},
	}
	for _, c := range cases {
		err := checkCommitted("t", c.stable, last)
		switch {
		case c.early < 0 && err != nil:
			t.Errorf("%s: %v", c.name, err)
		case c.early >= 0 && err == nil:
			t.Errorf("%s: no error", c.name)
		case c.early >= 0 && !strings.Contains(err.Error(), fmt.Sprintf("partition %d's", c.early)):
			t.Errorf("%s: error names the wrong partition: %v", c.name, err)
		}
	}
}

// TestLastIDs builds partition tails the way the two systems leave them
// (plain records; committed transactions followed by an aborted one; a
// committed record followed by more markers and aborted records than the
// first read window holds; an empty partition) and checks that lastIDs
// finds each partition's last committed data record, below the end offsets
// it is given or below the partitions' own ends, and that waitCount's
// comparison with the edge's tails tells complete from early.
func TestLastIDs(t *testing.T) {
	c := testkit.Cluster(t)
	addr := c.ListenAddrs()[0]
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	if err := createTopics(ctx, addr, 4, "t", "bad"); err != nil {
		t.Fatal(err)
	}
	wl, err := workloadByName("sensor")
	if err != nil {
		t.Fatal(err)
	}
	client := func(opts ...kgo.Opt) *kgo.Client {
		t.Helper()
		cl, err := kgo.NewClient(append([]kgo.Opt{kgo.SeedBrokers(addr), kgo.RecordPartitioner(kgo.ManualPartitioner())}, opts...)...)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(cl.Close)
		return cl
	}
	plain, tx := client(), client(kgo.TransactionalID("bench-test"))
	produce := func(cl *kgo.Client, topic string, part int32, id int64) {
		t.Helper()
		_, v := wl.make(id, rngFor(id), nil, nil)
		if topic == "bad" {
			v = []byte("no id here")
		}
		if err := cl.ProduceSync(ctx, &kgo.Record{Topic: topic, Partition: part, Value: v}).FirstErr(); err != nil {
			t.Fatal(err)
		}
	}
	txn := func(commit kgo.TransactionEndTry, part int32, ids ...int64) {
		t.Helper()
		if err := tx.BeginTransaction(); err != nil {
			t.Fatal(err)
		}
		for _, id := range ids {
			produce(tx, "t", part, id)
		}
		if err := tx.EndTransaction(ctx, commit); err != nil {
			t.Fatal(err)
		}
	}
	for id := int64(0); id < 3; id++ {
		produce(plain, "t", 0, id) // offsets 0-2
	}
	txn(kgo.TryCommit, 1, 10, 11) // offsets 0-1, marker 2
	txn(kgo.TryAbort, 1, 12)      // offset 3 aborted, marker 4
	txn(kgo.TryCommit, 2, 30)     // offset 0, marker 1
	for i := int64(0); i < 20; i++ {
		txn(kgo.TryAbort, 2, 31+i) // 40 offsets a read_committed consumer shows only as markers
	}

	got, err := lastIDs(ctx, addr, "t", nil, wl)
	if err != nil {
		t.Fatal(err)
	}
	want := map[int32]int64{0: 2, 1: 11, 2: 30}
	if len(got) != len(want) || !tailsMatch(got, want) {
		t.Errorf("lastIDs of the whole partitions = %v, want %v", got, want)
	}
	got, err = lastIDs(ctx, addr, "t", map[int32]int64{0: 2, 1: 2, 2: 1, 3: 0}, wl)
	if err != nil {
		t.Fatal(err)
	}
	below := map[int32]int64{0: 1, 1: 11, 2: 30}
	if len(got) != len(below) || !tailsMatch(got, below) {
		t.Errorf("lastIDs below given ends = %v, want %v", got, below)
	}

	// waitCount's decision: the hub is complete only when every edge
	// partition's last id is the hub's.
	if !tailsMatch(map[int32]int64{0: 2, 1: 11, 2: 30, 3: 7}, want) {
		t.Error("tailsMatch: a hub with all of the edge's tails (and more) does not match")
	}
	if tailsMatch(below, want) {
		t.Error("tailsMatch: a hub one record short in partition 0 matches")
	}
	if tailsMatch(map[int32]int64{0: 2, 1: 11}, want) {
		t.Error("tailsMatch: a hub without partition 2's records matches")
	}

	produce(plain, "bad", 0, 0)
	if _, err := lastIDs(ctx, addr, "bad", nil, wl); err == nil || !strings.Contains(err.Error(), "without an id") {
		t.Errorf("lastIDs of a record without an id: %v, want an error naming it", err)
	}
}
