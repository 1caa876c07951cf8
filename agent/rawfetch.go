package agent

import (
	"bufio"
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"io"

	"github.com/segmentio/kafka-go/protocol"
	fetchapi "github.com/segmentio/kafka-go/protocol/fetch"

	"github.com/edgemirror/edgemirror/buffer"
)

// fetchResponseSlack is how far a fetch response may exceed the request's
// MaxBytes before it is refused without reading it: a broker returns the
// first batch whole even when it is larger (KIP-74), and a batch can be as
// large as the topic's max.message.bytes.
const fetchResponseSlack = 64 << 20

// rawFetch is a Fetch request that reads its own response off the
// connection, so that the last offset of every record batch is known.
//
// kafka-go's decoder reads each batch header's last offset delta and drops
// it; records then tell only where the retained records end. On a compacted
// topic the cleaner removes the last records of a batch but keeps the
// batch's last offset, and a broker answers a fetch at any offset up to that
// last offset with the same batch: a reader that advances by record offsets
// fetches that batch again, forever. The Java consumer advances past the
// batch's last offset; so does the agent, with the offsets collected here.
//
// The response is read into memory once, scanned for batch headers, and
// then decoded by kafka-go as usual.
type rawFetch struct {
	*fetchapi.Request
	clientID      string
	correlationID int32

	version int16 // negotiated version, set by Required
	// last is the last offset of the last complete batch (record or
	// control) of each partition in the response.
	last map[buffer.PartitionKey]int64
}

var _ protocol.RawExchanger = (*rawFetch)(nil)

// Required records the negotiated Fetch version; the exchange is always raw.
func (f *rawFetch) Required(versions map[protocol.ApiKey]int16) bool {
	f.version = versions[protocol.Fetch]
	return true
}

// RawExchange writes the request, reads the whole response, collects the
// batches' last offsets and decodes the response with kafka-go.
func (f *rawFetch) RawExchange(rw io.ReadWriter) (protocol.Message, error) {
	if err := protocol.WriteRequest(rw, f.version, f.correlationID, f.clientID, f.Request); err != nil {
		return nil, fmt.Errorf("write fetch request: %w", err)
	}
	var size [4]byte
	if _, err := io.ReadFull(rw, size[:]); err != nil {
		return nil, fmt.Errorf("read fetch response size: %w", err)
	}
	n := int64(int32(binary.BigEndian.Uint32(size[:])))
	if limit := int64(f.MaxBytes) + fetchResponseSlack; n < 4 || n > limit {
		return nil, fmt.Errorf("fetch response of %d bytes is outside 4..%d", n, limit)
	}
	buf := make([]byte, 4+n)
	copy(buf, size[:])
	if _, err := io.ReadFull(rw, buf[4:]); err != nil {
		return nil, fmt.Errorf("read fetch response: %w", err)
	}
	last, err := batchLastOffsets(buf[4:], f.version)
	if err != nil {
		return nil, fmt.Errorf("scan fetch response: %w", err)
	}
	id, msg, err := protocol.ReadResponse(bufio.NewReader(bytes.NewReader(buf)), protocol.Fetch, f.version)
	if err != nil {
		return nil, fmt.Errorf("decode fetch response: %w", err)
	}
	if id != f.correlationID {
		return nil, fmt.Errorf("fetch response correlation id %d, want %d", id, f.correlationID)
	}
	f.last = last
	return msg, nil
}

// errShortResponse is returned when a fetch response ends inside a field.
var errShortResponse = errors.New("fetch response truncated")

// respReader reads big-endian fields of a fetch response.
type respReader struct {
	b   []byte
	err error
}

func (r *respReader) take(n int) []byte {
	if r.err != nil {
		return nil
	}
	if n < 0 || n > len(r.b) {
		r.err = errShortResponse
		return nil
	}
	out := r.b[:n]
	r.b = r.b[n:]
	return out
}

func (r *respReader) int16() int16 {
	if b := r.take(2); b != nil {
		return int16(binary.BigEndian.Uint16(b))
	}
	return 0
}

func (r *respReader) int32() int32 {
	if b := r.take(4); b != nil {
		return int32(binary.BigEndian.Uint32(b))
	}
	return 0
}

// batchLastOffsets scans a Fetch response body (after the size, from the
// correlation id on; versions 0 to 11, the non-flexible ones kafka-go
// speaks) and returns, per partition, the last offset of the last complete
// batch. A batch cut off at the end of the response (brokers return whole
// batches only up to the size limit) is ignored, as kafka-go ignores it.
func batchLastOffsets(body []byte, version int16) (map[buffer.PartitionKey]int64, error) {
	r := &respReader{b: body}
	r.take(4) // correlation id
	if version >= 1 {
		r.take(4) // throttle time
	}
	if version >= 7 {
		r.take(2 + 4) // error code, session id
	}
	out := make(map[buffer.PartitionKey]int64)
	topics := r.int32()
	for t := int32(0); t < topics && r.err == nil; t++ {
		name := string(r.take(int(r.int16())))
		parts := r.int32()
		for p := int32(0); p < parts && r.err == nil; p++ {
			id := r.int32()
			r.take(2 + 8) // error code, high watermark
			if version >= 4 {
				r.take(8) // last stable offset
			}
			if version >= 5 {
				r.take(8) // log start offset
			}
			if version >= 4 {
				if n := r.int32(); n > 0 {
					r.take(int(n) * 16) // aborted transactions: producer id, first offset
				}
			}
			if version >= 11 {
				r.take(4) // preferred read replica
			}
			n := r.int32()
			if n <= 0 {
				continue
			}
			if last, ok := lastCompleteBatch(r.take(int(n))); ok {
				out[buffer.PartitionKey{Topic: name, Partition: id}] = last
			}
		}
	}
	if r.err != nil {
		return nil, r.err
	}
	return out, nil
}

// lastCompleteBatch returns the last offset of the last complete batch in a
// record set. In a v2 batch it is the base offset plus the header's last
// offset delta; in a v0/v1 message set, the offset field of a message (of
// the wrapper, for a compressed one) is its last offset.
func lastCompleteBatch(set []byte) (int64, bool) {
	const (
		headerLen     = 8 + 4 // base offset, batch length
		magicAt       = 16    // from the start of the batch
		lastDeltaAt   = 23
		minV2BatchLen = 61 - headerLen
	)
	var (
		last  int64
		found bool
	)
	for len(set) >= headerLen {
		base := int64(binary.BigEndian.Uint64(set[0:8]))
		length := int64(int32(binary.BigEndian.Uint32(set[8:12])))
		if length <= 0 || headerLen+length > int64(len(set)) {
			break // cut off by the size limit
		}
		batch := set[:headerLen+length]
		set = set[headerLen+length:]
		switch {
		case len(batch) > magicAt && batch[magicAt] == 2:
			if length < minV2BatchLen {
				return last, found // malformed; kafka-go fails on it
			}
			last, found = base+int64(int32(binary.BigEndian.Uint32(batch[lastDeltaAt:lastDeltaAt+4]))), true
		default:
			last, found = base, true
		}
	}
	return last, found
}
