package buffer

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"math/rand"
	"os"
	"os/exec"
	"syscall"
	"testing"
	"time"

	bolt "go.etcd.io/bbolt"
)

// helperDirEnv names the buffer directory for TestHelperWriter when the
// test binary runs as the child process of TestCrashKill9.
const helperDirEnv = "EDGEMIRROR_BUFFER_HELPER_DIR"

func crashOptions() Options {
	return Options{MaxBytes: MinMaxBytes, Policy: PolicyDropOldest, LockTimeout: 10 * time.Second}
}

// crashFrame is the frame of chunk seq: its length and bytes derive from seq.
func crashFrame(seq uint64) []byte { return frameFor(seq, 1+int(seq*7919)%150000) }

// TestHelperWriter is the child process of TestCrashKill9: it appends
// chunks forever (chunk k advances partition ("t",0) to k*10), leases and
// acks, rejects or releases some, and prints each appended seq. It is
// skipped unless started by TestCrashKill9.
func TestHelperWriter(t *testing.T) {
	dir := os.Getenv(helperDirEnv)
	if dir == "" {
		t.Skip("child process of TestCrashKill9")
	}
	s, err := Open(dir, crashOptions())
	if err != nil {
		fmt.Println("open:", err)
		t.Fatal(err)
	}
	defer s.Close()
	ctx := context.Background()
	r := rand.New(rand.NewSource(time.Now().UnixNano()))
	stop := time.Now().Add(60 * time.Second) // never outlive a dead parent by long
	for time.Now().Before(stop) {
		seq := s.NextSeq()
		meta, next := chunkOf("t", seq)
		if err := s.Append(ctx, crashFrame(seq), meta, next); err != nil {
			t.Fatalf("append %d: %v", seq, err)
		}
		fmt.Printf("appended %d\n", seq)
		// The shipper side, in the same goroutine: ack in order while the
		// backlog is long, sometimes reject or release.
		if s.Stats().Chunks < 10 || r.Intn(2) == 0 {
			continue
		}
		lctx, cancel := context.WithTimeout(ctx, 10*time.Millisecond)
		ch, err := s.Lease(lctx)
		cancel()
		if err != nil {
			continue
		}
		switch r.Intn(20) {
		case 0:
			err = s.Reject(ch.Seq, "rejected")
		case 1:
			s.Release(ch.Seq)
		default:
			err = s.Ack(ch.Seq)
		}
		if err != nil {
			t.Fatalf("settle %d: %v", ch.Seq, err)
		}
	}
}

// TestCrashKill9 kills a writing child process with SIGKILL at random
// moments and checks after each kill that the store opens and is exactly
// consistent: every frame intact, the stored offset equal to the last
// appended chunk's, and every sequence number from Floor to NextSeq either
// stored or accounted for by a loss record.
func TestCrashKill9(t *testing.T) {
	if os.Getenv(helperDirEnv) != "" {
		t.Skip("inside the child")
	}
	dir := t.TempDir()
	rounds := 12
	if testing.Short() {
		rounds = 3
	}
	r := rand.New(rand.NewSource(time.Now().UnixNano()))
	var last uint64
	for round := 0; round < rounds; round++ {
		last = killChild(t, dir, r, 20+r.Intn(400))
		next, chunks, lost := checkCrashedStore(t, dir)
		if next < last+1 {
			t.Fatalf("round %d: child printed seq %d as appended, but NextSeq is %d: a committed chunk was lost", round, last, next)
		}
		t.Logf("round %d: killed after seq %d was reported; NextSeq %d, %d chunks stored, %d lost", round, last, next, chunks, lost)
	}
	checkFile(t, dir, MinMaxBytes)
}

// killChild starts the writer, lets it append at least n chunks, waits a
// random moment more and kills it. It returns the last seq the child
// reported as appended.
func killChild(t *testing.T, dir string, r *rand.Rand, n int) uint64 {
	t.Helper()
	cmd := exec.Command(os.Args[0], "-test.run=^TestHelperWriter$", "-test.count=1")
	cmd.Env = append(os.Environ(), helperDirEnv+"="+dir)
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	out, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	lines := make(chan uint64, 1024)
	go func() {
		defer close(lines)
		sc := bufio.NewScanner(out)
		for sc.Scan() {
			var seq uint64
			if _, err := fmt.Sscanf(sc.Text(), "appended %d", &seq); err == nil {
				lines <- seq
			}
		}
	}()
	var last uint64
	deadline := time.After(60 * time.Second)
	for seen := 0; seen < n; {
		select {
		case seq, ok := <-lines:
			if !ok {
				_ = cmd.Wait()
				t.Fatalf("child exited early: %s", stderr.String())
			}
			last = seq
			seen++
		case <-deadline:
			_ = cmd.Process.Kill()
			_ = cmd.Wait()
			t.Fatalf("child made no progress: %s", stderr.String())
		}
	}
	// Kill at a random moment: mid-append, mid-fsync, mid-lease.
	time.Sleep(time.Duration(r.Intn(20000)) * time.Microsecond)
	if err := cmd.Process.Signal(syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	for seq := range lines {
		last = seq
	}
	err = cmd.Wait()
	var ee *exec.ExitError
	if !errors.As(err, &ee) || ee.Sys().(syscall.WaitStatus).Signal() != syscall.SIGKILL {
		t.Fatalf("child did not die by SIGKILL: %v\n%s", err, stderr.String())
	}
	return last
}

// checkCrashedStore opens the store left by a killed child and checks it.
// It returns NextSeq and the numbers of stored and lost chunks.
func checkCrashedStore(t *testing.T, dir string) (next uint64, chunks, lostChunks int) {
	t.Helper()
	s, err := Open(dir, crashOptions())
	if err != nil {
		t.Fatalf("open after kill: %v", err)
	}
	defer s.Close()
	next, floor := s.NextSeq(), s.Floor()
	off, err := s.Offsets()
	if err != nil {
		t.Fatal(err)
	}
	if want := int64(next-1) * 10; off[PartitionKey{"t", 0}] != want {
		t.Fatalf("offset %d, want 10*(NextSeq-1) = %d", off[PartitionKey{"t", 0}], want)
	}
	losses, err := s.PendingLosses()
	if err != nil {
		t.Fatal(err)
	}
	lost := make(map[uint64]string)
	for _, l := range losses {
		g := l.Range
		if g.Topic != "t" || g.Partition != 0 || g.First%10 != 0 || (g.Last+1)%10 != 0 || g.Records != g.Last-g.First+1 {
			t.Fatalf("loss %+v does not cover whole chunks", l)
		}
		for seq := uint64(g.First/10) + 1; seq <= uint64(g.Last+1)/10; seq++ {
			if prev, dup := lost[seq]; dup {
				t.Fatalf("chunk %d lost twice (%s, %s)", seq, prev, l.Reason)
			}
			lost[seq] = l.Reason
		}
	}
	stored := make(map[uint64]bool)
	var payload int64
	err = s.view(func(tx *bolt.Tx) error {
		fb := tx.Bucket(bucketFrames)
		return tx.Bucket(bucketChunkMeta).ForEach(func(k, v []byte) error {
			seq, _ := keySeq(k)
			rec, err := decodeStored(seq, v)
			if err != nil {
				return err
			}
			frame, err := getFrame(fb, seq, rec.frameLen)
			if err != nil {
				return err
			}
			if !bytes.Equal(frame, crashFrame(seq)) {
				return fmt.Errorf("chunk %d: frame differs from what was appended", seq)
			}
			meta, _ := chunkOf("t", seq)
			if rec.meta.Records != meta.Records || len(rec.meta.Ranges) != 1 || rec.meta.Ranges[0] != meta.Ranges[0] {
				return fmt.Errorf("chunk %d: meta %+v", seq, rec.meta)
			}
			stored[seq] = true
			payload += int64(len(frame))
			return nil
		})
	})
	if err != nil {
		t.Fatal(err)
	}
	for seq := floor; seq < next; seq++ {
		if stored[seq] == (lost[seq] != "") {
			t.Fatalf("chunk %d in [Floor %d, NextSeq %d): stored %v, lost %q", seq, floor, next, stored[seq], lost[seq])
		}
	}
	for seq := range stored {
		if seq < floor || seq >= next {
			t.Fatalf("chunk %d stored outside [Floor %d, NextSeq %d)", seq, floor, next)
		}
	}
	if st := s.Stats(); st.Chunks != len(stored) || st.PayloadBytes != payload {
		t.Fatalf("stats %+v, scanned %d chunks %d bytes", st, len(stored), payload)
	}
	return next, len(stored), len(lost)
}
