package buffer

import "errors"

// Errors returned when opening a Store.
var (
	// ErrLocked is returned by Open when another process (or another Store in
	// this process) holds the buffer file and the lock was not released within
	// Options.LockTimeout. Two agents must never share one buffer directory.
	ErrLocked = errors.New("buffer is locked by another process")

	// ErrUnsupportedFormat is returned by Open when the file carries a format
	// version this build does not understand, or is a bbolt file that was not
	// written by this package. The wrapping message names the found and the
	// supported versions. Nothing is modified.
	ErrUnsupportedFormat = errors.New("unsupported buffer format")
)

// Errors returned by Store operations.
var (
	// ErrClosed is returned by every operation after Close, and by Append and
	// Lease calls that were waiting when Close was called.
	ErrClosed = errors.New("buffer closed")

	// ErrTooLarge is returned by Append when the frame can never be stored:
	// it is larger than Store.MaxFrameBytes, or the store holds no chunk at
	// all and the file still has no contiguous room for it. Split the chunk.
	ErrTooLarge = errors.New("frame too large for buffer")

	// ErrSeq is returned by Append when ChunkMeta.Seq is not Store.NextSeq().
	ErrSeq = errors.New("chunk sequence out of order")

	// ErrNotFound is returned by Ack and Reject when no chunk with that
	// sequence number is stored (for example DropBefore already removed it).
	ErrNotFound = errors.New("chunk not found")

	// ErrInvalid is returned when an argument can never be stored: an empty
	// topic, a negative partition, a range with First > Last, or a reason
	// string longer than MaxReasonLen.
	ErrInvalid = errors.New("invalid argument")

	// ErrFull is returned by AdvanceOffsets when the file has no free page
	// left even for a small update and nothing can be dropped. Ack or
	// DropBefore make room; retry after that.
	ErrFull = errors.New("buffer file full")

	// ErrCorrupt is returned when a stored record cannot be decoded. Open
	// refuses such a file; it is never skipped silently.
	ErrCorrupt = errors.New("buffer record corrupt")
)
