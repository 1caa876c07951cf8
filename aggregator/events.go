package aggregator

import (
	"context"
	"crypto/sha256"
	"encoding/binary"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"slices"
	"strings"
	"time"

	"github.com/segmentio/kafka-go"

	"github.com/edgemirror/edgemirror/internal/wire"
)

// lossEventType is the Type of a loss event.
const lossEventType = "loss"

// lossID is the identity of a loss range: the same range reported twice,
// to this aggregator or another, has the same id.
func lossID(edge string, r wire.LossRange) string {
	h := sha256.New()
	for _, s := range []string{edge, r.Topic, r.Reason} {
		h.Write(binary.BigEndian.AppendUint32(nil, uint32(len(s))))
		h.Write([]byte(s))
	}
	var b [20]byte
	binary.BigEndian.PutUint32(b[0:], uint32(r.Partition))
	binary.BigEndian.PutUint64(b[4:], uint64(r.FirstOffset))
	binary.BigEndian.PutUint64(b[12:], uint64(r.LastOffset))
	h.Write(b[:])
	return hex.EncodeToString(h.Sum(nil)[:16])
}

// applyEvent takes a record read from the events topic. Records of other
// types (written by a newer version) are skipped.
func (f *fleet) applyEvent(offset int64, _, value []byte) {
	var ev wire.LossEvent
	if err := json.Unmarshal(value, &ev); err != nil || ev.ID == "" || wire.ValidEdgeID(ev.Edge) != nil {
		f.log.Warn("ignoring an unreadable record in the events topic", slog.String("topic", f.cfg.EventsTopic),
			slog.Int64("offset", offset), slog.Any("error", err))
		return
	}
	if ev.Type != lossEventType {
		return
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	f.addEventLocked(ev)
}

func (f *fleet) addEventLocked(ev wire.LossEvent) {
	if f.ids[ev.ID] {
		// Our own write, read back; or, from versions that wrote events
		// without a transaction, a re-sent report: the first record is
		// the event.
		return
	}
	f.ids[ev.ID] = true
	f.events[ev.Edge] = append(f.events[ev.Edge], ev)
}

// writeLosses writes the loss ranges of an edge that the events topic does
// not hold yet, one event per range, and returns the ranges it wrote.
//
// Exactly once, whichever aggregator gets the report: an event's ID is
// derived from the range itself, and events are written in a Kafka
// transaction under one transactional id per edge. Taking it
// (InitProducerId) fences every other aggregator writing events of the
// edge: its open transaction is aborted and it can neither write nor
// commit any more. Only then are the events read (read_committed, to the
// last stable offset) and the ranges already there left out; the rest is
// written and committed, and the agent is answered after the commit. So a
// report re-sent to another aggregator while the first one is still
// writing it (its answer was lost) either finds the first one's committed
// events, or aborts them and writes its own: never both.
func (f *fleet) writeLosses(ctx context.Context, edge string, ranges []wire.LossRange) ([]wire.LossRange, error) {
	f.writeMu.Lock()
	defer f.writeMu.Unlock()
	txn, err := beginEvents(ctx, f.client, edge)
	if err != nil {
		return nil, err
	}
	if err := f.refresh(ctx); err != nil {
		return nil, fmt.Errorf("read events before writing: %w", err)
	}
	now := time.Now().UTC()
	var (
		added  []wire.LossRange
		events []wire.LossEvent
		values [][]byte
		seen   = make(map[string]bool)
	)
	f.mu.Lock()
	for _, r := range ranges {
		id := lossID(edge, r)
		if f.ids[id] || seen[id] {
			continue
		}
		seen[id] = true
		ev := wire.LossEvent{ID: id, Type: lossEventType, Edge: edge, Topic: r.Topic, Partition: r.Partition,
			FirstOffset: r.FirstOffset, LastOffset: r.LastOffset, Records: r.Records, Reason: r.Reason,
			Time: now, Aggregator: f.id}
		v, err := json.Marshal(ev)
		if err != nil {
			f.mu.Unlock()
			return nil, fmt.Errorf("encode loss event: %w", err)
		}
		events, values, added = append(events, ev), append(values, v), append(added, r)
	}
	f.mu.Unlock()
	if len(values) == 0 {
		return nil, nil // no transaction was opened
	}
	n, err := f.partitions(ctx, f.cfg.EventsTopic)
	if err == nil && n == 0 {
		n, err = f.createTopic(ctx, f.cfg.EventsTopic)
	}
	if err != nil {
		return nil, err
	}
	p := kafka.Murmur2Balancer{}.Balance(kafka.Message{Key: []byte(edge)}, seq(n)...)
	start := time.Now()
	err = func() error {
		// One batch per few hundred kB; a report holds at most a few
		// thousand ranges of ~300 bytes.
		const perBatch = 1000
		for i := 0; i < len(values); i += perBatch {
			if err := txn.produce(ctx, f.cfg.EventsTopic, p, []byte(edge), values[i:min(i+perBatch, len(values))]); err != nil {
				return err
			}
		}
		if f.beforeCommit != nil {
			f.beforeCommit()
		}
		return txn.end(ctx, true)
	}()
	f.m.fleetWriteDuration.Observe(time.Since(start).Seconds())
	if err != nil {
		f.m.fleetWriteErrors.Inc()
		if errors.Is(err, kafka.ProducerFenced) || errors.Is(err, kafka.InvalidProducerEpoch) {
			return nil, fmt.Errorf("another aggregator took over the loss events of %s meanwhile: %w", edge, err)
		}
		// Best effort: an open transaction would hold back every reader
		// of the partition until it times out.
		actx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 5*time.Second)
		_ = txn.end(actx, false)
		cancel()
		return nil, err
	}
	f.mu.Lock()
	for _, ev := range events {
		f.addEventLocked(ev)
	}
	f.mu.Unlock()
	return added, nil
}

// lossEvents returns the loss events of one edge, or of all (""), in the
// order they were written.
// lossRanges returns the loss ranges of an edge known from the events topic.
func (f *fleet) lossRanges(edge string) []wire.LossRange {
	evs := f.lossEvents(edge)
	out := make([]wire.LossRange, 0, len(evs))
	for _, e := range evs {
		out = append(out, wire.LossRange{Topic: e.Topic, Partition: e.Partition, FirstOffset: e.FirstOffset,
			LastOffset: e.LastOffset, Records: e.Records, Reason: e.Reason})
	}
	return out
}

func (f *fleet) lossEvents(edge string) []wire.LossEvent {
	f.mu.Lock()
	defer f.mu.Unlock()
	out := []wire.LossEvent{}
	if edge != "" {
		return append(out, f.events[edge]...)
	}
	for _, evs := range f.events {
		out = append(out, evs...)
	}
	return out
}

// handleListLosses lists the loss events in the hub, of one edge (?edge=ID)
// or of all, whichever aggregator received them.
func (s *server) handleListLosses(w http.ResponseWriter, r *http.Request) {
	edge := r.URL.Query().Get("edge")
	if edge != "" {
		if err := wire.ValidEdgeID(edge); err != nil {
			writeJSON(w, http.StatusBadRequest, wire.ErrorResponse{Error: "edge: " + err.Error(), Permanent: true})
			return
		}
	}
	// An authenticated edge sees only its own losses.
	if e := credentialOf(r); e != nil {
		if _, he := s.identityOf(r, e); he != nil {
			writeJSON(w, he.status, wire.ErrorResponse{Error: he.msg})
			return
		}
		if edge != "" && edge != e.id {
			writeJSON(w, http.StatusForbidden, wire.ErrorResponse{Error: fmt.Sprintf("credential of edge %s cannot list the losses of edge %q", e.id, edge)})
			return
		}
		edge = e.id
	}
	if err := s.fleet.fresh(r.Context()); err != nil {
		w.Header().Set(HeaderStale, headerSafe(err.Error()))
	}
	evs := s.fleet.lossEvents(edge)
	sortEvents(evs)
	writeJSON(w, http.StatusOK, evs)
}

func sortEvents(evs []wire.LossEvent) {
	less := func(a, b wire.LossEvent) int {
		if c := strings.Compare(a.Edge, b.Edge); c != 0 {
			return c
		}
		if c := strings.Compare(a.Topic, b.Topic); c != 0 {
			return c
		}
		if a.Partition != b.Partition {
			return int(a.Partition - b.Partition)
		}
		switch {
		case a.FirstOffset < b.FirstOffset:
			return -1
		case a.FirstOffset > b.FirstOffset:
			return 1
		}
		return 0
	}
	slices.SortFunc(evs, less)
}

// headerSafe makes an error message usable as a header value.
func headerSafe(s string) string {
	s = strings.Map(func(r rune) rune {
		if r < 0x20 || r == 0x7f {
			return ' '
		}
		return r
	}, s)
	if len(s) > 512 {
		s = s[:512]
	}
	return s
}
