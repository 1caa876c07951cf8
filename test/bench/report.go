package main

import (
	"bytes"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"sort"
	"strconv"
	"strings"
	"time"

	"github.com/edgemirror/edgemirror/test/internal/harness"
)

// info describes the run: machine, versions, configuration.
type info struct {
	Matrix       string  `json:"matrix"`
	Started      string  `json:"started"`
	Seconds      float64 `json:"seconds"`
	Complete     bool    `json:"complete"`
	CPUModel     string  `json:"cpu_model"`
	CPUs         int     `json:"cpus"`
	MemoryBytes  int64   `json:"memory_bytes"`
	Kernel       string  `json:"kernel"`
	LoadStart    string  `json:"load_average_start"`
	GoVersion    string  `json:"go_version"`
	JavaVersion  string  `json:"java_version"`
	KafkaVersion string  `json:"kafka_version"`
	MM2Version   string  `json:"mirrormaker2_version"`
	Edgemirror   string  `json:"edgemirror_version"`
	MM2Props     string  `json:"mirrormaker2_properties"`
	// WarmUp says what ran, unmeasured, before the measured rows ("" for
	// nothing: the first row met freshly started brokers).
	WarmUp string `json:"warm_up,omitempty"`
	// Rerun lists rows measured again later (--merge) and when.
	Rerun []string `json:"rerun,omitempty"`
}

func machineInfo() info {
	in := info{Started: time.Now().UTC().Format(time.RFC3339), CPUs: runtime.NumCPU(), GoVersion: runtime.Version(),
		LoadStart: loadAverage()}
	if b, err := os.ReadFile("/proc/cpuinfo"); err == nil {
		for _, l := range strings.Split(string(b), "\n") {
			if k, v, ok := strings.Cut(l, ":"); ok && strings.TrimSpace(k) == "model name" {
				in.CPUModel = strings.TrimSpace(v)
				break
			}
		}
	}
	if b, err := os.ReadFile("/proc/meminfo"); err == nil {
		for _, l := range strings.Split(string(b), "\n") {
			if rest, ok := strings.CutPrefix(l, "MemTotal:"); ok {
				f := strings.Fields(rest)
				if len(f) > 0 {
					kb, _ := strconv.ParseInt(f[0], 10, 64)
					in.MemoryBytes = kb << 10
				}
			}
		}
	}
	if b, err := os.ReadFile("/proc/sys/kernel/osrelease"); err == nil {
		in.Kernel = strings.TrimSpace(string(b))
	}
	if out, err := exec.Command("java", "-version").CombinedOutput(); err == nil {
		in.JavaVersion = strings.TrimSpace(strings.SplitN(string(out), "\n", 2)[0])
	}
	if out, err := exec.Command("git", "-C", harness.RepoRoot(), "describe", "--tags", "--always", "--dirty").Output(); err == nil {
		in.Edgemirror = strings.TrimSpace(string(out))
	}
	return in
}

func loadAverage() string {
	b, err := os.ReadFile("/proc/loadavg")
	if err != nil {
		return ""
	}
	f := strings.Fields(string(b))
	if len(f) < 3 {
		return ""
	}
	return strings.Join(f[:3], " ")
}

// report collects the rows and writes results/<name>.json, .extra.json,
// .md and .png.
type report struct {
	name, dir string
	merging   bool // rows added now are noted as measured again
	info      info
	results   []result
	extras    []extra
}

func newReport(name, dir string) *report {
	return &report{name: name, dir: dir, info: info{Matrix: name}}
}

// add appends a row, or replaces the row of the same system, workload,
// compression and link (a rerun merged into earlier results).
func (r *report) add(res result, ex extra) {
	for i, o := range r.results {
		if o.System == res.System && o.Workload == res.Workload && o.EdgeCompression == res.EdgeCompression && o.Link == res.Link {
			r.results[i], r.extras[i] = res, ex
			r.info.Rerun = append(r.info.Rerun, ex.Row+" at "+time.Now().UTC().Format(time.RFC3339))
			return
		}
	}
	if r.merging {
		r.info.Rerun = append(r.info.Rerun, ex.Row+" at "+time.Now().UTC().Format(time.RFC3339))
	}
	r.results = append(r.results, res)
	r.extras = append(r.extras, ex)
}

// load reads the rows and run information of an earlier run of the same
// name, so that rows run again replace their earlier measurement.
func (r *report) load() error {
	b, err := os.ReadFile(filepath.Join(r.dir, r.name+".json"))
	if err != nil {
		return err
	}
	if err := json.Unmarshal(b, &r.results); err != nil {
		return err
	}
	var prev struct {
		Info info    `json:"info"`
		Rows []extra `json:"rows"`
	}
	b, err = os.ReadFile(filepath.Join(r.dir, r.name+".extra.json"))
	if err != nil {
		return err
	}
	if err := json.Unmarshal(b, &prev); err != nil {
		return err
	}
	if len(prev.Rows) != len(r.results) {
		return fmt.Errorf("%s.json and %s.extra.json disagree", r.name, r.name)
	}
	r.extras, r.info = prev.Rows, prev.Info
	r.merging = true
	return nil
}

func (r *report) write(readme bool) error {
	if err := os.MkdirAll(r.dir, 0o755); err != nil {
		return err
	}
	results := r.results
	if results == nil {
		results = []result{}
	}
	if err := writeJSON(filepath.Join(r.dir, r.name+".json"), results); err != nil {
		return err
	}
	if err := writeJSON(filepath.Join(r.dir, r.name+".extra.json"), struct {
		Info info    `json:"info"`
		Rows []extra `json:"rows"`
	}{r.info, r.extras}); err != nil {
		return err
	}
	md := r.markdown()
	if err := os.WriteFile(filepath.Join(r.dir, r.name+".md"), []byte(md), 0o644); err != nil {
		return err
	}
	if err := writeChart(filepath.Join(r.dir, r.name+".png"), r.name, r.pairs()); err != nil {
		return err
	}
	if readme {
		return r.updateREADME()
	}
	return nil
}

func writeJSON(path string, v any) error {
	b, err := json.MarshalIndent(v, "", "  ")
	if err != nil {
		return err
	}
	return os.WriteFile(path, append(b, '\n'), 0o644)
}

// pair is one workload/compression/link measured by both systems.
type pair struct {
	key    string
	em, mm *result
	emx    *extra
	mmx    *extra
}

func (r *report) pairs() []pair {
	idx := map[string]*pair{}
	var order []string
	for i := range r.results {
		res := &r.results[i]
		k := res.Workload + "/" + res.EdgeCompression + "/" + res.Link
		p := idx[k]
		if p == nil {
			p = &pair{key: k}
			idx[k] = p
			order = append(order, k)
		}
		if res.System == sysEdgemirror {
			p.em, p.emx = res, &r.extras[i]
		} else {
			p.mm, p.mmx = res, &r.extras[i]
		}
	}
	out := make([]pair, 0, len(order))
	for _, k := range order {
		out = append(out, *idx[k])
	}
	return out
}

func cpuPerM(res *result) float64 { return res.CPUSeconds / float64(res.Records) * 1e6 }

func totalRSS(res *result) int64 {
	var n int64
	for _, v := range res.PeakRSSBytes {
		n += v
	}
	return n
}

func ratio(a, b float64) string {
	if b == 0 {
		return "–"
	}
	return fmt.Sprintf("%.2f", a/b)
}

func ptrRatio(a, b *float64) string {
	if a == nil || b == nil {
		return "–"
	}
	return ratio(*a, *b)
}

func fmtPtr(v *float64, format string) string {
	if v == nil {
		return "–"
	}
	return fmt.Sprintf(format, *v)
}

func mib(n int64) string { return fmt.Sprintf("%.0f", float64(n)/(1<<20)) }

func (r *report) machineLine() string {
	in := r.info
	return fmt.Sprintf("%s, %d CPUs, %.1f GiB memory, Linux %s (a shared machine, load average %s at the start)",
		in.CPUModel, in.CPUs, float64(in.MemoryBytes)/(1<<30), in.Kernel, in.LoadStart)
}

// ratioTable is the table of ratios edgemirror / MirrorMaker 2.
func (r *report) ratioTable() string {
	var b strings.Builder
	b.WriteString("| workload | edge compression | link | throughput | WAN bytes/record | CPU s/M records | peak RSS | p99 latency | drain ratio | duplicates (em / mm2) |\n")
	b.WriteString("|---|---|---|---|---|---|---|---|---|---|\n")
	for _, p := range r.pairs() {
		if p.em == nil || p.mm == nil {
			continue
		}
		w, c, l := splitKey(p.key)
		fmt.Fprintf(&b, "| %s | %s | %s | %s× | %s× | %s× | %s× | %s× | %s× | %d / %d |\n", w, c, l,
			ratio(p.em.RecordsPerS, p.mm.RecordsPerS),
			ratio(p.em.WANBytesPerRecord, p.mm.WANBytesPerRecord),
			ratio(cpuPerM(p.em), cpuPerM(p.mm)),
			ratio(float64(totalRSS(p.em)), float64(totalRSS(p.mm))),
			ptrRatio(p.em.P99LatencyMS, p.mm.P99LatencyMS),
			ptrRatio(p.em.DrainRatio, p.mm.DrainRatio),
			p.em.Duplicates, p.mm.Duplicates)
	}
	return b.String()
}

func splitKey(k string) (string, string, string) {
	f := strings.SplitN(k, "/", 3)
	for len(f) < 3 {
		f = append(f, "")
	}
	return f[0], f[1], f[2]
}

func (r *report) markdown() string {
	var b strings.Builder
	in := r.info
	fmt.Fprintf(&b, "# edgemirror vs MirrorMaker 2: %s\n\n", r.name)
	status := "complete"
	if !in.Complete {
		status = "partial (rows are written as they finish)"
	}
	if len(in.Rerun) > 0 {
		status += "; rows measured again later: " + strings.Join(in.Rerun, ", ")
	}
	fmt.Fprintf(&b, "Run %s, %s, %.0f s. Written by `go run ./test/bench --matrix %s`; numbers as measured, on a shared machine.\n\n",
		in.Started, status, in.Seconds, in.Matrix)
	fmt.Fprintf(&b, "- Machine: %s\n", r.machineLine())
	fmt.Fprintf(&b, "- Kafka %s brokers (KRaft, one node each for edge and hub), MirrorMaker 2 (connect-mirror) %s, %s, %s; edgemirror %s\n",
		in.KafkaVersion, in.MM2Version, in.JavaVersion, in.GoVersion, in.Edgemirror)
	if in.WarmUp != "" {
		fmt.Fprintf(&b, "- Warm-up before the measured rows, not reported: %s\n\n", in.WarmUp)
	} else {
		b.WriteString("- No warm-up pass: the first row ran on freshly started brokers\n\n")
	}

	b.WriteString("## Ratios: edgemirror / MirrorMaker 2\n\n")
	b.WriteString("Throughput above 1 is better for edgemirror; every other column below 1 is. Peak RSS compares agent + aggregator with the MirrorMaker 2 JVM.\n\n")
	b.WriteString(r.ratioTable())
	b.WriteString("\n![ratios](" + r.name + ".png)\n\n")

	b.WriteString("## Targets (wan link)\n\n")
	b.WriteString(r.targets())

	b.WriteString("\n## Every run\n\n")
	b.WriteString("| system | workload | edge comp. | link | records | s | records/s | source MB/s | WAN B/record | CPU s/M records | peak RSS MiB | p50 ms | p99 ms | drain ratio | cap adherence | dups | missing |\n")
	b.WriteString("|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|\n")
	for i, res := range r.results {
		ex := r.extras[i]
		var rss []string
		keys := make([]string, 0, len(res.PeakRSSBytes))
		for k := range res.PeakRSSBytes {
			keys = append(keys, k)
		}
		sort.Strings(keys)
		for _, k := range keys {
			rss = append(rss, k+" "+mib(res.PeakRSSBytes[k]))
		}
		fmt.Fprintf(&b, "| %s | %s | %s | %s | %d | %.1f | %.0f | %.2f | %.1f | %.1f | %s | %s | %s | %s | %s | %d | %d |\n",
			res.System, res.Workload, res.EdgeCompression, res.Link, res.Records, res.Seconds, res.RecordsPerS,
			float64(ex.SourceBytes)/1e6/res.Seconds, res.WANBytesPerRecord, cpuPerM(&res), strings.Join(rss, ", "),
			fmtPtr(res.P50LatencyMS, "%.0f"), fmtPtr(res.P99LatencyMS, "%.0f"), fmtPtr(res.DrainRatio, "%.2f"),
			fmtPtr(res.CapAdherence, "%.3f"), res.Duplicates, res.Missing)
	}

	b.WriteString("\n## Side measurements\n\n")
	b.WriteString("| run | start-up s | latency rate rec/s | edgemirror raw/frame | plain zstd 1 MiB blocks | capped run: busiest 2 s B/s (cap) | outage: backlog wire bytes, drain s, ideal s | proxy lateness ms | load average after |\n")
	b.WriteString("|---|---|---|---|---|---|---|---|---|\n")
	for _, ex := range r.extras {
		comp, plain, capped, outage := "–", "–", "–", "–"
		if ex.ChunkFrameBytes > 0 {
			comp = fmt.Sprintf("%.2f", ex.ChunkRawBytes/ex.ChunkFrameBytes)
		}
		if ex.PlainZstdRatio > 0 {
			plain = fmt.Sprintf("%.2f", ex.PlainZstdRatio)
		}
		if ex.CapBandwidthBps > 0 {
			capped = fmt.Sprintf("%.0f (%.0f), proxy late %.0f ms", ex.CapBusiestBps, ex.CapBandwidthBps, ex.CapProxyLateMS)
		}
		if ex.IdealSeconds > 0 {
			outage = fmt.Sprintf("%d, %.1f, %.1f", ex.BacklogWireBytes, ex.DrainSeconds, ex.IdealSeconds)
			if ex.AggChunks > 0 {
				outage += fmt.Sprintf(" (%.0f chunks, %.0f ms apply each)", ex.AggChunks, ex.AggMeanApplyMS)
			}
		}
		rate := "–"
		if ex.LatencyRate > 0 {
			rate = strconv.Itoa(ex.LatencyRate)
		}
		fmt.Fprintf(&b, "| %s | %.1f | %s | %s | %s | %s | %s | %.1f | %s |\n", ex.Row, ex.StartupSeconds, rate, comp, plain,
			capped, outage, ex.ProxyLateMS, ex.LoadAverage)
	}

	b.WriteString("\n## MirrorMaker 2 configuration\n\n```properties\n")
	b.WriteString(in.MM2Props)
	b.WriteString("```\n\nJVM: `mm2.sh` defaults (`-Xms256m -Xmx1g`, G1). edgemirror: agent and aggregator defaults " +
		"(zstd default level, 1 MiB chunks, `--linger 1s`, `--inflight 4`; aggregator `--hub-compression lz4`); the capped runs add `--bandwidth 8Mbit/s`.\n\n")
	b.WriteString("How each number is measured: [README.md](../README.md).\n")
	return b.String()
}

// targets checks the targets on the wan rows.
func (r *report) targets() string {
	var b strings.Builder
	b.WriteString("| workload / edge comp. | throughput ≥ 2× | WAN B/rec ≤ 0.35× (none) / 0.6× (lz4) | CPU/M ≤ 0.5× | compression within 5 % of plain zstd | agent RSS ≤ 40 MiB | cap ≤ 1.02 | p99 ≤ linger + 2 RTT + 50 ms |\n")
	b.WriteString("|---|---|---|---|---|---|---|---|\n")
	mark := func(ok bool, s string) string {
		if ok {
			return "met: " + s
		}
		return "**missed**: " + s
	}
	for _, p := range r.pairs() {
		_, comp, l := splitKey(p.key)
		if l != "wan" || p.em == nil {
			continue
		}
		cells := []string{"–", "–", "–", "–", "–", "–", "–"}
		if p.mm != nil {
			t := p.em.RecordsPerS / p.mm.RecordsPerS
			cells[0] = mark(t >= 2, fmt.Sprintf("%.2f×", t))
			w := p.em.WANBytesPerRecord / p.mm.WANBytesPerRecord
			lim := 0.35
			if comp == "lz4" {
				lim = 0.6
			}
			cells[1] = mark(w <= lim, fmt.Sprintf("%.2f×", w))
			c := cpuPerM(p.em) / cpuPerM(p.mm)
			cells[2] = mark(c <= 0.5, fmt.Sprintf("%.2f×", c))
		}
		if p.emx != nil && p.emx.ChunkFrameBytes > 0 && p.emx.PlainZstdRatio > 0 {
			em := p.emx.ChunkRawBytes / p.emx.ChunkFrameBytes
			d := em/p.emx.PlainZstdRatio - 1
			cells[3] = mark(d >= -0.05, fmt.Sprintf("%.2f vs %.2f (%+.1f %%)", em, p.emx.PlainZstdRatio, 100*d))
		}
		if a, ok := p.em.PeakRSSBytes["agent"]; ok {
			cells[4] = mark(a <= 40<<20, fmt.Sprintf("%.1f MiB", float64(a)/(1<<20)))
		}
		if p.em.CapAdherence != nil {
			note := ""
			if *p.em.CapAdherence < 0.95 {
				note = " (cap not binding: the agent's own rate stayed below it)"
			}
			cells[5] = mark(*p.em.CapAdherence <= 1.02, fmt.Sprintf("%.3f%s", *p.em.CapAdherence, note))
		}
		if p.em.P99LatencyMS != nil {
			lim := 1000.0 + 2*100 + 50
			cells[6] = mark(*p.em.P99LatencyMS <= lim, fmt.Sprintf("%.0f ms (limit %.0f)", *p.em.P99LatencyMS, lim))
		}
		fmt.Fprintf(&b, "| %s | %s |\n", p.key, strings.Join(cells, " | "))
	}
	for _, p := range r.pairs() {
		if _, _, l := splitKey(p.key); l == "outage" && p.em != nil && p.em.DrainRatio != nil {
			fmt.Fprintf(&b, "\nDrain ratio after a 60 s outage (target ≤ 1.1): edgemirror %s", mark(*p.em.DrainRatio <= 1.1, fmt.Sprintf("%.2f", *p.em.DrainRatio)))
			if p.mm != nil && p.mm.DrainRatio != nil {
				fmt.Fprintf(&b, "; MirrorMaker 2 %.2f", *p.mm.DrainRatio)
			}
			b.WriteString(".\n")
		}
	}
	return b.String()
}

const (
	readmeBegin = "<!-- bench:begin (written by test/bench) -->"
	readmeEnd   = "<!-- bench:end -->"
)

// updateREADME puts the latest ratio table and the machine into the
// README's performance section, between markers it adds on first use.
func (r *report) updateREADME() error {
	path := filepath.Join(harness.RepoRoot(), "README.md")
	b, err := os.ReadFile(path)
	if err != nil {
		return err
	}
	block := fmt.Sprintf("%s\nLatest `%s` matrix, %s, on %s. Ratios edgemirror / MirrorMaker 2 "+
		"(throughput: higher is better for edgemirror; the rest: lower is). Every number, the targets and the "+
		"MirrorMaker 2 configuration: [test/bench/results/%s.md](test/bench/results/%s.md).\n\n%s%s",
		readmeBegin, r.name, r.info.Started[:10], r.machineLine(), r.name, r.name, r.ratioTable(), readmeEnd)
	s := string(b)
	if i, j := strings.Index(s, readmeBegin), strings.Index(s, readmeEnd); i >= 0 && j > i {
		s = s[:i] + block + s[j+len(readmeEnd):]
	} else {
		h := strings.Index(s, "## Performance")
		if h < 0 {
			return fmt.Errorf("README.md has no \"## Performance\" section")
		}
		// after the section's first paragraph
		k := strings.Index(s[h:], "\n\n")
		if k < 0 {
			return fmt.Errorf("README.md: cannot find the performance section's text")
		}
		para := h + k + 2
		if e := strings.Index(s[para:], "\n\n"); e >= 0 {
			para += e + 2
		} else {
			para = len(s)
		}
		s = s[:para] + block + "\n\n" + s[para:]
	}
	if bytes.Equal([]byte(s), b) {
		return nil
	}
	return os.WriteFile(path, []byte(s), 0o644)
}
