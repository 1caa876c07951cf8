package wan

import (
	"sync"
	"time"
)

// series counts bytes per seriesStep since start, keeping seriesRetention of
// history, so the busiest window of any length can be found afterwards.
type series struct {
	start time.Time

	mu      sync.Mutex
	first   int64   // step index of buckets[0]
	buckets []int64 // bytes per step
}

func newSeries(start time.Time) *series { return &series{start: start} }

func (s *series) index(t time.Time) int64 { return int64(t.Sub(s.start) / seriesStep) }

// add counts n bytes at t.
func (s *series) add(t time.Time, n int64) {
	i := s.index(t)
	s.mu.Lock()
	defer s.mu.Unlock()
	if i < s.first {
		return // older than the retained history
	}
	for i-s.first >= int64(len(s.buckets)) {
		s.buckets = append(s.buckets, 0)
	}
	s.buckets[i-s.first] += n
	// Trim in chunks so that add stays O(1) amortised.
	const keep = int(seriesRetention / seriesStep)
	if len(s.buckets) > keep+keep/8 {
		drop := len(s.buckets) - keep
		s.buckets = append(s.buckets[:0], s.buckets[drop:]...)
		s.first += int64(drop)
	}
}

// busiest returns the highest average rate in bytes per second over any window of
// d aligned to seriesStep (d rounded up to whole steps, the rate computed over d
// itself). With less than d of history it is the total divided by d.
func (s *series) busiest(d time.Duration) float64 {
	if d <= 0 {
		return 0
	}
	k := int((d + seriesStep - 1) / seriesStep)
	s.mu.Lock()
	defer s.mu.Unlock()
	var sum, best int64
	for i, n := range s.buckets {
		sum += n
		if i >= k {
			sum -= s.buckets[i-k]
		}
		best = max(best, sum)
	}
	return float64(best) / d.Seconds()
}
