package buffer

import (
	"context"
	"encoding/binary"
	"errors"
	"math/rand"
	"os"
	"path/filepath"
	"testing"
	"time"

	"go.uber.org/goleak"

	bolt "go.etcd.io/bbolt"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// openTest opens a store in dir and, at cleanup, closes it (if the test did
// not), checks that the file is a consistent bbolt file and that it never
// grew past MaxBytes.
func openTest(t testing.TB, dir string, opts Options) *Store {
	t.Helper()
	if opts.MaxBytes == 0 {
		opts.MaxBytes = 4 << 20
	}
	s, err := Open(dir, opts)
	if err != nil {
		t.Fatalf("Open: %v", err)
	}
	t.Cleanup(func() {
		if err := s.Close(); err != nil {
			t.Errorf("Close: %v", err)
		}
		checkFile(t, dir, opts.MaxBytes)
	})
	return s
}

// checkFile runs bbolt's consistency check on a closed buffer file.
func checkFile(t testing.TB, dir string, maxBytes int64) {
	t.Helper()
	path := filepath.Join(dir, FileName)
	fi, err := os.Stat(path)
	if err != nil {
		t.Errorf("stat buffer file: %v", err)
		return
	}
	if fi.Size() > maxBytes {
		t.Errorf("buffer file is %d bytes, more than MaxBytes %d", fi.Size(), maxBytes)
	}
	db, err := bolt.Open(path, 0o600, &bolt.Options{ReadOnly: true, Timeout: 5 * time.Second})
	if err != nil {
		t.Errorf("open buffer file for check: %v", err)
		return
	}
	defer db.Close()
	err = db.View(func(tx *bolt.Tx) error {
		for err := range tx.Check() {
			t.Errorf("bbolt check: %v", err)
		}
		return nil
	})
	if err != nil {
		t.Errorf("check: %v", err)
	}
}

// frameFor returns deterministic frame bytes for seq.
func frameFor(seq uint64, n int) []byte {
	b := make([]byte, n)
	r := rand.New(rand.NewSource(int64(seq)))
	r.Read(b)
	if n >= 8 {
		binary.BigEndian.PutUint64(b, seq)
	}
	return b
}

// chunkOf builds chunk seq of a simple stream: ten records of partition
// (topic, 0) per chunk, offsets (seq-1)*10 .. seq*10-1.
func chunkOf(topic string, seq uint64) (ChunkMeta, map[PartitionKey]int64) {
	first := int64(seq-1) * 10
	meta := ChunkMeta{Seq: seq, Records: 10, RawBytes: 1000, Ranges: []Range{
		{Topic: topic, Partition: 0, First: first, Last: first + 9, Records: 10},
	}}
	return meta, map[PartitionKey]int64{{Topic: topic, Partition: 0}: first + 10}
}

// appendN appends n chunks of frameLen bytes with chunkOf metadata.
func appendN(t testing.TB, s *Store, n, frameLen int) {
	t.Helper()
	for i := 0; i < n; i++ {
		seq := s.NextSeq()
		meta, next := chunkOf("t", seq)
		if err := s.Append(context.Background(), frameFor(seq, frameLen), meta, next); err != nil {
			t.Fatalf("Append %d: %v", seq, err)
		}
	}
}

// fits reports whether an Append of this chunk would be admitted now
// without dropping anything.
func fits(s *Store, frameLen int, meta ChunkMeta) bool {
	enc := encodeStored(stored{meta: meta, frameLen: frameLen})
	st := s.Stats()
	return st.UsedBytes+s.lay.chunkCost(frameLen, len(enc)) <= st.BudgetBytes
}

// fillUntilFull appends chunks until the next one would not fit.
func fillUntilFull(t testing.TB, s *Store, frameLen int) {
	t.Helper()
	for {
		meta, _ := chunkOf("t", s.NextSeq())
		if !fits(s, frameLen, meta) {
			return
		}
		appendN(t, s, 1, frameLen)
	}
}

// appendAsync runs Append in a goroutine and returns its result channel.
func appendAsync(ctx context.Context, s *Store, seq uint64, frameLen int) <-chan error {
	done := make(chan error, 1)
	go func() {
		meta, next := chunkOf("t", seq)
		done <- s.Append(ctx, frameFor(seq, frameLen), meta, next)
	}()
	return done
}

func recvErr(t testing.TB, ch <-chan error, d time.Duration) error {
	t.Helper()
	select {
	case err := <-ch:
		return err
	case <-time.After(d):
		t.Fatalf("no result within %v", d)
		return errors.New("unreachable")
	}
}
