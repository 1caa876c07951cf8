package harness

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/edgemirror/edgemirror/internal/testkit"
)

// Aggregator is a running `edgemirror aggregator` process.
type Aggregator struct {
	*Proc
	Addr        string // host:port of the chunk API
	MetricsAddr string
	StateDir    string
	// URL is the chunk API's base URL: http://Addr, or https://Addr when
	// started by StartSecureAggregator.
	URL string
	// Client talks to the chunk API (it trusts the server CA over TLS).
	Client *http.Client
}

// StartAggregator starts an aggregator writing to hubBrokers and waits until
// it answers /healthz.
func StartAggregator(t testing.TB, hubBrokers []string, stateDir string, extra ...string) *Aggregator {
	t.Helper()
	bin, err := Binary()
	if err != nil {
		t.Fatal(err)
	}
	if stateDir == "" {
		stateDir = filepath.Join(t.TempDir(), "aggregator-state")
	}
	a := &Aggregator{
		Addr:        "127.0.0.1:" + strconv.Itoa(FreePort(t)),
		MetricsAddr: "127.0.0.1:" + strconv.Itoa(FreePort(t)),
		StateDir:    stateDir,
	}
	a.URL, a.Client = "http://"+a.Addr, http.DefaultClient
	args := append([]string{"aggregator",
		"--listen", a.Addr,
		"--metrics-addr", a.MetricsAddr,
		"--brokers", strings.Join(hubBrokers, ","),
		"--state-dir", stateDir,
		"--log-level", "debug",
	}, extra...)
	a.Proc = StartProc(t, "aggregator", bin, args...)
	a.WaitHealthy(t)
	return a
}

// StartSecureAggregator starts an aggregator serving HTTPS with the server
// certificate and key, trusting caFile for its health checks; extra holds
// the other flags (--client-ca, --edges-file...).
func StartSecureAggregator(t testing.TB, hubBrokers []string, certFile, keyFile, caFile string, extra ...string) *Aggregator {
	t.Helper()
	bin, err := Binary()
	if err != nil {
		t.Fatal(err)
	}
	pem, err := os.ReadFile(caFile)
	if err != nil {
		t.Fatal(err)
	}
	pool := x509.NewCertPool()
	if !pool.AppendCertsFromPEM(pem) {
		t.Fatalf("no certificate in %s", caFile)
	}
	tr := &http.Transport{TLSClientConfig: &tls.Config{RootCAs: pool, MinVersion: tls.VersionTLS12}}
	t.Cleanup(tr.CloseIdleConnections)
	a := &Aggregator{
		Addr:        "127.0.0.1:" + strconv.Itoa(FreePort(t)),
		MetricsAddr: "127.0.0.1:" + strconv.Itoa(FreePort(t)),
		StateDir:    filepath.Join(t.TempDir(), "aggregator-state"),
		Client:      &http.Client{Transport: tr, Timeout: 10 * time.Second},
	}
	a.URL = "https://" + a.Addr
	args := append([]string{"aggregator",
		"--listen", a.Addr,
		"--metrics-addr", a.MetricsAddr,
		"--brokers", strings.Join(hubBrokers, ","),
		"--state-dir", a.StateDir,
		"--log-level", "debug",
		"--tls-cert", certFile, "--tls-key", keyFile,
	}, extra...)
	a.Proc = StartProc(t, "aggregator", bin, args...)
	a.WaitHealthy(t)
	return a
}

// WaitHealthy waits until the aggregator answers /healthz.
func (a *Aggregator) WaitHealthy(t testing.TB) {
	t.Helper()
	testkit.Eventually(t, 30*time.Second, "aggregator healthy", func() error {
		if !a.Running() {
			return fmt.Errorf("aggregator exited:\n%s", a.Tail(20))
		}
		resp, err := a.Client.Get(a.URL + "/healthz")
		if err != nil {
			return err
		}
		resp.Body.Close()
		if resp.StatusCode != http.StatusOK {
			return fmt.Errorf("healthz %s", resp.Status)
		}
		return nil
	})
}

// Losses returns the loss ranges agents reported to the aggregator.
func (a *Aggregator) Losses(ctx context.Context, edge string) ([]Lost, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, a.URL+"/v1/losses?edge="+edge, nil)
	if err != nil {
		return nil, err
	}
	resp, err := a.Client.Do(req)
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	var rows []struct {
		Topic       string `json:"topic"`
		Partition   int32  `json:"partition"`
		FirstOffset int64  `json:"first_offset"`
		LastOffset  int64  `json:"last_offset"`
	}
	if err := json.NewDecoder(resp.Body).Decode(&rows); err != nil {
		return nil, err
	}
	out := make([]Lost, len(rows))
	for i, r := range rows {
		out[i] = Lost{Topic: r.Topic, Partition: r.Partition, First: r.FirstOffset, Last: r.LastOffset}
	}
	return out, nil
}

// Agent is a running `edgemirror agent` process.
type Agent struct {
	*Proc
	MetricsAddr string
	BufferDir   string
}

// StartAgent starts an agent for edge reading edgeBrokers and shipping to
// aggregatorURL, with its buffer in bufferDir (a new temp dir if empty).
func StartAgent(t testing.TB, edge string, edgeBrokers []string, aggregatorURL, bufferDir string, extra ...string) *Agent {
	t.Helper()
	bin, err := Binary()
	if err != nil {
		t.Fatal(err)
	}
	if bufferDir == "" {
		bufferDir = filepath.Join(t.TempDir(), "buffer")
	}
	a := &Agent{MetricsAddr: "127.0.0.1:" + strconv.Itoa(FreePort(t)), BufferDir: bufferDir}
	args := append([]string{"agent",
		"--edge-id", edge,
		"--brokers", strings.Join(edgeBrokers, ","),
		"--aggregator", aggregatorURL,
		"--buffer-dir", bufferDir,
		"--metrics-addr", a.MetricsAddr,
		"--metadata-interval", "1s",
		"--linger", "200ms",
		"--max-backoff", "2s",
		"--log-level", "debug",
	}, extra...)
	a.Proc = StartProc(t, "agent-"+edge, bin, args...)
	return a
}

// Metrics scrapes the agent's metrics (zero values if it is not answering).
func (a *Agent) Metrics(ctx context.Context) map[string]float64 {
	m, err := Scrape(ctx, a.MetricsAddr)
	if err != nil {
		return map[string]float64{}
	}
	return m
}
