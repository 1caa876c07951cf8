package agent

import (
	"bytes"
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"net"
	"net/http/httptrace"
	"sync"
	"sync/atomic"
	"time"
)

// errStalled is the cause of an upload cancelled because no byte of it, nor
// of its connection, moved for --request-timeout.
var errStalled = errors.New("upload stalled")

// progressReader is an upload body that counts the bytes the HTTP transport
// took from it.
type progressReader struct {
	r *bytes.Reader
	n atomic.Int64
}

func (p *progressReader) Read(b []byte) (int, error) {
	n, err := p.r.Read(b)
	p.n.Add(int64(n))
	return n, err
}

// uploadWatch cuts an upload when its bytes stop moving. The deadline is
// not a budget for the whole upload: the uploads in flight share the link
// (and the HTTP/2 connection), and on a slow link a chunk can take many
// minutes while every byte of it keeps moving. Progress is any of: the
// transport took bytes of the body, the peer acknowledged bytes of the
// connection (TCP_INFO on Linux; bytes written elsewhere), or bytes of the
// answer arrived. After the last byte of the body is acknowledged, the
// aggregator's answer (which waits for the hub) gets --request-timeout.
type uploadWatch struct {
	body *progressReader
	conn atomic.Pointer[meteredConn]
	done chan struct{}
	wg   sync.WaitGroup
}

// watchUpload returns ctx carrying the trace that finds the upload's
// connection, and starts a watchdog that cancels it with errStalled after
// timeout without progress. stop ends the watchdog.
func watchUpload(ctx context.Context, body *progressReader, timeout time.Duration) (context.Context, func()) {
	ctx, cancel := context.WithCancelCause(ctx)
	w := &uploadWatch{body: body, done: make(chan struct{})}
	ctx = httptrace.WithClientTrace(ctx, &httptrace.ClientTrace{
		GotConn: func(info httptrace.GotConnInfo) {
			if mc := asMetered(info.Conn); mc != nil {
				w.conn.Store(mc)
			}
		},
	})
	tick := min(max(timeout/8, 10*time.Millisecond), time.Second)
	w.wg.Add(1)
	go func() {
		defer w.wg.Done()
		t := time.NewTicker(tick)
		defer t.Stop()
		last, lastAt := w.sample(), time.Now()
		for {
			select {
			case <-w.done:
				return
			case <-ctx.Done():
				return
			case now := <-t.C:
				if p := w.sample(); p != last {
					last, lastAt = p, now
				} else if d := now.Sub(lastAt); d >= timeout {
					cancel(fmt.Errorf("%w: no byte moved for %s (--request-timeout)", errStalled, d.Round(time.Millisecond)))
					return
				}
			}
		}
	}()
	return ctx, func() {
		close(w.done)
		w.wg.Wait()
		cancel(nil)
	}
}

// sample returns a number that grows whenever a byte of the upload or of
// its connection moves.
func (w *uploadWatch) sample() uint64 {
	p := uint64(w.body.n.Load())
	if c := w.conn.Load(); c != nil {
		p += c.progress()
	}
	return p
}

// asMetered finds the metered connection under c (a *tls.Conn for https).
func asMetered(c net.Conn) *meteredConn {
	for i := 0; i < 4 && c != nil; i++ {
		switch v := c.(type) {
		case *meteredConn:
			return v
		case *tls.Conn:
			c = v.NetConn()
		default:
			return nil
		}
	}
	return nil
}
