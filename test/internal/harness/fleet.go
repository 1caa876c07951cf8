package harness

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"os/exec"

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

// LossEvents reads every loss event of edge from the hub's events topic,
// in the order they were written, duplicates included.
func LossEvents(ctx context.Context, hubBrokers []string, topic, edge string) ([]wire.LossEvent, error) {
	recs, err := ReadAll(ctx, hubBrokers, topic)
	if err != nil {
		return nil, err
	}
	var out []wire.LossEvent
	for _, parts := range recs[topic] {
		for _, r := range parts {
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
