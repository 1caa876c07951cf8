// Package promutil registers a component's Prometheus collectors as a set,
// so that two instances can share one registry in tests (register, then
// unregister) and a nil Registerer means "no metrics".
package promutil

import "github.com/prometheus/client_golang/prometheus"

// Set is the collectors of one component.
type Set []prometheus.Collector

// Register registers every collector with reg; nil reg registers nothing.
// On error the collectors registered so far are unregistered again.
func (s Set) Register(reg prometheus.Registerer) error {
	if reg == nil {
		return nil
	}
	for i, c := range s {
		if err := reg.Register(c); err != nil {
			s[:i].Unregister(reg)
			return err
		}
	}
	return nil
}

// Unregister removes every collector from reg; nil reg does nothing.
func (s Set) Unregister(reg prometheus.Registerer) {
	if reg == nil {
		return
	}
	for _, c := range s {
		reg.Unregister(c)
	}
}
