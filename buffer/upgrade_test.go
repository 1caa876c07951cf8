package buffer

import (
	"context"
	"encoding/json"
	"errors"
	"os"
	"path/filepath"
	"strconv"
	"testing"
	"time"

	"github.com/edgemirror/edgemirror/internal/wire"
)

// TestDrainFixtureOfEarlierRelease opens the buffer files earlier releases
// wrote (testdata/buffer-formatN.db, written by an agent with its aggregator
// unreachable; see test/packaging TestWriteBufferFixture) with this build
// and drains them: every chunk is leased once, its frame verifies and
// decodes, every record the manifest lists comes out exactly once, the next
// offsets are where the agent stopped, and after the acks the file is empty
// and stays so when reopened.
func TestDrainFixtureOfEarlierRelease(t *testing.T) {
	manifests, err := filepath.Glob(filepath.Join("testdata", "buffer-format*.json"))
	if err != nil || len(manifests) == 0 {
		t.Fatalf("no buffer fixtures in testdata (%v)", err)
	}
	dec, err := wire.NewDecoder(wire.Limits{})
	if err != nil {
		t.Fatal(err)
	}
	defer dec.Close()
	for _, manifest := range manifests {
		t.Run(filepath.Base(manifest), func(t *testing.T) {
			var f struct {
				FormatVersion       int    `json:"format_version"`
				Topic               string `json:"topic"`
				Partitions          int32  `json:"partitions"`
				RecordsPerPartition int64  `json:"records_per_partition"`
			}
			b, err := os.ReadFile(manifest)
			if err != nil {
				t.Fatal(err)
			}
			if err := json.Unmarshal(b, &f); err != nil {
				t.Fatal(err)
			}
			db, err := os.ReadFile(manifest[:len(manifest)-len(".json")] + ".db")
			if err != nil {
				t.Fatal(err)
			}
			dir := t.TempDir()
			if err := os.WriteFile(filepath.Join(dir, FileName), db, 0o600); err != nil {
				t.Fatal(err)
			}
			opts := Options{MaxBytes: 4 << 20}
			s := openTest(t, dir, opts)
			offsets, err := s.Offsets()
			if err != nil {
				t.Fatal(err)
			}
			for p := int32(0); p < f.Partitions; p++ {
				if got := offsets[PartitionKey{f.Topic, p}]; got != f.RecordsPerPartition {
					t.Errorf("next offset of %s/%d: %d, want %d", f.Topic, p, got, f.RecordsPerPartition)
				}
			}
			if losses, err := s.PendingLosses(); err != nil || len(losses) != 0 {
				t.Errorf("pending losses %v, %v; want none", losses, err)
			}
			st := s.Stats()
			floor, next := s.Floor(), s.NextSeq()

			seen := map[string]int{}
			leased := map[uint64]bool{}
			for {
				ctx, cancel := context.WithTimeout(context.Background(), 200*time.Millisecond)
				c, err := s.Lease(ctx)
				cancel()
				if errors.Is(err, context.DeadlineExceeded) {
					break // nothing left to lease
				}
				if err != nil {
					t.Fatal(err)
				}
				if leased[c.Seq] {
					t.Fatalf("chunk %d leased twice", c.Seq)
				}
				leased[c.Seq] = true
				ch, err := dec.Decode(c.Frame)
				if err != nil {
					t.Fatalf("decode chunk %d: %v", c.Seq, err)
				}
				if len(ch.Records) != c.Meta.Records {
					t.Errorf("chunk %d: %d records, metadata says %d", c.Seq, len(ch.Records), c.Meta.Records)
				}
				for _, r := range ch.Records {
					seen[r.Topic+"/"+strconv.Itoa(int(r.Partition))+"/"+strconv.FormatInt(r.Offset, 10)]++
				}
				if err := s.Ack(c.Seq); err != nil {
					t.Fatal(err)
				}
			}
			if len(leased) != st.Chunks || uint64(len(leased)) != next-floor {
				t.Errorf("leased %d chunks; the file held %d (seq %d to %d)", len(leased), st.Chunks, floor, next-1)
			}
			for p := int32(0); p < f.Partitions; p++ {
				for off := int64(0); off < f.RecordsPerPartition; off++ {
					k := f.Topic + "/" + strconv.Itoa(int(p)) + "/" + strconv.FormatInt(off, 10)
					if seen[k] != 1 {
						t.Fatalf("record %s came out %d times, want once", k, seen[k])
					}
					delete(seen, k)
				}
			}
			if len(seen) != 0 {
				t.Errorf("records the manifest does not list: %v", seen)
			}
			if err := s.Close(); err != nil {
				t.Fatal(err)
			}

			// Drained stays drained; the sequence carries on.
			s = openTest(t, dir, opts)
			if st := s.Stats(); st.Chunks != 0 || st.Records != 0 {
				t.Errorf("after draining and reopening: %d chunks, %d records", st.Chunks, st.Records)
			}
			if s.NextSeq() != next {
				t.Errorf("next seq %d after reopening, want %d", s.NextSeq(), next)
			}
		})
	}
}
