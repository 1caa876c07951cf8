package committed

import (
	"testing"

	fetchapi "github.com/segmentio/kafka-go/protocol/fetch"
)

// TestAbortFilterFromAbortMarker: a fetch that starts at the ABORT marker
// of producer 7's aborted transaction (first offset 0, marker at 3) lists
// that transaction; its next transaction (offsets 4-5) was committed and
// must not be skipped. The pre-fix algorithm took the list in only at data
// batches and dropped it.
func TestAbortFilterFromAbortMarker(t *testing.T) {
	f := NewAbortFilter([]fetchapi.ResponseTransaction{{ProducerID: 7, FirstOffset: 0}})
	f.Marker(7, 3, true)
	if f.Skip(7, 4, true) {
		t.Error("committed transaction after an ABORT marker at the start of the fetch was skipped")
	}
}

func TestAbortFilter(t *testing.T) {
	f := NewAbortFilter([]fetchapi.ResponseTransaction{{ProducerID: 7, FirstOffset: 10}, {ProducerID: 8, FirstOffset: 12}})
	for _, c := range []struct {
		pid, off int64
		txn      bool
		want     bool
	}{
		{7, 5, true, false},   // before its aborted transaction
		{7, 10, true, true},   // in it
		{8, 11, true, false},  // 8's aborted one starts later
		{8, 12, true, true},   // now it has started
		{9, 13, false, false}, // not transactional
	} {
		if got := f.Skip(c.pid, c.off, c.txn); got != c.want {
			t.Errorf("Skip(%d, %d): %v, want %v", c.pid, c.off, got, c.want)
		}
	}
	f.Marker(7, 14, true) // 7's ABORT
	if f.Skip(7, 15, true) {
		t.Error("producer 7 still skipped after its ABORT marker")
	}
	f.Marker(8, 16, false) // a COMMIT marker does not end an aborted transaction's skipping
	if !f.Skip(8, 13, true) {
		t.Error("producer 8 no longer skipped after a COMMIT marker")
	}
}
