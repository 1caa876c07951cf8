// Package provenance defines the headers that edgemirror adds to every record
// it writes to the hub, and reads them back.
//
// The headers name the record's origin: (edge, source topic, source
// partition, source offset), with the partition and offset in decimal ASCII.
// They make deduplication state recoverable from the hub itself, make exact
// offset translation possible, and break mirroring cycles: a record that
// already carries them is never mirrored again.
package provenance

import (
	"strconv"

	"github.com/edgemirror/edgemirror/internal/wire"
)

// Header keys.
const (
	HeaderEdge      = "edgemirror-edge"
	HeaderTopic     = "edgemirror-topic"
	HeaderPartition = "edgemirror-partition"
	HeaderOffset    = "edgemirror-offset"
)

// Origin is where a hub record came from.
type Origin struct {
	Edge      string
	Topic     string
	Partition int32
	Offset    int64
}

// Has reports whether headers already carry an edgemirror provenance header.
func Has(headers []wire.Header) bool {
	for _, h := range headers {
		if h.Key == HeaderEdge {
			return true
		}
	}
	return false
}

// Append appends the four provenance headers for o to dst.
func Append(dst []wire.Header, o Origin) []wire.Header {
	return NewStamper(o.Edge, o.Topic, o.Partition, 1).Append(dst, o.Offset)
}

// Count is the number of provenance headers Append adds to a record.
const Count = 4

// Stamper appends the provenance headers of many records of one source
// partition. Their edge, topic and partition values are one shared slice
// each, and their offsets are written into one growing buffer, so that a
// record costs no allocation of its own. The values it appends must not be
// modified.
type Stamper struct {
	edge, topic, partition []byte
	digits                 []byte
}

// NewStamper returns a Stamper for the records of one source partition,
// with room for about n of them.
func NewStamper(edge, topic string, partition int32, n int) *Stamper {
	return &Stamper{
		edge:      []byte(edge),
		topic:     []byte(topic),
		partition: strconv.AppendInt(nil, int64(partition), 10),
		digits:    make([]byte, 0, n*8),
	}
}

// Append appends the four provenance headers of the record at offset to
// dst: edge, topic, partition and offset, the numbers in decimal ASCII.
func (s *Stamper) Append(dst []wire.Header, offset int64) []wire.Header {
	from := len(s.digits)
	s.digits = strconv.AppendInt(s.digits, offset, 10)
	return append(dst,
		wire.Header{Key: HeaderEdge, Value: s.edge[:len(s.edge):len(s.edge)]},
		wire.Header{Key: HeaderTopic, Value: s.topic[:len(s.topic):len(s.topic)]},
		wire.Header{Key: HeaderPartition, Value: s.partition[:len(s.partition):len(s.partition)]},
		wire.Header{Key: HeaderOffset, Value: s.digits[from:len(s.digits):len(s.digits)]},
	)
}

// Header is the minimal shape of a Kafka header, so that both wire and
// kafka-go headers can be parsed without conversion.
type Header interface {
	~struct {
		Key   string
		Value []byte
	}
}

// Parse extracts the origin from headers. ok is false when any of the four
// headers is missing or malformed. When a header repeats, the last one wins
// (the aggregator appends its headers after the record's own).
func Parse[H Header](headers []H) (o Origin, ok bool) {
	var seen int
	for _, hh := range headers {
		h := struct {
			Key   string
			Value []byte
		}(hh)
		switch h.Key {
		case HeaderEdge:
			o.Edge = string(h.Value)
			seen |= 1
		case HeaderTopic:
			o.Topic = string(h.Value)
			seen |= 2
		case HeaderPartition:
			p, err := strconv.ParseInt(string(h.Value), 10, 32)
			if err != nil || p < 0 {
				return Origin{}, false
			}
			o.Partition = int32(p)
			seen |= 4
		case HeaderOffset:
			off, err := strconv.ParseInt(string(h.Value), 10, 64)
			if err != nil || off < 0 {
				return Origin{}, false
			}
			o.Offset = off
			seen |= 8
		}
	}
	return o, seen == 15
}
