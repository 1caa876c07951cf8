package txn

import (
	"bytes"
	"encoding/binary"
	"fmt"
	"hash/crc32"
	"sync"

	"github.com/segmentio/kafka-go"

	"github.com/edgemirror/edgemirror/internal/wire"
)

// Record is one record to produce. Nil Key or Value are null; empty ones
// stay empty.
type Record struct {
	Timestamp int64 // milliseconds since the Unix epoch
	Key       []byte
	Value     []byte
	Headers   []wire.Header
}

// batchHeader are the fields of a record batch that are not records.
type batchHeader struct {
	producerID    int64
	producerEpoch int16
	baseSequence  int32
	transactional bool
	compression   kafka.Compression
}

const (
	attrTransactional = 0x10
	recordBatchMagic  = 2
	// batchOverhead is the size of a record batch v2 without records:
	// base offset (8), length (4), leader epoch (4), magic (1), crc (4),
	// attributes (2), last offset delta (4), base and max timestamp (16),
	// producer id (8), epoch (2), base sequence (4), record count (4).
	batchOverhead = 61
)

var castagnoli = crc32.MakeTable(crc32.Castagnoli)

var bufPool = sync.Pool{New: func() any { return new(bytes.Buffer) }}

// encodeBatch returns recs as one record batch v2, preceded by its int32
// size as a produce request carries it.
func encodeBatch(h batchHeader, recs []Record) ([]byte, error) {
	if len(recs) == 0 {
		return nil, fmt.Errorf("encode batch: no records")
	}
	base := recs[0].Timestamp
	maxTS := base
	raw := bufPool.Get().(*bytes.Buffer)
	raw.Reset()
	defer bufPool.Put(raw)
	var scratch []byte
	for i := range recs {
		r := &recs[i]
		if r.Timestamp > maxTS {
			maxTS = r.Timestamp
		}
		scratch = appendRecord(scratch[:0], r, r.Timestamp-base, int64(i))
		raw.Write(scratch)
	}
	records := raw.Bytes()
	if codec := h.compression.Codec(); codec != nil {
		cbuf := bufPool.Get().(*bytes.Buffer)
		cbuf.Reset()
		defer bufPool.Put(cbuf)
		w := codec.NewWriter(cbuf)
		if _, err := w.Write(records); err != nil {
			return nil, fmt.Errorf("compress batch: %w", err)
		}
		if err := w.Close(); err != nil {
			return nil, fmt.Errorf("compress batch: %w", err)
		}
		records = cbuf.Bytes()
	}
	attrs := int16(h.compression) & 0x7
	if h.transactional {
		attrs |= attrTransactional
	}
	out := make([]byte, 0, 4+batchOverhead+len(records))
	out = binary.BigEndian.AppendUint32(out, uint32(batchOverhead+len(records)))    // size prefix
	out = binary.BigEndian.AppendUint64(out, 0)                                     // base offset
	out = binary.BigEndian.AppendUint32(out, uint32(batchOverhead-12+len(records))) // batch length
	out = binary.BigEndian.AppendUint32(out, 0xffffffff)                            // partition leader epoch
	out = append(out, recordBatchMagic)
	crcAt := len(out)
	out = binary.BigEndian.AppendUint32(out, 0) // crc, below
	out = binary.BigEndian.AppendUint16(out, uint16(attrs))
	out = binary.BigEndian.AppendUint32(out, uint32(len(recs)-1))
	out = binary.BigEndian.AppendUint64(out, uint64(base))
	out = binary.BigEndian.AppendUint64(out, uint64(maxTS))
	out = binary.BigEndian.AppendUint64(out, uint64(h.producerID))
	out = binary.BigEndian.AppendUint16(out, uint16(h.producerEpoch))
	out = binary.BigEndian.AppendUint32(out, uint32(h.baseSequence))
	out = binary.BigEndian.AppendUint32(out, uint32(len(recs)))
	out = append(out, records...)
	binary.BigEndian.PutUint32(out[crcAt:], crc32.Checksum(out[crcAt+4:], castagnoli))
	return out, nil
}

// appendRecord appends one record of a v2 batch.
func appendRecord(dst []byte, r *Record, tsDelta, offDelta int64) []byte {
	size := 1 + varintLen(tsDelta) + varintLen(offDelta) + bytesLen(r.Key) + bytesLen(r.Value) +
		varintLen(int64(len(r.Headers)))
	for _, h := range r.Headers {
		size += varintLen(int64(len(h.Key))) + len(h.Key) + bytesLen(h.Value)
	}
	dst = binary.AppendVarint(dst, int64(size))
	dst = append(dst, 0) // attributes
	dst = binary.AppendVarint(dst, tsDelta)
	dst = binary.AppendVarint(dst, offDelta)
	dst = appendBytes(dst, r.Key)
	dst = appendBytes(dst, r.Value)
	dst = binary.AppendVarint(dst, int64(len(r.Headers)))
	for _, h := range r.Headers {
		dst = binary.AppendVarint(dst, int64(len(h.Key)))
		dst = append(dst, h.Key...)
		dst = appendBytes(dst, h.Value)
	}
	return dst
}

func varintLen(v int64) int {
	u := uint64(v<<1) ^ uint64(v>>63) // zigzag
	n := 1
	for u >= 0x80 {
		u >>= 7
		n++
	}
	return n
}

func bytesLen(b []byte) int {
	if b == nil {
		return 1
	}
	return varintLen(int64(len(b))) + len(b)
}

func appendBytes(dst, b []byte) []byte {
	if b == nil {
		return binary.AppendVarint(dst, -1)
	}
	dst = binary.AppendVarint(dst, int64(len(b)))
	return append(dst, b...)
}

// RecordSize is the encoded size of r in a batch, uncompressed, within a few
// bytes. Batches are cut by it.
func RecordSize(r *Record) int {
	n := 1 + 10 + 5 + 5 + 5 + len(r.Key) + 5 + len(r.Value) + 5
	for _, h := range r.Headers {
		n += 5 + len(h.Key) + 5 + len(h.Value)
	}
	return n
}
