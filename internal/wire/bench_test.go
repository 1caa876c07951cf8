package wire

import (
	"testing"
)

// benchChunk is about 1 MiB of JSON sensor readings.
func benchChunk() *Chunk { return sensorChunk(1 << 20) }

func BenchmarkEncode(b *testing.B) {
	c := benchChunk()
	for _, codec := range allCodecs {
		b.Run(codec.String(), func(b *testing.B) {
			e := mustEncoder(b, codec, LevelDefault)
			frame, err := e.Encode(nil, c)
			if err != nil {
				b.Fatal(err)
			}
			h, _ := ReadHeader(frame)
			raw := int(h.RawLen)
			b.SetBytes(int64(raw))
			b.ReportAllocs()
			for b.Loop() {
				if frame, err = e.Encode(frame[:0], c); err != nil {
					b.Fatal(err)
				}
			}
			b.ReportMetric(float64(raw)/float64(len(frame)), "ratio")
		})
	}
}

// BenchmarkEncodeLevels compares levels of the compressing codecs.
func BenchmarkEncodeLevels(b *testing.B) {
	c := benchChunk()
	raw := RawSize(c) - 2*len(c.Records) // exact: indexes fit one byte
	for _, codec := range allCodecs[1:] {
		for _, level := range allLevels {
			b.Run(codec.String()+"/"+level.String(), func(b *testing.B) {
				e := mustEncoder(b, codec, level)
				var frame []byte
				var err error
				b.SetBytes(int64(raw))
				for b.Loop() {
					if frame, err = e.Encode(frame[:0], c); err != nil {
						b.Fatal(err)
					}
				}
				b.ReportMetric(float64(raw)/float64(len(frame)), "ratio")
			})
		}
	}
}

func BenchmarkDecode(b *testing.B) {
	c := benchChunk()
	d := mustDecoder(b, Limits{})
	for _, codec := range allCodecs {
		b.Run(codec.String(), func(b *testing.B) {
			frame, err := mustEncoder(b, codec, LevelDefault).Encode(nil, c)
			if err != nil {
				b.Fatal(err)
			}
			h, _ := ReadHeader(frame)
			b.SetBytes(int64(h.RawLen))
			b.ReportAllocs()
			for b.Loop() {
				if _, err := d.Decode(frame); err != nil {
					b.Fatal(err)
				}
			}
			b.ReportMetric(float64(h.RawLen)/float64(len(frame)), "ratio")
		})
	}
}

// BenchmarkDecodeParallel decodes zstd frames from many goroutines, as the
// aggregator does for many edges.
func BenchmarkDecodeParallel(b *testing.B) {
	d := mustDecoder(b, Limits{})
	frame, err := mustEncoder(b, CodecZstd, LevelDefault).Encode(nil, benchChunk())
	if err != nil {
		b.Fatal(err)
	}
	h, _ := ReadHeader(frame)
	b.SetBytes(int64(h.RawLen))
	b.RunParallel(func(pb *testing.PB) {
		for pb.Next() {
			if _, err := d.Decode(frame); err != nil {
				b.Error(err)
				return
			}
		}
	})
}
