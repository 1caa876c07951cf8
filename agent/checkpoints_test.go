package agent

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"net/http/httptest"
	"strconv"
	"sync"
	"testing"
	"time"

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
		if err := json.NewDecoder(r.Body).Decode(&rep); err != nil || rep.Validate() != nil || r.Header.Get(wire.HeaderEdge) != "plant-1" {
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
