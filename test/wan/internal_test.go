package wan

import (
	"context"
	"testing"
	"time"
)

func TestBucketPacesAtRate(t *testing.T) {
	t0 := time.Unix(0, 0)
	l := Link{Rate: 1_000_000} // burst 10 kB
	b := newBucket(l, t0)
	// A full bucket lets one burst through at once.
	if w := b.reserve(t0, 10_000); w != 0 {
		t.Fatalf("first burst waits %s, want 0", w)
	}
	// Then every byte costs 1 µs, and reservations queue behind each other.
	if w := b.reserve(t0, 10_000); w != 10*time.Millisecond {
		t.Fatalf("second reservation waits %s, want 10ms", w)
	}
	if w := b.reserve(t0, 5_000); w != 15*time.Millisecond {
		t.Fatalf("third reservation waits %s, want 15ms", w)
	}
	// A caller that wakes 3 ms late loses nothing: the tokens that accrued pay for
	// its next piece.
	if w := b.reserve(t0.Add(18*time.Millisecond), 10_000); w != 7*time.Millisecond {
		t.Fatalf("late reservation waits %s, want 7ms", w)
	}
	// Idle time refills at most one burst.
	t1 := t0.Add(time.Hour)
	if w := b.reserve(t1, 10_000); w != 0 {
		t.Fatalf("after idle: waits %s, want 0", w)
	}
	if w := b.reserve(t1, 1_000); w != time.Millisecond {
		t.Fatalf("after idle burst: waits %s, want 1ms", w)
	}
}

func TestBucketSet(t *testing.T) {
	t0 := time.Unix(0, 0)
	b := newBucket(LAN, t0)
	if w := b.reserve(t0, 1<<30); w != 0 {
		t.Fatalf("unlimited bucket waits %s", w)
	}
	b.set(Link{Rate: 1_000}, t0) // burst minPiece = 512 bytes
	if w := b.reserve(t0, 512); w != 0 {
		t.Fatalf("after set: first burst waits %s, want 0", w)
	}
	if w := b.reserve(t0, 100); w != 100*time.Millisecond {
		t.Fatalf("after set: waits %s, want 100ms", w)
	}
	b.set(LAN, t0)
	if w := b.reserve(t0, 1<<30); w != 0 {
		t.Fatalf("unlimited again: waits %s", w)
	}
}

func TestSeriesBusiest(t *testing.T) {
	t0 := time.Unix(0, 0)
	s := newSeries(t0)
	if got := s.busiest(time.Second); got != 0 {
		t.Fatalf("empty series: %v", got)
	}
	// 1000 bytes every 10 ms for 3 s (100 kB/s), with a 50 kB spike at 1.5 s.
	for i := range 300 {
		s.add(t0.Add(time.Duration(i)*seriesStep), 1000)
	}
	s.add(t0.Add(1500*time.Millisecond), 50_000)
	if got, want := s.busiest(2*time.Second), (200_000+50_000)/2.0; got != want {
		t.Errorf("busiest 2s = %v, want %v", got, want)
	}
	if got, want := s.busiest(10*time.Millisecond), 51_000/0.01; got != want {
		t.Errorf("busiest 10ms = %v, want %v", got, want)
	}
	// Less history than the window: everything divided by the window.
	if got, want := s.busiest(10*time.Second), 350_000/10.0; got != want {
		t.Errorf("busiest 10s = %v, want %v", got, want)
	}
	if got := s.busiest(0); got != 0 {
		t.Errorf("busiest 0 = %v", got)
	}
}

func TestSeriesRetention(t *testing.T) {
	t0 := time.Unix(0, 0)
	s := newSeries(t0)
	s.add(t0, 1_000_000)
	later := t0.Add(seriesRetention + seriesRetention/4)
	s.add(later, 1)
	if got := s.busiest(time.Second); got != 1 {
		t.Errorf("after retention: busiest 1s = %v, want 1 (the old spike is forgotten)", got)
	}
	s.add(t0, 5) // older than the retained history: ignored
	if got := s.busiest(time.Second); got != 1 {
		t.Errorf("busiest 1s = %v, want 1", got)
	}
	if n := len(s.buckets); n > int(seriesRetention/seriesStep)*9/8 {
		t.Errorf("%d buckets kept", n)
	}
}

func TestQueue(t *testing.T) {
	q := newQueue()
	ctx := context.Background()
	// An empty queue admits even a piece over the limit.
	if err := q.acquire(ctx, 100, 10); err != nil {
		t.Fatal(err)
	}
	q.push(piece{data: make([]byte, 100)})
	done := make(chan error, 1)
	go func() { done <- q.acquire(ctx, 5, 10) }()
	select {
	case err := <-done:
		t.Fatalf("acquire over the limit returned %v", err)
	case <-time.After(20 * time.Millisecond):
	}
	pc, ok, err := q.pop(ctx)
	if !ok || err != nil || len(pc.data) != 100 {
		t.Fatalf("pop = %d bytes, %v, %v", len(pc.data), ok, err)
	}
	q.release(100)
	select {
	case err := <-done:
		if err != nil {
			t.Fatal(err)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("acquire still blocked after release")
	}
	q.push(piece{data: make([]byte, 5)})
	q.close()
	if pc, ok, err := q.pop(ctx); !ok || err != nil || len(pc.data) != 5 {
		t.Fatalf("pop after close = %d bytes, %v, %v; want the piece left", len(pc.data), ok, err)
	}
	if _, ok, err := q.pop(ctx); ok || err != nil {
		t.Fatalf("pop on closed empty queue = %v, %v", ok, err)
	}
	cctx, cancel := context.WithCancel(ctx)
	go func() { done <- q.acquire(cctx, 10, 10) }()
	cancel()
	if err := <-done; err != context.Canceled {
		t.Fatalf("acquire after cancel: %v", err)
	}
	if _, _, err := newQueue().pop(cctx); err != context.Canceled {
		t.Fatalf("pop after cancel: %v", err)
	}
}
