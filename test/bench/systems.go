package main

import (
	"context"
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"

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
	logf                        func(format string, args ...any)
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
	agg, agent  *proc
	px          *wan.Proxy
	metricsAddr string
}

// startEdgemirror starts an aggregator next to the hub, a WAN proxy in
// front of it and an agent next to the edge: agent → proxy → aggregator.
// Both use their defaults except addresses, directories and extra flags.
func startEdgemirror(ctx context.Context, e *env, name string, topics []string, l wan.Link, agentFlags ...string) (*edgemirrorSys, error) {
	dir := filepath.Join(e.workDir, name)
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return nil, err
	}
	ports := make([]int, 3)
	for i := range ports {
		p, err := freePort()
		if err != nil {
			return nil, err
		}
		ports[i] = p
	}
	aggAddr := "127.0.0.1:" + strconv.Itoa(ports[0])
	s := &edgemirrorSys{metricsAddr: "127.0.0.1:" + strconv.Itoa(ports[2])}
	var err error
	s.agg, err = startProc(dir, "aggregator", e.bin, nil, "aggregator",
		"--listen", aggAddr,
		"--metrics-addr", "127.0.0.1:"+strconv.Itoa(ports[1]),
		"--brokers", e.hubAddr,
		"--state-dir", filepath.Join(dir, "aggregator-state"))
	if err != nil {
		return nil, err
	}
	if err := waitHTTP(ctx, "http://"+aggAddr+"/healthz", 30*time.Second, s.agg); err != nil {
		s.stop(ctx)
		return nil, err
	}
	s.px, err = runProxy("", aggAddr, l)
	if err != nil {
		s.stop(ctx)
		return nil, err
	}
	args := []string{"agent",
		"--edge-id", edgeID,
		"--brokers", e.edgeAddr,
		"--topics", strings.Join(topics, "|"),
		"--aggregator", "http://" + s.px.Addr(),
		"--buffer-dir", filepath.Join(dir, "buffer"),
		"--metrics-addr", s.metricsAddr,
	}
	s.agent, err = startProc(dir, "agent", e.bin, nil, append(args, agentFlags...)...)
	if err != nil {
		s.stop(ctx)
		return nil, err
	}
	if err := waitHTTP(ctx, "http://"+s.metricsAddr+"/healthz", 30*time.Second, s.agent); err != nil {
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
		req, _ := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
		resp, err := http.DefaultClient.Do(req)
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

// ---- MirrorMaker 2 ----

// mm2Props is the MirrorMaker 2 configuration of the benchmark: dedicated
// mode in the data centre, pulling from the edge across the WAN and
// producing to the hub next to it, tuned as the MirrorMaker documentation
// and a careful operator would for a slow, distant source: one task per
// partition, large fetches that wait to fill (fewer round trips over the
// WAN), zstd and large batches on the hub producer. %s are the edge
// bootstrap (the WAN proxy), the hub bootstrap and the topic list.
const mm2Props = `# MirrorMaker 2 (dedicated mode) as run by test/bench: in the data centre,
# consuming the edge cluster across the emulated WAN, producing to the hub locally.
clusters = edge, hub
edge.bootstrap.servers = %s
hub.bootstrap.servers = %s

edge->hub.enabled = true
edge->hub.topics = %s
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

# replicating consumer, across the WAN: few large fetches
edge.consumer.fetch.min.bytes = 262144
edge.consumer.fetch.max.wait.ms = 1000
edge.consumer.max.partition.fetch.bytes = 4194304
edge.consumer.fetch.max.bytes = 16777216
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
	s.props = fmt.Sprintf(mm2Props, e.mm2Proxy, e.hubAddr, strings.Join(topics, ", "))
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
