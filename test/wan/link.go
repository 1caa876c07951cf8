package wan

import (
	"fmt"
	"math"
	"time"

	"github.com/edgemirror/edgemirror/internal/units"
)

// Link describes the emulated link. The zero value is an unimpaired link.
type Link struct {
	// Rate is the capacity of each direction in bytes per second, shared by all
	// connections through the proxy. 0 means unlimited.
	Rate int64
	// RTT is the round-trip time the link adds. Each direction delays bytes by RTT/2.
	RTT time.Duration
}

// Presets. They are values: copy them and change the copy, never assign to them.
var (
	// LAN adds nothing.
	LAN = Link{}
	// WAN is a 10 Mbit/s line with 100 ms round trip.
	WAN = Link{Rate: 10_000_000 / 8, RTT: 100 * time.Millisecond}
	// Cell is a 1 Mbit/s cellular link with 300 ms round trip.
	Cell = Link{Rate: 1_000_000 / 8, RTT: 300 * time.Millisecond}
)

// Validate reports a negative rate or RTT.
func (l Link) Validate() error {
	if l.Rate < 0 {
		return fmt.Errorf("%w: rate %d bytes/s is negative", ErrInvalidLink, l.Rate)
	}
	if l.RTT < 0 {
		return fmt.Errorf("%w: rtt %s is negative", ErrInvalidLink, l.RTT)
	}
	return nil
}

// String formats the link as for example "10Mbit/s rtt=100ms"; a zero rate is
// "unlimited".
func (l Link) String() string { return units.FormatRate(l.Rate) + " rtt=" + l.RTT.String() }

// oneWay is the delay each direction adds.
func (l Link) oneWay() time.Duration { return l.RTT / 2 }

// pieceSize is the most bytes one read takes from a socket: burstTime worth of
// bytes, clamped to [minPiece, maxPiece], or unpacedPiece when the rate is unlimited.
func (l Link) pieceSize() int {
	if l.Rate <= 0 {
		return unpacedPiece
	}
	n := float64(l.Rate) * burstTime.Seconds()
	return int(min(max(n, minPiece), maxPiece))
}

// burst is the token bucket's capacity: burstTime worth of bytes, and never less
// than one piece.
func (l Link) burst() float64 {
	return max(float64(l.Rate)*burstTime.Seconds(), float64(l.pieceSize()))
}

// inFlightLimit bounds the bytes one direction of one connection holds between
// reading and delivering them: the bandwidth-delay product plus inFlightMargin, or
// unpacedInFlight when the rate is unlimited.
func (l Link) inFlightLimit() int64 {
	if l.Rate <= 0 {
		return unpacedInFlight
	}
	bdp := float64(l.Rate) * l.RTT.Seconds()
	return int64(min(bdp, float64(math.MaxInt64/2))) + inFlightMargin
}
