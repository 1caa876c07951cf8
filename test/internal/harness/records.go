package harness

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"sort"
	"strconv"
	"sync"
	"time"

	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/edgemirror/edgemirror/internal/provenance"
	"github.com/edgemirror/edgemirror/internal/testkit"
	"github.com/edgemirror/edgemirror/internal/wire"
)

// Provenance header keys (duplicated from internal/provenance on purpose:
// the tests check the product against the documented contract).
const (
	hdrEdge      = "edgemirror-edge"
	hdrTopic     = "edgemirror-topic"
	hdrPartition = "edgemirror-partition"
	hdrOffset    = "edgemirror-offset"
)

// Rec is one record as produced at the edge, with the offset the edge gave it.
type Rec struct {
	Topic     string
	Partition int32
	Offset    int64
	Key       []byte
	Value     []byte
	Headers   []kgo.RecordHeader
	Timestamp time.Time
}

// Produced accumulates what was produced at the edge, safely from many
// goroutines.
type Produced struct {
	mu   sync.Mutex
	recs map[string]map[int32][]Rec // topic → partition → records in offset order
}

// NewProduced returns an empty Produced.
func NewProduced() *Produced { return &Produced{recs: make(map[string]map[int32][]Rec)} }

func (p *Produced) add(r Rec) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.recs[r.Topic] == nil {
		p.recs[r.Topic] = make(map[int32][]Rec)
	}
	p.recs[r.Topic][r.Partition] = append(p.recs[r.Topic][r.Partition], r)
}

// Count returns how many records were produced.
func (p *Produced) Count() int {
	p.mu.Lock()
	defer p.mu.Unlock()
	n := 0
	for _, parts := range p.recs {
		for _, rs := range parts {
			n += len(rs)
		}
	}
	return n
}

// Topics returns the produced topics.
func (p *Produced) Topics() []string {
	p.mu.Lock()
	defer p.mu.Unlock()
	var out []string
	for t := range p.recs {
		out = append(out, t)
	}
	sort.Strings(out)
	return out
}

// MakeRecord returns the i-th synthetic record of a partition. It covers
// null and empty keys and values, repeated and null headers, and distinct
// timestamps.
func MakeRecord(topic string, partition int32, i int, base time.Time) *kgo.Record {
	r := &kgo.Record{Topic: topic, Partition: partition, Timestamp: base.Add(time.Duration(i) * time.Millisecond)}
	switch i % 17 {
	case 0:
		r.Key = nil
	case 1:
		r.Key = []byte{}
	default:
		r.Key = []byte("sensor-" + strconv.Itoa(i%50))
	}
	switch i % 13 {
	case 0:
		r.Value = nil // tombstone
	case 1:
		r.Value = []byte{}
	default:
		r.Value = fmt.Appendf(nil, `{"site":"plant-7","line":%d,"sensor":"temp-%02d","seq":%d,"celsius":%.2f,"status":"ok"}`,
			partition, i%50, i, 20+float64(i%700)/100)
	}
	if i%5 != 0 {
		r.Headers = []kgo.RecordHeader{
			{Key: "content-type", Value: []byte("application/json")},
			{Key: "dup", Value: []byte("a")},
			{Key: "dup", Value: []byte("b")},
			{Key: "trace", Value: fmt.Appendf(nil, "%d-%d", partition, i)},
		}
	}
	return r
}

// Producer produces synthetic records to the edge cluster and remembers them.
type Producer struct {
	cl   *kgo.Client
	opts []kgo.Opt
	Base time.Time
	Out  *Produced
	next map[string]map[int32]int
	mu   sync.Mutex
	// Keyed lists topics whose records must all have a non-empty key
	// (compacted topics reject null keys).
	Keyed map[string]bool
}

// NewProducer connects a producer to brokers. Extra options (for example
// kgo.TransactionalID) are appended.
func NewProducer(brokers []string, extra ...kgo.Opt) (*Producer, error) {
	opts := append([]kgo.Opt{
		kgo.SeedBrokers(brokers...),
		kgo.RecordPartitioner(kgo.ManualPartitioner()),
		kgo.ProducerLinger(2 * time.Millisecond),
		kgo.RequiredAcks(kgo.AllISRAcks()),
		kgo.ProducerBatchCompression(kgo.NoCompression()),
		kgo.RecordRetries(1 << 20),
	}, extra...)
	cl, err := kgo.NewClient(opts...)
	if err != nil {
		return nil, err
	}
	return &Producer{cl: cl, opts: opts, Base: time.Now().Add(-time.Minute).Truncate(time.Millisecond), Out: NewProduced(),
		next: make(map[string]map[int32]int), Keyed: make(map[string]bool)}, nil
}

// Client returns the underlying franz-go client.
func (p *Producer) Client() *kgo.Client { return p.cl }

// Close closes the producer.
func (p *Producer) Close() { p.cl.Close() }

// CreateTopic creates topic with partitions (and optional configs) on the
// cluster the producer talks to.
func (p *Producer) CreateTopic(ctx context.Context, topic string, partitions int32, configs map[string]*string) error {
	adm := kadm.NewClient(p.cl)
	res, err := adm.CreateTopics(ctx, partitions, 1, configs, topic)
	if err != nil {
		return err
	}
	for _, r := range res {
		if r.Err != nil && !errors.Is(r.Err, kerr.TopicAlreadyExists) {
			return r.Err
		}
	}
	return nil
}

// Produce produces n records to each partition of topic, synchronously,
// and records them (with their offsets) in p.Out.
func (p *Producer) Produce(ctx context.Context, topic string, partitions int32, n int) error {
	recs := p.Build(topic, partitions, n)
	return p.Send(ctx, recs)
}

// Build makes the next n synthetic records of every partition of topic.
func (p *Producer) Build(topic string, partitions int32, n int) []*kgo.Record {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.next[topic] == nil {
		p.next[topic] = make(map[int32]int)
	}
	var recs []*kgo.Record
	for i := 0; i < n; i++ {
		for part := int32(0); part < partitions; part++ {
			r := MakeRecord(topic, part, p.next[topic][part], p.Base)
			if p.Keyed[topic] && len(r.Key) == 0 {
				r.Key = []byte("sensor-keyed")
			}
			recs = append(recs, r)
			p.next[topic][part]++
		}
	}
	return recs
}

// Send produces recs synchronously and records them.
func (p *Producer) Send(ctx context.Context, recs []*kgo.Record) error {
	res := p.cl.ProduceSync(ctx, recs...)
	if err := res.FirstErr(); err != nil {
		return err
	}
	for _, r := range recs {
		p.Out.add(fromKgo(r))
	}
	return nil
}

func fromKgo(r *kgo.Record) Rec {
	return Rec{Topic: r.Topic, Partition: r.Partition, Offset: r.Offset, Key: r.Key, Value: r.Value,
		Headers: r.Headers, Timestamp: r.Timestamp}
}

// ReadAll reads every record of the given topics from brokers, up to the end
// offsets at the time of the call, and returns them per topic and partition.
func ReadAll(ctx context.Context, brokers []string, topics ...string) (map[string]map[int32][]*kgo.Record, error) {
	return ReadAllOpts(ctx, nil, brokers, topics...)
}

// ReadAllOpts is ReadAll with extra client options (TLS, SASL).
func ReadAllOpts(ctx context.Context, opts []kgo.Opt, brokers []string, topics ...string) (map[string]map[int32][]*kgo.Record, error) {
	adm, err := kgo.NewClient(append([]kgo.Opt{kgo.SeedBrokers(brokers...)}, opts...)...)
	if err != nil {
		return nil, err
	}
	defer adm.Close()
	ac := kadm.NewClient(adm)
	ends, err := ac.ListEndOffsets(ctx, topics...)
	if err != nil {
		return nil, fmt.Errorf("list end offsets: %w", err)
	}
	starts, err := ac.ListStartOffsets(ctx, topics...)
	if err != nil {
		return nil, fmt.Errorf("list start offsets: %w", err)
	}
	want := make(map[string]map[int32]kgo.Offset)
	remaining := make(map[string]map[int32]int64)
	ends.Each(func(o kadm.ListedOffset) {
		if o.Err != nil {
			return
		}
		start, _ := starts.Lookup(o.Topic, o.Partition)
		if o.Offset <= start.Offset {
			return
		}
		if want[o.Topic] == nil {
			want[o.Topic] = make(map[int32]kgo.Offset)
			remaining[o.Topic] = make(map[int32]int64)
		}
		want[o.Topic][o.Partition] = kgo.NewOffset().At(start.Offset)
		remaining[o.Topic][o.Partition] = o.Offset
	})
	out := make(map[string]map[int32][]*kgo.Record)
	for _, t := range topics {
		out[t] = make(map[int32][]*kgo.Record)
	}
	if len(want) == 0 {
		return out, nil
	}
	// Read everything up to the high watermark, markers included, and keep
	// what a read_committed consumer sees (testkit.Committed).
	cl, err := kgo.NewClient(append([]kgo.Opt{kgo.SeedBrokers(brokers...), kgo.ConsumePartitions(want),
		kgo.FetchIsolationLevel(kgo.ReadUncommitted()), kgo.KeepControlRecords()}, opts...)...)
	if err != nil {
		return nil, err
	}
	defer cl.Close()
	done := func() bool {
		for t, parts := range remaining {
			for p, end := range parts {
				recs := out[t][p]
				if len(recs) == 0 || recs[len(recs)-1].Offset < end-1 {
					return false
				}
			}
		}
		return true
	}
	for !done() {
		fs := cl.PollFetches(ctx)
		if err := ctx.Err(); err != nil {
			return out, fmt.Errorf("read hub: %w", err)
		}
		var ferr error
		fs.EachError(func(t string, p int32, err error) {
			if !errors.Is(err, context.Canceled) && ferr == nil {
				ferr = fmt.Errorf("fetch %s/%d: %w", t, p, err)
			}
		})
		if ferr != nil {
			return out, ferr
		}
		fs.EachRecord(func(r *kgo.Record) {
			if end, ok := remaining[r.Topic][r.Partition]; ok && r.Offset < end {
				out[r.Topic][r.Partition] = append(out[r.Topic][r.Partition], r)
			}
		})
	}
	for _, parts := range out {
		for p, recs := range parts {
			parts[p] = testkit.Committed(recs)
		}
	}
	return out, nil
}

// CountCommitted returns how many records of the topics a read_committed
// consumer sees: in a transactional topic, end minus start offsets also
// counts the commit markers and aborted records.
func CountCommitted(ctx context.Context, brokers []string, topics ...string) (int64, error) {
	return CountCommittedOpts(ctx, nil, brokers, topics...)
}

// CountCommittedOpts is CountCommitted with extra client options (TLS, SASL).
func CountCommittedOpts(ctx context.Context, opts []kgo.Opt, brokers []string, topics ...string) (int64, error) {
	all, err := ReadAllOpts(ctx, opts, brokers, topics...)
	if err != nil {
		return 0, err
	}
	var n int64
	for _, parts := range all {
		for _, recs := range parts {
			n += int64(len(recs))
		}
	}
	return n, nil
}

// CountAll returns how many records the topics hold (end minus start
// offsets). For a topic written in transactions use CountCommitted.
func CountAll(ctx context.Context, brokers []string, topics ...string) (int64, error) {
	return CountAllOpts(ctx, nil, brokers, topics...)
}

// CountAllOpts is CountAll with extra client options (TLS, SASL).
func CountAllOpts(ctx context.Context, opts []kgo.Opt, brokers []string, topics ...string) (int64, error) {
	cl, err := kgo.NewClient(append([]kgo.Opt{kgo.SeedBrokers(brokers...)}, opts...)...)
	if err != nil {
		return 0, err
	}
	defer cl.Close()
	ac := kadm.NewClient(cl)
	ends, err := ac.ListEndOffsets(ctx, topics...)
	if err != nil {
		return 0, err
	}
	starts, err := ac.ListStartOffsets(ctx, topics...)
	if err != nil {
		return 0, err
	}
	var n int64
	ends.Each(func(o kadm.ListedOffset) {
		if o.Err != nil {
			return
		}
		s, _ := starts.Lookup(o.Topic, o.Partition)
		n += o.Offset - s.Offset
	})
	return n, nil
}

// Lost is a source range the agent reported lost.
type Lost struct {
	Topic       string
	Partition   int32
	First, Last int64
}

// Check compares the hub topics of edge against what was produced: every
// produced record not in a lost range appears exactly once, in source offset
// order per partition, on the same partition number, with key, value,
// headers and timestamp preserved and the four provenance headers added; no
// record of a lost range appears. template maps a source topic to its hub
// topic.
func Check(ctx context.Context, hubBrokers []string, edge string, produced *Produced, lost []Lost, template func(string) string) error {
	return CheckOpts(ctx, nil, hubBrokers, edge, produced, lost, template)
}

// CheckOpts is Check with extra client options for the hub (TLS, SASL).
func CheckOpts(ctx context.Context, opts []kgo.Opt, hubBrokers []string, edge string, produced *Produced, lost []Lost, template func(string) string) error {
	produced.mu.Lock()
	defer produced.mu.Unlock()
	var hubTopics []string
	for t := range produced.recs {
		hubTopics = append(hubTopics, template(t))
	}
	got, err := ReadAllOpts(ctx, opts, hubBrokers, hubTopics...)
	if err != nil {
		return err
	}
	isLost := func(t string, p int32, off int64) bool {
		for _, l := range lost {
			if l.Topic == t && l.Partition == p && off >= l.First && off <= l.Last {
				return true
			}
		}
		return false
	}
	var problems []string
	report := func(format string, args ...any) {
		if len(problems) < 20 {
			problems = append(problems, fmt.Sprintf(format, args...))
		}
	}
	for topic, parts := range produced.recs {
		ht := template(topic)
		for p, want := range parts {
			var exp []Rec
			for _, r := range want {
				if !isLost(topic, p, r.Offset) {
					exp = append(exp, r)
				}
			}
			sort.Slice(exp, func(i, j int) bool { return exp[i].Offset < exp[j].Offset })
			have := got[ht][p]
			if len(have) != len(exp) {
				report("%s/%d: hub has %d records, want %d", ht, p, len(have), len(exp))
			}
			for i := 0; i < len(have) && i < len(exp); i++ {
				if msg := compare(edge, topic, p, exp[i], have[i]); msg != "" {
					report("%s/%d record %d: %s", ht, p, i, msg)
					break
				}
			}
		}
		for p := range got[ht] {
			if _, ok := parts[p]; !ok && len(got[ht][p]) > 0 {
				report("%s/%d: %d records on a partition nothing was produced to", ht, p, len(got[ht][p]))
			}
		}
	}
	if len(problems) > 0 {
		return fmt.Errorf("hub does not match the edge:\n  %s", joinLines(problems))
	}
	return nil
}

func joinLines(s []string) string {
	var b bytes.Buffer
	for i, l := range s {
		if i > 0 {
			b.WriteString("\n  ")
		}
		b.WriteString(l)
	}
	return b.String()
}

func compare(edge, topic string, p int32, want Rec, got *kgo.Record) string {
	n := len(got.Headers)
	if n < 4 {
		return fmt.Sprintf("only %d headers, provenance missing", n)
	}
	prov := got.Headers[n-4:]
	wantProv := []kgo.RecordHeader{
		{Key: hdrEdge, Value: []byte(edge)},
		{Key: hdrTopic, Value: []byte(topic)},
		{Key: hdrPartition, Value: []byte(strconv.Itoa(int(p)))},
		{Key: hdrOffset, Value: []byte(strconv.FormatInt(want.Offset, 10))},
	}
	if !headersEqual(prov, wantProv) {
		return fmt.Sprintf("provenance %s, want %s (duplicate, gap or reorder)", fmtHeaders(prov), fmtHeaders(wantProv))
	}
	if !nullableEqual(got.Key, want.Key) {
		return fmt.Sprintf("key %s, want %s", fmtBytes(got.Key), fmtBytes(want.Key))
	}
	if !nullableEqual(got.Value, want.Value) {
		return fmt.Sprintf("value %s, want %s", fmtBytes(got.Value), fmtBytes(want.Value))
	}
	if !headersEqual(got.Headers[:n-4], want.Headers) {
		return fmt.Sprintf("headers %s, want %s", fmtHeaders(got.Headers[:n-4]), fmtHeaders(want.Headers))
	}
	if !got.Timestamp.Equal(want.Timestamp) {
		return fmt.Sprintf("timestamp %s, want %s", got.Timestamp.UTC(), want.Timestamp.UTC())
	}
	return ""
}

func nullableEqual(a, b []byte) bool {
	return (a == nil) == (b == nil) && bytes.Equal(a, b)
}

func headersEqual(a, b []kgo.RecordHeader) bool {
	if len(a) != len(b) {
		return false
	}
	for i := range a {
		if a[i].Key != b[i].Key || !bytes.Equal(a[i].Value, b[i].Value) {
			return false
		}
	}
	return true
}

func fmtBytes(b []byte) string {
	if b == nil {
		return "null"
	}
	if len(b) > 40 {
		return strconv.Quote(string(b[:40])) + "..."
	}
	return strconv.Quote(string(b))
}

func fmtHeaders(hs []kgo.RecordHeader) string {
	var b bytes.Buffer
	b.WriteByte('[')
	for i, h := range hs {
		if i > 0 {
			b.WriteByte(' ')
		}
		fmt.Fprintf(&b, "%s=%s", h.Key, fmtBytes(h.Value))
	}
	b.WriteByte(']')
	return b.String()
}

// Record remembers records produced outside Send (for example inside a
// transaction that was committed).
func (p *Producer) Record(recs []*kgo.Record) {
	for _, r := range recs {
		p.Out.add(fromKgo(r))
	}
}

// AddPartitions grows topic to total partitions.
func (p *Producer) AddPartitions(ctx context.Context, topic string, total int32) error {
	res, err := kadm.NewClient(p.cl).UpdatePartitions(ctx, int(total), topic)
	if err != nil {
		return err
	}
	if err := res.Error(); err != nil {
		return err
	}
	// A new client, so that the partitioner sees the new partitions
	// (a running client learns of them only at its next metadata refresh).
	cl, err := kgo.NewClient(p.opts...)
	if err != nil {
		return err
	}
	p.cl.Close()
	p.cl = cl
	return nil
}

// DeleteRecordsBefore deletes the records of topic/partition below offset
// (as retention would). p.Out keeps them: pass the range to Check as lost.
func (p *Producer) DeleteRecordsBefore(ctx context.Context, topic string, partition int32, offset int64) error {
	os := kadm.Offsets{}
	os.Add(kadm.Offset{Topic: topic, Partition: partition, At: offset})
	res, err := kadm.NewClient(p.cl).DeleteRecords(ctx, os)
	if err != nil {
		return err
	}
	return res.Error()
}

// CountTopic returns how many records were produced to topic.
func (p *Produced) CountTopic(topic string) int {
	p.mu.Lock()
	defer p.mu.Unlock()
	n := 0
	for _, rs := range p.recs[topic] {
		n += len(rs)
	}
	return n
}

// FromTopic reads a topic as a consumer sees it now and returns it as a
// Produced (what a mirror of it must contain), with its record count.
func FromTopic(ctx context.Context, brokers []string, topic string) (*Produced, int, error) {
	got, err := ReadAll(ctx, brokers, topic)
	if err != nil {
		return nil, 0, err
	}
	out := NewProduced()
	n := 0
	for _, recs := range got[topic] {
		for _, r := range recs {
			out.add(fromKgo(r))
			n++
		}
	}
	return out, n, nil
}

// Duplicates counts the committed records of hub topics whose provenance
// (topic, partition, source offset) an earlier record already had.
func Duplicates(ctx context.Context, hubBrokers []string, hubTopics ...string) (int, error) {
	got, err := ReadAll(ctx, hubBrokers, hubTopics...)
	if err != nil {
		return 0, err
	}
	seen := make(map[string]bool)
	dups := 0
	for _, parts := range got {
		for _, recs := range parts {
			for _, r := range recs {
				hs := make([]wire.Header, len(r.Headers))
				for i, h := range r.Headers {
					hs[i] = wire.Header{Key: h.Key, Value: h.Value}
				}
				o, ok := provenance.Parse(hs)
				if !ok {
					continue
				}
				k := fmt.Sprintf("%s/%d/%d", o.Topic, o.Partition, o.Offset)
				if seen[k] {
					dups++
				}
				seen[k] = true
			}
		}
	}
	return dups, nil
}

// Each calls fn for every record, per topic and partition in offset order.
func (p *Produced) Each(fn func(Rec)) {
	p.mu.Lock()
	defer p.mu.Unlock()
	for _, parts := range p.recs {
		for _, rs := range parts {
			for _, r := range rs {
				fn(r)
			}
		}
	}
}

// CheckCompacted compares the hub topics of edge with edgeView, a snapshot
// of compacted source topics taken before the agent read them: on every
// partition the hub holds a subsequence of the snapshot (each record exactly
// as in the snapshot, in source-offset order, none twice), and the latest
// record of every key is there. Compaction after the snapshot can only
// remove records the snapshot holds, so the check does not depend on when
// the edge's log cleaner runs.
func CheckCompacted(ctx context.Context, hubBrokers []string, edge string, edgeView *Produced, template func(string) string) error {
	edgeView.mu.Lock()
	defer edgeView.mu.Unlock()
	var hubTopics []string
	for t := range edgeView.recs {
		hubTopics = append(hubTopics, template(t))
	}
	got, err := ReadAll(ctx, hubBrokers, hubTopics...)
	if err != nil {
		return err
	}
	var problems []string
	report := func(format string, args ...any) {
		if len(problems) < 20 {
			problems = append(problems, fmt.Sprintf(format, args...))
		}
	}
	for topic, parts := range edgeView.recs {
		ht := template(topic)
		for p, snap := range parts {
			snap = append([]Rec(nil), snap...)
			sort.Slice(snap, func(i, j int) bool { return snap[i].Offset < snap[j].Offset })
			latest := make(map[string]int64) // key → offset of its latest record
			for _, r := range snap {
				latest[string(r.Key)] = r.Offset
			}
			have := got[ht][p]
			j := 0 // next snapshot record a hub record may match
			present := make(map[int64]bool)
			for i, h := range have {
				off, err := provenanceOffset(h)
				if err != nil {
					report("%s/%d record %d: %v", ht, p, i, err)
					break
				}
				for j < len(snap) && snap[j].Offset < off {
					j++
				}
				if j == len(snap) || snap[j].Offset != off {
					report("%s/%d record %d: source offset %d is not in the edge snapshot, or out of order", ht, p, i, off)
					break
				}
				if msg := compare(edge, topic, p, snap[j], h); msg != "" {
					report("%s/%d record %d: %s", ht, p, i, msg)
					break
				}
				present[off] = true
				j++
			}
			var missing []int64
			for _, off := range latest {
				if !present[off] {
					missing = append(missing, off)
				}
			}
			if len(missing) > 0 {
				sort.Slice(missing, func(i, j int) bool { return missing[i] < missing[j] })
				report("%s/%d: hub has %d records; the latest value of %d keys is missing (source offsets %v)",
					ht, p, len(have), len(missing), missing)
			}
		}
	}
	if len(problems) > 0 {
		return fmt.Errorf("hub does not match the compacted edge topic:\n  %s", joinLines(problems))
	}
	return nil
}

// provenanceOffset returns the source offset a hub record names.
func provenanceOffset(r *kgo.Record) (int64, error) {
	for i := len(r.Headers) - 1; i >= 0; i-- {
		if r.Headers[i].Key == hdrOffset {
			return strconv.ParseInt(string(r.Headers[i].Value), 10, 64)
		}
	}
	return 0, errors.New("no " + hdrOffset + " header")
}
