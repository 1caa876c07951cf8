package wire

import (
	"encoding/json"
	"errors"
	"testing"
	"time"
)

func TestCheckpointReportValidate(t *testing.T) {
	now := time.Now()
	ok := CheckpointReport{Groups: []GroupCheckpoint{{Group: "billing", ReadAt: now,
		Partitions: []PartitionCheckpoint{{Topic: "orders", Partition: 3, Offset: 10, EdgeLast: -1}}}}}
	if err := ok.Validate(); err != nil {
		t.Fatalf("valid report: %v", err)
	}
	big := CheckpointReport{Groups: []GroupCheckpoint{{Group: "g", ReadAt: now, Partitions: make([]PartitionCheckpoint, MaxCheckpointPartitions+1)}}}
	for i := range big.Groups[0].Partitions {
		big.Groups[0].Partitions[i] = PartitionCheckpoint{Topic: "t", Partition: int32(i)}
	}
	for name, r := range map[string]CheckpointReport{
		"empty group":   {Groups: []GroupCheckpoint{{ReadAt: now}}},
		"long group":    {Groups: []GroupCheckpoint{{Group: string(make([]byte, MaxGroupIDLen+1)), ReadAt: now}}},
		"bad utf-8":     {Groups: []GroupCheckpoint{{Group: "\xff", ReadAt: now}}},
		"no time":       {Groups: []GroupCheckpoint{{Group: "g"}}},
		"bad topic":     {Groups: []GroupCheckpoint{{Group: "g", ReadAt: now, Partitions: []PartitionCheckpoint{{Topic: "a b"}}}}},
		"neg partition": {Groups: []GroupCheckpoint{{Group: "g", ReadAt: now, Partitions: []PartitionCheckpoint{{Topic: "t", Partition: -1}}}}},
		"neg offset":    {Groups: []GroupCheckpoint{{Group: "g", ReadAt: now, Partitions: []PartitionCheckpoint{{Topic: "t", Offset: -1}}}}},
		"edge_last -2":  {Groups: []GroupCheckpoint{{Group: "g", ReadAt: now, Partitions: []PartitionCheckpoint{{Topic: "t", EdgeLast: -2}}}}},
		"too many":      big,
	} {
		if err := r.Validate(); !errors.Is(err, ErrInvalidCheckpoint) {
			t.Errorf("%s: %v, want ErrInvalidCheckpoint", name, err)
		}
	}
}

// FuzzCheckpointReport: decoding and validating any body never panics, and
// a report that validates survives a round trip and validates again.
func FuzzCheckpointReport(f *testing.F) {
	f.Add([]byte(`{"groups":[{"group":"billing","read_at":"2026-12-01T10:00:00Z","partitions":[{"topic":"orders","partition":0,"offset":12,"edge_last":19}]}]}`))
	f.Add([]byte(`{"groups":[{"group":"","read_at":"x"}]}`))
	f.Add([]byte(`{}`))
	f.Add([]byte(``))
	f.Fuzz(func(t *testing.T, b []byte) {
		var r CheckpointReport
		if json.Unmarshal(b, &r) != nil || r.Validate() != nil {
			return
		}
		again, err := json.Marshal(r)
		if err != nil {
			t.Fatal(err)
		}
		var r2 CheckpointReport
		if err := json.Unmarshal(again, &r2); err != nil {
			t.Fatalf("re-decode: %v", err)
		}
		if err := r2.Validate(); err != nil {
			t.Fatalf("valid report invalid after a round trip: %v", err)
		}
	})
}
