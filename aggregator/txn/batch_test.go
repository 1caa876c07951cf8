package txn

import (
	"bytes"
	"encoding/binary"
	"hash/crc32"
	"io"
	"testing"

	"github.com/pierrec/lz4/v4"
	"github.com/segmentio/kafka-go"
	"github.com/twmb/franz-go/pkg/kmsg"

	"github.com/edgemirror/edgemirror/internal/wire"
)

// decodeBatch parses a size-prefixed batch with franz-go's kmsg, checks its
// CRC, decompresses it (none or lz4) and returns the header and records.
func decodeBatch(t *testing.T, b []byte) (kmsg.RecordBatch, []kmsg.Record) {
	t.Helper()
	if n := int(binary.BigEndian.Uint32(b)); n != len(b)-4 {
		t.Fatalf("size prefix %d, batch has %d bytes", n, len(b)-4)
	}
	b = b[4:]
	var rb kmsg.RecordBatch
	if err := rb.ReadFrom(b); err != nil {
		t.Fatalf("kmsg decode: %v", err)
	}
	if int(rb.Length) != len(b)-12 {
		t.Fatalf("batch length %d, want %d", rb.Length, len(b)-12)
	}
	if got := int32(crc32.Checksum(b[21:], crc32.MakeTable(crc32.Castagnoli))); got != rb.CRC {
		t.Fatalf("crc %x, computed %x", rb.CRC, got)
	}
	raw := rb.Records
	switch rb.Attributes & 7 {
	case 0:
	case 3:
		var err error
		if raw, err = io.ReadAll(lz4.NewReader(bytes.NewReader(rb.Records))); err != nil {
			t.Fatalf("lz4: %v", err)
		}
	default:
		t.Fatalf("unexpected compression %d", rb.Attributes&7)
	}
	recs := make([]kmsg.Record, rb.NumRecords)
	for i := range recs {
		length, n := binary.Varint(raw)
		if n <= 0 || int(length)+n > len(raw) {
			t.Fatalf("record %d: bad length", i)
		}
		if err := recs[i].ReadFrom(raw[:n+int(length)]); err != nil {
			t.Fatalf("record %d: %v", i, err)
		}
		raw = raw[n+int(length):]
	}
	if len(raw) != 0 {
		t.Fatalf("%d bytes after the last record", len(raw))
	}
	return rb, recs
}

func TestEncodeBatchDecodesWithFranzGo(t *testing.T) {
	recs := []Record{
		{Timestamp: 1700000000123, Key: []byte("k1"), Value: []byte("v1"),
			Headers: []wire.Header{{Key: "a", Value: []byte("1")}, {Key: "a", Value: nil}, {Key: "b", Value: []byte{}}}},
		{Timestamp: 1700000000100, Key: nil, Value: []byte{}},                                // earlier timestamp, null key, empty value
		{Timestamp: 1700000009999, Key: []byte{}, Value: nil},                                // empty key, null value (tombstone)
		{Timestamp: 1700000000124, Key: []byte("k4"), Value: bytes.Repeat([]byte("x"), 300)}, // multi-byte varints
	}
	for _, tc := range []struct {
		name  string
		codec kafka.Compression
	}{{"none", 0}, {"lz4", kafka.Lz4}} {
		t.Run(tc.name, func(t *testing.T) {
			b, err := encodeBatch(batchHeader{producerID: 4242, producerEpoch: 7, baseSequence: 1000,
				transactional: true, compression: tc.codec}, recs)
			if err != nil {
				t.Fatal(err)
			}
			rb, got := decodeBatch(t, b)
			if rb.Magic != 2 || rb.ProducerID != 4242 || rb.ProducerEpoch != 7 || rb.FirstSequence != 1000 {
				t.Errorf("header: magic %d pid %d epoch %d seq %d", rb.Magic, rb.ProducerID, rb.ProducerEpoch, rb.FirstSequence)
			}
			if rb.Attributes&0x10 == 0 || rb.Attributes&0x20 != 0 {
				t.Errorf("attributes %x: want transactional, not control", rb.Attributes)
			}
			if rb.LastOffsetDelta != int32(len(recs)-1) || rb.NumRecords != int32(len(recs)) {
				t.Errorf("last offset delta %d, records %d", rb.LastOffsetDelta, rb.NumRecords)
			}
			if rb.FirstTimestamp != 1700000000123 || rb.MaxTimestamp != 1700000009999 {
				t.Errorf("timestamps first %d max %d", rb.FirstTimestamp, rb.MaxTimestamp)
			}
			for i, r := range got {
				want := recs[i]
				if r.OffsetDelta != int32(i) || rb.FirstTimestamp+r.TimestampDelta64 != want.Timestamp {
					t.Errorf("record %d: offset delta %d, timestamp %d", i, r.OffsetDelta, rb.FirstTimestamp+r.TimestampDelta64)
				}
				if (r.Key == nil) != (want.Key == nil) || !bytes.Equal(r.Key, want.Key) {
					t.Errorf("record %d: key %q (nil %v), want %q (nil %v)", i, r.Key, r.Key == nil, want.Key, want.Key == nil)
				}
				if (r.Value == nil) != (want.Value == nil) || !bytes.Equal(r.Value, want.Value) {
					t.Errorf("record %d: value %q (nil %v), want nil %v", i, r.Value, r.Value == nil, want.Value == nil)
				}
				if len(r.Headers) != len(want.Headers) {
					t.Fatalf("record %d: %d headers, want %d", i, len(r.Headers), len(want.Headers))
				}
				for j, h := range r.Headers {
					w := want.Headers[j]
					if h.Key != w.Key || (h.Value == nil) != (w.Value == nil) || !bytes.Equal(h.Value, w.Value) {
						t.Errorf("record %d header %d: %q=%q, want %q=%q", i, j, h.Key, h.Value, w.Key, w.Value)
					}
				}
			}
		})
	}
}

func TestRecordSizeBoundsEncoding(t *testing.T) {
	recs := []Record{{Timestamp: 1, Key: []byte("key"), Value: bytes.Repeat([]byte("v"), 1000),
		Headers: []wire.Header{{Key: "edgemirror-offset", Value: []byte("123456")}}}}
	b, err := encodeBatch(batchHeader{}, recs)
	if err != nil {
		t.Fatal(err)
	}
	if enc, est := len(b)-4-batchOverhead, RecordSize(&recs[0]); est < enc {
		t.Errorf("RecordSize %d is below the encoded size %d: batches could exceed their bound", est, enc)
	}
}
