package agent

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"math"
	"net"
	"net/http"
	"sync"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"
	"golang.org/x/time/rate"

	"github.com/edgemirror/edgemirror/buffer"
	"github.com/edgemirror/edgemirror/internal/wire"
)

// blockedAfter is how long an Append must wait for room before the agent
// reports itself blocked on a full buffer.
const blockedAfter = time.Second

// health is what the agent knows about its own progress, for heartbeats
// and the RPO/backlog metrics. It is shared by the read loop, the shipper
// and the heartbeat loop.
type health struct {
	mu sync.Mutex
	// pending maps the seq of every chunk appended or leased in this run
	// and not yet acknowledged to the timestamp (unix ms) of its oldest
	// record.
	pending map[uint64]int64
	// startSeq is the first seq appended by this run: lower seqs were
	// written by an earlier run and their times are learnt when they are
	// leased.
	startSeq uint64
	// lost counts records of loss ranges reported since start, by reason.
	lost map[string]int64
	dec  *wire.Decoder // created on first use, for chunks of an earlier run

	appendSince atomic.Int64           // unix nanos when the current Append began; 0 = none
	refused     atomic.Pointer[string] // last refusal since the last acknowledgement
}

func newHealth(startSeq uint64) *health {
	return &health{pending: make(map[uint64]int64), startSeq: startSeq, lost: make(map[string]int64)}
}

func (h *health) close() {
	h.mu.Lock()
	defer h.mu.Unlock()
	if h.dec != nil {
		h.dec.Close()
		h.dec = nil
	}
}

// oldestTimestamp returns the smallest record timestamp (unix ms) of recs,
// or at if none has one.
func oldestTimestamp(recs []wire.Record, at time.Time) int64 {
	oldest := int64(math.MaxInt64)
	for i := range recs {
		if ts := recs[i].Timestamp; ts >= 0 && ts < oldest {
			oldest = ts
		}
	}
	if oldest == math.MaxInt64 {
		return at.UnixMilli()
	}
	return oldest
}

// appended records a chunk written to the buffer.
func (h *health) appended(seq uint64, oldestMs int64) {
	h.mu.Lock()
	h.pending[seq] = oldestMs
	h.mu.Unlock()
}

// leased learns the oldest record time of a chunk written by an earlier
// run, by decoding its frame once.
func (h *health) leased(ch buffer.Chunk, log *slog.Logger) {
	if ch.Seq >= h.startSeq {
		return
	}
	h.mu.Lock()
	defer h.mu.Unlock()
	if _, ok := h.pending[ch.Seq]; ok {
		return
	}
	if h.dec == nil {
		d, err := wire.NewDecoder(wire.DefaultLimits())
		if err != nil {
			log.Warn("create decoder for the RPO of buffered chunks", slog.Any("error", err))
			return
		}
		h.dec = d
	}
	c, err := h.dec.Decode(ch.Frame)
	if err != nil {
		// The aggregator will say the same; the RPO just misses this chunk.
		log.Debug("decode buffered chunk for its RPO", slog.Uint64("seq", ch.Seq), slog.Any("error", err))
		return
	}
	h.pending[ch.Seq] = oldestTimestamp(c.Records, time.Now())
}

// done forgets a chunk that was acknowledged or rejected.
func (h *health) done(seq uint64) {
	h.mu.Lock()
	delete(h.pending, seq)
	h.mu.Unlock()
}

// oldest returns the timestamp of the oldest pending record among the
// stored chunks (seq >= floor), forgetting chunks below floor (dropped or
// acknowledged through DropBefore).
func (h *health) oldest(floor uint64) (time.Time, bool) {
	h.mu.Lock()
	defer h.mu.Unlock()
	oldest := int64(math.MaxInt64)
	for seq, ts := range h.pending {
		if seq < floor {
			delete(h.pending, seq)
			continue
		}
		oldest = min(oldest, ts)
	}
	if oldest == math.MaxInt64 {
		return time.Time{}, false
	}
	return time.UnixMilli(oldest), true
}

func (h *health) addLost(reason string, records int64) {
	h.mu.Lock()
	h.lost[reason] += records
	h.mu.Unlock()
}

func (h *health) lostCopy() map[string]int64 {
	h.mu.Lock()
	defer h.mu.Unlock()
	if len(h.lost) == 0 {
		return nil
	}
	out := make(map[string]int64, len(h.lost))
	for k, v := range h.lost {
		out[k] = v
	}
	return out
}

// blocked reports whether an Append has waited for room for longer than
// blockedAfter.
func (h *health) blocked(now time.Time) bool {
	since := h.appendSince.Load()
	return since != 0 && now.Sub(time.Unix(0, since)) >= blockedAfter
}

func (h *health) setRefused(reason string) { h.refused.Store(&reason) }

func (h *health) clearRefused() { h.refused.Store(nil) }

func (h *health) refusal() string {
	if p := h.refused.Load(); p != nil {
		return *p
	}
	return ""
}

// heartbeater sends a heartbeat every interval on a connection of its own.
type heartbeater struct {
	cfg    *Config
	log    *slog.Logger
	store  *buffer.Store
	h      *health
	m      *metrics
	client *http.Client
	url    func() string // the heartbeat URL of the endpoint in use
	link   func() bool   // whether the shipper's link is up

	lastAt           time.Time
	lastAcked        float64
	lastRead         float64
	failuresReported bool
}

// newHeartbeatClient returns an HTTP client with its own connection pool,
// so that a heartbeat never queues behind chunk bytes in a TCP send buffer
// or an HTTP/2 flow-control window. Its connections share the bandwidth
// token bucket with the chunk connections; the bucket hands out at most
// 20 ms of traffic per write, so a heartbeat waits for tokens at most a
// few tens of milliseconds, never for a whole chunk.
func newHeartbeatClient(ctx context.Context, eps *endpoints, lim *rate.Limiter, m *metrics) *http.Client {
	hc := newHTTPClient(ctx, eps, lim, m)
	tr := hc.Transport.(*http.Transport)
	inner := tr.DialContext
	sent, recv := m.heartbeatBytes.WithLabelValues("sent"), m.heartbeatBytes.WithLabelValues("received")
	tr.DialContext = func(dctx context.Context, network, addr string) (net.Conn, error) {
		c, err := inner(dctx, network, addr)
		if err != nil {
			return nil, err
		}
		return &heartbeatConn{Conn: c, sent: sent, recv: recv}, nil
	}
	tr.MaxIdleConnsPerHost = 1
	return hc
}

// heartbeatConn counts the bytes of the heartbeat connection on top of the
// agent's wire byte counters.
type heartbeatConn struct {
	net.Conn
	sent, recv prometheus.Counter
}

func (c *heartbeatConn) Write(p []byte) (int, error) {
	n, err := c.Conn.Write(p)
	c.sent.Add(float64(n))
	return n, err
}

func (c *heartbeatConn) Read(p []byte) (int, error) {
	n, err := c.Conn.Read(p)
	c.recv.Add(float64(n))
	return n, err
}

// heartbeatRetry is the first wait after a heartbeat that was not
// delivered; it doubles up to the interval, so that the centre hears from
// an edge soon after a short cut without probing a long one more than
// once per interval.
const heartbeatRetry = time.Second

// run sends a heartbeat at once, then every interval, until ctx ends. After
// a failed heartbeat the next one comes sooner (heartbeatRetry, doubling up
// to the interval); it carries fresh numbers, nothing is re-sent.
func (b *heartbeater) run(ctx context.Context) error {
	t := time.NewTimer(0)
	defer t.Stop()
	retry := heartbeatRetry
	for {
		select {
		case <-ctx.Done():
			b.last(ctx)
			return nil
		case <-t.C:
		}
		hb := b.snapshot(time.Now())
		err := b.send(ctx, hb)
		switch {
		case err == nil:
			b.m.heartbeats.WithLabelValues("delivered").Inc()
			if b.failuresReported {
				b.log.Info("heartbeats delivered again")
				b.failuresReported = false
			}
			retry = heartbeatRetry
			t.Reset(b.cfg.HeartbeatInterval)
		case ctx.Err() != nil:
			t.Reset(0)
		default:
			b.m.heartbeats.WithLabelValues("failed").Inc()
			if !b.failuresReported {
				b.log.Info("heartbeat not delivered; will keep trying", slog.Any("error", err))
				b.failuresReported = true
			} else {
				b.log.Debug("heartbeat not delivered", slog.Any("error", err))
			}
			t.Reset(min(retry, b.cfg.HeartbeatInterval))
			retry = min(retry*2, b.cfg.HeartbeatInterval)
		}
	}
}

// finalHeartbeatTimeout bounds the last heartbeat, sent when the agent
// stops, so that the centre sees the backlog it stopped with.
const finalHeartbeatTimeout = time.Second

// last sends one more heartbeat when the agent stops; best effort.
func (b *heartbeater) last(ctx context.Context) {
	fctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), finalHeartbeatTimeout)
	defer cancel()
	if err := b.send(fctx, b.snapshot(time.Now())); err != nil {
		b.log.Debug("last heartbeat not delivered", slog.Any("error", err))
	}
}

// snapshot builds a heartbeat and updates the agent's RPO and backlog
// metrics with the same numbers.
func (b *heartbeater) snapshot(now time.Time) wire.Heartbeat {
	st := b.store.Stats()
	hb := wire.Heartbeat{
		Version:           b.cfg.Version,
		Epoch:             b.store.Epoch(),
		SentAt:            now.UTC().Truncate(time.Millisecond),
		IntervalSeconds:   b.cfg.HeartbeatInterval.Seconds(),
		BacklogChunks:     int64(st.Chunks),
		BacklogRecords:    st.Records,
		BacklogBytes:      st.PayloadBytes,
		EdgeLagRecords:    int64(gaugeVecSum(b.m.lag)),
		LostRecords:       b.h.lostCopy(),
		PendingLossRanges: st.PendingLosses,
		LinkUp:            b.link(),
		Blocked:           b.h.blocked(now),
		Refused:           b.h.refusal(),
	}
	if st.BudgetBytes > 0 {
		hb.BufferFillRatio = min(float64(st.UsedBytes)/float64(st.BudgetBytes), 1)
	}
	if st.Chunks > 0 {
		if oldest, ok := b.h.oldest(b.store.Floor()); ok {
			hb.RPOSeconds = max(now.Sub(oldest).Seconds(), 0)
		}
	} else {
		b.h.oldest(b.store.Floor())
	}
	acked, read := counterValue(b.m.recordsAcked), counterValue(b.m.recordsRead)
	if !b.lastAt.IsZero() {
		if d := now.Sub(b.lastAt).Seconds(); d > 0 {
			hb.RecordsPerSecond = (acked - b.lastAcked) / d
			hb.ReadPerSecond = (read - b.lastRead) / d
		}
	}
	b.lastAt, b.lastAcked, b.lastRead = now, acked, read

	b.m.rpo.Set(hb.RPOSeconds)
	b.m.backlogRecords.Set(float64(hb.BacklogRecords))
	b.m.backlogBytes.Set(float64(hb.BacklogBytes))
	b.m.bufferFill.Set(hb.BufferFillRatio)
	return hb
}

func (b *heartbeater) send(ctx context.Context, hb wire.Heartbeat) error {
	body, err := json.Marshal(hb)
	if err != nil {
		return fmt.Errorf("encode heartbeat: %w", err)
	}
	// A heartbeat older than one interval is worth nothing: the next one
	// replaces it.
	rctx, cancel := context.WithTimeout(ctx, max(b.cfg.HeartbeatInterval, 5*time.Second))
	defer cancel()
	req, err := http.NewRequestWithContext(rctx, http.MethodPost, b.url(), bytes.NewReader(body))
	if err != nil {
		return err
	}
	req.Header.Set(wire.HeaderEdge, b.cfg.EdgeID)
	req.Header.Set(wire.HeaderEpoch, fmt.Sprint(hb.Epoch))
	req.Header.Set("Content-Type", wire.ContentTypeJSON)
	resp, err := b.client.Do(req)
	if err != nil {
		return err
	}
	defer drain(resp)
	if resp.StatusCode/100 != 2 {
		var er wire.ErrorResponse
		body, _ := io.ReadAll(io.LimitReader(resp.Body, maxErrorBody))
		if json.Unmarshal(body, &er) != nil || er.Error == "" {
			er.Error = http.StatusText(resp.StatusCode)
		}
		return fmt.Errorf("send heartbeat: %d: %s", resp.StatusCode, er.Error)
	}
	return nil
}

func counterValue(c prometheus.Counter) float64 {
	var m dto.Metric
	if err := c.Write(&m); err != nil {
		return 0
	}
	return m.GetCounter().GetValue()
}

// gaugeVecSum adds up every child of a gauge vector.
func gaugeVecSum(v *prometheus.GaugeVec) float64 {
	ch := make(chan prometheus.Metric, 64)
	go func() { v.Collect(ch); close(ch) }()
	var sum float64
	for m := range ch {
		var d dto.Metric
		if m.Write(&d) == nil {
			sum += d.GetGauge().GetValue()
		}
	}
	return sum
}
