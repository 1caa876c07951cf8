package agent

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"strconv"
	"time"

	"github.com/cenkalti/backoff/v4"
	"golang.org/x/sync/errgroup"
	"golang.org/x/time/rate"

	"github.com/edgemirror/edgemirror/buffer"
	"github.com/edgemirror/edgemirror/internal/wire"
)

// outcome is what the shipper does after one upload attempt. The decision
// is taken where the network answers (see classify).
type outcome int

const (
	outcomeAcked    outcome = iota // 200 acknowledging this chunk: the hub has every record; delete it
	outcomeRejected                // 400/413/422 with a permanent aggregator error: quarantine the chunk
	outcomeRetry                   // 5xx, 429, other answers: retry with backoff (or Retry-After)
	outcomeSlow                    // 401/403/409: a configuration problem; retry at the slowest pace
	outcomeNetwork                 // no answer: the link is down; retry when it is back
	outcomeUnproven                // 2xx or 4xx not proven to come from the aggregator: retry, and warn
	outcomeReused                  // 409 seq-reused: the buffer was rolled back; renew its epoch and resend
	outcomeStranded                // 409 epoch-replaced: another buffer took over the edge id
)

// maxErrorBody bounds how much of an error answer is read.
const maxErrorBody = 64 << 10

// shipper uploads chunks from the buffer to the aggregator.
type shipper struct {
	cfg    *Config
	log    *slog.Logger
	store  *buffer.Store
	client *http.Client
	eps    *endpoints
	m      *metrics
	h      *health // nil in tests that build a shipper by hand

	link          *link
	probeInterval time.Duration

	// openNext is the buffer's NextSeq when it was opened, before this
	// run appended anything (see resume.go).
	openNext uint64
	epochs   epochGuard // renewals and stranded reports (see epoch.go)
}

func newHTTPClient(ctx context.Context, eps *endpoints, lim *rate.Limiter, m *metrics) *http.Client {
	dial := dialer(ctx, lim, m)
	tr := &http.Transport{
		// Dial the resolved address of the endpoint in use; the request
		// keeps the URL's host name (Host header, TLS server name).
		DialContext: func(dctx context.Context, network, addr string) (net.Conn, error) {
			return dial(dctx, network, eps.dialAddr(addr))
		},
		ForceAttemptHTTP2:     true,
		TLSHandshakeTimeout:   30 * time.Second,
		ResponseHeaderTimeout: 0, // bounded per request by its context
		IdleConnTimeout:       90 * time.Second,
		MaxIdleConnsPerHost:   4,
		HTTP2: &http.HTTP2Config{
			// Detect a dead link (no RST ever arrives over a cut WAN) quickly.
			SendPingTimeout: 15 * time.Second,
			PingTimeout:     10 * time.Second,
		},
	}
	var p http.Protocols
	if eps.urls[0].Scheme == "http" {
		// Prior-knowledge HTTP/2 over plain TCP (h2c): one connection
		// multiplexes every chunk in flight.
		p.SetUnencryptedHTTP2(true)
	} else {
		p.SetHTTP2(true)
		p.SetHTTP1(true)
	}
	tr.Protocols = &p
	// Connections to the endpoint left behind are not reused.
	eps.mu.Lock()
	eps.onMove = append(eps.onMove, tr.CloseIdleConnections)
	eps.mu.Unlock()
	return &http.Client{Transport: tr}
}

func (s *shipper) run(ctx context.Context) error {
	if s.link == nil {
		s.link = newLink()
	}
	if s.probeInterval <= 0 {
		s.probeInterval = DefaultProbeInterval
	}
	if s.openNext == 0 {
		s.openNext = s.store.NextSeq()
	}
	g, ctx := errgroup.WithContext(ctx)
	g.Go(func() error { return s.reportLosses(ctx) })
	g.Go(func() error { return s.probe(ctx) })
	// No chunk is sent before an aggregator said what it has seen: a
	// rolled-back buffer must move past it first.
	if !s.resumeUntilAnswered(ctx) {
		return g.Wait()
	}
	for i := 0; i < s.cfg.Inflight; i++ {
		g.Go(func() error { return s.worker(ctx) })
	}
	return g.Wait()
}

// setIdentity adds the headers that say which edge and buffer a request
// comes from.
func (s *shipper) setIdentity(req *http.Request) {
	req.Header.Set(wire.HeaderEdge, s.cfg.EdgeID)
	req.Header.Set(wire.HeaderEpoch, strconv.FormatUint(s.store.Epoch(), 10))
}

func (s *shipper) worker(ctx context.Context) error {
	for {
		// Lease may hand back the chunk this worker just released on
		// cancel; stop first.
		if ctx.Err() != nil {
			return nil
		}
		ch, err := s.store.Lease(ctx)
		if err != nil {
			if ctx.Err() != nil || errors.Is(err, buffer.ErrClosed) {
				return nil
			}
			return fmt.Errorf("lease chunk: %w", err)
		}
		if s.h != nil {
			s.h.leased(ch, s.log)
		}
		if err := s.ship(ctx, ch); err != nil {
			return err
		}
	}
}

// ship uploads one chunk until it is acknowledged or rejected, or ctx ends.
func (s *shipper) ship(ctx context.Context, ch buffer.Chunk) error {
	bo := backoff.NewExponentialBackOff()
	bo.InitialInterval = 200 * time.Millisecond
	bo.MaxInterval = s.cfg.MaxBackoff
	bo.MaxElapsedTime = 0 // never give up: the chunk stays in the buffer
	bo.RandomizationFactor = 0.5
	bo.Reset()
	for {
		s.m.inflight.Inc()
		start := time.Now()
		sentEpoch := s.store.Epoch()
		out, wait, reason := s.send(ctx, ch)
		s.m.inflight.Dec()
		switch out {
		case outcomeAcked:
			s.m.sendDuration.Observe(time.Since(start).Seconds())
			s.markUp()
			// ErrNotFound: DropBefore removed it meanwhile; nothing to do.
			if err := s.store.Ack(ch.Seq); err != nil && !errors.Is(err, buffer.ErrNotFound) {
				return fmt.Errorf("ack chunk %d: %w", ch.Seq, err)
			}
			s.m.chunksSent.Inc()
			s.m.recordsAcked.Add(float64(ch.Meta.Records))
			if s.h != nil {
				s.h.done(ch.Seq)
				s.h.clearRefused()
			}
			return nil
		case outcomeRejected:
			s.markUp()
			s.m.sendErrors.WithLabelValues("rejected").Inc()
			for _, r := range ch.Meta.Ranges {
				s.log.Error("aggregator rejected chunk permanently; its records are lost",
					slog.Uint64("seq", ch.Seq), slog.String("reason", reason),
					slog.String("topic", r.Topic), slog.Int("partition", int(r.Partition)),
					slog.Int64("first_offset", r.First), slog.Int64("last_offset", r.Last))
				s.m.lost.WithLabelValues(wire.LossReasonRejected).Add(float64(r.Records))
			}
			if err := s.store.Reject(ch.Seq, wire.LossReasonRejected); err != nil && !errors.Is(err, buffer.ErrNotFound) {
				return fmt.Errorf("reject chunk %d: %w", ch.Seq, err)
			}
			if s.h != nil {
				s.h.done(ch.Seq)
			}
			return nil
		case outcomeReused:
			s.markUp()
			s.seqReused(sentEpoch, ch.Seq, reason)
			wait = 0
		case outcomeStranded:
			s.markUp()
			if s.strandedBuffer(ctx, sentEpoch, reason) {
				wait = 0
			} else {
				wait = s.cfg.MaxBackoff
			}
		case outcomeSlow:
			s.markUp()
			s.log.Error("aggregator refuses this agent; check credentials and that no other agent uses this edge id",
				slog.Uint64("seq", ch.Seq), slog.String("reason", reason))
			wait = s.cfg.MaxBackoff
			if s.h != nil {
				s.h.setRefused(reason)
			}
		case outcomeRetry, outcomeUnproven:
			if d := bo.NextBackOff(); wait <= 0 {
				wait = d
			}
			level := slog.LevelDebug
			if out == outcomeUnproven {
				// Not the aggregator speaking: an operator must look.
				level = slog.LevelWarn
			}
			s.log.Log(ctx, level, "chunk upload not acknowledged; will retry", slog.Uint64("seq", ch.Seq),
				slog.String("reason", reason), slog.Duration("wait", wait))
		case outcomeNetwork:
			s.markDown(reason)
			wait = bo.NextBackOff()
		}
		t := time.NewTimer(wait)
		// While the link is down, a worker also wakes when the prober sees
		// it come back, so that draining starts at once.
		var up <-chan struct{}
		if out == outcomeNetwork {
			up = s.link.upChan()
		}
		select {
		case <-ctx.Done():
			t.Stop()
			s.store.Release(ch.Seq)
			return nil
		case <-up:
			t.Stop()
			bo.Reset()
		case <-t.C:
		}
	}
}

// send makes one upload attempt and classifies its answer.
func (s *shipper) send(ctx context.Context, ch buffer.Chunk) (out outcome, retryAfter time.Duration, reason string) {
	// No fixed budget: the uploads in flight share the link, and a chunk
	// may take minutes on a slow one. The upload is cut only when its bytes
	// stop moving for --request-timeout (see watchUpload).
	body := &progressReader{r: bytes.NewReader(ch.Frame)}
	rctx, stop := watchUpload(ctx, body, s.cfg.RequestTimeout)
	defer stop()
	ep, gen := s.eps.current()
	defer func() {
		switch out {
		case outcomeNetwork:
			s.eps.failed(gen, true, reason)
		case outcomeRetry:
			s.eps.failed(gen, false, reason)
		default:
			s.eps.ok(gen)
		}
	}()
	req, err := http.NewRequestWithContext(rctx, http.MethodPost, ep.url.JoinPath(wire.PathChunks).String(), body)
	if err != nil {
		return outcomeRetry, 0, err.Error()
	}
	s.setIdentity(req)
	req.Header.Set(wire.HeaderFloor, strconv.FormatUint(s.store.Floor(), 10))
	req.Header.Set("Content-Type", wire.ContentTypeChunk)
	req.ContentLength = int64(len(ch.Frame))
	resp, err := s.client.Do(req)
	if err != nil {
		s.m.sendErrors.WithLabelValues("network").Inc()
		if ctx.Err() != nil {
			return outcomeRetry, 0, err.Error()
		}
		if cause := context.Cause(rctx); errors.Is(cause, errStalled) {
			return outcomeNetwork, 0, cause.Error()
		}
		return outcomeNetwork, 0, err.Error()
	}
	defer drain(resp)
	out, retryAfter, reason, refused := classify(resp, s.m, ch.Seq, ch.Meta.Records)
	for _, r := range refused {
		// The aggregator recorded these as lost centrally; the agent only
		// says so and counts them.
		s.log.Error("hub refused records of an acknowledged chunk for good; they are lost, the rest was written",
			slog.Uint64("seq", ch.Seq), slog.String("topic", r.Topic), slog.Int("partition", int(r.Partition)),
			slog.Int64("first_offset", r.FirstOffset), slog.Int64("last_offset", r.LastOffset), slog.Int64("records", r.Records))
		s.m.lost.WithLabelValues(wire.LossReasonRefusedByHub).Add(float64(r.Records))
	}
	return out, retryAfter, reason
}

// classify turns an aggregator answer to the upload of chunk seq (records
// records) into an outcome. Only an answer that proves it comes from the
// aggregator settles the chunk: a 200 whose ChunkResponse names this seq
// and record count deletes it, and a 400, 413 or 422 whose ErrorResponse
// says permanent quarantines it. A misrouted path or a proxy answering 2xx,
// or a proxy's own 413 (a body size limit), proves nothing and is retried.
// Credential and conflict problems are retried slowly because the data is
// fine and the operator can fix the cause.
//
// An acknowledgement may list records the hub refused for good (refused).
func classify(resp *http.Response, m *metrics, seq uint64, records int) (outcome, time.Duration, string, []wire.LossRange) {
	body, _ := io.ReadAll(io.LimitReader(resp.Body, maxErrorBody))
	if resp.StatusCode >= 200 && resp.StatusCode < 300 {
		var cr wire.ChunkResponse
		err := json.Unmarshal(body, &cr)
		if err == nil && resp.StatusCode == http.StatusOK && cr.Seq == seq && cr.Records == records {
			return outcomeAcked, 0, "", cr.Refused
		}
		m.sendErrors.WithLabelValues("unacknowledged").Inc()
		got := fmt.Sprintf("seq %d, %d records", cr.Seq, cr.Records)
		if err != nil {
			got = "no chunk acknowledgement: " + snippet(body)
		}
		return outcomeUnproven, 0, fmt.Sprintf("%d without acknowledging chunk %d (%d records): %s; is --aggregator the aggregator's URL, or is a proxy answering?",
			resp.StatusCode, seq, records, got), nil
	}
	var er wire.ErrorResponse
	fromAggregator := json.Unmarshal(body, &er) == nil && er.Error != ""
	if !fromAggregator {
		er.Error = http.StatusText(resp.StatusCode)
	}
	reason := fmt.Sprintf("%d: %s", resp.StatusCode, er.Error)
	switch resp.StatusCode {
	case http.StatusBadRequest, http.StatusRequestEntityTooLarge, http.StatusUnprocessableEntity:
		if fromAggregator && er.Permanent {
			return outcomeRejected, 0, reason, nil
		}
		m.sendErrors.WithLabelValues("unacknowledged").Inc()
		return outcomeUnproven, 0, reason + " (not a permanent aggregator error: " + snippet(body) + ")", nil
	case http.StatusUnauthorized, http.StatusForbidden:
		m.sendErrors.WithLabelValues("auth").Inc()
		return outcomeSlow, 0, reason, nil
	case http.StatusConflict:
		m.sendErrors.WithLabelValues("conflict").Inc()
		switch er.Code {
		case wire.CodeSeqReused:
			return outcomeReused, 0, reason, nil
		case wire.CodeEpochReplaced:
			return outcomeStranded, 0, reason, nil
		}
		return outcomeSlow, 0, reason, nil
	case http.StatusTooManyRequests, http.StatusServiceUnavailable:
		m.sendErrors.WithLabelValues("retryable").Inc()
		return outcomeRetry, retryAfter(resp.Header.Get("Retry-After")), reason, nil
	}
	m.sendErrors.WithLabelValues("retryable").Inc()
	return outcomeRetry, 0, reason, nil
}

// snippet returns the start of an answer body for a log line.
func snippet(b []byte) string {
	const max = 120
	if len(b) == 0 {
		return "empty body"
	}
	if len(b) > max {
		return strconv.Quote(string(b[:max])) + "..."
	}
	return strconv.Quote(string(b))
}

// retryAfter parses a Retry-After header (seconds or an HTTP date), capped
// at five minutes.
func retryAfter(v string) time.Duration {
	if v == "" {
		return 0
	}
	const maxWait = 5 * time.Minute
	var d time.Duration
	if secs, err := strconv.ParseUint(v, 10, 64); err == nil {
		d = time.Duration(min(secs, uint64(maxWait/time.Second))) * time.Second
	} else if t, err := http.ParseTime(v); err == nil {
		d = time.Until(t)
	}
	if d < 0 {
		return 0
	}
	return min(d, maxWait)
}

func drain(resp *http.Response) {
	_, _ = io.Copy(io.Discard, io.LimitReader(resp.Body, maxErrorBody))
	resp.Body.Close()
}

// reportLosses sends pending loss records to the aggregator until ctx ends.
func (s *shipper) reportLosses(ctx context.Context) error {
	t := time.NewTimer(0)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return nil
		case <-t.C:
		}
		if err := s.sendLosses(ctx); err != nil && ctx.Err() == nil {
			s.log.Debug("loss report not delivered; will retry", slog.Any("error", err))
		}
		t.Reset(s.cfg.LossInterval)
	}
}

// maxLossRanges bounds one loss report, well below the aggregator's JSON
// body limit (wire.MaxJSONBytes; a range is about 150 bytes of JSON).
const maxLossRanges = 2000

func (s *shipper) sendLosses(ctx context.Context) error {
	losses, err := s.store.PendingLosses()
	if err != nil {
		return err
	}
	for len(losses) > 0 {
		n := min(len(losses), maxLossRanges)
		if err := s.sendLossBatch(ctx, losses[:n]); err != nil {
			return err
		}
		losses = losses[n:]
	}
	return nil
}

func (s *shipper) sendLossBatch(ctx context.Context, losses []buffer.Loss) error {
	rep := wire.LossReport{Ranges: make([]wire.LossRange, len(losses))}
	ids := make([]uint64, len(losses))
	for i, l := range losses {
		ids[i] = l.ID
		rep.Ranges[i] = wire.LossRange{Topic: l.Range.Topic, Partition: l.Range.Partition,
			FirstOffset: l.Range.First, LastOffset: l.Range.Last, Records: l.Range.Records, Reason: l.Reason}
	}
	body, err := json.Marshal(rep)
	if err != nil {
		return fmt.Errorf("encode loss report: %w", err)
	}
	rctx, cancel := context.WithTimeout(ctx, s.cfg.RequestTimeout)
	defer cancel()
	ep, _ := s.eps.current()
	req, err := http.NewRequestWithContext(rctx, http.MethodPost, ep.url.JoinPath(wire.PathLosses).String(), bytes.NewReader(body))
	if err != nil {
		return err
	}
	s.setIdentity(req)
	req.Header.Set("Content-Type", "application/json")
	resp, err := s.client.Do(req)
	if err != nil {
		return err
	}
	defer drain(resp)
	if resp.StatusCode/100 != 2 {
		return fmt.Errorf("send loss report: aggregator answered %s", resp.Status)
	}
	if err := s.store.AckLosses(ids); err != nil {
		return fmt.Errorf("forget reported losses: %w", err)
	}
	s.m.lossesReported.Add(float64(len(ids)))
	if s.h != nil {
		for _, l := range losses {
			s.h.addLost(l.Reason, l.Range.Records)
		}
	}
	s.log.Info("loss ranges reported to aggregator", slog.Int("ranges", len(ids)))
	return nil
}
