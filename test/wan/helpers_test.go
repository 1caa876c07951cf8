package wan

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"strconv"
	"strings"
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
// runs, two probes measure how busy the host is: how late this process's
// timers fire, and how long runnable tasks waited for a CPU (the kernel's CPU
// pressure, where it has one). The timer probe alone cannot see a stall of the
// one thread the proxy runs on while the probe's thread runs. An out-of-
// tolerance result on a responsive host fails the test; on a busy host the
// measurement is repeated, and after three busy attempts the test is skipped
// with what was measured. A measurement that found the emulation early
// (errEarly: a round trip shorter than the link's RTT by more than the
// tolerance) fails the test at once: no load makes the emulation early.
func measureTiming(t *testing.T, f func(t *testing.T) error) {
	t.Helper()
	const attempts = 3
	for i := 1; ; i++ {
		var err error
		busy := watchBusy(func() { err = f(t) })
		switch {
		case err == nil:
			return
		case errors.Is(err, errEarly) || !busy.busy():
			t.Fatalf("%v (host responsive: %s)", err, busy)
		case i == attempts:
			t.Skipf("host too busy to measure in %d attempts (%s); last: %v", attempts, busy, err)
		}
		t.Logf("attempt %d not conclusive (%s): %v", i, busy, err)
	}
}

// errEarly marks a measurement that found the emulation faster than its link.
var errEarly = errors.New("faster than the link")

// busyness is what the probes of watchBusy saw.
type busyness struct {
	timerLag time.Duration // worst lateness of a 1 ms timer
	// cpuWait is how long at least one runnable task waited for a CPU
	// (/proc/pressure/cpu "some"); -1 where the kernel does not say.
	cpuWait time.Duration
}

func (b busyness) busy() bool { return b.timerLag >= busyLag || b.cpuWait >= busyLag }

func (b busyness) String() string {
	if b.cpuWait < 0 {
		return fmt.Sprintf("timers at most %s late, CPU pressure unknown", b.timerLag)
	}
	return fmt.Sprintf("timers at most %s late, tasks waited %s for a CPU", b.timerLag, b.cpuWait)
}

// watchBusy runs f while a probe measures by how much a 1 ms timer fires late,
// and reads the CPU pressure before and after.
func watchBusy(f func()) busyness {
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
	before, okBefore := cpuPressure()
	f()
	after, okAfter := cpuPressure()
	close(done)
	wg.Wait()
	b := busyness{timerLag: worst, cpuWait: -1}
	if okBefore && okAfter {
		b.cpuWait = after - before
	}
	return b
}

// cpuPressure returns the kernel's running total of time in which at least one
// runnable task waited for a CPU (PSI, Linux 4.20 and later), and false where
// there is none to read.
func cpuPressure() (time.Duration, bool) {
	b, err := os.ReadFile("/proc/pressure/cpu")
	if err != nil {
		return 0, false
	}
	// some avg10=0.00 avg60=0.00 avg300=0.00 total=12345
	line, _, _ := strings.Cut(string(b), "\n")
	_, total, ok := strings.Cut(line, "total=")
	if !strings.HasPrefix(line, "some ") || !ok {
		return 0, false
	}
	us, err := strconv.ParseInt(strings.TrimSpace(total), 10, 64)
	if err != nil {
		return 0, false
	}
	return time.Duration(us) * time.Microsecond, true
}
