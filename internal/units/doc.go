// Package units parses and formats the byte sizes and bandwidths operators
// type into flags and configuration files ("64MiB", "4Mbit/s").
//
// # Basics
//
// ParseBytes accepts a non-negative decimal number, optionally with a
// fraction, followed by an optional unit; unit letters are case-insensitive
// and may be separated from the number by spaces:
//
//	B                       1
//	k, kB                   1000        Ki, KiB   1024
//	M, MB                   1000²       Mi, MiB   1024²
//	G, GB                   1000³       Gi, GiB   1024³
//	T, TB                   1000⁴       Ti, TiB   1024⁴
//	P, PB                   1000⁵       Pi, PiB   1024⁵
//	E, EB                   1000⁶       Ei, EiB   1024⁶
//
// So "10MB" is 10 000 000 bytes and "10MiB" is 10 485 760. A fraction is
// allowed with a unit ("1.5MiB"); the result is rounded down to whole bytes.
//
// ParseRate accepts bytes per second or bits per second:
//
//	"0"                       unlimited
//	"1000"                    1000 bytes/s
//	"512KiB/s", "2MB/s"       a ParseBytes size per second
//	"4Mbit/s", "10Mbps"       bits per second with a decimal prefix
//	                          (k, M, G, T) or a binary one (Ki, Mi, Gi, Ti),
//	                          divided by 8 and rounded down
//
// FormatBytes and FormatRate produce short, human-readable forms that the
// parsers accept back: binary units for sizes ("1.5GiB"), and for rates
// bits with decimal prefixes when that is exact ("4Mbit/s"), binary bytes
// otherwise ("512KiB/s").
//
// # Caveats
//
// "b" is never a unit on its own, and "MBps" or "Mb/s" are rejected rather
// than guessed at: "Mb/s" means megabits to a network engineer and megabytes
// to ParseBytes' case-insensitive rules. Write "Mbit/s" or "MB/s". Negative
// values and values beyond int64 are errors, and a non-zero rate that rounds
// down to zero bytes per second (below 8 bit/s) is an error rather than
// "unlimited". FormatBytes rounds to two decimals, so for sizes that are not
// a round number of units it is for display, not for round trips.
package units
