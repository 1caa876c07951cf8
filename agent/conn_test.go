package agent

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/http/httptest"
	"net/url"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"golang.org/x/time/rate"

	"github.com/edgemirror/edgemirror/internal/testkit"
)

func TestNewLimiter(t *testing.T) {
	cases := []struct {
		bps   int64
		nil   bool
		burst int
	}{
		{-1, true, 0},
		{0, true, 0},
		{1024, false, 1024},              // 20 ms would be 20 bytes: at least 1 KiB
		{1 << 20, false, (1 << 20) / 50}, // 20 ms of traffic
		{100 << 20, false, 256 << 10},    // capped at 256 KiB
	}
	for _, tc := range cases {
		lim := newLimiter(tc.bps)
		if tc.nil {
			if lim != nil {
				t.Errorf("newLimiter(%d) = %v, want nil (unlimited)", tc.bps, lim)
			}
			continue
		}
		if lim == nil {
			t.Fatalf("newLimiter(%d) = nil", tc.bps)
		}
		if lim.Limit() != rate.Limit(tc.bps) {
			t.Errorf("newLimiter(%d).Limit() = %v", tc.bps, lim.Limit())
		}
		if lim.Burst() != tc.burst {
			t.Errorf("newLimiter(%d).Burst() = %d, want %d", tc.bps, lim.Burst(), tc.burst)
		}
	}
}

// sink is a TCP server that reads everything, noting when bytes arrived,
// and answers each connection with reply once the client half-closes.
type sink struct {
	ln    net.Listener
	wg    sync.WaitGroup
	mu    sync.Mutex
	times []time.Time
	sizes []int
	total int64
	reply []byte
}

func newSink(t *testing.T, reply []byte) *sink {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	s := &sink{ln: ln, reply: reply}
	s.wg.Add(1)
	go func() {
		defer s.wg.Done()
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			s.wg.Add(1)
			go func() {
				defer s.wg.Done()
				defer c.Close()
				buf := make([]byte, 32<<10)
				for {
					n, err := c.Read(buf)
					if n > 0 {
						s.mu.Lock()
						s.times = append(s.times, time.Now())
						s.sizes = append(s.sizes, n)
						s.total += int64(n)
						s.mu.Unlock()
					}
					if err != nil {
						break
					}
				}
				_, _ = c.Write(s.reply)
			}()
		}
	}()
	t.Cleanup(func() { ln.Close(); s.wg.Wait() })
	return s
}

func (s *sink) received() int64 {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.total
}

// maxWindow returns the most bytes received within any window of length w.
func (s *sink) maxWindow(w time.Duration) int64 {
	s.mu.Lock()
	defer s.mu.Unlock()
	var best, sum int64
	j := 0
	for i := range s.times {
		sum += int64(s.sizes[i])
		for s.times[i].Sub(s.times[j]) > w {
			sum -= int64(s.sizes[j])
			j++
		}
		if sum > best {
			best = sum
		}
	}
	return best
}

func dialMetered(t *testing.T, ctx context.Context, addr string, lim *rate.Limiter, m *metrics) net.Conn {
	t.Helper()
	c, err := dialer(ctx, lim, m)(ctx, "tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	if _, ok := c.(*meteredConn); !ok {
		t.Fatalf("dialer returned %T, want *meteredConn", c)
	}
	return c
}

// TestMeteredConnCountsExactly: every byte written and read is counted,
// no more, with and without a limiter.
func TestMeteredConnCountsExactly(t *testing.T) {
	for _, bps := range []int64{0, 8 << 20} {
		t.Run(fmt.Sprintf("bandwidth=%d", bps), func(t *testing.T) {
			reply := bytes.Repeat([]byte("r"), 12345)
			s := newSink(t, reply)
			m := newMetrics()
			c := dialMetered(t, context.Background(), s.ln.Addr().String(), newLimiter(bps), m)
			defer c.Close()
			payload := bytes.Repeat([]byte("0123456789abcdef"), 20000) // 320000 bytes, many bursts
			n, err := c.Write(payload)
			if err != nil || n != len(payload) {
				t.Fatalf("Write = %d, %v", n, err)
			}
			// Odd sizes too.
			if n, err := c.Write(payload[:777]); err != nil || n != 777 {
				t.Fatalf("Write = %d, %v", n, err)
			}
			if err := c.(*meteredConn).Conn.(*net.TCPConn).CloseWrite(); err != nil {
				t.Fatal(err)
			}
			got, err := io.ReadAll(c)
			if err != nil {
				t.Fatal(err)
			}
			wantSent := float64(len(payload) + 777)
			if sent := metricValue(t, m.wireBytes.WithLabelValues("sent")); sent != wantSent {
				t.Errorf("sent counter %v, want %v", sent, wantSent)
			}
			if recv := metricValue(t, m.wireBytes.WithLabelValues("received")); recv != float64(len(got)) || len(got) != len(reply) {
				t.Errorf("received counter %v, read %d bytes, server sent %d", recv, len(got), len(reply))
			}
			testkit.Eventually(t, 5*time.Second, "sink received everything", func() error {
				if r := s.received(); r != int64(wantSent) {
					return fmt.Errorf("sink has %d of %v bytes", r, wantSent)
				}
				return nil
			})
		})
	}
}

// TestMeteredConnPacing sends for about two seconds at a cap and checks the
// achieved rate, overall and over any one-second window. The bounds are
// generous (the machine is shared); the numbers are logged.
func TestMeteredConnPacing(t *testing.T) {
	if testing.Short() {
		t.Skip("takes two seconds")
	}
	const bps = 256 << 10
	const total = 2 * bps
	s := newSink(t, nil)
	m := newMetrics()
	c := dialMetered(t, context.Background(), s.ln.Addr().String(), newLimiter(bps), m)
	defer c.Close()
	payload := make([]byte, 64<<10)
	start := time.Now()
	for sent := 0; sent < total; sent += len(payload) {
		if _, err := c.Write(payload); err != nil {
			t.Fatal(err)
		}
	}
	elapsed := time.Since(start)
	testkit.Eventually(t, 5*time.Second, "sink received everything", func() error {
		if r := s.received(); r != total {
			return fmt.Errorf("sink has %d of %d bytes", r, total)
		}
		return nil
	})
	achieved := float64(total) / elapsed.Seconds()
	window := s.maxWindow(time.Second)
	t.Logf("cap %d B/s: sent %d B in %v = %.0f B/s (%.1f%% of cap); busiest 1 s window %d B (%.1f%% of cap)",
		bps, total, elapsed.Round(time.Millisecond), achieved, 100*achieved/bps, window, 100*float64(window)/bps)
	if achieved > 1.05*bps {
		t.Errorf("achieved %.0f B/s, more than 5%% above the cap %d B/s", achieved, bps)
	}
	if achieved < 0.80*bps {
		t.Errorf("achieved %.0f B/s, less than 80%% of the cap %d B/s: the link is not kept full", achieved, bps)
	}
	if float64(window) > 1.10*bps {
		t.Errorf("%d bytes arrived within one second, more than 110%% of the cap %d B/s", window, bps)
	}
	if sent := metricValue(t, m.wireBytes.WithLabelValues("sent")); sent != total {
		t.Errorf("sent counter %v, want %d", sent, total)
	}
}

// TestMeteredConnCancel: a write waiting for tokens returns when the
// agent's context ends, and what it did write is counted.
func TestMeteredConnCancel(t *testing.T) {
	s := newSink(t, nil)
	m := newMetrics()
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	c := dialMetered(t, ctx, s.ln.Addr().String(), newLimiter(1024), m)
	defer c.Close()
	type result struct {
		n   int
		err error
	}
	done := make(chan result, 1)
	go func() {
		n, err := c.Write(make([]byte, 1<<20)) // 1024 s at 1 KiB/s
		done <- result{n, err}
	}()
	testkit.Eventually(t, 5*time.Second, "first burst sent", func() error {
		if metricValue(t, m.wireBytes.WithLabelValues("sent")) == 0 {
			return errors.New("nothing sent yet")
		}
		return nil
	})
	cancel()
	var r result
	select {
	case r = <-done:
	case <-time.After(5 * time.Second):
		t.Fatal("paced Write did not return within 5s of cancel")
	}
	if !errors.Is(r.err, context.Canceled) {
		t.Errorf("Write error %v, want context.Canceled", r.err)
	}
	if r.n <= 0 || r.n >= 1<<20 {
		t.Errorf("Write returned n=%d, want a partial write", r.n)
	}
	if sent := metricValue(t, m.wireBytes.WithLabelValues("sent")); sent != float64(r.n) {
		t.Errorf("sent counter %v, Write returned %d", sent, r.n)
	}
}

// countingListener counts the bytes its connections read and write, as
// the peer of a meteredConn sees them.
type countingListener struct {
	net.Listener
	read, written atomic.Int64
	open          atomic.Int64
}

func (l *countingListener) Accept() (net.Conn, error) {
	c, err := l.Listener.Accept()
	if err != nil {
		return nil, err
	}
	l.open.Add(1)
	return &countingConn{Conn: c, l: l}, nil
}

type countingConn struct {
	net.Conn
	l      *countingListener
	closed atomic.Bool
}

func (c *countingConn) Read(p []byte) (int, error) {
	n, err := c.Conn.Read(p)
	c.l.read.Add(int64(n))
	return n, err
}

func (c *countingConn) Write(p []byte) (int, error) {
	n, err := c.Conn.Write(p)
	c.l.written.Add(int64(n))
	return n, err
}

func (c *countingConn) Close() error {
	if !c.closed.Swap(true) {
		c.l.open.Add(-1)
	}
	return c.Conn.Close()
}

// TestHTTPClientWireBytes uploads through the agent's HTTP client (h2c over
// metered connections) and checks that the agent's wire byte counters
// equal what the server's sockets saw.
func TestHTTPClientWireBytes(t *testing.T) {
	srv := httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		n, _ := io.Copy(io.Discard, r.Body)
		if r.ProtoMajor != 2 {
			http.Error(w, "want HTTP/2", http.StatusHTTPVersionNotSupported)
			return
		}
		fmt.Fprintf(w, "got %d bytes", n)
	}))
	cl := &countingListener{Listener: srv.Listener}
	srv.Listener = cl
	var p http.Protocols
	p.SetHTTP1(true)
	p.SetUnencryptedHTTP2(true)
	srv.Config.Protocols = &p
	srv.Start()
	defer srv.Close()

	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	base, _ := url.Parse(srv.URL)
	m := newMetrics()
	hc := newHTTPClient(ctx, newEndpoints(slog.New(slog.DiscardHandler), []*url.URL{base}, nil), newLimiter(4<<20), m)
	body := bytes.Repeat([]byte("x"), 300<<10)
	for i := 0; i < 3; i++ {
		resp, err := hc.Post(srv.URL+"/v1/chunks", "application/octet-stream", bytes.NewReader(body))
		if err != nil {
			t.Fatal(err)
		}
		msg, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if resp.StatusCode != 200 || string(msg) != fmt.Sprintf("got %d bytes", len(body)) {
			t.Fatalf("answer %s %q", resp.Status, msg)
		}
	}
	hc.CloseIdleConnections()
	// The server's HTTP/2 frames are written by a goroutine of their own: a
	// frame's bytes can reach the agent, and the connection be closed,
	// before that goroutine adds them to the server's count. So the counts
	// are compared once they agree or the deadline passes, not at the
	// first close.
	var sent, recv float64
	testkit.Eventually(t, 5*time.Second, "the agent's wire byte counts match the server's sockets", func() error {
		if n := cl.open.Load(); n != 0 {
			return fmt.Errorf("%d connections open", n)
		}
		sent = metricValue(t, m.wireBytes.WithLabelValues("sent"))
		recv = metricValue(t, m.wireBytes.WithLabelValues("received"))
		if sent != float64(cl.read.Load()) {
			return fmt.Errorf("agent counted %v bytes sent, server read %d", sent, cl.read.Load())
		}
		// The client may close before reading the server's last frames (a
		// GOAWAY, a ping ack), so received can only be at most what was
		// written.
		if recv > float64(cl.written.Load()) || recv == 0 {
			return fmt.Errorf("agent counted %v bytes received, server wrote %d", recv, cl.written.Load())
		}
		return nil
	})
	t.Logf("3 uploads of %d B: agent counted %v B sent, %v B received; server read %d B, wrote %d B",
		len(body), sent, recv, cl.read.Load(), cl.written.Load())
	if sent < float64(3*len(body)) {
		t.Errorf("agent counted %v bytes sent, less than the %d body bytes", sent, 3*len(body))
	}
}
