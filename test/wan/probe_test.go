package wan

import (
	"context"
	"errors"
	"os/exec"
	"runtime"
	"sync"
	"testing"
	"time"
)

// TestWatchBusySeesOtherProcesses checks the probe that measureTiming relies on
// to tell a busy host from a wrong emulation: with more CPU-bound processes
// than CPUs, runnable tasks wait, and the probe must say so even though this
// process's own timers may fire on time.
func TestWatchBusySeesOtherProcesses(t *testing.T) {
	skipIfShort(t)
	if _, ok := cpuPressure(); !ok {
		t.Skip("this kernel has no /proc/pressure/cpu")
	}
	spinners := runtime.NumCPU() + 1
	b := watchBusy(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 500*time.Millisecond)
		defer cancel()
		var wg sync.WaitGroup
		for range spinners {
			wg.Go(func() {
				// Killed at the deadline: the error says so and is expected.
				_ = exec.CommandContext(ctx, "sh", "-c", "while :; do :; done").Run()
			})
		}
		wg.Wait()
	})
	t.Logf("%d spinners for 500ms on %d CPUs: %s", spinners, runtime.NumCPU(), b)
	if b.cpuWait < busyLag {
		t.Errorf("probe saw %s; want tasks waiting at least %s for a CPU", b, busyLag)
	}
}

// TestCheckRTTs checks how a measurement out of tolerance is reported: one too
// early is errEarly, which no busy host excuses; one too late is not.
func TestCheckRTTs(t *testing.T) {
	const want = 100 * time.Millisecond
	for _, tc := range []struct {
		name  string
		rtts  []time.Duration
		err   bool
		early bool
	}{
		{"within", []time.Duration{want, want + time.Millisecond, want + latencyTolerance}, false, false},
		{"late", []time.Duration{want, want + latencyTolerance + time.Millisecond}, true, false},
		{"early", []time.Duration{want - latencyTolerance - time.Millisecond, want}, true, true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			err := checkRTTs(t, tc.name, tc.rtts, want)
			if (err != nil) != tc.err || errors.Is(err, errEarly) != tc.early {
				t.Errorf("checkRTTs(%v) = %v; want error %v, early %v", tc.rtts, err, tc.err, tc.early)
			}
		})
	}
}
