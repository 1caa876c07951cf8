package wire

import (
	"encoding/binary"
	"fmt"
	"math"
	"slices"

	"github.com/klauspost/compress/gzip"
	"github.com/klauspost/compress/s2"
	"github.com/klauspost/compress/zstd"
)

// Encoder turns chunks into frames. It keeps its scratch buffers and
// compressor state between calls, so one Encoder per sending goroutine
// avoids allocations in steady state. An Encoder is not safe for concurrent
// use.
type Encoder struct {
	codec Codec
	level Level

	raw   []byte         // scratch raw payload, reused
	index map[string]int // topic name -> index, cleared per chunk

	zstd *zstd.Encoder
	gzip *gzip.Writer
	out  appendWriter // gzip output sink appending to the caller's dst

	closed bool
}

// EncoderOption tunes an Encoder.
type EncoderOption func(*encoderOptions)

type encoderOptions struct {
	maxChunk int
}

// WithMaxChunkBytes tells the encoder the largest raw payload it will be
// given. Chunks are compressed independently, so a zstd window as large as
// the chunk loses nothing; the default window (8 MiB) costs about 16 MiB of
// encoder memory for nothing on a small gateway.
func WithMaxChunkBytes(n int) EncoderOption {
	return func(o *encoderOptions) { o.maxChunk = n }
}

// zstdWindow returns the zstd window for chunks of at most n raw bytes: the
// next power of two, at least 64 KiB, at most zstd's default of 8 MiB.
func zstdWindow(n int) int {
	w := 64 << 10
	for w < n && w < 8<<20 {
		w <<= 1
	}
	return w
}

// NewEncoder returns an Encoder that compresses with codec c at level l. A
// zero l means LevelDefault; CodecNone accepts any valid level and ignores it.
func NewEncoder(c Codec, l Level, opts ...EncoderOption) (*Encoder, error) {
	var o encoderOptions
	for _, opt := range opts {
		opt(&o)
	}
	if !c.Valid() {
		return nil, fmt.Errorf("create encoder: codec %d: %w (valid: %s)", uint8(c), ErrUnsupportedCodec, validCodecs)
	}
	if l == 0 {
		l = LevelDefault
	}
	if !l.Valid() {
		return nil, fmt.Errorf("create encoder: level %d: %w (valid: %s)", int(l), ErrInvalidLevel, validLevels)
	}
	e := &Encoder{codec: c, level: l, index: make(map[string]int)}
	switch c {
	case CodecZstd:
		zl := zstd.SpeedDefault
		switch l {
		case LevelFastest:
			zl = zstd.SpeedFastest
		case LevelBetter:
			zl = zstd.SpeedBetterCompression
		case LevelBest:
			zl = zstd.SpeedBestCompression
		}
		// EncodeAll with concurrency 1 runs in the calling goroutine and
		// starts none of its own.
		zopts := []zstd.EOption{zstd.WithEncoderLevel(zl), zstd.WithEncoderConcurrency(1)}
		if o.maxChunk > 0 {
			zopts = append(zopts, zstd.WithWindowSize(zstdWindow(o.maxChunk)))
		}
		z, err := zstd.NewWriter(nil, zopts...)
		if err != nil {
			return nil, fmt.Errorf("create zstd encoder: %w", err)
		}
		e.zstd = z
	case CodecGzip:
		gl := gzip.DefaultCompression
		switch l {
		case LevelFastest:
			gl = gzip.BestSpeed
		case LevelBetter:
			gl = 7
		case LevelBest:
			gl = gzip.BestCompression
		}
		g, err := gzip.NewWriterLevel(&e.out, gl)
		if err != nil {
			return nil, fmt.Errorf("create gzip encoder: %w", err)
		}
		e.gzip = g
	}
	return e, nil
}

// Codec returns the codec e compresses with.
func (e *Encoder) Codec() Codec { return e.codec }

// Level returns the level e compresses at.
func (e *Encoder) Level() Level { return e.level }

// Encode appends the frame for c to dst and returns the extended slice.
//
// Encode checks c against the rules the decoder enforces, so it never
// produces a frame a Decoder with large enough Limits would reject: every
// record's Topic must be listed in c.Topics (else ErrUnknownTopic), topic
// names must be valid and unique, partition counts at least 1, partitions
// within their topic's count and offsets non-negative (else
// ErrInvalidChunk). Sizes that do not fit the header give ErrTooLarge.
// Encode does not know the receiver's Limits; the sender must cut chunks
// small enough for them (see RawSize).
//
// On error dst is returned unchanged. Records and byte slices of c are only
// read, never retained.
func (e *Encoder) Encode(dst []byte, c *Chunk) ([]byte, error) {
	if e.closed {
		return dst, fmt.Errorf("encode chunk: %w", ErrClosed)
	}
	if c == nil {
		return dst, fmt.Errorf("encode chunk: nil chunk: %w", ErrInvalidChunk)
	}
	if uint64(len(c.Records)) > math.MaxUint32 {
		return dst, fmt.Errorf("encode chunk %d: %d records: %w", c.Seq, len(c.Records), ErrTooLarge)
	}
	raw, err := e.appendRaw(e.raw[:0], c)
	e.raw = raw[:0]
	if err != nil {
		return dst, fmt.Errorf("encode chunk %d: %w", c.Seq, err)
	}
	if uint64(len(raw)) > math.MaxUint32 {
		return dst, fmt.Errorf("encode chunk %d: raw payload of %d bytes: %w", c.Seq, len(raw), ErrTooLarge)
	}

	start := len(dst)
	var zero [HeaderSize]byte
	dst = append(dst, zero[:]...)
	switch e.codec {
	case CodecNone:
		dst = append(dst, raw...)
	case CodecZstd:
		dst = e.zstd.EncodeAll(raw, dst)
	case CodecS2:
		dst, err = e.appendS2(dst, raw)
	case CodecGzip:
		dst, err = e.appendGzip(dst, raw)
	}
	if err != nil {
		return dst[:start], fmt.Errorf("encode chunk %d: %w", c.Seq, err)
	}
	payloadLen := len(dst) - start - HeaderSize
	if uint64(payloadLen) > math.MaxUint32 {
		return dst[:start], fmt.Errorf("encode chunk %d: payload of %d bytes: %w", c.Seq, payloadLen, ErrTooLarge)
	}
	frame := dst[start:]
	putHeader(frame, FrameHeader{
		Version:    Version,
		Codec:      e.codec,
		Seq:        c.Seq,
		Records:    uint32(len(c.Records)),
		RawLen:     uint32(len(raw)),
		PayloadLen: uint32(payloadLen),
	})
	binary.BigEndian.PutUint32(frame[checksumOffset:HeaderSize], frameChecksum(frame))
	return dst, nil
}

// appendS2 appends the S2 block for raw to dst, compressing in place in
// dst's spare capacity.
func (e *Encoder) appendS2(dst, raw []byte) ([]byte, error) {
	n := s2.MaxEncodedLen(len(raw))
	if n < 0 {
		return dst, fmt.Errorf("compress s2 payload of %d bytes: %w", len(raw), ErrTooLarge)
	}
	dst = slices.Grow(dst, n)
	room := dst[len(dst) : len(dst)+n]
	var out []byte
	switch e.level {
	case LevelFastest, LevelDefault:
		out = s2.Encode(room, raw)
	case LevelBetter:
		out = s2.EncodeBetter(room, raw)
	default:
		out = s2.EncodeBest(room, raw)
	}
	if len(out) > 0 && &out[0] != &room[0] {
		// Not written in place (cannot happen with room of MaxEncodedLen,
		// but do not depend on it).
		return append(dst, out...), nil
	}
	return dst[:len(dst)+len(out)], nil
}

// appendGzip appends one gzip member holding raw to dst.
func (e *Encoder) appendGzip(dst, raw []byte) ([]byte, error) {
	e.out.b = dst
	e.gzip.Reset(&e.out)
	if _, err := e.gzip.Write(raw); err != nil {
		return dst, fmt.Errorf("compress gzip payload: %w", err)
	}
	if err := e.gzip.Close(); err != nil {
		return dst, fmt.Errorf("compress gzip payload: %w", err)
	}
	dst = e.out.b
	e.out.b = nil
	return dst, nil
}

// appendRaw appends the raw payload of c to b.
func (e *Encoder) appendRaw(b []byte, c *Chunk) ([]byte, error) {
	if len(c.Topics) > MaxTopics {
		return b, fmt.Errorf("encode topic table: %d topics, at most %d allowed: %w", len(c.Topics), MaxTopics, ErrInvalidChunk)
	}
	clear(e.index)
	b = binary.AppendUvarint(b, uint64(len(c.Topics)))
	for i, t := range c.Topics {
		if err := ValidTopicName(t.Name); err != nil {
			return b, fmt.Errorf("encode topic %d: %w: %w", i, ErrInvalidChunk, err)
		}
		if t.Partitions < 1 {
			return b, fmt.Errorf("encode topic %q: partition count %d: %w", t.Name, t.Partitions, ErrInvalidChunk)
		}
		if _, dup := e.index[t.Name]; dup {
			return b, fmt.Errorf("encode topic %q: listed twice: %w", t.Name, ErrInvalidChunk)
		}
		e.index[t.Name] = i
		b = binary.AppendUvarint(b, uint64(len(t.Name)))
		b = append(b, t.Name...)
		b = binary.AppendUvarint(b, uint64(t.Partitions))
	}

	last := -1 // index of the previous record's topic; records come in runs
	for i := range c.Records {
		r := &c.Records[i]
		ti := last
		if ti < 0 || c.Topics[ti].Name != r.Topic {
			var ok bool
			if ti, ok = e.index[r.Topic]; !ok {
				return b, fmt.Errorf("encode record %d: topic %q not in chunk topics: %w", i, r.Topic, ErrUnknownTopic)
			}
			last = ti
		}
		if r.Partition < 0 || r.Partition >= c.Topics[ti].Partitions {
			return b, fmt.Errorf("encode record %d: partition %d of topic %q with %d partitions: %w",
				i, r.Partition, r.Topic, c.Topics[ti].Partitions, ErrInvalidChunk)
		}
		if r.Offset < 0 {
			return b, fmt.Errorf("encode record %d: negative offset %d: %w", i, r.Offset, ErrInvalidChunk)
		}
		b = binary.AppendUvarint(b, uint64(ti))
		b = binary.AppendUvarint(b, uint64(r.Partition))
		b = binary.AppendUvarint(b, uint64(r.Offset))
		b = binary.AppendVarint(b, r.Timestamp)
		b = appendBytes(b, r.Key)
		b = appendBytes(b, r.Value)
		b = binary.AppendUvarint(b, uint64(len(r.Headers)))
		for j := range r.Headers {
			h := &r.Headers[j]
			b = binary.AppendUvarint(b, uint64(len(h.Key)))
			b = append(b, h.Key...)
			b = appendBytes(b, h.Value)
		}
	}
	return b, nil
}

// Close releases the compressor. Encode fails with ErrClosed afterwards.
// Close is safe to call more than once.
func (e *Encoder) Close() {
	if e.closed {
		return
	}
	e.closed = true
	if e.zstd != nil {
		_ = e.zstd.Close() // EncodeAll-only use leaves nothing to flush
		e.zstd = nil
	}
	e.gzip = nil
	e.raw = nil
	e.index = nil
}

// appendWriter is an io.Writer that appends to b.
type appendWriter struct{ b []byte }

func (w *appendWriter) Write(p []byte) (int, error) {
	w.b = append(w.b, p...)
	return len(p), nil
}
