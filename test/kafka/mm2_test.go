//go:build realkafka

package realkafka

import (
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"sort"
	"strings"
	"testing"
	"time"

	"github.com/segmentio/kafka-go"
)

// mm2Version is the connect-mirror version to run: MM2_VERSION, else the
// broker version, except 4.4.0 whose connect-mirror (and connect-mirror-client)
// jars are missing from the Maven Central we reach; 4.3.1 is used then.
func mm2Version() string {
	if v := os.Getenv("MM2_VERSION"); v != "" {
		return v
	}
	if Version() == "4.4.0" {
		return "4.3.1"
	}
	return Version()
}

// MirrorMaker 2, dedicated mode, one way edge -> hub, configured from
// mm2-example.properties (only the bootstrap addresses replaced): records
// arrive as "edge.orders" with headers, and nothing is written into edge.
func TestMirrorMaker2OneWay(t *testing.T) {
	edge := startCluster(t, "rk-mm2-edge")
	hub := startCluster(t, "rk-mm2-hub")
	ctx := testCtx(t, 6*time.Minute)
	ecl := newClient(t, edge.Addr(), nil)
	hcl := newClient(t, hub.Addr(), nil)
	createTopic(t, ctx, ecl, "orders", 2)
	createTopic(t, ctx, ecl, "not-mirrored", 1)
	produceN(t, ctx, ecl, "orders", 20, "order")
	produceN(t, ctx, ecl, "not-mirrored", 3, "x")

	example, err := os.ReadFile(filepath.Join(Dir(), "mm2-example.properties"))
	if err != nil {
		t.Fatal(err)
	}
	props := regexp.MustCompile(`(?m)^edge\.bootstrap\.servers = .*$`).ReplaceAllString(string(example), "edge.bootstrap.servers = "+edge.Addr())
	props = regexp.MustCompile(`(?m)^hub\.bootstrap\.servers = .*$`).ReplaceAllString(props, "hub.bootstrap.servers = "+hub.Addr())
	propsFile := filepath.Join(t.TempDir(), "mm2.properties")
	if err := os.WriteFile(propsFile, []byte(props), 0o644); err != nil {
		t.Fatal(err)
	}
	name := fmt.Sprintf("rk-mm2-%d", os.Getpid())
	mm, err := StartMirrorMaker(ctx, name, propsFile, mm2Version())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if !t.Failed() {
			_ = mm.Stop(ctx, true)
			return
		}
		t.Logf("MirrorMaker log kept: %s", mm.LogFile())
		_ = mm.Stop(ctx, false)
	})
	t.Logf("MirrorMaker %s started in %v", mm2Version(), mm.StartTime.Round(time.Millisecond))

	// wait (bounded) until all 20 records are on the hub
	t0 := time.Now()
	deadline := t0.Add(3 * time.Minute)
	for {
		md, err := hcl.Metadata(ctx, &kafka.MetadataRequest{Topics: []string{"edge.orders"}})
		if err == nil && len(md.Topics) == 1 && md.Topics[0].Error == nil {
			lo, err := hcl.ListOffsets(ctx, &kafka.ListOffsetsRequest{Topics: map[string][]kafka.OffsetRequest{
				"edge.orders": {kafka.LastOffsetOf(0), kafka.LastOffsetOf(1)}}})
			if err == nil {
				var n int64
				for _, p := range lo.Topics["edge.orders"] {
					n += p.LastOffset
				}
				if n >= 20 {
					break
				}
			}
		}
		if time.Now().After(deadline) {
			t.Fatalf("edge.orders on hub did not reach 20 records in 3 minutes (log %s)", mm.LogFile())
		}
		time.Sleep(500 * time.Millisecond)
	}
	t.Logf("20 records mirrored %v after MirrorMaker start", time.Since(t0).Round(100*time.Millisecond))

	// produceN wrote to edge partition 0 only; MirrorSourceTask keeps the
	// source partition number, so everything must be in hub partition 0.
	fr, err := hcl.Fetch(ctx, &kafka.FetchRequest{Topic: "edge.orders", Partition: 0, Offset: 0, MaxBytes: 1 << 20})
	if err != nil || fr.Error != nil {
		t.Fatalf("fetch hub: %v %v", err, fr.Error)
	}
	recs := readAll(t, fr.Records)
	if len(recs) != 20 {
		t.Errorf("edge.orders partition 0 on hub has %d records, want 20 (same partition as the source)", len(recs))
	}
	for i, r := range recs {
		if string(r.Value) != fmt.Sprintf("order-%d", i) || len(r.Headers) != 1 || string(r.Headers[0].Value) != fmt.Sprint(i) {
			t.Errorf("hub record %d: value %q headers %v", i, r.Value, r.Headers)
			break
		}
	}

	// Let MM2 run a little longer (heartbeats, checkpoints), then look at edge.
	time.Sleep(5 * time.Second)
	list := func(cl *kafka.Client) []string {
		md, err := cl.Metadata(ctx, &kafka.MetadataRequest{})
		if err != nil {
			t.Fatal(err)
		}
		var names []string
		for _, tp := range md.Topics {
			names = append(names, tp.Name)
		}
		sort.Strings(names)
		return names
	}
	edgeTopics, hubTopics := list(ecl), list(hcl)
	t.Logf("edge topics: %v", edgeTopics)
	t.Logf("hub topics: %v", hubTopics)
	for _, n := range edgeTopics {
		if n != "orders" && n != "not-mirrored" && !strings.HasPrefix(n, "__") {
			t.Errorf("MirrorMaker created %q on edge", n)
		}
	}
	for _, n := range hubTopics {
		if n == "edge.not-mirrored" {
			t.Errorf("a topic outside edge->hub.topics was mirrored")
		}
	}
	lo, err := ecl.ListOffsets(ctx, &kafka.ListOffsetsRequest{Topics: map[string][]kafka.OffsetRequest{
		"orders": {kafka.LastOffsetOf(0), kafka.LastOffsetOf(1)}}})
	if err != nil {
		t.Fatal(err)
	}
	for _, p := range lo.Topics["orders"] {
		if want := map[int]int64{0: 20, 1: 0}[p.Partition]; p.LastOffset != want {
			t.Errorf("edge orders/%d: last offset %d, want %d (something wrote into edge)", p.Partition, p.LastOffset, want)
		}
	}
	log, err := os.ReadFile(mm.LogFile())
	if err != nil {
		t.Fatal(err)
	}
	// the "XConfig values:" dumps show which client got which setting
	for _, want := range []string{"compression.type = zstd", "linger.ms = 50", "fetch.min.bytes = 262144",
		"isolation.level = read_committed", "max.poll.records = 5000"} {
		if !strings.Contains(string(log), want) {
			t.Errorf("%q is in no client config in the MirrorMaker log: the prefix did not reach its client", want)
		}
	}
}
