package wan

import (
	"bytes"
	"context"
	"errors"
	"io"
	"net"
	"sync"
	"sync/atomic"
	"time"
)

// direction is one way through the link, shared by all connections: the token
// bucket that caps it, the bytes delivered, and the time series of bytes
// passing the bottleneck.
type direction struct {
	bucket *bucket
	bytes  atomic.Int64
	series *series
}

func newDirection(l Link, now time.Time) *direction {
	return &direction{bucket: newBucket(l, now), series: newSeries(now)}
}

// conn is one forwarded connection.
type conn struct {
	client, target *net.TCPConn
	cancel         context.CancelFunc
}

// reset breaks the connection: both sockets are closed with a TCP RST, so
// neither side mistakes a truncated stream for a clean end.
func (c *conn) reset() {
	c.cancel()
	resetConn(c.client)
	resetConn(c.target)
}

func resetConn(tc *net.TCPConn) {
	_ = tc.SetLinger(0) // Close sends RST instead of FIN
	_ = tc.Close()
}

// piece is one read's worth of bytes on its way through the link.
type piece struct {
	data []byte
	due  time.Time // when the last byte arrives at the far end
}

// serve forwards one accepted client connection to the target.
func (p *Proxy) serve(ctx context.Context, client *net.TCPConn) {
	log := p.log.With(logKeyClient, client.RemoteAddr().String())
	d := net.Dialer{Timeout: dialTimeout}
	nc, err := d.DialContext(ctx, "tcp", p.target)
	if err != nil {
		p.refused.Add(1)
		log.Warn("dial target failed", logKeyTarget, p.target, logKeyError, err)
		resetConn(client)
		return
	}
	target := nc.(*net.TCPConn)

	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	c := &conn{client: client, target: target, cancel: cancel}
	if !p.register(c) {
		p.refused.Add(1)
		c.reset()
		return
	}
	defer p.unregister(c)
	id := p.conns.Add(1)
	log = log.With(logKeyConn, id)
	log.Debug("connection open")

	var wg sync.WaitGroup
	var failed atomic.Bool
	fail := func(err error) {
		if failed.CompareAndSwap(false, true) {
			log.Debug("connection broken", logKeyError, err)
			c.reset()
		}
	}
	wg.Go(func() { p.pipe(ctx, client, target, p.up, fail) })
	wg.Go(func() { p.pipe(ctx, target, client, p.down, fail) })
	wg.Wait()
	if !failed.Load() {
		_ = client.Close()
		_ = target.Close()
		log.Debug("connection closed")
	}
}

// pipe moves bytes from src to dst through direction d until src ends (then dst
// is half-closed once everything read was delivered) or something fails (then
// fail breaks the whole connection).
func (p *Proxy) pipe(ctx context.Context, src, dst *net.TCPConn, d *direction, fail func(error)) {
	q := newQueue()
	var wg sync.WaitGroup
	wg.Go(func() {
		defer q.close()
		if err := p.read(ctx, src, q, d); err != nil {
			fail(err)
		}
	})
	if err := p.write(ctx, dst, q, d); err != nil {
		fail(err)
	}
	wg.Wait()
}

// read takes pieces from src, paces them through d's bucket and queues them with
// the time they are due at the far end. It returns nil at EOF.
func (p *Proxy) read(ctx context.Context, src *net.TCPConn, q *queue, d *direction) error {
	buf := make([]byte, max(maxPiece, unpacedPiece))
	timer := time.NewTimer(time.Hour)
	timer.Stop()
	for {
		n, rerr := src.Read(buf[:p.Link().pieceSize()])
		if n > 0 {
			data := bytes.Clone(buf[:n])
			l := p.Link() // after Read: a change made while Read blocked applies
			if err := q.acquire(ctx, int64(n), l.inFlightLimit()); err != nil {
				return err
			}
			now := time.Now()
			wait := d.bucket.reserve(now, n)
			// Waiting here, rather than queueing, is what pushes back on the sender:
			// while the bottleneck is busy nothing is read and the socket fills.
			if err := sleep(ctx, timer, wait); err != nil {
				return err
			}
			d.series.add(now.Add(wait), int64(n))
			q.push(piece{data: data, due: now.Add(wait + l.oneWay())})
		}
		if errors.Is(rerr, io.EOF) {
			return nil
		}
		if rerr != nil {
			return rerr
		}
	}
}

// write delivers queued pieces to dst when they are due, then half-closes dst.
func (p *Proxy) write(ctx context.Context, dst *net.TCPConn, q *queue, d *direction) error {
	timer := time.NewTimer(time.Hour)
	timer.Stop()
	for {
		pc, ok, err := q.pop(ctx)
		if err != nil {
			return err
		}
		if !ok {
			return dst.CloseWrite()
		}
		if err := sleep(ctx, timer, time.Until(pc.due)); err != nil {
			return err
		}
		p.noteLate(pc.due, time.Now())
		n, err := dst.Write(pc.data)
		d.bytes.Add(int64(n))
		q.release(int64(len(pc.data)))
		if err != nil {
			return err
		}
	}
}

// queue holds the pieces of one direction of one connection between reading
// and delivering them, and bounds their bytes. The reader reserves room with
// acquire before it spends link time on a piece, then pushes it; the writer pops
// pieces in order and releases their room once delivered.
type queue struct {
	mu      sync.Mutex
	items   []piece
	held    int64 // bytes acquired and not yet released
	closed  bool
	changed chan struct{} // closed and replaced on every change
}

func newQueue() *queue { return &queue{changed: make(chan struct{})} }

func (q *queue) changedLocked() {
	close(q.changed)
	q.changed = make(chan struct{})
}

// wait blocks until the queue changes after ch was taken, or ctx is done.
func wait(ctx context.Context, ch <-chan struct{}) error {
	select {
	case <-ch:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}

// acquire waits until n more bytes fit under limit. An empty queue always
// admits, so a piece larger than the limit cannot wedge the connection.
func (q *queue) acquire(ctx context.Context, n, limit int64) error {
	for {
		q.mu.Lock()
		if q.held == 0 || q.held+n <= limit {
			q.held += n
			q.mu.Unlock()
			return nil
		}
		ch := q.changed
		q.mu.Unlock()
		if err := wait(ctx, ch); err != nil {
			return err
		}
	}
}

// push appends a piece whose bytes were acquired.
func (q *queue) push(pc piece) {
	q.mu.Lock()
	q.items = append(q.items, pc)
	q.changedLocked()
	q.mu.Unlock()
}

// pop takes the oldest piece, waiting for one. ok is false once the queue is
// closed and empty.
func (q *queue) pop(ctx context.Context) (pc piece, ok bool, err error) {
	for {
		q.mu.Lock()
		if len(q.items) > 0 {
			pc = q.items[0]
			q.items[0] = piece{}
			q.items = q.items[1:]
			q.mu.Unlock()
			return pc, true, nil
		}
		if q.closed {
			q.mu.Unlock()
			return piece{}, false, nil
		}
		ch := q.changed
		q.mu.Unlock()
		if err := wait(ctx, ch); err != nil {
			return piece{}, false, err
		}
	}
}

// release returns the room of n delivered bytes.
func (q *queue) release(n int64) {
	q.mu.Lock()
	q.held -= n
	q.changedLocked()
	q.mu.Unlock()
}

// close marks the end of the stream: pop returns what is left, then ok false.
func (q *queue) close() {
	q.mu.Lock()
	q.closed = true
	q.changedLocked()
	q.mu.Unlock()
}
