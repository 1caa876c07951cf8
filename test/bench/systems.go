package main

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/edgemirror/edgemirror/internal/testcerts"
	"github.com/edgemirror/edgemirror/test/internal/harness"
	realkafka "github.com/edgemirror/edgemirror/test/kafka"
	"github.com/edgemirror/edgemirror/test/wan"
)

const (
	sysEdgemirror = "edgemirror"
	sysMM2        = "mirrormaker2"
	// edgeID names the edge for both systems: edgemirror's hub topics are
	// "{edge}.{topic}" and MirrorMaker 2's DefaultReplicationPolicy names
	// them "<source alias>.<topic>", so both land as "edge.<topic>".
	edgeID = "edge"
)

// system is one running mirror (its processes and its WAN proxy) for one row.
type system interface {
	// pids are the system's processes by name, for CPU and RSS.
	pids() map[string]int
	// proxy is the emulated WAN the system's traffic crosses.
	proxy() *wan.Proxy
	// hubTopic is where an edge topic lands on the hub.
	hubTopic(src string) string
	// alive reports a process that died.
	alive() error
	stop(ctx context.Context)
}

// env is what every row shares: the two clusters and the binary.
type env struct {
	bin     string
	workDir string // logs, buffers, state of this bench run
	edge    *realkafka.Cluster
	hub     *realkafka.Cluster
	// edgeAddr is the edge broker's plain listener (the local producer and
	// the agent); edgeWAN is its second listener, which advertises mm2Proxy,
	// the fixed address MirrorMaker 2's WAN proxy listens on.
	edgeAddr, edgeWAN, mm2Proxy string
	hubAddr                     string
	mm2Version                  string
	// profileDir, when set, turns on agent and aggregator --pprof and gets
	// profiles of each throughput run into profileDir/<row>.
	profileDir string
	// agentFlags are added to every agent (--agent-flags, for experiments).
	agentFlags []string
	// tls, when set, makes the agent ship over HTTPS with a token (--tls).
	tls  *benchTLS
	logf func(format string, args ...any)
}

// benchTLS is the aggregator's certificate, its CA, an edges file and the
// token of the bench's edge.
type benchTLS struct {
	caFile, certFile, keyFile, edgesFile, tokenFile string
}

func newBenchTLS(dir string) (*benchTLS, error) {
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, err
	}
	ca, err := testcerts.NewCA(dir, "bench-ca")
	if err != nil {
		return nil, err
	}
	p, err := ca.Issue("aggregator", testcerts.Options{CommonName: "aggregator", Server: true})
	if err != nil {
		return nil, err
	}
	const token = "bench-token-not-secret"
	sum := sha256.Sum256([]byte(token))
	b := &benchTLS{caFile: ca.CertFile, certFile: p.CertFile, keyFile: p.KeyFile,
		edgesFile: filepath.Join(dir, "edges"), tokenFile: filepath.Join(dir, "token")}
	if err := os.WriteFile(b.edgesFile, []byte(edgeID+" token:sha256:"+hex.EncodeToString(sum[:])+" .*\n"), 0o600); err != nil {
		return nil, err
	}
	if err := os.WriteFile(b.tokenFile, []byte(token+"\n"), 0o600); err != nil {
		return nil, err
	}
	return b, nil
}

// runProxy starts a WAN proxy in front of target; listen "" picks a port.
func runProxy(listen, target string, l wan.Link) (*wan.Proxy, error) {
	p, err := wan.New(wan.Config{Listen: listen, Target: target, Link: l})
	if err != nil {
		return nil, err
	}
	go func() { _ = p.Run(context.Background()) }()
	return p, nil
}

// ---- edgemirror ----

type edgemirrorSys struct {
	agg, agent     *proc
	px             *wan.Proxy
	metricsAddr    string // the agent's
	aggMetricsAddr string
}

// startEdgemirror starts an aggregator next to the hub, a WAN proxy in
// front of it and an agent next to the edge: agent → proxy → aggregator.
// Both use their defaults except addresses, directories and extra flags.
func startEdgemirror(ctx context.Context, e *env, name string, topics []string, l wan.Link, agentFlags ...string) (*edgemirrorSys, error) {
	dir := filepath.Join(e.workDir, name)
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return nil, err
	}
	bin, prof := e.bin, []string(nil)
	if e.profileDir != "" {
		prof = []string{"--pprof"}
	}
	aggFlags, scheme := prof, "http://"
	if e.tls != nil {
		aggFlags = append(aggFlags, "--tls-cert", e.tls.certFile, "--tls-key", e.tls.keyFile, "--edges-file", e.tls.edgesFile)
		agentFlags = append(agentFlags, "--tls-ca", e.tls.caFile, "--token-file", e.tls.tokenFile)
		scheme = "https://"
	}
	s := &edgemirrorSys{}
	var (
		aggAddr string
		err     error
	)
	// The metrics listener answers /healthz once the aggregator is up,
	// in plain HTTP whatever the chunk API speaks.
	s.agg, err = startListening(ctx, e, dir, "aggregator", bin, 2, func(ports []int) ([]string, string) {
		aggAddr = "127.0.0.1:" + strconv.Itoa(ports[0])
		s.aggMetricsAddr = "127.0.0.1:" + strconv.Itoa(ports[1])
		return append([]string{"aggregator",
			"--listen", aggAddr,
			"--metrics-addr", s.aggMetricsAddr,
			"--brokers", e.hubAddr,
			"--state-dir", filepath.Join(dir, "aggregator-state")}, aggFlags...), "http://" + s.aggMetricsAddr + "/healthz"
	})
	if err != nil {
		return nil, err
	}
	s.px, err = runProxy("", aggAddr, l)
	if err != nil {
		s.stop(ctx)
		return nil, err
	}
	s.agent, err = startListening(ctx, e, dir, "agent", bin, 1, func(ports []int) ([]string, string) {
		s.metricsAddr = "127.0.0.1:" + strconv.Itoa(ports[0])
		args := []string{"agent",
			"--edge-id", edgeID,
			"--brokers", e.edgeAddr,
			"--topics", strings.Join(topics, "|"),
			"--aggregator", scheme + s.px.Addr(),
			"--buffer-dir", filepath.Join(dir, "buffer"),
			"--metrics-addr", s.metricsAddr,
		}
		return append(append(args, agentFlags...), prof...), "http://" + s.metricsAddr + "/healthz"
	})
	if err != nil {
		s.stop(ctx)
		return nil, err
	}
	return s, nil
}

func (s *edgemirrorSys) pids() map[string]int {
	return map[string]int{"agent": s.agent.pid(), "aggregator": s.agg.pid()}
}
func (s *edgemirrorSys) proxy() *wan.Proxy          { return s.px }
func (s *edgemirrorSys) hubTopic(src string) string { return edgeID + "." + src }
func (s *edgemirrorSys) alive() error {
	for _, p := range []*proc{s.agent, s.agg} {
		if p != nil && !p.running() {
			return fmt.Errorf("%s exited:\n%s", p.name, p.tail(30))
		}
	}
	return nil
}

// metrics scrapes the agent.
func (s *edgemirrorSys) metrics(ctx context.Context) map[string]float64 {
	ctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	m, err := harness.Scrape(ctx, s.metricsAddr)
	if err != nil {
		return map[string]float64{}
	}
	return m
}

func (s *edgemirrorSys) stop(ctx context.Context) {
	if s.agent != nil {
		s.agent.stop(10 * time.Second)
	}
	if s.px != nil {
		_ = s.px.Close()
	}
	if s.agg != nil {
		s.agg.stop(10 * time.Second)
	}
}

func waitHTTP(ctx context.Context, url string, timeout time.Duration, p *proc) error {
	deadline := time.Now().Add(timeout)
	for {
		if !p.running() {
			return fmt.Errorf("%s exited during start-up:\n%s", p.name, p.tail(30))
		}
		// Bounded: an address that accepts connections but never answers
		// (not yet the process's) must not hold the wait past its end.
		rctx, cancel := context.WithTimeout(ctx, 2*time.Second)
		req, _ := http.NewRequestWithContext(rctx, http.MethodGet, url, nil)
		resp, err := http.DefaultClient.Do(req)
		cancel()
		if err == nil {
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				return nil
			}
		}
		if time.Now().After(deadline) || ctx.Err() != nil {
			return fmt.Errorf("%s not healthy after %s: %v", p.name, timeout, err)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// startListening starts a process on ports picked free just before and
// waits until its health URL answers; build gives its arguments and health
// URL for the ports. A port picked free may be taken before the process
// binds it, most often as the local port of another process's outgoing
// connection (those come from the same range), so a start that fails with
// "address already in use" is tried again on new ports, a few times.
func startListening(ctx context.Context, e *env, dir, name, bin string, nports int, build func(ports []int) (args []string, healthURL string)) (*proc, error) {
	const tries = 5
	for try := 1; ; try++ {
		ports, err := freePorts(nports)
		if err != nil {
			return nil, err
		}
		args, health := build(ports)
		p, err := startProc(dir, name, bin, nil, args...)
		if err != nil {
			return nil, err
		}
		err = waitHTTP(ctx, health, 30*time.Second, p)
		if err == nil {
			return p, nil
		}
		p.stop(5 * time.Second)
		if try == tries || !strings.Contains(p.tail(30), "address already in use") {
			return nil, err
		}
		e.logf("%s: a port picked free was taken before it bound it (%v); starting it again on other ports", name, ports)
	}
}

// ---- MirrorMaker 2 ----

// mm2Props is the MirrorMaker 2 configuration of the benchmark: dedicated
// mode in the data centre, pulling from the edge across the WAN and
// producing to the hub next to it, tuned as the MirrorMaker documentation
// and a careful operator would for a slow, distant source: one task per
// partition, large fetches that wait to fill (fewer round trips over the
// WAN), zstd and large batches on the hub producer. The arguments are the
// edge bootstrap (the WAN proxy), the hub bootstrap, the topic list and the
// fetch sizes of mm2Fetch.
const mm2Props = `# MirrorMaker 2 (dedicated mode) as run by test/bench: in the data centre,
# consuming the edge cluster across the emulated WAN, producing to the hub locally.
clusters = edge, hub
edge.bootstrap.servers = %[1]s
hub.bootstrap.servers = %[2]s

edge->hub.enabled = true
edge->hub.topics = %[3]s
hub->edge.enabled = false
hub->edge.emit.heartbeats.enabled = false
offset-syncs.topic.location = target
sync.group.offsets.enabled = false
sync.topic.acls.enabled = false
refresh.topics.interval.seconds = 10
emit.checkpoints.interval.seconds = 30

replication.factor = 1
checkpoints.topic.replication.factor = 1
heartbeats.topic.replication.factor = 1
offset-syncs.topic.replication.factor = 1
offset.storage.replication.factor = 1
status.storage.replication.factor = 1
config.storage.replication.factor = 1

# one task per source partition (3 partitions per topic, 2 topics)
tasks.max = 6

# replicating consumer, across the WAN: few large fetches, each sized so
# that one fetch of every task crosses the link in about 10 s, well inside
# request.timeout.ms (30 s): on lan and wan 4 MiB per partition, on cell
# 256 KiB (with 4 MiB, three tasks' fetches need 96 s on 1 Mbit/s, time out,
# and MirrorMaker retries the same fetch forever)
edge.consumer.fetch.min.bytes = %[4]d
edge.consumer.fetch.max.wait.ms = 1000
edge.consumer.max.partition.fetch.bytes = %[5]d
edge.consumer.fetch.max.bytes = %[6]d
edge.consumer.max.poll.records = 5000
edge.consumer.receive.buffer.bytes = 1048576
edge.consumer.isolation.level = read_committed

# worker producer, to the hub in the same data centre: zstd, large batches
hub.producer.compression.type = zstd
hub.producer.linger.ms = 50
hub.producer.batch.size = 524288
hub.producer.buffer.memory = 67108864
hub.producer.acks = all
hub.producer.enable.idempotence = true
hub.producer.max.request.size = 4194304

offset.flush.interval.ms = 5000
`

// mm2Fetch sizes the replicating consumer's fetches for link l: 4 MiB per
// partition (16 MiB per fetch) where the link is fast enough, else what one
// task's share of the link carries in about 10 s, so that a fetch of every task
// (one partition each) completes well inside request.timeout.ms.
func mm2Fetch(l wan.Link) (minBytes, partBytes, maxBytes int) {
	partBytes, maxBytes = 4<<20, 16<<20
	if l.Rate > 0 {
		share := int(float64(l.Rate) * 12 / 3)
		for partBytes > 64<<10 && partBytes > share {
			partBytes /= 2
		}
		maxBytes = max(partBytes, min(maxBytes, 4*partBytes))
	}
	return min(256<<10, partBytes), partBytes, maxBytes
}

// findMM2 returns the pid of the MirrorMaker JVM mm2.sh started as name
// (its command line carries -Dedgemirror.mm2.dir=.../mm2/name), or 0.
func findMM2(name string) int {
	ents, err := os.ReadDir("/proc")
	if err != nil {
		return 0
	}
	suffix := "/mm2/" + name
	for _, d := range ents {
		pid, err := strconv.Atoi(d.Name())
		if err != nil {
			continue
		}
		b, err := os.ReadFile("/proc/" + d.Name() + "/cmdline")
		if err != nil {
			continue
		}
		for _, arg := range strings.Split(string(b), "\x00") {
			if v, ok := strings.CutPrefix(arg, "-Dedgemirror.mm2.dir="); ok && strings.HasSuffix(v, suffix) {
				return pid
			}
		}
	}
	return 0
}

type mm2Sys struct {
	mm    *realkafka.MirrorMaker
	px    *wan.Proxy
	pid   int
	props string
	dir   string
}

func startMM2(ctx context.Context, e *env, name string, topics []string, l wan.Link) (*mm2Sys, error) {
	dir := filepath.Join(e.workDir, name)
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return nil, err
	}
	s := &mm2Sys{dir: dir}
	var err error
	// The proxy address is fixed: the edge broker advertises it on its WAN listener.
	s.px, err = runProxy(e.mm2Proxy, e.edgeWAN, l)
	if err != nil {
		return nil, fmt.Errorf("proxy on %s: %w", e.mm2Proxy, err)
	}
	fmin, fpart, fmax := mm2Fetch(l)
	s.props = fmt.Sprintf(mm2Props, e.mm2Proxy, e.hubAddr, strings.Join(topics, ", "), fmin, fpart, fmax)
	pf := filepath.Join(dir, "mm2.properties")
	if err := os.WriteFile(pf, []byte(s.props), 0o644); err != nil {
		s.stop(ctx)
		return nil, err
	}
	mmName := fmt.Sprintf("bench-%d-%s", os.Getpid(), name)
	sctx, cancel := context.WithTimeout(ctx, 5*time.Minute)
	defer cancel()
	s.mm, err = realkafka.StartMirrorMaker(sctx, mmName, pf, e.mm2Version)
	if err != nil {
		s.stop(ctx)
		// a JVM that mm2.sh lost track of would join the next row's
		// Connect group on the hub and take its work
		if pid := findMM2(mmName); pid > 0 {
			_ = syscall.Kill(pid, syscall.SIGKILL)
			e.logf("killed MirrorMaker pid %d left behind by a failed start", pid)
		}
		return nil, err
	}
	// mm2.sh keeps the JVM's pid beside the logs directory.
	b, err := os.ReadFile(filepath.Join(filepath.Dir(filepath.Dir(s.mm.LogFile())), "mm2.pid"))
	if err != nil {
		s.stop(ctx)
		return nil, fmt.Errorf("read MirrorMaker pid: %w", err)
	}
	s.pid, err = strconv.Atoi(strings.TrimSpace(string(b)))
	if err != nil {
		s.stop(ctx)
		return nil, fmt.Errorf("parse MirrorMaker pid: %w", err)
	}
	return s, nil
}

func (s *mm2Sys) pids() map[string]int       { return map[string]int{"mirrormaker2": s.pid} }
func (s *mm2Sys) proxy() *wan.Proxy          { return s.px }
func (s *mm2Sys) hubTopic(src string) string { return edgeID + "." + src }
func (s *mm2Sys) alive() error {
	if _, err := os.Stat("/proc/" + strconv.Itoa(s.pid)); err != nil {
		return fmt.Errorf("MirrorMaker 2 exited (log %s)", s.mm.LogFile())
	}
	return nil
}

func (s *mm2Sys) stop(ctx context.Context) {
	if s.mm != nil {
		sctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 2*time.Minute)
		_ = s.mm.Stop(sctx, false)
		// keep the log with the row's other files, then remove mm2.sh's copy
		if b, err := os.ReadFile(s.mm.LogFile()); err == nil {
			_ = os.WriteFile(filepath.Join(s.dir, "mm2.out"), b, 0o644)
		}
		_ = s.mm.Stop(sctx, true)
		cancel()
	}
	if s.px != nil {
		_ = s.px.Close()
	}
}
