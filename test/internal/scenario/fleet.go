package scenario

import (
	"fmt"
	"os"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/edgemirror/edgemirror/internal/testkit"
	"github.com/edgemirror/edgemirror/internal/wire"
	"github.com/edgemirror/edgemirror/test/internal/harness"
)

// FleetArgs make the fleet view quick enough for a test: heartbeats every
// 500ms, disconnected after 3s; behind only after 5m, so that a loaded
// machine does not turn the edge behind.
var (
	FleetAggregatorArgs = []string{"--disconnect-after", "3s", "--fleet-refresh", "200ms", "--behind-after", "5m"}
	FleetAgentArgs      = []string{"--heartbeat-interval", "500ms"}
)

// statusOf returns the edge's row of `edgemirror status --json`.
func (e *Env) statusOf(agg *harness.Aggregator) (wire.EdgeStatus, error) {
	rows, err := agg.Status(e.Ctx)
	if err != nil {
		return wire.EdgeStatus{}, err
	}
	row, ok := rows[e.EdgeID]
	if !ok {
		return wire.EdgeStatus{}, fmt.Errorf("edge %s not in status: %v", e.EdgeID, rows)
	}
	return row, nil
}

// FleetView: during a cut of the link the edge goes disconnected and its
// rpo_seconds grows at least as fast as the cut lasts; after the drain
// backlog_records is 0 and the state ok; an aggregator restarted on an
// empty state directory, and a second aggregator, show the same view.
func FleetView(t *testing.T, clusters Clusters) {
	e := New(t, clusters, FleetAggregatorArgs...)
	e.StartAgent("", append([]string{"--batch-bytes", "16KiB"}, FleetAgentArgs...)...)
	stop := e.ProduceInBackground(20) // a gentle load: the view, not the throughput, is under test
	e.WaitHub(300, time.Minute)
	testkit.Eventually(t, 30*time.Second, "edge ok in status", func() error {
		row, err := e.statusOf(e.Agg)
		if err != nil {
			return err
		}
		if row.State != wire.EdgeOK || row.Version == "" || row.LastSeen == nil {
			return fmt.Errorf("row %+v", row)
		}
		return nil
	})

	cut := time.Now()
	e.Proxy.Cut()
	var first wire.EdgeStatus
	testkit.Eventually(t, 30*time.Second, "edge disconnected in status", func() error {
		row, err := e.statusOf(e.Agg)
		if err != nil {
			return err
		}
		if row.State != wire.EdgeDisconnected {
			return fmt.Errorf("state %s", row.State)
		}
		first = row
		return nil
	})
	firstAt := time.Now()
	t.Logf("disconnect shown in status %v after the cut (--disconnect-after 3s, --heartbeat-interval 500ms)",
		firstAt.Sub(cut).Round(10*time.Millisecond))
	// The agent keeps reading while the link is down: its backlog grows.
	testkit.Eventually(t, time.Minute, "buffer filling during the cut", func() error {
		if got := e.Agent.Metrics(e.Ctx)["edgemirror_agent_backlog_records"]; got < 200 {
			return fmt.Errorf("%v records in the backlog", got)
		}
		return nil
	})
	testkit.Eventually(t, 30*time.Second, "cut lasting 4s more", func() error {
		if d := time.Since(firstAt); d < 4*time.Second {
			return fmt.Errorf("only %v", d)
		}
		return nil
	})
	second, err := e.statusOf(e.Agg)
	if err != nil {
		t.Fatal(err)
	}
	secondAt := time.Now()
	if second.State != wire.EdgeDisconnected {
		t.Fatalf("state %s during the cut", second.State)
	}
	// Values, not presence: the RPO covers at least the whole cut so far,
	// and grows with it.
	const slack = 0.3 // seconds: the two status commands' own latency
	if lasted := secondAt.Sub(cut).Seconds(); second.RPOSeconds < lasted-slack {
		t.Errorf("rpo_seconds %.2f after a cut of %.2fs", second.RPOSeconds, lasted)
	}
	if grew, elapsed := second.RPOSeconds-first.RPOSeconds, secondAt.Sub(firstAt).Seconds(); grew < elapsed-slack {
		t.Errorf("rpo_seconds grew %.2fs in %.2fs of the cut", grew, elapsed)
	}
	t.Logf("during the cut: rpo_seconds %.2f → %.2f over %.2fs; last_seen %v", first.RPOSeconds, second.RPOSeconds,
		secondAt.Sub(firstAt).Seconds(), second.LastSeen)

	e.Proxy.Restore()
	stop()
	e.WaitAll()
	testkit.Eventually(t, time.Minute, "backlog drained and edge ok in status", func() error {
		row, err := e.statusOf(e.Agg)
		if err != nil {
			return err
		}
		if row.State != wire.EdgeOK || row.BacklogRecords != 0 || row.BacklogChunks != 0 || row.RPOSeconds != 0 {
			return fmt.Errorf("row %+v", row)
		}
		return nil
	})
	e.Check(nil)

	// Heartbeat traffic on the wire (failed attempts during the cut
	// included; BenchmarkHeartbeatWireBytes measures one heartbeat alone).
	m := e.Agent.Metrics(e.Ctx)
	t.Logf("heartbeats: %.0f attempts, %.0f bytes on their connection (both directions)",
		m["edgemirror_agent_heartbeats_total"], m["edgemirror_agent_heartbeat_wire_bytes_total"])

	// A frozen view (the agent stopped) is the same from an aggregator with
	// an empty state and from a second aggregator.
	if err := e.Agent.Stop(20 * time.Second); err != nil {
		t.Fatalf("agent stop: %v", err)
	}
	var before wire.EdgeStatus
	testkit.Eventually(t, 30*time.Second, "last heartbeat in the view", func() error {
		a, err := e.statusOf(e.Agg)
		if err != nil {
			return err
		}
		b, err := e.statusOf(e.Agg)
		if err != nil {
			return err
		}
		if !a.LastSeen.Equal(*b.LastSeen) {
			return fmt.Errorf("still moving")
		}
		before = b
		return nil
	})
	e.Agg.Kill()
	if err := os.RemoveAll(e.Agg.StateDir); err != nil {
		t.Fatal(err)
	}
	e.Agg.Restart()
	e.Agg.WaitHealthy(t)
	other := harness.StartAggregator(t, e.Hub.Brokers(), "", FleetAggregatorArgs...)
	for name, agg := range map[string]*harness.Aggregator{"restarted on an empty state dir": e.Agg, "second aggregator": other} {
		row, err := e.statusOf(agg)
		if err != nil {
			t.Fatalf("%s: %v", name, err)
		}
		if !sameView(row, before) {
			t.Errorf("%s shows\n%+v\nthe first aggregator showed\n%+v", name, row, before)
		}
	}
}

// sameView compares two rows of the same edge, apart from what depends on
// the moment of the question.
func sameView(a, b wire.EdgeStatus) bool {
	if a.LastSeen == nil || b.LastSeen == nil || !a.LastSeen.Equal(*b.LastSeen) {
		return false
	}
	a.LastSeen, b.LastSeen = nil, nil
	a.SecondsSinceSeen, b.SecondsSinceSeen = 0, 0
	if a.State == wire.EdgeDisconnected || b.State == wire.EdgeDisconnected {
		a.State, b.State = "", "" // the aggregators may ask either side of --disconnect-after
		a.RPOSeconds, b.RPOSeconds = 0, 0
		a.RecordsPerSecond, b.RecordsPerSecond = 0, 0
	}
	return reflect.DeepEqual(a, b)
}

// checkLossEvents: the hub's events topic holds exactly the lost ranges,
// each once, and `edgemirror losses --json` lists the same.
func (e *Env) checkLossEvents(lost []harness.Lost) {
	e.T.Helper()
	evs, err := harness.LossEvents(e.Ctx, e.Hub.Brokers(), "_edgemirror.events", e.EdgeID)
	if err != nil {
		e.T.Fatal(err)
	}
	want := map[harness.Lost]bool{}
	for _, l := range lost {
		want[l] = true
	}
	got := map[harness.Lost]int{}
	for _, ev := range evs {
		got[harness.Lost{Topic: ev.Topic, Partition: ev.Partition, First: ev.FirstOffset, Last: ev.LastOffset}]++
	}
	for l, n := range got {
		if n != 1 {
			e.T.Errorf("range %+v is in the events topic %d times", l, n)
		}
		if !want[l] {
			e.T.Errorf("events topic has range %+v that is not missing from the hub", l)
		}
	}
	for l := range want {
		if got[l] == 0 {
			e.T.Errorf("range %+v missing from the hub has no event", l)
		}
	}
	out, err := e.Agg.Command(e.Ctx, "losses", "--edge", e.EdgeID)
	if err != nil {
		e.T.Fatal(err)
	}
	if !strings.Contains(string(out), fmt.Sprintf("%d ranges,", len(lost))) {
		e.T.Errorf("edgemirror losses printed:\n%s", out)
	}
	row, err := e.statusOf(e.Agg)
	if err != nil {
		e.T.Fatal(err)
	}
	var records int64
	for _, ev := range evs {
		records += ev.Records
	}
	if row.LostRecords != records || row.LossRanges != len(lost) {
		e.T.Errorf("status shows %d lost records in %d ranges, the events topic %d in %d", row.LostRecords, row.LossRanges, records, len(lost))
	}
}
