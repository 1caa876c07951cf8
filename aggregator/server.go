package aggregator

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"slices"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/edgemirror/edgemirror/internal/wire"
)

// Paths served besides the chunk API.
const (
	PathHealthz = "/healthz"
	PathReadyz  = "/readyz"
)

// maxRetiredEpochs bounds how many replaced epochs are remembered per edge.
const maxRetiredEpochs = 16

// edgeState sequences the chunks of one edge. mu is held while a chunk is
// applied, so an edge's chunks reach the hub one at a time, in order.
type edgeState struct {
	mu      sync.Mutex
	name    string
	epoch   uint64
	next    uint64 // next expected seq; 0 = unknown
	retired map[uint64]bool
	// advanced is closed and replaced whenever next moves, waking chunks
	// that arrived ahead of their turn.
	advanced chan struct{}
}

// server is the HTTP side of the aggregator.
type server struct {
	cfg   *Config
	log   *slog.Logger
	hub   *hub
	state *state
	fleet *fleet
	dec   *wire.Decoder
	m     *metrics

	mu    sync.Mutex
	edges map[string]*edgeState

	draining atomic.Bool
	stopping chan struct{} // closed at shutdown: wakes waiting chunks
	// inflight counts chunk handlers running, so that shutdown closes the
	// decoder and the state only after the last one returned.
	inflight sync.WaitGroup
}

func (s *server) routes() http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("POST "+wire.PathChunks, s.handleChunk)
	mux.HandleFunc("POST "+wire.PathLosses, s.handleLosses)
	mux.HandleFunc("GET "+wire.PathLosses, s.handleListLosses)
	mux.HandleFunc("GET "+wire.PathResume, s.handleResume)
	mux.HandleFunc("POST "+wire.PathHeartbeat, s.handleHeartbeat)
	mux.HandleFunc("GET "+wire.PathEdges, s.handleEdges)
	mux.HandleFunc("GET "+PathHealthz, func(w http.ResponseWriter, r *http.Request) {
		writeJSON(w, http.StatusOK, map[string]string{"status": "ok"})
	})
	mux.HandleFunc("GET "+PathReadyz, func(w http.ResponseWriter, r *http.Request) {
		if s.draining.Load() {
			writeJSON(w, http.StatusServiceUnavailable, map[string]string{"status": "draining"})
			return
		}
		writeJSON(w, http.StatusOK, map[string]string{"status": "ok"})
	})
	return mux
}

// identity returns the edge a request comes from. Without authentication
// the edge names itself in a header; the aggregator warns about this at
// start.
func (s *server) identity(r *http.Request) (string, *httpError) {
	edge := r.Header.Get(wire.HeaderEdge)
	if err := wire.ValidEdgeID(edge); err != nil {
		return "", errBadRequest(fmt.Sprintf("header %s: %v", wire.HeaderEdge, err))
	}
	return edge, nil
}

func headerUint(r *http.Request, name string) (uint64, *httpError) {
	v := r.Header.Get(name)
	n, err := strconv.ParseUint(v, 10, 64)
	if err != nil {
		return 0, errBadRequest(fmt.Sprintf("header %s must be a decimal unsigned integer, got %q", name, v))
	}
	return n, nil
}

// edge returns the sequencer of an edge, loading it from state on first use.
func (s *server) edge(name string) (*edgeState, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if es := s.edges[name]; es != nil {
		return es, nil
	}
	rec, err := s.state.edge(name)
	if err != nil {
		return nil, err
	}
	es := &edgeState{name: name, epoch: rec.Epoch, next: rec.NextSeq, retired: make(map[uint64]bool),
		advanced: make(chan struct{})}
	for _, e := range rec.Retired {
		es.retired[e] = true
	}
	s.edges[name] = es
	s.m.edges.Set(float64(len(s.edges)))
	return es, nil
}

func (s *server) handleChunk(w http.ResponseWriter, r *http.Request) {
	s.inflight.Add(1)
	defer s.inflight.Done()
	code, body := s.chunk(r)
	s.m.chunks.WithLabelValues(strconv.Itoa(code)).Inc()
	if he, ok := body.(*httpError); ok {
		if he.retryAfter > 0 {
			w.Header().Set("Retry-After", strconv.Itoa(he.retryAfter))
		}
		writeJSON(w, code, wire.ErrorResponse{Error: he.msg, Permanent: he.permanent()})
		return
	}
	writeJSON(w, code, body)
}

func (s *server) chunk(r *http.Request) (int, any) {
	fail := func(e *httpError) (int, any) { return e.status, e }
	if s.draining.Load() {
		return fail(errUnavailable("aggregator is shutting down", 5))
	}
	edge, he := s.identity(r)
	if he != nil {
		return fail(he)
	}
	epoch, he := headerUint(r, wire.HeaderEpoch)
	if he != nil {
		return fail(he)
	}
	floor, he := headerUint(r, wire.HeaderFloor)
	if he != nil {
		return fail(he)
	}
	if ct := r.Header.Get("Content-Type"); ct != wire.ContentTypeChunk {
		return fail(errBadRequest(fmt.Sprintf("Content-Type must be %s, got %q", wire.ContentTypeChunk, ct)))
	}
	if r.ContentLength > s.cfg.MaxChunkBytes {
		return fail(&httpError{status: http.StatusRequestEntityTooLarge,
			msg: fmt.Sprintf("chunk of %d bytes is larger than --max-chunk-bytes %d", r.ContentLength, s.cfg.MaxChunkBytes)})
	}
	frame, err := io.ReadAll(io.LimitReader(r.Body, s.cfg.MaxChunkBytes+1))
	if err != nil {
		return fail(errUnavailable("read chunk: "+err.Error(), 1))
	}
	s.m.receivedBytes.Add(float64(len(frame)))
	if int64(len(frame)) > s.cfg.MaxChunkBytes {
		return fail(&httpError{status: http.StatusRequestEntityTooLarge,
			msg: fmt.Sprintf("chunk is larger than --max-chunk-bytes %d", s.cfg.MaxChunkBytes)})
	}
	c, err := s.dec.Decode(frame)
	if err != nil {
		s.log.Warn("rejected undecodable chunk", slog.String("edge", edge), slog.Any("error", err))
		if errors.Is(err, wire.ErrTooLarge) {
			return fail(&httpError{status: http.StatusRequestEntityTooLarge, msg: "decode chunk: " + err.Error()})
		}
		return fail(errBadRequest("decode chunk: " + err.Error()))
	}
	es, err := s.edge(edge)
	if err != nil {
		return fail(errUnavailable(err.Error(), 1))
	}
	res, herr := s.sequence(r.Context(), es, epoch, floor, c)
	if herr != nil {
		return fail(herr)
	}
	return http.StatusOK, res
}

// sequence waits for the chunk's turn, applies it and advances the edge.
func (s *server) sequence(ctx context.Context, es *edgeState, epoch, floor uint64, c *wire.Chunk) (*wire.ChunkResponse, *httpError) {
	timer := time.NewTimer(s.cfg.OrderWait)
	defer timer.Stop()
	for {
		es.mu.Lock()
		if epoch != es.epoch {
			if es.retired[epoch] {
				es.mu.Unlock()
				return nil, &httpError{status: http.StatusConflict,
					msg: fmt.Sprintf("buffer epoch %d of edge %s was replaced by epoch %d; is another agent using this edge id?", epoch, es.name, es.epoch)}
			}
			if es.epoch != 0 {
				s.log.Warn("edge started a new buffer epoch; chunks of the old epoch are refused from now on",
					slog.String("edge", es.name), slog.Uint64("old_epoch", es.epoch), slog.Uint64("new_epoch", epoch))
				if len(es.retired) >= maxRetiredEpochs {
					clear(es.retired)
				}
				es.retired[es.epoch] = true
				// Persist the takeover, so that the old epoch stays refused
				// after a restart of the aggregator.
				if err := s.state.setEdge(es.name, edgeRecord{Epoch: epoch, Retired: es.retiredList()}); err != nil {
					es.mu.Unlock()
					return nil, errUnavailable("save edge state: "+err.Error(), 1)
				}
			}
			es.epoch, es.next = epoch, 0
			es.wake()
		}
		// Every seq below the agent's floor was acknowledged or dropped.
		if floor > es.next {
			es.next = floor
			es.wake()
		}
		if c.Seq <= es.next {
			res, err := s.applyLocked(ctx, es, c)
			es.mu.Unlock()
			return res, err
		}
		wait := es.advanced
		es.mu.Unlock()
		select {
		case <-wait:
		case <-timer.C:
			return nil, errUnavailable(fmt.Sprintf("chunk %d arrived ahead of chunk %d; send that one first", c.Seq, es.nextSeq()), 1)
		case <-s.stopping:
			return nil, errUnavailable("aggregator is shutting down", 5)
		case <-ctx.Done():
			return nil, errUnavailable("request cancelled", 1)
		}
	}
}

// record is what the state file keeps of the edge. es.mu is held.
func (es *edgeState) record() edgeRecord {
	return edgeRecord{Epoch: es.epoch, NextSeq: es.next, Retired: es.retiredList()}
}

func (es *edgeState) retiredList() []uint64 {
	out := make([]uint64, 0, len(es.retired))
	for e := range es.retired {
		out = append(out, e)
	}
	slices.Sort(out)
	return out
}

// wake tells chunks waiting for their turn that next moved. es.mu is held.
func (es *edgeState) wake() {
	close(es.advanced)
	es.advanced = make(chan struct{})
}

func (es *edgeState) nextSeq() uint64 {
	es.mu.Lock()
	defer es.mu.Unlock()
	return es.next
}

// applyLocked writes a chunk whose turn has come (or which is a re-send of
// an applied one) to the hub. es.mu is held.
func (s *server) applyLocked(ctx context.Context, es *edgeState, c *wire.Chunk) (*wire.ChunkResponse, *httpError) {
	start := time.Now()
	res, err := s.hub.apply(ctx, es.name, c)
	s.m.applyDuration.Observe(time.Since(start).Seconds())
	if err != nil {
		var he *httpError
		if !errors.As(err, &he) {
			he = errUnavailable(err.Error(), 1)
		}
		return nil, he
	}
	if c.Seq == es.next {
		es.next++
		if err := s.state.setEdge(es.name, es.record()); err != nil {
			// The hub has the records; only the resume hint is stale.
			s.log.Warn("save edge state", slog.String("edge", es.name), slog.Any("error", err))
		}
		es.wake()
	}
	s.log.Debug("chunk applied", slog.String("edge", es.name), slog.Uint64("seq", c.Seq),
		slog.Int("written", res.written), slog.Int("duplicates", res.duplicates))
	return &wire.ChunkResponse{Seq: c.Seq, Written: res.written, Duplicates: res.duplicates}, nil
}

func (s *server) handleResume(w http.ResponseWriter, r *http.Request) {
	edge, he := s.identity(r)
	if he != nil {
		writeJSON(w, he.status, wire.ErrorResponse{Error: he.msg, Permanent: true})
		return
	}
	epoch, he := headerUint(r, wire.HeaderEpoch)
	if he != nil {
		writeJSON(w, he.status, wire.ErrorResponse{Error: he.msg, Permanent: true})
		return
	}
	es, err := s.edge(edge)
	if err != nil {
		writeJSON(w, http.StatusServiceUnavailable, wire.ErrorResponse{Error: err.Error()})
		return
	}
	es.mu.Lock()
	res := wire.ResumeResponse{Epoch: es.epoch}
	if es.epoch == epoch {
		res.NextSeq = es.next
	}
	es.mu.Unlock()
	writeJSON(w, http.StatusOK, res)
}

func (s *server) handleLosses(w http.ResponseWriter, r *http.Request) {
	edge, he := s.identity(r)
	if he != nil {
		writeJSON(w, he.status, wire.ErrorResponse{Error: he.msg, Permanent: true})
		return
	}
	var rep wire.LossReport
	body, err := io.ReadAll(io.LimitReader(r.Body, wire.MaxJSONBytes+1))
	if err != nil {
		writeJSON(w, http.StatusServiceUnavailable, wire.ErrorResponse{Error: "read loss report: " + err.Error()})
		return
	}
	if len(body) > wire.MaxJSONBytes {
		writeJSON(w, http.StatusRequestEntityTooLarge, wire.ErrorResponse{
			Error: fmt.Sprintf("loss report larger than %d bytes; send fewer ranges at once", wire.MaxJSONBytes), Permanent: true})
		return
	}
	if err := json.Unmarshal(body, &rep); err != nil {
		writeJSON(w, http.StatusBadRequest, wire.ErrorResponse{Error: "decode loss report: " + err.Error(), Permanent: true})
		return
	}
	for _, lr := range rep.Ranges {
		if lr.Topic == "" || lr.Partition < 0 || lr.FirstOffset < 0 || lr.LastOffset < lr.FirstOffset || lr.Records < 0 {
			writeJSON(w, http.StatusBadRequest, wire.ErrorResponse{Error: fmt.Sprintf("invalid loss range %+v", lr), Permanent: true})
			return
		}
	}
	// The hub's events topic is the durable, shared record of losses: the
	// report is answered only after it holds every range (written exactly
	// once, whichever aggregator got the report first).
	written, err := s.fleet.writeLosses(r.Context(), edge, rep.Ranges)
	if err != nil {
		writeJSON(w, http.StatusServiceUnavailable, wire.ErrorResponse{Error: "store loss events in hub: " + err.Error()})
		return
	}
	if _, err := s.state.addLosses(edge, rep.Ranges, time.Now()); err != nil {
		s.log.Warn("store loss report in local state; the hub has it", slog.String("edge", edge), slog.Any("error", err))
	}
	// Only ranges not written before: a report is re-sent when its answer
	// was lost.
	for _, lr := range written {
		s.log.Warn("edge reported lost records", slog.String("edge", edge), slog.String("reason", lr.Reason),
			slog.String("topic", lr.Topic), slog.Int("partition", int(lr.Partition)),
			slog.Int64("first_offset", lr.FirstOffset), slog.Int64("last_offset", lr.LastOffset),
			slog.Int64("records", lr.Records))
		s.m.lost.WithLabelValues(edge, lr.Reason).Add(float64(lr.Records))
	}
	writeJSON(w, http.StatusOK, map[string]int{"ranges": len(rep.Ranges)})
}

func writeJSON(w http.ResponseWriter, code int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(code)
	_ = json.NewEncoder(w).Encode(v)
}
