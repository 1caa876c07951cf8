package wire

import (
	"bytes"
	"fmt"
	"math"
	"strconv"
	"strings"
	"testing"

	"go.uber.org/goleak"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

var allCodecs = []Codec{CodecNone, CodecZstd, CodecS2, CodecGzip}
var allLevels = []Level{LevelFastest, LevelDefault, LevelBetter, LevelBest}

func mustEncoder(tb testing.TB, c Codec, l Level) *Encoder {
	tb.Helper()
	e, err := NewEncoder(c, l)
	if err != nil {
		tb.Fatalf("NewEncoder(%v, %v): %v", c, l, err)
	}
	tb.Cleanup(e.Close)
	return e
}

func mustDecoder(tb testing.TB, l Limits) *Decoder {
	tb.Helper()
	d, err := NewDecoder(l)
	if err != nil {
		tb.Fatalf("NewDecoder(%+v): %v", l, err)
	}
	tb.Cleanup(d.Close)
	return d
}

// diffChunks describes the first difference between want and got, or
// returns "". Nil and empty byte slices are different; nil and empty header
// lists are the same (see the Caveats of the package documentation).
func diffChunks(want, got *Chunk) string {
	if want.Seq != got.Seq {
		return fmt.Sprintf("seq %d, want %d", got.Seq, want.Seq)
	}
	if len(want.Topics) != len(got.Topics) {
		return fmt.Sprintf("%d topics, want %d", len(got.Topics), len(want.Topics))
	}
	for i := range want.Topics {
		if want.Topics[i] != got.Topics[i] {
			return fmt.Sprintf("topic %d: %+v, want %+v", i, got.Topics[i], want.Topics[i])
		}
	}
	if len(want.Records) != len(got.Records) {
		return fmt.Sprintf("%d records, want %d", len(got.Records), len(want.Records))
	}
	for i := range want.Records {
		w, g := &want.Records[i], &got.Records[i]
		switch {
		case w.Topic != g.Topic, w.Partition != g.Partition, w.Offset != g.Offset, w.Timestamp != g.Timestamp:
			return fmt.Sprintf("record %d: %s/%d@%d ts %d, want %s/%d@%d ts %d", i,
				g.Topic, g.Partition, g.Offset, g.Timestamp, w.Topic, w.Partition, w.Offset, w.Timestamp)
		case !sameBytes(w.Key, g.Key):
			return fmt.Sprintf("record %d: key %s, want %s", i, showBytes(g.Key), showBytes(w.Key))
		case !sameBytes(w.Value, g.Value):
			return fmt.Sprintf("record %d: value %s, want %s", i, showBytes(g.Value), showBytes(w.Value))
		case len(w.Headers) != len(g.Headers):
			return fmt.Sprintf("record %d: %d headers, want %d", i, len(g.Headers), len(w.Headers))
		}
		for j := range w.Headers {
			wh, gh := w.Headers[j], g.Headers[j]
			if wh.Key != gh.Key || !sameBytes(wh.Value, gh.Value) {
				return fmt.Sprintf("record %d header %d: %q=%s, want %q=%s", i, j, gh.Key, showBytes(gh.Value), wh.Key, showBytes(wh.Value))
			}
		}
	}
	return ""
}

func sameBytes(a, b []byte) bool { return (a == nil) == (b == nil) && bytes.Equal(a, b) }

func showBytes(b []byte) string {
	if b == nil {
		return "null"
	}
	if len(b) > 40 {
		return fmt.Sprintf("%q...(%d bytes)", b[:40], len(b))
	}
	return fmt.Sprintf("%q", b)
}

// roundTripChunks are the chunks every codec and level must carry unchanged.
func roundTripChunks() map[string]*Chunk {
	many := &Chunk{Seq: 7}
	for i := range 300 { // topic indexes above 127 take two bytes
		name := "t." + strconv.Itoa(i)
		many.Topics = append(many.Topics, Topic{Name: name, Partitions: int32(i%5 + 1)})
		many.Records = append(many.Records, Record{Topic: name, Partition: int32(i % (i%5 + 1)), Offset: int64(i) << 20, Value: []byte(name)})
	}
	big := &Chunk{Seq: math.MaxUint64, Topics: []Topic{{Name: "big", Partitions: math.MaxInt32}}}
	for i := range 50 {
		big.Records = append(big.Records, Record{
			Topic: "big", Partition: math.MaxInt32 - 1, Offset: math.MaxInt64 - int64(i),
			Timestamp: math.MaxInt64, Value: bytes.Repeat([]byte{byte(i)}, 20000+i),
		})
	}
	return map[string]*Chunk{
		"empty":      {Seq: 0},
		"no records": {Seq: 1, Topics: []Topic{{Name: "a", Partitions: 1}}},
		"nulls and empties": {Seq: 2, Topics: []Topic{{Name: "a", Partitions: 3}}, Records: []Record{
			{Topic: "a", Partition: 0, Offset: 0},
			{Topic: "a", Partition: 1, Offset: 1, Key: []byte{}, Value: []byte{}},
			{Topic: "a", Partition: 2, Offset: 2, Key: []byte("k"), Value: nil},
			{Topic: "a", Partition: 2, Offset: 3, Key: nil, Value: []byte("v")},
			{Topic: "a", Partition: 0, Offset: 4, Headers: []Header{{Key: "n", Value: nil}, {Key: "e", Value: []byte{}}, {Key: "", Value: []byte("empty key")}}},
		}},
		"repeated headers": {Seq: 3, Topics: []Topic{{Name: "h", Partitions: 1}}, Records: []Record{
			{Topic: "h", Offset: 10, Headers: []Header{{"x", []byte("1")}, {"y", []byte("2")}, {"x", []byte("3")}, {"x", nil}}},
			{Topic: "h", Offset: 11, Headers: []Header{{"x", []byte("4")}}},
		}},
		"timestamps": {Seq: 4, Topics: []Topic{{Name: "ts", Partitions: 1}}, Records: []Record{
			{Topic: "ts", Offset: 0, Timestamp: -1},
			{Topic: "ts", Offset: 1, Timestamp: -1732540000123},
			{Topic: "ts", Offset: 2, Timestamp: math.MinInt64},
			{Topic: "ts", Offset: 3, Timestamp: 1732540000123},
		}},
		"interleaved topics": {Seq: 5, Topics: []Topic{{Name: "a", Partitions: 2}, {Name: "b_B-9.x", Partitions: 1}}, Records: []Record{
			{Topic: "a", Partition: 1, Offset: 5, Value: []byte("a1")},
			{Topic: "b_B-9.x", Offset: 9, Value: []byte("b")},
			{Topic: "a", Partition: 0, Offset: 6, Value: []byte("a0")},
			{Topic: "b_B-9.x", Offset: 10, Value: []byte("b")},
		}},
		"many topics": many,
		"big":         big,
		"sensors":     sensorChunk(1 << 16),
	}
}

func TestRoundTrip(t *testing.T) {
	d := mustDecoder(t, Limits{})
	for name, c := range roundTripChunks() {
		for _, codec := range allCodecs {
			for _, level := range allLevels {
				if codec == CodecNone && level != LevelDefault {
					continue
				}
				t.Run(fmt.Sprintf("%s/%v/%v", name, codec, level), func(t *testing.T) {
					e := mustEncoder(t, codec, level)
					prefix := []byte("prefix")
					frame, err := e.Encode(prefix, c)
					if err != nil {
						t.Fatalf("Encode: %v", err)
					}
					if !bytes.Equal(frame[:len(prefix)], []byte("prefix")) {
						t.Fatalf("Encode overwrote dst")
					}
					frame = frame[len(prefix):]
					h, err := ReadHeader(frame)
					if err != nil {
						t.Fatalf("ReadHeader: %v", err)
					}
					if h.Codec != codec || h.Seq != c.Seq || int(h.Records) != len(c.Records) || h.FrameLen() != int64(len(frame)) {
						t.Fatalf("header %+v does not describe the chunk", h)
					}
					if rs := RawSize(c); int(h.RawLen) > rs || int(h.RawLen) < rs-2*len(c.Records) {
						t.Errorf("RawLen %d, RawSize %d: not a tight upper bound", h.RawLen, rs)
					}
					got, err := d.Decode(frame)
					if err != nil {
						t.Fatalf("Decode: %v", err)
					}
					if diff := diffChunks(c, got); diff != "" {
						t.Fatal(diff)
					}
					// The encoder is reusable and deterministic.
					again, err := e.Encode(nil, c)
					if err != nil || !bytes.Equal(again, frame) {
						t.Fatalf("second Encode differs (err %v)", err)
					}
				})
			}
		}
	}
}

// TestRecordSizeExact checks RecordSize against the bytes a record really
// adds when its topic index fits one byte.
func TestRecordSizeExact(t *testing.T) {
	e := mustEncoder(t, CodecNone, LevelDefault)
	for name, c := range roundTripChunks() {
		if len(c.Topics) > 127 {
			continue
		}
		base := &Chunk{Topics: c.Topics}
		frame, err := e.Encode(nil, base)
		if err != nil {
			t.Fatal(err)
		}
		h0, _ := ReadHeader(frame)
		for i := range c.Records {
			one := &Chunk{Topics: c.Topics, Records: c.Records[i : i+1]}
			frame, err := e.Encode(nil, one)
			if err != nil {
				t.Fatal(err)
			}
			h, _ := ReadHeader(frame)
			added := int(h.RawLen - h0.RawLen)
			if got := RecordSize(&c.Records[i]); got != added+topicIndexSizeBound-1 {
				t.Errorf("%s record %d: RecordSize %d, record adds %d (+%d for the index bound)", name, i, got, added, topicIndexSizeBound-1)
			}
		}
	}
}

func TestDecodedSlicesAreCappedAndOwned(t *testing.T) {
	c := &Chunk{Topics: []Topic{{Name: "a", Partitions: 1}}, Records: []Record{
		{Topic: "a", Key: []byte("k1"), Value: []byte("v1"), Headers: []Header{{"h", []byte("x")}}},
		{Topic: "a", Offset: 1, Key: []byte("k2"), Value: []byte("v2"), Headers: []Header{{"h", []byte("y")}}},
	}}
	frame, err := mustEncoder(t, CodecNone, 0).Encode(nil, c)
	if err != nil {
		t.Fatal(err)
	}
	got, err := mustDecoder(t, Limits{}).Decode(frame)
	if err != nil {
		t.Fatal(err)
	}
	for i := range frame { // the chunk must not alias the frame
		frame[i] = 0xff
	}
	_ = append(got.Records[0].Key, "XXXXXXXXXX"...)
	_ = append(got.Records[0].Value, "XXXXXXXXXX"...)
	_ = append(got.Records[0].Headers, Header{Key: "z"})
	_ = append(got.Records[0].Headers[0].Value, "XXXXXXXXXX"...)
	if diff := diffChunks(c, got); diff != "" {
		t.Fatal(diff)
	}
}

func TestParseCodecAndLevel(t *testing.T) {
	for _, c := range allCodecs {
		got, err := ParseCodec(strings.ToUpper(c.String()))
		if err != nil || got != c {
			t.Errorf("ParseCodec(%q) = %v, %v", c.String(), got, err)
		}
		var u Codec
		b, _ := c.MarshalText()
		if err := u.UnmarshalText(b); err != nil || u != c {
			t.Errorf("text round trip of %v: %v, %v", c, u, err)
		}
	}
	for _, l := range allLevels {
		got, err := ParseLevel(" " + l.String())
		if err != nil || got != l {
			t.Errorf("ParseLevel(%q) = %v, %v", l.String(), got, err)
		}
	}
	if _, err := ParseCodec("lz4"); !errorsIs(err, ErrUnsupportedCodec) || !strings.Contains(err.Error(), "none, zstd, s2, gzip") {
		t.Errorf("ParseCodec(lz4) = %v", err)
	}
	if _, err := ParseLevel("max"); !errorsIs(err, ErrInvalidLevel) || !strings.Contains(err.Error(), "fastest, default, better, best") {
		t.Errorf("ParseLevel(max) = %v", err)
	}
	if s := Codec(9).String(); s != "Codec(9)" {
		t.Errorf("Codec(9).String() = %q", s)
	}
	if s := Level(0).String(); s != "Level(0)" {
		t.Errorf("Level(0).String() = %q", s)
	}
}

func TestValidEdgeID(t *testing.T) {
	good := []string{"a", "edge-01", "ship_7.deck", strings.Repeat("x", 64), "...", ".a"}
	bad := []string{"", ".", "..", strings.Repeat("x", 65), "a/b", "a b", "é", "a\x00", "../etc", "a:b"}
	for _, s := range good {
		if err := ValidEdgeID(s); err != nil {
			t.Errorf("ValidEdgeID(%q) = %v", s, err)
		}
	}
	for _, s := range bad {
		if err := ValidEdgeID(s); !errorsIs(err, ErrInvalidEdgeID) {
			t.Errorf("ValidEdgeID(%q) = %v, want ErrInvalidEdgeID", s, err)
		}
	}
}

func TestValidTopicName(t *testing.T) {
	for _, s := range []string{"a", "orders.v1", strings.Repeat("t", 249)} {
		if err := ValidTopicName(s); err != nil || !validNameBytes([]byte(s)) {
			t.Errorf("ValidTopicName(%q) = %v", s, err)
		}
	}
	for _, s := range []string{"", ".", "..", strings.Repeat("t", 250), "a b", "a/b", "a\n"} {
		if err := ValidTopicName(s); !errorsIs(err, ErrInvalidTopic) || validNameBytes([]byte(s)) {
			t.Errorf("ValidTopicName(%q) = %v, want ErrInvalidTopic", s, err)
		}
	}
}

// TestDecodeConcurrent decodes frames of every codec from many goroutines
// with one Decoder (run with -race).
func TestDecodeConcurrent(t *testing.T) {
	d := mustDecoder(t, Limits{})
	c := sensorChunk(32 << 10)
	var frames [][]byte
	for _, codec := range allCodecs {
		f, err := mustEncoder(t, codec, 0).Encode(nil, c)
		if err != nil {
			t.Fatal(err)
		}
		frames = append(frames, f)
	}
	errs := make(chan error, 8)
	for g := range 8 {
		go func() {
			for i := range 20 {
				got, err := d.Decode(frames[(g+i)%len(frames)])
				if err == nil {
					if diff := diffChunks(c, got); diff != "" {
						err = fmt.Errorf("%s", diff)
					}
				}
				if err != nil {
					errs <- err
					return
				}
			}
			errs <- nil
		}()
	}
	for range 8 {
		if err := <-errs; err != nil {
			t.Error(err)
		}
	}
}
