package packaging

import (
	"bytes"
	"encoding/json"
	"flag"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	bolt "go.etcd.io/bbolt"

	"github.com/edgemirror/edgemirror/buffer"
	"github.com/edgemirror/edgemirror/internal/testkit"
	"github.com/edgemirror/edgemirror/test/internal/harness"
)

var writeFixture = flag.Bool("write-buffer-fixture", false,
	"write the buffer fixture of the current format version (buffer/testdata) with the release's agent, then check it")

// fixture describes a buffer file an agent release wrote and that later
// releases must drain: what was read into it, from where.
type fixture struct {
	FormatVersion       int       `json:"format_version"`
	WrittenBy           string    `json:"written_by"` // the source the writing agent was built from
	EdgeID              string    `json:"edge_id"`
	Topic               string    `json:"topic"`
	Partitions          int32     `json:"partitions"`
	RecordsPerPartition int       `json:"records_per_partition"`
	Base                time.Time `json:"base"` // harness.MakeRecord's base time of the records
}

func fixturePaths(version int) (db, manifest string) {
	base := filepath.Join(harness.RepoRoot(), "buffer", "testdata", "buffer-format"+strconv.Itoa(version))
	return base + ".db", base + ".json"
}

func readFixture(t *testing.T, version int) (fixture, string) {
	t.Helper()
	db, manifest := fixturePaths(version)
	b, err := os.ReadFile(manifest)
	if err != nil {
		t.Fatalf("read fixture manifest: %v (write it with -write-buffer-fixture)", err)
	}
	var f fixture
	if err := json.Unmarshal(b, &f); err != nil {
		t.Fatalf("parse %s: %v", manifest, err)
	}
	return f, db
}

// TestWriteBufferFixture writes buffer/testdata/buffer-formatN.{db,json}
// for the current buffer.FormatVersion when run with -write-buffer-fixture:
// the release's agent reads records from an edge cluster while its
// aggregator is unreachable, so they stay in the buffer, and stops on
// SIGTERM. Committed once per format version, the files let every later
// release prove that it drains what this one left behind.
func TestWriteBufferFixture(t *testing.T) {
	if !*writeFixture {
		t.Skip("writes the fixture only with -write-buffer-fixture")
	}
	f := fixture{FormatVersion: buffer.FormatVersion, EdgeID: "gw-fixture", Topic: "sensors", Partitions: 3,
		RecordsPerPartition: 100, Base: time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)}
	bin := dist(t, "edgemirror-linux-amd64")
	f.WrittenBy = "edgemirror agent built from commit " + strings.TrimSpace(run(t, "git", "-C", harness.RepoRoot(), "rev-parse", "--short=12", "HEAD"))

	edge := testkit.Cluster(t).ListenAddrs()
	prod, err := harness.NewProducer(edge)
	if err != nil {
		t.Fatal(err)
	}
	defer prod.Close()
	prod.Base = f.Base
	ctx := t.Context()
	if err := prod.CreateTopic(ctx, f.Topic, f.Partitions, nil); err != nil {
		t.Fatal(err)
	}
	if err := prod.Produce(ctx, f.Topic, f.Partitions, f.RecordsPerPartition); err != nil {
		t.Fatal(err)
	}
	dir := filepath.Join(t.TempDir(), "buffer")
	metrics := "127.0.0.1:" + strconv.Itoa(harness.FreePort(t))
	agent := harness.StartProc(t, "agent-fixture", bin, "agent",
		"--edge-id", f.EdgeID, "--brokers", strings.Join(edge, ","),
		"--aggregator", "http://127.0.0.1:"+strconv.Itoa(harness.FreePort(t)), // nothing listens: the link is down
		"--buffer-dir", dir, "--buffer-max-bytes", "4MiB", "--batch-bytes", "8KiB", "--linger", "200ms",
		"--metrics-addr", metrics)
	want := float64(int(f.Partitions) * f.RecordsPerPartition)
	testkit.Eventually(t, time.Minute, "records read into the buffer", func() error {
		m, err := harness.Scrape(ctx, metrics)
		if err != nil {
			return err
		}
		if got := m["edgemirror_agent_records_read_total"]; got < want {
			return fmt.Errorf("%v read", got)
		}
		return nil
	})
	if err := agent.Stop(30 * time.Second); err != nil {
		t.Fatal(err)
	}
	s, err := buffer.Open(dir, buffer.Options{MaxBytes: 4 << 20})
	if err != nil {
		t.Fatal(err)
	}
	st := s.Stats()
	s.Close()
	if st.Records != int64(want) || st.Chunks < 2 {
		t.Fatalf("buffer holds %d records in %d chunks, want %v in several", st.Records, st.Chunks, want)
	}
	db, manifest := fixturePaths(f.FormatVersion)
	b, err := os.ReadFile(filepath.Join(dir, buffer.FileName))
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(db, b, 0o644); err != nil {
		t.Fatal(err)
	}
	mb, _ := json.MarshalIndent(f, "", "  ")
	if err := os.WriteFile(manifest, append(mb, '\n'), 0o644); err != nil {
		t.Fatal(err)
	}
	t.Logf("wrote %s (%d bytes, %d chunks) and %s", db, len(b), st.Chunks, manifest)
}

// TestAgentDrainsBufferOfEarlierRelease: the agent of this release starts on
// the buffer file an earlier release wrote (the committed fixture of format
// version 1) and ships what it holds to the hub exactly once, without
// reading those records from the edge again, then carries on with new
// records.
func TestAgentDrainsBufferOfEarlierRelease(t *testing.T) {
	f, fixtureDB := readFixture(t, 1)
	dir := filepath.Join(t.TempDir(), "buffer")
	if err := os.MkdirAll(dir, 0o700); err != nil {
		t.Fatal(err)
	}
	b, err := os.ReadFile(fixtureDB)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, buffer.FileName), b, 0o600); err != nil {
		t.Fatal(err)
	}

	// The edge cluster as it was: the same records at the same offsets.
	edge := testkit.Cluster(t).ListenAddrs()
	hub := testkit.Cluster(t).ListenAddrs()
	prod, err := harness.NewProducer(edge)
	if err != nil {
		t.Fatal(err)
	}
	defer prod.Close()
	prod.Base = f.Base
	ctx := t.Context()
	if err := prod.CreateTopic(ctx, f.Topic, f.Partitions, nil); err != nil {
		t.Fatal(err)
	}
	if err := prod.Produce(ctx, f.Topic, f.Partitions, f.RecordsPerPartition); err != nil {
		t.Fatal(err)
	}
	agg := harness.StartAggregator(t, hub, "")
	metrics := "127.0.0.1:" + strconv.Itoa(harness.FreePort(t))
	agent := harness.StartProc(t, "agent", dist(t, "edgemirror-linux-amd64"), "agent",
		"--edge-id", f.EdgeID, "--brokers", strings.Join(edge, ","), "--aggregator", "http://"+agg.Addr,
		"--buffer-dir", dir, "--buffer-max-bytes", "4MiB", "--batch-bytes", "8KiB", "--linger", "200ms",
		"--metrics-addr", metrics, "--metadata-interval", "1s")
	if err := prod.Produce(ctx, f.Topic, f.Partitions, 20); err != nil {
		t.Fatal(err)
	}
	old := float64(int(f.Partitions) * f.RecordsPerPartition)
	fresh := float64(int(f.Partitions) * 20)
	var m map[string]float64
	testkit.Eventually(t, time.Minute, "buffered and new records acknowledged", func() error {
		if !agent.Running() {
			return fmt.Errorf("agent exited:\n%s", agent.Tail(20))
		}
		if m, err = harness.Scrape(ctx, metrics); err != nil {
			return err
		}
		if got := m["edgemirror_agent_records_acked_total"]; got < old+fresh {
			return fmt.Errorf("%v acknowledged", got)
		}
		return nil
	})
	if err := harness.Check(ctx, hub, f.EdgeID, prod.Out, nil, func(t string) string { return f.EdgeID + "." + t }); err != nil {
		t.Fatal(err)
	}
	if got := m["edgemirror_agent_records_read_total"]; got != fresh {
		t.Errorf("agent read %v records from the edge, want only the %v new ones (the rest came from the buffer)", got, fresh)
	}
	if err := agent.Stop(30 * time.Second); err != nil {
		t.Fatal(err)
	}
}

// TestAgentRefusesNewerBuffer: a buffer file of a format version this
// release does not know (written by a newer one, then downgraded) stops the
// agent with an error that says so, and the file is left exactly as it was.
func TestAgentRefusesNewerBuffer(t *testing.T) {
	_, fixtureDB := readFixture(t, 1)
	dir := filepath.Join(t.TempDir(), "buffer")
	if err := os.MkdirAll(dir, 0o700); err != nil {
		t.Fatal(err)
	}
	path := filepath.Join(dir, buffer.FileName)
	b, err := os.ReadFile(fixtureDB)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(path, b, 0o600); err != nil {
		t.Fatal(err)
	}
	// What a future release would write: the same file, a higher version.
	db, err := bolt.Open(path, 0o600, &bolt.Options{NoFreelistSync: true, Timeout: 5 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	newer := buffer.FormatVersion + 1
	err = db.Update(func(tx *bolt.Tx) error {
		return tx.Bucket([]byte("state")).Put([]byte("format"), []byte{0, 0, 0, 0, 0, 0, 0, byte(newer)})
	})
	if cerr := db.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		t.Fatal(err)
	}
	before, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}

	out, err := runErr(dist(t, "edgemirror-linux-amd64"), "agent", "--edge-id", "gw-fixture",
		"--brokers", "127.0.0.1:"+strconv.Itoa(harness.FreePort(t)),
		"--aggregator", "http://127.0.0.1:"+strconv.Itoa(harness.FreePort(t)),
		"--buffer-dir", dir, "--buffer-max-bytes", "4MiB", "--metrics-addr", "")
	if err == nil {
		t.Fatalf("agent started on a buffer of format version %d:\n%s", newer, out)
	}
	for _, want := range []string{"format version " + strconv.Itoa(newer), "newer edgemirror", "supports version " + strconv.Itoa(buffer.FormatVersion), path} {
		if !strings.Contains(out, want) {
			t.Errorf("agent's error lacks %q:\n%s", want, out)
		}
	}
	after, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(before, after) {
		t.Error("the agent modified the buffer file it refused")
	}
}
