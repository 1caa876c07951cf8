//go:build realkafka

package realkafka

import (
	"context"
	"crypto/tls"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kgo"
	"github.com/twmb/franz-go/pkg/sasl/plain"
	"github.com/twmb/franz-go/pkg/sasl/scram"

	"github.com/edgemirror/edgemirror/internal/testcerts"
	"github.com/edgemirror/edgemirror/internal/testkit"
	"github.com/edgemirror/edgemirror/test/internal/harness"
	rk "github.com/edgemirror/edgemirror/test/kafka"
)

// startSecure starts a SASL_SSL cluster (SCRAM-SHA-512 and PLAIN) removed
// when the test ends; it may run on another goroutine, so it reports
// problems with t.Error and returns nils.
func startSecure(t *testing.T, name string) (*rk.Cluster, *rk.Security, *tls.Config) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	port, err := rk.FreePort()
	if err != nil {
		t.Error(err)
		return nil, nil, nil
	}
	c, err := rk.Start(ctx, fmt.Sprintf("%s-%d", name, os.Getpid()), port, rk.WithSASLSSL())
	if err != nil {
		t.Errorf("start SASL_SSL Kafka %s: %v", name, err)
		return nil, nil, nil
	}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
		defer cancel()
		_ = c.Clean(ctx)
	})
	sec, err := c.Security()
	if err != nil {
		t.Error(err)
		return nil, nil, nil
	}
	tc, err := sec.TLSConfig()
	if err != nil {
		t.Error(err)
		return nil, nil, nil
	}
	t.Logf("SASL_SSL Kafka %q up at %s in %s", c.Name(), c.Addr(), c.StartTime.Round(time.Millisecond))
	return c, sec, tc
}

func writeSecret(t *testing.T, dir, name, v string) string {
	t.Helper()
	p := filepath.Join(dir, name)
	if err := os.WriteFile(p, []byte(v+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	return p
}

// runBinary runs edgemirror with args and returns its combined output and
// exit code.
func runBinary(t *testing.T, args ...string) (string, int) {
	t.Helper()
	bin, err := harness.Binary()
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 90*time.Second)
	defer cancel()
	out, err := exec.CommandContext(ctx, bin, args...).CombinedOutput()
	if ee, ok := err.(*exec.ExitError); ok {
		return string(out), ee.ExitCode()
	}
	if err != nil {
		t.Fatal(err)
	}
	return string(out), 0
}

// TestSASLSSLBothHops mirrors from a SASL_SSL edge cluster (SCRAM-SHA-512)
// to a SASL_SSL hub (PLAIN), exactly once; a wrong password and an
// untrusted CA are shown by --check-connect as one clear line.
func TestSASLSSLBothHops(t *testing.T) {
	// Both clusters start at once: most of this test's time is JVM start.
	type started struct {
		c   *rk.Cluster
		sec *rk.Security
		tc  *tls.Config
	}
	var clusters [2]started
	var wg sync.WaitGroup
	for i, name := range []string{"edge-sasl", "hub-sasl"} {
		wg.Add(1)
		go func() {
			defer wg.Done()
			clusters[i].c, clusters[i].sec, clusters[i].tc = startSecure(t, name)
		}()
	}
	wg.Wait()
	if clusters[0].c == nil || clusters[1].c == nil {
		t.FailNow()
	}
	edge, edgeSec, edgeTLS := clusters[0].c, clusters[0].sec, clusters[0].tc
	hub, hubSec, hubTLS := clusters[1].c, clusters[1].sec, clusters[1].tc
	dir := t.TempDir()
	edgePW := writeSecret(t, dir, "edge-password", edgeSec.Password)
	hubPW := writeSecret(t, dir, "hub-password", hubSec.Password)
	wrongPW := writeSecret(t, dir, "wrong-password", "not-"+edgeSec.Password)
	other, err := testcerts.NewCA(dir, "other-ca")
	if err != nil {
		t.Fatal(err)
	}
	edgeFlags := func(pw, ca string) []string {
		return []string{"--kafka-tls", "--kafka-tls-ca", ca, "--kafka-sasl-mechanism", "scram-sha-512",
			"--kafka-sasl-username", edgeSec.User, "--kafka-sasl-password-file", pw}
	}
	hubFlags := func(pw, ca string) []string {
		return []string{"--kafka-tls", "--kafka-tls-ca", ca, "--kafka-sasl-mechanism", "plain",
			"--kafka-sasl-username", hubSec.User, "--kafka-sasl-password-file", pw}
	}

	// --check-connect before anything runs.
	aggBase := []string{"aggregator", "--check-connect", "--listen", "127.0.0.1:0", "--brokers", hub.Addr(), "--state-dir", filepath.Join(dir, "s")}
	if out, code := runBinary(t, append(aggBase, hubFlags(hubPW, hubSec.CAFile)...)...); code != 0 || !strings.Contains(out, "connections ok") {
		t.Errorf("aggregator --check-connect with the right settings: exit %d\n%s", code, out)
	}
	cases := []struct {
		name string
		args []string
		want []string
	}{
		{"hub: untrusted CA", append(aggBase, hubFlags(hubPW, other.CertFile)...),
			[]string{"hub Kafka broker " + hub.Addr(), "not signed by a trusted CA"}},
		{"hub: wrong password", append(aggBase, hubFlags(wrongPW, hubSec.CAFile)...),
			[]string{"hub Kafka broker " + hub.Addr(), "wrong user name or password"}},
		{"edge: wrong password", append([]string{"agent", "--check-connect", "--edge-id", "e1", "--brokers", edge.Addr(),
			"--aggregator", "http://127.0.0.1:1", "--buffer-dir", filepath.Join(dir, "b")}, edgeFlags(wrongPW, edgeSec.CAFile)...),
			[]string{"edge Kafka broker " + edge.Addr(), "wrong user name or password"}},
		{"edge: untrusted CA", append([]string{"agent", "--check-connect", "--edge-id", "e1", "--brokers", edge.Addr(),
			"--aggregator", "http://127.0.0.1:1", "--buffer-dir", filepath.Join(dir, "b")}, edgeFlags(edgePW, other.CertFile)...),
			[]string{"edge Kafka broker " + edge.Addr(), "not signed by a trusted CA"}},
	}
	for _, tc := range cases {
		out, code := runBinary(t, tc.args...)
		t.Logf("%s: exit %d: %s", tc.name, code, strings.TrimSpace(out))
		if code != 1 {
			t.Errorf("%s: exit %d, want 1", tc.name, code)
		}
		lines := strings.Split(strings.TrimSpace(out), "\n")
		last := lines[len(lines)-1]
		for _, w := range tc.want {
			if !strings.Contains(last, w) {
				t.Errorf("%s: last line %q lacks %q", tc.name, last, w)
			}
		}
		if strings.Contains(out, edgeSec.Password) || strings.Contains(out, hubSec.Password) {
			t.Errorf("%s: output shows a password", tc.name)
		}
	}

	// The whole flow over SASL_SSL on both hops.
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	edgeOpts := []kgo.Opt{kgo.DialTLSConfig(edgeTLS), kgo.SASL(scram.Auth{User: edgeSec.User, Pass: edgeSec.Password}.AsSha512Mechanism())}
	hubOpts := []kgo.Opt{kgo.DialTLSConfig(hubTLS), kgo.SASL(plain.Auth{User: hubSec.User, Pass: hubSec.Password}.AsMechanism())}
	prod, err := harness.NewProducer([]string{edge.Addr()}, edgeOpts...)
	if err != nil {
		t.Fatal(err)
	}
	defer prod.Close()
	const topic = "secure-telemetry"
	if err := prod.CreateTopic(ctx, topic, 3, nil); err != nil {
		t.Fatal(err)
	}
	if err := prod.Produce(ctx, topic, 3, 1500); err != nil {
		t.Fatal(err)
	}
	agg := harness.StartAggregator(t, []string{hub.Addr()}, "", hubFlags(hubPW, hubSec.CAFile)...)
	agent := harness.StartAgent(t, "secure-edge", []string{edge.Addr()}, "http://"+agg.Addr, "",
		append([]string{"--topics", "secure-.*"}, edgeFlags(edgePW, edgeSec.CAFile)...)...)
	if err := prod.Produce(ctx, topic, 3, 1500); err != nil {
		t.Fatal(err)
	}
	want := int64(prod.Out.Count())
	testkit.Eventually(t, 2*time.Minute, "records in the SASL_SSL hub", func() error {
		n, err := harness.CountCommittedOpts(ctx, hubOpts, []string{hub.Addr()}, "secure-edge."+topic)
		if err != nil {
			return err
		}
		if n < want {
			return fmt.Errorf("hub has %d of %d", n, want)
		}
		return nil
	})
	if err := harness.CheckOpts(ctx, hubOpts, []string{hub.Addr()}, "secure-edge", prod.Out, nil,
		func(s string) string { return "secure-edge." + s }); err != nil {
		t.Fatal(err)
	}
	for _, p := range []*harness.Proc{agg.Proc, agent.Proc} {
		if p.LogContains("cannot connect") {
			t.Errorf("%s logged a connection failure:\n%s", p.Name, p.Tail(20))
		}
	}
}
