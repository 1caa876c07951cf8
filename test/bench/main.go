// Command bench measures edgemirror against Apache Kafka's MirrorMaker 2,
// side by side in one run, on real Kafka brokers and an emulated WAN:
//
//	go run ./test/bench --bin bin/edgemirror --matrix quick|full
//
// Both systems mirror the same records from one edge cluster to one hub
// cluster over the same emulated link (test/wan). edgemirror crosses it
// between agent and aggregator (edge Kafka ─ agent ══WAN══ aggregator ─ hub
// Kafka); MirrorMaker 2 runs in the data centre as its documentation
// recommends and pulls from the edge across it (edge Kafka ══WAN══ MM2 ─ hub
// Kafka), through a second edge listener that advertises the proxy. The
// producer at the edge and everything in the data centre talk on loopback.
//
// What is measured, how, and the results: README.md and results/ beside
// this file.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"os"
	"os/signal"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/edgemirror/edgemirror/test/internal/harness"
	realkafka "github.com/edgemirror/edgemirror/test/kafka"
	"github.com/edgemirror/edgemirror/test/wan"
)

// links are the emulated links by name; "outage" is the wan link cut for a
// minute under steady load.
var links = map[string]wan.Link{
	"lan":    wan.LAN,
	"wan":    wan.WAN,
	"cell":   wan.Cell,
	"outage": wan.WAN,
}

// rowSpec is one measurement: a system, a workload, an edge compression and a link.
type rowSpec struct {
	system, workload, compression, link string
	records                             int64
	// warmUp numbers the unmeasured warm-up passes of the first row
	// (warmBrokers): on topics of their own, the throughput run only,
	// results dropped. 0 for a measured row.
	warmUp int
}

func (r rowSpec) name() string {
	n := fmt.Sprintf("%s/%s/%s/%s", r.system, r.workload, r.compression, r.link)
	if r.warmUp > 0 {
		n = fmt.Sprintf("warm-up %d %s", r.warmUp, n)
	}
	return n
}

// matrix is a set of rows plus how long the side measurements take.
type matrix struct {
	name       string
	rows       []rowSpec
	latencyFor time.Duration // length of each steady-rate latency run
	capRuns    bool          // also run edgemirror with --bandwidth below the wan link
	outage     bool
}

func buildMatrix(name string, recordsOverride int64) (matrix, error) {
	m := matrix{name: name}
	var workloads, comps, linkNames []string
	count := map[string]int64{}
	switch name {
	case "quick":
		workloads, comps, linkNames = []string{"sensor"}, []string{"none"}, []string{"lan", "wan"}
		count = map[string]int64{"lan": 200_000, "wan": 200_000}
		m.latencyFor = 15 * time.Second
		m.capRuns = true
	case "full":
		workloads, comps = []string{"sensor", "logs"}, []string{"none", "lz4"}
		// wan first: those rows matter most and a long run may be cut short
		linkNames = []string{"wan", "lan", "cell"}
		// 1.8M records in all; fewer where the link is slow, so that the
		// slowest row (MirrorMaker 2, uncompressed logs over cell) stays
		// in minutes
		count = map[string]int64{"lan": 1_000_000, "wan": 200_000, "cell": 20_000}
		m.latencyFor = 30 * time.Second
		m.capRuns = true
		m.outage = true
	default:
		return m, fmt.Errorf("unknown matrix %q (want quick or full)", name)
	}
	for _, l := range linkNames {
		for _, w := range workloads {
			for _, c := range comps {
				for _, s := range []string{sysEdgemirror, sysMM2} {
					n := count[l]
					if recordsOverride > 0 {
						n = recordsOverride
					}
					m.rows = append(m.rows, rowSpec{system: s, workload: w, compression: c, link: l, records: n})
				}
			}
		}
	}
	return m, nil
}

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGINT, syscall.SIGTERM)
	err := run(ctx)
	stop()
	if err != nil {
		fmt.Fprintln(os.Stderr, "bench:", err)
		os.Exit(1)
	}
}

func run(ctx context.Context) error {
	var (
		bin        = flag.String("bin", "bin/edgemirror", "edgemirror binary to measure")
		matrixName = flag.String("matrix", "quick", "quick or full")
		out        = flag.String("out", filepath.Join(harness.RepoRoot(), "test", "bench", "results"), "results directory")
		only       = flag.String("only", "", "run only the rows whose name (system/workload/compression/link) matches this regular expression")
		records    = flag.Int64("records", 0, "records per throughput run (0: the matrix's own counts)")
		readme     = flag.Bool("readme", false, "write the ratio table into README.md's performance section (always after a complete full matrix)")
		keep       = flag.Bool("keep", false, "keep the work directory (logs, buffers) after the run")
		outName    = flag.String("name", "", "results name (results/<name>.*); default the matrix name")
		reportOnly = flag.Bool("report-only", false, "only write the markdown, chart (and with --readme the README) again from results/<name>.json")
		merge      = flag.Bool("merge", false, "add to the existing results/<matrix>.json: rows run now replace the same rows there (rerun a failed row with --only)")
		pprofDir   = flag.String("pprof", "", "start agent and aggregator with --pprof and write CPU (first 30 s of each throughput run) and heap profiles here, one directory per row")
	)
	agentFlags := flag.String("agent-flags", "", "extra agent flags for every edgemirror run, space-separated (experiments; the matrix uses the defaults)")
	tlsOn := flag.Bool("tls", false, "run edgemirror with HTTPS between agent and aggregator and token authentication (an edges file), to compare with plain h2c")
	warm := flag.Bool("warm-up", true, "before the measured rows, repeat the first row's throughput run, unmeasured and on topics of its own, until the brokers' JIT compilers use under 10 % of their CPU in a pass (at most 12 passes), as on brokers in service (false: the first row runs on freshly started brokers and its numbers include their JIT warm-up)")
	latencyFor := flag.Duration("latency-for", 0, "length of each latency run (0: the matrix's own, 15 s quick, 30 s full)")
	flag.DurationVar(&outageCut, "outage-cut", outageCut, "how long the outage run keeps the link down (the issue asks for 60 s)")
	flag.Parse()
	m, err := buildMatrix(*matrixName, *records)
	if err != nil {
		return err
	}
	outageSystems := []string{sysEdgemirror, sysMM2}
	if *latencyFor > 0 {
		m.latencyFor = *latencyFor
	}
	if *only != "" {
		re, err := regexp.Compile(*only)
		if err != nil {
			return fmt.Errorf("--only: %w", err)
		}
		var rows []rowSpec
		for _, r := range m.rows {
			if re.MatchString(r.name()) {
				rows = append(rows, r)
			}
		}
		m.rows = rows
		outageSystems = nil
		for _, s := range []string{sysEdgemirror, sysMM2} {
			if re.MatchString(s + "/sensor/none/outage") {
				outageSystems = append(outageSystems, s)
			}
		}
	}
	binPath, err := filepath.Abs(*bin)
	if err != nil {
		return err
	}
	if _, err := os.Stat(binPath); err != nil {
		return fmt.Errorf("--bin: %w (run make build first)", err)
	}
	workDir, err := os.MkdirTemp("", "edgemirror-bench-")
	if err != nil {
		return err
	}
	if *keep {
		fmt.Println("work directory:", workDir)
	} else {
		defer os.RemoveAll(workDir)
	}
	logf := func(format string, args ...any) {
		fmt.Printf("%s  %s\n", time.Now().Format("15:04:05"), fmt.Sprintf(format, args...))
	}

	rep := newReport(m.name, *out)
	if *outName != "" {
		rep.name = *outName
	}
	if *reportOnly {
		if err := rep.load(); err != nil {
			return err
		}
		return rep.write(*readme)
	}
	rep.info = machineInfo()
	rep.info.Matrix = m.name
	if *merge {
		if err := rep.load(); err != nil {
			return fmt.Errorf("--merge: %w", err)
		}
	}
	rep.info.KafkaVersion = realkafka.Version()
	rep.info.MM2Version = mm2Version()
	fmin, fpart, fmax := mm2Fetch(wan.WAN)
	rep.info.MM2Props = fmt.Sprintf(mm2Props, "<WAN proxy in front of the edge broker's second listener>", "<hub broker>",
		"<the row's topic>, <the row's latency topic>", fmin, fpart, fmax)
	cmin, cpart, cmax := mm2Fetch(wan.Cell)
	rep.info.MM2Props += fmt.Sprintf("# on the cell link: fetch.min.bytes = %d, max.partition.fetch.bytes = %d, fetch.max.bytes = %d\n",
		cmin, cpart, cmax)

	t0 := time.Now()
	e, cleanup, err := setup(ctx, binPath, workDir, logf)
	defer cleanup()
	if err != nil {
		return err
	}
	if *pprofDir != "" {
		if e.profileDir, err = filepath.Abs(*pprofDir); err != nil {
			return err
		}
	}
	e.agentFlags = strings.Fields(*agentFlags)
	if *tlsOn {
		if e.tls, err = newBenchTLS(filepath.Join(workDir, "tls")); err != nil {
			return err
		}
	}
	logf("clusters ready in %s: edge %s (WAN listener %s advertised as %s), hub %s", time.Since(t0).Round(100*time.Millisecond),
		e.edgeAddr, e.edgeWAN, e.mm2Proxy, e.hubAddr)
	if *warm && len(m.rows) > 0 {
		if rep.info.WarmUp, err = warmBrokers(ctx, e, m, m.rows[0]); err != nil {
			return fmt.Errorf("warm-up: %w", err)
		}
	}

	var failures []string
	for _, r := range m.rows {
		if ctx.Err() != nil {
			break
		}
		res, ex, err := runRow(ctx, e, m, r)
		if err != nil {
			logf("ROW FAILED %s: %v", r.name(), err)
			failures = append(failures, r.name()+": "+err.Error())
			continue
		}
		rep.add(res, ex)
		if err := rep.write(false); err != nil {
			return err
		}
	}
	if m.outage {
		for _, s := range outageSystems {
			if ctx.Err() != nil {
				break
			}
			res, ex, err := runOutage(ctx, e, s)
			if err != nil {
				logf("OUTAGE FAILED %s: %v", s, err)
				failures = append(failures, s+"/outage: "+err.Error())
				continue
			}
			rep.add(res, ex)
			if err := rep.write(false); err != nil {
				return err
			}
		}
	}
	if !*merge {
		rep.info.Seconds = time.Since(t0).Seconds()
	}
	complete := len(failures) == 0 && ctx.Err() == nil && *only == "" && *records == 0 && *latencyFor == 0 &&
		outageCut == 60*time.Second && *agentFlags == "" && *pprofDir == "" && *warm
	if *merge {
		// complete when every row of the matrix is there, from whichever run
		all, _ := buildMatrix(m.name, 0)
		want := map[string]bool{}
		for _, r := range all.rows {
			want[r.name()] = true
		}
		if all.outage {
			want[sysEdgemirror+"/sensor/none/outage"], want[sysMM2+"/sensor/none/outage"] = true, true
		}
		for _, ex := range rep.extras {
			delete(want, ex.Row)
		}
		complete = len(want) == 0 && len(failures) == 0
	}
	rep.info.Complete = complete
	if err := rep.write(*readme || (complete && m.name == "full")); err != nil {
		return err
	}
	logf("done in %s; results in %s", time.Since(t0).Round(time.Second), *out)
	if ctx.Err() != nil {
		return ctx.Err()
	}
	if len(failures) > 0 {
		return fmt.Errorf("%d runs failed:\n  %s", len(failures), strings.Join(failures, "\n  "))
	}
	return nil
}

// mm2Version is the connect-mirror release run against the brokers:
// MM2_VERSION, else the broker version, except 4.4.0 whose connect-mirror
// jars are not on Maven Central (test/kafka/FINDINGS.md); 4.3.1 then.
func mm2Version() string {
	if v := os.Getenv("MM2_VERSION"); v != "" {
		return v
	}
	if realkafka.Version() == "4.4.0" {
		return "4.3.1"
	}
	return realkafka.Version()
}

// setup starts the edge and hub clusters. The edge broker has a second
// listener "WAN" that advertises the fixed address of MirrorMaker 2's WAN
// proxy, so that MirrorMaker 2 bootstraps through the proxy and is sent
// back to it by metadata, while the local producer and the agent use the
// plain listener. cleanup removes both clusters; call it even on error.
func setup(ctx context.Context, bin, workDir string, logf func(string, ...any)) (*env, func(), error) {
	e := &env{bin: bin, workDir: workDir, mm2Version: mm2Version(), logf: logf}
	var (
		mu       sync.Mutex
		clusters []*realkafka.Cluster
	)
	cleanup := func() {
		cctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 2*time.Minute)
		defer cancel()
		mu.Lock()
		defer mu.Unlock()
		for _, c := range clusters {
			if err := c.Clean(cctx); err != nil {
				logf("cleaning %s: %v", c.Name(), err)
			}
		}
	}
	edgePort, err := realkafka.FreePort()
	if err != nil {
		return nil, cleanup, err
	}
	var extra [2]int
	for i := range extra {
		for {
			p, err := freePort()
			if err != nil {
				return nil, cleanup, err
			}
			if p != edgePort && p != edgePort+1 && (i == 0 || p != extra[0]) {
				extra[i] = p
				break
			}
		}
	}
	e.edgeWAN = fmt.Sprintf("127.0.0.1:%d", extra[0])
	e.mm2Proxy = fmt.Sprintf("127.0.0.1:%d", extra[1])
	hubPort, err := realkafka.FreePort()
	if err != nil {
		return nil, cleanup, err
	}
	for hubPort == edgePort || hubPort == edgePort+1 || hubPort+1 == edgePort || hubPort == extra[0] || hubPort == extra[1] ||
		hubPort+1 == extra[0] || hubPort+1 == extra[1] {
		if hubPort, err = realkafka.FreePort(); err != nil {
			return nil, cleanup, err
		}
	}
	sctx, cancel := context.WithTimeout(ctx, 10*time.Minute)
	defer cancel()
	pid := os.Getpid()
	var wg sync.WaitGroup
	var edgeErr, hubErr error
	wg.Go(func() {
		c, err := realkafka.Start(sctx, fmt.Sprintf("bench-edge-%d", pid), edgePort, realkafka.WithProps(
			fmt.Sprintf("listeners=PLAINTEXT://127.0.0.1:%d,WAN://%s,CONTROLLER://127.0.0.1:%d", edgePort, e.edgeWAN, edgePort+1),
			fmt.Sprintf("advertised.listeners=PLAINTEXT://127.0.0.1:%d,WAN://%s", edgePort, e.mm2Proxy),
			"listener.security.protocol.map=CONTROLLER:PLAINTEXT,PLAINTEXT:PLAINTEXT,WAN:PLAINTEXT",
		))
		mu.Lock()
		defer mu.Unlock()
		if c != nil {
			clusters = append(clusters, c)
			e.edge = c
		}
		edgeErr = err
	})
	wg.Go(func() {
		c, err := realkafka.Start(sctx, fmt.Sprintf("bench-hub-%d", pid), hubPort)
		mu.Lock()
		defer mu.Unlock()
		if c != nil {
			clusters = append(clusters, c)
			e.hub = c
		}
		hubErr = err
	})
	wg.Wait()
	if err := errors.Join(edgeErr, hubErr); err != nil {
		return nil, cleanup, err
	}
	e.edgeAddr, e.hubAddr = e.edge.Addr(), e.hub.Addr()
	if err := prepareHub(sctx, e.hubAddr); err != nil {
		return nil, cleanup, err
	}
	return e, cleanup, nil
}
