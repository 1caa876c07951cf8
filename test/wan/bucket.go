package wan

import (
	"sync"
	"time"
)

// bucket is the token bucket that paces one direction of the link. All
// connections of that direction reserve from the same bucket, so the rate is a
// property of the link, not of a connection.
//
// A reservation always succeeds and returns how long the caller must wait before
// its bytes have left the bottleneck. Tokens may go negative: later reservations
// queue behind earlier ones in the order they were made, which is what a FIFO
// bottleneck does. A caller that wakes up late loses nothing as long as the
// lateness is within the burst, because the tokens accrued meanwhile pay for the
// next reservation.
type bucket struct {
	mu     sync.Mutex
	rate   float64 // bytes/s; 0 means unlimited
	burst  float64 // capacity in bytes
	tokens float64
	last   time.Time
}

func newBucket(l Link, now time.Time) *bucket {
	b := &bucket{last: now}
	b.setLocked(l)
	b.tokens = b.burst
	return b
}

// set changes rate and burst from now on. Reservations already made keep their
// wait.
func (b *bucket) set(l Link, now time.Time) {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.refillLocked(now)
	wasUnlimited := b.rate == 0
	b.setLocked(l)
	if wasUnlimited {
		b.tokens = b.burst
	}
	b.tokens = min(b.tokens, b.burst)
}

func (b *bucket) setLocked(l Link) {
	b.rate = float64(l.Rate)
	b.burst = l.burst()
}

func (b *bucket) refillLocked(now time.Time) {
	if now.After(b.last) {
		if b.rate > 0 {
			b.tokens = min(b.burst, b.tokens+now.Sub(b.last).Seconds()*b.rate)
		}
		b.last = now
	}
}

// reserve takes n bytes' worth of tokens at now and returns how long after now
// the bytes are released.
func (b *bucket) reserve(now time.Time, n int) time.Duration {
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.rate == 0 {
		return 0
	}
	b.refillLocked(now)
	b.tokens -= float64(n)
	if b.tokens >= 0 {
		return 0
	}
	return time.Duration(-b.tokens / b.rate * float64(time.Second))
}
