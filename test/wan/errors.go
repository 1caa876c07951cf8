package wan

import "errors"

// Errors returned by New and Run.
var (
	// ErrNoTarget is returned by New when Config.Target is empty.
	ErrNoTarget = errors.New("wan: target address required")

	// ErrInvalidLink is returned by New when the link's rate or RTT is negative.
	ErrInvalidLink = errors.New("wan: invalid link")

	// ErrClosed is returned by Run when the proxy was closed before Run started.
	ErrClosed = errors.New("wan: proxy closed")

	// ErrRunning is returned by Run when Run was already called on this proxy.
	ErrRunning = errors.New("wan: run already called")
)
