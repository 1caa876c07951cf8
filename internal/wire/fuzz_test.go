package wire

import (
	"bytes"
	"encoding/binary"
	"math"
	"runtime/metrics"
	"testing"
)

// fuzzLimits keep the allocation bound of one Decode small enough to check.
func fuzzLimits() Limits {
	return Limits{MaxFrameBytes: 16 << 10, MaxRawBytes: 64 << 10, MaxRecords: 1 << 12, MaxHeaders: 1 << 12}
}

// frameOfSize returns a valid uncompressed frame of exactly n bytes.
func frameOfSize(tb testing.TB, n int) []byte {
	tb.Helper()
	c := &Chunk{Topics: []Topic{{Name: "max", Partitions: 1}}, Records: []Record{{Topic: "max", Value: make([]byte, n)}}}
	for {
		frame := rawOf(tb, c)
		diff := n - HeaderSize - len(frame)
		if diff == 0 {
			return buildFrame(CodecNone, 1, 1, uint32(len(frame)), frame)
		}
		c.Records[0].Value = make([]byte, len(c.Records[0].Value)+diff)
	}
}

// heapAllocated returns the bytes allocated on the heap so far. Unlike
// runtime.ReadMemStats it does not stop the world, so fuzzing stays fast;
// small allocations are counted a span at a time, which is precise enough
// for the megabyte-scale bounds checked here.
func heapAllocated(s []metrics.Sample) uint64 {
	s[0].Name = "/gc/heap/allocs:bytes"
	metrics.Read(s)
	return s[0].Value.Uint64()
}

// FuzzDecode checks, for any input, that Decode
//   - never panics;
//   - allocates no more than the frame's declared, limit-checked sizes
//     allow, however far its payload would inflate;
//   - when it succeeds, returns a chunk that re-encodes (CodecNone) to a
//     frame decoding to the same records, with a raw payload no longer than
//     the input's (the encoder writes minimal varints) and no longer than
//     RawSize promises.
func FuzzDecode(f *testing.F) {
	f.Add([]byte{})
	f.Add([]byte(Magic))
	for _, codec := range allCodecs {
		e, err := NewEncoder(codec, LevelFastest)
		if err != nil {
			f.Fatal(err)
		}
		for _, c := range []*Chunk{smallChunk(), sensorChunk(600), {Seq: 3}, roundTripChunks()["nulls and empties"]} {
			frame, err := e.Encode(nil, c)
			if err != nil {
				f.Fatal(err)
			}
			f.Add(frame)
			f.Add(append(bytes.Clone(frame), "garbage"...))
		}
		e.Close()
	}
	maxed := make([]byte, HeaderSize)
	putHeader(maxed, FrameHeader{Version: Version, Codec: CodecZstd, Seq: math.MaxUint64, Records: math.MaxUint32, RawLen: math.MaxUint32, PayloadLen: math.MaxUint32})
	reseal(maxed)
	f.Add(maxed)
	f.Add(frameOfSize(f, fuzzLimits().MaxFrameBytes))

	d, err := NewDecoder(fuzzLimits())
	if err != nil {
		f.Fatal(err)
	}
	defer d.Close()
	e, err := NewEncoder(CodecNone, 0)
	if err != nil {
		f.Fatal(err)
	}
	defer e.Close()
	d.Decode(buildFrame(CodecZstd, 0, 0, 1, nil)) // warm the zstd decoder's state

	sample := make([]metrics.Sample, 1)
	f.Fuzz(func(t *testing.T, frame []byte) {
		before := heapAllocated(sample)
		c, err := d.Decode(frame)
		after := heapAllocated(sample)

		// What Decode may allocate: the raw buffer (twice, for the zstd
		// overshoot of one block into a reallocated buffer), the records
		// and headers it declares, and the decompressors' own state.
		limit := uint64(1 << 20) // counting is per span, and the runtime allocates too
		if h, herr := ReadHeader(frame); herr == nil && fuzzLimits().CheckHeader(h) == nil {
			limit += 2*uint64(h.RawLen) + 256<<10 + uint64(h.Records)*128 + uint64(h.RawLen/minHeaderSize)*48 + 2<<20
		}
		if n := after - before; n > limit {
			t.Fatalf("Decode allocated %d bytes, limit %d (err %v)", n, limit, err)
		}
		if err != nil {
			if c != nil {
				t.Fatalf("Decode returned a chunk and error %v", err)
			}
			return
		}

		h, _ := ReadHeader(frame)
		again, err := e.Encode(nil, c)
		if err != nil {
			t.Fatalf("re-encode decoded chunk: %v", err)
		}
		h2, _ := ReadHeader(again)
		if h2.RawLen > h.RawLen {
			t.Fatalf("re-encoded raw payload %d bytes, input had %d", h2.RawLen, h.RawLen)
		}
		if int(h2.RawLen) > RawSize(c) {
			t.Fatalf("raw payload %d bytes, RawSize %d", h2.RawLen, RawSize(c))
		}
		c2, err := d.Decode(again)
		if err != nil {
			t.Fatalf("decode re-encoded chunk: %v", err)
		}
		if diff := diffChunks(c, c2); diff != "" {
			t.Fatalf("re-encoded chunk differs: %s", diff)
		}
		if binary.BigEndian.Uint64(frame[8:16]) != c.Seq {
			t.Fatalf("seq %d differs from header", c.Seq)
		}
	})
}
