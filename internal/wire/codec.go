package wire

import (
	"fmt"
	"strconv"
	"strings"
)

// Codec identifies how a frame's payload is compressed. The numeric value is
// the codec byte of the frame header and never changes meaning.
type Codec uint8

// Codecs known to format version 1.
const (
	// CodecNone stores the raw payload as is.
	CodecNone Codec = 0
	// CodecZstd compresses the raw payload as one or more Zstandard frames
	// (RFC 8878).
	CodecZstd Codec = 1
	// CodecS2 compresses the raw payload as one S2 block (a superset of the
	// Snappy block format), as written by github.com/klauspost/compress/s2.
	CodecS2 Codec = 2
	// CodecGzip compresses the raw payload as gzip (RFC 1952) members.
	CodecGzip Codec = 3
)

// codecName returns the name of a known codec and "" otherwise.
func codecName(c Codec) string {
	switch c {
	case CodecNone:
		return "none"
	case CodecZstd:
		return "zstd"
	case CodecS2:
		return "s2"
	case CodecGzip:
		return "gzip"
	}
	return ""
}

// validCodecs is the list shown in ParseCodec errors.
const validCodecs = "none, zstd, s2, gzip"

// ParseCodec parses a codec name: "none", "zstd", "s2" or "gzip"
// (case-insensitive, surrounding spaces ignored).
func ParseCodec(s string) (Codec, error) {
	name := strings.ToLower(strings.TrimSpace(s))
	for c := CodecNone; c <= CodecGzip; c++ {
		if codecName(c) == name {
			return c, nil
		}
	}
	return 0, fmt.Errorf("parse codec %q: %w (valid: %s)", s, ErrUnsupportedCodec, validCodecs)
}

// Valid reports whether c is a codec this build can encode and decode.
func (c Codec) Valid() bool { return c <= CodecGzip }

// String returns the codec name as accepted by ParseCodec, or "Codec(N)" for
// an unknown value.
func (c Codec) String() string {
	if c.Valid() {
		return codecName(c)
	}
	return "Codec(" + strconv.Itoa(int(c)) + ")"
}

// MarshalText implements encoding.TextMarshaler, so a Codec can be used with
// flag.TextVar and in configuration files.
func (c Codec) MarshalText() ([]byte, error) {
	if !c.Valid() {
		return nil, fmt.Errorf("marshal codec %d: %w", uint8(c), ErrUnsupportedCodec)
	}
	return []byte(c.String()), nil
}

// UnmarshalText implements encoding.TextUnmarshaler using ParseCodec.
func (c *Codec) UnmarshalText(b []byte) error {
	v, err := ParseCodec(string(b))
	if err != nil {
		return err
	}
	*c = v
	return nil
}

// Level selects the effort a codec spends compressing. It is a property of
// the sender only: it is not written to the frame and any decoder reads
// frames of every level.
//
// Mapping to the libraries (github.com/klauspost/compress):
//
//	level    zstd                    s2            gzip
//	fastest  SpeedFastest            Encode        1 (BestSpeed)
//	default  SpeedDefault            Encode        5 (DefaultCompression)
//	better   SpeedBetterCompression  EncodeBetter  7
//	best     SpeedBestCompression    EncodeBest    9 (BestCompression)
//
// CodecNone ignores the level.
type Level int

// Compression levels.
const (
	LevelFastest Level = 1
	LevelDefault Level = 2
	LevelBetter  Level = 3
	LevelBest    Level = 4
)

// levelName returns the name of a known level and "" otherwise.
func levelName(l Level) string {
	switch l {
	case LevelFastest:
		return "fastest"
	case LevelDefault:
		return "default"
	case LevelBetter:
		return "better"
	case LevelBest:
		return "best"
	}
	return ""
}

const validLevels = "fastest, default, better, best"

// ParseLevel parses a level name: "fastest", "default", "better" or "best"
// (case-insensitive, surrounding spaces ignored).
func ParseLevel(s string) (Level, error) {
	name := strings.ToLower(strings.TrimSpace(s))
	for l := LevelFastest; l <= LevelBest; l++ {
		if levelName(l) == name {
			return l, nil
		}
	}
	return 0, fmt.Errorf("parse level %q: %w (valid: %s)", s, ErrInvalidLevel, validLevels)
}

// Valid reports whether l is one of the defined levels.
func (l Level) Valid() bool { return l >= LevelFastest && l <= LevelBest }

// String returns the level name as accepted by ParseLevel, or "Level(N)" for
// an unknown value.
func (l Level) String() string {
	if l.Valid() {
		return levelName(l)
	}
	return "Level(" + strconv.Itoa(int(l)) + ")"
}

// MarshalText implements encoding.TextMarshaler.
func (l Level) MarshalText() ([]byte, error) {
	if !l.Valid() {
		return nil, fmt.Errorf("marshal level %d: %w", int(l), ErrInvalidLevel)
	}
	return []byte(l.String()), nil
}

// UnmarshalText implements encoding.TextUnmarshaler using ParseLevel.
func (l *Level) UnmarshalText(b []byte) error {
	v, err := ParseLevel(string(b))
	if err != nil {
		return err
	}
	*l = v
	return nil
}
