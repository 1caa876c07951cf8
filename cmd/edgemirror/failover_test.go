package main

import (
	"bytes"
	"context"
	"encoding/json"
	"strings"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/edgemirror/edgemirror/internal/provenance"
	"github.com/edgemirror/edgemirror/internal/testkit"
)

// TestFailoverCommands runs translate, translate-group --edge-brokers and
// reset-group against one in-process cluster serving as edge and hub: the
// edge topic holds offsets 0-19, the hub got 0-9 and 15-19 (10-14 lost).
func TestFailoverCommands(t *testing.T) {
	c := testkit.Cluster(t)
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	cl, err := kgo.NewClient(kgo.SeedBrokers(c.ListenAddrs()...), kgo.RecordPartitioner(kgo.ManualPartitioner()))
	if err != nil {
		t.Fatal(err)
	}
	defer cl.Close()
	adm := kadm.NewClient(cl)
	if _, err := adm.CreateTopics(ctx, 1, 1, nil, "orders", "plant-1.orders"); err != nil {
		t.Fatal(err)
	}
	base := time.Now().Add(-time.Hour).Truncate(time.Second)
	var recs []*kgo.Record
	for i := int64(0); i < 20; i++ {
		ts := base.Add(time.Duration(i) * time.Second)
		recs = append(recs, &kgo.Record{Topic: "orders", Value: []byte("v"), Timestamp: ts})
		if i >= 10 && i < 15 {
			continue
		}
		r := &kgo.Record{Topic: "plant-1.orders", Value: []byte("v"), Timestamp: ts}
		for _, h := range provenance.Append(nil, provenance.Origin{Edge: "plant-1", Topic: "orders", Offset: i}) {
			r.Headers = append(r.Headers, kgo.RecordHeader{Key: h.Key, Value: h.Value})
		}
		recs = append(recs, r)
	}
	if err := cl.ProduceSync(ctx, recs...).FirstErr(); err != nil {
		t.Fatal(err)
	}
	commit := kadm.Offsets{}
	commit.Add(kadm.Offset{Topic: "orders", Partition: 0, At: 12, LeaderEpoch: -1})
	if res, err := adm.CommitOffsets(ctx, "billing", commit); err != nil || res.Error() != nil {
		t.Fatalf("commit: %v %v", err, res.Error())
	}
	brokers := strings.Join(c.ListenAddrs(), ",")
	cli := func(args ...string) string {
		t.Helper()
		var stdout, stderr bytes.Buffer
		if err := run(ctx, args, &stdout, &stderr, env(nil)); err != nil {
			t.Fatalf("%s: %v\n%s", strings.Join(args, " "), err, stderr.String())
		}
		return stdout.String()
	}

	out := cli("translate", "--hub-brokers", brokers, "--edge", "plant-1", "--topic", "orders", "--partition", "0", "--offset", "12")
	if !strings.Contains(out, "hub plant-1.orders/0 offset 10") || !strings.Contains(out, "source offset 15") {
		t.Errorf("translate in the gap:\n%s", out)
	}
	out = cli("translate", "--hub-brokers", brokers, "--edge", "plant-1", "--topic", "orders", "--partition", "0", "--offset", "30")
	if !strings.Contains(out, "offset 15\n") || !strings.Contains(out, "no record of this partition at or after source offset 30") {
		t.Errorf("translate past the end:\n%s", out)
	}

	var plan groupPlan
	out = cli("translate-group", "--hub-brokers", brokers, "--edge", "plant-1", "--group", "billing", "--edge-brokers", brokers, "--json")
	if err := json.Unmarshal([]byte(out), &plan); err != nil {
		t.Fatalf("translate-group --json: %v\n%s", err, out)
	}
	if len(plan.Rows) != 1 || plan.Executed {
		t.Fatalf("plan %+v", plan)
	}
	r := plan.Rows[0]
	if r.HubTopic != "plant-1.orders" || r.EdgeOffset != 12 || r.HubOffset != 10 || !r.Exact ||
		r.NotMirrored != 0 || !r.NotMirroredExact || r.Lost != 3 || !r.LostExact {
		t.Errorf("row %+v, want 12 -> 10, nothing not mirrored, 3 lost (12-14)", r)
	}
	if offs, err := adm.FetchOffsets(ctx, "billing"); err != nil {
		t.Fatal(err)
	} else if o, ok := offs.Lookup("plant-1.orders", 0); ok {
		t.Errorf("dry run committed %+v", o)
	}
	out = cli("translate-group", "--hub-brokers", brokers, "--edge", "plant-1", "--group", "billing", "--edge-brokers", brokers, "--execute")
	if !strings.Contains(out, "Committed 1 partition offsets") {
		t.Errorf("translate-group --execute:\n%s", out)
	}
	offs, err := adm.FetchOffsets(ctx, "billing")
	if err != nil {
		t.Fatal(err)
	}
	if o, ok := offs.Lookup("plant-1.orders", 0); !ok || o.At != 10 {
		t.Errorf("committed %+v, want plant-1.orders/0 at 10", o)
	}

	// Hub offsets 0-9 carry base+0s..9s, 10-14 base+15s..19s.
	at := base.Add(12 * time.Second).UTC().Format("2006-01-02T15:04:05")
	out = cli("reset-group", "--hub-brokers", brokers, "--group", "reporting", "--topics", `plant-1\.orders`, "--to-datetime", at, "--execute")
	offs, err = adm.FetchOffsets(ctx, "reporting")
	if err != nil {
		t.Fatal(err)
	}
	if o, ok := offs.Lookup("plant-1.orders", 0); !ok || o.At != 10 {
		t.Errorf("reset-group to %s committed %+v, want offset 10 (the first record at or after it)\n%s", at, o, out)
	}
}
