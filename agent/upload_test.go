package agent

import (
	"context"
	"crypto/rand"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"sync"
	"testing"
	"time"

	"github.com/edgemirror/edgemirror/buffer"
	"github.com/edgemirror/edgemirror/internal/testkit"
	"github.com/edgemirror/edgemirror/internal/wire"
	"github.com/edgemirror/edgemirror/test/wan"
)

// uploadStub is an aggregator stand-in for upload tests: it reads each
// chunk body as it arrives and acknowledges it; it counts the attempts per
// seq and the body bytes received.
type uploadStub struct {
	mu       sync.Mutex
	started  int // requests that reached the handler
	attempts map[uint64]int
	acked    map[uint64]bool
	received int64
	// hold, when set, makes chunk handlers stop reading until it is closed.
	hold chan struct{}
}

func newUploadStub(t *testing.T) (*uploadStub, *httptest.Server) {
	t.Helper()
	s := &uploadStub{attempts: map[uint64]int{}, acked: map[uint64]bool{}}
	mux := http.NewServeMux()
	mux.HandleFunc("POST "+wire.PathChunks, s.chunk)
	mux.HandleFunc("GET "+wire.PathResume, func(w http.ResponseWriter, r *http.Request) {
		writeTestJSON(w, 200, wire.ResumeResponse{})
	})
	mux.HandleFunc("POST "+wire.PathLosses, func(w http.ResponseWriter, r *http.Request) {
		writeTestJSON(w, 200, map[string]int{"ranges": 0})
	})
	srv := httptest.NewUnstartedServer(mux)
	var p http.Protocols
	p.SetHTTP1(true)
	p.SetUnencryptedHTTP2(true)
	srv.Config.Protocols = &p
	srv.Start()
	t.Cleanup(srv.Close)
	return s, srv
}

func (s *uploadStub) chunk(w http.ResponseWriter, r *http.Request) {
	s.mu.Lock()
	hold := s.hold
	s.mu.Unlock()
	if hold != nil {
		select {
		case <-hold:
		case <-r.Context().Done():
			return
		}
	}
	// Counted when the request arrives: Go's HTTP/2 server reads whole DATA
	// frames (up to 1 MiB) before the handler sees a body byte.
	s.mu.Lock()
	s.started++
	s.mu.Unlock()
	head := make([]byte, wire.HeaderSize)
	if _, err := io.ReadFull(r.Body, head); err != nil {
		return
	}
	h, err := wire.ReadHeader(head)
	if err != nil {
		writeTestJSON(w, 400, wire.ErrorResponse{Error: err.Error(), Permanent: true})
		return
	}
	s.mu.Lock()
	s.attempts[h.Seq]++
	s.received += int64(len(head))
	s.mu.Unlock()
	buf := make([]byte, 32<<10)
	for {
		n, err := r.Body.Read(buf)
		s.mu.Lock()
		s.received += int64(n)
		s.mu.Unlock()
		if err == io.EOF {
			break
		}
		if err != nil {
			return // the agent cut the upload
		}
	}
	s.mu.Lock()
	s.acked[h.Seq] = true
	s.mu.Unlock()
	writeTestJSON(w, 200, wire.ChunkResponse{Seq: h.Seq, Written: int(h.Records), Records: int(h.Records)})
}

// snapshot returns the attempts per seq, the acknowledged seqs and the
// bytes received.
func (s *uploadStub) snapshot() (map[uint64]int, int, int64) {
	s.mu.Lock()
	defer s.mu.Unlock()
	att := make(map[uint64]int, len(s.attempts))
	for k, v := range s.attempts {
		att[k] = v
	}
	return att, len(s.acked), s.received
}

// bufferIncompressible stores n chunks of one record with size random
// (incompressible) value bytes each, uncompressed.
func bufferIncompressible(t *testing.T, store *buffer.Store, n, size int) {
	t.Helper()
	enc, err := wire.NewEncoder(wire.CodecNone, wire.LevelDefault, wire.WithMaxChunkBytes(size+1024))
	if err != nil {
		t.Fatal(err)
	}
	defer enc.Close()
	for i := 0; i < n; i++ {
		v := make([]byte, size)
		if _, err := rand.Read(v); err != nil {
			t.Fatal(err)
		}
		seq := store.NextSeq()
		rec := wire.Record{Topic: "t", Offset: int64(i), Value: v}
		frame, err := enc.Encode(nil, &wire.Chunk{Seq: seq, Topics: []wire.Topic{{Name: "t", Partitions: 1}}, Records: []wire.Record{rec}})
		if err != nil {
			t.Fatal(err)
		}
		meta := buffer.ChunkMeta{Seq: seq, Records: 1, RawBytes: wire.RecordSize(&rec),
			Ranges: []buffer.Range{{Topic: "t", First: int64(i), Last: int64(i), Records: 1}}}
		if err := store.Append(context.Background(), frame, meta, map[buffer.PartitionKey]int64{{Topic: "t"}: int64(i + 1)}); err != nil {
			t.Fatal(err)
		}
	}
}

// runUploads ships n chunks of 1 MiB through an emulated link until the
// test ends. The proxy's receive buffer is small, so that what the agent's
// socket sees acknowledged is what crossed the link (see
// wan.Config.ReceiveBuffer).
func runUploads(t *testing.T, link wan.Link, inflight int, timeout time.Duration, chunks int) (*shipper, *uploadStub, *wan.Proxy) {
	t.Helper()
	stub, srv := newUploadStub(t)
	proxy, err := wan.New(wan.Config{Listen: "127.0.0.1:0", Target: srv.Listener.Addr().String(), Link: link, ReceiveBuffer: 16 << 10})
	if err != nil {
		t.Fatal(err)
	}
	pctx, pcancel := context.WithCancel(context.Background())
	pdone := make(chan struct{})
	go func() { defer close(pdone); _ = proxy.Run(pctx) }()
	ctx, cancel := context.WithCancel(context.Background())
	sh := newTestShipper(t, ctx, "http://"+proxy.Addr())
	sh.cfg.Inflight = inflight
	sh.cfg.RequestTimeout = timeout
	sh.cfg.MaxBackoff = time.Second
	bufferIncompressible(t, sh.store, chunks, 1<<20)
	done := make(chan error, 1)
	go func() { done <- sh.run(ctx) }()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("shipper: %v", err)
		}
		pcancel()
		proxy.Close()
		<-pdone
	})
	return sh, stub, proxy
}

// TestUploadsShareSlowLink: on a 1 Mbit/s link, two 1 MiB incompressible
// chunks in flight at once take about 17 s together, longer than
// --request-timeout. Uploads that keep moving bytes are not cut: each chunk
// is sent once and acknowledged.
func TestUploadsShareSlowLink(t *testing.T) {
	if testing.Short() {
		t.Skip("takes about 20 s on an emulated 1 Mbit/s link")
	}
	sh, stub, _ := runUploads(t, wan.Link{Rate: 1_000_000 / 8, RTT: 50 * time.Millisecond}, 2, 10*time.Second, 2)
	testkit.Eventually(t, 45*time.Second, "both chunks acknowledged", func() error {
		att, acked, received := stub.snapshot()
		if acked != 2 {
			return fmt.Errorf("%d acknowledged, attempts %v, %d bytes received", acked, att, received)
		}
		return nil
	})
	att, _, _ := stub.snapshot()
	for seq, n := range att {
		if n != 1 {
			t.Errorf("chunk %d sent %d times, want once", seq, n)
		}
	}
	if cut := metricValue(t, sh.m.sendErrors.WithLabelValues("network")); cut != 0 {
		t.Errorf("%v uploads cut while their bytes were moving", cut)
	}
	testkit.Eventually(t, 5*time.Second, "buffer empty", func() error {
		if st := sh.store.Stats(); st.Chunks != 0 {
			return fmt.Errorf("%d chunks left", st.Chunks)
		}
		return nil
	})
}

// TestUploadsNotRestartedOnVerySlowLink: on a 100 kbit/s link, four 1 MiB
// chunks in flight need about 5.5 minutes together; with a fixed budget
// every upload timed out and restarted from byte 0, in step, forever. Over
// three times --request-timeout, no upload may be cut while bytes move.
func TestUploadsNotRestartedOnVerySlowLink(t *testing.T) {
	if testing.Short() {
		t.Skip("takes about 20 s on an emulated 100 kbit/s link")
	}
	const timeout = 4 * time.Second
	sh, stub, proxy := runUploads(t, wan.Link{Rate: 100_000 / 8, RTT: 100 * time.Millisecond}, 4, timeout, 4)
	window := 3*timeout + 2*time.Second
	end := time.Now().Add(window)
	for time.Now().Before(end) {
		// A cut upload shows at the agent at once; at the aggregator its
		// retry would arrive only behind the bytes already queued.
		if cut := metricValue(t, sh.m.sendErrors.WithLabelValues("network")); cut > 0 {
			t.Fatalf("%v uploads cut after %d bytes crossed the link: uploads that move bytes must not be cut",
				cut, proxy.Stats().Up)
		}
		time.Sleep(200 * time.Millisecond) // polling interval, bounded by end
	}
	stub.mu.Lock()
	started := stub.started
	stub.mu.Unlock()
	if started == 0 || started > 4 {
		t.Errorf("%d upload requests arrived for 4 chunks, want 1 to 4 (one HTTP/2 connection: the first upload's frames hold the link)", started)
	}
	// 14 s at 12.5 kB/s is 175 kB.
	if up := proxy.Stats().Up; up < 120_000 {
		t.Errorf("only %d bytes crossed the 100 kbit/s link in %s", up, window)
	}
}

// TestUploadStalledIsCut: an upload whose bytes stop moving (the receiver
// stops reading) is cut after --request-timeout without progress, and
// retried.
func TestUploadStalledIsCut(t *testing.T) {
	stub, srv := newUploadStub(t)
	stub.hold = make(chan struct{})
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	sh := newTestShipper(t, ctx, srv.URL)
	sh.link = newLink()
	sh.cfg.RequestTimeout = time.Second
	bufferIncompressible(t, sh.store, 1, 4<<20) // more than the receive windows hold
	ch, err := sh.store.Lease(ctx)
	if err != nil {
		t.Fatal(err)
	}
	start := time.Now()
	out, _, reason := sh.send(ctx, ch)
	took := time.Since(start)
	if out == outcomeAcked {
		t.Fatalf("stalled upload acknowledged")
	}
	if took > 5*time.Second {
		t.Errorf("stalled upload cut after %v, want about --request-timeout (1s)", took)
	}
	t.Logf("stalled upload cut after %v: %s", took.Round(time.Millisecond), reason)
	close(stub.hold)
}
