//go:build realkafka

package realkafka

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
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
	// The group offsets a transaction commits (the hub writer's stored
	// watermarks): only committed transactions' offsets take effect.
	commitOffsets := func(p *txn.Producer, off int64) error {
		return p.CommitOffsets(ctx, topic, map[string][]kafka.TxnOffsetCommit{topic: {{Partition: 0, Offset: off, Metadata: fmt.Sprint("m", off)}}})
	}
	if err := commitOffsets(old, 3); err != nil {
		t.Fatalf("commit offsets: %v", err)
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
	if err := commitOffsets(old, 100); err != nil {
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
	if offs := groupOffsets(t, ctx, cl, topic, 3); len(offs) != 1 || offs[0].CommittedOffset != 3 {
		t.Errorf("group offsets after the zombie's transaction was aborted: %+v, want offset 3 (the aborted 100 never)", offs)
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
	if err := commitOffsets(third, 5); err != nil {
		t.Fatal(err)
	}
	if err := third.Commit(ctx); err != nil {
		t.Fatal(err)
	}
	// EndTxn answers once the commit is decided; the markers reach the
	// partitions just after, and only then is the data stable.
	got := readStable(t, ctx, cl, topic, 0)
	if fmt.Sprint(got) != "[a0 a1 a2 b0 b1]" {
		t.Errorf("read_committed read %v, want the committed records only", got)
	}
	offs := groupOffsets(t, ctx, cl, topic, 5)
	t.Logf("group offsets after the third owner's commit: %+v", offs)
	if len(offs) != 1 || offs[0].CommittedOffset != 5 || offs[0].Metadata != "m5" || offs[0].Error != nil {
		t.Errorf("group offsets %+v, want offset 5 with metadata m5", offs)
	}
}

// groupOffsets reads the offset of partition 0 of topic that group topic
// committed, polling for up to 10 s until it is want: the offsets of a
// committed transaction take effect once its marker is written.
func groupOffsets(t *testing.T, ctx context.Context, cl *kafka.Client, topic string, want int64) []kafka.OffsetFetchPartition {
	t.Helper()
	for deadline := time.Now().Add(10 * time.Second); ; time.Sleep(50 * time.Millisecond) {
		res, err := cl.OffsetFetch(ctx, &kafka.OffsetFetchRequest{GroupID: topic, Topics: map[string][]int{topic: {0}}})
		if err != nil {
			t.Fatal(err)
		}
		offs := res.Topics[topic]
		if (len(offs) == 1 && offs[0].CommittedOffset == want) || time.Now().After(deadline) {
			return offs
		}
	}
}

// TestProduceBatchesOnRealBroker: batches for several partitions of two
// topics in one produce request per leader, as the hub writer sends a
// transaction's records. The broker answers each partition on its own: a
// batch over one topic's max.message.bytes is refused by name while the
// others of the request are appended, and the aborted transaction leaves
// only the committed one readable.
func TestProduceBatchesOnRealBroker(t *testing.T) {
	ctx := testCtx(t, 2*time.Minute)
	cl := newClient(t, shared.Addr(), nil)
	topic := fmt.Sprintf("txn-batches-%d", time.Now().UnixNano())
	small := topic + "-small"
	createTopic(t, ctx, cl, topic, 3)
	createTopic(t, ctx, cl, small, 1, kafka.ConfigEntry{ConfigName: "max.message.bytes", ConfigValue: "2048"})
	p, err := txn.New(txn.Config{Client: cl, TransactionalID: topic, Compression: kafka.Lz4, RetryFor: 20 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	if err := p.Claim(ctx); err != nil {
		t.Fatalf("claim: %v", err)
	}
	batches := func(prefix string) []txn.Batch {
		var bs []txn.Batch
		for part := int32(0); part < 3; part++ {
			bs = append(bs, txn.Batch{Topic: topic, Partition: part, Records: txnRecords(fmt.Sprintf("%s%d-", prefix, part), 2)})
		}
		return append(bs, txn.Batch{Topic: small, Partition: 0, Records: txnRecords(prefix+"s-", 1)})
	}
	for _, prefix := range []string{"a", "b"} {
		if err := p.Add(ctx, topic, 0, 1, 2); err != nil {
			t.Fatal(err)
		}
		if err := p.Add(ctx, small, 0); err != nil {
			t.Fatal(err)
		}
		base, err := p.ProduceBatches(ctx, batches(prefix))
		if err != nil {
			t.Fatalf("produce %s: %v", prefix, err)
		}
		t.Logf("transaction %s: base offsets %v", prefix, base)
		if err := p.Commit(ctx); err != nil {
			t.Fatal(err)
		}
	}
	// A third transaction whose batch for the small topic is over its limit.
	if err := p.Add(ctx, topic, 0, 1, 2); err != nil {
		t.Fatal(err)
	}
	if err := p.Add(ctx, small, 0); err != nil {
		t.Fatal(err)
	}
	bs := batches("c")
	big := make([]byte, 8192)
	rng := rand.New(rand.NewPCG(1, 2))
	for i := range big {
		big[i] = byte(rng.Uint32()) // incompressible
	}
	bs[3].Records = []txn.Record{{Timestamp: time.Now().UnixMilli(), Value: big}}
	_, err = p.ProduceBatches(ctx, bs)
	t.Logf("batch over max.message.bytes among three that fit: %v", err)
	var be *txn.BatchError
	if !errors.As(err, &be) || be.Index != 3 || !errors.Is(err, txn.ErrRefused) || !errors.Is(err, kafka.MessageSizeTooLarge) {
		t.Fatalf("error %v, want batch 3 refused with MESSAGE_TOO_LARGE", err)
	}
	if err := p.Claim(ctx); err != nil { // aborts the third transaction
		t.Fatal(err)
	}
	for part := int32(0); part < 3; part++ {
		want := fmt.Sprintf("[a%d-0 a%d-1 b%d-0 b%d-1]", part, part, part, part)
		if got := fmt.Sprint(readStable(t, ctx, cl, topic, part)); got != want {
			t.Errorf("partition %d: read_committed read %s, want %s", part, got, want)
		}
	}
	if got := fmt.Sprint(readStable(t, ctx, cl, small, 0)); got != "[as-0 bs-0]" {
		t.Errorf("%s: read_committed read %s, want [as-0 bs-0]", small, got)
	}
}

// readStable waits (bounded) until a partition's last stable offset reaches
// its high watermark and returns the values a read_committed reader sees.
func readStable(t *testing.T, ctx context.Context, cl *kafka.Client, topic string, part int32) []string {
	t.Helper()
	var end int64
	deadline := time.Now().Add(30 * time.Second)
	for {
		l, err1 := cl.ListOffsets(ctx, &kafka.ListOffsetsRequest{Topics: map[string][]kafka.OffsetRequest{topic: {kafka.LastOffsetOf(int(part))}},
			IsolationLevel: kafka.ReadCommitted})
		h, err2 := cl.ListOffsets(ctx, &kafka.ListOffsetsRequest{Topics: map[string][]kafka.OffsetRequest{topic: {kafka.LastOffsetOf(int(part))}}})
		if err1 == nil && err2 == nil && l.Topics[topic][0].LastOffset == h.Topics[topic][0].LastOffset {
			end = h.Topics[topic][0].LastOffset
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s/%d: last stable offset never reached the high watermark: %v %v", topic, part, err1, err2)
		}
		time.Sleep(20 * time.Millisecond) // polling interval of a bounded wait
	}
	var got []string
	err := committed.Read(ctx, cl, topic, part, 0, end, committed.Options{}, func(r *committed.Record) error {
		got = append(got, string(r.Value))
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	return got
}
