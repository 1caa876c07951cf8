//go:build realkafka

// These tests check, against a real broker, the segmentio/kafka-go v0.4.51
// behaviour edgemirror relies on (notes/kafka-go.md was checked on kfake only).
// Run: go test -tags realkafka ./test/kafka/  (KAFKA_VERSION=3.9.1 for 3.9).
// Results are written down in FINDINGS.md.
package realkafka

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"sort"
	"testing"
	"time"

	"github.com/segmentio/kafka-go"
	"github.com/segmentio/kafka-go/protocol"
	fetchAPI "github.com/segmentio/kafka-go/protocol/fetch"
	metadataAPI "github.com/segmentio/kafka-go/protocol/metadata"
	"github.com/twmb/franz-go/pkg/kgo"
	"github.com/twmb/franz-go/pkg/kmsg"
)

type rec struct {
	Offset  int64
	Time    time.Time
	Key     []byte // nil = null
	Value   []byte // nil = null
	Headers []kafka.Header
}

func readAll(t *testing.T, rr kafka.RecordReader) []rec {
	t.Helper()
	var out []rec
	for {
		r, err := rr.ReadRecord()
		if errors.Is(err, io.EOF) {
			return out
		}
		if err != nil {
			t.Fatalf("ReadRecord: %v", err)
		}
		k, err := kafka.ReadAll(r.Key)
		if err != nil {
			t.Fatal(err)
		}
		v, err := kafka.ReadAll(r.Value)
		if err != nil {
			t.Fatal(err)
		}
		out = append(out, rec{Offset: r.Offset, Time: r.Time, Key: k, Value: v, Headers: r.Headers})
	}
}

func nullOrBytes(b []byte) string {
	if b == nil {
		return "null"
	}
	return fmt.Sprintf("%q", b)
}

// (1) CreateTopics + wait for leaders + Client.Produce (acks=all) to an
// explicit partition: headers, timestamps, null vs empty key/value.
func TestProduceExplicitPartition(t *testing.T) {
	ctx := testCtx(t, 2*time.Minute)
	cl := newClient(t, shared.Addr(), nil)
	topic := "produce-explicit"
	// metadata leaders only: measure how long the first produce is refused
	createTopicOnly(t, ctx, cl, topic, 3)

	t0 := time.Now().Add(-time.Minute).Truncate(time.Millisecond)
	// kafka.NewBytes values are readers that a Produce consumes: every
	// attempt needs fresh records (see TestRecordReuseWritesEmptyValues).
	mk := func() []kafka.Record {
		return []kafka.Record{
			{Time: t0, Key: kafka.NewBytes([]byte("k0")), Value: kafka.NewBytes([]byte("v0")),
				Headers: []kafka.Header{{Key: "a", Value: []byte("1")}, {Key: "a", Value: []byte("2")}, {Key: "b", Value: []byte{}}}},
			{Time: t0.Add(time.Millisecond), Key: kafka.NewBytes([]byte("k1")), Value: nil},                      // null value (tombstone)
			{Time: t0.Add(2 * time.Millisecond), Key: kafka.NewBytes([]byte{}), Value: kafka.NewBytes([]byte{})}, // empty key and value
			{Time: t0.Add(3 * time.Millisecond), Key: nil, Value: kafka.NewBytes([]byte("no key"))},              // null key
			{Time: t0.Add(-48 * time.Hour), Key: kafka.NewBytes([]byte("old")), Value: kafka.NewBytes([]byte("2 days old"))},
		}
	}
	in := mk()
	want := []rec{
		{Time: in[0].Time, Key: []byte("k0"), Value: []byte("v0"), Headers: in[0].Headers},
		{Time: in[1].Time, Key: []byte("k1"), Value: nil},
		{Time: in[2].Time, Key: []byte{}, Value: []byte{}},
		{Time: in[3].Time, Key: nil, Value: []byte("no key")},
		{Time: in[4].Time, Key: []byte("old"), Value: []byte("2 days old")},
	}
	var (
		res      *kafka.ProduceResponse
		err      error
		refusals int
	)
	tp := time.Now()
	for {
		res, err = cl.Produce(ctx, &kafka.ProduceRequest{Topic: topic, Partition: 2, RequiredAcks: kafka.RequireAll,
			Records: kafka.NewRecordReader(mk()...)})
		if err == nil && errors.Is(res.Error, kafka.NotLeaderForPartition) && time.Since(tp) < 30*time.Second {
			refusals++
			time.Sleep(20 * time.Millisecond)
			continue
		}
		break
	}
	t.Logf("first Produce after CreateTopics + metadata leaders: %d NOT_LEADER_OR_FOLLOWER refusals over %v",
		refusals, time.Since(tp).Round(time.Millisecond))
	if err != nil || res.Error != nil {
		t.Fatalf("Produce: err=%v res.Error=%v", err, res.Error)
	}
	if res.BaseOffset != 0 {
		t.Fatalf("BaseOffset = %d, want 0", res.BaseOffset)
	}
	// a second batch, zstd-compressed, lands right after the first
	res2, err := cl.Produce(ctx, &kafka.ProduceRequest{Topic: topic, Partition: 2, RequiredAcks: kafka.RequireAll,
		Compression: kafka.Zstd, Records: kafka.NewRecordReader(mk()...)})
	if err != nil || res2.Error != nil {
		t.Fatalf("Produce zstd: err=%v res.Error=%v", err, res2.Error)
	}
	if res2.BaseOffset != int64(len(in)) {
		t.Fatalf("zstd BaseOffset = %d, want %d", res2.BaseOffset, len(in))
	}
	// a partition number that does not exist
	if res3, err := cl.Produce(ctx, &kafka.ProduceRequest{Topic: topic, Partition: 7, RequiredAcks: kafka.RequireAll,
		Records: kafka.NewRecordReader(mk()[0])}); err == nil && res3.Error == nil {
		t.Fatalf("Produce to partition 7 of 3 succeeded")
	} else {
		t.Logf("produce to missing partition: err=%v res=%+v", err, res3)
	}

	// read back with Client.Fetch (one partition, keeps null vs empty)
	fr, err := cl.Fetch(ctx, &kafka.FetchRequest{Topic: topic, Partition: 2, Offset: 0, MaxBytes: 1 << 20})
	if err != nil || fr.Error != nil {
		t.Fatalf("Fetch: %v %v", err, fr.Error)
	}
	got := readAll(t, fr.Records)
	if len(got) != 2*len(in) {
		t.Fatalf("fetched %d records, want %d", len(got), 2*len(in))
	}
	for i, g := range got {
		w := want[i%len(want)]
		if g.Offset != int64(i) {
			t.Errorf("record %d: offset %d", i, g.Offset)
		}
		if !g.Time.Equal(w.Time) {
			t.Errorf("record %d: time %v, want %v", i, g.Time, w.Time)
		}
		if (g.Key == nil) != (w.Key == nil) || !bytes.Equal(g.Key, w.Key) {
			t.Errorf("record %d: key %s, want %s", i, nullOrBytes(g.Key), nullOrBytes(w.Key))
		}
		if (g.Value == nil) != (w.Value == nil) || !bytes.Equal(g.Value, w.Value) {
			t.Errorf("record %d: value %s, want %s", i, nullOrBytes(g.Value), nullOrBytes(w.Value))
		}
		if len(g.Headers) != len(w.Headers) {
			t.Errorf("record %d: headers %v, want %v", i, g.Headers, w.Headers)
			continue
		}
		for j := range g.Headers {
			if g.Headers[j].Key != w.Headers[j].Key || !bytes.Equal(g.Headers[j].Value, w.Headers[j].Value) {
				t.Errorf("record %d header %d: %v, want %v", i, j, g.Headers[j], w.Headers[j])
			}
		}
	}
	if fr.HighWatermark != int64(2*len(in)) {
		t.Errorf("HighWatermark = %d", fr.HighWatermark)
	}

	// cross-check null vs empty with an independent client (franz-go)
	kc, err := kgo.NewClient(kgo.SeedBrokers(shared.Addr()),
		kgo.ConsumePartitions(map[string]map[int32]kgo.Offset{topic: {2: kgo.NewOffset().At(0)}}))
	if err != nil {
		t.Fatal(err)
	}
	defer kc.Close()
	var frs []*kgo.Record
	for len(frs) < len(in) {
		fs := kc.PollFetches(ctx)
		if err := fs.Err0(); err != nil {
			t.Fatalf("franz-go poll: %v", err)
		}
		frs = append(frs, fs.Records()...)
	}
	if frs[1].Value != nil || frs[2].Value == nil || len(frs[2].Value) != 0 || frs[2].Key == nil || frs[3].Key != nil {
		t.Errorf("franz-go sees null/empty differently: v1=%s v2=%s k2=%s k3=%s",
			nullOrBytes(frs[1].Value), nullOrBytes(frs[2].Value), nullOrBytes(frs[2].Key), nullOrBytes(frs[3].Key))
	}
	if frs[4].Timestamp.UnixMilli() != in[4].Time.UnixMilli() {
		t.Errorf("old timestamp not kept: %v", frs[4].Timestamp)
	}
}

// (2) A raw fetch.Request with IsolationLevel 1 returns AbortedTransactions and
// control batches; the filter from notes/kafka-go.md §2 keeps only committed records.
func TestReadCommittedRawFetch(t *testing.T) {
	ctx := testCtx(t, 3*time.Minute)
	cl := newClient(t, shared.Addr(), nil)
	topic := "txn-filter"
	createTopic(t, ctx, cl, topic, 1)

	newTx := func(id string) *kgo.Client {
		c, err := kgo.NewClient(kgo.SeedBrokers(shared.Addr()), kgo.TransactionalID(id),
			kgo.DefaultProduceTopic(topic), kgo.RecordPartitioner(kgo.ManualPartitioner()),
			kgo.TransactionTimeout(30*time.Second))
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(c.Close)
		return c
	}
	a, b := newTx("tx-a"), newTx("tx-b")
	plain, err := kgo.NewClient(kgo.SeedBrokers(shared.Addr()), kgo.DefaultProduceTopic(topic),
		kgo.RecordPartitioner(kgo.ManualPartitioner()))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(plain.Close)

	produce := func(c *kgo.Client, vals ...string) {
		t.Helper()
		for _, v := range vals {
			if err := c.ProduceSync(ctx, &kgo.Record{Value: []byte(v), Partition: 0}).FirstErr(); err != nil {
				t.Fatalf("produce %s: %v", v, err)
			}
		}
	}
	begin := func(c *kgo.Client) {
		t.Helper()
		if err := c.BeginTransaction(); err != nil {
			t.Fatal(err)
		}
	}
	end := func(c *kgo.Client, commit kgo.TransactionEndTry) {
		t.Helper()
		if err := c.EndTransaction(ctx, commit); err != nil {
			t.Fatalf("end txn: %v", err)
		}
	}
	begin(a)
	produce(a, "c0", "c1", "c2")
	end(a, kgo.TryCommit)
	begin(a)
	produce(a, "a0", "a1")
	begin(b)
	produce(b, "b0")
	end(a, kgo.TryAbort) // aborted while b's transaction is open
	produce(b, "b1")
	end(b, kgo.TryCommit)
	produce(plain, "n0")
	begin(a)
	produce(a, "a2")
	end(a, kgo.TryAbort)
	begin(a)
	produce(a, "c3")
	end(a, kgo.TryCommit)
	wantCommitted := []string{"c0", "c1", "c2", "b0", "b1", "n0", "c3"}

	// EndTransaction returns before the coordinator has written the markers
	// to the partition (seen once on 4.4: HWM 14 right after the last commit,
	// 15 a moment later), so wait for all 10 records + 5 markers.
	var hwm int64
	polls := 0
	tw := time.Now()
	for {
		polls++
		lo, err := cl.ListOffsets(ctx, &kafka.ListOffsetsRequest{Topics: map[string][]kafka.OffsetRequest{topic: {kafka.LastOffsetOf(0)}}})
		if err != nil {
			t.Fatal(err)
		}
		hwm = lo.Topics[topic][0].LastOffset
		if hwm >= 15 || time.Since(tw) > 10*time.Second {
			break
		}
		time.Sleep(20 * time.Millisecond)
	}
	t.Logf("HWM after 5 transactions (2 aborted) + 1 plain record: %d (10 records + 5 markers), after %d ListOffsets polls, %v",
		hwm, polls, time.Since(tw).Round(time.Millisecond))
	if hwm != 15 {
		t.Fatalf("HWM %d, want 15", hwm)
	}

	for _, iso := range []int8{1, 0} {
		var (
			vals     []string
			aborted  []fetchAPI.ResponseTransaction
			controls []string
			next     int64
			lso      int64
		)
		for round := 0; next < hwm && round < 20; round++ {
			p := rawFetch(t, ctx, cl, topic, 0, next, iso)
			if p.ErrorCode != 0 {
				t.Fatalf("raw fetch isolation %d: error code %d", iso, p.ErrorCode)
			}
			lso = p.LastStableOffset
			aborted = append(aborted, p.AbortedTransactions...)
			v, c, n := filterCommitted(t, p, next)
			vals, controls = append(vals, v...), append(controls, c...)
			if n <= next {
				break
			}
			next = n
		}
		t.Logf("isolation %d: records %v, control batches %v, AbortedTransactions %+v, LSO %d, next %d",
			iso, vals, controls, aborted, lso, next)
		if len(controls) != 5 {
			t.Errorf("isolation %d: %d control batches, want 5 (3 commits, 2 aborts)", iso, len(controls))
		}
		if iso == 1 {
			if len(aborted) != 2 {
				t.Errorf("read_committed: %d AbortedTransactions, want 2", len(aborted))
			}
			if fmt.Sprint(vals) != fmt.Sprint(wantCommitted) {
				t.Errorf("filtered read_committed records %v, want %v", vals, wantCommitted)
			}
		} else if len(aborted) != 0 {
			t.Errorf("read_uncommitted returned AbortedTransactions %+v", aborted)
		}
		if next != hwm {
			t.Errorf("isolation %d: next offset %d, want HWM %d", iso, next, hwm)
		}
	}

	// What kafka-go's own read paths do with the same partition.
	fr, err := cl.Fetch(ctx, &kafka.FetchRequest{Topic: topic, Partition: 0, Offset: 0, MaxBytes: 1 << 20,
		IsolationLevel: kafka.ReadCommitted})
	if err != nil || fr.Error != nil {
		t.Fatalf("Client.Fetch: %v %v", err, fr.Error)
	}
	var cf []string
	for _, r := range readAll(t, fr.Records) {
		cf = append(cf, fmt.Sprintf("%d:%s", r.Offset, r.Value))
	}
	t.Logf("Client.Fetch(ReadCommitted) returns: %v (LSO %d)", cf, fr.LastStableOffset)
	if len(cf) != 10 {
		t.Errorf("Client.Fetch(ReadCommitted) returned %d records; the note says 10 (aborted included, control hidden)", len(cf))
	}

	rd := kafka.NewReader(kafka.ReaderConfig{Brokers: []string{shared.Addr()}, Topic: topic, Partition: 0,
		IsolationLevel: kafka.ReadCommitted, MaxWait: 200 * time.Millisecond, ReadLagInterval: -1})
	defer rd.Close()
	var rv []string
	rctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	for {
		m, err := rd.ReadMessage(rctx)
		if err != nil {
			break
		}
		rv = append(rv, fmt.Sprintf("%d:%q", m.Offset, m.Value))
		if m.Offset >= hwm-1 {
			break
		}
	}
	t.Logf("Reader(ReadCommitted) returns: %v", rv)
}

// rawFetch sends one fetch.Request for one partition via Transport.RoundTrip.
func rawFetch(t *testing.T, ctx context.Context, cl *kafka.Client, topic string, partition int32, offset int64, iso int8) fetchAPI.ResponsePartition {
	t.Helper()
	m, err := cl.Transport.RoundTrip(ctx, cl.Addr, &fetchAPI.Request{
		ReplicaID: -1, MaxWaitTime: 100, MinBytes: 1, MaxBytes: 1 << 20, IsolationLevel: iso,
		SessionID: -1, SessionEpoch: -1,
		Topics: []fetchAPI.RequestTopic{{Topic: topic, Partitions: []fetchAPI.RequestPartition{{
			Partition: partition, CurrentLeaderEpoch: -1, FetchOffset: offset, LogStartOffset: -1, PartitionMaxBytes: 1 << 20,
		}}}},
	})
	if err != nil {
		t.Fatalf("raw fetch: %v", err)
	}
	res := m.(*fetchAPI.Response)
	if len(res.Topics) != 1 || len(res.Topics[0].Partitions) != 1 {
		t.Fatalf("raw fetch: unexpected shape %+v", res)
	}
	return res.Topics[0].Partitions[0]
}

// filterCommitted is the algorithm of notes/kafka-go.md §2 (Java's
// CompletedFetch): it returns the values of records at or after from that are
// not in aborted transactions, a description of each control batch, and the
// next offset to fetch.
func filterCommitted(t *testing.T, p fetchAPI.ResponsePartition, from int64) (vals, controls []string, next int64) {
	t.Helper()
	next = from
	aborted := append([]fetchAPI.ResponseTransaction(nil), p.AbortedTransactions...)
	sort.Slice(aborted, func(i, j int) bool { return aborted[i].FirstOffset < aborted[j].FirstOffset })
	abortedPIDs := map[int64]bool{}
	var batches []protocol.RecordReader
	switch rs := p.RecordSet.Records.(type) {
	case nil:
	case *protocol.RecordStream:
		batches = rs.Records
	default:
		batches = []protocol.RecordReader{rs}
	}
	for _, b := range batches {
		switch b := b.(type) {
		case *protocol.ControlBatch:
			cr, err := b.ReadControlRecord()
			if err != nil {
				t.Fatalf("control record: %v", err)
			}
			kind := map[int16]string{0: "abort", 1: "commit"}[cr.Type]
			controls = append(controls, fmt.Sprintf("%s@%d(pid %d)", kind, b.BaseOffset, b.ProducerID))
			if cr.Type == 0 {
				delete(abortedPIDs, b.ProducerID)
			}
			next = max(next, cr.Offset+1)
		case *protocol.RecordBatch:
			if b.Attributes.Transactional() {
				for len(aborted) > 0 && aborted[0].FirstOffset <= b.BaseOffset {
					abortedPIDs[aborted[0].ProducerID] = true
					aborted = aborted[1:]
				}
			}
			skip := b.Attributes.Transactional() && abortedPIDs[b.ProducerID]
			for {
				r, err := b.ReadRecord()
				if errors.Is(err, io.EOF) {
					break
				}
				if err != nil {
					t.Fatalf("record: %v", err)
				}
				v, _ := protocol.ReadAll(r.Value)
				next = max(next, r.Offset+1)
				if !skip && r.Offset >= from {
					vals = append(vals, string(v))
				}
			}
		default:
			t.Fatalf("unexpected batch type %T", b)
		}
	}
	return vals, controls, next
}

// (3) ListOffsets first/last and (4) a fetch below the log start offset.
func TestListOffsetsAndLogStart(t *testing.T) {
	ctx := testCtx(t, 2*time.Minute)
	cl := newClient(t, shared.Addr(), nil)
	topic := "log-start"
	createTopic(t, ctx, cl, topic, 1)

	listOffsets := func() (first, last int64) {
		t.Helper()
		lo, err := cl.ListOffsets(ctx, &kafka.ListOffsetsRequest{Topics: map[string][]kafka.OffsetRequest{
			topic: {kafka.FirstOffsetOf(0), kafka.LastOffsetOf(0)}}})
		if err != nil {
			t.Fatalf("ListOffsets: %v", err)
		}
		ps := lo.Topics[topic]
		if len(ps) != 1 || ps[0].Error != nil {
			t.Fatalf("ListOffsets: %+v", ps)
		}
		return ps[0].FirstOffset, ps[0].LastOffset
	}
	if f, l := listOffsets(); f != 0 || l != 0 {
		t.Fatalf("empty topic: first %d last %d", f, l)
	}
	var recs []kafka.Record
	for i := range 10 {
		recs = append(recs, kafka.Record{Value: kafka.NewBytes([]byte(fmt.Sprint("r", i)))})
	}
	if res, err := cl.Produce(ctx, &kafka.ProduceRequest{Topic: topic, Partition: 0, RequiredAcks: kafka.RequireAll,
		Records: kafka.NewRecordReader(recs...)}); err != nil || res.Error != nil {
		t.Fatalf("produce: %v %v", err, res.Error)
	}
	if f, l := listOffsets(); f != 0 || l != 10 {
		t.Fatalf("after 10 records: first %d last %d", f, l)
	}

	// kafka-go has no DeleteRecords; send it with franz-go's kmsg.
	kc, err := kgo.NewClient(kgo.SeedBrokers(shared.Addr()))
	if err != nil {
		t.Fatal(err)
	}
	defer kc.Close()
	req := kmsg.NewPtrDeleteRecordsRequest()
	req.TimeoutMillis = 10000
	rt := kmsg.NewDeleteRecordsRequestTopic()
	rt.Topic = topic
	rp := kmsg.NewDeleteRecordsRequestTopicPartition()
	rp.Partition, rp.Offset = 0, 6
	rt.Partitions = append(rt.Partitions, rp)
	req.Topics = append(req.Topics, rt)
	dr, err := req.RequestWith(ctx, kc)
	if err != nil {
		t.Fatalf("DeleteRecords: %v", err)
	}
	if p := dr.Topics[0].Partitions[0]; p.ErrorCode != 0 || p.LowWatermark != 6 {
		t.Fatalf("DeleteRecords: error %d low watermark %d", p.ErrorCode, p.LowWatermark)
	}
	if f, l := listOffsets(); f != 6 || l != 10 {
		t.Fatalf("after DeleteRecords(6): first %d last %d", f, l)
	}

	// Client.Fetch below log start: the error comes with LogStartOffset.
	fr, err := cl.Fetch(ctx, &kafka.FetchRequest{Topic: topic, Partition: 0, Offset: 2, MaxBytes: 1 << 20})
	if err != nil {
		t.Fatalf("Client.Fetch(2): transport error %v", err)
	}
	t.Logf("Client.Fetch(2) below log start 6: Error=%v LogStartOffset=%d HWM=%d", fr.Error, fr.LogStartOffset, fr.HighWatermark)
	if !errors.Is(fr.Error, kafka.OffsetOutOfRange) {
		t.Errorf("Client.Fetch(2): Error %v, want OffsetOutOfRange", fr.Error)
	}
	// Real brokers (3.9, 4.4) answer OFFSET_OUT_OF_RANGE with LogStartOffset
	// and HighWatermark -1, unlike kfake: the lost range needs a ListOffsets.
	if fr.LogStartOffset != -1 {
		t.Errorf("Client.Fetch(2): LogStartOffset %d; real brokers sent -1 so far", fr.LogStartOffset)
	}
	if f, _ := listOffsets(); f != 6 {
		t.Errorf("ListOffsets(first) after OOR: %d, want 6 (lost range [2,6))", f)
	}
	p := rawFetch(t, ctx, cl, topic, 0, 2, 1)
	t.Logf("raw fetch(2): ErrorCode=%d LogStartOffset=%d HWM=%d", p.ErrorCode, p.LogStartOffset, p.HighWatermark)
	if p.ErrorCode != int16(kafka.OffsetOutOfRange) {
		t.Errorf("raw fetch(2): error code %d, want %d", p.ErrorCode, kafka.OffsetOutOfRange)
	}
	p = rawFetch(t, ctx, cl, topic, 0, 12, 1)
	t.Logf("raw fetch(12) above HWM 10: ErrorCode=%d LogStartOffset=%d HWM=%d", p.ErrorCode, p.LogStartOffset, p.HighWatermark)
	if p.ErrorCode != int16(kafka.OffsetOutOfRange) {
		t.Errorf("raw fetch(12): error code %d, want %d", p.ErrorCode, kafka.OffsetOutOfRange)
	}

	// Fetch inside the range: does Client.Fetch return records below the
	// requested offset (they share the batch written at offset 0)?
	fr, err = cl.Fetch(ctx, &kafka.FetchRequest{Topic: topic, Partition: 0, Offset: 7, MaxBytes: 1 << 20})
	if err != nil || fr.Error != nil {
		t.Fatalf("Client.Fetch(7): %v %v", err, fr.Error)
	}
	var offs []int64
	for _, r := range readAll(t, fr.Records) {
		offs = append(offs, r.Offset)
	}
	t.Logf("Client.Fetch(7) after DeleteRecords(6) returns offsets %v (LogStartOffset %d)", offs, fr.LogStartOffset)
	if len(offs) == 0 || offs[len(offs)-1] != 9 {
		t.Errorf("Client.Fetch(7): offsets %v", offs)
	}
}

// (5) Metadata v8 (the version kafka-go's Transport uses) against this broker,
// plus the broker's advertised ApiVersions for the APIs we use.
func TestMetadataV8AndVersions(t *testing.T) {
	ctx := testCtx(t, time.Minute)
	conn, err := (&net.Dialer{Timeout: 5 * time.Second}).DialContext(ctx, "tcp", shared.Addr())
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	_ = conn.SetDeadline(time.Now().Add(20 * time.Second))
	for _, v := range []int16{1, 6, 8} {
		m, err := protocol.RoundTrip(conn, v, int32(v), "realkafka-test", &metadataAPI.Request{TopicNames: nil})
		if err != nil {
			t.Fatalf("Metadata v%d: %v", v, err)
		}
		res := m.(*metadataAPI.Response)
		if len(res.Brokers) != 1 || fmt.Sprintf("%s:%d", res.Brokers[0].Host, res.Brokers[0].Port) != shared.Addr() {
			t.Errorf("Metadata v%d brokers %+v", v, res.Brokers)
		}
		if v >= 2 && res.ClusterID == "" {
			t.Errorf("Metadata v%d: no cluster id", v)
		}
		t.Logf("Metadata v%d: brokers %+v cluster %q controller %d topics %d", v, res.Brokers, res.ClusterID, res.ControllerID, len(res.Topics))
	}

	kc, err := kafka.DialContext(ctx, "tcp", shared.Addr())
	if err != nil {
		t.Fatal(err)
	}
	defer kc.Close()
	vs, err := kc.ApiVersions()
	if err != nil {
		t.Fatalf("ApiVersions: %v", err)
	}
	var s []string
	for _, v := range vs {
		if _, ok := apiNames[int16(v.ApiKey)]; ok || v.ApiKey == 8 || v.ApiKey == 9 || v.ApiKey == 11 {
			s = append(s, fmt.Sprintf("%d:%d-%d", v.ApiKey, v.MinVersion, v.MaxVersion))
		}
	}
	t.Logf("broker ApiVersions (key:min-max): %v", s)
	if ctrl, err := kc.Controller(); err != nil {
		t.Errorf("Conn.Controller (Metadata v1): %v", err)
	} else {
		t.Logf("Conn.Controller (Metadata v1): %+v", ctrl)
	}
	if bs, err := kc.Brokers(); err != nil || len(bs) != 1 {
		t.Errorf("Conn.Brokers (Metadata v1): %v %v", bs, err)
	}
}

// The Writer path with a partition-respecting balancer, for completeness:
// it must land on the requested partition.
func TestWriterExplicitPartition(t *testing.T) {
	ctx := testCtx(t, time.Minute)
	cl := newClient(t, shared.Addr(), nil)
	topic := "writer-partition"
	createTopic(t, ctx, cl, topic, 3)
	tr := &kafka.Transport{ClientID: "writer-test"}
	defer tr.CloseIdleConnections()
	w := &kafka.Writer{Addr: kafka.TCP(shared.Addr()), Transport: tr, Topic: topic, Balancer: byPartition{},
		RequiredAcks: kafka.RequireAll, BatchTimeout: 2 * time.Millisecond, MaxAttempts: 1}
	defer w.Close()
	t0 := time.Now()
	if err := w.WriteMessages(ctx, kafka.Message{Partition: 1, Value: []byte("p1")}); err != nil {
		t.Fatal(err)
	}
	t.Logf("one synchronous Writer write with BatchTimeout 2ms took %v", time.Since(t0).Round(time.Millisecond))
	lo, err := cl.ListOffsets(ctx, &kafka.ListOffsetsRequest{Topics: map[string][]kafka.OffsetRequest{
		topic: {kafka.LastOffsetOf(0), kafka.LastOffsetOf(1), kafka.LastOffsetOf(2)}}})
	if err != nil {
		t.Fatal(err)
	}
	for _, p := range lo.Topics[topic] {
		want := int64(0)
		if p.Partition == 1 {
			want = 1
		}
		if p.LastOffset != want {
			t.Errorf("partition %d: last offset %d, want %d", p.Partition, p.LastOffset, want)
		}
	}
}

// Retrying a Produce with the same []kafka.Record (as a naive retry loop
// would) sends the NewBytes readers already drained by the first attempt:
// the broker stores empty (not null) keys and values, and no error is raised.
func TestRecordReuseWritesEmptyValues(t *testing.T) {
	ctx := testCtx(t, time.Minute)
	cl := newClient(t, shared.Addr(), nil)
	topic := "record-reuse"
	createTopic(t, ctx, cl, topic, 1)
	recs := []kafka.Record{{Key: kafka.NewBytes([]byte("k")), Value: kafka.NewBytes([]byte("value")),
		Headers: []kafka.Header{{Key: "h", Value: []byte("hv")}}}}
	for range 2 {
		if res, err := cl.Produce(ctx, &kafka.ProduceRequest{Topic: topic, Partition: 0, RequiredAcks: kafka.RequireAll,
			Records: kafka.NewRecordReader(recs...)}); err != nil || res.Error != nil {
			t.Fatalf("produce: %v %v", err, res.Error)
		}
	}
	fr, err := cl.Fetch(ctx, &kafka.FetchRequest{Topic: topic, Partition: 0, Offset: 0, MaxBytes: 1 << 20})
	if err != nil || fr.Error != nil {
		t.Fatalf("fetch: %v %v", err, fr.Error)
	}
	got := readAll(t, fr.Records)
	if len(got) != 2 {
		t.Fatalf("%d records", len(got))
	}
	t.Logf("first produce: key %s value %s headers %v; same records produced again: key %s value %s headers %v",
		nullOrBytes(got[0].Key), nullOrBytes(got[0].Value), got[0].Headers, nullOrBytes(got[1].Key), nullOrBytes(got[1].Value), got[1].Headers)
	if string(got[0].Value) != "value" || got[1].Value == nil || len(got[1].Value) != 0 || len(got[1].Key) != 0 {
		t.Errorf("reuse no longer drains the values (kafka-go changed?): %s / %s", nullOrBytes(got[0].Value), nullOrBytes(got[1].Value))
	}
}

type byPartition struct{}

func (byPartition) Balance(m kafka.Message, _ ...int) int { return m.Partition }
