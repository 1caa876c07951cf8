package testkit

import (
	"errors"
	"testing"
	"time"
)

// TestEventually: the condition is polled until it holds; a condition that
// never holds fails the test with its last error once the deadline passed.
func TestEventually(t *testing.T) {
	calls := 0
	Eventually(t, time.Second, "third call", func() error {
		if calls++; calls < 3 {
			return errors.New("not yet")
		}
		return nil
	})
	if calls != 3 {
		t.Errorf("condition called %d times, want 3", calls)
	}

	ft := &fatalRecorder{TB: t}
	start := time.Now()
	func() {
		defer func() { _ = recover() }() // fatalRecorder panics to stop like t.Fatalf
		Eventually(ft, 50*time.Millisecond, "never", Holds(func() bool { return false }))
	}()
	if ft.msg == "" {
		t.Fatal("a condition that never holds did not fail the test")
	}
	if took := time.Since(start); took < 50*time.Millisecond || took > 2*time.Second {
		t.Errorf("gave up after %v, want just after 50ms", took)
	}
	t.Logf("failure message: %s", ft.msg)
}

type fatalRecorder struct {
	testing.TB
	msg string
}

func (f *fatalRecorder) Helper() {}

func (f *fatalRecorder) Fatalf(format string, args ...any) {
	f.msg = format
	panic("fatal")
}
