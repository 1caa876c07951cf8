package aggregator

import (
	"bytes"
	"context"
	"encoding/json"
	"io"
	"net/http"
	"testing"
	"time"

	"github.com/segmentio/kafka-go"
	"github.com/twmb/franz-go/pkg/kfake"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/edgemirror/edgemirror/internal/failover"
	"github.com/edgemirror/edgemirror/internal/kafkautil"
	"github.com/edgemirror/edgemirror/internal/testkit"
	"github.com/edgemirror/edgemirror/internal/wire"
)

// withCheckpoints gives a test server its checkpointer, on a client of its own.
func withCheckpoints(t *testing.T, s *testServer, hub *kfake.Cluster) *kafka.Client {
	t.Helper()
	tr := &kafka.Transport{ClientID: "checkpoints-test", MetadataTTL: time.Second}
	t.Cleanup(tr.CloseIdleConnections)
	cl := &kafka.Client{Addr: kafka.TCP(hub.ListenAddrs()...), Transport: tr, Timeout: 10 * time.Second}
	s.cps = newCheckpointer(s.cfg, s.log, cl, s.state)
	s.cps.losses = s.fleet.lossRanges
	t.Cleanup(s.cps.close)
	return cl
}

func (s *testServer) postCheckpoints(t *testing.T, edge string, rep wire.CheckpointReport) (int, wire.CheckpointResponse) {
	t.Helper()
	body, err := json.Marshal(rep)
	if err != nil {
		t.Fatal(err)
	}
	req, err := http.NewRequest(http.MethodPost, s.url+wire.PathCheckpoints, bytes.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set(wire.HeaderEdge, edge)
	req.Header.Set(wire.HeaderEpoch, "1")
	req.Header.Set("Content-Type", wire.ContentTypeJSON)
	resp, err := s.client.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	raw, _ := io.ReadAll(resp.Body)
	var out wire.CheckpointResponse
	if resp.StatusCode == 200 {
		if err := json.Unmarshal(raw, &out); err != nil {
			t.Fatalf("answer %q: %v", raw, err)
		}
	}
	return resp.StatusCode, out
}

// TestCheckpointsTranslatedAndStored: edge offsets that fall on a record,
// in a gap, and past the hub's end are translated exactly and stored, the
// latest per partition; with --sync-group-offsets they are committed to an
// idle hub group, never backwards, and never while it has members.
func TestCheckpointsTranslatedAndStored(t *testing.T) {
	hub := newHubCluster(t)
	s := newTestServer(t, hub, "", func(c *Config) { c.SyncGroupOffsets = true })
	cl := withCheckpoints(t, s, hub)
	f := newFrameBuilder(t)
	// Source offsets 0-9 and 15-19 of partition 1: a gap of 10-14 (an
	// aborted transaction, compaction or a loss at the edge).
	recs := append(sensorRecords("sensors", 1, 0, 10), sensorRecords("sensors", 1, 15, 5)...)
	if a := s.send(t, "plant-7", 1, 1, f.frame(chunkOf(1, sensors3, recs))); a.status != 200 {
		t.Fatalf("chunk: %v", a)
	}
	readAt := time.Now().Add(-time.Second).UTC().Truncate(time.Millisecond)
	report := func(offsets ...int64) wire.CheckpointReport {
		g := wire.GroupCheckpoint{Group: "billing", ReadAt: readAt}
		for i, o := range offsets {
			g.Partitions = append(g.Partitions, wire.PartitionCheckpoint{Topic: "sensors", Partition: int32(i), Offset: o, EdgeLast: 24})
		}
		return wire.CheckpointReport{Groups: []wire.GroupCheckpoint{g}}
	}
	// Partition 0 has no hub records: past the end (0). Partition 1: 12 is
	// in the gap, so the first later record, 15, at hub offset 10.
	code, res := s.postCheckpoints(t, "plant-7", report(3, 12))
	if code != 200 || res.Partitions != 2 || res.Exact != 1 {
		t.Fatalf("answer %d %+v, want 200 with 2 partitions, 1 exact", code, res)
	}
	ctx := context.Background()
	got, err := failover.ReadCheckpoints(ctx, cl, s.cfg.CheckpointTopic, "plant-7", "billing")
	if err != nil {
		t.Fatal(err)
	}
	p1 := got[failover.TopicPartition{Topic: "sensors", Partition: 1}]
	if p1.HubTopic != "plant-7.sensors" || p1.HubOffset != 10 || !p1.Exact || p1.EdgeOffset != 12 || p1.HubLast != 19 ||
		!p1.CommittedAt.Equal(readAt) || p1.NotMirrored() != 5 {
		t.Errorf("partition 1 checkpoint %+v, want hub offset 10, exact, hub last 19, 5 not mirrored", p1)
	}
	// Past the hub's last record: the hub's end, never further.
	if code, res := s.postCheckpoints(t, "plant-7", wire.CheckpointReport{Groups: []wire.GroupCheckpoint{{Group: "audit", ReadAt: readAt,
		Partitions: []wire.PartitionCheckpoint{{Topic: "sensors", Partition: 1, Offset: 25, EdgeLast: 24}}}}}); code != 200 || res.Exact != 0 {
		t.Fatalf("report past the hub: %d %+v", code, res)
	}
	audit, err := failover.ReadCheckpoints(ctx, cl, s.cfg.CheckpointTopic, "plant-7", "audit")
	if err != nil {
		t.Fatal(err)
	}
	// The hub's end is its last stable offset: past the 15 records and
	// the transaction's commit marker.
	_, end, err := kafkautil.Offsets(ctx, cl, "plant-7.sensors", 1, kafka.ReadCommitted)
	if err != nil {
		t.Fatal(err)
	}
	if a := audit[failover.TopicPartition{Topic: "sensors", Partition: 1}]; a.HubOffset != end || end < 15 || a.Exact || a.NotMirrored() != 5 {
		t.Errorf("checkpoint past the hub %+v, want the hub end %d, not exact, 5 not mirrored", a, end)
	}
	p0 := got[failover.TopicPartition{Topic: "sensors", Partition: 0}]
	if p0.HubOffset != 0 || p0.Exact || p0.HubLast != -1 {
		t.Errorf("partition 0 checkpoint %+v, want hub offset 0, not exact", p0)
	}
	offs, err := failover.GroupOffsets(ctx, cl, "billing")
	if err != nil {
		t.Fatal(err)
	}
	if offs[failover.TopicPartition{Topic: "plant-7.sensors", Partition: 1}] != 10 {
		t.Errorf("synced hub group offsets %v, want plant-7.sensors/1 at 10", offs)
	}

	// A later checkpoint replaces the earlier one; 19 is on a record.
	if code, res := s.postCheckpoints(t, "plant-7", report(3, 19)); code != 200 || res.Exact != 1 {
		t.Fatalf("second report: %d %+v", code, res)
	}
	got, err = failover.ReadCheckpoints(ctx, cl, s.cfg.CheckpointTopic, "plant-7", "billing")
	if err != nil {
		t.Fatal(err)
	}
	if p1 := got[failover.TopicPartition{Topic: "sensors", Partition: 1}]; p1.HubOffset != 14 || p1.EdgeOffset != 19 {
		t.Errorf("latest checkpoint %+v, want edge 19 → hub 14", p1)
	}
	// Never backwards: an edge group reset to 5 does not rewind the hub group.
	if code, _ := s.postCheckpoints(t, "plant-7", report(3, 5)); code != 200 {
		t.Fatalf("third report: %d", code)
	}
	if offs, _ := failover.GroupOffsets(ctx, cl, "billing"); offs[failover.TopicPartition{Topic: "plant-7.sensors", Partition: 1}] != 14 {
		t.Errorf("hub group rewound: %v, want plant-7.sensors/1 still at 14", offs)
	}

	// A member on the hub: no commit while it is there.
	member, err := kgo.NewClient(kgo.SeedBrokers(hub.ListenAddrs()...), kgo.ConsumerGroup("billing"),
		kgo.ConsumeTopics("plant-7.sensors"), kgo.DisableAutoCommit())
	if err != nil {
		t.Fatal(err)
	}
	defer member.Close()
	testkit.Eventually(t, 20*time.Second, "hub group has a member", func() error {
		pctx, cancel := context.WithTimeout(ctx, 200*time.Millisecond)
		member.PollFetches(pctx)
		cancel()
		info, err := failover.GroupState(ctx, cl, "billing")
		if err != nil {
			return err
		}
		if !info.Active() {
			return errState(info.State)
		}
		return nil
	})
	s.postCheckpoints(t, "plant-7", report(3, 18)) // lower: would not commit anyway
	if code, _ := s.postCheckpoints(t, "plant-7", wire.CheckpointReport{Groups: []wire.GroupCheckpoint{{Group: "billing", ReadAt: readAt,
		Partitions: []wire.PartitionCheckpoint{{Topic: "sensors", Partition: 1, Offset: 20, EdgeLast: 24}}}}}); code != 200 {
		t.Fatalf("report with a hub member: %d", code)
	}
	if offs, _ := failover.GroupOffsets(ctx, cl, "billing"); offs[failover.TopicPartition{Topic: "plant-7.sensors", Partition: 1}] != 14 {
		t.Errorf("committed while the hub group had a member: %v", offs)
	}
}

type errState string

func (e errState) Error() string { return "group state " + string(e) }

func TestCheckpointsRejected(t *testing.T) {
	hub := newHubCluster(t)
	s := newTestServer(t, hub, "", nil)
	withCheckpoints(t, s, hub)
	now := time.Now()
	for name, rep := range map[string]wire.CheckpointReport{
		"empty group":     {Groups: []wire.GroupCheckpoint{{Group: "", ReadAt: now}}},
		"negative offset": {Groups: []wire.GroupCheckpoint{{Group: "g", ReadAt: now, Partitions: []wire.PartitionCheckpoint{{Topic: "t", Offset: -1}}}}},
		"bad topic":       {Groups: []wire.GroupCheckpoint{{Group: "g", ReadAt: now, Partitions: []wire.PartitionCheckpoint{{Topic: "a/b"}}}}},
		"no time":         {Groups: []wire.GroupCheckpoint{{Group: "g"}}},
	} {
		if code, _ := s.postCheckpoints(t, "plant-7", rep); code != 400 {
			t.Errorf("%s: status %d, want 400", name, code)
		}
	}
}
