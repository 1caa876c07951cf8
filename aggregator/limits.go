package aggregator

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"strconv"
	"sync"
	"time"
	"unsafe"

	"github.com/prometheus/client_golang/prometheus"
	"golang.org/x/sync/semaphore"
	"golang.org/x/time/rate"

	"github.com/edgemirror/edgemirror/internal/promutil"
	"github.com/edgemirror/edgemirror/internal/wire"
)

// Memory a decoded chunk holds beyond its raw payload: one wire.Record per
// record and, as an estimate charged up front, two wire.Headers per record.
// Headers beyond that are charged once the chunk is decoded.
var (
	recordCost = int64(unsafe.Sizeof(wire.Record{}))
	headerCost = int64(unsafe.Sizeof(wire.Header{}))
)

// maxLossReasons bounds the distinct loss reasons the metrics keep; further
// reasons are counted as "other" (they are stored as sent).
const maxLossReasons = 32

// refusal reasons, the label of edgemirror_aggregator_refused_total.
const (
	refuseNoCredential = "no-credential"
	refuseImpersonate  = "identity-mismatch"
	refuseTopic        = "topic-not-allowed"
	refuseRate         = "edge-rate"
	refuseEdgeBusy     = "edge-concurrency"
	refuseBusy         = "total-concurrency"
	refuseMemory       = "decoded-bytes"
	refuseEdges        = "max-edges"
	refusePartitions   = "max-source-partitions"
	refuseRecord       = "record-limit"
)

// limitMetrics count what the guards refuse.
type limitMetrics struct {
	refused     *prometheus.CounterVec
	memInUse    prometheus.Gauge
	sourceParts prometheus.Gauge
	collectors  promutil.Set
}

func newLimitMetrics() *limitMetrics {
	m := &limitMetrics{
		refused: prometheus.NewCounterVec(prometheus.CounterOpts{Namespace: namespace, Subsystem: "aggregator",
			Name: "refused_total", Help: "Requests refused by authentication, authorisation or a limit, by reason."}, []string{"reason"}),
		memInUse: prometheus.NewGauge(prometheus.GaugeOpts{Namespace: namespace, Subsystem: "aggregator",
			Name: "decoded_bytes_reserved", Help: "Bytes of chunk memory reserved against --max-decoded-bytes."}),
		sourceParts: prometheus.NewGauge(prometheus.GaugeOpts{Namespace: namespace, Subsystem: "aggregator",
			Name: "source_partitions", Help: "Distinct (edge, topic, partition) held, bounded by --max-source-partitions."}),
	}
	m.collectors = promutil.Set{m.refused, m.memInUse, m.sourceParts}
	return m
}

type sourcePart struct {
	edge, topic string
	partition   int32
}

// edgeLimit is the per-edge side of the limits.
type edgeLimit struct {
	inflight int
	rate     *rate.Limiter // nil: unlimited
}

// limiter enforces the aggregator's resource bounds. Each check runs before
// the resource it protects is allocated, and answers with a clear status:
// 503 when the whole aggregator is busy (every edge is affected alike), 429
// when one edge exceeds its share (no other edge notices).
type limiter struct {
	cfg *Config
	log *slog.Logger
	m   *limitMetrics

	total chan struct{} // --max-requests slots
	mem   *semaphore.Weighted
	// memMax is --max-decoded-bytes; one request never reserves more.
	memMax int64

	mu      sync.Mutex
	edges   map[string]*edgeLimit
	parts   map[sourcePart]struct{}
	reasons map[string]struct{}
}

func newLimiter(cfg *Config, log *slog.Logger, m *limitMetrics) *limiter {
	return &limiter{cfg: cfg, log: log, m: m,
		total:   make(chan struct{}, cfg.MaxRequests),
		mem:     semaphore.NewWeighted(cfg.MaxDecodedBytes),
		memMax:  cfg.MaxDecodedBytes,
		edges:   make(map[string]*edgeLimit),
		parts:   make(map[sourcePart]struct{}),
		reasons: make(map[string]struct{}),
	}
}

func (l *limiter) refuse(reason string) {
	if l != nil && l.m != nil {
		l.m.refused.WithLabelValues(reason).Inc()
	}
}

// enterTotal takes one of the --max-requests slots, without waiting.
func (l *limiter) enterTotal() (func(), *httpError) {
	select {
	case l.total <- struct{}{}:
		return func() { <-l.total }, nil
	default:
		l.refuse(refuseBusy)
		return nil, errUnavailable(fmt.Sprintf("aggregator is handling --max-requests %d requests; retry", l.cfg.MaxRequests), 1)
	}
}

// enterEdge applies the per-edge bounds: the number of distinct edges, the
// request rate and the requests in flight.
func (l *limiter) enterEdge(edge string) (func(), *httpError) {
	l.mu.Lock()
	defer l.mu.Unlock()
	el := l.edges[edge]
	if el == nil {
		if len(l.edges) >= l.cfg.MaxEdges {
			l.refuse(refuseEdges)
			return nil, &httpError{status: http.StatusTooManyRequests, retryAfter: 60,
				msg: fmt.Sprintf("aggregator already serves --max-edges %d edges; edge %s is not admitted", l.cfg.MaxEdges, edge)}
		}
		el = &edgeLimit{}
		if l.cfg.EdgeRequestRate > 0 {
			el.rate = rate.NewLimiter(rate.Limit(l.cfg.EdgeRequestRate), max(l.cfg.EdgeRequestRate*2, 1))
		}
		l.edges[edge] = el
	}
	if el.rate != nil {
		r := el.rate.Reserve()
		if d := r.Delay(); d > 0 {
			r.Cancel()
			l.refuse(refuseRate)
			return nil, &httpError{status: http.StatusTooManyRequests, retryAfter: max(1, int(d.Round(time.Second)/time.Second)),
				msg: fmt.Sprintf("edge %s exceeds --edge-request-rate %d requests/s", edge, l.cfg.EdgeRequestRate)}
		}
	}
	if el.inflight >= l.cfg.MaxEdgeRequests {
		l.refuse(refuseEdgeBusy)
		return nil, &httpError{status: http.StatusTooManyRequests, retryAfter: 1,
			msg: fmt.Sprintf("edge %s has --max-edge-requests %d requests in flight", edge, l.cfg.MaxEdgeRequests)}
	}
	el.inflight++
	return func() {
		l.mu.Lock()
		el.inflight--
		l.mu.Unlock()
	}, nil
}

// reserve waits for n bytes of the decoded-chunk budget, at most
// --order-wait and at most half --read-timeout: over HTTP/2, the bodies of
// waiting chunks take up the connection's receive window, so that chunks
// of the same connection already reading theirs may stall until the
// waiting ones give up. The release func is never nil when the error is.
func (l *limiter) reserve(ctx context.Context, n int64) (func(), *httpError) {
	if l == nil {
		return func() {}, nil
	}
	n = min(max(n, 1), l.memMax)
	wait := l.cfg.OrderWait
	if l.cfg.ReadTimeout > 0 {
		wait = min(wait, l.cfg.ReadTimeout/2)
	}
	ctx, cancel := context.WithTimeout(ctx, wait)
	defer cancel()
	if err := l.mem.Acquire(ctx, n); err != nil {
		l.refuse(refuseMemory)
		return nil, errUnavailable(fmt.Sprintf("aggregator is busy: --max-decoded-bytes %d is reserved by chunks in progress; retry", l.memMax), 1)
	}
	l.m.memInUse.Add(float64(n))
	var once sync.Once
	return func() {
		once.Do(func() {
			l.mem.Release(n)
			l.m.memInUse.Sub(float64(n))
		})
	}, nil
}

// chunkCost is the memory a chunk with header h holds once decoded, as far
// as the header tells: the frame, the raw payload and its records.
func chunkCost(h wire.FrameHeader) int64 {
	return h.FrameLen() + int64(h.RawLen) + int64(h.Records)*(recordCost+2*headerCost)
}

// readChunk reads a chunk request's body: the frame header first, checked
// against the limits, then a reservation of the chunk's decoded memory,
// then the rest of the frame into a buffer of exactly its size. The release
// func frees the reservation; it is non-nil when the error is nil.
func (s *server) readChunk(r *http.Request) ([]byte, func(), *httpError) {
	if r.ContentLength > s.cfg.MaxChunkBytes {
		return nil, nil, &httpError{status: http.StatusRequestEntityTooLarge,
			msg: fmt.Sprintf("chunk of %d bytes is larger than --max-chunk-bytes %d", r.ContentLength, s.cfg.MaxChunkBytes)}
	}
	var hdr [wire.HeaderSize]byte
	if n, err := io.ReadFull(r.Body, hdr[:]); err != nil {
		if errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF) {
			return nil, nil, errBadRequest(fmt.Sprintf("decode chunk: body of %d bytes is shorter than a frame header (%d)", n, wire.HeaderSize))
		}
		return nil, nil, errUnavailable("read chunk: "+err.Error(), 1)
	}
	h, err := wire.ReadHeader(hdr[:])
	if err == nil {
		err = s.dec.Limits().CheckHeader(h)
	}
	if err != nil {
		if errors.Is(err, wire.ErrTooLarge) {
			return nil, nil, &httpError{status: http.StatusRequestEntityTooLarge, msg: "decode chunk: " + err.Error()}
		}
		return nil, nil, errBadRequest("decode chunk: " + err.Error())
	}
	if r.ContentLength >= 0 && r.ContentLength != h.FrameLen() {
		return nil, nil, errBadRequest(fmt.Sprintf("decode chunk: body of %d bytes, frame header says %d", r.ContentLength, h.FrameLen()))
	}
	release, he := s.lim.reserve(r.Context(), chunkCost(h))
	if he != nil {
		return nil, nil, he
	}
	frame := make([]byte, h.FrameLen())
	copy(frame, hdr[:])
	if _, err := io.ReadFull(r.Body, frame[wire.HeaderSize:]); err != nil {
		release()
		if errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF) {
			return nil, nil, errBadRequest("decode chunk: body ends before the frame does")
		}
		return nil, nil, errUnavailable("read chunk: "+err.Error(), 1)
	}
	var one [1]byte
	if n, _ := r.Body.Read(one[:]); n > 0 {
		release()
		return nil, nil, errBadRequest("decode chunk: body continues after the frame")
	}
	s.m.receivedBytes.Add(float64(len(frame)))
	return frame, release, nil
}

// admitChunk checks a decoded chunk before anything of it reaches the hub:
// its topics against the edge's rule, the record limits, and the bound on
// source partitions held. extra is the header memory beyond the estimate
// charged before decoding.
func (s *server) admitChunk(r *http.Request, edge string, c *wire.Chunk) (extra int64, he *httpError) {
	if e := credentialOf(r); e != nil {
		for _, t := range c.Topics {
			if !e.allows(t.Name) {
				s.lim.refuse(refuseTopic)
				s.log.Warn("refused chunk: topic not allowed for this edge", slog.String("edge", edge),
					slog.String("topic", t.Name), slog.String("allowed", e.topicsSrc), slog.Uint64("seq", c.Seq))
				return 0, &httpError{status: http.StatusForbidden,
					msg: fmt.Sprintf("topic %q is not allowed for edge %s (--edges-file allows %s)", t.Name, edge, e.topicsSrc)}
			}
		}
	}
	headers := 0
	for i := range c.Records {
		rec := &c.Records[i]
		if s.cfg.MaxRecordBytes > 0 && int64(len(rec.Key)+len(rec.Value)) > s.cfg.MaxRecordBytes {
			s.lim.refuse(refuseRecord)
			return 0, &httpError{status: http.StatusRequestEntityTooLarge,
				msg: fmt.Sprintf("record %s/%d@%d has %d bytes of key and value, more than --max-record-bytes %d",
					rec.Topic, rec.Partition, rec.Offset, len(rec.Key)+len(rec.Value), s.cfg.MaxRecordBytes)}
		}
		if s.cfg.MaxRecordHeaders > 0 && len(rec.Headers) > s.cfg.MaxRecordHeaders {
			s.lim.refuse(refuseRecord)
			return 0, &httpError{status: http.StatusRequestEntityTooLarge,
				msg: fmt.Sprintf("record %s/%d@%d has %d headers, more than --max-record-headers %d",
					rec.Topic, rec.Partition, rec.Offset, len(rec.Headers), s.cfg.MaxRecordHeaders)}
		}
		hb := int64(0)
		for _, h := range rec.Headers {
			hb += int64(len(h.Key) + len(h.Value))
		}
		if s.cfg.MaxRecordHeaderBytes > 0 && hb > s.cfg.MaxRecordHeaderBytes {
			s.lim.refuse(refuseRecord)
			return 0, &httpError{status: http.StatusRequestEntityTooLarge,
				msg: fmt.Sprintf("record %s/%d@%d has %d bytes of headers, more than --max-record-header-bytes %d",
					rec.Topic, rec.Partition, rec.Offset, hb, s.cfg.MaxRecordHeaderBytes)}
		}
		headers += len(rec.Headers)
	}
	if s.lim == nil {
		return 0, nil
	}
	if err := s.lim.admitPartitions(edge, c); err != nil {
		return 0, err
	}
	return max(0, int64(headers-2*len(c.Records))) * headerCost, nil
}

// admitPartitions bounds the distinct (edge, topic, partition) the
// aggregator holds sequencing and watermark state for.
func (l *limiter) admitPartitions(edge string, c *wire.Chunk) *httpError {
	l.mu.Lock()
	defer l.mu.Unlock()
	var added []sourcePart
	seen := make(map[sourcePart]bool)
	for i := range c.Records {
		k := sourcePart{edge: edge, topic: c.Records[i].Topic, partition: c.Records[i].Partition}
		if seen[k] {
			continue
		}
		seen[k] = true
		if _, ok := l.parts[k]; !ok {
			added = append(added, k)
		}
	}
	if len(l.parts)+len(added) > l.cfg.MaxSourcePartitions {
		l.refuse(refusePartitions)
		l.log.Error("refused chunk: --max-source-partitions reached; raise it", slog.String("edge", edge),
			slog.Int("held", len(l.parts)), slog.Int("new", len(added)), slog.Int("max", l.cfg.MaxSourcePartitions))
		return &httpError{status: http.StatusTooManyRequests, retryAfter: 60,
			msg: fmt.Sprintf("aggregator holds --max-source-partitions %d source partitions; %d more are not admitted", l.cfg.MaxSourcePartitions, len(added))}
	}
	for _, k := range added {
		l.parts[k] = struct{}{}
	}
	l.m.sourceParts.Set(float64(len(l.parts)))
	return nil
}

// reasonLabel bounds the loss reasons the metrics keep.
func (l *limiter) reasonLabel(reason string) string {
	if l == nil {
		return reason
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	if _, ok := l.reasons[reason]; ok {
		return reason
	}
	if len(l.reasons) >= maxLossReasons {
		return "other"
	}
	l.reasons[reason] = struct{}{}
	return reason
}

// validLossReason checks a reason an agent sent: a short name.
func validLossReason(r string) error {
	if r == "" {
		return errors.New("loss reason is empty")
	}
	if err := wire.ValidEdgeID(r); err != nil {
		return fmt.Errorf("loss reason %q: must be 1-64 of A-Z a-z 0-9 . _ -", r)
	}
	return nil
}

// stallReader bounds how long a request body may stall: every read first
// moves the connection's read deadline --read-timeout ahead, so a slow
// but moving upload is never cut, and a stalled one is (slowloris).
type stallReader struct {
	rc      *http.ResponseController
	body    io.ReadCloser
	timeout time.Duration
	// ok turns false when the connection cannot take deadlines.
	ok bool
}

func (sr *stallReader) Read(p []byte) (int, error) {
	if sr.ok {
		if err := sr.rc.SetReadDeadline(time.Now().Add(sr.timeout)); err != nil {
			sr.ok = false
		}
	}
	n, err := sr.body.Read(p)
	if errors.Is(err, io.EOF) && sr.ok {
		// The body is complete: a deadline left behind would cut the
		// request while the chunk is applied (net/http cancels it on a read
		// error). After a stall the deadline stays, so that net/http does
		// not wait for the rest of the body before answering.
		_ = sr.rc.SetReadDeadline(time.Time{})
		sr.ok = false
	}
	return n, err
}

func (sr *stallReader) Close() error { return sr.body.Close() }

// retryAfterHeader sets Retry-After for 429/503 answers.
func retryAfterHeader(w http.ResponseWriter, he *httpError) {
	if he.retryAfter > 0 {
		w.Header().Set("Retry-After", strconv.Itoa(he.retryAfter))
	}
}
