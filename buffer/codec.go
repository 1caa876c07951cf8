package buffer

import (
	"encoding/binary"
	"fmt"
	"hash/crc32"
	"math"
	"time"
)

// On-disk encodings. Every decoder checks each length against the bytes that
// are left before it allocates, so a damaged record yields ErrCorrupt, never
// a panic or a huge allocation.

const (
	// MaxTopicLen bounds topic names. Kafka allows 249 bytes.
	MaxTopicLen = 255

	recordVersion = 1 // first byte of every chunk-meta and loss record
	minRangeLen   = 6 // topic length 1 + topic 1 + four one-byte varints
)

var castagnoli = crc32.MakeTable(crc32.Castagnoli)

func frameChecksum(frame []byte) uint32 { return crc32.Checksum(frame, castagnoli) }

func seqKey(seq uint64) []byte {
	var b [8]byte
	binary.BigEndian.PutUint64(b[:], seq)
	return b[:]
}

func keySeq(k []byte) (uint64, bool) {
	if len(k) != 8 {
		return 0, false
	}
	return binary.BigEndian.Uint64(k), true
}

// partitionKeyBytes is topic, a zero byte, then the partition big-endian, so
// keys sort by topic and then partition.
func partitionKeyBytes(k PartitionKey) []byte {
	b := make([]byte, 0, len(k.Topic)+5)
	b = append(b, k.Topic...)
	b = append(b, 0)
	return binary.BigEndian.AppendUint32(b, uint32(k.Partition))
}

func decodePartitionKey(b []byte) (PartitionKey, error) {
	if len(b) < 6 || len(b)-5 > MaxTopicLen || b[len(b)-5] != 0 {
		return PartitionKey{}, fmt.Errorf("decode partition key %x: %w", b, ErrCorrupt)
	}
	p := binary.BigEndian.Uint32(b[len(b)-4:])
	if p > math.MaxInt32 {
		return PartitionKey{}, fmt.Errorf("decode partition key %x: %w", b, ErrCorrupt)
	}
	return PartitionKey{Topic: string(b[:len(b)-5]), Partition: int32(p)}, nil
}

func checkPartition(topic string, partition int32) error {
	if topic == "" || len(topic) > MaxTopicLen {
		return fmt.Errorf("topic %q must be 1 to %d bytes: %w", topic, MaxTopicLen, ErrInvalid)
	}
	if partition < 0 {
		return fmt.Errorf("partition %d of topic %q is negative: %w", partition, topic, ErrInvalid)
	}
	return nil
}

func checkRange(r Range) error {
	if err := checkPartition(r.Topic, r.Partition); err != nil {
		return err
	}
	if r.First < 0 || r.Last < r.First || r.Records < 0 {
		return fmt.Errorf("range %s: %w", r, ErrInvalid)
	}
	return nil
}

// stored is what the store keeps per chunk besides the frame.
type stored struct {
	meta     ChunkMeta
	frameLen int
	crc      uint32
}

func appendRange(b []byte, r Range) []byte {
	b = binary.AppendUvarint(b, uint64(len(r.Topic)))
	b = append(b, r.Topic...)
	b = binary.AppendUvarint(b, uint64(uint32(r.Partition)))
	b = binary.AppendVarint(b, r.First)
	b = binary.AppendVarint(b, r.Last)
	return binary.AppendVarint(b, r.Records)
}

func encodeStored(s stored) []byte {
	b := make([]byte, 0, 32+len(s.meta.Ranges)*24)
	b = append(b, recordVersion)
	b = binary.AppendUvarint(b, uint64(s.frameLen))
	b = binary.BigEndian.AppendUint32(b, s.crc)
	b = binary.AppendUvarint(b, uint64(s.meta.Records))
	b = binary.AppendUvarint(b, uint64(s.meta.RawBytes))
	b = binary.AppendUvarint(b, uint64(len(s.meta.Ranges)))
	for _, r := range s.meta.Ranges {
		b = appendRange(b, r)
	}
	return b
}

// reader consumes an encoded record; the first failure sticks.
type decoder struct {
	b   []byte
	err bool
}

func (r *decoder) uvarint(limit uint64) uint64 {
	if r.err {
		return 0
	}
	v, n := binary.Uvarint(r.b)
	if n <= 0 || v > limit {
		r.err = true
		return 0
	}
	r.b = r.b[n:]
	return v
}

func (r *decoder) varint() int64 {
	if r.err {
		return 0
	}
	v, n := binary.Varint(r.b)
	if n <= 0 {
		r.err = true
		return 0
	}
	r.b = r.b[n:]
	return v
}

func (r *decoder) bytes(n int) []byte {
	if r.err || n > len(r.b) {
		r.err = true
		return nil
	}
	v := r.b[:n]
	r.b = r.b[n:]
	return v
}

func (r *decoder) rng() Range {
	var g Range
	g.Topic = string(r.bytes(int(r.uvarint(MaxTopicLen))))
	g.Partition = int32(r.uvarint(math.MaxInt32))
	g.First = r.varint()
	g.Last = r.varint()
	g.Records = r.varint()
	if !r.err && checkRange(g) != nil {
		r.err = true
	}
	return g
}

func decodeStored(seq uint64, b []byte) (stored, error) {
	var s stored
	r := decoder{b: b}
	if v := r.bytes(1); r.err || v[0] != recordVersion {
		return s, fmt.Errorf("decode chunk %d meta: %w", seq, ErrCorrupt)
	}
	s.meta.Seq = seq
	s.frameLen = int(r.uvarint(math.MaxInt32))
	if c := r.bytes(4); !r.err {
		s.crc = binary.BigEndian.Uint32(c)
	}
	s.meta.Records = int(r.uvarint(math.MaxInt32))
	s.meta.RawBytes = int(r.uvarint(math.MaxInt32))
	n := r.uvarint(uint64(len(r.b) / minRangeLen))
	if !r.err && n > 0 {
		s.meta.Ranges = make([]Range, 0, n)
		for i := uint64(0); i < n && !r.err; i++ {
			s.meta.Ranges = append(s.meta.Ranges, r.rng())
		}
	}
	if r.err || len(r.b) != 0 {
		return stored{}, fmt.Errorf("decode chunk %d meta: %w", seq, ErrCorrupt)
	}
	return s, nil
}

func encodeLoss(l Loss) []byte {
	b := make([]byte, 0, 48+len(l.Range.Topic)+len(l.Reason))
	b = append(b, recordVersion)
	b = appendRange(b, l.Range)
	b = binary.AppendUvarint(b, uint64(len(l.Reason)))
	b = append(b, l.Reason...)
	return binary.AppendVarint(b, l.At.UnixNano())
}

func decodeLoss(id uint64, b []byte) (Loss, error) {
	l := Loss{ID: id}
	r := decoder{b: b}
	if v := r.bytes(1); r.err || v[0] != recordVersion {
		return Loss{}, fmt.Errorf("decode loss %d: %w", id, ErrCorrupt)
	}
	l.Range = r.rng()
	l.Reason = string(r.bytes(int(r.uvarint(MaxReasonLen))))
	l.At = time.Unix(0, r.varint()).UTC()
	if r.err || len(r.b) != 0 {
		return Loss{}, fmt.Errorf("decode loss %d: %w", id, ErrCorrupt)
	}
	return l, nil
}

func encodeUint64(v uint64) []byte { return binary.BigEndian.AppendUint64(nil, v) }

func decodeUint64(b []byte) (uint64, bool) {
	if len(b) != 8 {
		return 0, false
	}
	return binary.BigEndian.Uint64(b), true
}

// String formats a range as topic/partition[first-last] (n records).
func (r Range) String() string {
	return fmt.Sprintf("%s/%d[%d-%d] (%d records)", r.Topic, r.Partition, r.First, r.Last, r.Records)
}
