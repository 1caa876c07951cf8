package harness

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"os/exec"

	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/edgemirror/edgemirror/internal/wire"
)

// Status runs `edgemirror status --aggregator <a> --json` and returns its
// rows by edge id.
func (a *Aggregator) Status(ctx context.Context) (map[string]wire.EdgeStatus, error) {
	out, err := a.Command(ctx, "status", "--json")
	if err != nil {
		return nil, err
	}
	var rows []wire.EdgeStatus
	if err := json.Unmarshal(out, &rows); err != nil {
		return nil, fmt.Errorf("decode status --json output %q: %w", out, err)
	}
	m := make(map[string]wire.EdgeStatus, len(rows))
	for _, r := range rows {
		m[r.Edge] = r
	}
	return m, nil
}

// Command runs an edgemirror query command (status, losses) against this
// aggregator and returns its standard output.
func (a *Aggregator) Command(ctx context.Context, name string, args ...string) ([]byte, error) {
	bin, err := Binary()
	if err != nil {
		return nil, err
	}
	cmd := exec.CommandContext(ctx, bin, append([]string{name, "--aggregator", "http://" + a.Addr}, args...)...)
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	if err := cmd.Run(); err != nil {
		return nil, fmt.Errorf("edgemirror %s: %w: %s", name, err, stderr.String())
	}
	return stdout.Bytes(), nil
}

// LossEvents reads every committed loss event of edge from the hub's
// events topic, in the order they were written, duplicates included.
func LossEvents(ctx context.Context, hubBrokers []string, topic, edge string) ([]wire.LossEvent, error) {
	recs, err := ReadCommitted(ctx, hubBrokers, topic)
	if err != nil {
		return nil, err
	}
	var out []wire.LossEvent
	for _, r := range recs {
		{
			var ev wire.LossEvent
			if err := json.Unmarshal(r.Value, &ev); err != nil {
				return nil, fmt.Errorf("event at %s/%d@%d: %w", topic, r.Partition, r.Offset, err)
			}
			if string(r.Key) != ev.Edge {
				return nil, fmt.Errorf("event at %s/%d@%d is keyed %q but names edge %q", topic, r.Partition, r.Offset, r.Key, ev.Edge)
			}
			if ev.Edge == edge {
				out = append(out, ev)
			}
		}
	}
	return out, nil
}

// ReadCommitted reads every committed record of topic (read_committed),
// up to the last stable offset of each partition, control markers left
// out. Unlike ReadAll it reaches the end of partitions written with
// transactions, whose last offset is a marker.
func ReadCommitted(ctx context.Context, brokers []string, topic string) ([]*kgo.Record, error) {
	adm, err := kgo.NewClient(kgo.SeedBrokers(brokers...))
	if err != nil {
		return nil, err
	}
	defer adm.Close()
	ends, err := kadm.NewClient(adm).ListCommittedOffsets(ctx, topic)
	if err != nil {
		return nil, fmt.Errorf("list last stable offsets: %w", err)
	}
	want := map[int32]int64{}
	offsets := map[int32]kgo.Offset{}
	ends.Each(func(o kadm.ListedOffset) {
		if o.Err == nil && o.Offset > 0 {
			want[o.Partition] = o.Offset
			offsets[o.Partition] = kgo.NewOffset().AtStart()
		}
	})
	if len(want) == 0 {
		return nil, nil
	}
	cl, err := kgo.NewClient(kgo.SeedBrokers(brokers...),
		kgo.ConsumePartitions(map[string]map[int32]kgo.Offset{topic: offsets}),
		kgo.FetchIsolationLevel(kgo.ReadCommitted()), kgo.KeepControlRecords())
	if err != nil {
		return nil, err
	}
	defer cl.Close()
	var out []*kgo.Record
	for len(want) > 0 {
		fs := cl.PollFetches(ctx)
		if err := ctx.Err(); err != nil {
			return nil, fmt.Errorf("read %s: %w (still waiting for %v)", topic, err, want)
		}
		fs.EachError(func(_ string, p int32, e error) { err = fmt.Errorf("read %s/%d: %w", topic, p, e) })
		if err != nil {
			return nil, err
		}
		fs.EachRecord(func(r *kgo.Record) {
			if end, ok := want[r.Partition]; ok && r.Offset+1 >= end {
				delete(want, r.Partition)
			}
			if !r.Attrs.IsControl() {
				out = append(out, r)
			}
		})
	}
	return out, nil
}
