package wire

import (
	"encoding/binary"
	"fmt"
	"hash/crc32"
	"math"
)

// Frame layout constants (format version 1).
const (
	// Magic is the first four bytes of every frame.
	Magic = "EMCH"

	// Version is the frame format version this package writes and reads.
	Version uint8 = 1

	// HeaderSize is the size of the fixed frame header in bytes.
	HeaderSize = 32

	// checksumOffset is where the CRC-32C sits in the header; the checksum
	// covers header bytes [0:checksumOffset) followed by the payload.
	checksumOffset = 28
)

// Limits of the raw payload format itself, independent of Limits.
const (
	// MaxTopics is the largest number of topics one chunk may list.
	MaxTopics = 1 << 16

	// MaxTopicNameLen is the longest legal Kafka topic name.
	MaxTopicNameLen = 249

	// MaxEdgeIDLen is the longest legal edge id.
	MaxEdgeIDLen = 64

	// minRecordSize is the fewest raw bytes one record can take: one byte
	// each for topic index, partition, offset, timestamp, key length, value
	// length and header count.
	minRecordSize = 7

	// minHeaderSize is the fewest raw bytes one record header can take: key
	// length and value length.
	minHeaderSize = 2

	// minTopicSize is the fewest raw bytes one topic entry can take: name
	// length, a one-byte name and a partition count.
	minTopicSize = 3
)

// castagnoli is the CRC-32C table. It is built once by the standard library
// and never written after, so sharing it is safe.
var castagnoli = crc32.MakeTable(crc32.Castagnoli)

// FrameHeader is the decoded fixed header of a frame.
type FrameHeader struct {
	Version    uint8  // format version, 1
	Codec      Codec  // payload compression
	Seq        uint64 // chunk sequence number within the sender's epoch
	Records    uint32 // number of records in the raw payload
	RawLen     uint32 // length of the uncompressed payload
	PayloadLen uint32 // length of the payload that follows the header
}

// FrameLen returns the total length of the frame h describes.
func (h FrameHeader) FrameLen() int64 { return HeaderSize + int64(h.PayloadLen) }

// ReadHeader parses the fixed header at the start of frame and checks magic,
// version, flags and codec. It does not need the payload: frame may be just
// the first HeaderSize bytes, so a receiver can read the header of a stream,
// check it against its Limits (Limits.CheckHeader) and only then read
// PayloadLen more bytes. ReadHeader does not verify the checksum or the
// payload; Decoder.Decode does.
func ReadHeader(frame []byte) (FrameHeader, error) {
	if len(frame) >= len(Magic) && string(frame[:len(Magic)]) != Magic {
		return FrameHeader{}, fmt.Errorf("read frame header: %w", ErrBadMagic)
	}
	if len(frame) < HeaderSize {
		return FrameHeader{}, fmt.Errorf("read frame header: %d of %d bytes: %w", len(frame), HeaderSize, ErrCorrupt)
	}
	h := FrameHeader{
		Version:    frame[4],
		Codec:      Codec(frame[5]),
		Seq:        binary.BigEndian.Uint64(frame[8:16]),
		Records:    binary.BigEndian.Uint32(frame[16:20]),
		RawLen:     binary.BigEndian.Uint32(frame[20:24]),
		PayloadLen: binary.BigEndian.Uint32(frame[24:28]),
	}
	if h.Version != Version {
		return FrameHeader{}, fmt.Errorf("read frame header: version %d (want %d): %w", h.Version, Version, ErrUnsupportedVersion)
	}
	if flags := binary.BigEndian.Uint16(frame[6:8]); flags != 0 {
		return FrameHeader{}, fmt.Errorf("read frame header: flags %#04x: %w", flags, ErrUnsupportedVersion)
	}
	if !h.Codec.Valid() {
		return FrameHeader{}, fmt.Errorf("read frame header: codec %d: %w", uint8(h.Codec), ErrUnsupportedCodec)
	}
	return h, nil
}

// VerifyFrame checks a complete frame without decompressing it: header
// (as ReadHeader), that the frame is exactly HeaderSize + PayloadLen bytes,
// and the CRC-32C. A sender can use it to detect a frame damaged at rest
// before shipping it; it does not apply Limits or look inside the payload,
// so a frame that passes may still be rejected by Decode.
func VerifyFrame(frame []byte) (FrameHeader, error) {
	h, err := ReadHeader(frame)
	if err != nil {
		return FrameHeader{}, fmt.Errorf("verify frame: %w", err)
	}
	if err := checkFrame(frame, h); err != nil {
		return FrameHeader{}, fmt.Errorf("verify frame %d: %w", h.Seq, err)
	}
	return h, nil
}

// checkFrame checks the length and checksum of a frame whose header h was
// read by ReadHeader.
func checkFrame(frame []byte, h FrameHeader) error {
	if int64(len(frame)) != h.FrameLen() {
		return fmt.Errorf("check frame length: %d bytes, header says %d: %w", len(frame), h.FrameLen(), ErrCorrupt)
	}
	if got, want := frameChecksum(frame), binary.BigEndian.Uint32(frame[checksumOffset:HeaderSize]); got != want {
		return fmt.Errorf("check frame checksum: crc32c %08x, header says %08x: %w", got, want, ErrChecksum)
	}
	return nil
}

// putHeader writes h (with zero flags) into b[:HeaderSize], leaving the
// checksum field zero.
func putHeader(b []byte, h FrameHeader) {
	_ = b[HeaderSize-1]
	copy(b[0:4], Magic)
	b[4] = h.Version
	b[5] = uint8(h.Codec)
	binary.BigEndian.PutUint16(b[6:8], 0)
	binary.BigEndian.PutUint64(b[8:16], h.Seq)
	binary.BigEndian.PutUint32(b[16:20], h.Records)
	binary.BigEndian.PutUint32(b[20:24], h.RawLen)
	binary.BigEndian.PutUint32(b[24:28], h.PayloadLen)
	binary.BigEndian.PutUint32(b[28:32], 0)
}

// Checksum returns the CRC-32C a frame's header carries (0 for a frame
// shorter than a header). Once Decoder.Decode accepted the frame, it
// identifies the frame's content: a receiver can tell a re-sent frame from
// another one under the same seq.
func Checksum(frame []byte) uint32 {
	if len(frame) < HeaderSize {
		return 0
	}
	return binary.BigEndian.Uint32(frame[checksumOffset:HeaderSize])
}

// frameChecksum computes the CRC-32C of header bytes [0:28) followed by the
// payload of a complete frame.
func frameChecksum(frame []byte) uint32 {
	crc := crc32.Update(0, castagnoli, frame[:checksumOffset])
	return crc32.Update(crc, castagnoli, frame[HeaderSize:])
}

// Limits bounds what a Decoder accepts. Every limit is checked against the
// frame header before anything is allocated or decompressed. A zero field
// means the value from DefaultLimits; a negative field is an error.
//
// Worst-case memory of one Decode call is about MaxRawBytes (raw payload)
// plus 112 bytes per record plus 40 bytes per record header; a receiver
// that decodes many frames at once should bound its concurrency with that
// in mind.
type Limits struct {
	// MaxFrameBytes bounds the whole frame, header included.
	MaxFrameBytes int
	// MaxRawBytes bounds the uncompressed payload (header field RawLen). It
	// must not exceed math.MaxUint32.
	MaxRawBytes int
	// MaxRecords bounds the record count (header field Records).
	MaxRecords int
	// MaxHeaders bounds the total number of record headers in one frame.
	MaxHeaders int
}

// Default limits.
const (
	DefaultMaxFrameBytes = 16 << 20 // 16 MiB on the wire
	DefaultMaxRawBytes   = 64 << 20 // 64 MiB uncompressed
	DefaultMaxRecords    = 1 << 20  // records per frame
	DefaultMaxHeaders    = 1 << 20  // record headers per frame
)

// DefaultLimits returns the limits used when a Limits field is zero:
// MaxFrameBytes 16 MiB, MaxRawBytes 64 MiB, MaxRecords 1<<20 and MaxHeaders
// 1<<20.
func DefaultLimits() Limits {
	return Limits{
		MaxFrameBytes: DefaultMaxFrameBytes,
		MaxRawBytes:   DefaultMaxRawBytes,
		MaxRecords:    DefaultMaxRecords,
		MaxHeaders:    DefaultMaxHeaders,
	}
}

// withDefaults returns l with zero fields replaced by defaults, or an error
// for a negative or out-of-range field.
func (l Limits) withDefaults() (Limits, error) {
	d := DefaultLimits()
	fields := []struct {
		name string
		v    *int
		def  int
		max  uint64
	}{
		{"MaxFrameBytes", &l.MaxFrameBytes, d.MaxFrameBytes, HeaderSize + math.MaxUint32},
		{"MaxRawBytes", &l.MaxRawBytes, d.MaxRawBytes, math.MaxUint32},
		{"MaxRecords", &l.MaxRecords, d.MaxRecords, math.MaxUint32},
		{"MaxHeaders", &l.MaxHeaders, d.MaxHeaders, math.MaxInt},
	}
	for _, f := range fields {
		switch {
		case *f.v < 0:
			return Limits{}, fmt.Errorf("check limits: %s is %d, must not be negative: %w", f.name, *f.v, ErrInvalidLimits)
		case *f.v == 0:
			*f.v = f.def
		case uint64(*f.v) > f.max:
			return Limits{}, fmt.Errorf("check limits: %s is %d, must be at most %d: %w", f.name, *f.v, f.max, ErrInvalidLimits)
		}
	}
	if l.MaxFrameBytes < HeaderSize {
		return Limits{}, fmt.Errorf("check limits: MaxFrameBytes is %d, must be at least %d: %w", l.MaxFrameBytes, HeaderSize, ErrInvalidLimits)
	}
	return l, nil
}

// CheckHeader reports whether a frame with header h fits within l, using
// default values for zero fields. It returns an error wrapping ErrTooLarge if
// not, and ErrCorrupt if the header is self-contradictory (more records than
// the raw length can hold, or a CodecNone frame whose payload and raw lengths
// differ).
func (l Limits) CheckHeader(h FrameHeader) error {
	l, err := l.withDefaults()
	if err != nil {
		return err
	}
	return l.check(h)
}

// check is CheckHeader for limits already passed through withDefaults.
func (l Limits) check(h FrameHeader) error {
	if h.FrameLen() > int64(l.MaxFrameBytes) {
		return fmt.Errorf("check frame size: %d bytes exceeds limit %d: %w", h.FrameLen(), l.MaxFrameBytes, ErrTooLarge)
	}
	if uint64(h.RawLen) > uint64(l.MaxRawBytes) {
		return fmt.Errorf("check raw size: %d bytes exceeds limit %d: %w", h.RawLen, l.MaxRawBytes, ErrTooLarge)
	}
	if uint64(h.Records) > uint64(l.MaxRecords) {
		return fmt.Errorf("check record count: %d records exceeds limit %d: %w", h.Records, l.MaxRecords, ErrTooLarge)
	}
	// The topic count takes at least one byte, each record at least
	// minRecordSize bytes.
	if 1+uint64(h.Records)*minRecordSize > uint64(h.RawLen) {
		return fmt.Errorf("check raw size: %d records cannot fit in %d bytes: %w", h.Records, h.RawLen, ErrCorrupt)
	}
	if h.Codec == CodecNone && h.PayloadLen != h.RawLen {
		return fmt.Errorf("check payload size: uncompressed payload of %d bytes declares raw length %d: %w", h.PayloadLen, h.RawLen, ErrCorrupt)
	}
	return nil
}
