package aggregator

import (
	"context"
	"errors"
	"net"
	"net/http"
	"path/filepath"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"go.uber.org/goleak"

	"github.com/edgemirror/edgemirror/internal/testkit"
	"github.com/edgemirror/edgemirror/internal/wire"
)

// running is an Aggregator running in a goroutine.
type running struct {
	a      *Aggregator
	cancel context.CancelFunc
	done   chan error
	base   string
	client *http.Client
}

func startAggregator(t *testing.T, cfg Config) *running {
	t.Helper()
	a, err := New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	r := &running{a: a, cancel: cancel, done: make(chan error, 1)}
	go func() { r.done <- a.Run(ctx) }()
	select {
	case <-a.Ready():
	case err := <-r.done:
		cancel()
		t.Fatalf("Run returned before it was ready: %v", err)
	case <-time.After(10 * time.Second):
		cancel()
		t.Fatal("aggregator not ready within 10s")
	}
	tr := &http.Transport{}
	r.client = &http.Client{Transport: tr, Timeout: 60 * time.Second}
	r.base = "http://" + a.Addr().String()
	t.Cleanup(func() {
		cancel()
		<-r.done
		tr.CloseIdleConnections()
	})
	return r
}

// stop cancels Run and returns its result and how long it took.
func (r *running) stop(t *testing.T) (error, time.Duration) {
	t.Helper()
	start := time.Now()
	r.cancel()
	select {
	case err := <-r.done:
		r.done <- err // for the cleanup
		return err, time.Since(start)
	case <-time.After(20 * time.Second):
		t.Fatal("Run did not return within 20s of cancel")
	}
	return nil, 0
}

// TestAggregatorRun: Run serves the API, keeps the edge's state across a
// restart, unregisters its metrics and returns nil promptly on cancel
// without leaving goroutines behind.
func TestAggregatorRun(t *testing.T) {
	hub := newHubCluster(t)
	f := newFrameBuilder(t)
	stateDir := filepath.Join(t.TempDir(), "state")
	reg := prometheus.NewRegistry()
	cfg := testConfig(hub.ListenAddrs(), stateDir)
	cfg.Registerer = reg
	leakOpts := goleak.IgnoreCurrent()

	r := startAggregator(t, cfg)
	var health map[string]string
	if code := getJSON(t, r.client, r.base+PathHealthz, nil, &health); code != 200 || health["status"] != "ok" {
		t.Fatalf("healthz %d %v", code, health)
	}
	if code := getJSON(t, r.client, r.base+PathReadyz, nil, &health); code != 200 {
		t.Fatalf("readyz %d", code)
	}
	topics := []wire.Topic{{Name: "sensors", Partitions: 1}}
	a := post(t, r.client, r.base, request{edge: "e1", epoch: "77", floor: "1",
		body: f.frame(chunkOf(1, topics, sensorRecords("sensors", 0, 0, 10)))})
	if a.status != 200 || a.ok.Written != 10 {
		t.Fatalf("chunk: %v", a)
	}
	if mfs, err := reg.Gather(); err != nil || len(mfs) == 0 {
		t.Errorf("no metrics registered while running (%v)", err)
	}
	err, took := r.stop(t)
	if err != nil {
		t.Fatalf("Run returned %v after cancel, want nil", err)
	}
	t.Logf("Run returned %v after cancel", took)
	if took > 5*time.Second {
		t.Errorf("Run took %v to stop with nothing in flight", took)
	}
	r.client.Transport.(*http.Transport).CloseIdleConnections()
	goleak.VerifyNone(t, append(testkit.LeakOptions(), leakOpts)...)
	if mfs, _ := reg.Gather(); len(mfs) != 0 {
		t.Errorf("%d metric families still registered after Run", len(mfs))
	}

	// A restart on the same state directory (and registry) knows where
	// the edge is.
	r2 := startAggregator(t, cfg)
	var rr wire.ResumeResponse
	h := http.Header{}
	h.Set(wire.HeaderEdge, "e1")
	h.Set(wire.HeaderEpoch, "77")
	if code := getJSON(t, r2.client, r2.base+wire.PathResume, h, &rr); code != 200 || rr.NextSeq != 2 || rr.Epoch != 77 {
		t.Fatalf("resume after restart: %d %+v, want epoch 77 next 2", code, rr)
	}
}

// TestAggregatorShutdownAnswersWaitingChunk: a chunk waiting for its turn
// when the aggregator stops is answered 503 with Retry-After at once, not
// after OrderWait, and Run returns nil.
func TestAggregatorShutdownAnswersWaitingChunk(t *testing.T) {
	hub := newHubCluster(t)
	f := newFrameBuilder(t)
	cfg := testConfig(hub.ListenAddrs(), filepath.Join(t.TempDir(), "state"))
	cfg.OrderWait = time.Minute
	r := startAggregator(t, cfg)
	topics := []wire.Topic{{Name: "sensors", Partitions: 1}}
	frame := f.frame(chunkOf(2, topics, sensorRecords("sensors", 0, 10, 10)))
	answers := make(chan answer, 1)
	go func() {
		a, err := tryPost(r.client, r.base, request{edge: "e1", epoch: "77", floor: "1", body: frame})
		if err != nil {
			t.Error(err)
		}
		answers <- a
	}()
	waitInSequence(t, 1)
	err, took := r.stop(t)
	if err != nil {
		t.Fatalf("Run returned %v", err)
	}
	if took > 10*time.Second {
		t.Errorf("Run took %v to stop", took)
	}
	a := <-answers
	if a.status != 503 || a.retryAfter == "" || a.err.Permanent {
		t.Fatalf("waiting chunk at shutdown: %v, want 503 with Retry-After, not permanent", a)
	}
	if a.took > 30*time.Second {
		t.Errorf("waiting chunk answered after %v: it waited for OrderWait", a.took)
	}
}

// TestAggregatorStateLocked: two aggregators cannot share a state
// directory; the second fails with ErrStateLocked.
func TestAggregatorStateLocked(t *testing.T) {
	hub := newHubCluster(t)
	cfg := testConfig(hub.ListenAddrs(), filepath.Join(t.TempDir(), "state"))
	startAggregator(t, cfg)
	second, err := New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	if err := second.Run(ctx); !errors.Is(err, ErrStateLocked) {
		t.Fatalf("second aggregator on the same state dir: %v, want ErrStateLocked", err)
	}
}

// TestAggregatorListenError: Run reports an address it cannot listen on
// and releases the state directory.
func TestAggregatorListenError(t *testing.T) {
	hub := newHubCluster(t)
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	cfg := testConfig(hub.ListenAddrs(), filepath.Join(t.TempDir(), "state"))
	cfg.Listen = ln.Addr().String()
	a, err := New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	if err := a.Run(ctx); err == nil {
		t.Fatal("Run listened on an address in use")
	}
	st, err := openState(cfg.StateDir)
	if err != nil {
		t.Fatalf("state still locked after Run failed: %v", err)
	}
	st.close()
}

// TestReplacedEpochStaysReplacedAfterRestart: once an edge moved to a new
// buffer epoch, chunks of the old epoch are refused "from now on", also
// after the aggregator restarts; the old epoch must not take the edge back
// and lock the current agent out.
func TestReplacedEpochStaysReplacedAfterRestart(t *testing.T) {
	hub := newHubCluster(t)
	f := newFrameBuilder(t)
	cfg := testConfig(hub.ListenAddrs(), filepath.Join(t.TempDir(), "state"))
	cfg.OrderWait = 300 * time.Millisecond
	topics := []wire.Topic{{Name: "sensors", Partitions: 1}}
	send := func(r *running, epoch string, seq uint64, first int64) answer {
		t.Helper()
		return post(t, r.client, r.base, request{edge: "e1", epoch: epoch, floor: "1",
			body: f.frame(chunkOf(seq, topics, sensorRecords("sensors", 0, first, 5)))})
	}
	r := startAggregator(t, cfg)
	if a := send(r, "1", 1, 0); a.status != 200 {
		t.Fatalf("epoch 1 seq 1: %v", a)
	}
	if a := send(r, "2", 1, 5); a.status != 200 {
		t.Fatalf("epoch 2 seq 1: %v", a)
	}
	if a := send(r, "1", 2, 10); a.status != 409 {
		t.Fatalf("old epoch 1 after takeover: %v, want 409", a)
	}
	if err, _ := r.stop(t); err != nil {
		t.Fatal(err)
	}

	r2 := startAggregator(t, cfg)
	if a := send(r2, "1", 2, 10); a.status != 409 {
		t.Errorf("old epoch 1 after a restart: %v, want 409", a)
	}
	if a := send(r2, "2", 2, 10); a.status != 200 {
		t.Errorf("current epoch 2 after a restart: %v, want 200", a)
	}
}
