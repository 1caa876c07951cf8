package agent

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"maps"
	"net/http"
	"net/http/httptest"
	"net/url"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/segmentio/kafka-go"
	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kmsg"

	"github.com/edgemirror/edgemirror/internal/testkit"
	"github.com/edgemirror/edgemirror/internal/wire"
)

// configAggregator records topic config reports and answers them; refuse
// names keys it answers as refused by the hub.
type configAggregator struct {
	mu      sync.Mutex
	reports []wire.TopicConfigReport
	refuse  map[string]bool
	status  int // answer status; 0 = 200
}

func (c *configAggregator) handle(w http.ResponseWriter, r *http.Request) {
	var rep wire.TopicConfigReport
	body, _ := io.ReadAll(r.Body)
	if err := json.Unmarshal(body, &rep); err != nil || r.Header.Get(wire.HeaderEdge) != "plant-1" {
		writeTestJSON(w, 400, wire.ErrorResponse{Error: fmt.Sprintf("bad report %q", body), Permanent: true})
		return
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	c.reports = append(c.reports, rep)
	if c.status != 0 {
		writeTestJSON(w, c.status, wire.ErrorResponse{Error: "hub unavailable"})
		return
	}
	var out wire.TopicConfigResponse
	for _, tc := range rep.Topics {
		if err := tc.Validate(); err != nil {
			writeTestJSON(w, 400, wire.ErrorResponse{Error: err.Error(), Permanent: true})
			return
		}
		res := wire.TopicConfigResult{Topic: tc.Topic, HubTopic: "plant-1." + tc.Topic}
		for k, v := range tc.Configs {
			if c.refuse[k] {
				res.Refused = append(res.Refused, wire.RefusedTopicConfig{Key: k, Value: v, Error: "INVALID_CONFIG"})
			}
		}
		out.Topics = append(out.Topics, res)
	}
	writeTestJSON(w, 200, out)
}

// lastReport returns the settings of topic in the latest report naming it
// and how many reports named it.
func (c *configAggregator) lastReport(topic string) (map[string]string, int32, int) {
	c.mu.Lock()
	defer c.mu.Unlock()
	var cfg map[string]string
	var parts int32
	n := 0
	for _, r := range c.reports {
		for _, tc := range r.Topics {
			if tc.Topic == topic {
				cfg, parts = tc.Configs, tc.Partitions
				n++
			}
		}
	}
	return cfg, parts, n
}

func TestTopicConfigSync(t *testing.T) {
	edge := newCluster(t)
	prod := newProducer(t, edge)
	adm := kadm.NewClient(prod)
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	str := func(s string) *string { return &s }
	// Overrides of synced keys, an override that is never carried
	// (min.insync.replicas), and keys left at the broker's default.
	if _, err := adm.CreateTopic(ctx, 2, 1, map[string]*string{
		"cleanup.policy": str("compact"), "min.compaction.lag.ms": str("60000"), "delete.retention.ms": str("1000"),
		"min.insync.replicas": str("1"),
	}, "state"); err != nil {
		t.Fatal(err)
	}
	createTopic(t, prod, "plain", 1)

	// Count the sync rounds: each reads the edge topics' settings once.
	var describes atomic.Int64
	edge.ControlKey(int16(kmsg.DescribeConfigs), func(kmsg.Request) (kmsg.Response, error, bool) {
		describes.Add(1)
		return nil, nil, false
	})
	afterSyncs := func(n int64) {
		t.Helper()
		target := describes.Load() + n
		testkit.Eventually(t, 10*time.Second, fmt.Sprintf("%d more syncs", n), func() error {
			if d := describes.Load(); d < target {
				return fmt.Errorf("%d of %d syncs", d-target+n, n)
			}
			return nil
		})
	}

	agg := &configAggregator{refuse: map[string]bool{}}
	mux := http.NewServeMux()
	mux.HandleFunc("POST "+wire.PathTopicConfigs, agg.handle)
	srv := httptest.NewServer(mux)
	defer srv.Close()
	base, _ := url.Parse(srv.URL)

	cfg := DefaultConfig()
	cfg.EdgeID = "plant-1"
	cfg.MetadataInterval = 200 * time.Millisecond
	tr := &kafka.Transport{MetadataTTL: time.Second}
	defer tr.CloseIdleConnections()
	kc := &kafka.Client{Addr: kafka.TCP(edge.ListenAddrs()...), Transport: tr, Timeout: 10 * time.Second}
	hc := &http.Client{Transport: &http.Transport{}}
	defer hc.CloseIdleConnections()
	s := newTopicConfigSync(&cfg, slog.New(slog.NewTextHandler(io.Discard, nil)), kc, hc, func() *url.URL { return base }, nil, newMetrics())
	rctx, rcancel := context.WithCancel(ctx)
	done := make(chan error, 1)
	go func() { done <- s.run(rctx) }()
	defer func() { rcancel(); <-done }()

	s.setTopics([]wire.Topic{{Name: "state", Partitions: 2}, {Name: "plain", Partitions: 1}})
	want := map[string]string{"cleanup.policy": "compact", "min.compaction.lag.ms": "60000", "delete.retention.ms": "1000"}
	testkit.Eventually(t, 10*time.Second, "first report of state", func() error {
		got, parts, n := agg.lastReport("state")
		if n == 0 {
			return fmt.Errorf("not reported yet")
		}
		if !maps.Equal(got, want) || parts != 2 {
			t.Fatalf("reported %v (%d partitions), want %v (2 partitions)", got, parts, want)
		}
		return nil
	})
	testkit.Eventually(t, 10*time.Second, "first report of plain", func() error {
		got, _, n := agg.lastReport("plain")
		if n == 0 {
			return fmt.Errorf("not reported yet")
		}
		if len(got) != 0 {
			t.Fatalf("plain topic reported with %v; it overrides nothing", got)
		}
		return nil
	})

	// Several syncs later, an unchanged topic has not been sent again.
	afterSyncs(4)
	if _, _, n := agg.lastReport("state"); n != 1 {
		t.Fatalf("unchanged topic reported %d times, want once", n)
	}

	// A change at the edge is reported at the next sync.
	if _, err := adm.AlterTopicConfigs(ctx, []kadm.AlterConfig{{Op: kadm.SetConfig, Name: "retention.ms", Value: str("3600000")}}, "state"); err != nil {
		t.Fatal(err)
	}
	want["retention.ms"] = "3600000"
	testkit.Eventually(t, 10*time.Second, "changed settings reported", func() error {
		if got, _, _ := agg.lastReport("state"); !maps.Equal(got, want) {
			return fmt.Errorf("last report %v, want %v", got, want)
		}
		return nil
	})

	// A refused key makes the topic be reported again at every sync until
	// the hub takes it.
	agg.mu.Lock()
	agg.refuse["segment.ms"] = true
	agg.mu.Unlock()
	if _, err := adm.AlterTopicConfigs(ctx, []kadm.AlterConfig{{Op: kadm.SetConfig, Name: "segment.ms", Value: str("100")}}, "state"); err != nil {
		t.Fatal(err)
	}
	_, _, before := agg.lastReport("state")
	testkit.Eventually(t, 10*time.Second, "refused topic reported again", func() error {
		if _, _, n := agg.lastReport("state"); n < before+3 {
			return fmt.Errorf("reported %d times since the refusal", n-before)
		}
		return nil
	})
	agg.mu.Lock()
	agg.refuse = map[string]bool{}
	agg.mu.Unlock()
	afterSyncs(2) // one sync may have been under way with the old answer
	_, _, settled := agg.lastReport("state")
	afterSyncs(3)
	if _, _, n := agg.lastReport("state"); n != settled {
		t.Fatalf("topic still reported after the hub took it (%d more reports)", n-settled)
	}

	// An aggregator that cannot take reports: retried at each sync.
	agg.mu.Lock()
	agg.status = 503
	agg.mu.Unlock()
	if _, err := adm.AlterTopicConfigs(ctx, []kadm.AlterConfig{{Op: kadm.DeleteConfig, Name: "delete.retention.ms"}}, "state"); err != nil {
		t.Fatal(err)
	}
	testkit.Eventually(t, 10*time.Second, "report retried while the aggregator answers 503", func() error {
		if _, _, n := agg.lastReport("state"); n < settled+2 {
			return fmt.Errorf("%d attempts", n-settled)
		}
		return nil
	})
	agg.mu.Lock()
	agg.status = 0
	agg.mu.Unlock()
	delete(want, "delete.retention.ms")
	want["segment.ms"] = "100"
	testkit.Eventually(t, 10*time.Second, "removed override reported", func() error {
		if got, _, _ := agg.lastReport("state"); !maps.Equal(got, want) {
			return fmt.Errorf("last report %v, want %v", got, want)
		}
		return nil
	})
}

// Unchanged topics are reported again once per resync interval.
func TestTopicConfigResync(t *testing.T) {
	edge := newCluster(t)
	createTopic(t, newProducer(t, edge), "plain", 1)
	agg := &configAggregator{refuse: map[string]bool{}}
	mux := http.NewServeMux()
	mux.HandleFunc("POST "+wire.PathTopicConfigs, agg.handle)
	srv := httptest.NewServer(mux)
	defer srv.Close()
	base, _ := url.Parse(srv.URL)
	cfg := DefaultConfig()
	cfg.EdgeID = "plant-1"
	cfg.MetadataInterval = 50 * time.Millisecond
	tr := &kafka.Transport{MetadataTTL: time.Second}
	defer tr.CloseIdleConnections()
	kc := &kafka.Client{Addr: kafka.TCP(edge.ListenAddrs()...), Transport: tr, Timeout: 10 * time.Second}
	hc := &http.Client{Transport: &http.Transport{}}
	defer hc.CloseIdleConnections()
	s := newTopicConfigSync(&cfg, slog.New(slog.NewTextHandler(io.Discard, nil)), kc, hc, func() *url.URL { return base }, nil, newMetrics())
	s.resync = 500 * time.Millisecond
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- s.run(ctx) }()
	defer func() { cancel(); <-done }()
	s.setTopics([]wire.Topic{{Name: "plain", Partitions: 1}})
	start := time.Now()
	testkit.Eventually(t, 10*time.Second, "unchanged topic reported again", func() error {
		if _, _, n := agg.lastReport("plain"); n < 3 {
			return fmt.Errorf("reported %d times", n)
		}
		return nil
	})
	// Three reports need two resyncs: not sooner than one interval apart.
	if took := time.Since(start); took < 2*s.resync {
		t.Errorf("3 reports in %s, faster than two resync intervals (%s)", took, 2*s.resync)
	}
}

// Shipping waits at start for the first report, but never longer than the
// bound, and not at all once the report was tried.
func TestTopicConfigWaitFirst(t *testing.T) {
	edge := newCluster(t)
	createTopic(t, newProducer(t, edge), "plain", 1)
	var posted atomic.Bool
	mux := http.NewServeMux()
	mux.HandleFunc("POST "+wire.PathTopicConfigs, func(w http.ResponseWriter, r *http.Request) {
		posted.Store(true)
		writeTestJSON(w, 503, wire.ErrorResponse{Error: "hub unavailable"}) // tried, not taken: enough
	})
	srv := httptest.NewServer(mux)
	defer srv.Close()
	base, _ := url.Parse(srv.URL)
	cfg := DefaultConfig()
	cfg.EdgeID = "plant-1"
	cfg.MetadataInterval = time.Minute // only the wake runs a sync
	tr := &kafka.Transport{MetadataTTL: time.Second}
	defer tr.CloseIdleConnections()
	kc := &kafka.Client{Addr: kafka.TCP(edge.ListenAddrs()...), Transport: tr, Timeout: 10 * time.Second}
	hc := &http.Client{Transport: &http.Transport{}}
	defer hc.CloseIdleConnections()
	s := newTopicConfigSync(&cfg, slog.New(slog.NewTextHandler(io.Discard, nil)), kc, hc, func() *url.URL { return base }, nil, newMetrics())
	s.maxWait = 300 * time.Millisecond
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- s.run(ctx) }()
	defer func() { cancel(); <-done }()

	// No topic known yet (the edge is unreachable, say): the bound holds.
	start := time.Now()
	s.waitFirst(ctx)
	if took := time.Since(start); took < s.maxWait || took > s.maxWait+2*time.Second {
		t.Fatalf("waitFirst without a sync took %s, want about %s", took, s.maxWait)
	}
	if posted.Load() {
		t.Fatal("a report was sent without any topic")
	}
	// Once the first sync with topics was tried, waitFirst returns at once.
	s.setTopics([]wire.Topic{{Name: "plain", Partitions: 1}})
	s.maxWait = time.Minute
	waited := make(chan struct{})
	go func() { s.waitFirst(ctx); close(waited) }()
	select {
	case <-waited:
	case <-time.After(20 * time.Second):
		t.Fatal("waitFirst did not return after the first sync")
	}
	if !posted.Load() {
		t.Fatal("waitFirst returned before the first report was tried")
	}
}
