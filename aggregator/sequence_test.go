package aggregator

import (
	"net/http"
	"testing"

	"github.com/edgemirror/edgemirror/internal/wire"
)

// TestReusedSeqWithOtherContentRefused: a rolled-back buffer sends a seq
// the aggregator applied before, with other records. Applied as a re-send
// (at once, out of order) it could drop another chunk's new records as
// duplicates; it is refused with 409 seq-reused instead, and nothing of it
// is written. The same frame sent again is still a harmless re-send, and the
// resume answer names the highest seq seen.
func TestReusedSeqWithOtherContentRefused(t *testing.T) {
	hub := newHubCluster(t)
	s := newTestServer(t, hub, "", nil)
	fb := newFrameBuilder(t)
	topics := []wire.Topic{{Name: "t", Partitions: 1}}
	const edge, epoch = "plant-reuse", 7
	frames := make([][]byte, 4)
	for seq := uint64(1); seq <= 3; seq++ {
		frames[seq] = fb.frame(chunkOf(seq, topics, sensorRecords("t", 0, int64(seq-1)*10, 10)))
		if a := s.send(t, edge, epoch, seq, frames[seq]); a.status != http.StatusOK || a.ok.Written != 10 {
			t.Fatalf("chunk %d: %v, want 200 with 10 written", seq, a)
		}
	}
	// Seq 2 again with other boundaries: offsets 10..34 (new ones above 29).
	other := fb.frame(chunkOf(2, topics, sensorRecords("t", 0, 10, 25)))
	a := s.send(t, edge, epoch, 2, other)
	if a.status != http.StatusConflict || a.err.Code != wire.CodeSeqReused {
		t.Fatalf("seq 2 with other content: %v, want 409 %s", a, wire.CodeSeqReused)
	}
	if a := s.send(t, edge, epoch, 2, frames[2]); a.status != http.StatusOK || a.ok.Duplicates != 10 || a.ok.Written != 0 {
		t.Fatalf("seq 2 re-sent unchanged: %v, want 200 with 10 duplicates", a)
	}
	if got := sourceOffsets(t, readHub(t, hub, edge+".t")[0]); len(got) != 30 {
		t.Fatalf("hub has offsets %v, want 0..29", got)
	}
	if rr := s.resume(t, edge, epoch); rr.NextSeq != 4 || rr.MaxSeq != 3 {
		t.Fatalf("resume: %+v, want next_seq 4, max_seq 3", rr)
	}
	if rr := s.resume(t, edge, epoch+1); rr.NextSeq != 0 || rr.MaxSeq != 0 || rr.Epoch != epoch {
		t.Fatalf("resume of another epoch: %+v, want epoch %d and nothing else", rr, epoch)
	}
}

// TestRetiredEpochsForgetOldestFirst: the retired-epoch list is bounded,
// but it forgets the oldest epochs first, never the recent ones (it was
// cleared whole every 16 takeovers), and survives a restart in order.
func TestRetiredEpochsForgetOldestFirst(t *testing.T) {
	hub := newHubCluster(t)
	dir := t.TempDir()
	s := newTestServer(t, hub, dir, nil)
	fb := newFrameBuilder(t)
	topics := []wire.Topic{{Name: "t", Partitions: 1}}
	const edge = "plant-epochs"
	n := uint64(maxRetiredEpochs + 5)
	for e := uint64(1); e <= n; e++ {
		f := fb.frame(chunkOf(1, topics, sensorRecords("t", 0, int64(e), 1)))
		if a := s.send(t, edge, e, 1, f); a.status != http.StatusOK {
			t.Fatalf("epoch %d: %v", e, a)
		}
	}
	// The maxRetiredEpochs most recent replaced epochs are refused.
	for e := n - 1; e >= n-maxRetiredEpochs; e-- {
		f := fb.frame(chunkOf(2, topics, sensorRecords("t", 0, 1000, 1)))
		if a := s.send(t, edge, e, 2, f); a.status != http.StatusConflict || a.err.Code != wire.CodeEpochReplaced {
			t.Fatalf("replaced epoch %d: %v, want 409 %s", e, a, wire.CodeEpochReplaced)
		}
	}
	rec, err := s.state.edge(edge)
	if err != nil {
		t.Fatal(err)
	}
	if len(rec.Retired) != maxRetiredEpochs || rec.Retired[0] != n-maxRetiredEpochs || rec.Retired[len(rec.Retired)-1] != n-1 {
		t.Fatalf("stored retired epochs %v, want %d..%d oldest first", rec.Retired, n-maxRetiredEpochs, n-1)
	}
}
