package aggregator

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/segmentio/kafka-go"
	"github.com/twmb/franz-go/pkg/kfake"

	"github.com/edgemirror/edgemirror/internal/testcerts"
	"github.com/edgemirror/edgemirror/internal/testkit"
	"github.com/edgemirror/edgemirror/internal/wire"
)

// secureServer is a testServer with authentication and limits, wired as
// Aggregator.Run wires them.
type secureServer struct {
	*testServer
	edgesPath string
	lm        *limitMetrics
	hs        *httptest.Server
}

// newSecureServer serves with the edges file text; with ca set, over TLS
// with a server certificate of that CA and client certificates verified.
func newSecureServer(t testing.TB, hub *kfake.Cluster, edges string, ca *testcerts.CA, mutate func(*Config)) *secureServer {
	t.Helper()
	dir := t.TempDir()
	cfg := testConfig(hub.ListenAddrs(), filepath.Join(dir, "state"))
	cfg.EdgesFile = filepath.Join(dir, "edges")
	if err := os.WriteFile(cfg.EdgesFile, []byte(edges), 0o600); err != nil {
		t.Fatal(err)
	}
	if ca != nil {
		p, err := ca.Issue("server", testcerts.Options{CommonName: "aggregator", Server: true})
		if err != nil {
			t.Fatal(err)
		}
		cfg.TLSCert, cfg.TLSKey, cfg.ClientCA = p.CertFile, p.KeyFile, ca.CertFile
	}
	if mutate != nil {
		mutate(&cfg)
	}
	if err := cfg.Validate(); err != nil {
		t.Fatal(err)
	}
	log := slog.New(slog.NewTextHandler(io.Discard, nil))
	sec, err := newSecurity(&cfg, log)
	if err != nil {
		t.Fatal(err)
	}
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
	m, lm := newMetrics(), newLimitMetrics()
	applyCtx, cancelApply := context.WithCancel(context.Background())
	h := newHub(&cfg, log, client, m)
	srv := &server{cfg: &cfg, log: log, hub: h, state: st, fleet: newFleet(&cfg, log, client, m), dec: dec, m: m,
		edges: make(map[string]*edgeState), stopping: make(chan struct{}), sec: sec, lim: newLimiter(&cfg, log, lm),
		applyCtx: applyCtx, topics: newTopicSyncer(h, &cfg)}
	hs := httptest.NewUnstartedServer(srv.routes())
	if tc := sec.tlsConfig(); tc != nil {
		hs.TLS = tc
		hs.StartTLS()
	} else {
		// As Run serves plain HTTP: HTTP/1.1 and h2c.
		var p http.Protocols
		p.SetHTTP1(true)
		p.SetUnencryptedHTTP2(true)
		hs.Config.Protocols = &p
		hs.Start()
	}
	httpTr := &http.Transport{}
	t.Cleanup(func() {
		httpTr.CloseIdleConnections()
		hs.Close()
		srv.inflight.Wait()
		cancelApply()
		srv.runners.Wait()
		tr.CloseIdleConnections()
		dec.Close()
		st.close()
	})
	ts := &testServer{server: srv, url: hs.URL, client: &http.Client{Transport: httpTr, Timeout: 60 * time.Second}, cfg: &cfg}
	return &secureServer{testServer: ts, edgesPath: cfg.EdgesFile, lm: lm, hs: hs}
}

// withToken is a client sending the bearer token (none if empty).
func (s *secureServer) withToken(token string) *http.Client {
	return &http.Client{Transport: &tokenRT{rt: s.client.Transport, token: token}, Timeout: 60 * time.Second}
}

// tlsClient trusts ca and presents the client certificate (if any).
func tlsClient(t testing.TB, ca *testcerts.CA, client *testcerts.Pair, token string) *http.Client {
	t.Helper()
	pool := x509.NewCertPool()
	pool.AddCert(ca.Cert)
	tc := &tls.Config{RootCAs: pool, MinVersion: tls.VersionTLS12}
	if client != nil {
		c, err := tls.LoadX509KeyPair(client.CertFile, client.KeyFile)
		if err != nil {
			t.Fatal(err)
		}
		// Always sent, even when its CA is not among those the server
		// names (as the agent does).
		tc.GetClientCertificate = func(*tls.CertificateRequestInfo) (*tls.Certificate, error) { return &c, nil }
	}
	tr := &http.Transport{TLSClientConfig: tc, ForceAttemptHTTP2: true}
	t.Cleanup(tr.CloseIdleConnections)
	return &http.Client{Transport: &tokenRT{rt: tr, token: token}, Timeout: 30 * time.Second}
}

type tokenRT struct {
	rt    http.RoundTripper
	token string
}

func (r *tokenRT) RoundTrip(req *http.Request) (*http.Response, error) {
	if r.token != "" {
		req = req.Clone(req.Context())
		req.Header.Set("Authorization", "Bearer "+r.token)
	}
	return r.rt.RoundTrip(req)
}

func chunkReq(edge string, frame []byte) request {
	return request{edge: edge, epoch: "5", floor: "1", body: frame}
}

// hubTopicExists reports whether the hub has the topic.
func hubTopicExists(t testing.TB, hub *kfake.Cluster, topic string) bool {
	t.Helper()
	return len(readHub(t, hub, topic)) > 0
}

func TestTokenIdentityAndTopicRules(t *testing.T) {
	hub := newHubCluster(t)
	f := newFrameBuilder(t)
	edges := tokenLine("e-a", "token-a", "^(sensors|alerts)$") + "\n" + tokenLine("e-b", "token-b", ".*") + "\n"
	s := newSecureServer(t, hub, edges, nil, nil)
	sensors := []wire.Topic{{Name: "sensors", Partitions: 1}}
	frame := f.frame(chunkOf(1, sensors, sensorRecords("sensors", 0, 0, 10)))

	a := post(t, s.withToken("token-a"), s.url, chunkReq("e-a", frame))
	if a.status != 200 || a.ok.Written != 10 {
		t.Fatalf("own edge: %v, want 200 with 10 written", a)
	}
	// Impersonation: e-a's token naming e-b.
	if a := post(t, s.withToken("token-a"), s.url, chunkReq("e-b", frame)); a.status != http.StatusForbidden ||
		!strings.Contains(a.err.Error, "e-a") || a.err.Permanent {
		t.Errorf("token of e-a sending as e-b: %v, want 403 naming e-a, not permanent", a)
	}
	// A topic outside the rule.
	secrets := f.frame(chunkOf(2, []wire.Topic{{Name: "secrets", Partitions: 1}}, sensorRecords("secrets", 0, 0, 5)))
	if a := post(t, s.withToken("token-a"), s.url, chunkReq("e-a", secrets)); a.status != http.StatusForbidden ||
		!strings.Contains(a.err.Error, `"secrets"`) {
		t.Errorf("topic outside the rule: %v, want 403 naming the topic", a)
	}
	// Unknown token, no credential, malformed header.
	for name, c := range map[string]*http.Client{"unknown token": s.withToken("token-x"), "no credential": s.client} {
		if a := post(t, c, s.url, chunkReq("e-a", frame)); a.status != http.StatusUnauthorized {
			t.Errorf("%s: %v, want 401", name, a)
		}
	}
	// The header is only a check: a request without it acts as its credential.
	if a := post(t, s.withToken("token-b"), s.url, request{epoch: "7", floor: "1", noEdge: true, body: frame}); a.status != 200 {
		t.Errorf("token of e-b without the edge header: %v, want 200", a)
	}
	// Resume and loss reports of another edge.
	h := http.Header{}
	h.Set(wire.HeaderEdge, "e-b")
	h.Set(wire.HeaderEpoch, "5")
	var er wire.ErrorResponse
	if code := getJSON(t, s.withToken("token-a"), s.url+wire.PathResume, h, &er); code != http.StatusForbidden {
		t.Errorf("resume of another edge: %d %v, want 403", code, er)
	}
	if code := postLoss(t, s.withToken("token-a"), s.url, "e-b", "sensors", "edge-retention"); code != http.StatusForbidden {
		t.Errorf("loss report as another edge: %d, want 403", code)
	}
	if code := postLoss(t, s.withToken("token-a"), s.url, "e-a", "secrets", "edge-retention"); code != http.StatusForbidden {
		t.Errorf("loss report on a topic outside the rule: %d, want 403", code)
	}
	if code := postLoss(t, s.withToken("token-a"), s.url, "e-a", "sensors", "edge-retention"); code != 200 {
		t.Errorf("own loss report: %d, want 200", code)
	}

	// Nothing of a refused request reached the hub.
	if got := readHub(t, hub, "e-a.sensors"); len(got[0]) != 10 {
		t.Errorf("e-a.sensors holds %d records, want 10", len(got[0]))
	}
	if hubTopicExists(t, hub, "e-a.secrets") {
		t.Error("hub topic of a refused topic was created")
	}
	if n := len(readHub(t, hub, "e-b.sensors")[0]); n != 10 {
		t.Errorf("e-b.sensors holds %d records, want only the 10 of e-b's own chunk", n)
	}
	for _, reason := range []string{refuseImpersonate, refuseTopic, refuseNoCredential} {
		if metricValue(t, s.lm.refused.WithLabelValues(reason)) == 0 {
			t.Errorf("refused_total{reason=%q} not counted", reason)
		}
	}
}

func postLoss(t testing.TB, c *http.Client, base, edge, topic, reason string) int {
	t.Helper()
	body := fmt.Sprintf(`{"ranges":[{"topic":%q,"partition":0,"first_offset":1,"last_offset":2,"records":2,"reason":%q}]}`, topic, reason)
	req, err := http.NewRequest(http.MethodPost, base+wire.PathLosses, strings.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set(wire.HeaderEdge, edge)
	req.Header.Set(wire.HeaderEpoch, "5")
	req.Header.Set("Content-Type", "application/json")
	resp, err := c.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	_, _ = io.Copy(io.Discard, resp.Body)
	return resp.StatusCode
}

func TestCertificateIdentity(t *testing.T) {
	hub := newHubCluster(t)
	f := newFrameBuilder(t)
	dir := t.TempDir()
	ca, err := testcerts.NewCA(dir, "edges-ca")
	if err != nil {
		t.Fatal(err)
	}
	other, err := testcerts.NewCA(t.TempDir(), "other-ca")
	if err != nil {
		t.Fatal(err)
	}
	issue := func(c *testcerts.CA, name string, o testcerts.Options) *testcerts.Pair {
		p, err := c.Issue(name, o)
		if err != nil {
			t.Fatal(err)
		}
		return &p
	}
	certA := issue(ca, "e-a", testcerts.Options{CommonName: "ignored", EdgeURI: "e-a"})
	certCN := issue(ca, "e-c", testcerts.Options{CommonName: "e-c"})
	expired := issue(ca, "e-a-old", testcerts.Options{EdgeURI: "e-a", NotBefore: time.Now().Add(-48 * time.Hour), NotAfter: time.Now().Add(-24 * time.Hour)})
	untrusted := issue(other, "e-a-fake", testcerts.Options{EdgeURI: "e-a"})
	unlisted := issue(ca, "e-z", testcerts.Options{EdgeURI: "e-z"})
	edges := "e-a cert\ne-c cert ^sensors$\n" + tokenLine("e-t", "token-t", ".*") + "\n"
	s := newSecureServer(t, hub, edges, ca, nil)
	frame := f.frame(chunkOf(1, []wire.Topic{{Name: "sensors", Partitions: 1}}, sensorRecords("sensors", 0, 0, 10)))

	if a := post(t, tlsClient(t, ca, certA, ""), s.url, chunkReq("e-a", frame)); a.status != 200 {
		t.Errorf("URI SAN certificate of e-a: %v, want 200", a)
	}
	if a := post(t, tlsClient(t, ca, certCN, ""), s.url, chunkReq("e-c", frame)); a.status != 200 {
		t.Errorf("CN certificate of e-c: %v, want 200", a)
	}
	if a := post(t, tlsClient(t, ca, certA, ""), s.url, chunkReq("e-c", frame)); a.status != http.StatusForbidden {
		t.Errorf("certificate of e-a sending as e-c: %v, want 403", a)
	}
	if a := post(t, tlsClient(t, ca, unlisted, ""), s.url, chunkReq("e-z", frame)); a.status != http.StatusUnauthorized {
		t.Errorf("valid certificate of an edge not in the file: %v, want 401", a)
	}
	if a := post(t, tlsClient(t, ca, nil, "token-t"), s.url, chunkReq("e-t", frame)); a.status != 200 {
		t.Errorf("token edge without a certificate: %v, want 200", a)
	}
	if a := post(t, tlsClient(t, ca, nil, ""), s.url, chunkReq("e-a", frame)); a.status != http.StatusUnauthorized {
		t.Errorf("no certificate and no token: %v, want 401", a)
	}
	for name, c := range map[string]*testcerts.Pair{"expired": expired, "untrusted": untrusted} {
		// The handshake fails (with TLS 1.3 the client may only see the
		// connection reset): no HTTP answer at all.
		if a, err := tryPost(tlsClient(t, ca, c, ""), s.url, chunkReq("e-a", frame)); err == nil {
			t.Errorf("%s certificate: answered %v, want the TLS handshake refused", name, a)
		}
	}
	if n := len(readHub(t, hub, "e-a.sensors")[0]); n != 10 {
		t.Errorf("e-a.sensors holds %d records, want 10", n)
	}
	if hubTopicExists(t, hub, "e-z.sensors") {
		t.Error("topic of an unlisted edge was created")
	}
}

// Reload swaps the edges file; a broken file keeps the old one.
func TestEdgesFileReload(t *testing.T) {
	hub := newHubCluster(t)
	f := newFrameBuilder(t)
	s := newSecureServer(t, hub, tokenLine("e-a", "old-token", ".*"), nil, nil)
	topics := []wire.Topic{{Name: "sensors", Partitions: 1}}
	frame := func(seq uint64) []byte {
		return f.frame(chunkOf(seq, topics, sensorRecords("sensors", 0, int64(seq-1)*5, 5)))
	}
	if a := post(t, s.withToken("old-token"), s.url, chunkReq("e-a", frame(1))); a.status != 200 {
		t.Fatalf("before rotation: %v", a)
	}
	if err := os.WriteFile(s.edgesPath, []byte(tokenLine("e-a", "new-token", ".*")), 0o600); err != nil {
		t.Fatal(err)
	}
	s.sec.reload()
	if a := post(t, s.withToken("old-token"), s.url, chunkReq("e-a", frame(2))); a.status != http.StatusUnauthorized {
		t.Errorf("old token after rotation: %v, want 401", a)
	}
	if a := post(t, s.withToken("new-token"), s.url, chunkReq("e-a", frame(2))); a.status != 200 {
		t.Errorf("new token after rotation: %v, want 200", a)
	}
	if err := os.WriteFile(s.edgesPath, []byte("e-a nonsense"), 0o600); err != nil {
		t.Fatal(err)
	}
	s.sec.reload()
	if a := post(t, s.withToken("new-token"), s.url, chunkReq("e-a", frame(3))); a.status != 200 {
		t.Errorf("after a broken file: %v, want the old file kept (200)", a)
	}
}

func TestPerEdgeLimits(t *testing.T) {
	hub := newHubCluster(t)
	f := newFrameBuilder(t)
	edges := tokenLine("e-a", "token-a", ".*") + "\n" + tokenLine("e-b", "token-b", ".*") + "\n" + tokenLine("e-c", "token-c", ".*")
	s := newSecureServer(t, hub, edges, nil, func(c *Config) {
		c.EdgeRequestRate = 1 // burst 2
		c.MaxEdges = 2
	})
	topics := []wire.Topic{{Name: "sensors", Partitions: 1}}
	frame := f.frame(chunkOf(1, topics, sensorRecords("sensors", 0, 0, 5)))
	var codes []int
	for range 3 {
		codes = append(codes, post(t, s.withToken("token-a"), s.url, chunkReq("e-a", frame)).status)
	}
	if fmt.Sprint(codes) != "[200 200 429]" {
		t.Errorf("three requests at once under --edge-request-rate 1: %v, want [200 200 429]", codes)
	}
	// Another edge does not notice.
	if a := post(t, s.withToken("token-b"), s.url, chunkReq("e-b", frame)); a.status != 200 {
		t.Errorf("other edge: %v, want 200", a)
	}
	// A third edge is beyond --max-edges 2.
	if a := post(t, s.withToken("token-c"), s.url, chunkReq("e-c", frame)); a.status != http.StatusTooManyRequests ||
		!strings.Contains(a.err.Error, "--max-edges") {
		t.Errorf("third edge: %v, want 429 naming --max-edges", a)
	}
}

func TestRecordLimits(t *testing.T) {
	hub := newHubCluster(t)
	f := newFrameBuilder(t)
	s := newSecureServer(t, hub, tokenLine("e-a", "token-a", ".*"), nil, func(c *Config) {
		c.MaxRecordBytes = 1000
		c.MaxRecordHeaders = 3
		c.MaxRecordHeaderBytes = 100
	})
	topics := []wire.Topic{{Name: "sensors", Partitions: 1}}
	rec := func(mut func(*wire.Record)) []byte {
		r := sensorRecords("sensors", 0, 0, 1)
		mut(&r[0])
		return f.frame(chunkOf(1, topics, r))
	}
	cases := map[string][]byte{
		"--max-record-bytes":        rec(func(r *wire.Record) { r.Value = make([]byte, 1001) }),
		"--max-record-headers":      rec(func(r *wire.Record) { r.Headers = make([]wire.Header, 4) }),
		"--max-record-header-bytes": rec(func(r *wire.Record) { r.Headers = []wire.Header{{Key: "k", Value: make([]byte, 100)}} }),
	}
	for flag, frame := range cases {
		if a := post(t, s.withToken("token-a"), s.url, chunkReq("e-a", frame)); a.status != http.StatusRequestEntityTooLarge ||
			!strings.Contains(a.err.Error, flag) {
			t.Errorf("%s: %v, want 413 naming the flag", flag, a)
		}
	}
	if hubTopicExists(t, hub, "e-a.sensors") {
		t.Error("a refused chunk created its hub topic")
	}
}

// The decoded-bytes budget is shared: while it is taken, a chunk waits up
// to --order-wait and is then answered 503; once freed, chunks pass.
func TestDecodedBytesBudget(t *testing.T) {
	hub := newHubCluster(t)
	f := newFrameBuilder(t)
	s := newSecureServer(t, hub, tokenLine("e-a", "token-a", ".*"), nil, func(c *Config) { c.OrderWait = 300 * time.Millisecond })
	frame := f.frame(chunkOf(1, []wire.Topic{{Name: "sensors", Partitions: 1}}, sensorRecords("sensors", 0, 0, 5)))
	release, he := s.lim.reserve(context.Background(), s.lim.memMax)
	if he != nil {
		t.Fatal(he)
	}
	a := post(t, s.withToken("token-a"), s.url, chunkReq("e-a", frame))
	if a.status != http.StatusServiceUnavailable || !strings.Contains(a.err.Error, "--max-decoded-bytes") || a.retryAfter == "" {
		t.Errorf("with the budget taken: %v, want 503 naming --max-decoded-bytes with Retry-After", a)
	}
	release()
	if a := post(t, s.withToken("token-a"), s.url, chunkReq("e-a", frame)); a.status != 200 {
		t.Errorf("after release: %v, want 200", a)
	}
	if v := metricValue(t, s.lm.memInUse); v != 0 {
		t.Errorf("%v bytes still reserved after the chunks finished", v)
	}
}

func TestSourcePartitionBound(t *testing.T) {
	hub := newHubCluster(t)
	f := newFrameBuilder(t)
	s := newSecureServer(t, hub, tokenLine("e-a", "token-a", ".*"), nil, func(c *Config) { c.MaxSourcePartitions = 2 })
	topics := []wire.Topic{{Name: "sensors", Partitions: 3}}
	two := f.frame(chunkOf(1, topics, sensorRecords("sensors", 0, 0, 2), sensorRecords("sensors", 1, 0, 2)))
	if a := post(t, s.withToken("token-a"), s.url, chunkReq("e-a", two)); a.status != 200 {
		t.Fatalf("two partitions: %v", a)
	}
	third := f.frame(chunkOf(2, topics, sensorRecords("sensors", 2, 0, 2)))
	if a := post(t, s.withToken("token-a"), s.url, chunkReq("e-a", third)); a.status != http.StatusTooManyRequests ||
		!strings.Contains(a.err.Error, "--max-source-partitions") {
		t.Errorf("third partition: %v, want 429 naming --max-source-partitions", a)
	}
	if got := readHub(t, hub, "e-a.sensors"); len(got[2]) != 0 {
		t.Errorf("partition 2 was written: %d records", len(got[2]))
	}
}

func TestLossReasonLabelsBounded(t *testing.T) {
	hub := newHubCluster(t)
	s := newSecureServer(t, hub, tokenLine("e-a", "token-a", ".*"), nil, nil)
	for i := range maxLossReasons + 10 {
		if code := postLoss(t, s.withToken("token-a"), s.url, "e-a", "sensors", "reason-"+strconv.Itoa(i)); code != 200 {
			t.Fatalf("loss report %d: %d", i, code)
		}
	}
	if code := postLoss(t, s.withToken("token-a"), s.url, "e-a", "sensors", "bad reason!"); code != http.StatusBadRequest {
		t.Errorf("malformed reason: %d, want 400", code)
	}
	if n := len(s.lim.reasons); n != maxLossReasons {
		t.Errorf("%d reasons held, want %d", n, maxLossReasons)
	}
	if v := metricValue(t, s.m.lost.WithLabelValues("e-a", "other")); v != 10*2 {
		t.Errorf("lost{reason=other} = %v, want 20 (10 reports of 2 records)", v)
	}
}

// A request body that stalls is dropped after --read-timeout; the
// connection of another edge keeps working.
func TestStalledBodyIsDropped(t *testing.T) {
	hub := newHubCluster(t)
	f := newFrameBuilder(t)
	s := newSecureServer(t, hub, tokenLine("e-a", "token-a", ".*")+"\n"+tokenLine("e-b", "token-b", ".*"), nil,
		func(c *Config) { c.ReadTimeout = 300 * time.Millisecond })
	conn, err := net.Dial("tcp", strings.TrimPrefix(s.url, "http://"))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	fmt.Fprintf(conn, "POST %s HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer token-a\r\nEdgemirror-Edge: e-a\r\nEdgemirror-Epoch: 1\r\n"+
		"Edgemirror-Floor: 1\r\nContent-Type: %s\r\nContent-Length: 100000\r\n\r\nEMCH", wire.PathChunks, wire.ContentTypeChunk)
	start := time.Now()
	_ = conn.SetReadDeadline(time.Now().Add(10 * time.Second))
	buf := make([]byte, 512)
	n, _ := conn.Read(buf)
	took := time.Since(start)
	if took > 5*time.Second {
		t.Fatalf("stalled request still open after %v", took)
	}
	if n > 0 && !strings.Contains(string(buf[:n]), "503") {
		t.Errorf("stalled request answered %q, want 503 or a closed connection", buf[:n])
	}
	frame := f.frame(chunkOf(1, []wire.Topic{{Name: "sensors", Partitions: 1}}, sensorRecords("sensors", 0, 0, 5)))
	if a := post(t, s.withToken("token-b"), s.url, chunkReq("e-b", frame)); a.status != 200 {
		t.Errorf("other edge: %v", a)
	}
}

// --read-timeout bounds a stalled body only: a chunk whose body is in and
// which then waits for its predecessor longer than that is applied.
func TestReadTimeoutDoesNotCutWaitingChunk(t *testing.T) {
	hub := newHubCluster(t)
	f := newFrameBuilder(t)
	s := newSecureServer(t, hub, tokenLine("e-a", "token-a", ".*"), nil, func(c *Config) { c.ReadTimeout = 200 * time.Millisecond })
	topics := []wire.Topic{{Name: "sensors", Partitions: 1}}
	c := s.withToken("token-a")
	done := make(chan answer, 1)
	frame2 := f.frame(chunkOf(2, topics, sensorRecords("sensors", 0, 5, 5))) // the encoder is not shared
	go func() {
		a, err := tryPost(c, s.url, request{edge: "e-a", epoch: "5", floor: "1", body: frame2})
		if err != nil {
			a.err.Error = err.Error()
		}
		done <- a
	}()
	testkit.Eventually(t, 5*time.Second, "seq 2 waiting", func() error {
		if v := metricValue(t, s.lm.memInUse); v == 0 {
			return fmt.Errorf("nothing reserved yet")
		}
		return nil
	})
	time.Sleep(3 * s.cfg.ReadTimeout) // let the waiting chunk outlive --read-timeout; not synchronisation
	if a := post(t, c, s.url, chunkReq("e-a", f.frame(chunkOf(1, topics, sensorRecords("sensors", 0, 0, 5))))); a.status != 200 {
		t.Fatalf("seq 1: %v", a)
	}
	if a := <-done; a.status != 200 {
		t.Errorf("seq 2, which waited longer than --read-timeout: %v, want 200", a)
	}
}

// SIGHUP's reload serves a new server certificate to new connections;
// a connection opened before keeps working.
func TestServerCertificateReload(t *testing.T) {
	hub := newHubCluster(t)
	ca, err := testcerts.NewCA(t.TempDir(), "ca")
	if err != nil {
		t.Fatal(err)
	}
	s := newSecureServer(t, hub, tokenLine("e-a", "token-a", ".*"), ca, nil)
	addr := strings.TrimPrefix(s.url, "https://")
	served := func() string {
		t.Helper()
		conn, err := tls.Dial("tcp", addr, &tls.Config{RootCAs: poolWith(ca)})
		if err != nil {
			t.Fatal(err)
		}
		defer conn.Close()
		return conn.ConnectionState().PeerCertificates[0].Subject.CommonName
	}
	if cn := served(); cn != "aggregator" {
		t.Fatalf("serves %q", cn)
	}
	old := tlsClient(t, ca, nil, "token-a")
	h := http.Header{}
	h.Set(wire.HeaderEdge, "e-a")
	h.Set(wire.HeaderEpoch, "1")
	var rr wire.ResumeResponse
	if code := getJSON(t, old, s.url+wire.PathResume, h, &rr); code != 200 {
		t.Fatalf("resume before reload: %d", code)
	}
	// Issue a new certificate into the same files.
	p, err := ca.Issue("server", testcerts.Options{CommonName: "aggregator-2", Server: true})
	if err != nil {
		t.Fatal(err)
	}
	if p.CertFile != s.cfg.TLSCert {
		t.Fatalf("issued into %s, serving %s", p.CertFile, s.cfg.TLSCert)
	}
	s.sec.reload()
	if cn := served(); cn != "aggregator-2" {
		t.Errorf("after reload serves %q, want aggregator-2", cn)
	}
	if code := getJSON(t, old, s.url+wire.PathResume, h, &rr); code != 200 {
		t.Errorf("resume on the connection opened before the reload: %d", code)
	}
	// A broken key keeps the certificate served.
	if err := os.WriteFile(s.cfg.TLSKey, []byte("not a key"), 0o600); err != nil {
		t.Fatal(err)
	}
	s.sec.reload()
	if cn := served(); cn != "aggregator-2" {
		t.Errorf("after a failed reload serves %q, want aggregator-2 kept", cn)
	}
}

func poolWith(ca *testcerts.CA) *x509.CertPool {
	p := x509.NewCertPool()
	p.AddCert(ca.Cert)
	return p
}

// One request held in flight (a chunk waiting for its predecessor) fills
// --max-edge-requests 1 for its edge only, and --max-requests 2 for all.
func TestConcurrencyLimits(t *testing.T) {
	hub := newHubCluster(t)
	f := newFrameBuilder(t)
	edges := tokenLine("e-a", "token-a", ".*") + "\n" + tokenLine("e-b", "token-b", ".*") + "\n" + tokenLine("e-c", "token-c", ".*")
	s := newSecureServer(t, hub, edges, nil, func(c *Config) {
		c.MaxEdgeRequests, c.MaxRequests = 1, 2
		c.OrderWait = 10 * time.Second
	})
	topics := []wire.Topic{{Name: "sensors", Partitions: 1}}
	hold := func(edge, token string) chan answer {
		done := make(chan answer, 1)
		frame := f.frame(chunkOf(2, topics, sensorRecords("sensors", 0, 5, 5))) // the encoder is not shared
		go func() {
			a, err := tryPost(s.withToken(token), s.url, request{edge: edge, epoch: "5", floor: "1", body: frame})
			if err != nil {
				a.err.Error = err.Error()
			}
			done <- a
		}()
		return done
	}
	heldA := hold("e-a", "token-a")
	testkit.Eventually(t, 5*time.Second, "e-a's chunk waiting", func() error {
		s.lim.mu.Lock()
		defer s.lim.mu.Unlock()
		if el := s.lim.edges["e-a"]; el == nil || el.inflight != 1 {
			return fmt.Errorf("not in flight yet")
		}
		return nil
	})
	seq1 := func(edge, token string) answer {
		return post(t, s.withToken(token), s.url, chunkReq(edge, f.frame(chunkOf(1, topics, sensorRecords("sensors", 0, 0, 5)))))
	}
	if a := seq1("e-a", "token-a"); a.status != http.StatusTooManyRequests || !strings.Contains(a.err.Error, "--max-edge-requests") {
		t.Errorf("second request of e-a: %v, want 429 naming --max-edge-requests", a)
	}
	heldB := hold("e-b", "token-b")
	testkit.Eventually(t, 5*time.Second, "e-b's chunk waiting", func() error {
		if n := len(s.lim.total); n != 2 {
			return fmt.Errorf("%d requests in flight", n)
		}
		return nil
	})
	if a := seq1("e-c", "token-c"); a.status != http.StatusServiceUnavailable || !strings.Contains(a.err.Error, "--max-requests") {
		t.Errorf("third request in all: %v, want 503 naming --max-requests", a)
	}
	// Held chunks give up at once, as at shutdown.
	close(s.stopping)
	for _, ch := range []chan answer{heldA, heldB} {
		if a := <-ch; a.status != http.StatusServiceUnavailable {
			t.Errorf("held chunk at shutdown: %v", a)
		}
	}
}
