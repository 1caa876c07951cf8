package agent

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/edgemirror/edgemirror/buffer"
	"github.com/edgemirror/edgemirror/internal/testkit"
	"github.com/edgemirror/edgemirror/internal/wire"
)

// heartbeatStub is an aggregator that records heartbeats and answers
// chunks as chunkAnswer says: a status code, or 0 to hold the request
// until the client gives up.
type heartbeatStub struct {
	mu          sync.Mutex
	beats       []wire.Heartbeat
	beatAt      []time.Time
	edges       map[string]bool
	chunkAnswer int
}

func newHeartbeatStub(t *testing.T, chunkAnswer int) (*heartbeatStub, *httptest.Server) {
	t.Helper()
	s := &heartbeatStub{chunkAnswer: chunkAnswer, edges: map[string]bool{}}
	mux := http.NewServeMux()
	mux.HandleFunc("POST "+wire.PathHeartbeat, func(w http.ResponseWriter, r *http.Request) {
		var hb wire.Heartbeat
		if err := json.NewDecoder(io.LimitReader(r.Body, wire.MaxHeartbeatBytes)).Decode(&hb); err != nil {
			writeTestJSON(w, 400, wire.ErrorResponse{Error: err.Error(), Permanent: true})
			return
		}
		s.mu.Lock()
		s.beats = append(s.beats, hb)
		s.beatAt = append(s.beatAt, time.Now())
		s.edges[r.Header.Get(wire.HeaderEdge)] = true
		s.mu.Unlock()
		writeTestJSON(w, 200, map[string]string{"status": "ok"})
	})
	mux.HandleFunc("POST "+wire.PathChunks, func(w http.ResponseWriter, r *http.Request) {
		s.mu.Lock()
		answer := s.chunkAnswer
		s.mu.Unlock()
		if answer == 0 {
			// Take the body as it crawls in, never answer.
			_, _ = io.Copy(io.Discard, r.Body)
			<-r.Context().Done()
			return
		}
		if answer == 200 {
			// An acknowledgement names the chunk's seq and record count.
			frame, err := io.ReadAll(r.Body)
			if err != nil {
				return
			}
			dec, err := wire.NewDecoder(wire.DefaultLimits())
			if err != nil {
				writeTestJSON(w, 500, wire.ErrorResponse{Error: err.Error()})
				return
			}
			defer dec.Close()
			c, err := dec.Decode(frame)
			if err != nil {
				writeTestJSON(w, 400, wire.ErrorResponse{Error: err.Error(), Permanent: true})
				return
			}
			writeTestJSON(w, 200, wire.ChunkResponse{Seq: c.Seq, Records: len(c.Records), Written: len(c.Records)})
			return
		}
		_, _ = io.Copy(io.Discard, r.Body)
		writeTestJSON(w, answer, wire.ErrorResponse{Error: "buffer epoch replaced: another agent uses this edge id"})
	})
	mux.HandleFunc("POST "+wire.PathLosses, func(w http.ResponseWriter, r *http.Request) {
		writeTestJSON(w, 200, map[string]int{"ranges": 0})
	})
	mux.HandleFunc("GET /healthz", func(w http.ResponseWriter, r *http.Request) { writeTestJSON(w, 200, nil) })
	srv := httptest.NewUnstartedServer(mux)
	var p http.Protocols
	p.SetHTTP1(true)
	p.SetUnencryptedHTTP2(true)
	srv.Config.Protocols = &p
	srv.Start()
	t.Cleanup(srv.Close)
	return s, srv
}

func (s *heartbeatStub) set(answer int) {
	s.mu.Lock()
	s.chunkAnswer = answer
	s.mu.Unlock()
}

// last returns the latest heartbeat, if any.
func (s *heartbeatStub) last() (wire.Heartbeat, bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if len(s.beats) == 0 {
		return wire.Heartbeat{}, false
	}
	return s.beats[len(s.beats)-1], true
}

// TestHealthRPO: the RPO is the age of the oldest record of the chunks not
// yet acknowledged; chunks below the floor (dropped) no longer count;
// chunks of an earlier run are learnt from their frame when leased.
func TestHealthRPO(t *testing.T) {
	h := newHealth(10)
	defer h.close()
	if _, ok := h.oldest(0); ok {
		t.Fatal("empty health has an oldest record")
	}
	base := time.Now().Add(-time.Hour).UnixMilli()
	h.appended(10, base+5000)
	h.appended(11, base+1000) // chunks are not ordered by time across partitions
	h.appended(12, base+9000)
	if got, _ := h.oldest(10); got.UnixMilli() != base+1000 {
		t.Errorf("oldest %v, want %v", got.UnixMilli(), base+1000)
	}
	h.done(11)
	if got, _ := h.oldest(10); got.UnixMilli() != base+5000 {
		t.Errorf("after ack of 11: oldest %v, want %v", got.UnixMilli(), base+5000)
	}
	if got, _ := h.oldest(12); got.UnixMilli() != base+9000 { // 10 was dropped: floor moved past it
		t.Errorf("floor 12: oldest %v, want %v", got.UnixMilli(), base+9000)
	}
	if _, ok := h.pending[10]; ok {
		t.Error("chunk below the floor still tracked")
	}

	// A chunk of an earlier run (seq < startSeq): decoded once when leased.
	enc, err := wire.NewEncoder(wire.CodecZstd, wire.LevelDefault)
	if err != nil {
		t.Fatal(err)
	}
	defer enc.Close()
	recs := []wire.Record{
		{Topic: "t", Partition: 0, Offset: 1, Timestamp: base + 700, Value: []byte("a")},
		{Topic: "t", Partition: 0, Offset: 2, Timestamp: base + 300, Value: []byte("b")},
		{Topic: "t", Partition: 0, Offset: 3, Timestamp: -1, Value: []byte("c")},
	}
	frame, err := enc.Encode(nil, &wire.Chunk{Seq: 4, Topics: []wire.Topic{{Name: "t", Partitions: 1}}, Records: recs})
	if err != nil {
		t.Fatal(err)
	}
	h.leased(buffer.Chunk{Seq: 4, Frame: frame}, slog.New(slog.DiscardHandler))
	if got, _ := h.oldest(4); got.UnixMilli() != base+300 {
		t.Errorf("chunk of an earlier run: oldest %v, want %v", got.UnixMilli(), base+300)
	}
	h.leased(buffer.Chunk{Seq: 13, Frame: []byte("not a frame")}, slog.New(slog.DiscardHandler)) // this run's: not decoded
	if _, ok := h.pending[13]; ok {
		t.Error("a chunk of this run was decoded on lease")
	}
	if ts := oldestTimestamp(recs[2:], time.UnixMilli(base)); ts != base {
		t.Errorf("records without timestamps: %d, want the time given", ts)
	}
}

func heartbeatConfig(t *testing.T, edge []string, aggregator string) Config {
	cfg := validConfig()
	cfg.EdgeID = "plant-1"
	cfg.Brokers = edge
	cfg.Aggregator = aggregator
	cfg.BufferDir = t.TempDir()
	cfg.BufferMaxBytes = 8 << 20
	cfg.HeartbeatInterval = 100 * time.Millisecond
	cfg.MaxBackoff = 500 * time.Millisecond
	cfg.Linger = 50 * time.Millisecond
	cfg.MetadataInterval = 200 * time.Millisecond
	cfg.Version = "test-1"
	return cfg
}

// TestHeartbeatRetriesSoonAfterAFailure: a heartbeat the aggregator did
// not take is followed by the next one after heartbeatRetry, not after a
// whole interval.
func TestHeartbeatRetriesSoonAfterAFailure(t *testing.T) {
	c := newCluster(t)
	var (
		mu    sync.Mutex
		times []time.Time
	)
	mux := http.NewServeMux()
	mux.HandleFunc("POST "+wire.PathHeartbeat, func(w http.ResponseWriter, r *http.Request) {
		mu.Lock()
		times = append(times, time.Now())
		n := len(times)
		mu.Unlock()
		if n == 1 {
			writeTestJSON(w, 503, wire.ErrorResponse{Error: "hub unavailable"})
			return
		}
		writeTestJSON(w, 200, map[string]string{"status": "ok"})
	})
	srv := httptest.NewUnstartedServer(mux)
	var p http.Protocols
	p.SetHTTP1(true)
	p.SetUnencryptedHTTP2(true)
	srv.Config.Protocols = &p
	srv.Start()
	defer srv.Close()
	cfg := heartbeatConfig(t, c.ListenAddrs(), srv.URL)
	cfg.HeartbeatInterval = 20 * time.Second
	a, stop := runAgent(t, cfg)
	defer stop()
	testkit.Eventually(t, 10*time.Second, "a second heartbeat", func() error {
		mu.Lock()
		defer mu.Unlock()
		if len(times) < 2 {
			return fmt.Errorf("%d heartbeats", len(times))
		}
		return nil
	})
	mu.Lock()
	gap := times[1].Sub(times[0])
	mu.Unlock()
	if gap < heartbeatRetry/2 || gap > 3*heartbeatRetry {
		t.Errorf("second heartbeat %v after the failed one, want about %v", gap, heartbeatRetry)
	}
	if v := metricValue(t, a.m.heartbeats.WithLabelValues("failed")); v != 1 {
		t.Errorf("failed heartbeats %v, want 1", v)
	}
}

// TestHeartbeatsWhileRefused: while the aggregator refuses every chunk
// (409), heartbeats keep arriving with the backlog, the RPO by the
// records' timestamps and the refusal; once chunks are accepted the
// backlog and RPO go to 0 and the refusal clears.
func TestHeartbeatsWhileRefused(t *testing.T) {
	c := newCluster(t)
	prod := newProducer(t, c)
	createTopic(t, prod, "t", 2)
	old := time.Now().Add(-30 * time.Second)
	for i := 0; i < 50; i++ {
		produce(t, prod, &kgo.Record{Topic: "t", Partition: int32(i % 2), Value: []byte(fmt.Sprint(i)), Timestamp: old.Add(time.Duration(i) * time.Millisecond)})
	}
	stub, srv := newHeartbeatStub(t, http.StatusConflict)
	a, stop := runAgent(t, heartbeatConfig(t, c.ListenAddrs(), srv.URL))
	defer stop()

	testkit.Eventually(t, 15*time.Second, "heartbeat with the refused backlog", func() error {
		hb, ok := stub.last()
		if !ok {
			return fmt.Errorf("no heartbeat")
		}
		if hb.BacklogRecords != 50 || hb.BacklogChunks < 1 || hb.BacklogBytes <= 0 || hb.Refused == "" ||
			!strings.Contains(hb.Refused, "409") || !hb.LinkUp || hb.BufferFillRatio <= 0 || hb.Version != "test-1" {
			return fmt.Errorf("heartbeat %+v", hb)
		}
		if hb.RPOSeconds < 30 || hb.RPOSeconds > 60 {
			return fmt.Errorf("rpo %v, want the age of the oldest record (about 30s)", hb.RPOSeconds)
		}
		return nil
	})
	if v := metricValue(t, a.m.rpo); v < 30 {
		t.Errorf("edgemirror_agent_rpo_seconds %v", v)
	}
	if v := metricValue(t, a.m.backlogRecords); v != 50 {
		t.Errorf("edgemirror_agent_backlog_records %v", v)
	}
	stub.set(http.StatusOK)
	testkit.Eventually(t, 15*time.Second, "heartbeat after the drain", func() error {
		hb, _ := stub.last()
		if hb.BacklogRecords != 0 || hb.BacklogChunks != 0 || hb.RPOSeconds != 0 || hb.Refused != "" {
			return fmt.Errorf("heartbeat %+v", hb)
		}
		return nil
	})
	if v := metricValue(t, a.m.rpo); v != 0 {
		t.Errorf("edgemirror_agent_rpo_seconds %v after the drain", v)
	}
	stub.mu.Lock()
	defer stub.mu.Unlock()
	var rate float64
	for _, hb := range stub.beats {
		rate = max(rate, hb.RecordsPerSecond)
		if hb.Epoch == 0 || hb.IntervalSeconds != 0.1 {
			t.Fatalf("heartbeat %+v", hb)
		}
	}
	if rate <= 0 {
		t.Error("no heartbeat reported a records/s rate while 50 records were acknowledged")
	}
	if len(stub.edges) != 1 || !stub.edges["plant-1"] {
		t.Errorf("heartbeats named edges %v", stub.edges)
	}
}

// TestHeartbeatsWhileBlockedBehindASlowLink: chunks crawl over a link
// capped at 32KiB/s and the aggregator never answers them; the buffer
// fills and the reader blocks. Heartbeats still arrive at their interval
// (their own connection, never behind the chunks) and say so.
func TestHeartbeatsWhileBlockedBehindASlowLink(t *testing.T) {
	c := newCluster(t)
	prod := newProducer(t, c)
	createTopic(t, prod, "t", 1)
	value := []byte(strings.Repeat("x", 4000))
	recs := make([]*kgo.Record, 1500) // 6 MB, more than the buffer's budget
	for i := range recs {
		recs[i] = &kgo.Record{Topic: "t", Value: value}
	}
	produce(t, prod, recs...)
	stub, srv := newHeartbeatStub(t, 0)
	cfg := heartbeatConfig(t, c.ListenAddrs(), srv.URL)
	cfg.BufferMaxBytes = buffer.MinMaxBytes
	cfg.BatchBytes = 256 << 10
	cfg.Compression = wire.CodecNone
	cfg.Bandwidth = 32 << 10
	cfg.HeartbeatInterval = 200 * time.Millisecond
	a, err := New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- a.Run(ctx) }()
	defer func() {
		// A reader blocked on a full buffer gives up its last chunk after
		// shutdownFlushTimeout.
		cancel()
		select {
		case err := <-done:
			if err != nil {
				t.Errorf("Run: %v", err)
			}
		case <-time.After(shutdownFlushTimeout + 10*time.Second):
			t.Error("Run did not return after cancel")
		}
	}()

	testkit.Eventually(t, 30*time.Second, "heartbeat from a blocked agent", func() error {
		hb, ok := stub.last()
		if !ok {
			return fmt.Errorf("no heartbeat")
		}
		if !hb.Blocked || hb.BufferFillRatio < 0.5 || hb.EdgeLagRecords <= 0 {
			return fmt.Errorf("heartbeat %+v", hb)
		}
		return nil
	})
	// While a chunk takes seconds to cross the link, heartbeats keep their
	// interval.
	chunkBytes := func() float64 {
		return counterValue(a.m.wireBytes.WithLabelValues("sent")) - counterValue(a.m.heartbeatBytes.WithLabelValues("sent"))
	}
	stub.mu.Lock()
	start := len(stub.beatAt)
	stub.mu.Unlock()
	sentBefore := chunkBytes()
	testkit.Eventually(t, 20*time.Second, "ten more heartbeats", func() error {
		stub.mu.Lock()
		defer stub.mu.Unlock()
		if n := len(stub.beatAt) - start; n < 10 {
			return fmt.Errorf("%d", n)
		}
		return nil
	})
	stub.mu.Lock()
	var worst time.Duration
	for i := start + 1; i < len(stub.beatAt); i++ {
		worst = max(worst, stub.beatAt[i].Sub(stub.beatAt[i-1]))
	}
	if worst > time.Second {
		t.Errorf("a heartbeat came %v after the previous one (interval 200ms) while chunks crawled", worst)
	}
	if sent := chunkBytes() - sentBefore; sent < 32<<10 {
		t.Errorf("only %.0f chunk bytes sent meanwhile: the test did not load the link", sent)
	}
	stub.mu.Unlock()
}

// BenchmarkHeartbeatWireBytes measures the bytes one heartbeat puts on
// the wire (h2c, connection kept open), both directions, and what that is
// per hour at the default interval: for a busy edge (backlog, losses) and
// an idle one (most fields zero, left out).
func BenchmarkHeartbeatWireBytes(b *testing.B) {
	for _, tls := range []bool{false, true} {
		for _, idle := range []bool{false, true} {
			name := map[bool]string{false: "h2c", true: "tls"}[tls] + "/" + map[bool]string{false: "busy", true: "idle"}[idle]
			b.Run(name, func(b *testing.B) { benchmarkHeartbeatWireBytes(b, idle, tls) })
		}
	}
}

func benchmarkHeartbeatWireBytes(b *testing.B, idle, useTLS bool) {
	mux := http.NewServeMux()
	mux.HandleFunc("POST "+wire.PathHeartbeat, func(w http.ResponseWriter, r *http.Request) {
		_, _ = io.Copy(io.Discard, r.Body)
		writeTestJSON(w, 200, map[string]string{"status": "ok"})
	})
	srv := httptest.NewUnstartedServer(mux)
	var p http.Protocols
	p.SetHTTP1(true)
	if useTLS {
		p.SetHTTP2(true)
		srv.EnableHTTP2 = true
		srv.StartTLS()
	} else {
		p.SetUnencryptedHTTP2(true)
		srv.Config.Protocols = &p
		srv.Start()
	}
	defer srv.Close()
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	base, _ := url.Parse(srv.URL)
	m := newMetrics()
	hc := newHeartbeatClient(ctx, newEndpoints(slog.New(slog.DiscardHandler), []*url.URL{base}, nil), nil, m)
	defer hc.CloseIdleConnections()
	if useTLS {
		hc.Transport.(*http.Transport).TLSClientConfig = srv.Client().Transport.(*http.Transport).TLSClientConfig
	}
	cfg := validConfig()
	cfg.EdgeID = "plant-0042"
	hb := &heartbeater{cfg: &cfg, m: m, client: hc, url: func() string { return base.JoinPath(wire.PathHeartbeat).String() }}
	// A realistic heartbeat: a busy edge with a backlog and two loss reasons.
	beat := wire.Heartbeat{Version: "v1.4.0-12-gdeadbee", Epoch: 1<<63 + 12345, SentAt: time.Now().UTC().Truncate(time.Millisecond), IntervalSeconds: 10,
		BacklogChunks: 1234, BacklogRecords: 9876543, BacklogBytes: 987654321, RPOSeconds: 3723.125, EdgeLagRecords: 123456,
		BufferFillRatio: 0.8765, LostRecords: map[string]int64{wire.LossReasonDropOldest: 12345, wire.LossReasonEdgeRetention: 77},
		RecordsPerSecond: 1234.5, ReadPerSecond: 2345.6, LinkUp: true}
	if err := hb.send(ctx, beat); err != nil { // the connection's setup is not counted
		b.Fatal(err)
	}
	sent0, recv0 := counterValue(m.heartbeatBytes.WithLabelValues("sent")), counterValue(m.heartbeatBytes.WithLabelValues("received"))
	if idle {
		beat = wire.Heartbeat{Version: "v1.4.0-12-gdeadbee", Epoch: 1<<63 + 12345, SentAt: time.Now().UTC().Truncate(time.Millisecond),
			IntervalSeconds: 10, BufferFillRatio: 0.0123, LinkUp: true}
	}
	body, _ := json.Marshal(beat)
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		if err := hb.send(ctx, beat); err != nil {
			b.Fatal(err)
		}
	}
	b.StopTimer()
	sent := (counterValue(m.heartbeatBytes.WithLabelValues("sent")) - sent0) / float64(b.N)
	recv := (counterValue(m.heartbeatBytes.WithLabelValues("received")) - recv0) / float64(b.N)
	b.ReportMetric(float64(len(body)), "json-bytes/op")
	b.ReportMetric(sent, "sent-bytes/op")
	b.ReportMetric(recv, "recv-bytes/op")
	b.ReportMetric((sent+recv)*360, "wire-bytes/hour@10s")
}
