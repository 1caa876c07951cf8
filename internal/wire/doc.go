// Package wire is the single definition of edgemirror's chunk format and of
// the constants and JSON bodies of the HTTP protocol between agent and
// aggregator. docs/protocol.md describes the same format byte by byte for
// writers of other clients; this package and its tests are authoritative.
//
// # Basics
//
// A Chunk holds records from one or many source partitions under one
// sequence number. An Encoder turns it into a frame: a 32-byte header
// (magic "EMCH", version, codec, seq, record count, raw length, payload
// length, CRC-32C) followed by the compressed raw payload. A Decoder turns a
// frame back into a Chunk:
//
//	enc, err := wire.NewEncoder(wire.CodecZstd, wire.LevelDefault)
//	frame, err := enc.Encode(nil, &chunk)
//	dec, err := wire.NewDecoder(wire.DefaultLimits())
//	chunk, err := dec.Decode(frame)
//
// The raw payload keeps everything Kafka records carry: null and empty keys,
// values and header values stay distinct, header order and repeated header
// keys are preserved, and timestamps may be negative.
//
// The agent cuts chunks by size before encoding: RecordSize is what a record
// adds to the raw payload and RawSize bounds a whole chunk.
//
// # Trust
//
// The decoder trusts nothing in a frame. Every length and count is checked
// against the bytes that remain and against Limits before memory is
// allocated for it; decompression writes into one buffer of exactly the
// declared raw length and fails as soon as the payload overflows it, so a
// small frame that inflates to gigabytes costs no more than about twice the
// declared, limited size. Topic names must be legal Kafka topic names, partitions
// below the topic's declared count and offsets non-negative. Malformed input
// returns an error wrapping a sentinel of errors.go, never a panic.
//
// Encode applies the same rules to its input, so it never produces a frame
// that a decoder with large enough Limits rejects.
//
// The provenance headers that the aggregator writes on hub records are
// defined in package internal/provenance, not here: they are not part of
// the frame.
//
// # Concurrency and memory
//
// An Encoder is not safe for concurrent use; it reuses its buffers and
// compressor state, and allocates nothing per record. A Decoder is safe for
// concurrent use. Decode allocates the raw buffer, one []Record, one
// []Header and strings for topic names and distinct header keys; record
// keys and values alias the raw buffer, which belongs to the returned Chunk.
//
// # Caveats
//
// A record without headers decodes with nil Headers even if it was encoded
// with an empty, non-nil slice. Records are stored in the order given;
// keeping offsets ascending per partition is the sender's job, not the
// format's. Encode does not know the receiver's Limits: a sender must keep
// chunks below the receiver's MaxRawBytes, MaxFrameBytes and MaxRecords or
// they are rejected permanently.
package wire
