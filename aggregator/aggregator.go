package aggregator

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"time"

	"github.com/segmentio/kafka-go"

	"github.com/edgemirror/edgemirror/internal/wire"
)

// Aggregator receives chunks from agents and writes them to the hub.
type Aggregator struct {
	cfg Config
	log *slog.Logger
	m   *metrics

	ready chan struct{}
	addr  net.Addr
}

// New validates cfg and returns an Aggregator. It starts nothing.
func New(cfg Config) (*Aggregator, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	log := cfg.Logger
	if log == nil {
		log = slog.New(slog.NewTextHandler(io.Discard, nil))
	}
	return &Aggregator{cfg: cfg, log: log, m: newMetrics(), ready: make(chan struct{})}, nil
}

// Ready is closed once the listener accepts connections.
func (a *Aggregator) Ready() <-chan struct{} { return a.ready }

// Addr is the listener's address; valid after Ready is closed.
func (a *Aggregator) Addr() net.Addr { return a.addr }

// Run serves until ctx is cancelled, then shuts down in order: refuse new
// chunks (503 + Retry-After), let chunks being applied finish (bounded by
// ShutdownTimeout; a chunk cut short is not acknowledged), close the hub
// client, close the state.
func (a *Aggregator) Run(ctx context.Context) error {
	if err := a.m.register(a.cfg.Registerer); err != nil {
		return fmt.Errorf("register metrics: %w", err)
	}
	defer a.m.unregister(a.cfg.Registerer)

	st, err := openState(a.cfg.StateDir)
	if err != nil {
		return err
	}
	defer st.close()

	dec, err := wire.NewDecoder(wire.Limits{
		MaxFrameBytes: int(a.cfg.MaxChunkBytes),
		MaxRawBytes:   int(a.cfg.MaxRawBytes),
		MaxRecords:    wire.DefaultLimits().MaxRecords,
	})
	if err != nil {
		return fmt.Errorf("create chunk decoder: %w", err)
	}
	defer dec.Close()

	// The hub writer is up before the listener (downstream first).
	tr := &kafka.Transport{
		ClientID:    "edgemirror-aggregator",
		DialTimeout: 10 * time.Second,
		IdleTimeout: 5 * time.Minute,
		MetadataTTL: 2 * time.Second, // no refresh on NOT_LEADER otherwise (kafka-go #1221)
	}
	defer tr.CloseIdleConnections()
	client := &kafka.Client{Addr: kafka.TCP(a.cfg.Brokers...), Transport: tr, Timeout: a.cfg.HubTimeout}
	h := newHub(&a.cfg, a.log, client, a.m)

	fl := newFleet(&a.cfg, a.log, client, a.m)
	fc := &fleetCollector{f: fl}
	if a.cfg.Registerer != nil {
		if err := a.cfg.Registerer.Register(fc); err != nil {
			return fmt.Errorf("register fleet metrics: %w", err)
		}
		defer a.cfg.Registerer.Unregister(fc)
	}
	fctx, stopFleet := context.WithCancel(context.WithoutCancel(ctx))
	fleetDone := make(chan struct{})
	go func() { defer close(fleetDone); fl.run(fctx) }()
	// Stopped after the HTTP server (handlers may still write), before the
	// hub client goes.
	defer func() { stopFleet(); <-fleetDone }()

	srv := &server{cfg: &a.cfg, log: a.log, hub: h, state: st, fleet: fl, dec: dec, m: a.m,
		edges: make(map[string]*edgeState), stopping: make(chan struct{})}

	ln, err := net.Listen("tcp", a.cfg.Listen)
	if err != nil {
		return fmt.Errorf("listen on %s: %w", a.cfg.Listen, err)
	}
	a.addr = ln.Addr()
	var protocols http.Protocols
	protocols.SetHTTP1(true)
	protocols.SetUnencryptedHTTP2(true)
	hs := &http.Server{
		Handler:           srv.routes(),
		ReadHeaderTimeout: 30 * time.Second,
		IdleTimeout:       5 * time.Minute,
		Protocols:         &protocols,
		HTTP2: &http.HTTP2Config{
			// Large windows so that one connection over a long fat link
			// keeps several chunks flowing.
			MaxReceiveBufferPerConnection: 64 << 20,
			MaxReceiveBufferPerStream:     16 << 20,
			SendPingTimeout:               30 * time.Second,
			PingTimeout:                   15 * time.Second,
		},
		ErrorLog: slog.NewLogLogger(a.log.Handler(), slog.LevelDebug),
	}
	a.log.Warn("no authentication configured: any client can send chunks for any edge id")
	a.log.Info("aggregator listening", slog.String("addr", ln.Addr().String()),
		slog.String("hub", fmt.Sprint(a.cfg.Brokers)), slog.String("topic_template", a.cfg.TopicTemplate))

	errc := make(chan error, 1)
	go func() { errc <- hs.Serve(ln) }()
	close(a.ready)

	select {
	case err := <-errc:
		return fmt.Errorf("serve: %w", err)
	case <-ctx.Done():
	}

	// Lame duck: new chunks get 503 + Retry-After, readiness turns false,
	// chunks waiting for their turn give up, chunks being applied finish.
	a.log.Info("shutting down: refusing new chunks, finishing chunks in flight")
	srv.draining.Store(true)
	close(srv.stopping)
	sctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), a.cfg.ShutdownTimeout)
	defer cancel()
	err = hs.Shutdown(sctx)
	if errors.Is(err, context.DeadlineExceeded) {
		a.log.Warn("shutdown timeout: closing connections; chunks cut short are not acknowledged and will be re-sent")
		err = hs.Close()
	}
	<-errc
	// Close cancels the requests' contexts; wait for their handlers before
	// the decoder and the state are closed.
	srv.inflight.Wait()
	a.log.Info("aggregator stopped")
	if err != nil && !errors.Is(err, http.ErrServerClosed) {
		return fmt.Errorf("shut down http server: %w", err)
	}
	return nil
}
