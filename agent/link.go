package agent

import (
	"context"
	"fmt"
	"log/slog"
	"net/http"
	"sync"
	"time"
)

// DefaultProbeInterval is how often a down link is probed. Probes are tiny
// (one GET of /healthz), so a restored link is used within this interval
// instead of after the workers' backoff, which grows to --max-backoff.
const DefaultProbeInterval = 250 * time.Millisecond

// link tracks whether the aggregator is reachable. Workers that fail with
// a network error wait for it to come back instead of backing off on their
// own; one prober finds out when it does.
type link struct {
	mu   sync.Mutex
	up   bool
	upCh chan struct{} // closed while up; replaced when the link goes down
	// downCh is closed when the link goes down, waking the prober.
	downCh chan struct{}
	since  time.Time
}

func newLink() *link {
	l := &link{up: true, upCh: make(chan struct{}), downCh: make(chan struct{}), since: time.Now()}
	close(l.upCh)
	return l
}

// setDown marks the link down; it reports whether this changed the state.
func (l *link) setDown() bool {
	l.mu.Lock()
	defer l.mu.Unlock()
	if !l.up {
		return false
	}
	l.up, l.since = false, time.Now()
	l.upCh = make(chan struct{})
	close(l.downCh)
	return true
}

// setUp marks the link up; it returns how long it was down, or 0 if it was
// already up.
func (l *link) setUp() time.Duration {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.up {
		return 0
	}
	l.up = true
	d := time.Since(l.since)
	l.since = time.Now()
	close(l.upCh)
	l.downCh = make(chan struct{})
	return d
}

// isUp reports whether the link is up.
func (l *link) isUp() bool {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.up
}

// upChan is closed once the link is up.
func (l *link) upChan() <-chan struct{} {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.upCh
}

func (l *link) downChan() <-chan struct{} {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.downCh
}

// markDown records a network failure and logs the transition once.
func (s *shipper) markDown(reason string) {
	s.m.linkUp.Set(0)
	if s.link.setDown() {
		st := s.store.Stats()
		s.log.Warn("aggregator unreachable; records stay in the buffer until it is back",
			slog.String("error", reason), slog.Int("buffered_chunks", st.Chunks))
	}
}

// markUp records a successful exchange and logs the end of an outage.
func (s *shipper) markUp() {
	s.m.linkUp.Set(1)
	if d := s.link.setUp(); d > 0 {
		st := s.store.Stats()
		s.log.Info("aggregator reachable again; draining the buffer",
			slog.Duration("down_for", d.Round(time.Millisecond)), slog.Int("buffered_chunks", st.Chunks),
			slog.Int64("buffered_bytes", st.PayloadBytes))
	}
}

// probe waits for the link to go down, then asks the aggregator's /healthz
// every probe interval until it answers, and marks the link up.
func (s *shipper) probe(ctx context.Context) error {
	t := time.NewTimer(s.probeInterval)
	t.Stop()
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return nil
		case <-s.link.downChan():
		}
		t.Reset(s.probeInterval)
	wait:
		for {
			select {
			case <-ctx.Done():
				return nil
			case <-s.link.upChan(): // a worker got through first
				break wait
			case <-t.C:
				if s.healthy(ctx) {
					s.markUp()
					break wait
				}
				t.Reset(s.probeInterval)
			}
		}
		t.Stop()
	}
}

// healthy reports whether the aggregator answers /healthz with 200.
func (s *shipper) healthy(ctx context.Context) bool {
	ctx, cancel := context.WithTimeout(ctx, s.probeInterval+5*time.Second)
	defer cancel()
	ep, gen := s.eps.current()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, ep.url.JoinPath("/healthz").String(), nil)
	if err != nil {
		return false
	}
	resp, err := s.client.Do(req)
	if err != nil {
		// Try the next endpoint at the next probe.
		s.eps.failed(gen, true, err.Error())
		return false
	}
	drain(resp)
	if resp.StatusCode != http.StatusOK {
		s.eps.failed(gen, true, fmt.Sprintf("health check answered %d", resp.StatusCode))
		return false
	}
	s.eps.ok(gen)
	return true
}
