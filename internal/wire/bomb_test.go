package wire

import (
	"bytes"
	"io"
	"runtime"
	"testing"

	"github.com/klauspost/compress/gzip"
	"github.com/klauspost/compress/s2"
	"github.com/klauspost/compress/zstd"
)

// allocated returns the bytes allocated while f ran.
func allocated(f func()) uint64 {
	var before, after runtime.MemStats
	runtime.GC()
	runtime.ReadMemStats(&before)
	f()
	runtime.ReadMemStats(&after)
	return after.TotalAlloc - before.TotalAlloc
}

// zeros streams n zero bytes into w in 1 MiB writes.
func zeros(tb testing.TB, w io.WriteCloser, n int) {
	tb.Helper()
	buf := make([]byte, 1<<20)
	for n > 0 {
		k := min(n, len(buf))
		if _, err := w.Write(buf[:k]); err != nil {
			tb.Fatal(err)
		}
		n -= k
	}
	if err := w.Close(); err != nil {
		tb.Fatal(err)
	}
}

// TestDecompressionBomb feeds small frames whose payloads inflate to far
// more than the RawLen they declare. Decode must reject them having
// allocated about RawLen, not the inflated size.
func TestDecompressionBomb(t *testing.T) {
	const inflated = 64 << 20
	if testing.Short() {
		t.Skip("builds 64 MiB bombs")
	}

	var zstdStream bytes.Buffer // no frame content size: found out while decoding
	zw, err := zstd.NewWriter(&zstdStream, zstd.WithEncoderConcurrency(1))
	if err != nil {
		t.Fatal(err)
	}
	zeros(t, zw, inflated)

	zenc, err := zstd.NewWriter(nil, zstd.WithEncoderConcurrency(1))
	if err != nil {
		t.Fatal(err)
	}
	zstdSized := zenc.EncodeAll(make([]byte, 8<<20), nil) // frame content size says 8 MiB
	zenc.Close()

	var gz bytes.Buffer
	gw, err := gzip.NewWriterLevel(&gz, gzip.BestCompression)
	if err != nil {
		t.Fatal(err)
	}
	zeros(t, gw, inflated)

	s2Block := s2.Encode(nil, make([]byte, 32<<20))

	cases := []struct {
		name    string
		codec   Codec
		payload []byte
	}{
		{"zstd stream", CodecZstd, zstdStream.Bytes()},
		{"zstd sized", CodecZstd, zstdSized},
		{"gzip", CodecGzip, gz.Bytes()},
		{"s2", CodecS2, s2Block},
	}
	d := mustDecoder(t, Limits{})
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			t.Logf("payload %d bytes", len(tc.payload))
			for _, rawLen := range []uint32{1000, 1 << 20} {
				frame := buildFrame(tc.codec, 1, 1, rawLen, tc.payload)
				var err error
				n := allocated(func() { _, err = d.Decode(frame) })
				if !errorsIs(err, ErrCorrupt) {
					t.Fatalf("RawLen %d: Decode error %v, want ErrCorrupt", rawLen, err)
				}
				// RawLen for the buffer, at most one zstd block of overshoot
				// and the decompressors' own state.
				if limit := 2*uint64(rawLen) + 4<<20; n > limit {
					t.Fatalf("RawLen %d: Decode allocated %d bytes, limit %d", rawLen, n, limit)
				}
				t.Logf("RawLen %d: %v; allocated %d bytes", rawLen, err, n)
			}
		})
	}
}

// TestRawLenAboveLimit: a frame claiming more raw bytes than MaxRawBytes is
// rejected before anything is decompressed or allocated.
func TestRawLenAboveLimit(t *testing.T) {
	d := mustDecoder(t, Limits{MaxRawBytes: 1 << 20})
	for _, codec := range allCodecs {
		payload := []byte("tiny")
		if codec == CodecNone {
			payload = make([]byte, 1<<20+1)
		}
		frame := buildFrame(codec, 1, 1, 1<<20+1, payload)
		var err error
		n := allocated(func() { _, err = d.Decode(frame) })
		if !errorsIs(err, ErrTooLarge) {
			t.Errorf("%v: Decode = %v, want ErrTooLarge", codec, err)
		}
		if n > 4<<10 {
			t.Errorf("%v: Decode allocated %d bytes before rejecting", codec, n)
		}
	}
}
