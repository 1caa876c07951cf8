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

	"github.com/edgemirror/edgemirror/internal/kafkaconn"
	"github.com/edgemirror/edgemirror/internal/wire"
)

// Aggregator receives chunks from agents and writes them to the hub.
type Aggregator struct {
	cfg Config
	log *slog.Logger
	m   *metrics
	lm  *limitMetrics
	sec *security

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
	sec, err := newSecurity(&cfg, log)
	if err != nil {
		return nil, err
	}
	if cfg.EdgeIDs == nil {
		cfg.EdgeIDs = sec.edgeIDs // edges in --edges-file that never connected are never-seen
	}
	return &Aggregator{cfg: cfg, log: log, m: newMetrics(), lm: newLimitMetrics(), sec: sec, ready: make(chan struct{})}, nil
}

// Reload re-reads the server certificate, the client CA and the edges file
// (on SIGHUP). A file that fails to load is logged and the old one kept;
// connections and requests under way are not disturbed.
func (a *Aggregator) Reload() { a.sec.reload() }

// CheckConnect opens a connection to every hub broker, with TLS and SASL as
// configured, and returns the first problem as one line.
func (a *Aggregator) CheckConnect(ctx context.Context) error {
	return kafkaconn.Check(ctx, "hub", a.cfg.Brokers, a.cfg.Kafka)
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
	if err := a.lm.collectors.Register(a.cfg.Registerer); err != nil {
		return fmt.Errorf("register metrics: %w", err)
	}
	defer a.lm.collectors.Unregister(a.cfg.Registerer)

	st, err := openState(a.cfg.StateDir)
	if err != nil {
		return err
	}
	defer st.close()

	dec, err := wire.NewDecoder(wire.Limits{
		MaxFrameBytes: int(a.cfg.MaxChunkBytes),
		MaxRawBytes:   int(a.cfg.MaxRawBytes),
		MaxRecords:    a.cfg.MaxChunkRecords,
	})
	if err != nil {
		return fmt.Errorf("create chunk decoder: %w", err)
	}
	defer dec.Close()

	// The hub writer is up before the listener (downstream first).
	tr, err := kafkaconn.Transport(a.cfg.Kafka, "edgemirror-aggregator")
	if err != nil {
		return fmt.Errorf("hub Kafka: %w", err)
	}
	defer tr.CloseIdleConnections()
	// A wrong password or CA would otherwise show only as EOFs later. In
	// the background: the listener does not wait for the hub.
	if a.cfg.Kafka.TLS || a.cfg.Kafka.SASLMechanism != "" {
		checked := make(chan struct{})
		go func() {
			defer close(checked)
			if err := a.CheckConnect(ctx); err != nil && ctx.Err() == nil {
				a.log.Error("cannot connect to the hub; will keep trying", slog.String("error", err.Error()))
			}
		}()
		defer func() { <-checked }()
	}
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

	applyCtx, cancelApply := context.WithCancel(context.WithoutCancel(ctx))
	defer cancelApply()
	cps := newCheckpointer(&a.cfg, a.log, client, st)
	cps.losses = fl.lossRanges
	if err := cps.m.collectors.Register(a.cfg.Registerer); err != nil {
		return fmt.Errorf("register metrics: %w", err)
	}
	defer cps.m.collectors.Unregister(a.cfg.Registerer)
	defer cps.close()
	srv := &server{cfg: &a.cfg, log: a.log, hub: h, state: st, fleet: fl, dec: dec, m: a.m, cps: cps,
		edges: make(map[string]*edgeState), stopping: make(chan struct{}), applyCtx: applyCtx,
		topics: newTopicSyncer(h, &a.cfg), sec: a.sec, lim: newLimiter(&a.cfg, a.log, a.lm)}

	ln, err := net.Listen("tcp", a.cfg.Listen)
	if err != nil {
		return fmt.Errorf("listen on %s: %w", a.cfg.Listen, err)
	}
	a.addr = ln.Addr()
	tlsCfg := a.sec.tlsConfig()
	var protocols http.Protocols
	protocols.SetHTTP1(true)
	if tlsCfg != nil {
		protocols.SetHTTP2(true)
	} else {
		protocols.SetUnencryptedHTTP2(true)
	}
	hs := &http.Server{
		Handler:           srv.routes(),
		ReadHeaderTimeout: a.cfg.ReadHeaderTimeout,
		IdleTimeout:       a.cfg.IdleTimeout,
		MaxHeaderBytes:    a.cfg.MaxRequestHeaderBytes,
		TLSConfig:         tlsCfg,
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
	a.log.Info("aggregator listening", slog.String("addr", ln.Addr().String()), slog.Bool("tls", tlsCfg != nil),
		slog.Bool("client_certificates", a.cfg.ClientCA != ""), slog.String("edges_file", a.cfg.EdgesFile),
		slog.String("hub", fmt.Sprint(a.cfg.Brokers)), slog.String("hub_security", a.cfg.Kafka.String()),
		slog.String("topic_template", a.cfg.TopicTemplate))
	warning := a.cfg.insecureWarning()
	if warning != "" {
		a.log.Warn("INSECURE: " + warning)
	}

	errc := make(chan error, 1)
	go func() {
		if tlsCfg != nil {
			errc <- hs.ServeTLS(ln, "", "")
			return
		}
		errc <- hs.Serve(ln)
	}()
	close(a.ready)

	warn := time.NewTicker(insecureWarnInterval)
	defer warn.Stop()
wait:
	for {
		select {
		case err := <-errc:
			return fmt.Errorf("serve: %w", err)
		case <-warn.C:
			if warning != "" {
				a.log.Warn("INSECURE: " + warning)
			}
		case <-ctx.Done():
			break wait
		}
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
		a.log.Warn("shutdown timeout: closing connections and aborting hub transactions; chunks cut short are not acknowledged and will be re-sent")
		cancelApply()
		err = hs.Close()
	}
	<-errc
	// Close cancels the requests' contexts; wait for their handlers and the
	// hub writers before the decoder and the state are closed.
	srv.inflight.Wait()
	cancelApply()
	srv.runners.Wait()
	a.log.Info("aggregator stopped")
	if err != nil && !errors.Is(err, http.ErrServerClosed) {
		return fmt.Errorf("shut down http server: %w", err)
	}
	return nil
}
