package scenario

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os/exec"
	"sort"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/segmentio/kafka-go"
	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/edgemirror/edgemirror/internal/failover"
	"github.com/edgemirror/edgemirror/internal/testkit"
	"github.com/edgemirror/edgemirror/test/internal/harness"
)

// FailoverMode says how a consumer group moves from the edge to the hub.
type FailoverMode int

const (
	// FailoverFromEdge: translate-group --edge-brokers --execute.
	FailoverFromEdge FailoverMode = iota
	// FailoverFromCheckpoints: the edge cluster is stopped first;
	// translate-group --execute from the hub's checkpoints only.
	FailoverFromCheckpoints
	// FailoverSyncGroupOffsets: the aggregator commits the translated
	// checkpoints to the hub group itself (--sync-group-offsets).
	FailoverSyncGroupOffsets
)

// recID identifies a source record.
type recID struct {
	topic     string
	partition int32
	offset    int64
}

func (r recID) String() string { return fmt.Sprintf("%s/%d@%d", r.topic, r.partition, r.offset) }

// Failover: a consumer group reads part of an edge topic with committed and
// aborted transactions and of a compacted topic, commits, and moves to the
// hub (mode); a consumer of the same group on the hub continues; the union
// of what the group saw is every record exactly once. stopEdge stops the
// edge cluster (FailoverFromCheckpoints).
func Failover(t *testing.T, clusters Clusters, mode FailoverMode, stopEdge func(context.Context) error) {
	// The hub topics must keep every record for "every record exactly
	// once" to be checkable: the edge's compaction settings are not synced
	// (a compacted hub topic would rightly lose superseded values).
	aggArgs := []string{"--sync-topic-configs=false"}
	if mode == FailoverSyncGroupOffsets {
		aggArgs = append(aggArgs, "--sync-group-offsets")
	}
	e := New(t, clusters, aggArgs...)
	group := "billing" + strings.TrimPrefix(e.Topic, "telemetry")
	orders, state := e.Name("orders"), e.Name("state")

	// The compacted topic, compacted at the edge before anything reads it.
	e.Prod.Keyed[state] = true
	if err := e.Prod.CreateTopic(e.Ctx, state, 1, map[string]*string{
		"cleanup.policy": ptr("compact"), "segment.ms": ptr("100"), "min.cleanable.dirty.ratio": ptr("0.001"),
		"min.compaction.lag.ms": ptr("0"), "max.compaction.lag.ms": ptr("100"),
	}); err != nil {
		t.Fatal(err)
	}
	for round := 0; round < 8; round++ {
		if err := e.Prod.Produce(e.Ctx, state, 1, 60); err != nil {
			t.Fatal(err)
		}
		time.Sleep(150 * time.Millisecond) // let segments roll (segment.ms=100); pacing, not synchronisation
	}
	var stateView *harness.Produced
	testkit.Eventually(t, 2*time.Minute, "compaction at the edge", func() error {
		v, n, err := harness.FromTopic(e.Ctx, e.Edge.Brokers(), state)
		if err != nil {
			return err
		}
		if n >= e.Prod.Out.CountTopic(state) {
			return fmt.Errorf("no record compacted away yet (%d of %d left)", n, e.Prod.Out.CountTopic(state))
		}
		stateView = v
		return nil
	})
	// Stop compacting, so that the edge's view stays what the group and the
	// agent read.
	adm := kadm.NewClient(e.Prod.Client())
	if _, err := adm.AlterTopicConfigs(e.Ctx, []kadm.AlterConfig{
		{Op: kadm.SetConfig, Name: "min.cleanable.dirty.ratio", Value: ptr("0.99")},
		{Op: kadm.SetConfig, Name: "max.compaction.lag.ms", Value: ptr("9223372036854775807")},
	}, state); err != nil {
		t.Fatal(err)
	}
	// A cleaner pass that began before the change may still remove
	// records: the view is taken once the log stopped changing (the same
	// record count in reads over 2 s).
	last, same := -1, 0
	testkit.Eventually(t, time.Minute, "compaction at the edge settled", func() error {
		v, n, err := harness.FromTopic(e.Ctx, e.Edge.Brokers(), state)
		if err != nil {
			return err
		}
		if n == last {
			same++
		} else {
			last, same = n, 0
		}
		stateView = v
		if same < 4 {
			time.Sleep(500 * time.Millisecond) // spacing of the reads that show the log still
			return fmt.Errorf("edge log of %s has %d records, watching for changes", state, n)
		}
		return nil
	})

	// The transactional topic: committed and aborted transactions and
	// plain records interleaved on both partitions.
	if err := e.Prod.CreateTopic(e.Ctx, orders, 2, nil); err != nil {
		t.Fatal(err)
	}
	txp, err := harness.NewProducer(e.Edge.Brokers(), kgo.TransactionalID("tx-"+e.EdgeID))
	if err != nil {
		t.Fatal(err)
	}
	defer txp.Close()
	for i := 0; i < 8; i++ {
		if err := txp.Client().BeginTransaction(); err != nil {
			t.Fatal(err)
		}
		recs := txp.Build(orders, 2, 25)
		if err := txp.Client().ProduceSync(e.Ctx, recs...).FirstErr(); err != nil {
			t.Fatal(err)
		}
		commit := i%3 != 1
		if err := txp.Client().EndTransaction(e.Ctx, kgo.TransactionEndTry(commit)); err != nil {
			t.Fatal(err)
		}
		if commit {
			txp.Record(recs)
		}
		if err := e.Prod.Produce(e.Ctx, orders, 2, 5); err != nil {
			t.Fatal(err)
		}
	}

	// all is every record a read_committed consumer of the two topics sees.
	all := make(map[recID]bool)
	add := func(r harness.Rec) {
		if r.Topic == orders || r.Topic == state {
			all[recID{r.Topic, r.Partition, r.Offset}] = true
		}
	}
	txp.Out.Each(add)
	e.Prod.Out.Each(func(r harness.Rec) {
		if r.Topic == orders {
			add(r)
		}
	})
	stateView.Each(add)

	e.StartAgent("", "--sync-groups", "billing.*", "--checkpoint-interval", "1s")

	// The group reads part of both topics at the edge and commits.
	seenEdge := consumeGroup(t, e.Ctx, e.Edge.Brokers(), group, []string{orders, state}, len(all)/2, nil)
	committed := make(map[recID]int64) // (topic, partition) → committed offset
	for id := range seenEdge {
		k := recID{id.topic, id.partition, 0}
		if id.offset+1 > committed[k] {
			committed[k] = id.offset + 1
		}
	}
	t.Logf("group %s consumed %d of %d records at the edge; committed %v", group, len(seenEdge), len(all), committed)

	// Everything reaches the hub.
	testkit.Eventually(t, 2*time.Minute, "every record in the hub", func() error {
		// Committed records, not offsets: commit markers take offsets too,
		// and what is not stable yet is not there for a consumer.
		n, err := harness.CountCommitted(e.Ctx, e.Hub.Brokers(), e.HubTopic(orders), e.HubTopic(state))
		if err != nil {
			return err
		}
		if n < int64(len(all)) {
			return fmt.Errorf("hub holds %d committed records of %d", n, len(all))
		}
		return nil
	})
	hubCl, closeHub := kafkaGoClient(e.Hub.Brokers())
	defer closeHub()
	// want is the exact translation of each committed offset, now that the
	// hub has everything.
	want := make(map[failover.TopicPartition]int64)
	for k, off := range committed {
		tr, err := failover.Translate(e.Ctx, hubCl, e.HubTopic(k.topic), failover.Source{Edge: e.EdgeID, Topic: k.topic, Partition: k.partition}, off, 0)
		if err != nil {
			t.Fatal(err)
		}
		want[failover.TopicPartition{Topic: e.HubTopic(k.topic), Partition: k.partition}] = tr.HubOffset
	}

	switch mode {
	case FailoverFromEdge:
		// A consumer of the group already on the hub: refused, nothing committed.
		member, err := kgo.NewClient(kgo.SeedBrokers(e.Hub.Brokers()...), kgo.ConsumerGroup(group),
			kgo.ConsumeTopics(e.HubTopic(orders)), kgo.DisableAutoCommit())
		if err != nil {
			t.Fatal(err)
		}
		testkit.Eventually(t, 30*time.Second, "a member in the hub group", func() error {
			pctx, cancel := context.WithTimeout(e.Ctx, 200*time.Millisecond)
			member.PollFetches(pctx)
			cancel()
			info, err := failover.GroupState(e.Ctx, hubCl, group)
			if err != nil {
				return err
			}
			if !info.Active() {
				return fmt.Errorf("hub group is %q", info.State)
			}
			return nil
		})
		msg := runCLIFails(t, e.Ctx, "translate-group", "--hub-brokers", strings.Join(e.Hub.Brokers(), ","), "--edge", e.EdgeID,
			"--group", group, "--edge-brokers", strings.Join(e.Edge.Brokers(), ","), "--execute")
		if !strings.Contains(msg, "active members") {
			t.Fatalf("translate-group with a member on the hub: %q, want a refusal naming active members", msg)
		}
		member.Close()
		if offs := hubGroupOffsets(t, e.Ctx, hubCl, group); len(offs) != 0 {
			t.Fatalf("refused translate-group committed %v", offs)
		}
		testkit.Eventually(t, 30*time.Second, "the hub group empty again", func() error {
			info, err := failover.GroupState(e.Ctx, hubCl, group)
			if err != nil {
				return err
			}
			if info.Active() {
				return fmt.Errorf("hub group is %q with %d members", info.State, info.Members)
			}
			return nil
		})
		out := runCLI(t, e.Ctx, "translate-group", "--hub-brokers", strings.Join(e.Hub.Brokers(), ","), "--edge", e.EdgeID,
			"--group", group, "--edge-brokers", strings.Join(e.Edge.Brokers(), ","), "--execute")
		t.Logf("translate-group --edge-brokers --execute:\n%s", out)
	case FailoverFromCheckpoints:
		// Wait until the hub's checkpoints hold the group's final offsets,
		// then lose the edge.
		testkit.Eventually(t, time.Minute, "checkpoints of the group in the hub", func() error {
			cps, err := failover.ReadCheckpoints(e.Ctx, hubCl, failover.DefaultCheckpointTopic, e.EdgeID, group)
			if err != nil {
				return err
			}
			for k, off := range committed {
				cp, ok := cps[failover.TopicPartition{Topic: k.topic, Partition: k.partition}]
				if !ok || cp.EdgeOffset != off || !cp.Exact {
					return fmt.Errorf("checkpoint of %s/%d: %+v, want edge offset %d, exact", k.topic, k.partition, cp, off)
				}
			}
			return nil
		})
		if err := e.Agent.Stop(20 * time.Second); err != nil {
			t.Fatal(err)
		}
		if err := stopEdge(e.Ctx); err != nil {
			t.Fatal(err)
		}
		dry := runCLI(t, e.Ctx, "translate-group", "--hub-brokers", strings.Join(e.Hub.Brokers(), ","), "--edge", e.EdgeID, "--group", group)
		t.Logf("translate-group (edge stopped, from checkpoints), dry run:\n%s", dry)
		if offs := hubGroupOffsets(t, e.Ctx, hubCl, group); len(offs) != 0 {
			t.Fatalf("dry run committed offsets: %v", offs)
		}
		runCLI(t, e.Ctx, "translate-group", "--hub-brokers", strings.Join(e.Hub.Brokers(), ","), "--edge", e.EdgeID, "--group", group, "--execute")
	case FailoverSyncGroupOffsets:
		testkit.Eventually(t, time.Minute, "aggregator synced the group's offsets to the hub", func() error {
			got := hubGroupOffsets(t, e.Ctx, hubCl, group)
			for tp, w := range want {
				if got[tp] != w {
					return fmt.Errorf("hub group offsets %v, want %v", got, want)
				}
			}
			return nil
		})
		if err := e.Agent.Stop(20 * time.Second); err != nil {
			t.Fatal(err)
		}
	}
	if got := hubGroupOffsets(t, e.Ctx, hubCl, group); fmt.Sprint(got) != fmt.Sprint(want) {
		t.Fatalf("hub group offsets %v, want the exact translations %v", got, want)
	}

	// The same group continues on the hub.
	hubTopics := []string{e.HubTopic(orders), e.HubTopic(state)}
	seenHub := consumeGroup(t, e.Ctx, e.Hub.Brokers(), group, hubTopics, len(all)-len(seenEdge), func(r *kgo.Record) (recID, bool) {
		var id recID
		var n int
		for _, h := range r.Headers {
			switch h.Key {
			case "edgemirror-topic":
				id.topic, n = string(h.Value), n+1
			case "edgemirror-partition":
				p, _ := strconv.Atoi(string(h.Value))
				id.partition, n = int32(p), n+1
			case "edgemirror-offset":
				id.offset, _ = strconv.ParseInt(string(h.Value), 10, 64)
				n++
			}
		}
		return id, n == 3
	})
	var dups, missing, extra []string
	for id := range seenHub {
		if seenEdge[id] {
			dups = append(dups, id.String())
		}
		if !all[id] {
			extra = append(extra, id.String())
		}
	}
	for id := range all {
		if !seenEdge[id] && !seenHub[id] {
			missing = append(missing, id.String())
		}
	}
	sort.Strings(dups)
	sort.Strings(missing)
	if len(dups) > 0 || len(missing) > 0 || len(extra) > 0 {
		t.Fatalf("union of edge (%d) and hub (%d) records is not every record (%d) once: seen twice %v; never seen %v; unknown %v",
			len(seenEdge), len(seenHub), len(all), head(dups), head(missing), head(extra))
	}
	t.Logf("group saw %d records at the edge and %d on the hub: every one of %d exactly once", len(seenEdge), len(seenHub), len(all))
}

func head(s []string) []string {
	if len(s) > 10 {
		return append(s[:10:10], fmt.Sprintf("... %d more", len(s)-10))
	}
	return s
}

// consumeGroup consumes topics as group (read_committed, from the start
// where the group has no offset) until it has seen at least n records,
// commits exactly what it returned, and leaves the group. id maps a record
// to its source identity (nil: the record itself). A record seen twice
// fails the test. After n records it keeps polling briefly, so that records
// delivered beyond what is expected are seen too.
func consumeGroup(t *testing.T, ctx context.Context, brokers []string, group string, topics []string, n int,
	id func(*kgo.Record) (recID, bool)) map[recID]bool {
	t.Helper()
	cl, err := kgo.NewClient(kgo.SeedBrokers(brokers...), kgo.ConsumerGroup(group), kgo.ConsumeTopics(topics...),
		kgo.FetchIsolationLevel(kgo.ReadCommitted()), kgo.DisableAutoCommit(),
		kgo.ConsumeResetOffset(kgo.NewOffset().AtStart()), kgo.FetchMaxBytes(64<<10), kgo.FetchMaxPartitionBytes(8<<10))
	if err != nil {
		t.Fatal(err)
	}
	defer cl.Close()
	seen := make(map[recID]bool)
	var polled []*kgo.Record
	deadline := time.Now().Add(90 * time.Second)
	var graceUntil time.Time
	for {
		now := time.Now()
		if len(seen) >= n && id == nil {
			break // at the edge: stop at n, commit that
		}
		if len(seen) >= n && graceUntil.IsZero() {
			graceUntil = now.Add(2 * time.Second)
		}
		if !graceUntil.IsZero() && now.After(graceUntil) {
			break
		}
		if now.After(deadline) {
			t.Fatalf("group %s saw %d records of %s within 90s, want %d", group, len(seen), topics, n)
		}
		pctx, cancel := context.WithTimeout(ctx, 500*time.Millisecond)
		fs := cl.PollRecords(pctx, max(1, min(50, n-len(seen))))
		cancel()
		fs.EachError(func(tp string, p int32, err error) {
			if ctx.Err() == nil && pctx.Err() == nil {
				t.Logf("fetch %s/%d: %v", tp, p, err)
			}
		})
		fs.EachRecord(func(r *kgo.Record) {
			k, ok := recID{r.Topic, r.Partition, r.Offset}, true
			if id != nil {
				k, ok = id(r)
			}
			if !ok {
				t.Errorf("record %s/%d@%d has no provenance", r.Topic, r.Partition, r.Offset)
				return
			}
			if seen[k] {
				t.Errorf("group %s saw %s twice", group, k)
			}
			seen[k] = true
			polled = append(polled, r)
		})
	}
	if id == nil {
		if err := cl.CommitRecords(ctx, polled...); err != nil {
			t.Fatal(err)
		}
	}
	return seen
}

func hubGroupOffsets(t *testing.T, ctx context.Context, cl *kafka.Client, group string) map[failover.TopicPartition]int64 {
	t.Helper()
	offs, err := failover.GroupOffsets(ctx, cl, group)
	if err != nil {
		t.Fatal(err)
	}
	return offs
}

func kafkaGoClient(brokers []string) (*kafka.Client, func()) {
	tr := &kafka.Transport{MetadataTTL: time.Second}
	return &kafka.Client{Addr: kafka.TCP(brokers...), Transport: tr, Timeout: 20 * time.Second}, tr.CloseIdleConnections
}

// runCLI runs an edgemirror command and returns its stdout; a non-zero
// exit fails the test.
func runCLI(t *testing.T, ctx context.Context, args ...string) string {
	t.Helper()
	bin, err := harness.Binary()
	if err != nil {
		t.Fatal(err)
	}
	cctx, cancel := context.WithTimeout(ctx, 2*time.Minute)
	defer cancel()
	var stdout, stderr bytes.Buffer
	cmd := exec.CommandContext(cctx, bin, args...)
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	if err := cmd.Run(); err != nil {
		t.Fatalf("edgemirror %s: %v\nstdout:\n%s\nstderr:\n%s", strings.Join(args, " "), err, stdout.String(), stderr.String())
	}
	return stdout.String()
}

// runCLIFails runs an edgemirror command that must exit 1 and returns its
// stderr.
func runCLIFails(t *testing.T, ctx context.Context, args ...string) string {
	t.Helper()
	bin, err := harness.Binary()
	if err != nil {
		t.Fatal(err)
	}
	cctx, cancel := context.WithTimeout(ctx, 2*time.Minute)
	defer cancel()
	var stdout, stderr bytes.Buffer
	cmd := exec.CommandContext(cctx, bin, args...)
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	err = cmd.Run()
	var ee *exec.ExitError
	if !errors.As(err, &ee) || ee.ExitCode() != 1 {
		t.Fatalf("edgemirror %s: %v, want exit code 1\nstdout:\n%s\nstderr:\n%s", strings.Join(args, " "), err, stdout.String(), stderr.String())
	}
	return stderr.String()
}

// ResetGroupToDatetime: reset-group --to-datetime lands, on every partition
// of the hub topic, on the first record whose timestamp is at or after the
// time (the end where there is none), and commits only with --execute.
func ResetGroupToDatetime(t *testing.T, clusters Clusters) {
	e := New(t, clusters)
	topic := e.Name("readings")
	if err := e.Prod.CreateTopic(e.Ctx, topic, 3, nil); err != nil {
		t.Fatal(err)
	}
	// Partition p holds records one second apart from base, 40 of them on
	// partitions 0 and 1 and 5 on partition 2, which then ends before the
	// reset time.
	base := time.Now().Add(-10 * time.Minute).Truncate(time.Second)
	var recs []*kgo.Record
	for p := int32(0); p < 3; p++ {
		n := 40
		if p == 2 {
			n = 5
		}
		for i := 0; i < n; i++ {
			recs = append(recs, &kgo.Record{Topic: topic, Partition: p, Key: []byte("k"), Value: []byte(fmt.Sprint(i)),
				Timestamp: base.Add(time.Duration(i)*time.Second + time.Duration(p)*300*time.Millisecond)})
		}
	}
	if err := e.Prod.Send(e.Ctx, recs); err != nil {
		t.Fatal(err)
	}
	e.StartAgent("")
	hubTopic := e.HubTopic(topic)
	testkit.Eventually(t, time.Minute, "records in the hub", func() error {
		n, err := harness.CountCommitted(e.Ctx, e.Hub.Brokers(), hubTopic)
		if err != nil {
			return err
		}
		if n < int64(len(recs)) {
			return fmt.Errorf("hub has %d of %d", n, len(recs))
		}
		return nil
	})
	at := base.Add(17*time.Second + 150*time.Millisecond)
	hub, err := harness.ReadAll(e.Ctx, e.Hub.Brokers(), hubTopic)
	if err != nil {
		t.Fatal(err)
	}
	ends := make(map[int32]int64)
	{
		hc, err := kgo.NewClient(kgo.SeedBrokers(e.Hub.Brokers()...))
		if err != nil {
			t.Fatal(err)
		}
		lo, err := kadm.NewClient(hc).ListCommittedOffsets(e.Ctx, hubTopic)
		hc.Close()
		if err != nil {
			t.Fatal(err)
		}
		lo.Each(func(o kadm.ListedOffset) { ends[o.Partition] = o.Offset })
	}
	want := make(map[failover.TopicPartition]int64)
	for p := int32(0); p < 3; p++ {
		rs := hub[hubTopic][p]
		w := int64(-1)
		for _, r := range rs {
			if !r.Timestamp.Before(at) {
				w = r.Offset
				break
			}
		}
		if w < 0 {
			w = ends[p] // none: the end, as kafka-consumer-groups does
		}
		want[failover.TopicPartition{Topic: hubTopic, Partition: p}] = w
	}
	group := "reporting" + strings.TrimPrefix(e.Topic, "telemetry")
	args := []string{"reset-group", "--hub-brokers", strings.Join(e.Hub.Brokers(), ","), "--group", group,
		"--topics", strings.ReplaceAll(hubTopic, ".", `\.`), "--to-datetime", at.UTC().Format("2006-01-02T15:04:05.000")}
	dry := runCLI(t, e.Ctx, args...)
	t.Logf("reset-group dry run:\n%s", dry)
	cl, closeCl := kafkaGoClient(e.Hub.Brokers())
	defer closeCl()
	if offs := hubGroupOffsets(t, e.Ctx, cl, group); len(offs) != 0 {
		t.Fatalf("dry run committed %v", offs)
	}
	var res struct {
		Partitions []struct {
			Topic     string `json:"topic"`
			Partition int32  `json:"partition"`
			NewOffset int64  `json:"new_offset"`
		} `json:"partitions"`
	}
	out := runCLI(t, e.Ctx, append(args, "--execute", "--json")...)
	if err := json.Unmarshal([]byte(out), &res); err != nil {
		t.Fatalf("reset-group --json: %v\n%s", err, out)
	}
	if len(res.Partitions) != 3 {
		t.Fatalf("reset-group planned %d partitions, want 3:\n%s", len(res.Partitions), out)
	}
	// Kafka's time lookup may answer the offset of a commit marker (its
	// timestamp is the commit's): a consumer starting there reads the same
	// first record. So an offset is right when no committed record lies
	// between it and the first record at or after the time.
	got := hubGroupOffsets(t, e.Ctx, cl, group)
	for tp, w := range want {
		g, ok := got[tp]
		if !ok || g > w {
			t.Fatalf("committed %v, want the first record at or after %s on every partition: %v", got, at.Format(time.RFC3339Nano), want)
		}
		for _, r := range hub[hubTopic][tp.Partition] {
			if r.Offset >= g && r.Offset < w {
				t.Fatalf("partition %d: committed offset %d is before record %d, which is earlier than %s (want %d)",
					tp.Partition, g, r.Offset, at.Format(time.RFC3339Nano), w)
			}
		}
	}
	if want[failover.TopicPartition{Topic: hubTopic, Partition: 1}] <= 0 {
		t.Fatalf("test is vacuous: %v", want)
	}
}
