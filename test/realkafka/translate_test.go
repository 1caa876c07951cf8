//go:build realkafka

package realkafka

import (
	"context"
	"fmt"
	"strconv"
	"testing"
	"time"

	"github.com/segmentio/kafka-go"
	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/edgemirror/edgemirror/internal/failover"
)

// TestTranslateAcrossHubTransactions checks the binary search on a real
// broker's read_committed answers: a hub partition written by a
// transactional writer that aborts every third transaction (a fenced
// aggregator), with gaps in the source offsets, translates every source
// offset to what a read_committed consumer sees first at or after it.
func TestTranslateAcrossHubTransactions(t *testing.T) {
	_, hub := kafka4(t)
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	const topic = "tr-edge.orders"
	kp, err := kgo.NewClient(kgo.SeedBrokers(hub.Brokers()...), kgo.DefaultProduceTopic(topic),
		kgo.RecordPartitioner(kgo.ManualPartitioner()), kgo.TransactionalID("translate-test"))
	if err != nil {
		t.Fatal(err)
	}
	defer kp.Close()
	if _, err := kadm.NewClient(kp).CreateTopics(ctx, 1, 1, nil, topic); err != nil {
		t.Fatal(err)
	}
	src := failover.Source{Edge: "tr-edge", Topic: "orders", Partition: 0}
	var s int64
	for i := 0; i < 24; i++ {
		if err := kp.BeginTransaction(); err != nil {
			t.Fatal(err)
		}
		var recs []*kgo.Record
		for j := 0; j < 3; j++ {
			s += int64(1 + (i+j)%3) // gaps of 0-2 offsets
			recs = append(recs, &kgo.Record{Value: []byte("v"), Headers: []kgo.RecordHeader{
				{Key: "edgemirror-edge", Value: []byte(src.Edge)}, {Key: "edgemirror-topic", Value: []byte(src.Topic)},
				{Key: "edgemirror-partition", Value: []byte("0")}, {Key: "edgemirror-offset", Value: []byte(strconv.FormatInt(s, 10))}}})
		}
		if err := kp.ProduceSync(ctx, recs...).FirstErr(); err != nil {
			t.Fatal(err)
		}
		commit := i%3 != 2
		if err := kp.EndTransaction(ctx, kgo.TransactionEndTry(commit)); err != nil {
			t.Fatal(err)
		}
		if !commit {
			s -= 6 // the next writer re-sends what was aborted, from a lower offset
		}
	}
	// The model: what a read_committed consumer sees, (hub offset, source offset).
	rd, err := kgo.NewClient(kgo.SeedBrokers(hub.Brokers()...), kgo.FetchIsolationLevel(kgo.ReadCommitted()),
		kgo.ConsumePartitions(map[string]map[int32]kgo.Offset{topic: {0: kgo.NewOffset().AtStart()}}))
	if err != nil {
		t.Fatal(err)
	}
	defer rd.Close()
	type hit struct{ hub, src int64 }
	var model []hit
	deadline := time.Now().Add(time.Minute)
	for len(model) < 16*3 && time.Now().Before(deadline) {
		fs := rd.PollFetches(ctx)
		fs.EachRecord(func(r *kgo.Record) {
			for _, h := range r.Headers {
				if h.Key == "edgemirror-offset" {
					o, _ := strconv.ParseInt(string(h.Value), 10, 64)
					model = append(model, hit{r.Offset, o})
				}
			}
		})
	}
	if len(model) != 16*3 {
		t.Fatalf("read_committed consumer sees %d records, want %d", len(model), 16*3)
	}
	tr := &kafka.Transport{}
	defer tr.CloseIdleConnections()
	cl := &kafka.Client{Addr: kafka.TCP(hub.Brokers()...), Transport: tr, Timeout: 20 * time.Second}
	last := model[len(model)-1].src
	for off := int64(0); off <= last+1; off++ {
		want, found := int64(-1), false
		for _, m := range model {
			if m.src >= off {
				want, found = m.hub, true
				break
			}
		}
		got, err := failover.Translate(ctx, cl, topic, src, off, 0)
		if err != nil {
			t.Fatal(err)
		}
		if !found {
			want = got.HubEnd
		}
		if got.HubOffset != want || got.Found != found {
			t.Fatalf("source offset %d: got hub offset %d (found %v), want %d (found %v); model %v", off, got.HubOffset, got.Found, want, found, fmt.Sprint(model))
		}
	}
	t.Logf("translated %d source offsets over %d committed hub records and 8 aborted transactions", last+2, len(model))
}
