package buffer

import (
	"bytes"
	"context"
	"log/slog"
	"strings"
	"sync"
	"testing"
	"time"

	bolt "go.etcd.io/bbolt"

	"github.com/edgemirror/edgemirror/internal/testkit"
	"github.com/edgemirror/edgemirror/internal/wire"
)

// syncBuffer is a bytes.Buffer safe for a logger used from goroutines.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (b *syncBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.b.Write(p)
}

func (b *syncBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.b.String()
}

// storedSeqs lists the stored sequence numbers.
func storedSeqs(t testing.TB, s *Store) []uint64 {
	t.Helper()
	var out []uint64
	err := s.view(func(tx *bolt.Tx) error {
		return tx.Bucket(bucketChunkMeta).ForEach(func(k, _ []byte) error {
			seq, _ := keySeq(k)
			out = append(out, seq)
			return nil
		})
	})
	if err != nil {
		t.Fatal(err)
	}
	return out
}

func TestDropOldest(t *testing.T) {
	dir := t.TempDir()
	var logs syncBuffer
	opts := Options{MaxBytes: MinMaxBytes, Policy: PolicyDropOldest,
		Logger: slog.New(slog.NewTextHandler(&logs, nil))}
	s := openTest(t, dir, opts)
	ctx := context.Background()
	const frameLen = 16 << 10
	appendN(t, s, 3, frameLen)
	for want := uint64(1); want <= 2; want++ {
		if ch, err := s.Lease(ctx); err != nil || ch.Seq != want {
			t.Fatalf("Lease = %d, %v", ch.Seq, err)
		}
	}
	mark := s.Stats().AttemptedMark
	if mark != 1+attemptBlock {
		t.Fatalf("attempted mark %d, want %d", mark, 1+attemptBlock)
	}
	appendN(t, s, 200-3, frameLen)

	// Chunks 1..mark were (or may have been) handed out: all kept. The
	// dropped ones are the oldest above the mark, contiguous.
	seqs := storedSeqs(t, s)
	for i := uint64(0); i < mark; i++ {
		if seqs[i] != i+1 {
			t.Fatalf("chunk %d was dropped although it is at or below the attempted mark %d (stored %v)", i+1, mark, seqs)
		}
	}
	firstKept := seqs[mark]
	if firstKept <= mark+1 {
		t.Fatalf("nothing was dropped: %v", seqs)
	}
	for i, seq := range seqs[mark:] {
		if seq != firstKept+uint64(i) {
			t.Fatalf("stored chunks above the mark are not contiguous: %v", seqs)
		}
	}
	if seqs[len(seqs)-1] != 200 {
		t.Fatalf("newest chunk %d, want 200", seqs[len(seqs)-1])
	}
	dropped := int64(firstKept - mark - 1)

	// One merged loss with the exact offsets: chunk k holds (k-1)*10..k*10-1.
	losses, err := s.PendingLosses()
	if err != nil {
		t.Fatal(err)
	}
	want := Range{Topic: "t", Partition: 0, First: int64(mark) * 10, Last: int64(firstKept-1)*10 - 1, Records: dropped * 10}
	if len(losses) != 1 || losses[0].Range != want || losses[0].Reason != wire.LossReasonDropOldest {
		t.Fatalf("losses = %+v, want one %v", losses, want)
	}
	if v := value(s.m.droppedChunks.WithLabelValues(wire.LossReasonDropOldest)); v != float64(dropped) {
		t.Fatalf("dropped_chunks_total = %v, want %d", v, dropped)
	}
	if v := value(s.m.droppedRecords.WithLabelValues(wire.LossReasonDropOldest)); v != float64(dropped*10) {
		t.Fatalf("dropped_records_total = %v, want %d", v, dropped*10)
	}
	first := Range{Topic: "t", First: int64(mark) * 10, Last: int64(mark)*10 + 9, Records: 10}
	if l := logs.String(); !strings.Contains(l, "level=WARN") || !strings.Contains(l, first.String()) {
		t.Fatalf("log does not name the first dropped range %s:\n%s", first, l)
	}

	// The loss was handed out: later drops start a new record.
	appendN(t, s, 5, frameLen)
	losses2, _ := s.PendingLosses()
	if len(losses2) != 2 || losses2[0] != losses[0] || losses2[1].Range.First != want.Last+1 {
		t.Fatalf("losses after more drops = %+v", losses2)
	}

	// After a restart the mark still protects chunks 1..mark, and leases
	// start over from the lowest chunk.
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	s = openTest(t, dir, opts)
	if st := s.Stats(); st.AttemptedMark != mark || st.Leased != 0 {
		t.Fatalf("after reopen: %+v", st)
	}
	appendN(t, s, 50, frameLen)
	seqs = storedSeqs(t, s)
	for i := uint64(0); i < mark; i++ {
		if seqs[i] != i+1 {
			t.Fatalf("after restart chunk %d was dropped (stored %v)", i+1, seqs)
		}
	}
	if ch, err := s.Lease(ctx); err != nil || ch.Seq != 1 {
		t.Fatalf("first Lease after restart = %d, %v", ch.Seq, err)
	}
}

func TestDropOldestBlocksWhenNothingIsDroppable(t *testing.T) {
	s := openTest(t, t.TempDir(), Options{MaxBytes: MinMaxBytes, Policy: PolicyDropOldest})
	const frameLen = 60 << 10
	fillUntilFull(t, s, frameLen)
	// Lease every chunk: all are at or below the mark now.
	ctx := context.Background()
	n := s.Stats().Chunks
	for i := 0; i < n; i++ {
		if _, err := s.Lease(ctx); err != nil {
			t.Fatal(err)
		}
	}
	done := appendAsync(ctx, s, s.NextSeq(), frameLen)
	testkit.Eventually(t, 5*time.Second, "Append to block", testkit.Holds(func() bool { return s.waiting.Load() == 1 }))
	if st := s.Stats(); st.Chunks != n || st.PendingLosses != 0 {
		t.Fatalf("a leased chunk was dropped: %+v", st)
	}
	if err := s.Ack(s.Floor()); err != nil {
		t.Fatal(err)
	}
	if err := recvErr(t, done, 5*time.Second); err != nil {
		t.Fatal(err)
	}
	if losses, _ := s.PendingLosses(); len(losses) != 0 {
		t.Fatalf("losses = %+v", losses)
	}
}
