package aggregator

import (
	"context"
	"fmt"
	"math/rand/v2"
	"net/http"
	"path/filepath"
	"reflect"
	"sync"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kfake"
	"github.com/twmb/franz-go/pkg/kgo"
	"github.com/twmb/franz-go/pkg/kmsg"

	"github.com/edgemirror/edgemirror/internal/provenance"
	"github.com/edgemirror/edgemirror/internal/wire"
)

// TestWatermarkDerivedFromHub: an aggregator with an empty state directory
// (and nothing in memory) finds from the hub's provenance headers what the
// hub already has, so re-sent chunks write nothing.
func TestWatermarkDerivedFromHub(t *testing.T) {
	hub := newHubCluster(t)
	f := newFrameBuilder(t)
	topics := []wire.Topic{{Name: "sensors", Partitions: 2}}
	frame1 := f.frame(chunkOf(1, topics, sensorRecords("sensors", 0, 0, 30), sensorRecords("sensors", 1, 0, 10)))
	frame2 := f.frame(chunkOf(2, topics, sensorRecords("sensors", 0, 30, 20)))

	first := newTestServer(t, hub, "", nil)
	for i, fr := range [][]byte{frame1, frame2} {
		if a := first.send(t, "e1", 5, 1, fr); a.status != 200 {
			t.Fatalf("first aggregator, seq %d: %v", i+1, a)
		}
	}

	second := newTestServer(t, hub, filepath.Join(t.TempDir(), "empty"), nil)
	if rr := second.resume(t, "e1", 5); rr.NextSeq != 0 {
		t.Fatalf("new aggregator resume %+v, want next seq 0 (unknown)", rr)
	}
	if a := second.send(t, "e1", 5, 1, frame1); a.status != 200 || a.ok.Written != 0 || a.ok.Duplicates != 40 {
		t.Fatalf("re-sent seq 1 to the new aggregator: %v, want written 0 duplicates 40", a)
	}
	if a := second.send(t, "e1", 5, 1, frame2); a.status != 200 || a.ok.Written != 0 || a.ok.Duplicates != 20 {
		t.Fatalf("re-sent seq 2 to the new aggregator: %v, want written 0 duplicates 20", a)
	}
	frame3 := f.frame(chunkOf(3, topics, sensorRecords("sensors", 0, 45, 10), sensorRecords("sensors", 1, 8, 7)))
	if a := second.send(t, "e1", 5, 1, frame3); a.status != 200 || a.ok.Written != 10 || a.ok.Duplicates != 7 {
		t.Fatalf("seq 3 overlapping the hub: %v, want written 10 duplicates 7", a)
	}
	if d := metricValue(t, second.m.derivations); d != 2 {
		t.Errorf("watermark derivations %v, want 2 (one per source partition)", d)
	}
	got := readHub(t, hub, "e1.sensors")
	if o := sourceOffsets(t, got[0]); fmt.Sprint(o) != fmt.Sprint(seqOffsets(0, 55)) {
		t.Errorf("partition 0 holds %v, want 0..54 once each", o)
	}
	if o := sourceOffsets(t, got[1]); fmt.Sprint(o) != fmt.Sprint(seqOffsets(0, 15)) {
		t.Errorf("partition 1 holds %v, want 0..14 once each", o)
	}
}

// describeHubTopic returns the partition count of a hub topic, asking with a
// new client each time (franz-go caches metadata for a few seconds).
func describeHubTopic(t *testing.T, ctx context.Context, hub *kfake.Cluster, topic string) int {
	t.Helper()
	cl, err := kgo.NewClient(kgo.SeedBrokers(hub.ListenAddrs()...))
	if err != nil {
		t.Fatal(err)
	}
	defer cl.Close()
	tds, err := kadm.NewClient(cl).ListTopics(ctx, topic)
	if err != nil {
		t.Fatal(err)
	}
	td, ok := tds[topic]
	if !ok || td.Err != nil {
		t.Fatalf("hub topic %s: %v", topic, td.Err)
	}
	return len(td.Partitions)
}

// TestHubTopicCreatedAndGrown: the hub topic gets the source's partition
// count, grows with it, and each record lands in its source partition.
func TestHubTopicCreatedAndGrown(t *testing.T) {
	hub := newHubCluster(t)
	s := newTestServer(t, hub, "", nil)
	f := newFrameBuilder(t)
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()

	if a := s.send(t, "e1", 5, 1, f.frame(chunkOf(1, []wire.Topic{{Name: "sensors", Partitions: 3}},
		sensorRecords("sensors", 2, 0, 2)))); a.status != 200 {
		t.Fatalf("seq 1: %v", a)
	}
	if n := describeHubTopic(t, ctx, hub, "e1.sensors"); n != 3 {
		t.Fatalf("hub topic has %d partitions, want 3 as at the source", n)
	}
	// The source topic grew to 5 partitions.
	if a := s.send(t, "e1", 5, 1, f.frame(chunkOf(2, []wire.Topic{{Name: "sensors", Partitions: 5}},
		sensorRecords("sensors", 4, 0, 3), sensorRecords("sensors", 0, 0, 1)))); a.status != 200 {
		t.Fatalf("seq 2: %v", a)
	}
	if n := describeHubTopic(t, ctx, hub, "e1.sensors"); n != 5 {
		t.Fatalf("hub topic has %d partitions after the source grew, want 5", n)
	}
	// A chunk cut before the agent saw the growth names the old count.
	if a := s.send(t, "e1", 5, 1, f.frame(chunkOf(3, []wire.Topic{{Name: "sensors", Partitions: 3}},
		sensorRecords("sensors", 1, 0, 1)))); a.status != 200 {
		t.Fatalf("seq 3 with the old partition count: %v", a)
	}
	got := readHub(t, hub, "e1.sensors")
	for p, want := range map[int32]int{0: 1, 1: 1, 2: 2, 3: 0, 4: 3} {
		if len(got[p]) != want {
			t.Errorf("hub partition %d holds %d records, want %d", p, len(got[p]), want)
		}
		for _, o := range origins(t, got[p]) {
			if o.Partition != p {
				t.Errorf("source partition %d landed in hub partition %d", o.Partition, p)
			}
		}
	}
	// Two topics of one chunk become two hub topics.
	if a := s.send(t, "e1", 5, 1, f.frame(chunkOf(4, []wire.Topic{{Name: "a", Partitions: 1}, {Name: "b", Partitions: 2}},
		sensorRecords("a", 0, 0, 1), sensorRecords("b", 1, 0, 1)))); a.status != 200 {
		t.Fatalf("seq 4: %v", a)
	}
	if n := describeHubTopic(t, ctx, hub, "e1.b"); n != 2 {
		t.Errorf("hub topic e1.b has %d partitions, want 2", n)
	}
	if len(readHub(t, hub, "e1.a")[0]) != 1 || len(readHub(t, hub, "e1.b")[1]) != 1 {
		t.Error("records of a two-topic chunk are not in their hub topics")
	}
}

// TestHubBatches: a chunk larger than HubBatchBytes is produced in several
// requests and arrives whole and in order.
func TestHubBatches(t *testing.T) {
	hub := newHubCluster(t)
	s := newTestServer(t, hub, "", func(c *Config) { c.HubBatchBytes = 2048 })
	f := newFrameBuilder(t)
	a := s.send(t, "e1", 5, 1, f.frame(chunkOf(1, []wire.Topic{{Name: "sensors", Partitions: 1}}, sensorRecords("sensors", 0, 0, 500))))
	if a.status != 200 || a.ok.Written != 500 {
		t.Fatalf("answer %v", a)
	}
	if o := sourceOffsets(t, readHub(t, hub, "e1.sensors")[0]); fmt.Sprint(o) != fmt.Sprint(seqOffsets(0, 500)) {
		t.Fatalf("hub holds %d records, not 0..499 in order", len(o))
	}
}

// TestHubProduceRequests: a transaction's batches go in rounds, one batch
// of each partition per round, each round in one produce request to the
// (single) hub broker, or in requests of at most --parallel-partitions
// partitions one after another; every record arrives once and in order.
func TestHubProduceRequests(t *testing.T) {
	for _, pp := range []int{8, 2} {
		t.Run(fmt.Sprintf("parallel-partitions=%d", pp), func(t *testing.T) {
			hub := newHubCluster(t)
			var (
				mu    sync.Mutex
				sizes []int // partitions in each produce request
				with  = make(map[int32]int)
				seen  = make(map[kmsg.Request]bool) // When runs once per partition of a request
			)
			h := hub.Fault(kfake.Fault{Keys: []kmsg.Key{kmsg.Produce}, Topic: "e1.sensors", Observe: true, Count: -1,
				When: func(r kmsg.Request) bool {
					mu.Lock()
					defer mu.Unlock()
					if seen[r] {
						return true
					}
					seen[r] = true
					n := 0
					for _, tp := range r.(*kmsg.ProduceRequest).Topics {
						for _, p := range tp.Partitions {
							with[p.Partition]++
							n++
						}
					}
					sizes = append(sizes, n)
					return true
				}})
			defer h.Remove()
			s := newTestServer(t, hub, "", func(c *Config) { c.HubBatchBytes = 2048; c.ParallelPartitions = pp })
			f := newFrameBuilder(t)
			topics := []wire.Topic{{Name: "sensors", Partitions: 4}}
			a := s.send(t, "e1", 5, 1, f.frame(chunkOf(1, topics, sensorRecords("sensors", 0, 0, 300),
				sensorRecords("sensors", 1, 0, 5), sensorRecords("sensors", 2, 0, 5), sensorRecords("sensors", 3, 0, 5))))
			if a.status != 200 || a.ok.Written != 315 {
				t.Fatalf("answer %v", a)
			}
			got := readHub(t, hub, "e1.sensors")
			for p, n := range []int64{300, 5, 5, 5} {
				if o := sourceOffsets(t, got[int32(p)]); fmt.Sprint(o) != fmt.Sprint(seqOffsets(0, n)) {
					t.Errorf("partition %d holds %v, want 0..%d once each", p, o, n-1)
				}
			}
			mu.Lock()
			defer mu.Unlock()
			rounds := with[0]
			if rounds < 3 {
				t.Fatalf("partition 0 went in %d requests; the test needs several batches of it", rounds)
			}
			for p := int32(1); p < 4; p++ {
				if with[p] != 1 {
					t.Errorf("partition %d (one batch) was in %d produce requests, want 1", p, with[p])
				}
			}
			firstRound := (4 + pp - 1) / pp // requests of the round with all four partitions
			if len(sizes) != rounds+firstRound-1 {
				t.Fatalf("produce requests carried %v partitions; want %d requests", sizes, rounds+firstRound-1)
			}
			if n := sumInts(sizes[:firstRound]); n != 4 {
				t.Errorf("the first round's %d requests carried %v partitions, want 4 in all", firstRound, sizes[:firstRound])
			}
			for _, n := range sizes {
				if n > pp {
					t.Errorf("a produce request carried %d partitions, over --parallel-partitions %d", n, pp)
				}
			}
		})
	}
}

// TestHubRefusesRecord: a record the hub refuses for good (larger than the
// topic's max.message.bytes) is left out and recorded as lost with its
// offset; the rest of its chunk, before and after it, is written, and so is
// the next chunk.
func TestHubRefusesRecord(t *testing.T) {
	hub := newHubCluster(t)
	s := newTestServer(t, hub, "", nil)
	f := newFrameBuilder(t)
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	cl, err := kgo.NewClient(kgo.SeedBrokers(hub.ListenAddrs()...))
	if err != nil {
		t.Fatal(err)
	}
	defer cl.Close()
	maxBytes := "2048"
	if _, err := kadm.NewClient(cl).CreateTopic(ctx, 1, 1, map[string]*string{"max.message.bytes": &maxBytes}, "e1.sensors"); err != nil {
		t.Fatal(err)
	}
	topics := []wire.Topic{{Name: "sensors", Partitions: 1}}
	if a := s.send(t, "e1", 5, 1, f.frame(chunkOf(1, topics, sensorRecords("sensors", 0, 0, 3)))); a.status != 200 {
		t.Fatalf("seq 1: %v", a)
	}
	big := make([]byte, 8<<10)
	for i := range big {
		big[i] = byte(rand.Uint32())
	}
	recs := sensorRecords("sensors", 0, 3, 5) // offsets 3..7; 5 is too large
	recs[2].Value = big
	a := s.send(t, "e1", 5, 2, f.frame(chunkOf(2, topics, recs)))
	want := []wire.LossRange{{Topic: "sensors", Partition: 0, FirstOffset: 5, LastOffset: 5, Records: 1, Reason: wire.LossReasonRefusedByHub}}
	if a.status != http.StatusOK || a.ok.Written != 4 || !reflect.DeepEqual(a.ok.Refused, want) {
		t.Fatalf("chunk with a record above max.message.bytes: %v, want 200, 4 written, offset 5 refused", a)
	}
	if a = s.send(t, "e1", 5, 3, f.frame(chunkOf(3, topics, sensorRecords("sensors", 0, 8, 3)))); a.status != 200 || a.ok.Written != 3 {
		t.Fatalf("seq 3 after the refusal: %v", a)
	}
	if o := sourceOffsets(t, readHub(t, hub, "e1.sensors")[0]); fmt.Sprint(o) != "[0 1 2 3 4 6 7 8 9 10]" {
		t.Errorf("hub holds %v, want every offset but 5", o)
	}
	var losses []lossRecord
	if code := getJSON(t, s.client, s.url+wire.PathLosses+"?edge=e1", nil, &losses); code != 200 || len(losses) != 1 ||
		losses[0].LossRange != want[0] {
		t.Errorf("losses listed: %d %+v, want the refused record", code, losses)
	}
	// Sent again (its answer was lost): written nothing twice, refused again.
	if a = s.send(t, "e1", 5, 2, f.frame(chunkOf(2, topics, recs))); a.status != 200 || a.ok.Written != 0 {
		t.Errorf("re-send of seq 2: %v", a)
	}
}

// TestHubTopicDeletedIsRecreated: a hub topic deleted while the aggregator
// runs (an operator, a rebuilt hub) is created again on the next chunk
// instead of every chunk failing until the aggregator restarts.
func TestHubTopicDeletedIsRecreated(t *testing.T) {
	hub := newHubCluster(t)
	s := newTestServer(t, hub, "", nil)
	f := newFrameBuilder(t)
	topics := []wire.Topic{{Name: "sensors", Partitions: 1}}
	if a := s.send(t, "e1", 5, 1, f.frame(chunkOf(1, topics, sensorRecords("sensors", 0, 0, 5)))); a.status != 200 {
		t.Fatalf("seq 1: %v", a)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	cl, err := kgo.NewClient(kgo.SeedBrokers(hub.ListenAddrs()...))
	if err != nil {
		t.Fatal(err)
	}
	defer cl.Close()
	res, err := kadm.NewClient(cl).DeleteTopics(ctx, "e1.sensors")
	if err == nil {
		err = res.Error()
	}
	if err != nil {
		t.Fatal(err)
	}
	frame2 := f.frame(chunkOf(2, topics, sensorRecords("sensors", 0, 5, 5)))
	// The agent retries on 503; the aggregator must recover within a few
	// metadata refreshes (kafka-go serves metadata from a 2s cache).
	var a answer
	deadline := time.Now().Add(15 * time.Second)
	for {
		if a = s.send(t, "e1", 5, 1, frame2); a.status == 200 || time.Now().After(deadline) {
			break
		}
		time.Sleep(100 * time.Millisecond) // the agent's retry pacing
	}
	if a.status != 200 || a.ok.Written != 5 {
		t.Fatalf("seq 2 after the hub topic was deleted: last answer %v", a)
	}
}

func sumInts(xs []int) int {
	n := 0
	for _, x := range xs {
		n += x
	}
	return n
}

// TestHubRecords: each record reaches the hub with its own headers (null
// values kept null) and then its provenance, its key, value and timestamp
// as they were; the headers of one record cannot grow into the next's.
func TestHubRecords(t *testing.T) {
	key := sourceKey{edge: "e1", topic: "sensors", partition: 3}
	var src []*wire.Record
	for i := range 5 {
		r := &wire.Record{Topic: key.topic, Partition: key.partition, Offset: int64(100 + i), Timestamp: int64(1000 + i),
			Key: []byte(fmt.Sprint("k", i)), Value: []byte(fmt.Sprint("v", i))}
		for j := range i % 3 {
			r.Headers = append(r.Headers, wire.Header{Key: fmt.Sprint("h", j), Value: []byte(fmt.Sprint(i, j))})
		}
		if i == 4 {
			r.Headers = append(r.Headers, wire.Header{Key: "null", Value: nil})
			r.Key, r.Value = nil, nil
		}
		src = append(src, r)
	}
	got := hubRecords(key, src)
	if len(got) != len(src) {
		t.Fatalf("%d hub records of %d", len(got), len(src))
	}
	for i, r := range src {
		want := provenance.Append(append([]wire.Header(nil), r.Headers...),
			provenance.Origin{Edge: key.edge, Topic: key.topic, Partition: key.partition, Offset: r.Offset})
		g := got[i]
		if g.Timestamp != r.Timestamp || !reflect.DeepEqual(g.Key, r.Key) || !reflect.DeepEqual(g.Value, r.Value) {
			t.Fatalf("record %d: %d %q %q, want %d %q %q", i, g.Timestamp, g.Key, g.Value, r.Timestamp, r.Key, r.Value)
		}
		if !reflect.DeepEqual(g.Headers, want) {
			t.Fatalf("record %d headers %q, want %q", i, g.Headers, want)
		}
		if cap(g.Headers) != len(g.Headers) {
			t.Fatalf("record %d: headers have room for %d more, which belongs to the next record", i, cap(g.Headers)-len(g.Headers))
		}
	}
}
