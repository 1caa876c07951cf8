package committed

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/segmentio/kafka-go"
	"github.com/twmb/franz-go/pkg/kgo"
	"go.uber.org/goleak"

	"github.com/edgemirror/edgemirror/internal/testkit"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m, testkit.LeakOptions()...) }

// TestReadFromEveryOffset: one producer writes an aborted transaction, a
// committed one, another aborted one and a committed one; a read starting
// at every offset (records and markers alike) returns exactly the committed
// records at or after it. A read that starts at an ABORT marker gets that
// transaction in the broker's aborted list and must not drop the next,
// committed, transaction of the same producer.
func TestReadFromEveryOffset(t *testing.T) {
	c := testkit.Cluster(t)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	tr := &kafka.Transport{}
	defer tr.CloseIdleConnections()
	cl := &kafka.Client{Addr: kafka.TCP(c.ListenAddrs()...), Transport: tr, Timeout: 10 * time.Second}
	if _, err := cl.CreateTopics(ctx, &kafka.CreateTopicsRequest{Topics: []kafka.TopicConfig{{Topic: "t", NumPartitions: 1, ReplicationFactor: 1}}}); err != nil {
		t.Fatal(err)
	}
	kp, err := kgo.NewClient(kgo.SeedBrokers(c.ListenAddrs()...), kgo.DefaultProduceTopic("t"), kgo.TransactionalID("tx"))
	if err != nil {
		t.Fatal(err)
	}
	defer kp.Close()
	var want []string
	for i, commit := range []bool{false, true, false, true} {
		if err := kp.BeginTransaction(); err != nil {
			t.Fatal(err)
		}
		var recs []*kgo.Record
		for j := 0; j < 3; j++ {
			recs = append(recs, &kgo.Record{Value: []byte(fmt.Sprintf("%d-%d", i, j))})
		}
		if err := kp.ProduceSync(ctx, recs...).FirstErr(); err != nil {
			t.Fatal(err)
		}
		if err := kp.EndTransaction(ctx, kgo.TransactionEndTry(commit)); err != nil {
			t.Fatal(err)
		}
		if commit {
			for _, r := range recs {
				want = append(want, fmt.Sprintf("%d:%s", r.Offset, r.Value))
			}
		}
	}
	for start := int64(0); start < 16; start++ {
		var got []string
		if err := Read(ctx, cl, "t", 0, start, 1<<62, Options{}, func(r *Record) error {
			got = append(got, fmt.Sprintf("%d:%s", r.Offset, r.Value))
			return nil
		}); err != nil {
			t.Fatal(err)
		}
		var exp []string
		for _, w := range want {
			var off int64
			fmt.Sscanf(w, "%d:", &off)
			if off >= start {
				exp = append(exp, w)
			}
		}
		if fmt.Sprint(got) != fmt.Sprint(exp) {
			t.Errorf("read from %d: got %v, want %v", start, got, exp)
		}
	}
}
