package agent

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httputil"
	"net/url"
	"os"
	"path/filepath"
	"sort"
	"sync/atomic"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kfake"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/edgemirror/edgemirror/aggregator"
	"github.com/edgemirror/edgemirror/buffer"
	"github.com/edgemirror/edgemirror/internal/provenance"
	"github.com/edgemirror/edgemirror/internal/testkit"
	"github.com/edgemirror/edgemirror/internal/wire"
)

// aggregatorWithHub runs the real aggregator writing to hub and returns its
// base URL.
func aggregatorWithHub(t *testing.T, hub *kfake.Cluster, stateDir string) string {
	t.Helper()
	cfg := aggregator.DefaultConfig()
	cfg.Listen = "127.0.0.1:0"
	cfg.Brokers = hub.ListenAddrs()
	cfg.StateDir = stateDir
	a, err := aggregator.New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- a.Run(ctx) }()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("aggregator Run: %v", err)
		}
	})
	select {
	case <-a.Ready():
	case err := <-done:
		t.Fatalf("aggregator stopped: %v", err)
	}
	return "http://" + a.Addr().String()
}

// slowFront is a proxy in front of the aggregator that, while hold is set,
// holds every chunk with an even seq for a while: the link delivers the
// agent's concurrent uploads out of order, as a congested or lossy link
// does.
type slowFront struct {
	hold atomic.Bool
	srv  *http.Server
	url  string
}

func newSlowFront(t *testing.T, target string) *slowFront {
	t.Helper()
	u, err := url.Parse(target)
	if err != nil {
		t.Fatal(err)
	}
	f := &slowFront{}
	rp := httputil.NewSingleHostReverseProxy(u)
	rp.Transport = &http.Transport{}
	f.srv = &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == wire.PathChunks && f.hold.Load() {
			body, err := io.ReadAll(r.Body)
			if err != nil {
				http.Error(w, err.Error(), http.StatusBadGateway)
				return
			}
			if h, err := wire.ReadHeader(body); err == nil && h.Seq%2 == 0 {
				select {
				case <-time.After(300 * time.Millisecond): // the held chunk's delay on the link
				case <-r.Context().Done():
					return
				}
			}
			r.Body = io.NopCloser(bytes.NewReader(body))
		}
		rp.ServeHTTP(w, r)
	})}
	var p http.Protocols
	p.SetHTTP1(true)
	p.SetUnencryptedHTTP2(true)
	f.srv.Protocols = &p
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	go func() { _ = f.srv.Serve(ln) }()
	t.Cleanup(func() { _ = f.srv.Close() })
	f.url = "http://" + ln.Addr().String()
	return f
}

// hubSourceOffsets reads the committed hub topic from the start and
// returns the source offsets of its records, per source partition, in hub
// order.
func hubSourceOffsets(t *testing.T, hub *kfake.Cluster, topic string) map[int32][]int64 {
	t.Helper()
	cl, err := kgo.NewClient(kgo.SeedBrokers(hub.ListenAddrs()...), kgo.ConsumeTopics(topic),
		kgo.ConsumeResetOffset(kgo.NewOffset().AtStart()), kgo.FetchIsolationLevel(kgo.ReadCommitted()))
	if err != nil {
		t.Fatal(err)
	}
	defer cl.Close()
	out := make(map[int32][]int64)
	deadline := time.Now().Add(10 * time.Second)
	// Done after two empty polls once records came, or ten before (a
	// slow first fetch under -race must not look like an empty hub).
	read := 0
	for quiet := 0; (quiet < 2 || read == 0 && quiet < 10) && time.Now().Before(deadline); {
		ctx, cancel := context.WithTimeout(context.Background(), 300*time.Millisecond)
		fs := cl.PollFetches(ctx)
		cancel()
		n := 0
		fs.EachRecord(func(r *kgo.Record) {
			hs := make([]wire.Header, len(r.Headers))
			for i, h := range r.Headers {
				hs[i] = wire.Header{Key: h.Key, Value: h.Value}
			}
			o, ok := provenance.Parse(hs)
			if !ok {
				t.Errorf("hub record at %d has no provenance", r.Offset)
				return
			}
			out[o.Partition] = append(out[o.Partition], o.Offset)
			n++
		})
		read += n
		if n == 0 {
			quiet++
		} else {
			quiet = 0
		}
	}
	return out
}

// exactlyOnce checks that offsets are 0..n-1, each once, in order.
func exactlyOnce(offsets []int64, n int) error {
	var missing, extra []int64
	seen := make(map[int64]int)
	for i, o := range offsets {
		seen[o]++
		if i > 0 && o <= offsets[i-1] {
			return fmt.Errorf("offset %d after %d: not in source order", o, offsets[i-1])
		}
	}
	for o := int64(0); o < int64(n); o++ {
		if seen[o] == 0 {
			missing = append(missing, o)
		}
	}
	for o, c := range seen {
		if o >= int64(n) || c > 1 {
			extra = append(extra, o)
		}
	}
	sort.Slice(extra, func(i, j int) bool { return extra[i] < extra[j] })
	if len(missing) > 0 || len(extra) > 0 {
		return fmt.Errorf("hub has %d records; %d offsets missing %v, unexpected or twice %v", len(offsets), len(missing), missing, extra)
	}
	return nil
}

// copyDir copies the regular files of src into dst (created).
func copyDir(t *testing.T, src, dst string) {
	t.Helper()
	if err := os.MkdirAll(dst, 0o750); err != nil {
		t.Fatal(err)
	}
	ents, err := os.ReadDir(src)
	if err != nil {
		t.Fatal(err)
	}
	for _, e := range ents {
		b, err := os.ReadFile(filepath.Join(src, e.Name()))
		if err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join(dst, e.Name()), b, 0o600); err != nil {
			t.Fatal(err)
		}
	}
}

// TestRestoredBufferCopyLosesNothing: the buffer directory is restored from
// an older copy (a backup, a VM snapshot) after the aggregator applied many
// more chunks. The restored buffer numbers its new chunks from its old next
// seq, which the aggregator has long passed, and re-reads records the hub
// has plus new ones. With --inflight 4 over a link that reorders uploads,
// every record must still be in the hub exactly once, in order.
func TestRestoredBufferCopyLosesNothing(t *testing.T) {
	edge, hub := newCluster(t), newCluster(t)
	prod := newProducer(t, edge)
	createTopic(t, prod, "t", 1)
	front := newSlowFront(t, aggregatorWithHub(t, hub, filepath.Join(t.TempDir(), "agg")))

	produced := 0
	send := func(n int) {
		t.Helper()
		recs := make([]*kgo.Record, n)
		for i := range recs {
			// About 700 bytes: one record per chunk of 1 KiB.
			recs[i] = &kgo.Record{Topic: "t", Partition: 0, Value: []byte(fmt.Sprintf("%06d-%0694d", produced+i, 0))}
		}
		produce(t, prod, recs...)
		produced += n
	}
	dir := t.TempDir()
	cfg := validConfig()
	cfg.EdgeID = "plant-rollback"
	cfg.Brokers = edge.ListenAddrs()
	cfg.Aggregator = front.url
	cfg.BufferDir = filepath.Join(dir, "buffer")
	cfg.BufferMaxBytes = 8 << 20
	cfg.BatchBytes = 1024
	cfg.Linger = 20 * time.Millisecond
	cfg.MetadataInterval = 200 * time.Millisecond
	cfg.Inflight = 4
	cfg.MaxBackoff = time.Second
	const hubTopic = "plant-rollback.t"
	waitHub := func(n int) {
		t.Helper()
		testkit.Eventually(t, 30*time.Second, fmt.Sprintf("hub holds offsets 0..%d once", n-1), func() error {
			return exactlyOnce(hubSourceOffsets(t, hub, hubTopic)[0], n)
		})
	}

	// 50 records in 50 chunks; then the copy is taken, agent stopped.
	send(50)
	_, stop := runAgent(t, cfg)
	waitHub(50)
	stop()
	copyDir(t, cfg.BufferDir, filepath.Join(dir, "snapshot"))
	st, err := buffer.Open(cfg.BufferDir, buffer.Options{MaxBytes: cfg.BufferMaxBytes})
	if err != nil {
		t.Fatal(err)
	}
	snapNext, epoch := st.NextSeq(), st.Epoch()
	st.Close()

	// 150 more records in 150 more chunks: the aggregator's next seq is
	// far past the copy's.
	send(150)
	_, stop = runAgent(t, cfg)
	waitHub(200)
	stop()

	// Restore the copy. The restored buffer reads again from offset 50, in
	// chunks of about eleven records, numbered from snapNext on.
	if err := os.RemoveAll(cfg.BufferDir); err != nil {
		t.Fatal(err)
	}
	copyDir(t, filepath.Join(dir, "snapshot"), cfg.BufferDir)
	send(100)
	front.hold.Store(true)
	cfg.BatchBytes = 8 << 10
	_, stop = runAgent(t, cfg)
	waitHub(300)
	stop()

	st, err = buffer.Open(cfg.BufferDir, buffer.Options{MaxBytes: cfg.BufferMaxBytes})
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	if st.NextSeq() <= snapNext+150 && st.Epoch() == epoch {
		t.Errorf("restored buffer still numbers chunks from %d under epoch %d; want its next seq past the aggregator's (%d) or a new epoch",
			st.NextSeq(), epoch, snapNext+150)
	}
}
