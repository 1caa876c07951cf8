package packaging

import (
	"bytes"
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/edgemirror/edgemirror/internal/testkit"
	"github.com/edgemirror/edgemirror/test/internal/harness"
)

// gateway is how a release binary of one architecture is run here: natively
// or under qemu-user-static.
type gateway struct {
	arch     string // release name: amd64, arm64, armv7
	qemu     string // qemu-user-static emulator, "" for native
	platform string // what `edgemirror version` reports
}

var gateways = []gateway{
	{arch: "arm64", qemu: "qemu-aarch64-static", platform: "linux/arm64"},
	{arch: "armv7", qemu: "qemu-arm-static", platform: "linux/arm v7"},
}

// argv is the command line that runs the gateway's binary.
func (g gateway) argv(t testing.TB) []string {
	t.Helper()
	bin := dist(t, "edgemirror-linux-"+g.arch)
	if g.qemu == "" {
		return []string{bin}
	}
	return []string{tool(t, g.qemu, "qemu-user-static"), bin}
}

// TestForeignArchAgent: the arm64 and armv7 release binaries run under
// qemu-user-static: `version` names their platform, and an agent ships a
// few hundred records from an in-process edge cluster through a native
// aggregator to an in-process hub, exactly once, then stops cleanly.
func TestForeignArchAgent(t *testing.T) {
	for _, g := range gateways {
		t.Run(g.arch, func(t *testing.T) {
			argv := g.argv(t)
			out := run(t, argv[0], append(argv[1:], "version")...)
			want := fmt.Sprintf("edgemirror %s (commit %s, built %s, ", testVersion, testCommit, testDate)
			if !strings.HasPrefix(out, want) || !strings.HasSuffix(strings.TrimSpace(out), g.platform+")") {
				t.Fatalf("%s version printed %q, want prefix %q and platform %s", g.arch, out, want, g.platform)
			}
			s := startSite(t, g, argv)
			if err := s.prod.Produce(s.ctx, s.topic, 3, 100); err != nil {
				t.Fatal(err)
			}
			s.waitAcked(t, 300, 2*time.Minute)
			if err := harness.Check(s.ctx, s.hub, s.edgeID, s.prod.Out, nil, s.hubTopic); err != nil {
				t.Fatal(err)
			}
			if err := s.agent.Stop(30 * time.Second); err != nil {
				t.Fatalf("%s agent did not stop cleanly on SIGTERM: %v", g.arch, err)
			}
		})
	}
}

// site is an edge cluster with one agent, an aggregator and a hub.
type site struct {
	ctx         context.Context
	edge, hub   []string
	edgeID      string
	topic       string
	prod        *harness.Producer
	agent       *harness.Proc
	metricsAddr string
	bufferDir   string
}

func (s *site) hubTopic(t string) string { return s.edgeID + "." + t }

// startSite starts in-process edge and hub clusters, the release's native
// aggregator and an agent run by argv.
func startSite(t testing.TB, g gateway, argv []string) *site {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	t.Cleanup(cancel)
	s := &site{
		ctx:         ctx,
		edge:        testkit.Cluster(t).ListenAddrs(),
		hub:         testkit.Cluster(t).ListenAddrs(),
		edgeID:      "gw-" + g.arch,
		topic:       "sensors",
		metricsAddr: "127.0.0.1:" + strconv.Itoa(harness.FreePort(t)),
		bufferDir:   filepath.Join(t.TempDir(), "buffer-"+g.arch),
	}
	agg := harness.StartAggregator(t, s.hub, "")
	var err error
	if s.prod, err = harness.NewProducer(s.edge); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(s.prod.Close)
	if err := s.prod.CreateTopic(ctx, s.topic, 3, nil); err != nil {
		t.Fatal(err)
	}
	args := append(argv[1:len(argv):len(argv)], "agent",
		"--edge-id", s.edgeID,
		"--brokers", strings.Join(s.edge, ","),
		"--aggregator", "http://"+agg.Addr,
		"--buffer-dir", s.bufferDir,
		"--buffer-max-bytes", "64MiB",
		"--metrics-addr", s.metricsAddr,
		"--metadata-interval", "1s",
		"--linger", "200ms",
		"--max-backoff", "2s",
	)
	s.agent = harness.StartProc(t, "agent-"+g.arch, argv[0], args...)
	return s
}

// waitAcked waits until the agent counts n records acknowledged by the
// aggregator.
func (s *site) waitAcked(t testing.TB, n float64, timeout time.Duration) {
	t.Helper()
	testkit.Eventually(t, timeout, fmt.Sprintf("%v records acknowledged", n), func() error {
		if !s.agent.Running() {
			return fmt.Errorf("agent exited:\n%s", s.agent.Tail(30))
		}
		m, err := harness.Scrape(s.ctx, s.metricsAddr)
		if err != nil {
			return err
		}
		if got := m["edgemirror_agent_records_acked_total"]; got < n {
			return fmt.Errorf("%v acknowledged", got)
		}
		return nil
	})
}

// rss returns the resident set size of the process whose command line
// contains marker (under qemu: the emulator with the program in it).
func rss(marker string) (int64, error) {
	dirs, err := filepath.Glob("/proc/[0-9]*")
	if err != nil {
		return 0, err
	}
	for _, d := range dirs {
		cmdline, err := os.ReadFile(filepath.Join(d, "cmdline"))
		if err != nil || !bytes.Contains(cmdline, []byte(marker)) {
			continue
		}
		status, err := os.ReadFile(filepath.Join(d, "status"))
		if err != nil {
			continue
		}
		for _, line := range strings.Split(string(status), "\n") {
			if v, ok := strings.CutPrefix(line, "VmRSS:"); ok {
				kb, err := strconv.ParseInt(strings.TrimSpace(strings.TrimSuffix(strings.TrimSpace(v), "kB")), 10, 64)
				return kb << 10, err
			}
		}
	}
	return 0, fmt.Errorf("no process with %q in its command line", marker)
}

// BenchmarkAgentRSS reports the agent's resident memory on this machine,
// natively (amd64) and under qemu-user-static (arm64, armv7): idle (caught
// up, nothing to read) and busy (shipping a backlog of sensor records).
// Under qemu the number is the emulator's process, which includes the
// emulator's own memory (translated code), so it is higher than on a real
// ARM gateway. Run:
//
//	go test -run '^$' -bench AgentRSS -benchtime 1x ./test/packaging
func BenchmarkAgentRSS(b *testing.B) {
	const busyPerPartition = 40000 // 120,000 records
	for _, g := range append([]gateway{{arch: "amd64"}}, gateways...) {
		b.Run(g.arch, func(b *testing.B) {
			for i := 0; i < b.N; i++ {
				argv := g.argv(b)
				s := startSite(b, g, argv)
				if err := s.prod.Produce(s.ctx, s.topic, 3, 10); err != nil {
					b.Fatal(err)
				}
				s.waitAcked(b, 30, 2*time.Minute)
				idle := peakRSS(b, s, 5*time.Second, nil)

				done := make(chan error, 1)
				go func() { done <- s.prod.Produce(s.ctx, s.topic, 3, busyPerPartition) }()
				start := time.Now()
				busy := peakRSS(b, s, 5*time.Minute, func() bool {
					m, _ := harness.Scrape(s.ctx, s.metricsAddr)
					return m["edgemirror_agent_records_acked_total"] >= 30+3*busyPerPartition
				})
				elapsed := time.Since(start)
				if err := <-done; err != nil {
					b.Fatal(err)
				}
				b.ReportMetric(float64(idle)/(1<<20), "idle-rss-MiB")
				b.ReportMetric(float64(busy)/(1<<20), "busy-rss-MiB")
				b.ReportMetric(3*busyPerPartition/elapsed.Seconds(), "records/s")
				if err := s.agent.Stop(30 * time.Second); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}

// peakRSS samples the agent's RSS every 100ms for d, or until done reports
// true, and returns the largest sample. d bounds the wait.
func peakRSS(b *testing.B, s *site, d time.Duration, done func() bool) int64 {
	b.Helper()
	var peak int64
	deadline := time.Now().Add(d)
	for time.Now().Before(deadline) {
		v, err := rss(s.bufferDir)
		if err != nil {
			b.Fatal(err)
		}
		peak = max(peak, v)
		if done != nil && done() {
			return peak
		}
		time.Sleep(100 * time.Millisecond) // sampling interval of a measurement
	}
	if done != nil {
		b.Fatalf("agent did not finish within %s:\n%s", d, s.agent.Tail(30))
	}
	return peak
}
