package agent

import (
	"encoding/json"
	"fmt"
	"net/http"
	"path/filepath"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/edgemirror/edgemirror/buffer"
	"github.com/edgemirror/edgemirror/internal/testkit"
	"github.com/edgemirror/edgemirror/internal/wire"
)

// aggregatorLosses lists the loss ranges the aggregator holds for edge.
func aggregatorLosses(base, edge string) ([]wire.LossRange, error) {
	resp, err := http.Get(base + wire.PathLosses + "?edge=" + edge)
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	var out []wire.LossRange
	if err := json.NewDecoder(resp.Body).Decode(&out); err != nil {
		return nil, err
	}
	return out, nil
}

// TestStrandedBufferReportedAndRecoverable: buffer A's epoch is taken over
// by buffer B of the same edge id. A then holds records the aggregator
// refuses (409) for good. A must say so: log it, set its stranded gauge and
// report the held ranges to the aggregator (reason stranded-epoch); once
// its epoch is renewed (edgemirror buffer renew-epoch), its records reach
// the hub exactly once.
func TestStrandedBufferReportedAndRecoverable(t *testing.T) {
	edge, hub := newCluster(t), newCluster(t)
	prod := newProducer(t, edge)
	createTopic(t, prod, "t", 1)
	agg := aggregatorWithHub(t, hub, filepath.Join(t.TempDir(), "agg"))

	produced := 0
	send := func(n int) {
		t.Helper()
		recs := make([]*kgo.Record, n)
		for i := range recs {
			recs[i] = &kgo.Record{Topic: "t", Partition: 0, Value: []byte(fmt.Sprintf("v%d", produced+i))}
		}
		produce(t, prod, recs...)
		produced += n
	}
	const edgeID, hubTopic = "plant-stranded", "plant-stranded.t"
	config := func(dir string, reg prometheus.Registerer) Config {
		cfg := validConfig()
		cfg.EdgeID = edgeID
		cfg.Brokers = edge.ListenAddrs()
		cfg.Aggregator = agg
		cfg.BufferDir = dir
		cfg.BufferMaxBytes = 8 << 20
		cfg.BatchBytes = 4 << 10
		cfg.Linger = 20 * time.Millisecond
		cfg.MetadataInterval = 200 * time.Millisecond
		cfg.MaxBackoff = 500 * time.Millisecond
		cfg.Registerer = reg
		return cfg
	}
	waitHub := func(n int) {
		t.Helper()
		testkit.Eventually(t, 20*time.Second, fmt.Sprintf("hub holds offsets 0..%d once", n-1), func() error {
			return exactlyOnce(hubSourceOffsets(t, hub, hubTopic)[0], n)
		})
	}
	dirA, dirB := t.TempDir(), t.TempDir()

	send(20)
	_, stop := runAgent(t, config(dirA, nil))
	waitHub(20)
	stop()

	// B, a new buffer under the same edge id, takes the edge over.
	send(20)
	_, stop = runAgent(t, config(dirB, nil))
	waitHub(40)
	stop()

	// A comes back, reads 20..59 and is refused.
	send(20)
	reg := prometheus.NewRegistry()
	_, stop = runAgent(t, config(dirA, reg))
	testkit.Eventually(t, 20*time.Second, "stranded buffer reported to the aggregator", func() error {
		losses, err := aggregatorLosses(agg, edgeID)
		if err != nil {
			return err
		}
		for _, l := range losses {
			if l.Reason == wire.LossReasonStranded && l.Topic == "t" && l.Partition == 0 && l.FirstOffset == 20 && l.LastOffset == 59 && l.Records == 40 {
				return nil
			}
		}
		return fmt.Errorf("aggregator losses %+v, want t/0 20..59 (40 records) %s", losses, wire.LossReasonStranded)
	})
	if v, err := gathered(reg, "edgemirror_agent_buffer_stranded", nil); err != nil || v != 1 {
		t.Errorf("edgemirror_agent_buffer_stranded = %v (%v), want 1", v, err)
	}
	stop()

	// The operator keeps A: its epoch is renewed offline.
	st, err := buffer.Open(dirA, buffer.Options{MaxBytes: 8 << 20})
	if err != nil {
		t.Fatal(err)
	}
	if _, _, err := st.RenewEpoch(); err != nil {
		t.Fatal(err)
	}
	st.Close()
	_, stop = runAgent(t, config(dirA, nil))
	waitHub(60)
	stop()
}
