package buffer

import (
	"bytes"
	"reflect"
	"testing"
	"time"

	"github.com/edgemirror/edgemirror/internal/wire"
)

// The decoders read bytes from disk that a damaged file may have changed.
// Invariants: they never panic, they either fail with ErrCorrupt or return
// a record that survives encoding and decoding again unchanged (varints
// need not be minimal, so the bytes may differ), and they never allocate
// more than the input justifies (ranges are bounded by the input length).

func FuzzDecodeStored(f *testing.F) {
	valid := encodeStored(stored{frameLen: 1234, crc: 99, meta: ChunkMeta{Records: 3, RawBytes: 77, Ranges: []Range{
		{Topic: "orders", Partition: 4, First: 10, Last: 12, Records: 3},
		{Topic: "x", Partition: 0, First: 0, Last: 0, Records: 0},
	}}})
	f.Add([]byte{})
	f.Add(valid)
	f.Add(append(append([]byte(nil), valid...), 0xff, 0xff))
	f.Add(encodeStored(stored{}))
	f.Add(bytes.Repeat([]byte{0xff}, 64))
	f.Fuzz(func(t *testing.T, b []byte) {
		rec, err := decodeStored(7, b)
		if err != nil {
			return
		}
		if len(rec.meta.Ranges) > len(b)/minRangeLen {
			t.Fatalf("%d ranges from %d bytes", len(rec.meta.Ranges), len(b))
		}
		again, err := decodeStored(7, encodeStored(rec))
		if err != nil || !reflect.DeepEqual(again, rec) {
			t.Fatalf("re-decoding differs: %+v, %v; want %+v", again, err, rec)
		}
	})
}

func FuzzDecodeLoss(f *testing.F) {
	valid := encodeLoss(Loss{Range: Range{Topic: "t", Partition: 1, First: 5, Last: 9, Records: 5},
		Reason: wire.LossReasonDropOldest, At: time.Unix(1700000000, 5)})
	f.Add([]byte{})
	f.Add(valid)
	f.Add(append(append([]byte(nil), valid...), 0))
	f.Fuzz(func(t *testing.T, b []byte) {
		l, err := decodeLoss(3, b)
		if err != nil {
			return
		}
		again, err := decodeLoss(3, encodeLoss(l))
		if err != nil || !reflect.DeepEqual(again, l) {
			t.Fatalf("re-decoding differs: %+v, %v; want %+v", again, err, l)
		}
	})
}

func FuzzDecodePartitionKey(f *testing.F) {
	f.Add(partitionKeyBytes(PartitionKey{"orders", 3}))
	f.Add([]byte{})
	f.Add([]byte{0, 0, 0, 0, 0, 0})
	f.Fuzz(func(t *testing.T, b []byte) {
		k, err := decodePartitionKey(b)
		if err != nil {
			return
		}
		if got := partitionKeyBytes(k); !bytes.Equal(got, b) {
			t.Fatalf("re-encoding differs:\n in %x\nout %x", b, got)
		}
	})
}

func TestCodecRoundTrip(t *testing.T) {
	in := stored{frameLen: 1 << 20, crc: 0xdeadbeef, meta: ChunkMeta{Seq: 5, Records: 1000, RawBytes: 1 << 21, Ranges: []Range{
		{Topic: "a.b-c_d", Partition: 1<<31 - 1, First: 1 << 40, Last: 1<<40 + 999, Records: 1000},
	}}}
	out, err := decodeStored(5, encodeStored(in))
	if err != nil || out.frameLen != in.frameLen || out.crc != in.crc || out.meta.Seq != 5 ||
		out.meta.Records != in.meta.Records || out.meta.RawBytes != in.meta.RawBytes || out.meta.Ranges[0] != in.meta.Ranges[0] {
		t.Fatalf("round trip: %+v, %v", out, err)
	}
	l := Loss{ID: 9, Range: in.meta.Ranges[0], Reason: "retention", At: time.Unix(1, 2).UTC()}
	if got, err := decodeLoss(9, encodeLoss(l)); err != nil || got != l {
		t.Fatalf("loss round trip: %+v, %v", got, err)
	}
	if _, err := decodeStored(1, encodeStored(in)[:10]); err == nil {
		t.Fatal("truncated record decoded")
	}
}
