package agent

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"log/slog"
	"net/http"
	"sync"

	"github.com/edgemirror/edgemirror/internal/wire"
)

// epochGuard serialises what the shipper does about its buffer epoch when
// the aggregator refuses it: renewing it after a rolled-back seq, and the
// report of a stranded buffer.
type epochGuard struct {
	mu       sync.Mutex
	stranded uint64 // epoch whose stranded report was delivered (0: none)
}

// maxStrandedLogLines bounds the per-partition lines of one stranded report
// in the log; the report to the aggregator always has every partition.
const maxStrandedLogLines = 100

// seqReused handles a 409 seq-reused answer to a chunk sent under epoch
// sent: the aggregator applied that seq before with other content, so the
// buffer was rolled back without resume noticing (the aggregator that knew
// did not answer then). A new epoch gives every chunk a number no
// aggregator knows; the chunk is then sent again at once.
func (s *shipper) seqReused(sent uint64, seq uint64, reason string) {
	s.epochs.mu.Lock()
	defer s.epochs.mu.Unlock()
	if s.store.Epoch() != sent {
		return // renewed meanwhile
	}
	s.m.rollbacks.Inc()
	if _, _, err := s.store.RenewEpoch(); err != nil {
		s.log.Error("renew buffer epoch after a reused sequence number", slog.Any("error", err))
		return
	}
	s.log.Error("aggregator applied this chunk's sequence number before with other content: the buffer was rolled back; its epoch is renewed and every held chunk is sent again under new numbers",
		slog.Uint64("seq", seq), slog.Uint64("old_epoch", sent), slog.Uint64("epoch", s.store.Epoch()), slog.String("reason", reason))
}

// strandedBuffer handles a 409 epoch-replaced answer to a chunk sent under
// epoch sent. It reports whether the chunk should be sent again at once
// (the epoch was renewed meanwhile). Otherwise the buffer is stranded:
// another buffer of this edge id took over at the aggregator, which refuses
// this one's chunks for good. The agent keeps them, logs what it holds,
// reports the held ranges to the aggregator (reason stranded-epoch) and
// goes on retrying slowly; the operator decides (README, "Stranded
// buffer").
func (s *shipper) strandedBuffer(ctx context.Context, sent uint64, reason string) (retryNow bool) {
	s.epochs.mu.Lock()
	defer s.epochs.mu.Unlock()
	if s.store.Epoch() != sent {
		return true
	}
	s.m.stranded.Set(1)
	if s.epochs.stranded == sent {
		return false
	}
	held, err := s.store.HeldRanges()
	if err != nil {
		s.log.Error("list what the stranded buffer holds", slog.Any("error", err))
		return false
	}
	var records int64
	for _, h := range held {
		records += h.Records
	}
	s.m.strandedRecords.Set(float64(records))
	st := s.store.Stats()
	s.log.Error("STRANDED BUFFER: the aggregator refuses this buffer's epoch because another buffer of the same edge id took over; its records do not reach the hub until an operator acts (README, \"Stranded buffer\"): stop the other agent and run 'edgemirror buffer renew-epoch', or remove this buffer",
		slog.Uint64("epoch", sent), slog.String("buffer_dir", s.cfg.BufferDir), slog.Int("chunks", st.Chunks),
		slog.Int64("records", records), slog.Int("partitions", len(held)), slog.String("reason", reason))
	for i, h := range held {
		if i == maxStrandedLogLines {
			s.log.Error("stranded buffer holds more partitions; all are in the report to the aggregator",
				slog.Int("not_logged", len(held)-i))
			break
		}
		s.log.Error("stranded buffer holds", slog.String("topic", h.Topic), slog.Int("partition", int(h.Partition)),
			slog.Int64("first_offset", h.First), slog.Int64("last_offset", h.Last), slog.Int64("records", h.Records),
			slog.Int("chunks", h.Chunks))
	}
	rep := wire.LossReport{Ranges: make([]wire.LossRange, 0, len(held))}
	for _, h := range held {
		rep.Ranges = append(rep.Ranges, wire.LossRange{Topic: h.Topic, Partition: h.Partition, FirstOffset: h.First,
			LastOffset: h.Last, Records: h.Records, Reason: wire.LossReasonStranded})
	}
	for len(rep.Ranges) > 0 {
		n := min(len(rep.Ranges), maxLossRanges)
		if err := s.postLosses(ctx, wire.LossReport{Ranges: rep.Ranges[:n]}); err != nil {
			s.log.Warn("stranded buffer not reported to the aggregator yet; will retry", slog.Any("error", err))
			return false
		}
		rep.Ranges = rep.Ranges[n:]
	}
	s.epochs.stranded = sent
	s.log.Info("stranded buffer reported to the aggregator", slog.Uint64("epoch", sent), slog.Int("partitions", len(held)))
	return false
}

// postLosses sends one loss report that is not kept in the buffer.
func (s *shipper) postLosses(ctx context.Context, rep wire.LossReport) error {
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
	req.Header.Set("Content-Type", wire.ContentTypeJSON)
	resp, err := s.client.Do(req)
	if err != nil {
		return err
	}
	defer drain(resp)
	if resp.StatusCode/100 != 2 {
		return fmt.Errorf("send loss report: aggregator answered %s", resp.Status)
	}
	return nil
}
