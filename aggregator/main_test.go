package aggregator

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"path/filepath"
	"strconv"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"
	"github.com/segmentio/kafka-go"
	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kfake"
	"github.com/twmb/franz-go/pkg/kgo"
	"go.uber.org/goleak"

	"github.com/edgemirror/edgemirror/internal/provenance"
	"github.com/edgemirror/edgemirror/internal/testkit"
	"github.com/edgemirror/edgemirror/internal/wire"
)

// TestMain fails the package if any goroutine outlives the tests. Only
// goroutines of the in-process Kafka (kfake) and of franz-go clients, which
// stop asynchronously after Close, are ignored.
func TestMain(m *testing.M) { goleak.VerifyTestMain(m, testkit.LeakOptions()...) }

func newHubCluster(t testing.TB) *kfake.Cluster { return testkit.Cluster(t) }

// brokers is a hub cluster: kfake's, or a real one (build tag realkafka).
type brokers interface{ ListenAddrs() []string }

func testConfig(brokers []string, stateDir string) Config {
	cfg := DefaultConfig()
	cfg.Listen = "127.0.0.1:0"
	cfg.Brokers = brokers
	cfg.StateDir = stateDir
	cfg.HubTimeout = 10 * time.Second
	cfg.OrderWait = 5 * time.Second
	cfg.ShutdownTimeout = 10 * time.Second
	return cfg
}

// testServer is the HTTP side of an aggregator, wired as Aggregator.Run
// wires it, behind an httptest server, so tests can look inside.
type testServer struct {
	*server
	url    string
	client *http.Client
	cfg    *Config
}

// newTestServer starts a server writing to the hub cluster with a state
// directory of its own unless one is given.
func newTestServer(t testing.TB, hub brokers, stateDir string, mutate func(*Config)) *testServer {
	t.Helper()
	if stateDir == "" {
		stateDir = filepath.Join(t.TempDir(), "state")
	}
	cfg := testConfig(hub.ListenAddrs(), stateDir)
	if mutate != nil {
		mutate(&cfg)
	}
	if err := cfg.Validate(); err != nil {
		t.Fatal(err)
	}
	log := slog.New(slog.NewTextHandler(io.Discard, nil))
	st, err := openState(cfg.StateDir)
	if err != nil {
		t.Fatal(err)
	}
	dec, err := wire.NewDecoder(wire.Limits{MaxFrameBytes: int(cfg.MaxChunkBytes), MaxRawBytes: int(cfg.MaxRawBytes)})
	if err != nil {
		t.Fatal(err)
	}
	tr := &kafka.Transport{ClientID: "aggregator-test", DialTimeout: 5 * time.Second, MetadataTTL: time.Second}
	client := &kafka.Client{Addr: kafka.TCP(cfg.Brokers...), Transport: tr, Timeout: cfg.HubTimeout}
	m := newMetrics()
	applyCtx, cancelApply := context.WithCancel(context.Background())
	h := newHub(&cfg, log, client, m)
	srv := &server{cfg: &cfg, log: log, hub: h, state: st, fleet: newFleet(&cfg, log, client, m), dec: dec, m: m,
		edges: make(map[string]*edgeState), stopping: make(chan struct{}), applyCtx: applyCtx,
		topics: newTopicSyncer(h, &cfg)}
	hs := httptest.NewServer(srv.routes())
	httpTr := &http.Transport{}
	t.Cleanup(func() {
		// As at shutdown: waiting chunks and lingering transactions
		// stop waiting, then the requests and hub writers finish.
		close(srv.stopping)
		httpTr.CloseIdleConnections()
		hs.Close()
		srv.inflight.Wait()
		cancelApply()
		srv.runners.Wait()
		tr.CloseIdleConnections()
		dec.Close()
		st.close()
	})
	return &testServer{server: srv, url: hs.URL, client: &http.Client{Transport: httpTr, Timeout: 60 * time.Second}, cfg: &cfg}
}

// frameBuilder encodes chunks with the agent's default codec.
type frameBuilder struct {
	t   testing.TB
	enc *wire.Encoder
}

func newFrameBuilder(t testing.TB) *frameBuilder {
	t.Helper()
	enc, err := wire.NewEncoder(wire.CodecZstd, wire.LevelDefault)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(enc.Close)
	return &frameBuilder{t: t, enc: enc}
}

func (f *frameBuilder) frame(c *wire.Chunk) []byte {
	f.t.Helper()
	b, err := f.enc.Encode(nil, c)
	if err != nil {
		f.t.Fatal(err)
	}
	return b
}

// sensorRecords returns n records of topic/partition from offset first on,
// with values like a sensor's JSON reading.
func sensorRecords(topic string, partition int32, first int64, n int) []wire.Record {
	recs := make([]wire.Record, n)
	for i := range recs {
		off := first + int64(i)
		recs[i] = wire.Record{
			Topic: topic, Partition: partition, Offset: off,
			Timestamp: 1700000000000 + off,
			Key:       []byte("sensor-" + strconv.Itoa(int(off%50))),
			Value:     fmt.Appendf(nil, `{"site":"plant-7","line":%d,"sensor":"temp-%02d","seq":%d,"celsius":%.2f,"status":"ok","unit":"C"}`, partition, off%50, off, 20+float64(off%700)/100),
			Headers:   []wire.Header{{Key: "content-type", Value: []byte("application/json")}},
		}
	}
	return recs
}

func chunkOf(seq uint64, topics []wire.Topic, recs ...[]wire.Record) *wire.Chunk {
	c := &wire.Chunk{Seq: seq, Topics: topics}
	for _, r := range recs {
		c.Records = append(c.Records, r...)
	}
	return c
}

// answer is a decoded response of the chunk API.
type answer struct {
	status     int
	retryAfter string
	ok         wire.ChunkResponse
	err        wire.ErrorResponse
	took       time.Duration
}

func (a answer) String() string {
	if a.status == 200 {
		return fmt.Sprintf("200 %+v", a.ok)
	}
	return fmt.Sprintf("%d (Retry-After %q) %+v", a.status, a.retryAfter, a.err)
}

// request describes a chunk request; zero fields take sane values.
type request struct {
	edge, epoch, floor string
	contentType        string
	noEdge, noFloor    bool
	body               []byte
	chunked            bool // no Content-Length
}

// post sends a chunk request and decodes the answer; it must be called
// from the test goroutine.
func post(t testing.TB, client *http.Client, base string, r request) answer {
	t.Helper()
	a, err := tryPost(client, base, r)
	if err != nil {
		t.Fatal(err)
	}
	return a
}

// tryPost is post for other goroutines.
func tryPost(client *http.Client, base string, r request) (answer, error) {
	var body io.Reader = bytes.NewReader(r.body)
	if r.chunked {
		body = io.MultiReader(bytes.NewReader(r.body)) // hides the length
	}
	req, err := http.NewRequest(http.MethodPost, base+wire.PathChunks, body)
	if err != nil {
		return answer{}, err
	}
	if !r.noEdge {
		req.Header.Set(wire.HeaderEdge, r.edge)
	}
	req.Header.Set(wire.HeaderEpoch, r.epoch)
	if !r.noFloor {
		req.Header.Set(wire.HeaderFloor, r.floor)
	}
	ct := r.contentType
	if ct == "" {
		ct = wire.ContentTypeChunk
	}
	req.Header.Set("Content-Type", ct)
	start := time.Now()
	resp, err := client.Do(req)
	if err != nil {
		return answer{}, fmt.Errorf("POST chunk: %w", err)
	}
	defer resp.Body.Close()
	a := answer{status: resp.StatusCode, retryAfter: resp.Header.Get("Retry-After"), took: time.Since(start)}
	raw, _ := io.ReadAll(resp.Body)
	if ct := resp.Header.Get("Content-Type"); ct != wire.ContentTypeJSON {
		return a, fmt.Errorf("answer %d has Content-Type %q", resp.StatusCode, ct)
	}
	if a.status == 200 {
		err = json.Unmarshal(raw, &a.ok)
	} else {
		err = json.Unmarshal(raw, &a.err)
	}
	if err != nil {
		return a, fmt.Errorf("answer %d: body %q: %w", resp.StatusCode, raw, err)
	}
	return a, nil
}

// send posts a frame for edge with epoch and floor, from the test goroutine.
func (s *testServer) send(t testing.TB, edge string, epoch, floor uint64, frame []byte) answer {
	t.Helper()
	a, err := s.trySend(edge, epoch, floor, frame)
	if err != nil {
		t.Fatal(err)
	}
	return a
}

// trySend is send for other goroutines.
func (s *testServer) trySend(edge string, epoch, floor uint64, frame []byte) (answer, error) {
	return tryPost(s.client, s.url, request{edge: edge, epoch: strconv.FormatUint(epoch, 10),
		floor: strconv.FormatUint(floor, 10), body: frame})
}

func getJSON(t testing.TB, client *http.Client, url string, header http.Header, v any) int {
	t.Helper()
	req, err := http.NewRequest(http.MethodGet, url, nil)
	if err != nil {
		t.Fatal(err)
	}
	for k, vs := range header {
		req.Header[k] = vs
	}
	resp, err := client.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	if err := json.NewDecoder(resp.Body).Decode(v); err != nil {
		t.Fatalf("GET %s: %v", url, err)
	}
	return resp.StatusCode
}

func (s *testServer) resume(t testing.TB, edge string, epoch uint64) wire.ResumeResponse {
	t.Helper()
	var rr wire.ResumeResponse
	h := http.Header{}
	h.Set(wire.HeaderEdge, edge)
	h.Set(wire.HeaderEpoch, strconv.FormatUint(epoch, 10))
	if code := getJSON(t, s.client, s.url+wire.PathResume, h, &rr); code != 200 {
		t.Fatalf("resume: status %d", code)
	}
	return rr
}

// readHub reads every record of a hub topic, per partition, in offset order.
func readHub(t testing.TB, hub *kfake.Cluster, topic string) map[int32][]*kgo.Record {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	adm, err := kgo.NewClient(kgo.SeedBrokers(hub.ListenAddrs()...))
	if err != nil {
		t.Fatal(err)
	}
	defer adm.Close()
	ends, err := kadm.NewClient(adm).ListEndOffsets(ctx, topic)
	if err != nil {
		t.Fatal(err)
	}
	want := map[int32]int64{}
	offsets := map[int32]kgo.Offset{}
	ends.Each(func(o kadm.ListedOffset) {
		if errors.Is(o.Err, kerr.UnknownTopicOrPartition) {
			return // no such topic: nothing written
		}
		if o.Err != nil {
			t.Errorf("end offset of %s/%d: %v", o.Topic, o.Partition, o.Err)
			return
		}
		if o.Offset > 0 {
			want[o.Partition] = o.Offset
			offsets[o.Partition] = kgo.NewOffset().AtStart()
		}
	})
	out := map[int32][]*kgo.Record{}
	if len(want) == 0 {
		return out
	}
	cl, err := kgo.NewClient(kgo.SeedBrokers(hub.ListenAddrs()...),
		kgo.ConsumePartitions(map[string]map[int32]kgo.Offset{topic: offsets}), kgo.KeepControlRecords())
	if err != nil {
		t.Fatal(err)
	}
	defer cl.Close()
	for {
		done := true
		for p, end := range want {
			if n := len(out[p]); n == 0 || out[p][n-1].Offset < end-1 {
				done = false
			}
		}
		if done {
			for p, recs := range out {
				out[p] = testkit.Committed(recs) // what a read_committed consumer sees
			}
			return out
		}
		fs := cl.PollFetches(ctx)
		if err := ctx.Err(); err != nil {
			t.Fatalf("read hub topic %s: %v (have %d partitions)", topic, err, len(out))
		}
		fs.EachError(func(_ string, p int32, err error) { t.Fatalf("read hub %s/%d: %v", topic, p, err) })
		fs.EachRecord(func(r *kgo.Record) { out[r.Partition] = append(out[r.Partition], r) })
	}
}

// origins returns the provenance of hub records, failing on any record
// without it.
func origins(t testing.TB, recs []*kgo.Record) []provenance.Origin {
	t.Helper()
	out := make([]provenance.Origin, len(recs))
	for i, r := range recs {
		hs := make([]wire.Header, len(r.Headers))
		for j, h := range r.Headers {
			hs[j] = wire.Header{Key: h.Key, Value: h.Value}
		}
		o, ok := provenance.Parse(hs)
		if !ok {
			t.Fatalf("hub record %s/%d@%d has no provenance: %v", r.Topic, r.Partition, r.Offset, r.Headers)
		}
		out[i] = o
	}
	return out
}

// sourceOffsets lists the source offsets of hub records in hub order.
func sourceOffsets(t testing.TB, recs []*kgo.Record) []int64 {
	t.Helper()
	var out []int64
	for _, o := range origins(t, recs) {
		out = append(out, o.Offset)
	}
	return out
}

func seqOffsets(first, n int64) []int64 {
	out := make([]int64, n)
	for i := range out {
		out[i] = first + int64(i)
	}
	return out
}

func metricValue(t testing.TB, c prometheus.Metric) float64 {
	t.Helper()
	var m dto.Metric
	if err := c.Write(&m); err != nil {
		t.Fatal(err)
	}
	switch {
	case m.Counter != nil:
		return m.Counter.GetValue()
	case m.Gauge != nil:
		return m.Gauge.GetValue()
	}
	t.Fatalf("metric %v is neither counter nor gauge", c.Desc())
	return 0
}
