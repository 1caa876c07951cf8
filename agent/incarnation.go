package agent

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"strconv"
	"sync"
	"time"

	"github.com/edgemirror/edgemirror/buffer"
	"github.com/edgemirror/edgemirror/internal/wire"
)

// New incarnations of a source partition.
//
// The hub's watermark of a partition is a source offset; it does not say
// which incarnation of the edge topic it belongs to. When the edge topic is
// deleted and created again (or the edge cluster is rebuilt) and read by a
// new buffer, its offsets start again at 0, and every record at or below the
// old watermark would be dropped as a duplicate, silently.
//
// Before the agent starts a partition its buffer has never read, it asks
// the aggregator for the hub's watermark W of that partition and compares
// it with the edge partition's end offset E (last stable offset). Within one
// incarnation E only grows, and the hub can only hold offsets the edge had:
// E > W. So E <= W means the partition is not the one the hub mirrored: a
// new incarnation (or a log truncated by an unclean leader election). A
// buffer that was merely lost while the topic is unchanged sees E > W and
// is deduplicated as always; a new buffer epoch alone never counts.
//
// The decision is Config.OnNewIncarnation, and it is always logged, counted
// and visible at the aggregator (which logs the conflict when it answers):
//
//   - hold (default): the partition is not read. It is checked again every
//     --metadata-interval, so removing or renaming the hub topic (a fresh
//     destination for the new incarnation) starts it without a restart.
//   - skip: the partition is read from W+1; the offsets from where it would
//     have started to W are recorded as lost (reason source-incarnation) and
//     reported like every loss.
//
// Caveats: kafka-go v0.4.51 speaks Metadata up to v8, which has no topic
// ids, so the check uses offsets only. A new incarnation that already grew
// past the old watermark before its first read (E > W) is not detected.
// When no aggregator answers at partition start (link down), the partition
// is read unverified, logged once; the check is not repeated for it later.

// NewIncarnation is the decision about a new incarnation of a partition.
type NewIncarnation int

const (
	// IncarnationHold does not read the partition (default).
	IncarnationHold NewIncarnation = iota
	// IncarnationSkip reads it from past the hub's watermark, reporting
	// the skipped offsets lost.
	IncarnationSkip
)

// ParseNewIncarnation parses "hold" or "skip".
func ParseNewIncarnation(s string) (NewIncarnation, error) {
	switch s {
	case "hold":
		return IncarnationHold, nil
	case "skip":
		return IncarnationSkip, nil
	}
	return 0, fmt.Errorf("unknown decision %q (want hold or skip)", s)
}

func (n NewIncarnation) String() string {
	switch n {
	case IncarnationHold:
		return "hold"
	case IncarnationSkip:
		return "skip"
	}
	return fmt.Sprintf("NewIncarnation(%d)", int(n))
}

// maxCheckWait bounds the wait for the aggregator's watermark answer.
const maxCheckWait = 10 * time.Second

// errIncarnationHeld is returned for a partition held back as a new
// incarnation.
var errIncarnationHeld = errors.New("new incarnation of the edge partition is held back")

// originCheck asks the aggregator about partitions the buffer starts.
type originCheck struct {
	sh    *shipper
	store *buffer.Store

	mu          sync.Mutex
	unreachable time.Time // no check before this: the aggregator did not answer
	logged      map[buffer.PartitionKey]bool
}

func newOriginCheck(sh *shipper, store *buffer.Store) *originCheck {
	return &originCheck{sh: sh, store: store, logged: make(map[buffer.PartitionKey]bool)}
}

// check decides about a partition with no stored offset whose edge log
// spans [first, last). It returns the offset to start at (-1: where
// --start-offset says), or errIncarnationHeld.
func (o *originCheck) check(ctx context.Context, key buffer.PartitionKey, first, last int64) (int64, error) {
	sh := o.sh
	log := sh.log.With(slog.String("topic", key.Topic), slog.Int("partition", int(key.Partition)))
	o.mu.Lock()
	skip := time.Now().Before(o.unreachable)
	o.mu.Unlock()
	if skip {
		log.Warn("partition started without checking its incarnation: no aggregator answered", slog.Int64("log_end", last))
		return -1, nil
	}
	wm, status, err := o.ask(ctx, key, last)
	switch {
	case err != nil:
		o.mu.Lock()
		o.unreachable = time.Now().Add(sh.cfg.MetadataInterval)
		o.mu.Unlock()
		log.Warn("partition started without checking its incarnation: no aggregator answered", slog.Int64("log_end", last), slog.Any("error", err))
		return -1, nil
	case status == http.StatusServiceUnavailable:
		return -1, fmt.Errorf("check incarnation of %s/%d: aggregator cannot read the hub now (503)", key.Topic, key.Partition)
	case status != http.StatusOK:
		log.Warn("partition started without checking its incarnation: the aggregator does not answer "+wire.PathWatermark, slog.Int("status", status))
		return -1, nil
	}
	gauge := sh.m.incarnations.WithLabelValues(key.Topic, strconv.Itoa(int(key.Partition)))
	if wm < last {
		gauge.Set(0)
		return -1, nil
	}
	gauge.Set(1)
	if sh.cfg.OnNewIncarnation == IncarnationHold {
		o.mu.Lock()
		firstTime := !o.logged[key]
		o.logged[key] = true
		o.mu.Unlock()
		if firstTime {
			log.Error("NEW INCARNATION: the edge partition ends at or below what the hub already holds of it (topic recreated or edge cluster rebuilt); its records would be dropped as duplicates, so it is not read. Remove or rename the hub topic to mirror it afresh, or run with --on-new-incarnation=skip",
				slog.Int64("edge_log_start", first), slog.Int64("edge_log_end", last), slog.Int64("hub_watermark", wm))
		}
		return -1, fmt.Errorf("%s/%d ends at %d, the hub holds offsets up to %d: %w", key.Topic, key.Partition, last, wm, errIncarnationHeld)
	}
	start := first
	if sh.cfg.StartOffset == StartLatest {
		start = last
	}
	loss := buffer.Loss{Range: buffer.Range{Topic: key.Topic, Partition: key.Partition, First: start, Last: wm, Records: wm - start + 1},
		Reason: wire.LossReasonSourceIncarnation, At: time.Now()}
	if err := o.store.AdvanceOffsets(map[buffer.PartitionKey]int64{key: wm + 1}, []buffer.Loss{loss}); err != nil {
		return -1, fmt.Errorf("record offsets of a new incarnation as lost: %w", err)
	}
	sh.m.lost.WithLabelValues(wire.LossReasonSourceIncarnation).Add(float64(loss.Range.Records))
	log.Error("NEW INCARNATION: the edge partition ends at or below what the hub already holds of it (topic recreated or edge cluster rebuilt); per --on-new-incarnation=skip it is read from past the hub's offset and the offsets before are lost",
		slog.Int64("first_lost_offset", start), slog.Int64("last_lost_offset", wm), slog.Int64("edge_log_end", last), slog.Int64("hub_watermark", wm))
	return wm + 1, nil
}

// ask asks the aggregator in use for the hub's watermark of key.
func (o *originCheck) ask(ctx context.Context, key buffer.PartitionKey, logEnd int64) (int64, int, error) {
	sh := o.sh
	// The reader waits for this answer: bound it well below an upload's.
	ctx, cancel := context.WithTimeout(ctx, min(sh.cfg.RequestTimeout, maxCheckWait))
	defer cancel()
	ep, _ := sh.eps.current()
	u := ep.url.JoinPath(wire.PathWatermark)
	q := u.Query()
	q.Set("topic", key.Topic)
	q.Set("partition", strconv.Itoa(int(key.Partition)))
	q.Set("log_end", strconv.FormatInt(logEnd, 10))
	u.RawQuery = q.Encode()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, u.String(), nil)
	if err != nil {
		return 0, 0, err
	}
	sh.setIdentity(req)
	resp, err := sh.client.Do(req)
	if err != nil {
		return 0, 0, err
	}
	defer drain(resp)
	if resp.StatusCode != http.StatusOK {
		return 0, resp.StatusCode, nil
	}
	var wr wire.WatermarkResponse
	if err := json.NewDecoder(io.LimitReader(resp.Body, wire.MaxJSONBytes)).Decode(&wr); err != nil {
		return 0, 0, fmt.Errorf("decode watermark answer: %w", err)
	}
	return wr.Offset, resp.StatusCode, nil
}
