package promutil

import (
	"testing"

	"github.com/prometheus/client_golang/prometheus"
)

func TestRegisterIsAllOrNothing(t *testing.T) {
	reg := prometheus.NewRegistry()
	a := prometheus.NewCounter(prometheus.CounterOpts{Name: "a_total", Help: "a"})
	b := prometheus.NewCounter(prometheus.CounterOpts{Name: "b_total", Help: "b"})
	if err := (Set{b}).Register(reg); err != nil {
		t.Fatal(err)
	}
	// b is taken: registering {a, b} must fail and leave a unregistered.
	if err := (Set{a, b}).Register(reg); err == nil {
		t.Fatal("registering a taken collector succeeded")
	}
	if err := (Set{a}).Register(reg); err != nil {
		t.Fatalf("a was left registered by the failed set: %v", err)
	}
	(Set{a, b}).Unregister(reg)
	if mfs, _ := reg.Gather(); len(mfs) != 0 {
		t.Fatalf("%d metric families left after Unregister", len(mfs))
	}
	if err := (Set{a}).Register(nil); err != nil {
		t.Fatalf("nil registerer: %v", err)
	}
}
