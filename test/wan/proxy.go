package wan

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"sync"
	"sync/atomic"
	"time"
)

// Config configures a Proxy.
type Config struct {
	// Listen is the address to accept clients on. Empty means DefaultListen.
	Listen string
	// Target is the address every accepted connection is forwarded to. Required.
	Target string
	// Link is the link to emulate at start. SetLink changes it later.
	Link Link
	// Logger receives connection and link events. Nil discards them.
	Logger *slog.Logger
	// ReceiveBuffer, when positive, is the kernel receive buffer (SO_RCVBUF)
	// of the connections the proxy accepts. Bytes in that buffer are
	// acknowledged to the client but not yet on the emulated link; over
	// loopback the buffer grows to hundreds of KiB and, behind a slow link,
	// the client sees acknowledgements in steps of half of it, seconds
	// apart. A small buffer keeps the client's view of acknowledged bytes
	// close to what crossed the link, as behind a real WAN bottleneck.
	ReceiveBuffer int
}

// Validate checks the configuration without binding anything.
func (c Config) Validate() error {
	if c.Target == "" {
		return ErrNoTarget
	}
	return c.Link.Validate()
}

// Stats are the proxy's counters since New. All of them only grow except Open.
type Stats struct {
	// Up is the number of bytes delivered from clients to the target.
	Up int64
	// Down is the number of bytes delivered from the target to clients.
	Down int64
	// Conns is the number of connections forwarded to the target.
	Conns int64
	// Open is the number of forwarded connections not yet finished.
	Open int64
	// Refused is the number of client connections reset because the link was
	// down or the target could not be reached.
	Refused int64
	// Late is the most any bytes were delivered after they were due. It
	// measures the emulation's own fidelity: more than a millisecond or two means
	// the host could not schedule the proxy in time (CPU starvation), so added
	// latency was higher, and throughput may have been lower, than the link says.
	Late time.Duration
}

// Proxy is a TCP proxy that emulates a WAN link between its clients and one
// target. See the package documentation for the model and its limits.
type Proxy struct {
	target string
	log    *slog.Logger
	ln     net.Listener

	up, down *direction

	conns   atomic.Int64
	refused atomic.Int64
	late    atomic.Int64 // nanoseconds; see Stats.Late

	closing   chan struct{} // closed by Close
	closeOnce sync.Once

	mu       sync.Mutex
	link     Link
	linkDown bool
	stopping bool // Run is shutting down: no new connections are registered
	open     map[*conn]struct{}
	runDone  chan struct{} // made when Run starts, closed when it returns
}

// New validates cfg and binds the listener. It starts nothing: call Run.
func New(cfg Config) (*Proxy, error) {
	if err := cfg.Validate(); err != nil {
		return nil, fmt.Errorf("validate config: %w", err)
	}
	if cfg.Listen == "" {
		cfg.Listen = DefaultListen
	}
	log := cfg.Logger
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	lc := net.ListenConfig{}
	if cfg.ReceiveBuffer > 0 {
		lc.Control = rcvbufControl(cfg.ReceiveBuffer)
	}
	ln, err := lc.Listen(context.Background(), "tcp", cfg.Listen)
	if err != nil {
		return nil, fmt.Errorf("listen on %s: %w", cfg.Listen, err)
	}
	now := time.Now()
	return &Proxy{
		target:  cfg.Target,
		log:     log,
		ln:      ln,
		up:      newDirection(cfg.Link, now),
		down:    newDirection(cfg.Link, now),
		closing: make(chan struct{}),
		link:    cfg.Link,
		open:    make(map[*conn]struct{}),
	}, nil
}

// Addr is the address clients connect to.
func (p *Proxy) Addr() string { return p.ln.Addr().String() }

// Run accepts and forwards connections until ctx is done or Close is called, then
// resets the open connections and returns once every goroutine it started has
// finished. It returns nil after such a stop. Run may be called only once: after
// it returns the proxy is finished.
func (p *Proxy) Run(ctx context.Context) error {
	p.mu.Lock()
	switch {
	case p.isClosed():
		p.mu.Unlock()
		return ErrClosed
	case p.runDone != nil:
		p.mu.Unlock()
		return ErrRunning
	}
	p.runDone = make(chan struct{})
	p.mu.Unlock()
	defer close(p.runDone)

	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	var wg sync.WaitGroup
	wg.Go(func() {
		select {
		case <-ctx.Done():
		case <-p.closing:
		}
		cancel()
		_ = p.ln.Close() // unblocks Accept
	})
	p.log.Info("wan proxy running", logKeyAddr, p.Addr(), logKeyTarget, p.target, logKeyLink, p.Link().String())

	err := p.accept(ctx, &wg)

	cancel()
	p.mu.Lock()
	p.stopping = true
	open := p.openConnsLocked()
	p.mu.Unlock()
	for _, c := range open {
		c.reset()
	}
	wg.Wait()
	p.log.Info("wan proxy stopped", logKeyAddr, p.Addr())
	return err
}

// accept runs the accept loop; every goroutine it starts is tracked by wg.
func (p *Proxy) accept(ctx context.Context, wg *sync.WaitGroup) error {
	backoff := acceptBackoffMin
	timer := time.NewTimer(time.Hour)
	timer.Stop()
	for {
		nc, err := p.ln.Accept()
		if err != nil {
			if ctx.Err() != nil || p.isClosed() {
				return nil
			}
			if errors.Is(err, net.ErrClosed) {
				return fmt.Errorf("accept: %w", err)
			}
			p.log.Warn("accept failed", logKeyError, err, logKeyRetryIn, backoff)
			if sleep(ctx, timer, backoff) != nil {
				return nil
			}
			backoff = min(2*backoff, acceptBackoffMax)
			continue
		}
		backoff = acceptBackoffMin
		client := nc.(*net.TCPConn)
		if p.Down() {
			p.refused.Add(1)
			p.log.Debug("link down: connection reset", logKeyClient, client.RemoteAddr().String())
			resetConn(client)
			continue
		}
		wg.Go(func() { p.serve(ctx, client) })
	}
}

// Cut takes the link down. Every open connection is reset on both sides (the
// client and the target see a TCP RST; bytes in flight are lost), and until
// Restore every new connection is accepted and reset at once. Cut returns after
// the sockets are reset; Stats.Open reaches 0 shortly after.
func (p *Proxy) Cut() {
	p.mu.Lock()
	was := p.linkDown
	p.linkDown = true
	open := p.openConnsLocked()
	p.mu.Unlock()
	for _, c := range open {
		c.reset()
	}
	if !was {
		p.log.Info("link cut", logKeyReset, len(open))
	}
}

// Restore brings the link back up: new connections are forwarded again.
// Connections broken by Cut stay broken.
func (p *Proxy) Restore() {
	p.mu.Lock()
	was := p.linkDown
	p.linkDown = false
	p.mu.Unlock()
	if was {
		p.log.Info("link restored")
	}
}

// Down reports whether the link is cut.
func (p *Proxy) Down() bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.linkDown
}

// SetLink changes rate and latency for bytes read from now on, on open and new
// connections alike. Negative fields are taken as 0.
func (p *Proxy) SetLink(l Link) {
	l.Rate = max(l.Rate, 0)
	l.RTT = max(l.RTT, 0)
	now := time.Now()
	p.mu.Lock()
	p.link = l
	p.up.bucket.set(l, now)
	p.down.bucket.set(l, now)
	p.mu.Unlock()
	p.log.Info("link changed", logKeyLink, l.String())
}

// Link returns the link currently emulated.
func (p *Proxy) Link() Link {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.link
}

// Stats returns the counters. Bytes are counted when the proxy hands them to the
// receiving socket.
func (p *Proxy) Stats() Stats {
	p.mu.Lock()
	open := int64(len(p.open))
	p.mu.Unlock()
	return Stats{
		Up:      p.up.bytes.Load(),
		Down:    p.down.bytes.Load(),
		Conns:   p.conns.Load(),
		Open:    open,
		Refused: p.refused.Load(),
		Late:    time.Duration(p.late.Load()),
	}
}

// BusiestWindow returns the highest average rate, in bytes per second, at which
// bytes crossed the link client→target (Up) over any window of length d since
// New (at most the last hour). A byte crosses when it leaves the emulated
// bottleneck, which is when it is read from the client on an unlimited link: so
// on a link faster than the client, this measures the client's own pacing.
// Windows are aligned to 10 ms steps and d is rounded up to whole steps, so the
// result can miss the true busiest window by one step's worth of bytes. With less
// than d of history it is all bytes divided by d. Bytes lost in flight by Cut are
// included, so the series can hold a little more than Stats.Up.
func (p *Proxy) BusiestWindow(d time.Duration) float64 { return p.up.series.busiest(d) }

// BusiestWindowDown is BusiestWindow for the target→client direction.
func (p *Proxy) BusiestWindowDown(d time.Duration) float64 { return p.down.series.busiest(d) }

// Close stops the proxy: it closes the listener, and if Run is running, makes it
// reset all connections and waits for it to return. Close may be called more
// than once and before Run.
func (p *Proxy) Close() error {
	var err error
	p.closeOnce.Do(func() {
		close(p.closing)
		if cerr := p.ln.Close(); cerr != nil && !errors.Is(cerr, net.ErrClosed) {
			err = fmt.Errorf("close listener: %w", cerr)
		}
	})
	p.mu.Lock()
	done := p.runDone
	p.mu.Unlock()
	if done != nil {
		<-done
	}
	return err
}

// noteLate records that bytes due at due were delivered at now.
func (p *Proxy) noteLate(due, now time.Time) {
	late := int64(now.Sub(due))
	for {
		old := p.late.Load()
		if late <= old || p.late.CompareAndSwap(old, late) {
			return
		}
	}
}

func (p *Proxy) isClosed() bool {
	select {
	case <-p.closing:
		return true
	default:
		return false
	}
}

// register adds c to the open connections unless the link is down or Run is
// stopping.
func (p *Proxy) register(c *conn) bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.linkDown || p.stopping {
		return false
	}
	p.open[c] = struct{}{}
	return true
}

func (p *Proxy) unregister(c *conn) {
	p.mu.Lock()
	delete(p.open, c)
	p.mu.Unlock()
}

func (p *Proxy) openConnsLocked() []*conn {
	out := make([]*conn, 0, len(p.open))
	for c := range p.open {
		out = append(out, c)
	}
	return out
}

// sleep waits d on t, or until ctx is done.
func sleep(ctx context.Context, t *time.Timer, d time.Duration) error {
	if d <= 0 {
		return nil
	}
	t.Reset(d)
	select {
	case <-ctx.Done():
		t.Stop()
		return ctx.Err()
	case <-t.C:
		return nil
	}
}
