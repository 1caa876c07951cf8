package main

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/prometheus/model/rulefmt"
	"github.com/prometheus/prometheus/promql/parser"

	"github.com/edgemirror/edgemirror/agent"
	"github.com/edgemirror/edgemirror/aggregator"
	"github.com/edgemirror/edgemirror/internal/testkit"
)

// recorder is a Registerer that keeps the name of every metric described
// by the collectors registered with it, including vectors with no child
// yet (which a scrape would not show).
type recorder struct {
	mu    sync.Mutex
	names map[string]bool
}

var fqName = regexp.MustCompile(`fqName: "([^"]+)"`)

func (r *recorder) Register(c prometheus.Collector) error {
	ch := make(chan *prometheus.Desc, 16)
	go func() { c.Describe(ch); close(ch) }()
	r.mu.Lock()
	defer r.mu.Unlock()
	for d := range ch {
		if m := fqName.FindStringSubmatch(d.String()); m != nil {
			r.names[m[1]] = true
		}
	}
	return nil
}

func (r *recorder) MustRegister(cs ...prometheus.Collector) {
	for _, c := range cs {
		_ = r.Register(c)
	}
}

func (r *recorder) Unregister(prometheus.Collector) bool { return true }

func (r *recorder) has(name string) bool {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.names[name]
}

// productMetrics returns every metric name the agent and the aggregator
// (and the shared process registry) export: both run briefly against an
// in-process hub and edge cluster with a recording registerer.
func productMetrics(t *testing.T) map[string]bool {
	t.Helper()
	rec := &recorder{names: map[string]bool{}}
	mfs, err := newRegistry().Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, mf := range mfs {
		rec.names[mf.GetName()] = true
	}
	cluster := testkit.Cluster(t)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()

	acfg := aggregator.DefaultConfig()
	acfg.Listen, acfg.Brokers, acfg.StateDir, acfg.Registerer = "127.0.0.1:0", cluster.ListenAddrs(), t.TempDir(), rec
	agg, err := aggregator.New(acfg)
	if err != nil {
		t.Fatal(err)
	}
	gcfg := agent.DefaultConfig()
	gcfg.EdgeID, gcfg.Brokers, gcfg.BufferDir, gcfg.BufferMaxBytes = "e1", cluster.ListenAddrs(), t.TempDir(), 8<<20
	gcfg.Aggregator, gcfg.Registerer = "http://127.0.0.1:1", rec
	ag, err := agent.New(gcfg)
	if err != nil {
		t.Fatal(err)
	}
	var wg sync.WaitGroup
	wg.Add(2)
	go func() { defer wg.Done(); _ = agg.Run(ctx) }()
	go func() { defer wg.Done(); _ = ag.Run(ctx) }()
	defer wg.Wait()
	deadline := time.Now().Add(20 * time.Second)
	for _, want := range []string{"edgemirror_agent_rpo_seconds", "edgemirror_buffer_chunks", "edgemirror_aggregator_edge_rpo_seconds"} {
		for !rec.has(want) {
			if time.Now().After(deadline) {
				t.Fatalf("%s never registered", want)
			}
			time.Sleep(10 * time.Millisecond) // polling a registration, bounded by the deadline
		}
	}
	<-agg.Ready()
	cancel()
	wg.Wait()
	rec.mu.Lock()
	defer rec.mu.Unlock()
	return rec.names
}

// metricsOf returns the metric names a PromQL expression selects.
func metricsOf(expr string) ([]string, error) {
	e, err := parser.ParseExpr(expr)
	if err != nil {
		return nil, err
	}
	var out []string
	parser.Inspect(e, func(n parser.Node, _ []parser.Node) error {
		if vs, ok := n.(*parser.VectorSelector); ok {
			name := vs.Name
			if name == "" {
				for _, m := range vs.LabelMatchers {
					if m.Name == "__name__" {
						name = m.Value
					}
				}
			}
			out = append(out, name)
		}
		return nil
	})
	return out, nil
}

// exists reports whether a selected series name is exported, taking the
// _bucket/_sum/_count series of histograms into account.
func exists(known map[string]bool, name string) bool {
	if known[name] {
		return true
	}
	for _, suffix := range []string{"_bucket", "_sum", "_count"} {
		if base, ok := strings.CutSuffix(name, suffix); ok && known[base] {
			return true
		}
	}
	return false
}

// TestAlertRules: packaging/prometheus/alerts.yml is valid for Prometheus'
// own rule parser, covers the fleet's questions, and names only metrics
// that exist.
func TestAlertRules(t *testing.T) {
	path := filepath.Join("..", "..", "packaging", "prometheus", "alerts.yml")
	groups, errs := rulefmt.ParseFile(path, false)
	for _, err := range errs {
		t.Error(err)
	}
	if t.Failed() {
		t.FailNow()
	}
	known := productMetrics(t)
	alerts := map[string]bool{}
	used := map[string]bool{}
	for _, g := range groups.Groups {
		for _, r := range g.Rules {
			alerts[r.Alert] = true
			names, err := metricsOf(r.Expr)
			if err != nil {
				t.Errorf("alert %s: %v", r.Alert, err)
				continue
			}
			if len(names) == 0 {
				t.Errorf("alert %s selects no metric", r.Alert)
			}
			for _, n := range names {
				used[n] = true
				if !exists(known, n) {
					t.Errorf("alert %s uses %s, which edgemirror does not export", r.Alert, n)
				}
			}
		}
	}
	for _, a := range []string{"EdgemirrorEdgeDisconnected", "EdgemirrorEdgeRPOHigh", "EdgemirrorRecordsLost",
		"EdgemirrorBufferNearlyFull", "EdgemirrorAggregatorRefusingChunks"} {
		if !alerts[a] {
			t.Errorf("alerts.yml lacks %s", a)
		}
	}
	for _, m := range []string{"edgemirror_aggregator_edge_last_seen_timestamp_seconds", "edgemirror_aggregator_edge_rpo_seconds",
		"edgemirror_aggregator_edge_lost_records_total", "edgemirror_aggregator_edge_buffer_fill_ratio", "edgemirror_aggregator_chunks_total"} {
		if !used[m] {
			t.Errorf("no alert uses %s", m)
		}
	}
}

// TestGrafanaDashboard: packaging/grafana/edgemirror.json is valid JSON, a
// dashboard, and every metric in its queries exists.
func TestGrafanaDashboard(t *testing.T) {
	b, err := os.ReadFile(filepath.Join("..", "..", "packaging", "grafana", "edgemirror.json"))
	if err != nil {
		t.Fatal(err)
	}
	var dash struct {
		Title  string `json:"title"`
		UID    string `json:"uid"`
		Panels []struct {
			Title   string `json:"title"`
			Targets []struct {
				Expr string `json:"expr"`
			} `json:"targets"`
		} `json:"panels"`
		Templating struct {
			List []struct {
				Name  string `json:"name"`
				Query any    `json:"query"`
			} `json:"list"`
		} `json:"templating"`
	}
	if err := json.Unmarshal(b, &dash); err != nil {
		t.Fatalf("edgemirror.json: %v", err)
	}
	if dash.Title == "" || dash.UID == "" || len(dash.Panels) == 0 {
		t.Fatalf("not a dashboard: title %q uid %q, %d panels", dash.Title, dash.UID, len(dash.Panels))
	}
	known := productMetrics(t)
	// Grafana's variables, as Grafana replaces them before querying.
	vars := strings.NewReplacer("$__rate_interval", "5m", "$__interval", "1m", "${datasource}", "prom", "$edge", ".*")
	used := map[string]bool{}
	check := func(where, expr string) {
		names, err := metricsOf(vars.Replace(expr))
		if err != nil {
			t.Errorf("%s: query %q: %v", where, expr, err)
			return
		}
		for _, n := range names {
			used[n] = true
			if !exists(known, n) {
				t.Errorf("%s uses %s, which edgemirror does not export", where, n)
			}
		}
	}
	for _, p := range dash.Panels {
		if len(p.Targets) == 0 {
			t.Errorf("panel %q has no query", p.Title)
		}
		for _, tg := range p.Targets {
			check(fmt.Sprintf("panel %q", p.Title), tg.Expr)
		}
	}
	for _, v := range dash.Templating.List {
		if q, ok := v.Query.(map[string]any); ok {
			s, _ := q["query"].(string)
			if inner, ok := strings.CutPrefix(s, "label_values("); ok {
				check("variable "+v.Name, strings.SplitN(inner, ",", 2)[0])
			}
		}
	}
	// The fleet questions the dashboard must answer.
	for _, m := range []string{"edgemirror_aggregator_edge_rpo_seconds", "edgemirror_aggregator_edge_backlog_records",
		"edgemirror_aggregator_edge_backlog_bytes", "edgemirror_aggregator_records_written_total",
		"edgemirror_agent_wire_bytes_total", "edgemirror_agent_chunk_raw_bytes_total", "edgemirror_agent_chunk_frame_bytes_total",
		"edgemirror_aggregator_edge_lost_records_total", "edgemirror_aggregator_produce_duration_seconds_bucket"} {
		if !used[m] {
			t.Errorf("no panel queries %s", m)
		}
	}
}
