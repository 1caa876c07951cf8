package wire

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"math"
	"runtime"
	"sync"
	"sync/atomic"

	"github.com/klauspost/compress/gzip"
	"github.com/klauspost/compress/s2"
	"github.com/klauspost/compress/zstd"
)

// Decoder turns frames back into chunks, trusting nothing in them. Decode is
// safe for concurrent use by many goroutines; zstd decoding runs at most
// GOMAXPROCS frames at a time and further callers wait.
type Decoder struct {
	limits Limits
	zstd   *zstd.Decoder
	gzip   sync.Pool // of *gzipReader
	closed atomic.Bool
}

// gzipReader is a reusable gzip reader with its input.
type gzipReader struct {
	src bytes.Reader
	zr  gzip.Reader
	one [1]byte
}

// NewDecoder returns a Decoder that rejects frames exceeding l. Zero fields
// of l take their DefaultLimits values; a negative field is an error wrapping
// ErrInvalidLimits.
func NewDecoder(l Limits) (*Decoder, error) {
	l, err := l.withDefaults()
	if err != nil {
		return nil, fmt.Errorf("create decoder: %w", err)
	}
	// DecodeAll is limited to the capacity of the buffer it is given, which
	// Decode sizes to the frame's RawLen; MaxMemory is a second fence.
	z, err := zstd.NewReader(nil,
		zstd.WithDecoderConcurrency(runtime.GOMAXPROCS(0)),
		zstd.WithDecoderMaxMemory(uint64(l.MaxRawBytes)),
		zstd.WithDecodeAllCapLimit(true),
	)
	if err != nil {
		return nil, fmt.Errorf("create zstd decoder: %w", err)
	}
	return &Decoder{limits: l, zstd: z}, nil
}

// Limits returns the limits d enforces, with defaults filled in.
func (d *Decoder) Limits() Limits { return d.limits }

// Close releases the decompressors. Decode fails with ErrClosed afterwards.
// Close must not be called while Decode calls are running; it is safe to
// call more than once.
func (d *Decoder) Close() {
	if d.closed.Swap(true) {
		return
	}
	d.zstd.Close()
}

// Decode parses and verifies one complete frame.
//
// Before allocating anything it checks the magic, version, flags and codec,
// the header against the Limits, that the frame is exactly HeaderSize +
// PayloadLen bytes, and the CRC-32C. It then decompresses into one buffer of
// exactly RawLen bytes; a payload that would inflate beyond RawLen is
// rejected as soon as it overflows (for zstd, by at most one 128 KiB block),
// so a small frame cannot make Decode allocate more than about twice its
// declared, limited size. Finally it parses the
// raw payload twice: once to validate every length, index and count, then to
// fill one []Record and one []Header sized from the first pass.
//
// The returned Chunk does not alias frame. Its Key, Value and header Value
// slices alias one buffer owned by the Chunk; they are capped, so appending
// to one never overwrites another. A record without headers has nil Headers.
//
// Every error wraps one of ErrBadMagic, ErrUnsupportedVersion,
// ErrUnsupportedCodec, ErrTooLarge, ErrChecksum, ErrCorrupt or ErrClosed.
func (d *Decoder) Decode(frame []byte) (*Chunk, error) {
	if d.closed.Load() {
		return nil, fmt.Errorf("decode frame: %w", ErrClosed)
	}
	h, err := ReadHeader(frame)
	if err != nil {
		return nil, fmt.Errorf("decode frame: %w", err)
	}
	if err := d.limits.check(h); err != nil {
		return nil, fmt.Errorf("decode frame %d: %w", h.Seq, err)
	}
	if err := checkFrame(frame, h); err != nil {
		return nil, fmt.Errorf("decode frame %d: %w", h.Seq, err)
	}
	raw, err := d.decompress(h, frame[HeaderSize:])
	if err != nil {
		return nil, fmt.Errorf("decode frame %d: %w", h.Seq, err)
	}
	c, err := parseRaw(raw, h, d.limits.MaxHeaders)
	if err != nil {
		return nil, fmt.Errorf("decode frame %d: %w", h.Seq, err)
	}
	return c, nil
}

// decompress returns a new buffer of exactly h.RawLen bytes holding the raw
// payload, or an error wrapping ErrCorrupt if payload does not decompress to
// exactly that many bytes. h has passed Limits.check.
func (d *Decoder) decompress(h FrameHeader, payload []byte) ([]byte, error) {
	rawLen := int(h.RawLen)
	switch h.Codec {
	case CodecNone:
		raw := make([]byte, rawLen)
		copy(raw, payload) // Limits.check made len(payload) == rawLen
		return raw, nil

	case CodecS2:
		n, err := s2.DecodedLen(payload)
		if err != nil {
			return nil, fmt.Errorf("decompress s2 payload: %w: %v", ErrCorrupt, err)
		}
		if n != rawLen {
			return nil, fmt.Errorf("decompress s2 payload: block of %d bytes, header says %d: %w", n, rawLen, ErrCorrupt)
		}
		raw := make([]byte, rawLen)
		out, err := s2.Decode(raw, payload)
		if err != nil {
			return nil, fmt.Errorf("decompress s2 payload: %w: %v", ErrCorrupt, err)
		}
		if len(out) != rawLen || &out[0] != &raw[0] {
			return nil, fmt.Errorf("decompress s2 payload: %d bytes, header says %d: %w", len(out), rawLen, ErrCorrupt)
		}
		return raw, nil

	case CodecZstd:
		// A frame that states its content size (as EncodeAll writes it) is
		// checked before the buffer is allocated.
		var zh zstd.Header
		if err := zh.Decode(payload); err == nil && zh.HasFCS && zh.FrameContentSize > uint64(rawLen) {
			return nil, fmt.Errorf("decompress zstd payload: content size %d, header says %d: %w", zh.FrameContentSize, rawLen, ErrCorrupt)
		}
		raw := make([]byte, 0, rawLen)
		out, err := d.zstd.DecodeAll(payload, raw)
		if errors.Is(err, zstd.ErrDecoderClosed) {
			return nil, fmt.Errorf("decompress zstd payload: %w", ErrClosed)
		}
		if err != nil {
			return nil, fmt.Errorf("decompress zstd payload: %w: %v (header says %d bytes)", ErrCorrupt, err, rawLen)
		}
		if len(out) != rawLen {
			return nil, fmt.Errorf("decompress zstd payload: %d bytes, header says %d: %w", len(out), rawLen, ErrCorrupt)
		}
		return out, nil

	case CodecGzip:
		g, _ := d.gzip.Get().(*gzipReader)
		if g == nil {
			g = new(gzipReader)
		}
		raw, err := g.decode(payload, rawLen)
		d.gzip.Put(g)
		return raw, err
	}
	// ReadHeader rejects unknown codecs.
	return nil, fmt.Errorf("decompress payload: codec %d: %w", uint8(h.Codec), ErrUnsupportedCodec)
}

// decode inflates payload, requiring exactly rawLen bytes followed by the
// end of the gzip stream. It never reads more than one byte past rawLen, so
// a payload inflating far beyond rawLen costs no more than rawLen of memory.
func (g *gzipReader) decode(payload []byte, rawLen int) ([]byte, error) {
	defer g.src.Reset(nil)
	g.src.Reset(payload)
	if err := g.zr.Reset(&g.src); err != nil {
		return nil, fmt.Errorf("decompress gzip payload: %w: %v", ErrCorrupt, err)
	}
	raw := make([]byte, rawLen)
	if n, err := io.ReadFull(&g.zr, raw); err != nil {
		return nil, fmt.Errorf("decompress gzip payload: %d bytes, header says %d: %w: %v", n, rawLen, ErrCorrupt, err)
	}
	// The stream must end here; reading to EOF also checks the gzip CRC.
	switch n, err := io.ReadFull(&g.zr, g.one[:]); {
	case err == io.EOF:
		return raw, nil
	case err == nil && n > 0:
		return nil, fmt.Errorf("decompress gzip payload: inflates beyond %d bytes: %w", rawLen, ErrCorrupt)
	default:
		return nil, fmt.Errorf("decompress gzip payload: %w: %v", ErrCorrupt, err)
	}
}

// rawReader walks a raw payload.
type rawReader struct {
	b   []byte
	off int
}

func (r *rawReader) remaining() int { return len(r.b) - r.off }

func (r *rawReader) uvarint() (uint64, bool) {
	if r.off < len(r.b) && r.b[r.off] < 0x80 { // most lengths and indexes
		r.off++
		return uint64(r.b[r.off-1]), true
	}
	v, n := binary.Uvarint(r.b[r.off:])
	if n <= 0 {
		return 0, false
	}
	r.off += n
	return v, true
}

func (r *rawReader) varint() (int64, bool) {
	u, ok := r.uvarint()
	return int64(u>>1) ^ -int64(u&1), ok // zigzag, as binary.Varint
}

// nullable reads a varint length (-1 = nil) and that many bytes, returned
// capped so that appending to them cannot overwrite what follows.
func (r *rawReader) nullable() ([]byte, bool) {
	n, ok := r.varint()
	if !ok || n < -1 || n > int64(r.remaining()) {
		return nil, false
	}
	if n == -1 {
		return nil, true
	}
	end := r.off + int(n)
	b := r.b[r.off:end:end]
	r.off = end
	return b, true
}

// corrupt builds the error for a rule broken at the reader's position.
func (r *rawReader) corrupt(what string, args ...any) error {
	return fmt.Errorf("parse raw payload at byte %d: %s: %w", r.off, fmt.Sprintf(what, args...), ErrCorrupt)
}

// parseRaw validates raw completely, then builds the Chunk.
func parseRaw(raw []byte, h FrameHeader, maxHeaders int) (*Chunk, error) {
	r := &rawReader{b: raw}
	topics, err := r.topics()
	if err != nil {
		return nil, err
	}
	start := r.off
	n := int(h.Records)
	var s fill
	if err := r.records(topics, n, maxHeaders, &s); err != nil {
		return nil, err
	}
	if r.off != len(raw) {
		return nil, r.corrupt("%d bytes left after %d records", r.remaining(), n)
	}

	c := &Chunk{Seq: h.Seq, Topics: topics}
	if n == 0 {
		return c, nil
	}
	c.Records = make([]Record, n)
	s = fill{recs: c.Records, hdrs: make([]Header, s.wantHeaders)}
	r.off = start
	if err := r.records(topics, n, maxHeaders, &s); err != nil {
		return nil, err // unreachable: the first pass accepted the same bytes
	}
	return c, nil
}

// topics reads the topic table.
func (r *rawReader) topics() ([]Topic, error) {
	n, ok := r.uvarint()
	if !ok {
		return nil, r.corrupt("bad topic count")
	}
	if n > MaxTopics || n > uint64(r.remaining()/minTopicSize) {
		return nil, r.corrupt("topic count %d does not fit", n)
	}
	if n == 0 {
		return nil, nil
	}
	topics := make([]Topic, n)
	var seen map[string]struct{}
	if n > 8 {
		seen = make(map[string]struct{}, n)
	}
	for i := range topics {
		l, ok := r.uvarint()
		if !ok || l > uint64(r.remaining()) {
			return nil, r.corrupt("bad length of topic name %d", i)
		}
		name := r.b[r.off : r.off+int(l)]
		if !validNameBytes(name) {
			return nil, r.corrupt("topic name %d %q: %v", i, name, ErrInvalidTopic)
		}
		r.off += int(l)
		p, ok := r.uvarint()
		if !ok || p < 1 || p > math.MaxInt32 {
			return nil, r.corrupt("bad partition count of topic %q", name)
		}
		t := Topic{Name: string(name), Partitions: int32(p)}
		if seen != nil {
			if _, dup := seen[t.Name]; dup {
				return nil, r.corrupt("topic %q listed twice", t.Name)
			}
			seen[t.Name] = struct{}{}
		} else {
			for _, u := range topics[:i] {
				if u.Name == t.Name {
					return nil, r.corrupt("topic %q listed twice", t.Name)
				}
			}
		}
		topics[i] = t
	}
	return topics, nil
}

// fill is the state of a records pass. With recs nil the pass only
// validates and counts headers into wantHeaders.
type fill struct {
	recs        []Record
	hdrs        []Header
	wantHeaders int
	keys        map[string]string // interned header keys
}

// maxInternedKeys bounds the header-key intern table of one Decode.
const maxInternedKeys = 256

// key returns b as a string, sharing the string among equal keys of the
// chunk: header keys repeat ("content-type", "traceparent") and this keeps
// their cost near one allocation per distinct key.
func (s *fill) key(b []byte) string {
	if len(b) == 0 {
		return ""
	}
	if k, ok := s.keys[string(b)]; ok {
		return k
	}
	k := string(b)
	if s.keys == nil {
		s.keys = make(map[string]string)
	}
	if len(s.keys) < maxInternedKeys {
		s.keys[k] = k
	}
	return k
}

// records reads n records. The first pass (s.recs nil) checks every rule and
// counts headers; the second fills s.recs and s.hdrs.
func (r *rawReader) records(topics []Topic, n, maxHeaders int, s *fill) error {
	filling := s.recs != nil
	used := 0 // headers placed so far
	for i := 0; i < n; i++ {
		ti, ok := r.uvarint()
		if !ok || ti >= uint64(len(topics)) {
			return r.corrupt("record %d: bad topic index", i)
		}
		t := &topics[ti]
		p, ok := r.uvarint()
		if !ok || p >= uint64(t.Partitions) {
			return r.corrupt("record %d: bad partition for topic %q with %d partitions", i, t.Name, t.Partitions)
		}
		off, ok := r.uvarint()
		if !ok || off > math.MaxInt64 {
			return r.corrupt("record %d: bad offset", i)
		}
		ts, ok := r.varint()
		if !ok {
			return r.corrupt("record %d: bad timestamp", i)
		}
		key, ok := r.nullable()
		if !ok {
			return r.corrupt("record %d: bad key length", i)
		}
		value, ok := r.nullable()
		if !ok {
			return r.corrupt("record %d: bad value length", i)
		}
		hc, ok := r.uvarint()
		if !ok || hc > uint64(r.remaining()/minHeaderSize) {
			return r.corrupt("record %d: bad header count", i)
		}
		var hs []Header
		if filling {
			if hc > 0 {
				end := used + int(hc)
				hs = s.hdrs[used:end:end]
				used = end
			}
		} else {
			if uint64(s.wantHeaders)+hc > uint64(maxHeaders) {
				return fmt.Errorf("parse raw payload: more than %d record headers: %w", maxHeaders, ErrTooLarge)
			}
			s.wantHeaders += int(hc)
		}
		for j := 0; j < int(hc); j++ {
			kl, ok := r.uvarint()
			if !ok || kl > uint64(r.remaining()) {
				return r.corrupt("record %d header %d: bad key length", i, j)
			}
			kb := r.b[r.off : r.off+int(kl)]
			r.off += int(kl)
			hv, ok := r.nullable()
			if !ok {
				return r.corrupt("record %d header %d: bad value length", i, j)
			}
			if filling {
				hs[j] = Header{Key: s.key(kb), Value: hv}
			}
		}
		if filling {
			s.recs[i] = Record{
				Topic:     t.Name,
				Partition: int32(p),
				Offset:    int64(off),
				Timestamp: ts,
				Key:       key,
				Value:     value,
				Headers:   hs,
			}
		}
	}
	return nil
}
