package aggregator

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"path/filepath"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/edgemirror/edgemirror/internal/testkit"
	"github.com/edgemirror/edgemirror/internal/wire"
)

func (s *testServer) heartbeat(t testing.TB, edge string, hb wire.Heartbeat) int {
	t.Helper()
	b, _ := json.Marshal(hb)
	req, _ := http.NewRequest(http.MethodPost, s.url+wire.PathHeartbeat, bytes.NewReader(b))
	req.Header.Set(wire.HeaderEdge, edge)
	req.Header.Set("Content-Type", wire.ContentTypeJSON)
	resp, err := s.client.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	return resp.StatusCode
}

func (s *testServer) edgesView(t testing.TB) map[string]wire.EdgeStatus {
	t.Helper()
	var rows []wire.EdgeStatus
	if code := getJSON(t, s.client, s.url+wire.PathEdges, nil, &rows); code != 200 {
		t.Fatalf("GET %s: %d", wire.PathEdges, code)
	}
	out := make(map[string]wire.EdgeStatus, len(rows))
	for i, r := range rows {
		if i > 0 && rows[i-1].Edge >= r.Edge {
			t.Errorf("rows not sorted by edge: %q before %q", rows[i-1].Edge, r.Edge)
		}
		out[r.Edge] = r
	}
	return out
}

func (s *testServer) postLosses(t testing.TB, edge string, rep wire.LossReport) int {
	t.Helper()
	b, _ := json.Marshal(rep)
	req, _ := http.NewRequest(http.MethodPost, s.url+wire.PathLosses, bytes.NewReader(b))
	req.Header.Set(wire.HeaderEdge, edge)
	req.Header.Set("Content-Type", wire.ContentTypeJSON)
	resp, err := s.client.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	return resp.StatusCode
}

// TestFleetViewSharedThroughHub: a heartbeat received by one aggregator is
// in the fleet view of another one with its own (empty) state, because the
// view is kept in the hub's status topic; configured edges never heard of
// are never-seen; a silent edge turns disconnected and its RPO grows.
func TestFleetViewSharedThroughHub(t *testing.T) {
	hub := newHubCluster(t)
	edges := func(c *Config) {
		c.DisconnectAfter = 1500 * time.Millisecond
		c.BehindAfter = 30 * time.Second
		c.FleetRefresh = 100 * time.Millisecond
		c.EdgeIDs = func() []string { return []string{"plant-1", "plant-9"} }
	}
	a := newTestServer(t, hub, "", func(c *Config) { edges(c); c.AggregatorID = "agg-a" })
	b := newTestServer(t, hub, filepath.Join(t.TempDir(), "b"), func(c *Config) { edges(c); c.AggregatorID = "agg-b" })

	hb := wire.Heartbeat{Version: "1.2.3", Epoch: 7, BacklogChunks: 3, BacklogRecords: 1200, BacklogBytes: 65536,
		RPOSeconds: 4.5, BufferFillRatio: 0.25, RecordsPerSecond: 310, LinkUp: true, IntervalSeconds: 10}
	if code := a.heartbeat(t, "plant-1", hb); code != 200 {
		t.Fatalf("heartbeat: %d", code)
	}
	slow := hb
	slow.RPOSeconds, slow.Version = 95, "1.2.2"
	if code := a.heartbeat(t, "plant-2", slow); code != 200 {
		t.Fatalf("heartbeat: %d", code)
	}
	before := time.Now()
	for name, s := range map[string]*testServer{"receiving aggregator": a, "other aggregator": b} {
		v := s.edgesView(t)
		if len(v) != 3 {
			t.Fatalf("%s: %d edges, want 3: %+v", name, len(v), v)
		}
		p1 := v["plant-1"]
		if p1.State != wire.EdgeOK || p1.BacklogRecords != 1200 || p1.BacklogBytes != 65536 || p1.BacklogChunks != 3 ||
			p1.RPOSeconds != 4.5 || p1.Version != "1.2.3" || p1.RecordsPerSecond != 310 || p1.Aggregator != "agg-a" ||
			p1.LastSeen == nil || before.Sub(*p1.LastSeen) > 5*time.Second || p1.LastSeen.After(before) {
			t.Errorf("%s: plant-1 = %+v", name, p1)
		}
		if p2 := v["plant-2"]; p2.State != wire.EdgeBehind || p2.RPOSeconds != 95 {
			t.Errorf("%s: plant-2 = %+v, want behind with rpo 95", name, p2)
		}
		if p9 := v["plant-9"]; p9.State != wire.EdgeNeverSeen || p9.LastSeen != nil {
			t.Errorf("%s: plant-9 = %+v, want never-seen", name, p9)
		}
	}

	// plant-1 falls silent: both aggregators show it disconnected, with
	// the RPO growing by the time since it was last heard from.
	var first wire.EdgeStatus
	testkit.Eventually(t, 20*time.Second, "plant-1 disconnected on the other aggregator", func() error {
		first = b.edgesView(t)["plant-1"]
		if first.State != wire.EdgeDisconnected {
			return fmt.Errorf("state %s", first.State)
		}
		return nil
	})
	if want := 4.5 + first.SecondsSinceSeen; first.RPOSeconds < 4.5+1.5 || first.RPOSeconds != want {
		t.Errorf("disconnected rpo %v, want 4.5 + %v", first.RPOSeconds, first.SecondsSinceSeen)
	}
	testkit.Eventually(t, 20*time.Second, "rpo of the disconnected edge growing", func() error {
		now := b.edgesView(t)["plant-1"]
		if grown := now.RPOSeconds - first.RPOSeconds; grown < 1 {
			return fmt.Errorf("rpo %v, %v before", now.RPOSeconds, first.RPOSeconds)
		}
		return nil
	})

	// A heartbeat to the other aggregator brings it back everywhere.
	if code := b.heartbeat(t, "plant-1", hb); code != 200 {
		t.Fatalf("heartbeat: %d", code)
	}
	testkit.Eventually(t, 20*time.Second, "plant-1 ok again on the first aggregator", func() error {
		if p1 := a.edgesView(t)["plant-1"]; p1.State != wire.EdgeOK || p1.Aggregator != "agg-b" || p1.RPOSeconds != 4.5 {
			return fmt.Errorf("%+v", p1)
		}
		return nil
	})

	// Per-edge metrics come from the same view.
	reg := prometheus.NewPedanticRegistry()
	if err := reg.Register(&fleetCollector{f: a.fleet}); err != nil {
		t.Fatal(err)
	}
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	got := map[string]float64{}
	for _, mf := range mfs {
		for _, m := range mf.Metric {
			key := mf.GetName()
			for _, l := range m.Label {
				key += "/" + l.GetValue()
			}
			v := m.GetGauge().GetValue() + m.GetCounter().GetValue()
			got[key] = v
		}
	}
	for k, want := range map[string]float64{
		"edgemirror_aggregator_edge_backlog_records/plant-1":    1200,
		"edgemirror_aggregator_edge_backlog_bytes/plant-1":      65536,
		"edgemirror_aggregator_edge_rpo_seconds/plant-1":        4.5,
		"edgemirror_aggregator_edge_up/plant-1":                 1,
		"edgemirror_aggregator_edge_up/plant-9":                 0,
		"edgemirror_aggregator_edge_lost_records_total/plant-9": 0,
		"edgemirror_aggregator_fleet_edges/never-seen":          1,
	} {
		if got[k] != want {
			t.Errorf("%s = %v, want %v", k, got[k], want)
		}
	}
	if ts := got["edgemirror_aggregator_edge_last_seen_timestamp_seconds/plant-1"]; time.Since(time.Unix(int64(ts), 0)) > time.Minute {
		t.Errorf("last seen timestamp %v", ts)
	}
	if _, ok := got["edgemirror_aggregator_edge_rpo_seconds/plant-9"]; ok {
		t.Error("a never-seen edge has an rpo series")
	}
}

// TestHeartbeatValidation: bad heartbeats are refused with 400/413 and
// change nothing.
func TestHeartbeatValidation(t *testing.T) {
	hub := newHubCluster(t)
	s := newTestServer(t, hub, "", nil)
	for name, hb := range map[string]wire.Heartbeat{
		"negative backlog": {BacklogRecords: -1},
		"fill above 1":     {BufferFillRatio: 1.5},
		"negative rpo":     {RPOSeconds: -3},
	} {
		if code := s.heartbeat(t, "plant-1", hb); code != 400 {
			t.Errorf("%s: %d, want 400", name, code)
		}
	}
	if code := s.heartbeat(t, "bad edge", wire.Heartbeat{}); code != 400 {
		t.Errorf("bad edge id: %d, want 400", code)
	}
	req, _ := http.NewRequest(http.MethodPost, s.url+wire.PathHeartbeat, bytes.NewReader(make([]byte, wire.MaxHeartbeatBytes+10)))
	req.Header.Set(wire.HeaderEdge, "plant-1")
	resp, err := s.client.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != 413 {
		t.Errorf("oversized heartbeat: %d, want 413", resp.StatusCode)
	}
	if v := s.edgesView(t); len(v) != 0 {
		t.Errorf("fleet view after invalid heartbeats: %+v", v)
	}
}

// TestLossEventsExactlyOnceAcrossAggregators: the same report delivered
// twice to one aggregator and once more to another gives one event per
// range in the events topic, keyed by edge.
func TestLossEventsExactlyOnceAcrossAggregators(t *testing.T) {
	hub := newHubCluster(t)
	a := newTestServer(t, hub, "", func(c *Config) { c.AggregatorID = "agg-a" })
	rep := wire.LossReport{Ranges: []wire.LossRange{
		{Topic: "sensors", Partition: 2, FirstOffset: 1000, LastOffset: 1999, Records: 1000, Reason: wire.LossReasonDropOldest},
		{Topic: "sensors", Partition: 0, FirstOffset: 0, LastOffset: 40, Records: 41, Reason: wire.LossReasonEdgeRetention},
	}}
	for i := 0; i < 2; i++ {
		if code := a.postLosses(t, "ship-42", rep); code != 200 {
			t.Fatalf("POST %d: %d", i, code)
		}
	}
	// A second aggregator started afterwards, with an empty state.
	b := newTestServer(t, hub, filepath.Join(t.TempDir(), "b"), func(c *Config) { c.AggregatorID = "agg-b" })
	more := wire.LossReport{Ranges: append([]wire.LossRange{
		{Topic: "sensors", Partition: 1, FirstOffset: 7, LastOffset: 9, Records: 3, Reason: wire.LossReasonRejected}}, rep.Ranges...)}
	if code := b.postLosses(t, "ship-42", more); code != 200 {
		t.Fatalf("POST to the other aggregator: %d", code)
	}
	if code := b.postLosses(t, "ship-43", wire.LossReport{Ranges: rep.Ranges[:1]}); code != 200 {
		t.Fatalf("POST for another edge: %d", code)
	}

	events := readEvents(t, hub)
	type rangeKey struct {
		edge      string
		partition int32
		first     int64
	}
	count := map[rangeKey]int{}
	for _, ev := range events {
		count[rangeKey{ev.Edge, ev.Partition, ev.FirstOffset}]++
	}
	want := map[rangeKey]int{{"ship-42", 2, 1000}: 1, {"ship-42", 0, 0}: 1, {"ship-42", 1, 7}: 1, {"ship-43", 2, 1000}: 1}
	if len(events) != 4 || fmt.Sprint(count) != fmt.Sprint(want) {
		t.Fatalf("events topic holds %d events %v, want %v", len(events), count, want)
	}
	for _, ev := range events {
		if ev.Edge == "ship-42" && ev.Partition == 1 && ev.Aggregator != "agg-b" {
			t.Errorf("new range written by %q, want agg-b", ev.Aggregator)
		}
		if ev.Edge == "ship-42" && ev.Partition == 2 && ev.Aggregator != "agg-a" {
			t.Errorf("first range written by %q, want agg-a", ev.Aggregator)
		}
	}
	// Both aggregators list and count the same.
	for name, s := range map[string]*testServer{"a": a, "b": b} {
		var list []wire.LossEvent
		if code := getJSON(t, s.client, s.url+wire.PathLosses+"?edge=ship-42", nil, &list); code != 200 || len(list) != 3 {
			t.Errorf("%s: GET losses: %d, %d events", name, code, len(list))
		}
		if row := s.edgesView(t)["ship-42"]; row.LostRecords != 1044 || row.LossRanges != 3 {
			t.Errorf("%s: ship-42 lost %d records in %d ranges, want 1044 in 3", name, row.LostRecords, row.LossRanges)
		}
	}
}

// readEvents reads the committed loss events from the hub
// (read_committed, control markers kept so that the end of a partition
// written in transactions is reached), checking each is keyed by its edge.
func readEvents(t testing.TB, hub brokers) []wire.LossEvent {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	adm, err := kgo.NewClient(kgo.SeedBrokers(hub.ListenAddrs()...))
	if err != nil {
		t.Fatal(err)
	}
	defer adm.Close()
	ends, err := kadm.NewClient(adm).ListCommittedOffsets(ctx, DefaultEventsTopic)
	if err != nil {
		t.Fatal(err)
	}
	want := map[int32]int64{}
	offsets := map[int32]kgo.Offset{}
	ends.Each(func(o kadm.ListedOffset) {
		if o.Err == nil && o.Offset > 0 {
			want[o.Partition] = o.Offset
			offsets[o.Partition] = kgo.NewOffset().AtStart()
		}
	})
	if len(want) == 0 {
		return nil
	}
	cl, err := kgo.NewClient(kgo.SeedBrokers(hub.ListenAddrs()...),
		kgo.ConsumePartitions(map[string]map[int32]kgo.Offset{DefaultEventsTopic: offsets}),
		kgo.FetchIsolationLevel(kgo.ReadCommitted()), kgo.KeepControlRecords())
	if err != nil {
		t.Fatal(err)
	}
	defer cl.Close()
	var out []wire.LossEvent
	for len(want) > 0 {
		fs := cl.PollFetches(ctx)
		if ctx.Err() != nil {
			t.Fatalf("read events: %v (waiting for %v)", ctx.Err(), want)
		}
		fs.EachRecord(func(r *kgo.Record) {
			if end, ok := want[r.Partition]; ok && r.Offset+1 >= end {
				delete(want, r.Partition)
			}
			if r.Attrs.IsControl() {
				return
			}
			var ev wire.LossEvent
			if err := json.Unmarshal(r.Value, &ev); err != nil {
				t.Fatalf("event %s: %v", r.Value, err)
			}
			if string(r.Key) != ev.Edge {
				t.Errorf("event keyed %q, edge %q", r.Key, ev.Edge)
			}
			out = append(out, ev)
		})
	}
	return out
}

// TestLossEventsFencedAcrossAggregators: aggregator A is writing a loss
// report (its transaction open, not committed) when the agent, which did
// not get A's answer, sends the report to aggregator B. B takes the edge's
// events, which aborts A's transaction, and writes the ranges; A's commit
// is refused. The hub holds each range once, and A answers 503, so the
// agent sends the report again, which then writes nothing.
func TestLossEventsFencedAcrossAggregators(t *testing.T) { lossEventsFenced(t, newHubCluster(t)) }

func lossEventsFenced(t *testing.T, hub brokers) {
	a := newTestServer(t, hub, "", func(c *Config) { c.AggregatorID = "agg-a" })
	b := newTestServer(t, hub, filepath.Join(t.TempDir(), "b"), func(c *Config) { c.AggregatorID = "agg-b" })
	rep := wire.LossReport{Ranges: []wire.LossRange{
		{Topic: "sensors", Partition: 0, FirstOffset: 100, LastOffset: 199, Records: 100, Reason: wire.LossReasonDropOldest},
		{Topic: "sensors", Partition: 1, FirstOffset: 5, LastOffset: 9, Records: 5, Reason: wire.LossReasonEdgeRetention},
	}}
	// Something committed before, so that the events partition exists.
	if code := b.postLosses(t, "ship-7", wire.LossReport{Ranges: rep.Ranges[:1]}); code != 200 {
		t.Fatalf("first report: %d", code)
	}
	inside, resume := make(chan struct{}), make(chan struct{})
	a.fleet.beforeCommit = func() { close(inside); <-resume }
	codeA := make(chan int, 1)
	go func() { codeA <- a.postLosses(t, "ship-9", rep) }()
	select {
	case <-inside:
	case <-time.After(20 * time.Second):
		t.Fatal("aggregator A never reached its commit")
	}
	if code := b.postLosses(t, "ship-9", rep); code != 200 {
		t.Errorf("re-sent report to B: %d", code)
	}
	close(resume)
	if code := <-codeA; code != 503 {
		t.Errorf("A, fenced before its commit, answered %d, want 503", code)
	}
	a.fleet.beforeCommit = nil
	if code := a.postLosses(t, "ship-9", rep); code != 200 { // the agent's retry
		t.Errorf("retry to A: %d", code)
	}
	count := map[string]int{}
	for _, ev := range readEvents(t, hub) {
		if ev.Edge != "ship-9" {
			continue
		}
		count[fmt.Sprintf("%d/%d-%d", ev.Partition, ev.FirstOffset, ev.LastOffset)]++
		if ev.Aggregator != "agg-b" {
			t.Errorf("event %+v written by %s, want agg-b (A's transaction was aborted)", ev, ev.Aggregator)
		}
	}
	if len(count) != 2 || count["0/100-199"] != 1 || count["1/5-9"] != 1 {
		t.Errorf("committed events of ship-9: %v, want each range once", count)
	}
	for name, s := range map[string]*testServer{"a": a, "b": b} {
		if row := s.edgesView(t)["ship-9"]; row.LostRecords != 105 || row.LossRanges != 2 {
			t.Errorf("%s: ship-9 lost %d records in %d ranges, want 105 in 2", name, row.LostRecords, row.LossRanges)
		}
	}
}

// TestFleetTopicRecreated: an aggregator whose status topic was deleted
// and created again reads the new one from its start, and forgets what
// was only in the old one.
func TestFleetTopicRecreated(t *testing.T) {
	hub := newHubCluster(t)
	a := newTestServer(t, hub, "", nil)
	for i := 0; i < 3; i++ {
		if code := a.heartbeat(t, "old-edge", wire.Heartbeat{Version: "1"}); code != 200 {
			t.Fatalf("heartbeat: %d", code)
		}
	}
	if _, ok := a.edgesView(t)["old-edge"]; !ok {
		t.Fatal("old-edge not in the view")
	}
	cl, err := kgo.NewClient(kgo.SeedBrokers(hub.ListenAddrs()...))
	if err != nil {
		t.Fatal(err)
	}
	defer cl.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if _, err := kadm.NewClient(cl).DeleteTopics(ctx, DefaultStatusTopic); err != nil {
		t.Fatal(err)
	}
	// Another aggregator creates it again and writes one record.
	b := newTestServer(t, hub, filepath.Join(t.TempDir(), "b"), nil)
	testkit.Eventually(t, 10*time.Second, "heartbeat to the other aggregator", func() error {
		if code := b.heartbeat(t, "new-edge", wire.Heartbeat{Version: "2"}); code != 200 {
			return fmt.Errorf("heartbeat: %d", code)
		}
		return nil
	})
	testkit.Eventually(t, 10*time.Second, "the first aggregator reading the new topic", func() error {
		v := a.edgesView(t)
		if _, ok := v["new-edge"]; !ok {
			return fmt.Errorf("new-edge missing: %v", v)
		}
		if _, ok := v["old-edge"]; ok {
			return fmt.Errorf("old-edge still shown: %v", v)
		}
		return nil
	})
}
