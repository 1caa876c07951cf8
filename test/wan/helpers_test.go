package wan

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"sync"
	"testing"
	"time"

	"github.com/edgemirror/edgemirror/internal/testkit"
)

// startTarget runs a TCP server on 127.0.0.1:0 that calls handle for every
// connection and closes it afterwards. Cleanup closes the listener and all
// connections and waits for the handlers.
func startTarget(t *testing.T, handle func(net.Conn)) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatalf("listen: %v", err)
	}
	var (
		wg    sync.WaitGroup
		mu    sync.Mutex
		conns []net.Conn
	)
	wg.Go(func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			mu.Lock()
			conns = append(conns, c)
			mu.Unlock()
			wg.Go(func() {
				defer c.Close()
				handle(c)
			})
		}
	})
	t.Cleanup(func() {
		ln.Close()
		mu.Lock()
		for _, c := range conns {
			c.Close()
		}
		mu.Unlock()
		wg.Wait()
	})
	return ln.Addr().String()
}

// echo copies everything back until EOF.
func echo(c net.Conn) { _, _ = io.Copy(c, c) }

// startProxy creates a proxy in front of target and runs it until cleanup.
func startProxy(t *testing.T, target string, l Link) *Proxy {
	t.Helper()
	p, err := New(Config{Target: target, Link: l})
	if err != nil {
		t.Fatalf("new proxy: %v", err)
	}
	errc := make(chan error, 1)
	go func() { errc <- p.Run(context.Background()) }()
	t.Cleanup(func() {
		if err := p.Close(); err != nil {
			t.Errorf("close: %v", err)
		}
		if err := <-errc; err != nil {
			t.Errorf("run: %v", err)
		}
	})
	return p
}

func dial(t *testing.T, addr string) *net.TCPConn {
	t.Helper()
	c, err := net.DialTimeout("tcp", addr, 5*time.Second)
	if err != nil {
		t.Fatalf("dial %s: %v", addr, err)
	}
	t.Cleanup(func() { c.Close() })
	return c.(*net.TCPConn)
}

// waitStats polls until the proxy's stats satisfy ok.
func waitStats(t *testing.T, p *Proxy, ok func(Stats) bool) Stats {
	t.Helper()
	var s Stats
	testkit.Eventually(t, 10*time.Second, "proxy stats", func() error {
		if s = p.Stats(); !ok(s) {
			return fmt.Errorf("stats %+v", s)
		}
		return nil
	})
	return s
}

// within reports whether got is within frac of want.
func within(got, want, frac float64) bool {
	return got >= want*(1-frac) && got <= want*(1+frac)
}

// isBroken reports whether err means the connection is gone (reset or closed),
// as opposed to a read deadline passing.
func isBroken(err error) bool {
	var ne net.Error
	if errors.As(err, &ne) && ne.Timeout() {
		return false
	}
	return err != nil
}

// busyLag is the scheduling lag above which the host is too busy for a timing
// measurement to say anything about the emulation.
const busyLag = 5 * time.Millisecond

// measureTiming runs a timing measurement, f, which returns an error when what
// it measured is out of tolerance. A host starved of CPU (other test suites,
// fuzzers, a laptop on battery) makes any userspace emulator late, so while f
// runs, a probe measures how late this process's timers fire. An out-of-
// tolerance result on a responsive host fails the test; on a busy host the
// measurement is repeated, and after three busy attempts the test is skipped
// with what was measured.
func measureTiming(t *testing.T, f func(t *testing.T) error) {
	t.Helper()
	const attempts = 3
	for i := 1; ; i++ {
		var err error
		lag := watchLag(func() { err = f(t) })
		switch {
		case err == nil:
			return
		case lag < busyLag:
			t.Fatalf("%v (host responsive: timers at most %s late)", err, lag)
		case i == attempts:
			t.Skipf("host too busy to measure in %d attempts (timers up to %s late); last: %v", attempts, lag, err)
		}
		t.Logf("attempt %d not conclusive, timers up to %s late: %v", i, lag, err)
	}
}

// watchLag runs f while a probe measures by how much a 1 ms timer fires late,
// and returns the worst lateness seen.
func watchLag(f func()) time.Duration {
	const tick = time.Millisecond
	done := make(chan struct{})
	var worst time.Duration
	var wg sync.WaitGroup
	wg.Go(func() {
		timer := time.NewTimer(tick)
		defer timer.Stop()
		for {
			start := time.Now()
			timer.Reset(tick)
			select {
			case <-done:
				return
			case <-timer.C:
				worst = max(worst, time.Since(start)-tick)
			}
		}
	})
	f()
	close(done)
	wg.Wait()
	return worst
}
