package agent

import "errors"

// ErrInvalidConfig is returned by Config.Validate (wrapped in a
// *ConfigError) when a field has a value the agent cannot run with.
var ErrInvalidConfig = errors.New("invalid agent config")

// ConfigError names the config field (as the user typed it, e.g.
// "--batch-bytes") whose value is invalid.
type ConfigError struct {
	Field  string
	Value  any
	Reason string
}

func (e *ConfigError) Error() string {
	return e.Field + ": " + e.Reason
}

func (e *ConfigError) Unwrap() error { return ErrInvalidConfig }
