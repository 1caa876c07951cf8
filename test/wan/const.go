package wan

import "time"

// Defaults and tuning constants. Each is a design decision documented in doc.go.
const (
	// DefaultListen is the address New binds when Config.Listen is empty: loopback, any port.
	DefaultListen = "127.0.0.1:0"

	// burstTime bounds how far the token bucket lets a direction run ahead of its rate:
	// after an idle period at most burstTime worth of bytes leave at once, so the cap
	// holds over windows of a few tens of milliseconds.
	burstTime = 10 * time.Millisecond

	// minPiece and maxPiece bound the size of one read (one "packet") on a paced link.
	// A piece is burstTime worth of bytes, clamped to this range, so pacing is smooth
	// at cellular rates and cheap at fast ones.
	minPiece = 512
	maxPiece = 16 << 10

	// unpacedPiece is the read size when the rate is unlimited.
	unpacedPiece = 32 << 10

	// inFlightMargin is added to the bandwidth-delay product to bound the bytes a
	// direction holds between reading them and delivering them. On a paced link the
	// bound is only reached when the receiver stops reading.
	inFlightMargin = 64 << 10

	// unpacedInFlight bounds the bytes held per direction and connection when the rate
	// is unlimited. With an added latency it acts as a window: throughput is at most
	// unpacedInFlight / (RTT/2).
	unpacedInFlight = 4 << 20

	// dialTimeout bounds connecting to the target for one accepted connection.
	dialTimeout = 10 * time.Second

	// acceptBackoffMin and acceptBackoffMax bound the pause after a failed Accept
	// (for example when the process is out of file descriptors).
	acceptBackoffMin = 5 * time.Millisecond
	acceptBackoffMax = time.Second

	// seriesStep is the resolution of the per-direction byte time series behind
	// BusiestWindow, and seriesRetention how much history it keeps.
	seriesStep      = 10 * time.Millisecond
	seriesRetention = time.Hour
)

// Log attribute keys.
const (
	logKeyAddr    = "addr"
	logKeyConn    = "conn"
	logKeyClient  = "client"
	logKeyTarget  = "target"
	logKeyLink    = "link"
	logKeyError   = "err"
	logKeyRetryIn = "retry_in"
	logKeyReset   = "reset_conns"
)
