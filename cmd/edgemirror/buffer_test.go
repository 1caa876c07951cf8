package main

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"strings"
	"testing"

	"github.com/edgemirror/edgemirror/buffer"
)

// TestBufferRenewEpoch: the operator's way out of a stranded buffer. status
// shows the epoch and what the buffer holds; renew-epoch gives it a new
// epoch and keeps its chunks; a running agent's lock makes both fail with
// a message that says to stop it.
func TestBufferRenewEpoch(t *testing.T) {
	dir := t.TempDir()
	st, err := buffer.Open(dir, buffer.Options{MaxBytes: 8 << 20})
	if err != nil {
		t.Fatal(err)
	}
	meta := buffer.ChunkMeta{Seq: 1, Records: 3, Ranges: []buffer.Range{{Topic: "t", Partition: 2, First: 10, Last: 12, Records: 3}}}
	if err := st.Append(context.Background(), []byte("frame"), meta, map[buffer.PartitionKey]int64{{Topic: "t", Partition: 2}: 13}); err != nil {
		t.Fatal(err)
	}
	epoch := st.Epoch()
	var stdout bytes.Buffer
	err = run(context.Background(), []string{"buffer", "status", "--buffer-dir", dir}, &stdout, &bytes.Buffer{}, env(nil))
	if err == nil || !errors.Is(err, buffer.ErrLocked) || !strings.Contains(err.Error(), "stop the agent") {
		t.Fatalf("status on a locked buffer: %v, want ErrLocked saying to stop the agent", err)
	}
	st.Close()

	stdout.Reset()
	if err := run(context.Background(), []string{"buffer", "status", "--buffer-dir", dir}, &stdout, &bytes.Buffer{}, env(nil)); err != nil {
		t.Fatal(err)
	}
	if out := stdout.String(); !strings.Contains(out, fmt.Sprintf("epoch %d,", epoch)) || !strings.Contains(out, "t/2 offsets 10..12: 3 records in 1 chunks") {
		t.Fatalf("status printed %q", out)
	}
	stdout.Reset()
	if err := run(context.Background(), []string{"buffer", "renew-epoch", "--buffer-dir", dir}, &stdout, &bytes.Buffer{}, env(nil)); err != nil {
		t.Fatal(err)
	}
	st, err = buffer.Open(dir, buffer.Options{MaxBytes: 8 << 20})
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	if st.Epoch() == epoch || st.Stats().Chunks != 1 || st.NextSeq() != 2 {
		t.Fatalf("after renew-epoch: epoch %d (was %d), %d chunks, next seq %d; want a new epoch, the chunk kept, next seq 2",
			st.Epoch(), epoch, st.Stats().Chunks, st.NextSeq())
	}
	if !strings.Contains(stdout.String(), fmt.Sprintf("epoch %d renewed to %d", epoch, st.Epoch())) {
		t.Errorf("renew-epoch printed %q", stdout.String())
	}
	var ue *usageError
	if err := run(context.Background(), []string{"buffer", "shrink"}, &stdout, &bytes.Buffer{}, env(nil)); !errors.As(err, &ue) {
		t.Errorf("unknown action: %v, want a usage error", err)
	}
}
