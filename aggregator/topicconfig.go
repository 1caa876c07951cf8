package aggregator

import (
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"net/http"

	"github.com/edgemirror/edgemirror/internal/wire"
)

// handleTopicConfigs applies an agent's topic config report (POST
// wire.PathTopicConfigs) and answers what the hub took. A setting the hub
// refuses is part of a 200 answer, not an error: the agent reports the
// topic again at its next sync. Records are never held back by it.
func (s *server) handleTopicConfigs(w http.ResponseWriter, r *http.Request) {
	s.inflight.Add(1)
	defer s.inflight.Done()
	fail := func(status int, permanent bool, msg string) {
		if status == http.StatusServiceUnavailable {
			w.Header().Set("Retry-After", "5")
		}
		writeJSON(w, status, wire.ErrorResponse{Error: msg, Permanent: permanent})
	}
	if s.draining.Load() {
		fail(http.StatusServiceUnavailable, false, "aggregator is shutting down")
		return
	}
	edge, he := s.identity(r)
	if he != nil {
		fail(he.status, he.permanent(), he.msg)
		return
	}
	body, err := io.ReadAll(io.LimitReader(r.Body, wire.MaxJSONBytes+1))
	if err != nil {
		fail(http.StatusServiceUnavailable, false, "read topic config report: "+err.Error())
		return
	}
	if len(body) > wire.MaxJSONBytes {
		fail(http.StatusRequestEntityTooLarge, true, fmt.Sprintf("topic config report larger than %d bytes; send fewer topics at once", wire.MaxJSONBytes))
		return
	}
	var rep wire.TopicConfigReport
	if err := json.Unmarshal(body, &rep); err != nil {
		fail(http.StatusBadRequest, true, "decode topic config report: "+err.Error())
		return
	}
	if len(rep.Topics) > wire.MaxTopicConfigTopics {
		fail(http.StatusRequestEntityTooLarge, true, fmt.Sprintf("topic config report has %d topics, at most %d allowed", len(rep.Topics), wire.MaxTopicConfigTopics))
		return
	}
	// Whatever limits an edge to some source topics must apply here as it
	// does to chunks: a report creates hub topics.
	seen := make(map[string]bool, len(rep.Topics))
	for i := range rep.Topics {
		tc := &rep.Topics[i]
		if err := tc.Validate(); err != nil {
			fail(http.StatusBadRequest, true, "topic config report: "+err.Error())
			return
		}
		if seen[tc.Topic] {
			fail(http.StatusBadRequest, true, "topic config report names topic "+tc.Topic+" twice")
			return
		}
		if e := credentialOf(r); e != nil && !e.allows(tc.Topic) {
			s.log.Warn("refused topic config report for a topic outside the edge's rule", slog.String("edge", edge),
				slog.String("topic", tc.Topic), slog.String("allowed", e.topicsSrc), remote(r))
			fail(http.StatusForbidden, true, fmt.Sprintf("topic %q is not allowed for edge %s (--edges-file allows %s)", tc.Topic, edge, e.topicsSrc))
			return
		}
		seen[tc.Topic] = true
	}
	out := wire.TopicConfigResponse{Topics: make([]wire.TopicConfigResult, 0, len(rep.Topics))}
	for _, tc := range rep.Topics {
		res := s.topics.sync(r.Context(), edge, tc)
		if res.Error != "" {
			s.log.Warn("hub topic settings not synced; the agent reports them again", slog.String("edge", edge),
				slog.String("topic", tc.Topic), slog.String("error", res.Error))
		}
		out.Topics = append(out.Topics, res)
	}
	writeJSON(w, http.StatusOK, out)
}
