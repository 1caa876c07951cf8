package units

import (
	"fmt"
	"math"
	"math/big"
	"strconv"
	"strings"
)

// maxInput bounds the length of a string the parsers look at, so that big
// number arithmetic stays cheap whatever the input.
const maxInput = 64

// multiplier returns the factor of a byte or bit unit prefix such as "k",
// "Mi" or "" (case-insensitive), or false.
func multiplier(prefix string) (int64, bool) {
	p := strings.ToLower(prefix)
	binary := strings.HasSuffix(p, "i")
	if binary {
		p = strings.TrimSuffix(p, "i")
		if p == "" {
			return 0, false
		}
	}
	exp := strings.Index("kmgtpe", p) + 1
	if p == "" {
		exp = 0
	} else if len(p) != 1 || exp == 0 {
		return 0, false
	}
	base := int64(1000)
	if binary {
		base = 1024
	}
	m := int64(1)
	for range exp {
		m *= base
	}
	return m, true
}

// splitNumber splits s into a decimal number and the unit after it.
func splitNumber(s string) (num, unit string) {
	i := 0
	for i < len(s) && (s[i] >= '0' && s[i] <= '9' || s[i] == '.') {
		i++
	}
	return s[:i], strings.TrimSpace(s[i:])
}

// scale returns num * mul / div rounded down, where num is a non-negative
// decimal with an optional fraction.
func scale(num string, mul, div int64) (int64, error) {
	intPart, frac, hasDot := strings.Cut(num, ".")
	if intPart == "" && frac == "" || strings.Contains(frac, ".") || hasDot && frac == "" {
		return 0, ErrSyntax
	}
	digits := intPart + frac
	n, ok := new(big.Int).SetString(digits, 10)
	if !ok {
		return 0, ErrSyntax
	}
	n.Mul(n, big.NewInt(mul))
	d := new(big.Int).Exp(big.NewInt(10), big.NewInt(int64(len(frac))), nil)
	d.Mul(d, big.NewInt(div))
	n.Quo(n, d)
	if !n.IsInt64() {
		return 0, ErrRange
	}
	return n.Int64(), nil
}

// ParseBytes parses a size such as "64KiB", "1.5MiB", "10MB" or "512" (see
// the package documentation for the units).
func ParseBytes(s string) (int64, error) {
	v, err := parseBytes(s)
	if err != nil {
		return 0, fmt.Errorf("parse size %q: %w", s, err)
	}
	return v, nil
}

// splitInput trims s and splits it into its number and unit, refusing
// overlong and negative input.
func splitInput(s string) (num, unit string, err error) {
	t := strings.TrimSpace(s)
	if len(t) > maxInput {
		return "", "", ErrSyntax
	}
	if strings.HasPrefix(t, "-") {
		return "", "", ErrRange
	}
	num, unit = splitNumber(t)
	if num == "" {
		return "", "", ErrSyntax
	}
	return num, unit, nil
}

func parseBytes(s string) (int64, error) {
	num, unit, err := splitInput(s)
	if err != nil {
		return 0, err
	}
	if len(unit) > 0 && (unit[len(unit)-1] == 'b' || unit[len(unit)-1] == 'B') {
		unit = unit[:len(unit)-1]
		if unit == "" {
			return scaleWhole(num, 1)
		}
	}
	m, ok := multiplier(unit)
	if !ok {
		return 0, fmt.Errorf("%w: unknown unit %q (use B, kB, KiB, MB, MiB, GB, GiB, ...)", ErrSyntax, unit)
	}
	if m == 1 {
		return scaleWhole(num, 1)
	}
	return scale(num, m, 1)
}

// scaleWhole is scale for a unit of one byte, where a fraction makes no
// sense.
func scaleWhole(num string, mul int64) (int64, error) {
	if strings.Contains(num, ".") {
		return 0, fmt.Errorf("%w: fraction of a byte", ErrSyntax)
	}
	return scale(num, mul, 1)
}

// ParseRate parses a bandwidth in bytes per second: "0" (unlimited), "1000",
// "512KiB/s", "2MiB/s", "4Mbit/s" (500000), "10Mbps", "1Gbit/s",
// "100kbit/s" (12500).
func ParseRate(s string) (int64, error) {
	v, err := parseRate(s)
	if err != nil {
		return 0, fmt.Errorf("parse rate %q: %w", s, err)
	}
	return v, nil
}

func parseRate(s string) (int64, error) {
	num, unit, err := splitInput(s)
	if err != nil {
		return 0, err
	}
	lower := strings.ToLower(unit)
	var v int64
	switch {
	case unit == "":
		v, err = scaleWhole(num, 1)
	case strings.HasSuffix(lower, "bit/s"), strings.HasSuffix(lower, "bps") && !strings.HasSuffix(unit, "Bps"):
		prefix := strings.TrimSuffix(strings.TrimSuffix(lower, "bit/s"), "bps")
		m, ok := multiplier(prefix)
		if !ok {
			return 0, fmt.Errorf("%w: unknown unit %q (use bit/s, kbit/s, Mbit/s, Gbit/s)", ErrSyntax, unit)
		}
		v, err = scale(num, m, 8)
	case strings.HasSuffix(unit, "b/s"), strings.HasSuffix(unit, "Bps"):
		return 0, fmt.Errorf("%w: ambiguous unit %q (write %q for bytes or %q for bits)", ErrSyntax, unit,
			strings.TrimSuffix(strings.TrimSuffix(unit, "b/s"), "Bps")+"B/s", strings.TrimSuffix(strings.TrimSuffix(unit, "b/s"), "Bps")+"bit/s")
	case strings.HasSuffix(unit, "/s"):
		v, err = parseBytes(num + strings.TrimSuffix(unit, "/s"))
	default:
		return 0, fmt.Errorf("%w: unit %q is not a rate (add /s, or use bit/s)", ErrSyntax, unit)
	}
	if err != nil {
		return 0, err
	}
	if v == 0 && strings.Trim(num, "0.") != "" {
		return 0, fmt.Errorf("%w: below one byte per second (0 means unlimited)", ErrRange)
	}
	return v, nil
}

// FormatBytes formats n with the largest binary unit it reaches and at most
// two decimals: "512B", "1MiB", "1.5GiB".
func FormatBytes(n int64) string {
	if n < 0 {
		if n == math.MinInt64 {
			return "-8EiB"
		}
		return "-" + FormatBytes(-n)
	}
	const prefixes = "KMGTPE" // 1024^1 .. 1024^6
	for e := len(prefixes); e >= 1; e-- {
		size := int64(1) << (10 * e)
		if n < size {
			continue
		}
		v := round2(float64(n) / float64(size))
		if v >= 1024 && e < len(prefixes) { // 1023.999KiB reads better as 1MiB
			e++
			v = round2(float64(n) / float64(size<<10))
		}
		return strconv.FormatFloat(v, 'f', -1, 64) + prefixes[e-1:e] + "iB"
	}
	return strconv.FormatInt(n, 10) + "B"
}

func round2(v float64) float64 { return math.Round(v*100) / 100 }

// decimal2 formats whole.hundredths without trailing zeros: 4, 1.5, 2.25.
func decimal2(whole, hundredths int64) string {
	s := strconv.FormatInt(whole, 10)
	switch {
	case hundredths == 0:
		return s
	case hundredths%10 == 0:
		return s + "." + strconv.FormatInt(hundredths/10, 10)
	case hundredths < 10:
		return s + ".0" + strconv.FormatInt(hundredths, 10)
	default:
		return s + "." + strconv.FormatInt(hundredths, 10)
	}
}

// FormatRate formats a rate in bytes per second: "unlimited" for 0, bits per
// second with a decimal prefix when that is exact ("4Mbit/s", "100kbit/s"),
// otherwise FormatBytes per second ("512KiB/s").
func FormatRate(n int64) string {
	if n == 0 {
		return "unlimited"
	}
	if n > 0 && n <= math.MaxInt64/8 {
		bits := n * 8
		for _, u := range []struct {
			name string
			size int64
		}{{"Tbit/s", 1e12}, {"Gbit/s", 1e9}, {"Mbit/s", 1e6}, {"kbit/s", 1e3}} {
			if bits >= u.size && bits%(u.size/100) == 0 {
				return decimal2(bits/u.size, bits%u.size/(u.size/100)) + u.name
			}
		}
	}
	return FormatBytes(n) + "/s"
}
