package agent

import (
	"context"
	"net"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"golang.org/x/time/rate"
)

// newLimiter returns a token bucket for bytesPerSec, or nil for unlimited.
// The burst is small (20 ms of traffic, at least 1 KiB) so that the cap
// holds over any window of a second or more, not just on average.
func newLimiter(bytesPerSec int64) *rate.Limiter {
	if bytesPerSec <= 0 {
		return nil
	}
	burst := bytesPerSec / 50
	if burst < 1024 {
		burst = 1024
	}
	if burst > 256<<10 {
		burst = 256 << 10
	}
	return rate.NewLimiter(rate.Limit(bytesPerSec), int(burst))
}

// meteredConn counts the bytes crossing a connection and paces writes with a
// token bucket shared by every connection to the aggregator. It sits below
// TLS and HTTP/2, so what it counts and caps is what goes on the wire
// (minus TCP/IP headers).
type meteredConn struct {
	net.Conn
	ctx  context.Context // cancelled when the agent stops, unblocking paced writes
	lim  *rate.Limiter
	sent prometheus.Counter
	recv prometheus.Counter

	written atomic.Uint64 // bytes written, for progress where TCP_INFO is not available
	read    atomic.Uint64
}

// progress returns a number that grows whenever bytes of the connection
// move: bytes read, plus bytes the peer acknowledged (or, where that is not
// known, bytes written).
func (c *meteredConn) progress() uint64 {
	p := c.read.Load()
	if acked, ok := tcpBytesAcked(c.Conn); ok {
		return p + acked
	}
	return p + c.written.Load()
}

func (c *meteredConn) Write(p []byte) (int, error) {
	var written int
	for len(p) > 0 {
		n := len(p)
		if c.lim != nil {
			if b := c.lim.Burst(); n > b {
				n = b
			}
			if err := c.lim.WaitN(c.ctx, n); err != nil {
				return written, err
			}
		}
		m, err := c.Conn.Write(p[:n])
		written += m
		c.written.Add(uint64(m))
		c.sent.Add(float64(m))
		if err != nil {
			return written, err
		}
		p = p[n:]
	}
	return written, nil
}

func (c *meteredConn) Read(p []byte) (int, error) {
	n, err := c.Conn.Read(p)
	c.recv.Add(float64(n))
	c.read.Add(uint64(n))
	return n, err
}

// dialer returns a DialContext function producing metered connections.
func dialer(ctx context.Context, lim *rate.Limiter, m *metrics) func(context.Context, string, string) (net.Conn, error) {
	d := &net.Dialer{Timeout: 30 * time.Second, KeepAlive: 30 * time.Second}
	sent, recv := m.wireBytes.WithLabelValues("sent"), m.wireBytes.WithLabelValues("received")
	return func(dctx context.Context, network, addr string) (net.Conn, error) {
		c, err := d.DialContext(dctx, network, addr)
		if err != nil {
			return nil, err
		}
		return &meteredConn{Conn: c, ctx: ctx, lim: lim, sent: sent, recv: recv}, nil
	}
}
