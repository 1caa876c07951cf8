package agent

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/edgemirror/edgemirror/aggregator"
	"github.com/edgemirror/edgemirror/buffer"
	"github.com/edgemirror/edgemirror/internal/wire"
)

func response(status int, body string, header http.Header) *http.Response {
	if header == nil {
		header = http.Header{}
	}
	return &http.Response{StatusCode: status, Header: header, Body: io.NopCloser(strings.NewReader(body))}
}

// TestClassify checks the decision table of docs/protocol.md 3.2 for chunk
// 1 of 3 records: which answers delete the chunk, which quarantine it,
// which retry it and how soon, and which error class each one counts.
func TestClassify(t *testing.T) {
	errBody := `{"error":"decode frame 17: checksum mismatch","permanent":true}`
	cases := []struct {
		status     int
		body       string
		retryAfter string
		want       outcome
		wantWait   time.Duration
		wantReason string // substring; "" means the reason must be empty
		wantClass  string // sendErrors label incremented; "" means none
	}{
		{200, `{"seq":1,"records":3,"written":3,"duplicates":0}`, "", outcomeAcked, 0, "", ""},
		{200, `{"seq":1,"records":3,"written":0,"duplicates":3}`, "", outcomeAcked, 0, "", ""},
		// A 2xx proves nothing unless it acknowledges this chunk.
		{200, `{"seq":2,"records":3,"written":3,"duplicates":0}`, "", outcomeUnproven, 0, "without acknowledging chunk 1 (3 records): seq 2", "unacknowledged"},
		{200, `{"seq":1,"written":3,"duplicates":0}`, "", outcomeUnproven, 0, "seq 1, 0 records", "unacknowledged"},
		{200, "<html>ok</html>", "", outcomeUnproven, 0, "no chunk acknowledgement", "unacknowledged"},
		{204, "", "", outcomeUnproven, 0, "empty body", "unacknowledged"},
		{400, errBody, "", outcomeRejected, 0, "400: decode frame 17: checksum mismatch", ""},
		// Only the aggregator saying permanent quarantines a chunk.
		{400, `{"error":"bad route"}`, "", outcomeUnproven, 0, "not a permanent aggregator error", "unacknowledged"},
		{413, "<html>too large</html>", "", outcomeUnproven, 0, "413: Request Entity Too Large (not a permanent", "unacknowledged"},
		{413, `{"error":"chunk too large","permanent":true}`, "", outcomeRejected, 0, "413: chunk too large", ""},
		{422, `{"error":"hub refused","permanent":true}`, "", outcomeRejected, 0, "422: hub refused", ""},
		{401, "", "", outcomeSlow, 0, "401: Unauthorized", "auth"},
		{403, `{"error":"topic not allowed"}`, "", outcomeSlow, 0, "403: topic not allowed", "auth"},
		{409, `{"error":"epoch replaced"}`, "", outcomeSlow, 0, "409: epoch replaced", "conflict"},
		{429, "", "7", outcomeRetry, 7 * time.Second, "429: Too Many Requests", "retryable"},
		{503, `{"error":"hub down"}`, "2", outcomeRetry, 2 * time.Second, "503: hub down", "retryable"},
		{503, "not json", "", outcomeRetry, 0, "503: Service Unavailable", "retryable"},
		{500, "", "", outcomeRetry, 0, "500: Internal Server Error", "retryable"},
		// Retry-After counts only for 429 and 503.
		{500, "", "9", outcomeRetry, 0, "500: ", "retryable"},
		{502, "", "", outcomeRetry, 0, "502: ", "retryable"},
		{404, "", "", outcomeRetry, 0, "404: ", "retryable"},
	}
	for _, tc := range cases {
		name := http.StatusText(tc.status)
		t.Run(strings.ReplaceAll(name, " ", "_")+"_"+tc.retryAfter, func(t *testing.T) {
			m := newMetrics()
			h := http.Header{}
			if tc.retryAfter != "" {
				h.Set("Retry-After", tc.retryAfter)
			}
			out, wait, reason, _ := classify(response(tc.status, tc.body, h), m, 1, 3)
			if out != tc.want {
				t.Errorf("outcome %d, want %d", out, tc.want)
			}
			if wait != tc.wantWait {
				t.Errorf("wait %v, want %v", wait, tc.wantWait)
			}
			if tc.wantReason == "" && reason != "" || !strings.Contains(reason, tc.wantReason) {
				t.Errorf("reason %q, want it to contain %q", reason, tc.wantReason)
			}
			for _, class := range []string{"auth", "conflict", "retryable", "network", "rejected", "unacknowledged"} {
				got := metricValue(t, m.sendErrors.WithLabelValues(class))
				want := 0.0
				if class == tc.wantClass {
					want = 1
				}
				if got != want {
					t.Errorf("send errors{class=%s} = %v, want %v", class, got, want)
				}
			}
		})
	}
}

// TestClassifyBoundsErrorBody checks that a huge error answer is not read
// into memory: only maxErrorBody bytes are consumed.
func TestClassifyBoundsErrorBody(t *testing.T) {
	body := &countingReader{r: strings.NewReader(strings.Repeat("x", 4*maxErrorBody))}
	resp := &http.Response{StatusCode: 500, Header: http.Header{}, Body: io.NopCloser(body)}
	if out, _, _, _ := classify(resp, newMetrics(), 1, 1); out != outcomeRetry {
		t.Fatalf("outcome %d, want retry", out)
	}
	if body.n > maxErrorBody {
		t.Fatalf("classify read %d bytes of the error body, at most %d allowed", body.n, maxErrorBody)
	}
}

type countingReader struct {
	r io.Reader
	n int
}

func (c *countingReader) Read(p []byte) (int, error) {
	n, err := c.r.Read(p)
	c.n += n
	return n, err
}

// TestRetryAfter checks both Retry-After forms (RFC 9110 10.2.3) and the
// five-minute cap.
func TestRetryAfter(t *testing.T) {
	httpDate := func(d time.Duration) string { return time.Now().Add(d).UTC().Format(http.TimeFormat) }
	cases := []struct {
		name     string
		v        string
		min, max time.Duration
	}{
		{"absent", "", 0, 0},
		{"zero seconds", "0", 0, 0},
		{"seconds", "3", 3 * time.Second, 3 * time.Second},
		{"at the cap", "300", 5 * time.Minute, 5 * time.Minute},
		{"seconds above the cap", "301", 5 * time.Minute, 5 * time.Minute},
		{"one day", "86400", 5 * time.Minute, 5 * time.Minute},
		{"negative seconds", "-5", 0, 0},
		{"garbage", "soon", 0, 0},
		{"fraction", "1.5", 0, 0},
		// HTTP-date has one-second resolution and the clock moves between
		// formatting and parsing, hence the ranges.
		{"http date ahead", httpDate(30 * time.Second), 28 * time.Second, 30 * time.Second},
		{"http date in the past", httpDate(-time.Hour), 0, 0},
		{"http date far ahead", httpDate(24 * time.Hour), 5 * time.Minute, 5 * time.Minute},
		{"rfc 850 date ahead", time.Now().Add(time.Minute).UTC().Format(time.RFC850), 58 * time.Second, time.Minute},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			got := retryAfter(tc.v)
			if got < tc.min || got > tc.max {
				t.Fatalf("retryAfter(%q) = %v, want between %v and %v", tc.v, got, tc.min, tc.max)
			}
		})
	}
}

// TestRetryAfterHugeSecondsCapped: a Retry-After whose seconds overflow a
// time.Duration must still be capped at five minutes.
func TestRetryAfterHugeSecondsCapped(t *testing.T) {
	for _, v := range []string{"10000000000", "18446744074", "9223372036854775807"} {
		if got := retryAfter(v); got != 5*time.Minute {
			t.Errorf("retryAfter(%q) = %v, want 5m0s (the cap)", v, got)
		}
	}
}

// newTestShipper returns a shipper over a fresh buffer, talking to base.
func newTestShipper(t *testing.T, ctx context.Context, base string) *shipper {
	t.Helper()
	cfg := validConfig()
	cfg.Aggregator = base
	cfg.BufferDir = t.TempDir()
	cfg.BufferMaxBytes = 16 << 20
	cfg.RequestTimeout = 10 * time.Second
	store, err := buffer.Open(cfg.BufferDir, buffer.Options{MaxBytes: cfg.BufferMaxBytes})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { store.Close() })
	urls, err := parseAggregators(base)
	if err != nil {
		t.Fatal(err)
	}
	log := slog.New(slog.NewTextHandler(io.Discard, nil))
	eps := newEndpoints(log, urls, nil)
	m := newMetrics()
	hc := newHTTPClient(ctx, eps, nil, m)
	t.Cleanup(hc.CloseIdleConnections)
	return &shipper{cfg: &cfg, log: log, store: store, client: hc, eps: eps, m: m}
}

// startRealAggregator runs the real aggregator (its hub is never used by
// these tests) and returns its base URL.
func startRealAggregator(t *testing.T) string {
	t.Helper()
	hub := newCluster(t)
	cfg := aggregator.DefaultConfig()
	cfg.Listen = "127.0.0.1:0"
	cfg.Brokers = hub.ListenAddrs()
	cfg.StateDir = filepath.Join(t.TempDir(), "aggregator")
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

// TestLossReportsDelivered: pending losses reach the real aggregator and
// leave the buffer, exactly as recorded.
func TestLossReportsDelivered(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	base := startRealAggregator(t)
	sh := newTestShipper(t, ctx, base)
	losses := []buffer.Loss{
		{Range: buffer.Range{Topic: "sensors", Partition: 2, First: 1000, Last: 1999, Records: 1000}, Reason: wire.LossReasonDropOldest},
		{Range: buffer.Range{Topic: "sensors", Partition: 0, First: 0, Last: 40, Records: 41}, Reason: wire.LossReasonEdgeRetention},
	}
	if err := sh.store.AdvanceOffsets(nil, losses); err != nil {
		t.Fatal(err)
	}
	if err := sh.sendLosses(ctx); err != nil {
		t.Fatalf("sendLosses: %v", err)
	}
	if pending, _ := sh.store.PendingLosses(); len(pending) != 0 {
		t.Fatalf("%d losses still pending after a delivered report", len(pending))
	}
	var got []wire.LossRange
	resp, err := http.Get(base + wire.PathLosses + "?edge=plant-7")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	if err := json.NewDecoder(resp.Body).Decode(&got); err != nil {
		t.Fatal(err)
	}
	if len(got) != 2 {
		t.Fatalf("aggregator stored %+v, want the 2 ranges", got)
	}
	if v := metricValue(t, sh.m.lossesReported); v != 2 {
		t.Errorf("loss ranges reported %v, want 2", v)
	}
}

// TestLargeLossReportDelivered: protocol section 3 bounds JSON bodies to
// 1 MiB (wire.MaxJSONBytes: "a sender splits larger loss reports"). Many
// pending loss ranges must still reach the aggregator.
func TestLargeLossReportDelivered(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	base := startRealAggregator(t)
	sh := newTestShipper(t, ctx, base)
	topic := strings.Repeat("s", 200)
	var losses []buffer.Loss
	for p := int32(0); p < 5000; p++ {
		losses = append(losses, buffer.Loss{Range: buffer.Range{Topic: topic, Partition: p, First: 0, Last: 9, Records: 10},
			Reason: wire.LossReasonEdgeRetention})
	}
	if err := sh.store.AdvanceOffsets(nil, losses); err != nil {
		t.Fatal(err)
	}
	for i := 0; i < 10; i++ {
		if err := sh.sendLosses(ctx); err != nil {
			t.Logf("attempt %d: %v", i+1, err)
		}
		if pending, _ := sh.store.PendingLosses(); len(pending) == 0 {
			return
		}
	}
	pending, _ := sh.store.PendingLosses()
	t.Fatalf("%d of %d loss ranges still pending after 10 report attempts", len(pending), len(losses))
}

// TestShipperKeepsChunkWithoutAcknowledgement: the chunk is deleted only on
// a 200 whose body acknowledges that chunk (its seq and record count), and
// quarantined only on an aggregator error that says it is permanent. A
// misrouted path or a proxy answering 2xx, or a proxy's own 4xx (a body
// size limit), is retried: the chunk stays until a real answer comes.
func TestShipperKeepsChunkWithoutAcknowledgement(t *testing.T) {
	const records = 3
	good := func(seq uint64) string {
		return fmt.Sprintf(`{"seq":%d,"records":%d,"written":%d,"duplicates":0}`, seq, records, records)
	}
	cases := []struct {
		name   string
		status int
		body   func(seq uint64) string
	}{
		{"200 empty body (proxy)", 200, func(uint64) string { return "" }},
		{"200 html (proxy)", 200, func(uint64) string { return "<html><body>OK</body></html>" }},
		{"204 no content", 204, func(uint64) string { return "" }},
		{"200 acknowledging another chunk", 200, func(seq uint64) string { return good(seq + 1) }},
		{"200 with another record count", 200, func(seq uint64) string {
			return fmt.Sprintf(`{"seq":%d,"records":1,"written":1,"duplicates":0}`, seq)
		}},
		{"413 from a proxy's body limit", 413, func(uint64) string { return "<html>413 Request Entity Too Large</html>" }},
		{"400 not saying permanent", 400, func(uint64) string { return `{"error":"no such route"}` }},
		{"422 not json", 422, func(uint64) string { return "unprocessable" }},
	}
	for _, tc := range cases {
		t.Run(strings.ReplaceAll(tc.name, " ", "_"), func(t *testing.T) {
			var mu sync.Mutex
			requests := 0
			srv := httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
				frame, _ := io.ReadAll(r.Body)
				h, err := wire.ReadHeader(frame)
				if err != nil {
					t.Errorf("unreadable chunk: %v", err)
					return
				}
				mu.Lock()
				requests++
				n := requests
				mu.Unlock()
				if n == 1 {
					w.WriteHeader(tc.status)
					io.WriteString(w, tc.body(h.Seq))
					return
				}
				writeTestJSON(w, 200, json.RawMessage(good(h.Seq)))
			}))
			var p http.Protocols
			p.SetHTTP1(true)
			p.SetUnencryptedHTTP2(true) // the agent speaks h2c to http:// aggregators
			srv.Config.Protocols = &p
			srv.Start()
			defer srv.Close()
			ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
			defer cancel()
			sh := newTestShipper(t, ctx, srv.URL)
			sh.link = newLink()
			sh.cfg.MaxBackoff = 100 * time.Millisecond
			bufferRecords(t, sh.store, records)
			ch, err := sh.store.Lease(ctx)
			if err != nil {
				t.Fatal(err)
			}
			if err := sh.ship(ctx, ch); err != nil {
				t.Fatal(err)
			}
			mu.Lock()
			defer mu.Unlock()
			if requests != 2 {
				t.Errorf("chunk settled after %d request(s), want the first answer retried and the second to settle it", requests)
			}
			if pending, _ := sh.store.PendingLosses(); len(pending) != 0 {
				t.Errorf("chunk quarantined as lost: %+v", pending)
			}
			if st := sh.store.Stats(); st.Chunks != 0 {
				t.Errorf("%d chunks left after the real acknowledgement", st.Chunks)
			}
		})
	}
}

// bufferRecords stores one chunk of n small records.
func bufferRecords(t *testing.T, store *buffer.Store, n int) {
	t.Helper()
	enc, err := wire.NewEncoder(wire.CodecNone, wire.LevelDefault)
	if err != nil {
		t.Fatal(err)
	}
	defer enc.Close()
	var recs []wire.Record
	raw := 0
	for i := 0; i < n; i++ {
		recs = append(recs, wire.Record{Topic: "t", Offset: int64(i), Value: []byte("v")})
		raw += wire.RecordSize(&recs[i])
	}
	seq := store.NextSeq()
	frame, err := enc.Encode(nil, &wire.Chunk{Seq: seq, Topics: []wire.Topic{{Name: "t", Partitions: 1}}, Records: recs})
	if err != nil {
		t.Fatal(err)
	}
	meta := buffer.ChunkMeta{Seq: seq, Records: n, RawBytes: raw,
		Ranges: []buffer.Range{{Topic: "t", First: 0, Last: int64(n - 1), Records: int64(n)}}}
	if err := store.Append(context.Background(), frame, meta, map[buffer.PartitionKey]int64{{Topic: "t"}: int64(n)}); err != nil {
		t.Fatal(err)
	}
}
