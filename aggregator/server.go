package aggregator

import (
	"cmp"
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

// edgeState sequences the chunks of one edge. Chunks wait in pending until
// their turn; one runner goroutine at a time takes every chunk that is
// ready, in sequence order, and applies them in one hub transaction (group
// commit).
type edgeState struct {
	mu      sync.Mutex
	name    string
	epoch   uint64
	next    uint64 // next expected seq; 0 = unknown
	retired map[uint64]bool
	// retiredOrder is retired in the order the epochs were replaced, so
	// that the oldest is forgotten first (see retire).
	retiredOrder []uint64
	// applied remembers the frame checksum of recently applied seqs of
	// the current epoch (see sequence.go).
	applied appliedRing
	pending map[uint64]*pendingChunk
	arrived chan struct{} // a chunk was added to pending (capacity 1, never blocks)
	running bool          // a runner is applying this edge's chunks
	// lingering: the runner waits (--group-linger) for more chunks before
	// it takes the ready ones.
	lingering bool
	writer    *edgeWriter // used by the runner only
}

// pendingChunk is a chunk waiting for its turn or being applied. Once
// taken, only the runner touches it until done is closed.
type pendingChunk struct {
	c     *wire.Chunk
	sum   uint32 // the frame's checksum: its content
	epoch uint64
	taken bool
	done  chan struct{}
	res   *wire.ChunkResponse
	err   *httpError
}

func (pc *pendingChunk) finish(res *wire.ChunkResponse, err *httpError) {
	pc.res, pc.err = res, err
	close(pc.done)
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
	cps   *checkpointer // group checkpoints; nil answers 404
	// topics applies topic config reports (topicconfig.go).
	topics *topicSyncer
	// sec authenticates edges (nil: identity from the header, tests only);
	// lim bounds resources (nil: unbounded, tests only).
	sec *security
	lim *limiter

	mu    sync.Mutex
	edges map[string]*edgeState

	conflicts conflictLog // incarnation conflicts logged (incarnation.go)

	draining atomic.Bool
	stopping chan struct{} // closed at shutdown: wakes waiting chunks
	// inflight counts chunk handlers running, so that shutdown closes the
	// decoder and the state only after the last one returned.
	inflight sync.WaitGroup
	// applyCtx is the context of hub writes: it outlives the requests
	// (a chunk taken into a transaction is finished even if its client
	// went away) and is cancelled when the shutdown timeout is up.
	applyCtx context.Context
	runners  sync.WaitGroup
}

func (s *server) routes() http.Handler {
	mux := http.NewServeMux()
	mux.Handle("POST "+wire.PathChunks, s.guard(http.HandlerFunc(s.handleChunk)))
	mux.Handle("POST "+wire.PathLosses, s.guard(http.HandlerFunc(s.handleLosses)))
	mux.Handle("GET "+wire.PathLosses, s.guard(http.HandlerFunc(s.handleListLosses)))
	mux.Handle("GET "+wire.PathResume, s.guard(http.HandlerFunc(s.handleResume)))
	mux.Handle("POST "+wire.PathCheckpoints, s.guard(http.HandlerFunc(s.handleCheckpoints)))
	mux.Handle("POST "+wire.PathTopicConfigs, s.guard(http.HandlerFunc(s.handleTopicConfigs)))
	mux.Handle("POST "+wire.PathHeartbeat, s.guard(http.HandlerFunc(s.handleHeartbeat)))
	// The fleet view is for operators (edgemirror status); it names edges
	// and their backlog, nothing an edge could use to write.
	mux.HandleFunc("GET "+wire.PathEdges, s.handleEdges)
	mux.Handle("GET "+wire.PathWatermark, s.guard(http.HandlerFunc(s.handleWatermark)))
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

// identity returns the edge a request comes from: the edge of its
// credential (guard authenticated it), with the Edgemirror-Edge header only
// as a consistency check. Without --edges-file the edge names itself in
// that header; the aggregator warns about this at start.
func (s *server) identity(r *http.Request) (string, *httpError) {
	if e := credentialOf(r); e != nil {
		return s.identityOf(r, e)
	}
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
	w, err := s.hub.newEdgeWriter(name)
	if err != nil {
		return nil, err
	}
	es := &edgeState{name: name, epoch: rec.Epoch, next: rec.NextSeq, retired: make(map[uint64]bool),
		pending: make(map[uint64]*pendingChunk), arrived: make(chan struct{}, 1), writer: w}
	for _, e := range rec.Retired {
		es.retire(e)
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
		writeJSON(w, code, wire.ErrorResponse{Error: he.msg, Permanent: he.permanent(), Code: he.code})
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
	// The frame header is checked and the chunk's decoded memory reserved
	// before the body is read (--max-decoded-bytes).
	frame, release, he := s.readChunk(r)
	if he != nil {
		if he.status == http.StatusBadRequest || he.status == http.StatusRequestEntityTooLarge {
			s.log.Warn("rejected chunk", slog.String("edge", edge), slog.String("error", he.msg))
		}
		return fail(he)
	}
	defer release()
	c, err := s.dec.Decode(frame)
	sum := wire.Checksum(frame) // the chunk's content, for the seq-reuse check
	frame = nil
	if err != nil {
		s.log.Warn("rejected undecodable chunk", slog.String("edge", edge), slog.Any("error", err))
		if errors.Is(err, wire.ErrTooLarge) {
			return fail(&httpError{status: http.StatusRequestEntityTooLarge, msg: "decode chunk: " + err.Error()})
		}
		return fail(errBadRequest("decode chunk: " + err.Error()))
	}
	// Topic rules, record limits and state bounds: nothing of a refused
	// chunk reaches the hub.
	extra, he := s.admitChunk(r, edge, c)
	if he != nil {
		return fail(he)
	}
	if extra > 0 {
		releaseExtra, he := s.lim.reserve(r.Context(), extra)
		if he != nil {
			return fail(he)
		}
		defer releaseExtra()
	}
	es, err := s.edge(edge)
	if err != nil {
		return fail(errUnavailable(err.Error(), 1))
	}
	res, herr := s.sequence(r.Context(), es, epoch, floor, c, sum)
	if herr != nil {
		return fail(herr)
	}
	return http.StatusOK, res
}

// sequence queues the chunk for its turn and waits for its outcome.
func (s *server) sequence(ctx context.Context, es *edgeState, epoch, floor uint64, c *wire.Chunk, sum uint32) (*wire.ChunkResponse, *httpError) {
	es.mu.Lock()
	if epoch != es.epoch {
		if es.retired[epoch] {
			es.mu.Unlock()
			s.m.staleEpoch.WithLabelValues(es.name).Inc()
			return nil, &httpError{status: http.StatusConflict, code: wire.CodeEpochReplaced,
				msg: fmt.Sprintf("buffer epoch %d of edge %s was replaced by epoch %d; is another agent using this edge id?", epoch, es.name, es.epoch)}
		}
		if es.epoch != 0 {
			s.log.Warn("edge started a new buffer epoch; chunks of the old epoch are refused from now on",
				slog.String("edge", es.name), slog.Uint64("old_epoch", es.epoch), slog.Uint64("new_epoch", epoch))
			es.retire(es.epoch)
			// Persist the takeover, so that the old epoch stays refused
			// after a restart of the aggregator.
			if err := s.state.setEdge(es.name, edgeRecord{Epoch: epoch, Retired: es.retiredList()}); err != nil {
				es.mu.Unlock()
				return nil, errUnavailable("save edge state: "+err.Error(), 1)
			}
		}
		for seq, pc := range es.pending {
			if !pc.taken {
				delete(es.pending, seq)
				pc.finish(nil, &httpError{status: http.StatusConflict,
					msg: fmt.Sprintf("buffer epoch %d of edge %s was replaced by epoch %d", pc.epoch, es.name, epoch)})
			}
		}
		es.epoch, es.next = epoch, 0
		es.applied.reset()
	}
	if he := es.checkReuse(c.Seq, sum); he != nil {
		es.mu.Unlock()
		s.log.Error("edge sent a chunk whose sequence number was applied before with other content; its buffer was rolled back (restored copy, snapshot, lost writes) and must renew its epoch",
			slog.String("edge", es.name), slog.Uint64("epoch", epoch), slog.Uint64("seq", c.Seq), slog.Uint64("next_seq", es.next))
		s.m.seqReused.WithLabelValues(es.name).Inc()
		return nil, he
	}
	// Every seq below the agent's floor was acknowledged or dropped.
	if floor > es.next {
		es.next = floor
	}
	if old := es.pending[c.Seq]; old != nil {
		if old.taken {
			// The same chunk is being applied right now (its first request
			// timed out at the agent): answer this copy with its outcome.
			es.mu.Unlock()
			select {
			case <-old.done:
				return old.res, old.err
			case <-ctx.Done():
				return nil, errUnavailable("request cancelled", 1)
			}
		}
		old.finish(nil, errUnavailable(fmt.Sprintf("chunk %d was sent again; answering the newer request", c.Seq), 1))
	}
	pc := &pendingChunk{c: c, sum: sum, epoch: epoch, done: make(chan struct{})}
	es.pending[c.Seq] = pc
	select {
	case es.arrived <- struct{}{}:
	default:
	}
	if !es.running {
		es.running = true
		s.runners.Add(1)
		go s.run(es)
	}
	es.mu.Unlock()

	timer := time.NewTimer(s.cfg.OrderWait)
	defer timer.Stop()
	for {
		select {
		case <-pc.done:
			return pc.res, pc.err
		case <-timer.C:
			es.mu.Lock()
			if !pc.taken && !inOrder(es, c.Seq) {
				s.dropPending(es, pc)
				next := es.next
				es.mu.Unlock()
				return nil, errUnavailable(fmt.Sprintf("chunk %d arrived ahead of chunk %d; send that one first", c.Seq, next), 1)
			}
			// Being applied, or ready and waiting for its group
			// (--group-linger, at most a second): wait for the outcome.
			es.mu.Unlock()
			timer.Reset(s.cfg.OrderWait)
		case <-s.stopping:
			es.mu.Lock()
			if !pc.taken {
				s.dropPending(es, pc)
				es.mu.Unlock()
				return nil, errUnavailable("aggregator is shutting down", 5)
			}
			es.mu.Unlock()
		case <-ctx.Done():
			es.mu.Lock()
			if !pc.taken {
				s.dropPending(es, pc)
			}
			es.mu.Unlock()
			// A chunk already taken is finished by the runner; its outcome
			// reaches nobody, and the agent sends it again.
			return nil, errUnavailable("request cancelled", 1)
		}
	}
}

// dropPending removes a chunk that was not taken. es.mu is held.
func (s *server) dropPending(es *edgeState, pc *pendingChunk) {
	for seq, p := range es.pending {
		if p == pc {
			delete(es.pending, seq)
		}
	}
}

// ready takes the chunks that may be applied now, in sequence order:
// re-sends of chunks applied before (seq below next) and the run of
// consecutive chunks from next on, at most MaxGroupChunks. es.mu is held.
func (s *server) ready(es *edgeState) []*pendingChunk {
	out := s.readySet(es)
	for _, pc := range out {
		pc.taken = true
	}
	return out
}

// inOrder reports whether the chunk seq is not ahead of its turn: applied
// before (a re-send), or behind only chunks that are pending. es.mu is held.
func inOrder(es *edgeState, seq uint64) bool {
	if es.next == 0 {
		return false
	}
	for q := es.next; q < seq; q++ {
		if es.pending[q] == nil {
			return false
		}
	}
	return true
}

// readySet is what ready would take, without taking it. es.mu is held.
func (s *server) readySet(es *edgeState) []*pendingChunk {
	var out []*pendingChunk
	for seq, pc := range es.pending {
		if es.next != 0 && seq < es.next && !pc.taken {
			out = append(out, pc)
		}
	}
	slices.SortFunc(out, func(a, b *pendingChunk) int { return cmp.Compare(a.c.Seq, b.c.Seq) })
	if es.next != 0 {
		for seq := es.next; ; seq++ {
			pc := es.pending[seq]
			if pc == nil || pc.taken {
				break
			}
			out = append(out, pc)
		}
	}
	if len(out) > s.cfg.MaxGroupChunks {
		out = out[:s.cfg.MaxGroupChunks]
	}
	return out
}

// linger waits, up to --group-linger, until a full group of the edge's
// chunks is ready, so that a busy edge writes fewer, larger transactions:
// each costs the hub a fixed amount of work (coordinator requests, markers)
// and waits for the previous one's markers. It returns at once when
// nothing is ready, and the runner calls it only right after a transaction,
// so an edge that was idle never waits.
func (s *server) linger(es *edgeState) {
	if s.cfg.GroupLinger <= 0 {
		return
	}
	start := time.Now()
	t := time.NewTimer(s.cfg.GroupLinger)
	defer t.Stop()
	defer func() {
		es.mu.Lock()
		es.lingering = false
		es.mu.Unlock()
	}()
	for waited := false; ; waited = true {
		es.mu.Lock()
		n := len(s.readySet(es))
		es.lingering = n > 0 && n < s.cfg.MaxGroupChunks
		es.mu.Unlock()
		if n == 0 || n >= s.cfg.MaxGroupChunks {
			if waited {
				s.m.groupLinger.Observe(time.Since(start).Seconds())
			}
			return
		}
		select {
		case <-es.arrived:
		case <-t.C:
			s.m.groupLinger.Observe(time.Since(start).Seconds())
			return
		case <-s.stopping:
			return
		}
	}
}

// run applies the edge's ready chunks, a group per hub transaction, until
// none is ready.
func (s *server) run(es *edgeState) {
	defer s.runners.Done()
	for after := false; ; after = true {
		if after {
			s.linger(es)
		}
		es.mu.Lock()
		group := s.ready(es)
		if len(group) == 0 {
			es.running = false
			es.mu.Unlock()
			return
		}
		es.mu.Unlock()

		chunks := make([]*wire.Chunk, len(group))
		for i, pc := range group {
			chunks[i] = pc.c
		}
		start := time.Now()
		results, err := es.writer.apply(s.applyCtx, chunks)
		took := time.Since(start)
		for range group {
			s.m.applyDuration.Observe(took.Seconds()) // each chunk waited for its whole transaction
		}
		s.m.txnChunks.Observe(float64(len(group)))

		var refused []wire.LossRange
		es.mu.Lock()
		for i, pc := range group {
			if es.pending[pc.c.Seq] == pc {
				delete(es.pending, pc.c.Seq)
			}
			if err != nil {
				pc.finish(nil, applyHTTPError(err, i))
				continue
			}
			if pc.epoch == es.epoch {
				if pc.c.Seq == es.next {
					es.next++
				}
				es.applied.add(pc.c.Seq, pc.sum)
			}
			refused = append(refused, results[i].refused...)
			pc.finish(&wire.ChunkResponse{Seq: pc.c.Seq, Records: len(pc.c.Records), Written: results[i].written, Duplicates: results[i].duplicates,
				Refused: results[i].refused}, nil)
			s.log.Debug("chunk applied", slog.String("edge", es.name), slog.Uint64("seq", pc.c.Seq),
				slog.Int("written", results[i].written), slog.Int("duplicates", results[i].duplicates),
				slog.Int("group", len(group)), slog.Duration("took", took))
		}
		if err == nil {
			if serr := s.state.setEdge(es.name, es.record()); serr != nil {
				// The hub has the records; only the resume hint is stale.
				s.log.Warn("save edge state", slog.String("edge", es.name), slog.Any("error", serr))
			}
		}
		es.mu.Unlock()
		if len(refused) > 0 {
			s.recordRefused(es.name, refused)
		}
	}
}

// recordRefused keeps the records the hub refused for good with the loss
// reports, so that the centre lists them like every other loss.
func (s *server) recordRefused(edge string, ranges []wire.LossRange) {
	// Into the hub's events topic like every reported loss, exactly once
	// across aggregators; the agent also counts them.
	ctx, cancel := context.WithTimeout(s.applyCtx, s.cfg.HubTimeout)
	defer cancel()
	written, err := s.fleet.writeLosses(ctx, edge, ranges)
	if err != nil {
		s.log.Error("record records refused by the hub as lost events; they stay in the log and local state only",
			slog.String("edge", edge), slog.Any("error", err))
	}
	if _, err := s.state.addLosses(edge, ranges, time.Now()); err != nil {
		s.log.Warn("store refused records in local state", slog.String("edge", edge), slog.Any("error", err))
	}
	for _, lr := range written {
		s.m.lost.WithLabelValues(edge, lr.Reason).Add(float64(lr.Records))
	}
}

// applyHTTPError maps an error of applying a group of chunks to the answer
// of the group's i-th chunk. It is the one place where hub outcomes become
// HTTP statuses.
func applyHTTPError(err error, i int) *httpError {
	var ae *applyError
	if !errors.As(err, &ae) {
		return errUnavailable(err.Error(), 1)
	}
	switch ae.kind {
	case applyBadChunk:
		if ae.chunk < 0 || ae.chunk == i {
			return errBadRequest(ae.msg)
		}
	case applyRefused:
		if ae.chunk < 0 || ae.chunk == i {
			return &httpError{status: http.StatusUnprocessableEntity, msg: ae.msg}
		}
		return errUnavailable("another chunk of the same hub transaction was refused; retry: "+ae.msg, 1)
	case applyFenced:
		return errUnavailable(ae.msg, 1)
	}
	return errUnavailable(ae.msg, 1)
}

// record is what the state file keeps of the edge. es.mu is held.
func (es *edgeState) record() edgeRecord {
	return edgeRecord{Epoch: es.epoch, NextSeq: es.next, Retired: es.retiredList()}
}

// retiredList returns the retired epochs, oldest first. es.mu is held.
func (es *edgeState) retiredList() []uint64 {
	return slices.Clone(es.retiredOrder)
}

func (s *server) handleResume(w http.ResponseWriter, r *http.Request) {
	edge, he := s.identity(r)
	if he != nil {
		writeJSON(w, he.status, wire.ErrorResponse{Error: he.msg, Permanent: he.permanent()})
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
	res := es.resumeAnswer(epoch)
	es.mu.Unlock()
	writeJSON(w, http.StatusOK, res)
}

func (s *server) handleLosses(w http.ResponseWriter, r *http.Request) {
	edge, he := s.identity(r)
	if he != nil {
		writeJSON(w, he.status, wire.ErrorResponse{Error: he.msg, Permanent: he.permanent()})
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
		if err := validLossReason(lr.Reason); err != nil {
			writeJSON(w, http.StatusBadRequest, wire.ErrorResponse{Error: err.Error(), Permanent: true})
			return
		}
		if e := credentialOf(r); e != nil && !e.allows(lr.Topic) {
			s.lim.refuse(refuseTopic)
			writeJSON(w, http.StatusForbidden, wire.ErrorResponse{
				Error: fmt.Sprintf("topic %q is not allowed for edge %s (--edges-file allows %s)", lr.Topic, edge, e.topicsSrc)})
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
		s.m.lost.WithLabelValues(edge, s.lim.reasonLabel(lr.Reason)).Add(float64(lr.Records))
	}
	writeJSON(w, http.StatusOK, map[string]int{"ranges": len(rep.Ranges)})
}

func writeJSON(w http.ResponseWriter, code int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(code)
	_ = json.NewEncoder(w).Encode(v)
}
