package wire

import "errors"

// Errors returned while decoding a frame. Every error returned by
// Decoder.Decode and ReadHeader wraps exactly one of ErrBadMagic,
// ErrUnsupportedVersion, ErrUnsupportedCodec, ErrChecksum, ErrTooLarge,
// ErrCorrupt or ErrClosed, so a receiver can map it to a response with
// errors.Is.
var (
	// ErrBadMagic is returned when a frame does not start with the magic
	// bytes "EMCH": the body is not an edgemirror chunk at all.
	ErrBadMagic = errors.New("bad magic")

	// ErrUnsupportedVersion is returned when a frame carries a format
	// version or header flags this build does not understand.
	ErrUnsupportedVersion = errors.New("unsupported version")

	// ErrUnsupportedCodec is returned when a frame names a compression codec
	// this build does not know, and by ParseCodec for an unknown name.
	ErrUnsupportedCodec = errors.New("unsupported codec")

	// ErrChecksum is returned when the CRC-32C stored in a frame header does
	// not match the header and payload bytes: the frame was damaged in
	// transit or at rest.
	ErrChecksum = errors.New("checksum mismatch")

	// ErrTooLarge is returned when a frame declares more bytes or records
	// than the decoder's Limits allow, or when Encode is asked to build a
	// frame whose sizes do not fit the 32-bit header fields. The frame may be
	// well formed; the sender must cut smaller chunks.
	ErrTooLarge = errors.New("frame too large")

	// ErrCorrupt is returned when a frame is internally inconsistent: it is
	// truncated or has trailing bytes, its payload does not decompress to
	// exactly the declared raw length, or the raw payload breaks a rule of
	// the format (bad varint, length beyond the end, topic index or
	// partition out of range, negative offset, leftover bytes).
	ErrCorrupt = errors.New("corrupt frame")

	// ErrClosed is returned when an Encoder or Decoder is used after Close.
	ErrClosed = errors.New("codec closed")
)

// Errors returned while encoding a chunk.
var (
	// ErrUnknownTopic is returned by Encode when a record names a topic that
	// is not listed in Chunk.Topics.
	ErrUnknownTopic = errors.New("unknown topic")

	// ErrInvalidChunk is returned by Encode when a chunk cannot be encoded
	// into a frame that a decoder would accept: a nil chunk, an invalid or
	// duplicate topic name, a partition count below 1, a record partition
	// outside its topic's partition count, or a negative offset.
	ErrInvalidChunk = errors.New("invalid chunk")
)

// Errors returned by the validation and parsing helpers.
var (
	// ErrInvalidEdgeID is returned by ValidEdgeID when an edge id is empty,
	// longer than MaxEdgeIDLen, contains a character outside
	// [A-Za-z0-9._-], or is "." or "..".
	ErrInvalidEdgeID = errors.New("invalid edge id")

	// ErrInvalidTopic is returned by ValidTopicName when a topic name is not
	// a legal Kafka topic name.
	ErrInvalidTopic = errors.New("invalid topic name")

	// ErrInvalidLevel is returned by ParseLevel and NewEncoder for an unknown
	// compression level.
	ErrInvalidLevel = errors.New("invalid compression level")

	// ErrInvalidLimits is returned by NewDecoder when a Limits field is
	// negative or out of range.
	ErrInvalidLimits = errors.New("invalid limits")
)
