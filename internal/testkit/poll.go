package testkit

import (
	"errors"
	"testing"
	"time"
)

// Polling intervals of Eventually: the first wait, doubled after every call
// up to the longest, so that a quick condition is seen at once and a long
// wait (a hub read through a new client) does not load the machine.
const (
	FirstPollInterval = 5 * time.Millisecond
	MaxPollInterval   = 100 * time.Millisecond
)

// Eventually calls cond until it returns nil, and fails the test
// (t.Fatalf, naming what and cond's last error) once timeout has passed.
// It is the one polling helper of edgemirror's tests: a wait in a test is a
// condition with a deadline, never a bare sleep.
func Eventually(t testing.TB, timeout time.Duration, what string, cond func() error) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	interval := FirstPollInterval
	for {
		err := cond()
		if err == nil {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s: not reached within %v: %v", what, timeout, err)
		}
		time.Sleep(interval) // polling interval, bounded by the deadline
		interval = min(2*interval, MaxPollInterval)
	}
}

// Holds adapts a boolean condition for Eventually.
func Holds(cond func() bool) func() error {
	return func() error {
		if !cond() {
			return errNotYet
		}
		return nil
	}
}

var errNotYet = errors.New("condition does not hold yet")
