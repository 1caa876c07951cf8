package aggregator

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"strconv"
	"sync"

	"github.com/segmentio/kafka-go"

	"github.com/edgemirror/edgemirror/internal/wire"
)

// handleWatermark tells an agent the highest source offset the hub holds of
// one of its partitions, derived from the committed tail of the destination
// partition. An agent asks before it starts a partition its buffer has never
// read: if the edge partition ends at or below that offset, it cannot be the
// partition the hub mirrored (its end offset only ever grows), so it is a new
// incarnation (topic recreated, edge cluster rebuilt) whose offsets the hub
// would drop as duplicates. It is not on the chunk path: one hub read per
// partition start.
func (s *server) handleWatermark(w http.ResponseWriter, r *http.Request) {
	fail := func(status int, msg string) {
		writeJSON(w, status, wire.ErrorResponse{Error: msg, Permanent: status/100 == 4})
	}
	edge, he := s.identity(r)
	if he != nil {
		fail(he.status, he.msg)
		return
	}
	q := r.URL.Query()
	topic := q.Get("topic")
	if err := wire.ValidTopicName(topic); err != nil {
		fail(http.StatusBadRequest, "query parameter topic: "+err.Error())
		return
	}
	partition, err := strconv.ParseInt(q.Get("partition"), 10, 32)
	if err != nil || partition < 0 {
		fail(http.StatusBadRequest, fmt.Sprintf("query parameter partition must be a non-negative 32-bit integer, got %q", q.Get("partition")))
		return
	}
	logEnd := int64(-1)
	if v := q.Get("log_end"); v != "" {
		if logEnd, err = strconv.ParseInt(v, 10, 64); err != nil || logEnd < 0 {
			fail(http.StatusBadRequest, fmt.Sprintf("query parameter log_end must be a non-negative integer, got %q", v))
			return
		}
	}
	dest, err := destTopic(s.cfg.TopicTemplate, edge, topic)
	if err != nil {
		fail(http.StatusBadRequest, err.Error())
		return
	}
	ctx, cancel := context.WithTimeout(r.Context(), s.cfg.HubTimeout)
	defer cancel()
	k := sourceKey{edge: edge, topic: topic, partition: int32(partition)}
	off, err := s.hub.derive(ctx, k, dest)
	if errors.Is(err, kafka.UnknownTopicOrPartition) {
		off, err = -1, nil // nothing mirrored there yet
	}
	if err != nil {
		fail(http.StatusServiceUnavailable, fmt.Sprintf("derive watermark of %s/%d from hub %s: %v", topic, partition, dest, err))
		return
	}
	if logEnd >= 0 && off >= logEnd {
		s.m.incarnations.WithLabelValues(edge).Inc()
		if !s.conflicts.first(k, logEnd, off) {
			// The agent asks again every metadata interval while it holds
			// the partition: log only what changed.
			writeJSON(w, http.StatusOK, wire.WatermarkResponse{Topic: topic, Partition: int32(partition), Offset: off})
			return
		}
		s.log.Error("edge partition ends at or below what the hub already holds of it: a new incarnation (topic recreated or edge cluster rebuilt); the agent decides per --on-new-incarnation",
			slog.String("edge", edge), slog.String("topic", topic), slog.Int("partition", int(partition)),
			slog.Int64("edge_log_end", logEnd), slog.Int64("hub_watermark", off), slog.String("hub_topic", dest))
	}
	writeJSON(w, http.StatusOK, wire.WatermarkResponse{Topic: topic, Partition: int32(partition), Offset: off})
}

// maxConflictsLogged bounds the conflicts remembered for log de-duplication.
const maxConflictsLogged = 10000

// conflictLog remembers the incarnation conflicts already logged.
type conflictLog struct {
	mu   sync.Mutex
	seen map[sourceKey][2]int64 // log end and watermark last logged
}

// first reports whether this conflict was not logged before as it is.
func (c *conflictLog) first(k sourceKey, logEnd, wm int64) bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.seen == nil || len(c.seen) >= maxConflictsLogged {
		c.seen = make(map[sourceKey][2]int64)
	}
	v := [2]int64{logEnd, wm}
	if old, ok := c.seen[k]; ok && old == v {
		return false
	}
	c.seen[k] = v
	return true
}
