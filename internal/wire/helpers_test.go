package wire

import (
	"encoding/binary"
	"errors"
	"fmt"
	"testing"
)

func errorsIs(err, target error) bool { return errors.Is(err, target) }

// sensorChunk returns a chunk of realistic JSON sensor readings whose raw
// payload is about size bytes: small keys, 100-200 byte values, a header
// per record, three topics.
func sensorChunk(size int) *Chunk {
	c := &Chunk{Seq: 42, Topics: []Topic{
		{Name: "sensors.temperature", Partitions: 6},
		{Name: "sensors.vibration", Partitions: 12},
		{Name: "plc.events", Partitions: 3},
	}}
	statuses := []string{"ok", "ok", "ok", "warn", "ok", "ok", "degraded", "ok"}
	units := []string{"C", "mm/s", "bar"}
	ts := int64(1732540000000)
	contentType := []byte("application/json")
	raw := 0
	for i := 0; raw < size; i++ {
		t := c.Topics[i%len(c.Topics)]
		sensor := i * 7919 % 97
		ts += int64(i%13) * 7
		v := fmt.Sprintf(`{"site":"plant-07","line":%d,"sensor":"%s-%04d","ts":%d,"value":%d.%02d,"unit":"%s","status":"%s","fw":"3.2.1","seq":%d}`,
			sensor%4, t.Name[:3], sensor, ts, 20+sensor%15, (i*37)%100, units[i%len(units)], statuses[i%len(statuses)], i)
		r := Record{
			Topic:     t.Name,
			Partition: int32(sensor) % t.Partitions,
			Offset:    1_000_000 + int64(i),
			Timestamp: ts,
			Key:       fmt.Appendf(nil, "%s-%04d", t.Name[:3], sensor),
			Value:     []byte(v),
			Headers:   []Header{{Key: "content-type", Value: contentType}},
		}
		c.Records = append(c.Records, r)
		raw += RecordSize(&r)
	}
	return c
}

// buildFrame assembles a frame around payload with a correct checksum and
// the given header fields; it does not check that they agree.
func buildFrame(codec Codec, seq uint64, records, rawLen uint32, payload []byte) []byte {
	f := make([]byte, HeaderSize+len(payload))
	putHeader(f, FrameHeader{Version: Version, Codec: codec, Seq: seq, Records: records, RawLen: rawLen, PayloadLen: uint32(len(payload))})
	copy(f[HeaderSize:], payload)
	reseal(f)
	return f
}

// reseal recomputes the checksum of f.
func reseal(f []byte) {
	binary.BigEndian.PutUint32(f[checksumOffset:HeaderSize], frameChecksum(f))
}

// rawOf returns the raw payload of an uncompressed frame of c.
func rawOf(tb testing.TB, c *Chunk) []byte {
	tb.Helper()
	e, err := NewEncoder(CodecNone, 0)
	if err != nil {
		tb.Fatal(err)
	}
	defer e.Close()
	f, err := e.Encode(nil, c)
	if err != nil {
		tb.Fatal(err)
	}
	return f[HeaderSize:]
}
