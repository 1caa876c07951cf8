package agent

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"math/rand/v2"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strconv"
	"sync"
	"testing"
	"time"

	"github.com/klauspost/compress/zstd"
	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/edgemirror/edgemirror/internal/wire"
)

// TestAgentSendsGroupCheckpoints: the committed offsets of the groups
// matching --sync-groups, on mirrored topics only, reach the aggregator
// with the offset of each partition's last record, on the checkpoint path,
// while chunks are refused (checkpoints do not wait behind data).
func TestAgentSendsGroupCheckpoints(t *testing.T) {
	c := newCluster(t)
	prod := newProducer(t, c)
	createTopic(t, prod, "orders", 2)
	createTopic(t, prod, "_private", 1)
	for i := 0; i < 10; i++ {
		produce(t, prod, &kgo.Record{Topic: "orders", Partition: int32(i % 2), Value: []byte(fmt.Sprint(i))})
	}
	produce(t, prod, &kgo.Record{Topic: "_private", Value: []byte("x")})
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	adm := kadm.NewClient(prod)
	commit := func(group string, offs map[string]map[int32]int64) {
		t.Helper()
		o := make(kadm.Offsets)
		for topic, ps := range offs {
			for p, off := range ps {
				o.Add(kadm.Offset{Topic: topic, Partition: p, At: off, LeaderEpoch: -1})
			}
		}
		res, err := adm.CommitOffsets(ctx, group, o)
		if err == nil {
			err = res.Error()
		}
		if err != nil {
			t.Fatalf("commit %s: %v", group, err)
		}
	}
	commit("billing", map[string]map[int32]int64{"orders": {0: 3, 1: 5}, "_private": {0: 1}})
	commit("analytics", map[string]map[int32]int64{"orders": {0: 1}})

	var (
		mu      sync.Mutex
		reports []wire.CheckpointReport
	)
	mux := http.NewServeMux()
	mux.HandleFunc("POST "+wire.PathChunks, func(w http.ResponseWriter, r *http.Request) {
		writeTestJSON(w, 503, wire.ErrorResponse{Error: "busy"})
	})
	mux.HandleFunc("GET "+wire.PathResume, func(w http.ResponseWriter, r *http.Request) {
		epoch, _ := strconv.ParseUint(r.Header.Get(wire.HeaderEpoch), 10, 64)
		writeTestJSON(w, 200, wire.ResumeResponse{Epoch: epoch})
	})
	mux.HandleFunc("POST "+wire.PathCheckpoints, func(w http.ResponseWriter, r *http.Request) {
		var rep wire.CheckpointReport
		body, err := io.ReadAll(r.Body)
		if err == nil && r.Header.Get("Content-Encoding") == wire.ContentEncodingZstd {
			body, err = zstdDecode(body)
		}
		if err == nil {
			err = json.Unmarshal(body, &rep)
		}
		if err != nil || rep.Validate() != nil || r.Header.Get(wire.HeaderEdge) != "plant-1" {
			writeTestJSON(w, 400, wire.ErrorResponse{Error: "bad report", Permanent: true})
			return
		}
		mu.Lock()
		reports = append(reports, rep)
		mu.Unlock()
		writeTestJSON(w, 200, wire.CheckpointResponse{Partitions: 2})
	})
	var p http.Protocols
	p.SetHTTP1(true)
	p.SetUnencryptedHTTP2(true)
	srv := httptest.NewUnstartedServer(mux)
	srv.Config.Protocols = &p
	srv.Start()
	defer srv.Close()

	cfg := validConfig()
	cfg.EdgeID = "plant-1"
	cfg.Brokers = c.ListenAddrs()
	cfg.Aggregator = srv.URL
	cfg.BufferDir = t.TempDir()
	cfg.SyncGroups = "bill.*"
	cfg.CheckpointInterval = time.Second
	cfg.MaxBackoff = time.Second
	_, stop := runAgent(t, cfg)

	deadline := time.Now().Add(20 * time.Second)
	var got wire.CheckpointReport
	for {
		mu.Lock()
		n := len(reports)
		if n > 0 {
			got = reports[n-1]
		}
		mu.Unlock()
		if n >= 2 || time.Now().After(deadline) {
			break
		}
		time.Sleep(50 * time.Millisecond)
	}
	stop()
	if len(got.Groups) != 1 || got.Groups[0].Group != "billing" {
		t.Fatalf("report %+v, want the billing group only", got)
	}
	g := got.Groups[0]
	want := []wire.PartitionCheckpoint{{Topic: "orders", Partition: 0, Offset: 3, EdgeLast: 4}, {Topic: "orders", Partition: 1, Offset: 5, EdgeLast: 4}}
	if len(g.Partitions) != 2 || g.Partitions[0] != want[0] || g.Partitions[1] != want[1] {
		t.Fatalf("partitions %+v, want %+v", g.Partitions, want)
	}
	if age := time.Since(g.ReadAt); age < 0 || age > 20*time.Second {
		t.Errorf("read_at %s is not the time the offsets were read", g.ReadAt)
	}
}

// BenchmarkCheckpointWireBytes measures what group checkpoints cost on the
// link: TCP payload bytes (both directions, HTTP/2 framing included, on a
// warm connection) per report, and per hour at the default 30s interval.
func BenchmarkCheckpointWireBytes(b *testing.B) {
	for _, size := range []struct{ groups, partitions int }{{1, 3}, {5, 12}, {20, 24}} {
		b.Run(fmt.Sprintf("groups=%d/partitions=%d", size.groups, size.partitions), func(b *testing.B) {
			mux := http.NewServeMux()
			mux.HandleFunc("POST "+wire.PathCheckpoints, func(w http.ResponseWriter, r *http.Request) {
				_, _ = io.Copy(io.Discard, r.Body)
				writeTestJSON(w, 200, wire.CheckpointResponse{Partitions: size.groups * size.partitions, Exact: size.groups * size.partitions})
			})
			var p http.Protocols
			p.SetUnencryptedHTTP2(true)
			srv := httptest.NewUnstartedServer(mux)
			srv.Config.Protocols = &p
			srv.Start()
			defer srv.Close()
			ctx, cancel := context.WithCancel(context.Background())
			defer cancel()
			m := newMetrics()
			cfg := validConfig()
			cfg.SyncGroups = ".*"
			base, _ := url.Parse(srv.URL)
			eps := newEndpoints(slog.New(slog.DiscardHandler), []*url.URL{base}, nil)
			hc := newHTTPClient(ctx, eps, newLimiter(0), m)
			defer hc.CloseIdleConnections()
			c, err := newCheckpointer(&cfg, slog.New(slog.NewTextHandler(io.Discard, nil)), nil, hc, eps.currentURL, func(r *http.Request) {
				r.Header.Set(wire.HeaderEdge, "plant-0042")
				r.Header.Set(wire.HeaderEpoch, "10605850417883345010")
			}, func(string) bool { return true })
			if err != nil {
				b.Fatal(err)
			}
			defer c.close()
			var rep wire.CheckpointReport
			rng := rand.New(rand.NewPCG(uint64(size.groups), uint64(size.partitions)))
			for g := 0; g < size.groups; g++ {
				gc := wire.GroupCheckpoint{Group: fmt.Sprintf("billing-service-%02d", g), ReadAt: time.Now().UTC()}
				for i := 0; i < size.partitions; i++ {
					// Offsets as distinct as real ones: nothing repeats but names.
					off := rng.Int64N(1 << 32)
					gc.Partitions = append(gc.Partitions, wire.PartitionCheckpoint{Topic: fmt.Sprintf("sensor-readings-%d", i%3), Partition: int32(i),
						Offset: off, EdgeLast: off + rng.Int64N(5000)})
				}
				rep.Groups = append(rep.Groups, gc)
			}
			if err := c.send(ctx, rep); err != nil { // warm up: connection and header tables
				b.Fatal(err)
			}
			sent, recv := m.wireBytes.WithLabelValues("sent"), m.wireBytes.WithLabelValues("received")
			s0, r0 := metricValue(b, sent), metricValue(b, recv)
			b.ResetTimer()
			for i := 0; i < b.N; i++ {
				if err := c.send(ctx, rep); err != nil {
					b.Fatal(err)
				}
			}
			b.StopTimer()
			per := (metricValue(b, sent) - s0 + metricValue(b, recv) - r0) / float64(b.N)
			b.ReportMetric(per, "wire-bytes/report")
			b.ReportMetric(per*float64(time.Hour/DefaultCheckpointInterval), "wire-bytes/hour@30s")
		})
	}
}

func zstdDecode(b []byte) ([]byte, error) {
	d, err := zstd.NewReader(nil, zstd.WithDecoderConcurrency(1))
	if err != nil {
		return nil, err
	}
	defer d.Close()
	return d.DecodeAll(b, nil)
}
