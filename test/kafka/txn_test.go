//go:build realkafka

package realkafka

import (
	"errors"
	"fmt"
	"testing"
	"time"

	"github.com/segmentio/kafka-go"

	"github.com/edgemirror/edgemirror/aggregator/txn"
	"github.com/edgemirror/edgemirror/internal/committed"
)

func txnRecords(prefix string, n int) []txn.Record {
	out := make([]txn.Record, n)
	for i := range out {
		out[i] = txn.Record{Timestamp: time.Now().UnixMilli(), Key: []byte(fmt.Sprint(i)), Value: []byte(fmt.Sprintf("%s%d", prefix, i))}
	}
	return out
}

// TestTransactionalProducerOnRealBroker drives the hub writer's
// transactional producer (aggregator/txn) through the steps of
// notes/kafka-go-transactions.md and logs each broker answer: commit,
// fencing by a second claim, the zombie's produce and commit, and what a
// read_committed read then returns.
func TestTransactionalProducerOnRealBroker(t *testing.T) {
	ctx := testCtx(t, 2*time.Minute)
	cl := newClient(t, shared.Addr(), nil)
	topic := fmt.Sprintf("txn-producer-%d", time.Now().UnixNano())
	createTopic(t, ctx, cl, topic, 2)
	newProducer := func() *txn.Producer {
		p, err := txn.New(txn.Config{Client: cl, TransactionalID: topic, Compression: kafka.Lz4, RetryFor: 20 * time.Second})
		if err != nil {
			t.Fatal(err)
		}
		return p
	}
	old, cur := newProducer(), newProducer()
	if err := old.Claim(ctx); err != nil {
		t.Fatalf("claim: %v", err)
	}
	if err := old.Add(ctx, topic, 0, 1); err != nil {
		t.Fatalf("add partitions: %v", err)
	}
	if _, err := old.Produce(ctx, topic, 0, txnRecords("a", 3)); err != nil {
		t.Fatalf("produce: %v", err)
	}
	if err := old.Commit(ctx); err != nil {
		t.Fatalf("commit: %v", err)
	}
	// A second transaction of the same epoch, left open: the zombie.
	if err := old.Add(ctx, topic, 0); err != nil {
		t.Fatal(err)
	}
	if _, err := old.Produce(ctx, topic, 0, txnRecords("zombie", 2)); err != nil {
		t.Fatal(err)
	}
	start := time.Now()
	if err := cur.Claim(ctx); err != nil {
		t.Fatalf("second claim: %v", err)
	}
	t.Logf("second claim took %v while a transaction of the id was open", time.Since(start).Round(time.Millisecond))
	oldID, oldEpoch, _ := old.Session()
	curID, curEpoch, _ := cur.Session()
	t.Logf("claims: producer id %d epoch %d, then producer id %d epoch %d", oldID, oldEpoch, curID, curEpoch)
	if curID == oldID && curEpoch <= oldEpoch {
		t.Errorf("second claim did not bump the epoch")
	}
	// Right after the claim the zombie's transaction is aborted: the last
	// stable offset has reached the high watermark.
	lso, err := cl.ListOffsets(ctx, &kafka.ListOffsetsRequest{Topics: map[string][]kafka.OffsetRequest{topic: {kafka.LastOffsetOf(0)}},
		IsolationLevel: kafka.ReadCommitted})
	if err != nil {
		t.Fatal(err)
	}
	hw, err := cl.ListOffsets(ctx, &kafka.ListOffsetsRequest{Topics: map[string][]kafka.OffsetRequest{topic: {kafka.LastOffsetOf(0)}}})
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("after the claim: last stable offset %d, high watermark %d", lso.Topics[topic][0].LastOffset, hw.Topics[topic][0].LastOffset)
	if lso.Topics[topic][0].LastOffset != hw.Topics[topic][0].LastOffset {
		t.Errorf("an aborted transaction still holds the last stable offset back after the claim returned")
	}
	err = old.Commit(ctx)
	t.Logf("zombie commit (EndTxn with the fenced epoch): %v", err)
	if !errors.Is(err, txn.ErrFenced) {
		t.Errorf("zombie commit: %v, want fenced", err)
	}
	// cur enters a partition, then a third owner takes the id: cur's
	// produce with its now fenced epoch reaches the partition leader.
	if err := cur.Add(ctx, topic, 0); err != nil {
		t.Fatal(err)
	}
	third := newProducer()
	if err := third.Claim(ctx); err != nil {
		t.Fatal(err)
	}
	_, err = cur.Produce(ctx, topic, 0, txnRecords("late", 1))
	t.Logf("zombie produce (a partition it had added, fenced epoch): %v", err)
	if err == nil {
		t.Fatal("the fenced producer's produce was accepted")
	}
	if err := third.Add(ctx, topic, 0); err != nil {
		t.Fatal(err)
	}
	if _, err := third.Produce(ctx, topic, 0, txnRecords("b", 2)); err != nil {
		t.Fatal(err)
	}
	if err := third.Commit(ctx); err != nil {
		t.Fatal(err)
	}
	// EndTxn answers once the commit is decided; the markers reach the
	// partitions just after, and only then is the data stable.
	deadline := time.Now().Add(30 * time.Second)
	for {
		l, err1 := cl.ListOffsets(ctx, &kafka.ListOffsetsRequest{Topics: map[string][]kafka.OffsetRequest{topic: {kafka.LastOffsetOf(0)}},
			IsolationLevel: kafka.ReadCommitted})
		h, err2 := cl.ListOffsets(ctx, &kafka.ListOffsetsRequest{Topics: map[string][]kafka.OffsetRequest{topic: {kafka.LastOffsetOf(0)}}})
		if err1 == nil && err2 == nil && l.Topics[topic][0].LastOffset == h.Topics[topic][0].LastOffset {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("last stable offset never reached the high watermark: %v %v", err1, err2)
		}
		time.Sleep(20 * time.Millisecond) // polling interval of a bounded wait
	}
	var got []string
	end := hw.Topics[topic][0].LastOffset + 100
	err = committed.Read(ctx, cl, topic, 0, 0, end, committed.Options{}, func(r *committed.Record) error {
		got = append(got, string(r.Value))
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	if fmt.Sprint(got) != "[a0 a1 a2 b0 b1]" {
		t.Errorf("read_committed read %v, want the committed records only", got)
	}
}
