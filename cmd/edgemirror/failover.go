package main

// The failover commands: translate, translate-group and reset-group move
// consumers from an edge cluster to the hub. docs/failover.md is their
// runbook.

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"regexp"
	"sort"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/segmentio/kafka-go"

	"github.com/edgemirror/edgemirror/aggregator"
	"github.com/edgemirror/edgemirror/internal/failover"
	"github.com/edgemirror/edgemirror/internal/wire"
)

// defaultCommandTimeout bounds a whole failover command.
const defaultCommandTimeout = 2 * time.Minute

// kafkaClient builds the kafka-go client of one cluster for a command. It
// is the one place where a command's cluster connection is configured, so
// the clusters' TLS and SASL settings are applied here. close releases the
// connections.
func kafkaClient(brokers []string, clientID string) (cl *kafka.Client, close func()) {
	tr := &kafka.Transport{
		ClientID:    clientID,
		DialTimeout: 10 * time.Second,
		MetadataTTL: 2 * time.Second,
	}
	return &kafka.Client{Addr: kafka.TCP(brokers...), Transport: tr, Timeout: 30 * time.Second}, tr.CloseIdleConnections
}

// checkBrokers validates a broker list flag.
func checkBrokers(flagName string, brokers []string, required bool) error {
	if len(brokers) == 0 {
		if required {
			return fmt.Errorf("--%s: at least one broker address (host:port) is required", flagName)
		}
		return nil
	}
	for _, b := range brokers {
		if !strings.Contains(b, ":") {
			return fmt.Errorf("--%s: broker address %q must be host:port", flagName, b)
		}
	}
	return nil
}

// failoverFlags are the flags the failover commands share.
type failoverFlags struct {
	hubBrokers []string
	template   string
	timeout    time.Duration
	json       bool
}

func (f *failoverFlags) register(cmd *command) {
	cmd.list(&f.hubBrokers, "hub-brokers", "hub Kafka bootstrap brokers, comma-separated host:port (required)")
	cmd.str(&f.template, "topic-template", "the aggregator's --topic-template: hub topic of an edge topic")
	cmd.duration(&f.timeout, "timeout", "bound on the whole command")
	cmd.boolv(&f.json, "json", "print JSON instead of text")
}

func (f *failoverFlags) check() error {
	if err := checkBrokers("hub-brokers", f.hubBrokers, true); err != nil {
		return err
	}
	if _, err := aggregator.HubTopic(f.template, "e", "t"); err != nil {
		return fmt.Errorf("--topic-template: %v", err)
	}
	if f.timeout <= 0 {
		return errors.New("--timeout: must be positive")
	}
	return nil
}

func newFailoverFlags() failoverFlags {
	return failoverFlags{template: aggregator.DefaultTopicTemplate, timeout: defaultCommandTimeout}
}

func writeJSONOut(w io.Writer, v any) error {
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	return enc.Encode(v)
}

// runTranslate: edgemirror translate.
func runTranslate(ctx context.Context, args []string, stdout, stderr io.Writer, getenv func(string) string) error {
	ff := newFailoverFlags()
	var (
		edge, topic       string
		partition, offset int64 = -1, -1
	)
	cmd := newCommand("translate",
		"Prints the hub offset of one edge record: the hub offset of the record with that source offset, or of\n"+
			"the first later record of the partition present in the hub (exact, by binary search over the\n"+
			"provenance headers of the hub partition, read committed).",
		"edgemirror translate --hub-brokers hub:9092 --edge plant-7 --topic orders --partition 0 --offset 1200")
	cmd.section("Record")
	cmd.str(&edge, "edge", "edge id of the record (required)")
	cmd.str(&topic, "topic", "source topic at the edge (required)")
	cmd.int64v(&partition, "partition", "source partition (required)")
	cmd.int64v(&offset, "offset", "source offset at the edge (required)")
	cmd.section("Hub")
	ff.register(cmd)
	if err := cmd.parseOrHelp(args, getenv, stdout); err != nil {
		return err
	}
	bad := func(err error) error { return &usageError{message: err.Error(), hint: cmd.example} }
	if err := ff.check(); err != nil {
		return bad(err)
	}
	if err := wire.ValidEdgeID(edge); err != nil {
		return bad(fmt.Errorf("--edge: %v", err))
	}
	if err := wire.ValidTopicName(topic); err != nil {
		return bad(fmt.Errorf("--topic: %v", err))
	}
	if partition < 0 || partition > 1<<31-1 {
		return bad(errors.New("--partition: required, 0 or more"))
	}
	if offset < 0 {
		return bad(errors.New("--offset: required, 0 or more"))
	}
	dest, err := aggregator.HubTopic(ff.template, edge, topic)
	if err != nil {
		return bad(fmt.Errorf("--topic-template: %v", err))
	}
	ctx, cancel := context.WithTimeout(ctx, ff.timeout)
	defer cancel()
	cl, closeCl := kafkaClient(ff.hubBrokers, "edgemirror-translate")
	defer closeCl()
	src := failover.Source{Edge: edge, Topic: topic, Partition: int32(partition)}
	tr, err := failover.Translate(ctx, cl, dest, src, offset, 0)
	if err != nil {
		return fmt.Errorf("translate: %w", err)
	}
	tail, err := failover.LastRecord(ctx, cl, dest, src)
	if err != nil {
		return fmt.Errorf("translate: %w", err)
	}
	if ff.json {
		return writeJSONOut(stdout, struct {
			Edge            string `json:"edge"`
			Topic           string `json:"topic"`
			Partition       int32  `json:"partition"`
			LastSourceInHub int64  `json:"last_source_offset_in_hub"`
			failover.Translation
		}{edge, topic, int32(partition), tail.SourceOffset, tr})
	}
	fmt.Fprintf(stdout, "%s %s/%d offset %d -> hub %s/%d offset %d\n", edge, topic, partition, offset, dest, partition, tr.HubOffset)
	switch {
	case tr.Found && tr.FoundSource == offset:
		fmt.Fprintf(stdout, "the hub holds that record at offset %d\n", tr.HubOffset)
	case tr.Found:
		fmt.Fprintf(stdout, "source offset %d has no record in the hub (an aborted transaction, a transaction marker, compacted\n"+
			"away or lost at the edge); the first later one, source offset %d, is at hub offset %d\n", offset, tr.FoundSource, tr.HubOffset)
	default:
		last := "none"
		if tail.SourceOffset >= 0 {
			last = fmt.Sprintf("source offset %d at hub offset %d", tail.SourceOffset, tail.HubOffset)
		}
		fmt.Fprintf(stdout, "the hub has no record of this partition at or after source offset %d yet; %d is the hub partition's\n"+
			"end (last record in the hub: %s): a consumer starting there misses nothing that arrives later\n", offset, tr.HubOffset, last)
	}
	return nil
}

// groupRow is one partition of translate-group's plan.
type groupRow struct {
	Topic       string `json:"topic"`
	Partition   int32  `json:"partition"`
	EdgeOffset  int64  `json:"edge_offset"`
	HubTopic    string `json:"hub_topic"`
	HubOffset   int64  `json:"hub_offset"`
	Exact       bool   `json:"exact"`
	NotMirrored int64  `json:"not_mirrored"`
	// NotMirroredExact is false when NotMirrored is an upper bound (offsets,
	// not records, were counted).
	NotMirroredExact bool   `json:"not_mirrored_exact"`
	Lost             int64  `json:"lost"`
	LostExact        bool   `json:"lost_exact"`
	Note             string `json:"note,omitempty"`
	skip             bool
}

// groupPlan is what translate-group prints.
type groupPlan struct {
	Edge   string `json:"edge"`
	Group  string `json:"group"`
	Source string `json:"source"` // "edge" or "checkpoints"
	// ReadAt is when the edge offsets were read: now, or the oldest
	// checkpoint's read time.
	ReadAt    time.Time  `json:"read_at"`
	Rows      []groupRow `json:"partitions"`
	Executed  bool       `json:"executed"`
	Committed int        `json:"committed"`
}

// runTranslateGroup: edgemirror translate-group.
func runTranslateGroup(ctx context.Context, args []string, stdout, stderr io.Writer, getenv func(string) string) error {
	ff := newFailoverFlags()
	var (
		edge, group, topics string = "", "", ".*"
		edgeBrokers         []string
		cpTopic             = failover.DefaultCheckpointTopic
		execute             bool
	)
	cmd := newCommand("translate-group",
		"Moves an edge consumer group to the hub: translates its committed offsets exactly into hub offsets of\n"+
			"the hub topics {edge}.{topic} and, with --execute, commits them for the same group on the hub. The\n"+
			"offsets are read from the edge cluster now (--edge-brokers) or, when the edge is gone, from the latest\n"+
			"checkpoint the aggregator keeps in the hub (agent --sync-groups). Dry run by default: prints a table\n"+
			"per partition. Refuses while the hub group has active members.",
		"edgemirror translate-group --hub-brokers hub:9092 --edge plant-7 --group billing --execute")
	cmd.section("Group")
	cmd.str(&edge, "edge", "edge id the group consumed at (required)")
	cmd.str(&group, "group", "consumer group id, the same at the edge and on the hub (required)")
	cmd.regex(&topics, "topics", "regular expression of the source topics to move (whole name)")
	cmd.list(&edgeBrokers, "edge-brokers", "edge Kafka brokers, comma-separated host:port; empty: use the hub's checkpoints")
	cmd.boolv(&execute, "execute", "commit the translated offsets for the group on the hub (default: dry run)")
	cmd.commandLineOnly("execute")
	cmd.section("Hub")
	ff.register(cmd)
	cmd.str(&cpTopic, "checkpoint-topic", "the aggregator's --checkpoint-topic")
	if err := cmd.parseOrHelp(args, getenv, stdout); err != nil {
		return err
	}
	bad := func(err error) error { return &usageError{message: err.Error(), hint: cmd.example} }
	if err := ff.check(); err != nil {
		return bad(err)
	}
	if err := checkBrokers("edge-brokers", edgeBrokers, false); err != nil {
		return bad(err)
	}
	if err := wire.ValidEdgeID(edge); err != nil {
		return bad(fmt.Errorf("--edge: %v", err))
	}
	if group == "" || len(group) > wire.MaxGroupIDLen {
		return bad(fmt.Errorf("--group: required, at most %d bytes", wire.MaxGroupIDLen))
	}
	if err := wire.ValidTopicName(cpTopic); err != nil {
		return bad(fmt.Errorf("--checkpoint-topic: %v", err))
	}
	topicRe := regexp.MustCompile("^(?:" + topics + ")$")
	ctx, cancel := context.WithTimeout(ctx, ff.timeout)
	defer cancel()
	hub, closeHub := kafkaClient(ff.hubBrokers, "edgemirror-translate-group")
	defer closeHub()

	info, err := failover.GroupState(ctx, hub, group)
	if err != nil {
		return err
	}
	if info.Active() {
		return fmt.Errorf("group %s on the hub is %s with %d members: stop its consumers first (%w)", group, info.State, info.Members, failover.ErrGroupActive)
	}
	plan := &groupPlan{Edge: edge, Group: group}
	if len(edgeBrokers) > 0 {
		edgeCl, closeEdge := kafkaClient(edgeBrokers, "edgemirror-translate-group")
		defer closeEdge()
		err = planFromEdge(ctx, hub, edgeCl, ff.template, topicRe, plan)
	} else {
		err = planFromCheckpoints(ctx, hub, cpTopic, ff.template, topicRe, plan)
	}
	if err != nil {
		return err
	}
	if execute {
		commit := make(map[failover.TopicPartition]int64)
		for _, r := range plan.Rows {
			if !r.skip {
				commit[failover.TopicPartition{Topic: r.HubTopic, Partition: r.Partition}] = r.HubOffset
			}
		}
		if len(commit) > 0 {
			if err := failover.Commit(ctx, hub, group, commit); err != nil {
				return err
			}
		}
		plan.Executed, plan.Committed = true, len(commit)
	}
	if ff.json {
		return writeJSONOut(stdout, plan)
	}
	printPlan(stdout, plan)
	return nil
}

func printPlan(w io.Writer, p *groupPlan) {
	if p.Source == "edge" {
		fmt.Fprintf(w, "Group %s of edge %s: committed offsets read from the edge cluster now.\n\n", p.Group, p.Edge)
	} else {
		fmt.Fprintf(w, "Group %s of edge %s: committed offsets from the hub's checkpoints, read at the edge %s ago (%s).\n"+
			"Records the group consumed at the edge after that are consumed again on the hub; none is skipped.\n\n",
			p.Group, p.Edge, time.Since(p.ReadAt).Round(time.Second), p.ReadAt.Format(time.RFC3339))
	}
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "TOPIC\tPARTITION\tEDGE-OFFSET\t->\tHUB-TOPIC\tHUB-OFFSET\tNOT-MIRRORED\tLOST\tNOTE")
	for _, r := range p.Rows {
		hubOff := fmt.Sprint(r.HubOffset)
		if r.skip {
			hubOff = "-"
		}
		fmt.Fprintf(tw, "%s\t%d\t%d\t->\t%s\t%s\t%s\t%s\t%s\n", r.Topic, r.Partition, r.EdgeOffset, r.HubTopic, hubOff,
			failover.Count{N: r.NotMirrored, Exact: r.NotMirroredExact}, failover.Count{N: r.Lost, Exact: r.LostExact}, r.Note)
	}
	tw.Flush()
	fmt.Fprintln(w)
	fmt.Fprintln(w, "NOT-MIRRORED: records the edge had that the hub does not have yet; if the edge is gone they are lost")
	fmt.Fprintln(w, "to the hub (<= is an upper bound in offsets). LOST: records at or after the group's offset lost between")
	fmt.Fprintln(w, "edge and hub (reported losses, or missing from the hub below its last record).")
	if p.Executed {
		fmt.Fprintf(w, "Committed %d partition offsets for group %s on the hub.\n", p.Committed, p.Group)
	} else {
		fmt.Fprintf(w, "Dry run: nothing committed. Run again with --execute to commit these offsets for group %s on the hub.\n", p.Group)
	}
}

// planRow translates one partition and fills in what it can count.
func planRow(ctx context.Context, hub *kafka.Client, template, edge, topic string, partition int32, edgeOffset int64) (groupRow, failover.Tail, error) {
	r := groupRow{Topic: topic, Partition: partition, EdgeOffset: edgeOffset, NotMirroredExact: true, LostExact: true}
	dest, err := aggregator.HubTopic(template, edge, topic)
	if err != nil {
		return r, failover.Tail{}, err
	}
	r.HubTopic = dest
	src := failover.Source{Edge: edge, Topic: topic, Partition: partition}
	tr, err := failover.Translate(ctx, hub, dest, src, edgeOffset, 0)
	if errors.Is(err, failover.ErrNoHubPartition) {
		r.skip, r.Note = true, "not in the hub: topic not mirrored? not committed"
		return r, failover.Tail{HubOffset: -1, SourceOffset: -1}, nil
	}
	if err != nil {
		return r, failover.Tail{}, err
	}
	r.HubOffset, r.Exact = tr.HubOffset, tr.Found
	tail, err := failover.LastRecord(ctx, hub, dest, src)
	if err != nil {
		return r, tail, err
	}
	if !tr.Found {
		r.Note = "hub end: the hub has nothing at or after this offset yet"
	}
	return r, tail, nil
}

func planFromEdge(ctx context.Context, hub, edgeCl *kafka.Client, template string, topicRe *regexp.Regexp, plan *groupPlan) error {
	plan.Source, plan.ReadAt = "edge", time.Now().UTC()
	offs, err := failover.GroupOffsets(ctx, edgeCl, plan.Group)
	if err != nil {
		return fmt.Errorf("read group offsets at the edge: %w", err)
	}
	for _, tp := range sortedTPs(offs) {
		if !topicRe.MatchString(tp.Topic) {
			continue
		}
		off := offs[tp]
		r, tail, err := planRow(ctx, hub, template, plan.Edge, tp.Topic, tp.Partition, off)
		if err != nil {
			return err
		}
		if !r.skip {
			if err := countFromEdge(ctx, hub, edgeCl, plan.Edge, &r, tail); err != nil {
				return err
			}
		}
		plan.Rows = append(plan.Rows, r)
	}
	if len(plan.Rows) == 0 {
		return fmt.Errorf("group %s has no committed offsets on topics matching --topics at the edge", plan.Group)
	}
	return nil
}

// countFromEdge counts, with the edge at hand, the records the hub does not
// have yet (after its last record of the partition) and the records at or
// after the group's offset the hub lacks below its last record (lost).
func countFromEdge(ctx context.Context, hub, edgeCl *kafka.Client, edge string, r *groupRow, tail failover.Tail) error {
	res, err := edgeCl.ListOffsets(ctx, &kafka.ListOffsetsRequest{IsolationLevel: kafka.ReadCommitted,
		Topics: map[string][]kafka.OffsetRequest{r.Topic: {kafka.FirstOffsetOf(int(r.Partition)), kafka.LastOffsetOf(int(r.Partition))}}})
	if err != nil {
		return fmt.Errorf("list edge offsets of %s/%d: %w", r.Topic, r.Partition, err)
	}
	var first, end int64
	for _, p := range res.Topics[r.Topic] {
		if p.Partition == int(r.Partition) {
			if p.Error != nil {
				return fmt.Errorf("list edge offsets of %s/%d: %w", r.Topic, r.Partition, p.Error)
			}
			first, end = p.FirstOffset, p.LastOffset
		}
	}
	nm, err := failover.CountEdge(ctx, edgeCl, r.Topic, r.Partition, max(first, tail.SourceOffset+1), end)
	if err != nil {
		return err
	}
	r.NotMirrored, r.NotMirroredExact = nm.N, nm.Exact
	from := max(r.EdgeOffset, first)
	if tail.SourceOffset >= from {
		atEdge, err := failover.CountEdge(ctx, edgeCl, r.Topic, r.Partition, from, tail.SourceOffset+1)
		if err != nil {
			return err
		}
		src := failover.Source{Edge: edge, Topic: r.Topic, Partition: r.Partition}
		inHub, err := failover.CountHub(ctx, hub, r.HubTopic, src, r.HubOffset, tail.HubOffset+1, from, tail.SourceOffset)
		if err != nil {
			return err
		}
		r.Lost, r.LostExact = max(0, atEdge.N-inHub.N), atEdge.Exact && inHub.Exact
		if !r.LostExact {
			r.Lost = 0
			r.Note = strings.TrimSpace(r.Note + " lost not counted: range too large")
		}
	}
	if r.EdgeOffset < first {
		r.Note = strings.TrimSpace(fmt.Sprintf("%s edge log starts at %d: offsets %d-%d are gone from the edge", r.Note, first, r.EdgeOffset, first-1))
	}
	return nil
}

func planFromCheckpoints(ctx context.Context, hub *kafka.Client, cpTopic, template string, topicRe *regexp.Regexp, plan *groupPlan) error {
	plan.Source = "checkpoints"
	cps, err := failover.ReadCheckpoints(ctx, hub, cpTopic, plan.Edge, plan.Group)
	if errors.Is(err, failover.ErrNoHubPartition) {
		return fmt.Errorf("the hub has no checkpoint topic %s: run the agents with --sync-groups, or give --edge-brokers", cpTopic)
	}
	if err != nil {
		return err
	}
	offs := make(map[failover.TopicPartition]int64, len(cps))
	for tp, cp := range cps {
		offs[tp] = cp.EdgeOffset
	}
	for _, tp := range sortedTPs(offs) {
		if !topicRe.MatchString(tp.Topic) {
			continue
		}
		cp := cps[tp]
		if plan.ReadAt.IsZero() || cp.CommittedAt.Before(plan.ReadAt) {
			plan.ReadAt = cp.CommittedAt
		}
		// Translated again now: the hub may hold more than when the
		// checkpoint was stored.
		r, tail, err := planRow(ctx, hub, template, plan.Edge, tp.Topic, tp.Partition, cp.EdgeOffset)
		if err != nil {
			return err
		}
		if !r.skip {
			if n := cp.EdgeLast - tail.SourceOffset; n > 0 {
				r.NotMirrored, r.NotMirroredExact = n, false
			}
			r.Lost = cp.Lost
		}
		plan.Rows = append(plan.Rows, r)
	}
	if len(plan.Rows) == 0 {
		return fmt.Errorf("no checkpoint of group %s of edge %s on topics matching --topics in %s: is the agent run with --sync-groups matching it?",
			plan.Group, plan.Edge, cpTopic)
	}
	return nil
}

func sortedTPs[V any](m map[failover.TopicPartition]V) []failover.TopicPartition {
	out := make([]failover.TopicPartition, 0, len(m))
	for tp := range m {
		out = append(out, tp)
	}
	sort.Slice(out, func(i, j int) bool {
		return out[i].Topic < out[j].Topic || out[i].Topic == out[j].Topic && out[i].Partition < out[j].Partition
	})
	return out
}

// resetRow is one partition of reset-group's plan.
type resetRow struct {
	Group     string `json:"group"`
	Topic     string `json:"topic"`
	Partition int32  `json:"partition"`
	NewOffset int64  `json:"new_offset"`
}

// runResetGroup: edgemirror reset-group.
func runResetGroup(ctx context.Context, args []string, stdout, stderr io.Writer, getenv func(string) string) error {
	ff := newFailoverFlags()
	var (
		group, topics, when string
		execute             bool
	)
	cmd := newCommand("reset-group",
		"Points a consumer group at the hub topics by time: on every partition of the matching topics, the\n"+
			"offset of the first record whose timestamp is at or after --to-datetime, or the partition's end when\n"+
			"there is none, as kafka-consumer-groups --reset-offsets --to-datetime does. Mirrored records keep the\n"+
			"edge's timestamps. Dry run by default. Refuses while the group has active members.",
		"edgemirror reset-group --hub-brokers hub:9092 --group billing --topics 'plant-7\\..*' --to-datetime 2026-12-01T10:00:00Z")
	cmd.section("Group")
	cmd.str(&group, "group", "consumer group id on the hub (required)")
	cmd.regex(&topics, "topics", "regular expression of the hub topics to reset (whole name; required)")
	cmd.str(&when, "to-datetime", "YYYY-MM-DDTHH:mm:SS[.sss][Z|+hh:mm]; no zone means UTC (required)")
	cmd.boolv(&execute, "execute", "commit the offsets (default: dry run)")
	cmd.commandLineOnly("execute")
	cmd.section("Hub")
	ff.register(cmd)
	if err := cmd.parseOrHelp(args, getenv, stdout); err != nil {
		return err
	}
	bad := func(err error) error { return &usageError{message: err.Error(), hint: cmd.example} }
	if err := ff.check(); err != nil {
		return bad(err)
	}
	if group == "" || len(group) > wire.MaxGroupIDLen {
		return bad(fmt.Errorf("--group: required, at most %d bytes", wire.MaxGroupIDLen))
	}
	if topics == "" {
		return bad(errors.New("--topics: required"))
	}
	at, err := failover.ParseDateTime(when)
	if err != nil {
		return bad(fmt.Errorf("--to-datetime: %v", err))
	}
	topicRe := regexp.MustCompile("^(?:" + topics + ")$")
	ctx, cancel := context.WithTimeout(ctx, ff.timeout)
	defer cancel()
	hub, closeHub := kafkaClient(ff.hubBrokers, "edgemirror-reset-group")
	defer closeHub()
	info, err := failover.GroupState(ctx, hub, group)
	if err != nil {
		return err
	}
	if info.Active() {
		return fmt.Errorf("group %s on the hub is %s with %d members: stop its consumers first (%w)", group, info.State, info.Members, failover.ErrGroupActive)
	}
	all, err := failover.Topics(ctx, hub)
	if err != nil {
		return err
	}
	var rows []resetRow
	commit := make(map[failover.TopicPartition]int64)
	sort.Strings(all)
	for _, t := range all {
		if !topicRe.MatchString(t) {
			continue
		}
		parts, err := failover.Partitions(ctx, hub, t)
		if err != nil {
			return err
		}
		offs, err := failover.OffsetsForTime(ctx, hub, t, parts, at)
		if err != nil {
			return err
		}
		sort.Slice(parts, func(i, j int) bool { return parts[i] < parts[j] })
		for _, p := range parts {
			rows = append(rows, resetRow{Group: group, Topic: t, Partition: p, NewOffset: offs[p]})
			commit[failover.TopicPartition{Topic: t, Partition: p}] = offs[p]
		}
	}
	if len(rows) == 0 {
		return fmt.Errorf("no hub topic matches --topics %q", topics)
	}
	if execute {
		if err := failover.Commit(ctx, hub, group, commit); err != nil {
			return err
		}
	}
	if ff.json {
		return writeJSONOut(stdout, struct {
			ToDatetime time.Time  `json:"to_datetime"`
			Executed   bool       `json:"executed"`
			Partitions []resetRow `json:"partitions"`
		}{at, execute, rows})
	}
	tw := tabwriter.NewWriter(stdout, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "GROUP\tTOPIC\tPARTITION\tNEW-OFFSET")
	for _, r := range rows {
		fmt.Fprintf(tw, "%s\t%s\t%d\t%d\n", r.Group, r.Topic, r.Partition, r.NewOffset)
	}
	tw.Flush()
	if execute {
		fmt.Fprintf(stdout, "\nCommitted %d partition offsets for group %s (first record at or after %s).\n", len(rows), group, at.Format(time.RFC3339Nano))
	} else {
		fmt.Fprintf(stdout, "\nDry run: nothing committed. Run again with --execute to commit.\n")
	}
	return nil
}
