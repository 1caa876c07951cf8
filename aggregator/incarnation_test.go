package aggregator

import (
	"net/http"
	"testing"

	"github.com/edgemirror/edgemirror/internal/wire"
)

// TestWatermarkAnswer: GET /v1/watermark answers the hub's highest source
// offset of the calling edge's partition (-1 before anything was written,
// also without a hub topic), counts an edge partition that ends at or below
// it, and refuses bad queries with 400.
func TestWatermarkAnswer(t *testing.T) {
	hub := newHubCluster(t)
	s := newTestServer(t, hub, "", nil)
	f := newFrameBuilder(t)
	h := http.Header{}
	h.Set(wire.HeaderEdge, "plant-wm")
	ask := func(query string) (int, wire.WatermarkResponse) {
		t.Helper()
		var wr wire.WatermarkResponse
		code := getJSON(t, s.client, s.url+wire.PathWatermark+"?"+query, h, &wr)
		return code, wr
	}
	if code, wr := ask("topic=t&partition=0&log_end=5"); code != http.StatusOK || wr.Offset != -1 {
		t.Fatalf("before any write: %d %+v, want 200 offset -1", code, wr)
	}
	topics := []wire.Topic{{Name: "t", Partitions: 2}}
	if a := s.send(t, "plant-wm", 1, 1, f.frame(chunkOf(1, topics, sensorRecords("t", 0, 0, 30)))); a.status != http.StatusOK {
		t.Fatalf("chunk: %v", a)
	}
	if code, wr := ask("topic=t&partition=0&log_end=31"); code != http.StatusOK || wr.Offset != 29 || wr.Topic != "t" {
		t.Fatalf("after 30 records: %d %+v, want offset 29", code, wr)
	}
	if code, wr := ask("topic=t&partition=1&log_end=0"); code != http.StatusOK || wr.Offset != -1 {
		t.Fatalf("partition 1: %d %+v, want offset -1", code, wr)
	}
	if v := metricValue(t, s.m.incarnations.WithLabelValues("plant-wm")); v != 0 {
		t.Fatalf("incarnation conflicts %v before any, want 0", v)
	}
	if code, _ := ask("topic=t&partition=0&log_end=10"); code != http.StatusOK {
		t.Fatalf("conflicting log end: %d", code)
	}
	if v := metricValue(t, s.m.incarnations.WithLabelValues("plant-wm")); v != 1 {
		t.Errorf("incarnation conflicts %v after a log end of 10 below watermark 29, want 1", v)
	}
	for _, q := range []string{"partition=0", "topic=t", "topic=t&partition=-1", "topic=t&partition=x", "topic=t&partition=0&log_end=-2", "topic=bad/name&partition=0"} {
		if code, _ := ask(q); code != http.StatusBadRequest {
			t.Errorf("query %q: %d, want 400", q, code)
		}
	}
}
