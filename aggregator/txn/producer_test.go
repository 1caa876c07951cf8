package txn

import (
	"context"
	"errors"
	"fmt"
	"maps"
	"sync"
	"testing"
	"time"

	"github.com/segmentio/kafka-go"
	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kfake"
	"github.com/twmb/franz-go/pkg/kgo"
	"github.com/twmb/franz-go/pkg/kmsg"
	"go.uber.org/goleak"

	"github.com/edgemirror/edgemirror/internal/testkit"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m, testkit.LeakOptions()...) }

type fixture struct {
	t       *testing.T
	cluster *kfake.Cluster
	tr      *kafka.Transport
	client  *kafka.Client
}

func newFixture(t *testing.T, brokers int, partitions int32) *fixture {
	t.Helper()
	c, err := kfake.NewCluster(kfake.NumBrokers(brokers))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(c.Close)
	tr := &kafka.Transport{ClientID: "txn-test", MetadataTTL: 200 * time.Millisecond}
	t.Cleanup(tr.CloseIdleConnections)
	f := &fixture{t: t, cluster: c, tr: tr,
		client: &kafka.Client{Addr: kafka.TCP(c.ListenAddrs()...), Transport: tr, Timeout: 5 * time.Second}}
	adm := f.kgo()
	if _, err := kadm.NewClient(adm).CreateTopic(context.Background(), partitions, 1, nil, "t"); err != nil {
		t.Fatal(err)
	}
	return f
}

func (f *fixture) kgo(opts ...kgo.Opt) *kgo.Client {
	f.t.Helper()
	cl, err := kgo.NewClient(append([]kgo.Opt{kgo.SeedBrokers(f.cluster.ListenAddrs()...)}, opts...)...)
	if err != nil {
		f.t.Fatal(err)
	}
	f.t.Cleanup(cl.Close)
	return cl
}

func (f *fixture) producer(id string) *Producer {
	f.t.Helper()
	p, err := New(Config{Client: f.client, TransactionalID: id, Compression: kafka.Lz4, RetryFor: 3 * time.Second})
	if err != nil {
		f.t.Fatal(err)
	}
	return p
}

// committed reads partition p of topic t with franz-go as a read_committed
// consumer and returns the values, up to the last stable offset.
func (f *fixture) committed(p int32) []string {
	f.t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	adm := kadm.NewClient(f.kgo())
	lso, err := adm.ListCommittedOffsets(ctx, "t")
	if err != nil {
		f.t.Fatal(err)
	}
	end, _ := lso.Lookup("t", p)
	hw, err := adm.ListEndOffsets(ctx, "t")
	if err != nil {
		f.t.Fatal(err)
	}
	high, _ := hw.Lookup("t", p)
	if end.Offset != high.Offset {
		f.t.Fatalf("partition %d: last stable offset %d below high watermark %d: a transaction is still open", p, end.Offset, high.Offset)
	}
	cl := f.kgo(kgo.ConsumePartitions(map[string]map[int32]kgo.Offset{"t": {p: kgo.NewOffset().AtStart()}}),
		kgo.KeepControlRecords())
	var recs []*kgo.Record
	for len(recs) == 0 || recs[len(recs)-1].Offset < end.Offset-1 {
		if end.Offset == 0 {
			break
		}
		fs := cl.PollFetches(ctx)
		if ctx.Err() != nil {
			f.t.Fatalf("read t/%d: %v", p, ctx.Err())
		}
		fs.EachRecord(func(r *kgo.Record) { recs = append(recs, r) })
	}
	var out []string
	for _, r := range testkit.Committed(recs) {
		out = append(out, string(r.Value))
	}
	return out
}

func records(prefix string, n int) []Record {
	out := make([]Record, n)
	for i := range out {
		out[i] = Record{Timestamp: time.Now().UnixMilli(), Key: []byte(fmt.Sprint(i)), Value: []byte(fmt.Sprintf("%s%d", prefix, i))}
	}
	return out
}

func must(t *testing.T, err error) {
	t.Helper()
	if err != nil {
		t.Fatal(err)
	}
}

func TestCommitMakesRecordsVisible(t *testing.T) {
	f := newFixture(t, 1, 2)
	ctx := context.Background()
	p := f.producer("edge-a")
	must(t, p.Claim(ctx))
	must(t, p.Add(ctx, "t", 0, 1))
	if _, err := p.Produce(ctx, "t", 0, records("a", 3)); err != nil {
		t.Fatal(err)
	}
	base, err := p.Produce(ctx, "t", 0, records("b", 2))
	if err != nil {
		t.Fatal(err)
	}
	if base != 3 {
		t.Errorf("second batch at offset %d, want 3", base)
	}
	if _, err := p.Produce(ctx, "t", 1, records("c", 1)); err != nil {
		t.Fatal(err)
	}
	must(t, p.Commit(ctx))
	// Sequences continue into the next transaction of the same epoch.
	must(t, p.Add(ctx, "t", 0))
	if _, err := p.Produce(ctx, "t", 0, records("d", 1)); err != nil {
		t.Fatal(err)
	}
	must(t, p.Commit(ctx))
	if got := fmt.Sprint(f.committed(0)); got != "[a0 a1 a2 b0 b1 d0]" {
		t.Errorf("partition 0 committed %s", got)
	}
	if got := fmt.Sprint(f.committed(1)); got != "[c0]" {
		t.Errorf("partition 1 committed %s", got)
	}
}

// TestClaimFencesEarlierOwner: a second producer claiming the same
// transactional id aborts the first one's open transaction; the first
// one's produce, add and commit are refused as Fenced, and nothing it wrote
// becomes visible.
func TestClaimFencesEarlierOwner(t *testing.T) {
	f := newFixture(t, 1, 1)
	ctx := context.Background()
	old, cur := f.producer("edge-a"), f.producer("edge-a")
	must(t, old.Claim(ctx))
	must(t, old.Add(ctx, "t", 0))
	if _, err := old.Produce(ctx, "t", 0, records("zombie", 3)); err != nil {
		t.Fatal(err)
	}
	must(t, cur.Claim(ctx)) // fences old, aborts its transaction
	_, oldEpoch, _ := old.Session()
	_, curEpoch, _ := cur.Session()
	if curEpoch <= oldEpoch {
		t.Errorf("new claim has epoch %d, old %d: want a higher epoch", curEpoch, oldEpoch)
	}
	err := old.Commit(ctx)
	if !errors.Is(err, ErrFenced) {
		t.Fatalf("commit of the fenced producer: %v, want fenced", err)
	}
	must(t, cur.Add(ctx, "t", 0))
	if _, err := cur.Produce(ctx, "t", 0, records("live", 2)); err != nil {
		t.Fatal(err)
	}
	must(t, cur.Commit(ctx))
	// The zombie claims nothing back by itself: every call needs a claim.
	if _, err := old.Produce(ctx, "t", 0, records("late", 1)); err == nil {
		t.Fatal("produce after being fenced succeeded")
	}
	if got := fmt.Sprint(f.committed(0)); got != "[live0 live1]" {
		t.Errorf("committed %s, want only the live owner's records", got)
	}
}

// TestFencedProduceRefused: the old owner had not produced yet when it was
// fenced; its produce (with its old epoch) is refused.
func TestFencedProduceRefused(t *testing.T) {
	f := newFixture(t, 1, 1)
	ctx := context.Background()
	old, cur := f.producer("edge-a"), f.producer("edge-a")
	must(t, old.Claim(ctx))
	must(t, old.Add(ctx, "t", 0))
	must(t, cur.Claim(ctx))
	must(t, cur.Add(ctx, "t", 0))
	if _, err := cur.Produce(ctx, "t", 0, records("live", 1)); err != nil {
		t.Fatal(err)
	}
	must(t, cur.Commit(ctx))
	// Kafka answers INVALID_PRODUCER_EPOCH (or, verifying with the
	// coordinator, INVALID_TXN_STATE); either way nothing is appended.
	_, err := old.Produce(ctx, "t", 0, records("zombie", 1))
	var te *Error
	if !errors.As(err, &te) || !(errors.Is(err, kafka.InvalidProducerEpoch) || errors.Is(err, kafka.InvalidTransactionState) ||
		errors.Is(err, kafka.ProducerFenced)) {
		t.Fatalf("produce of the fenced producer: %v, want it refused for its old epoch", err)
	}
	if got := fmt.Sprint(f.committed(0)); got != "[live0]" {
		t.Errorf("committed %s", got)
	}
}

// TestAbortedTransactionInvisible: after an error the transaction is given
// up with Abort (a new claim); what it wrote is never visible, and the next
// transaction starts again at sequence 0 of a new epoch.
func TestAbortedTransactionInvisible(t *testing.T) {
	f := newFixture(t, 1, 1)
	ctx := context.Background()
	p := f.producer("edge-a")
	must(t, p.Claim(ctx))
	must(t, p.Add(ctx, "t", 0))
	if _, err := p.Produce(ctx, "t", 0, records("gone", 4)); err != nil {
		t.Fatal(err)
	}
	must(t, p.Abort(ctx))
	must(t, p.Add(ctx, "t", 0))
	if _, err := p.Produce(ctx, "t", 0, records("kept", 2)); err != nil {
		t.Fatal(err)
	}
	must(t, p.Commit(ctx))
	if got := fmt.Sprint(f.committed(0)); got != "[kept0 kept1]" {
		t.Errorf("committed %s", got)
	}
}

// TestProduceTimedOutAfterAppendIsWrittenOnce: the broker appends a batch
// but answers REQUEST_TIMED_OUT (a slow follower); the producer sends the
// identical batch again and the broker recognises its sequence, so the
// records are in the log once.
func TestProduceTimedOutAfterAppendIsWrittenOnce(t *testing.T) {
	f := newFixture(t, 1, 1)
	ctx := context.Background()
	p := f.producer("edge-a")
	must(t, p.Claim(ctx))
	must(t, p.Add(ctx, "t", 0))
	h := f.cluster.Fault(kfake.Fault{Keys: []kmsg.Key{kmsg.Produce}, Topic: "t", Err: kerr.RequestTimedOut, Count: 2})
	defer h.Remove()
	if _, err := p.Produce(ctx, "t", 0, records("once", 3)); err != nil {
		t.Fatal(err)
	}
	if h.Hits() != 2 {
		t.Fatalf("fault hit %d times, want 2", h.Hits())
	}
	must(t, p.Commit(ctx))
	if got := fmt.Sprint(f.committed(0)); got != "[once0 once1 once2]" {
		t.Errorf("committed %s, want each record once", got)
	}
}

// TestLeaderMovesDuringProduce: the partition moves to another broker
// while a produce is answered as timed out after it was appended; the
// retry goes to the new leader, which knows the sequence.
func TestLeaderMovesDuringProduce(t *testing.T) {
	f := newFixture(t, 3, 1)
	ctx := context.Background()
	p := f.producer("edge-a")
	must(t, p.Claim(ctx))
	must(t, p.Add(ctx, "t", 0))
	if _, err := p.Produce(ctx, "t", 0, records("a", 2)); err != nil {
		t.Fatal(err)
	}
	leader := f.cluster.LeaderFor("t", 0)
	h := f.cluster.Fault(kfake.Fault{Keys: []kmsg.Key{kmsg.Produce}, Topic: "t", Err: kerr.RequestTimedOut,
		When: func(kmsg.Request) bool { return true }})
	defer h.Remove()
	done := make(chan error, 1)
	go func() {
		_, err := p.Produce(ctx, "t", 0, records("b", 2))
		done <- err
	}()
	if err := h.Wait(ctx, 1); err != nil {
		t.Fatal(err)
	}
	h.Remove()
	must(t, f.cluster.MoveTopicPartition("t", 0, (leader+1)%3))
	select {
	case err := <-done:
		must(t, err)
	case <-time.After(10 * time.Second):
		t.Fatal("produce did not finish after the leader moved")
	}
	must(t, p.Commit(ctx))
	if got := fmt.Sprint(f.committed(0)); got != "[a0 a1 b0 b1]" {
		t.Errorf("committed %s", got)
	}
}

// TestRefusedRecord: a batch larger than the topic allows is Refused, not
// retried.
func TestRefusedRecord(t *testing.T) {
	f := newFixture(t, 1, 1)
	ctx := context.Background()
	h := f.cluster.Fault(kfake.Fault{Keys: []kmsg.Key{kmsg.Produce}, Topic: "t", Err: kerr.MessageTooLarge})
	defer h.Remove()
	p := f.producer("edge-a")
	must(t, p.Claim(ctx))
	must(t, p.Add(ctx, "t", 0))
	_, err := p.Produce(ctx, "t", 0, records("big", 1))
	if !errors.Is(err, ErrRefused) || !errors.Is(err, kafka.MessageSizeTooLarge) {
		t.Fatalf("produce: %v, want refused with MESSAGE_TOO_LARGE", err)
	}
	if h.Hits() != 1 {
		t.Errorf("refused produce sent %d times, want once", h.Hits())
	}
	if _, err := p.Produce(ctx, "t", 0, records("x", 1)); err == nil {
		t.Error("produce after an error without a new claim succeeded")
	}
}

func TestProduceUnaddedPartition(t *testing.T) {
	f := newFixture(t, 1, 2)
	ctx := context.Background()
	p := f.producer("edge-a")
	if _, err := p.Produce(ctx, "t", 0, records("x", 1)); err == nil {
		t.Fatal("produce before claim succeeded")
	}
	must(t, p.Claim(ctx))
	must(t, p.Add(ctx, "t", 0))
	if _, err := p.Produce(ctx, "t", 1, records("x", 1)); err == nil {
		t.Fatal("produce to a partition not in the transaction succeeded")
	}
	_, err := p.ProduceBatches(ctx, []Batch{{Topic: "t", Partition: 0, Records: records("x", 1)}, {Topic: "t", Partition: 1, Records: records("y", 1)}})
	var be *BatchError
	if !errors.As(err, &be) || be.Index != 1 {
		t.Fatalf("batches to an added and an unadded partition: %v, want a *BatchError naming batch 1", err)
	}
	must(t, p.Add(ctx, "t", 1))
	_, err = p.ProduceBatches(ctx, []Batch{{Topic: "t", Partition: 1, Records: records("x", 1)}, {Topic: "t", Partition: 1, Records: records("y", 1)}})
	if !errors.As(err, &be) || be.Index != 1 {
		t.Fatalf("two batches for one partition: %v, want a *BatchError naming batch 1", err)
	}
}

// TestClaimRetriesConcurrentTransactions: the coordinator answers
// CONCURRENT_TRANSACTIONS while a fenced transaction is being aborted;
// Claim retries until it is done.
func TestClaimRetriesConcurrentTransactions(t *testing.T) {
	f := newFixture(t, 1, 1)
	h := f.cluster.Fault(kfake.Fault{Keys: []kmsg.Key{kmsg.InitProducerID}, Err: kerr.ConcurrentTransactions, Count: 3, TopLevel: true})
	defer h.Remove()
	p := f.producer("edge-a")
	must(t, p.Claim(context.Background()))
	if h.Hits() != 3 {
		t.Errorf("claim saw %d CONCURRENT_TRANSACTIONS, want 3", h.Hits())
	}
}

// TestErrorCodes: every answer the notes name, on the call that gets it,
// is classified as the writer needs it: retried in place, fenced, refused,
// or giving up the transaction (unavailable).
func TestErrorCodes(t *testing.T) {
	for _, tc := range []struct {
		key     kmsg.Key
		code    *kerr.Error
		kind    Kind
		retried bool // the identical request is sent again and then succeeds
	}{
		{kmsg.Produce, kerr.NotLeaderForPartition, Unavailable, true},
		{kmsg.Produce, kerr.RequestTimedOut, Unavailable, true},
		{kmsg.Produce, kerr.NotEnoughReplicas, Unavailable, true},
		{kmsg.Produce, kerr.InvalidProducerEpoch, Fenced, false},
		{kmsg.Produce, kerr.InvalidProducerIDMapping, Fenced, false},
		{kmsg.Produce, kerr.InvalidTxnState, Unavailable, false},
		{kmsg.Produce, kerr.OutOfOrderSequenceNumber, Unavailable, false},
		{kmsg.Produce, kerr.MessageTooLarge, Refused, false},
		{kmsg.Produce, kerr.InvalidTimestamp, Refused, false},
		{kmsg.Produce, kerr.CorruptMessage, Refused, false},
		{kmsg.AddPartitionsToTxn, kerr.ConcurrentTransactions, Unavailable, true},
		{kmsg.AddPartitionsToTxn, kerr.ProducerFenced, Fenced, false},
		{kmsg.AddPartitionsToTxn, kerr.InvalidProducerEpoch, Fenced, false},
		{kmsg.EndTxn, kerr.ConcurrentTransactions, Unavailable, true},
		{kmsg.EndTxn, kerr.ProducerFenced, Fenced, false},
		{kmsg.EndTxn, kerr.InvalidTxnState, Unavailable, false},
	} {
		t.Run(fmt.Sprintf("%s/%s", tc.key.Name(), tc.code.Message), func(t *testing.T) {
			f := newFixture(t, 1, 1)
			ctx := context.Background()
			p := f.producer("edge-a")
			must(t, p.Claim(ctx))
			fault := kfake.Fault{Keys: []kmsg.Key{tc.key}, Err: tc.code}
			if tc.key == kmsg.EndTxn {
				fault.TopLevel = true
			}
			if tc.key == kmsg.Produce && tc.code == kerr.RequestTimedOut {
				fault.Count = 1
			}
			var h *kfake.FaultHandle
			if tc.key == kmsg.AddPartitionsToTxn {
				h = f.cluster.Fault(fault)
			}
			err := p.Add(ctx, "t", 0)
			if err == nil && tc.key == kmsg.Produce {
				h = f.cluster.Fault(fault)
				_, err = p.Produce(ctx, "t", 0, records("x", 2))
			}
			if err == nil && tc.key == kmsg.EndTxn {
				if _, err = p.Produce(ctx, "t", 0, records("x", 2)); err != nil {
					t.Fatal(err)
				}
				h = f.cluster.Fault(fault)
				err = p.Commit(ctx)
			}
			defer h.Remove()
			if tc.retried {
				if err != nil {
					t.Fatalf("error %v, want it retried to success", err)
				}
				if h.Hits() != 1 {
					t.Errorf("fault hit %d times, want once then a successful retry", h.Hits())
				}
				return
			}
			var te *Error
			if !errors.As(err, &te) || te.Kind != tc.kind {
				t.Fatalf("error %v, want kind %s", err, tc.kind)
			}
			if !errors.Is(err, tc.code) && !errors.Is(err, kafka.Error(tc.code.Code)) {
				t.Errorf("error %v does not wrap the broker's answer %v", err, tc.code)
			}
			if tc.kind != Unavailable && h.Hits() != 1 {
				t.Errorf("a %s answer was sent %d times, want once", tc.kind, h.Hits())
			}
			if _, _, claimed := p.Session(); claimed {
				t.Error("producer still claims the id after an error: its next use must claim again")
			}
		})
	}
}

// produceLog observes produce requests: how many reached each broker, and
// how often each partition was in one.
type produceLog struct {
	mu      sync.Mutex
	perNode map[int32]int
	perPart map[int32]int
	seen    map[kmsg.Request]bool // When runs once per partition of a request
}

func (f *fixture) observeProduce(brokers int) (*produceLog, func()) {
	l := &produceLog{perNode: make(map[int32]int), perPart: make(map[int32]int), seen: make(map[kmsg.Request]bool)}
	var hs []*kfake.FaultHandle
	for n := int32(0); n < int32(brokers); n++ {
		hs = append(hs, f.cluster.Fault(kfake.Fault{Keys: []kmsg.Key{kmsg.Produce}, Nodes: []int32{n}, Observe: true, Count: -1,
			When: func(r kmsg.Request) bool {
				l.mu.Lock()
				defer l.mu.Unlock()
				if l.seen[r] {
					return true
				}
				l.seen[r] = true
				l.perNode[n]++
				for _, t := range r.(*kmsg.ProduceRequest).Topics {
					for _, p := range t.Partitions {
						l.perPart[p.Partition]++
					}
				}
				return true
			}}))
	}
	return l, func() {
		for _, h := range hs {
			h.Remove()
		}
	}
}

func (l *produceLog) counts() (perNode, perPart map[int32]int) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return maps.Clone(l.perNode), maps.Clone(l.perPart)
}

func batchesFor(prefix string, parts ...int32) []Batch {
	var bs []Batch
	for _, p := range parts {
		bs = append(bs, Batch{Topic: "t", Partition: p, Records: records(fmt.Sprintf("%s%d-", prefix, p), 2)})
	}
	return bs
}

// claimed returns a producer that has claimed id and added parts of "t".
func (f *fixture) claimed(id string, parts ...int32) *Producer {
	f.t.Helper()
	p := f.producer(id)
	must(f.t, p.Claim(context.Background()))
	must(f.t, p.Add(context.Background(), "t", parts...))
	return p
}

// wantCommitted checks that each partition of "t" holds what batchesFor
// wrote for it under each prefix, in order, once.
func (f *fixture) wantCommitted(parts []int32, prefixes ...string) {
	f.t.Helper()
	for _, part := range parts {
		var want []string
		for _, prefix := range prefixes {
			want = append(want, fmt.Sprintf("%s%d-0", prefix, part), fmt.Sprintf("%s%d-1", prefix, part))
		}
		if got, w := fmt.Sprint(f.committed(part)), fmt.Sprint(want); got != w {
			f.t.Errorf("partition %d committed %s, want %s", part, got, w)
		}
	}
}

// TestProduceBatchesOneRequestPerLeader: batches for six partitions spread
// over three brokers go in one produce request per leader, and the next
// transaction's batches continue each partition's sequence.
func TestProduceBatchesOneRequestPerLeader(t *testing.T) {
	f := newFixture(t, 3, 6)
	ctx := context.Background()
	parts := []int32{0, 1, 2, 3, 4, 5}
	leaders := make(map[int32]bool)
	for _, p := range parts {
		leaders[f.cluster.LeaderFor("t", p)] = true
	}
	if len(leaders) < 2 {
		t.Fatalf("the six partitions have %d leader(s); the test needs them spread", len(leaders))
	}
	p := f.producer("edge-a")
	must(t, p.Claim(ctx))
	log, stop := f.observeProduce(3)
	defer stop()
	for round, prefix := range []string{"a", "b"} {
		must(t, p.Add(ctx, "t", parts...))
		base, err := p.ProduceBatches(ctx, batchesFor(prefix, parts...))
		must(t, err)
		for i, b := range base {
			if b != int64(round)*3 { // two records and the previous commit's marker
				t.Errorf("round %d: batch %d written at offset %d, want %d", round, i, b, round*3)
			}
		}
		must(t, p.Commit(ctx))
	}
	perNode, perPart := log.counts()
	for n := range leaders {
		if perNode[n] != 2 {
			t.Errorf("broker %d got %d produce requests for two rounds, want 2 (one per round)", n, perNode[n])
		}
	}
	for _, part := range parts {
		if perPart[part] != 2 {
			t.Errorf("partition %d was in %d produce requests, want 2", part, perPart[part])
		}
	}
	f.wantCommitted(parts, "a", "b")
}

// TestProduceBatchesRetriesOnlyUnanswered: one partition of a request
// answers a retriable error; only its batch is sent again, and every
// batch is in the log once.
func TestProduceBatchesRetriesOnlyUnanswered(t *testing.T) {
	f := newFixture(t, 1, 3)
	ctx := context.Background()
	p := f.claimed("edge-a", 0, 1, 2)
	h := f.cluster.Fault(kfake.Fault{Keys: []kmsg.Key{kmsg.Produce}, Topic: "t", Partitions: []int32{1}, Err: kerr.NotLeaderForPartition})
	defer h.Remove()
	log, stop := f.observeProduce(1)
	defer stop()
	_, err := p.ProduceBatches(ctx, batchesFor("a", 0, 1, 2))
	must(t, err)
	must(t, p.Commit(ctx))
	if h.Hits() != 1 {
		t.Fatalf("fault hit %d times, want once", h.Hits())
	}
	_, perPart := log.counts()
	if perPart[0] != 1 || perPart[1] != 2 || perPart[2] != 1 {
		t.Errorf("partitions sent %v times, want 0 and 2 once, 1 twice", perPart)
	}
	f.wantCommitted([]int32{0, 1, 2}, "a")
}

// TestProduceBatchesNamesRefusedBatch: the error names the refused batch,
// even when another partition of the same request answered a retriable
// error, and the producer must claim again.
func TestProduceBatchesNamesRefusedBatch(t *testing.T) {
	f := newFixture(t, 1, 3)
	ctx := context.Background()
	p := f.claimed("edge-a", 0, 1, 2)
	h := f.cluster.Fault(
		kfake.Fault{Keys: []kmsg.Key{kmsg.Produce}, Topic: "t", Partitions: []int32{1}, Err: kerr.RequestTimedOut, Count: -1},
		kfake.Fault{Keys: []kmsg.Key{kmsg.Produce}, Topic: "t", Partitions: []int32{2}, Err: kerr.MessageTooLarge, Count: -1})
	defer h.Remove()
	_, err := p.ProduceBatches(ctx, batchesFor("a", 0, 1, 2))
	var be *BatchError
	if !errors.As(err, &be) {
		t.Fatalf("error %v (%T), want a *BatchError", err, err)
	}
	if be.Index != 2 || be.Err.Partition != 2 || be.Err.Kind != Refused || !errors.Is(err, kafka.MessageSizeTooLarge) {
		t.Errorf("error names batch %d (partition %d, %s): %v; want batch 2 refused with MESSAGE_TOO_LARGE",
			be.Index, be.Err.Partition, be.Err.Kind, err)
	}
	if !errors.Is(err, ErrRefused) {
		t.Error("errors.Is(err, ErrRefused) is false")
	}
	if _, _, claimed := p.Session(); claimed {
		t.Error("producer still claims the id after a failed produce")
	}
}

// TestProduceBatchesLeaderMoves: a partition moves to another broker after
// the client learned its leader; the batch is sent again to the new leader
// and written once, the others of its request once too.
func TestProduceBatchesLeaderMoves(t *testing.T) {
	f := newFixture(t, 3, 3)
	ctx := context.Background()
	p := f.claimed("edge-a", 0, 1, 2)
	_, err := p.ProduceBatches(ctx, batchesFor("a", 0, 1, 2))
	must(t, err)
	old := f.cluster.LeaderFor("t", 0)
	must(t, f.cluster.MoveTopicPartition("t", 0, (old+1)%3))
	_, err = p.ProduceBatches(ctx, batchesFor("b", 0, 1, 2))
	must(t, err)
	must(t, p.Commit(ctx))
	f.wantCommitted([]int32{0, 1, 2}, "a", "b")
}

// findCoordinators observes the FindCoordinator requests that match
// fault (its Keys and Observe are set here).
func (f *fixture) findCoordinators(match kfake.Fault) (count func() int, stop func()) {
	var (
		mu   sync.Mutex
		seen = make(map[kmsg.Request]bool)
	)
	match.Keys, match.Observe, match.Count = []kmsg.Key{kmsg.FindCoordinator}, true, -1
	match.When = func(r kmsg.Request) bool {
		mu.Lock()
		defer mu.Unlock()
		seen[r] = true
		return true
	}
	h := f.cluster.Fault(match)
	return func() int {
		mu.Lock()
		defer mu.Unlock()
		return len(seen)
	}, h.Remove
}

// TestCoordinatorLookedUpOnce: AddPartitionsToTxn and EndTxn go straight to
// the coordinator found once, over several transactions; after the
// coordinator answers NOT_COORDINATOR it is looked up again and the call
// succeeds.
func TestCoordinatorLookedUpOnce(t *testing.T) {
	for _, tc := range []struct {
		name  string
		fault kfake.Fault
	}{
		{"EndTxn", kfake.Fault{Keys: []kmsg.Key{kmsg.EndTxn}, Err: kerr.NotCoordinator, TopLevel: true}},
		{"AddPartitionsToTxn", kfake.Fault{Keys: []kmsg.Key{kmsg.AddPartitionsToTxn}, Err: kerr.NotCoordinator}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			f := newFixture(t, 3, 2)
			ctx := context.Background()
			p := f.producer("edge-a")
			must(t, p.Claim(ctx))
			count, stop := f.findCoordinators(kfake.Fault{TxnID: "edge-a"})
			defer stop()
			txn := func(prefix string) {
				t.Helper()
				must(t, p.Add(ctx, "t", 0, 1))
				_, err := p.ProduceBatches(ctx, batchesFor(prefix, 0, 1))
				must(t, err)
				must(t, p.Commit(ctx))
			}
			for _, prefix := range []string{"a", "b", "c"} {
				txn(prefix)
			}
			if n := count(); n != 1 {
				t.Errorf("three transactions sent %d FindCoordinator, want 1", n)
			}
			h := f.cluster.Fault(tc.fault)
			defer h.Remove()
			txn("d")
			if h.Hits() != 1 {
				t.Fatalf("NOT_COORDINATOR fault hit %d times, want 1", h.Hits())
			}
			if n := count(); n != 2 {
				t.Errorf("after NOT_COORDINATOR: %d FindCoordinator in all, want 2", n)
			}
			f.wantCommitted([]int32{0, 1}, "a", "b", "c", "d")
		})
	}
}

// TestCommitOffsetsCoordinatorsLookedUpOnce: AddOffsetsToTxn goes straight
// to the transaction coordinator and TxnOffsetCommit to the group
// coordinator, each found once over several transactions; after either
// answers NOT_COORDINATOR its coordinator is looked up again, and the
// group's offsets are those the last transaction committed.
func TestCommitOffsetsCoordinatorsLookedUpOnce(t *testing.T) {
	for _, tc := range []struct {
		name      string
		fault     kfake.Fault
		txn, cons int // FindCoordinator requests after the fault
	}{
		{"AddOffsetsToTxn", kfake.Fault{Keys: []kmsg.Key{kmsg.AddOffsetsToTxn}, Err: kerr.NotCoordinator}, 2, 1},
		{"TxnOffsetCommit", kfake.Fault{Keys: []kmsg.Key{kmsg.TxnOffsetCommit}, Err: kerr.NotCoordinator}, 1, 2},
	} {
		t.Run(tc.name, func(t *testing.T) {
			f := newFixture(t, 3, 2)
			ctx := context.Background()
			p := f.producer("edge-a")
			must(t, p.Claim(ctx))
			txnFinds, stopTxn := f.findCoordinators(kfake.Fault{TxnID: "edge-a"})
			defer stopTxn()
			groupFinds, stopGroup := f.findCoordinators(kfake.Fault{Group: "edge-a"})
			defer stopGroup()
			txn := func(i int) {
				t.Helper()
				must(t, p.Add(ctx, "t", 0, 1))
				must(t, p.CommitOffsets(ctx, "edge-a", map[string][]kafka.TxnOffsetCommit{
					"t": {{Partition: 0, Offset: int64(10 * i), Metadata: fmt.Sprintf("m%d", i)}, {Partition: 1, Offset: int64(10*i + 1)}}}))
				_, err := p.ProduceBatches(ctx, batchesFor(fmt.Sprint(i), 0, 1))
				must(t, err)
				must(t, p.Commit(ctx))
			}
			for i := 1; i <= 3; i++ {
				txn(i)
			}
			if n, m := txnFinds(), groupFinds(); n != 1 || m != 1 {
				t.Errorf("three transactions looked up the transaction coordinator %d times and the group's %d times, want 1 and 1", n, m)
			}
			h := f.cluster.Fault(tc.fault)
			defer h.Remove()
			txn(4)
			if h.Hits() != 1 {
				t.Fatalf("NOT_COORDINATOR fault hit %d times, want 1", h.Hits())
			}
			if n, m := txnFinds(), groupFinds(); n != tc.txn || m != tc.cons {
				t.Errorf("after NOT_COORDINATOR: transaction coordinator looked up %d times, group's %d; want %d and %d", n, m, tc.txn, tc.cons)
			}
			offs, err := kadm.NewClient(f.kgo()).FetchOffsets(ctx, "edge-a")
			must(t, err)
			for part, want := range map[int32]struct {
				at int64
				md string
			}{0: {40, "m4"}, 1: {41, ""}} {
				got, ok := offs.Lookup("t", part)
				if !ok || got.Err != nil || got.At != want.at || got.Metadata != want.md {
					t.Errorf("group offset of t/%d: %+v (found %v), want %d %q", part, got, ok, want.at, want.md)
				}
			}
			f.wantCommitted([]int32{0, 1}, "1", "2", "3", "4")
		})
	}
}
