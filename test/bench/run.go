package main

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/edgemirror/edgemirror/test/internal/harness"
	"github.com/edgemirror/edgemirror/test/wan"
)

// result is one object of results/<name>.json. The fields are fixed by the
// issue that asked for the benchmark; null where a field does not apply.
type result struct {
	System            string           `json:"system"`
	Workload          string           `json:"workload"`
	EdgeCompression   string           `json:"edge_compression"`
	Link              string           `json:"link"`
	Records           int64            `json:"records"`
	Seconds           float64          `json:"seconds"`
	RecordsPerS       float64          `json:"records_per_s"`
	WANBytes          int64            `json:"wan_bytes"`
	WANBytesPerRecord float64          `json:"wan_bytes_per_record"`
	CPUSeconds        float64          `json:"cpu_seconds"`
	PeakRSSBytes      map[string]int64 `json:"peak_rss_bytes"`
	P50LatencyMS      *float64         `json:"p50_latency_ms"`
	P99LatencyMS      *float64         `json:"p99_latency_ms"`
	DrainRatio        *float64         `json:"drain_ratio"`
	CapAdherence      *float64         `json:"cap_adherence"`
	Duplicates        int64            `json:"duplicates"`
	Missing           int64            `json:"missing"`
}

// extra is what a row measured besides the fixed fields; it goes to
// results/<name>.extra.json and into the markdown.
type extra struct {
	Row              string  `json:"row"`
	SourceBytes      int64   `json:"source_bytes"`       // key+value bytes of the throughput run's records
	StartupSeconds   float64 `json:"startup_seconds"`    // process start until the warm-up records were in the hub
	LatencyRate      int     `json:"latency_rate"`       // records/s of the latency run
	LatencySamples   int64   `json:"latency_samples"`    // records whose latency was measured
	ChunkRawBytes    float64 `json:"chunk_raw_bytes"`    // edgemirror: raw bytes of the chunks built
	ChunkFrameBytes  float64 `json:"chunk_frame_bytes"`  // edgemirror: compressed frame bytes
	PlainZstdRatio   float64 `json:"plain_zstd_ratio"`   // raw/compressed of the same records, zstd default level, 1 MiB blocks
	CapBusiestBps    float64 `json:"cap_busiest_bps"`    // capped run: busiest 2 s of agent→aggregator bytes, bytes/s
	CapBandwidthBps  float64 `json:"cap_bandwidth_bps"`  // capped run: --bandwidth in bytes/s
	CapRecordsPerS   float64 `json:"cap_records_per_s"`  // capped run throughput
	CapProxyLateMS   float64 `json:"cap_proxy_late_ms"`  // capped run: the proxy's lateness (a late proxy delivers a burst afterwards)
	BacklogWireBytes int64   `json:"backlog_wire_bytes"` // outage: bytes that crossed the link after restore
	DrainSeconds     float64 `json:"drain_seconds"`      // outage: restore until the hub had every record
	IdealSeconds     float64 `json:"ideal_seconds"`      // outage: backlog wire bytes / link rate
	ProxyLateMS      float64 `json:"proxy_late_ms"`      // emulation fidelity: most bytes were delivered late
	// edgemirror: chunks the aggregator applied and their mean apply time
	// over the whole row (edgemirror_aggregator_chunk_apply_duration_seconds)
	AggChunks      float64 `json:"aggregator_chunks,omitempty"`
	AggMeanApplyMS float64 `json:"aggregator_mean_apply_ms,omitempty"`
	// edgemirror: hub transactions committed over the whole row, records
	// and chunks per transaction (group commit)
	AggTransactions  float64 `json:"aggregator_transactions,omitempty"`
	AggRecordsPerTxn float64 `json:"aggregator_records_per_transaction,omitempty"`
	AggChunksPerTxn  float64 `json:"aggregator_chunks_per_transaction,omitempty"`
	AggMeanCommitMS  float64 `json:"aggregator_mean_commit_ms,omitempty"`
	LoadAverage      string  `json:"load_average"` // /proc/loadavg at the end of the row
	// largest RssAnon / RssFile seen per process (polled every 100 ms)
	RSSAnonMax map[string]int64 `json:"rss_anon_max"`
	RSSFileMax map[string]int64 `json:"rss_file_max"`
}

func f64(v float64) *float64 { return &v }

// shortSys keeps topic names short.
func shortSys(s string) string {
	if s == sysMM2 {
		return "mm2"
	}
	return "em"
}

// startSystem starts the row's system mirroring topics over link l.
func startSystem(ctx context.Context, e *env, system, name string, topics []string, l wan.Link, agentFlags ...string) (system, error) {
	if system == sysMM2 {
		return startMM2(ctx, e, name, topics, l)
	}
	return startEdgemirror(ctx, e, name, topics, l, append(append([]string(nil), e.agentFlags...), agentFlags...)...)
}

// warmUp sends one record per partition to each topic and waits until the
// hub has them: then the system is running, has found the topics and
// created them on the hub. JVM start-up and topic discovery are not
// throughput, so the measured runs start after this.
func warmUp(ctx context.Context, e *env, s system, p *producer, hub *hubClient, topics ...string) error {
	for _, t := range topics {
		if err := p.produce(ctx, t, 0, 3); err != nil {
			return fmt.Errorf("warm-up produce: %w", err)
		}
	}
	for _, t := range topics {
		tail := &edgeTail{addr: e.edgeAddr, topic: t, wl: p.wl}
		if _, _, err := hub.waitCount(ctx, s.hubTopic(t), 3, 5*time.Minute, s.alive, tail); err != nil {
			return fmt.Errorf("warm-up: %w", err)
		}
	}
	return nil
}

// expected bounds how long moving n records of wl over l may take before
// the run is declared failed.
func expected(n int64, wl workload, l wan.Link) time.Duration {
	d := 5 * time.Minute
	if l.Rate > 0 {
		secs := float64(n) * float64(wl.approxSize+80) / float64(l.Rate)
		d += time.Duration(3 * secs * float64(time.Second))
	} else {
		d += time.Duration(n/2000) * time.Second
	}
	return d
}

// latencyRate is the moderate steady rate of a latency run: 2,000 records/s,
// or less where that would be more than 40 % of the link uncompressed, so
// that neither system is measured while overloaded.
func latencyRate(wl workload, l wan.Link) int {
	r := 2000
	if l.Rate > 0 {
		r = min(r, int(0.4*float64(l.Rate)/float64(wl.approxSize+60)))
	}
	return max(r, 10)
}

func runRow(ctx context.Context, e *env, m matrix, r rowSpec) (result, extra, error) {
	res := result{System: r.system, Workload: r.workload, EdgeCompression: r.compression, Link: r.link, Records: r.records}
	ex := extra{Row: r.name()}
	wl, err := workloadByName(r.workload)
	if err != nil {
		return res, ex, err
	}
	l := links[r.link]
	base := fmt.Sprintf("%s-%s-%s-%s", r.workload, r.compression, r.link, shortSys(r.system))
	if r.warmUp > 0 {
		base = fmt.Sprintf("warmup%d-%s", r.warmUp, base)
	}
	tp, lat := base, base+"-lat"
	if err := createTopics(ctx, e.edgeAddr, 3, tp, lat); err != nil {
		return res, ex, err
	}
	e.logf("%s: starting (%d records over %s)", r.name(), r.records, l)
	t0 := time.Now()
	s, err := startSystem(ctx, e, r.system, base, []string{tp, lat}, l)
	if err != nil {
		return res, ex, err
	}
	defer s.stop(ctx)
	prod, err := newProducer(e.edgeAddr, r.compression, wl, 5*time.Millisecond)
	if err != nil {
		return res, ex, err
	}
	defer prod.close()
	hub, err := newHubClient(e.hubAddr)
	if err != nil {
		return res, ex, err
	}
	defer hub.close()
	if err := warmUp(ctx, e, s, prod, hub, tp, lat); err != nil {
		return res, ex, err
	}
	ex.StartupSeconds = time.Since(t0).Seconds()

	// Throughput: N records produced at the edge as fast as it takes them,
	// timed from the first produce to the last record in the hub.
	pids := s.pids()
	rs := sampleRSS(pids)
	defer rs.finish()
	cpu0, err := cpuOf(pids)
	if err != nil {
		return res, ex, err
	}
	st0 := s.proxy().Stats()
	var m0 map[string]float64
	if em, ok := s.(*edgemirrorSys); ok {
		m0 = em.metrics(ctx)
	}
	profiled := startProfiles(ctx, e, s, base)
	start := time.Now()
	perr := make(chan error, 1)
	var produced time.Duration // how long the edge producer took to have all N acknowledged
	var finished atomic.Bool
	go func() {
		err := prod.produce(ctx, tp, 3, r.records)
		produced = time.Since(start)
		finished.Store(true)
		perr <- err
	}()
	tail := &edgeTail{addr: e.edgeAddr, topic: tp, wl: wl, produced: finished.Load}
	done, stable, err := hub.waitCount(ctx, s.hubTopic(tp), r.records+3, expected(r.records, wl, l), s.alive, tail)
	profiled()
	if err != nil {
		return res, ex, err
	}
	if err := <-perr; err != nil {
		return res, ex, fmt.Errorf("produce: %w", err)
	}
	res.Seconds = done.Sub(start).Seconds()
	res.RecordsPerS = float64(r.records) / res.Seconds
	cpu1, err := cpuOf(pids)
	if err != nil {
		return res, ex, err
	}
	res.CPUSeconds = cpu1 - cpu0
	st1 := s.proxy().Stats()
	res.WANBytes = (st1.Up - st0.Up) + (st1.Down - st0.Down)
	res.WANBytesPerRecord = float64(res.WANBytes) / float64(r.records)
	ex.SourceBytes = sourceBytes(wl, 3, r.records)
	if em, ok := s.(*edgemirrorSys); ok {
		m1 := em.metrics(ctx)
		ex.ChunkRawBytes = m1["edgemirror_agent_chunk_raw_bytes_total"] - m0["edgemirror_agent_chunk_raw_bytes_total"]
		ex.ChunkFrameBytes = m1["edgemirror_agent_chunk_frame_bytes_total"] - m0["edgemirror_agent_chunk_frame_bytes_total"]
	}
	e.logf("%s: %d records in %.1fs = %.0f rec/s, %.1f WAN B/rec, %.2f CPU s (the edge producer took %.1fs)", r.name(), r.records, res.Seconds,
		res.RecordsPerS, res.WANBytesPerRecord, res.CPUSeconds, produced.Seconds())
	if r.warmUp > 0 {
		return res, ex, nil // not reported: it only warms the brokers
	}

	// Latency: a steady moderate rate; the hub consumer measures, per
	// record, its read time minus the timestamp the edge producer gave it.
	ex.LatencyRate = latencyRate(wl, l)
	p50, p99, n, err := latencyRun(ctx, e, s, prod, lat, wl, ex.LatencyRate, m.latencyFor)
	if err != nil {
		return res, ex, err
	}
	res.P50LatencyMS, res.P99LatencyMS, ex.LatencySamples = f64(p50), f64(p99), n
	e.logf("%s: latency at %d rec/s: p50 %.0f ms, p99 %.0f ms (%d records)", r.name(), ex.LatencyRate, p50, p99, n)

	res.PeakRSSBytes = map[string]int64{}
	for name, pid := range pids {
		if v, err := peakRSS(pid); err == nil {
			res.PeakRSSBytes[name] = v
		}
	}
	ex.ProxyLateMS = float64(s.proxy().Stats().Late.Microseconds()) / 1000
	ex.RSSAnonMax, ex.RSSFileMax = rs.finish()
	aggApply(ctx, s, &ex)
	s.stop(ctx)

	vctx, cancel := context.WithTimeout(ctx, 10*time.Minute)
	defer cancel()
	var lastData map[int32]int64
	res.Duplicates, res.Missing, lastData, err = verify(vctx, e.hubAddr, s.hubTopic(tp), wl, r.records+3)
	if err != nil {
		return res, ex, err
	}
	if err := checkCommitted(s.hubTopic(tp), stable, lastData); err != nil {
		return res, ex, err
	}
	if r.system == sysEdgemirror {
		ex.PlainZstdRatio, err = plainZstdRatio(vctx, e.edgeAddr, tp)
		if err != nil {
			return res, ex, err
		}
		if m.capRuns && r.link == "wan" {
			if err := capRun(ctx, e, r, wl, &res, &ex); err != nil {
				return res, ex, fmt.Errorf("capped run: %w", err)
			}
		}
	}
	ex.LoadAverage = loadAverage()
	e.logf("%s: duplicates %d, missing %d, peak RSS %v", r.name(), res.Duplicates, res.Missing, fmtRSS(res.PeakRSSBytes))
	return res, ex, nil
}

// latencyRun produces rate records/s to topic for d and returns p50 and
// p99 of (hub read time − edge timestamp) over every record.
func latencyRun(ctx context.Context, e *env, s system, prod *producer, topic string, wl workload, rate int, d time.Duration) (p50, p99 float64, n int64, err error) {
	lat, err := startLatencies(ctx, e.hubAddr, s.hubTopic(topic), wl)
	if err != nil {
		return 0, 0, 0, err
	}
	stop := make(chan struct{})
	time.AfterFunc(d, func() { close(stop) })
	sent := prod.paced(ctx, stop, topic, 3, rate)
	if err := prod.flush(ctx); err != nil {
		lat.percentiles()
		return 0, 0, 0, err
	}
	deadline := time.Now().Add(2*time.Minute + d)
	for lat.count() < sent {
		if err := s.alive(); err != nil {
			lat.percentiles()
			return 0, 0, 0, err
		}
		if time.Now().After(deadline) || ctx.Err() != nil {
			got := lat.count()
			lat.percentiles()
			return 0, 0, 0, fmt.Errorf("latency run: %d of %d records reached the hub", got, sent)
		}
		time.Sleep(50 * time.Millisecond)
	}
	p50, p99 = lat.percentiles()
	return p50, p99, sent, nil
}

// capRun runs edgemirror again on the wan link with --bandwidth at 80 % of
// it and reports the busiest 2 s of agent→aggregator bytes over the cap.
func capRun(ctx context.Context, e *env, r rowSpec, wl workload, res *result, ex *extra) error {
	const capBps = 1_000_000 // 8 Mbit/s, below the 10 Mbit/s link
	base := fmt.Sprintf("%s-%s-%s-cap", r.workload, r.compression, r.link)
	if err := createTopics(ctx, e.edgeAddr, 3, base); err != nil {
		return err
	}
	s, err := startSystem(ctx, e, sysEdgemirror, base, []string{base}, links[r.link], "--bandwidth", "8Mbit/s")
	if err != nil {
		return err
	}
	defer s.stop(ctx)
	prod, err := newProducer(e.edgeAddr, r.compression, wl, 5*time.Millisecond)
	if err != nil {
		return err
	}
	defer prod.close()
	hub, err := newHubClient(e.hubAddr)
	if err != nil {
		return err
	}
	defer hub.close()
	if err := warmUp(ctx, e, s, prod, hub, base); err != nil {
		return err
	}
	start := time.Now()
	perr := make(chan error, 1)
	var finished atomic.Bool
	go func() {
		err := prod.produce(ctx, base, 3, r.records)
		finished.Store(true)
		perr <- err
	}()
	tail := &edgeTail{addr: e.edgeAddr, topic: base, wl: wl, produced: finished.Load}
	done, _, err := hub.waitCount(ctx, s.hubTopic(base), r.records+3, expected(r.records, wl, links[r.link]), s.alive, tail)
	if err != nil {
		return err
	}
	if err := <-perr; err != nil {
		return err
	}
	ex.CapBusiestBps = s.proxy().BusiestWindow(2 * time.Second)
	ex.CapBandwidthBps = capBps
	ex.CapRecordsPerS = float64(r.records) / done.Sub(start).Seconds()
	ex.CapProxyLateMS = float64(s.proxy().Stats().Late.Microseconds()) / 1000
	res.CapAdherence = f64(ex.CapBusiestBps / capBps)
	e.logf("%s: with --bandwidth 8Mbit/s busiest 2 s = %.0f B/s = %.3f of the cap (%.0f rec/s)", r.name(),
		ex.CapBusiestBps, *res.CapAdherence, ex.CapRecordsPerS)
	return nil
}

// Outage: sensor records, no edge compression, the wan link. A steady load
// of outageRate records/s runs for outagePre, the link is cut for
// outageCut (connections reset, new ones refused), and the load stops when
// the link is restored. Drain time is from the restore until the hub has
// every record; the ideal is the bytes that crossed the link after the
// restore divided by the link's rate.
const outageRate = 3000

// outagePre and outageCut are variables only so that a short trial run can
// change them (--outage-cut); the matrix uses 20 s and 60 s.
var (
	outagePre = 20 * time.Second
	outageCut = 60 * time.Second
)

func runOutage(ctx context.Context, e *env, system string) (result, extra, error) {
	res := result{System: system, Workload: "sensor", EdgeCompression: "none", Link: "outage"}
	ex := extra{Row: system + "/sensor/none/outage"}
	wl, _ := workloadByName("sensor")
	l := links["outage"]
	base := "sensor-none-outage-" + shortSys(system)
	if err := createTopics(ctx, e.edgeAddr, 3, base); err != nil {
		return res, ex, err
	}
	e.logf("%s: starting (%d rec/s, link cut for %s after %s)", ex.Row, outageRate, outageCut, outagePre)
	t0 := time.Now()
	s, err := startSystem(ctx, e, system, base, []string{base}, l)
	if err != nil {
		return res, ex, err
	}
	defer s.stop(ctx)
	prod, err := newProducer(e.edgeAddr, "none", wl, 5*time.Millisecond)
	if err != nil {
		return res, ex, err
	}
	defer prod.close()
	hub, err := newHubClient(e.hubAddr)
	if err != nil {
		return res, ex, err
	}
	defer hub.close()
	if err := warmUp(ctx, e, s, prod, hub, base); err != nil {
		return res, ex, err
	}
	ex.StartupSeconds = time.Since(t0).Seconds()
	pids := s.pids()
	cpu0, err := cpuOf(pids)
	if err != nil {
		return res, ex, err
	}
	px := s.proxy()
	st0 := px.Stats()
	start := time.Now()
	stop := make(chan struct{})
	sentCh := make(chan int64, 1)
	go func() { sentCh <- prod.paced(ctx, stop, base, 3, outageRate) }()
	sleepCtx(ctx, outagePre)
	px.Cut()
	e.logf("%s: link cut", ex.Row)
	sleepCtx(ctx, outageCut)
	close(stop)
	sent := <-sentCh
	stRestore := px.Stats()
	px.Restore()
	restored := time.Now()
	e.logf("%s: link restored; %d records produced", ex.Row, sent)
	if err := prod.flush(ctx); err != nil {
		return res, ex, err
	}
	tail := &edgeTail{addr: e.edgeAddr, topic: base, wl: wl}
	done, stable, err := hub.waitCount(ctx, s.hubTopic(base), sent+3, 15*time.Minute, s.alive, tail)
	if err != nil {
		return res, ex, err
	}
	st1 := px.Stats()
	cpu1, err := cpuOf(pids)
	if err != nil {
		return res, ex, err
	}
	res.Records = sent
	res.Seconds = done.Sub(start).Seconds()
	res.RecordsPerS = float64(sent) / res.Seconds
	res.WANBytes = (st1.Up - st0.Up) + (st1.Down - st0.Down)
	res.WANBytesPerRecord = float64(res.WANBytes) / float64(sent)
	res.CPUSeconds = cpu1 - cpu0
	ex.SourceBytes = sourceBytes(wl, 3, sent)
	// the data flows one way (up for edgemirror, down for MirrorMaker 2):
	// the busier direction after the restore is the backlog
	ex.BacklogWireBytes = max(st1.Up-stRestore.Up, st1.Down-stRestore.Down)
	ex.DrainSeconds = done.Sub(restored).Seconds()
	ex.IdealSeconds = float64(ex.BacklogWireBytes) / float64(l.Rate)
	res.DrainRatio = f64(ex.DrainSeconds / ex.IdealSeconds)
	res.PeakRSSBytes = map[string]int64{}
	for name, pid := range pids {
		if v, err := peakRSS(pid); err == nil {
			res.PeakRSSBytes[name] = v
		}
	}
	ex.ProxyLateMS = float64(px.Stats().Late.Microseconds()) / 1000
	aggApply(ctx, s, &ex)
	s.stop(ctx)
	vctx, cancel := context.WithTimeout(ctx, 10*time.Minute)
	defer cancel()
	var lastData map[int32]int64
	res.Duplicates, res.Missing, lastData, err = verify(vctx, e.hubAddr, s.hubTopic(base), wl, sent+3)
	if err != nil {
		return res, ex, err
	}
	if err := checkCommitted(s.hubTopic(base), stable, lastData); err != nil {
		return res, ex, err
	}
	ex.LoadAverage = loadAverage()
	e.logf("%s: drained %d wire bytes in %.1fs (ideal %.1fs, ratio %.2f); duplicates %d, missing %d", ex.Row,
		ex.BacklogWireBytes, ex.DrainSeconds, ex.IdealSeconds, *res.DrainRatio, res.Duplicates, res.Missing)
	return res, ex, nil
}

func sleepCtx(ctx context.Context, d time.Duration) {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
	case <-t.C:
	}
}

// sourceBytes is the key+value bytes of records [from, from+n) of wl.
func sourceBytes(wl workload, from, n int64) int64 {
	var sum int64
	var k, v []byte
	for id := from; id < from+n; id++ {
		k, v = wl.make(id, rngFor(id), k, v)
		sum += int64(len(k) + len(v))
	}
	return sum
}

func fmtRSS(m map[string]int64) string {
	var parts []string
	for k, v := range m {
		parts = append(parts, fmt.Sprintf("%s %.0f MiB", k, float64(v)/(1<<20)))
	}
	return strings.Join(parts, ", ")
}

// startProfiles asks agent and aggregator (started with --pprof) for a CPU
// profile of the next 30 s; the returned function takes heap profiles and
// waits for the CPU profiles. Both do nothing without --pprof.
func startProfiles(ctx context.Context, e *env, s system, row string) func() {
	em, ok := s.(*edgemirrorSys)
	if e.profileDir == "" || !ok {
		return func() {}
	}
	dir := filepath.Join(e.profileDir, row)
	if err := os.MkdirAll(dir, 0o755); err != nil {
		e.logf("profiles: %v", err)
		return func() {}
	}
	get := func(addr, path, file string) {
		req, err := http.NewRequestWithContext(ctx, http.MethodGet, "http://"+addr+path, nil)
		if err != nil {
			return
		}
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			e.logf("profile %s: %v", file, err)
			return
		}
		defer resp.Body.Close()
		f, err := os.Create(filepath.Join(dir, file))
		if err != nil {
			return
		}
		defer f.Close()
		_, _ = io.Copy(f, resp.Body)
	}
	var wg sync.WaitGroup
	wg.Go(func() { get(em.metricsAddr, "/debug/pprof/profile?seconds=30", "agent-cpu.pprof") })
	wg.Go(func() { get(em.aggMetricsAddr, "/debug/pprof/profile?seconds=30", "aggregator-cpu.pprof") })
	return func() {
		get(em.metricsAddr, "/debug/pprof/heap", "agent-heap.pprof")
		get(em.aggMetricsAddr, "/debug/pprof/heap", "aggregator-heap.pprof")
		wg.Wait()
	}
}

// aggApply records how many chunks the aggregator applied and how long one
// took on average.
func aggApply(ctx context.Context, s system, ex *extra) {
	em, ok := s.(*edgemirrorSys)
	if !ok {
		return
	}
	sctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	m, err := harness.Scrape(sctx, em.aggMetricsAddr)
	if err != nil {
		return
	}
	const name = "edgemirror_aggregator_chunk_apply_duration_seconds"
	if n := m[name+"_count"]; n > 0 {
		ex.AggChunks, ex.AggMeanApplyMS = n, 1000*m[name+"_sum"]/n
	}
	ex.AggTransactions = m["edgemirror_aggregator_hub_transactions_total"]
	if n := m["edgemirror_aggregator_hub_transaction_records_count"]; n > 0 {
		ex.AggRecordsPerTxn = m["edgemirror_aggregator_hub_transaction_records_sum"] / n
	}
	if n := m["edgemirror_aggregator_hub_transaction_chunks_count"]; n > 0 {
		ex.AggChunksPerTxn = m["edgemirror_aggregator_hub_transaction_chunks_sum"] / n
	}
	if n := m["edgemirror_aggregator_hub_commit_duration_seconds_count"]; n > 0 {
		ex.AggMeanCommitMS = 1000 * m["edgemirror_aggregator_hub_commit_duration_seconds_sum"] / n
	}
}
