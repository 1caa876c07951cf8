package agent

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"sort"
	"strconv"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kgo"
	"go.uber.org/goleak"

	"github.com/edgemirror/edgemirror/buffer"
	"github.com/edgemirror/edgemirror/internal/testkit"
	"github.com/edgemirror/edgemirror/internal/wire"
)

// recID identifies a source record.
type recID struct {
	topic     string
	partition int32
	offset    int64
}

// attempt is one chunk request the stub answered.
type attempt struct {
	seq    uint64
	status int
	at     time.Time
}

// stubAggregator speaks the aggregator side of docs/protocol.md with a
// script: if flakyFirst, the first chunk is answered 503 twice (once with
// Retry-After); chunks holding a record whose value is "poison" are answered 422, every
// other chunk 200. Loss reports are refused with 503 until lossesOpen.
type stubAggregator struct {
	dec *wire.Decoder

	mu          sync.Mutex
	problems    []string
	attempts    []attempt
	acked       map[recID]int
	ackedValues map[recID]string
	rejected    map[recID]bool
	rejRanges   []wire.LossRange
	lossesOpen  bool
	flakyFirst  bool // answer chunk 1 with 503 twice before accepting it
	lossTries   int
	losses      []wire.LossRange
	epochs      map[uint64]bool
}

func newStubAggregator(t *testing.T) (*stubAggregator, *httptest.Server) {
	t.Helper()
	dec, err := wire.NewDecoder(wire.DefaultLimits())
	if err != nil {
		t.Fatal(err)
	}
	s := &stubAggregator{dec: dec, acked: map[recID]int{}, ackedValues: map[recID]string{},
		rejected: map[recID]bool{}, epochs: map[uint64]bool{}}
	mux := http.NewServeMux()
	mux.HandleFunc("POST "+wire.PathChunks, s.chunk)
	mux.HandleFunc("POST "+wire.PathLosses, s.lossReport)
	mux.HandleFunc("GET "+wire.PathResume, func(w http.ResponseWriter, r *http.Request) {
		epoch, _ := strconv.ParseUint(r.Header.Get(wire.HeaderEpoch), 10, 64)
		writeTestJSON(w, 200, wire.ResumeResponse{Epoch: epoch, NextSeq: 0})
	})
	srv := httptest.NewUnstartedServer(mux)
	var p http.Protocols
	p.SetHTTP1(true)
	p.SetUnencryptedHTTP2(true)
	srv.Config.Protocols = &p
	srv.Start()
	t.Cleanup(func() { srv.Close(); dec.Close() })
	return s, srv
}

func writeTestJSON(w http.ResponseWriter, code int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(code)
	_ = json.NewEncoder(w).Encode(v)
}

func (s *stubAggregator) problem(format string, args ...any) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.problems = append(s.problems, fmt.Sprintf(format, args...))
}

func (s *stubAggregator) chunk(w http.ResponseWriter, r *http.Request) {
	if r.ProtoMajor != 2 {
		s.problem("chunk sent over %s, want HTTP/2 (h2c)", r.Proto)
	}
	if got := r.Header.Get(wire.HeaderEdge); got != "plant-1" {
		s.problem("edge header %q", got)
	}
	if ct := r.Header.Get("Content-Type"); ct != wire.ContentTypeChunk {
		s.problem("content type %q", ct)
	}
	epoch, err := strconv.ParseUint(r.Header.Get(wire.HeaderEpoch), 10, 64)
	if err != nil || epoch == 0 {
		s.problem("epoch header %q", r.Header.Get(wire.HeaderEpoch))
	}
	floor, err := strconv.ParseUint(r.Header.Get(wire.HeaderFloor), 10, 64)
	if err != nil || floor == 0 {
		s.problem("floor header %q", r.Header.Get(wire.HeaderFloor))
	}
	frame, err := io.ReadAll(r.Body)
	if err != nil {
		http.Error(w, err.Error(), http.StatusServiceUnavailable)
		return
	}
	c, err := s.dec.Decode(frame)
	if err != nil {
		s.problem("undecodable chunk: %v", err)
		writeTestJSON(w, 400, wire.ErrorResponse{Error: err.Error(), Permanent: true})
		return
	}
	if floor > c.Seq {
		s.problem("chunk %d sent with floor %d above it", c.Seq, floor)
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	s.epochs[epoch] = true
	tries := 0
	for _, a := range s.attempts {
		if a.seq == c.Seq {
			tries++
		}
	}
	status := 200
	poisoned := false
	for i := range c.Records {
		if string(c.Records[i].Value) == "poison" {
			poisoned = true
		}
	}
	switch {
	case s.flakyFirst && c.Seq == 1 && tries == 0:
		status = 503
	case s.flakyFirst && c.Seq == 1 && tries == 1:
		status = 503
		w.Header().Set("Retry-After", "1")
	case poisoned:
		status = 422
	}
	s.attempts = append(s.attempts, attempt{seq: c.Seq, status: status, at: time.Now()})
	switch status {
	case 503:
		writeTestJSON(w, 503, wire.ErrorResponse{Error: "hub unavailable"})
	case 422:
		ranges := map[recID]*wire.LossRange{}
		var order []recID
		for _, rec := range c.Records {
			s.rejected[recID{rec.Topic, rec.Partition, rec.Offset}] = true
			k := recID{rec.Topic, rec.Partition, 0}
			if lr := ranges[k]; lr != nil {
				lr.LastOffset, lr.Records = rec.Offset, lr.Records+1
				continue
			}
			ranges[k] = &wire.LossRange{Topic: rec.Topic, Partition: rec.Partition, FirstOffset: rec.Offset,
				LastOffset: rec.Offset, Records: 1, Reason: wire.LossReasonRejected}
			order = append(order, k)
		}
		for _, k := range order {
			s.rejRanges = append(s.rejRanges, *ranges[k])
		}
		writeTestJSON(w, 422, wire.ErrorResponse{Error: "record breaks a hub rule", Permanent: true})
	default:
		for _, rec := range c.Records {
			id := recID{rec.Topic, rec.Partition, rec.Offset}
			s.acked[id]++
			s.ackedValues[id] = string(rec.Value)
		}
		writeTestJSON(w, 200, wire.ChunkResponse{Seq: c.Seq, Records: len(c.Records), Written: len(c.Records)})
	}
}

func (s *stubAggregator) lossReport(w http.ResponseWriter, r *http.Request) {
	var rep wire.LossReport
	if err := json.NewDecoder(r.Body).Decode(&rep); err != nil {
		s.problem("undecodable loss report: %v", err)
		writeTestJSON(w, 400, wire.ErrorResponse{Error: err.Error(), Permanent: true})
		return
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	s.lossTries++
	if !s.lossesOpen {
		writeTestJSON(w, 503, wire.ErrorResponse{Error: "not now"})
		return
	}
	s.losses = append(s.losses, rep.Ranges...)
	writeTestJSON(w, 200, map[string]int{"ranges": len(rep.Ranges)})
}

func (s *stubAggregator) ackedCount() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return len(s.acked)
}

// TestAgentRun runs the whole agent against an in-process edge cluster and
// a scripted aggregator: retryable answers are retried and nothing is lost
// by them, a permanently rejected chunk becomes a loss that is kept in the
// buffer until the aggregator takes the report, every other record is
// acknowledged exactly once, and Run stops promptly and cleanly.
func TestAgentRun(t *testing.T) {
	c := newCluster(t)
	// The producer is closed before the leak check below, so that its
	// broker connection does not count.
	prod, err := kgo.NewClient(kgo.SeedBrokers(c.ListenAddrs()...), kgo.RecordPartitioner(kgo.ManualPartitioner()))
	if err != nil {
		t.Fatal(err)
	}
	var closeProd sync.Once
	t.Cleanup(func() { closeProd.Do(prod.Close) })
	createTopic(t, prod, "sensors", 2)
	stub, srv := newStubAggregator(t)
	stub.flakyFirst = true

	produced := map[recID]string{}
	next := map[int32]int64{}
	send := func(perPartition int, value func(p int32, i int) string) {
		t.Helper()
		var recs []*kgo.Record
		for p := int32(0); p < 2; p++ {
			for i := 0; i < perPartition; i++ {
				recs = append(recs, &kgo.Record{Topic: "sensors", Partition: p, Key: []byte("k"), Value: []byte(value(p, i))})
			}
		}
		produce(t, prod, recs...)
		for _, r := range recs {
			produced[recID{r.Topic, r.Partition, r.Offset}] = string(r.Value)
			next[r.Partition] = r.Offset + 1
		}
	}
	send(20, func(p int32, i int) string { return fmt.Sprintf("first-%d-%d", p, i) })

	reg := prometheus.NewRegistry()
	cfg := validConfig()
	cfg.EdgeID = "plant-1"
	cfg.Brokers = c.ListenAddrs()
	cfg.Aggregator = srv.URL
	cfg.BufferDir = t.TempDir()
	cfg.BufferMaxBytes = 8 << 20
	cfg.BatchBytes = 64 << 10
	cfg.Linger = 50 * time.Millisecond
	cfg.MetadataInterval = 200 * time.Millisecond
	cfg.Inflight = 2
	cfg.MaxBackoff = time.Second
	cfg.LossInterval = 100 * time.Millisecond
	cfg.RequestTimeout = 10 * time.Second
	cfg.Registerer = reg
	a, err := New(cfg)
	if err != nil {
		t.Fatal(err)
	}

	// Every goroutine started from here on must be gone after Run.
	leakOpts := goleak.IgnoreCurrent()
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	runErr := make(chan error, 1)
	go func() { runErr <- a.Run(ctx) }()
	stopped := false
	defer func() {
		if !stopped {
			cancel()
			<-runErr
		}
	}()

	// 1. The first chunk is answered 503, 503 (Retry-After: 1), then 200.
	testkit.Eventually(t, 20*time.Second, "first 40 records acknowledged", func() error {
		if n := stub.ackedCount(); n != 40 {
			return fmt.Errorf("%d acknowledged", n)
		}
		return nil
	})
	stub.mu.Lock()
	var first []attempt
	for _, at := range stub.attempts {
		if at.seq == 1 {
			first = append(first, at)
		}
	}
	stub.mu.Unlock()
	if len(first) != 3 || first[0].status != 503 || first[1].status != 503 || first[2].status != 200 {
		t.Fatalf("attempts of chunk 1: %+v, want 503, 503, 200", first)
	}
	if gap := first[2].at.Sub(first[1].at); gap < 900*time.Millisecond {
		t.Errorf("chunk 1 was re-sent %v after a 503 with Retry-After: 1", gap)
	}

	// 2. A poisoned chunk is rejected (422): its range becomes a loss,
	// held in the buffer while the aggregator does not take reports.
	produce(t, prod, &kgo.Record{Topic: "sensors", Partition: 0, Value: []byte("poison")})
	poisonID := recID{"sensors", 0, next[0]}
	next[0]++
	testkit.Eventually(t, 20*time.Second, "poisoned chunk rejected and its loss buffered", func() error {
		stub.mu.Lock()
		rejected, tries := len(stub.rejRanges), stub.lossTries
		stub.mu.Unlock()
		if rejected == 0 {
			return errors.New("no chunk rejected yet")
		}
		pending, err := gathered(reg, "edgemirror_buffer_pending_losses", nil)
		if err != nil {
			return err
		}
		if pending != 1 {
			return fmt.Errorf("%v pending losses in the buffer", pending)
		}
		if tries == 0 {
			return errors.New("no loss report tried yet")
		}
		return nil
	})
	stub.mu.Lock()
	rejRanges := append([]wire.LossRange(nil), stub.rejRanges...)
	rejected := len(stub.rejected)
	stub.mu.Unlock()
	wantRange := wire.LossRange{Topic: "sensors", Partition: 0, FirstOffset: poisonID.offset, LastOffset: poisonID.offset,
		Records: 1, Reason: wire.LossReasonRejected}
	if len(rejRanges) != 1 || rejRanges[0] != wantRange || rejected != 1 {
		t.Fatalf("rejected chunk ranges %+v (%d records), want only the poisoned record %+v", rejRanges, rejected, wantRange)
	}
	if got := metricValue(t, a.m.lost.WithLabelValues(wire.LossReasonRejected)); got != 1 {
		t.Errorf("lost{rejected-by-aggregator} = %v, want 1", got)
	}

	// 3. The aggregator takes reports again: the loss is delivered, exactly,
	// and leaves the buffer.
	stub.mu.Lock()
	stub.lossesOpen = true
	stub.mu.Unlock()
	testkit.Eventually(t, 10*time.Second, "loss reported", func() error {
		stub.mu.Lock()
		n := len(stub.losses)
		stub.mu.Unlock()
		pending, err := gathered(reg, "edgemirror_buffer_pending_losses", nil)
		if err != nil {
			return err
		}
		if n == 0 || pending != 0 {
			return fmt.Errorf("%d ranges reported, %v pending", n, pending)
		}
		return nil
	})
	stub.mu.Lock()
	reported := append([]wire.LossRange(nil), stub.losses...)
	stub.mu.Unlock()
	if len(reported) != 1 || reported[0] != wantRange {
		t.Errorf("reported losses %+v, want exactly %+v", reported, wantRange)
	}

	// 4. Shipping goes on after the rejection.
	send(10, func(p int32, i int) string { return fmt.Sprintf("second-%d-%d", p, i) })
	testkit.Eventually(t, 20*time.Second, "all 60 good records acknowledged", func() error {
		if n := stub.ackedCount(); n != 60 {
			return fmt.Errorf("%d acknowledged", n)
		}
		// The agent must have read the last answer too, not only the stub
		// have sent it: cancelling before that legitimately leaves the
		// chunk in the buffer to be sent again.
		if n := metricValue(t, a.m.recordsAcked); n != 60 {
			return fmt.Errorf("agent processed %v acknowledgements", n)
		}
		return nil
	})

	// 5. Stop: Run returns nil promptly.
	start := time.Now()
	cancel()
	select {
	case err := <-runErr:
		stopped = true
		if err != nil {
			t.Fatalf("Run returned %v after cancel, want nil", err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("Run did not return within 10s of cancel")
	}
	took := time.Since(start)
	t.Logf("Run returned %v after cancel", took)
	if took > 3*time.Second {
		t.Errorf("Run took %v to stop, want well under the 5s flush bound", took)
	}
	closeProd.Do(prod.Close)
	goleak.VerifyNone(t, append(testkit.LeakOptions(), leakOpts)...)

	// What the aggregator saw.
	stub.mu.Lock()
	defer stub.mu.Unlock()
	for _, p := range stub.problems {
		t.Error(p)
	}
	if len(stub.epochs) != 1 {
		t.Errorf("chunks came with %d epochs, want 1", len(stub.epochs))
	}
	for id, v := range produced {
		if n := stub.acked[id]; n != 1 {
			t.Errorf("record %v acknowledged %d times, want once", id, n)
		} else if stub.ackedValues[id] != v {
			t.Errorf("record %v shipped with value %q, produced %q", id, stub.ackedValues[id], v)
		}
	}
	if stub.acked[poisonID] != 0 {
		t.Error("the poisoned record was acknowledged")
	}
	if len(stub.acked) != len(produced) {
		t.Errorf("%d records acknowledged, %d produced (besides the poison)", len(stub.acked), len(produced))
	}
	var seqs []int
	for _, at := range stub.attempts {
		if at.status == 200 || at.status == 422 {
			seqs = append(seqs, int(at.seq))
		}
	}
	sort.Ints(seqs)
	for i, s := range seqs {
		if s != i+1 {
			t.Errorf("answered seqs %v, want 1..%d each once", seqs, len(seqs))
			break
		}
	}
	for reason, want := range map[string]float64{"retryable": 2, "rejected": 1} {
		if got := metricValue(t, a.m.sendErrors.WithLabelValues(reason)); got != want {
			t.Errorf("send errors{class=%s} = %v, want %v", reason, got, want)
		}
	}
	if got := metricValue(t, a.m.recordsAcked); got != 60 {
		t.Errorf("records acked %v, want 60", got)
	}
	if got := metricValue(t, a.m.lossesReported); got != 1 {
		t.Errorf("loss ranges reported %v, want 1", got)
	}

	// The buffer is empty, has no pending loss, and stores the next
	// offsets past everything read.
	store, err := buffer.Open(cfg.BufferDir, buffer.Options{MaxBytes: cfg.BufferMaxBytes})
	if err != nil {
		t.Fatal(err)
	}
	defer store.Close()
	if st := store.Stats(); st.Chunks != 0 || st.PendingLosses != 0 {
		t.Errorf("buffer after stop: %d chunks, %d pending losses; want none", st.Chunks, st.PendingLosses)
	}
	offs, err := store.Offsets()
	if err != nil {
		t.Fatal(err)
	}
	for p, want := range next {
		if got := offs[buffer.PartitionKey{Topic: "sensors", Partition: p}]; got != want {
			t.Errorf("stored next offset of sensors/%d = %d, want %d", p, got, want)
		}
	}
}

// TestAgentRunStopsWithoutAggregator: with the aggregator unreachable and
// chunks waiting in the buffer, Run still stops promptly and the chunks
// stay buffered.
func TestAgentRunStopsWithoutAggregator(t *testing.T) {
	c := newCluster(t)
	prod := newProducer(t, c)
	createTopic(t, prod, "t", 1)
	for i := 0; i < 5; i++ {
		produce(t, prod, &kgo.Record{Topic: "t", Value: []byte("x")})
	}
	// An address nobody listens on.
	dead := httptest.NewServer(http.NotFoundHandler())
	deadURL := dead.URL
	dead.Close()

	reg := prometheus.NewRegistry()
	cfg := validConfig()
	cfg.Brokers = c.ListenAddrs()
	cfg.Aggregator = deadURL
	cfg.BufferDir = t.TempDir()
	cfg.BufferMaxBytes = 8 << 20
	cfg.BatchBytes = 16 << 10
	cfg.Linger = 20 * time.Millisecond
	cfg.MetadataInterval = 100 * time.Millisecond
	cfg.MaxBackoff = 200 * time.Millisecond
	cfg.Registerer = reg
	a, err := New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	leakOpts := goleak.IgnoreCurrent()
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	runErr := make(chan error, 1)
	go func() { runErr <- a.Run(ctx) }()
	testkit.Eventually(t, 20*time.Second, "records buffered and shipping failing", func() error {
		chunks, err := gathered(reg, "edgemirror_buffer_chunks", nil)
		if err != nil {
			return err
		}
		if chunks < 1 || metricValue(t, a.m.sendErrors.WithLabelValues("network")) < 2 {
			return fmt.Errorf("%v chunks buffered, %v network errors", chunks,
				metricValue(t, a.m.sendErrors.WithLabelValues("network")))
		}
		return nil
	})
	start := time.Now()
	cancel()
	select {
	case err := <-runErr:
		if err != nil {
			t.Fatalf("Run returned %v, want nil", err)
		}
	case <-time.After(5 * time.Second):
		n1 := metricValue(t, a.m.sendErrors.WithLabelValues("network"))
		time.Sleep(time.Second) // measuring a rate, not synchronising
		n2 := metricValue(t, a.m.sendErrors.WithLabelValues("network"))
		// Run cannot be stopped; this leaks it, so the package fails too.
		t.Fatalf("Run did not return within 5s of cancel; %v chunk uploads failed in the next second", n2-n1)
	}
	if took := time.Since(start); took > 3*time.Second {
		t.Errorf("Run took %v to stop", took)
	}
	goleak.VerifyNone(t, append(testkit.LeakOptions(), leakOpts)...)
	// Metrics are unregistered, so a new Agent can register them again.
	if mfs, _ := reg.Gather(); len(mfs) != 0 {
		t.Errorf("%d metric families still registered after Run", len(mfs))
	}
	store, err := buffer.Open(cfg.BufferDir, buffer.Options{MaxBytes: cfg.BufferMaxBytes})
	if err != nil {
		t.Fatal(err)
	}
	defer store.Close()
	if st := store.Stats(); st.Records != 5 {
		t.Errorf("buffer holds %d records after stop, want the 5 unshipped ones", st.Records)
	}
}

// runAgent runs an agent until stop is called, which cancels it and
// checks that Run returns nil promptly.
func runAgent(t *testing.T, cfg Config) (a *Agent, stop func()) {
	t.Helper()
	a, err := New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- a.Run(ctx) }()
	stopped := false
	stop = func() {
		t.Helper()
		if stopped {
			return
		}
		stopped = true
		start := time.Now()
		cancel()
		select {
		case err := <-done:
			if err != nil {
				t.Errorf("Run returned %v after cancel, want nil", err)
			}
			if took := time.Since(start); took > 3*time.Second {
				t.Errorf("Run took %v to stop", took)
			}
		case <-time.After(10 * time.Second):
			t.Fatal("Run did not return within 10s of cancel")
		}
	}
	t.Cleanup(stop)
	return a, stop
}

// TestAgentRunReportsEdgeRetentionLoss: records the edge deleted while the
// agent was down are reported lost with their exact range, and everything
// after them is shipped once, resuming from the buffer's stored offsets.
func TestAgentRunReportsEdgeRetentionLoss(t *testing.T) {
	c := newCluster(t)
	prod := newProducer(t, c)
	createTopic(t, prod, "t", 1)
	stub, srv := newStubAggregator(t)
	stub.lossesOpen = true
	for i := 0; i < 10; i++ {
		produce(t, prod, &kgo.Record{Topic: "t", Value: []byte(fmt.Sprint(i))})
	}
	cfg := validConfig()
	cfg.EdgeID = "plant-1"
	cfg.Brokers = c.ListenAddrs()
	cfg.Aggregator = srv.URL
	cfg.BufferDir = t.TempDir()
	cfg.BufferMaxBytes = 8 << 20
	cfg.BatchBytes = 64 << 10
	cfg.Linger = 20 * time.Millisecond
	cfg.MetadataInterval = 100 * time.Millisecond
	cfg.LossInterval = 50 * time.Millisecond
	acked := func(n int) func() error {
		return func() error {
			if got := stub.ackedCount(); got != n {
				return fmt.Errorf("%d acknowledged", got)
			}
			return nil
		}
	}
	a1, stop := runAgent(t, cfg)
	testkit.Eventually(t, 20*time.Second, "10 records acknowledged", func() error {
		if err := acked(10)(); err != nil {
			return err
		}
		// The agent must have read the answers too; stopping earlier
		// rightly leaves chunks to be sent again.
		if n := metricValue(t, a1.m.recordsAcked); n != 10 {
			return fmt.Errorf("agent processed %v acknowledgements", n)
		}
		return nil
	})
	stop()

	// While the agent is down: 10 more records, of which the edge deletes 5.
	for i := 10; i < 20; i++ {
		produce(t, prod, &kgo.Record{Topic: "t", Value: []byte(fmt.Sprint(i))})
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	offs := kadm.Offsets{}
	offs.Add(kadm.Offset{Topic: "t", Partition: 0, At: 15})
	if res, err := kadm.NewClient(prod).DeleteRecords(ctx, offs); err != nil || res.Error() != nil {
		t.Fatalf("delete records: %v %v", err, res.Error())
	}

	a, stop2 := runAgent(t, cfg)
	testkit.Eventually(t, 20*time.Second, "15 records acknowledged and the loss reported", func() error {
		if err := acked(15)(); err != nil {
			return err
		}
		stub.mu.Lock()
		defer stub.mu.Unlock()
		if len(stub.losses) == 0 {
			return errors.New("no loss reported")
		}
		return nil
	})
	stop2()
	stub.mu.Lock()
	defer stub.mu.Unlock()
	want := wire.LossRange{Topic: "t", Partition: 0, FirstOffset: 10, LastOffset: 14, Records: 5, Reason: wire.LossReasonEdgeRetention}
	if len(stub.losses) != 1 || stub.losses[0] != want {
		t.Errorf("reported losses %+v, want exactly %+v", stub.losses, want)
	}
	for off := int64(0); off < 20; off++ {
		n := stub.acked[recID{"t", 0, off}]
		if wantN := map[bool]int{true: 0, false: 1}[off >= 10 && off < 15]; n != wantN {
			t.Errorf("offset %d acknowledged %d times, want %d", off, n, wantN)
		}
	}
	for _, p := range stub.problems {
		t.Error(p)
	}
	if len(stub.epochs) != 1 {
		t.Errorf("%d epochs used across the restart, want 1 (same buffer)", len(stub.epochs))
	}
	if got := metricValue(t, a.m.lost.WithLabelValues(wire.LossReasonEdgeRetention)); got != 5 {
		t.Errorf("lost{edge-retention} = %v, want 5", got)
	}
}

// TestAgentRunReportsRefusedRecords: records that already carry provenance
// and records whose timestamp kafka-go cannot write are not shipped, and
// their exact ranges reach the aggregator as losses; everything else is
// acknowledged once.
func TestAgentRunReportsRefusedRecords(t *testing.T) {
	c := newCluster(t)
	prod := newProducer(t, c)
	createTopic(t, prod, "t", 1)
	stub, srv := newStubAggregator(t)
	stub.lossesOpen = true
	now := time.Now().UnixMilli()
	plain := func(v string) { produceRawBatch(t, c, "t", 0, now, rawRecord{value: []byte(v)}) }
	plain("0")
	plain("1")
	produce(t, prod, // 2, 3: mirrored from elsewhere
		&kgo.Record{Topic: "t", Value: []byte("2"), Headers: []kgo.RecordHeader{{Key: "edgemirror-edge", Value: []byte("other")}}},
		&kgo.Record{Topic: "t", Value: []byte("3"), Headers: []kgo.RecordHeader{{Key: "edgemirror-edge", Value: []byte("other")}}})
	plain("4")
	produceRawBatch(t, c, "t", 0, now*1000, rawRecord{value: []byte("5")}) // microseconds as milliseconds
	plain("6")

	cfg := validConfig()
	cfg.EdgeID = "plant-1"
	cfg.Brokers = c.ListenAddrs()
	cfg.Aggregator = srv.URL
	cfg.BufferDir = t.TempDir()
	cfg.BufferMaxBytes = 8 << 20
	cfg.BatchBytes = 64 << 10
	cfg.Linger = 20 * time.Millisecond
	cfg.MetadataInterval = 100 * time.Millisecond
	cfg.LossInterval = 50 * time.Millisecond
	a, stop := runAgent(t, cfg)
	testkit.Eventually(t, 20*time.Second, "4 records acknowledged and 2 loss ranges reported", func() error {
		stub.mu.Lock()
		defer stub.mu.Unlock()
		if len(stub.acked) != 4 || len(stub.losses) < 2 {
			return fmt.Errorf("%d acknowledged, %d loss ranges", len(stub.acked), len(stub.losses))
		}
		return nil
	})
	stop()
	stub.mu.Lock()
	defer stub.mu.Unlock()
	want := []wire.LossRange{
		{Topic: "t", Partition: 0, FirstOffset: 2, LastOffset: 3, Records: 2, Reason: wire.LossReasonProvenance},
		{Topic: "t", Partition: 0, FirstOffset: 5, LastOffset: 5, Records: 1, Reason: wire.LossReasonTimestamp},
	}
	got := append([]wire.LossRange(nil), stub.losses...)
	sort.Slice(got, func(i, j int) bool { return got[i].FirstOffset < got[j].FirstOffset })
	if fmt.Sprint(got) != fmt.Sprint(want) {
		t.Errorf("reported losses %+v, want %+v", got, want)
	}
	for _, off := range []int64{0, 1, 4, 6} {
		if n := stub.acked[recID{"t", 0, off}]; n != 1 {
			t.Errorf("offset %d acknowledged %d times, want 1", off, n)
		}
	}
	for _, p := range stub.problems {
		t.Error(p)
	}
	if got := metricValue(t, a.m.lost.WithLabelValues(wire.LossReasonProvenance)); got != 2 {
		t.Errorf("lost{provenance} = %v, want 2", got)
	}
}

// TestFlushHoldsPartitionAtPendingLoss: a chunk cut before the batch's
// losses are persisted does not move its partition past them, so that a
// crash in between cannot lose them unreported; the final flush persists
// the loss and the offset past everything.
func TestFlushHoldsPartitionAtPendingLoss(t *testing.T) {
	cfg := validConfig()
	cfg.BufferDir = t.TempDir()
	cfg.BufferMaxBytes = 8 << 20
	a, err := New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	store, err := buffer.Open(cfg.BufferDir, buffer.Options{MaxBytes: cfg.BufferMaxBytes})
	if err != nil {
		t.Fatal(err)
	}
	defer store.Close()
	enc, err := wire.NewEncoder(wire.CodecNone, wire.LevelDefault)
	if err != nil {
		t.Fatal(err)
	}
	defer enc.Close()
	topics := []wire.Topic{{Name: "t", Partitions: 1}}
	k := buffer.PartitionKey{Topic: "t", Partition: 0}
	var recs []wire.Record
	for _, off := range []int64{0, 2} {
		recs = append(recs, wire.Record{Topic: "t", Offset: off, Value: []byte("v")})
	}
	loss := buffer.Loss{Range: buffer.Range{Topic: "t", First: 1, Last: 1, Records: 1},
		Reason: wire.LossReasonProvenance, At: time.Now()}
	ctx := context.Background()
	if err := a.writeFlush(ctx, store, enc, &flushJob{records: recs, topics: topics, losses: []buffer.Loss{loss}}); err != nil {
		t.Fatal(err)
	}
	offs, err := store.Offsets()
	if err != nil {
		t.Fatal(err)
	}
	if offs[k] != 1 {
		t.Fatalf("after a chunk cut before the loss is stored, t/0 resumes at %d, want 1 (the lost offset)", offs[k])
	}
	final := &flushJob{topics: topics, final: true, losses: []buffer.Loss{loss},
		next: map[buffer.PartitionKey]int64{k: 3}, lossNext: map[buffer.PartitionKey]int64{}}
	if err := a.writeFlush(ctx, store, enc, final); err != nil {
		t.Fatal(err)
	}
	if offs, _ = store.Offsets(); offs[k] != 3 {
		t.Errorf("after the final flush t/0 resumes at %d, want 3", offs[k])
	}
	losses, err := store.PendingLosses()
	if err != nil {
		t.Fatal(err)
	}
	if len(losses) != 1 || losses[0].Range.First != 1 || losses[0].Reason != wire.LossReasonProvenance {
		t.Errorf("pending losses %+v, want the provenance loss of offset 1", losses)
	}
}
