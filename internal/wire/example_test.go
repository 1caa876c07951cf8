package wire

import (
	"encoding/hex"
	"flag"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

var update = flag.Bool("update", false, "rewrite testdata/example_frame.txt")

// exampleChunk is the chunk shown byte by byte in docs/protocol.md.
func exampleChunk() *Chunk {
	return &Chunk{
		Seq:    1,
		Topics: []Topic{{Name: "sensors", Partitions: 3}},
		Records: []Record{
			{Topic: "sensors", Partition: 0, Offset: 41, Timestamp: 1700000000000,
				Key: []byte("t1"), Value: []byte(`{"c":21.5}`), Headers: []Header{{Key: "unit", Value: []byte("C")}}},
			{Topic: "sensors", Partition: 2, Offset: 7, Timestamp: -1,
				Key: nil, Value: []byte{}, Headers: []Header{{Key: "trace", Value: nil}}},
		},
	}
}

// TestExampleFrame pins the exact bytes of a version 1 frame and checks
// that docs/protocol.md shows the same dump. Run with -update after a
// deliberate format change (which also needs a new Version).
func TestExampleFrame(t *testing.T) {
	frame, err := mustEncoder(t, CodecNone, 0).Encode(nil, exampleChunk())
	if err != nil {
		t.Fatal(err)
	}
	dump := hex.Dump(frame)
	golden := filepath.Join("testdata", "example_frame.txt")
	if *update {
		if err := os.WriteFile(golden, []byte(dump), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	want, err := os.ReadFile(golden)
	if err != nil {
		t.Fatal(err)
	}
	if dump != string(want) {
		t.Fatalf("example frame changed:\n%s\nwant:\n%s", dump, want)
	}
	doc, err := os.ReadFile(filepath.Join("..", "..", "docs", "protocol.md"))
	if err != nil {
		t.Fatalf("read protocol doc: %v", err)
	}
	if !strings.Contains(string(doc), dump) {
		t.Errorf("docs/protocol.md does not contain the example frame dump of %s", golden)
	}
	got, err := mustDecoder(t, Limits{}).Decode(frame)
	if err != nil {
		t.Fatal(err)
	}
	if diff := diffChunks(exampleChunk(), got); diff != "" {
		t.Fatal(diff)
	}
}
