package provenance

import (
	"bytes"
	"math"
	"reflect"
	"strconv"
	"testing"

	"github.com/edgemirror/edgemirror/internal/wire"
)

// TestStamper checks a Stamper's headers byte for byte, that Parse reads
// them back, and that the values it shares between records cannot be
// changed through one record's headers.
func TestStamper(t *testing.T) {
	const edge, topic, partition = "plant-7", "sensors", int32(12)
	offsets := []int64{0, 9, 10, 123456789, math.MaxInt64}
	// Room for fewer records than it gets, so that its offset buffer grows
	// and earlier values must survive that.
	st := NewStamper(edge, topic, partition, 1)
	var got [][]wire.Header
	for _, off := range offsets {
		own := []wire.Header{{Key: "trace", Value: []byte("x")}}
		got = append(got, st.Append(own, off))
	}
	for i, off := range offsets {
		want := []wire.Header{{Key: "trace", Value: []byte("x")},
			{Key: "edgemirror-edge", Value: []byte(edge)}, {Key: "edgemirror-topic", Value: []byte(topic)},
			{Key: "edgemirror-partition", Value: []byte("12")}, {Key: "edgemirror-offset", Value: []byte(strconv.FormatInt(off, 10))}}
		if len(got[i]) != len(want) || len(want) != 1+Count {
			t.Fatalf("offset %d: %d headers, want %d (Count %d)", off, len(got[i]), len(want), Count)
		}
		for j := range want {
			if got[i][j].Key != want[j].Key || !bytes.Equal(got[i][j].Value, want[j].Value) {
				t.Fatalf("offset %d header %d: %q=%q, want %q=%q", off, j, got[i][j].Key, got[i][j].Value, want[j].Key, want[j].Value)
			}
		}
		if a := Append(nil, Origin{Edge: edge, Topic: topic, Partition: partition, Offset: off}); !reflect.DeepEqual(a, want[1:]) {
			t.Fatalf("offset %d: Append gives %q, want %q", off, a, want[1:])
		}
		o, ok := Parse(got[i])
		if !ok || o != (Origin{Edge: edge, Topic: topic, Partition: partition, Offset: off}) {
			t.Fatalf("offset %d: Parse gives %+v, %v", off, o, ok)
		}
	}
	// Appending to a shared value must not write into its neighbour's.
	for j := 1; j < len(got[0]); j++ {
		_ = append(got[0][j].Value, '!')
	}
	for i, off := range offsets {
		if o, ok := Parse(got[i]); !ok || o.Offset != off || o.Edge != edge || o.Topic != topic || o.Partition != partition {
			t.Fatalf("after appending to record 0's values, record %d parses as %+v, %v", i, o, ok)
		}
	}
}
