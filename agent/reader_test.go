package agent

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"sync/atomic"
	"testing"
	"time"

	"github.com/segmentio/kafka-go"
	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kfake"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/edgemirror/edgemirror/buffer"
	"github.com/edgemirror/edgemirror/internal/provenance"
	"github.com/edgemirror/edgemirror/internal/testkit"
	"github.com/edgemirror/edgemirror/internal/wire"
)

// newTestReader builds a reader for the cluster as Agent.Run does, with its
// own kafka-go Transport closed at the end of the test.
func newTestReader(t testing.TB, c *kfake.Cluster, mutate func(*Config), stored map[buffer.PartitionKey]int64) *reader {
	t.Helper()
	cfg := validConfig()
	cfg.Brokers = c.ListenAddrs()
	cfg.MetadataInterval = 100 * time.Millisecond
	if mutate != nil {
		mutate(&cfg)
	}
	if err := cfg.Validate(); err != nil {
		t.Fatal(err)
	}
	tr := &kafka.Transport{ClientID: "reader-test", DialTimeout: 5 * time.Second, MetadataTTL: time.Second}
	t.Cleanup(tr.CloseIdleConnections)
	client := &kafka.Client{Addr: kafka.TCP(cfg.Brokers...), Transport: tr, Timeout: 10 * time.Second}
	if stored == nil {
		stored = map[buffer.PartitionKey]int64{}
	}
	rd, err := newReader(&cfg, slog.New(slog.NewTextHandler(io.Discard, nil)), client, stored, newMetrics())
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := rd.refreshMetadata(ctx); err != nil {
		t.Fatal(err)
	}
	return rd
}

// fetchUntil runs fetch rounds until every partition in want has reached
// its next offset, and returns what was read.
func fetchUntil(t *testing.T, rd *reader, want map[buffer.PartitionKey]int64) *batch {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 15*time.Second)
	defer cancel()
	b := newBatch()
	for {
		done := true
		for k, off := range want {
			if p := rd.parts[k]; p == nil || p.next < off {
				done = false
			}
		}
		if done {
			return b
		}
		if err := rd.fetch(ctx, 50*time.Millisecond, b); err != nil {
			state := map[buffer.PartitionKey]int64{}
			for k, p := range rd.parts {
				state[k] = p.next
			}
			t.Fatalf("fetch: %v (next offsets %v, want %v)", err, state, want)
		}
	}
}

type recordsByPartition map[buffer.PartitionKey][]wire.Record

func byPartition(recs []wire.Record) recordsByPartition {
	out := recordsByPartition{}
	for _, r := range recs {
		k := buffer.PartitionKey{Topic: r.Topic, Partition: r.Partition}
		out[k] = append(out[k], r)
	}
	return out
}

func headersString(hs []wire.Header) string {
	var b bytes.Buffer
	for _, h := range hs {
		if h.Value == nil {
			fmt.Fprintf(&b, "[%s=<null>]", h.Key)
		} else {
			fmt.Fprintf(&b, "[%s=%q]", h.Key, h.Value)
		}
	}
	return b.String()
}

func nullable(b []byte) string {
	if b == nil {
		return "<null>"
	}
	return fmt.Sprintf("%q", b)
}

// TestReaderReadCommitted builds a partition log with interleaved
// committed and aborted transactions, plain records, control markers, null
// and empty keys and values, repeated and null headers and a record that
// already carries provenance, and checks that the reader returns exactly the
// committed records, byte for byte, and moves past everything else.
func TestReaderReadCommitted(t *testing.T) {
	c := newCluster(t)
	plain := newProducer(t, c)
	createTopic(t, plain, "sensors", 2)
	txA := newProducer(t, c, kgo.TransactionalID("tx-a"))
	txB := newProducer(t, c, kgo.TransactionalID("tx-b"))
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()

	base := time.Now().Add(-time.Hour).Truncate(time.Millisecond)
	rec := func(part int32, i int, key, value []byte, hs ...kgo.RecordHeader) *kgo.Record {
		return &kgo.Record{Topic: "sensors", Partition: part, Key: key, Value: value, Headers: hs,
			Timestamp: base.Add(time.Duration(i) * time.Second)}
	}
	begin := func(cl *kgo.Client) {
		t.Helper()
		if err := cl.BeginTransaction(); err != nil {
			t.Fatal(err)
		}
	}
	end := func(cl *kgo.Client, commit kgo.TransactionEndTry) {
		t.Helper()
		if err := cl.EndTransaction(ctx, commit); err != nil {
			t.Fatal(err)
		}
	}
	hs := []kgo.RecordHeader{{Key: "a", Value: []byte("1")}, {Key: "dup", Value: []byte("x")},
		{Key: "dup", Value: []byte("y")}, {Key: "n", Value: nil}, {Key: "", Value: []byte{}}}

	// Partition 0, offset by offset.
	produce(t, plain, rec(0, 0, []byte("k0"), []byte("p0")))         // 0
	begin(txA)                                                       //
	produce(t, txA, rec(0, 1, []byte("ka"), []byte("a1")))           // 1 committed later
	begin(txB)                                                       //
	produce(t, txB, rec(0, 2, []byte("kb"), []byte("b1")))           // 2 aborted later
	produce(t, plain, rec(0, 3, []byte("k3"), []byte("p1")))         // 3 plain, between open transactions
	produce(t, txA, rec(0, 4, []byte("ka"), []byte("a2")))           // 4 committed later
	produce(t, txB, rec(0, 5, []byte("kb"), []byte("b2")))           // 5 aborted later
	end(txB, kgo.TryAbort)                                           // 6 ABORT marker
	end(txA, kgo.TryCommit)                                          // 7 COMMIT marker
	produce(t, plain, rec(0, 8, nil, []byte{}))                      // 8 null key, empty value
	produce(t, plain, rec(0, 9, []byte{}, nil, hs...))               // 9 empty key, tombstone, headers
	produce(t, plain, rec(0, 10, []byte("loop"), []byte("mirrored"), // 10 already mirrored: skipped
		kgo.RecordHeader{Key: provenance.HeaderEdge, Value: []byte("elsewhere")}))
	begin(txB)                                              //
	produce(t, txB, rec(0, 11, []byte("kb"), []byte("b3"))) // 11 committed: same producer as the aborted one
	end(txB, kgo.TryCommit)                                 // 12 COMMIT marker
	// Partition 1: plain records only, read in the same fetch requests.
	for i := 0; i < 5; i++ {
		produce(t, plain, rec(1, 100+i, []byte(fmt.Sprint("k", i)), []byte(fmt.Sprint("v", i))))
	}

	p0 := buffer.PartitionKey{Topic: "sensors", Partition: 0}
	p1 := buffer.PartitionKey{Topic: "sensors", Partition: 1}
	rd := newTestReader(t, c, nil, nil)
	if got := rd.topicList(); len(got) != 1 || got[0] != (wire.Topic{Name: "sensors", Partitions: 2}) {
		t.Fatalf("topic list %+v, want sensors with 2 partitions", got)
	}
	b := fetchUntil(t, rd, map[buffer.PartitionKey]int64{p0: 13, p1: 5})

	type want struct {
		off      int64
		key, val []byte
		ts       int
		headers  string
	}
	wants := []want{
		{0, []byte("k0"), []byte("p0"), 0, ""},
		{1, []byte("ka"), []byte("a1"), 1, ""},
		{3, []byte("k3"), []byte("p1"), 3, ""},
		{4, []byte("ka"), []byte("a2"), 4, ""},
		{8, nil, []byte{}, 8, ""},
		{9, []byte{}, nil, 9, `[a="1"][dup="x"][dup="y"][n=<null>][=""]`},
		{11, []byte("kb"), []byte("b3"), 11, ""},
	}
	got := byPartition(b.records)
	if len(got[p0]) != len(wants) {
		var offs []int64
		for _, r := range got[p0] {
			offs = append(offs, r.Offset)
		}
		t.Fatalf("partition 0: read offsets %v, want %d committed records", offs, len(wants))
	}
	for i, w := range wants {
		r := got[p0][i]
		if r.Offset != w.off {
			t.Errorf("record %d: offset %d, want %d", i, r.Offset, w.off)
			continue
		}
		if nullable(r.Key) != nullable(w.key) {
			t.Errorf("offset %d: key %s, want %s", r.Offset, nullable(r.Key), nullable(w.key))
		}
		if nullable(r.Value) != nullable(w.val) {
			t.Errorf("offset %d: value %s, want %s", r.Offset, nullable(r.Value), nullable(w.val))
		}
		if want := base.Add(time.Duration(w.ts) * time.Second).UnixMilli(); r.Timestamp != want {
			t.Errorf("offset %d: timestamp %d, want %d", r.Offset, r.Timestamp, want)
		}
		if h := headersString(r.Headers); h != w.headers {
			t.Errorf("offset %d: headers %s, want %s", r.Offset, h, w.headers)
		}
		if r.Topic != "sensors" || r.Partition != 0 {
			t.Errorf("offset %d: from %s/%d", r.Offset, r.Topic, r.Partition)
		}
	}
	if n := len(got[p1]); n != 5 {
		t.Errorf("partition 1: %d records, want 5", n)
	}
	for i, r := range got[p1] {
		if r.Offset != int64(i) || string(r.Value) != fmt.Sprint("v", i) {
			t.Errorf("partition 1 record %d: offset %d value %q", i, r.Offset, r.Value)
		}
	}
	// The next offsets move past the last control marker, and are what
	// the chunk will store.
	if b.next[p0] != 13 || b.next[p1] != 5 {
		t.Errorf("batch next offsets %v, want sensors/0=13 sensors/1=5", b.next)
	}
	// The record that already carried provenance is not shipped, and it
	// is reported like any loss, so that the centre knows.
	wantLoss := buffer.Range{Topic: "sensors", Partition: 0, First: 10, Last: 10, Records: 1}
	if len(b.losses) != 1 || b.losses[0].Range != wantLoss || b.losses[0].Reason != wire.LossReasonProvenance {
		t.Errorf("losses %+v, want one: %+v reason %s", b.losses, wantLoss, wire.LossReasonProvenance)
	}
	for reason, want := range map[string]float64{"aborted": 2, "control": 3, "provenance": 1} {
		if got := metricValue(t, rd.m.skipped.WithLabelValues(reason)); got != want {
			t.Errorf("skipped{reason=%s} = %v, want %v", reason, got, want)
		}
	}
	if got := metricValue(t, rd.m.recordsRead); got != 12 {
		t.Errorf("records read %v, want 12", got)
	}

	// Nothing new: another round returns nothing and keeps the offsets.
	more := newBatch()
	if err := rd.fetch(ctx, 50*time.Millisecond, more); err != nil {
		t.Fatal(err)
	}
	if len(more.records) != 0 || len(more.next) != 0 || rd.parts[p0].next != 13 {
		t.Errorf("idle round read %d records, next %v, partition 0 at %d", len(more.records), more.next, rd.parts[p0].next)
	}
}

// TestReaderOpenTransactionNotRead: records of a transaction still open
// are not read (read_committed stops at the last stable offset), and are
// read once it commits.
func TestReaderOpenTransactionNotRead(t *testing.T) {
	c := newCluster(t)
	plain := newProducer(t, c)
	createTopic(t, plain, "t", 1)
	tx := newProducer(t, c, kgo.TransactionalID("tx-open"))
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	k := buffer.PartitionKey{Topic: "t", Partition: 0}

	produce(t, plain, &kgo.Record{Topic: "t", Value: []byte("before")}) // 0
	if err := tx.BeginTransaction(); err != nil {
		t.Fatal(err)
	}
	produce(t, tx, &kgo.Record{Topic: "t", Value: []byte("in-tx")})    // 1
	produce(t, plain, &kgo.Record{Topic: "t", Value: []byte("after")}) // 2, beyond the LSO

	rd := newTestReader(t, c, nil, nil)
	b := fetchUntil(t, rd, map[buffer.PartitionKey]int64{k: 1})
	for i := 0; i < 3; i++ { // a few more rounds must not pass the open transaction
		if err := rd.fetch(ctx, 20*time.Millisecond, b); err != nil {
			t.Fatal(err)
		}
	}
	if len(b.records) != 1 || string(b.records[0].Value) != "before" || rd.parts[k].next != 1 {
		t.Fatalf("with a transaction open at offset 1: read %d records, next %d; want only offset 0, next 1",
			len(b.records), rd.parts[k].next)
	}
	if err := tx.EndTransaction(ctx, kgo.TryCommit); err != nil { // marker 3
		t.Fatal(err)
	}
	b = fetchUntil(t, rd, map[buffer.PartitionKey]int64{k: 4})
	if len(b.records) != 2 || string(b.records[0].Value) != "in-tx" || string(b.records[1].Value) != "after" {
		t.Fatalf("after commit read %d records %+v, want in-tx and after", len(b.records), b.records)
	}
}

// TestReaderResumesMidBatch: a stored next offset inside a record batch
// returns only the records at or after it.
func TestReaderResumesMidBatch(t *testing.T) {
	c := newCluster(t)
	plain := newProducer(t, c)
	createTopic(t, plain, "t", 1)
	var recs []*kgo.Record
	for i := 0; i < 10; i++ {
		recs = append(recs, &kgo.Record{Topic: "t", Value: []byte(fmt.Sprint(i))})
	}
	produce(t, plain, recs...)
	k := buffer.PartitionKey{Topic: "t", Partition: 0}
	rd := newTestReader(t, c, nil, map[buffer.PartitionKey]int64{k: 6})
	b := fetchUntil(t, rd, map[buffer.PartitionKey]int64{k: 10})
	if len(b.records) != 4 {
		t.Fatalf("read %d records from stored offset 6, want 4", len(b.records))
	}
	for i, r := range b.records {
		if r.Offset != int64(6+i) || string(r.Value) != fmt.Sprint(6+i) {
			t.Errorf("record %d: offset %d value %q", i, r.Offset, r.Value)
		}
	}
}

// TestReaderStartOffset: with no stored offset a partition starts at its
// log start (earliest) or at its end (latest).
func TestReaderStartOffset(t *testing.T) {
	c := newCluster(t)
	plain := newProducer(t, c)
	createTopic(t, plain, "t", 1)
	for i := 0; i < 3; i++ {
		produce(t, plain, &kgo.Record{Topic: "t", Value: []byte("old")})
	}
	k := buffer.PartitionKey{Topic: "t", Partition: 0}

	early := newTestReader(t, c, func(c *Config) { c.StartOffset = StartEarliest }, nil)
	if b := fetchUntil(t, early, map[buffer.PartitionKey]int64{k: 3}); len(b.records) != 3 {
		t.Errorf("earliest: read %d records, want 3", len(b.records))
	}

	late := newTestReader(t, c, func(c *Config) { c.StartOffset = StartLatest }, nil)
	b := fetchUntil(t, late, map[buffer.PartitionKey]int64{k: 3})
	if len(b.records) != 0 {
		t.Errorf("latest: read %d old records, want none", len(b.records))
	}
	produce(t, plain, &kgo.Record{Topic: "t", Value: []byte("new")})
	b = fetchUntil(t, late, map[buffer.PartitionKey]int64{k: 4})
	if len(b.records) != 1 || string(b.records[0].Value) != "new" {
		t.Errorf("latest: read %+v, want only the new record", b.records)
	}
}

// TestReaderEdgeRetentionLoss: the edge deleted records the agent had not
// read yet. The reader reports exactly the offsets it will never see, does
// not move past them before the loss is persisted, and then resumes at the
// log start.
func TestReaderEdgeRetentionLoss(t *testing.T) {
	c := newCluster(t)
	plain := newProducer(t, c)
	createTopic(t, plain, "t", 1)
	for i := 0; i < 10; i++ {
		produce(t, plain, &kgo.Record{Topic: "t", Value: []byte(fmt.Sprint(i))})
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	offs := kadm.Offsets{}
	offs.Add(kadm.Offset{Topic: "t", Partition: 0, At: 6})
	res, err := kadm.NewClient(plain).DeleteRecords(ctx, offs)
	if err != nil {
		t.Fatal(err)
	}
	if err := res.Error(); err != nil {
		t.Fatal(err)
	}

	k := buffer.PartitionKey{Topic: "t", Partition: 0}
	rd := newTestReader(t, c, nil, map[buffer.PartitionKey]int64{k: 2}) // read up to 2 before
	b := newBatch()
	testkit.Eventually(t, 10*time.Second, "loss found", func() error {
		if err := rd.fetch(ctx, 20*time.Millisecond, b); err != nil {
			return err
		}
		if len(b.losses) == 0 {
			return fmt.Errorf("no loss yet")
		}
		return nil
	})
	if len(b.losses) != 1 {
		t.Fatalf("losses %+v, want one", b.losses)
	}
	l := b.losses[0]
	wantRange := buffer.Range{Topic: "t", Partition: 0, First: 2, Last: 5, Records: 4}
	if l.Range != wantRange || l.Reason != wire.LossReasonEdgeRetention || l.At.IsZero() {
		t.Fatalf("loss %+v, want range %+v reason %s", l, wantRange, wire.LossReasonEdgeRetention)
	}
	if b.lossNext[k] != 6 {
		t.Errorf("resume offset after the loss %d, want 6", b.lossNext[k])
	}
	if len(b.records) != 0 {
		t.Errorf("read %d records together with the loss, want none", len(b.records))
	}
	if got := metricValue(t, rd.m.lost.WithLabelValues(wire.LossReasonEdgeRetention)); got != 4 {
		t.Errorf("lost{edge-retention} = %v, want 4", got)
	}
	// Until the loss is persisted the partition does not move on.
	for i := 0; i < 3; i++ {
		if err := rd.fetch(ctx, 20*time.Millisecond, b); err != nil {
			t.Fatal(err)
		}
	}
	if rd.parts[k].next != 2 || len(b.records) != 0 || len(b.losses) != 1 {
		t.Fatalf("before skipLosses: next %d, %d records, %d losses; want 2, 0, 1",
			rd.parts[k].next, len(b.records), len(b.losses))
	}
	rd.skipLosses(b.lossNext)
	after := fetchUntil(t, rd, map[buffer.PartitionKey]int64{k: 10})
	if len(after.records) != 4 || after.records[0].Offset != 6 || len(after.losses) != 0 {
		t.Fatalf("after the loss: %d records from %v, %d losses; want offsets 6..9 and no new loss",
			len(after.records), after.records, len(after.losses))
	}
}

// TestReaderStoredOffsetBeyondEnd: a stored offset past the end of the
// partition (topic recreated) is neither read from nor reported as a loss.
func TestReaderStoredOffsetBeyondEnd(t *testing.T) {
	c := newCluster(t)
	plain := newProducer(t, c)
	createTopic(t, plain, "t", 1)
	for i := 0; i < 3; i++ {
		produce(t, plain, &kgo.Record{Topic: "t", Value: []byte("x")})
	}
	k := buffer.PartitionKey{Topic: "t", Partition: 0}
	rd := newTestReader(t, c, nil, map[buffer.PartitionKey]int64{k: 100})
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	b := newBatch()
	testkit.Eventually(t, 10*time.Second, "partition parked", func() error {
		if err := rd.fetch(ctx, 20*time.Millisecond, b); err != nil {
			return err
		}
		if !rd.parts[k].stuckLogged {
			return fmt.Errorf("not parked yet")
		}
		return nil
	})
	if rd.parts[k].next != 100 || len(b.records) != 0 || len(b.losses) != 0 || len(b.next) != 0 {
		t.Fatalf("next %d, %d records, losses %+v, next offsets %v; want 100 and nothing else",
			rd.parts[k].next, len(b.records), b.losses, b.next)
	}
	if !rd.parts[k].retryAt.After(time.Now()) {
		t.Error("parked partition is retried immediately")
	}
}

// TestReaderTopicSelection: --topics and --exclude-topics match whole
// names, and names starting with "_" are never mirrored.
func TestReaderTopicSelection(t *testing.T) {
	c := newCluster(t)
	plain := newProducer(t, c)
	for _, topic := range []string{"sensors", "sensors-raw", "logs", "_internal", "xsensors"} {
		createTopic(t, plain, topic, 1)
	}
	rd := newTestReader(t, c, func(c *Config) { c.Topics = "sensors.*|_internal|logs"; c.ExcludeTopics = ".*-raw" }, nil)
	var got []string
	for _, tp := range rd.topicList() {
		got = append(got, tp.Name)
	}
	if fmt.Sprint(got) != "[logs sensors]" {
		t.Fatalf("mirrored topics %v, want [logs sensors]", got)
	}
	if metricValue(t, rd.m.partitions) != 2 {
		t.Errorf("partitions gauge %v, want 2", metricValue(t, rd.m.partitions))
	}
	for name, want := range map[string]bool{"sensors": true, "sensorsX": true, "a-sensors": false,
		"sensors-raw": false, "_internal": false, "__consumer_offsets": false, "logs": true, "logs2": false} {
		if rd.wanted(name) != want {
			t.Errorf("wanted(%q) = %v, want %v", name, !want, want)
		}
	}
}

// TestReaderPicksUpNewPartitions: a topic that grows is read in full after
// the next metadata refresh, and the topic list carries the new count.
func TestReaderPicksUpNewPartitions(t *testing.T) {
	c := newCluster(t)
	plain := newProducer(t, c)
	createTopic(t, plain, "t", 1)
	rd := newTestReader(t, c, nil, nil)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if _, err := kadm.NewClient(plain).CreatePartitions(ctx, 2, "t"); err != nil {
		t.Fatal(err)
	}
	produce(t, plain, &kgo.Record{Topic: "t", Partition: 2, Value: []byte("new")})
	testkit.Eventually(t, 10*time.Second, "third partition seen", func() error {
		if err := rd.refreshMetadata(ctx); err != nil {
			return err
		}
		if tl := rd.topicList(); len(tl) != 1 || tl[0].Partitions != 3 {
			return fmt.Errorf("topic list %+v", tl)
		}
		return nil
	})
	b := fetchUntil(t, rd, map[buffer.PartitionKey]int64{{Topic: "t", Partition: 2}: 1})
	if len(b.records) != 1 || b.records[0].Partition != 2 {
		t.Fatalf("read %+v, want the record of partition 2", b.records)
	}
}

// TestReaderBacklogEveryPartitionProgresses: with a backlog on many
// partitions whose producer batches are larger than a partition's share of
// --fetch-max-bytes, a broker returns data only for the first partition of
// the request that has any (KIP-74). Every partition must still make
// progress within as many rounds as there are partitions.
func TestReaderBacklogEveryPartitionProgresses(t *testing.T) {
	const partitions = 20
	c := newCluster(t)
	// About 1 MB producer batches, three of them per partition.
	plain := newProducer(t, c, kgo.ProducerBatchMaxBytes(1<<20), kgo.MaxBufferedBytes(64<<20))
	createTopic(t, plain, "big", partitions)
	value := bytes.Repeat([]byte("x"), 100<<10) // 100 KiB: every batch exceeds a 64 KiB share
	var recs []*kgo.Record
	for p := int32(0); p < partitions; p++ {
		for i := 0; i < 20; i++ {
			recs = append(recs, &kgo.Record{Topic: "big", Partition: p, Value: value})
		}
	}
	produce(t, plain, recs...)
	rd := newTestReader(t, c, func(c *Config) { c.FetchMaxBytes = 1 << 20 }, nil)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	b := newBatch()
	for round := 0; round < partitions; round++ {
		if err := rd.fetch(ctx, 50*time.Millisecond, b); err != nil {
			t.Fatal(err)
		}
		b = newBatch() // only progress matters here, not the records
	}
	var starved []int32
	for p := int32(0); p < partitions; p++ {
		if rd.parts[buffer.PartitionKey{Topic: "big", Partition: p}].next <= 0 {
			starved = append(starved, p)
		}
	}
	if len(starved) > 0 {
		t.Fatalf("after %d fetch rounds, %d of %d partitions read nothing: %v", partitions, len(starved), partitions, starved)
	}
}

// TestReaderTopicDeletedOthersContinue: deleting one mirrored edge topic
// does not stop the others; the deleted topic is dropped from the reader.
func TestReaderTopicDeletedOthersContinue(t *testing.T) {
	c := newCluster(t)
	plain := newProducer(t, c)
	createTopic(t, plain, "gone", 1)
	createTopic(t, plain, "kept", 2)
	for i := 0; i < 3; i++ {
		produce(t, plain, &kgo.Record{Topic: "gone", Value: []byte("g")},
			&kgo.Record{Topic: "kept", Partition: 0, Value: []byte("k")},
			&kgo.Record{Topic: "kept", Partition: 1, Value: []byte("k")})
	}
	gone := buffer.PartitionKey{Topic: "gone", Partition: 0}
	kept := buffer.PartitionKey{Topic: "kept", Partition: 0}
	rd := newTestReader(t, c, nil, nil)
	fetchUntil(t, rd, map[buffer.PartitionKey]int64{gone: 3, kept: 3})

	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	res, err := kadm.NewClient(plain).DeleteTopics(ctx, "gone")
	if err != nil {
		t.Fatal(err)
	}
	if err := res.Error(); err != nil {
		t.Fatal(err)
	}
	// kafka-go's metadata cache forgets the topic within its TTL; from then
	// on a fetch request naming it fails as a whole.
	testkit.Eventually(t, 10*time.Second, "deleted topic gone from the edge metadata", func() error {
		md, err := rd.client.Metadata(ctx, &kafka.MetadataRequest{})
		if err != nil {
			return err
		}
		for _, tp := range md.Topics {
			if tp.Name == "gone" {
				return fmt.Errorf("still listed")
			}
		}
		return nil
	})
	produce(t, plain, &kgo.Record{Topic: "kept", Partition: 0, Value: []byte("after")})
	b := newBatch()
	testkit.Eventually(t, 15*time.Second, "kept topic read after the other was deleted", func() error {
		if err := rd.refreshIfDue(ctx); err != nil {
			return err
		}
		if err := rd.fetch(ctx, 20*time.Millisecond, b); err != nil {
			return err
		}
		if n := rd.parts[kept].next; n != 4 {
			return fmt.Errorf("kept/0 at offset %d, want 4", n)
		}
		return nil
	})
	if len(b.records) != 1 || string(b.records[0].Value) != "after" {
		t.Errorf("read %+v, want the one record produced after the deletion", b.records)
	}
	if _, ok := rd.parts[gone]; ok {
		t.Error("deleted topic's partition is still being read")
	}
	for _, tp := range rd.topicList() {
		if tp.Name == "gone" {
			t.Errorf("deleted topic still in the topic list: %+v", rd.topicList())
		}
	}
}

// TestReaderFarFutureTimestampRefused: a timestamp beyond what kafka-go can
// write (it encodes through time.UnixNano, which overflows after the year
// 2262) is never shipped to be written wrapped: the record is refused and
// reported lost with its exact offset, and its neighbours are shipped.
func TestReaderFarFutureTimestampRefused(t *testing.T) {
	c := newCluster(t)
	plain := newProducer(t, c)
	createTopic(t, plain, "t", 1)
	now := time.Now().UnixMilli()
	rec := func(v string) rawRecord { return rawRecord{value: []byte(v)} }
	produceRawBatch(t, c, "t", 0, now, rec("ok-0"))
	produceRawBatch(t, c, "t", 0, now*1000, rec("future")) // microseconds sent as milliseconds
	produceRawBatch(t, c, "t", 0, wire.MinTimestamp-1, rec("past"))
	produceRawBatch(t, c, "t", 0, wire.MaxTimestamp, rec("ok-3"))
	k := buffer.PartitionKey{Topic: "t", Partition: 0}
	rd := newTestReader(t, c, nil, nil)
	b := fetchUntil(t, rd, map[buffer.PartitionKey]int64{k: 4})
	var got []string
	for _, r := range b.records {
		got = append(got, fmt.Sprintf("%d:%s@%d", r.Offset, r.Value, r.Timestamp))
	}
	want := []string{fmt.Sprintf("0:ok-0@%d", now), fmt.Sprintf("3:ok-3@%d", wire.MaxTimestamp)}
	if fmt.Sprint(got) != fmt.Sprint(want) {
		t.Errorf("shipped %v, want %v", got, want)
	}
	wantLoss := buffer.Range{Topic: "t", Partition: 0, First: 1, Last: 2, Records: 2}
	if len(b.losses) != 1 || b.losses[0].Range != wantLoss || b.losses[0].Reason != wire.LossReasonTimestamp {
		t.Errorf("losses %+v, want one: %+v reason %s", b.losses, wantLoss, wire.LossReasonTimestamp)
	}
	if got := metricValue(t, rd.m.lost.WithLabelValues(wire.LossReasonTimestamp)); got != 2 {
		t.Errorf("lost{%s} = %v, want 2", wire.LossReasonTimestamp, got)
	}
}

// TestReaderRetriesStartOffsetSoon: the aggregator cannot answer the
// start-offset check at first (it is still creating the hub topic); the
// partition is tried again within a second, not only at the next metadata
// round.
func TestReaderRetriesStartOffsetSoon(t *testing.T) {
	c := newCluster(t)
	plain := newProducer(t, c)
	createTopic(t, plain, "t", 1)
	for i := 0; i < 3; i++ {
		produce(t, plain, &kgo.Record{Topic: "t", Value: []byte("v")})
	}
	k := buffer.PartitionKey{Topic: "t", Partition: 0}
	rd := newTestReader(t, c, func(c *Config) { c.MetadataInterval = time.Hour }, nil)
	var calls atomic.Int32
	rd.checkStart = func(_ context.Context, _ buffer.PartitionKey, first, _ int64) (int64, error) {
		if calls.Add(1) <= 2 {
			return 0, errors.New("aggregator cannot read the hub now (503)")
		}
		return first, nil
	}
	if b := fetchUntil(t, rd, map[buffer.PartitionKey]int64{k: 3}); len(b.records) != 3 {
		t.Errorf("read %d records, want 3", len(b.records))
	}
	if n := calls.Load(); n != 3 {
		t.Errorf("start offset checked %d times, want 3", n)
	}
}
