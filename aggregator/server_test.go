package aggregator

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"math/rand/v2"
	"net/http"
	"reflect"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/edgemirror/edgemirror/internal/testkit"
	"github.com/edgemirror/edgemirror/internal/wire"
)

var sensors3 = []wire.Topic{{Name: "sensors", Partitions: 3}}

// TestChunkApplied: a chunk is written to {edge}.{topic}, same partition,
// with key, value (null and empty kept apart), headers in order, timestamp
// and the four provenance headers; the resume hint moves on.
func TestChunkApplied(t *testing.T) {
	hub := newHubCluster(t)
	s := newTestServer(t, hub, "", nil)
	f := newFrameBuilder(t)
	recs := []wire.Record{
		{Topic: "sensors", Partition: 0, Offset: 41, Timestamp: 1700000000000, Key: []byte("t1"), Value: []byte(`{"c":21.5}`),
			Headers: []wire.Header{{Key: "unit", Value: []byte("C")}, {Key: "dup", Value: []byte("1")}, {Key: "dup", Value: []byte("2")}}},
		{Topic: "sensors", Partition: 2, Offset: 7, Timestamp: 1700000000001, Key: nil, Value: []byte{},
			Headers: []wire.Header{{Key: "trace", Value: nil}, {Key: "empty", Value: []byte{}}}},
		{Topic: "sensors", Partition: 2, Offset: 8, Timestamp: 1700000000002, Key: []byte{}, Value: nil},
	}
	a := s.send(t, "plant-7", 99, 1, f.frame(chunkOf(1, sensors3, recs)))
	// seq and records acknowledge the chunk; the agent deletes it only then.
	if a.status != 200 || !reflect.DeepEqual(a.ok, wire.ChunkResponse{Seq: 1, Records: 3, Written: 3}) {
		t.Fatalf("answer %v, want 200 seq 1 records 3 written 3", a)
	}
	if rr := s.resume(t, "plant-7", 99); rr != (wire.ResumeResponse{Epoch: 99, NextSeq: 2, MaxSeq: 1}) {
		t.Errorf("resume %+v, want epoch 99 next 2 max 1", rr)
	}

	got := readHub(t, hub, "plant-7.sensors")
	if len(got[0]) != 1 || len(got[1]) != 0 || len(got[2]) != 2 {
		t.Fatalf("hub partitions hold %d/%d/%d records, want 1/0/2", len(got[0]), len(got[1]), len(got[2]))
	}
	check := func(h *kgo.Record, w wire.Record) {
		t.Helper()
		if h.Partition != w.Partition {
			t.Errorf("source partition %d landed in hub partition %d", w.Partition, h.Partition)
		}
		if (h.Key == nil) != (w.Key == nil) || !bytes.Equal(h.Key, w.Key) {
			t.Errorf("offset %d: key %q (nil %v), want %q (nil %v)", w.Offset, h.Key, h.Key == nil, w.Key, w.Key == nil)
		}
		if (h.Value == nil) != (w.Value == nil) || !bytes.Equal(h.Value, w.Value) {
			t.Errorf("offset %d: value %q (nil %v), want %q (nil %v)", w.Offset, h.Value, h.Value == nil, w.Value, w.Value == nil)
		}
		if h.Timestamp.UnixMilli() != w.Timestamp {
			t.Errorf("offset %d: timestamp %d, want %d", w.Offset, h.Timestamp.UnixMilli(), w.Timestamp)
		}
		var hs []wire.Header
		for _, x := range h.Headers {
			hs = append(hs, wire.Header{Key: x.Key, Value: x.Value})
		}
		want := append(append([]wire.Header(nil), w.Headers...),
			wire.Header{Key: "edgemirror-edge", Value: []byte("plant-7")},
			wire.Header{Key: "edgemirror-topic", Value: []byte("sensors")},
			wire.Header{Key: "edgemirror-partition", Value: []byte(strconv.Itoa(int(w.Partition)))},
			wire.Header{Key: "edgemirror-offset", Value: []byte(strconv.FormatInt(w.Offset, 10))})
		if fmt.Sprintf("%q", hs) != fmt.Sprintf("%q", want) {
			t.Errorf("offset %d: headers %q, want %q", w.Offset, hs, want)
		}
		for i := range want {
			if i < len(hs) && (hs[i].Value == nil) != (want[i].Value == nil) {
				t.Errorf("offset %d: header %d %q null=%v, want null=%v", w.Offset, i, hs[i].Key, hs[i].Value == nil, want[i].Value == nil)
			}
		}
	}
	check(got[0][0], recs[0])
	check(got[2][0], recs[1])
	check(got[2][1], recs[2])
	if v := metricValue(t, s.m.written); v != 3 {
		t.Errorf("records written metric %v, want 3", v)
	}
}

// TestChunksAppliedInSeqOrder sends seq 2 before seq 1, concurrently: seq
// 2 waits for seq 1, both are answered 200, and the hub holds seq 1's
// records first.
func TestChunksAppliedInSeqOrder(t *testing.T) {
	hub := newHubCluster(t)
	s := newTestServer(t, hub, "", func(c *Config) { c.OrderWait = 20 * time.Second })
	f := newFrameBuilder(t)
	topics := []wire.Topic{{Name: "sensors", Partitions: 1}}
	frame1 := f.frame(chunkOf(1, topics, sensorRecords("sensors", 0, 0, 10)))
	frame2 := f.frame(chunkOf(2, topics, sensorRecords("sensors", 0, 10, 10)))

	var wg sync.WaitGroup
	var second answer
	wg.Add(1)
	go func() {
		defer wg.Done()
		var err error
		if second, err = s.trySend("e1", 5, 1, frame2); err != nil {
			t.Error(err)
		}
	}()
	// Seq 2 waits once the edge expects 1 (set from its floor).
	testkit.Eventually(t, 10*time.Second, "seq 2 waiting", func() error {
		s.mu.Lock()
		es := s.edges["e1"]
		s.mu.Unlock()
		if es == nil {
			return fmt.Errorf("edge not seen")
		}
		es.mu.Lock()
		defer es.mu.Unlock()
		if es.epoch != 5 || es.next != 1 {
			return fmt.Errorf("edge at epoch %d next %d", es.epoch, es.next)
		}
		return nil
	})
	first := s.send(t, "e1", 5, 1, frame1)
	wg.Wait()
	if first.status != 200 || first.ok.Written != 10 || second.status != 200 || second.ok.Written != 10 {
		t.Fatalf("answers: seq 1 %v, seq 2 %v; want both 200 with 10 written", first, second)
	}
	got := sourceOffsets(t, readHub(t, hub, "e1.sensors")[0])
	if fmt.Sprint(got) != fmt.Sprint(seqOffsets(0, 20)) {
		t.Fatalf("hub holds source offsets %v, want 0..19 in order", got)
	}
	if rr := s.resume(t, "e1", 5); rr.NextSeq != 3 {
		t.Errorf("resume next seq %d, want 3", rr.NextSeq)
	}
}

// TestChunksPipelinedShuffled sends ten chunks at once in random order.
func TestChunksPipelinedShuffled(t *testing.T) {
	hub := newHubCluster(t)
	s := newTestServer(t, hub, "", func(c *Config) { c.OrderWait = 20 * time.Second })
	f := newFrameBuilder(t)
	topics := []wire.Topic{{Name: "sensors", Partitions: 2}}
	const n = 10
	frames := make([][]byte, n)
	for i := range frames {
		frames[i] = f.frame(chunkOf(uint64(i+1), topics,
			sensorRecords("sensors", 0, int64(i*5), 5), sensorRecords("sensors", 1, int64(i*3), 3)))
	}
	answers := make([]answer, n)
	var wg sync.WaitGroup
	for _, i := range rand.Perm(n) {
		wg.Add(1)
		go func() {
			defer wg.Done()
			var err error
			if answers[i], err = s.trySend("e1", 5, 1, frames[i]); err != nil {
				t.Error(err)
			}
		}()
	}
	wg.Wait()
	for i, a := range answers {
		if a.status != 200 || a.ok.Written != 8 {
			t.Errorf("seq %d: %v, want 200 written 8", i+1, a)
		}
	}
	hubRecs := readHub(t, hub, "e1.sensors")
	if got := sourceOffsets(t, hubRecs[0]); fmt.Sprint(got) != fmt.Sprint(seqOffsets(0, 5*n)) {
		t.Errorf("partition 0 holds %v, want 0..%d in order", got, 5*n-1)
	}
	if got := sourceOffsets(t, hubRecs[1]); fmt.Sprint(got) != fmt.Sprint(seqOffsets(0, 3*n)) {
		t.Errorf("partition 1 holds %v, want 0..%d in order", got, 3*n-1)
	}
}

// TestChunkAheadTimesOut: a chunk whose predecessor never comes is answered
// 503 with Retry-After after OrderWait, not permanently, and is applied
// once its turn comes.
func TestChunkAheadTimesOut(t *testing.T) {
	hub := newHubCluster(t)
	const wait = 300 * time.Millisecond
	s := newTestServer(t, hub, "", func(c *Config) { c.OrderWait = wait })
	f := newFrameBuilder(t)
	topics := []wire.Topic{{Name: "sensors", Partitions: 1}}
	frame3 := f.frame(chunkOf(3, topics, sensorRecords("sensors", 0, 20, 10)))
	a := s.send(t, "e1", 5, 3, f.frame(chunkOf(3, topics, sensorRecords("sensors", 0, 20, 10)))) // floor 3: no wait
	if a.status != 200 {
		t.Fatalf("seq 3 with floor 3: %v", a)
	}
	a = s.send(t, "e1", 5, 3, f.frame(chunkOf(5, topics, sensorRecords("sensors", 0, 40, 10))))
	if a.status != http.StatusServiceUnavailable || a.retryAfter != "1" || a.err.Permanent {
		t.Fatalf("seq 5 while 4 is missing: %v, want 503 with Retry-After 1, not permanent", a)
	}
	if a.took < wait {
		t.Errorf("answered after %v, before OrderWait %v", a.took, wait)
	}
	if !strings.Contains(a.err.Error, "chunk 5") || !strings.Contains(a.err.Error, "chunk 4") {
		t.Errorf("error %q does not name the chunk and the one it waits for", a.err.Error)
	}
	// Nothing of seq 5 reached the hub; a re-sent seq 3 is a duplicate.
	if a := s.send(t, "e1", 5, 3, frame3); a.status != 200 || a.ok.Written != 0 || a.ok.Duplicates != 10 {
		t.Fatalf("re-sent seq 3: %v", a)
	}
	if got := len(readHub(t, hub, "e1.sensors")[0]); got != 10 {
		t.Fatalf("hub holds %d records, want 10", got)
	}
	if a := s.send(t, "e1", 5, 3, f.frame(chunkOf(4, topics, sensorRecords("sensors", 0, 30, 10)))); a.status != 200 {
		t.Fatalf("seq 4: %v", a)
	}
	if a := s.send(t, "e1", 5, 3, f.frame(chunkOf(5, topics, sensorRecords("sensors", 0, 40, 10)))); a.status != 200 || a.ok.Written != 10 {
		t.Fatalf("seq 5 after 4: %v", a)
	}
}

// TestFloorJump: the agent's floor says every lower seq is done, so a chunk
// at the floor is applied at once, whatever the aggregator expected.
func TestFloorJump(t *testing.T) {
	hub := newHubCluster(t)
	s := newTestServer(t, hub, "", func(c *Config) { c.OrderWait = 10 * time.Second })
	f := newFrameBuilder(t)
	topics := []wire.Topic{{Name: "sensors", Partitions: 1}}
	if a := s.send(t, "e1", 5, 1, f.frame(chunkOf(1, topics, sensorRecords("sensors", 0, 0, 5)))); a.status != 200 {
		t.Fatalf("seq 1: %v", a)
	}
	// Seqs 2..6 were rejected or dropped by the agent: floor 7.
	a := s.send(t, "e1", 5, 7, f.frame(chunkOf(7, topics, sensorRecords("sensors", 0, 100, 5))))
	if a.status != 200 || a.ok.Written != 5 || a.took > 5*time.Second {
		t.Fatalf("seq 7 with floor 7: %v after %v, want 200 at once", a, a.took)
	}
	if rr := s.resume(t, "e1", 5); rr.NextSeq != 8 {
		t.Errorf("resume next seq %d, want 8", rr.NextSeq)
	}
	// A seq below the floor is a re-send: applied through deduplication.
	if a := s.send(t, "e1", 5, 7, f.frame(chunkOf(2, topics, sensorRecords("sensors", 0, 5, 5)))); a.status != 200 || a.ok.Written != 0 {
		t.Fatalf("seq 2 below the floor: %v, want 200 with nothing written (below the watermark)", a)
	}
	if got := sourceOffsets(t, readHub(t, hub, "e1.sensors")[0]); fmt.Sprint(got) != "[0 1 2 3 4 100 101 102 103 104]" {
		t.Errorf("hub holds %v", got)
	}
}

// TestFloorRaiseWakesWaitingChunk: seq 3 waits for seq 2; the agent then
// rejects seq 2 and raises its floor to 3 (on its next request, seq 4).
// Seq 3 is now the expected chunk and must be applied, not left to time out.
func TestFloorRaiseWakesWaitingChunk(t *testing.T) {
	hub := newHubCluster(t)
	const wait = 4 * time.Second
	s := newTestServer(t, hub, "", func(c *Config) { c.OrderWait = wait })
	f := newFrameBuilder(t)
	topics := []wire.Topic{{Name: "sensors", Partitions: 1}}
	if a := s.send(t, "e1", 5, 1, f.frame(chunkOf(1, topics, sensorRecords("sensors", 0, 0, 5)))); a.status != 200 {
		t.Fatalf("seq 1: %v", a)
	}
	frame3 := f.frame(chunkOf(3, topics, sensorRecords("sensors", 0, 10, 5)))
	var wg sync.WaitGroup
	var third answer
	wg.Add(1)
	go func() {
		defer wg.Done()
		var err error
		if third, err = s.trySend("e1", 5, 2, frame3); err != nil {
			t.Error(err)
		}
	}()
	waitInSequence(t, 1)
	fourth := s.send(t, "e1", 5, 3, f.frame(chunkOf(4, topics, sensorRecords("sensors", 0, 15, 5))))
	wg.Wait()
	if third.status != 200 || fourth.status != 200 {
		t.Fatalf("seq 3: %v after %v; seq 4: %v after %v; want both 200 well before OrderWait %v",
			third, third.took, fourth, fourth.took, wait)
	}
	if third.took > wait/2 || fourth.took > wait/2 {
		t.Errorf("seq 3 took %v, seq 4 took %v: they waited for OrderWait %v", third.took, fourth.took, wait)
	}
}

// TestDuplicateChunk: a chunk applied before writes nothing when it comes
// again, and an overlapping chunk writes only what the hub lacks.
func TestDuplicateChunk(t *testing.T) {
	hub := newHubCluster(t)
	s := newTestServer(t, hub, "", nil)
	f := newFrameBuilder(t)
	topics := []wire.Topic{{Name: "sensors", Partitions: 2}}
	frame1 := f.frame(chunkOf(1, topics, sensorRecords("sensors", 0, 0, 10), sensorRecords("sensors", 1, 0, 4)))
	if a := s.send(t, "e1", 5, 1, frame1); a.status != 200 || a.ok.Written != 14 || a.ok.Duplicates != 0 {
		t.Fatalf("first send: %v", a)
	}
	if a := s.send(t, "e1", 5, 1, frame1); a.status != 200 || !reflect.DeepEqual(a.ok, wire.ChunkResponse{Seq: 1, Records: 14, Written: 0, Duplicates: 14}) {
		t.Fatalf("re-send: %v, want written 0 duplicates 14", a)
	}
	// The agent lost its ack and re-read: seq 2 overlaps seq 1.
	frame2 := f.frame(chunkOf(2, topics, sensorRecords("sensors", 0, 5, 10), sensorRecords("sensors", 1, 4, 1)))
	if a := s.send(t, "e1", 5, 1, frame2); a.status != 200 || a.ok.Written != 6 || a.ok.Duplicates != 5 {
		t.Fatalf("overlapping chunk: %v, want written 6 duplicates 5", a)
	}
	got := readHub(t, hub, "e1.sensors")
	if o := sourceOffsets(t, got[0]); fmt.Sprint(o) != fmt.Sprint(seqOffsets(0, 15)) {
		t.Errorf("partition 0 holds %v, want 0..14 once each", o)
	}
	if o := sourceOffsets(t, got[1]); fmt.Sprint(o) != fmt.Sprint(seqOffsets(0, 5)) {
		t.Errorf("partition 1 holds %v, want 0..4 once each", o)
	}
	if v := metricValue(t, s.m.duplicates); v != 19 {
		t.Errorf("duplicates metric %v, want 19", v)
	}
}

// TestEpochTakeover: a new buffer epoch of an edge replaces the old one;
// chunks of the old epoch are then refused with 409, not permanently.
func TestEpochTakeover(t *testing.T) {
	hub := newHubCluster(t)
	s := newTestServer(t, hub, "", nil)
	f := newFrameBuilder(t)
	topics := []wire.Topic{{Name: "sensors", Partitions: 1}}
	const oldEpoch, newEpoch = 1111, 2222
	if a := s.send(t, "e1", oldEpoch, 1, f.frame(chunkOf(1, topics, sensorRecords("sensors", 0, 0, 5)))); a.status != 200 {
		t.Fatalf("old epoch seq 1: %v", a)
	}
	// The new buffer starts at seq 1 again; what it re-reads is deduplicated.
	if a := s.send(t, "e1", newEpoch, 1, f.frame(chunkOf(1, topics, sensorRecords("sensors", 0, 3, 5)))); a.status != 200 || a.ok.Written != 3 || a.ok.Duplicates != 2 {
		t.Fatalf("new epoch seq 1: %v, want written 3 duplicates 2", a)
	}
	a := s.send(t, "e1", oldEpoch, 1, f.frame(chunkOf(2, topics, sensorRecords("sensors", 0, 5, 5))))
	if a.status != http.StatusConflict || a.err.Permanent {
		t.Fatalf("old epoch after takeover: %v, want 409 not permanent", a)
	}
	if rr := s.resume(t, "e1", oldEpoch); rr.NextSeq != 0 {
		t.Errorf("resume for the old epoch: %+v, want next seq 0", rr)
	}
	if rr := s.resume(t, "e1", newEpoch); rr != (wire.ResumeResponse{Epoch: newEpoch, NextSeq: 2, MaxSeq: 1}) {
		t.Errorf("resume for the new epoch: %+v", rr)
	}
	if got := sourceOffsets(t, readHub(t, hub, "e1.sensors")[0]); fmt.Sprint(got) != fmt.Sprint(seqOffsets(0, 8)) {
		t.Errorf("hub holds %v, want 0..7", got)
	}
	// Another edge is not affected.
	if a := s.send(t, "e2", oldEpoch, 1, f.frame(chunkOf(1, topics, sensorRecords("sensors", 0, 0, 5)))); a.status != 200 {
		t.Errorf("other edge with the same epoch number: %v", a)
	}
}

// TestRejectedRequests: requests that can never succeed are answered with a
// permanent 400 or 413 and write nothing.
func TestRejectedRequests(t *testing.T) {
	hub := newHubCluster(t)
	s := newTestServer(t, hub, "", func(c *Config) { c.MaxChunkBytes = 64 << 10; c.MaxRawBytes = 64 << 10 })
	f := newFrameBuilder(t)
	topics := []wire.Topic{{Name: "sensors", Partitions: 1}}
	good := f.frame(chunkOf(1, topics, sensorRecords("sensors", 0, 0, 5)))
	corrupt := append([]byte(nil), good...)
	corrupt[len(corrupt)-1] ^= 0xff
	badVersion := append([]byte(nil), good...)
	badVersion[4] = 9
	truncated := good[:len(good)-3]

	// Incompressible, above MaxChunkBytes on the wire.
	noneEnc, err := wire.NewEncoder(wire.CodecNone, wire.LevelDefault)
	if err != nil {
		t.Fatal(err)
	}
	defer noneEnc.Close()
	big := make([]byte, 70<<10)
	for i := range big {
		big[i] = byte(rand.Uint32())
	}
	oversize, err := noneEnc.Encode(nil, chunkOf(1, topics, []wire.Record{{Topic: "sensors", Offset: 0, Value: big}}))
	if err != nil {
		t.Fatal(err)
	}
	// Small on the wire, above MaxRawBytes once decompressed.
	bomb := f.frame(chunkOf(1, topics, []wire.Record{{Topic: "sensors", Offset: 0, Value: make([]byte, 200<<10)}}))
	if len(bomb) > 64<<10 {
		t.Fatalf("test frame of %d bytes does not compress", len(bomb))
	}
	// Offsets of one partition must increase within a chunk.
	unsorted := f.frame(chunkOf(1, topics, sensorRecords("sensors", 0, 5, 2), sensorRecords("sensors", 0, 0, 2)))
	epoch, floor := "5", "1"
	cases := []struct {
		name   string
		req    request
		status int
	}{
		{"garbage body", request{body: []byte("hello, aggregator")}, 400},
		{"empty body", request{body: nil}, 400},
		{"checksum mismatch", request{body: corrupt}, 400},
		{"unknown version", request{body: badVersion}, 400},
		{"truncated frame", request{body: truncated}, 400},
		{"unsorted offsets", request{body: unsorted}, 400},
		{"oversize frame", request{body: oversize}, 413},
		{"oversize frame without length", request{body: oversize, chunked: true}, 413},
		{"decompresses beyond the raw limit", request{body: bomb}, 413},
		{"no edge header", request{noEdge: true, body: good}, 400},
		{"invalid edge", request{edge: "plant 7", body: good}, 400},
		{"edge dot dot", request{edge: "..", body: good}, 400},
		{"no epoch", request{epoch: "", body: good}, 400},
		{"epoch not a number", request{epoch: "seven", body: good}, 400},
		{"negative epoch", request{epoch: "-5", body: good}, 400},
		{"no floor", request{noFloor: true, body: good}, 400},
		{"floor not a number", request{floor: "1.5", body: good}, 400},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			r := tc.req
			if r.edge == "" && !r.noEdge {
				r.edge = "e1"
			}
			if r.epoch == "" && tc.name != "no epoch" {
				r.epoch = epoch
			}
			if r.floor == "" && !r.noFloor {
				r.floor = floor
			}
			a := post(t, s.client, s.url, r)
			if a.status != tc.status || !a.err.Permanent || a.err.Error == "" {
				t.Fatalf("answer %v, want %d, permanent, with a message", a, tc.status)
			}
		})
	}
	if got := readHub(t, hub, "e1.sensors"); len(got[0]) != 0 {
		t.Errorf("rejected requests wrote %d records", len(got[0]))
	}
	// The edge is not stuck: the good chunk is applied.
	if a := s.send(t, "e1", 5, 1, good); a.status != 200 || a.ok.Written != 5 {
		t.Errorf("good chunk after the rejections: %v", a)
	}
}

// TestWrongContentTypeRejected: docs/protocol.md 3.2 lists a wrong
// Content-Type among the permanent 400 answers.
func TestWrongContentTypeRejected(t *testing.T) {
	hub := newHubCluster(t)
	s := newTestServer(t, hub, "", nil)
	f := newFrameBuilder(t)
	frame := f.frame(chunkOf(1, []wire.Topic{{Name: "sensors", Partitions: 1}}, sensorRecords("sensors", 0, 0, 1)))
	a := post(t, s.client, s.url, request{edge: "e1", epoch: "5", floor: "1", contentType: "text/plain", body: frame})
	if a.status != 400 || !a.err.Permanent {
		t.Fatalf("chunk sent as text/plain: %v, want 400 permanent", a)
	}
}

// TestEdgesIndependent: an edge whose chunk waits for its turn does not
// hold up another edge.
func TestEdgesIndependent(t *testing.T) {
	hub := newHubCluster(t)
	const wait = 1500 * time.Millisecond
	s := newTestServer(t, hub, "", func(c *Config) { c.OrderWait = wait })
	f := newFrameBuilder(t)
	topics := []wire.Topic{{Name: "sensors", Partitions: 1}}
	frameAhead := f.frame(chunkOf(2, topics, sensorRecords("sensors", 0, 0, 5)))
	done := make(chan answer, 1)
	go func() {
		a, err := s.trySend("slow", 5, 1, frameAhead)
		if err != nil {
			t.Error(err)
		}
		done <- a
	}()
	waitInSequence(t, 1)
	for i := 1; i <= 3; i++ {
		a := s.send(t, "fast", 6, 1, f.frame(chunkOf(uint64(i), topics, sensorRecords("sensors", 0, int64(5*i), 5))))
		if a.status != 200 || a.took > wait/2 {
			t.Errorf("fast edge seq %d: %v after %v", i, a, a.took)
		}
	}
	if a := <-done; a.status != 503 {
		t.Errorf("slow edge's early chunk: %v, want 503", a)
	}
}

// TestLossReports: a loss report is stored once, however often it is
// sent, and listed per edge.
func TestLossReports(t *testing.T) {
	hub := newHubCluster(t)
	s := newTestServer(t, hub, "", nil)
	rep := wire.LossReport{Ranges: []wire.LossRange{
		{Topic: "sensors", Partition: 2, FirstOffset: 1000, LastOffset: 1999, Records: 1000, Reason: wire.LossReasonDropOldest},
		{Topic: "sensors", Partition: 0, FirstOffset: 0, LastOffset: 40, Records: 41, Reason: wire.LossReasonEdgeRetention},
	}}
	postLoss := func(edge string, body any) (int, map[string]any) {
		t.Helper()
		b, _ := json.Marshal(body)
		req, _ := http.NewRequest(http.MethodPost, s.url+wire.PathLosses, bytes.NewReader(b))
		req.Header.Set(wire.HeaderEdge, edge)
		req.Header.Set(wire.HeaderEpoch, "5")
		req.Header.Set("Content-Type", wire.ContentTypeJSON)
		resp, err := s.client.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		var out map[string]any
		_ = json.NewDecoder(resp.Body).Decode(&out)
		return resp.StatusCode, out
	}
	list := func(query string) []wire.LossEvent {
		t.Helper()
		var out []wire.LossEvent
		if code := getJSON(t, s.client, s.url+wire.PathLosses+query, nil, &out); code != 200 {
			t.Fatalf("GET losses%s: %d", query, code)
		}
		return out
	}
	if code, body := postLoss("ship-42", rep); code != 200 || body["ranges"] != float64(2) {
		t.Fatalf("POST losses: %d %v", code, body)
	}
	if code, _ := postLoss("ship-42", rep); code != 200 { // the answer was lost; the agent re-sends
		t.Fatalf("re-sent report: %d", code)
	}
	if code, _ := postLoss("ship-43", wire.LossReport{Ranges: rep.Ranges[:1]}); code != 200 {
		t.Fatalf("other edge: %d", code)
	}
	got := list("?edge=ship-42")
	if len(got) != 2 {
		t.Fatalf("ship-42 has %d loss ranges stored, want 2: %+v", len(got), got)
	}
	seen := map[wire.LossRange]bool{}
	for _, l := range got {
		if l.Edge != "ship-42" || l.Time.IsZero() || l.ID == "" || l.Type != "loss" {
			t.Errorf("stored %+v", l)
		}
		seen[wire.LossRange{Topic: l.Topic, Partition: l.Partition, FirstOffset: l.FirstOffset, LastOffset: l.LastOffset,
			Records: l.Records, Reason: l.Reason}] = true
	}
	for _, r := range rep.Ranges {
		if !seen[r] {
			t.Errorf("range %+v not stored as sent", r)
		}
	}
	if all := list(""); len(all) != 3 {
		t.Errorf("%d ranges over all edges, want 3", len(all))
	}
	if none := list("?edge=nobody"); none == nil || len(none) != 0 {
		t.Errorf("unknown edge lists %v, want []", none)
	}
	if v := metricValue(t, s.m.lost.WithLabelValues("ship-43", wire.LossReasonDropOldest)); v != 1000 {
		t.Errorf("reported lost records of ship-43: %v, want 1000", v)
	}

	for name, body := range map[string]any{
		"last before first": wire.LossReport{Ranges: []wire.LossRange{{Topic: "t", FirstOffset: 5, LastOffset: 4, Reason: "x"}}},
		"no topic":          wire.LossReport{Ranges: []wire.LossRange{{FirstOffset: 1, LastOffset: 4, Reason: "x"}}},
		"negative records":  wire.LossReport{Ranges: []wire.LossRange{{Topic: "t", LastOffset: 4, Records: -1, Reason: "x"}}},
		"not json":          "{",
	} {
		if code, _ := postLoss("ship-42", body); code != 400 {
			t.Errorf("%s: status %d, want 400", name, code)
		}
	}
	if code, _ := postLoss("bad edge", rep); code != 400 {
		t.Errorf("invalid edge id: status %d, want 400", code)
	}
	if n := len(list("")); n != 3 {
		t.Errorf("%d ranges after invalid reports, want 3", n)
	}
}

// TestLossReportCountedOnce: a re-sent report must not count its records
// twice in edgemirror_aggregator_reported_lost_records_total.
func TestLossReportCountedOnce(t *testing.T) {
	hub := newHubCluster(t)
	s := newTestServer(t, hub, "", nil)
	body, _ := json.Marshal(wire.LossReport{Ranges: []wire.LossRange{
		{Topic: "sensors", Partition: 2, FirstOffset: 1000, LastOffset: 1999, Records: 1000, Reason: wire.LossReasonDropOldest}}})
	for i := 0; i < 2; i++ {
		req, _ := http.NewRequest(http.MethodPost, s.url+wire.PathLosses, bytes.NewReader(body))
		req.Header.Set(wire.HeaderEdge, "ship-42")
		resp, err := s.client.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode != 200 {
			t.Fatalf("POST %d: %s", i, resp.Status)
		}
	}
	if v := metricValue(t, s.m.lost.WithLabelValues("ship-42", wire.LossReasonDropOldest)); v != 1000 {
		t.Fatalf("reported lost records %v after sending the same report twice, want 1000", v)
	}
}

// TestHealthAndReadiness: /healthz is always 200; /readyz and new chunks
// turn 503 (with Retry-After) while draining.
func TestHealthAndReadiness(t *testing.T) {
	hub := newHubCluster(t)
	s := newTestServer(t, hub, "", nil)
	status := func(path string) int {
		t.Helper()
		var body map[string]string
		return getJSON(t, s.client, s.url+path, nil, &body)
	}
	if c := status(PathHealthz); c != 200 {
		t.Errorf("healthz %d", c)
	}
	if c := status(PathReadyz); c != 200 {
		t.Errorf("readyz %d before draining", c)
	}
	s.draining.Store(true)
	if c := status(PathReadyz); c != 503 {
		t.Errorf("readyz %d while draining, want 503", c)
	}
	if c := status(PathHealthz); c != 200 {
		t.Errorf("healthz %d while draining, want 200", c)
	}
	f := newFrameBuilder(t)
	a := s.send(t, "e1", 5, 1, f.frame(chunkOf(1, []wire.Topic{{Name: "sensors", Partitions: 1}}, sensorRecords("sensors", 0, 0, 1))))
	if a.status != 503 || a.retryAfter == "" || a.err.Permanent {
		t.Errorf("chunk while draining: %v, want 503 with Retry-After, not permanent", a)
	}
	if got := readHub(t, hub, "e1.sensors"); len(got[0]) != 0 {
		t.Errorf("chunk sent while draining wrote %d records", len(got[0]))
	}
}

// TestHubDownIsRetryable: while the hub is unreachable a chunk is answered
// 503, never a permanent status.
func TestHubDownIsRetryable(t *testing.T) {
	hub := newHubCluster(t)
	s := newTestServer(t, hub, "", func(c *Config) { c.HubTimeout = 2 * time.Second })
	f := newFrameBuilder(t)
	topics := []wire.Topic{{Name: "sensors", Partitions: 1}}
	if a := s.send(t, "e1", 5, 1, f.frame(chunkOf(1, topics, sensorRecords("sensors", 0, 0, 5)))); a.status != 200 {
		t.Fatalf("seq 1: %v", a)
	}
	hub.Close()
	a := s.send(t, "e1", 5, 1, f.frame(chunkOf(2, topics, sensorRecords("sensors", 0, 5, 5))))
	if a.status != 503 || a.err.Permanent || a.retryAfter == "" {
		t.Fatalf("chunk with the hub down: %v, want 503 with Retry-After, not permanent", a)
	}
	if rr := s.resume(t, "e1", 5); rr.NextSeq != 2 {
		t.Errorf("resume next seq %d after a failed apply, want 2", rr.NextSeq)
	}
}

// waitInSequence waits until n chunk requests are blocked in sequence()
// waiting for their turn, as goroutine stacks show.
func waitInSequence(t testing.TB, n int) {
	t.Helper()
	testkit.Eventually(t, 10*time.Second, fmt.Sprintf("%d chunks waiting for their turn", n), func() error {
		buf := make([]byte, 1<<20)
		buf = buf[:runtime.Stack(buf, true)]
		waiting := 0
		for _, g := range strings.Split(string(buf), "\n\n") {
			if strings.Contains(g, "[select") && strings.Contains(g, "aggregator.(*server).sequence(") {
				waiting++
			}
		}
		if waiting != n {
			return fmt.Errorf("%d waiting", waiting)
		}
		return nil
	})
}

// histogram returns the count and sum of a histogram.
func histogram(t testing.TB, h prometheus.Histogram) (uint64, float64) {
	t.Helper()
	var m dto.Metric
	if err := h.Write(&m); err != nil {
		t.Fatal(err)
	}
	return m.Histogram.GetSampleCount(), m.Histogram.GetSampleSum()
}

// TestGroupLingerGathersChunks: right after a transaction of an edge with
// chunks waiting, the next one waits for a full group (--group-linger);
// a chunk of an idle edge never waits.
func TestGroupLingerGathersChunks(t *testing.T) {
	hub := newHubCluster(t)
	s := newTestServer(t, hub, "", func(c *Config) { c.MaxGroupChunks = 4 })
	// Longer than any test could take, so that only a full group (or its
	// absence) decides when the lingering transaction starts.
	s.cfg.GroupLinger = time.Hour
	f := newFrameBuilder(t)
	topics := []wire.Topic{{Name: "sensors", Partitions: 1}}
	frames := make([][]byte, 7)
	for seq := uint64(1); seq < uint64(len(frames)); seq++ {
		frames[seq] = f.frame(chunkOf(seq, topics, sensorRecords("sensors", 0, int64(seq-1)*10, 10)))
	}

	held, release := holdNextCommit(hub)
	answers := make([]answer, 7)
	var wg sync.WaitGroup
	send := func(seq uint64) {
		wg.Add(1)
		go func() {
			defer wg.Done()
			var err error
			if answers[seq], err = s.trySend("e1", 1, 1, frames[seq]); err != nil {
				t.Error(err)
			}
		}()
	}
	pending := func(n int) func() error {
		return edgeStateIs(s, "e1", func(es *edgeState) error {
			if len(es.pending) != n {
				return fmt.Errorf("%d chunks pending, want %d", len(es.pending), n)
			}
			return nil
		})
	}
	send(1)
	select {
	case <-held:
	case <-time.After(20 * time.Second):
		t.Fatal("chunk 1's transaction never committed")
	}
	send(2)
	send(3)
	testkit.Eventually(t, 20*time.Second, "chunks 2 and 3 wait behind chunk 1", pending(3))
	close(release)
	// Chunk 1 is answered; 2 and 3 wait for a full group.
	testkit.Eventually(t, 20*time.Second, "chunk 1 answered, 2 and 3 lingering", pending(2))
	testkit.Eventually(t, 20*time.Second, "the runner lingers", edgeStateIs(s, "e1", func(es *edgeState) error {
		if !es.lingering {
			return errors.New("not lingering")
		}
		return nil
	}))
	if n, _ := histogram(t, s.m.txnChunks); n != 1 {
		t.Fatalf("%d transactions before the group was full, want 1", n)
	}
	send(4)
	send(5)
	wg.Wait()
	for seq := 1; seq <= 5; seq++ {
		if a := answers[seq]; a.status != http.StatusOK || a.ok.Written != 10 {
			t.Errorf("chunk %d: %v, want 200 with 10 written", seq, a)
		}
	}
	if n, sum := histogram(t, s.m.txnChunks); n != 2 || sum != 5 {
		t.Errorf("%d transactions of %v chunks, want 2 of 5 (1, then 2..5 together)", n, sum)
	}
	if n, _ := histogram(t, s.m.groupLinger); n != 1 {
		t.Errorf("%d lingers, want 1", n)
	}

	// The edge is idle now: its next chunk is written at once.
	testkit.Eventually(t, 20*time.Second, "the runner finished", edgeStateIs(s, "e1", func(es *edgeState) error {
		if es.running {
			return errors.New("still running")
		}
		return nil
	}))
	send(6)
	wg.Wait()
	if a := answers[6]; a.status != http.StatusOK || a.ok.Written != 10 {
		t.Errorf("chunk 6: %v, want 200 with 10 written", a)
	}
	if n, _ := histogram(t, s.m.groupLinger); n != 1 {
		t.Errorf("%d lingers after an idle edge's chunk, want still 1", n)
	}
	if got := sourceOffsets(t, readHub(t, hub, "e1.sensors")[0]); fmt.Sprint(got) != fmt.Sprint(seqOffsets(0, 60)) {
		t.Errorf("hub holds %v, want 0..59 once each, in order", got)
	}
}

// edgeStateIs returns a poll of ok on the edge's state, under its lock.
func edgeStateIs(s *testServer, edge string, ok func(*edgeState) error) func() error {
	return func() error {
		es, err := s.edge(edge)
		if err != nil {
			return err
		}
		es.mu.Lock()
		defer es.mu.Unlock()
		return ok(es)
	}
}

// TestLingeringChunkIsNotAhead checks that a chunk in its turn, waiting for
// its group to fill for longer than --order-wait, is written when the linger
// ends: --order-wait is for chunks that arrived before their predecessor.
func TestLingeringChunkIsNotAhead(t *testing.T) {
	hub := newHubCluster(t)
	s := newTestServer(t, hub, "", func(c *Config) {
		c.MaxGroupChunks = 4
		c.OrderWait = 100 * time.Millisecond
		c.GroupLinger = time.Second
	})
	f := newFrameBuilder(t)
	topics := []wire.Topic{{Name: "sensors", Partitions: 1}}
	held, release := holdNextCommit(hub)
	answers := make(chan answer, 2)
	send := func(seq uint64) {
		frame := f.frame(chunkOf(seq, topics, sensorRecords("sensors", 0, int64(seq-1)*10, 10)))
		go func() {
			a, err := s.trySend("e1", 1, 1, frame)
			if err != nil {
				t.Error(err)
			}
			answers <- a
		}()
	}
	send(1)
	select {
	case <-held:
	case <-time.After(20 * time.Second):
		t.Fatal("chunk 1's transaction never committed")
	}
	send(2) // in its turn, behind chunk 1 being applied
	testkit.Eventually(t, 20*time.Second, "chunk 2 waits", edgeStateIs(s, "e1", func(es *edgeState) error {
		if es.pending[2] == nil {
			return errors.New("chunk 2 not pending")
		}
		return nil
	}))
	close(release)
	for range 2 {
		select {
		case a := <-answers:
			if a.status != http.StatusOK || a.ok.Written != 10 {
				t.Errorf("answer %v, want 200 with 10 written", a)
			}
		case <-time.After(20 * time.Second):
			t.Fatal("no answer")
		}
	}
	if n, sum := histogram(t, s.m.groupLinger); n != 1 || sum < 0.9 {
		t.Errorf("%d lingers of %.3fs in all, want 1 of about 1s (a group of one never fills)", n, sum)
	}
}
