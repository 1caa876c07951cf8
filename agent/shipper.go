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
	outcomeAcked    outcome = iota // 2xx: the hub has every record; delete the chunk
	outcomeRejected                // 400/413/422: this chunk will never be accepted; quarantine it
	outcomeRetry                   // network error, 5xx, 429: retry with backoff (or Retry-After)
	outcomeSlow                    // 401/403/409: a configuration problem; retry at the slowest pace
	outcomeNetwork                 // no answer: the link is down; retry when it is back
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
	eps.onMove = tr.CloseIdleConnections
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
		case outcomeRetry:
			if d := bo.NextBackOff(); wait <= 0 {
				wait = d
			}
			s.log.Debug("chunk upload failed; will retry", slog.Uint64("seq", ch.Seq),
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
	timeout := s.cfg.RequestTimeout
	if s.cfg.Bandwidth > 0 {
		timeout += time.Duration(float64(len(ch.Frame)) / float64(s.cfg.Bandwidth) * float64(time.Second))
	}
	rctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
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
	req, err := http.NewRequestWithContext(rctx, http.MethodPost, ep.url.JoinPath(wire.PathChunks).String(), bytes.NewReader(ch.Frame))
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
		return outcomeNetwork, 0, err.Error()
	}
	defer drain(resp)
	return classify(resp, s.m)
}

// classify turns an aggregator answer into an outcome. Permanent means the
// chunk itself is bad; credential and conflict problems are retried slowly
// because the data is fine and the operator can fix the cause.
func classify(resp *http.Response, m *metrics) (outcome, time.Duration, string) {
	if resp.StatusCode >= 200 && resp.StatusCode < 300 {
		return outcomeAcked, 0, ""
	}
	var er wire.ErrorResponse
	body, _ := io.ReadAll(io.LimitReader(resp.Body, maxErrorBody))
	if json.Unmarshal(body, &er) != nil || er.Error == "" {
		er.Error = http.StatusText(resp.StatusCode)
	}
	reason := fmt.Sprintf("%d: %s", resp.StatusCode, er.Error)
	switch resp.StatusCode {
	case http.StatusBadRequest, http.StatusRequestEntityTooLarge, http.StatusUnprocessableEntity:
		return outcomeRejected, 0, reason
	case http.StatusUnauthorized, http.StatusForbidden:
		m.sendErrors.WithLabelValues("auth").Inc()
		return outcomeSlow, 0, reason
	case http.StatusConflict:
		m.sendErrors.WithLabelValues("conflict").Inc()
		switch er.Code {
		case wire.CodeSeqReused:
			return outcomeReused, 0, reason
		case wire.CodeEpochReplaced:
			return outcomeStranded, 0, reason
		}
		return outcomeSlow, 0, reason
	case http.StatusTooManyRequests, http.StatusServiceUnavailable:
		m.sendErrors.WithLabelValues("retryable").Inc()
		return outcomeRetry, retryAfter(resp.Header.Get("Retry-After")), reason
	}
	m.sendErrors.WithLabelValues("retryable").Inc()
	return outcomeRetry, 0, reason
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
	s.log.Info("loss ranges reported to aggregator", slog.Int("ranges", len(ids)))
	return nil
}
