package buffer

import (
	"context"
	"errors"
	"math/rand"
	"os"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"github.com/edgemirror/edgemirror/internal/wire"
)

// TestConcurrentAppendLeaseAck runs one appender against several shippers
// that lease, sometimes release, and ack. Every chunk must be acked exactly
// once, in a store small enough to block the appender often.
func TestConcurrentAppendLeaseAck(t *testing.T) {
	s := openTest(t, t.TempDir(), Options{MaxBytes: MinMaxBytes, Policy: PolicyBlock})
	const total = 300
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()

	var (
		mu    sync.Mutex
		acked = make(map[uint64]int)
		wg    sync.WaitGroup
		errs  = make(chan error, 8)
	)
	wg.Add(1)
	go func() {
		defer wg.Done()
		r := rand.New(rand.NewSource(1))
		for seq := uint64(1); seq <= total; seq++ {
			meta, next := chunkOf("t", seq)
			if err := s.Append(ctx, frameFor(seq, 1+r.Intn(40<<10)), meta, next); err != nil {
				errs <- err
				return
			}
		}
	}()
	for w := 0; w < 3; w++ {
		wg.Add(1)
		go func(w int) {
			defer wg.Done()
			r := rand.New(rand.NewSource(int64(w)))
			for {
				ch, err := s.Lease(ctx)
				if err != nil {
					if !errors.Is(err, context.Canceled) {
						errs <- err
					}
					return
				}
				if want := frameFor(ch.Seq, len(ch.Frame)); string(want) != string(ch.Frame) || ch.Meta.Ranges[0].First != int64(ch.Seq-1)*10 {
					errs <- errors.New("leased frame or meta does not match what was appended")
					return
				}
				if r.Intn(4) == 0 {
					s.Release(ch.Seq)
					continue
				}
				if err := s.Ack(ch.Seq); err != nil {
					errs <- err
					return
				}
				mu.Lock()
				acked[ch.Seq]++
				n := len(acked)
				mu.Unlock()
				if n == total {
					cancel()
				}
			}
		}(w)
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}
	for seq := uint64(1); seq <= total; seq++ {
		if acked[seq] != 1 {
			t.Errorf("chunk %d acked %d times", seq, acked[seq])
		}
	}
	st := s.Stats()
	if st.Chunks != 0 || st.Leased != 0 || st.PayloadBytes != 0 || st.Records != 0 || s.Floor() != total+1 {
		t.Fatalf("after acking everything: %+v floor %d", st, s.Floor())
	}
	if off, _ := s.Offsets(); off[PartitionKey{"t", 0}] != total*10 {
		t.Fatalf("offset %d, want %d", off[PartitionKey{"t", 0}], total*10)
	}
}

// TestFileSizeBoundedUnderChurn writes and deletes chunks of mixed sizes
// (up to MaxFrameBytes) with both policies and checks after every step that
// the file never grows past MaxBytes and that the store never wedges.
// EDGEMIRROR_BUFFER_SOAK=<duration> runs it longer.
func TestFileSizeBoundedUnderChurn(t *testing.T) {
	d := 2 * time.Second
	soak := false
	if v := os.Getenv("EDGEMIRROR_BUFFER_SOAK"); v != "" {
		soak = true
		var err error
		if d, err = time.ParseDuration(v); err != nil {
			t.Fatal(err)
		}
	}
	type churnCase struct {
		name     string
		maxBytes int64
		policy   Policy
		sync     bool
		sizes    func(r *rand.Rand, max int) int
	}
	oneMiB := func(*rand.Rand, int) int { return 1 << 20 }
	cases := []churnCase{
		{"1MiB-frames/drop-oldest", 16 << 20, PolicyDropOldest, false, oneMiB},
		{"mixed/drop-oldest", 16 << 20, PolicyDropOldest, false, mixedSize},
		{"mixed/block", 16 << 20, PolicyBlock, false, mixedSize},
		{"mixed/drop-oldest/sync-freelist", 16 << 20, PolicyDropOldest, true, mixedSize},
		{"min-size/drop-oldest", MinMaxBytes, PolicyDropOldest, false, mixedSize},
	}
	if soak {
		cases = append(cases,
			churnCase{"256MiB/1MiB-frames/drop-oldest", 256 << 20, PolicyDropOldest, false, oneMiB},
			churnCase{"256MiB/mixed/drop-oldest", 256 << 20, PolicyDropOldest, false, mixedSize},
			churnCase{"256MiB/mixed/block/sync-freelist", 256 << 20, PolicyBlock, true, mixedSize})
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			churn(t, c.maxBytes, c.policy, c.sync, d, c.sizes)
		})
	}
}

// mixedSize is mostly frames up to 1 MiB, some tiny (inline in bbolt's
// leaf pages) and one in twenty at MaxFrameBytes (the whole budget; in big
// stores at 16 MiB, the agent's largest chunk).
func mixedSize(r *rand.Rand, max int) int {
	switch r.Intn(20) {
	case 0:
		return min(max, 16<<20) // the agent's largest chunk
	case 1, 2, 3, 4:
		return 1 + r.Intn(2000)
	default:
		return 1 + r.Intn(min(max/3, 1<<20))
	}
}

func churn(t *testing.T, maxBytes int64, policy Policy, syncFreelist bool, d time.Duration, size func(*rand.Rand, int) int) {
	dir := t.TempDir()
	s := openTest(t, dir, Options{MaxBytes: maxBytes, Policy: policy, SyncFreelist: syncFreelist})
	path := filepath.Join(dir, FileName)
	max := s.MaxFrameBytes()
	r := rand.New(rand.NewSource(time.Now().UnixNano()))
	ctx := context.Background()
	var leased []uint64
	var maxFile, maxUsed int64
	var appends int
	deadline := time.Now().Add(d)
	for time.Now().Before(deadline) {
		// The shipper side: lease a few, then ack, reject or release them
		// in random order.
		for n := r.Intn(3); n > 0; n-- {
			lctx, cancel := context.WithTimeout(ctx, time.Millisecond)
			ch, err := s.Lease(lctx)
			cancel()
			if err == nil {
				leased = append(leased, ch.Seq)
			}
		}
		if len(leased) > 0 && (r.Intn(3) == 0 || s.waiting.Load() > 0) {
			i := r.Intn(len(leased))
			seq := leased[i]
			leased = append(leased[:i], leased[i+1:]...)
			switch r.Intn(10) {
			case 0:
				s.Release(seq)
			case 1:
				if err := s.Reject(seq, "rejected"); err != nil {
					t.Fatal(err)
				}
			default:
				if err := s.Ack(seq); err != nil {
					t.Fatal(err)
				}
			}
		}
		// Losses are reported now and then, as the shipper does.
		if r.Intn(50) == 0 {
			ackAllLosses(t, s)
		}
		// The reader side. With PolicyBlock an Append into a full store
		// must wait; make room by acking the oldest leased chunk.
		seq := s.NextSeq()
		n := size(r, max)
		done := appendAsync(ctx, s, seq, n)
		var err error
		wedge := time.Now().Add(30 * time.Second)
	wait:
		for {
			select {
			case err = <-done:
				break wait
			case <-time.After(time.Millisecond):
			}
			if time.Now().After(wedge) {
				t.Fatalf("Append of %d bytes wedged: %+v", n, s.Stats())
			}
			if s.waiting.Load() == 0 {
				continue
			}
			if len(leased) == 0 {
				ch, lerr := s.Lease(ctx)
				if lerr != nil {
					t.Fatal(lerr)
				}
				leased = append(leased, ch.Seq)
			}
			if aerr := s.Ack(leased[0]); aerr != nil {
				t.Fatal(aerr)
			}
			leased = leased[1:]
		}
		if err != nil {
			t.Fatalf("Append %d of %d bytes: %v (stats %+v)", seq, n, err, s.Stats())
		}
		appends++
		fi, err := os.Stat(path)
		if err != nil {
			t.Fatal(err)
		}
		if fi.Size() > maxBytes {
			t.Fatalf("file is %d bytes, more than MaxBytes %d", fi.Size(), maxBytes)
		}
		maxFile = max64(maxFile, fi.Size())
		maxUsed = max64(maxUsed, s.Stats().UsedBytes)
	}
	// Drain everything; then the largest frame must still fit.
	for _, seq := range leased {
		s.Release(seq)
	}
	if _, err := s.DropBefore(s.NextSeq()); err != nil {
		t.Fatal(err)
	}
	ackAllLosses(t, s)
	meta, next := chunkOf("t", s.NextSeq())
	if err := s.Append(ctx, make([]byte, max), meta, next); err != nil {
		t.Fatalf("largest frame into the drained store: %v", err)
	}
	st := s.Stats()
	t.Logf("%d appends; MaxBytes %d budget %d (%.1f%%) max frame %d; max used %d; max file %d (%.1f%% of MaxBytes); bbolt refusals %v; drops %v",
		appends, maxBytes, st.BudgetBytes, 100*float64(st.BudgetBytes)/float64(maxBytes), max, maxUsed, maxFile,
		100*float64(maxFile)/float64(maxBytes), value(s.m.fullCommits), value(s.m.droppedChunks.WithLabelValues(wire.LossReasonDropOldest)))
}

func max64(a, b int64) int64 {
	if a > b {
		return a
	}
	return b
}

func ackAllLosses(t testing.TB, s *Store) {
	t.Helper()
	losses, err := s.PendingLosses()
	if err != nil {
		t.Fatal(err)
	}
	ids := make([]uint64, len(losses))
	for i, l := range losses {
		ids[i] = l.ID
	}
	if err := s.AckLosses(ids); err != nil {
		t.Fatal(err)
	}
}
