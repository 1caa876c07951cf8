package aggregator

import (
	"errors"
	"net/http"
)

var (
	// ErrInvalidConfig is returned (wrapped in a *ConfigError) by
	// Config.Validate when a field has a value the aggregator cannot run with.
	ErrInvalidConfig = errors.New("invalid aggregator config")

	// ErrUnsupportedState is returned when the state directory was written
	// by a newer, incompatible version.
	ErrUnsupportedState = errors.New("unsupported state format")

	// ErrStateLocked is returned when another aggregator holds the state
	// directory.
	ErrStateLocked = errors.New("state directory is in use by another aggregator")
)

// ConfigError names the flag whose value is invalid.
type ConfigError struct {
	Field  string
	Value  any
	Reason string
}

func (e *ConfigError) Error() string { return e.Field + ": " + e.Reason }

func (e *ConfigError) Unwrap() error { return ErrInvalidConfig }

// httpError is an error with the status code it is answered with.
type httpError struct {
	status     int
	msg        string
	retryAfter int // seconds, for 429/503
	// cause is the hub broker's answer behind the error, if there was one
	// (nil for transport errors, whose outcome is unknown).
	cause error
}

func (e *httpError) Error() string { return e.msg }

func (e *httpError) permanent() bool {
	switch e.status {
	case http.StatusBadRequest, http.StatusRequestEntityTooLarge, http.StatusUnprocessableEntity:
		return true
	}
	return false
}

func errBadRequest(msg string) *httpError { return &httpError{status: http.StatusBadRequest, msg: msg} }

func errUnavailable(msg string, retryAfter int) *httpError {
	return &httpError{status: http.StatusServiceUnavailable, msg: msg, retryAfter: retryAfter}
}
