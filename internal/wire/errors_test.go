package wire

import (
	"bytes"
	"encoding/binary"
	"math"
	"strings"
	"testing"
)

func smallChunk() *Chunk {
	return &Chunk{Seq: 9, Topics: []Topic{{Name: "a", Partitions: 2}}, Records: []Record{
		{Topic: "a", Partition: 1, Offset: 3, Key: []byte("k"), Value: []byte("v"), Headers: []Header{{"h", []byte("x")}}},
	}}
}

func TestDecodeErrors(t *testing.T) {
	good, err := mustEncoder(t, CodecNone, 0).Encode(nil, smallChunk())
	if err != nil {
		t.Fatal(err)
	}
	goodRaw := good[HeaderSize:]
	edit := func(f func(b []byte), seal bool) []byte {
		b := bytes.Clone(good)
		f(b)
		if seal {
			reseal(b)
		}
		return b
	}
	// raw builds an uncompressed frame claiming records records around raw.
	raw := func(records uint32, parts ...[]byte) []byte {
		r := bytes.Join(parts, nil)
		return buildFrame(CodecNone, 1, records, uint32(len(r)), r)
	}
	uv := func(v uint64) []byte { return binary.AppendUvarint(nil, v) }
	sv := func(v int64) []byte { return binary.AppendVarint(nil, v) }
	topicA := bytes.Join([][]byte{uv(1), uv(1), []byte("a"), uv(2)}, nil) // one topic "a", 2 partitions
	// rec is a minimal record of topic index ti.
	rec := func(ti, part, off uint64) []byte {
		return bytes.Join([][]byte{uv(ti), uv(part), uv(off), sv(0), sv(-1), sv(-1), uv(0)}, nil)
	}

	cases := []struct {
		name   string
		limits Limits
		frame  []byte
		want   error
	}{
		{"empty", Limits{}, nil, ErrCorrupt},
		{"short", Limits{}, []byte("EM"), ErrCorrupt},
		{"http", Limits{}, []byte("GET / HTTP/1.1\r\n"), ErrBadMagic},
		{"magic", Limits{}, edit(func(b []byte) { b[0] = 'X' }, true), ErrBadMagic},
		{"version 0", Limits{}, edit(func(b []byte) { b[4] = 0 }, true), ErrUnsupportedVersion},
		{"version 2", Limits{}, edit(func(b []byte) { b[4] = 2 }, true), ErrUnsupportedVersion},
		{"flags", Limits{}, edit(func(b []byte) { b[7] = 1 }, true), ErrUnsupportedVersion},
		{"codec", Limits{}, edit(func(b []byte) { b[5] = 4 }, true), ErrUnsupportedCodec},
		{"checksum header", Limits{}, edit(func(b []byte) { b[8] ^= 1 }, false), ErrChecksum},
		{"checksum payload", Limits{}, edit(func(b []byte) { b[len(b)-1] ^= 0x80 }, false), ErrChecksum},
		{"checksum field", Limits{}, edit(func(b []byte) { b[31] ^= 1 }, false), ErrChecksum},
		{"trailing garbage", Limits{}, append(bytes.Clone(good), 0), ErrCorrupt},
		{"truncated payload", Limits{}, good[:len(good)-1], ErrCorrupt},
		{"frame limit", Limits{MaxFrameBytes: len(good) - 1}, good, ErrTooLarge},
		{"raw limit", Limits{MaxRawBytes: len(goodRaw) - 1}, good, ErrTooLarge},
		{"record limit", Limits{MaxRecords: 1}, raw(2, uv(1), uv(1), []byte("a"), uv(1), rec(0, 0, 0), rec(0, 0, 1)), ErrTooLarge},
		{"header limit", Limits{MaxHeaders: 1}, raw(1, topicA, uv(0), uv(0), uv(0), sv(0), sv(-1), sv(-1), uv(2), uv(0), sv(-1), uv(0), sv(-1)), ErrTooLarge},
		{"huge claims", Limits{}, edit(func(b []byte) {
			binary.BigEndian.PutUint32(b[16:], math.MaxUint32)
			binary.BigEndian.PutUint32(b[20:], math.MaxUint32)
			binary.BigEndian.PutUint32(b[24:], math.MaxUint32)
		}, true), ErrTooLarge},
		{"none raw != payload", Limits{}, edit(func(b []byte) { binary.BigEndian.PutUint32(b[20:], uint32(len(goodRaw)+1)) }, true), ErrCorrupt},
		{"records cannot fit", Limits{}, edit(func(b []byte) { binary.BigEndian.PutUint32(b[16:], 1000) }, true), ErrCorrupt},
		{"more records than claimed", Limits{}, raw(1, topicA, rec(0, 0, 0), rec(0, 0, 1)), ErrCorrupt},
		{"fewer records than claimed", Limits{}, raw(2, topicA, rec(0, 0, 0), bytes.Repeat([]byte{0}, 7)[:6]), ErrCorrupt},
		{"leftover byte", Limits{}, raw(1, topicA, rec(0, 0, 0), []byte{0}), ErrCorrupt},
		{"topic index", Limits{}, raw(1, topicA, rec(1, 0, 0)), ErrCorrupt},
		{"partition out of range", Limits{}, raw(1, topicA, rec(0, 2, 0)), ErrCorrupt},
		{"offset beyond int64", Limits{}, raw(1, topicA, rec(0, 0, math.MaxInt64+1)), ErrCorrupt},
		{"overlong varint", Limits{}, raw(0, bytes.Repeat([]byte{0x80}, 11), []byte{0}), ErrCorrupt},
		{"key length -2", Limits{}, raw(1, topicA, uv(0), uv(0), uv(0), sv(0), sv(-2), sv(-1), uv(0)), ErrCorrupt},
		{"key beyond end", Limits{}, raw(1, topicA, uv(0), uv(0), uv(0), sv(0), sv(100), sv(-1), uv(0)), ErrCorrupt},
		{"value beyond end", Limits{}, raw(1, topicA, uv(0), uv(0), uv(0), sv(0), sv(-1), sv(3), uv(0), []byte{1}), ErrCorrupt},
		{"header count beyond end", Limits{}, raw(1, topicA, uv(0), uv(0), uv(0), sv(0), sv(-1), sv(-1), uv(1<<40)), ErrCorrupt},
		{"header key beyond end", Limits{}, raw(1, topicA, uv(0), uv(0), uv(0), sv(0), sv(-1), sv(-1), uv(1), uv(9), sv(-1)), ErrCorrupt},
		{"header value -3", Limits{}, raw(1, topicA, uv(0), uv(0), uv(0), sv(0), sv(-1), sv(-1), uv(1), uv(0), sv(-3)), ErrCorrupt},
		{"topic count beyond end", Limits{}, raw(0, uv(1000), bytes.Repeat([]byte{1}, 100)), ErrCorrupt},
		{"topic count above max", Limits{}, raw(0, uv(MaxTopics+1), bytes.Repeat([]byte{1}, 3*(MaxTopics+1))), ErrCorrupt},
		{"topic name empty", Limits{}, raw(0, uv(1), uv(0), uv(1), []byte{0}), ErrCorrupt},
		{"topic name bad char", Limits{}, raw(0, uv(1), uv(3), []byte("a/b"), uv(1)), ErrCorrupt},
		{"topic name dot dot", Limits{}, raw(0, uv(1), uv(2), []byte(".."), uv(1)), ErrCorrupt},
		{"topic name too long", Limits{}, raw(0, uv(1), uv(250), []byte(strings.Repeat("a", 250)), uv(1)), ErrCorrupt},
		{"topic zero partitions", Limits{}, raw(0, uv(1), uv(1), []byte("a"), uv(0)), ErrCorrupt},
		{"topic partitions beyond int32", Limits{}, raw(0, uv(1), uv(1), []byte("a"), uv(math.MaxInt32+1)), ErrCorrupt},
		{"duplicate topic", Limits{}, raw(0, uv(2), uv(1), []byte("a"), uv(1), uv(1), []byte("a"), uv(1)), ErrCorrupt},
		{"duplicate topic among many", Limits{}, func() []byte {
			parts := [][]byte{uv(12)}
			for i := range 12 {
				parts = append(parts, uv(1), []byte{"abcdefghijka"[i]}, uv(1))
			}
			return raw(0, parts...)
		}(), ErrCorrupt},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			d := mustDecoder(t, tc.limits)
			c, err := d.Decode(tc.frame)
			if !errorsIs(err, tc.want) {
				t.Fatalf("Decode = %v, %v; want error wrapping %q", c, err, tc.want)
			}
			if c != nil {
				t.Fatalf("Decode returned a chunk with error %v", err)
			}
			if !strings.HasPrefix(err.Error(), "decode frame") {
				t.Errorf("error %q does not say what failed", err)
			}
		})
	}
}

func TestEncodeErrors(t *testing.T) {
	topics := []Topic{{Name: "a", Partitions: 2}}
	cases := []struct {
		name  string
		chunk *Chunk
		want  error
	}{
		{"nil", nil, ErrInvalidChunk},
		{"unknown topic", &Chunk{Topics: topics, Records: []Record{{Topic: "b"}}}, ErrUnknownTopic},
		{"no topics", &Chunk{Records: []Record{{Topic: "a"}}}, ErrUnknownTopic},
		{"partition", &Chunk{Topics: topics, Records: []Record{{Topic: "a", Partition: 2}}}, ErrInvalidChunk},
		{"negative partition", &Chunk{Topics: topics, Records: []Record{{Topic: "a", Partition: -1}}}, ErrInvalidChunk},
		{"negative offset", &Chunk{Topics: topics, Records: []Record{{Topic: "a", Offset: -1}}}, ErrInvalidChunk},
		{"bad topic name", &Chunk{Topics: []Topic{{Name: "a b", Partitions: 1}}}, ErrInvalidTopic},
		{"zero partitions", &Chunk{Topics: []Topic{{Name: "a", Partitions: 0}}}, ErrInvalidChunk},
		{"duplicate topic", &Chunk{Topics: []Topic{{Name: "a", Partitions: 1}, {Name: "a", Partitions: 1}}}, ErrInvalidChunk},
		{"too many topics", &Chunk{Topics: make([]Topic, MaxTopics+1)}, ErrInvalidChunk},
	}
	for _, codec := range allCodecs {
		e := mustEncoder(t, codec, 0)
		for _, tc := range cases {
			dst := []byte("keep")
			got, err := e.Encode(dst, tc.chunk)
			if !errorsIs(err, tc.want) {
				t.Errorf("%v %s: Encode error %v, want %q", codec, tc.name, err, tc.want)
			}
			if string(got) != "keep" {
				t.Errorf("%v %s: Encode changed dst on error: %q", codec, tc.name, got)
			}
		}
		// The encoder still works after errors.
		if _, err := e.Encode(nil, smallChunk()); err != nil {
			t.Errorf("%v: Encode after errors: %v", codec, err)
		}
	}
}

func TestConstructorErrors(t *testing.T) {
	if _, err := NewEncoder(Codec(4), LevelDefault); !errorsIs(err, ErrUnsupportedCodec) {
		t.Errorf("NewEncoder(Codec(4)) = %v", err)
	}
	if _, err := NewEncoder(CodecZstd, Level(5)); !errorsIs(err, ErrInvalidLevel) {
		t.Errorf("NewEncoder(level 5) = %v", err)
	}
	for _, l := range []Limits{{MaxFrameBytes: -1}, {MaxRawBytes: -1}, {MaxRecords: -1}, {MaxHeaders: -1}, {MaxFrameBytes: HeaderSize - 1}} {
		if _, err := NewDecoder(l); !errorsIs(err, ErrInvalidLimits) {
			t.Errorf("NewDecoder(%+v) = %v", l, err)
		}
		if err := l.CheckHeader(FrameHeader{}); !errorsIs(err, ErrInvalidLimits) {
			t.Errorf("CheckHeader with %+v = %v", l, err)
		}
	}
	d := mustDecoder(t, Limits{MaxRecords: 5})
	if got := d.Limits(); got.MaxRecords != 5 || got.MaxRawBytes != DefaultMaxRawBytes || got.MaxFrameBytes != DefaultMaxFrameBytes || got.MaxHeaders != DefaultMaxHeaders {
		t.Errorf("Limits() = %+v", got)
	}
}

func TestClosed(t *testing.T) {
	frame, err := mustEncoder(t, CodecZstd, 0).Encode(nil, smallChunk())
	if err != nil {
		t.Fatal(err)
	}
	e := mustEncoder(t, CodecZstd, 0)
	e.Close()
	e.Close()
	if _, err := e.Encode(nil, smallChunk()); !errorsIs(err, ErrClosed) {
		t.Errorf("Encode after Close = %v", err)
	}
	d := mustDecoder(t, Limits{})
	d.Close()
	d.Close()
	if _, err := d.Decode(frame); !errorsIs(err, ErrClosed) {
		t.Errorf("Decode after Close = %v", err)
	}
}

// TestTruncatedAndFlipped decodes every prefix of a frame of each codec and
// the frame with each byte flipped: all must fail cleanly.
func TestTruncatedAndFlipped(t *testing.T) {
	d := mustDecoder(t, Limits{})
	for _, codec := range allCodecs {
		frame, err := mustEncoder(t, codec, 0).Encode(nil, sensorChunk(2000))
		if err != nil {
			t.Fatal(err)
		}
		for n := range len(frame) {
			if c, err := d.Decode(frame[:n]); err == nil || c != nil {
				t.Fatalf("%v: Decode of %d of %d bytes = %v, %v", codec, n, len(frame), c, err)
			}
		}
		for i := range frame {
			b := bytes.Clone(frame)
			b[i] ^= 0x10
			if _, err := d.Decode(b); err == nil {
				t.Fatalf("%v: Decode with byte %d flipped succeeded", codec, i)
			}
		}
	}
}

func TestReadHeaderPrefix(t *testing.T) {
	frame, err := mustEncoder(t, CodecS2, 0).Encode(nil, smallChunk())
	if err != nil {
		t.Fatal(err)
	}
	h, err := ReadHeader(frame[:HeaderSize])
	if err != nil {
		t.Fatal(err)
	}
	want := FrameHeader{Version: 1, Codec: CodecS2, Seq: 9, Records: 1, RawLen: h.RawLen, PayloadLen: uint32(len(frame) - HeaderSize)}
	if h != want {
		t.Fatalf("ReadHeader = %+v, want %+v", h, want)
	}
	if err := DefaultLimits().CheckHeader(h); err != nil {
		t.Fatalf("CheckHeader: %v", err)
	}
	if err := (Limits{MaxFrameBytes: HeaderSize}).CheckHeader(h); !errorsIs(err, ErrTooLarge) {
		t.Fatalf("CheckHeader with tiny limit = %v", err)
	}
}

func TestVerifyFrame(t *testing.T) {
	frame, err := mustEncoder(t, CodecGzip, 0).Encode(nil, smallChunk())
	if err != nil {
		t.Fatal(err)
	}
	if h, err := VerifyFrame(frame); err != nil || h.Seq != 9 || h.Codec != CodecGzip {
		t.Fatalf("VerifyFrame = %+v, %v", h, err)
	}
	bad := bytes.Clone(frame)
	bad[len(bad)-3] ^= 1
	if _, err := VerifyFrame(bad); !errorsIs(err, ErrChecksum) {
		t.Errorf("VerifyFrame of damaged frame = %v", err)
	}
	if _, err := VerifyFrame(frame[:len(frame)-1]); !errorsIs(err, ErrCorrupt) {
		t.Errorf("VerifyFrame of short frame = %v", err)
	}
	if _, err := VerifyFrame([]byte("nope")); !errorsIs(err, ErrBadMagic) {
		t.Errorf("VerifyFrame of non-frame = %v", err)
	}
}
