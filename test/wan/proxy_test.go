package wan

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"slices"
	"sync"
	"testing"
	"time"
)

// Tolerances the emulation promises (see doc.go).
const (
	rateTolerance    = 0.05
	latencyTolerance = 15 * time.Millisecond
)

func skipIfShort(t *testing.T) {
	t.Helper()
	if testing.Short() {
		t.Skip("measures timing over seconds")
	}
}

func TestNewAndRunErrors(t *testing.T) {
	if _, err := New(Config{}); !errors.Is(err, ErrNoTarget) {
		t.Errorf("New without target: err = %v, want ErrNoTarget", err)
	}
	if _, err := New(Config{Target: "127.0.0.1:1", Link: Link{Rate: -1}}); !errors.Is(err, ErrInvalidLink) {
		t.Errorf("New with negative rate: err = %v, want ErrInvalidLink", err)
	}
	if _, err := New(Config{Target: "127.0.0.1:1", Link: Link{RTT: -time.Second}}); !errors.Is(err, ErrInvalidLink) {
		t.Errorf("New with negative rtt: err = %v, want ErrInvalidLink", err)
	}

	p, err := New(Config{Target: "127.0.0.1:1"})
	if err != nil {
		t.Fatal(err)
	}
	if err := p.Close(); err != nil {
		t.Errorf("close before run: %v", err)
	}
	if err := p.Close(); err != nil {
		t.Errorf("second close: %v", err)
	}
	if err := p.Run(context.Background()); !errors.Is(err, ErrClosed) {
		t.Errorf("run after close: err = %v, want ErrClosed", err)
	}

	p, err = New(Config{Target: "127.0.0.1:1"})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	errc := make(chan error, 1)
	go func() { errc <- p.Run(ctx) }()
	cancel()
	if err := <-errc; err != nil {
		t.Errorf("run stopped by ctx: %v", err)
	}
	if err := p.Run(context.Background()); !errors.Is(err, ErrRunning) {
		t.Errorf("second run: err = %v, want ErrRunning", err)
	}
	if err := p.Close(); err != nil {
		t.Errorf("close after run: %v", err)
	}
}

// transfer is what one side measured of a one-way bulk transfer.
type transfer struct {
	bytes int64
	last  time.Time // when the last byte was read
	err   error
}

// readAll reads r to EOF, recording when the last byte came.
func readAll(r io.Reader) transfer {
	var tr transfer
	buf := make([]byte, 64<<10)
	for {
		n, err := r.Read(buf)
		if n > 0 {
			tr.bytes += int64(n)
			tr.last = time.Now()
		}
		if errors.Is(err, io.EOF) {
			return tr
		}
		if err != nil {
			tr.err = err
			return tr
		}
	}
}

// writeN writes n zero bytes to w in 32 KiB writes.
func writeN(w io.Writer, n int64) error {
	buf := make([]byte, 32<<10)
	for n > 0 {
		k := min(n, int64(len(buf)))
		if _, err := w.Write(buf[:k]); err != nil {
			return err
		}
		n -= k
	}
	return nil
}

// sinkTarget starts a target that reads each connection to EOF and reports what
// it read on the returned channel.
func sinkTarget(t *testing.T) (string, <-chan transfer) {
	ch := make(chan transfer, 16)
	addr := startTarget(t, func(c net.Conn) { ch <- readAll(c) })
	return addr, ch
}

// TestRateCap sends 3 MB through a 1 MB/s link and checks the achieved
// throughput, the busiest 2 s window and the byte counter.
func TestRateCap(t *testing.T) {
	skipIfShort(t)
	const (
		rate  = 1_000_000
		total = 3_000_000
	)
	for _, tc := range []struct {
		name string
		link Link
		down bool // target→client instead of client→target
	}{
		{"up", Link{Rate: rate}, false},
		{"up rtt 100ms", Link{Rate: rate, RTT: 100 * time.Millisecond}, false},
		{"down rtt 100ms", Link{Rate: rate, RTT: 100 * time.Millisecond}, true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			measureTiming(t, func(t *testing.T) error {
				var (
					addr string
					got  <-chan transfer
					tr   transfer
				)
				if tc.down {
					addr = startTarget(t, func(c net.Conn) { _ = writeN(c, total) })
				} else {
					addr, got = sinkTarget(t)
				}
				p := startProxy(t, addr, tc.link)

				start := time.Now()
				c := dial(t, p.Addr())
				if tc.down {
					tr = readAll(c)
					c.Close()
				} else {
					if err := writeN(c, total); err != nil {
						t.Fatalf("write: %v", err)
					}
					if err := c.CloseWrite(); err != nil {
						t.Fatal(err)
					}
					tr = <-got
				}
				if tr.err != nil || tr.bytes != total {
					t.Fatalf("received %d bytes, err %v; want %d", tr.bytes, tr.err, total)
				}
				elapsed := tr.last.Sub(start)
				achieved := total / (elapsed - tc.link.oneWay()).Seconds()
				busiest, counter := p.BusiestWindow(2*time.Second), func(s Stats) int64 { return s.Up }
				if tc.down {
					busiest, counter = p.BusiestWindowDown(2*time.Second), func(s Stats) int64 { return s.Down }
				}
				s := waitStats(t, p, func(s Stats) bool { return s.Open == 0 })
				if counter(s) != total {
					t.Errorf("counter %d bytes, want exactly %d (stats %+v)", counter(s), total, s)
				}
				t.Logf("link %s: %d bytes in %s: %.0f B/s (%+.2f%%); busiest 2s window %.0f B/s (%+.2f%%); delivered up to %s late",
					tc.link, total, elapsed.Round(time.Millisecond), achieved, 100*(achieved/rate-1), busiest, 100*(busiest/rate-1), s.Late)
				return errors.Join(
					checkRate("throughput", achieved, rate),
					checkRate("busiest 2s window", busiest, rate))
			})
		})
	}
}

// checkRate reports a rate out of rateTolerance.
func checkRate(what string, got, want float64) error {
	if within(got, want, rateTolerance) {
		return nil
	}
	return fmt.Errorf("%s %.0f B/s, want %.0f ±%.0f%%", what, got, want, 100*rateTolerance)
}

// TestSharedCap runs four transfers at once and checks that together they get
// the link's rate, not four times it.
func TestSharedCap(t *testing.T) {
	skipIfShort(t)
	const (
		rate  = 1_000_000
		conns = 4
		each  = 750_000
	)
	measureTiming(t, func(t *testing.T) error {
		addr, got := sinkTarget(t)
		p := startProxy(t, addr, Link{Rate: rate})
		clients := make([]*net.TCPConn, conns)
		for i := range clients {
			clients[i] = dial(t, p.Addr())
		}
		start := time.Now()
		var wg sync.WaitGroup
		errs := make(chan error, conns)
		for _, c := range clients {
			wg.Go(func() {
				if err := writeN(c, each); err != nil {
					errs <- err
					return
				}
				errs <- c.CloseWrite()
			})
		}
		wg.Wait()
		close(errs)
		for err := range errs {
			if err != nil {
				t.Fatalf("write: %v", err)
			}
		}
		var done []time.Duration
		for range conns {
			tr := <-got
			if tr.err != nil || tr.bytes != each {
				t.Fatalf("received %d bytes, err %v; want %d", tr.bytes, tr.err, each)
			}
			done = append(done, tr.last.Sub(start))
		}
		slices.Sort(done)
		elapsed := done[len(done)-1]
		achieved := conns * each / elapsed.Seconds()
		busiest := p.BusiestWindow(2 * time.Second)
		s := waitStats(t, p, func(s Stats) bool { return s.Open == 0 })
		if s.Up != conns*each || s.Conns != conns {
			t.Errorf("stats %+v, want Up %d Conns %d", s, conns*each, conns)
		}
		t.Logf("%d conns × %d bytes over %s: aggregate %.0f B/s (%+.2f%%); busiest 2s window %.0f B/s (%+.2f%%); conns finished at %v",
			conns, each, Link{Rate: rate}, achieved, 100*(achieved/rate-1), busiest, 100*(busiest/rate-1), done)
		var fair error
		// Sharing is fair enough that no connection finishes before 3/4 of the
		// others' time: none of them had the link to itself.
		if first := done[0]; first < elapsed*3/4 {
			fair = fmt.Errorf("first connection finished at %s, last at %s: the link was not shared", first, elapsed)
		}
		return errors.Join(
			checkRate("aggregate throughput", achieved, rate),
			checkRate("busiest 2s window", busiest, rate),
			fair)
	})
}

// pingPong sends a small request over c and waits for the echo, rounds times,
// returning each round trip.
func pingPong(t *testing.T, c net.Conn, rounds int) []time.Duration {
	t.Helper()
	req := make([]byte, 64)
	resp := make([]byte, len(req))
	var rtts []time.Duration
	for i := range rounds {
		req[0] = byte(i)
		start := time.Now()
		if err := c.SetDeadline(start.Add(5 * time.Second)); err != nil {
			t.Fatal(err)
		}
		if _, err := c.Write(req); err != nil {
			t.Fatalf("round %d: write: %v", i, err)
		}
		if _, err := io.ReadFull(c, resp); err != nil {
			t.Fatalf("round %d: read: %v", i, err)
		}
		rtts = append(rtts, time.Since(start))
		if resp[0] != byte(i) {
			t.Fatalf("round %d: echoed %d", i, resp[0])
		}
	}
	return rtts
}

// checkRTTs logs round trips and reports those further than latencyTolerance
// from want; one too short is errEarly.
func checkRTTs(t *testing.T, what string, rtts []time.Duration, want time.Duration) error {
	t.Helper()
	sorted := slices.Sorted(slices.Values(rtts))
	lo, hi := sorted[0], sorted[len(sorted)-1]
	t.Logf("%s: %d round trips: min %s median %s max %s (error %+.1fms..%+.1fms)",
		what, len(rtts), lo, sorted[len(sorted)/2], hi, ms(lo-want), ms(hi-want))
	switch {
	case lo < want-latencyTolerance:
		return fmt.Errorf("%s: round trips %s..%s, want %s ±%s: %w", what, lo, hi, want, latencyTolerance, errEarly)
	case hi > want+latencyTolerance:
		return fmt.Errorf("%s: round trips %s..%s, want %s ±%s", what, lo, hi, want, latencyTolerance)
	}
	return nil
}

func ms(d time.Duration) float64 { return float64(d) / float64(time.Millisecond) }

// TestLatency checks that a small request/response takes one RTT.
func TestLatency(t *testing.T) {
	skipIfShort(t)
	addr := startTarget(t, echo)
	for _, tc := range []struct {
		name   string
		link   Link
		rounds int
	}{
		{"rtt 100ms", Link{RTT: 100 * time.Millisecond}, 10},
		{"WAN", WAN, 10},
		{"Cell", Cell, 5},
	} {
		t.Run(tc.name, func(t *testing.T) {
			measureTiming(t, func(t *testing.T) error {
				p := startProxy(t, addr, tc.link)
				return checkRTTs(t, "link "+tc.link.String(), pingPong(t, dial(t, p.Addr()), tc.rounds), tc.link.RTT)
			})
		})
	}
}

// TestSetLink checks that a change applies to a connection already open.
func TestSetLink(t *testing.T) {
	skipIfShort(t)
	addr := startTarget(t, echo)
	measureTiming(t, func(t *testing.T) error {
		p := startProxy(t, addr, LAN)
		c := dial(t, p.Addr())
		before := checkRTTs(t, "before", pingPong(t, c, 3), 0)
		l := Link{RTT: 100 * time.Millisecond}
		p.SetLink(l)
		if got := p.Link(); got != l {
			t.Errorf("Link() = %v, want %v", got, l)
		}
		return errors.Join(before, checkRTTs(t, "after SetLink("+l.String()+")", pingPong(t, c, 3), l.RTT))
	})
}

// TestCutAndRestore checks that Cut breaks a live connection and refuses new
// ones, and that Restore lets new connections through again.
func TestCutAndRestore(t *testing.T) {
	type echoed struct {
		n   int64
		err error
	}
	ends := make(chan echoed, 4)
	addr := startTarget(t, func(c net.Conn) {
		n, err := io.Copy(c, c)
		ends <- echoed{n, err}
	})
	p := startProxy(t, addr, Link{RTT: 20 * time.Millisecond})

	live := dial(t, p.Addr())
	pingPong(t, live, 1)
	waitStats(t, p, func(s Stats) bool { return s.Open == 1 && s.Up == 64 && s.Down == 64 })

	// Bytes written just before the cut are in flight (a second one way) when it
	// happens: they must not arrive.
	p.SetLink(Link{RTT: 2 * time.Second})
	if _, err := live.Write([]byte("lost in flight")); err != nil {
		t.Fatal(err)
	}
	p.Cut()
	if !p.Down() {
		t.Fatal("Down() = false after Cut")
	}
	if err := live.SetReadDeadline(time.Now().Add(5 * time.Second)); err != nil {
		t.Fatal(err)
	}
	n, err := live.Read(make([]byte, 64))
	t.Logf("client read after cut: %d bytes, %v", n, err)
	if n != 0 || !isBroken(err) {
		t.Errorf("client read after cut = %d bytes, %v; want 0 bytes and a broken connection", n, err)
	}
	select {
	case e := <-ends:
		t.Logf("target connection ended after %d bytes: %v", e.n, e.err)
		if e.n != 64 {
			t.Errorf("target received %d bytes, want 64: bytes in flight were delivered", e.n)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("target connection still open 5s after cut")
	}
	s := waitStats(t, p, func(s Stats) bool { return s.Open == 0 })
	if s.Up != 64 || s.Down != 64 {
		t.Errorf("stats after cut %+v: bytes in flight were delivered", s)
	}
	p.SetLink(Link{RTT: 20 * time.Millisecond})

	// While down, a new connection is accepted and reset at once: the client
	// sees the reset either from connect or from its first read.
	if refused, err := net.DialTimeout("tcp", p.Addr(), 5*time.Second); err != nil {
		t.Logf("dial while down: %v", err)
	} else {
		defer refused.Close()
		if err := refused.SetDeadline(time.Now().Add(5 * time.Second)); err != nil {
			t.Fatal(err)
		}
		_, _ = refused.Write([]byte("hello")) // may or may not fail, the reset races it
		n, err = refused.Read(make([]byte, 64))
		t.Logf("read on connection made while down: %d bytes, %v", n, err)
		if n != 0 || !isBroken(err) {
			t.Errorf("read on connection made while down = %d bytes, %v; want 0 bytes and a broken connection", n, err)
		}
	}
	s = waitStats(t, p, func(s Stats) bool { return s.Refused == 1 })
	if s.Conns != 1 || s.Up != 64 {
		t.Errorf("stats while down %+v: want Conns 1, Up 64", s)
	}

	p.Restore()
	if p.Down() {
		t.Fatal("Down() = true after Restore")
	}
	rtts := pingPong(t, dial(t, p.Addr()), 2)
	t.Logf("round trips after restore: %v", rtts)
	waitStats(t, p, func(s Stats) bool { return s.Open == 1 && s.Conns == 2 && s.Up == 3*64 && s.Down == 3*64 })
}

// TestCountersExact runs request/response exchanges of odd sizes over several
// connections at once and checks the byte counters match to the byte.
func TestCountersExact(t *testing.T) {
	sizes := []struct{ req, resp int64 }{{1, 0}, {0, 1}, {1_234_567, 89}, {65_537, 999_999}, {4_000_001, 3}}
	addr := startTarget(t, func(c net.Conn) {
		tr := readAll(c)
		if tr.err != nil {
			return
		}
		for _, s := range sizes {
			if s.req == tr.bytes {
				_ = writeN(c, s.resp)
				return
			}
		}
	})
	p := startProxy(t, addr, Link{Rate: 50_000_000, RTT: 10 * time.Millisecond})

	var wg sync.WaitGroup
	errs := make(chan error, len(sizes))
	var up, down int64
	for _, s := range sizes {
		up += s.req
		down += s.resp
		c := dial(t, p.Addr())
		wg.Go(func() {
			if err := writeN(c, s.req); err != nil {
				errs <- err
				return
			}
			if err := c.CloseWrite(); err != nil {
				errs <- err
				return
			}
			if tr := readAll(c); tr.err != nil || tr.bytes != s.resp {
				errs <- fmt.Errorf("request %d: response %d bytes, err %v; want %d", s.req, tr.bytes, tr.err, s.resp)
			}
		})
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}
	s := waitStats(t, p, func(s Stats) bool { return s.Open == 0 })
	t.Logf("stats %+v", s)
	s.Late = 0
	want := Stats{Up: up, Down: down, Conns: int64(len(sizes))}
	if s != want {
		t.Errorf("stats %+v, want %+v", s, want)
	}
}

// TestBackpressure checks that a sender on a slow link is held back: the bytes
// it has handed over but the link has not delivered stay bounded (the proxy
// does not read ahead), while the link is kept busy.
func TestBackpressure(t *testing.T) {
	skipIfShort(t)
	const (
		rate     = 100_000
		sndbuf   = 64 << 10
		duration = 3 * time.Second
	)
	link := Link{Rate: rate, RTT: 100 * time.Millisecond}
	measureTiming(t, func(t *testing.T) error {
		addr, got := sinkTarget(t)
		p := startProxy(t, addr, link)
		c := dial(t, p.Addr())
		// The sender's own kernel buffer is outside the proxy's reach (Linux grows
		// it up to net.ipv4.tcp_wmem's maximum, 4 MiB by default): keep it small so
		// what is measured is the proxy.
		if err := c.SetWriteBuffer(sndbuf); err != nil {
			t.Fatal(err)
		}

		var written, standing int64
		buf := make([]byte, 1<<10)
		start := time.Now()
		if err := c.SetWriteDeadline(start.Add(duration)); err != nil {
			t.Fatal(err)
		}
		for {
			n, err := c.Write(buf)
			written += int64(n)
			standing = max(standing, written-p.Stats().Up)
			if err != nil {
				break
			}
		}
		delivered := p.Stats().Up
		p.Cut()
		<-got
		achieved := float64(delivered) / (duration - link.oneWay()).Seconds()
		t.Logf("sender with %d B send buffer on %s for %s: wrote %d bytes, the link delivered %d (%.0f B/s, %+.1f%%); at most %d bytes (%.1fs at the link rate) were queued in front of the bottleneck",
			sndbuf, link, duration, written, delivered, achieved, 100*(achieved/rate-1), standing, float64(standing)/rate)
		if limit := int64(1 << 20); standing > limit {
			t.Errorf("%d bytes queued in front of the link, want at most %d", standing, limit)
		}
		return checkRate("link throughput", achieved, rate)
	})
}
