// Command demo runs edgemirror end to end on one machine with no Kafka
// installed, in about 20 seconds once built (`make demo`):
//
//	edge Kafka (kfake) ─► edgemirror agent ─► WAN emulator ─► edgemirror aggregator ─► hub Kafka (kfake)
//	                       (real process)      20 Mbit/s,        (real process)
//	                                           40 ms RTT
//
// It produces synthetic sensor readings at the edge at a steady rate, cuts
// the link for a few seconds so that the agent's buffer is seen filling and
// draining, and ends by checking, record by record, that every reading is in
// the hub exactly once and in order, with key, value, headers, timestamp and
// provenance headers. It ends with what an operator sees: `edgemirror status`
// (and `edgemirror losses` when an edge lost records). It exits non-zero with
// a message if that check fails or a time bound is hit.
//
// The Kafka clusters are in-process fakes (franz-go's kfake); they live here,
// under test/, and never in the edgemirror binary. The agent and aggregator
// are run exactly as an operator would run them: see the flags in startAgent
// and startAggregator.
package main

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"strings"
	"syscall"
	"time"

	"github.com/twmb/franz-go/pkg/kfake"

	"github.com/edgemirror/edgemirror/test/internal/harness"
	"github.com/edgemirror/edgemirror/test/wan"
)

const (
	edgeID     = "plant-7"
	topic      = "sensors"
	hubTopic   = edgeID + "." + topic // the aggregator's default --topic-template {edge}.{topic}
	partitions = 3
	numSensors = 600
)

// link is the emulated WAN between agent and aggregator.
var link = wan.Link{Rate: 20_000_000 / 8, RTT: 40 * time.Millisecond} // 20 Mbit/s

type config struct {
	bin        string
	records    int
	produceFor time.Duration
	cut        time.Duration
	duration   time.Duration
	keep       bool
}

func main() {
	var c config
	flag.StringVar(&c.bin, "bin", "bin/edgemirror", "path to the edgemirror binary (make build)")
	flag.IntVar(&c.records, "records", 200_000, "sensor readings to produce, spread over 3 partitions")
	flag.DurationVar(&c.produceFor, "produce-for", 15*time.Second, "produce the readings at a steady rate over this long")
	flag.DurationVar(&c.cut, "cut", 5*time.Second, "how long the link is cut, in the middle of production")
	flag.DurationVar(&c.duration, "duration", 50*time.Second, "bound on the whole demo")
	flag.BoolVar(&c.keep, "keep", false, "keep the logs and buffer directory after a successful run")
	flag.Parse()
	if c.records < 1 || c.produceFor <= 0 || c.cut < 0 || c.cut >= c.produceFor {
		fmt.Fprintln(os.Stderr, "demo: want --records > 0, --produce-for > 0 and 0 <= --cut < --produce-for")
		os.Exit(2)
	}

	if _, err := os.Stat(c.bin); err != nil {
		fmt.Fprintf(os.Stderr, "demo: no edgemirror binary at %s: run `make build` first or pass --bin\n", c.bin)
		os.Exit(2)
	}

	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	ctx, cancel := context.WithTimeout(ctx, c.duration)
	dir, err := os.MkdirTemp("", "edgemirror-demo-")
	if err == nil {
		err = run(ctx, c, dir)
	}
	cancel()
	stop()
	if err != nil {
		fmt.Fprintf(os.Stderr, "\nDEMO FAILED: %v\n", err)
		if dir != "" {
			fmt.Fprintf(os.Stderr, "logs kept in %s\n", dir)
		}
		os.Exit(1)
	}
	if !c.keep {
		os.RemoveAll(dir)
	}
}

func run(ctx context.Context, c config, dir string) error {
	fmt.Printf("edgemirror demo: %s sensor readings over %s, link %s, cut for %s mid-run\n",
		count(c.records), c.produceFor, link, c.cut)
	fmt.Printf("logs in %s (kept on failure or with --keep)\n", dir)

	// Two embedded Kafka clusters, one broker each, on 127.0.0.1.
	edge, err := kfake.NewCluster(kfake.NumBrokers(1))
	if err != nil {
		return fmt.Errorf("start edge cluster: %w", err)
	}
	defer edge.Close()
	hub, err := kfake.NewCluster(kfake.NumBrokers(1))
	if err != nil {
		return fmt.Errorf("start hub cluster: %w", err)
	}
	defer hub.Close()

	agg, aggAddr, err := startAggregator(c.bin, dir, hub.ListenAddrs())
	if err != nil {
		return err
	}
	defer agg.stop(5 * time.Second) // on early returns; a no-op after the clean stop below

	proxy, err := wan.New(wan.Config{Listen: "127.0.0.1:0", Target: aggAddr, Link: link})
	if err != nil {
		return fmt.Errorf("start wan emulator: %w", err)
	}
	go proxy.Run(context.Background())
	defer proxy.Close()

	prod, err := harness.NewProducer(edge.ListenAddrs())
	if err != nil {
		return fmt.Errorf("edge producer: %w", err)
	}
	defer prod.Close()
	if err := prod.CreateTopic(ctx, topic, partitions, nil); err != nil {
		return fmt.Errorf("create topic %s: %w", topic, err)
	}

	agent, metricsAddr, err := startAgent(c.bin, dir, edge.ListenAddrs(), "http://"+proxy.Addr())
	if err != nil {
		return err
	}
	defer agent.stop(5 * time.Second)

	start := time.Now()
	produced := make(chan error, 1)
	go func() { produced <- produce(ctx, prod, c.records, c.produceFor) }()

	s, err := watch(ctx, c, start, proxy, agent, metricsAddr, prod, hub.ListenAddrs(), produced)
	if err != nil {
		return err
	}
	elapsed := time.Since(start)

	fmt.Printf("verifying %s records in the hub one by one ...\n", count(s.produced))
	if err := harness.Check(ctx, hub.ListenAddrs(), edgeID, prod.Out, nil, func(string) string { return hubTopic }); err != nil {
		return fmt.Errorf("verification: %w", err)
	}
	fmt.Printf("OK: every record is in %s exactly once, in source order per partition, with key, value,\n"+
		"    headers, timestamp and provenance (edge, topic, partition, offset) intact\n", hubTopic)
	fmt.Printf("%s records in %.1f s (%s records/s), %.1f wire bytes/record, compression %.1fx,\n"+
		"max buffered during the %s cut: %.0f chunks, %s\n",
		count(s.produced), elapsed.Seconds(), count(int(float64(s.produced)/elapsed.Seconds())),
		s.wire/float64(s.produced), s.ratio(), c.cut, s.maxChunks, size(s.maxBytes))

	// A clean stop: SIGTERM, the agent first, and both exit with code 0.
	// The agent's last heartbeat tells the aggregator what it stopped with.
	if err := agent.stop(10 * time.Second); err != nil {
		return err
	}
	status, err := fleetView(ctx, c.bin, "http://"+aggAddr)
	if err != nil {
		return err
	}
	if err := agg.stop(10 * time.Second); err != nil {
		return err
	}
	fmt.Println("agent and aggregator stopped on SIGTERM with exit code 0")
	fmt.Print(status)
	return nil
}

// fleetView returns what an operator sees: `edgemirror status`, and
// `edgemirror losses` when an edge lost records.
func fleetView(ctx context.Context, bin, aggURL string) (string, error) {
	query := func(args ...string) ([]byte, error) {
		out, err := exec.CommandContext(ctx, bin, append(args, "--aggregator", aggURL)...).Output()
		if err != nil {
			var ee *exec.ExitError
			if errors.As(err, &ee) {
				return nil, fmt.Errorf("edgemirror %s: %w: %s", args[0], err, ee.Stderr)
			}
			return nil, fmt.Errorf("edgemirror %s: %w", args[0], err)
		}
		return out, nil
	}
	table, err := query("status")
	if err != nil {
		return "", err
	}
	var b strings.Builder
	fmt.Fprintf(&b, "\n$ edgemirror status --aggregator %s\n%s", aggURL, table)
	raw, err := query("status", "--json")
	if err != nil {
		return "", err
	}
	var rows []struct {
		LostRecords int64 `json:"lost_records"`
	}
	if err := json.Unmarshal(raw, &rows); err != nil {
		return "", fmt.Errorf("decode edgemirror status --json: %w", err)
	}
	var lost int64
	for _, r := range rows {
		lost += r.LostRecords
	}
	if lost > 0 {
		losses, err := query("losses")
		if err != nil {
			return "", err
		}
		fmt.Fprintf(&b, "\n$ edgemirror losses --aggregator %s\n%s", aggURL, losses)
	}
	return b.String(), nil
}

// startAggregator runs `edgemirror aggregator` writing to the hub and waits
// until it is healthy. It returns the process and its chunk API address.
func startAggregator(bin, dir string, hubBrokers []string) (*proc, string, error) {
	addr, err := freeAddr()
	if err != nil {
		return nil, "", err
	}
	metrics, err := freeAddr()
	if err != nil {
		return nil, "", err
	}
	p, err := startProc(dir, "aggregator", bin, "aggregator",
		"--listen", addr,
		"--metrics-addr", metrics,
		"--brokers", strings.Join(hubBrokers, ","),
		"--state-dir", filepath.Join(dir, "aggregator-state"),
	)
	if err != nil {
		return nil, "", err
	}
	if err := p.waitHTTP("http://"+addr+"/healthz", 15*time.Second); err != nil {
		p.stop(5 * time.Second)
		return nil, "", err
	}
	return p, addr, nil
}

// startAgent runs `edgemirror agent` reading the edge and shipping to
// aggregatorURL. It returns the process and its metrics address.
func startAgent(bin, dir string, edgeBrokers []string, aggregatorURL string) (*proc, string, error) {
	metrics, err := freeAddr()
	if err != nil {
		return nil, "", err
	}
	p, err := startProc(dir, "agent", bin, "agent",
		"--edge-id", edgeID,
		"--brokers", strings.Join(edgeBrokers, ","),
		"--aggregator", aggregatorURL,
		"--buffer-dir", filepath.Join(dir, "buffer"),
		"--metrics-addr", metrics,
		// Retry at least every second (the default backoff grows to 30s),
		// so that the agent notices within a second that the link is back.
		"--max-backoff", "1s",
		// Report every second (default 10s), so that the status table at
		// the end is current.
		"--heartbeat-interval", "1s",
	)
	if err != nil {
		return nil, "", err
	}
	if err := p.waitHTTP("http://"+metrics+"/healthz", 15*time.Second); err != nil {
		p.stop(5 * time.Second)
		return nil, "", err
	}
	return p, metrics, nil
}

// produce sends n readings to the edge topic at a steady rate over d.
func produce(ctx context.Context, prod *harness.Producer, n int, d time.Duration) error {
	sensors := newSensors(edgeID, numSensors, partitions)
	start := time.Now()
	tick := time.NewTicker(50 * time.Millisecond)
	defer tick.Stop()
	for sent := 0; sent < n; {
		select {
		case <-ctx.Done():
			return fmt.Errorf("produce: %w", ctx.Err())
		case <-tick.C:
		}
		due := min(n, int(float64(n)*time.Since(start).Seconds()/d.Seconds()))
		if due > sent {
			if err := prod.Send(ctx, sensors.next(topic, due-sent)); err != nil {
				return fmt.Errorf("produce: %w", err)
			}
			sent = due
		}
	}
	return nil
}
