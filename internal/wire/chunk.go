package wire

import "encoding/binary"

// Header is one Kafka record header. Keys may repeat within a record.
type Header struct {
	Key   string
	Value []byte // nil is a null header value, distinct from an empty one
}

// Record is one Kafka record read from an edge partition.
type Record struct {
	Topic     string // source topic; must be listed in Chunk.Topics
	Partition int32  // source partition, 0 <= Partition < the topic's partition count
	Offset    int64  // source offset, >= 0
	Timestamp int64  // unix milliseconds; may be negative (-1 = none)
	Key       []byte // nil = null key, non-nil empty = empty key
	Value     []byte // nil = null value (tombstone), non-nil empty = empty value
	Headers   []Header
}

// Topic describes one source topic of a chunk.
type Topic struct {
	Name       string // Kafka topic name (see ValidTopicName)
	Partitions int32  // partition count at the source, >= 1
}

// Chunk is the unit of shipping: records from one or many partitions under
// one sequence number.
type Chunk struct {
	Seq     uint64  // sequence number within the sender's epoch
	Topics  []Topic // every topic any record names, each once
	Records []Record
}

// topicIndexSizeBound is the largest encoded size of a topic index: indexes
// are below MaxTopics, which fits three uvarint bytes.
const topicIndexSizeBound = 3

// RecordSize returns how many bytes r adds to a chunk's raw (uncompressed)
// payload. It is exact except for the topic index, which it counts as three
// bytes (one or two more than most chunks use), so it is a tight upper bound.
// Add TopicSize for every distinct topic and one or three bytes for the topic
// count to get the whole raw payload, or use RawSize.
func RecordSize(r *Record) int {
	n := topicIndexSizeBound +
		uvarintLen(uint64(uint32(r.Partition))) +
		uvarintLen(uint64(r.Offset)) +
		varintLen(r.Timestamp) +
		bytesLen(r.Key) +
		bytesLen(r.Value) +
		uvarintLen(uint64(len(r.Headers)))
	for i := range r.Headers {
		h := &r.Headers[i]
		n += uvarintLen(uint64(len(h.Key))) + len(h.Key) + bytesLen(h.Value)
	}
	return n
}

// TopicSize returns how many bytes t takes in a chunk's topic table.
func TopicSize(t Topic) int {
	return uvarintLen(uint64(len(t.Name))) + len(t.Name) + uvarintLen(uint64(uint32(t.Partitions)))
}

// RawSize returns an upper bound (see RecordSize) on the raw payload size of
// c, the value that becomes the frame header's RawLen.
func RawSize(c *Chunk) int {
	n := uvarintLen(uint64(len(c.Topics)))
	for _, t := range c.Topics {
		n += TopicSize(t)
	}
	for i := range c.Records {
		n += RecordSize(&c.Records[i])
	}
	return n
}

// uvarintLen is the encoded size of v as a uvarint.
func uvarintLen(v uint64) int {
	n := 1
	for v >= 0x80 {
		v >>= 7
		n++
	}
	return n
}

// varintLen is the encoded size of v as a zigzag varint.
func varintLen(v int64) int {
	return uvarintLen(uint64(v<<1) ^ uint64(v>>63))
}

// bytesLen is the encoded size of a nullable byte string: a varint length
// (-1 for nil) and the bytes.
func bytesLen(b []byte) int {
	if b == nil {
		return 1
	}
	return varintLen(int64(len(b))) + len(b)
}

// appendBytes appends a nullable byte string.
func appendBytes(dst, b []byte) []byte {
	if b == nil {
		return binary.AppendVarint(dst, -1)
	}
	dst = binary.AppendVarint(dst, int64(len(b)))
	return append(dst, b...)
}
