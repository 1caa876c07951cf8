package agent

import (
	"context"
	"encoding/json"
	"io"
	"log/slog"
	"net/http"
	"net/url"
	"time"

	"github.com/cenkalti/backoff/v4"

	"github.com/edgemirror/edgemirror/internal/wire"
)

// Resume: before the first chunk is sent, the agent asks every configured
// aggregator which chunks of its epoch it has applied (next_seq) and the
// highest seq it has seen (max_seq).
//
// Chunks below next_seq need not be sent again: they are dropped.
//
// A buffer whose own next seq, when it was opened, is at or below a seq an
// aggregator has seen was rolled back: restored from a copy or a snapshot,
// or cut short by storage that acknowledged fsync without writing. Its new
// chunks would reuse numbers the aggregator applied with other content, and
// the aggregator applies a chunk below its next seq at once, as a re-send;
// two such chunks applied out of order would drop the earlier one's new
// records as duplicates. So the agent moves its next seq past the highest
// seen, and renews the buffer's epoch (new numbers for every aggregator)
// when that is not enough: chunks were already cut under reused numbers
// in this run, or not every aggregator answered.

// resumeUntilAnswered runs resume until at least one aggregator answered, or
// ctx ends (false).
func (s *shipper) resumeUntilAnswered(ctx context.Context) bool {
	bo := backoff.NewExponentialBackOff()
	bo.InitialInterval = 200 * time.Millisecond
	bo.MaxInterval = s.cfg.MaxBackoff
	bo.MaxElapsedTime = 0
	bo.Reset()
	logged := false
	for {
		if s.resume(ctx) {
			return true
		}
		if !logged {
			s.log.Info("no aggregator reachable at start; chunks are sent once one answers")
			logged = true
		}
		t := time.NewTimer(bo.NextBackOff())
		select {
		case <-ctx.Done():
			t.Stop()
			return false
		case <-t.C:
		}
	}
}

// resumeAnswer is one aggregator's answer to the resume question.
type resumeAnswer struct {
	url string
	rr  wire.ResumeResponse
	ok  bool // a ResumeResponse was decoded (else the aggregator answered without one)
}

// askResume asks one aggregator. It returns false when there was no answer.
func (s *shipper) askResume(ctx context.Context, base *url.URL) (resumeAnswer, bool) {
	ctx, cancel := context.WithTimeout(ctx, s.cfg.RequestTimeout)
	defer cancel()
	a := resumeAnswer{url: base.String()}
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, base.JoinPath(wire.PathResume).String(), nil)
	if err != nil {
		return a, false
	}
	s.setIdentity(req)
	resp, err := s.client.Do(req)
	if err != nil {
		s.m.sendErrors.WithLabelValues("network").Inc()
		s.log.Debug("resume: aggregator did not answer", slog.String("aggregator", a.url), slog.Any("error", err))
		return a, false
	}
	defer drain(resp)
	if resp.StatusCode == http.StatusUnauthorized || resp.StatusCode == http.StatusForbidden {
		_, _, reason, _ := classify(resp, s.m, 0, 0)
		s.log.Error("aggregator refuses this agent's credential; chunks stay in the buffer until it is fixed",
			slog.String("aggregator", a.url), slog.String("reason", reason))
		return a, true
	}
	if resp.StatusCode == http.StatusOK &&
		json.NewDecoder(io.LimitReader(resp.Body, wire.MaxJSONBytes)).Decode(&a.rr) == nil {
		a.ok = true
	}
	return a, true
}

// resume asks every configured aggregator and acts on the answers. It
// reports whether at least one answered.
func (s *shipper) resume(ctx context.Context) bool {
	seenURL := make(map[string]bool)
	var answers []resumeAnswer
	asked := 0
	for _, u := range s.eps.urls {
		base := u.String()
		// A name that resolves to several aggregators is asked once, at
		// the address in use.
		if seenURL[base] {
			continue
		}
		seenURL[base] = true
		asked++
		if a, ok := s.askResume(ctx, u); ok {
			answers = append(answers, a)
		}
	}
	if len(answers) == 0 {
		return false
	}
	epoch := s.store.Epoch()
	var next, seen uint64
	for _, a := range answers {
		if !a.ok || a.rr.Epoch != epoch {
			continue
		}
		next = max(next, a.rr.NextSeq)
		seen = max(seen, a.rr.MaxSeq)
		if a.rr.NextSeq > 0 {
			seen = max(seen, a.rr.NextSeq-1)
		}
	}
	openNext := s.openNext
	if seen >= openNext {
		// false: try again, nothing is sent under reused numbers.
		return s.rolledBack(next, seen, openNext, len(answers) == asked) == nil
	}
	if next > s.store.Floor() {
		n, err := s.store.DropBefore(next)
		if err != nil {
			s.log.Warn("drop chunks the aggregator already has", slog.Any("error", err))
			return true
		}
		s.log.Info("aggregator already applied buffered chunks; not sending them again",
			slog.Int("chunks", n), slog.Uint64("next_seq", next))
	}
	return true
}

// rolledBack handles a buffer that hands out seqs an aggregator has seen.
// Chunks stored when the buffer was opened and below next were applied (or
// acknowledged) in their time: they are dropped like after any restart.
// Chunks cut in this run are kept: they hold what was read again.
func (s *shipper) rolledBack(next, seen, openNext uint64, allAnswered bool) error {
	epoch := s.store.Epoch()
	s.log.Error("buffer was rolled back: the aggregator has seen sequence numbers this buffer is about to use again (restored copy or snapshot of the buffer directory, or storage that lost acknowledged writes); moving past them",
		slog.Uint64("epoch", epoch), slog.Uint64("buffer_next_seq", openNext),
		slog.Uint64("aggregator_next_seq", next), slog.Uint64("aggregator_max_seq", seen))
	s.m.rollbacks.Inc()
	if drop := min(next, openNext); drop > s.store.Floor() {
		if n, err := s.store.DropBefore(drop); err != nil {
			s.log.Warn("drop chunks the aggregator already has", slog.Any("error", err))
		} else if n > 0 {
			s.log.Info("aggregator already applied buffered chunks; not sending them again",
				slog.Int("chunks", n), slog.Uint64("next_seq", drop))
		}
	}
	moved, err := s.store.MoveNextSeq(seen+1, openNext)
	if err != nil {
		s.log.Error("move next sequence number", slog.Any("error", err))
	}
	if moved && allAnswered {
		return nil
	}
	// Chunks were cut under reused numbers already, or an aggregator that
	// did not answer may have seen more: new numbers for everyone.
	if _, _, err := s.store.RenewEpoch(); err != nil {
		s.log.Error("renew buffer epoch after rollback; chunks are not sent until it succeeds", slog.Any("error", err))
		return err
	}
	s.log.Warn("buffer epoch renewed after rollback; the aggregators apply its chunks in order from the lowest held",
		slog.Uint64("old_epoch", epoch), slog.Uint64("epoch", s.store.Epoch()),
		slog.Bool("chunks_cut_under_reused_numbers", !moved), slog.Bool("every_aggregator_answered", allAnswered))
	return nil
}
