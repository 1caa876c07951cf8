package buffer

import (
	"context"
	"errors"
	"testing"
)

// TestMoveNextSeqAndRenewEpoch: moving the next seq is persisted, refuses
// to move when a chunk was appended meanwhile, and makes an Append prepared
// under the old number fail with ErrSeq; a renewed epoch is persisted and
// keeps chunks and offsets.
func TestMoveNextSeqAndRenewEpoch(t *testing.T) {
	dir := t.TempDir()
	s := openTest(t, dir, Options{})
	appendN(t, s, 3, 100) // seqs 1..3
	if moved, err := s.MoveNextSeq(10, 3); err != nil || moved {
		t.Fatalf("MoveNextSeq with a stale expectation: moved %v, %v; want not moved", moved, err)
	}
	if moved, err := s.MoveNextSeq(2, 4); err != nil || moved {
		t.Fatalf("MoveNextSeq backwards: moved %v, %v; want not moved", moved, err)
	}
	if moved, err := s.MoveNextSeq(10, 4); err != nil || !moved || s.NextSeq() != 10 {
		t.Fatalf("MoveNextSeq(10, 4): moved %v, %v, next %d; want moved to 10", moved, err, s.NextSeq())
	}
	meta, next := chunkOf("t", 4)
	if err := s.Append(context.Background(), frameFor(4, 100), meta, next); !errors.Is(err, ErrSeq) {
		t.Fatalf("Append under the old number: %v, want ErrSeq", err)
	}
	epoch := s.Epoch()
	old, renewed, err := s.RenewEpoch()
	if err != nil || old != epoch || renewed == epoch || s.Epoch() != renewed {
		t.Fatalf("RenewEpoch: %d -> %d, %v (Epoch %d); want a new epoch", old, renewed, err, s.Epoch())
	}
	held, err := s.HeldRanges()
	if err != nil || len(held) != 1 || held[0].First != 0 || held[0].Last != 29 || held[0].Records != 30 || held[0].Chunks != 3 {
		t.Fatalf("HeldRanges: %+v, %v; want t/0 0..29, 30 records in 3 chunks", held, err)
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	s = openTest(t, dir, Options{})
	if s.Epoch() != renewed || s.NextSeq() != 10 || s.Floor() != 1 || s.Stats().Chunks != 3 {
		t.Fatalf("after reopen: epoch %d next %d floor %d chunks %d; want %d, 10, 1, 3",
			s.Epoch(), s.NextSeq(), s.Floor(), s.Stats().Chunks, renewed)
	}
	offs, err := s.Offsets()
	if err != nil || offs[PartitionKey{Topic: "t", Partition: 0}] != 30 {
		t.Fatalf("offsets after renewal: %v, %v; want t/0 at 30", offs, err)
	}
}

// TestMoveNextSeqOfEmptyStoreMovesFloor: in an empty store the floor is the
// next seq, and moves with it.
func TestMoveNextSeqOfEmptyStoreMovesFloor(t *testing.T) {
	s := openTest(t, t.TempDir(), Options{})
	if moved, err := s.MoveNextSeq(50, 1); err != nil || !moved || s.Floor() != 50 || s.NextSeq() != 50 {
		t.Fatalf("moved %v, %v: floor %d next %d; want 50 and 50", moved, err, s.Floor(), s.NextSeq())
	}
}
