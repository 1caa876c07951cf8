package e2e

import (
	"bytes"
	"context"
	"crypto/sha256"
	"crypto/tls"
	"crypto/x509"
	"encoding/hex"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kfake"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/edgemirror/edgemirror/internal/testcerts"
	"github.com/edgemirror/edgemirror/internal/testkit"
	"github.com/edgemirror/edgemirror/internal/wire"
	"github.com/edgemirror/edgemirror/test/internal/harness"
)

// pki is the certificates of the security suite: the aggregator's server CA
// and certificate, the CA of edge client certificates, and a CA nobody
// trusts.
type pki struct {
	server    *testcerts.CA
	serverKey testcerts.Pair
	clients   *testcerts.CA
	untrusted *testcerts.CA
	dir       string
}

func newPKI(t *testing.T) *pki {
	t.Helper()
	dir := t.TempDir()
	p := &pki{dir: dir}
	var err error
	if p.server, err = testcerts.NewCA(dir, "server-ca"); err != nil {
		t.Fatal(err)
	}
	if p.serverKey, err = p.server.Issue("aggregator", testcerts.Options{CommonName: "aggregator", Server: true}); err != nil {
		t.Fatal(err)
	}
	if p.clients, err = testcerts.NewCA(dir, "edges-ca"); err != nil {
		t.Fatal(err)
	}
	udir := filepath.Join(dir, "untrusted")
	if err := os.Mkdir(udir, 0o700); err != nil {
		t.Fatal(err)
	}
	if p.untrusted, err = testcerts.NewCA(udir, "untrusted-ca"); err != nil {
		t.Fatal(err)
	}
	return p
}

func (p *pki) client(t *testing.T, ca *testcerts.CA, name string, o testcerts.Options) testcerts.Pair {
	t.Helper()
	c, err := ca.Issue(name, o)
	if err != nil {
		t.Fatal(err)
	}
	return c
}

// httpsClient trusts the server CA and always presents cert (if any), as
// the agent does.
func (p *pki) httpsClient(t *testing.T, cert *testcerts.Pair) *http.Client {
	t.Helper()
	pool := x509.NewCertPool()
	pool.AddCert(p.server.Cert)
	tc := &tls.Config{RootCAs: pool, MinVersion: tls.VersionTLS12}
	if cert != nil {
		c, err := tls.LoadX509KeyPair(cert.CertFile, cert.KeyFile)
		if err != nil {
			t.Fatal(err)
		}
		tc.GetClientCertificate = func(*tls.CertificateRequestInfo) (*tls.Certificate, error) { return &c, nil }
	}
	tr := &http.Transport{TLSClientConfig: tc, ForceAttemptHTTP2: true}
	t.Cleanup(tr.CloseIdleConnections)
	return &http.Client{Transport: tr, Timeout: 30 * time.Second}
}

func tokenHash(tok string) string {
	sum := sha256.Sum256([]byte(tok))
	return "token:sha256:" + hex.EncodeToString(sum[:])
}

// frameOf encodes a valid chunk of n records of topic, partition 0.
func frameOf(t *testing.T, seq uint64, topic string, n int) []byte { // offsets 0..n-1
	t.Helper()
	enc, err := wire.NewEncoder(wire.CodecZstd, wire.LevelDefault)
	if err != nil {
		t.Fatal(err)
	}
	defer enc.Close()
	c := &wire.Chunk{Seq: seq, Topics: []wire.Topic{{Name: topic, Partitions: 1}}}
	for i := range n {
		c.Records = append(c.Records, wire.Record{Topic: topic, Offset: int64(i), Timestamp: time.Now().UnixMilli(),
			Key: []byte("k"), Value: []byte("attacker value " + strconv.Itoa(i))})
	}
	b, err := enc.Encode(nil, c)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// outcome is what a hostile request got: an HTTP status, or a transport
// error (a refused TLS handshake).
type outcome struct {
	status int
	body   string
	err    error
}

func (o outcome) String() string {
	if o.err != nil {
		return "no HTTP answer: " + o.err.Error()
	}
	return fmt.Sprintf("%d %s", o.status, strings.TrimSpace(o.body))
}

func sendChunk(c *http.Client, base, edge, token string, frame []byte) outcome {
	req, err := http.NewRequest(http.MethodPost, base+wire.PathChunks, bytes.NewReader(frame))
	if err != nil {
		return outcome{err: err}
	}
	req.Header.Set(wire.HeaderEdge, edge)
	req.Header.Set(wire.HeaderEpoch, "424242")
	// The floor is the chunk's own seq: a hand-built chunk never waits for
	// an earlier one.
	floor := uint64(1)
	if h, err := wire.ReadHeader(frame); err == nil && h.Seq > 0 {
		floor = h.Seq
	}
	req.Header.Set(wire.HeaderFloor, strconv.FormatUint(floor, 10))
	req.Header.Set("Content-Type", wire.ContentTypeChunk)
	if token != "" {
		req.Header.Set("Authorization", "Bearer "+token)
	}
	resp, err := c.Do(req)
	if err != nil {
		return outcome{err: err}
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(io.LimitReader(resp.Body, 4096))
	return outcome{status: resp.StatusCode, body: string(b)}
}

func hubTopics(t *testing.T, ctx context.Context, brokers []string) []string {
	t.Helper()
	cl, err := kgo.NewClient(kgo.SeedBrokers(brokers...))
	if err != nil {
		t.Fatal(err)
	}
	defer cl.Close()
	td, err := kadm.NewClient(cl).ListTopics(ctx)
	if err != nil {
		t.Fatal(err)
	}
	// edgemirror's own topics (_edgemirror.status, ...) are not an edge's.
	var names []string
	for _, n := range td.Names() {
		if !strings.HasPrefix(n, "_") {
			names = append(names, n)
		}
	}
	sort.Strings(names)
	return names
}

// TestHostileIdentities runs the real binaries with TLS, client
// certificates, tokens and topic rules, while a legitimate edge mirrors:
// every hostile class gets its status, the hub gets nothing of theirs (no
// record, no topic), and the legitimate edge's records arrive exactly once.
func TestHostileIdentities(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 4*time.Minute)
	defer cancel()
	edgeKafka, hubKafka := fake{testkit.Cluster(t)}, fake{testkit.Cluster(t)}
	p := newPKI(t)
	legitCert := p.client(t, p.clients, "legit", testcerts.Options{EdgeURI: "legit"})
	certB := p.client(t, p.clients, "cert-b", testcerts.Options{CommonName: "cert-b"})
	expired := p.client(t, p.clients, "legit-expired", testcerts.Options{EdgeURI: "legit",
		NotBefore: time.Now().Add(-48 * time.Hour), NotAfter: time.Now().Add(-time.Hour)})
	forged := p.client(t, p.untrusted, "legit-forged", testcerts.Options{EdgeURI: "legit"})

	edgesFile := filepath.Join(p.dir, "edges")
	writeEdges := func(tokA string) {
		t.Helper()
		text := strings.Join([]string{
			"# edge-id  credential  topics",
			"legit   cert   ^legit-.*$",
			"cert-b  cert   .*",
			"tok-a   " + tokenHash(tokA) + "   ^tok-a-.*$",
			"tok-b   " + tokenHash("token-of-b") + "   .*",
		}, "\n") + "\n"
		if err := os.WriteFile(edgesFile, []byte(text), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	writeEdges("token-of-a")
	agg := harness.StartSecureAggregator(t, hubKafka.Brokers(), p.serverKey.CertFile, p.serverKey.KeyFile, p.server.CertFile,
		"--client-ca", p.clients.CertFile, "--edges-file", edgesFile,
		"--read-header-timeout", "1s", "--read-timeout", "1s", "--order-wait", "2s",
		"--max-decoded-bytes", "96MiB", "--max-raw-bytes", "16MiB")

	// The legitimate edge mirrors all along.
	prod, err := harness.NewProducer(edgeKafka.Brokers())
	if err != nil {
		t.Fatal(err)
	}
	defer prod.Close()
	const topic = "legit-data"
	if err := prod.CreateTopic(ctx, topic, 3, nil); err != nil {
		t.Fatal(err)
	}
	if err := prod.Produce(ctx, topic, 3, 300); err != nil {
		t.Fatal(err)
	}
	agent := harness.StartAgent(t, "legit", edgeKafka.Brokers(), agg.URL, "", "--topics", "legit-.*",
		"--tls-ca", p.server.CertFile, "--tls-cert", legitCert.CertFile, "--tls-key", legitCert.KeyFile)
	var bg sync.WaitGroup
	bgCtx, stopBG := context.WithCancel(ctx)
	bg.Add(1)
	go func() {
		defer bg.Done()
		for bgCtx.Err() == nil {
			if err := prod.Produce(bgCtx, topic, 3, 30); err != nil {
				return
			}
			select {
			case <-bgCtx.Done():
			case <-time.After(100 * time.Millisecond):
			}
		}
	}()

	anon := p.httpsClient(t, nil)
	refusals := []struct {
		class string
		do    func() outcome
		want  int // 0: the TLS handshake is refused, no HTTP status
	}{
		{"mTLS impersonation (cert of cert-b as legit)", func() outcome {
			return sendChunk(p.httpsClient(t, &certB), agg.URL, "legit", "", frameOf(t, 1, "legit-evil", 5))
		}, http.StatusForbidden},
		{"token impersonation (token of tok-b as tok-a)", func() outcome {
			return sendChunk(anon, agg.URL, "tok-a", "token-of-b", frameOf(t, 1, "tok-a-evil", 5))
		}, http.StatusForbidden},
		{"topic outside the edge's rule", func() outcome {
			return sendChunk(anon, agg.URL, "tok-a", "token-of-a", frameOf(t, 1, "secret", 5))
		}, http.StatusForbidden},
		{"unknown token", func() outcome {
			return sendChunk(anon, agg.URL, "tok-a", "guessed-token", frameOf(t, 1, "tok-a-evil", 5))
		}, http.StatusUnauthorized},
		{"no credential", func() outcome {
			return sendChunk(anon, agg.URL, "legit", "", frameOf(t, 1, "legit-evil", 5))
		}, http.StatusUnauthorized},
		{"expired client certificate", func() outcome {
			return sendChunk(p.httpsClient(t, &expired), agg.URL, "legit", "", frameOf(t, 1, "legit-evil", 5))
		}, 0},
		{"client certificate of an untrusted CA", func() outcome {
			return sendChunk(p.httpsClient(t, &forged), agg.URL, "legit", "", frameOf(t, 1, "legit-evil", 5))
		}, 0},
		{"plain HTTP to the TLS port", func() outcome {
			return sendChunk(http.DefaultClient, "http://"+agg.Addr, "legit", "", frameOf(t, 1, "legit-evil", 5))
		}, http.StatusBadRequest},
		{"oversized chunk announced", func() outcome {
			req, _ := http.NewRequest(http.MethodPost, agg.URL+wire.PathChunks, io.LimitReader(zeros{}, 1<<30))
			req.ContentLength = 1 << 30
			req.Header.Set("Authorization", "Bearer token-of-a")
			req.Header.Set(wire.HeaderEdge, "tok-a")
			req.Header.Set(wire.HeaderEpoch, "1")
			req.Header.Set(wire.HeaderFloor, "1")
			req.Header.Set("Content-Type", wire.ContentTypeChunk)
			resp, err := anon.Do(req)
			if err != nil {
				return outcome{err: err}
			}
			defer resp.Body.Close()
			b, _ := io.ReadAll(resp.Body)
			return outcome{status: resp.StatusCode, body: string(b)}
		}, http.StatusRequestEntityTooLarge},
	}
	for _, r := range refusals {
		o := r.do()
		t.Logf("refusal class %-50s -> %s", r.class, o)
		switch {
		case r.want == 0 && o.err == nil:
			t.Errorf("%s: answered %s, want the TLS handshake refused", r.class, o)
		case r.want != 0 && o.status != r.want:
			t.Errorf("%s: got %s, want %d", r.class, o, r.want)
		}
	}

	// A legitimate token edge writes, then its token is rotated: after
	// SIGHUP the old one is refused and the new one works.
	if o := sendChunk(anon, agg.URL, "tok-a", "token-of-a", frameOf(t, 1, "tok-a-ok", 5)); o.status != 200 {
		t.Fatalf("tok-a before rotation: %s", o)
	}
	writeEdges("rotated-token-of-a")
	if err := agg.Signal(syscall.SIGHUP); err != nil {
		t.Fatal(err)
	}
	testkit.Eventually(t, 10*time.Second, "old token refused after SIGHUP", func() error {
		if o := sendChunk(anon, agg.URL, "tok-a", "token-of-a", frameOf(t, 2, "tok-a-ok", 5)); o.status != http.StatusUnauthorized {
			return fmt.Errorf("old token: %s", o)
		}
		return nil
	})
	t.Logf("refusal class %-50s -> 401 (after SIGHUP)", "old token after rotation")
	// Seq 3: seq 2 was refused above, and a seq sent before with other
	// content would be refused as a rolled-back buffer.
	if o := sendChunk(anon, agg.URL, "tok-a", "rotated-token-of-a", frameOf(t, 3, "tok-a-ok", 10)); o.status != 200 {
		t.Errorf("new token after rotation: %s", o)
	}

	// Slowloris (headers that never end, a body that stalls) and headers
	// over the limit, on raw HTTP/1.1 connections.
	for _, raw := range []struct{ name, req, want string }{
		{"headers dribbled past --read-header-timeout", "POST /v1/chunks HTTP/1.1\r\nHost: x\r\n", "connection closed"},
		{"body stalled past --read-timeout", "POST /v1/chunks HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer token-of-b\r\n" +
			"Edgemirror-Edge: tok-b\r\nEdgemirror-Epoch: 1\r\nEdgemirror-Floor: 1\r\nContent-Type: " + wire.ContentTypeChunk +
			"\r\nContent-Length: 500000\r\n\r\nEMCH", "503"},
		{"request headers over --max-request-header-bytes", "GET /v1/resume HTTP/1.1\r\nHost: x\r\nX-Pad: " +
			strings.Repeat("a", 80<<10) + "\r\n\r\n", "431"},
	} {
		name, req := raw.name, raw.req
		start := time.Now()
		conn, err := tls.Dial("tcp", agg.Addr, &tls.Config{RootCAs: poolOf(p.server), NextProtos: []string{"http/1.1"}})
		if err != nil {
			t.Fatal(err)
		}
		if _, err := io.WriteString(conn, req); err != nil {
			t.Fatal(err)
		}
		_ = conn.SetReadDeadline(time.Now().Add(15 * time.Second))
		b, _ := io.ReadAll(conn)
		conn.Close()
		took := time.Since(start)
		status := "connection closed"
		if f := strings.Fields(string(b)); len(f) > 1 {
			status = f[1]
		}
		t.Logf("refusal class %-50s -> %s after %s", name, status, took.Round(10*time.Millisecond))
		if took > 10*time.Second {
			t.Errorf("%s: connection held for %v", name, took)
		}
		if status != raw.want {
			t.Errorf("%s: %s, want %s", name, status, raw.want)
		}
	}

	// Memory: an authenticated edge floods incompressible 8 MiB chunks at
	// once; the decoded-bytes budget makes the excess wait or get 503.
	big := incompressibleFrame(t, 8<<20)
	var wg sync.WaitGroup
	codes := make([]int, 24)
	bodies := make([]string, 24)
	flood := p.httpsClient(t, nil)
	for i := range codes {
		wg.Add(1)
		go func() {
			defer wg.Done()
			o := sendChunk(flood, agg.URL, "tok-b", "token-of-b", big)
			codes[i], bodies[i] = o.status, o.String()
		}()
	}
	wg.Wait()
	for i, c := range codes {
		if c != 200 {
			t.Logf("flood chunk %d: %s", i, bodies[i])
			break
		}
	}
	sort.Ints(codes)
	t.Logf("refusal class %-50s -> %v", "24 concurrent 8MiB chunks (budget 96MiB)", codes)
	if codes[0] != 200 {
		t.Errorf("no chunk of the flood was applied: %v", codes)
	}
	for _, c := range codes {
		if c != 200 && c != http.StatusServiceUnavailable {
			t.Errorf("flood chunk answered %d, want 200 or 503", c)
		}
	}
	rss, err := agg.PeakRSS()
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("aggregator peak RSS under the hostile classes: %.1f MiB", float64(rss)/(1<<20))

	// The legitimate edge: everything produced, exactly once.
	stopBG()
	bg.Wait()
	testkit.Eventually(t, 2*time.Minute, "legit records in the hub", func() error {
		n, err := harness.CountCommitted(ctx, hubKafka.Brokers(), "legit."+topic)
		if err != nil {
			return err
		}
		if want := int64(prod.Out.Count()); n < want {
			return fmt.Errorf("hub has %d of %d", n, want)
		}
		return nil
	})
	if err := harness.Check(ctx, hubKafka.Brokers(), "legit", prod.Out, nil, func(s string) string { return "legit." + s }); err != nil {
		t.Fatal(err)
	}
	got := hubTopics(t, ctx, hubKafka.Brokers())
	want := []string{"legit." + topic, "tok-a.tok-a-ok", "tok-b.flood"}
	if fmt.Sprint(got) != fmt.Sprint(want) && fmt.Sprint(got) != fmt.Sprint(want[:2]) {
		t.Errorf("hub topics %v, want %v (nothing of a refused request)", got, want)
	}
	// Offsets 0-4 before the rotation, 0-9 after: 10 distinct records.
	if n, err := harness.CountCommitted(ctx, hubKafka.Brokers(), "tok-a.tok-a-ok"); err != nil || n != 10 {
		t.Errorf("tok-a.tok-a-ok holds %d records (%v), want 10", n, err)
	}
	if !agg.LogContains("credential_edge=cert-b claimed_edge=legit") || !agg.LogContains("credential_edge=tok-b claimed_edge=tok-a") {
		t.Error("impersonations are not logged with both ids")
	}
	if v := agent.Metrics(ctx)["edgemirror_agent_records_lost_total"]; v != 0 {
		t.Errorf("legit agent lost %v records", v)
	}
}

// An agent whose token the aggregator refuses keeps every chunk, retries
// slowly, counts the refusals as class auth and reports nothing lost; once
// its token file is fixed and it gets SIGHUP, everything arrives exactly
// once.
func TestAgentRefusedKeepsEverything(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	edgeKafka, hubKafka := fake{testkit.Cluster(t)}, fake{testkit.Cluster(t)}
	p := newPKI(t)
	edgesFile := filepath.Join(p.dir, "edges")
	if err := os.WriteFile(edgesFile, []byte("site-9 "+tokenHash("right-token")+" ^site-.*$\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	agg := harness.StartSecureAggregator(t, hubKafka.Brokers(), p.serverKey.CertFile, p.serverKey.KeyFile, p.server.CertFile,
		"--edges-file", edgesFile)
	tokenFile := filepath.Join(p.dir, "token")
	if err := os.WriteFile(tokenFile, []byte("stale-token\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	prod, err := harness.NewProducer(edgeKafka.Brokers())
	if err != nil {
		t.Fatal(err)
	}
	defer prod.Close()
	const topic = "site-data"
	if err := prod.CreateTopic(ctx, topic, 2, nil); err != nil {
		t.Fatal(err)
	}
	if err := prod.Produce(ctx, topic, 2, 400); err != nil {
		t.Fatal(err)
	}
	agent := harness.StartAgent(t, "site-9", edgeKafka.Brokers(), agg.URL, "", "--topics", "site-.*",
		"--tls-ca", p.server.CertFile, "--token-file", tokenFile, "--max-backoff", "1s")
	testkit.Eventually(t, 30*time.Second, "refusals counted", func() error {
		m := agent.Metrics(ctx)
		if m["edgemirror_agent_chunk_send_errors_total"] < 3 || m["edgemirror_agent_chunks_built_total"] == 0 {
			return fmt.Errorf("send errors %v, chunks built %v", m["edgemirror_agent_chunk_send_errors_total"], m["edgemirror_agent_chunks_built_total"])
		}
		return nil
	})
	raw, err := harness.Scrape(ctx, agent.MetricsAddr)
	if err != nil {
		t.Fatal(err)
	}
	if raw["edgemirror_agent_records_lost_total"] != 0 || raw["edgemirror_agent_chunks_acked_total"] != 0 {
		t.Errorf("while refused: lost %v, acked %v; want 0 and 0", raw["edgemirror_agent_records_lost_total"], raw["edgemirror_agent_chunks_acked_total"])
	}
	if !agent.LogContains("class=auth") && !agent.LogContains("401: unknown bearer token") {
		t.Errorf("agent does not log the aggregator's reason:\n%s", agent.Tail(10))
	}
	if n, _ := harness.CountAll(ctx, hubKafka.Brokers(), "site-9."+topic); n != 0 {
		t.Errorf("hub has %d records from a refused agent", n)
	}
	if err := os.WriteFile(tokenFile, []byte("right-token\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := agent.Signal(syscall.SIGHUP); err != nil {
		t.Fatal(err)
	}
	testkit.Eventually(t, time.Minute, "all records after the token fix", func() error {
		n, err := harness.CountCommitted(ctx, hubKafka.Brokers(), "site-9."+topic)
		if err != nil {
			return err
		}
		if n < 800 {
			return fmt.Errorf("hub has %d of 800", n)
		}
		return nil
	})
	if err := harness.Check(ctx, hubKafka.Brokers(), "site-9", prod.Out, nil, func(s string) string { return "site-9." + s }); err != nil {
		t.Fatal(err)
	}
	// The edge's own loss listing (its credential is needed): empty.
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, agg.URL+wire.PathLosses+"?edge=site-9", nil)
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("Authorization", "Bearer right-token")
	resp, err := agg.Client.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != 200 || strings.TrimSpace(string(body)) != "[]" {
		t.Errorf("losses of site-9: %d %s, want 200 []", resp.StatusCode, body)
	}
}

// incompressibleFrame is a chunk of tok-b's topic "flood" with size bytes
// of random values, stored uncompressed.
func incompressibleFrame(t *testing.T, size int) []byte {
	t.Helper()
	enc, err := wire.NewEncoder(wire.CodecNone, wire.LevelDefault)
	if err != nil {
		t.Fatal(err)
	}
	defer enc.Close()
	c := &wire.Chunk{Seq: 1, Topics: []wire.Topic{{Name: "flood", Partitions: 1}}}
	val := make([]byte, 512<<10)
	for i := range val {
		val[i] = byte(i*7919 + i>>8)
	}
	for i := 0; i < size/len(val); i++ {
		c.Records = append(c.Records, wire.Record{Topic: "flood", Offset: int64(i), Timestamp: time.Now().UnixMilli(), Value: val})
	}
	b, err := enc.Encode(nil, c)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

type zeros struct{}

func (zeros) Read(p []byte) (int, error) { clear(p); return len(p), nil }

func poolOf(ca *testcerts.CA) *x509.CertPool {
	p := x509.NewCertPool()
	p.AddCert(ca.Cert)
	return p
}

// An aggregator reachable from other hosts refuses to start, --check
// included, without TLS and an edges file, unless told to accept any edge.
func TestAggregatorRefusesExposedWithoutCredentials(t *testing.T) {
	bin, err := harness.Binary()
	if err != nil {
		t.Fatal(err)
	}
	run := func(args ...string) (string, int) {
		cmd := exec.Command(bin, append([]string{"aggregator", "--brokers", "127.0.0.1:1", "--state-dir", t.TempDir()}, args...)...)
		out, err := cmd.CombinedOutput()
		code := 0
		if ee, ok := err.(*exec.ExitError); ok {
			code = ee.ExitCode()
		} else if err != nil {
			t.Fatal(err)
		}
		return string(out), code
	}
	out, code := run("--check", "--listen", "0.0.0.0:8080")
	if code != 2 || !strings.Contains(out, "--edges-file") || !strings.Contains(out, "--insecure-accept-any-edge") {
		t.Errorf("--check on 0.0.0.0: exit %d, output %q; want exit 2 naming --edges-file and --insecure-accept-any-edge", code, out)
	}
	port := strconv.Itoa(harness.FreePort(t))
	out, code = run("--listen", "0.0.0.0:"+port)
	if code != 2 || !strings.Contains(out, "reachable from other hosts") {
		t.Errorf("start on 0.0.0.0: exit %d, output %q; want exit 2", code, out)
	}
	if out, code := run("--check", "--listen", "0.0.0.0:8080", "--insecure-accept-any-edge"); code != 0 || !strings.Contains(out, "insecure-accept-any-edge=true") {
		t.Errorf("--check with --insecure-accept-any-edge: exit %d, output %q", code, out)
	}
	// Started with it, it warns that any edge is accepted.
	hub := fake{testkit.Cluster(t)}
	p := harness.StartProc(t, "aggregator-insecure", bin, "aggregator", "--brokers", strings.Join(hub.Brokers(), ","),
		"--state-dir", t.TempDir(), "--listen", net.JoinHostPort("0.0.0.0", port), "--insecure-accept-any-edge")
	testkit.Eventually(t, 20*time.Second, "insecure warning", func() error {
		if !p.LogContains("INSECURE: no --edges-file") {
			return fmt.Errorf("no warning yet:\n%s", p.Tail(5))
		}
		return nil
	})
}

// The agent's --check-connect asks the aggregator with its credential: a
// refused one is named in one line, a good one passes.
func TestAgentCheckConnect(t *testing.T) {
	edgeKafka, hubKafka := fake{testkit.Cluster(t)}, fake{testkit.Cluster(t)}
	p := newPKI(t)
	edgesFile := filepath.Join(p.dir, "edges")
	if err := os.WriteFile(edgesFile, []byte("site-1 "+tokenHash("good")+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	agg := harness.StartSecureAggregator(t, hubKafka.Brokers(), p.serverKey.CertFile, p.serverKey.KeyFile, p.server.CertFile,
		"--edges-file", edgesFile)
	bin, err := harness.Binary()
	if err != nil {
		t.Fatal(err)
	}
	check := func(token, ca string) (string, int) {
		tf := filepath.Join(t.TempDir(), "token")
		if err := os.WriteFile(tf, []byte(token), 0o600); err != nil {
			t.Fatal(err)
		}
		cmd := exec.Command(bin, "agent", "--check-connect", "--edge-id", "site-1", "--brokers", strings.Join(edgeKafka.Brokers(), ","),
			"--aggregator", agg.URL, "--tls-ca", ca, "--token-file", tf, "--buffer-dir", filepath.Join(t.TempDir(), "b"))
		out, err := cmd.CombinedOutput()
		if ee, ok := err.(*exec.ExitError); ok {
			return string(out), ee.ExitCode()
		} else if err != nil {
			t.Fatal(err)
		}
		return string(out), 0
	}
	if out, code := check("good", p.server.CertFile); code != 0 || !strings.Contains(out, "connections ok") {
		t.Errorf("good token: exit %d\n%s", code, out)
	}
	out, code := check("bad", p.server.CertFile)
	if code != 1 || !strings.Contains(out, "aggregator "+agg.URL+" refused edge site-1: 401: unknown bearer token") {
		t.Errorf("bad token: exit %d\n%s", code, out)
	}
	if strings.Contains(out, "bad\n") {
		t.Errorf("output shows the token:\n%s", out)
	}
	out, code = check("good", p.clients.CertFile) // not the server's CA
	if code != 1 || !strings.Contains(out, "set --tls-ca to the aggregator's CA") {
		t.Errorf("wrong CA: exit %d\n%s", code, out)
	}
	t.Logf("agent --check-connect with a wrong CA: %s", strings.TrimSpace(out))
}

// Started against a SASL_SSL cluster with a wrong password, the aggregator
// and the agent say so in one error line and keep running.
func TestStartupNamesKafkaProblem(t *testing.T) {
	p := newPKI(t)
	broker := p.client(t, p.server, "broker", testcerts.Options{CommonName: "broker", Server: true})
	cert, err := tls.LoadX509KeyPair(broker.CertFile, broker.KeyFile)
	if err != nil {
		t.Fatal(err)
	}
	c, err := kfake.NewCluster(kfake.NumBrokers(1), kfake.TLS(&tls.Config{Certificates: []tls.Certificate{cert}}),
		kfake.EnableSASL(), kfake.Superuser("SCRAM-SHA-512", "mirror", "right"))
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	pw := filepath.Join(p.dir, "pw")
	if err := os.WriteFile(pw, []byte("wrong\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	kafkaFlags := []string{"--kafka-tls", "--kafka-tls-ca", p.server.CertFile, "--kafka-sasl-mechanism", "scram-sha-512",
		"--kafka-sasl-username", "mirror", "--kafka-sasl-password-file", pw}
	agg := harness.StartAggregator(t, c.ListenAddrs(), "", kafkaFlags...)
	agent := harness.StartAgent(t, "e1", c.ListenAddrs(), "http://"+agg.Addr, "", kafkaFlags...)
	for _, pr := range []*harness.Proc{agg.Proc, agent.Proc} {
		testkit.Eventually(t, 30*time.Second, pr.Name+" names the problem", func() error {
			if !pr.LogContains("Kafka broker "+c.ListenAddrs()[0]+": ") || !pr.LogContains("wrong user name or password") {
				return fmt.Errorf("not yet:\n%s", pr.Tail(5))
			}
			if !pr.Running() {
				return fmt.Errorf("%s exited", pr.Name)
			}
			return nil
		})
		if pr.LogContains("wrong\n") {
			t.Errorf("%s logs the password", pr.Name)
		}
	}
}

// An agent given http:// for an HTTPS aggregator sees a network error (its
// h2c preface is no HTTP/1 request, so no 400 comes back): it keeps its
// chunks and reports nothing lost.
func TestAgentPlainToTLSPortLosesNothing(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	edgeKafka, hubKafka := fake{testkit.Cluster(t)}, fake{testkit.Cluster(t)}
	p := newPKI(t)
	edgesFile := filepath.Join(p.dir, "edges")
	if err := os.WriteFile(edgesFile, []byte("site-2 "+tokenHash("tok")+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	agg := harness.StartSecureAggregator(t, hubKafka.Brokers(), p.serverKey.CertFile, p.serverKey.KeyFile, p.server.CertFile,
		"--edges-file", edgesFile)
	tf := filepath.Join(p.dir, "token")
	if err := os.WriteFile(tf, []byte("tok"), 0o600); err != nil {
		t.Fatal(err)
	}
	prod, err := harness.NewProducer(edgeKafka.Brokers())
	if err != nil {
		t.Fatal(err)
	}
	defer prod.Close()
	if err := prod.CreateTopic(ctx, "plain-data", 1, nil); err != nil {
		t.Fatal(err)
	}
	if err := prod.Produce(ctx, "plain-data", 1, 100); err != nil {
		t.Fatal(err)
	}
	agent := harness.StartAgent(t, "site-2", edgeKafka.Brokers(), "http://"+agg.Addr, "", "--topics", "plain-.*", "--token-file", tf)
	testkit.Eventually(t, 30*time.Second, "failed uploads", func() error {
		m := agent.Metrics(ctx)
		if m["edgemirror_agent_chunk_send_errors_total"] < 2 {
			return fmt.Errorf("send errors %v", m["edgemirror_agent_chunk_send_errors_total"])
		}
		return nil
	})
	m := agent.Metrics(ctx)
	if m["edgemirror_agent_records_lost_total"] != 0 || m["edgemirror_agent_chunks_acked_total"] != 0 {
		t.Errorf("lost %v, acked %v; want 0, 0", m["edgemirror_agent_records_lost_total"], m["edgemirror_agent_chunks_acked_total"])
	}
	if agent.LogContains("rejected chunk permanently") {
		t.Error("the agent quarantined a chunk")
	}
}
