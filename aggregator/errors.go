package aggregator

import (
	"errors"
	"fmt"
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
	retryAfter int    // seconds, for 429/503
	code       string // wire.Code* the agent acts on, or empty
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

// applyKind is what went wrong while applying chunks to the hub, in the
// hub's own terms; server.go maps it to an HTTP answer in one place.
type applyKind int

const (
	// applyUnavailable: nothing was committed; the chunks may be retried.
	applyUnavailable applyKind = iota
	// applyFenced: another aggregator owns the edge's transactional id now;
	// nothing of this transaction was committed.
	applyFenced
	// applyRefused: the hub refuses records of one chunk for good.
	applyRefused
	// applyBadChunk: the chunk itself is malformed.
	applyBadChunk
)

// applyError is the error of applying chunks to the hub.
type applyError struct {
	kind applyKind
	// chunk is the index (in the applied group) of the chunk that caused
	// an applyRefused, or -1 when it is every chunk of the group.
	chunk int
	msg   string
	cause error
}

func (e *applyError) Error() string { return e.msg }

func (e *applyError) Unwrap() error { return e.cause }

func hubUnavailable(format string, args ...any) *applyError {
	return &applyError{kind: applyUnavailable, chunk: -1, msg: fmt.Sprintf(format, args...)}
}

func badChunk(format string, args ...any) *applyError {
	return &applyError{kind: applyBadChunk, chunk: -1, msg: fmt.Sprintf(format, args...)}
}
