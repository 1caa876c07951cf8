package failover

import (
	"context"
	"fmt"
	"math/rand/v2"
	"strconv"
	"testing"
	"time"

	"github.com/segmentio/kafka-go"
	"github.com/twmb/franz-go/pkg/kfake"
	"github.com/twmb/franz-go/pkg/kgo"
	"go.uber.org/goleak"

	"github.com/edgemirror/edgemirror/internal/provenance"
	"github.com/edgemirror/edgemirror/internal/testkit"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m, testkit.LeakOptions()...) }

// env is an in-process hub with a kafka-go client and a franz-go producer.
type env struct {
	t   *testing.T
	ctx context.Context
	c   *kfake.Cluster
	cl  *kafka.Client
	kp  *kgo.Client
}

func newEnv(t *testing.T) *env {
	t.Helper()
	c := testkit.Cluster(t)
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	t.Cleanup(cancel)
	tr := &kafka.Transport{MetadataTTL: time.Second}
	t.Cleanup(tr.CloseIdleConnections)
	kp, err := kgo.NewClient(kgo.SeedBrokers(c.ListenAddrs()...), kgo.DefaultProduceTopic("unused"),
		kgo.RecordPartitioner(kgo.ManualPartitioner()), kgo.TransactionalID("tx-"+strconv.Itoa(rand.Int())))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(kp.Close)
	return &env{t: t, ctx: ctx, c: c, cl: &kafka.Client{Addr: kafka.TCP(c.ListenAddrs()...), Transport: tr, Timeout: 10 * time.Second}, kp: kp}
}

func (e *env) createTopic(topic string, partitions int32) {
	e.t.Helper()
	res, err := e.cl.CreateTopics(e.ctx, &kafka.CreateTopicsRequest{Topics: []kafka.TopicConfig{{Topic: topic, NumPartitions: int(partitions), ReplicationFactor: 1}}})
	if err != nil {
		e.t.Fatal(err)
	}
	if err := res.Errors[topic]; err != nil {
		e.t.Fatal(err)
	}
}

func hubRecord(topic string, partition int32, o provenance.Origin, ts time.Time) *kgo.Record {
	r := &kgo.Record{Topic: topic, Partition: partition, Value: []byte(fmt.Sprint(o.Offset)), Timestamp: ts}
	for _, h := range provenance.Append(nil, o) {
		r.Headers = append(r.Headers, kgo.RecordHeader{Key: h.Key, Value: h.Value})
	}
	return r
}

// txn produces recs in one transaction and commits or aborts it.
func (e *env) txn(commit bool, recs ...*kgo.Record) {
	e.t.Helper()
	if err := e.kp.BeginTransaction(); err != nil {
		e.t.Fatal(err)
	}
	if err := e.kp.ProduceSync(e.ctx, recs...).FirstErr(); err != nil {
		e.t.Fatal(err)
	}
	if err := e.kp.EndTransaction(e.ctx, kgo.TransactionEndTry(commit)); err != nil {
		e.t.Fatal(err)
	}
}

// model is what a read_committed consumer sees of the hub partition:
// (hub offset, origin) in order.
type model []struct {
	hub int64
	o   provenance.Origin
}

func (e *env) read(topic string, partition int32) model {
	e.t.Helper()
	cl, err := kgo.NewClient(kgo.SeedBrokers(e.c.ListenAddrs()...), kgo.FetchIsolationLevel(kgo.ReadCommitted()),
		kgo.ConsumePartitions(map[string]map[int32]kgo.Offset{topic: {partition: kgo.NewOffset().AtStart()}}))
	if err != nil {
		e.t.Fatal(err)
	}
	defer cl.Close()
	_, end, err := bounds(e.ctx, e.cl, topic, partition)
	if err != nil {
		e.t.Fatal(err)
	}
	var m model
	for {
		if len(m) > 0 && m[len(m)-1].hub >= end-1 {
			return m
		}
		fctx, cancel := context.WithTimeout(e.ctx, 2*time.Second)
		fs := cl.PollFetches(fctx)
		cancel()
		if fctx.Err() != nil && fs.NumRecords() == 0 {
			return m // nothing more below the end (markers or aborted records)
		}
		fs.EachRecord(func(r *kgo.Record) {
			o, ok := provenance.Parse(r.Headers)
			if !ok {
				o = provenance.Origin{Edge: "?"}
			}
			m = append(m, struct {
				hub int64
				o   provenance.Origin
			}{r.Offset, o})
		})
	}
}

// want is the model's answer: the first record of src at or after off.
func (m model) want(src Source, off, end int64) (int64, bool) {
	for _, r := range m {
		if src.matches(r.o) && r.o.Offset >= off {
			return r.hub, true
		}
	}
	return end, false
}

// TestTranslateMatchesModel builds a hub partition with every kind of gap
// edgemirror's translation must cross: source offsets missing (edge
// transactions, markers, compaction, losses), aborted transactions and
// their markers in the hub itself, records of another edge and records
// without provenance; then checks every source offset against a linear
// scan of what a read_committed consumer sees.
func TestTranslateMatchesModel(t *testing.T) {
	e := newEnv(t)
	const topic = "plant-1.orders"
	e.createTopic(topic, 2)
	src := Source{Edge: "plant-1", Topic: "orders", Partition: 1}
	other := Source{Edge: "plant-2", Topic: "orders", Partition: 1}
	rng := rand.New(rand.NewPCG(1, 2))
	now := time.Now()
	var s int64
	for batch := 0; batch < 15; batch++ {
		var recs []*kgo.Record
		for i := 0; i < 1+rng.IntN(6); i++ {
			s += 1 + int64(rng.IntN(3))*int64(rng.IntN(4)) // gaps of 0..6
			recs = append(recs, hubRecord(topic, 1, provenance.Origin{Edge: src.Edge, Topic: src.Topic, Partition: 1, Offset: s}, now))
			if rng.IntN(8) == 0 {
				recs = append(recs, hubRecord(topic, 1, provenance.Origin{Edge: other.Edge, Topic: other.Topic, Partition: 1, Offset: int64(batch)}, now))
			}
			if rng.IntN(10) == 0 {
				recs = append(recs, &kgo.Record{Topic: topic, Partition: 1, Value: []byte("no provenance")})
			}
		}
		if rng.IntN(5) == 0 {
			// An aborted write of later source offsets: a fenced writer.
			var ab []*kgo.Record
			for i := int64(1); i <= 3; i++ {
				ab = append(ab, hubRecord(topic, 1, provenance.Origin{Edge: src.Edge, Topic: src.Topic, Partition: 1, Offset: s + i}, now))
			}
			e.txn(false, ab...)
		}
		e.txn(true, recs...)
	}
	m := e.read(topic, 1)
	_, end, err := bounds(e.ctx, e.cl, topic, 1)
	if err != nil {
		t.Fatal(err)
	}
	if len(m) < 15 {
		t.Fatalf("hub holds %d committed records, want at least 15", len(m))
	}
	for off := int64(0); off <= s+2; off++ {
		want, found := m.want(src, off, end)
		got, err := Translate(e.ctx, e.cl, topic, src, off, 0)
		if err != nil {
			t.Fatal(err)
		}
		if got.HubOffset != want || got.Found != found {
			t.Fatalf("source offset %d: got hub offset %d (found %v), want %d (found %v)", off, got.HubOffset, got.Found, want, found)
		}
		// A lower bound from a smaller offset's translation gives the same.
		if off%7 == 3 {
			prev, err := Translate(e.ctx, e.cl, topic, src, off-1, 0)
			if err != nil {
				t.Fatal(err)
			}
			hinted, err := Translate(e.ctx, e.cl, topic, src, off, prev.HubOffset)
			if err != nil {
				t.Fatal(err)
			}
			if hinted.HubOffset != got.HubOffset {
				t.Fatalf("source offset %d: with hint %d got %d, without %d", off, prev.HubOffset, hinted.HubOffset, got.HubOffset)
			}
		}
	}
	// The other edge's records translate on their own.
	for off := int64(0); off < 15; off++ {
		want, found := m.want(other, off, end)
		got, err := Translate(e.ctx, e.cl, topic, other, off, 0)
		if err != nil {
			t.Fatal(err)
		}
		if got.HubOffset != want || got.Found != found {
			t.Fatalf("other edge, source offset %d: got %d (found %v), want %d (found %v)", off, got.HubOffset, got.Found, want, found)
		}
	}
	tail, err := LastRecord(e.ctx, e.cl, topic, src)
	if err != nil {
		t.Fatal(err)
	}
	if tail.SourceOffset != s {
		t.Fatalf("last record: source offset %d, want %d", tail.SourceOffset, s)
	}
}

func TestTranslateEmptyAndMissing(t *testing.T) {
	e := newEnv(t)
	e.createTopic("e.t", 1)
	src := Source{Edge: "e", Topic: "t", Partition: 0}
	got, err := Translate(e.ctx, e.cl, "e.t", src, 5, 0)
	if err != nil {
		t.Fatal(err)
	}
	if got.Found || got.HubOffset != 0 {
		t.Fatalf("empty partition: got %+v, want not found at 0", got)
	}
	// Only aborted records: still nothing, and the end is past them.
	e.txn(false, hubRecord("e.t", 0, provenance.Origin{Edge: "e", Topic: "t", Offset: 5}, time.Now()))
	got, err = Translate(e.ctx, e.cl, "e.t", src, 0, 0)
	if err != nil {
		t.Fatal(err)
	}
	if got.Found || got.HubOffset != got.HubEnd || got.HubEnd == 0 {
		t.Fatalf("aborted only: got %+v, want not found at the end", got)
	}
	tail, err := LastRecord(e.ctx, e.cl, "e.t", src)
	if err != nil {
		t.Fatal(err)
	}
	if tail.SourceOffset != -1 {
		t.Fatalf("aborted only: last record %+v, want none", tail)
	}
	if _, err := Translate(e.ctx, e.cl, "e.missing", src, 0, 0); err == nil {
		t.Fatal("missing topic: no error")
	}
}

func TestParseDateTime(t *testing.T) {
	want := time.Date(2026, 12, 1, 10, 0, 0, 0, time.UTC)
	for in, w := range map[string]time.Time{
		"2026-12-01T10:00:00Z":      want,
		"2026-12-01T10:00:00":       want,
		"2026-12-01T10:00:00.000":   want,
		"2026-12-01T10:00:00.250Z":  want.Add(250 * time.Millisecond),
		"2026-12-01T11:00:00+01:00": want,
		"2026-12-01T05:00:00-0500":  want,
		"2026-12-01T12:00:00+02":    want,
	} {
		got, err := ParseDateTime(in)
		if err != nil {
			t.Errorf("%s: %v", in, err)
			continue
		}
		if !got.Equal(w) {
			t.Errorf("%s: got %s, want %s", in, got, w)
		}
	}
	for _, bad := range []string{"", "2026-12-01", "10:00:00", "2026-12-01 10:00:00", "2026-13-01T10:00:00Z", "yesterday"} {
		if _, err := ParseDateTime(bad); err == nil {
			t.Errorf("%q: no error", bad)
		}
	}
}
