package aggregator

import (
	"context"
	"crypto/sha256"
	"encoding/binary"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"log/slog"
	"net/http"
	"slices"
	"strings"
	"time"

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
		// Only possible if two aggregators raced on the same report (see
		// writeLosses); the first record is the event.
		return
	}
	f.ids[ev.ID] = true
	f.events[ev.Edge] = append(f.events[ev.Edge], ev)
}

// writeLosses writes the loss ranges of an edge that the events topic does
// not hold yet, one event per range, and returns the ranges it wrote.
//
// Exactly once: an event's ID is derived from the range itself. Before
// writing, the aggregator reads the events topic to its end, so a range
// already written by any aggregator (the agent re-sent a report whose
// answer it did not get, perhaps to another aggregator) is found and not
// written again; the answer to the agent comes only after the hub
// acknowledged the events (acks=all). Writes within this aggregator are
// serialised. Across aggregators this relies on an agent sending one loss
// report at a time and re-sending it only after the previous attempt
// ended: two aggregators can write the same range only if the first
// attempt is still being written when the re-sent one is checked (a
// produce outcome the first aggregator did not learn, landing later than
// the second aggregator's read). Readers keep the first record of an ID,
// so even then `losses` and the fleet view count each range once.
func (f *fleet) writeLosses(ctx context.Context, edge string, ranges []wire.LossRange) ([]wire.LossRange, error) {
	f.writeMu.Lock()
	defer f.writeMu.Unlock()
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
		return nil, nil
	}
	// One produce request per batch of events; a report holds at most a
	// few thousand ranges of ~300 bytes.
	const perRequest = 1000
	for i := 0; i < len(values); i += perRequest {
		j := min(i+perRequest, len(values))
		if _, err := f.produce(ctx, f.cfg.EventsTopic, edge, values[i:j]...); err != nil {
			return nil, err
		}
		f.mu.Lock()
		for _, ev := range events[i:j] {
			f.addEventLocked(ev)
		}
		f.mu.Unlock()
	}
	return added, nil
}

// lossEvents returns the loss events of one edge, or of all (""), in the
// order they were written.
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
