package units

import (
	"errors"
	"math"
	"strings"
	"testing"

	"go.uber.org/goleak"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

func TestParseBytes(t *testing.T) {
	cases := []struct {
		in   string
		want int64
	}{
		{"0", 0},
		{"512", 512},
		{"512B", 512},
		{"512 b", 512},
		{"64KiB", 64 << 10},
		{"64kib", 64 << 10},
		{"64Ki", 64 << 10},
		{"1MiB", 1 << 20},
		{"1.5MiB", 3 << 19},
		{".5KiB", 512},
		{"2GiB", 2 << 30},
		{"2 GiB", 2 << 30},
		{" 3TiB ", 3 << 40},
		{"1PiB", 1 << 50},
		{"7EiB", 7 << 60},
		{"10MB", 10_000_000},
		{"10mb", 10_000_000},
		{"10M", 10_000_000},
		{"1kB", 1000},
		{"1KB", 1000},
		{"1k", 1000},
		{"1.1KiB", 1126}, // 1126.4 rounded down
		{"1GB", 1e9},
		{"9223372036854775807", math.MaxInt64},
		{"007", 7},
	}
	for _, tc := range cases {
		got, err := ParseBytes(tc.in)
		if err != nil || got != tc.want {
			t.Errorf("ParseBytes(%q) = %d, %v; want %d", tc.in, got, err, tc.want)
		}
	}
	bad := []struct {
		in   string
		want error
	}{
		{"", ErrSyntax},
		{"MiB", ErrSyntax},
		{"-1", ErrRange},
		{"-1MiB", ErrRange},
		{"+1", ErrSyntax},
		{"1.5", ErrSyntax},
		{"1.5B", ErrSyntax},
		{"1.", ErrSyntax},
		{".", ErrSyntax},
		{"1..2KiB", ErrSyntax},
		{"1.2.3KiB", ErrSyntax},
		{"1e6", ErrSyntax},
		{"1XB", ErrSyntax},
		{"1iB", ErrSyntax},
		{"1bit", ErrSyntax},
		{"1 M iB", ErrSyntax},
		{"1MiB/s", ErrSyntax},
		{"8EiB", ErrRange},
		{"9223372036854775808", ErrRange},
		{"99999999999999999999999EiB", ErrRange},
		{"1" + string(make([]byte, 100)), ErrSyntax},
	}
	for _, tc := range bad {
		if got, err := ParseBytes(tc.in); !errors.Is(err, tc.want) {
			t.Errorf("ParseBytes(%q) = %d, %v; want %v", tc.in, got, err, tc.want)
		}
	}
}

func TestFormatBytes(t *testing.T) {
	cases := []struct {
		in   int64
		want string
	}{
		{0, "0B"},
		{512, "512B"},
		{1023, "1023B"},
		{1024, "1KiB"},
		{1536, "1.5KiB"},
		{1 << 20, "1MiB"},
		{3 << 29, "1.5GiB"},
		{1<<20 - 1, "1MiB"},
		{10_000_000, "9.54MiB"},
		{math.MaxInt64, "8EiB"},
		{-2048, "-2KiB"},
		{math.MinInt64, "-8EiB"},
	}
	for _, tc := range cases {
		if got := FormatBytes(tc.in); got != tc.want {
			t.Errorf("FormatBytes(%d) = %q, want %q", tc.in, got, tc.want)
		}
	}
	// Round numbers of units round-trip.
	for _, n := range []int64{0, 1, 999, 1 << 10, 64 << 10, 3 << 19, 2 << 30, 5 << 40} {
		if got, err := ParseBytes(FormatBytes(n)); err != nil || got != n {
			t.Errorf("ParseBytes(FormatBytes(%d)) = %d, %v", n, got, err)
		}
	}
}

func TestParseRate(t *testing.T) {
	cases := []struct {
		in   string
		want int64
	}{
		{"0", 0},
		{"0KiB/s", 0},
		{"1000", 1000},
		{"512KiB/s", 512 << 10},
		{"2MiB/s", 2 << 20},
		{"2MB/s", 2_000_000},
		{"100B/s", 100},
		{"4Mbit/s", 500_000},
		{"4mbit/s", 500_000},
		{"4 Mbit/s", 500_000},
		{"10Mbps", 1_250_000},
		{"10mbps", 1_250_000},
		{"1Gbit/s", 125_000_000},
		{"100kbit/s", 12_500},
		{"100Kbit/s", 12_500},
		{"1.5Mbit/s", 187_500},
		{"8bit/s", 1},
		{"12bit/s", 1},
		{"1Mibit/s", 131_072},
		{"56kbps", 7000},
	}
	for _, tc := range cases {
		got, err := ParseRate(tc.in)
		if err != nil || got != tc.want {
			t.Errorf("ParseRate(%q) = %d, %v; want %d", tc.in, got, err, tc.want)
		}
	}
	bad := []struct {
		in   string
		want error
	}{
		{"", ErrSyntax},
		{"fast", ErrSyntax},
		{"-1", ErrRange},
		{"-4Mbit/s", ErrRange},
		{"1bit/s", ErrRange}, // rounds to zero, which would mean unlimited
		{"0.5B/s", ErrSyntax},
		{"4M", ErrSyntax},    // a size, not a rate
		{"4MiB", ErrSyntax},  // a size, not a rate
		{"4Mb/s", ErrSyntax}, // bits or bytes?
		{"4MBps", ErrSyntax}, // bits or bytes?
		{"4Xbit/s", ErrSyntax},
		{"4Mbit", ErrSyntax},
		{"1.5", ErrSyntax},
		{"100000000000Tbit/s", ErrRange},
	}
	for _, tc := range bad {
		if got, err := ParseRate(tc.in); !errors.Is(err, tc.want) {
			t.Errorf("ParseRate(%q) = %d, %v; want %v", tc.in, got, err, tc.want)
		}
	}
}

func TestFormatRate(t *testing.T) {
	cases := []struct {
		in   int64
		want string
	}{
		{0, "unlimited"},
		{500_000, "4Mbit/s"},
		{1_250_000, "10Mbit/s"},
		{125_000_000, "1Gbit/s"},
		{12_500, "100kbit/s"},
		{187_500, "1.5Mbit/s"},
		{131_250, "1.05Mbit/s"},
		{512 << 10, "512KiB/s"},
		{2 << 20, "2MiB/s"},
		{1000, "8kbit/s"},
		{1, "1B/s"},
		{100, "100B/s"},
	}
	for _, tc := range cases {
		if got := FormatRate(tc.in); got != tc.want {
			t.Errorf("FormatRate(%d) = %q, want %q", tc.in, got, tc.want)
		}
	}
	for _, n := range []int64{1, 100, 1000, 12_500, 187_500, 500_000, 512 << 10, 2 << 20, 125_000_000, math.MaxInt64 / 8} {
		s := FormatRate(n)
		if got, err := ParseRate(s); err != nil || got != n {
			t.Errorf("ParseRate(FormatRate(%d) = %q) = %d, %v", n, s, got, err)
		}
	}
}

// FuzzParse checks that the parsers never panic, never return a negative
// value, and that what FormatRate prints parses back to the same rate when
// it is in bit form.
func FuzzParse(f *testing.F) {
	for _, s := range []string{"", "0", "1.5MiB", "10MB", "4Mbit/s", "10Mbps", "512KiB/s", "-1", "1e9", ".", "8EiB", "99999999999999999999"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		if n, err := ParseBytes(s); err == nil && n < 0 {
			t.Fatalf("ParseBytes(%q) = %d", s, n)
		}
		n, err := ParseRate(s)
		if err != nil {
			return
		}
		if n < 0 {
			t.Fatalf("ParseRate(%q) = %d", s, n)
		}
		if out := FormatRate(n); strings.HasSuffix(out, "bit/s") {
			if back, err := ParseRate(out); err != nil || back != n {
				t.Fatalf("ParseRate(FormatRate(%d) = %q) = %d, %v", n, out, back, err)
			}
		}
	})
}
