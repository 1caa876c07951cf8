package buffer

import (
	"bytes"
	"context"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"
	bolt "go.etcd.io/bbolt"

	"github.com/edgemirror/edgemirror/internal/testkit"
	"github.com/edgemirror/edgemirror/internal/wire"
)

func TestParsePolicy(t *testing.T) {
	for _, p := range []Policy{PolicyBlock, PolicyDropOldest} {
		got, err := ParsePolicy(p.String())
		if err != nil || got != p {
			t.Errorf("ParsePolicy(%q) = %v, %v", p.String(), got, err)
		}
	}
	if _, err := ParsePolicy("drop-newest"); !errors.Is(err, ErrInvalid) {
		t.Errorf("ParsePolicy(drop-newest) err = %v, want ErrInvalid", err)
	}
	if s := Policy(7).String(); s != "Policy(7)" {
		t.Errorf("Policy(7).String() = %q", s)
	}
}

func TestOpenValidates(t *testing.T) {
	dir := t.TempDir()
	for _, o := range []Options{
		{MaxBytes: MinMaxBytes - 1},
		{MaxBytes: MinMaxBytes, Policy: Policy(9)},
		{MaxBytes: MinMaxBytes, LockTimeout: -time.Second},
	} {
		if _, err := Open(dir, o); !errors.Is(err, ErrInvalid) {
			t.Errorf("Open(%+v) err = %v, want ErrInvalid", o, err)
		}
	}
}

func TestOpenCreatesDirAndKeepsIdentity(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "a", "b")
	s, err := Open(dir, Options{MaxBytes: MinMaxBytes})
	if err != nil {
		t.Fatal(err)
	}
	epoch := s.Epoch()
	if epoch == 0 || s.NextSeq() != 1 || s.Floor() != 1 {
		t.Fatalf("new store: epoch %d next %d floor %d", epoch, s.NextSeq(), s.Floor())
	}
	appendN(t, s, 3, 100)
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	if err := s.Close(); err != nil {
		t.Fatalf("second Close: %v", err)
	}
	if _, err := s.Lease(context.Background()); !errors.Is(err, ErrClosed) {
		t.Fatalf("Lease after Close: %v", err)
	}
	s = openTest(t, dir, Options{MaxBytes: MinMaxBytes})
	if s.Epoch() != epoch || s.NextSeq() != 4 || s.Floor() != 1 {
		t.Fatalf("reopened: epoch %d (was %d) next %d floor %d", s.Epoch(), epoch, s.NextSeq(), s.Floor())
	}
	if _, err := s.DropBefore(4); err != nil {
		t.Fatal(err)
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	// Empty store: NextSeq must not restart.
	s = openTest(t, dir, Options{MaxBytes: MinMaxBytes})
	if s.NextSeq() != 4 || s.Floor() != 4 {
		t.Fatalf("reopened empty: next %d floor %d, want 4 4", s.NextSeq(), s.Floor())
	}
}

func TestAppendLeaseAck(t *testing.T) {
	s := openTest(t, t.TempDir(), Options{})
	ctx := context.Background()
	frame := frameFor(1, 5000)
	meta := ChunkMeta{Seq: 1, Records: 3, RawBytes: 9000, Ranges: []Range{
		{Topic: "a", Partition: 0, First: 10, Last: 11, Records: 2},
		{Topic: "b", Partition: 7, First: 5, Last: 5, Records: 1},
	}}
	next := map[PartitionKey]int64{{"a", 0}: 12, {"b", 7}: 6}
	if err := s.Append(ctx, frame, meta, next); err != nil {
		t.Fatal(err)
	}
	frame[0] ^= 0xff // the store keeps its own copy
	if err := s.Append(ctx, frame, meta, next); !errors.Is(err, ErrSeq) {
		t.Fatalf("Append with used seq: %v, want ErrSeq", err)
	}
	off, err := s.Offsets()
	if err != nil || len(off) != 2 || off[PartitionKey{"a", 0}] != 12 || off[PartitionKey{"b", 7}] != 6 {
		t.Fatalf("Offsets = %v, %v", off, err)
	}
	st := s.Stats()
	if st.Chunks != 1 || st.PayloadBytes != 5000 || st.Records != 3 || st.FileBytes == 0 {
		t.Fatalf("Stats = %+v", st)
	}
	ch, err := s.Lease(ctx)
	if err != nil {
		t.Fatal(err)
	}
	frame[0] ^= 0xff
	if ch.Seq != 1 || !bytes.Equal(ch.Frame, frame) || ch.Meta.Records != 3 || len(ch.Meta.Ranges) != 2 ||
		ch.Meta.Ranges[1] != meta.Ranges[1] || ch.Meta.RawBytes != 9000 {
		t.Fatalf("Lease = %+v", ch.Meta)
	}
	if st := s.Stats(); st.Leased != 1 || st.AttemptedMark != 1+attemptBlock {
		t.Fatalf("after Lease: %+v", st)
	}
	if err := s.Ack(1); err != nil {
		t.Fatal(err)
	}
	if err := s.Ack(1); !errors.Is(err, ErrNotFound) {
		t.Fatalf("second Ack: %v, want ErrNotFound", err)
	}
	if st := s.Stats(); st.Chunks != 0 || st.Leased != 0 || st.PayloadBytes != 0 || s.Floor() != 2 {
		t.Fatalf("after Ack: %+v floor %d", st, s.Floor())
	}
}

func TestAppendRejectsBadInput(t *testing.T) {
	s := openTest(t, t.TempDir(), Options{})
	ctx := context.Background()
	for name, c := range map[string]struct {
		meta ChunkMeta
		next map[PartitionKey]int64
	}{
		"empty topic":     {ChunkMeta{Seq: 1, Ranges: []Range{{Topic: "", First: 1, Last: 1}}}, nil},
		"first>last":      {ChunkMeta{Seq: 1, Ranges: []Range{{Topic: "a", First: 2, Last: 1}}}, nil},
		"neg partition":   {ChunkMeta{Seq: 1}, map[PartitionKey]int64{{"a", -1}: 1}},
		"neg offset":      {ChunkMeta{Seq: 1}, map[PartitionKey]int64{{"a", 1}: -1}},
		"long topic":      {ChunkMeta{Seq: 1}, map[PartitionKey]int64{{strings.Repeat("x", 300), 1}: 1}},
		"negative record": {ChunkMeta{Seq: 1, Records: -1}, nil},
	} {
		if err := s.Append(ctx, []byte("x"), c.meta, c.next); !errors.Is(err, ErrInvalid) {
			t.Errorf("%s: %v, want ErrInvalid", name, err)
		}
	}
	cctx, cancel := context.WithCancel(ctx)
	cancel()
	meta, next := chunkOf("t", 1)
	if err := s.Append(cctx, []byte("x"), meta, next); !errors.Is(err, context.Canceled) {
		t.Errorf("cancelled ctx: %v", err)
	}
	if s.NextSeq() != 1 {
		t.Fatalf("a rejected Append changed NextSeq to %d", s.NextSeq())
	}
}

func TestErrTooLarge(t *testing.T) {
	s := openTest(t, t.TempDir(), Options{MaxBytes: MinMaxBytes})
	max := s.MaxFrameBytes()
	if max < 64<<10 {
		t.Fatalf("MaxFrameBytes %d is implausibly small", max)
	}
	meta, next := chunkOf("t", 1)
	err := s.Append(context.Background(), make([]byte, max+pageSize), meta, next)
	if !errors.Is(err, ErrTooLarge) {
		t.Fatalf("Append of %d bytes: %v, want ErrTooLarge", max+pageSize, err)
	}
	if err := s.Append(context.Background(), make([]byte, max), meta, next); err != nil {
		t.Fatalf("Append of MaxFrameBytes: %v", err)
	}
}

func TestSecondOpenIsLocked(t *testing.T) {
	dir := t.TempDir()
	openTest(t, dir, Options{})
	for _, timeout := range []time.Duration{100 * time.Millisecond, 0} {
		start := time.Now()
		_, err := Open(dir, Options{MaxBytes: 4 << 20, LockTimeout: timeout})
		if !errors.Is(err, ErrLocked) {
			t.Fatalf("second Open: %v, want ErrLocked", err)
		}
		if d := time.Since(start); d > DefaultLockTimeout+2*time.Second {
			t.Fatalf("second Open took %v", d)
		}
	}
}

func TestUnsupportedFormat(t *testing.T) {
	dir := t.TempDir()
	s, err := Open(dir, Options{MaxBytes: MinMaxBytes})
	if err != nil {
		t.Fatal(err)
	}
	appendN(t, s, 1, 10)
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	path := filepath.Join(dir, FileName)
	// As the store writes it: no persisted free-page list.
	db, err := bolt.Open(path, 0o600, &bolt.Options{NoFreelistSync: true})
	if err != nil {
		t.Fatal(err)
	}
	err = db.Update(func(tx *bolt.Tx) error {
		return tx.Bucket(bucketState).Put(keyFormat, encodeUint64(99))
	})
	if err != nil {
		t.Fatal(err)
	}
	db.Close()
	before, _ := os.ReadFile(path)
	for _, sync := range []bool{false, true} {
		_, err = Open(dir, Options{MaxBytes: MinMaxBytes, SyncFreelist: sync})
		if !errors.Is(err, ErrUnsupportedFormat) || !strings.Contains(err.Error(), "version 99") ||
			!strings.Contains(err.Error(), "supports version 1") {
			t.Fatalf("Open of format 99 (SyncFreelist %v): %v", sync, err)
		}
		if after, _ := os.ReadFile(path); !bytes.Equal(before, after) {
			t.Fatalf("Open (SyncFreelist %v) modified a file it refused", sync)
		}
	}

	// A bbolt file some other program wrote.
	other := t.TempDir()
	db, err = bolt.Open(filepath.Join(other, FileName), 0o600, nil)
	if err != nil {
		t.Fatal(err)
	}
	_ = db.Update(func(tx *bolt.Tx) error { _, err := tx.CreateBucket([]byte("x")); return err })
	db.Close()
	if _, err := Open(other, Options{MaxBytes: MinMaxBytes}); !errors.Is(err, ErrUnsupportedFormat) {
		t.Fatalf("Open of a foreign bbolt file: %v", err)
	}

	// Not a bbolt file at all.
	junk := t.TempDir()
	if err := os.WriteFile(filepath.Join(junk, FileName), bytes.Repeat([]byte("junk"), 4096), 0o600); err != nil {
		t.Fatal(err)
	}
	if _, err := Open(junk, Options{MaxBytes: MinMaxBytes}); err == nil {
		t.Fatal("Open of a junk file succeeded")
	}
}

func TestBlockWakesOnAck(t *testing.T) {
	s := openTest(t, t.TempDir(), Options{MaxBytes: MinMaxBytes, Policy: PolicyBlock})
	const frameLen = 60 << 10
	fillUntilFull(t, s, frameLen)
	n := s.Stats().Chunks
	done := appendAsync(context.Background(), s, s.NextSeq(), frameLen)
	testkit.Eventually(t, 5*time.Second, "Append to block", testkit.Holds(func() bool { return s.waiting.Load() == 1 }))
	if err := s.Ack(s.Floor()); err != nil {
		t.Fatal(err)
	}
	if err := recvErr(t, done, 5*time.Second); err != nil {
		t.Fatalf("blocked Append: %v", err)
	}
	if st := s.Stats(); st.Chunks != n || st.PendingLosses != 0 {
		t.Fatalf("after unblocking: %+v, want %d chunks and no losses", st, n)
	}
	if v := value(s.m.blockedSeconds); v <= 0 {
		t.Fatalf("blocked_seconds_total = %v", v)
	}

	// DropBefore and Reject wake it too; a cancelled ctx ends the wait
	// without storing anything.
	for i, free := range []func() error{
		func() error { _, err := s.DropBefore(s.Floor() + 1); return err },
		func() error { return s.Reject(s.Floor(), "rejected") },
	} {
		done := appendAsync(context.Background(), s, s.NextSeq(), frameLen)
		testkit.Eventually(t, 5*time.Second, "Append to block", testkit.Holds(func() bool { return s.waiting.Load() == 1 }))
		if err := free(); err != nil {
			t.Fatal(i, err)
		}
		if err := recvErr(t, done, 5*time.Second); err != nil {
			t.Fatalf("%d: blocked Append: %v", i, err)
		}
	}
	ctx, cancel := context.WithCancel(context.Background())
	seq := s.NextSeq()
	done = appendAsync(ctx, s, seq, frameLen)
	testkit.Eventually(t, 5*time.Second, "Append to block", testkit.Holds(func() bool { return s.waiting.Load() == 1 }))
	cancel()
	if err := recvErr(t, done, 5*time.Second); !errors.Is(err, context.Canceled) {
		t.Fatalf("cancelled Append: %v", err)
	}
	if s.NextSeq() != seq {
		t.Fatal("cancelled Append stored its chunk")
	}
}

func TestCloseWakesWaiters(t *testing.T) {
	s, err := Open(t.TempDir(), Options{MaxBytes: MinMaxBytes})
	if err != nil {
		t.Fatal(err)
	}
	// A Lease waits on an empty store...
	leased := make(chan error, 1)
	go func() { _, err := s.Lease(context.Background()); leased <- err }()
	// ... then is served by the first chunk, and a second Lease waits.
	appendN(t, s, 1, 100)
	if err := recvErr(t, leased, 5*time.Second); err != nil {
		t.Fatal(err)
	}
	go func() { _, err := s.Lease(context.Background()); leased <- err }()
	const frameLen = 60 << 10
	fillUntilFull(t, s, frameLen)
	appended := appendAsync(context.Background(), s, s.NextSeq(), frameLen)
	testkit.Eventually(t, 5*time.Second, "Append to block", testkit.Holds(func() bool { return s.waiting.Load() == 1 }))
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	if err := recvErr(t, appended, 5*time.Second); !errors.Is(err, ErrClosed) {
		t.Fatalf("Append after Close: %v", err)
	}
	// The second Lease either got chunk 2 before Close or ErrClosed.
	if err := recvErr(t, leased, 5*time.Second); err != nil && !errors.Is(err, ErrClosed) {
		t.Fatalf("Lease after Close: %v", err)
	}
	for name, err := range map[string]error{
		"Ack":           s.Ack(1),
		"Reject":        s.Reject(1, "x"),
		"AckLosses":     s.AckLosses([]uint64{1}),
		"AdvanceOffset": s.AdvanceOffsets(nil, nil),
	} {
		if !errors.Is(err, ErrClosed) {
			t.Errorf("%s after Close: %v", name, err)
		}
	}
	if _, err := s.Offsets(); !errors.Is(err, ErrClosed) {
		t.Errorf("Offsets after Close: %v", err)
	}
	if _, err := s.PendingLosses(); !errors.Is(err, ErrClosed) {
		t.Errorf("PendingLosses after Close: %v", err)
	}
	if _, err := s.DropBefore(5); !errors.Is(err, ErrClosed) {
		t.Errorf("DropBefore after Close: %v", err)
	}
	s.Release(1) // no-op, no panic
}

func TestReleaseLeasesAgainFirst(t *testing.T) {
	s := openTest(t, t.TempDir(), Options{})
	appendN(t, s, 3, 100)
	ctx := context.Background()
	var got []uint64
	for i := 0; i < 3; i++ {
		ch, err := s.Lease(ctx)
		if err != nil {
			t.Fatal(err)
		}
		got = append(got, ch.Seq)
	}
	if got[0] != 1 || got[1] != 2 || got[2] != 3 {
		t.Fatalf("lease order %v", got)
	}
	s.Release(2)
	if ch, err := s.Lease(ctx); err != nil || ch.Seq != 2 {
		t.Fatalf("Lease after Release(2) = %d, %v", ch.Seq, err)
	}
	// Nothing left to lease: a Lease with a deadline gives up.
	cctx, cancel := context.WithTimeout(ctx, 20*time.Millisecond)
	defer cancel()
	if _, err := s.Lease(cctx); !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("Lease with all chunks leased: %v", err)
	}
}

func TestRejectRecordsLosses(t *testing.T) {
	s := openTest(t, t.TempDir(), Options{})
	appendN(t, s, 3, 100)
	if err := s.Reject(2, ""); !errors.Is(err, ErrInvalid) {
		t.Fatalf("Reject with empty reason: %v", err)
	}
	if err := s.Reject(2, "bad-request"); err != nil {
		t.Fatal(err)
	}
	if err := s.Reject(9, "bad-request"); !errors.Is(err, ErrNotFound) {
		t.Fatalf("Reject of unknown seq: %v", err)
	}
	losses, err := s.PendingLosses()
	if err != nil || len(losses) != 1 {
		t.Fatalf("PendingLosses = %+v, %v", losses, err)
	}
	want := Range{Topic: "t", Partition: 0, First: 10, Last: 19, Records: 10}
	if l := losses[0]; l.Range != want || l.Reason != "bad-request" || l.ID == 0 || l.At.IsZero() {
		t.Fatalf("loss = %+v", l)
	}
	if v := value(s.m.droppedRecords.WithLabelValues("bad-request")); v != 10 {
		t.Fatalf("dropped_records_total{bad-request} = %v", v)
	}
	if st := s.Stats(); st.Chunks != 2 || s.Floor() != 1 {
		t.Fatalf("after Reject: %+v floor %d", st, s.Floor())
	}
	if err := s.AckLosses([]uint64{losses[0].ID, 12345}); err != nil {
		t.Fatal(err)
	}
	if losses, _ := s.PendingLosses(); len(losses) != 0 {
		t.Fatalf("losses after AckLosses: %+v", losses)
	}
}

func TestDropBefore(t *testing.T) {
	s := openTest(t, t.TempDir(), Options{})
	appendN(t, s, 5, 100)
	ctx := context.Background()
	if _, err := s.Lease(ctx); err != nil { // seq 1 leased
		t.Fatal(err)
	}
	n, err := s.DropBefore(4)
	if err != nil || n != 3 {
		t.Fatalf("DropBefore(4) = %d, %v", n, err)
	}
	if st := s.Stats(); st.Chunks != 2 || st.Leased != 0 || s.Floor() != 4 || st.PendingLosses != 0 {
		t.Fatalf("after DropBefore: %+v floor %d", st, s.Floor())
	}
	if err := s.Ack(1); !errors.Is(err, ErrNotFound) {
		t.Fatalf("Ack of a dropped chunk: %v", err)
	}
	if ch, err := s.Lease(ctx); err != nil || ch.Seq != 4 {
		t.Fatalf("Lease = %d, %v", ch.Seq, err)
	}
	if n, err := s.DropBefore(100); err != nil || n != 2 || s.Floor() != 6 || s.NextSeq() != 6 {
		t.Fatalf("DropBefore(100) = %d, %v; floor %d", n, err, s.Floor())
	}
	if v := value(s.m.acked); v != 5 {
		t.Fatalf("acked_chunks_total = %v", v)
	}
}

func TestAdvanceOffsetsAndLosses(t *testing.T) {
	dir := t.TempDir()
	s := openTest(t, dir, Options{})
	a := PartitionKey{"a", 3}
	err := s.AdvanceOffsets(map[PartitionKey]int64{a: 500}, []Loss{
		{Range: Range{Topic: "a", Partition: 3, First: 100, Last: 499, Records: 400}, Reason: "retention"},
	})
	if err != nil {
		t.Fatal(err)
	}
	if err := s.AdvanceOffsets(nil, []Loss{{Range: Range{Topic: "a", First: 5, Last: 1}, Reason: "x"}}); !errors.Is(err, ErrInvalid) {
		t.Fatalf("AdvanceOffsets with a bad range: %v", err)
	}
	if err := s.AdvanceOffsets(nil, []Loss{{Range: Range{Topic: "a", First: 1, Last: 1}}}); !errors.Is(err, ErrInvalid) {
		t.Fatalf("AdvanceOffsets without reason: %v", err)
	}
	l1, err := s.PendingLosses()
	if err != nil || len(l1) != 1 || l1[0].Range.Records != 400 {
		t.Fatalf("PendingLosses = %+v, %v", l1, err)
	}
	// Reported losses are never extended: the next contiguous loss is a
	// new record.
	err = s.AdvanceOffsets(map[PartitionKey]int64{a: 600}, []Loss{
		{Range: Range{Topic: "a", Partition: 3, First: 500, Last: 599, Records: 100}, Reason: "retention"},
	})
	if err != nil {
		t.Fatal(err)
	}
	// An unreported one is.
	err = s.AdvanceOffsets(map[PartitionKey]int64{a: 700}, []Loss{
		{Range: Range{Topic: "a", Partition: 3, First: 600, Last: 699, Records: 100}, Reason: "retention"},
	})
	if err != nil {
		t.Fatal(err)
	}
	l2, _ := s.PendingLosses()
	if len(l2) != 2 || l2[1].ID <= l1[0].ID || l2[1].Range.First != 500 || l2[1].Range.Last != 699 || l2[1].Range.Records != 200 {
		t.Fatalf("PendingLosses = %+v", l2)
	}
	if err := s.AckLosses([]uint64{l1[0].ID}); err != nil {
		t.Fatal(err)
	}
	if off, _ := s.Offsets(); off[a] != 700 {
		t.Fatalf("offset = %d", off[a])
	}
	used := s.Stats().UsedBytes
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	s = openTest(t, dir, Options{})
	l3, _ := s.PendingLosses()
	if len(l3) != 1 || l3[0] != l2[1] {
		t.Fatalf("after reopen: %+v, want %+v", l3, l2[1])
	}
	if u := s.Stats().UsedBytes; u != used {
		t.Fatalf("UsedBytes after reopen %d, before %d: accounting drifts", u, used)
	}
}

func TestCorruptFrameBecomesLoss(t *testing.T) {
	dir := t.TempDir()
	s, err := Open(dir, Options{MaxBytes: MinMaxBytes})
	if err != nil {
		t.Fatal(err)
	}
	appendN(t, s, 3, 3000)
	s.Close()
	db, err := bolt.Open(filepath.Join(dir, FileName), 0o600, nil)
	if err != nil {
		t.Fatal(err)
	}
	err = db.Update(func(tx *bolt.Tx) error {
		b := tx.Bucket(bucketFrames).Bucket(segKey(1, 0))
		f := append([]byte(nil), b.Get(frameKey)...)
		f[100] ^= 1
		return b.Put(frameKey, f)
	})
	db.Close()
	if err != nil {
		t.Fatal(err)
	}
	reg := prometheus.NewRegistry()
	s = openTest(t, dir, Options{MaxBytes: MinMaxBytes, Registerer: reg})
	ch, err := s.Lease(context.Background())
	if err != nil || ch.Seq != 2 {
		t.Fatalf("Lease = %d, %v; want chunk 2", ch.Seq, err)
	}
	losses, _ := s.PendingLosses()
	if len(losses) != 1 || losses[0].Reason != wire.LossReasonBufferCorrupt || losses[0].Range.First != 0 || losses[0].Range.Last != 9 {
		t.Fatalf("losses = %+v", losses)
	}
	if v := value(s.m.droppedChunks.WithLabelValues(wire.LossReasonBufferCorrupt)); v != 1 {
		t.Fatalf("dropped_chunks_total{corrupt} = %v", v)
	}
}

func TestStatsRecomputedOnOpen(t *testing.T) {
	dir := t.TempDir()
	s, err := Open(dir, Options{MaxBytes: MinMaxBytes})
	if err != nil {
		t.Fatal(err)
	}
	appendN(t, s, 7, 1500)
	if err := s.Ack(3); err != nil {
		t.Fatal(err)
	}
	before := s.Stats()
	s.Close()
	s = openTest(t, dir, Options{MaxBytes: MinMaxBytes})
	after := s.Stats()
	before.FileBytes, after.FileBytes = 0, 0
	if before != after {
		t.Fatalf("stats before close %+v, after open %+v", before, after)
	}
}

func TestMetrics(t *testing.T) {
	reg := prometheus.NewRegistry()
	dir := t.TempDir()
	s, err := Open(dir, Options{MaxBytes: MinMaxBytes, Registerer: reg})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := Open(t.TempDir(), Options{MaxBytes: MinMaxBytes, Registerer: reg}); err == nil {
		t.Fatal("a second Store registered the same metrics")
	}
	appendN(t, s, 2, 100)
	if err := s.Ack(1); err != nil {
		t.Fatal(err)
	}
	for name, want := range map[string]float64{
		"edgemirror_buffer_chunks":                1,
		"edgemirror_buffer_payload_bytes":         100,
		"edgemirror_buffer_appended_chunks_total": 2,
		"edgemirror_buffer_acked_chunks_total":    1,
	} {
		got, err := gatherValue(reg, name)
		if err != nil || got != want {
			t.Errorf("%s = %v, %v; want %v", name, got, err, want)
		}
	}
	if v, _ := gatherValue(reg, "edgemirror_buffer_file_bytes"); v <= 0 {
		t.Errorf("file_bytes = %v", v)
	}
	if n := histCount(reg, "edgemirror_buffer_commit_duration_seconds"); n == 0 {
		t.Errorf("commit_duration_seconds has no samples")
	}
	s.Close()
	// Close unregistered everything: the store can be reopened on the
	// same registry.
	s = openTest(t, dir, Options{MaxBytes: MinMaxBytes, Registerer: reg})
	if got, _ := gatherValue(reg, "edgemirror_buffer_chunks"); got != 1 {
		t.Errorf("chunks after reopen = %v", got)
	}
}

func gatherValue(reg *prometheus.Registry, name string) (float64, error) {
	mfs, err := reg.Gather()
	if err != nil {
		return 0, err
	}
	for _, mf := range mfs {
		if mf.GetName() != name {
			continue
		}
		for _, m := range mf.GetMetric() {
			switch {
			case m.Gauge != nil:
				return m.Gauge.GetValue(), nil
			case m.Counter != nil:
				return m.Counter.GetValue(), nil
			}
		}
	}
	return 0, errors.New("not found")
}

// value reads a gauge or counter.
func value(c prometheus.Collector) float64 {
	ch := make(chan prometheus.Metric, 1)
	c.Collect(ch)
	var m dto.Metric
	if err := (<-ch).Write(&m); err != nil {
		return -1
	}
	if m.Gauge != nil {
		return m.Gauge.GetValue()
	}
	return m.Counter.GetValue()
}

func histCount(reg *prometheus.Registry, name string) uint64 {
	mfs, _ := reg.Gather()
	for _, mf := range mfs {
		if mf.GetName() == name && len(mf.GetMetric()) > 0 {
			return mf.GetMetric()[0].GetHistogram().GetSampleCount()
		}
	}
	return 0
}

func TestTooLargeCountsPendingLosses(t *testing.T) {
	opts := Options{MaxBytes: MinMaxBytes, Policy: PolicyBlock}
	if got, want := opts.MaxFrameBytes(), (Options{MaxBytes: MinMaxBytes}).MaxFrameBytes(); got != want || got <= 0 {
		t.Fatalf("Options.MaxFrameBytes = %d, %d", got, want)
	}
	if (Options{MaxBytes: 1}).MaxFrameBytes() != 0 {
		t.Fatal("MaxFrameBytes of invalid options is not 0")
	}
	s := openTest(t, t.TempDir(), opts)
	if s.MaxFrameBytes() != opts.MaxFrameBytes() {
		t.Fatalf("Store.MaxFrameBytes %d, Options.MaxFrameBytes %d", s.MaxFrameBytes(), opts.MaxFrameBytes())
	}
	// Pending losses take room an empty store would otherwise have: the
	// largest frame then fails at once instead of waiting forever.
	var losses []Loss
	for i := int64(0); i < 200; i++ {
		losses = append(losses, Loss{Range: Range{Topic: "t", Partition: int32(i), First: 0, Last: 9, Records: 10}, Reason: "retention"})
	}
	if err := s.AdvanceOffsets(nil, losses); err != nil {
		t.Fatal(err)
	}
	meta, next := chunkOf("t", 1)
	err := s.Append(context.Background(), make([]byte, s.MaxFrameBytes()), meta, next)
	if !errors.Is(err, ErrTooLarge) {
		t.Fatalf("Append of MaxFrameBytes with pending losses: %v, want ErrTooLarge", err)
	}
	ackAllLosses(t, s)
	if err := s.Append(context.Background(), make([]byte, s.MaxFrameBytes()), meta, next); err != nil {
		t.Fatalf("after AckLosses: %v", err)
	}
}
