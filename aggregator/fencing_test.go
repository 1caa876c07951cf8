package aggregator

import (
	"context"
	"fmt"
	"net/http"
	"reflect"
	"sync/atomic"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kfake"
	"github.com/twmb/franz-go/pkg/kgo"
	"github.com/twmb/franz-go/pkg/kmsg"

	"github.com/edgemirror/edgemirror/internal/wire"
)

// TestZombieAggregatorFenced forces the worst timing deterministically:
// aggregator A has produced chunk 1 and is frozen before its commit reaches
// the hub; the agent gives up on A and sends chunk 1 to aggregator B, which
// takes the edge; then A wakes up and commits. A's commit must be refused,
// nothing of it may be visible, and the hub must hold every record once.
// Then the edge moves back to A, whose watermark must come from what B
// committed, not from its memory.
func TestZombieAggregatorFenced(t *testing.T) {
	hub := newHubCluster(t)
	a := newTestServer(t, hub, "", nil)
	b := newTestServer(t, hub, "", nil)
	f := newFrameBuilder(t)
	topics := []wire.Topic{{Name: "sensors", Partitions: 2}}
	chunk1 := f.frame(chunkOf(1, topics, sensorRecords("sensors", 0, 0, 20), sensorRecords("sensors", 1, 0, 10)))

	// Warm up A's claim with a first transaction, so that the one frozen
	// below is a later one of an established writer. It comes from an
	// earlier buffer epoch: seq 1 of epoch 1 is chunk1, and a seq is never
	// reused with other content within an epoch.
	warm := f.frame(chunkOf(1, topics, sensorRecords("sensors", 0, 0, 5)))
	if r := a.send(t, "e1", 9, 1, warm); r.status != http.StatusOK || r.ok.Written != 5 {
		t.Fatalf("warm-up chunk on A: %v", r)
	}

	frozen, release := holdNextCommit(hub)
	aDone := make(chan answer, 1)
	go func() { aDone <- a.send(t, "e1", 1, 1, chunk1) }()
	select {
	case <-frozen:
	case <-time.After(10 * time.Second):
		t.Fatal("A never sent its commit")
	}
	// The agent's request to A timed out; it sends the same chunk to B.
	if r := b.send(t, "e1", 1, 1, chunk1); r.status != http.StatusOK || r.ok.Written != 25 || r.ok.Duplicates != 5 {
		t.Fatalf("chunk 1 on B: %v, want 200 with 25 written and 5 duplicates", r)
	}
	close(release)
	var ra answer
	select {
	case ra = <-aDone:
	case <-time.After(20 * time.Second):
		t.Fatal("A never answered after waking up")
	}
	if ra.status != http.StatusServiceUnavailable || ra.err.Permanent {
		t.Fatalf("A's answer after being fenced: %v, want a retryable 503", ra)
	}
	if v := metricValue(t, a.m.fenced); v != 1 {
		t.Errorf("A counted %v fenced transactions, want 1", v)
	}
	// The edge comes back to A with the next chunk.
	chunk2 := f.frame(chunkOf(2, topics, sensorRecords("sensors", 0, 20, 5), sensorRecords("sensors", 1, 5, 10)))
	if r := a.send(t, "e1", 1, 2, chunk2); r.status != http.StatusOK || r.ok.Written != 10 || r.ok.Duplicates != 5 {
		t.Fatalf("chunk 2 on A after the takeover: %v, want 10 written and 5 duplicates", r)
	}
	recs := readHub(t, hub, "e1.sensors")
	if got := fmt.Sprint(sourceOffsets(t, recs[0])); got != fmt.Sprint(seqOffsets(0, 25)) {
		t.Errorf("partition 0 holds %s, want 0..24 once each", got)
	}
	if got := fmt.Sprint(sourceOffsets(t, recs[1])); got != fmt.Sprint(seqOffsets(0, 15)) {
		t.Errorf("partition 1 holds %s, want 0..14 once each", got)
	}
}

// TestTwoAggregatorsInterleaved: an edge's chunks alternate between two
// aggregators, each re-sent once to the other one; every record is in the
// hub once.
func TestTwoAggregatorsInterleaved(t *testing.T) {
	hub := newHubCluster(t)
	servers := []*testServer{newTestServer(t, hub, "", nil), newTestServer(t, hub, "", nil)}
	f := newFrameBuilder(t)
	topics := []wire.Topic{{Name: "sensors", Partitions: 1}}
	for seq := uint64(1); seq <= 20; seq++ {
		frame := f.frame(chunkOf(seq, topics, sensorRecords("sensors", 0, int64(seq-1)*10, 10)))
		first, second := servers[seq%2], servers[(seq+1)%2]
		r := first.send(t, "e1", 1, seq, frame)
		if r.status != http.StatusOK || r.ok.Written != 10 {
			t.Fatalf("seq %d on its first aggregator: %v", seq, r)
		}
		// The answer was lost: the agent sends it again to the other one.
		// That one was fenced by the first one's claim: it answers 503
		// once and takes the edge back on the agent's retry.
		r = second.send(t, "e1", 1, seq, frame)
		if seq > 1 {
			if r.status != http.StatusServiceUnavailable {
				t.Fatalf("seq %d on a fenced aggregator: %v, want 503", seq, r)
			}
			r = second.send(t, "e1", 1, seq, frame)
		}
		if r.status != http.StatusOK || r.ok.Written != 0 || r.ok.Duplicates != 10 {
			t.Fatalf("seq %d re-sent to the other aggregator: %v, want all 10 duplicates", seq, r)
		}
	}
	if got := fmt.Sprint(sourceOffsets(t, readHub(t, hub, "e1.sensors")[0])); got != fmt.Sprint(seqOffsets(0, 200)) {
		t.Errorf("hub holds %s, want 0..199 once each", got)
	}
}

// TestHubLeaderMovesAndSlowProduces: while an edge's chunks are written,
// the hub's partition leaders move between brokers and produces are
// answered REQUEST_TIMED_OUT after they were appended (a slow follower).
// Every record is in the hub once, in order.
func TestHubLeaderMovesAndSlowProduces(t *testing.T) {
	hub, err := kfake.NewCluster(kfake.NumBrokers(3))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(hub.Close)
	s := newTestServer(t, hub, "", nil)
	f := newFrameBuilder(t)
	topics := []wire.Topic{{Name: "sensors", Partitions: 2}}
	const chunks, per = 30, 20
	moves, slow := 0, 0
	for seq := uint64(1); seq <= chunks; seq++ {
		if seq > 1 && seq%3 == 0 {
			for p := int32(0); p < 2; p++ {
				if err := hub.MoveTopicPartition("e1.sensors", p, (hub.LeaderFor("e1.sensors", p)+1)%3); err != nil {
					t.Fatal(err)
				}
				moves++
			}
		}
		var h *kfake.FaultHandle
		if seq%4 == 0 {
			h = hub.Fault(kfake.Fault{Keys: []kmsg.Key{kmsg.Produce}, Topic: "e1.sensors", Err: kerr.RequestTimedOut})
			slow++
		}
		frame := f.frame(chunkOf(seq, topics, sensorRecords("sensors", 0, int64(seq-1)*per, per),
			sensorRecords("sensors", 1, int64(seq-1)*per, per)))
		r := s.send(t, "e1", 1, seq, frame)
		for i := 0; r.status == http.StatusServiceUnavailable && i < 5; i++ {
			r = s.send(t, "e1", 1, seq, frame) // as the agent retries
		}
		if r.status != http.StatusOK || r.ok.Written+r.ok.Duplicates != 2*per {
			t.Fatalf("seq %d: %v", seq, r)
		}
		if h != nil {
			if h.Hits() != 1 {
				t.Errorf("seq %d: slow-produce fault hit %d times", seq, h.Hits())
			}
			h.Remove()
		}
	}
	recs := readHub(t, hub, "e1.sensors")
	for p := int32(0); p < 2; p++ {
		if got := fmt.Sprint(sourceOffsets(t, recs[p])); got != fmt.Sprint(seqOffsets(0, chunks*per)) {
			t.Errorf("partition %d holds %d records, want 0..%d once each, in order", p, len(recs[p]), chunks*per-1)
		}
	}
	t.Logf("%d leader moves, %d produces answered timed out after appending", moves, slow)
}

// TestHubRefusesOneTimestamp: the hub refuses one record's timestamp
// (INVALID_TIMESTAMP, as Kafka 4 does for timestamps too far ahead) without
// naming it; the partition is written one record per batch until the
// record is found, and only that record is recorded as lost.
func TestHubRefusesOneTimestamp(t *testing.T) {
	hub := newHubCluster(t)
	s := newTestServer(t, hub, "", nil)
	f := newFrameBuilder(t)
	const future = int64(4102444800000) // 2100-01-01
	h := hub.Fault(kfake.Fault{Keys: []kmsg.Key{kmsg.Produce}, Err: kerr.InvalidTimestamp, Count: -1,
		When: func(req kmsg.Request) bool {
			for _, tp := range req.(*kmsg.ProduceRequest).Topics {
				for _, p := range tp.Partitions {
					var rb kmsg.RecordBatch
					if rb.ReadFrom(p.Records) == nil && rb.MaxTimestamp >= future {
						return true
					}
				}
			}
			return false
		}})
	defer h.Remove()
	topics := []wire.Topic{{Name: "sensors", Partitions: 2}}
	recs := sensorRecords("sensors", 0, 0, 10)
	recs[6].Timestamp = future
	a := s.send(t, "e1", 1, 1, f.frame(chunkOf(1, topics, recs, sensorRecords("sensors", 1, 0, 4))))
	want := []wire.LossRange{{Topic: "sensors", Partition: 0, FirstOffset: 6, LastOffset: 6, Records: 1, Reason: wire.LossReasonRefusedByHub}}
	if a.status != http.StatusOK || a.ok.Written != 13 || !reflect.DeepEqual(a.ok.Refused, want) {
		t.Fatalf("answer %v, want 200 with 13 written and offset 6 refused", a)
	}
	hubRecs := readHub(t, hub, "e1.sensors")
	if got := fmt.Sprint(sourceOffsets(t, hubRecs[0])); got != "[0 1 2 3 4 5 7 8 9]" {
		t.Errorf("partition 0 holds %s", got)
	}
	if got := fmt.Sprint(sourceOffsets(t, hubRecs[1])); got != "[0 1 2 3]" {
		t.Errorf("partition 1 holds %s", got)
	}
}

// TestHubAuthorizationRefusalRetried: a missing ACL is an operator's
// mistake: the chunk is answered retryable (never 422, never lost), and
// written once the ACL is there.
func TestHubAuthorizationRefusalRetried(t *testing.T) {
	hub := newHubCluster(t)
	s := newTestServer(t, hub, "", nil)
	f := newFrameBuilder(t)
	topics := []wire.Topic{{Name: "sensors", Partitions: 1}}
	frame := f.frame(chunkOf(1, topics, sensorRecords("sensors", 0, 0, 5)))
	if a := s.send(t, "e1", 1, 1, frame); a.status != 200 {
		t.Fatalf("first chunk: %v", a)
	}
	h := hub.Fault(kfake.Fault{Keys: []kmsg.Key{kmsg.Produce}, Err: kerr.TopicAuthorizationFailed, Count: -1})
	frame = f.frame(chunkOf(2, topics, sensorRecords("sensors", 0, 5, 5)))
	a := s.send(t, "e1", 1, 2, frame)
	if a.status != http.StatusServiceUnavailable || a.err.Permanent {
		t.Fatalf("chunk refused by an ACL: %v, want a retryable 503", a)
	}
	h.Remove()
	if a = s.send(t, "e1", 1, 2, frame); a.status != 200 || a.ok.Written != 5 {
		t.Fatalf("after the ACL was fixed: %v", a)
	}
	if got := fmt.Sprint(sourceOffsets(t, readHub(t, hub, "e1.sensors")[0])); got != fmt.Sprint(seqOffsets(0, 10)) {
		t.Errorf("hub holds %s", got)
	}
}

// TestWatermarkSurvivesRemovedTail: the hub removes a partition's records
// (retention on a quiet partition; compaction removing a tombstone tail
// behaves alike); the records' provenance is gone, but the watermark each
// transaction committed with them is not. A chunk sent again to an
// aggregator with an empty state directory writes nothing twice.
func TestWatermarkSurvivesRemovedTail(t *testing.T) {
	hub := newHubCluster(t)
	a := newTestServer(t, hub, "", nil)
	f := newFrameBuilder(t)
	topics := []wire.Topic{{Name: "sensors", Partitions: 1}}
	frame := f.frame(chunkOf(1, topics, sensorRecords("sensors", 0, 0, 10)))
	if r := a.send(t, "e1", 1, 1, frame); r.status != 200 || r.ok.Written != 10 {
		t.Fatalf("first write: %v", r)
	}
	ctx := context.Background()
	cl, err := kgo.NewClient(kgo.SeedBrokers(hub.ListenAddrs()...))
	if err != nil {
		t.Fatal(err)
	}
	defer cl.Close()
	adm := kadm.NewClient(cl)
	ends, err := adm.ListEndOffsets(ctx, "e1.sensors")
	if err != nil {
		t.Fatal(err)
	}
	end, _ := ends.Lookup("e1.sensors", 0)
	del := kadm.Offsets{}
	del.Add(kadm.Offset{Topic: "e1.sensors", Partition: 0, At: end.Offset})
	if res, err := adm.DeleteRecords(ctx, del); err != nil || res.Error() != nil {
		t.Fatalf("delete records: %v %v", err, res.Error())
	}
	b := newTestServer(t, hub, "", nil) // empty state, another process
	if r := b.send(t, "e1", 1, 1, frame); r.status != 200 || r.ok.Written != 0 || r.ok.Duplicates != 10 {
		t.Fatalf("chunk sent again after the hub removed its records: %v, want 10 duplicates", r)
	}
	frame2 := f.frame(chunkOf(2, topics, sensorRecords("sensors", 0, 10, 5)))
	if r := b.send(t, "e1", 1, 2, frame2); r.status != 200 || r.ok.Written != 5 {
		t.Fatalf("next chunk: %v", r)
	}
	if got := fmt.Sprint(sourceOffsets(t, readHub(t, hub, "e1.sensors")[0])); got != fmt.Sprint(seqOffsets(10, 5)) {
		t.Errorf("hub holds %s, want only 10..14 after the removed ones", got)
	}
}

// holdNextCommit holds the hub's answer to the next EndTxn until release is
// closed; held is closed when that EndTxn arrives. The hub then handles the
// (late) commit itself, and every later EndTxn normally.
func holdNextCommit(hub *kfake.Cluster) (held, release chan struct{}) {
	held, release = make(chan struct{}), make(chan struct{})
	var once atomic.Bool
	hub.ControlKey(int16(kmsg.EndTxn), func(kmsg.Request) (kmsg.Response, error, bool) {
		if once.CompareAndSwap(false, true) {
			close(held)
			hub.SleepControl(func() { <-release })
		}
		hub.DropControl()
		return nil, nil, false
	})
	return held, release
}
