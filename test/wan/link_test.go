package wan

import (
	"testing"
	"time"
)

func TestLinkString(t *testing.T) {
	for l, want := range map[Link]string{
		LAN:                               "unlimited rtt=0s",
		WAN:                               "10Mbit/s rtt=100ms",
		Cell:                              "1Mbit/s rtt=300ms",
		{Rate: 1 << 20, RTT: time.Second}: "1MiB/s rtt=1s",
	} {
		if got := l.String(); got != want {
			t.Errorf("%#v.String() = %q, want %q", l, got, want)
		}
	}
}

func TestLinkPacing(t *testing.T) {
	for _, tc := range []struct {
		link          Link
		piece         int
		burst         float64
		inFlightLimit int64
	}{
		{LAN, unpacedPiece, unpacedPiece, unpacedInFlight},
		{Cell, 1250, 1250, 125_000*3/10 + inFlightMargin},
		{Link{Rate: 1_000_000}, 10_000, 10_000, inFlightMargin},
		{Link{Rate: 10_000_000}, maxPiece, 100_000, inFlightMargin},
		{Link{Rate: 1_000}, minPiece, minPiece, inFlightMargin},
	} {
		if got := tc.link.pieceSize(); got != tc.piece {
			t.Errorf("%v: piece %d, want %d", tc.link, got, tc.piece)
		}
		if got := tc.link.burst(); got != tc.burst {
			t.Errorf("%v: burst %v, want %v", tc.link, got, tc.burst)
		}
		if got := tc.link.inFlightLimit(); got != tc.inFlightLimit {
			t.Errorf("%v: in-flight limit %d, want %d", tc.link, got, tc.inFlightLimit)
		}
	}
}
